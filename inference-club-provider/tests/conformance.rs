//! The conformance suite: one list of scenarios, run against every adapter.
//!
//! Each adapter talks to a fake engine on 127.0.0.1 that speaks that engine's exact wire format
//! (OpenAI SSE for [`OpenAiCompatible`], Ollama NDJSON for [`Ollama`]); [`Echo`] runs in-process.
//! Per wire format, one function ([`openai_plan`], [`ollama_plan`]) says how the fake serves each
//! scenario; [`expect`] asserts the same outcome whichever adapter ran it. The fakes play the
//! part of the Echo engine (same answer, same reasoning, same word counts), so Echo is held to
//! the same expectations where a scenario applies to it. A scenario an adapter cannot run is
//! printed as skipped, with the reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use inference_club_core::openai::{
    ChatCompletion, ChatCompletionAggregator, ChatCompletionChunk, ChatCompletionRequest,
    ChatMessage, FinishReason, FunctionDefinition, Tool, Usage,
};
use inference_club_core::provider::{
    ChunkStream, Provider, ProviderError, RequestContext, TimeoutPhase,
};
use inference_club_provider::backends::{Echo, Ollama, OpenAiCompatible};
use inference_club_provider::{EngineQuirks, Timeouts};
use serde_json::{Value, json};
use support::{FakeEngine, MODEL, Plan, Step, Wire, sends};

/// Short waits, so the timeout scenarios take a fraction of a second.
const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(2),
    first_token: Duration::from_millis(250),
    idle: Duration::from_millis(250),
    whole: Duration::from_millis(250),
};

/// How long the fake engine stays silent in the timeout scenarios: far beyond [`TIMEOUTS`].
const SILENCE: Duration = Duration::from_secs(30);

/// Bound on any one scenario.
const SCENARIO_LIMIT: Duration = Duration::from_secs(10);

/// The required bound from cancelling (or dropping) a stream to the engine seeing its
/// connection close.
const CANCEL_BOUND: Duration = Duration::from_millis(100);

const PROMPT: &str = "hello world";
/// The answer, in the pieces the fakes send it in (what Echo answers to [`PROMPT`]).
const ANSWER: [&str; 3] = ["echo:", " hello", " world"];
/// The reasoning trace, in pieces (what Echo with reasoning thinks about [`PROMPT`]).
const REASONING: [&str; 5] = ["The", " user", " said", " 2", " words."];
/// Token counts the fakes report (Echo counts words: 2 in the prompt, 3 in the answer).
const PROMPT_TOKENS: u64 = 2;
const COMPLETION_TOKENS: u64 = 3;
const ENGINE_ERROR: &str = "engine overloaded: KV cache full";
const STREAM_ERROR: &str = "CUDA error: out of memory";
const BAD_REQUEST: &str = "temperature must be at most 2";
const BAD_REQUEST_TEXT: &str = "Bad Request: unparseable body";
const UNKNOWN_MODEL: &str = "no-such-model";

// ----- the table -----

/// Every scenario, run against every adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// `models()` lists the engine's model.
    ModelList,
    /// The engine receives the request as the wire expects it (model, streaming, usage, token
    /// limit, vendor fields).
    RequestFields,
    /// Text in several chunks, then a finish reason.
    PlainText,
    /// A reasoning trace (vLLM's `delta.reasoning`, Ollama's `message.thinking`), then text.
    Reasoning,
    /// A tool call (fragments, or Ollama's whole call) becomes one call with id, name, arguments.
    ToolCalls,
    /// Token counts end up in the aggregated completion.
    UsageReported,
    /// HTTP 500 with an error body before any output.
    ServerError,
    /// Output, then an error inside the stream.
    ErrorInStream,
    /// HTTP 400 with a JSON error body.
    BadRequestJson,
    /// HTTP 400 with a plain-text body.
    BadRequestText,
    /// HTTP 404: the engine does not serve the model.
    UnknownModel,
    /// HTTP 429.
    RateLimited,
    /// The engine sends its headers later than the first-token timeout.
    SlowHeaders,
    /// Headers and a chunk without output, then silence beyond the first-token timeout.
    SlowFirstToken,
    /// Output, then silence beyond the idle timeout.
    StalledStream,
    /// Output, then a line that is not JSON.
    MalformedLine,
    /// Nothing listens at the engine's address.
    ConnectionRefused,
    /// The consumer drops the stream mid-stream.
    CancelByDrop,
    /// The consumer's cancellation token fires mid-stream while it waits for the next chunk.
    CancelByToken,
}

const SCENARIOS: [Scenario; 19] = [
    Scenario::ModelList,
    Scenario::RequestFields,
    Scenario::PlainText,
    Scenario::Reasoning,
    Scenario::ToolCalls,
    Scenario::UsageReported,
    Scenario::ServerError,
    Scenario::ErrorInStream,
    Scenario::BadRequestJson,
    Scenario::BadRequestText,
    Scenario::UnknownModel,
    Scenario::RateLimited,
    Scenario::SlowHeaders,
    Scenario::SlowFirstToken,
    Scenario::StalledStream,
    Scenario::MalformedLine,
    Scenario::ConnectionRefused,
    Scenario::CancelByDrop,
    Scenario::CancelByToken,
];

