//! Scenario 4: idle node links.
//!
//! A child process (`serve-swarm`) runs N real provider nodes
//! ([`inference_club_provider::node::Node`], each on an `Echo` engine, each with its own
//! `agent.name` under one operator key) linked to one coordinator, with the node's real
//! reconnect backoff (1 s doubling to 60 s, full jitter). The bench measures the coordinator's
//! memory (`VmRSS`) before any link and with all N linked and idle, its CPU while idle
//! (heartbeats only), then kills it (SIGKILL), starts it again on the same address and database,
//! and measures how long until all N are linked again, reading the coordinator's
//! `club_nodes_online` gauge from `/metrics`.
//!
//! Routing with a crowd online: one more node (a `serve-provider` over the fake engine) serves
//! the scenario-1 model. Whole answers at c=16 for that model are measured before the swarm links
//! and again with all N swarm nodes online (they serve another model), and for the model every
//! swarm node serves: what choosing among many nodes costs per request.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use inference_club_coordinator::{Admin, Scope, Scopes};
use inference_club_provider::backends::Echo;
use inference_club_provider::node::{Node, NodeConfig, Offer};
use inference_club_provider::router::{Route, Router};

use crate::BoxError;
use crate::cluster::{Process, ticks_of, write_manifest};
use crate::engine::WHOLE_MODEL;
use crate::load::{self, Load, Target};

/// The model every swarm node serves.
const SWARM_MODEL: &str = "swarm-echo";

/// File descriptors kept free beside one per link (the runtime, the database, logs, the listener).
const SPARE_FILES: u64 = 256;

/// How long the swarm may take to link at first, and to link again after the restart.
const LINK_DEADLINE: Duration = Duration::from_secs(60);

/// How long the idle CPU is measured: one heartbeat interval of the coordinator (10 s).
const IDLE_WINDOW: Duration = Duration::from_secs(10);

/// Raises this process's soft open-file limit to its hard limit; returns the new soft limit.
pub fn raise_open_file_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(_) => rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft),
    }
}

/// The most links one process can hold here: the hard open-file limit less a margin.
fn link_capacity() -> u64 {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map_or(1024, |(_, hard)| hard)
        .saturating_sub(SPARE_FILES)
}

/// The redacted manifest node `index` announces: one Echo service, its own `agent.name`.
fn manifest(index: usize) -> serde_json::Value {
    serde_json::json!({
        "schema_version": 1,
        "agent": {"name": format!("swarm-{index:05}")},
        "hosts": [{"id": "bench", "services": [{
            "name": "echo",
            "features": ["test-engine"],
            "models": [{"id": SWARM_MODEL}],
        }]}],
    })
}

/// The child side: runs `count` nodes linked to `coordinator` until the process is killed.
pub async fn serve(coordinator: String, key: String, count: usize) -> Result<(), BoxError> {
    let limit = raise_open_file_limit();
    let engine = Arc::new(Echo::new().models([SWARM_MODEL]));
    for index in 0..count {
        let mut config = NodeConfig::new(coordinator.clone(), key.clone());
        // A fixed offer: nothing to watch.
        config.watch_interval = None;
        let router = Router::builder()
            .route(Route::new("echo", engine.clone()).model(SWARM_MODEL))
            .build();
        let node = Node::from_offer(config, Offer::new(router, manifest(index)))?;
        tokio::spawn(node.run());
    }
    println!("swarm: {count} nodes started (open-file limit {limit})");
    std::future::pending::<()>().await;
    Ok(())
}

