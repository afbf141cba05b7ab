//! The club: a coordinator process on its own database, `ada`'s key, and the nodes of a test.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use inference_club_coordinator::testing::{MAX_PAGE_SIZE, RecordQuery, Store};
use inference_club_core::record::{InferenceRecord, RecordId};

use super::{NodeProc, Proc, STARTUP, loud};

/// A coordinator with its database, a member `ada` with an all-scope key, and the nodes
/// started for the test. Every process is killed when it is dropped.
pub struct Club {
    /// The temporary directory holding the database and manifests.
    pub dir: PathBuf,
    /// The database URL.
    pub database: String,
    /// `ada`'s key (inference, provider, account).
    pub key: String,
    /// `host:port` of the coordinator.
    pub address: String,
    /// `http://host:port`.
    pub url: String,
    /// The coordinator process.
    pub coordinator: Proc,
    serve_args: Vec<String>,
    /// The nodes.
    pub nodes: Vec<NodeProc>,
    /// The consumer's HTTP client.
    pub http: reqwest::Client,
    store: Option<Store>,
}

impl std::fmt::Debug for Club {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Club")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

async fn admin(database: &str, args: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_club-coordinator"));
    command
        .arg("--database")
        .arg(database)
        .args(args)
        .env("NO_COLOR", "1");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "club-coordinator {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn coordinator_command(database: &str, listen: &str, serve_args: &[String]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_club-coordinator"));
    command
        .arg("--database")
        .arg(database)
        .arg("serve")
        .arg("--listen")
        .arg(listen)
        .arg("--heartbeat-secs")
        .arg("1")
        // The per-member limits do not bind here unless a test's flags set them.
        .env("CLUB_REQUESTS_PER_MINUTE", "100000")
        .env("CLUB_MAX_CONCURRENT_PER_MEMBER", "1000")
        .args(serve_args);
    command
}

impl Club {
    /// A coordinator on 127.0.0.1:0 with `serve_args` added to `serve`.
    pub async fn start(serve_args: &[&str]) -> Self {
        Self::start_on(None, serve_args).await
    }