/// The adapters under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Adapter {
    OpenAiCompatible,
    Ollama,
    Echo,
}

impl Adapter {
    fn wire(self) -> Option<Wire> {
        match self {
            Self::OpenAiCompatible => Some(Wire::OpenAi),
            Self::Ollama => Some(Wire::Ollama),
            Self::Echo => None,
        }
    }

    /// Why this adapter cannot run `scenario`, if it cannot.
    fn skip_reason(self, scenario: Scenario) -> Option<&'static str> {
        use Scenario::*;
        if self != Self::Echo {
            return None;
        }
        match scenario {
            ModelList | PlainText | Reasoning | UsageReported | UnknownModel => None,
            RequestFields => Some("Echo is in-process: no wire request to inspect"),
            ToolCalls => Some("Echo answers with text only; it never calls tools"),
            ServerError | ErrorInStream | BadRequestJson | BadRequestText | RateLimited
            | MalformedLine => {
                Some("Echo is in-process: there is no engine response or byte stream to fail")
            }
            SlowHeaders | SlowFirstToken | StalledStream => {
                Some("Echo is not a remote engine: it is not behind the timeout guard")
            }
            ConnectionRefused => Some("Echo is in-process: there is nothing to connect to"),
            CancelByDrop | CancelByToken => {
                Some("Echo has no engine connection whose closing could be observed")
            }
        }
    }

    fn provider(self, base_url: &str, reasoning: bool) -> Box<dyn Provider> {
        match self {
            Self::OpenAiCompatible => Box::new(
                OpenAiCompatible::builder(base_url)
                    .timeouts(TIMEOUTS)
                    .build()
                    .unwrap(),
            ),
            Self::Ollama => Box::new(
                Ollama::builder(base_url)
                    .timeouts(TIMEOUTS)
                    .build()
                    .unwrap(),
            ),
            Self::Echo => Box::new(Echo::new().models([MODEL]).with_reasoning(reasoning)),
        }
    }
}

// ----- how each wire serves each scenario -----

fn openai_chunk(delta: Value, finish_reason: Option<&str>) -> String {
    let chunk = json!({
        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_714_558_830,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]
    });
    format!("data: {chunk}\n\n")
}

fn openai_text(pieces: &[&str]) -> Vec<String> {
    let mut out = vec![openai_chunk(
        json!({"role": "assistant", "content": ""}),
        None,
    )];
    out.extend(
        pieces
            .iter()
            .map(|p| openai_chunk(json!({"content": p}), None)),
    );
    out
}

fn openai_finish(reason: &str) -> Vec<String> {
    vec![
        openai_chunk(json!({}), Some(reason)),
        "data: [DONE]\n\n".into(),
    ]
}

