//! Support for the cluster suite: a club of real processes spread over three coordinator
//! replicas (the built `club-coordinator serve --nats …`), one `nats-server`, nginx in front of
//! them (configured from `scripts/nginx-cluster.conf`, the file `scripts/cluster.sh` runs), and a
//! PostgreSQL database of its own per test.
//!
//! Replica 1 is the coordinator of an e2e [`Club`] (which also holds the database, `ada`'s key,
//! the nodes and the store); replicas 2 and 3 are started the same way on the same database.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use inference_club_core::record::RecordId;
use serde_json::{Value, json};

use super::{Club, Proc, STARTUP, ServiceSpec, SseReader, json_of, loud, request_id};

/// The nginx configuration users run (the template `scripts/cluster.sh` fills in).
const NGINX_TEMPLATE: &str = include_str!("../../../scripts/nginx-cluster.conf");

/// The NATS server's configuration (what scripts/cluster.sh writes; the address comes by flags).
const NATS_CONFIG: &str = "max_payload: 8MB\n";

/// How many replicas a cluster has.
pub const REPLICAS: usize = 3;

/// How long a replica may drain on SIGTERM (`--drain-secs`).
pub const DRAIN_SECS: u64 = 10;

/// What the cluster tests need from the machine.
#[derive(Debug, Clone)]
pub struct Tools {
    /// The PostgreSQL server's URL (`CLUB_TEST_DATABASE_URL`).
    pub postgres: String,
    /// The `nats-server` binary.
    pub nats_server: PathBuf,
    /// The `nginx` binary.
    pub nginx: PathBuf,
}

/// `name` from `$env` (which must then exist), else from PATH, `/usr/sbin` or `/usr/bin`.
fn program(env: &str, name: &str) -> Option<PathBuf> {
    if let Ok(path) = std::env::var(env)
        && !path.trim().is_empty()
    {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{env} names {}, which does not exist",
            path.display()
        );
        return Some(path);
    }
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/usr/bin"])
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| candidate.is_file())
}

/// The tools, or `None` and a loud SKIPPED line naming `test` and what is missing.
pub fn tools(test: &str) -> Option<Tools> {
    let postgres = super::faults::postgres_url(test)?;
    let Some(nats_server) = program("CLUB_TEST_NATS_SERVER", "nats-server") else {
        loud(&format!(
            "SKIPPED {test}: no nats-server (Debian's package nats-server; or set CLUB_TEST_NATS_SERVER)"
        ));
        return None;
    };
    let Some(nginx) = program("CLUB_TEST_NGINX", "nginx") else {
        loud(&format!(
            "SKIPPED {test}: no nginx (Debian's package nginx-light; or set CLUB_TEST_NGINX)"
        ));
        return None;
    };
    Some(Tools {
        postgres,
        nats_server,
        nginx,
    })
}

/// A free TCP port on 127.0.0.1 (free when asked; the caller binds it soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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

/// A chat request for `model` with one user message.
pub fn chat_for(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "Say hello"}],
        "stream": stream,
    })
}

/// A streamed answer read to its end.
#[derive(Debug)]
pub struct Streamed {
    /// The HTTP status.
    pub status: u16,
    /// The record it names.
    pub id: Option<RecordId>,
    /// The `data:` payloads, `[DONE]` included.
    pub events: Vec<String>,
    /// Whether the body ended with a transport error.
    pub broken: bool,
}

