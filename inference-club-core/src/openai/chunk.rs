//! Streamed chat completion chunks.

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::{ApiError, ErrorResponse, Extra, FieldName, Role, Usage};

/// One chunk of a streamed completion (`object: "chat.completion.chunk"`).
///
/// Chunks are read on the hot path of every stream, so they are read field by field straight
/// from the JSON (no intermediate `Value`, no buffering of the whole object); a missing field
/// takes its default, `object` is always written as `chat.completion.chunk`, and unknown fields
/// land in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatCompletionChunk {
    /// Completion id, the same on every chunk of one completion.
    pub id: String,
    /// Always `chat.completion.chunk` (whatever an engine sent).
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model that answers.
    pub model: String,
    /// The choices; empty on a usage-only chunk.
    pub choices: Vec<ChunkChoice>,
    /// Token counts: on the last chunk when the consumer asked for them.
    #[serde(skip_serializing_if = "Option::is_none")]
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

/// A chunk as read, with what [`StreamPayload::parse`] needs beyond it.
struct ChunkFields {
    chunk: ChatCompletionChunk,
    /// Whether a `choices` field was present.
    saw_choices: bool,
}

impl<'de> Deserialize<'de> for ChunkFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = ChunkFields;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a chat completion chunk object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ChunkFields, A::Error> {
                let mut chunk = ChatCompletionChunk::new(String::new(), String::new(), 0);
                let mut saw_choices = false;
                while let Some(key) = map.next_key::<FieldName<'de>>()? {
                    match &*key.0 {
                        "id" => chunk.id = map.next_value()?,
                        "object" => {
                            map.next_value::<IgnoredAny>()?;
                        }
                        "created" => chunk.created = map.next_value()?,
                        "model" => chunk.model = map.next_value()?,
                        "choices" => {
                            chunk.choices = map.next_value()?;
                            saw_choices = true;
                        }
                        "usage" => chunk.usage = map.next_value::<OptionalUsage>()?.0,
                        "system_fingerprint" => chunk.system_fingerprint = map.next_value()?,
                        _ => {
                            let value: Value = map.next_value()?;
                            chunk.extra.insert(key.0.into_owned(), value);
                        }
                    }
                }
                Ok(ChunkFields { chunk, saw_choices })
            }
        }
        d.deserialize_map(Fields)
    }
}

impl<'de> Deserialize<'de> for ChatCompletionChunk {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ChunkFields::deserialize(d).map(|fields| fields.chunk)
    }
}

/// `usage` as chunks read it: `null` and `{}` are no usage.
struct OptionalUsage(Option<Usage>);

