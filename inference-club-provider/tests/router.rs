//! The router as users rely on it: names resolve to served ids, failover happens before output
//! and only then, capacity is never exceeded, and a dead engine's requests go to the live one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_stream::stream;
use async_trait::async_trait;
use futures_util::StreamExt;
use inference_club_core::openai::{
    ChatCompletionChunk, ChatCompletionRequest, ChatMessage, ChunkDelta, Model, Role,
};
use inference_club_core::provider::{ChunkStream, Provider, ProviderError, RequestContext};
use inference_club_provider::backends::{Echo, OpenAiCompatible};
use inference_club_provider::router::{Route, Router};

/// Every test finishes well within this.
const TEST_BUDGET: Duration = Duration::from_secs(20);

fn ask(model: &str) -> ChatCompletionRequest {
    ChatCompletionRequest::new(model, vec![ChatMessage::user("hello there")])
}

/// The text of a stream and the model its chunks name; panics on an error item.
async fn collect(stream: ChunkStream) -> (String, String) {
    let mut text = String::new();
    let mut model = String::new();
    let mut stream = stream;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        model = chunk.model.clone();
        if let Some(content) = chunk.choices.first().and_then(|c| c.delta.content.clone()) {
            text.push_str(&content);
        }
    }
    (text, model)
}

fn unavailable(message: &str) -> ProviderError {
    ProviderError::Unavailable {
        status: Some(503),
        message: message.into(),
    }
}

fn chunk(model: &str, delta: ChunkDelta) -> ChatCompletionChunk {
    ChatCompletionChunk::new("chatcmpl-test", model, 0).with_delta(delta)
}