fn openai_error_envelope(message: &str, kind: &str, code: Value) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// How an OpenAI-compatible engine (vLLM-style) serves `scenario`.
fn openai_plan(scenario: Scenario, _request: &Value) -> Plan {
    use Scenario::*;
    let wire = Wire::OpenAi;
    match scenario {
        RequestFields | PlainText => Plan::stream(
            wire,
            sends([openai_text(&ANSWER), openai_finish("stop")].concat()),
        ),
        Reasoning => {
            let mut events = vec![openai_chunk(json!({"role": "assistant"}), None)];
            events.extend(
                REASONING
                    .iter()
                    .map(|p| openai_chunk(json!({"content": null, "reasoning": p}), None)),
            );
            events.extend(
                ANSWER
                    .iter()
                    .map(|p| openai_chunk(json!({"content": p}), None)),
            );
            events.extend(openai_finish("stop"));
            Plan::stream(wire, sends(events))
        }
        ToolCalls => {
            let fragment = |f: Value| openai_chunk(json!({"tool_calls": [f]}), None);
            let events = vec![
                openai_chunk(json!({"role": "assistant", "content": null}), None),
                fragment(json!({"index": 0, "id": "call_7", "type": "function",
                    "function": {"name": "get_weather", "arguments": ""}})),
                fragment(json!({"index": 0, "function": {"arguments": "{\"city\": "}})),
                fragment(json!({"index": 0, "function": {"name": "", "arguments": "\"Paris\"}"}})),
            ];
            Plan::stream(wire, sends([events, openai_finish("tool_calls")].concat()))
        }
        UsageReported => {
            let usage = json!({
                "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_714_558_830,
                "model": MODEL, "choices": [],
                "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
                          "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}
            });
            let mut events = openai_text(&ANSWER);
            events.push(openai_chunk(json!({}), Some("stop")));
            events.push(format!("data: {usage}\n\n"));
            events.push("data: [DONE]\n\n".into());
            Plan::stream(wire, sends(events))
        }
        ServerError => Plan::json_error(
            500,
            openai_error_envelope(ENGINE_ERROR, "server_error", Value::Null),
        ),
        ErrorInStream => {
            let mut events = openai_text(&ANSWER[..2]);
            events.push(format!(
                "data: {}\n\n",
                openai_error_envelope(STREAM_ERROR, "server_error", json!(500))
            ));
            // Whatever follows an error is not read.
            events.push(openai_chunk(json!({"content": " world"}), None));
            Plan::stream(wire, sends(events))
        }
        BadRequestJson => Plan::json_error(
            400,
            openai_error_envelope(BAD_REQUEST, "invalid_request_error", json!("invalid_value")),
        ),
        BadRequestText => Plan::whole(400, "text/plain", BAD_REQUEST_TEXT),
        UnknownModel => Plan::json_error(500, json!({"error": "the fake serves the known model"})),
        RateLimited => {
            let mut plan = Plan::json_error(
                429,
                openai_error_envelope("rate limit reached", "rate_limit_error", Value::Null),
            );
            plan.headers.push(("retry-after", "1"));
            plan
        }
        SlowHeaders => {
            let mut plan = Plan::stream(wire, sends(openai_text(&ANSWER)));
            plan.headers_after = SILENCE;
            plan
        }
        SlowFirstToken => {
            let mut steps = sends([openai_chunk(
                json!({"role": "assistant", "content": ""}),
                None,
            )]);
            steps.push(Step::Sleep(SILENCE));
            steps.extend(sends(openai_text(&ANSWER)));
            Plan::stream(wire, steps)
        }
        StalledStream | CancelByDrop | CancelByToken => {
            let mut steps = sends(openai_text(&ANSWER[..2]));
            steps.push(Step::Hang);
            Plan::stream(wire, steps)
        }
        MalformedLine => {
            let mut events = openai_text(&ANSWER[..2]);
            events.push("data: {\"choices\": [oops\n\n".into());
            events.extend(openai_finish("stop"));
            Plan::stream(wire, sends(events))
        }
        ModelList | ConnectionRefused => {
            Plan::json_error(500, json!({"error": "not a chat scenario"}))
        }
    }
}

fn ollama_line(message: Value) -> String {
    let line = json!({
        "model": MODEL, "created_at": "2024-05-01T10:20:30.5Z", "message": message, "done": false
    });
    format!("{line}\n")
}

fn ollama_text(pieces: &[&str]) -> Vec<String> {
    pieces
        .iter()
        .map(|p| ollama_line(json!({"role": "assistant", "content": p})))
        .collect()
}

fn ollama_done(reason: &str) -> String {
    let line = json!({
        "model": MODEL, "created_at": "2024-05-01T10:20:31Z",
        "message": {"role": "assistant", "content": ""},
        "done": true, "done_reason": reason,
        "total_duration": 5_000_000, "load_duration": 1_000_000,
        "prompt_eval_count": PROMPT_TOKENS, "prompt_eval_duration": 1_000_000,
        "eval_count": COMPLETION_TOKENS, "eval_duration": 3_000_000
    });
    // Ollama ends its lines with `\n`; a CRLF here checks that it is tolerated too.
    format!("{line}\r\n")
}

/// How Ollama's native API serves `scenario`.
fn ollama_plan(scenario: Scenario, _request: &Value) -> Plan {
    use Scenario::*;
    let wire = Wire::Ollama;
    match scenario {
        RequestFields | PlainText | UsageReported => {
            let mut lines = ollama_text(&ANSWER);
            lines.push(ollama_done("stop"));
            // One line split across two reads, in the middle of a multi-byte character.
            let split = ollama_line(json!({"role": "assistant", "content": ""}));
            let mut steps = sends(lines);
            let bytes = split.into_bytes();
            steps.insert(0, Step::Send(bytes[..10].to_vec().into()));
            steps.insert(1, Step::Send(bytes[10..].to_vec().into()));
            Plan::stream(wire, steps)
        }
        Reasoning => {
            let mut lines: Vec<String> = REASONING
                .iter()
                .map(|p| ollama_line(json!({"role": "assistant", "content": "", "thinking": p})))
                .collect();
            lines.extend(ollama_text(&ANSWER));
            lines.push(ollama_done("stop"));
            Plan::stream(wire, sends(lines))
        }
        ToolCalls => {
            let lines = vec![
                ollama_line(json!({"role": "assistant", "content": "", "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
                ]})),
                ollama_done("stop"),
            ];
            Plan::stream(wire, sends(lines))
        }
        ServerError => Plan::json_error(500, json!({"error": ENGINE_ERROR})),
        ErrorInStream => {
            let mut lines = ollama_text(&ANSWER[..2]);
            lines.push(format!("{}\n", json!({"error": STREAM_ERROR})));
            lines.push(ollama_done("stop"));
            Plan::stream(wire, sends(lines))
        }
        BadRequestJson => Plan::json_error(400, json!({"error": BAD_REQUEST})),
        BadRequestText => Plan::whole(400, "text/plain", BAD_REQUEST_TEXT),
        UnknownModel => Plan::json_error(500, json!({"error": "the fake serves the known model"})),
        RateLimited => {
            let mut plan = Plan::json_error(429, json!({"error": "too many requests"}));
            plan.headers.push(("retry-after", "1"));
            plan
        }
        SlowHeaders => {
            let mut plan = Plan::stream(wire, sends(ollama_text(&ANSWER)));
            plan.headers_after = SILENCE;
            plan
        }
        SlowFirstToken => {
            let mut steps = sends([ollama_line(json!({"role": "assistant", "content": ""}))]);
            steps.push(Step::Sleep(SILENCE));
            steps.extend(sends(ollama_text(&ANSWER)));
            Plan::stream(wire, steps)
        }
        StalledStream | CancelByDrop | CancelByToken => {
            let mut steps = sends(ollama_text(&ANSWER[..2]));
            steps.push(Step::Hang);
            Plan::stream(wire, steps)
        }
        MalformedLine => {
            let mut lines = ollama_text(&ANSWER[..2]);
            lines.push("{\"message\": oops\n".into());
            lines.push(ollama_done("stop"));
            Plan::stream(wire, sends(lines))
        }
        ModelList | ConnectionRefused => {
            Plan::json_error(500, json!({"error": "not a chat scenario"}))
        }
    }
}

