//! The typed client's errors: a server's refusal (its problem code and detail), a server
//! that cannot be reached, an answer that does not fit its wire type, and a name that
//! names no object, or several.

use reqwest::StatusCode;

/// A refusal from the server: an `application/problem+json` answer.
#[derive(Debug)]
pub struct Refused {
    pub status: StatusCode,
    pub code: String,
    pub detail: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status.as_u16(), self.detail)
    }
}

impl std::error::Error for Refused {}

/// What a typed call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with a problem.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The server could not be reached, or the answer could not be read; `reason` says why
    /// in a sentence (an untrusted certificate and its fix, a refused connection, …).
    #[error("cannot reach {base}: {reason}")]
    Transport { base: String, reason: String },
    /// The answer did not fit the wire type the call expects.
    #[error("the server's answer to {what} did not parse")]
    Decode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// A name that names nothing the caller can see.
    #[error("not found: no {kind} named {name:?}")]
    NotFound { kind: &'static str, name: String },
    /// A name that names several objects the caller can see.
    #[error("ambiguous: {matches} matches for {kind} {name:?}; use an id")]
    Ambiguous { kind: &'static str, name: String, matches: usize },
    /// An id of another kind where one of `kind` was expected.
    #[error("{given:?} is not a {kind} id or name")]
    WrongKind { kind: &'static str, given: String },
}

/// A typed call's result.
pub type Result<T> = std::result::Result<T, Error>;
