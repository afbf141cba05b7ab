//! Support for the cluster suite: a club of real processes spread over three coordinator
//! replicas (the built `club-coordinator serve --nats …`), one `nats-server`, nginx in front of
//! them (configured from `scripts/nginx-cluster.conf`, the file `scripts/cluster.sh` runs), and a
//! PostgreSQL database of its own per test.
//!
//! Replica 1 is the coordinator of an e2e [`Club`] (which also holds the database, `ada`'s key,
//! the nodes and the store); replicas 2 and 3 are started the same way on the same database.
#![allow(dead_code)]

mod calls;
mod chat;
mod nodes;
mod replicas;
mod tools;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{Club, Proc, STARTUP, loud};

pub use calls::{CallAnswer, CallService, EmbeddingEngine};
pub use chat::{Streamed, chat_for, read_streamed};
pub use tools::{Tools, free_port, tools};

/// The nginx configuration users run (the template `scripts/cluster.sh` fills in).
const NGINX_TEMPLATE: &str = include_str!("../../../../scripts/nginx-cluster.conf");

/// The NATS server's configuration (what scripts/cluster.sh writes; the address comes by flags).
const NATS_CONFIG: &str = "max_payload: 8MB\n";

/// How many replicas a cluster has.
pub const REPLICAS: usize = 3;

/// How long a replica may drain on SIGTERM (`--drain-secs`).
pub const DRAIN_SECS: u64 = 10;

/// The `serve` flags that make replica `n` (0-based) a member of the cluster, then `extra`.
fn replica_args(nats_url: &str, n: usize, extra: &[String]) -> Vec<String> {
    let mut args = vec![
        "--nats".into(),
        nats_url.into(),
        "--replica-id".into(),
        format!("r{}", n + 1),
        "--drain-secs".into(),
        DRAIN_SECS.to_string(),
    ];
    args.extend_from_slice(extra);
    args
}

/// `club-coordinator serve` as the e2e club starts its coordinator, plus `args`.
fn replica_command(database: &str, listen: &str, args: &[String]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_club-coordinator"));
    command
        .arg("--database")
        .arg(database)
        .arg("serve")
        .arg("--listen")
        .arg(listen)
        .arg("--heartbeat-secs")
        .arg("1")
        .env("CLUB_REQUESTS_PER_MINUTE", "100000")
        .env("CLUB_MAX_CONCURRENT_PER_MEMBER", "1000")
        .args(args);
    command
}

/// The address in a `listening on http://ADDR` line.
fn address_in(line: &str) -> String {
    line.split("listening on http://")
        .nth(1)
        .unwrap()
        .trim()
        .to_owned()
}

/// `scripts/nginx-cluster.conf` filled in, as one process (`master_process off`, so that
/// killing it leaves no worker behind).
pub fn nginx_config(prefix: &Path, listen: &str, replicas: &[String]) -> String {
    let upstreams: Vec<String> = replicas
        .iter()
        .map(|address| format!("server {address} max_fails=0;"))
        .collect();
    let config = NGINX_TEMPLATE
        .replace("@PREFIX@", &prefix.display().to_string())
        .replace("@LISTEN@", listen)
        .replace("@UPSTREAMS@", &upstreams.join("\n        "));
    format!("master_process off;\n{config}")
}

/// Three replicas on one database and one NATS server, nginx in front, and the nodes of the
/// test. Every process is killed when it is dropped.
pub struct Cluster {
    /// The club: replica 1 (`club.coordinator`), the database, `ada`'s key, the nodes.
    pub club: Club,
    /// Replicas 2 and 3.
    others: Vec<Proc>,
    /// `host:port` of each replica, replica 1 first.
    pub addresses: Vec<String>,
    /// The NATS server.
    pub nats: Proc,
    /// `nats://host:port`.
    pub nats_url: String,
    /// nginx.
    pub nginx: Proc,
    /// `http://host:port` of nginx.
    pub nginx_url: String,
    database: String,
    nats_dir: PathBuf,
    /// `serve` flags every replica gets beyond the cluster's own.
    extra_args: Vec<String>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("addresses", &self.addresses)
            .field("nginx_url", &self.nginx_url)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Starts nats-server, three replicas on `database` (a PostgreSQL URL) and nginx, and waits
    /// until nginx answers.
    pub async fn start(tools: &Tools, database: &str) -> Self {
        Self::start_with(tools, database, &[]).await
    }

