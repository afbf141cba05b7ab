//! A database of a test's own: a SQLite file in the temp directory, or a fresh database on the
//! PostgreSQL server `CLUB_TEST_DATABASE_URL` names (`scripts/test.sh` starts one).

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Once;

use sqlx::AnyPool;

/// The variable naming the PostgreSQL server the tests may create databases on.
pub const POSTGRES_ENV: &str = "CLUB_TEST_DATABASE_URL";

/// A database of a test's own. [`TestDatabase::remove`] deletes it; a SQLite one is deleted
/// when dropped too.
#[derive(Debug)]
pub struct TestDatabase {
    /// Its URL, for [`Store::connect`](super::Store::connect) or a coordinator.
    pub url: String,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Sqlite(PathBuf),
    Postgres { server_url: String, name: String },
}

/// A name no other test, run or process uses.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    )
}

/// Says once per test binary, on the process's stderr (the harness captures `eprintln!`), that
/// the tests that need `what` skip.
pub fn skip_loudly(what: &str) {
    static WARNED: Once = Once::new();
    WARNED.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: {POSTGRES_ENV} not set — {what} need a PostgreSQL server; scripts/test.sh \
             starts one"
        );
    });
}

impl TestDatabase {
    /// A new SQLite file in the temp directory.
    pub fn sqlite() -> Self {
        let path = std::env::temp_dir().join(format!("{}.db", unique_name("club_test")));
        Self {
            url: format!("sqlite:{}", path.display()),
            kind: Kind::Sqlite(path),
        }
    }

    /// A new database on the PostgreSQL server of [`POSTGRES_ENV`], or `None` (said loudly
    /// once, naming `what` needs it) when the variable is unset.
    pub async fn postgres(what: &str) -> Option<Self> {
        let Ok(server_url) = std::env::var(POSTGRES_ENV) else {
            skip_loudly(what);
            return None;
        };
        sqlx::any::install_default_drivers();
        let name = unique_name("club_test");
        let server = AnyPool::connect(&server_url).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&server)
            .await
            .unwrap();
        server.close().await;
        Some(Self {
            url: with_database(&server_url, &name),
            kind: Kind::Postgres { server_url, name },
        })
    }

    /// Whether it is on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.kind, Kind::Postgres { .. })
    }

    /// A raw pool on it, to look inside.
    pub async fn raw(&self) -> AnyPool {
        sqlx::any::install_default_drivers();
        AnyPool::connect(&self.url).await.unwrap()
    }

    /// Deletes a SQLite database's files at once (nothing for PostgreSQL: see [`remove`]).
    ///
    /// [`remove`]: Self::remove
    pub fn remove_sqlite_files(&self) {
        if let Kind::Sqlite(path) = &self.kind {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
    }

    /// Deletes the database (close what uses it first). A SQLite database is also deleted when
    /// dropped.
    pub async fn remove(self) {
        if let Kind::Postgres { server_url, name } = &self.kind {
            let server = AnyPool::connect(server_url).await.unwrap();
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&server)
                .await
                .unwrap();
            server.close().await;
        }
    }
}

impl Drop for TestDatabase {
    /// Deletes a SQLite database's files, but for a failed test's: they stay, to be looked at.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.remove_sqlite_files();
        }
    }
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
    match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    }
}
