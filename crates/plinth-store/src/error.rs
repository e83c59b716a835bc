//! Store errors: each names a condition the API maps to one stable problem code.

use thiserror::Error;

/// What can go wrong in the store, in terms a caller can act on.
#[derive(Debug, Error)]
pub enum StoreError {
    /// No such object, or not visible in the caller's scope.
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    /// The caller's `If-Match` (or a concurrent writer) saw another generation.
    #[error("{kind} {id} is at generation {current}, not {expected}")]
    GenerationMismatch { kind: &'static str, id: String, expected: i64, current: i64 },
    /// A uniqueness rule refused the write.
    #[error("{kind} already exists: {detail}")]
    AlreadyExists { kind: &'static str, detail: String },
    /// Something still refers to the object.
    #[error("{kind} {id} is still referenced by {dependent}")]
    HasDependents { kind: &'static str, id: String, dependent: &'static str },
    /// A reference names an object that does not exist.
    #[error("a referenced object does not exist: {0}")]
    DanglingReference(String),
    /// A refusal with its own code (used tokens, expired tokens, …).
    #[error("{detail}")]
    Refused { status: u16, code: &'static str, detail: String },
    /// A quota would be exceeded: `used` already counted, `requested` more asked for.
    #[error("quota exceeded: {resource} of {scope} is limited to {limit}; {used} used, {requested} more requested")]
    QuotaExceeded { scope: String, resource: String, limit: i64, used: i64, requested: i64 },
    /// The stored document could not be read back.
    #[error("corrupt stored document in {table}: {source}")]
    Corrupt { table: &'static str, source: serde_json::Error },
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration {version} failed: {source}")]
    Migration { version: i64, source: sqlx::Error },
}

impl StoreError {
    pub(crate) fn from_write(kind: &'static str, e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            if db.is_unique_violation() {
                return StoreError::AlreadyExists { kind, detail: "an object with that name already exists".into() };
            }
            if db.is_foreign_key_violation() {
                return StoreError::DanglingReference(db.message().to_string());
            }
        }
        StoreError::Database(e)
    }
}
