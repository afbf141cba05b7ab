//! The store's one error type.

use inference_club_core::record::{RecordId, Status};

/// What a [`StoreError::NotFound`] was looking for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    /// A member.
    User,
    /// An API key.
    Key,
    /// A request record.
    Record,
    /// A provider.
    Provider,
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::User => "user",
            Self::Key => "key",
            Self::Record => "record",
            Self::Provider => "provider",
        })
    }
}

/// An error of the [`Store`](super::Store).
///
/// Match on the variants, or ask the predicates ([`is_retryable`](Self::is_retryable),
/// [`is_not_found`](Self::is_not_found), [`is_conflict`](Self::is_conflict),
/// [`is_invalid`](Self::is_invalid)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The thing acted on does not exist (or is not the caller's).
    #[error("{0} not found")]
    NotFound(Entity),
    /// A member with this handle (compared case-insensitively) already exists.
    #[error("the handle {handle:?} is taken")]
    HandleTaken {
        /// The refused handle.
        handle: String,
    },
    /// A record with this id already exists.
    #[error("record {0} already exists")]
    RecordExists(RecordId),
    /// A save would move a record backwards (a final record to another status, or a running one
    /// back to queued); the stored record is left unchanged.
    #[error("record {id} is {stored:?} and cannot become {attempted:?}")]
    StatusRegression {
        /// The record.
        id: RecordId,
        /// Its stored status.
        stored: Status,
        /// The refused status.
        attempted: Status,
    },
    /// Bad input, refused before anything changed.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The input at fault.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A scope list that does not parse.
    #[error(transparent)]
    Scopes(#[from] super::ScopeParseError),
    /// A stored row that cannot be read back (a bug or a foreign write).
    #[error("corrupt {field} in the store: {reason}")]
    Corrupt {
        /// The column at fault.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The database refused or failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Running the migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The operating system's random source failed (no key was created).
    #[error("the OS random source failed: {0}")]
    Random(getrandom::Error),
    /// The store's batched writer has stopped (its runtime shut down).
    #[error("the store's writer has stopped")]
    Closed,
    /// Record writes are failing now for a reason that may pass (a full disk, the database
    /// restarting): new requests are refused until a commit succeeds again.
    #[error("the store cannot write records now")]
    WritesFailing,
}

impl StoreError {
    /// Whether trying again later may succeed: the database was busy or locked, its disk was
    /// full, a connection failed, the pool timed out, or a transaction lost a serialization
    /// race.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Database(error) => is_retryable_sqlx(error),
            Self::Migrate(sqlx::migrate::MigrateError::Execute(error)) => is_retryable_sqlx(error),
            Self::WritesFailing => true,
            _ => false,
        }
    }

    /// Whether the thing acted on does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound(_))
    }

    /// Whether the change conflicts with what is stored (taken handle, existing record,
    /// status regression).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            Self::HandleTaken { .. } | Self::RecordExists(_) | Self::StatusRegression { .. }
        )
    }

    /// Whether the input was refused as invalid.
    pub fn is_invalid(&self) -> bool {
        matches!(self, Self::Invalid { .. } | Self::Scopes(_))
    }

    /// Whether this error is the answer for one write rather than a failure of the database:
    /// the batched writer keeps the other writes of the batch.
    pub(crate) fn is_outcome(&self) -> bool {
        self.is_not_found() || self.is_conflict() || self.is_invalid()
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn corrupt(field: &'static str, reason: impl std::fmt::Display) -> Self {
        Self::Corrupt {
            field,
            reason: reason.to_string(),
        }
    }
}

fn is_retryable_sqlx(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                retryable_sqlstate(pg.code())
            } else if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                db.code()
                    .and_then(|code| code.parse::<u32>().ok())
                    .is_some_and(retryable_sqlite_code)
            } else {
                false
            }
        }
        _ => false,
    }
}

/// SQLite (extended) result codes worth retrying: busy, locked, and a full disk (space may be
/// freed).
fn retryable_sqlite_code(code: u32) -> bool {
    // The primary code is the low byte of the extended one.
    matches!(code & 0xff, 5 | 6 | 13) // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_FULL
}

/// PostgreSQL SQLSTATEs worth retrying: serialization failure, deadlock, lock not available,
/// connection exceptions, operator intervention (shutdown), insufficient resources.
fn retryable_sqlstate(code: &str) -> bool {
    matches!(code, "40001" | "40P01" | "55P03")
        || code.starts_with("08")
        || code.starts_with("57P")
        || code.starts_with("53")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert!(retryable_sqlite_code(5));
        assert!(retryable_sqlite_code(517)); // SQLITE_BUSY_SNAPSHOT
        assert!(retryable_sqlite_code(6));
        assert!(retryable_sqlite_code(13)); // SQLITE_FULL
        assert!(!retryable_sqlite_code(19)); // SQLITE_CONSTRAINT
        assert!(!retryable_sqlite_code(2067)); // SQLITE_CONSTRAINT_UNIQUE
        assert!(retryable_sqlstate("40001"));
        assert!(retryable_sqlstate("08006"));
        assert!(!retryable_sqlstate("23505"));
        assert!(StoreError::Database(sqlx::Error::PoolTimedOut).is_retryable());
        assert!(!StoreError::NotFound(Entity::User).is_retryable());
        assert!(StoreError::NotFound(Entity::User).is_not_found());
    }
}
