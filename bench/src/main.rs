//! `club-bench`: the club's path (consumer → coordinator → node → engine, recorded on SQLite)
//! against the direct path (consumer → engine), in the same run, on the same fake engine.
//!
//! `club-bench all` runs every scenario; `smoke` runs each path briefly and checks every answer;
//! `whole`, `stream`, `paced`, `links`, `postgres`, `peers` and `replicas` run one scenario;
//! `speed` runs scenarios 1 and 2 through direct, nginx, vllm-router and the club side by side
//! and checks issue 18's targets. Each prints a table and, with `--json FILE`, writes the
//! results as JSON. See `docs/benchmarks.md`.

mod batch;
mod cluster;
mod engine;
mod load;
mod pages;
mod peers;
mod pg;
mod replicas;
mod speed;
mod stats;
mod swarm;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use inference_club_coordinator::{ClusterConfig, Coordinator, CoordinatorBuilder, Limits};
use inference_club_provider::node::{Node, NodeConfig};

use crate::cluster::Cluster;
use crate::engine::{PACED_MODEL, STREAM_MODEL, Shape, WHOLE_MODEL};
use crate::load::{Load, Outcome, Target};

/// Errors end the run with a message.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The Inference Club benchmark.
#[derive(Debug, Parser)]
#[command(name = "club-bench", version)]
struct Cli {
    /// Write the results as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Seconds of measurement per path and setting (after a warm-up).
    #[arg(long, global = true, default_value_t = 8.0)]
    seconds: f64,
    /// Seconds of warm-up per path and setting (not counted).
    #[arg(long, global = true, default_value_t = 1.5)]
    warmup: f64,
    /// Concurrent consumers for the paced-stream scenario (comma-separated).
    #[arg(long, global = true, value_delimiter = ',', default_value = "100,1000")]
    paced_consumers: Vec<usize>,
    /// Idle node links for scenario 4 (lowered, and said so, when the open-file limit is lower).
    #[arg(long, global = true, default_value_t = 10_000)]
    links: usize,
    /// A PostgreSQL server URL for scenario 5 (a fresh database is created on it per run and
    /// dropped after); without it, scenario 5 is skipped.
    #[arg(
        long,
        global = true,
        env = "CLUB_BENCH_DATABASE_URL",
        hide_env_values = true
    )]
    postgres: Option<String>,
    /// Seconds of measurement per row for LiteLLM (slow: a short run keeps `all` bounded).
    #[arg(long, global = true, default_value_t = 3.0)]
    litellm_seconds: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every scenario.
    All,
    /// About 5 seconds: every path briefly, every answer checked; fails on any wrong answer.
    Smoke,
    /// Scenario 1: whole responses at concurrency 16 and 64.
    Whole,
    /// Scenario 2: streams of 100 chunks at concurrency 16.
    Stream,
    /// Scenario 3: paced streams (a chunk every 5 ms) at many concurrent consumers.
    Paced,
    /// Scenario 4: idle node links (coordinator memory and CPU, reconnection after a restart).
    Links,
    /// Scenario 5: scenarios 1 and 2 (c=16) recorded on SQLite and on PostgreSQL.
    Postgres,
    /// The peers (nginx, vllm-router, LiteLLM) in front of the same engine, scenarios 1 and 2.
    Peers,
    /// Issue 18: whole answers at c=1, 16 and 64 and streams at c=16 through direct, nginx,
    /// vllm-router and the club in one run, the records stored against the answers served, and
    /// the targets; fails on any answer that is not a correct 2xx.
    Speed,
    /// The web pages' server-side render time with 10,000 records in the store.
    Pages,
    /// Scenario 7: interactive chat latency while a 1,000-line batch runs.
    Batch,
    /// Scenario 6: two coordinator replicas on PostgreSQL and NATS, scenarios 1 and 2 (c=16)
    /// through the in-process hop and the cross-replica hop (needs `--postgres` and nats-server).
    Replicas,
    /// (internal) Serve the fake engine.
    #[command(hide = true)]
    ServeEngine {
        #[arg(long)]
        listen: String,
    },
    /// (internal) What `club-coordinator serve` runs.
    #[command(hide = true)]
    ServeCoordinator {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        database: String,
        /// Run as a replica of a cluster on this NATS server (scenario 6).
        #[arg(long)]
        nats: Option<String>,
        /// The replica's name in the cluster.
        #[arg(long)]
        replica_id: Option<String>,
    },
    /// (internal) What `club-provider run` runs.
    #[command(hide = true)]
    ServeProvider {
        #[arg(long)]
        coordinator: String,
        #[arg(long, env = "CLUB_API_KEY", hide_env_values = true)]
        key: String,
        #[arg(long)]
        manifest: PathBuf,
    },
    /// (internal) Scenario 4's nodes: N provider nodes on Echo engines in one process.
    #[command(hide = true)]
    ServeSwarm {
        #[arg(long)]
        coordinator: String,
        #[arg(long, env = "CLUB_API_KEY", hide_env_values = true)]
        key: String,
        #[arg(long)]
        count: usize,
    },
}