fn plan(wire: Wire, scenario: Scenario, request: &Value) -> Plan {
    match wire {
        Wire::OpenAi => openai_plan(scenario, request),
        Wire::Ollama => ollama_plan(scenario, request),
    }
}

// ----- running a scenario -----

/// The consumer's request: no streaming flags of its own (the adapters stream regardless), a
/// token limit under its current name, a vendor field, a tool.
fn request(model: &str) -> ChatCompletionRequest {
    let mut request = ChatCompletionRequest::new(model, vec![ChatMessage::user(PROMPT)]);
    request.max_completion_tokens = Some(64);
    request.temperature = Some(0.5);
    request.extra.insert("top_k".into(), json!(20));
    request.tools = Some(vec![Tool::function(FunctionDefinition {
        name: "get_weather".into(),
        description: Some("Current weather in a city".into()),
        parameters: Some(json!({
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"]
        })),
        strict: None,
    })]);
    request
}

/// What came out of one run of a chat scenario.
struct Run {
    /// What `chat()` returned, without the stream.
    started: Result<(), ProviderError>,
    /// Every item the stream yielded.
    items: Vec<Result<ChatCompletionChunk, ProviderError>>,
    /// When the stream's first error arrived, counted from the `chat()` call.
    error_after: Option<Duration>,
}

impl Run {
    fn error(&self) -> Option<&ProviderError> {
        match &self.started {
            Err(error) => Some(error),
            Ok(()) => self.items.iter().find_map(|i| i.as_ref().err()),
        }
    }

    fn chunks(&self) -> Vec<&ChatCompletionChunk> {
        self.items.iter().filter_map(|i| i.as_ref().ok()).collect()
    }

    fn completion(&self) -> ChatCompletion {
        let mut agg = ChatCompletionAggregator::new();
        for chunk in self.chunks() {
            agg.push(chunk);
        }
        agg.finish()
    }

    /// The stream ended with exactly one error, after every chunk.
    fn assert_ends_with_one_error(&self) {
        assert!(self.started.is_ok(), "chat() failed: {:?}", self.started);
        let errors = self.items.iter().filter(|i| i.is_err()).count();
        assert_eq!(errors, 1, "{:?}", self.items);
        assert!(
            self.items.last().is_some_and(Result::is_err),
            "{:?}",
            self.items
        );
    }
}

/// Calls `chat()` and drains the stream (bounded in time). A stream that yields an error must
/// end right after it.
async fn chat_run(provider: &dyn Provider, request: ChatCompletionRequest, id: &str) -> Run {
    let started_at = Instant::now();
    let mut stream = match provider.chat(request, RequestContext::new(id)).await {
        Ok(stream) => stream,
        Err(error) => {
            return Run {
                started: Err(error),
                items: Vec::new(),
                error_after: Some(started_at.elapsed()),
            };
        }
    };
    let mut items = Vec::new();
    let mut error_after = None;
    while let Some(item) = stream.next().await {
        let failed = item.is_err();
        items.push(item);
        if failed {
            error_after = Some(started_at.elapsed());
            let after = tokio::time::timeout(Duration::from_secs(1), stream.next()).await;
            assert!(
                matches!(after, Ok(None)),
                "the stream went on after an error: {after:?}"
            );
            break;
        }
    }
    Run {
        started: Ok(()),
        items,
        error_after,
    }
}

