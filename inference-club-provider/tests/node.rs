//! The provider node against a fake coordinator (`support::coordinator`), which plays the coordinator's
//! side of the link: hello and its redaction, jobs in parallel and streamed, one slow job among
//! fifty, cancel, heartbeats with load, `busy` beyond `max_concurrent`, reconnection and its
//! backoff, dead links, refused hellos, manifest reload, graceful shutdown, and the job log.
//!
//! The node runs on `Echo` backends paced to known speeds, or on a manifest file whose service
//! is a fake OpenAI engine (`support`). Every test is bounded in time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use inference_club_core::link::{self, Cancel, CoordinatorMessage, NodeMessage};
use inference_club_core::manifest::ServiceManifest;
use inference_club_core::openai::{
    ChatCompletionChunk, ChatCompletionRequest, ChunkDelta, ConsumerEvents, Model, Usage,
};
use inference_club_core::provider::{ChunkStream, Provider, ProviderError, RequestContext};
use inference_club_core::routing::failover;
use inference_club_provider::backends::Echo;
use inference_club_provider::node::{
    Backoff, JobLog, JobLogConfig, NODE_VERSION, Node, NodeConfig, NodeHandle, Offer,
};
use inference_club_provider::router::{Route, Router};
use serde_json::{Value, json};
use support::coordinator::{FakeCoordinator, JobEnd, KEY, Sent, WAIT, chat_job};
use support::{FakeEngine, MODEL, Plan, Wire};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The heartbeat interval most tests give the node in `welcome`.
const HEARTBEAT_MS: u64 = 200;

/// Fails the test if `work` takes longer than a few seconds.
async fn bounded<F: Future>(work: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(25), work)
        .await
        .expect("the test took too long")
}

/// A node configuration for the fake coordinator at `url`: quick to give up, quick to retry.
fn config(url: &str) -> NodeConfig {
    let mut config = NodeConfig::new(url, KEY);
    config.connect_timeout = Duration::from_secs(2);
    config.backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(200));
    config.shutdown_grace = Duration::from_secs(3);
    config.watch_interval = Some(Duration::from_millis(50));
    config
}

/// A route serving `model` from an echo engine that waits `pace_ms` before each chunk.
fn echo(model: &str, pace_ms: u64) -> Route {
    let engine = Echo::new()
        .models([model])
        .pace(Duration::from_millis(pace_ms));
    Route::new(model, Arc::new(engine)).model(model)
}

/// A fixed offer of these routes.
fn offer(routes: Vec<Route>) -> Offer {
    let router = routes
        .into_iter()
        .fold(Router::builder(), |builder, route| builder.route(route))
        .build();
    Offer::new(
        router,
        json!({"schema_version": 1, "agent": {"name": "test-node"}, "hosts": []}),
    )
}

/// A node running in the background.
struct Running {
    handle: NodeHandle,
    task: JoinHandle<()>,
}

impl Running {
    fn start(node: Node) -> Self {
        let handle = node.handle();
        let task = tokio::spawn(node.run());
        Self { handle, task }
    }