/// The allocator the shipped binaries use, so that the children measure what they run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // reqwest is built without a default TLS provider; the bench only speaks plain HTTP on
    // loopback, but the client still needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Ok(runtime) = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    else {
        eprintln!("error: cannot start the async runtime");
        return ExitCode::from(2);
    };
    let Cli {
        json,
        seconds,
        warmup,
        paced_consumers,
        links,
        postgres,
        litellm_seconds,
        command,
    } = cli;
    match command {
        Command::ServeEngine { listen } => runtime.block_on(async move {
            match tokio::net::TcpListener::bind(&listen).await {
                Ok(listener) => match engine::serve(listener).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(error) => {
                        eprintln!("error: {error}");
                        ExitCode::from(2)
                    }
                },
                Err(error) => {
                    eprintln!("error: cannot listen on {listen}: {error}");
                    ExitCode::from(2)
                }
            }
        }),
        Command::ServeCoordinator {
            listen,
            database,
            nats,
            replica_id,
        } => {
            init_logging();
            // Scenario 4 links 10,000 nodes: one socket each.
            swarm::raise_open_file_limit();
            // The benchmark measures the coordinator, not its per-key limits.
            let mut builder = Coordinator::builder()
                .database(&database)
                .limits(Limits::without_rate_limits());
            if let Some(url) = nats {
                builder = builder.cluster(ClusterConfig {
                    replica_id,
                    ..ClusterConfig::new(url)
                });
            }
            let status = runtime.block_on(serve_coordinator(&listen, builder));
            ExitCode::from(status)
        }
        Command::ServeProvider {
            coordinator,
            key,
            manifest,
        } => {
            init_logging();
            ExitCode::from(runtime.block_on(serve_provider(coordinator, key, manifest)))
        }
        Command::Batch => match runtime.block_on(batch::measure(seconds.max(1.0))) {
            Ok(outcome) => {
                let valid = batch::print(&outcome);
                if let Some(path) = json
                    && let Ok(text) = serde_json::to_vec_pretty(&outcome)
                    && let Err(error) = std::fs::write(&path, text)
                {
                    eprintln!("error: cannot write {}: {error}", path.display());
                }
                if valid {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(2)
            }
        },
        Command::Pages => match runtime.block_on(pages::measure(10_000, 50)) {
            Ok(_) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(1)
            }
        },
        Command::ServeSwarm {
            coordinator,
            key,
            count,
        } => {
            init_logging();
            match runtime.block_on(swarm::serve(coordinator, key, count)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::from(2)
                }
            }
        }
        command => {
            let smoke = matches!(command, Command::Smoke);
            let mut settings = Settings::for_command(&command, seconds, warmup, paced_consumers);
            settings.litellm_seconds = litellm_seconds.max(0.05);
            if settings.links.is_some() {
                settings.links = Some(links);
            }
            let speed = matches!(command, Command::Speed);
            match runtime.block_on(bench(settings, postgres, json)) {
                Ok(report) if smoke && !report.all_correct() => {
                    eprintln!("smoke: FAILED (some answers were wrong or missing)");
                    ExitCode::from(1)
                }
                Ok(report) if speed && !speed::passed(&report) => ExitCode::from(1),
                Ok(_) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// The children log as the real binaries do: `CLUB_LOG`, else `info`, to stderr.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLUB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// `serve-coordinator`: the coordinator as `club-coordinator serve` runs it, until SIGTERM.
async fn serve_coordinator(listen: &str, builder: CoordinatorBuilder) -> u8 {
    let coordinator = match builder.build().await {
        Ok(coordinator) => coordinator,
        Err(error) => {
            eprintln!("error: cannot start: {error}");
            return 2;
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("error: cannot listen on {listen}: {error}");
            return 2;
        }
    };
    if let Ok(address) = listener.local_addr() {
        println!("listening on http://{address}");
    }
    let stop = async {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            term.recv().await;
        }
    };
    match coordinator.serve(listener, stop).await {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("error: {error}");
            2
        }
    }
}

/// `serve-provider`: a node from a manifest file, as `club-provider run` runs it, until SIGTERM.
async fn serve_provider(coordinator: String, key: String, manifest: std::path::PathBuf) -> u8 {
    let node = match Node::from_manifest(NodeConfig::new(coordinator, key), &manifest).await {
        Ok(node) => node,
        Err(error) => {
            eprintln!("error: {error}");
            return 1;
        }
    };
    let handle = node.handle();
    tokio::spawn(async move {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            term.recv().await;
            handle.shutdown();
        }
    });
    node.run().await;
    0
}

/// What to run.
#[derive(Debug, Clone, serde::Serialize)]
struct Settings {
    command: &'static str,
    whole_concurrency: Vec<usize>,
    stream_concurrency: Vec<usize>,
    paced_consumers: Vec<usize>,
    seconds: f64,
    warmup: f64,
    strict: bool,
    /// Scenario 5 (PostgreSQL) is part of this command.
    postgres: bool,
    /// The peers are part of this command.
    peers: bool,
    /// Scenario 4's link count, when it is part of this command.
    links: Option<usize>,
    /// Seconds per LiteLLM row.
    litellm_seconds: f64,
    /// Scenario 6 (replicas on PostgreSQL and NATS) is part of this command.
    replicas: bool,
}

impl Settings {
    fn for_command(command: &Command, seconds: f64, warmup: f64, paced: Vec<usize>) -> Self {
        let base = Self {
            command: "all",
            whole_concurrency: vec![16, 64],
            stream_concurrency: vec![16],
            paced_consumers: paced,
            seconds: seconds.max(0.05),
            warmup: warmup.max(0.0),
            strict: false,
            postgres: true,
            peers: true,
            links: Some(10_000),
            litellm_seconds: 3.0,
            replicas: true,
        };
        let only = |name, whole: Vec<usize>, stream: Vec<usize>| Self {
            command: name,
            whole_concurrency: whole,
            stream_concurrency: stream,
            paced_consumers: vec![],
            postgres: false,
            peers: false,
            links: None,
            replicas: false,
            ..base.clone()
        };
        match command {
            Command::Smoke => Self {
                command: "smoke",
                whole_concurrency: vec![4],
                stream_concurrency: vec![4],
                paced_consumers: vec![8],
                seconds: 0.35,
                warmup: 0.1,
                strict: true,
                ..only("smoke", vec![], vec![])
            },
            Command::Whole => only("whole", vec![16, 64], vec![]),
            Command::Stream => only("stream", vec![], vec![16]),
            Command::Paced => Self {
                paced_consumers: base.paced_consumers.clone(),
                ..only("paced", vec![], vec![])
            },
            Command::Links => Self {
                links: Some(10_000),
                ..only("links", vec![], vec![])
            },
            Command::Postgres => Self {
                postgres: true,
                ..only("postgres", vec![16], vec![16])
            },
            Command::Peers => Self {
                peers: true,
                ..only("peers", vec![16], vec![16])
            },
            Command::Speed => Self {
                peers: true,
                ..only(speed::COMMAND, speed::WHOLE_CONCURRENCY.to_vec(), vec![16])
            },
            Command::Replicas => Self {
                replicas: true,
                ..only("replicas", vec![], vec![])
            },
            _ => base,
        }
    }
}