    /// The same on the database `database` (`None`: a new SQLite file in the club's directory).
    pub async fn start_on(database: Option<&str>, serve_args: &[&str]) -> Self {
        // reqwest is built without a default TLS provider; plain HTTP still needs one installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = std::env::temp_dir().join(format!(
            "club-e2e-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let database = match database {
            Some(database) => database.to_owned(),
            None => format!("sqlite:{}", dir.join("club.db").display()),
        };
        admin(&database, &["user", "add", "ada"]).await;
        let key = admin(
            &database,
            &[
                "key",
                "create",
                "--user",
                "ada",
                "--scope",
                "inference,provider,account",
            ],
        )
        .await
        .trim()
        .to_owned();
        assert!(!key.is_empty(), "key create printed no key");
        let serve_args: Vec<String> = serve_args.iter().map(|a| (*a).to_owned()).collect();
        let coordinator = Proc::spawn(
            "coordinator",
            coordinator_command(&database, "127.0.0.1:0", &serve_args),
        );
        let line = coordinator
            .wait_for_line("listening on http://", STARTUP)
            .await;
        let address = line
            .split("listening on http://")
            .nth(1)
            .unwrap()
            .trim()
            .to_owned();
        assert!(
            !address.ends_with(":0"),
            "the coordinator must print the port it bound, got {line:?}"
        );
        let store = Store::connect(&database).await.unwrap();
        Self {
            dir,
            database,
            key,
            url: format!("http://{address}"),
            address,
            coordinator,
            serve_args,
            nodes: Vec::new(),
            http: reqwest::Client::new(),
            store: Some(store),
        }
    }

    /// Adds a member and returns a key of theirs with these scopes.
    pub async fn add_member(&self, handle: &str, scopes: &str) -> String {
        admin(&self.database, &["user", "add", handle]).await;
        admin(
            &self.database,
            &["key", "create", "--user", handle, "--scope", scopes],
        )
        .await
        .trim()
        .to_owned()
    }

    /// A key for `ada` with only these scopes.
    pub async fn key_with_scopes(&self, scopes: &str) -> String {
        admin(
            &self.database,
            &[
                "key", "create", "--user", "ada", "--scope", scopes, "--name", scopes,
            ],
        )
        .await
        .trim()
        .to_owned()
    }

    /// SIGKILLs the coordinator.
    pub fn kill_coordinator(&mut self) {
        self.coordinator.kill();
    }

    /// Starts the coordinator again on the same address and database (after a kill).
    pub async fn restart_coordinator(&mut self) {
        let database = self.database.clone();
        self.restart_coordinator_on(&database).await;
    }

    /// Starts the coordinator again on the same address, with the database URL `database` (the
    /// same database, reached another way: e.g. with a SQLite size cap).
    pub async fn restart_coordinator_on(&mut self, database: &str) {
        self.coordinator.kill();
        self.coordinator = Proc::spawn(
            "coordinator (restarted)",
            coordinator_command(database, &self.address, &self.serve_args),
        );
        self.coordinator
            .wait_for_line("listening on http://", STARTUP)
            .await;
    }

    /// The store, on the coordinator's database.
    pub fn store(&self) -> &Store {
        self.store.as_ref().unwrap()
    }

    /// The record `id` as stored now, if it is (the coordinator holds a new record's insert for
    /// a moment: this store, the test's own, does not see it before).
    pub async fn stored_record(&self, id: RecordId) -> Option<InferenceRecord> {
        self.store()
            .record(id)
            .await
            .unwrap()
            .map(|stored| stored.record)
    }

    /// The record `id` as stored now.
    pub async fn record(&self, id: RecordId) -> InferenceRecord {
        self.store()
            .record(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no record {id}"))
            .record
    }

    /// Every record `ada` made, as stored now, newest first.
    pub async fn all_records(&self) -> Vec<InferenceRecord> {
        let store = self.store();
        let ada = store.user_by_handle("ada").await.unwrap().unwrap();
        let mut query = RecordQuery::made_by(ada.id);
        query.limit = MAX_PAGE_SIZE;
        let mut all = Vec::new();
        loop {
            let page = store.list_records(&query).await.unwrap();
            all.extend(page.items);
            match page.next {
                Some(cursor) => query = query.after(Some(cursor)),
                None => return all,
            }
        }
    }

    /// Waits until every record `ada` made is final; returns them, or fails after `within`
    /// naming those still in flight.
    pub async fn all_final(&self, within: Duration) -> Vec<InferenceRecord> {
        super::until_all_final("records", within, || self.all_records()).await
    }

    /// Waits until record `id` is stored and final, and returns it (the coordinator queues a
    /// final save for its writer: this store, the test's own, sees it a moment later).
    pub async fn final_record(&self, id: RecordId, within: Duration) -> InferenceRecord {
        let deadline = Instant::now() + within;
        loop {
            let record = self.stored_record(id).await;
            if let Some(record) = record.as_ref().filter(|r| r.status().is_final()) {
                return record.clone();
            }
            assert!(
                Instant::now() < deadline,
                "record {id} still {:?} after {within:?}",
                record.map(|r| r.status())
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The value of the counter or gauge whose name ends with `suffix` on `/metrics`.
    pub async fn metric(&self, suffix: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once(' '))
            .find(|(name, _)| name.ends_with(suffix))
            .and_then(|(_, value)| value.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Every process's output, for a failing test's report.
    pub fn outputs(&self) -> String {
        let mut all = format!(
            "---- {} ----\n{}\n",
            self.coordinator.name,
            self.coordinator.output()
        );
        for node in &self.nodes {
            all.push_str(&format!(
                "---- {} ----\n{}\n",
                node.proc.name,
                node.proc.output()
            ));
        }
        all
    }
}

impl Drop for Club {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.proc.kill();
        }
        self.coordinator.kill();
        if std::thread::panicking() {
            loud(&format!("==== process output ====\n{}", self.outputs()));
            loud(&format!("(kept {} for inspection)", self.dir.display()));
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
