//! The coordinator's store: everything it persists — members, API keys, providers and the
//! history of their manifests, request records — on SQLite (the embedded default) or
//! PostgreSQL, with the same behaviour on both.
//!
//! [`Store::connect`] picks the database by URL (`postgres://...`; `sqlite:PATH` or a plain
//! path, created if missing, in WAL mode) and applies the migrations. A [`Store`] is cheap to
//! clone and holds no state of its own besides its connection pool and the queue of its record
//! writer, so several coordinators can share one PostgreSQL database.
//!
//! - **Members** ([`User`]): handles unique case-insensitively; [`Store::delete_user`] is a hard
//!   delete of the account and everything of theirs.
//! - **API keys** ([`ApiKey`]): `icl_` and 43 random base62 characters, stored only as a SHA-256
//!   hash beside a short display prefix, scoped ([`Scopes`]), revocable, compared in constant
//!   time ([`Store::authenticate`]).
//! - **Records** ([`InferenceRecord`](inference_club_core::record::InferenceRecord)): inserted
//!   at acceptance and saved as they progress through a group-commit writer (many writes, one
//!   commit; durable when the call returns). The insert of a whole answer's record is held for
//!   its final save to fold into (one statement per short request); reads by id, listings and
//!   [`Store::flush_records`] write what is held first. A final record is never moved back; listings
//!   are newest first with an opaque keyset [`Cursor`]; only the owner changes visibility or
//!   deletes; [`Store::fail_in_flight`] closes what a crash left open.
//! - **Providers** ([`Provider`]): one row per operator and name, with a new
//!   [`ProviderRevision`] only when the manifest changes.
//!
//! ```
//! use inference_club_coordinator::testing::{Scope, Scopes, Store};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! let dir = std::env::temp_dir().join(format!("club-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let store = Store::connect(&dir.join("club.db").to_string_lossy()).await?;
//!
//! let ada = store.create_user("ada", None).await?;
//! let (key, secret) = store.create_key(ada.id, "laptop", "inference".parse()?).await?;
//! assert!(secret.starts_with(&key.prefix));
//! let (user, key) = store.authenticate(&secret).await?.expect("a live key");
//! assert_eq!(user.handle, "ada");
//! assert!(key.scopes.contains(Scope::Inference) && !key.scopes.contains(Scope::Account));
//! assert!(store.authenticate("icl_wrong").await?.is_none());
//! # store.close().await;
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod batches;
mod blobs;
mod deferred;
mod error;
mod ids;
mod key_cache;
mod keys;
mod policies;
mod providers;
mod records;
mod replicas;
mod sessions;
mod sql;
mod users;
mod writer;

use std::sync::Arc;

use sqlx::AnyPool;
use tokio::sync::mpsc;

pub use batches::{ClaimedLine, NewLine, RememberedAnswer, RequestCounts};
pub use error::{Entity, StoreError};
pub use ids::{KeyId, ProviderId, UserId};
pub use keys::{ApiKey, Scope, ScopeParseError, Scopes};
pub use policies::{ProviderPolicy, RoutingPreference};
pub use providers::Provider;
pub use records::{
    Cursor, DEFAULT_PAGE_SIZE, InFlight, MAX_PAGE_SIZE, Page, RecordQuery, StoredRecord,
    forget_operator,
};
pub(crate) use sessions::same_secret;
pub use sessions::{FlowKind, SESSION_LIFETIME, Session, SignInFlow, random_token};
pub use sql::Backend;
pub(crate) use sql::now;
pub use users::{GitHubIdentity, User};
#[cfg(feature = "testing")]
pub use writer::PROGRESS_DELAY;

/// The coordinator's store. Cheap to clone: clones share one pool and one record writer.
///
/// Must be created inside a Tokio runtime (it starts its writer task there).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    pool: AnyPool,
    backend: Backend,
    writes: writer::Writes,
    /// Whether the record writer's last commit failed for a reason that may pass.
    write_health: Arc<writer::WriteHealth>,
    keys: key_cache::KeyCache,
    /// Final saves being tried again in the background.
    deferred: std::sync::atomic::AtomicUsize,
    /// The records whose final save waits to be tried again, by id: their consumer, and what
    /// stops the retry (the owner deleted the record meanwhile).
    deferred_records: std::sync::Mutex<
        std::collections::HashMap<
            inference_club_core::record::RecordId,
            (Option<String>, tokio_util::sync::CancellationToken),
        >,
    >,
    /// The cluster replica whose records this store inserts ([`Store::set_replica`]).
    replica: std::sync::OnceLock<String>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.inner.backend)
            .finish_non_exhaustive()
    }
}

/// How often a SQLite store copies its write-ahead log into the database file (a checkpoint).
pub const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl Store {
    /// Opens the database at `url` and applies any migration not yet applied.
    ///
    /// `postgres://` or `postgresql://` URLs reach PostgreSQL; `sqlite:PATH`, `sqlite://PATH`
    /// and plain paths open a SQLite file, created if missing (WAL journal, a busy timeout, and
    /// foreign keys on). A SQLite URL may cap the file's size with `max_page_count=N` (pages of
    /// 4 KiB): writes beyond it fail as on a full disk, and the store keeps serving reads.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let store = Self::connect_without_migrating(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Opens the database at `url` without touching its schema (for tools that only read, or
    /// that migrate explicitly with [`Store::migrate`]).
    pub async fn connect_without_migrating(url: &str) -> Result<Self, StoreError> {
        let (backend, url) = sql::resolve_url(url)?;
        let pool = sql::open_pool(backend, &url).await?;
        let write_health = Arc::new(writer::WriteHealth::default());
        let (retries, failed_saves) = mpsc::unbounded_channel();
        let writes = writer::spawn(pool.clone(), backend, write_health.clone(), retries);
        let store = Self {
            inner: Arc::new(Inner {
                pool,
                backend,
                writes,
                write_health,
                keys: key_cache::KeyCache::default(),
                deferred: std::sync::atomic::AtomicUsize::new(0),
                deferred_records: std::sync::Mutex::default(),
                replica: std::sync::OnceLock::new(),
            }),
        };
        store.retry_failed_saves(failed_saves);
        if backend == Backend::Sqlite {
            store.checkpoint_in_background();
        }
        Ok(store)
    }

    /// Copies SQLite's write-ahead log into the database file every [`CHECKPOINT_EVERY`], on a
    /// connection of its own: a `PASSIVE` checkpoint neither waits for the record writer nor
    /// makes it wait. The task holds the store weakly: it ends when the store does.
    fn checkpoint_in_background(&self) {
        let store = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(CHECKPOINT_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(pool) = store.upgrade().map(|inner| inner.pool.clone()) else {
                    break;
                };
                if pool.is_closed() {
                    break;
                }
                if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(&pool)
                    .await
                {
                    tracing::warn!("cannot checkpoint the database's write-ahead log: {error}");
                }
            }
        });
    }

    /// Applies the migrations not yet applied (what `club-coordinator migrate` runs). Safe to
    /// run while other coordinators use the database, and a no-op when the schema is current.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        sql::migrate(&self.inner.pool, self.inner.backend).await
    }

    /// Which database this store uses.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// Closes the pool, waiting for connections in use to be returned. Record writes queued
    /// after this fail.
    pub async fn close(&self) {
        self.release_writer().await;
        self.inner.pool.close().await;
    }
}

/// A database given as a plain path is a SQLite file.
pub fn database_url(database: &str) -> String {
    if database.contains("://") || database.starts_with("sqlite:") {
        database.to_owned()
    } else {
        format!("sqlite:{database}")
    }
}