/// One measured run.
#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    scenario: &'static str,
    path: &'static str,
    concurrency: usize,
    /// Why the row was not measured (a peer not installed, no PostgreSQL URL, a failure).
    skipped: Option<String>,
    #[serde(flatten)]
    outcome: Outcome,
    cpu: CpuPerRequest,
    /// The warm-up before the measurement: not in the figures, but its answers were served
    /// (and recorded, on the club's path).
    warmup: Outcome,
}

impl Row {
    /// Requests sent in the warm-up and the measurement that did not come back correct.
    fn errors(&self) -> u64 {
        self.outcome.errors + self.warmup.errors
    }

    /// Answers with a 2xx status, warm-up included.
    fn answered_2xx(&self) -> u64 {
        self.outcome.answered_2xx + self.warmup.answered_2xx
    }

    /// Requests sent, warm-up included.
    fn sent(&self) -> u64 {
        self.outcome.sent() + self.warmup.sent()
    }
}

/// CPU time (user + system, from `/proc/PID/stat`) each child spent per correct request during
/// a run: where the time goes, by process.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
struct CpuPerRequest {
    engine_us: f64,
    coordinator_us: f64,
    node_us: f64,
    /// The peer's process and its children (peer rows).
    peer_us: f64,
    /// The bench's own process: the load generator.
    load_us: f64,
}

impl CpuPerRequest {
    fn between(before: [u64; 5], after: [u64; 5], requests: u64) -> Self {
        // Clock ticks are 10 ms on Linux (USER_HZ = 100).
        let per = |i: usize| {
            let ticks = after[i].saturating_sub(before[i]) as f64;
            ticks * 10_000.0 / requests.max(1) as f64
        };
        Self {
            engine_us: per(0),
            coordinator_us: per(1),
            node_us: per(2),
            peer_us: per(3),
            load_us: per(4),
        }
    }
}

/// A target from an issue (8, or 18 for `speed`) and how this run did.
#[derive(Debug, Clone, serde::Serialize)]
struct Verdict {
    target: String,
    measured: String,
    /// `None` when this run could not judge it (a peer to compare with was not measured).
    met: Option<bool>,
}

/// The machine the run was on.
#[derive(Debug, Clone, serde::Serialize)]
struct Machine {
    cpu_model: String,
    cpus: usize,
    os: String,
}

impl Machine {
    fn here() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        Self {
            cpu_model,
            cpus,
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        }
    }
}

/// Everything a run found.
#[derive(Debug, Clone, serde::Serialize)]
struct Report {
    machine: Machine,
    settings: Settings,
    club_path: &'static str,
    rows: Vec<Row>,
    /// Scenario 4, when run.
    links: Option<swarm::LinksOutcome>,
    /// The peers found (name and version).
    peers: Vec<peers::Found>,
    /// Scenario 6, when run.
    replicas: Option<replicas::ReplicasOutcome>,
    /// `speed`: the records the coordinator stored against the answers the club served.
    records: Option<speed::Records>,
    targets: Vec<Verdict>,
}

impl Report {
    fn all_correct(&self) -> bool {
        let measured: Vec<&Row> = self.rows.iter().filter(|r| r.skipped.is_none()).collect();
        !measured.is_empty()
            && measured
                .iter()
                .all(|r| r.outcome.errors == 0 && r.outcome.ok > 0)
    }

    fn find(&self, scenario: &str, path: &str, concurrency: usize) -> Option<&Outcome> {
        self.rows
            .iter()
            .find(|r| {
                r.scenario == scenario
                    && r.path == path
                    && r.concurrency == concurrency
                    && r.skipped.is_none()
            })
            .map(|r| &r.outcome)
    }
}

const CLUB_PATH: &str = "club: consumer → coordinator (SQLite recording) → WebSocket → node (Router → OpenAiCompatible) → engine; engine, coordinator and node are separate child processes";

/// Scenario 1's rows.
const WHOLE: &str = "1 whole";
/// Scenario 2's rows.
const STREAM: &str = "2 stream";
/// Scenario 3's rows.
const PACED: &str = "3 paced";
/// The club's path recording on SQLite.
const CLUB: &str = "club";
/// The club's path recording on PostgreSQL (scenario 5).
const CLUB_PG: &str = "club, PostgreSQL";
/// Scenario 5's rows run at this concurrency.
const PEER_CONCURRENCY: usize = 16;