    /// [`Cluster::start`], with `extra_args` (limits, say) given to every replica's `serve`.
    pub async fn start_with(tools: &Tools, database: &str, extra_args: &[&str]) -> Self {
        let extra_args: Vec<String> = extra_args.iter().map(|a| (*a).to_owned()).collect();
        // NATS as scripts/cluster.sh runs it: messages up to 8 MB, so that any chat body the
        // coordinator accepts (4 MiB by default) can cross replicas.
        let nats_dir = std::env::temp_dir().join(format!(
            "club-nats-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&nats_dir).unwrap();
        let nats_config = nats_dir.join("nats.conf");
        std::fs::write(&nats_config, NATS_CONFIG).unwrap();
        let nats_port = free_port();
        let mut command = Command::new(&tools.nats_server);
        command
            .arg("-c")
            .arg(&nats_config)
            .args(["-a", "127.0.0.1", "-p", &nats_port.to_string()]);
        let nats = Proc::spawn("nats-server", command);
        nats.wait_for_line("Server is ready", STARTUP).await;
        let nats_url = format!("nats://127.0.0.1:{nats_port}");

        let first = replica_args(&nats_url, 0, &extra_args);
        let first: Vec<&str> = first.iter().map(String::as_str).collect();
        let club = Club::start_on(Some(database), &first).await;
        let mut addresses = vec![club.address.clone()];
        let others: Vec<Proc> = (1..REPLICAS)
            .map(|n| {
                Proc::spawn(
                    &format!("replica r{}", n + 1),
                    replica_command(
                        database,
                        "127.0.0.1:0",
                        &replica_args(&nats_url, n, &extra_args),
                    ),
                )
            })
            .collect();
        for other in &others {
            let line = other.wait_for_line("listening on http://", STARTUP).await;
            addresses.push(address_in(&line));
        }

        let prefix = club.dir.join("nginx");
        std::fs::create_dir_all(&prefix).unwrap();
        let listen = format!("127.0.0.1:{}", free_port());
        let config = prefix.join("nginx.conf");
        std::fs::write(&config, nginx_config(&prefix, &listen, &addresses)).unwrap();
        let mut command = Command::new(&tools.nginx);
        command
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&config)
            .args(["-e", "stderr"]);
        let nginx = Proc::spawn("nginx", command);
        let cluster = Self {
            club,
            others,
            addresses,
            nats,
            nats_url,
            nginx,
            nginx_url: format!("http://{listen}"),
            database: database.to_owned(),
            nats_dir,
            extra_args,
        };
        let deadline = Instant::now() + STARTUP;
        loop {
            let health = cluster
                .club
                .http
                .get(format!("{}/healthz", cluster.nginx_url))
                .send()
                .await;
            if health.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(Instant::now() < deadline, "nginx never answered /healthz");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cluster
    }

    /// The output of the processes the club does not print itself.
    pub fn outputs(&self) -> String {
        let mut all = String::new();
        for process in self.others.iter().chain([&self.nats, &self.nginx]) {
            all.push_str(&format!(
                "---- {} ----\n{}\n",
                process.name,
                process.output()
            ));
        }
        all
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.nats_dir);
        if std::thread::panicking() {
            loud(&format!(
                "==== cluster output (replicas 2.., nats, nginx) ====\n{}",
                self.outputs()
            ));
        }
    }
}