impl<'de> Deserialize<'de> for OptionalUsage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::usage::deserialize_optional_usage(d).map(Self)
    }
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

    /// A whole answer as one chunk, in the form a stream carries it: each choice's message as
    /// its delta (tool calls numbered in order), with its finish reason and log probabilities,
    /// and the answer's usage. Aggregating the chunk
    /// ([`ChatCompletionAggregator`](super::ChatCompletionAggregator)) gives the answer back.
    /// What a provider asked for a whole answer hands on.
    ///
    /// ```
    /// use inference_club_core::openai::{ChatCompletionAggregator, ChatCompletionChunk, ChunkDelta};
    ///
    /// let mut aggregate = ChatCompletionAggregator::new();
    /// aggregate.push(&ChatCompletionChunk::new("c1", "m", 7).with_delta(ChunkDelta::content("Hi")));
    /// let answer = aggregate.finish();
    /// let chunk = ChatCompletionChunk::from_completion(answer.clone());
    /// assert_eq!(chunk.object, "chat.completion.chunk");
    /// let mut again = ChatCompletionAggregator::new();
    /// again.push(&chunk);
    /// assert_eq!(again.finish(), answer);
    /// ```
    pub fn from_completion(completion: super::ChatCompletion) -> Self {
        let choices = completion
            .choices
            .into_iter()
            .map(|choice| {
                let message = choice.message;
                let tool_calls = message.tool_calls.map(|calls| {
                    calls
                        .into_iter()
                        .zip(0..)
                        .map(|(call, index)| ToolCallDelta {
                            index,
                            id: Some(call.id),
                            kind: Some(call.kind),
                            function: Some(FunctionCallDelta {
                                name: Some(call.function.name),
                                arguments: Some(call.function.arguments),
                            }),
                        })
                        .collect()
                });
                ChunkChoice {
                    index: choice.index,
                    delta: ChunkDelta {
                        role: Some(message.role),
                        content: message.content,
                        reasoning: message.reasoning,
                        refusal: message.refusal,
                        tool_calls,
                        extra: message.extra,
                    },
                    finish_reason: choice.finish_reason,
                    logprobs: choice.logprobs,
                }
            })
            .collect();
        Self {
            id: completion.id,
            object: chunk_object(),
            created: completion.created,
            model: completion.model,
            choices,
            usage: completion.usage,
            system_fingerprint: completion.system_fingerprint,
            extra: completion.extra,
        }
    }

    /// Whether the chunk carries any output: content, reasoning, a refusal or a tool call.
    pub fn has_output(&self) -> bool {
        self.choices.iter().any(|c| c.delta.has_output())
    }

    /// Folds the chunk that follows this one into it, so that this one chunk aggregates as the
    /// two did ([`ChatCompletionAggregator`](super::ChatCompletionAggregator)): per choice,
    /// text concatenated and tool-call fragments merged by index; the later role, finish reason,
    /// usage and system fingerprint win. What a whole answer's node sends as one chunk.
    ///
    /// ```
    /// use inference_club_core::openai::{ChatCompletionChunk, ChunkDelta};
    ///
    /// let mut merged = ChatCompletionChunk::new("c1", "m", 0).with_delta(ChunkDelta::content("Hel"));
    /// merged.absorb(ChatCompletionChunk::new("c1", "m", 0).with_delta(ChunkDelta::content("lo")));
    /// assert_eq!(merged.choices[0].delta.content.as_deref(), Some("Hello"));
    /// ```
    pub fn absorb(&mut self, next: ChatCompletionChunk) {
        if self.id.is_empty() {
            self.id = next.id;
        }
        if self.model.is_empty() {
            self.model = next.model;
        }
        if self.created == 0 {
            self.created = next.created;
        }
        if next.system_fingerprint.is_some() {
            self.system_fingerprint = next.system_fingerprint;
        }
        if next.usage.is_some() {
            self.usage = next.usage;
        }
        for choice in next.choices {
            match self.choices.iter_mut().find(|c| c.index == choice.index) {
                Some(earlier) => earlier.absorb(choice),
                None => self.choices.push(choice),
            }
        }
    }
}

impl ChunkChoice {
    /// Folds the same choice of a later chunk into this one (see [`ChatCompletionChunk::absorb`]).
    fn absorb(&mut self, next: ChunkChoice) {
        let (delta, later) = (&mut self.delta, next.delta);
        if later.role.is_some() {
            delta.role = later.role;
        }
        append_piece(&mut delta.content, later.content);
        append_piece(&mut delta.reasoning, later.reasoning);
        append_piece(&mut delta.refusal, later.refusal);
        for fragment in later.tool_calls.into_iter().flatten() {
            let calls = delta.tool_calls.get_or_insert_with(Vec::new);
            match calls.iter_mut().find(|c| c.index == fragment.index) {
                Some(call) => call.absorb(fragment),
                None => calls.push(fragment),
            }
        }
        if next.finish_reason.is_some() {
            self.finish_reason = next.finish_reason;
        }
        if self.logprobs.is_none() {
            self.logprobs = next.logprobs;
        }
    }
}

