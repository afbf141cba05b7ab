//! Scenario 6, replicas (issue 11): the cost of the cross-replica hop against the in-process one.
//!
//! Two coordinator replicas, A and B, run as a cluster on one fresh PostgreSQL database and one
//! `nats-server`; one provider node links to B. Scenarios 1 (whole answers) and 2 (100-chunk
//! streams) at c=16 run three ways in the same run, on the same processes:
//!
//! - **direct**: load generator → engine (the reference, as in tables 1 and 2);
//! - **in-process hop**: consumers send to B, the replica that holds the node's link;
//! - **cross-replica hop**: consumers send to A, which hands each job over NATS to B, which
//!   forwards it to the node and publishes the chunks back to A.
//!
//! Each row reports CPU per request of every process (engine, A, B, node, nats-server and the
//! PostgreSQL server) and the NATS messages per request and per content chunk, read from
//! `nats-server`'s monitoring endpoint (`/varz`: `in_msgs` published by clients, `out_msgs`
//! delivered to subscribers).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cluster::{self, Process};
use crate::engine::{STREAM_MODEL, WHOLE_MODEL};
use crate::load::{self, Load, Outcome, Target};
use crate::{BoxError, STREAM, WHOLE, diff, ms, pg, signed_ms};

/// The direct path's rows.
pub const DIRECT: &str = "direct";
/// Consumers on the replica that holds the link.
pub const IN_PROCESS: &str = "in-process hop (consumer on B, link on B)";
/// Consumers on the other replica.
pub const CROSS: &str = "cross-replica hop (consumer on A, link on B)";
/// The scenario's rows: scenario, model, streamed, concurrency. At c=1 the latencies are the
/// hops' own (no queueing for CPU); at c=16 the throughput and CPU per request.
const PLAN: [(&str, &str, bool, usize); 4] = [
    (WHOLE, WHOLE_MODEL, false, 1),
    (WHOLE, WHOLE_MODEL, false, 16),
    (STREAM, STREAM_MODEL, true, 1),
    (STREAM, STREAM_MODEL, true, 16),
];

/// CPU time per correct request of each process, µs (user + system, from `/proc/PID/stat`).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ReplicaCpu {
    /// The fake engine.
    pub engine_us: f64,
    /// Replica A (holds no link).
    pub replica_a_us: f64,
    /// Replica B (holds the node's link).
    pub replica_b_us: f64,
    /// The provider node.
    pub node_us: f64,
    /// `nats-server`.
    pub nats_us: f64,
    /// Every process named `postgres` (other clients of the same server count too).
    pub postgres_us: f64,
}

/// NATS traffic during a measured row, from `/varz` before and after it.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct NatsTraffic {
    /// Messages published by clients (`in_msgs`) during the row.
    pub in_msgs: u64,
    /// Messages delivered to subscribers (`out_msgs`) during the row.
    pub out_msgs: u64,
    /// Bytes published by clients (`in_bytes`) during the row.
    pub in_bytes: u64,
    /// Published messages per correct request.
    pub in_per_request: f64,
    /// Delivered messages per correct request.
    pub out_per_request: f64,
    /// Published messages per content chunk received by the consumers (streams; 0 otherwise).
    pub in_per_chunk: f64,
    /// Published bytes per correct request.
    pub bytes_per_request: f64,
}

/// `nats-server`'s counters at one moment.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
struct Varz {
    #[serde(default)]
    in_msgs: u64,
    #[serde(default)]
    out_msgs: u64,
    #[serde(default)]
    in_bytes: u64,
}