    fn echo(coordinator: &FakeCoordinator, routes: Vec<Route>) -> Self {
        Self::start(Node::from_offer(config(&coordinator.url), offer(routes)).unwrap())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap()
}

/// A fresh directory under the system's temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "club-node-{name}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Replaces `path`'s content in one step (write beside it, then rename), so a watcher never
/// reads a half-written file.
fn write_atomically(path: &Path, text: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// A fake OpenAI engine serving [`MODEL`]: every answer is "Hello" then "!" and a stop.
async fn fake_engine() -> FakeEngine {
    FakeEngine::start(Wire::OpenAi, |_| {
        let chunk = |delta: Value, finish: Value| {
            format!(
                "data: {}\n\n",
                json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                       "model": MODEL,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            )
        };
        Plan::stream(
            Wire::OpenAi,
            support::sends([
                chunk(json!({"role": "assistant", "content": "Hello"}), Value::Null),
                chunk(json!({"content": "!"}), Value::Null),
                chunk(json!({}), json!("stop")),
                format!(
                    "data: {}\n\n",
                    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                           "model": MODEL, "choices": [],
                           "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
                ),
                "data: [DONE]\n\n".to_owned(),
            ]),
        )
    })
    .await
}

/// A manifest with one service on `engine_url` serving `models`, and secrets that must never
/// leave the machine.
fn manifest_yaml(engine_url: &str, models: &[&str]) -> String {
    let models: String = models
        .iter()
        .map(|m| format!("          - id: \"{m}\"\n"))
        .collect();
    format!(
        "schema_version: 1
agent: {{name: test-node}}
hosts:
  - id: desk
    services:
      - name: engine
        engine: vllm
        url: {engine_url}
        api_key: sk-never-leaves-1234
        command: vllm serve --api-key sk-never-leaves-1234
        extra: {{hf_token: hf_never_leaves, note: visible}}
        max_concurrent: 4
        models:
{models}"
    )
}

/// A fresh directory `name` holding `agent.yaml`, a manifest serving [`MODEL`] from `engine`;
/// gives the directory and the file.
fn write_manifest(name: &str, engine: &FakeEngine) -> (PathBuf, PathBuf) {
    let dir = temp_dir(name);
    let path = dir.join("agent.yaml");
    std::fs::write(&path, manifest_yaml(&engine.base_url(), &[MODEL])).unwrap();
    (dir, path)
}

/// A node on the manifest at `path`, running in the background.
async fn run_manifest(config: NodeConfig, path: &Path) -> Running {
    Running::start(Node::from_manifest(config, path).await.unwrap())
}

/// The served ids listed in an announced manifest, over all services.
fn announced_models(manifest: &Value) -> Vec<String> {
    let parsed: ServiceManifest = serde_json::from_value(manifest.clone()).unwrap();
    parsed
        .services()
        .flat_map(|s| s.models.iter())
        .filter_map(|m| m.served_id().map(str::to_owned))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// hello

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_carries_the_versions_and_the_redacted_manifest() {
    bounded(async {
        let engine = fake_engine().await;
        let dir = temp_dir("hello");
        let path = dir.join("agent.yaml");
        // A second service lists no models: its engine is asked, and what it lists is announced.
        let yaml = format!(
            "{}      - name: discovered
        engine: llamacpp
        url: {}
        api_key: sk-never-leaves-5678
",
            manifest_yaml(&engine.base_url(), &["listed-model"]),
            engine.base_url()
        );
        std::fs::write(&path, yaml).unwrap();

        let mut coordinator = FakeCoordinator::start().await;
        let node = Node::from_manifest(config(&coordinator.url), &path)
            .await
            .unwrap();
        let _node = Running::start(node);

        let mut link = coordinator.next_link().await;
        assert_eq!(
            link.authorization.as_deref(),
            Some(&*format!("Bearer {KEY}"))
        );
        let (hello, raw) = link.hello_frame().await;
        assert_eq!(hello.protocol_version, link::PROTOCOL_VERSION);
        assert_eq!(hello.node_version, NODE_VERSION);
        assert!(NODE_VERSION.starts_with("inference-club-provider/"));
        for secret in [
            "api_key",
            "sk-never-leaves",
            "command",
            "vllm serve",
            "hf_token",
            "hf_never_leaves",
        ] {
            assert!(!raw.contains(secret), "hello contains {secret:?}: {raw}");
        }
        assert!(raw.contains("visible"), "harmless extra keys stay: {raw}");
        // The coordinator validates what it is sent with the same validator.
        let announced = serde_json::to_string(&hello.manifest).unwrap();
        ServiceManifest::parse_and_validate(&announced).unwrap();
        assert_eq!(hello.manifest["agent"]["name"], "test-node");
        assert_eq!(announced_models(&hello.manifest), ["listed-model", MODEL]);

        link.welcome(HEARTBEAT_MS);
        // The discovered model is served too.
        let trace = link.run_job(1, MODEL, "hi").await;
        assert_eq!(trace.text(), "Hello!");
        std::fs::remove_dir_all(dir).unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_key_is_retried_slowly_not_fatal() {
    bounded(async {
        let mut coordinator = FakeCoordinator::start().await;
        let mut config = config(&coordinator.url);
        config.api_key = "icl_wrong".into();
        // Jittered delays from 1 ms would come back at once; a rejected key waits the longest.
        let max = Duration::from_millis(300);
        config.backoff = Backoff::new(Duration::from_millis(1), max);
        let node = Running::start(Node::from_offer(config, offer(vec![echo("echo", 0)])).unwrap());
        let attempts = coordinator.wait_for_attempts(3, WAIT).await;
        assert!(attempts.len() >= 3, "the node gave up: {attempts:?}");
        assert!(attempts.iter().all(|a| a.refused_with == Some(401)));
        for pair in attempts.windows(2) {
            let gap = pair[1].at - pair[0].at;
            assert!(gap >= max, "retried after {gap:?}, sooner than {max:?}");
        }
        assert!(coordinator.next_link_within(Duration::ZERO).await.is_none());
        assert!(!node.task.is_finished());
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// jobs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_in_parallel_each_streamed_and_ended_by_done() {
    bounded(async {
        let mut coordinator = FakeCoordinator::start().await;
        let _node = Running::echo(&coordinator, vec![echo("echo", 60)]);
        let (mut link, _) = coordinator.linked(HEARTBEAT_MS).await;

        // Five jobs of six 60 ms chunks each: about 360 ms each, in sequence 1.8 s.
        let prompt = "one two three four five";
        let started = Instant::now();
        for id in 1..=5 {
            link.job(id, "echo", prompt);
        }
        let traces = link.run_jobs(&[1, 2, 3, 4, 5], WAIT).await;
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_millis(1200),
            "five jobs took {elapsed:?}: they did not run in parallel"
        );
        for (id, trace) in &traces {
            assert_eq!(trace.text(), "echo: one two three four five", "job {id}");
            // Streamed: the first words arrive well before the end.
            let first = trace.first_content_at().unwrap();
            assert!(
                trace.ended_at() - first >= Duration::from_millis(200),
                "job {id}: chunks were held back until the end"
            );
            let done = trace.done();
            let usage = done.usage.as_ref().expect("usage in done");
            assert_eq!((usage.prompt_tokens, usage.completion_tokens), (5, 6));
            let first_token_ms = done.first_token_ms.expect("first_token_ms");
            assert!((40..=400).contains(&first_token_ms), "{first_token_ms}");
            assert!(done.total_ms >= 300 && done.total_ms >= first_token_ms);
            // The chunks name the model as the engine served it.
            assert!(trace.chunks.iter().all(|(_, c)| c.model == "echo"));
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_slow_job_does_not_hold_up_forty_nine_others() {
    bounded(async {
        let mut coordinator = FakeCoordinator::start().await;
        let _node = Running::echo(&coordinator, vec![echo("fast", 20), echo("slow", 1000)]);
        let (mut link, _) = coordinator.linked(HEARTBEAT_MS).await;
        // Ten words: eleven chunks 20 ms apart, about 220 ms per fast job.
        let prompt = "a b c d e f g h i j";

        // The baseline: 49 fast jobs alone.
        let fast: Vec<u64> = (1..=49).collect();
        let started = Instant::now();
        for id in &fast {
            link.job(*id, "fast", prompt);
        }
        let alone = link.run_jobs(&fast, WAIT).await;
        let baseline = fast
            .iter()
            .map(|id| alone[id].ended_at() - started)
            .max()
            .unwrap();

        // Now the same beside one slow job (three chunks a second apart), sent first.
        let started = Instant::now();
        link.job(100, "slow", "x y");
        let fast: Vec<u64> = (101..=149).collect();
        for id in &fast {
            link.job(*id, "fast", prompt);
        }
        let mut all = fast.clone();
        all.push(100);
        let together = link.run_jobs(&all, Duration::from_secs(10)).await;
        let slowest_fast = fast
            .iter()
            .map(|id| together[id].ended_at() - started)
            .max()
            .unwrap();
        let slow = together[&100].ended_at() - started;
        eprintln!(
            "49 fast jobs alone: {} ms; beside a slow job: {} ms; the slow job: {} ms",
            millis(baseline),
            millis(slowest_fast),
            millis(slow)
        );
        for id in &fast {
            assert_eq!(together[id].text(), "echo: a b c d e f g h i j");
        }
        assert_eq!(together[&100].text(), "echo: x y");
        assert!(slow >= Duration::from_millis(2900), "{slow:?}");
        assert!(
            slowest_fast <= baseline * 2 + Duration::from_millis(300),
            "the fast jobs were held up: {slowest_fast:?} beside the slow job, {baseline:?} alone"
        );
        assert!(slowest_fast < Duration::from_millis(1500));
    })
    .await;
}

/// The engine stream of a [`Stuck`] engine: says one word, then nothing, ever; notes its drop.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// An engine that says one word and then hangs without a chunk, ignoring cancellation.
struct Stuck {
    dropped: Arc<AtomicBool>,
}

#[async_trait]
impl Provider for Stuck {
    async fn models(&self) -> Result<Vec<Model>, ProviderError> {
        Ok(vec![Model::new("stuck", "test")])
    }

    async fn chat(
        &self,
        request: ChatCompletionRequest,
        _context: RequestContext,
    ) -> Result<ChunkStream, ProviderError> {
        let flag = DropFlag(self.dropped.clone());
        let model = request.model;
        Ok(Box::pin(async_stream::stream! {
            let _flag = flag;
            yield Ok(ChatCompletionChunk::new("c", model, 1).with_delta(ChunkDelta::content("first")));
            std::future::pending::<()>().await;
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_ends_the_job_as_cancelled_and_drops_the_engine_stream() {
    bounded(async {
        let mut coordinator = FakeCoordinator::start().await;
        let dropped = Arc::new(AtomicBool::new(false));
        let stuck = Route::new(
            "stuck",
            Arc::new(Stuck {
                dropped: dropped.clone(),
            }),
        )
        .model("stuck");
        let _node = Running::echo(&coordinator, vec![stuck, echo("echo", 100)]);
        let (mut link, _) = coordinator.linked(HEARTBEAT_MS).await;

        // An engine that went silent mid-answer.
        link.job(1, "stuck", "hi");
        let first = link.next().await;
        assert!(matches!(first.message, NodeMessage::Chunk(ref c) if c.job == 1));
        assert!(!dropped.load(Ordering::SeqCst));
        let cancelled_at = Instant::now();
        link.cancel(1);
        let traces = link.run_jobs(&[1], Duration::from_secs(1)).await;
        let error = traces[&1].error();
        assert_eq!(error.kind, "cancelled");
        assert!(traces[&1].ended_at() - cancelled_at < Duration::from_millis(500));
        assert!(dropped.load(Ordering::SeqCst), "the engine stream lives on");

        // An engine that is still talking (ten 100 ms chunks).
        link.job(2, "echo", "a b c d e f g h i");
        let started = Instant::now();
        link.next().await;
        link.cancel(2);
        let traces = link.run_jobs(&[2], Duration::from_secs(1)).await;
        assert_eq!(traces[&2].error().kind, "cancelled");
        assert!(started.elapsed() < Duration::from_millis(600));
        // Its slot is free again, and the link goes on.
        let (_, heartbeat) = link.next_heartbeat().await;
        assert!(
            heartbeat.load.iter().all(|l| l.in_flight == 0),
            "{heartbeat:?}"
        );
        assert_eq!(link.run_job(3, "echo", "ok").await.text(), "echo: ok");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_come_periodically_with_each_services_load() {
    bounded(async {
        let mut coordinator = FakeCoordinator::start().await;
        let _node = Running::echo(
            &coordinator,
            vec![echo("busy", 100).max_concurrent(4), echo("idle", 0)],
        );
        let (mut link, _) = coordinator.linked(100).await;
        // The coordinator's pings disturb nothing.
        link.ping_every(Duration::from_millis(50));

        let (first, heartbeat) = link.next_heartbeat().await;
        let services: Vec<_> = heartbeat.load.iter().map(|l| l.service.as_str()).collect();
        assert_eq!(services, ["busy", "idle"]);
        assert_eq!(heartbeat.load[0].max_concurrent, Some(4));
        assert_eq!(heartbeat.load[1].max_concurrent, None);
        assert!(heartbeat.load.iter().all(|l| l.in_flight == 0));
        let mut last = first;
        for _ in 0..5 {
            let (at, _) = link.next_heartbeat().await;
            let gap = at - last;
            assert!(
                gap >= Duration::from_millis(50) && gap <= Duration::from_millis(400),
                "heartbeats {gap:?} apart, interval 100 ms"
            );
            last = at;
        }

        // Three jobs of about a second each.
        for id in 1..=3 {
            link.job(id, "busy", "a b c d e f g h i");
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let (_, heartbeat) = link.next_heartbeat().await;
            if heartbeat.load[0].in_flight == 3 {
                assert_eq!(heartbeat.load[1].in_flight, 0);
                break;
            }
            assert!(Instant::now() < deadline, "in_flight never reached 3");
        }
        link.run_jobs(&[1, 2, 3], WAIT).await;
        let (_, heartbeat) = link.next_heartbeat().await;
        assert_eq!(heartbeat.load[0].in_flight, 0, "{heartbeat:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_beyond_max_concurrent_is_refused_as_busy() {
    bounded(async {
        let mut coordinator = FakeCoordinator::start().await;
        let _node = Running::echo(&coordinator, vec![echo("echo", 100).max_concurrent(1)]);
        let (mut link, _) = coordinator.linked(HEARTBEAT_MS).await;
        link.job(1, "echo", "a b c");
        link.job(2, "echo", "a b c");
        let traces = link.run_jobs(&[1, 2], WAIT).await;
        // Each job runs in its own task, so either may take the one slot.
        let (served, refused) = if matches!(traces[&1].end, Some((_, JobEnd::Done(_)))) {
            (&traces[&1], &traces[&2])
        } else {
            (&traces[&2], &traces[&1])
        };
        assert_eq!(served.text(), "echo: a b c");
        let busy = refused.error();
        assert_eq!(busy.kind, "busy", "{busy:?}");
        assert!(refused.chunks.is_empty());
        // Once the first is done, there is room again.
        assert_eq!(link.run_job(3, "echo", "x").await.text(), "echo: x");
        // A model nobody serves is not busy but not found.
        let unknown = link.run_job(4, "nope", "x").await;
        assert_eq!(unknown.error().kind, "model_not_found");
    })
    .await;
}

/// A consumer that cancels and asks again at once: the coordinator sends the `cancel` and the
/// next job in one write. The next job gets the slot the cancelled one frees, not `busy`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_sent_with_the_cancel_of_the_last_gets_the_slot_it_frees() {
    bounded(async {
        let mut coordinator = FakeCoordinator::start().await;
        let _node = Running::echo(&coordinator, vec![echo("echo", 20).max_concurrent(1)]);
        let (mut link, _) = coordinator.linked(HEARTBEAT_MS).await;
        for round in 0..10 {
            let (first, next) = (2 * round + 1, 2 * round + 2);
            link.job(first, "echo", "a b c d e f g h i j k l m n o p");
            let chunk = link.next().await;
            assert!(
                matches!(chunk.message, NodeMessage::Chunk(ref c) if c.job == first),
                "{chunk:?}"
            );
            link.send_together(vec![
                CoordinatorMessage::Cancel(Cancel { job: first }),
                CoordinatorMessage::Job(Box::new(chat_job(next, "echo", "again"))),
            ]);
            let traces = link.run_jobs(&[first, next], WAIT).await;
            assert_eq!(traces[&first].error().kind, "cancelled", "round {round}");
            assert!(
                matches!(traces[&next].end, Some((_, JobEnd::Done(_)))),
                "round {round}: {:?}",
                traces[&next].end
            );
            assert_eq!(traces[&next].text(), "echo: again", "round {round}");
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// the link: reconnection, backoff, liveness, refusal

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_reconnects_by_itself_and_says_hello_again() {
    bounded(async {
        let mut coordinator = FakeCoordinator::start().await;
        let _node = Running::echo(&coordinator, vec![echo("echo", 100)]);
        let (mut link, first_hello) = coordinator.linked(HEARTBEAT_MS).await;
        assert_eq!(
            link.run_job(1, "echo", "before").await.text(),
            "echo: before"
        );

        // A job in flight when the link drops is lost with it.
        link.job(2, "echo", "a b c d e f g h i");
        link.next().await;
        let dropped_at = Instant::now();
        link.drop_connection();
        let mut link = coordinator.next_link().await;
        let hello = link.hello().await;
        let gap = dropped_at.elapsed();
        assert_eq!(hello, first_hello);
        assert!(gap < Duration::from_secs(1), "reconnected after {gap:?}");
        link.welcome(HEARTBEAT_MS);
        // Nothing of the old job arrives on the new link; new jobs are served.
        let trace = link.run_job(2, "echo", "after").await;
        assert_eq!(trace.text(), "echo: after");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnection_delays_grow_with_jitter_up_to_the_cap() {
    bounded(async {
        let initial = Duration::from_millis(25);
        let max = Duration::from_millis(500);
        // Time a refused attempt itself may take on a loaded machine.
        let slack = Duration::from_millis(75);

        let mut coordinator = FakeCoordinator::start().await;
        coordinator.refuse_upgrades(Some(503));
        let mut config = config(&coordinator.url);
        config.backoff = Backoff::new(initial, max);
        let _node = Running::start(Node::from_offer(config, offer(vec![echo("echo", 0)])).unwrap());

        let attempts = coordinator
            .wait_for_attempts(13, Duration::from_secs(12))
            .await;
        assert!(attempts.len() >= 13, "only {} attempts", attempts.len());
        assert!(attempts.iter().all(|a| a.refused_with == Some(503)));
        let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1].at - w[0].at).collect();
        eprintln!(
            "reconnect delays (ms): {:?}",
            gaps.iter().map(|g| millis(*g)).collect::<Vec<_>>()
        );
        let mut ceilings = Backoff::new(initial, max);
        for (n, gap) in gaps.iter().take(12).enumerate() {
            let ceiling = ceilings.ceiling();
            ceilings.next_delay();
            assert!(
                *gap <= ceiling + slack,
                "delay {n} was {gap:?}, above its ceiling {ceiling:?}"
            );
            assert!(*gap <= max + slack);
        }
        // Full jitter makes single delays random, but once the ceiling has grown to the cap,
        // seven draws all below a fifth of it would be a 1-in-80 000 chance.
        let late_longest = gaps[5..12].iter().max().unwrap();
        assert!(
            *late_longest > initial + slack,
            "the delays did not grow: {gaps:?}"
        );

        // The coordinator comes back: the node links, and after a welcome the backoff starts
        // over from `initial`.
        coordinator.refuse_upgrades(None);
        let (link, _) = coordinator.linked(HEARTBEAT_MS).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let dropped_at = Instant::now();
        link.drop_connection();
        let mut link = coordinator.next_link().await;
        link.hello().await;
        let gap = dropped_at.elapsed();
        assert!(gap <= initial + slack, "backoff not reset: {gap:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_link_is_dropped_but_a_quiet_healthy_one_is_kept() {
    bounded(async {
        let mut coordinator = FakeCoordinator::start().await;
        let _node = Running::echo(&coordinator, vec![echo("echo", 0)]);
        let (mut link, _) = coordinator.linked(100).await;

        // A healthy coordinator with nothing to say (no jobs, no pings of its own) for fifteen
        // heartbeat intervals: the node keeps the link.
        assert!(
            !link.closed_within(Duration::from_millis(1500)).await,
            "the node dropped a healthy link"
        );
        assert!(coordinator.next_link_within(Duration::ZERO).await.is_none());
        assert!(
            link.heartbeats.len() >= 8,
            "{} heartbeats",
            link.heartbeats.len()
        );
        assert_eq!(
            link.run_job(1, "echo", "still here").await.text(),
            "echo: still here"
        );

        // A coordinator that hangs (no frames, no pongs, TCP still open): after three intervals
        // of silence the node gives up on the link and dials again.
        let silent_at = Instant::now();
        link.go_silent();
        let mut link = coordinator.next_link().await;
        let gap = silent_at.elapsed();
        link.hello().await;
        assert!(
            gap >= Duration::from_millis(150) && gap <= Duration::from_millis(1500),
            "a silent link was given up after {gap:?} (three intervals: 300 ms)"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_hello_is_retried_with_backoff() {
    bounded(async {
        let mut coordinator = FakeCoordinator::start().await;
        let node = Running::echo(&coordinator, vec![echo("echo", 0)]);
        let mut refused_at = Vec::new();
        for _ in 0..3 {
            let mut link = coordinator.next_link().await;
            link.hello().await;
            link.refuse(
                "the manifest is invalid",
                &["hosts[0].services[0].engine: must be one of [...], got \"foo\""],
            );
            refused_at.push(Instant::now());
        }
        assert!(!node.task.is_finished(), "the node gave up");
        // Once the coordinator accepts it, the node serves.
        let (mut link, _) = coordinator.linked(HEARTBEAT_MS).await;
        assert_eq!(link.run_job(1, "echo", "in").await.text(), "echo: in");
        assert!(
            coordinator
                .attempts()
                .iter()
                .all(|a| a.refused_with.is_none())
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// manifest reload

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_manifest_is_announced_and_an_invalid_edit_keeps_the_old_one() {
    bounded(async {
        let engine = fake_engine().await;
        let (dir, path) = write_manifest("reload", &engine);
        let mut coordinator = FakeCoordinator::start().await;
        let _node = run_manifest(config(&coordinator.url), &path).await;
        let (mut link, hello) = coordinator.linked(HEARTBEAT_MS).await;
        assert_eq!(announced_models(&hello.manifest), [MODEL]);

        // A new model: a new hello on the same link.
        write_atomically(
            &path,
            &manifest_yaml(&engine.base_url(), &[MODEL, "new-model"]),
        );
        let received = link.next().await;
        let NodeMessage::Hello(hello) = received.message else {
            panic!("expected a new hello, got {:?}", received.message);
        };
        assert_eq!(announced_models(&hello.manifest), [MODEL, "new-model"]);
        assert!(!received.raw.contains("sk-never-leaves"));

        // An invalid edit: no hello, and the old offer keeps serving.
        write_atomically(
            &path,
            &manifest_yaml(&engine.base_url(), &[MODEL]).replace("engine: vllm", "engine: foo"),
        );
        let next = link.next_within(Duration::from_millis(600)).await;
        assert!(
            next.is_none(),
            "an invalid manifest was announced: {next:?}"
        );
        let trace = link.run_job(1, MODEL, "hi").await;
        assert_eq!(trace.text(), "Hello!");
        let usage = trace.done().usage.clone().unwrap();
        assert_eq!(usage.total_tokens, 5);
        assert!(coordinator.next_link_within(Duration::ZERO).await.is_none());
        std::fs::remove_dir_all(dir).unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_rereads_the_manifest_when_asked() {
    bounded(async {
        let engine = fake_engine().await;
        let (dir, path) = write_manifest("sighup", &engine);
        let mut coordinator = FakeCoordinator::start().await;
        let mut config = config(&coordinator.url);
        config.watch_interval = None;
        let running = run_manifest(config, &path).await;
        let (mut link, _) = coordinator.linked(HEARTBEAT_MS).await;

        // Not watched: an edit alone changes nothing...
        write_atomically(&path, &manifest_yaml(&engine.base_url(), &[MODEL, "other"]));
        assert!(link.next_within(Duration::from_millis(400)).await.is_none());
        // ...until reload (SIGHUP in club-provider).
        running.handle.reload();
        let NodeMessage::Hello(hello) = link.next().await.message else {
            panic!("expected hello");
        };
        assert_eq!(announced_models(&hello.manifest), [MODEL, "other"]);

        // Reloading an invalid file announces nothing and keeps serving.
        std::fs::write(
            &path,
            "schema_version: 1\nhosts: [{id: 5, services: nope}]\n",
        )
        .unwrap();
        running.handle.reload();
        assert!(link.next_within(Duration::from_millis(400)).await.is_none());
        assert_eq!(link.run_job(1, MODEL, "hi").await.text(), "Hello!");
        std::fs::remove_dir_all(dir).unwrap();
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// shutdown

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_running_jobs_refuses_new_ones_and_says_goodbye() {
    bounded(async {
        let mut coordinator = FakeCoordinator::start().await;
        let mut running = Running::echo(&coordinator, vec![echo("echo", 100)]);
        let (mut link, _) = coordinator.linked(HEARTBEAT_MS).await;

        link.job(1, "echo", "a b c d e f");
        link.next().await;
        running.handle.shutdown();
        tokio::time::sleep(Duration::from_millis(50)).await;
        link.job(2, "echo", "too late");
        let traces = link.run_jobs(&[1, 2], WAIT).await;
        assert_eq!(traces[&1].text(), "echo: a b c d e f");
        traces[&1].done();
        assert_eq!(traces[&2].error().kind, "busy");
        assert!(traces[&2].ended_at() < traces[&1].ended_at());

        let goodbye = link.next().await;
        assert!(
            matches!(goodbye.message, NodeMessage::Goodbye(_)),
            "{goodbye:?}"
        );
        assert!(link.closed_within(WAIT).await);
        tokio::time::timeout(Duration::from_secs(1), &mut running.task)
            .await
            .expect("run() returns after goodbye")
            .unwrap();
        assert!(
            coordinator
                .next_link_within(Duration::from_millis(200))
                .await
                .is_none()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_jobs_that_outlast_the_grace_period() {
    bounded(async {
        let mut coordinator = FakeCoordinator::start().await;
        let mut config = config(&coordinator.url);
        let grace = Duration::from_millis(300);
        config.shutdown_grace = grace;
        let mut running =
            Running::start(Node::from_offer(config, offer(vec![echo("echo", 1000)])).unwrap());
        let (mut link, _) = coordinator.linked(HEARTBEAT_MS).await;

        link.job(1, "echo", "a b c d e f");
        link.next().await;
        let asked = Instant::now();
        running.handle.shutdown();
        let traces = link.run_jobs(&[1], WAIT).await;
        assert_eq!(traces[&1].error().kind, "cancelled");
        let goodbye = link.next().await;
        assert!(matches!(goodbye.message, NodeMessage::Goodbye(_)));
        tokio::time::timeout(WAIT, &mut running.task)
            .await
            .expect("run() returns")
            .unwrap();
        let took = asked.elapsed();
        assert!(
            took >= grace && took < grace + Duration::from_millis(700),
            "shutdown took {took:?} with a {grace:?} grace period"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_disconnected_returns_at_once() {
    bounded(async {
        let coordinator = FakeCoordinator::start().await;
        coordinator.refuse_upgrades(Some(503));
        let mut running = Running::echo(&coordinator, vec![echo("echo", 0)]);
        coordinator.wait_for_attempts(2, WAIT).await;
        running.handle.shutdown();
        tokio::time::timeout(Duration::from_millis(500), &mut running.task)
            .await
            .expect("run() returns")
            .unwrap();
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// the operator's job log

/// Reads the job log at `path` until it has `n` lines.
async fn log_lines(path: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "job log has {} lines",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_log_records_each_job_without_content_unless_asked() {
    bounded(async {
        let dir = temp_dir("job-log");
        for log_content in [false, true] {
            let path = dir.join(format!("jobs-{log_content}.jsonl"));
            let mut log_config = JobLogConfig::new(&path);
            log_config.log_content = log_content;
            let log = JobLog::start(log_config).unwrap();
            let mut coordinator = FakeCoordinator::start().await;
            let node = Node::from_offer(
                config(&coordinator.url),
                offer(vec![echo("echo", 0), echo("slow", 1000)]),
            )
            .unwrap()
            .with_job_log(log);
            let _node = Running::start(node);
            let (mut link, _) = coordinator.linked(HEARTBEAT_MS).await;

            link.run_job(1, "echo", "secret prompt words").await.done();
            link.run_job(2, "missing", "x").await.error();
            link.job(3, "slow", "x y");
            link.next().await;
            link.cancel(3);
            link.run_jobs(&[3], WAIT).await;

            let lines = log_lines(&path, 3).await;
            let raw = std::fs::read_to_string(&path).unwrap();
            let by_request = |id: &str| {
                lines
                    .iter()
                    .find(|l| l["request_id"] == id)
                    .unwrap_or_else(|| panic!("no entry for {id}: {raw}"))
            };
            let ok = by_request("req-1");
            assert_eq!(ok["consumer"], "bob");
            assert_eq!(ok["model"], "echo");
            assert_eq!(ok["status"], "succeeded");
            assert_eq!(ok["prompt_tokens"], 3);
            assert_eq!(ok["completion_tokens"], 4);
            assert!(ok["total_ms"].is_u64());
            assert!(ok["time"].is_string());
            let failed = by_request("req-2");
            assert_eq!(failed["status"], "failed");
            assert!(failed["error"].as_str().unwrap().contains("missing"));
            assert_eq!(by_request("req-3")["status"], "cancelled");
            if log_content {
                assert_eq!(ok["answer"], "echo: secret prompt words");
                assert!(
                    ok["request"]["messages"]
                        .to_string()
                        .contains("secret prompt")
                );
            } else {
                assert!(ok.get("answer").is_none() && ok.get("request").is_none());
                assert!(!raw.contains("secret prompt"), "content logged: {raw}");
            }
        }
        std::fs::remove_dir_all(dir).unwrap();
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// whole jobs

/// One server-sent event of an OpenAI-style engine, `data: {value}`.
fn sse(value: Value) -> String {
    format!("data: {value}\n\n")
}

/// An engine's chat chunk event (id `engine-id`) with one choice: `delta` and `finish`.
fn engine_chunk(delta: Value, finish: Value) -> String {
    sse(
        json!({"id": "engine-id", "object": "chat.completion.chunk", "created": 1,
               "model": MODEL,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
    )
}

/// A job whose consumer takes the answer whole (`whole`): an OpenAI-compatible engine is asked
/// for it whole and it comes as one chunk, ahead of `done`; an engine that streams has its
/// chunks merged into two (up to the first output, then the rest); one that fails midway still
/// hands on what it said, ahead of the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_jobs_come_in_few_chunks_ahead_of_their_end() {
    bounded(async {
        let chunk = |delta| engine_chunk(delta, Value::Null);
        let engine = FakeEngine::start(Wire::OpenAi, move |body| {
            let prompt = body["messages"][0]["content"].as_str().unwrap_or_default();
            match (body["stream"].as_bool(), prompt) {
                (Some(false), "whole") => Plan::whole(
                    200,
                    "application/json",
                    json!({"id": "c", "object": "chat.completion", "created": 1, "model": MODEL,
                           "choices": [{"index": 0, "message": {"role": "assistant",
                                        "content": "Hello!"}, "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 3, "completion_tokens": 2,
                                     "total_tokens": 5}})
                    .to_string(),
                ),
                // An engine that streams whatever it is asked, and fails after some output.
                (_, "fails") => Plan::stream(
                    Wire::OpenAi,
                    support::sends([
                        chunk(json!({"role": "assistant", "content": "Hel"})),
                        chunk(json!({"content": "lo"})),
                        chunk(json!({"content": "!"})),
                        sse(json!({"error": {"message": "out of memory", "code": null}})),
                    ]),
                ),
                _ => Plan::stream(
                    Wire::OpenAi,
                    support::sends([
                        chunk(json!({"role": "assistant", "content": "Hel"})),
                        chunk(json!({"content": "lo"})),
                        chunk(json!({"content": "!"})),
                        "data: [DONE]\n\n".to_owned(),
                    ]),
                ),
            }
        })
        .await;
        let (dir, path) = write_manifest("whole", &engine);
        let mut coordinator = FakeCoordinator::start().await;
        let _node = run_manifest(config(&coordinator.url), &path).await;
        let (mut link, _) = coordinator.linked(HEARTBEAT_MS).await;
        let whole_job = |id, prompt: &str| link::Job {
            job: id,
            request_id: format!("req-{id}"),
            consumer: None,
            deadline_ms: None,
            whole: true,
            events: None,
            request: ChatCompletionRequest::new(
                MODEL,
                vec![inference_club_core::openai::ChatMessage::user(prompt)],
            ),
        };

        // Asked whole: one chunk, then done with the engine's usage.
        link.send_job(whole_job(1, "whole"));
        let trace = link.run_jobs(&[1], WAIT).await.remove(&1).unwrap();
        assert_eq!(trace.chunks.len(), 1, "{trace:?}");
        assert_eq!(trace.text(), "Hello!");
        assert_eq!(trace.done().usage.as_ref().unwrap().total_tokens, 5);
        assert_eq!(engine.requests()[0]["stream"], json!(false));

        // Streamed anyway: the first output, then the rest merged.
        link.send_job(whole_job(2, "streams"));
        let trace = link.run_jobs(&[2], WAIT).await.remove(&2).unwrap();
        assert_eq!(trace.chunks.len(), 2, "{trace:?}");
        assert_eq!(trace.text(), "Hello!");
        trace.done();

        // Failing midway: what came reaches the coordinator before the error.
        link.send_job(whole_job(3, "fails"));
        let trace = link.run_jobs(&[3], WAIT).await.remove(&3).unwrap();
        assert_eq!(trace.text(), "Hello!");
        assert!(trace.error().message.contains("out of memory"), "{trace:?}");

        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

/// Content larger than one events frame may carry ([`link::BINARY_CHUNK_BYTES`]).
static HUGE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| "x".repeat(link::BINARY_CHUNK_BYTES + 1024));

// ---------------------------------------------------------------------------------------------
// events jobs

/// A job whose consumer streams, asked for the consumer's events (`events`): the node sends
/// them in binary events frames and no chunks, each event carrying the completion id, flagged
/// from the frame with the first output on, usage only when the consumer asked for it; and the
/// `answer` they add up to right before `done`. An engine that fails midway still hands on
/// what it said, as events and in the answer, ahead of the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_jobs_with_events_get_the_consumers_events_and_their_answer() {
    bounded(async {
        let pause = || support::Step::Sleep(Duration::from_millis(150));
        let engine = FakeEngine::start(Wire::OpenAi, move |body| {
            let prompt = body["messages"][0]["content"].as_str().unwrap_or_default();
            if prompt == "huge" {
                // One event too large for any events frame, between two small ones.
                return Plan::stream(
                    Wire::OpenAi,
                    support::sends([
                        engine_chunk(json!({"role": "assistant", "content": "Hel"}), Value::Null),
                        engine_chunk(json!({"content": *HUGE}), Value::Null),
                        engine_chunk(json!({"content": "!"}), json!("stop")),
                        "data: [DONE]\n\n".to_owned(),
                    ]),
                );
            }
            // The role and empty content, a pause, the first content, a pause, then the rest
            // at once. (The node's router holds what comes before the first output, up to
            // `MAX_CHUNKS_BEFORE_OUTPUT` chunks: so many that it hands them on first.)
            let mut steps =
                support::sends([engine_chunk(json!({"role": "assistant"}), Value::Null)]);
            steps.extend(support::sends(
                (1..failover::MAX_CHUNKS_BEFORE_OUTPUT)
                    .map(|_| engine_chunk(json!({"content": ""}), Value::Null)),
            ));
            steps.push(pause());
            steps.extend(support::sends([engine_chunk(
                json!({"content": "Hel"}),
                Value::Null,
            )]));
            steps.push(pause());
            let rest = if prompt == "fails" {
                vec![
                    engine_chunk(json!({"content": "lo"}), Value::Null),
                    sse(json!({"error": {"message": "out of memory", "code": null}})),
                ]
            } else {
                vec![
                    engine_chunk(json!({"content": "lo"}), Value::Null),
                    engine_chunk(json!({"content": "!"}), Value::Null),
                    engine_chunk(json!({}), json!("stop")),
                    sse(json!({"id": "engine-id", "object": "chat.completion.chunk",
                               "created": 1, "model": MODEL, "choices": [],
                               "usage": {"prompt_tokens": 3, "completion_tokens": 2,
                                         "total_tokens": 5}})),
                    "data: [DONE]\n\n".to_owned(),
                ]
            };
            steps.extend(support::sends(rest));
            Plan::stream(Wire::OpenAi, steps)
        })
        .await;
        let (dir, path) = write_manifest("events", &engine);
        let mut coordinator = FakeCoordinator::start().await;
        let _node = run_manifest(config(&coordinator.url), &path).await;
        let (mut link, _) = coordinator.linked(HEARTBEAT_MS).await;
        let completion_id = |id: u64| format!("chatcmpl-record{id}");
        // As the coordinator sends a streamed chat: streamed, usage asked of the engine.
        let events_job = |id: u64, prompt: &str, include_usage: bool| {
            let mut request = ChatCompletionRequest::new(
                MODEL,
                vec![inference_club_core::openai::ChatMessage::user(prompt)],
            );
            request.stream = Some(true);
            request
                .stream_options
                .get_or_insert_with(Default::default)
                .include_usage = Some(true);
            link::Job {
                job: id,
                request_id: format!("record{id}"),
                consumer: Some("bob".into()),
                deadline_ms: None,
                whole: false,
                events: Some(ConsumerEvents {
                    completion_id: completion_id(id),
                    include_usage,
                }),
                request,
            }
        };
        let engine_usage = Usage::new(3, 2);

        for (id, include_usage) in [(1, false), (2, true)] {
            link.send_job(events_job(id, "streams", include_usage));
            let trace = link.run_jobs(&[id], WAIT).await.remove(&id).unwrap();
            let frames = trace.events_frames();
            assert!(trace.chunks.is_empty(), "chunk messages: {trace:?}");
            assert!(frames.len() >= 2, "{frames:?}");
            let events: Vec<&ChatCompletionChunk> =
                frames.iter().flat_map(|(_, chunks)| chunks).collect();
            assert!(
                events.iter().all(|c| c.id == completion_id(id)),
                "events without the completion id: {events:?}"
            );
            // What came before any output, alone: its frame is not flagged. The first
            // content's frame is, and so is every frame with output after it.
            let (flag, first) = &frames[0];
            assert!(!flag, "{frames:?}");
            assert!(first.iter().all(|c| !failover::is_output(c)), "{first:?}");
            // Events that are ready together share a frame.
            assert_eq!(
                first.len(),
                failover::MAX_CHUNKS_BEFORE_OUTPUT,
                "{frames:?}"
            );
            let (flag, second) = &frames[1];
            assert!(flag, "{frames:?}");
            assert_eq!(
                second[0].choices[0].delta.content.as_deref(),
                Some("Hel"),
                "{frames:?}"
            );
            for (flag, chunks) in &frames {
                assert_eq!(*flag, chunks.iter().any(failover::is_output), "{frames:?}");
            }
            assert_eq!(trace.events_text(), "Hello!");
            // Usage only when the consumer asked for it; never a usage-only event otherwise.
            let usage: Vec<_> = events.iter().filter_map(|c| c.usage.clone()).collect();
            if include_usage {
                assert_eq!(usage, std::slice::from_ref(&engine_usage), "{events:?}");
            } else {
                assert!(usage.is_empty(), "{events:?}");
                assert!(events.iter().all(|c| !c.choices.is_empty()), "{events:?}");
            }
            // The answer, with the usage the consumer may not have seen, right before done.
            assert_eq!(
                &trace.sequence[trace.sequence.len() - 2..],
                [Sent::Answer, Sent::End],
                "{trace:?}"
            );
            assert!(
                trace.sequence[..trace.sequence.len() - 2]
                    .iter()
                    .all(|s| *s == Sent::Binary)
            );
            let answer = trace.answer();
            assert_eq!(answer.choices.len(), 1, "{answer:?}");
            assert_eq!(answer.choices[0].delta.content.as_deref(), Some("Hello!"));
            assert_eq!(
                answer.choices[0].finish_reason.as_ref().map(|r| r.as_str()),
                Some("stop")
            );
            assert_eq!(answer.usage.as_ref(), Some(&engine_usage));
            assert_eq!(trace.done().usage.as_ref(), Some(&engine_usage));
        }

        // Failing midway: what came arrives as events, and in the answer, before the error.
        link.send_job(events_job(3, "fails", false));
        let trace = link.run_jobs(&[3], WAIT).await.remove(&3).unwrap();
        assert!(trace.chunks.is_empty(), "chunk messages: {trace:?}");
        assert_eq!(trace.events_text(), "Hello");
        assert_eq!(
            &trace.sequence[trace.sequence.len() - 2..],
            [Sent::Answer, Sent::End],
            "{trace:?}"
        );
        assert_eq!(
            trace.answer().choices[0].delta.content.as_deref(),
            Some("Hello")
        );
        assert!(trace.error().message.contains("out of memory"), "{trace:?}");

        // An event too large for an events frame goes as a chunk message, in its place; the
        // frames stay within their limit and the answer holds it all.
        link.send_job(events_job(4, "huge", false));
        let trace = link.run_jobs(&[4], WAIT).await.remove(&4).unwrap();
        assert_eq!(trace.chunks.len(), 1, "{:?}", trace.sequence);
        let alone = &trace.chunks[0].1;
        assert_eq!(alone.id, completion_id(4));
        assert_eq!(
            alone.choices[0].delta.content.as_deref(),
            Some(HUGE.as_str())
        );
        assert!(
            trace
                .binary
                .iter()
                .all(|(_, piece)| piece.len() <= link::BINARY_CHUNK_BYTES),
            "an events frame over the limit"
        );
        assert_eq!(trace.events_text(), "Hel!");
        let position = |kind: Sent| trace.sequence.iter().position(|s| *s == kind);
        assert!(
            position(Sent::Binary) < position(Sent::Chunk),
            "{:?}",
            trace.sequence
        );
        assert_eq!(
            trace.answer().choices[0].delta.content.as_deref(),
            Some(format!("Hel{}!", *HUGE).as_str())
        );
        trace.done();
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}