/// What scenario 4 found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LinksOutcome {
    /// Links asked for (`--links`).
    pub asked: usize,
    /// Links run: fewer than asked when the open-file limit does not allow them.
    pub links: usize,
    /// Why `links` is lower than `asked`, if it is.
    pub lowered: Option<String>,
    /// The coordinator's RSS before any link, KiB.
    pub rss_before_kib: u64,
    /// The coordinator's RSS with every link up and idle, KiB.
    pub rss_linked_kib: u64,
    /// (linked − before) / links, bytes.
    pub bytes_per_link: u64,
    /// The swarm process's RSS (all N nodes), KiB: the nodes' side, for scale.
    pub swarm_rss_kib: u64,
    /// Links up at the end of the first linking.
    pub linked_first: usize,
    /// Seconds from starting the swarm to every node linked (the first time).
    pub first_link_s: Option<f64>,
    /// The coordinator's CPU while every link is idle (heartbeats and pings only), % of one core.
    pub idle_cpu_percent: f64,
    /// Seconds the idle CPU was measured over.
    pub idle_window_s: f64,
    /// Seconds from the SIGKILL to the new coordinator listening.
    pub restart_listening_s: Option<f64>,
    /// Seconds from the SIGKILL until half the links were back.
    pub reconnect_p50_s: Option<f64>,
    /// Seconds from the SIGKILL until 99 % of the links were back.
    pub reconnect_p99_s: Option<f64>,
    /// Seconds from the SIGKILL until every link was back.
    pub reconnect_all_s: Option<f64>,
    /// Links up at the end of the reconnection (or at its deadline).
    pub relinked: usize,
    /// The new coordinator's RSS once the links were back, KiB.
    pub rss_relinked_kib: u64,
    /// Whole answers (c=16) for a model one node serves, before the swarm linked.
    pub one_node_alone: Option<load::Outcome>,
    /// The same with every swarm node online (serving another model).
    pub one_node_in_crowd: Option<load::Outcome>,
    /// Whole answers (c=16) for the model every swarm node serves.
    pub crowd_model: Option<load::Outcome>,
    /// Median time of `GET /v1/models` (one client, 20 calls), ms, before the swarm linked.
    pub models_list_alone_ms: Option<f64>,
    /// The same with every swarm node online.
    pub models_list_crowd_ms: Option<f64>,
    /// What went wrong, if anything did.
    pub error: Option<String>,
}

/// Consumers at once in the routing measurements.
const CROWD_CONCURRENCY: usize = 16;
/// Seconds of each routing measurement (after a second of warm-up).
const CROWD_SECONDS: f64 = 3.0;

/// Whole answers at c=16 for `model` at the coordinator `url` for [`CROWD_SECONDS`], after a
/// second of warm-up.
async fn whole_answers(url: &str, key: &str, model: &str, content: String) -> load::Outcome {
    let target = Target {
        base_url: url.to_owned(),
        key: Some(key.to_owned()),
        model: model.to_owned(),
        stream: false,
        expected_chunks: 0,
        expected_content: content,
    };
    let Ok(client) = load::client(CROWD_CONCURRENCY) else {
        return load::Outcome {
            first_error: Some("cannot build the HTTP client".into()),
            ..load::Outcome::default()
        };
    };
    let load = |seconds: f64| Load {
        concurrency: CROWD_CONCURRENCY,
        duration: Duration::from_secs_f64(seconds),
        max_requests: u64::MAX,
        strict: false,
    };
    load::run(&client, &target, load(1.0)).await;
    load::run(&client, &target, load(CROWD_SECONDS)).await
}

/// The median time of 20 `GET /v1/models` calls, ms; `None` if one failed.
async fn models_list_ms(client: &reqwest::Client, url: &str, key: &str) -> Option<f64> {
    let mut times = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let response = client
            .get(format!("{url}/v1/models"))
            .bearer_auth(key)
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.bytes().await.ok()?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    times.get(times.len() / 2).copied()
}

/// Whole answers for the scenario-1 model (served by the one engine node).
async fn one_node_answers(url: &str, key: &str) -> load::Outcome {
    let content = crate::engine::Shape::parse(WHOLE_MODEL)
        .map(|shape| shape.content())
        .unwrap_or_default();
    whole_answers(url, key, WHOLE_MODEL, content).await
}

/// `VmRSS` of `pid`, KiB (0 when unreadable).
pub fn rss_kib(pid: Option<u32>) -> u64 {
    let Some(pid) = pid else { return 0 };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// The coordinator's `club_nodes_online` gauge, or `None` when it does not answer.
async fn nodes_online(client: &reqwest::Client, url: &str) -> Option<usize> {
    let response = client
        .get(format!("{url}/metrics"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    let text = response.text().await.ok()?;
    parse_gauge(&text, "club_nodes_online")
}

/// The value of an unlabelled gauge `name` in Prometheus/OpenMetrics text.
fn parse_gauge(text: &str, name: &str) -> Option<usize> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        let value: f64 = value.split_whitespace().next()?.parse().ok()?;
        Some(value.max(0.0) as usize)
    })
}