async fn bench(
    settings: Settings,
    postgres: Option<String>,
    json: Option<PathBuf>,
) -> Result<Report, BoxError> {
    let machine = Machine::here();
    eprintln!(
        "machine: {} × {} CPUs ({}); everything (load generator, engine, coordinator, node, peers) shares them",
        machine.cpu_model, machine.cpus, machine.os
    );
    let mut rows = Vec::new();
    let mut found_peers = Vec::new();
    let mut records = None;
    let runs_cluster = !(settings.whole_concurrency.is_empty()
        && settings.stream_concurrency.is_empty()
        && settings.paced_consumers.is_empty());
    if settings.command == speed::COMMAND {
        let run = speed::run(&settings).await?;
        rows = run.rows;
        found_peers = run.peers;
        records = Some(run.records);
    } else if runs_cluster {
        let cluster = start_cluster("sqlite").await?;
        let measured = run_scenarios(&settings, &cluster, &[]).await;
        let measured = match measured {
            Ok(mut measured) if settings.peers => {
                let (peer_rows, found) = run_peers(&settings, &cluster).await;
                measured.extend(peer_rows);
                found_peers = found;
                Ok(measured)
            }
            other => other,
        };
        cluster.stop().await;
        rows.extend(measured?);
    }
    if settings.postgres {
        rows.extend(run_postgres(&settings, postgres.as_deref()).await);
    }
    let links = match settings.links {
        Some(n) => {
            let dir = std::env::temp_dir().join(format!("club-bench-{}-links", std::process::id()));
            let outcome = swarm::run(n, &dir).await;
            if outcome.error.is_none() {
                let _ = std::fs::remove_dir_all(&dir);
            } else {
                eprintln!("4 links: the logs are in {}", dir.display());
            }
            Some(outcome)
        }
        None => None,
    };
    let replicas = if settings.replicas {
        Some(replicas::run(settings.seconds, settings.warmup, postgres.as_deref()).await)
    } else {
        None
    };
    let mut report = Report {
        machine,
        settings,
        club_path: CLUB_PATH,
        rows,
        links,
        peers: found_peers,
        replicas,
        records,
        targets: Vec::new(),
    };
    report.targets = if report.settings.command == speed::COMMAND {
        speed::verdicts(&report)
    } else {
        verdicts(&report)
    };
    print_report(&report);
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(report)
}

/// Starts the engine, a coordinator on SQLite and a node (see [`Cluster::start`]) and says
/// where they are.
async fn start_cluster(label: &str) -> Result<Cluster, BoxError> {
    let cluster = Cluster::start(label, None).await?;
    eprintln!(
        "engine {} (pid {}), coordinator {} (pid {}), node pid {}",
        cluster.engine.url,
        cluster.engine.pid().unwrap_or(0),
        cluster.coordinator.url,
        cluster.coordinator.pid().unwrap_or(0),
        cluster.node.pid().unwrap_or(0),
    );
    Ok(cluster)
}

fn target(
    base_url: &str,
    key: Option<&str>,
    model: &str,
    stream: bool,
) -> Result<Target, BoxError> {
    let shape = Shape::parse(model).ok_or("unknown model")?;
    Ok(Target {
        base_url: base_url.to_owned(),
        key: key.map(str::to_owned),
        model: model.to_owned(),
        stream,
        expected_chunks: shape.chunks,
        expected_content: shape.content(),
    })
}

/// The processes whose CPU a row reports: engine, coordinator, node, peer; with `postgres`, the
/// PostgreSQL server's processes stand in the peer's place.
#[derive(Debug, Clone, Copy, Default)]
struct Watched {
    pids: [Option<u32>; 4],
    postgres: bool,
}

impl Watched {
    fn cluster(cluster: &Cluster) -> Self {
        Self {
            pids: [
                cluster.engine.pid(),
                cluster.coordinator.pid(),
                cluster.node.pid(),
                None,
            ],
            postgres: false,
        }
    }

    fn ticks(&self) -> [u64; 5] {
        let [engine, coordinator, node, peer] = self.pids;
        [
            engine.map_or(0, cluster::ticks_of),
            coordinator.map_or(0, cluster::ticks_of),
            node.map_or(0, cluster::ticks_of),
            if self.postgres {
                cluster::ticks_named("postgres")
            } else {
                peer.map_or(0, cluster::tree_ticks)
            },
            cluster::ticks_of(std::process::id()),
        ]
    }
}

/// One row: a warm-up, then `seconds` measured.
async fn measure(
    scenario: &'static str,
    path: &'static str,
    concurrency: usize,
    target: &Target,
    (seconds, warmup): (f64, f64),
    strict: bool,
    watched: Watched,
) -> Result<Row, BoxError> {
    let client = load::client(concurrency)?;
    let mut load = Load {
        concurrency,
        duration: Duration::from_secs_f64(warmup),
        max_requests: u64::MAX,
        strict,
    };
    let warmup = if warmup > 0.0 {
        load::run(&client, target, load).await
    } else {
        Outcome::default()
    };
    if warmup.errors > 0 {
        eprintln!(
            "{scenario:<9} {path:<24} c={concurrency:<5} warm-up: {}; first error: {}",
            warmup.statuses(),
            warmup.first_error.as_deref().unwrap_or("?")
        );
    }
    load.duration = Duration::from_secs_f64(seconds);
    eprint!("{scenario:<9} {path:<24} c={concurrency:<5} … ");
    let _ = std::io::stderr().flush();
    let before = watched.ticks();
    let outcome = load::run(&client, target, load).await;
    let after = watched.ticks();
    let cpu = CpuPerRequest::between(before, after, outcome.ok);
    eprintln!(
        "{} ok, {} errors, {:.0} req/s",
        outcome.ok, outcome.errors, outcome.requests_per_s
    );
    if let Some(error) = &outcome.first_error {
        eprintln!("  first error: {error}");
    }
    Ok(Row {
        scenario,
        path,
        concurrency,
        skipped: None,
        outcome,
        cpu,
        warmup,
    })
}

/// A row that was not measured, and why.
fn skipped(scenario: &'static str, path: &'static str, concurrency: usize, why: String) -> Row {
    eprintln!("{scenario:<9} {path:<24} c={concurrency:<5} … SKIPPED: {why}");
    Row {
        scenario,
        path,
        concurrency,
        skipped: Some(why),
        outcome: Outcome::default(),
        cpu: CpuPerRequest::default(),
        warmup: Outcome::default(),
    }
}

/// A way to the engine that a row measures, beside direct and the club's.
struct Route {
    /// The row label.
    path: &'static str,
    /// `http://HOST:PORT` and the key it wants; or why it is not measured.
    to: Result<(String, Option<String>), String>,
    watched: Watched,
}

