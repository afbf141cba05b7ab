#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Recorded engine streams, read the way a node reads them: split into server-sent events,
//! parse every `data:` payload, split `<think>` blocks off (always: it must be harmless on
//! streams without them), fold the chunks into one completion, and check that what we would
//! write back is exact OpenAI format.
//!
//! The fixtures under `tests/fixtures/streams/` are raw SSE text as each engine sends it; the
//! expected completions below are written out by hand from reading those files.

use inference_club_core::openai::{
    ApiError, ChatCompletion, ChatCompletionAggregator, ChatCompletionChunk, ChunkChoice,
    ChunkDelta, FinishReason, Role, StreamPayload, ThinkSplitter, Usage,
};
use serde_json::{Value, json};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("fixtures/streams/", $name))
    };
}

// ---------------------------------------------------------------------------------------------
// SSE splitting (test helper; the production reader lives elsewhere)
// ---------------------------------------------------------------------------------------------

/// One dispatched server-sent event.
#[derive(Debug, Clone, PartialEq)]
struct SseEvent {
    /// The `event:` name, if the event had one.
    event: Option<String>,
    /// The `data:` lines of the event, joined with `\n`.
    data: String,
}

/// Splits an SSE stream into events, following the HTML living standard's parsing rules: lines end
/// in CRLF, LF or CR; a line starting with `:` is a comment; `field: value` loses one space after
/// the colon; several `data:` lines of one event are joined with `\n`; a blank line dispatches the
/// event, unless it had no `data:` line; `id:`, `retry:` and unknown fields are ignored here; an
/// event not terminated by a blank line at the end of the stream is discarded.
fn sse_events(raw: &str) -> Vec<SseEvent> {
    let raw = raw.strip_prefix('\u{feff}').unwrap_or(raw);
    let normalized = raw.replace("\r\n", "\n").replace('\r', "\n");
    let mut events = Vec::new();
    let mut data: Option<String> = None;
    let mut event: Option<String> = None;
    for line in normalized.split('\n') {
        if line.is_empty() {
            if let Some(data) = data.take() {
                events.push(SseEvent {
                    event: event.take(),
                    data,
                });
            }
            event = None;
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => match &mut data {
                Some(buffer) => {
                    buffer.push('\n');
                    buffer.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            "event" => event = Some(value.to_owned()),
            _ => {}
        }
    }
    events
}

#[test]
fn sse_helper_follows_the_event_stream_rules() {
    let raw = ": hello\r\n\r\nevent: error\r\ndata:{\"a\":\r\n: inside\r\ndata:  1}\r\nid: 7\r\n\r\nretry: 10\n\ndata: x\rdata: y\r\rdata: [DONE]\n\ndata: cut off";
    assert_eq!(
        sse_events(raw),
        vec![
            SseEvent {
                event: Some("error".into()),
                data: "{\"a\":\n 1}".into()
            },
            SseEvent {
                event: None,
                data: "x\ny".into()
            },
            SseEvent {
                event: None,
                data: "[DONE]".into()
            },
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Running a fixture
// ---------------------------------------------------------------------------------------------

/// What a recorded stream turns into.
struct Run {
    /// Every chunk after normalization (parse + `<think>` split), in order, plus one chunk with
    /// whatever the splitter still held at the end.
    chunks: Vec<ChatCompletionChunk>,
    /// Errors sent inside the stream.
    errors: Vec<ApiError>,
    /// Whether `data: [DONE]` arrived.
    done: bool,
    /// The folded completion.
    completion: ChatCompletion,
}

fn run(raw: &str) -> Run {
    run_with(raw, ThinkSplitter::new())
}

fn run_with(raw: &str, mut splitter: ThinkSplitter) -> Run {
    let mut aggregator = ChatCompletionAggregator::new();
    let mut chunks: Vec<ChatCompletionChunk> = Vec::new();
    let mut errors = Vec::new();
    let mut done = false;
    for event in sse_events(raw) {
        assert!(!done, "an event after [DONE]: {:?}", event.data);
        match StreamPayload::parse(&event.data)
            .unwrap_or_else(|e| panic!("payload does not parse ({e}): {}", event.data))
        {
            StreamPayload::Chunk(mut chunk) => {
                splitter.apply(&mut chunk);
                aggregator.push(&chunk);
                chunks.push(*chunk);
            }
            StreamPayload::Error(error) => errors.push(error),
            StreamPayload::Done => done = true,
        }
    }
    let (id, model, created) = chunks
        .first()
        .map(|c| (c.id.clone(), c.model.clone(), c.created))
        .unwrap_or_default();
    for (index, reasoning, content) in splitter.flush() {
        let mut chunk = ChatCompletionChunk::new(id.clone(), model.clone(), created);
        chunk.choices.push(ChunkChoice {
            index,
            delta: ChunkDelta {
                reasoning,
                content,
                ..ChunkDelta::default()
            },
            finish_reason: None,
            logprobs: None,
        });
        aggregator.push(&chunk);
        chunks.push(chunk);
    }
    Run {
        chunks,
        errors,
        done,
        completion: aggregator.finish(),
    }
}

/// The completion a fixture must fold into, written by hand.
struct Expected {
    id: &'static str,
    model: &'static str,
    content: Option<&'static str>,
    reasoning: Option<&'static str>,
    /// `(id, name, arguments as JSON)` per call, in index order.
    tool_calls: Vec<(&'static str, &'static str, Value)>,
    finish_reason: Option<FinishReason>,
    /// `(prompt, completion, total)`.
    usage: Option<(u64, u64, u64)>,
    done: bool,
}

fn usage_numbers(usage: Option<&Usage>) -> Option<(u64, u64, u64)> {
    usage.map(|u| (u.prompt_tokens, u.completion_tokens, u.total_tokens))
}

fn assert_expected(run: &Run, expected: &Expected) {
    let completion = &run.completion;
    assert_eq!(run.done, expected.done, "[DONE] seen");
    assert_eq!(completion.id, expected.id);
    assert_eq!(completion.model, expected.model);
    assert_eq!(completion.choices.len(), 1, "one choice");
    let choice = &completion.choices[0];
    assert_eq!(choice.index, 0);
    assert_eq!(choice.message.role, Role::Assistant);
    assert_eq!(
        choice.message.content.as_deref(),
        expected.content,
        "content"
    );
    assert_eq!(
        choice.message.reasoning.as_deref(),
        expected.reasoning,
        "reasoning"
    );
    assert_eq!(choice.message.refusal, None);
    assert_eq!(
        choice.finish_reason, expected.finish_reason,
        "finish reason"
    );
    assert_eq!(
        usage_numbers(completion.usage.as_ref()),
        expected.usage,
        "usage"
    );
    let calls = choice.message.tool_calls.clone().unwrap_or_default();
    assert_eq!(
        calls.len(),
        expected.tool_calls.len(),
        "tool calls: {calls:?}"
    );
    for (call, (id, name, arguments)) in calls.iter().zip(&expected.tool_calls) {
        assert_eq!(call.id, *id);
        assert_eq!(call.kind, "function");
        assert_eq!(call.function.name, *name);
        let parsed: Value = serde_json::from_str(&call.function.arguments).unwrap_or_else(|e| {
            panic!("arguments are not JSON ({e}): {}", call.function.arguments)
        });
        assert_eq!(&parsed, arguments, "arguments of {id}");
    }
}

// ---------------------------------------------------------------------------------------------
// What we write back must be exact OpenAI format
// ---------------------------------------------------------------------------------------------

const FINISH_REASONS: [&str; 5] = [
    "stop",
    "length",
    "tool_calls",
    "content_filter",
    "function_call",
];

fn assert_full_usage(usage: &Value) {
    let usage = usage
        .as_object()
        .unwrap_or_else(|| panic!("usage is not an object: {usage}"));
    for key in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert!(
            usage.get(key).is_some_and(Value::is_u64),
            "usage lacks {key}: {usage:?}"
        );
    }
}

/// Structural check of one serialized chunk against the OpenAI chunk format.
fn assert_openai_chunk(value: &Value) {
    let chunk = value
        .as_object()
        .unwrap_or_else(|| panic!("chunk is not an object: {value}"));
    assert_eq!(chunk["object"], "chat.completion.chunk", "{value}");
    assert!(chunk["id"].is_string(), "id: {value}");
    assert!(chunk["created"].is_u64(), "created: {value}");
    assert!(chunk["model"].is_string(), "model: {value}");
    let choices = chunk["choices"]
        .as_array()
        .unwrap_or_else(|| panic!("choices is not an array: {value}"));
    for choice in choices {
        assert!(choice["index"].is_u64(), "choice index: {value}");
        let delta = choice
            .get("delta")
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("choice without a delta object: {value}"));
        let finish = choice
            .get("finish_reason")
            .unwrap_or_else(|| panic!("choice without finish_reason: {value}"));
        match finish {
            Value::Null => {}
            Value::String(s) => assert!(
                FINISH_REASONS.contains(&s.as_str()),
                "finish_reason {s:?}: {value}"
            ),
            other => panic!("finish_reason {other}: {value}"),
        }
        assert!(
            !delta.contains_key("reasoning"),
            "reasoning written as `reasoning`: {value}"
        );
        for key in ["role", "content", "reasoning_content", "refusal"] {
            if let Some(v) = delta.get(key) {
                assert!(v.is_string(), "delta.{key} is not a string: {value}");
            }
        }
        if let Some(role) = delta.get("role") {
            assert_eq!(role, "assistant", "{value}");
        }
        if let Some(calls) = delta.get("tool_calls") {
            let calls = calls
                .as_array()
                .unwrap_or_else(|| panic!("tool_calls is not an array: {value}"));
            assert!(!calls.is_empty(), "empty tool_calls written: {value}");
            for call in calls {
                assert!(call["index"].is_u64(), "tool call without index: {value}");
                if let Some(kind) = call.get("type") {
                    assert_eq!(kind, "function", "{value}");
                }
                if let Some(arguments) = call.get("function").and_then(|f| f.get("arguments")) {
                    assert!(arguments.is_string(), "{value}");
                }
            }
        }
    }
    if let Some(usage) = chunk.get("usage") {
        assert_full_usage(usage);
    }
}

/// Structural check of the folded completion.
fn assert_openai_completion(completion: &ChatCompletion, finished: bool) {
    let value = serde_json::to_value(completion).unwrap();
    assert_eq!(value["object"], "chat.completion", "{value}");
    assert!(
        value["id"].is_string() && value["created"].is_u64(),
        "{value}"
    );
    for choice in value["choices"].as_array().unwrap() {
        let message = &choice["message"];
        assert_eq!(message["role"], "assistant", "{value}");
        assert!(message.get("reasoning").is_none(), "{value}");
        let finish = &choice["finish_reason"];
        if finished {
            assert!(
                finish.as_str().is_some_and(|s| FINISH_REASONS.contains(&s)),
                "finish_reason {finish}: {value}"
            );
        } else {
            assert!(finish.is_null(), "{value}");
        }
        if let Some(calls) = message.get("tool_calls") {
            for call in calls.as_array().unwrap() {
                assert_eq!(call["type"], "function", "{value}");
                assert!(
                    call["id"].as_str().is_some_and(|s| !s.is_empty()),
                    "{value}"
                );
                assert!(
                    call["function"]["name"]
                        .as_str()
                        .is_some_and(|s| !s.is_empty()),
                    "{value}"
                );
            }
        }
    }
    if let Some(usage) = value.get("usage") {
        assert_full_usage(usage);
    }
    let back: ChatCompletion = serde_json::from_value(value).unwrap();
    assert_eq!(&back, completion, "the completion reads back unchanged");
}

/// Each normalized chunk, written and read again, is the same chunk.
fn assert_round_trip(chunks: &[ChatCompletionChunk]) {
    for chunk in chunks {
        let text = serde_json::to_string(chunk).unwrap();
        match StreamPayload::parse(&text).unwrap() {
            StreamPayload::Chunk(back) => {
                assert_eq!(&*back, chunk, "round trip of {text}");
                assert_eq!(serde_json::to_string(&*back).unwrap(), text);
            }
            other => panic!("{text} read back as {other:?}"),
        }
    }
}

/// Everything every well-formed fixture must satisfy on output.
fn assert_output(run: &Run) {
    assert!(!run.chunks.is_empty());
    for chunk in &run.chunks {
        assert_openai_chunk(&serde_json::to_value(chunk).unwrap());
    }
    assert_round_trip(&run.chunks);
    let finished = run
        .completion
        .choices
        .iter()
        .all(|c| c.finish_reason.is_some());
    assert_openai_completion(&run.completion, finished);
}

fn values(chunks: &[ChatCompletionChunk]) -> Vec<Value> {
    chunks
        .iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. vLLM with a reasoning parser
// ---------------------------------------------------------------------------------------------

/// Recent vLLM (`--reasoning-parser qwen3`): role and `content: ""` on the first chunk,
/// `delta.reasoning`, `"\n\n"` opening the answer, `logprobs: null` everywhere, `finish_reason`
/// and `stop_reason` on the last choice chunk, then a usage-only chunk (`choices: []`, from
/// `stream_options.include_usage`) with `prompt_tokens_details: null`.
#[test]
fn vllm_reasoning() {
    let run = run(fixture!("vllm_reasoning.sse"));
    assert_expected(
        &run,
        &Expected {
            id: "chatcmpl-a0e8d16d47a64de58a0a3083e18d432a",
            model: "Qwen/Qwen3-8B",
            content: Some("\n\n2 + 2 = **4**"),
            reasoning: Some("Okay, the user asks for 2+2. That's 4.\n"),
            tool_calls: vec![],
            finish_reason: Some(FinishReason::Stop),
            usage: Some((14, 26, 40)),
            done: true,
        },
    );
    assert_eq!(
        run.completion.usage.as_ref().unwrap().reasoning_tokens(),
        None
    );
    assert_output(&run);
    let written = values(&run.chunks);
    // The usage-only chunk stays a usage-only chunk.
    let last = written.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        last["usage"],
        json!({"prompt_tokens": 14, "completion_tokens": 26, "total_tokens": 40})
    );
    // Every reasoning piece is written as `reasoning_content`.
    let reasoning: String = written
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str())
        .collect();
    assert_eq!(reasoning, "Okay, the user asks for 2+2. That's 4.\n");
    // `finish_reason` is null on every choice chunk but the last.
    let finishes: Vec<&Value> = written
        .iter()
        .filter_map(|c| c["choices"].get(0))
        .map(|c| &c["finish_reason"])
        .collect();
    assert_eq!(finishes.last().copied(), Some(&json!("stop")));
    assert!(finishes[..finishes.len() - 1].iter().all(|f| f.is_null()));
}

/// vLLM versions in the renaming period send the trace under both `reasoning_content` and
/// `reasoning`, with the same text: it must be read once, not doubled.
#[test]
fn vllm_reasoning_under_both_names() {
    let raw = fixture!("vllm_reasoning_both_names.sse");
    assert!(raw.contains(r#""reasoning_content":"Compare","reasoning":"Compare""#));
    let run = run(raw);
    assert_expected(
        &run,
        &Expected {
            id: "chatcmpl-2b45106e5bef4f1eabc563b3da1f2649",
            model: "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
            content: Some("9.8 is greater."),
            reasoning: Some("Compare 9.11 and 9.8: 9.8 is 9.80, larger."),
            tool_calls: vec![],
            finish_reason: Some(FinishReason::Stop),
            usage: Some((17, 24, 41)),
            done: true,
        },
    );
    assert_output(&run);
}

// ---------------------------------------------------------------------------------------------
// 2. DeepSeek API
// ---------------------------------------------------------------------------------------------

/// DeepSeek's API (`deepseek-reasoner`): `: keep-alive` comments while queued,
/// `reasoning_content` with `content: null`, then `content` with `reasoning_content: null`,
/// `usage: null` until the last chunk, which carries `finish_reason` and the usage with
/// `prompt_cache_hit_tokens`/`prompt_cache_miss_tokens` and `reasoning_tokens`.
#[test]
fn deepseek_reasoner() {
    let run = run(fixture!("deepseek_reasoner.sse"));
    assert_expected(
        &run,
        &Expected {
            id: "0b6f5c1e-3f7a-4f1c-9d1b-8c2a5e7d4f10",
            model: "deepseek-reasoner",
            content: Some("**9.8** is greater than 9.11."),
            reasoning: Some("We need to compare 9.11 and 9.8. 9.8 = 9.80 > 9.11."),
            tool_calls: vec![],
            finish_reason: Some(FinishReason::Stop),
            usage: Some((19, 91, 110)),
            done: true,
        },
    );
    let usage = run.completion.usage.as_ref().unwrap();
    assert_eq!(usage.reasoning_tokens(), Some(72));
    assert_eq!(
        usage.prompt_tokens_details.as_ref().unwrap().cached_tokens,
        Some(0)
    );
    assert_eq!(
        run.completion.system_fingerprint.as_deref(),
        Some("fp_7e73fd9a08_prod0225")
    );
    assert_output(&run);
    let written = values(&run.chunks);
    // `usage: null` is not written; the real usage is written on the last chunk only.
    assert!(
        written[..written.len() - 1]
            .iter()
            .all(|c| c.get("usage").is_none())
    );
    assert_eq!(
        written.last().unwrap()["usage"]["completion_tokens_details"]["reasoning_tokens"],
        72
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Ollama's OpenAI endpoint
// ---------------------------------------------------------------------------------------------

/// Ollama `/v1/chat/completions` with a thinking model: `system_fingerprint: "fp_ollama"`, short
/// numeric ids, `role` and `content` (`""` while thinking) on every chunk, `delta.reasoning`,
/// no `logprobs` key, `finish_reason` on the last choice chunk, then a usage-only chunk.
#[test]
fn ollama_thinking() {
    let run = run(fixture!("ollama_thinking.sse"));
    assert_expected(
        &run,
        &Expected {
            id: "chatcmpl-412",
            model: "qwen3:8b",
            content: Some("Hello! How can I help you today?"),
            reasoning: Some("Okay, the user says hi. Greet back."),
            tool_calls: vec![],
            finish_reason: Some(FinishReason::Stop),
            usage: Some((11, 32, 43)),
            done: true,
        },
    );
    assert_eq!(
        run.completion.system_fingerprint.as_deref(),
        Some("fp_ollama")
    );
    assert_output(&run);
}

// ---------------------------------------------------------------------------------------------
// 4. llama.cpp server
// ---------------------------------------------------------------------------------------------

/// llama.cpp's `llama-server`: keys in its own order, `content: null` beside the role, no
/// `logprobs`, the last chunk with an empty delta, `finish_reason`, `usage` and `timings`.
#[test]
fn llamacpp() {
    let run = run(fixture!("llamacpp.sse"));
    assert_expected(
        &run,
        &Expected {
            id: "chatcmpl-yPk7z9nC22CofOlh100qQdHVEDMNYCb1",
            model: "Qwen2.5-7B-Instruct-Q4_K_M.gguf",
            content: Some("The capital of France is Paris."),
            reasoning: None,
            tool_calls: vec![],
            finish_reason: Some(FinishReason::Stop),
            usage: Some((25, 8, 33)),
            done: true,
        },
    );
    assert_output(&run);
    let last = values(&run.chunks).pop().unwrap();
    assert_eq!(last["choices"][0]["delta"], json!({}));
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    // Unknown chunk fields pass through.
    assert_eq!(last["timings"]["predicted_n"], 8);
}

// ---------------------------------------------------------------------------------------------
// 5. LM Studio tool calls
// ---------------------------------------------------------------------------------------------

/// LM Studio: `id` and `name` on the first fragment with `arguments: ""`, then argument pieces
/// with `name: ""` and `type` repeated, an empty delta with `finish_reason: "tool_calls"`.
#[test]
fn lmstudio_tool_call() {
    let raw = fixture!("lmstudio_tool_call.sse");
    assert!(raw.contains(r#""function":{"name":"","arguments":"Paris"}"#));
    let run = run(raw);
    assert_expected(
        &run,
        &Expected {
            id: "chatcmpl-k3b9x1mz0v7q2r8t5w4y6u",
            model: "qwen2.5-7b-instruct",
            content: None,
            reasoning: None,
            tool_calls: vec![(
                "365174485",
                "get_weather",
                json!({"city": "Paris", "unit": "celsius"}),
            )],
            finish_reason: Some(FinishReason::ToolCalls),
            usage: None,
            done: true,
        },
    );
    assert_output(&run);
}

/// Two tool calls whose fragments alternate between indexes 0 and 1.
#[test]
fn lmstudio_parallel_tool_calls() {
    let run = run(fixture!("lmstudio_parallel_tool_calls.sse"));
    assert_expected(
        &run,
        &Expected {
            id: "chatcmpl-p9q8r7s6t5u4v3w2x1y0z",
            model: "qwen2.5-7b-instruct",
            content: None,
            reasoning: None,
            tool_calls: vec![
                ("118420573", "get_weather", json!({"city": "Paris"})),
                ("902736114", "get_time", json!({"timezone": "Europe/Paris"})),
            ],
            finish_reason: Some(FinishReason::ToolCalls),
            usage: None,
            done: true,
        },
    );
    assert_output(&run);
}

// ---------------------------------------------------------------------------------------------
// 6. A `<think>` model served plainly
// ---------------------------------------------------------------------------------------------

/// DeepSeek-R1-Distill through llama.cpp with `--reasoning-format none`: `<think>` arrives as
/// `<th` + `ink` + `>\n`, `</think>` as `</` + `think` + `>\n\n`, with non-ASCII text near the
/// tags. White space inside the block is kept; white space right after `</think>` is dropped.
#[test]
fn think_tags_split_across_chunks() {
    let run = run(fixture!("think_tags_split.sse"));
    assert_expected(
        &run,
        &Expected {
            id: "chatcmpl-Zr1Qm8v3PHs0JkTn5bYx2LcWq7AeUd4F",
            model: "DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.gguf",
            content: Some("2 + 2 = 4 🙂"),
            reasoning: Some("\nOkay, 2+2 is 4. Déjà vu.\n"),
            tool_calls: vec![],
            finish_reason: Some(FinishReason::Stop),
            usage: Some((9, 21, 30)),
            done: true,
        },
    );
    assert_output(&run);
    // No piece of a tag leaks into what we write.
    for chunk in values(&run.chunks) {
        let delta = &chunk["choices"][0]["delta"];
        for key in ["content", "reasoning_content"] {
            let text = delta[key].as_str().unwrap_or_default();
            assert!(!text.contains('<') && !text.contains('>'), "{chunk}");
        }
    }
}

/// DeepSeek-R1 with its updated chat template puts `<think>\n` in the prompt, so the output
/// starts inside the block and only `</think>` appears (llama.cpp `--reasoning-format none`, or
/// vLLM without a reasoning parser). With `ThinkSplitter::starting_inside` the trace is split
/// off; with the default splitter it stays in the content (an answer is never guessed to be
/// reasoning).
#[test]
fn think_without_open_tag() {
    let plain = run(fixture!("think_without_open_tag.sse"));
    assert!(plain.completion.choices[0].message.reasoning.is_none());
    let run = run_with(
        fixture!("think_without_open_tag.sse"),
        ThinkSplitter::starting_inside(),
    );
    assert_expected(
        &run,
        &Expected {
            id: "chatcmpl-Hk2Lw9Pq0Rt7Ys4Vx1Zb8Nc5Md3Fg6Ja",
            model: "DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.gguf",
            content: Some("4."),
            reasoning: Some("Okay, the sum is 4.\n"),
            tool_calls: vec![],
            finish_reason: Some(FinishReason::Stop),
            usage: Some((11, 12, 23)),
            done: true,
        },
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Tolerance
// ---------------------------------------------------------------------------------------------

/// `finish_reason: ""` until the end, `usage: {}` on the first chunk, running usage on every
/// chunk, and a trailing usage-only chunk with `usage: {}`: the last real usage wins, and we
/// write `null` (never `""`) and no `usage` key for `{}`.
#[test]
fn empty_finish_reason_and_usage_everywhere() {
    let run = run(fixture!("tolerance_empty_finish_reason_and_usage.sse"));
    assert_expected(
        &run,
        &Expected {
            id: "chatcmpl-tol-0001",
            model: "mistral-7b-instruct",
            content: Some("Hello there!"),
            reasoning: None,
            tool_calls: vec![],
            finish_reason: Some(FinishReason::Stop),
            usage: Some((12, 3, 15)),
            done: true,
        },
    );
    assert_output(&run);
    let written = values(&run.chunks);
    assert_eq!(written.len(), 5);
    assert!(
        written[0].get("usage").is_none(),
        "usage: {{}} is not written"
    );
    assert!(
        written[4].get("usage").is_none(),
        "usage: {{}} is not written"
    );
    assert_eq!(written[2]["usage"]["completion_tokens"], 2);
    for chunk in &written[..3] {
        assert_eq!(chunk["choices"][0]["finish_reason"], Value::Null);
    }
    assert_eq!(written[3]["choices"][0]["finish_reason"], "stop");
}

/// vLLM reports a failure after output has started as `data: {"error": {...}}` (with its
/// `object: "error"` and a numeric `code`), then `[DONE]`. The partial output is kept, there is
/// no finish reason and no usage, and the error is written back in the OpenAI envelope.
#[test]
fn error_inside_the_stream() {
    let run = run(fixture!("vllm_error_in_stream.sse"));
    assert_expected(
        &run,
        &Expected {
            id: "chatcmpl-e4eb908a00044330868ed9072a59526a",
            model: "meta-llama/Llama-3.3-70B-Instruct",
            content: Some("Once upon a"),
            reasoning: None,
            tool_calls: vec![],
            finish_reason: None,
            usage: None,
            done: true,
        },
    );
    assert_eq!(run.chunks.len(), 4);
    assert_eq!(
        run.errors,
        vec![ApiError {
            message:
                "The decoder prompt (length 8193) is longer than the maximum model length of 8192."
                    .into(),
            kind: "BadRequestError".into(),
            param: None,
            code: Some("400".into()),
        }]
    );
    assert_eq!(
        serde_json::to_value(run.errors[0].clone().into_response()).unwrap(),
        json!({"error": {
            "message": "The decoder prompt (length 8193) is longer than the maximum model length of 8192.",
            "type": "BadRequestError", "param": null, "code": "400"
        }})
    );
    assert_output(&run);
}

/// CRLF line endings, `:` comments (one inside an event), `retry:`, `id:` and `event:` fields,
/// one chunk spread over three `data:` lines (one without the space after the colon), and
/// non-ASCII content.
#[test]
fn crlf_comments_and_multi_line_data() {
    let raw = fixture!("tolerance_crlf_comments.sse");
    // The fixture must keep its CRLF line endings (see .gitattributes).
    assert_eq!(raw.matches("\r\n").count(), raw.matches('\n').count());
    let events = sse_events(raw);
    assert_eq!(events.len(), 5);
    assert_eq!(events[1].data.lines().count(), 3);
    assert_eq!(events[2].event.as_deref(), Some("message"));
    let run = run(raw);
    assert_expected(
        &run,
        &Expected {
            id: "chatcmpl-crlf-7",
            model: "gemma-3-4b-it",
            content: Some("Bonjour, ça va ?"),
            reasoning: None,
            tool_calls: vec![],
            finish_reason: Some(FinishReason::Stop),
            usage: None,
            done: true,
        },
    );
    assert_output(&run);
}

/// TGI 1.4's chat stream: `data:` without a space, `id: ""`, `role` on every chunk, no `[DONE]`,
/// and `object: "text_completion"` on chat chunks.
#[test]
fn tgi_chat_stream_is_read() {
    let run = run(fixture!("tgi_text_completion_object.sse"));
    assert_expected(
        &run,
        &Expected {
            id: "",
            model: "HuggingFaceH4/zephyr-7b-beta",
            content: Some("I'm fine"),
            reasoning: None,
            tool_calls: vec![],
            finish_reason: Some(FinishReason::Length),
            usage: None,
            done: false,
        },
    );
    assert_round_trip(&run.chunks);
    assert_openai_completion(&run.completion, true);
}

// ---------------------------------------------------------------------------------------------
// Bugs in the wire types, shown by the fixtures
// ---------------------------------------------------------------------------------------------

/// A normalized chunk is written as `chat.completion.chunk` whatever `object` the engine sent.
#[test]
fn tgi_chunks_are_written_as_chat_completion_chunks() {
    let run = run(fixture!("tgi_text_completion_object.sse"));
    for chunk in &run.chunks {
        assert_openai_chunk(&serde_json::to_value(chunk).unwrap());
    }
}

/// OpenAI sends a tool call's `name` (and `id`) only on its first fragment. LM Studio's
/// `name: ""` on argument fragments must not reach our consumers: clients that take `name`
/// whenever it is present (rig, async-openai users) lose the function name.
#[test]
fn no_empty_tool_call_names_are_written() {
    for raw in [
        fixture!("lmstudio_tool_call.sse"),
        fixture!("lmstudio_parallel_tool_calls.sse"),
    ] {
        for chunk in values(&run(raw).chunks) {
            for call in chunk["choices"][0]["delta"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(name) = call["function"].get("name") {
                    assert_ne!(name, "", "{chunk}");
                }
                if let Some(id) = call.get("id") {
                    assert_ne!(id, "", "{chunk}");
                }
            }
        }
    }
}