/// Polls the gauge until it reaches `target` or `deadline` passes; returns, for each sample that
/// raised the count, the time since `since` and the count.
async fn watch_links(
    client: &reqwest::Client,
    url: &str,
    target: usize,
    since: Instant,
    deadline: Duration,
) -> Vec<(f64, usize)> {
    let mut seen = Vec::new();
    let mut best = 0;
    while since.elapsed() < deadline {
        let online = nodes_online(client, url).await.unwrap_or(0);
        if online > best {
            best = online;
            seen.push((since.elapsed().as_secs_f64(), online));
        }
        if online >= target {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen
}

/// Seconds until `fraction` of `target` links were up, from `watch_links`' samples.
fn time_to(seen: &[(f64, usize)], target: usize, fraction: f64) -> Option<f64> {
    let needed = ((target as f64) * fraction).ceil() as usize;
    seen.iter()
        .find(|(_, online)| *online >= needed.max(1))
        .map(|(t, _)| *t)
}

/// Runs scenario 4 with `asked` links, its files in `dir`.
pub async fn run(asked: usize, dir: &Path) -> LinksOutcome {
    let mut outcome = LinksOutcome {
        asked,
        links: asked,
        ..LinksOutcome::default()
    };
    raise_open_file_limit();
    let capacity = usize::try_from(link_capacity()).unwrap_or(usize::MAX);
    if asked > capacity {
        outcome.links = capacity;
        let why = format!(
            "lowered from {asked} to {capacity}: the open-file limit (hard) allows no more links per process"
        );
        eprintln!("4 links: {why}");
        outcome.lowered = Some(why);
    }
    if let Err(error) = measure(&mut outcome, dir).await {
        eprintln!("4 links: {error}");
        outcome.error = Some(error.to_string());
    }
    outcome
}

async fn measure(outcome: &mut LinksOutcome, dir: &Path) -> Result<(), BoxError> {
    let n = outcome.links;
    std::fs::create_dir_all(dir)?;
    let database = format!("sqlite:{}", dir.join("links.db").display());
    let key = {
        let admin = Admin::open(&database).await?;
        admin.add_user("swarm", None).await?;
        let key = admin
            .create_key(
                "swarm",
                "swarm",
                Scopes::only(Scope::Provider).with(Scope::Inference),
            )
            .await?;
        admin.close().await;
        key
    };
    let coordinator_log = dir.join("links-coordinator.log");
    let coordinator_args = |listen: &str| {
        vec![
            "serve-coordinator".to_owned(),
            "--listen".to_owned(),
            listen.to_owned(),
            "--database".to_owned(),
            database.clone(),
        ]
    };
    let args = coordinator_args("127.0.0.1:0");
    let coordinator =
        Process::start_self("coordinator", &args, &[], &coordinator_log, true).await?;
    let url = coordinator.url.clone();
    let listen = url.trim_start_matches("http://").to_owned();
    let client = reqwest::Client::builder().no_proxy().build()?;

    // One node over the fake engine, serving the scenario-1 model: requests before the crowd.
    let engine = Process::start_self(
        "engine",
        &["serve-engine", "--listen", "127.0.0.1:0"],
        &[],
        &dir.join("links-engine.log"),
        true,
    )
    .await?;
    let manifest = write_manifest(dir, &engine.url)?.display().to_string();
    let provider_args = [
        "serve-provider",
        "--coordinator",
        url.as_str(),
        "--manifest",
        manifest.as_str(),
    ];
    let provider = Process::start_self(
        "node",
        &provider_args,
        &[("CLUB_API_KEY", key.as_str()), ("CLUB_LOG", "error")],
        &dir.join("links-node.log"),
        false,
    )
    .await?;
    crate::cluster::wait_for_models(&url, &key, dir).await?;
    eprint!("4 links   whole answers, one node online … ");
    let alone = one_node_answers(&url, &key).await;
    eprintln!("{:.0}/s", alone.requests_per_s);
    outcome.one_node_alone = Some(alone);
    outcome.models_list_alone_ms = models_list_ms(&client, &url, &key).await;

    // Let it settle before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    outcome.rss_before_kib = rss_kib(coordinator.pid());

    eprint!("4 links   {n} nodes linking … ");
    let count = n.to_string();
    let swarm_args = [
        "serve-swarm".to_owned(),
        "--coordinator".to_owned(),
        url.clone(),
        "--count".to_owned(),
        count,
    ];
    let started = Instant::now();
    let swarm = Process::start_self(
        "swarm",
        &swarm_args,
        &[("CLUB_API_KEY", key.as_str()), ("CLUB_LOG", "error")],
        &dir.join("links-swarm.log"),
        false,
    )
    .await?;
    let seen = watch_links(&client, &url, n, started, LINK_DEADLINE).await;
    outcome.linked_first = seen.last().map_or(0, |(_, c)| *c);
    outcome.first_link_s = time_to(&seen, n, 1.0);
    eprintln!(
        "{} linked in {:.1} s",
        outcome.linked_first,
        started.elapsed().as_secs_f64()
    );
    if outcome.linked_first == 0 {
        swarm.stop().await;
        coordinator.stop().await;
        return Err(format!(
            "no node linked within {LINK_DEADLINE:?}; see the logs in {}",
            dir.display()
        )
        .into());
    }

    // Idle: heartbeats (nodes → coordinator) and pings (coordinator → nodes) only.
    tokio::time::sleep(Duration::from_secs(2)).await;
    outcome.rss_linked_kib = rss_kib(coordinator.pid());
    outcome.swarm_rss_kib = rss_kib(swarm.pid());
    let linked = outcome.linked_first.max(1) as u64;
    outcome.bytes_per_link = outcome
        .rss_linked_kib
        .saturating_sub(outcome.rss_before_kib)
        * 1024
        / linked;
    eprint!("4 links   idle CPU over {IDLE_WINDOW:?} … ");
    let before = coordinator.pid().map_or(0, ticks_of);
    let idle_started = Instant::now();
    tokio::time::sleep(IDLE_WINDOW).await;
    let after = coordinator.pid().map_or(0, ticks_of);
    outcome.idle_window_s = idle_started.elapsed().as_secs_f64();
    // Clock ticks are 10 ms on Linux (USER_HZ = 100).
    outcome.idle_cpu_percent =
        after.saturating_sub(before) as f64 * 0.01 / outcome.idle_window_s * 100.0;
    eprintln!("{:.1} % of a core", outcome.idle_cpu_percent);

    eprint!("4 links   whole answers, one node among {linked} … ");
    let crowded = one_node_answers(&url, &key).await;
    eprintln!("{:.0}/s", crowded.requests_per_s);
    outcome.one_node_in_crowd = Some(crowded);
    eprint!("4 links   whole answers for the model all {linked} serve … ");
    let crowd = whole_answers(&url, &key, SWARM_MODEL, "echo: Say something.".to_owned()).await;
    eprintln!("{:.0}/s", crowd.requests_per_s);
    outcome.crowd_model = Some(crowd);
    outcome.models_list_crowd_ms = models_list_ms(&client, &url, &key).await;

    // Restart: SIGKILL, then the same address and database.
    eprint!("4 links   coordinator killed and restarted … ");
    let killed = Instant::now();
    coordinator.stop().await;
    let args = coordinator_args(&listen);
    let coordinator = match Process::start_self(
        "coordinator",
        &args,
        &[],
        &dir.join("links-coordinator-2.log"),
        true,
    )
    .await
    {
        Ok(c) => c,
        Err(error) => {
            swarm.stop().await;
            return Err(format!("the coordinator did not start again on {listen}: {error}").into());
        }
    };
    outcome.restart_listening_s = Some(killed.elapsed().as_secs_f64());
    let seen = watch_links(&client, &url, n, killed, LINK_DEADLINE).await;
    outcome.relinked = seen.last().map_or(0, |(_, c)| *c);
    outcome.reconnect_p50_s = time_to(&seen, n, 0.5);
    outcome.reconnect_p99_s = time_to(&seen, n, 0.99);
    outcome.reconnect_all_s = time_to(&seen, n, 1.0);
    outcome.rss_relinked_kib = rss_kib(coordinator.pid());
    eprintln!(
        "{} linked again in {:.1} s",
        outcome.relinked,
        killed.elapsed().as_secs_f64()
    );
    swarm.stop().await;
    provider.stop().await;
    engine.stop().await;
    coordinator.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_gauge() {
        let text = "# HELP club_nodes_online Nodes linked now.\n# TYPE club_nodes_online gauge\nclub_nodes_online 9998\nclub_nodes_online_other 3\n# EOF\n";
        assert_eq!(parse_gauge(text, "club_nodes_online"), Some(9998));
        assert_eq!(parse_gauge(text, "club_queue_depth"), None);
    }

    #[test]
    fn times_to_a_fraction() {
        let seen = [(0.5, 10), (1.0, 50), (2.0, 99), (3.0, 100)];
        assert_eq!(time_to(&seen, 100, 0.5), Some(1.0));
        assert_eq!(time_to(&seen, 100, 0.99), Some(2.0));
        assert_eq!(time_to(&seen, 100, 1.0), Some(3.0));
        assert_eq!(time_to(&seen[..2], 100, 1.0), None);
    }

    #[test]
    fn manifests_validate_and_names_differ() {
        let a = manifest(1).to_string();
        let b = manifest(2).to_string();
        let parsed = inference_club_core::manifest::ServiceManifest::parse_and_validate(&a);
        assert!(parsed.is_ok(), "{parsed:?}");
        assert_ne!(a, b);
    }
}