impl NatsTraffic {
    fn between(before: Varz, after: Varz, requests: u64, chunks: u64) -> Self {
        let in_msgs = after.in_msgs.saturating_sub(before.in_msgs);
        let out_msgs = after.out_msgs.saturating_sub(before.out_msgs);
        let in_bytes = after.in_bytes.saturating_sub(before.in_bytes);
        let per = |n: u64, d: u64| if d == 0 { 0.0 } else { n as f64 / d as f64 };
        Self {
            in_msgs,
            out_msgs,
            in_bytes,
            in_per_request: per(in_msgs, requests),
            out_per_request: per(out_msgs, requests),
            in_per_chunk: per(in_msgs, chunks),
            bytes_per_request: per(in_bytes, requests),
        }
    }
}

/// One measured (or skipped) row of the scenario.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HopRow {
    /// [`WHOLE`] or [`STREAM`].
    pub scenario: &'static str,
    /// [`DIRECT`], [`IN_PROCESS`] or [`CROSS`].
    pub path: &'static str,
    /// Concurrent consumers.
    pub concurrency: usize,
    /// Why the row was not measured.
    pub skipped: Option<String>,
    /// What the load generator saw.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// CPU per correct request, by process.
    pub cpu: ReplicaCpu,
    /// NATS traffic during the row.
    pub nats: NatsTraffic,
}

/// What the scenario found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReplicasOutcome {
    /// `nats-server`'s version, when it ran.
    pub nats_version: Option<String>,
    /// NATS messages published per second with the cluster idle (heartbeats, load sharing),
    /// over a few seconds before the load.
    pub idle_msgs_per_s: Option<f64>,
    /// The rows.
    pub rows: Vec<HopRow>,
}

impl ReplicasOutcome {
    fn skipped_all(why: &str) -> Self {
        eprintln!("6 replicas: SKIPPED: {why}");
        let rows = PLAN
            .into_iter()
            .flat_map(|(scenario, _, _, concurrency)| {
                [DIRECT, IN_PROCESS, CROSS].map(|path| HopRow {
                    scenario,
                    path,
                    concurrency,
                    skipped: Some(why.to_owned()),
                    outcome: Outcome::default(),
                    cpu: ReplicaCpu::default(),
                    nats: NatsTraffic::default(),
                })
            })
            .collect();
        Self {
            rows,
            ..Self::default()
        }
    }

    fn find(&self, scenario: &str, path: &str, concurrency: usize) -> Option<&HopRow> {
        self.rows.iter().find(|r| {
            r.scenario == scenario
                && r.path == path
                && r.concurrency == concurrency
                && r.skipped.is_none()
        })
    }

    /// Every measured row answered correctly (and at least one row was measured).
    pub fn all_correct(&self) -> bool {
        let measured: Vec<&HopRow> = self.rows.iter().filter(|r| r.skipped.is_none()).collect();
        !measured.is_empty()
            && measured
                .iter()
                .all(|r| r.outcome.errors == 0 && r.outcome.ok > 0)
    }
}

/// Where `nats-server` is: `CLUB_BENCH_NATS_SERVER`, else on `PATH`, else `/usr/sbin` (Debian's
/// package `nats-server` installs it there).
fn locate_nats() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CLUB_BENCH_NATS_SERVER") {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let mut places: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    places.push(PathBuf::from("/usr/sbin"));
    places
        .into_iter()
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
}

/// A free port on 127.0.0.1 (bound and released; the child binds it a moment later).
fn free_port() -> Result<u16, BoxError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A running `nats-server` with its monitoring endpoint.
struct Nats {
    process: Process,
    /// `nats://127.0.0.1:PORT`.
    url: String,
    /// `http://127.0.0.1:PORT/varz`.
    varz_url: String,
    version: Option<String>,
}