fn role_only() -> ChunkDelta {
    ChunkDelta {
        role: Some(Role::Assistant),
        ..ChunkDelta::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Small in-process providers.

/// An echo engine that records the model names it was asked for.
#[derive(Default)]
struct Recording {
    asked: Mutex<Vec<String>>,
}

#[async_trait]
impl Provider for Recording {
    async fn models(&self) -> Result<Vec<Model>, ProviderError> {
        Ok(Vec::new())
    }

    async fn chat(
        &self,
        request: ChatCompletionRequest,
        context: RequestContext,
    ) -> Result<ChunkStream, ProviderError> {
        self.asked.lock().unwrap().push(request.model.clone());
        Echo::new()
            .models([request.model.clone()])
            .chat(request, context)
            .await
    }
}

/// How a [`Scripted`] engine fails.
#[derive(Clone)]
enum Failure {
    /// `chat` itself returns the error.
    OnCall(ProviderError),
    /// The stream sends a role-only chunk, then the error, before any output.
    BeforeOutput(ProviderError),
    /// The stream sends one word of output, then the error.
    AfterOutput(ProviderError),
}

/// An engine that fails as scripted, counting its calls.
struct Scripted {
    failure: Failure,
    calls: AtomicUsize,
}

impl Scripted {
    fn new(failure: Failure) -> Arc<Self> {
        Arc::new(Self {
            failure,
            calls: AtomicUsize::new(0),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Provider for Scripted {
    async fn models(&self) -> Result<Vec<Model>, ProviderError> {
        Ok(Vec::new())
    }

    async fn chat(
        &self,
        request: ChatCompletionRequest,
        _context: RequestContext,
    ) -> Result<ChunkStream, ProviderError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let model = request.model;
        match self.failure.clone() {
            Failure::OnCall(error) => Err(error),
            Failure::BeforeOutput(error) => Ok(Box::pin(stream! {
                yield Ok(chunk(&model, role_only()));
                yield Err(error);
            })),
            Failure::AfterOutput(error) => Ok(Box::pin(stream! {
                yield Ok(chunk(&model, role_only()));
                yield Ok(chunk(&model, ChunkDelta::content("partial")));
                yield Err(error);
            })),
        }
    }
}

/// A router whose first route runs `first` and second route a counting echo, both serving `m`.
/// A fresh router tries its first route first when both are idle (round robin starts there).
fn failing_then_echo(first: Arc<Scripted>) -> (Router, Arc<Recording>) {
    let second = Arc::new(Recording::default());
    let router = Router::builder()
        .route(Route::new("flaky", first).model("m"))
        .route(Route::new("steady", second.clone()).model("m"))
        .build();
    (router, second)
}

// ---------------------------------------------------------------------------------------------
// Names.

#[tokio::test]
async fn unknown_model_is_not_found_never_a_default() {
    let backend = Arc::new(Recording::default());
    let router = Router::builder()
        .route(Route::new("only", backend.clone()).model("qwen3:8b"))
        .build();
    let result = router.chat(ask("llama3"), RequestContext::new("r")).await;
    assert_eq!(
        result.err(),
        Some(ProviderError::ModelNotFound {
            model: "llama3".into()
        })
    );
    assert!(backend.asked.lock().unwrap().is_empty());
}

#[tokio::test]
async fn hf_id_in_any_case_reaches_the_engine_as_its_served_id() {
    let backend = Arc::new(Recording::default());
    let router = Router::builder()
        .route(Route::new("ollama", backend.clone()).model_with_hf("qwen3:8b", "Qwen/Qwen3-8B"))
        .build();
    for name in ["qwen/QWEN3-8b", "Qwen/Qwen3-8B", "QWEN3:8B"] {
        let stream = router
            .chat(ask(name), RequestContext::new("r"))
            .await
            .unwrap();
        let (text, model) = collect(stream).await;
        assert_eq!(text, "echo: hello there");
        // The chunks keep the engine's served id.
        assert_eq!(model, "qwen3:8b");
    }
    assert_eq!(
        *backend.asked.lock().unwrap(),
        ["qwen3:8b", "qwen3:8b", "qwen3:8b"]
    );
}

// ---------------------------------------------------------------------------------------------
// Failover.

#[tokio::test]
async fn retryable_error_from_chat_fails_over() {
    let flaky = Scripted::new(Failure::OnCall(unavailable("engine restarting")));
    let (router, steady) = failing_then_echo(flaky.clone());
    let stream = router
        .chat(ask("m"), RequestContext::new("r"))
        .await
        .unwrap();
    assert_eq!(collect(stream).await.0, "echo: hello there");
    assert_eq!(flaky.calls(), 1);
    assert_eq!(steady.asked.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn retryable_error_in_the_stream_before_output_fails_over() {
    let flaky = Scripted::new(Failure::BeforeOutput(unavailable("reset")));
    let (router, steady) = failing_then_echo(flaky.clone());
    let stream = router
        .chat(ask("m"), RequestContext::new("r"))
        .await
        .unwrap();
    // Nothing of the failed attempt reaches the consumer.
    assert_eq!(
        collect(stream).await,
        ("echo: hello there".into(), "m".into())
    );
    assert_eq!(flaky.calls(), 1);
    assert_eq!(steady.asked.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn rejection_is_returned_without_failover() {
    let rejected = ProviderError::Rejected {
        status: 400,
        message: "messages must not be empty".into(),
        code: None,
    };
    for failure in [
        Failure::OnCall(rejected.clone()),
        Failure::BeforeOutput(rejected.clone()),
    ] {
        let flaky = Scripted::new(failure);
        let (router, steady) = failing_then_echo(flaky.clone());
        let result = router.chat(ask("m"), RequestContext::new("r")).await;
        assert_eq!(result.err(), Some(rejected.clone()));
        assert_eq!(flaky.calls(), 1);
        assert!(steady.asked.lock().unwrap().is_empty());
        assert!(router.load().iter().all(|l| l.in_flight == 0));
    }
}

#[tokio::test]
async fn no_failover_once_output_has_started() {
    let flaky = Scripted::new(Failure::AfterOutput(unavailable("crashed mid-answer")));
    let (router, steady) = failing_then_echo(flaky.clone());
    let stream = router
        .chat(ask("m"), RequestContext::new("r"))
        .await
        .unwrap();
    let items: Vec<_> = stream.collect().await;
    let content: Vec<_> = items
        .iter()
        .filter_map(|item| item.as_ref().ok())
        .filter_map(|c| c.choices.first()?.delta.content.clone())
        .collect();
    assert_eq!(content, ["partial"]);
    assert_eq!(
        items.last().unwrap().as_ref().err(),
        Some(&unavailable("crashed mid-answer"))
    );
    assert_eq!(flaky.calls(), 1);
    assert!(steady.asked.lock().unwrap().is_empty());
}

#[tokio::test]
async fn when_every_engine_fails_the_last_error_is_returned_after_trying_each_once() {
    let a = Scripted::new(Failure::OnCall(unavailable("a down")));
    let b = Scripted::new(Failure::BeforeOutput(unavailable("b down")));
    let router = Router::builder()
        .route(Route::new("a", a.clone()).model("m"))
        .route(Route::new("b", b.clone()).model("m"))
        .build();
    let error = router
        .chat(ask("m"), RequestContext::new("r"))
        .await
        .err()
        .unwrap();
    assert!(error.is_retryable());
    assert_eq!((a.calls(), b.calls()), (1, 1));
    // A failed engine now ranks behind a healthy one of equal load.
    let healthy = Arc::new(Recording::default());
    let router = Router::builder()
        .route(Route::new("a", a.clone()).model("m"))
        .route(Route::new("ok", healthy.clone()).model("m"))
        .build();
    for _ in 0..5 {
        let stream = router
            .chat(ask("m"), RequestContext::new("r"))
            .await
            .unwrap();
        collect(stream).await;
    }
    assert_eq!(
        a.calls(),
        2,
        "the failed engine is tried once, then avoided"
    );
}

// ---------------------------------------------------------------------------------------------
// Capacity.

#[tokio::test]
async fn all_full_is_busy_until_a_stream_is_dropped() {
    let slow = || Arc::new(Echo::new().models(["m"]).pace(Duration::from_millis(5)));
    let router = Router::builder()
        .route(Route::new("a", slow()).model("m").max_concurrent(1))
        .route(Route::new("b", slow()).model("m").max_concurrent(2))
        .build();
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(
            router
                .chat(ask("m"), RequestContext::new("r"))
                .await
                .unwrap(),
        );
    }
    let load: Vec<_> = router.load().iter().map(|l| l.in_flight).collect();
    assert_eq!(load, [1, 2]);
    let busy = router.chat(ask("m"), RequestContext::new("r")).await;
    assert!(
        matches!(busy, Err(ProviderError::Busy { .. })),
        "{:?}",
        busy.err()
    );

    // A stream dropped half-way frees its slot.
    let mut first = open.remove(0);
    first.next().await.unwrap().unwrap();
    drop(first);
    let again = router
        .chat(ask("m"), RequestContext::new("r"))
        .await
        .unwrap();
    assert_eq!(collect(again).await.0, "echo: hello there");
    // A stream read to its end frees its slot too.
    for stream in open {
        collect(stream).await;
    }
    assert!(router.load().iter().all(|l| l.in_flight == 0));
}

/// An echo engine that counts the requests it is running (from `chat` until its stream is
/// dropped) and the most it ever ran at once.
struct Gauged {
    inner: Echo,
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl Gauged {
    fn new(inner: Echo) -> Arc<Self> {
        Arc::new(Self {
            inner,
            running: Arc::default(),
            most: Arc::default(),
        })
    }
}

struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Provider for Gauged {
    async fn models(&self) -> Result<Vec<Model>, ProviderError> {
        Provider::models(&self.inner).await
    }

    async fn chat(
        &self,
        request: ChatCompletionRequest,
        context: RequestContext,
    ) -> Result<ChunkStream, ProviderError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        let running = Running(self.running.clone());
        let mut inner = self.inner.chat(request, context).await?;
        Ok(Box::pin(stream! {
            let _running = running;
            while let Some(item) = inner.next().await {
                yield item;
            }
        }))
    }
}

/// Many clients at once, each reading a pseudo-random number of chunks and then dropping its
/// stream (or abandoning the request before it is placed): the router never runs more than a
/// route's `max_concurrent` at once, and its count returns to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_never_exceeds_capacity_and_returns_to_zero() {
    const CAPS: [u32; 3] = [1, 3, 5];
    let engines: Vec<_> = CAPS
        .iter()
        .map(|_| Gauged::new(Echo::new().models(["m"]).pace(Duration::from_millis(1))))
        .collect();
    let mut builder = Router::builder();
    for (i, (engine, cap)) in engines.iter().zip(CAPS).enumerate() {
        builder = builder.route(
            Route::new(format!("e{i}"), engine.clone())
                .model("m")
                .max_concurrent(cap),
        );
    }
    let router = Arc::new(builder.build());

    // Watch the router's own count while the clients run.
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = tokio::spawn({
        let (router, watching) = (router.clone(), watching.clone());
        async move {
            let mut samples = 0u32;
            while watching.load(Ordering::SeqCst) {
                for (load, cap) in router.load().iter().zip(CAPS) {
                    assert!(load.in_flight <= cap, "{load:?}");
                }
                samples += 1;
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            samples
        }
    });

    let clients = (0..200u64).map(|i| {
        let router = router.clone();
        tokio::spawn(async move {
            // A small deterministic spread of behaviours.
            let pick = i.wrapping_mul(2_654_435_761) % 11;
            loop {
                let request = router.chat(ask("m"), RequestContext::new(format!("r{i}")));
                let stream = if pick == 0 {
                    // Abandoned while being placed or while waiting for the first output.
                    let _ = tokio::time::timeout(Duration::from_micros(300), request).await;
                    return;
                } else {
                    match request.await {
                        Ok(stream) => stream,
                        Err(ProviderError::Busy { .. }) => {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            continue;
                        }
                        Err(other) => panic!("unexpected error: {other}"),
                    }
                };
                // Read `pick - 1` items, then drop the stream (reads to the end when larger).
                let _read: Vec<_> = stream.take((pick - 1) as usize).collect().await;
                return;
            }
        })
    });
    let all = futures_util::future::join_all(clients);
    for joined in tokio::time::timeout(TEST_BUDGET, all).await.unwrap() {
        joined.unwrap();
    }
    watching.store(false, Ordering::SeqCst);
    assert!(watcher.await.unwrap() > 0);

    assert!(
        router.load().iter().all(|l| l.in_flight == 0),
        "{:?}",
        router.load()
    );
    for (engine, cap) in engines.iter().zip(CAPS) {
        assert_eq!(engine.running.load(Ordering::SeqCst), 0);
        let most = engine.most.load(Ordering::SeqCst);
        assert!(most <= cap as usize, "engine ran {most} at once, cap {cap}");
    }
    // The load was real: some route ran several requests at once.
    assert!(engines.iter().any(|e| e.most.load(Ordering::SeqCst) >= 2));
}

// ---------------------------------------------------------------------------------------------
// Two real engines over HTTP.

/// What a fake engine saw.
#[derive(Default)]
struct EngineStats {
    running: AtomicUsize,
    most: AtomicUsize,
    served: AtomicUsize,
}

/// A fake OpenAI-compatible engine on 127.0.0.1: streams a paced answer over SSE and counts
/// the requests it runs at once.
struct FakeEngine {
    base_url: String,
    stats: Arc<EngineStats>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

/// Words the fake engine answers with, one per chunk.
const FAKE_WORDS: [&str; 4] = ["one ", "two ", "three ", "four"];
/// The pause before each word: long enough that requests overlap.
const FAKE_PACE: Duration = Duration::from_millis(15);

impl FakeEngine {
    async fn start() -> Self {
        use axum::body::Body;
        use axum::http::header;
        use axum::response::Response;

        let stats = Arc::new(EngineStats::default());
        let app = axum::Router::new().route(
            "/v1/chat/completions",
            axum::routing::post({
                let stats = stats.clone();
                move |axum::Json(body): axum::Json<serde_json::Value>| {
                    let stats = stats.clone();
                    async move {
                        let model = body["model"].as_str().unwrap_or_default().to_owned();
                        let now = stats.running.fetch_add(1, Ordering::SeqCst) + 1;
                        stats.most.fetch_max(now, Ordering::SeqCst);
                        stats.served.fetch_add(1, Ordering::SeqCst);
                        let events = sse_answer(model, stats.clone());
                        Response::builder()
                            .header(header::CONTENT_TYPE, "text/event-stream")
                            .body(Body::from_stream(events))
                            .unwrap()
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop.await;
                })
                .await
                .unwrap();
        });
        Self {
            base_url: format!("http://{addr}/v1"),
            stats,
            shutdown: Some(shutdown),
            server,
        }
    }

    fn backend(&self) -> Arc<OpenAiCompatible> {
        Arc::new(OpenAiCompatible::builder(&self.base_url).build().unwrap())
    }

    fn served(&self) -> usize {
        self.stats.served.load(Ordering::SeqCst)
    }

    fn most(&self) -> usize {
        self.stats.most.load(Ordering::SeqCst)
    }

    /// Stops the engine: its listener closes (new connections are refused) and its idle
    /// connections are closed.
    async fn kill(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        tokio::time::timeout(Duration::from_secs(5), &mut self.server)
            .await
            .expect("the engine shuts down")
            .unwrap();
    }
}

/// The SSE body of one answer. The engine counts the request as running until it has produced
/// its last token (just before `[DONE]`), or until the client goes away.
fn sse_answer(
    model: String,
    stats: Arc<EngineStats>,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::convert::Infallible>> {
    struct Finished(Arc<EngineStats>);
    impl Drop for Finished {
        fn drop(&mut self) {
            self.0.running.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let event = move |delta: serde_json::Value, finish: Option<&str>| {
        let chunk = serde_json::json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        Ok(bytes::Bytes::from(format!("data: {chunk}\n\n")))
    };
    let finished = Finished(stats);
    stream! {
        let finished = finished;
        yield event(serde_json::json!({"role": "assistant"}), None);
        for word in FAKE_WORDS {
            tokio::time::sleep(FAKE_PACE).await;
            yield event(serde_json::json!({"content": word}), None);
        }
        yield event(serde_json::json!({}), Some("stop"));
        drop(finished);
        yield Ok(bytes::Bytes::from_static(b"data: [DONE]\n\n"));
    }
}

/// Sends one request through the router, waiting and retrying while every engine is full (the
/// router has no queue; this client is the queue). Returns the answer and how often it waited.
async fn chat_until_placed(router: &Router, id: usize) -> (String, usize) {
    let mut waits = 0;
    loop {
        match router
            .chat(ask("qwen3"), RequestContext::new(format!("req-{id}")))
            .await
        {
            Ok(stream) => return (collect(stream).await.0, waits),
            Err(ProviderError::Busy { .. }) => {
                waits += 1;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            Err(other) => panic!("request {id} failed: {other}"),
        }
    }
}

/// Many concurrent requests to two real engines (2 × 8 slots): both engines take a fair share,
/// neither ever runs more than 8 at once, and requests that find both full get `Busy` (this
/// test's client then waits and retries). Then one engine dies: every further request is
/// served by the other, failing over from the dead one where it was tried first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_share_the_load_within_capacity_and_survive_one_dying() {
    const CAPACITY: u32 = 8;
    const REQUESTS: usize = 100;
    let mut alpha = FakeEngine::start().await;
    let beta = FakeEngine::start().await;
    let router = Arc::new(
        Router::builder()
            .route(
                Route::new("alpha", alpha.backend())
                    .model("qwen3")
                    .max_concurrent(CAPACITY),
            )
            .route(
                Route::new("beta", beta.backend())
                    .model("qwen3")
                    .max_concurrent(CAPACITY),
            )
            .build(),
    );
    let expected = FAKE_WORDS.concat();

    let run = |count: usize, first_id: usize| {
        let router = router.clone();
        async move {
            let requests = (first_id..first_id + count).map(|id| {
                let router = router.clone();
                tokio::spawn(async move { chat_until_placed(&router, id).await })
            });
            let answers =
                tokio::time::timeout(TEST_BUDGET, futures_util::future::join_all(requests))
                    .await
                    .expect("all requests finish in time");
            answers.into_iter().map(Result::unwrap).collect::<Vec<_>>()
        }
    };

    // 1. Both engines up.
    let answers = run(REQUESTS, 0).await;
    assert!(answers.iter().all(|(text, _)| *text == expected));
    let waited: usize = answers.iter().map(|(_, waits)| waits).sum();
    assert!(
        waited > 0,
        "100 requests over 16 slots must find them full at times"
    );
    let (a, b) = (alpha.served(), beta.served());
    eprintln!(
        "served: alpha {a}, beta {b}; most at once: alpha {}, beta {}; busy waits {waited}",
        alpha.most(),
        beta.most()
    );
    assert_eq!(a + b, REQUESTS);
    assert!(a >= 30 && b >= 30, "uneven share: alpha {a}, beta {b}");
    for engine in [&alpha, &beta] {
        let most = engine.most();
        assert!(most <= CAPACITY as usize, "an engine ran {most} at once");
        assert!(most >= 2, "requests did not overlap");
    }
    assert!(router.load().iter().all(|l| l.in_flight == 0));

    // 2. Alpha dies; beta serves everything, alpha's turns fail over to beta.
    alpha.kill().await;
    let answers = run(30, REQUESTS).await;
    assert!(answers.iter().all(|(text, _)| *text == expected));
    assert_eq!(alpha.served(), a, "a dead engine serves nothing");
    assert_eq!(beta.served(), b + 30);
    assert!(beta.most() <= CAPACITY as usize);
    assert!(router.load().iter().all(|l| l.in_flight == 0));
}
