//! Streamed chat completion chunks.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::{ApiError, ErrorResponse, Extra, Role, Usage};

/// One chunk of a streamed completion (`object: "chat.completion.chunk"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// Completion id, the same on every chunk of one completion.
    #[serde(default)]
    pub id: String,
    /// Always `chat.completion.chunk` (whatever an engine sent).
    #[serde(default = "chunk_object", deserialize_with = "read_chunk_object")]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The model that answers.
    #[serde(default)]
    pub model: String,
    /// The choices; empty on a usage-only chunk.
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// Token counts: on the last chunk when the consumer asked for them.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::usage::deserialize_optional_usage"
    )]
    pub usage: Option<Usage>,
    /// Backend fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    /// Other fields, passed through.
    #[serde(flatten)]
    pub extra: Extra,
}

fn chunk_object() -> String {
    "chat.completion.chunk".into()
}

fn read_chunk_object<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| chunk_object())
}

impl ChatCompletionChunk {
    /// An empty chunk with the given id, model and creation time.
    pub fn new(id: impl Into<String>, model: impl Into<String>, created: u64) -> Self {
        Self {
            id: id.into(),
            object: chunk_object(),
            created,
            model: model.into(),
            choices: Vec::new(),
            usage: None,
            system_fingerprint: None,
            extra: Extra::new(),
        }
    }

    /// The same chunk with one choice holding `delta`.
    pub fn with_delta(mut self, delta: ChunkDelta) -> Self {
        self.choices.push(ChunkChoice {
            index: 0,
            delta,
            finish_reason: None,
            logprobs: None,
        });
        self
    }

    /// Whether the chunk carries any output: content, reasoning, a refusal or a tool call.
    pub fn has_output(&self) -> bool {
        self.choices.iter().any(|c| c.delta.has_output())
    }
}

/// One choice of a chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Choice index.
    #[serde(default)]
    pub index: u32,
    /// What this chunk adds.
    #[serde(default)]
    pub delta: ChunkDelta,
    /// Why generation stopped; `null` until the last chunk of the choice.
    #[serde(default, deserialize_with = "deserialize_finish_reason")]
    pub finish_reason: Option<FinishReason>,
    /// Log probabilities, passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Value>,
}

/// What one chunk adds to a choice.
///
/// The reasoning trace is read from `reasoning_content` or `reasoning` and written as
/// `reasoning_content`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "ChunkDeltaWire")]
pub struct ChunkDelta {
    /// The role, on the first chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// A piece of the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// A piece of the reasoning trace.
    #[serde(rename = "reasoning_content", skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    /// A piece of a refusal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Fragments of tool calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    /// Other fields, passed through.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ChunkDelta {
    /// A delta carrying a piece of the answer.
    pub fn content(text: impl Into<String>) -> Self {
        Self {
            content: Some(text.into()),
            ..Self::default()
        }
    }

    /// A delta carrying a piece of the reasoning trace.
    pub fn reasoning(text: impl Into<String>) -> Self {
        Self {
            reasoning: Some(text.into()),
            ..Self::default()
        }
    }

    /// Whether the delta carries output (not just a role).
    pub fn has_output(&self) -> bool {
        let non_empty = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
        non_empty(&self.content)
            || non_empty(&self.reasoning)
            || non_empty(&self.refusal)
            || self.tool_calls.as_ref().is_some_and(|c| !c.is_empty())
    }
}

#[derive(Deserialize)]
struct ChunkDeltaWire {
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    reasoning: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
    #[serde(flatten)]
    extra: Extra,
}

impl From<ChunkDeltaWire> for ChunkDelta {
    fn from(w: ChunkDeltaWire) -> Self {
        Self {
            role: w.role,
            content: w.content,
            reasoning: w.reasoning_content.or(w.reasoning),
            refusal: w.refusal,
            tool_calls: w.tool_calls.filter(|calls| !calls.is_empty()),
            extra: w.extra,
        }
    }
}

/// A fragment of a tool call. `id` and the function name come on the first fragment of a call;
/// `arguments` arrive in pieces to be concatenated per `index`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Which call this fragment belongs to.
    #[serde(default)]
    pub index: u32,
    /// Call id (first fragment). An empty id is read as absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "non_empty_string"
    )]
    pub id: Option<String>,
    /// Always `function` (first fragment).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Function name and a piece of the arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
}

