//! What differs between SQLite and PostgreSQL, and the small helpers every query uses.
//!
//! The schema and the queries are written once, in a dialect both databases speak: `$1`-style
//! parameters, TEXT and BIGINT columns, `ON CONFLICT`, `RETURNING`. The only differences live
//! here: how a database is reached, how a connection is set up, and how a write transaction
//! begins.

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{AnyPool, Row};

use super::StoreError;

/// How each SQLite connection is set up: wait up to 10 s for a lock, write-ahead log (readers
/// never block the writer; commits durable against a crash of the process, synced at
/// checkpoints), foreign keys enforced. No connection checkpoints by itself: SQLite would do it
/// inside a commit, and every request waiting on that commit (a stream's first byte) would wait
/// for the checkpoint too. The store runs them beside the writer
/// ([`CHECKPOINT_EVERY`](super::CHECKPOINT_EVERY)).
const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
                              PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
                              PRAGMA wal_autocheckpoint = 0;";

/// The database behind a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The statement that opens a transaction that will write: SQLite takes the write lock at
    /// once (so a transaction that reads first is never refused when it starts to write), and
    /// PostgreSQL locks rows as it goes.
    pub(crate) fn begin_write(self) -> &'static str {
        match self {
            Self::Sqlite => "BEGIN IMMEDIATE",
            Self::Postgres => "BEGIN",
        }
    }
}

/// Chooses the backend by URL and writes the URL the driver gets: `postgres://` and
/// `postgresql://` are PostgreSQL; `sqlite:PATH`, `sqlite://PATH` and a plain path are SQLite,
/// with the file created if missing.
pub(crate) fn resolve_url(url: &str) -> Result<(Backend, String), StoreError> {
    let url = url.trim();
    if url.is_empty() {
        return Err(StoreError::invalid("database URL", "empty"));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((Backend::Postgres, url.to_owned()));
    }
    let sqlite = if let Some(rest) = url.strip_prefix("sqlite:") {
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let (path, params) = rest.split_once('?').unwrap_or((rest, ""));
        if path.is_empty() {
            return Err(StoreError::invalid("database URL", "no SQLite file named"));
        }
        let mut params: Vec<&str> = params.split('&').filter(|p| !p.is_empty()).collect();
        if !params.iter().any(|p| p.starts_with("mode=")) {
            params.push("mode=rwc");
        }
        format!("sqlite:{path}?{}", params.join("&"))
    } else if url.contains("://") {
        return Err(StoreError::invalid(
            "database URL",
            format!("{url:?}: expected postgres://..., sqlite:PATH or a file path"),
        ));
    } else {
        format!("sqlite:{}?mode=rwc", encode_path(url))
    };
    Ok((Backend::Sqlite, sqlite))
}

/// Percent-encodes the characters of a file path that a URL would misread.
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            '%' | '?' | '#' | ' ' => out.push_str(&format!("%{:02X}", c as u32)),
            _ => out.push(c),
        }
    }
    out
}

/// Takes the store's own `max_page_count=N` parameter out of a resolved SQLite URL: a cap on the
/// database file's size in pages (`PRAGMA max_page_count`, set on every connection), so that an
/// operator can bound the file, and tests can fill the "disk" without root.
fn take_max_page_count(url: &str) -> Result<(String, Option<u32>), StoreError> {
    let Some((path, params)) = url.split_once('?') else {
        return Ok((url.to_owned(), None));
    };
    let mut max_pages = None;
    let mut kept = Vec::new();
    for param in params.split('&').filter(|p| !p.is_empty()) {
        match param.strip_prefix("max_page_count=") {
            Some(value) => {
                let pages = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        StoreError::invalid(
                            "database URL",
                            format!(
                                "max_page_count must be a positive number of pages, got {value:?}"
                            ),
                        )
                    })?;
                max_pages = Some(pages);
            }
            None => kept.push(param),
        }
    }
    Ok((format!("{path}?{}", kept.join("&")), max_pages))
}

/// Opens a pool on `url` (already resolved) and sets up each connection.
pub(crate) async fn open_pool(backend: Backend, url: &str) -> Result<AnyPool, StoreError> {
    sqlx::any::install_default_drivers();
    let (url, max_pages) = match backend {
        Backend::Sqlite => take_max_page_count(url)?,
        Backend::Postgres => (url.to_owned(), None),
    };
    let url = url.as_str();
    let options = AnyPoolOptions::new()
        .max_connections(match backend {
            Backend::Sqlite => 8,
            Backend::Postgres => 16,
        })
        .acquire_timeout(Duration::from_secs(30));
    let options = match backend {
        Backend::Sqlite => options.after_connect(move |conn, _meta| {
            Box::pin(async move {
                sqlx::Executor::execute(&mut *conn, SQLITE_PRAGMAS).await?;
                if let Some(pages) = max_pages {
                    let cap = format!("PRAGMA max_page_count = {pages};");
                    sqlx::Executor::execute(&mut *conn, cap.as_str()).await?;
                }
                Ok(())
            })
        }),
        Backend::Postgres => options,
    };
    Ok(options.connect(url).await?)
}