impl ToolCallDelta {
    /// Folds a later fragment of the same call into this one.
    fn absorb(&mut self, next: ToolCallDelta) {
        if next.id.as_deref().is_some_and(|id| !id.is_empty()) {
            self.id = next.id;
        }
        if next.kind.is_some() {
            self.kind = next.kind;
        }
        let Some(later) = next.function else {
            return;
        };
        let function = self.function.get_or_insert_with(FunctionCallDelta::default);
        if later.name.as_deref().is_some_and(|name| !name.is_empty()) {
            function.name = later.name;
        }
        append_piece(&mut function.arguments, later.arguments);
    }
}

/// Appends `piece` to `target` (which becomes `Some` when it was not).
fn append_piece(target: &mut Option<String>, piece: Option<String>) {
    match (target.as_mut(), piece) {
        (Some(text), Some(piece)) => text.push_str(&piece),
        (None, Some(piece)) => *target = Some(piece),
        (_, None) => {}
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
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
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

impl<'de> Deserialize<'de> for ChunkDelta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = ChunkDelta;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a chunk delta object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ChunkDelta, A::Error> {
                let mut delta = ChunkDelta::default();
                let mut reasoning = None;
                while let Some(key) = map.next_key::<FieldName<'de>>()? {
                    match &*key.0 {
                        "role" => delta.role = map.next_value()?,
                        "content" => delta.content = map.next_value()?,
                        "reasoning_content" => delta.reasoning = map.next_value()?,
                        "reasoning" => reasoning = map.next_value()?,
                        "refusal" => delta.refusal = map.next_value()?,
                        "tool_calls" => delta.tool_calls = map.next_value()?,
                        _ => {
                            let value: Value = map.next_value()?;
                            delta.extra.insert(key.0.into_owned(), value);
                        }
                    }
                }
                // Either name holds the trace; `reasoning_content` wins when both are sent.
                delta.reasoning = delta.reasoning.or(reasoning);
                delta.tool_calls = delta.tool_calls.filter(|calls| !calls.is_empty());
                Ok(delta)
            }
        }
        d.deserialize_map(Fields)
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
#[non_exhaustive]
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
        let ChunkFields {
            mut chunk,
            saw_choices,
        } = serde_json::from_str(data)?;
        // `{"error": {...}}` without choices is an error sent inside the stream.
        if !saw_choices
            && chunk.extra.get("error").is_some_and(|e| !e.is_null())
            && let Some(error) = chunk.extra.remove("error")
        {
            let envelope: ErrorResponse =
                serde_json::from_value(serde_json::json!({ "error": error }))?;
            return Ok(Self::Error(envelope.error));
        }
        Ok(Self::Chunk(Box::new(chunk)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_whole_answer_becomes_one_chunk_that_aggregates_back_to_it() {
        let answer: super::super::ChatCompletion = serde_json::from_value(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 5, "model": "m",
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant", "content": "Let me look.", "reasoning_content": "hmm",
                    "tool_calls": [
                        {"id": "call_a", "type": "function",
                         "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}},
                        {"id": "call_b", "type": "function",
                         "function": {"name": "time", "arguments": "{}"}}
                    ]
                },
                "finish_reason": "tool_calls"
            }],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
        }))
        .unwrap();
        let chunk = ChatCompletionChunk::from_completion(answer.clone());
        assert!(chunk.has_output());
        let wire = serde_json::to_value(&chunk).unwrap();
        assert_eq!(wire["object"], "chat.completion.chunk");
        assert_eq!(wire["choices"][0]["delta"]["tool_calls"][1]["index"], 1);
        assert_eq!(wire["choices"][0]["delta"]["reasoning_content"], "hmm");
        assert_eq!(wire["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(wire["usage"]["total_tokens"], 7);
        let mut aggregate = super::super::ChatCompletionAggregator::new();
        aggregate.push(&chunk);
        assert_eq!(aggregate.finish(), answer);
    }

    #[test]
    fn absorbed_chunks_aggregate_as_the_chunks_did() {
        let chunks: Vec<ChatCompletionChunk> = [
            json!({"id": "c", "object": "chat.completion.chunk", "created": 7, "model": "m",
                   "choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": "hm"}}]}),
            json!({"id": "c", "object": "chat.completion.chunk", "created": 7, "model": "m",
                   "choices": [{"index": 0, "delta": {"content": "He"}},
                               {"index": 1, "delta": {"content": "Other"}}]}),
            json!({"id": "c", "object": "chat.completion.chunk", "created": 7, "model": "m",
                   "choices": [{"index": 0, "delta": {"content": "llo", "tool_calls": [
                       {"index": 0, "id": "call_1", "type": "function",
                        "function": {"name": "f", "arguments": "{\"a\""}}]}}]}),
            json!({"id": "c", "object": "chat.completion.chunk", "created": 7, "model": "m",
                   "choices": [{"index": 0, "delta": {"tool_calls": [
                       {"index": 0, "function": {"name": "", "arguments": ":1}"}},
                       {"index": 1, "id": "call_2", "function": {"name": "g", "arguments": "{}"}}]},
                       "finish_reason": "tool_calls"}]}),
            json!({"id": "c", "object": "chat.completion.chunk", "created": 7, "model": "m",
                   "choices": [], "system_fingerprint": "fp",
                   "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}),
        ]
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
        let mut one_by_one = crate::openai::ChatCompletionAggregator::new();
        for chunk in &chunks {
            one_by_one.push(chunk);
        }
        let mut merged: Option<ChatCompletionChunk> = None;
        for chunk in chunks {
            match merged.as_mut() {
                Some(merged) => merged.absorb(chunk),
                None => merged = Some(chunk),
            }
        }
        let merged = merged.unwrap();
        assert_eq!(merged.choices.len(), 2);
        let mut at_once = crate::openai::ChatCompletionAggregator::new();
        at_once.push(&merged);
        let (expected, got) = (one_by_one.finish(), at_once.finish());
        assert_eq!(got, expected);
        assert_eq!(got.text().as_deref(), Some("Hello"));
        let calls = got.choices[0].message.tool_calls.as_ref().unwrap();
        assert_eq!(calls[0].function.arguments, "{\"a\":1}");
        assert_eq!(calls[1].function.name, "g");
    }

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
    fn chunks_are_read_field_by_field_with_unknown_fields_kept() {
        let text = r#"{"id":"c1","object":"whatever","created":5,"model":"m","vendor":{"x":[1]},
            "choices":[{"index":0,"delta":{"con\u0074ent":"hi","role":"assistant","top":1},
            "finish_reason":null}],"usage":{},"error":null}"#;
        let StreamPayload::Chunk(chunk) = StreamPayload::parse(text).unwrap() else {
            panic!("not a chunk")
        };
        assert_eq!(chunk.object, "chat.completion.chunk");
        assert_eq!((chunk.id.as_str(), chunk.created), ("c1", 5));
        assert_eq!(chunk.usage, None);
        assert_eq!(chunk.extra["vendor"], json!({"x": [1]}));
        assert_eq!(chunk.extra["error"], Value::Null);
        let delta = &chunk.choices[0].delta;
        assert_eq!(delta.content.as_deref(), Some("hi"));
        assert_eq!(delta.role, Some(Role::Assistant));
        assert_eq!(delta.extra["top"], json!(1));
        // Missing fields take their defaults; a field of the wrong type is an error.
        let bare: ChatCompletionChunk = serde_json::from_str("{}").unwrap();
        assert_eq!(bare, ChatCompletionChunk::new("", "", 0));
        assert!(serde_json::from_str::<ChatCompletionChunk>(r#"{"created":"x"}"#).is_err());
        assert!(serde_json::from_str::<ChatCompletionChunk>("[]").is_err());
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