impl Route {
    /// A peer running in front of the cluster's engine.
    fn peer(path: &'static str, running: &peers::Running, cluster: &Cluster) -> Self {
        Self {
            path,
            to: Ok((running.url.clone(), running.key.clone())),
            watched: Watched {
                pids: [cluster.engine.pid(), None, None, running.pid()],
                postgres: false,
            },
        }
    }

    /// A path this run cannot measure, and why.
    fn unavailable(path: &'static str, why: String) -> Self {
        Self {
            path,
            to: Err(why),
            watched: Watched::default(),
        }
    }
}

/// The settings' rows (whole answers, streams, paced streams at each concurrency), each through
/// direct, then `between` (peers), then the club.
async fn run_scenarios(
    settings: &Settings,
    cluster: &Cluster,
    between: &[Route],
) -> Result<Vec<Row>, BoxError> {
    let mut plan: Vec<(&'static str, usize, &'static str, bool)> = Vec::new();
    for &c in &settings.whole_concurrency {
        plan.push((WHOLE, c, WHOLE_MODEL, false));
    }
    for &c in &settings.stream_concurrency {
        plan.push((STREAM, c, STREAM_MODEL, true));
    }
    for &c in &settings.paced_consumers {
        plan.push((PACED, c, PACED_MODEL, true));
    }
    let watched = Watched::cluster(cluster);
    let direct = Route {
        path: "direct",
        to: Ok((cluster.engine.url.clone(), None)),
        watched,
    };
    let club = Route {
        path: CLUB,
        to: Ok((cluster.coordinator.url.clone(), Some(cluster.key.clone()))),
        watched,
    };
    let routes: Vec<&Route> = std::iter::once(&direct)
        .chain(between)
        .chain([&club])
        .collect();
    let mut rows = Vec::new();
    for (scenario, concurrency, model, stream) in plan {
        for route in &routes {
            let (url, key) = match &route.to {
                Ok(to) => to,
                Err(why) => {
                    rows.push(skipped(scenario, route.path, concurrency, why.clone()));
                    continue;
                }
            };
            let target = target(url, key.as_deref(), model, stream)?;
            let timing = (settings.seconds, settings.warmup);
            rows.push(
                measure(
                    scenario,
                    route.path,
                    concurrency,
                    &target,
                    timing,
                    settings.strict,
                    route.watched,
                )
                .await?,
            );
        }
    }
    Ok(rows)
}