/// The function part of a tool-call fragment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    /// Function name (first fragment). Some engines send `""` on later fragments; that is read as
    /// absent, so it is never written back.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "non_empty_string"
    )]
    pub name: Option<String>,
    /// A piece of the arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// Why generation stopped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// A natural end or a stop sequence.
    Stop,
    /// The token limit.
    Length,
    /// The model called tools.
    ToolCalls,
    /// Content was filtered.
    ContentFilter,
    /// Legacy function call.
    FunctionCall,
    /// Anything else an engine sends, kept as sent.
    Other(String),
}

impl FinishReason {
    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::ToolCalls => "tool_calls",
            Self::ContentFilter => "content_filter",
            Self::FunctionCall => "function_call",
            Self::Other(s) => s,
        }
    }

    /// Reads a wire name; the empty string (sent by some engines instead of null) is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "" => return None,
            "stop" | "eos" => Self::Stop,
            "length" => Self::Length,
            "tool_calls" => Self::ToolCalls,
            "content_filter" => Self::ContentFilter,
            "function_call" => Self::FunctionCall,
            other => Self::Other(other.to_owned()),
        })
    }
}

impl Serialize for FinishReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FinishReason {
    /// Reads a wire name. The empty string is refused here; fields read it as "not finished".
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).ok_or_else(|| serde::de::Error::custom("empty finish_reason"))
    }
}

fn non_empty_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

/// Reads `finish_reason`, where `null`, `""` and a missing field all mean "not finished".
pub(crate) fn deserialize_finish_reason<'de, D>(d: D) -> Result<Option<FinishReason>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(Option::<String>::deserialize(d)?.and_then(|s| FinishReason::parse(&s)))
}

/// What one `data:` line of an OpenAI-style stream holds.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamPayload {
    /// A chunk.
    Chunk(Box<ChatCompletionChunk>),
    /// An error sent inside the stream (`{"error": {...}}`).
    Error(ApiError),
    /// `[DONE]`: the end of the stream.
    Done,
}

impl StreamPayload {
    /// Parses the data of one server-sent event.
    pub fn parse(data: &str) -> Result<Self, serde_json::Error> {
        let data = data.trim();
        if data == "[DONE]" {
            return Ok(Self::Done);
        }
        let value: Value = serde_json::from_str(data)?;
        if value.get("error").is_some_and(|e| !e.is_null()) && value.get("choices").is_none() {
            let envelope: ErrorResponse = serde_json::from_value(value)?;
            return Ok(Self::Error(envelope.error));
        }
        serde_json::from_value(value).map(|c| Self::Chunk(Box::new(c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn empty_finish_reason_is_none() {
        let c: ChunkChoice =
            serde_json::from_value(json!({"index": 0, "delta": {}, "finish_reason": ""})).unwrap();
        assert_eq!(c.finish_reason, None);
        let c: ChunkChoice =
            serde_json::from_value(json!({"index": 0, "delta": {}, "finish_reason": "stop"}))
                .unwrap();
        assert_eq!(c.finish_reason, Some(FinishReason::Stop));
    }

    #[test]
    fn both_reasoning_names_in_one_delta_are_read_once() {
        let d: ChunkDelta =
            serde_json::from_value(json!({"reasoning": "hm", "reasoning_content": "hm"})).unwrap();
        assert_eq!(d.reasoning.as_deref(), Some("hm"));
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            json!({"reasoning_content": "hm"})
        );
    }

    #[test]
    fn chunks_are_written_in_openai_format() {
        let chunk =
            ChatCompletionChunk::new("chatcmpl-1", "m", 7).with_delta(ChunkDelta::content("hi"));
        assert_eq!(
            serde_json::to_value(&chunk).unwrap(),
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "m",
                   "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": null}]})
        );
    }

    #[test]
    fn stream_payloads() {
        assert_eq!(StreamPayload::parse("[DONE]").unwrap(), StreamPayload::Done);
        match StreamPayload::parse(r#"{"error":{"message":"boom","type":"server_error"}}"#).unwrap()
        {
            StreamPayload::Error(e) => assert_eq!(e.message, "boom"),
            other => panic!("expected an error, got {other:?}"),
        }
        match StreamPayload::parse(r#"{"id":"x","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#).unwrap() {
            StreamPayload::Chunk(c) => assert_eq!(c.usage.unwrap().total_tokens, 3),
            other => panic!("expected a chunk, got {other:?}"),
        }
        assert!(StreamPayload::parse("{not json").is_err());
    }
}
