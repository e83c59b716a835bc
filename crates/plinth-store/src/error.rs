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
    /// A reference names an object that does not exist. `kind` is what was being written;
    /// `cause` is the database's own words, for logs only: it never reaches a client.
    #[error("{kind}: a referenced object does not exist ({cause})")]
    DanglingReference { kind: &'static str, cause: String },
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
    Database(sqlx::Error),
    /// A migration failed.
    #[error("migration {version} failed: {source}")]
    Migration { version: i64, source: sqlx::Error },
}

/// PostgreSQL's code for a NUL byte (or other bytes its encoding refuses) in text.
const PG_CHARACTER_NOT_IN_REPERTOIRE: &str = "22021";

impl From<sqlx::Error> for StoreError {
    /// A database error; text the database cannot hold (a NUL byte, which PostgreSQL
    /// refuses in any text value) is the caller's input, refused as such.
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e
            && db.code().as_deref() == Some(PG_CHARACTER_NOT_IN_REPERTOIRE)
        {
            return StoreError::Refused {
                status: 422,
                code: "invalid_value",
                detail: "text may not contain NUL (U+0000) characters".into(),
            };
        }
        StoreError::Database(e)
    }
}

impl StoreError {
    pub(crate) fn from_write(kind: &'static str, e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            if db.is_unique_violation() {
                return StoreError::AlreadyExists { kind, detail: "an object with that name already exists".into() };
            }
            if db.is_foreign_key_violation() {
                return StoreError::DanglingReference { kind, cause: db.message().to_string() };
            }
        }
        e.into()
    }
}