/// The schema's migrations, compiled in (portable: one file serves both backends, with the type
/// of binary columns, `BINARY_TYPE`, named per backend).
#[derive(Debug)]
struct Embedded(Backend);

impl Backend {
    /// The column type of bytes.
    fn binary_type(self) -> &'static str {
        match self {
            Self::Sqlite => "BLOB",
            Self::Postgres => "BYTEA",
        }
    }
}

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "store", include_str!("../../migrations/0001_store.sql")),
    (
        2,
        "sign in",
        include_str!("../../migrations/0002_sign_in.sql"),
    ),
    (
        3,
        "policies",
        include_str!("../../migrations/0003_policies.sql"),
    ),
    (
        4,
        "replicas",
        include_str!("../../migrations/0004_replicas.sql"),
    ),
    (5, "blobs", include_str!("../../migrations/0005_blobs.sql")),
    (
        6,
        "batches",
        include_str!("../../migrations/0006_batches.sql"),
    ),
    (
        7,
        "in-flight index",
        include_str!("../../migrations/0007_in_flight_index.sql"),
    ),
];

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> futures_core_box::BoxFuture<'s, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async move {
            Ok(MIGRATIONS
                .iter()
                .map(|(version, description, sql)| {
                    let sql = if sql.contains("BINARY_TYPE") {
                        Cow::Owned(sql.replace("BINARY_TYPE", self.0.binary_type()))
                    } else {
                        Cow::Borrowed(*sql)
                    };
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        sql,
                        false,
                    )
                })
                .collect())
        })
    }
}

/// `BoxFuture` as `MigrationSource` names it.
mod futures_core_box {
    pub(crate) type BoxFuture<'a, T> =
        std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
}

/// Applies the migrations not yet applied (PostgreSQL: under an advisory lock, so several
/// coordinators starting at once apply each migration once).
pub(crate) async fn migrate(pool: &AnyPool, backend: Backend) -> Result<(), StoreError> {
    let migrator = Migrator::new(Embedded(backend)).await?;
    migrator.run(pool).await?;
    Ok(())
}

/// Microseconds since the Unix epoch: how times are stored.
pub(crate) fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// A stored time.
pub(crate) fn from_micros(field: &'static str, micros: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| StoreError::corrupt(field, format!("time {micros} out of range")))
}

/// A stored optional time.
pub(crate) fn from_micros_opt(
    field: &'static str,
    micros: Option<i64>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    micros.map(|m| from_micros(field, m)).transpose()
}

/// Now, at the precision the store keeps (microseconds), so what a call returns equals what a
/// later read returns.
pub(crate) fn now() -> DateTime<Utc> {
    let now = Utc::now();
    from_micros("now", micros(now)).unwrap_or(now)
}

/// A column of a row.
pub(crate) fn get<'r, T>(row: &'r AnyRow, column: &'static str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(column)
        .map_err(|error| StoreError::corrupt(column, error))
}

/// A column holding a UUID in text form.
pub(crate) fn get_uuid(row: &AnyRow, column: &'static str) -> Result<uuid::Uuid, StoreError> {
    let text: String = get(row, column)?;
    uuid::Uuid::try_parse(&text).map_err(|error| StoreError::corrupt(column, error))
}

/// A column holding the wire name of an enum.
pub(crate) fn get_parsed<T: std::str::FromStr>(
    row: &AnyRow,
    column: &'static str,
) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    let text: String = get(row, column)?;
    text.parse()
        .map_err(|error: T::Err| StoreError::corrupt(column, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_the_backend() {
        let (b, u) = resolve_url("postgres://u@h/db").unwrap();
        assert_eq!((b, u.as_str()), (Backend::Postgres, "postgres://u@h/db"));
        let (b, u) = resolve_url("club.db").unwrap();
        assert_eq!(
            (b, u.as_str()),
            (Backend::Sqlite, "sqlite:club.db?mode=rwc")
        );
        let (_, u) = resolve_url("/tmp/a b?.db").unwrap();
        assert_eq!(u, "sqlite:/tmp/a%20b%3F.db?mode=rwc");
        let (_, u) = resolve_url("sqlite:///tmp/x.db").unwrap();
        assert_eq!(u, "sqlite:/tmp/x.db?mode=rwc");
        let (_, u) = resolve_url("sqlite:x.db?mode=ro").unwrap();
        assert_eq!(u, "sqlite:x.db?mode=ro");
        assert!(resolve_url("mysql://x").unwrap_err().is_invalid());
        let (u, pages) = take_max_page_count("sqlite:x.db?max_page_count=64&mode=rwc").unwrap();
        assert_eq!((u.as_str(), pages), ("sqlite:x.db?mode=rwc", Some(64)));
        let (u, pages) = take_max_page_count("sqlite:x.db?mode=rwc").unwrap();
        assert_eq!((u.as_str(), pages), ("sqlite:x.db?mode=rwc", None));
        assert!(
            take_max_page_count("sqlite:x.db?max_page_count=lots")
                .unwrap_err()
                .is_invalid()
        );
        assert!(resolve_url("").is_err());
    }
}