/// Reads everything the engine sent before it went silent (`echo: hello`), so the engine is
/// mid-stream and the next read waits.
async fn read_until_silence(stream: &mut ChunkStream) {
    let mut text = String::new();
    while text != ANSWER[..2].concat() {
        match stream.next().await {
            Some(Ok(chunk)) => {
                if let Some(content) = chunk
                    .choices
                    .first()
                    .and_then(|c| c.delta.content.as_deref())
                {
                    text.push_str(content);
                }
            }
            other => panic!("expected output, got {other:?}"),
        }
    }
}

/// Cancels mid-stream (by dropping the stream, or by the token while the consumer waits for the
/// next chunk, keeping the stream) and returns how long the engine took to see its connection
/// close.
async fn cancel_latency(
    provider: &dyn Provider,
    engine: &mut FakeEngine,
    by_drop: bool,
) -> Duration {
    let context = RequestContext::new("req-cancel");
    let token = context.cancel.clone();
    let mut stream = provider.chat(request(MODEL), context).await.unwrap();
    read_until_silence(&mut stream).await;
    let mut held = None;
    let cancelled_at = if by_drop {
        let at = Instant::now();
        drop(stream);
        at
    } else {
        let (next, at) = tokio::join!(stream.next(), async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            let at = Instant::now();
            token.cancel();
            at
        });
        assert!(
            matches!(next, Some(Err(ProviderError::Cancelled))),
            "expected Cancelled, got {next:?}"
        );
        // The consumer still holds the stream: the engine connection must be closed anyway.
        held = Some(stream);
        at
    };
    let closed_at = engine
        .closed_early(Duration::from_secs(2))
        .await
        .expect("the engine never saw its connection close");
    drop(held);
    closed_at.saturating_duration_since(cancelled_at)
}

// ----- what every adapter must give -----

fn answer() -> String {
    ANSWER.concat()
}

/// Asserts the outcome of a chat scenario: the same for every adapter.
fn expect(scenario: Scenario, run: &Run) {
    use Scenario::*;
    let error = run.error();
    match scenario {
        PlainText | RequestFields => {
            assert!(run.items.iter().all(Result::is_ok), "{:?}", run.items);
            let chunks = run.chunks();
            let first = chunks.first().expect("no chunks");
            assert!(!first.id.is_empty(), "chunks carry an id");
            assert!(
                chunks.iter().all(|c| c.id == first.id),
                "one id for every chunk"
            );
            assert!(chunks.iter().all(|c| c.object == "chat.completion.chunk"));
            assert_eq!(
                first.choices.first().and_then(|c| c.delta.role),
                Some(inference_club_core::openai::Role::Assistant),
                "the first chunk names the role"
            );
            let done = run.completion();
            assert_eq!(done.text(), Some(answer()));
            assert_eq!(done.choices[0].message.reasoning, None);
            assert_eq!(done.choices[0].finish_reason, Some(FinishReason::Stop));
        }
        Reasoning => {
            assert!(run.items.iter().all(Result::is_ok), "{:?}", run.items);
            let done = run.completion();
            assert_eq!(
                done.choices[0].message.reasoning.as_deref(),
                Some(REASONING.concat().as_str())
            );
            assert_eq!(done.text(), Some(answer()));
            assert_eq!(done.choices[0].finish_reason, Some(FinishReason::Stop));
        }
        ToolCalls => {
            assert!(run.items.iter().all(Result::is_ok), "{:?}", run.items);
            let done = run.completion();
            let message = &done.choices[0].message;
            assert!(
                message.content.as_deref().unwrap_or("").is_empty(),
                "{message:?}"
            );
            let calls = message.tool_calls.as_ref().expect("no tool calls");
            assert_eq!(calls.len(), 1, "{calls:?}");
            assert!(!calls[0].id.is_empty(), "a tool call has an id");
            assert_eq!(calls[0].kind, "function");
            assert_eq!(calls[0].function.name, "get_weather");
            let arguments: Value = serde_json::from_str(&calls[0].function.arguments)
                .expect("arguments are a JSON string");
            assert_eq!(arguments, json!({"city": "Paris"}));
            assert_eq!(done.choices[0].finish_reason, Some(FinishReason::ToolCalls));
        }
        UsageReported => {
            assert!(run.items.iter().all(Result::is_ok), "{:?}", run.items);
            let done = run.completion();
            assert_eq!(done.text(), Some(answer()));
            assert_eq!(
                done.usage,
                Some(Usage::new(PROMPT_TOKENS, COMPLETION_TOKENS))
            );
        }
        ServerError => {
            assert!(run.started.is_err(), "an error status fails chat() itself");
            assert!(
                matches!(error, Some(ProviderError::Unavailable { status: Some(500), message })
                    if message.contains(ENGINE_ERROR)),
                "{error:?}"
            );
            assert!(error.unwrap().is_retryable());
        }
        ErrorInStream => {
            run.assert_ends_with_one_error();
            assert_eq!(run.completion().text().as_deref(), Some("echo: hello"));
            assert!(
                matches!(error, Some(ProviderError::Unavailable { message, .. })
                    if message.contains(STREAM_ERROR)),
                "{error:?}"
            );
        }
        BadRequestJson => {
            assert!(run.started.is_err(), "an error status fails chat() itself");
            assert!(
                matches!(error, Some(ProviderError::Rejected { status: 400, message, .. })
                    if message == BAD_REQUEST),
                "{error:?}"
            );
            assert!(!error.unwrap().is_retryable());
            assert_eq!(error.unwrap().status(), Some(400));
        }
        BadRequestText => {
            assert!(
                matches!(error, Some(ProviderError::Rejected { status: 400, message, .. })
                    if message == BAD_REQUEST_TEXT),
                "{error:?}"
            );
            assert!(!error.unwrap().is_retryable());
        }
        UnknownModel => {
            assert!(run.started.is_err(), "an unknown model fails chat() itself");
            assert_eq!(
                error,
                Some(&ProviderError::ModelNotFound {
                    model: UNKNOWN_MODEL.into()
                })
            );
        }
        RateLimited => {
            assert!(
                matches!(
                    error,
                    Some(ProviderError::Unavailable {
                        status: Some(429),
                        ..
                    })
                ),
                "{error:?}"
            );
            assert!(error.unwrap().is_retryable());
        }
        SlowHeaders => {
            assert!(
                matches!(
                    run.started,
                    Err(ProviderError::Timeout {
                        phase: TimeoutPhase::FirstToken,
                        ..
                    })
                ),
                "{:?}",
                run.started
            );
            assert_timely(run, TIMEOUTS.first_token);
        }
        SlowFirstToken => {
            run.assert_ends_with_one_error();
            assert!(
                run.chunks().iter().all(|c| !c.has_output()),
                "a chunk without output is not the first token"
            );
            assert!(
                matches!(
                    error,
                    Some(ProviderError::Timeout {
                        phase: TimeoutPhase::FirstToken,
                        ..
                    })
                ),
                "{error:?}"
            );
            assert!(
                error.unwrap().is_retryable(),
                "no output was sent: retryable"
            );
            assert_timely(run, TIMEOUTS.first_token);
        }
        StalledStream => {
            run.assert_ends_with_one_error();
            assert_eq!(run.completion().text().as_deref(), Some("echo: hello"));
            assert!(
                matches!(
                    error,
                    Some(ProviderError::Timeout {
                        phase: TimeoutPhase::Idle,
                        ..
                    })
                ),
                "{error:?}"
            );
            assert_timely(run, TIMEOUTS.idle);
        }
        MalformedLine => {
            run.assert_ends_with_one_error();
            assert_eq!(run.completion().text().as_deref(), Some("echo: hello"));
            assert!(
                matches!(error, Some(ProviderError::Protocol { .. })),
                "{error:?}"
            );
        }
        ConnectionRefused => {
            assert!(
                matches!(
                    run.started,
                    Err(ProviderError::Unavailable { status: None, .. })
                ),
                "{:?}",
                run.started
            );
            assert!(error.unwrap().is_retryable());
        }
        ModelList | CancelByDrop | CancelByToken => unreachable!("not a plain chat run"),
    }
}