impl Nats {
    /// Starts `program` on two free ports (clients, monitoring), its log in `dir`; returns once
    /// `/varz` answers.
    async fn start(program: &Path, dir: &Path, client: &reqwest::Client) -> Result<Self, BoxError> {
        let (port, monitor) = (free_port()?, free_port()?);
        let (port_arg, monitor_arg) = (port.to_string(), monitor.to_string());
        let args = ["-a", "127.0.0.1", "-p", &port_arg, "-m", &monitor_arg];
        let log = dir.join("nats-server.log");
        let process = Process::spawn("nats-server", program, &args, &[], &log, false).await?;
        let varz_url = format!("http://127.0.0.1:{monitor}/varz");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(response) = client.get(&varz_url).send().await
                && let Ok(value) = response.json::<serde_json::Value>().await
            {
                let version = value
                    .get("version")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned);
                return Ok(Self {
                    process,
                    url: format!("nats://127.0.0.1:{port}"),
                    varz_url,
                    version,
                });
            }
            if Instant::now() > deadline {
                process.stop().await;
                return Err(format!(
                    "nats-server did not answer on its monitoring port within 10 s; see {}",
                    log.display()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The counters now (zeros when the endpoint does not answer).
    async fn varz(&self, client: &reqwest::Client) -> Varz {
        match client.get(&self.varz_url).send().await {
            Ok(response) => response.json().await.unwrap_or_default(),
            Err(_) => Varz::default(),
        }
    }
}

/// The processes of the scenario.
struct Replicas {
    nats: Nats,
    engine: Process,
    a: Process,
    b: Process,
    node: Process,
    key: String,
}

impl Replicas {
    /// Starts the engine, replicas A then B on `database` and `nats`, and the node linked to B;
    /// returns once both replicas list the node's models. On error, what was started is stopped.
    async fn start(nats: Nats, database: &str, dir: &Path) -> Result<Self, (Nats, BoxError)> {
        let mut started: Vec<Process> = Vec::new();
        match Self::start_children(&nats, database, dir, &mut started).await {
            Ok(key) => {
                let mut it = started.into_iter();
                match (it.next(), it.next(), it.next(), it.next()) {
                    (Some(engine), Some(a), Some(b), Some(node)) => Ok(Self {
                        nats,
                        engine,
                        a,
                        b,
                        node,
                        key,
                    }),
                    _ => Err((nats, "internal: a child is missing".into())),
                }
            }
            Err(error) => {
                for process in started.into_iter().rev() {
                    process.stop().await;
                }
                Err((nats, error))
            }
        }
    }

    async fn start_children(
        nats: &Nats,
        database: &str,
        dir: &Path,
        started: &mut Vec<Process>,
    ) -> Result<String, BoxError> {
        // Migrates the database before any replica starts.
        let key = cluster::bench_key(database).await?;
        let engine = Process::start_self(
            "engine",
            &["serve-engine", "--listen", "127.0.0.1:0"],
            &[],
            &dir.join("engine.log"),
            true,
        )
        .await?;
        let engine_url = engine.url.clone();
        started.push(engine);
        for (name, id) in [("replica A", "a"), ("replica B", "b")] {
            let args = [
                "serve-coordinator",
                "--listen",
                "127.0.0.1:0",
                "--database",
                database,
                "--nats",
                &nats.url,
                "--replica-id",
                id,
            ];
            let log = dir.join(format!("replica-{id}.log"));
            started.push(Process::start_self(name, &args, &[], &log, true).await?);
        }
        let b_url = started.get(2).map(|b| b.url.clone()).unwrap_or_default();
        let manifest = cluster::write_manifest(dir, &engine_url)?
            .display()
            .to_string();
        let node = Process::start_self(
            "node",
            &[
                "serve-provider",
                "--coordinator",
                &b_url,
                "--manifest",
                &manifest,
            ],
            &[("CLUB_API_KEY", &key)],
            &dir.join("node.log"),
            false,
        )
        .await?;
        started.push(node);
        for replica in started.iter().skip(1).take(2) {
            cluster::wait_for_models(&replica.url, &key, dir).await?;
        }
        Ok(key)
    }

    async fn stop(self) -> Nats {
        self.node.stop().await;
        self.a.stop().await;
        self.b.stop().await;
        self.engine.stop().await;
        self.nats
    }

    fn ticks(&self) -> [u64; 6] {
        let of = |p: &Process| p.pid().map_or(0, cluster::ticks_of);
        [
            of(&self.engine),
            of(&self.a),
            of(&self.b),
            of(&self.node),
            of(&self.nats.process),
            cluster::ticks_named("postgres"),
        ]
    }
}

fn cpu_between(before: [u64; 6], after: [u64; 6], requests: u64) -> ReplicaCpu {
    // Clock ticks are 10 ms on Linux (USER_HZ = 100).
    let per = |i: usize| {
        let ticks = after[i].saturating_sub(before[i]) as f64;
        ticks * 10_000.0 / requests.max(1) as f64
    };
    ReplicaCpu {
        engine_us: per(0),
        replica_a_us: per(1),
        replica_b_us: per(2),
        node_us: per(3),
        nats_us: per(4),
        postgres_us: per(5),
    }
}

/// Runs the scenario: `seconds` measured after `warmup` per row, on a fresh database on the
/// PostgreSQL server `postgres`. Never fails: what cannot run is a skipped row, said loudly.
pub async fn run(seconds: f64, warmup: f64, postgres: Option<&str>) -> ReplicasOutcome {
    let Some(program) = locate_nats() else {
        return ReplicasOutcome::skipped_all(
            "nats-server not found (apt-get install nats-server, or CLUB_BENCH_NATS_SERVER)",
        );
    };
    let Some(server) = postgres else {
        return ReplicasOutcome::skipped_all(
            "no PostgreSQL URL (--postgres URL or CLUB_BENCH_DATABASE_URL; scripts/postgres.sh starts one)",
        );
    };
    let dir = std::env::temp_dir().join(format!("club-bench-{}-replicas", std::process::id()));
    if let Err(error) = std::fs::create_dir_all(&dir) {
        return ReplicasOutcome::skipped_all(&format!("cannot create {}: {error}", dir.display()));
    }
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(client) => client,
        Err(error) => return ReplicasOutcome::skipped_all(&error.to_string()),
    };
    let database = match pg::BenchDatabase::create(server).await {
        Ok(database) => database,
        Err(error) => {
            return ReplicasOutcome::skipped_all(&format!(
                "cannot create the bench database: {error}"
            ));
        }
    };
    eprintln!("6 replicas: database {}", database.name());
    let outcome = match Nats::start(&program, &dir, &client).await {
        Err(error) => ReplicasOutcome::skipped_all(&format!("nats-server did not start: {error}")),
        Ok(nats) => match Replicas::start(nats, &database.url, &dir).await {
            Err((nats, error)) => {
                nats.process.stop().await;
                ReplicasOutcome::skipped_all(&format!("the replicas did not start: {error}"))
            }
            Ok(replicas) => {
                eprintln!(
                    "6 replicas: nats-server {} (pid {}), engine pid {}, A {} (pid {}), B {} (pid {}), node pid {} (linked to B)",
                    replicas.nats.version.as_deref().unwrap_or("?"),
                    replicas.nats.process.pid().unwrap_or(0),
                    replicas.engine.pid().unwrap_or(0),
                    replicas.a.url,
                    replicas.a.pid().unwrap_or(0),
                    replicas.b.url,
                    replicas.b.pid().unwrap_or(0),
                    replicas.node.pid().unwrap_or(0),
                );
                let outcome = measure_all(&replicas, &client, seconds, warmup).await;
                let nats = replicas.stop().await;
                nats.process.terminate(Duration::from_secs(2)).await;
                outcome
            }
        },
    };
    database.drop_database().await;
    if !outcome.all_correct() {
        eprintln!("6 replicas: the logs are in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    outcome
}

async fn measure_all(
    replicas: &Replicas,
    client: &reqwest::Client,
    seconds: f64,
    warmup: f64,
) -> ReplicasOutcome {
    // The cluster's own traffic with no request in flight.
    let idle_window = Duration::from_secs(3);
    let before = replicas.nats.varz(client).await;
    tokio::time::sleep(idle_window).await;
    let after = replicas.nats.varz(client).await;
    let idle_msgs_per_s =
        Some(after.in_msgs.saturating_sub(before.in_msgs) as f64 / idle_window.as_secs_f64());
    let mut rows = Vec::new();
    for (scenario, model, stream, concurrency) in PLAN {
        for (path, url, key) in [
            (DIRECT, &replicas.engine.url, None),
            (IN_PROCESS, &replicas.b.url, Some(replicas.key.as_str())),
            (CROSS, &replicas.a.url, Some(replicas.key.as_str())),
        ] {
            let spec = Spec {
                scenario,
                path,
                concurrency,
            };
            let row = match crate::target(url, key, model, stream) {
                Ok(target) => measure(replicas, client, spec, &target, (seconds, warmup))
                    .await
                    .unwrap_or_else(|e| skipped(spec, e.to_string())),
                Err(error) => skipped(spec, error.to_string()),
            };
            rows.push(row);
        }
    }
    ReplicasOutcome {
        nats_version: replicas.nats.version.clone(),
        idle_msgs_per_s,
        rows,
    }
}

/// Which row.
#[derive(Debug, Clone, Copy)]
struct Spec {
    scenario: &'static str,
    path: &'static str,
    concurrency: usize,
}

fn skipped(spec: Spec, why: String) -> HopRow {
    let Spec {
        scenario,
        path,
        concurrency,
    } = spec;
    eprintln!("{scenario:<9} {path:<44} c={concurrency:<3} … SKIPPED: {why}");
    HopRow {
        scenario,
        path,
        concurrency,
        skipped: Some(why),
        outcome: Outcome::default(),
        cpu: ReplicaCpu::default(),
        nats: NatsTraffic::default(),
    }
}

/// One row: a warm-up, then `seconds` measured, with CPU and NATS counters around the measured
/// part only.
async fn measure(
    replicas: &Replicas,
    varz_client: &reqwest::Client,
    spec: Spec,
    target: &Target,
    (seconds, warmup): (f64, f64),
) -> Result<HopRow, BoxError> {
    let Spec {
        scenario,
        path,
        concurrency,
    } = spec;
    let client = load::client(concurrency)?;
    let mut load = Load {
        concurrency,
        duration: Duration::from_secs_f64(warmup),
        max_requests: u64::MAX,
        strict: false,
    };
    if warmup > 0.0 {
        let _ = load::run(&client, target, load).await;
    }
    load.duration = Duration::from_secs_f64(seconds);
    eprint!("{scenario:<9} {path:<44} c={concurrency:<3} … ");
    let _ = std::io::stderr().flush();
    let varz_before = replicas.nats.varz(varz_client).await;
    let before = replicas.ticks();
    let outcome = load::run(&client, target, load).await;
    let after = replicas.ticks();
    let varz_after = replicas.nats.varz(varz_client).await;
    let chunks = if target.stream {
        outcome.ok * target.expected_chunks as u64
    } else {
        0
    };
    let nats = NatsTraffic::between(varz_before, varz_after, outcome.ok, chunks);
    eprintln!(
        "{} ok, {} errors, {:.0} req/s, {:.1} NATS msgs/request",
        outcome.ok, outcome.errors, outcome.requests_per_s, nats.in_per_request
    );
    if let Some(error) = &outcome.first_error {
        eprintln!("  first error: {error}");
    }
    Ok(HopRow {
        scenario,
        path,
        concurrency,
        skipped: None,
        cpu: cpu_between(before, after, outcome.ok),
        outcome,
        nats,
    })
}

fn cpu_cell(c: &ReplicaCpu, path: &str) -> String {
    if path == DIRECT {
        format!("{:.0} / – / – / – / – / –", c.engine_us)
    } else {
        format!(
            "{:.0} / {:.0} / {:.0} / {:.0} / {:.0} / {:.0}",
            c.engine_us, c.replica_a_us, c.replica_b_us, c.node_us, c.nats_us, c.postgres_us
        )
    }
}

/// The coordinators' and nats-server's CPU per request together: what the hop costs the
/// cluster (engine, node and PostgreSQL left out).
fn coordinators_us(c: &ReplicaCpu) -> f64 {
    c.replica_a_us + c.replica_b_us + c.nats_us
}

fn skipped_line(row: &HopRow, columns: usize) -> Option<String> {
    let why = row.skipped.as_ref()?;
    let dashes = vec!["–"; columns.saturating_sub(3)].join(" | ");
    Some(format!(
        "| {} | {} | **skipped: {}** | {} |",
        row.path, row.concurrency, why, dashes
    ))
}

/// `a / b`, or a dash where `b` is about zero (the in-process hop sends next to no NATS
/// message: a ratio to it means nothing).
fn ratio(a: f64, b: f64) -> String {
    if b.abs() < 0.01 {
        "–".into()
    } else {
        format!("{:.3}", a / b)
    }
}

/// Prints the scenario's tables (Markdown, as the other scenarios).
pub fn print(outcome: &ReplicasOutcome) {
    println!();
    println!(
        "## 6. replicas: two coordinators (A, B) on one PostgreSQL and one nats-server{}, the node linked to B",
        outcome
            .nats_version
            .as_deref()
            .map(|v| format!(" {v}"))
            .unwrap_or_default()
    );
    let measured = outcome.rows.iter().any(|r| r.skipped.is_none());
    if !measured {
        let why = outcome
            .rows
            .iter()
            .find_map(|r| r.skipped.as_deref())
            .unwrap_or("nothing to run");
        println!("**skipped: {why}**");
        return;
    }
    if let Some(idle) = outcome.idle_msgs_per_s {
        println!("NATS messages published per second with the cluster idle: {idle:.1}");
    }
    let whole: Vec<&HopRow> = outcome
        .rows
        .iter()
        .filter(|r| r.scenario == WHOLE)
        .collect();
    println!();
    println!("### 6.1 whole responses (16-token answers)");
    println!(
        "| path | c | requests | errors | requests/s | p50 ms | p99 ms | added p50 ms (vs direct) | CPU µs/request engine / A / B / node / nats-server / PostgreSQL | NATS msgs/request published / delivered | NATS bytes/request |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for row in whole {
        if let Some(line) = skipped_line(row, 11) {
            println!("{line}");
            continue;
        }
        let o = &row.outcome;
        let direct = outcome.find(WHOLE, DIRECT, row.concurrency);
        let added = direct.map_or(0, |d| diff(o.latency.p50_us, d.outcome.latency.p50_us));
        println!(
            "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {:.2} / {:.2} | {:.0} |",
            row.path,
            row.concurrency,
            o.ok,
            o.errors,
            o.requests_per_s,
            ms(o.latency.p50_us),
            ms(o.latency.p99_us),
            signed_ms(added),
            cpu_cell(&row.cpu, row.path),
            row.nats.in_per_request,
            row.nats.out_per_request,
            row.nats.bytes_per_request,
        );
    }
    let streams: Vec<&HopRow> = outcome
        .rows
        .iter()
        .filter(|r| r.scenario == STREAM)
        .collect();
    println!();
    println!("### 6.2 streams of 100 chunks");
    println!(
        "| path | c | streams | errors | streams/s | chunks/s | first chunk p50 ms | p99 ms | added p50 / p99 ms (vs direct) | CPU µs/stream engine / A / B / node / nats-server / PostgreSQL | NATS msgs/stream published / delivered | NATS msgs per content chunk (published) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in streams {
        if let Some(line) = skipped_line(row, 12) {
            println!("{line}");
            continue;
        }
        let o = &row.outcome;
        let direct = outcome.find(STREAM, DIRECT, row.concurrency);
        let (a50, a99) = direct.map_or((0, 0), |d| {
            (
                diff(o.ttfc.p50_us, d.outcome.ttfc.p50_us),
                diff(o.ttfc.p99_us, d.outcome.ttfc.p99_us),
            )
        });
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.0} | {} | {} | {} / {} | {} | {:.1} / {:.1} | {:.3} |",
            row.path,
            row.concurrency,
            o.ok,
            o.errors,
            o.requests_per_s,
            o.chunks_per_s,
            ms(o.ttfc.p50_us),
            ms(o.ttfc.p99_us),
            signed_ms(a50),
            signed_ms(a99),
            cpu_cell(&row.cpu, row.path),
            row.nats.in_per_request,
            row.nats.out_per_request,
            row.nats.in_per_chunk,
        );
    }
    print_ratios(outcome);
}

/// A measure of a row, for the comparison table.
type Measure = fn(&HopRow) -> f64;

fn ms_of(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The comparison table's lines: scenario, concurrency, name, measure, unit, decimals.
const COMPARED: [(&str, usize, &str, Measure, &str, usize); 18] = [
    (
        WHOLE,
        1,
        "latency p50",
        |r| ms_of(r.outcome.latency.p50_us),
        " ms",
        3,
    ),
    (
        WHOLE,
        1,
        "latency p99",
        |r| ms_of(r.outcome.latency.p99_us),
        " ms",
        3,
    ),
    (WHOLE, 16, "requests/s", |r| r.outcome.requests_per_s, "", 0),
    (
        WHOLE,
        16,
        "latency p50",
        |r| ms_of(r.outcome.latency.p50_us),
        " ms",
        3,
    ),
    (
        WHOLE,
        16,
        "latency p99",
        |r| ms_of(r.outcome.latency.p99_us),
        " ms",
        3,
    ),
    (
        WHOLE,
        16,
        "CPU µs/request, A + B + nats-server",
        |r| coordinators_us(&r.cpu),
        "",
        0,
    ),
    (
        WHOLE,
        16,
        "CPU µs/request, every process",
        |r| total_us(&r.cpu),
        "",
        0,
    ),
    (
        WHOLE,
        16,
        "NATS messages published per request",
        |r| r.nats.in_per_request,
        "",
        2,
    ),
    (
        STREAM,
        1,
        "first chunk p50",
        |r| ms_of(r.outcome.ttfc.p50_us),
        " ms",
        3,
    ),
    (
        STREAM,
        1,
        "first chunk p99",
        |r| ms_of(r.outcome.ttfc.p99_us),
        " ms",
        3,
    ),
    (
        STREAM,
        1,
        "whole stream p50",
        |r| ms_of(r.outcome.latency.p50_us),
        " ms",
        3,
    ),
    (STREAM, 16, "chunks/s", |r| r.outcome.chunks_per_s, "", 0),
    (
        STREAM,
        16,
        "first chunk p50",
        |r| ms_of(r.outcome.ttfc.p50_us),
        " ms",
        3,
    ),
    (
        STREAM,
        16,
        "first chunk p99",
        |r| ms_of(r.outcome.ttfc.p99_us),
        " ms",
        3,
    ),
    (
        STREAM,
        16,
        "whole stream p50",
        |r| ms_of(r.outcome.latency.p50_us),
        " ms",
        3,
    ),
    (
        STREAM,
        16,
        "CPU µs/stream, A + B + nats-server",
        |r| coordinators_us(&r.cpu),
        "",
        0,
    ),
    (
        STREAM,
        16,
        "CPU µs/stream, every process",
        |r| total_us(&r.cpu),
        "",
        0,
    ),
    (
        STREAM,
        16,
        "NATS messages published per content chunk",
        |r| r.nats.in_per_chunk,
        "",
        3,
    ),
];

/// The cross-replica hop against the in-process one, measure by measure.
fn print_ratios(outcome: &ReplicasOutcome) {
    let mut lines = Vec::new();
    for (scenario, c, name, measure, unit, decimals) in COMPARED {
        let (Some(i), Some(x)) = (
            outcome.find(scenario, IN_PROCESS, c),
            outcome.find(scenario, CROSS, c),
        ) else {
            continue;
        };
        let (a, b) = (measure(i), measure(x));
        let label = scenario.split_once(' ').map_or(scenario, |(_, l)| l);
        lines.push(format!(
            "| {label} c={c}: {name} | {a:.decimals$}{unit} | {b:.decimals$}{unit} | {} | {:+.decimals$}{unit} |",
            ratio(b, a),
            b - a,
        ));
    }
    if lines.is_empty() {
        return;
    }
    println!();
    println!("### 6.3 the cross-replica hop against the in-process one");
    println!(
        "| measure | in-process (B) | cross-replica (A → B) | cross / in-process | cross − in-process |"
    );
    println!("|---|---|---|---|---|");
    for line in lines {
        println!("{line}");
    }
    let per_message = |row: &HopRow| {
        if row.nats.in_per_request > 0.0 {
            row.cpu.nats_us / row.nats.in_per_request
        } else {
            0.0
        }
    };
    if let (Some(w), Some(st)) = (
        outcome.find(WHOLE, CROSS, 16),
        outcome.find(STREAM, CROSS, 16),
    ) {
        println!();
        println!(
            "nats-server CPU per message published (and delivered once) on the cross-replica hop, c=16: {:.1} µs (whole), {:.1} µs (streams); bytes published per whole request {:.0}, per stream {:.0}",
            per_message(w),
            per_message(st),
            w.nats.bytes_per_request,
            st.nats.bytes_per_request,
        );
    }
}

fn total_us(c: &ReplicaCpu) -> f64 {
    c.engine_us + c.replica_a_us + c.replica_b_us + c.node_us + c.nats_us + c.postgres_us
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_per_request_and_chunk() {
        let before = Varz {
            in_msgs: 100,
            out_msgs: 200,
            in_bytes: 1_000,
        };
        let after = Varz {
            in_msgs: 1_110,
            out_msgs: 2_220,
            in_bytes: 51_000,
        };
        let t = NatsTraffic::between(before, after, 10, 1_000);
        assert_eq!((t.in_msgs, t.out_msgs, t.in_bytes), (1_010, 2_020, 50_000));
        assert!((t.in_per_request - 101.0).abs() < 1e-9);
        assert!((t.out_per_request - 202.0).abs() < 1e-9);
        assert!((t.in_per_chunk - 1.01).abs() < 1e-9);
        assert!((t.bytes_per_request - 5_000.0).abs() < 1e-9);
        // No requests: no division by zero, and a counter that went backwards (a restart) is 0.
        let t = NatsTraffic::between(after, before, 0, 0);
        assert_eq!((t.in_msgs, t.in_per_request, t.in_per_chunk), (0, 0.0, 0.0));
    }

    #[test]
    fn varz_parses_what_nats_server_sends() {
        let text = r#"{"server_id":"X","version":"2.9.10","in_msgs":42,"out_msgs":84,"in_bytes":4200,"out_bytes":8400,"connections":3}"#;
        let varz: Varz = serde_json::from_str(text).unwrap();
        assert_eq!((varz.in_msgs, varz.out_msgs, varz.in_bytes), (42, 84, 4200));
    }

    #[test]
    fn skipped_rows_say_why() {
        let outcome = ReplicasOutcome::skipped_all("no nats-server");
        assert_eq!(outcome.rows.len(), 12);
        assert!(
            outcome
                .rows
                .iter()
                .all(|r| r.skipped.as_deref() == Some("no nats-server"))
        );
        assert!(!outcome.all_correct());
    }
}