/// The peers, each in front of the cluster's engine: scenario 1 and 2 at c=16.
async fn run_peers(settings: &Settings, cluster: &Cluster) -> (Vec<Row>, Vec<peers::Found>) {
    let mut rows = Vec::new();
    let mut found_all = Vec::new();
    let dir = std::env::temp_dir().join(format!("club-bench-{}-peers", std::process::id()));
    let plan = [(WHOLE, WHOLE_MODEL, false), (STREAM, STREAM_MODEL, true)];
    let c = PEER_CONCURRENCY;
    for kind in peers::Kind::ALL {
        let label = kind.label();
        let started = start_peer(
            kind,
            &cluster.engine.url,
            &dir,
            "not installed (run bench/peers.sh)",
            &mut found_all,
        )
        .await;
        let running = match started {
            Ok(running) => running,
            Err(why) => {
                for (scenario, _, _) in plan {
                    rows.push(skipped(scenario, label, c, why.clone()));
                }
                continue;
            }
        };
        let timing = if kind == peers::Kind::Litellm {
            (settings.litellm_seconds, settings.warmup.min(1.0))
        } else {
            (settings.seconds, settings.warmup)
        };
        let watched = Route::peer(label, &running, cluster).watched;
        for (scenario, model, stream) in plan {
            let row = match target(&running.url, running.key.as_deref(), model, stream) {
                Ok(target) => measure(scenario, label, c, &target, timing, false, watched).await,
                Err(error) => Err(error),
            };
            rows.push(row.unwrap_or_else(|e| skipped(scenario, label, c, e.to_string())));
        }
        running.stop().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    (rows, found_all)
}

/// Finds `kind` (adding it to `found`) and starts it in front of the engine at `engine`, its
/// files in `dir`; or says why it cannot (`not_installed` when it is not found).
async fn start_peer(
    kind: peers::Kind,
    engine: &str,
    dir: &std::path::Path,
    not_installed: &str,
    found: &mut Vec<peers::Found>,
) -> Result<peers::Running, String> {
    let label = kind.label();
    let Some(peer) = peers::find(kind).await else {
        return Err(not_installed.to_owned());
    };
    found.push(peer.clone());
    eprintln!(
        "peer: {label} {} starting",
        peer.version.as_deref().unwrap_or("(version unknown)")
    );
    peers::start(&peer, engine, dir)
        .await
        .map_err(|error| format!("did not start: {error}"))
}

/// Scenario 5: the club's path recording on PostgreSQL, scenarios 1 and 2 at c=16.
async fn run_postgres(settings: &Settings, server: Option<&str>) -> Vec<Row> {
    let c = PEER_CONCURRENCY;
    let plan = [(WHOLE, WHOLE_MODEL, false), (STREAM, STREAM_MODEL, true)];
    let skip_all = |why: String| -> Vec<Row> {
        plan.iter()
            .map(|(scenario, _, _)| skipped(scenario, CLUB_PG, c, why.clone()))
            .collect()
    };
    let Some(server) = server else {
        return skip_all(
            "no PostgreSQL URL (--postgres URL or CLUB_BENCH_DATABASE_URL; scripts/postgres.sh starts one)"
                .into(),
        );
    };
    let database = match pg::BenchDatabase::create(server).await {
        Ok(database) => database,
        Err(error) => return skip_all(format!("cannot create the bench database: {error}")),
    };
    eprintln!("5 postgres: database {}", database.name());
    let rows = match Cluster::start("postgres", Some(&database.url)).await {
        Ok(cluster) => {
            let watched = Watched {
                postgres: true,
                ..Watched::cluster(&cluster)
            };
            let mut rows = Vec::new();
            for (scenario, model, stream) in plan {
                let row = match target(&cluster.coordinator.url, Some(&cluster.key), model, stream)
                {
                    Ok(target) => {
                        let timing = (settings.seconds, settings.warmup);
                        measure(scenario, CLUB_PG, c, &target, timing, false, watched).await
                    }
                    Err(error) => Err(error),
                };
                rows.push(row.unwrap_or_else(|e| skipped(scenario, CLUB_PG, c, e.to_string())));
            }
            cluster.stop().await;
            rows
        }
        Err(error) => skip_all(format!("the cluster did not start: {error}")),
    };
    database.drop_database().await;
    rows
}

fn cpu_cell(row: &Row) -> String {
    format!("{}; load {:.0}", processes_cpu_cell(row), row.cpu.load_us)
}

/// The CPU of the processes on the row's path (the engine, and the club's or the peer's).
fn processes_cpu_cell(row: &Row) -> String {
    let c = &row.cpu;
    if row.path == "direct" {
        format!("{:.0} / – / –", c.engine_us)
    } else if row.path == CLUB {
        format!(
            "{:.0} / {:.0} / {:.0}",
            c.engine_us, c.coordinator_us, c.node_us
        )
    } else if row.path == CLUB_PG {
        format!(
            "{:.0} / {:.0} / {:.0} (PostgreSQL {:.0})",
            c.engine_us, c.coordinator_us, c.node_us, c.peer_us
        )
    } else {
        format!("{:.0} / peer {:.0}", c.engine_us, c.peer_us)
    }
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

fn signed_ms(us: i64) -> String {
    format!("{:+.3}", us as f64 / 1000.0)
}

fn diff(a: u64, b: u64) -> i64 {
    i64::try_from(a).unwrap_or(i64::MAX) - i64::try_from(b).unwrap_or(i64::MAX)
}

/// A row's errors, and its warm-up's when it had some.
fn errors_cell(row: &Row) -> String {
    match row.warmup.errors {
        0 => row.outcome.errors.to_string(),
        w => format!("{} (+{w} in the warm-up)", row.outcome.errors),
    }
}

/// A table row for a row that was not measured: its reason, then dashes.
fn skipped_line(row: &Row, columns: usize) -> Option<String> {
    let why = row.skipped.as_ref()?;
    let dashes = vec!["–"; columns.saturating_sub(3)].join(" | ");
    Some(format!(
        "| {} | {} | **skipped: {}** | {} |",
        row.path, row.concurrency, why, dashes
    ))
}

fn print_report(report: &Report) {
    let m = &report.machine;
    println!();
    println!("machine: {} × {} CPUs ({})", m.cpu_model, m.cpus, m.os);
    println!("club path: {}", report.club_path);
    let speed = report.settings.command == speed::COMMAND;
    if speed {
        println!(
            "{} s measured per row after {} s warm-up",
            report.settings.seconds, report.settings.warmup
        );
    } else {
        println!(
            "{} s measured per row after {} s warm-up (LiteLLM: {} s)",
            report.settings.seconds, report.settings.warmup, report.settings.litellm_seconds
        );
    }
    if !report.peers.is_empty() {
        let list: Vec<String> = report
            .peers
            .iter()
            .map(|p| format!("{} {}", p.name, p.version.as_deref().unwrap_or("?")))
            .collect();
        println!("peers: {}", list.join(", "));
    }
    let rows_of = |scenario: &str| -> Vec<&Row> {
        report
            .rows
            .iter()
            .filter(|r| r.scenario == scenario)
            .collect()
    };
    let whole = rows_of(WHOLE);
    if !whole.is_empty() {
        println!();
        if speed {
            println!("## whole answers (16 tokens): direct, nginx, vllm-router and the club");
        } else {
            println!("## 1. whole responses (16-token answers); scenario 5 and the peers at c=16");
        }
        println!(
            "| path | c | requests | errors | requests/s | p50 ms | p99 ms | ratio to direct | added p50 ms | CPU µs/request engine / coordinator / node (or peer); load generator |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for row in whole {
            if let Some(line) = skipped_line(row, 10) {
                println!("{line}");
                continue;
            }
            let o = &row.outcome;
            let direct = report.find(row.scenario, "direct", row.concurrency);
            let ratio = direct.map_or(0.0, |d| o.requests_per_s / d.requests_per_s.max(1e-9));
            let added = direct.map_or(0, |d| diff(o.latency.p50_us, d.latency.p50_us));
            println!(
                "| {} | {} | {} | {} | {:.0} | {} | {} | {:.3} | {} | {} |",
                row.path,
                row.concurrency,
                o.ok,
                errors_cell(row),
                o.requests_per_s,
                ms(o.latency.p50_us),
                ms(o.latency.p99_us),
                ratio,
                signed_ms(added),
                cpu_cell(row),
            );
        }
    }
    let streams = rows_of(STREAM);
    if !streams.is_empty() {
        println!();
        if speed {
            println!("## streams of 100 chunks: direct, nginx, vllm-router and the club");
        } else {
            println!("## 2. streams of 100 chunks; scenario 5 and the peers at c=16");
        }
        println!(
            "| path | c | streams | errors | streams/s | chunks/s | first chunk p50 ms | p99 ms | added p50 / p99 ms | chunks/s ratio | CPU µs/stream engine / coordinator / node (or peer); load generator |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        for row in streams {
            if let Some(line) = skipped_line(row, 11) {
                println!("{line}");
                continue;
            }
            let o = &row.outcome;
            let direct = report.find(row.scenario, "direct", row.concurrency);
            let ratio = direct.map_or(0.0, |d| o.chunks_per_s / d.chunks_per_s.max(1e-9));
            let (a50, a99) = direct.map_or((0, 0), |d| {
                (
                    diff(o.ttfc.p50_us, d.ttfc.p50_us),
                    diff(o.ttfc.p99_us, d.ttfc.p99_us),
                )
            });
            println!(
                "| {} | {} | {} | {} | {:.0} | {:.0} | {} | {} | {} / {} | {:.3} | {} |",
                row.path,
                row.concurrency,
                o.ok,
                errors_cell(row),
                o.requests_per_s,
                o.chunks_per_s,
                ms(o.ttfc.p50_us),
                ms(o.ttfc.p99_us),
                signed_ms(a50),
                signed_ms(a99),
                ratio,
                cpu_cell(row),
            );
        }
    }
    let paced = rows_of(PACED);
    if !paced.is_empty() {
        println!();
        println!("## 3. paced streams (100 chunks, one every 5 ms)");
        println!(
            "| path | consumers | streams | errors | chunks/s | first chunk p50 / p99 ms | added p50 / p99 ms | gap p50 / p99 / max ms | jitter p99 ms (gap p99 − 5 ms) |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for row in paced {
            let o = &row.outcome;
            let direct = report.find(row.scenario, "direct", row.concurrency);
            let (a50, a99) = direct.map_or((0, 0), |d| {
                (
                    diff(o.ttfc.p50_us, d.ttfc.p50_us),
                    diff(o.ttfc.p99_us, d.ttfc.p99_us),
                )
            });
            println!(
                "| {} | {} | {} | {} | {:.0} | {} / {} | {} / {} | {} / {} / {} | {} |",
                row.path,
                row.concurrency,
                o.ok,
                o.errors,
                o.chunks_per_s,
                ms(o.ttfc.p50_us),
                ms(o.ttfc.p99_us),
                signed_ms(a50),
                signed_ms(a99),
                ms(o.gap.p50_us),
                ms(o.gap.p99_us),
                ms(o.gap.max_us),
                signed_ms(diff(o.gap.p99_us, PACE_US)),
            );
        }
    }
    if let Some(links) = &report.links {
        print_links(links);
    }
    if let Some(replicas) = &report.replicas {
        replicas::print(replicas);
    }
    if let Some(records) = &report.records {
        println!();
        println!("{}", records.line());
    }
    if !report.targets.is_empty() {
        println!();
        println!("## targets (issue {})", if speed { 18 } else { 8 });
        println!("| target | measured | met |");
        println!("|---|---|---|");
        for v in &report.targets {
            let met = match v.met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "could not be judged",
            };
            println!("| {} | {} | {met} |", v.target, v.measured);
        }
    }
    if speed {
        let budget = speed::budget(report);
        if !budget.is_empty() {
            println!();
            println!("## what the targets leave the coordinator and the node");
            for line in budget {
                println!("- {line}");
            }
        }
    }
    println!();
}

fn seconds_cell(s: Option<f64>) -> String {
    s.map_or_else(|| "not reached".to_owned(), |s| format!("{s:.1} s"))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn print_links(l: &swarm::LinksOutcome) {
    println!();
    println!("## 4. idle node links (coordinator on SQLite, heartbeat every 10 s)");
    if let Some(why) = &l.lowered {
        println!("**N {why}**");
    }
    if let Some(error) = &l.error {
        println!("**error: {error}**");
    }
    println!("| measure | value |");
    println!("|---|---|");
    println!("| links (asked) | {} ({}) |", l.links, l.asked);
    println!(
        "| linked at first / time for all | {} / {} |",
        l.linked_first,
        seconds_cell(l.first_link_s)
    );
    println!(
        "| coordinator RSS before any link | {} |",
        mib(l.rss_before_kib)
    );
    println!(
        "| coordinator RSS with {} idle links | {} |",
        l.linked_first,
        mib(l.rss_linked_kib)
    );
    println!("| per link | {:.1} KiB |", l.bytes_per_link as f64 / 1024.0);
    println!(
        "| coordinator CPU while idle ({:.0} s) | {:.1} % of one core |",
        l.idle_window_s, l.idle_cpu_percent
    );
    println!(
        "| the nodes' process RSS (all links, for scale) | {} |",
        mib(l.swarm_rss_kib)
    );
    println!(
        "| restart (SIGKILL → listening again) | {} |",
        seconds_cell(l.restart_listening_s)
    );
    println!(
        "| reconnected after the SIGKILL: 50 % / 99 % / all | {} / {} / {} |",
        seconds_cell(l.reconnect_p50_s),
        seconds_cell(l.reconnect_p99_s),
        seconds_cell(l.reconnect_all_s)
    );
    println!("| linked again at the end | {} |", l.relinked);
    println!(
        "| coordinator RSS after the reconnection | {} |",
        mib(l.rss_relinked_kib)
    );
    println!();
    println!(
        "Routing with the crowd online: whole answers at c=16 (requests/s, p50, p99, errors)."
    );
    println!("| requests for | requests/s | p50 | p99 | errors | vs one node alone |");
    println!("|---|---|---|---|---|---|");
    let alone = l.one_node_alone.as_ref().map(|o| o.requests_per_s);
    // Everything linked but the one engine node.
    let swarm = l.linked_first.saturating_sub(1);
    for (label, outcome) in [
        (
            "a model one node serves, no other node online".to_owned(),
            &l.one_node_alone,
        ),
        (
            format!("the same model, {swarm} other nodes online"),
            &l.one_node_in_crowd,
        ),
        (
            format!("the model all {swarm} other nodes serve"),
            &l.crowd_model,
        ),
    ] {
        let Some(o) = outcome else {
            println!("| {label} | not measured | | | | |");
            continue;
        };
        let ratio = alone.filter(|a| *a > 0.0).map_or("–".to_owned(), |a| {
            format!("{:.2}×", o.requests_per_s / a)
        });
        println!(
            "| {label} | {:.0} | {} | {} | {} | {ratio} |",
            o.requests_per_s,
            ms(o.latency.p50_us),
            ms(o.latency.p99_us),
            o.errors
        );
    }
    let list = |t: Option<f64>| t.map_or("failed".to_owned(), |t| format!("{t:.2} ms"));
    println!(
        "\n`GET /v1/models` (median of 20): {} with one node online, {} with {swarm} more.",
        list(l.models_list_alone_ms),
        list(l.models_list_crowd_ms)
    );
}

/// Scenario 3's engine pace, µs.
const PACE_US: u64 = 5_000;

/// The ratio of vllm-router's single hop to direct in the peer table (27,300 / 83,600).
const VLLM_ROUTER_RATIO: f64 = 27_300.0 / 83_600.0;
/// LiteLLM's ratio to direct in the same table (89 / 83,600).
const LITELLM_RATIO: f64 = 89.0 / 83_600.0;

fn verdicts(report: &Report) -> Vec<Verdict> {
    let mut out = Vec::new();
    if report.settings.command == "smoke" {
        return out;
    }
    if let (Some(d), Some(c)) = (
        report.find(WHOLE, "direct", 16),
        report.find(WHOLE, CLUB, 16),
    ) {
        let ratio = c.requests_per_s / d.requests_per_s.max(1e-9);
        match report.find(WHOLE, peers::Kind::VllmRouter.label(), 16) {
            Some(v) => out.push(Verdict {
                target: "whole c=16: requests/s at least vllm-router's one hop (measured in this run)".into(),
                measured: format!(
                    "club {:.0}/s vs vllm-router {:.0}/s = {:.2}×",
                    c.requests_per_s,
                    v.requests_per_s,
                    c.requests_per_s / v.requests_per_s.max(1e-9)
                ),
                met: Some(c.requests_per_s >= v.requests_per_s),
            }),
            None => out.push(Verdict {
                target: format!(
                    "whole c=16: requests/s at least vllm-router's one hop (not measured here: its ratio to direct in the issue, {VLLM_ROUTER_RATIO:.2})"
                ),
                measured: format!(
                    "{:.0}/s = {ratio:.3} of direct ({:.0}/s)",
                    c.requests_per_s, d.requests_per_s
                ),
                met: Some(ratio >= VLLM_ROUTER_RATIO),
            }),
        }
        match report.find(WHOLE, peers::Kind::Litellm.label(), 16) {
            Some(l) => out.push(Verdict {
                target: "whole c=16: at least 100× LiteLLM's requests/s (measured in this run)".into(),
                measured: format!(
                    "club {:.0}/s vs LiteLLM {:.1}/s = {:.0}×",
                    c.requests_per_s,
                    l.requests_per_s,
                    c.requests_per_s / l.requests_per_s.max(1e-9)
                ),
                met: Some(c.requests_per_s >= 100.0 * l.requests_per_s),
            }),
            None => out.push(Verdict {
                target: format!(
                    "whole c=16: at least 100× LiteLLM (not measured here: ratio ≥ {:.3}, from the issue)",
                    100.0 * LITELLM_RATIO
                ),
                measured: format!("{:.0}× LiteLLM's ratio", ratio / LITELLM_RATIO),
                met: Some(ratio >= 100.0 * LITELLM_RATIO),
            }),
        }
        let added = diff(c.latency.p50_us, d.latency.p50_us);
        out.push(Verdict {
            target: "whole c=16: added p50 latency < 0.5 ms".into(),
            measured: format!("{} ms", signed_ms(added)),
            met: Some(added < 500),
        });
    }
    if let (Some(d), Some(c)) = (
        report.find(STREAM, "direct", 16),
        report.find(STREAM, CLUB, 16),
    ) {
        let a50 = diff(c.ttfc.p50_us, d.ttfc.p50_us);
        let a99 = diff(c.ttfc.p99_us, d.ttfc.p99_us);
        out.push(Verdict {
            target: "streams: added time to first chunk p50 < 0.5 ms".into(),
            measured: format!("{} ms", signed_ms(a50)),
            met: Some(a50 < 500),
        });
        out.push(Verdict {
            target: "streams: added time to first chunk p99 < 2 ms".into(),
            measured: format!("{} ms", signed_ms(a99)),
            met: Some(a99 < 2_000),
        });
        let ratio = c.chunks_per_s / d.chunks_per_s.max(1e-9);
        out.push(Verdict {
            target: "streams: chunks/s ≥ 80% of direct".into(),
            measured: format!(
                "{:.0} vs {:.0} chunks/s = {:.0}%",
                c.chunks_per_s,
                d.chunks_per_s,
                100.0 * ratio
            ),
            met: Some(ratio >= 0.8),
        });
    }
    for row in report
        .rows
        .iter()
        .filter(|r| r.scenario == PACED && r.path == CLUB)
    {
        let jitter = diff(row.outcome.gap.p99_us, PACE_US);
        out.push(Verdict {
            target: format!(
                "{} paced streams (target: 1,000): p99 chunk gap ≤ pace + 5 ms",
                row.concurrency
            ),
            measured: format!("p99 gap − pace = {} ms", signed_ms(jitter)),
            met: Some(jitter <= 5_000 && row.outcome.errors == 0),
        });
    }
    if let Some(l) = &report.links
        && l.error.is_none()
    {
        let mb = l.rss_linked_kib as f64 * 1024.0 / 1e6;
        out.push(Verdict {
            target: "10,000 idle node links in under 300 MB of coordinator memory".into(),
            measured: format!(
                "{mb:.0} MB (RSS) with {} links{}",
                l.linked_first,
                if l.linked_first < 10_000 {
                    " (fewer than 10,000: see scenario 4)"
                } else {
                    ""
                }
            ),
            met: Some(mb < 300.0 && l.linked_first >= 10_000),
        });
        out.push(Verdict {
            target: "all links back within 30 s of a coordinator restart".into(),
            measured: format!(
                "{} of {} back; all after {}",
                l.relinked,
                l.links,
                seconds_cell(l.reconnect_all_s)
            ),
            met: Some(l.reconnect_all_s.is_some_and(|s| s < 30.0) && l.links >= 10_000),
        });
    }
    out
}