/// The error came once the wait ran out, and not much later.
fn assert_timely(run: &Run, wait: Duration) {
    let after = run.error_after.expect("no error");
    assert!(
        after >= wait && after < wait + Duration::from_secs(1),
        "timed out after {after:?}, the wait was {wait:?}"
    );
}

/// Asserts what the engine received for the consumer's [`request`].
fn check_request(wire: Wire, received: &[Value]) {
    assert_eq!(
        received.len(),
        1,
        "one request reaches the engine: {received:?}"
    );
    let body = &received[0];
    assert_eq!(
        body["model"],
        json!(MODEL),
        "the engine gets the id that was sent"
    );
    assert_eq!(body["stream"], json!(true), "the adapter always streams");
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": PROMPT}])
    );
    assert_eq!(body["tools"][0]["type"], json!("function"));
    assert_eq!(body["tools"][0]["function"]["name"], json!("get_weather"));
    match wire {
        Wire::OpenAi => {
            assert_eq!(body["stream_options"]["include_usage"], json!(true));
            assert_eq!(body["max_completion_tokens"], json!(64));
            // The default quirks copy the limit for engines that ignore the new name.
            assert_eq!(body["max_tokens"], json!(64));
            assert_eq!(body["temperature"], json!(0.5));
            assert_eq!(body["top_k"], json!(20), "vendor fields pass through");
        }
        Wire::Ollama => {
            assert_eq!(
                body["options"],
                json!({"temperature": 0.5, "num_predict": 64, "top_k": 20}),
                "sampling parameters and vendor fields go into options"
            );
            for moved in [
                "top_k",
                "temperature",
                "max_completion_tokens",
                "max_tokens",
            ] {
                assert!(
                    body.get(moved).is_none(),
                    "{moved} is not top-level: {body}"
                );
            }
        }
    }
}

