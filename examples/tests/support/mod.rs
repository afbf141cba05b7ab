//! The one harness of the tests of the binaries: a club of real processes (the built
//! `club-coordinator` and `club-provider` binaries) on a temporary SQLite file, fake engines
//! inside the test, and a consumer that speaks HTTP and SSE; [`cluster`] runs several replicas
//! behind nginx on PostgreSQL and NATS, [`faults`] injects network and database faults.
#![allow(dead_code, unused_imports)]

pub mod cluster;
pub mod engine;
pub mod faults;
pub mod process;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use inference_club_coordinator::testing::Store;
use inference_club_core::record::{InferenceRecord, RecordId};
use serde_json::{Value, json};

pub use engine::{FakeEngine, Fault, Script};
pub use process::Proc;

/// The model the fake engines serve.
pub const MODEL: &str = "club-test-model";

/// How long a process may take to start and link.
pub const STARTUP: Duration = Duration::from_secs(15);

/// Polls `condition` every 20 ms until it holds; fails the test after `within`.
pub async fn wait_until(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    loop {
        if condition() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The answer the scripted engines give by default in the end-to-end and fault suites.
pub const ANSWER: &str = "Hello, world!";

/// Runs `test`, failing it after `limit`. (The panic happens while the test's future is still
/// alive, so its club prints the processes' output as it is dropped.)
pub async fn bounded_by<F: std::future::Future<Output = ()>>(limit: Duration, test: F) {
    let test = std::pin::pin!(test);
    tokio::select! {
        () = test => {}
        () = tokio::time::sleep(limit) => panic!("the test took longer than {limit:?}"),
    }
}

/// The error object of an SSE payload, if it is one.
pub fn error_of(event: &str) -> Option<Value> {
    let value: Value = serde_json::from_str(event).ok()?;
    value.get("error").cloned()
}

/// Writes a line straight to the process's stderr (the test harness captures `eprintln!`).
pub fn loud(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// One service of a node's manifest.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// Its engine's base URL.
    pub url: String,
    /// `vllm`, `llamacpp`, `other`, …
    pub engine: String,
    /// Its `max_concurrent`, if any.
    pub max_concurrent: Option<u32>,
    /// The model it serves.
    pub model: String,
}

impl ServiceSpec {
    /// A vLLM-style service for a fake engine, serving [`MODEL`].
    pub fn fake(engine: &FakeEngine) -> Self {
        Self {
            url: engine.url.clone(),
            engine: "vllm".into(),
            max_concurrent: None,
            model: MODEL.into(),
        }
    }

    /// The same with `max_concurrent`.
    pub fn max_concurrent(mut self, n: u32) -> Self {
        self.max_concurrent = Some(n);
        self
    }
}

fn manifest_yaml(name: &str, services: &[ServiceSpec]) -> String {
    let mut yaml =
        format!("schema_version: 1\nagent:\n  name: {name}\nhosts:\n  - id: box\n    services:\n");
    for (n, service) in services.iter().enumerate() {
        yaml.push_str(&format!(
            "      - name: svc{n}\n        engine: {}\n        url: {}\n",
            service.engine, service.url
        ));
        if let Some(max) = service.max_concurrent {
            yaml.push_str(&format!("        max_concurrent: {max}\n"));
        }
        yaml.push_str(&format!(
            "        models:\n          - id: {}\n",
            service.model
        ));
    }
    yaml
}

/// A node process and its manifest.
#[derive(Debug)]
pub struct NodeProc {
    /// Its `agent.name`.
    pub name: String,
    /// The process.
    pub proc: Proc,
}

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

    /// Starts a node named `name` with these services, using `key` (default: `ada`'s), and
    /// returns its index in `nodes`. Does not wait for it to link.
    pub fn spawn_node_with_key(
        &mut self,
        name: &str,
        services: &[ServiceSpec],
        key: &str,
    ) -> usize {
        let url = self.url.clone();
        self.spawn_node_with(name, services, key, &url, &[])
    }

    /// Starts a node named `name` that dials `coordinator_url` (e.g. through a proxy) with
    /// `key`, with `extra_args` added to `club-provider run`, and returns its index in `nodes`.
    /// Does not wait for it to link.
    pub fn spawn_node_with(
        &mut self,
        name: &str,
        services: &[ServiceSpec],
        key: &str,
        coordinator_url: &str,
        extra_args: &[&str],
    ) -> usize {
        let manifest = self.dir.join(format!("{name}.yaml"));
        std::fs::write(&manifest, manifest_yaml(name, services)).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_club-provider"));
        command
            .arg("run")
            .arg("--coordinator")
            .arg(coordinator_url)
            .arg("--key")
            .arg(key)
            .arg("--manifest")
            .arg(&manifest)
            .args(extra_args);
        self.nodes.push(NodeProc {
            name: name.to_owned(),
            proc: Proc::spawn(&format!("node {name}"), command),
        });
        self.nodes.len() - 1
    }

    /// Writes node `name`'s manifest anew with `services` (the node announces it when it
    /// reads it again: on SIGHUP, or within its watch interval).
    pub fn rewrite_manifest(&self, name: &str, services: &[ServiceSpec]) {
        std::fs::write(
            self.dir.join(format!("{name}.yaml")),
            manifest_yaml(name, services),
        )
        .unwrap();
    }

    /// Starts a node and waits until it is linked and its model is listed.
    pub async fn add_node(&mut self, name: &str, services: &[ServiceSpec]) -> usize {
        let key = self.key.clone();
        let index = self.spawn_node_with_key(name, services, &key);
        self.nodes[index]
            .proc
            .wait_for_line("linked to the coordinator", STARTUP)
            .await;
        for service in services {
            self.wait_for_model(&service.model).await;
        }
        index
    }

    /// The node named `name`.
    pub fn node(&mut self, name: &str) -> &mut NodeProc {
        self.nodes.iter_mut().find(|n| n.name == name).unwrap()
    }

    /// The models `GET /v1/models` lists now.
    pub async fn models(&self) -> Vec<String> {
        let response = self
            .http
            .get(format!("{}/v1/models", self.url))
            .bearer_auth(&self.key)
            .send()
            .await;
        let Ok(response) = response else {
            return Vec::new();
        };
        let body: Value = json_of(response).await;
        body["data"]
            .as_array()
            .map(|d| {
                d.iter()
                    .filter_map(|m| m["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until `GET /v1/models` lists `model`.
    pub async fn wait_for_model(&self, model: &str) {
        let deadline = Instant::now() + STARTUP;
        while !self.models().await.iter().any(|m| m == model) {
            assert!(
                Instant::now() < deadline,
                "{model} never appeared in /v1/models"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `POST /v1/chat/completions` with `body`, `key` (`None`: no key) and extra headers.
    pub async fn post_chat(
        &self,
        body: &Value,
        key: Option<&str>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}/v1/chat/completions", self.url))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    /// A whole chat as `ada`: status, record id (if named) and body.
    pub async fn chat_whole(&self, body: &Value) -> (u16, Option<RecordId>, Value) {
        let response = self.post_chat(body, Some(&self.key), &[]).await;
        let status = response.status().as_u16();
        let id = request_id(&response);
        (status, id, json_of(response).await)
    }

    /// A streamed chat as `ada`, read to its end.
    pub async fn chat_streamed(&self, body: &Value) -> (u16, Option<RecordId>, Vec<String>) {
        let response = self.post_chat(body, Some(&self.key), &[]).await;
        let status = response.status().as_u16();
        let id = request_id(&response);
        let mut events = SseReader::new(response);
        let mut all = Vec::new();
        while let Some(event) = events.next().await {
            all.push(event);
        }
        (status, id, all)
    }

    /// A streamed chat as `ada` in a task of its own, read to its end.
    pub fn spawn_chat_streamed(
        &self,
        body: Value,
    ) -> tokio::task::JoinHandle<(u16, Option<RecordId>, Vec<String>)> {
        let (http, url, key) = (self.http.clone(), self.url.clone(), self.key.clone());
        tokio::spawn(async move {
            let response = http
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let id = request_id(&response);
            let mut events = SseReader::new(response);
            let mut all = Vec::new();
            while let Some(event) = events.next().await {
                all.push(event);
            }
            (status, id, all)
        })
    }

    /// The store, on the coordinator's database.
    pub fn store(&self) -> &Store {
        self.store.as_ref().unwrap()
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

    /// Waits until record `id` is final, and returns it.
    pub async fn final_record(&self, id: RecordId, within: Duration) -> InferenceRecord {
        let deadline = Instant::now() + within;
        loop {
            let record = self.record(id).await;
            if record.status().is_final() {
                return record;
            }
            assert!(
                Instant::now() < deadline,
                "record {id} still {:?} after {within:?}",
                record.status()
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

/// The record named by a response.
pub fn request_id(response: &reqwest::Response) -> Option<RecordId> {
    response
        .headers()
        .get("x-club-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(RecordId::parse)
}

/// A response's body as JSON; `Value::Null` when it is not JSON.
pub async fn json_of(response: reqwest::Response) -> Value {
    let bytes = response.bytes().await.unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

/// A chat request for [`MODEL`] with one user message.
pub fn chat_body(stream: bool) -> Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello"}],
        "stream": stream,
    })
}

/// Reads the `data:` payloads of an SSE response one event at a time.
pub struct SseReader {
    body: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>,
    >,
    buffer: Vec<u8>,
    /// Set when the body ended with a transport error.
    pub broken: bool,
}

impl SseReader {
    /// Reads `response`'s body.
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            body: Box::pin(response.bytes_stream()),
            buffer: Vec::new(),
            broken: false,
        }
    }

    /// The next event's data (`[DONE]` included), or `None` at the end of the body.
    pub async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let text = String::from_utf8(event).unwrap();
                let data: Vec<&str> = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if data.is_empty() {
                    continue;
                }
                return Some(data.join("\n"));
            }
            match self.body.next().await {
                Some(Ok(bytes)) => self.buffer.extend_from_slice(&bytes),
                Some(Err(_)) => {
                    self.broken = true;
                    return None;
                }
                None => return None,
            }
        }
    }
}

/// The consumer goes away: reads `response`'s stream until its content is `prefix`, drops it,
/// and waits (up to 3 s) until `engine` sees its own response dropped. Returns how long that
/// took.
pub async fn leave_after(
    response: reqwest::Response,
    prefix: &str,
    engine: &FakeEngine,
) -> Duration {
    let mut events = SseReader::new(response);
    let mut seen = Vec::new();
    while streamed_content(&seen) != prefix {
        seen.push(events.next().await.expect("the stream ended early"));
    }
    let left = Instant::now();
    drop(events);
    wait_until(
        "the engine sees its response dropped",
        Duration::from_secs(3),
        || engine.dropped() == 1,
    )
    .await;
    left.elapsed()
}

/// The content of a list of SSE payloads (chunks' `delta.content`, joined).
pub fn streamed_content(events: &[String]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}
