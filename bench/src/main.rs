//! `club-bench`: the club's path (consumer → coordinator → node → engine, recorded on SQLite)
//! against the direct path (consumer → engine), in the same run, on the same fake engine.
//!
//! `club-bench all` runs every scenario; `smoke` runs each path briefly and checks every answer;
//! `whole`, `stream` and `paced` run one scenario. Each prints a table and, with `--json FILE`,
//! writes the results as JSON. See `docs/benchmarks.md`.

mod cluster;
mod engine;
mod load;
mod stats;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // reqwest is built without a default TLS provider; the bench only speaks plain HTTP on
    // loopback, but the client still needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Ok(runtime) = inference_club_examples::cli_support::runtime() else {
        eprintln!("error: cannot start the async runtime");
        return ExitCode::from(2);
    };
    let Cli {
        json,
        seconds,
        warmup,
        paced_consumers,
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
        Command::ServeCoordinator { listen, database } => {
            init_logging();
            // The benchmark measures the coordinator, not its per-key limits.
            let config = inference_club_examples::coordinator::CoordinatorConfig {
                limits: inference_club_examples::coordinator::limits::Limits::without_rate_limits(),
                ..Default::default()
            };
            let status = runtime.block_on(inference_club_examples::coordinator_cli::serve_command(
                &listen, &database, config,
            ));
            ExitCode::from(status)
        }
        Command::ServeProvider {
            coordinator,
            key,
            manifest,
        } => {
            init_logging();
            let options = inference_club_examples::provider_ops::RunOptions {
                coordinator,
                key,
                manifest,
                job_log: None,
                log_content: false,
                engine_timeouts: Default::default(),
            };
            ExitCode::from(runtime.block_on(inference_club_examples::provider_ops::run(options)))
        }
        command => {
            let smoke = matches!(command, Command::Smoke);
            let settings = Settings::for_command(&command, seconds, warmup, paced_consumers);
            match runtime.block_on(bench(settings, json)) {
                Ok(report) if smoke && !report.all_correct() => {
                    eprintln!("smoke: FAILED (some answers were wrong or missing)");
                    ExitCode::from(1)
                }
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
    inference_club_examples::cli_support::init_logging("info", false);
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
}

impl Settings {
    fn for_command(command: &Command, seconds: f64, warmup: f64, paced: Vec<usize>) -> Self {
        let (name, whole, stream, paced) = match command {
            Command::Smoke => {
                return Self {
                    command: "smoke",
                    whole_concurrency: vec![4],
                    stream_concurrency: vec![4],
                    paced_consumers: vec![8],
                    seconds: 0.35,
                    warmup: 0.1,
                    strict: true,
                };
            }
            Command::Whole => ("whole", vec![16, 64], vec![], vec![]),
            Command::Stream => ("stream", vec![], vec![16], vec![]),
            Command::Paced => ("paced", vec![], vec![], paced),
            _ => ("all", vec![16, 64], vec![16], paced),
        };
        Self {
            command: name,
            whole_concurrency: whole,
            stream_concurrency: stream,
            paced_consumers: paced,
            seconds: seconds.max(0.05),
            warmup: warmup.max(0.0),
            strict: false,
        }
    }
}

/// One measured run.
#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    scenario: &'static str,
    path: &'static str,
    concurrency: usize,
    #[serde(flatten)]
    outcome: Outcome,
    cpu: CpuPerRequest,
}

/// CPU time (user + system, from `/proc/PID/stat`) each child spent per correct request during
/// a run: where the time goes, by process.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
struct CpuPerRequest {
    engine_us: f64,
    coordinator_us: f64,
    node_us: f64,
}

impl CpuPerRequest {
    fn between(before: [u64; 3], after: [u64; 3], requests: u64) -> Self {
        // Clock ticks are 10 ms on Linux (USER_HZ = 100).
        let per = |i: usize| {
            let ticks = after[i].saturating_sub(before[i]) as f64;
            ticks * 10_000.0 / requests.max(1) as f64
        };
        Self {
            engine_us: per(0),
            coordinator_us: per(1),
            node_us: per(2),
        }
    }
}

/// A target from issue 8 and how this run did.
#[derive(Debug, Clone, serde::Serialize)]
struct Verdict {
    target: String,
    measured: String,
    met: bool,
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
    targets: Vec<Verdict>,
}

impl Report {
    fn all_correct(&self) -> bool {
        !self.rows.is_empty()
            && self
                .rows
                .iter()
                .all(|r| r.outcome.errors == 0 && r.outcome.ok > 0)
    }

    fn find(&self, scenario: &str, path: &str, concurrency: usize) -> Option<&Outcome> {
        self.rows
            .iter()
            .find(|r| r.scenario == scenario && r.path == path && r.concurrency == concurrency)
            .map(|r| &r.outcome)
    }
}

const CLUB_PATH: &str = "club: consumer → coordinator (SQLite recording) → WebSocket → node (Router → OpenAiCompatible) → engine; engine, coordinator and node are separate child processes";

async fn bench(settings: Settings, json: Option<PathBuf>) -> Result<Report, BoxError> {
    let machine = Machine::here();
    eprintln!(
        "machine: {} × {} CPUs ({}); everything (load generator, engine, coordinator, node) shares them",
        machine.cpu_model, machine.cpus, machine.os
    );
    let cluster = Cluster::start().await?;
    eprintln!(
        "engine {} (pid {}), coordinator {} (pid {}), node pid {}",
        cluster.engine.url,
        cluster.engine.pid().unwrap_or(0),
        cluster.coordinator.url,
        cluster.coordinator.pid().unwrap_or(0),
        cluster.node.pid().unwrap_or(0),
    );
    let rows = run_scenarios(&settings, &cluster).await;
    cluster.stop().await;
    let rows = rows?;
    let mut report = Report {
        machine,
        settings,
        club_path: CLUB_PATH,
        rows,
        targets: Vec::new(),
    };
    report.targets = verdicts(&report);
    print_report(&report);
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(report)
}

fn target(cluster: &Cluster, path: &str, model: &str, stream: bool) -> Result<Target, BoxError> {
    let shape = Shape::parse(model).ok_or("unknown model")?;
    let (base_url, key) = match path {
        "direct" => (cluster.engine.url.clone(), None),
        _ => (cluster.coordinator.url.clone(), Some(cluster.key.clone())),
    };
    Ok(Target {
        base_url,
        key,
        model: model.to_owned(),
        stream,
        expected_chunks: shape.chunks,
        expected_content: shape.content(),
    })
}

async fn run_scenarios(settings: &Settings, cluster: &Cluster) -> Result<Vec<Row>, BoxError> {
    let mut plan: Vec<(&'static str, usize, &'static str, bool)> = Vec::new();
    for &c in &settings.whole_concurrency {
        plan.push(("1 whole", c, WHOLE_MODEL, false));
    }
    for &c in &settings.stream_concurrency {
        plan.push(("2 stream", c, STREAM_MODEL, true));
    }
    for &c in &settings.paced_consumers {
        plan.push(("3 paced", c, PACED_MODEL, true));
    }
    let mut rows = Vec::new();
    for (scenario, concurrency, model, stream) in plan {
        let client = load::client(concurrency)?;
        for path in ["direct", "club"] {
            let target = target(cluster, path, model, stream)?;
            let mut load = Load {
                concurrency,
                duration: Duration::from_secs_f64(settings.warmup),
                max_requests: u64::MAX,
                strict: settings.strict,
            };
            if settings.warmup > 0.0 {
                let _ = load::run(&client, &target, load).await;
            }
            load.duration = Duration::from_secs_f64(settings.seconds);
            eprint!("{scenario:<9} {path:<7} c={concurrency:<5} … ");
            let _ = std::io::stderr().flush();
            let before = cluster.cpu_ticks();
            let outcome = load::run(&client, &target, load).await;
            let after = cluster.cpu_ticks();
            let cpu = CpuPerRequest::between(before, after, outcome.ok);
            eprintln!(
                "{} ok, {} errors, {:.0} req/s",
                outcome.ok, outcome.errors, outcome.requests_per_s
            );
            if let Some(error) = &outcome.first_error {
                eprintln!("  first error: {error}");
            }
            rows.push(Row {
                scenario,
                path,
                concurrency,
                outcome,
                cpu,
            });
        }
    }
    Ok(rows)
}

fn cpu_cell(row: &Row) -> String {
    let c = &row.cpu;
    if row.path == "direct" {
        format!("{:.0} / – / –", c.engine_us)
    } else {
        format!(
            "{:.0} / {:.0} / {:.0}",
            c.engine_us, c.coordinator_us, c.node_us
        )
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

fn print_report(report: &Report) {
    let m = &report.machine;
    println!();
    println!("machine: {} × {} CPUs ({})", m.cpu_model, m.cpus, m.os);
    println!("club path: {}", report.club_path);
    println!(
        "{} s measured per row after {} s warm-up",
        report.settings.seconds, report.settings.warmup
    );
    let whole: Vec<&Row> = report
        .rows
        .iter()
        .filter(|r| r.scenario == "1 whole")
        .collect();
    if !whole.is_empty() {
        println!();
        println!("## 1. whole responses (16-token answers)");
        println!(
            "| path | c | requests | errors | requests/s | p50 ms | p99 ms | ratio to direct | added p50 ms | CPU µs/request engine / coordinator / node |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for row in whole {
            let o = &row.outcome;
            let direct = report.find(row.scenario, "direct", row.concurrency);
            let ratio = direct.map_or(0.0, |d| o.requests_per_s / d.requests_per_s.max(1e-9));
            let added = direct.map_or(0, |d| diff(o.latency.p50_us, d.latency.p50_us));
            println!(
                "| {} | {} | {} | {} | {:.0} | {} | {} | {:.2} | {} | {} |",
                row.path,
                row.concurrency,
                o.ok,
                o.errors,
                o.requests_per_s,
                ms(o.latency.p50_us),
                ms(o.latency.p99_us),
                ratio,
                signed_ms(added),
                cpu_cell(row),
            );
        }
    }
    let streams: Vec<&Row> = report
        .rows
        .iter()
        .filter(|r| r.scenario == "2 stream")
        .collect();
    if !streams.is_empty() {
        println!();
        println!("## 2. streams of 100 chunks");
        println!(
            "| path | c | streams | errors | streams/s | chunks/s | first chunk p50 ms | p99 ms | added p50 / p99 ms | chunks/s ratio | CPU µs/stream engine / coordinator / node |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        for row in streams {
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
                "| {} | {} | {} | {} | {:.0} | {:.0} | {} | {} | {} / {} | {:.2} | {} |",
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
                ratio,
                cpu_cell(row),
            );
        }
    }
    let paced: Vec<&Row> = report
        .rows
        .iter()
        .filter(|r| r.scenario == "3 paced")
        .collect();
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
    if !report.targets.is_empty() {
        println!();
        println!("## targets (issue 8)");
        println!("| target | measured | met |");
        println!("|---|---|---|");
        for v in &report.targets {
            println!(
                "| {} | {} | {} |",
                v.target,
                v.measured,
                if v.met { "yes" } else { "NO" }
            );
        }
    }
    println!();
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
        report.find("1 whole", "direct", 16),
        report.find("1 whole", "club", 16),
    ) {
        let ratio = c.requests_per_s / d.requests_per_s.max(1e-9);
        out.push(Verdict {
            target: format!(
                "whole c=16: requests/s at least vllm-router's one hop (its ratio to direct in the issue: {VLLM_ROUTER_RATIO:.2})"
            ),
            measured: format!(
                "{:.0}/s = {ratio:.2} of direct ({:.0}/s)",
                c.requests_per_s, d.requests_per_s
            ),
            met: ratio >= VLLM_ROUTER_RATIO,
        });
        out.push(Verdict {
            target: format!(
                "whole c=16: at least 100× LiteLLM (ratio ≥ {:.3})",
                100.0 * LITELLM_RATIO
            ),
            measured: format!("{:.0}× LiteLLM's ratio", ratio / LITELLM_RATIO),
            met: ratio >= 100.0 * LITELLM_RATIO,
        });
        let added = diff(c.latency.p50_us, d.latency.p50_us);
        out.push(Verdict {
            target: "whole c=16: added p50 latency < 0.5 ms".into(),
            measured: format!("{} ms", signed_ms(added)),
            met: added < 500,
        });
    }
    if let (Some(d), Some(c)) = (
        report.find("2 stream", "direct", 16),
        report.find("2 stream", "club", 16),
    ) {
        let a50 = diff(c.ttfc.p50_us, d.ttfc.p50_us);
        let a99 = diff(c.ttfc.p99_us, d.ttfc.p99_us);
        out.push(Verdict {
            target: "streams: added time to first chunk p50 < 0.5 ms".into(),
            measured: format!("{} ms", signed_ms(a50)),
            met: a50 < 500,
        });
        out.push(Verdict {
            target: "streams: added time to first chunk p99 < 2 ms".into(),
            measured: format!("{} ms", signed_ms(a99)),
            met: a99 < 2_000,
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
            met: ratio >= 0.8,
        });
    }
    for row in report
        .rows
        .iter()
        .filter(|r| r.scenario == "3 paced" && r.path == "club")
    {
        let jitter = diff(row.outcome.gap.p99_us, PACE_US);
        out.push(Verdict {
            target: format!(
                "{} paced streams (target: 1,000): p99 chunk gap ≤ pace + 5 ms",
                row.concurrency
            ),
            measured: format!("p99 gap − pace = {} ms", signed_ms(jitter)),
            met: jitter <= 5_000 && row.outcome.errors == 0,
        });
    }
    out
}