/// Runs `scenario` against `adapter` and asserts the outcome; returns a note to print.
async fn run_scenario(adapter: Adapter, scenario: Scenario) -> String {
    use Scenario::*;
    let mut engine = match adapter.wire() {
        Some(wire) => Some(FakeEngine::start(wire, move |body| plan(wire, scenario, body)).await),
        None => None,
    };
    let base_url = match (&engine, scenario) {
        (Some(_), ConnectionRefused) => {
            let origin = support::refused_origin().await;
            match adapter.wire() {
                Some(Wire::OpenAi) => format!("{origin}/v1"),
                _ => origin,
            }
        }
        (Some(engine), _) => engine.base_url(),
        (None, _) => String::new(),
    };
    let provider = adapter.provider(&base_url, scenario == Reasoning);
    let id = format!("req-{scenario:?}");
    match scenario {
        ModelList => {
            let models = provider.models().await.unwrap();
            let ids: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
            assert_eq!(ids, [MODEL]);
            assert!(
                models
                    .iter()
                    .all(|m| m.object == "model" && !m.owned_by.is_empty())
            );
            if engine.is_some() {
                assert_eq!(models[0].created, 1_714_558_830, "created is the engine's");
            }
            String::new()
        }
        CancelByDrop | CancelByToken => {
            let engine = engine.as_mut().unwrap();
            let latency = cancel_latency(&*provider, engine, scenario == CancelByDrop).await;
            assert!(
                latency < CANCEL_BOUND,
                "the engine saw its connection close {latency:?} after the cancel"
            );
            format!(" (engine saw the close after {latency:?})")
        }
        _ => {
            let model = if scenario == UnknownModel {
                UNKNOWN_MODEL
            } else {
                MODEL
            };
            let run = chat_run(&*provider, request(model), &id).await;
            expect(scenario, &run);
            if let (Some(engine), Some(wire)) = (&mut engine, adapter.wire()) {
                if scenario == RequestFields {
                    check_request(wire, &engine.requests());
                    if wire == Wire::Ollama {
                        assert_eq!(run.chunks()[0].id, format!("chatcmpl-ollama-{id}"));
                    }
                }
                if matches!(scenario, SlowFirstToken | StalledStream) {
                    assert!(
                        engine.closed_early(Duration::from_secs(1)).await.is_some(),
                        "a timed-out stream closes the engine connection"
                    );
                }
            }
            String::new()
        }
    }
}