/// A streamed answer read to its end, with the time each event arrived.
pub async fn read_streamed(response: reqwest::Response) -> (Streamed, Vec<Instant>) {
    let status = response.status().as_u16();
    let id = request_id(&response);
    let mut reader = SseReader::new(response);
    let mut events = Vec::new();
    let mut arrivals = Vec::new();
    while let Some(event) = reader.next().await {
        arrivals.push(Instant::now());
        events.push(event);
    }
    let streamed = Streamed {
        status,
        id,
        events,
        broken: reader.broken,
    };
    (streamed, arrivals)
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

    /// `http://host:port` of replica `n` (0-based).
    pub fn url(&self, n: usize) -> String {
        format!("http://{}", self.addresses[n])
    }

    /// Every replica's URL, then nginx's.
    pub fn every_door(&self) -> Vec<String> {
        let mut all: Vec<String> = (0..REPLICAS).map(|n| self.url(n)).collect();
        all.push(self.nginx_url.clone());
        all
    }

    /// The process of replica `n`.
    pub fn replica(&mut self, n: usize) -> &mut Proc {
        if n == 0 {
            &mut self.club.coordinator
        } else {
            &mut self.others[n - 1]
        }
    }

    /// The output of replica `n`.
    pub fn replica_output(&self, n: usize) -> String {
        if n == 0 {
            self.club.coordinator.output()
        } else {
            self.others[n - 1].output()
        }
    }

    /// SIGKILLs replica `n`.
    pub fn kill_replica(&mut self, n: usize) {
        self.replica(n).kill();
    }

    /// Sends SIGTERM to replica `n` and waits until it exits (within the drain time and some),
    /// returning its exit status.
    pub async fn terminate_replica(&mut self, n: usize) -> ExitStatus {
        self.replica(n).signal("TERM");
        let within = Duration::from_secs(DRAIN_SECS + 10);
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.replica(n).exit_status() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "replica r{} did not exit within {within:?} of SIGTERM",
                n + 1
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts replica `n` again on its address (after it exited or was killed), and waits until
    /// it listens.
    pub async fn restart_replica(&mut self, n: usize) {
        self.replica(n).kill();
        let command = replica_command(
            &self.database,
            &self.addresses[n],
            &replica_args(&self.nats_url, n, &self.extra_args),
        );
        let process = Proc::spawn(&format!("replica r{} (restarted)", n + 1), command);
        process.wait_for_line("listening on http://", STARTUP).await;
        *self.replica(n) = process;
    }

    /// Starts a node named `name` with `services` that dials `coordinator_url` (a replica or
    /// nginx) with `ada`'s key. Does not wait for it to link.
    pub fn spawn_node(
        &mut self,
        name: &str,
        services: &[ServiceSpec],
        coordinator_url: &str,
    ) -> usize {
        let key = self.club.key.clone();
        self.club
            .spawn_node_with(name, services, &key, coordinator_url, &[])
    }

    /// The same, waiting until the node says it is linked.
    pub async fn add_node(
        &mut self,
        name: &str,
        services: &[ServiceSpec],
        coordinator_url: &str,
    ) -> usize {
        let index = self.spawn_node(name, services, coordinator_url);
        self.club.nodes[index]
            .proc
            .wait_for_line("linked to the coordinator", STARTUP)
            .await;
        index
    }

    /// How many times node `name` linked (its own count of `linked to the coordinator`).
    pub fn links_of(&mut self, name: &str) -> usize {
        self.club
            .node(name)
            .proc
            .count_lines_with("linked to the coordinator")
    }

    /// The replicas (0-based) that logged a link of node `name` so far, in order.
    pub fn replicas_that_linked(&self, name: &str) -> Vec<usize> {
        let field = format!("provider={name}");
        (0..REPLICAS)
            .filter(|n| {
                self.replica_output(*n).lines().any(|line| {
                    line.contains("node linked") && line.split_whitespace().any(|w| w == field)
                })
            })
            .collect()
    }

    /// The models `GET /v1/models` at `base` lists now.
    pub async fn models(&self, base: &str) -> Vec<String> {
        let response = self
            .club
            .http
            .get(format!("{base}/v1/models"))
            .bearer_auth(&self.club.key)
            .send()
            .await;
        let Ok(response) = response else {
            return Vec::new();
        };
        json_of(response).await["data"]
            .as_array()
            .map(|data| {
                data.iter()
                    .filter_map(|m| m["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until every replica (and nginx) lists each of `models`; fails after `within`.
    /// Returns how long it took.
    pub async fn wait_for_models_everywhere(&self, models: &[&str], within: Duration) -> Duration {
        let started = Instant::now();
        for base in self.every_door() {
            loop {
                let listed = self.models(&base).await;
                if models.iter().all(|m| listed.iter().any(|l| l == m)) {
                    break;
                }
                assert!(
                    started.elapsed() < within,
                    "{base} does not list {models:?} after {within:?} (it lists {listed:?})"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        started.elapsed()
    }

    /// `ada`'s provider `name` as `GET /api/v1/providers/ada/{name}` at `base` shows it.
    pub async fn provider(&self, base: &str, name: &str) -> Option<Value> {
        let response = self
            .club
            .http
            .get(format!("{base}/api/v1/providers/ada/{name}"))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        Some(json_of(response).await)
    }

    /// Whether `GET /api/v1/providers` at `base` lists `name` online.
    pub async fn listed_online(&self, base: &str, name: &str) -> bool {
        let Ok(response) = self
            .club
            .http
            .get(format!("{base}/api/v1/providers"))
            .send()
            .await
        else {
            return false;
        };
        json_of(response).await["data"]
            .as_array()
            .is_some_and(|data| {
                data.iter()
                    .any(|p| p["name"] == name && p["online"] == json!(true))
            })
    }

    /// Waits until every replica lists each of `names` online; fails after `within`.
    pub async fn wait_online_everywhere(&self, names: &[String], within: Duration) -> Duration {
        let started = Instant::now();
        for n in 0..REPLICAS {
            let base = self.url(n);
            for name in names {
                while !self.listed_online(&base, name).await {
                    assert!(
                        started.elapsed() < within,
                        "replica r{} does not list {name} online after {within:?}",
                        n + 1
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        started.elapsed()
    }

    /// `POST {base}/v1/chat/completions` with `body`, as `ada`.
    pub async fn post_chat(&self, base: &str, body: &Value) -> reqwest::Response {
        self.club
            .http
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&self.club.key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    /// A whole chat at `base`: status, record id and body.
    pub async fn chat_whole(&self, base: &str, body: &Value) -> (u16, Option<RecordId>, Value) {
        let response = self.post_chat(base, body).await;
        let status = response.status().as_u16();
        let id = request_id(&response);
        (status, id, json_of(response).await)
    }

    /// A streamed chat at `base`, read to its end.
    pub async fn chat_streamed(&self, base: &str, body: &Value) -> Streamed {
        read_streamed(self.post_chat(base, body).await).await.0
    }

    /// `GET {base}/api/v1/requests/{id}` as `ada`: status and body.
    pub async fn record_via(&self, base: &str, id: RecordId) -> (u16, Value) {
        let response = self
            .club
            .http
            .get(format!("{base}/api/v1/requests/{id}"))
            .bearer_auth(&self.club.key)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, json_of(response).await)
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