/// Runs every scenario against `adapter`; prints each result or skip, then fails with every
/// failure at once.
async fn conform(adapter: Adapter) {
    let mut failures = Vec::new();
    for scenario in SCENARIOS {
        if let Some(reason) = adapter.skip_reason(scenario) {
            eprintln!("SKIPPED {adapter:?} × {scenario:?}: {reason}");
            continue;
        }
        let run = tokio::spawn(tokio::time::timeout(
            SCENARIO_LIMIT,
            run_scenario(adapter, scenario),
        ));
        match run.await {
            Ok(Ok(note)) => eprintln!("ok      {adapter:?} × {scenario:?}{note}"),
            Ok(Err(_)) => {
                failures.push(format!("{scenario:?}: not done within {SCENARIO_LIMIT:?}"))
            }
            Err(failure) => {
                let panic = failure.into_panic();
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                eprintln!("FAILED  {adapter:?} × {scenario:?}: {message}");
                failures.push(format!("{scenario:?}: {message}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{adapter:?} fails {} scenario(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_compatible_conforms() {
    conform(Adapter::OpenAiCompatible).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_conforms() {
    conform(Adapter::Ollama).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_conforms() {
    conform(Adapter::Echo).await;
}

/// Required: cancelling a stream — dropping it, or firing the request's cancellation token while
/// the consumer waits for the next chunk — closes the engine connection within 100 ms, for
/// both wire formats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_closes_the_engine_connection_within_100ms() {
    for adapter in [Adapter::OpenAiCompatible, Adapter::Ollama] {
        for by_drop in [true, false] {
            let wire = adapter.wire().unwrap();
            let mut engine =
                FakeEngine::start(wire, move |body| plan(wire, Scenario::CancelByDrop, body)).await;
            let provider = adapter.provider(&engine.base_url(), false);
            let latency = tokio::time::timeout(
                SCENARIO_LIMIT,
                cancel_latency(&*provider, &mut engine, by_drop),
            )
            .await
            .expect("cancel scenario not done in time");
            let how = if by_drop { "drop" } else { "cancel token" };
            eprintln!("{adapter:?} {how}: engine saw the connection close after {latency:?}");
            assert!(
                latency < CANCEL_BOUND,
                "{adapter:?} {how}: engine saw the close after {latency:?}"
            );
        }
    }
}

/// The token limit is copied to `max_tokens` only for engines whose quirks say they ignore
/// `max_completion_tokens`, and usage is asked for only where the engine supports it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_quirks_shape_the_engine_request() {
    for (quirks, max_tokens, include_usage) in [
        (EngineQuirks::VLLM, None, Some(true)),
        (EngineQuirks::LLAMACPP, Some(64), Some(true)),
        (EngineQuirks::TGI, Some(64), None),
    ] {
        let engine = FakeEngine::start(Wire::OpenAi, |body| {
            plan(Wire::OpenAi, Scenario::PlainText, body)
        })
        .await;
        let provider = OpenAiCompatible::builder(engine.base_url())
            .quirks(quirks)
            .timeouts(TIMEOUTS)
            .build()
            .unwrap();
        let run = chat_run(&provider, request(MODEL), "req-quirks").await;
        expect(Scenario::PlainText, &run);
        let body = &engine.requests()[0];
        assert_eq!(body["max_tokens"].as_u64(), max_tokens, "{quirks:?}");
        assert_eq!(
            body["stream_options"]["include_usage"].as_bool(),
            include_usage,
            "{quirks:?}"
        );
        assert_eq!(body["max_completion_tokens"], json!(64));
    }
}

/// A chat whose consumer takes the answer whole asks an OpenAI-compatible engine for it whole
/// (no `stream`, no `stream_options`), and the answer comes as one chunk that aggregates back
/// to it. An engine that streams anyway is read as a stream; one that answers anything else is
/// a protocol error; one that does not answer within the whole-answer timeout times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_chats_ask_the_engine_for_a_whole_answer() {
    let answer = json!({
        "id": "chatcmpl-w", "object": "chat.completion", "created": 9, "model": MODEL,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}
            }]},
            "finish_reason": "tool_calls"
        }],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    });
    let whole = |request_id: &str| {
        let mut context = RequestContext::new(request_id);
        context.whole = true;
        context
    };
    let collect = |stream: ChunkStream| async move {
        stream
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<ChatCompletionChunk>, ProviderError>>()
    };

    // A whole answer: one chunk, the same answer once aggregated.
    let body = answer.to_string();
    let engine = FakeEngine::start(Wire::OpenAi, move |_| {
        Plan::whole(200, "application/json", body.clone())
    })
    .await;
    let provider = OpenAiCompatible::builder(engine.base_url())
        .quirks(EngineQuirks::LLAMACPP)
        .timeouts(TIMEOUTS)
        .build()
        .unwrap();
    let stream = provider.chat(request(MODEL), whole("w1")).await.unwrap();
    let chunks = collect(stream).await.unwrap();
    assert_eq!(chunks.len(), 1, "{chunks:?}");
    let mut aggregate = ChatCompletionAggregator::new();
    aggregate.push(&chunks[0]);
    let expected: ChatCompletion = serde_json::from_value(answer.clone()).unwrap();
    assert_eq!(aggregate.finish(), expected);
    let sent = &engine.requests()[0];
    assert_eq!(sent["stream"], json!(false));
    assert!(sent.get("stream_options").is_none(), "{sent}");
    assert_eq!(sent["max_tokens"], json!(64), "the quirk still applies");

    // An engine that streams anyway.
    let engine = FakeEngine::start(Wire::OpenAi, |body| {
        plan(Wire::OpenAi, Scenario::PlainText, body)
    })
    .await;
    let provider = OpenAiCompatible::builder(engine.base_url())
        .timeouts(TIMEOUTS)
        .build()
        .unwrap();
    let stream = provider.chat(request(MODEL), whole("w2")).await.unwrap();
    let chunks = collect(stream).await.unwrap();
    let mut aggregate = ChatCompletionAggregator::new();
    for chunk in &chunks {
        aggregate.push(chunk);
    }
    assert!(chunks.len() > 1);
    assert!(aggregate.finish().text().is_some_and(|t| !t.is_empty()));

    // An HTML page is not an answer: a protocol error, which may be tried elsewhere.
    let engine = FakeEngine::start(Wire::OpenAi, |_| {
        Plan::whole(
            200,
            "text/html",
            "<html><body>502 Bad Gateway</body></html>",
        )
    })
    .await;
    let provider = OpenAiCompatible::builder(engine.base_url())
        .timeouts(TIMEOUTS)
        .build()
        .unwrap();
    let error = match provider.chat(request(MODEL), whole("w3")).await {
        Ok(stream) => collect(stream).await.unwrap_err(),
        Err(error) => error,
    };
    assert!(matches!(error, ProviderError::Protocol { .. }), "{error:?}");
    assert!(error.is_retryable());

    // No answer within the whole-answer timeout.
    let engine = FakeEngine::start(Wire::OpenAi, |_| Plan {
        headers_after: Duration::from_secs(5),
        ..Plan::whole(200, "application/json", "{}")
    })
    .await;
    let provider = OpenAiCompatible::builder(engine.base_url())
        .timeouts(TIMEOUTS)
        .build()
        .unwrap();
    let asked = Instant::now();
    let error = match provider.chat(request(MODEL), whole("w4")).await {
        Ok(stream) => collect(stream).await.unwrap_err(),
        Err(error) => error,
    };
    assert!(error.is_timeout(), "{error:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
}
