//! OpenAI's Responses API (`POST /v1/responses`), text in and text out, served by chat engines.
//!
//! Pure translation, no I/O:
//!
//! - [`to_chat`] turns a [`ResponsesRequest`] into the [`ChatCompletionRequest`] an engine serves;
//! - [`response_object`] turns the engine's [`ChatCompletion`] into the whole Response object;
//! - [`ResponseStreamer`] turns the engine's [`ChatCompletionChunk`]s into Responses stream events,
//!   each written as `event: <type>\ndata: <json>\n\n` (see [`event_name`]).
//!
//! ```
//! use inference_club_core::openai::responses::{ResponseStreamer, ResponsesRequest, event_name, to_chat};
//! use inference_club_core::openai::{ChatCompletionChunk, ChunkDelta};
//!
//! let request: ResponsesRequest =
//!     serde_json::from_value(serde_json::json!({"model": "m", "input": "Hi", "stream": true}))?;
//! let chat = to_chat(&request)?;
//! assert_eq!(chat.messages.len(), 1);
//!
//! let mut streamer = ResponseStreamer::new("resp_1", 1_700_000_000, "m", &request);
//! let mut events = streamer.start();
//! events.extend(streamer.push(&ChatCompletionChunk::new("c", "m", 0).with_delta(ChunkDelta::content("Hello"))));
//! events.extend(streamer.finish());
//! assert_eq!(event_name(&events[0]), "response.created");
//! assert_eq!(event_name(&events[events.len() - 1]), "response.completed");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};

use super::{
    ChatCompletion, ChatCompletionAggregator, ChatCompletionChunk, ChatCompletionRequest,
    ChatMessage, Extra, FinishReason, Role, Usage,
};

/// A `POST /v1/responses` body: the fields the translation reads, the rest kept in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponsesRequest {
    /// The model asked for.
    pub model: String,
    /// The conversation: one user text, or a list of message items.
    pub input: ResponsesInput,
    /// A system prompt put before the input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// The most tokens to generate (the chat request's `max_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Whether the answer is streamed as events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// The caller's key-value pairs, echoed in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// The caller's end-user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Every other field (`store`, `reasoning`, `text`, the club's `visibility`, vendor
    /// parameters such as `top_k`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

impl ResponsesRequest {
    /// Whether the caller asked for a stream of events.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }
}

/// `input`: a string (one user message) or a list of input items.
///
/// Items are read leniently (any object is an [`InputItem`]); [`to_chat`] says which item is
/// not a text message.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ResponsesInput {
    /// One user message.
    Text(String),
    /// Message items, in order.
    Items(Vec<InputItem>),
}

impl<'de> Deserialize<'de> for ResponsesInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match Value::deserialize(d)? {
            Value::String(text) => Ok(Self::Text(text)),
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    serde_json::from_value(item)
                        .map_err(|e| D::Error::custom(format!("input[{i}]: {e}")))
                })
                .collect::<Result<_, _>>()
                .map(Self::Items),
            _ => Err(D::Error::custom(
                "input: expected a string or an array of input items",
            )),
        }
    }
}

/// One item of `input`. Only messages (`type: "message"` or no type) are translated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InputItem {
    /// The item's `type`; absent means `"message"`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `user`, `system`, `developer` or `assistant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The message's text or content parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<InputContent>,
    /// Every other field (`id`, `status`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

/// A message's `content`: a string or a list of parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum InputContent {
    /// Plain text.
    Text(String),
    /// Content parts (`input_text`, `output_text`, …).
    Parts(Vec<InputContentPart>),
}

/// One content part of an input message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InputContentPart {
    /// The part's `type`: `input_text` and `output_text` are translated.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The text of a text part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Every other field (`annotations`, `image_url`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

/// Fields of a Responses request that mean nothing to a chat engine: not passed on.
const RESPONSES_ONLY: &[&str] = &[
    "background",
    "conversation",
    "include",
    "max_tool_calls",
    "messages",
    "parallel_tool_calls",
    "previous_response_id",
    "prompt",
    "prompt_cache_key",
    "reasoning",
    "safety_identifier",
    "service_tier",
    "store",
    "stream_options",
    "text",
    "tool_choice",
    "tools",
    "top_logprobs",
    "truncation",
];

/// The chat request that serves `request`.
///
/// `instructions` become a first system message, a string `input` one user message, message
/// items one message each (`developer` read as `system`, text parts joined by newlines);
/// `max_output_tokens` becomes `max_tokens`; `temperature`, `top_p`, `stream` and `user` are
/// copied, and a stream asks for usage in its last chunk. `reasoning.effort` becomes
/// `reasoning_effort` and `text.format` becomes `response_format`. Unknown fields (vendor
/// parameters, the club's `visibility`) pass through; Responses-only fields are dropped.
/// Reasoning items of earlier outputs are skipped.
///
/// # Errors
///
/// A message naming the field when the request asks for what a chat engine cannot serve here:
/// a non-message item (function call, …), a non-text content part (image, file, …), a role
/// other than `user`/`system`/`developer`/`assistant`, tools, `previous_response_id` or
/// `conversation`, an unknown `text.format`.
pub fn to_chat(request: &ResponsesRequest) -> Result<ChatCompletionRequest, String> {
    let mut messages = Vec::new();
    if let Some(instructions) = request.instructions.as_deref().filter(|s| !s.is_empty()) {
        messages.push(ChatMessage::system(instructions));
    }
    match &request.input {
        ResponsesInput::Text(text) => messages.push(ChatMessage::user(text.as_str())),
        ResponsesInput::Items(items) => {
            if items.is_empty() {
                return Err("input: must not be an empty array".into());
            }
            for (i, item) in items.iter().enumerate() {
                if let Some(message) = item_to_chat(i, item)? {
                    messages.push(message);
                }
            }
        }
    }
    refuse_unsupported(&request.extra)?;

    let mut body: Map<String, Value> = request
        .extra
        .iter()
        .filter(|(key, _)| !RESPONSES_ONLY.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let mut chat = ChatCompletionRequest::new(request.model.as_str(), messages);
    chat.max_tokens = request.max_output_tokens;
    chat.temperature = request.temperature;
    chat.top_p = request.top_p;
    chat.stream = request.stream;
    if request.is_stream() {
        chat.stream_options = Some(super::StreamOptions {
            include_usage: Some(true),
            extra: Extra::new(),
        });
    }
    chat.user.clone_from(&request.user);
    chat.reasoning_effort = request
        .extra
        .get("reasoning")
        .and_then(|r| r.get("effort"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    chat.response_format = text_format(&request.extra)?;
    // Our fields win over same-named unknown ones; unknown fields that the chat request knows
    // (`stop`, `seed`, …) land in their own fields.
    let ours = serde_json::to_value(&chat).map_err(|e| format!("request: {e}"))?;
    if let Value::Object(ours) = ours {
        body.extend(ours);
    }
    serde_json::from_value(Value::Object(body)).map_err(|e| format!("request: {e}"))
}

/// One input item as a chat message; `None` for items that are skipped.
fn item_to_chat(i: usize, item: &InputItem) -> Result<Option<ChatMessage>, String> {
    match item.kind.as_deref().unwrap_or("message") {
        "message" => {}
        // A reasoning item of an earlier output, sent back: chat engines do not take it.
        "reasoning" => return Ok(None),
        other => {
            return Err(format!(
                "input[{i}].type: items of type \"{other}\" are not supported; only text messages (type \"message\") are"
            ));
        }
    }
    let role = match item.role.as_deref() {
        Some("user") => Role::User,
        Some("system" | "developer") => Role::System,
        Some("assistant") => Role::Assistant,
        Some(other) => {
            return Err(format!(
                "input[{i}].role: \"{other}\" is not supported; use user, system, developer or assistant"
            ));
        }
        None => return Err(format!("input[{i}].role: missing")),
    };
    let text = match &item.content {
        Some(InputContent::Text(text)) => text.clone(),
        Some(InputContent::Parts(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                match part.kind.as_str() {
                    "input_text" | "output_text" => match &part.text {
                        Some(text) => texts.push(text.as_str()),
                        None => return Err(format!("input[{i}].content[{j}].text: missing")),
                    },
                    "" => return Err(format!("input[{i}].content[{j}].type: missing")),
                    other => {
                        return Err(format!(
                            "input[{i}].content[{j}].type: content of type \"{other}\" is not supported; only input_text and output_text are"
                        ));
                    }
                }
            }
            texts.join("\n")
        }
        None => return Err(format!("input[{i}].content: missing")),
    };
    Ok(Some(ChatMessage::text(role, text)))
}

/// Refuses the Responses features a chat engine cannot serve through this translation.
fn refuse_unsupported(extra: &Extra) -> Result<(), String> {
    let present = |key: &str| extra.get(key).is_some_and(|v| !v.is_null());
    if extra
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|tools| !tools.is_empty())
    {
        return Err("tools: tools are not supported; this endpoint serves text only".into());
    }
    if present("previous_response_id") {
        return Err(
            "previous_response_id: not supported (responses are not stored); send the whole conversation in input"
                .into(),
        );
    }
    if present("conversation") {
        return Err(
            "conversation: not supported (conversations are not stored); send the whole conversation in input"
                .into(),
        );
    }
    Ok(())
}

/// `text.format` as the chat request's `response_format` (`None` for plain text).
fn text_format(extra: &Extra) -> Result<Option<super::ResponseFormat>, String> {
    let Some(format) = extra.get("text").and_then(|t| t.get("format")) else {
        return Ok(None);
    };
    let Some(object) = format.as_object() else {
        return Err("text.format: expected an object".into());
    };
    match object.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(super::ResponseFormat {
            kind: "json_object".into(),
            json_schema: None,
            extra: Extra::new(),
        })),
        Some("json_schema") => {
            let mut schema = object.clone();
            schema.remove("type");
            Ok(Some(super::ResponseFormat {
                kind: "json_schema".into(),
                json_schema: Some(Value::Object(schema)),
                extra: Extra::new(),
            }))
        }
        Some(other) => Err(format!(
            "text.format.type: \"{other}\" is not supported; use text, json_object or json_schema"
        )),
        None => Err("text.format.type: missing".into()),
    }
}

/// The part of a response id after `resp_`, used to name its output items.
fn id_suffix(id: &str) -> &str {
    id.strip_prefix("resp_").unwrap_or(id)
}

/// The id of the message item of response `id`.
fn message_id(id: &str) -> String {
    format!("msg_{}", id_suffix(id))
}

/// The id of the reasoning item of response `id`.
fn reasoning_id(id: &str) -> String {
    format!("rs_{}", id_suffix(id))
}

/// A response object without output or usage, in the given status.
fn response_shell(
    id: &str,
    created_at: i64,
    model: &str,
    request: &ResponsesRequest,
    status: &str,
) -> Map<String, Value> {
    let text = request
        .extra
        .get("text")
        .filter(|t| t.get("format").is_some_and(Value::is_object))
        .cloned()
        .unwrap_or_else(|| json!({"format": {"type": "text"}}));
    let effort = request
        .extra
        .get("reasoning")
        .and_then(|r| r.get("effort"))
        .cloned()
        .unwrap_or(Value::Null);
    let body = json!({
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": false,
        "error": null,
        "incomplete_details": null,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "model": model,
        "output": [],
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": effort, "summary": null},
        "store": false,
        "temperature": request.temperature,
        "text": text,
        "tool_choice": "auto",
        "tools": [],
        "top_p": request.top_p,
        "truncation": "disabled",
        "usage": null,
        "user": request.user,
        "metadata": request.metadata.clone().filter(|m| !m.is_null()).unwrap_or_else(|| json!({})),
    });
    match body {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// `usage` in the Responses format.
fn usage_object(usage: &Usage) -> Value {
    let cached = usage
        .prompt_tokens_details
        .as_ref()
        .and_then(|d| d.cached_tokens)
        .unwrap_or(0);
    json!({
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens().unwrap_or(0)},
        "total_tokens": usage.total_tokens,
    })
}

/// Why a response with this finish reason is incomplete; `None` when it is complete.
fn incomplete_reason(finish_reason: Option<&FinishReason>) -> Option<&'static str> {
    match finish_reason {
        Some(FinishReason::Length) => Some("max_output_tokens"),
        Some(FinishReason::ContentFilter) => Some("content_filter"),
        _ => None,
    }
}

/// A reasoning output item.
fn reasoning_item(id: &str, summary: Option<&str>) -> Value {
    let summary: Vec<Value> = summary
        .map(|text| json!({"type": "summary_text", "text": text}))
        .into_iter()
        .collect();
    json!({"type": "reasoning", "id": reasoning_id(id), "summary": summary})
}

/// An `output_text` content part.
fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": []})
}

/// A message output item; `text: None` gives the empty item a stream opens with.
fn message_item(id: &str, status: &str, text: Option<&str>) -> Value {
    let content: Vec<Value> = text.map(output_text).into_iter().collect();
    json!({
        "type": "message",
        "id": message_id(id),
        "status": status,
        "role": "assistant",
        "content": content,
    })
}

/// The whole Response object for `completion`, as OpenAI returns it.
///
/// `id` is the response's id (`resp_<hex>`); its items are named `msg_<hex>` and `rs_<hex>`.
/// The status is `completed`, or `incomplete` (with `incomplete_details.reason`) when the
/// engine stopped at the token limit (`max_output_tokens`) or its content filter. A reasoning
/// trace becomes a reasoning item (its summary) before the message. `usage` is `null` when the
/// engine reported none.
pub fn response_object(
    id: &str,
    created_at: i64,
    model: &str,
    request: &ResponsesRequest,
    completion: &ChatCompletion,
) -> Value {
    let choice = completion.choices.first();
    let reason = incomplete_reason(choice.and_then(|c| c.finish_reason.as_ref()));
    let status = if reason.is_some() {
        "incomplete"
    } else {
        "completed"
    };
    let mut body = response_shell(id, created_at, model, request, status);
    let mut output = Vec::new();
    let message = choice.map(|c| &c.message);
    if let Some(reasoning) = message
        .and_then(|m| m.reasoning.as_deref())
        .filter(|r| !r.is_empty())
    {
        output.push(reasoning_item(id, Some(reasoning)));
    }
    let text = message.and_then(|m| m.content.as_deref()).unwrap_or("");
    output.push(message_item(id, status, Some(text)));
    body.insert("output".into(), Value::Array(output));
    if let Some(reason) = reason {
        body.insert("incomplete_details".into(), json!({ "reason": reason }));
    }
    if let Some(usage) = &completion.usage {
        body.insert("usage".into(), usage_object(usage));
    }
    Value::Object(body)
}

/// The `type` of a stream event, for its SSE `event:` line (`""` if it has none, which no
/// event of [`ResponseStreamer`] lacks).
pub fn event_name(event: &Value) -> &str {
    event.get("type").and_then(Value::as_str).unwrap_or("")
}

/// Where an output item of the stream stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ItemState {
    /// Not announced yet.
    Unopened,
    /// Announced at this output index, still receiving text.
    Open(u32),
    /// Done, at this output index.
    Done(u32),
}

/// Turns chat chunks into Responses stream events.
///
/// [`start`](Self::start) gives `response.created` and `response.in_progress`; each
/// [`push`](Self::push) gives the events of one chunk: the reasoning trace as a reasoning item
/// (`response.reasoning_summary_text.delta`), then the content as a message item
/// (`response.output_text.delta`), each item announced (`response.output_item.added`, its
/// part added) before its first text. [`finish`](Self::finish) closes the open items and ends
/// with `response.completed` (or `response.incomplete` at the token limit) carrying the whole
/// [`response_object`]; [`fail`](Self::fail) ends with `response.failed`. Sequence numbers
/// count every event from 0. After the end, every call gives no events.
#[derive(Debug, Clone)]
pub struct ResponseStreamer {
    id: String,
    created_at: i64,
    model: String,
    request: ResponsesRequest,
    sequence: u64,
    started: bool,
    ended: bool,
    next_output_index: u32,
    reasoning: ItemState,
    reasoning_text: String,
    message: ItemState,
    text: String,
    aggregator: ChatCompletionAggregator,
}

impl ResponseStreamer {
    /// A streamer for response `id` (`resp_<hex>`), created at `created_at` (Unix seconds),
    /// answering `request` with `model`.
    pub fn new(id: &str, created_at: i64, model: &str, request: &ResponsesRequest) -> Self {
        Self {
            id: id.to_owned(),
            created_at,
            model: model.to_owned(),
            request: request.clone(),
            sequence: 0,
            started: false,
            ended: false,
            next_output_index: 0,
            reasoning: ItemState::Unopened,
            reasoning_text: String::new(),
            message: ItemState::Unopened,
            text: String::new(),
            aggregator: ChatCompletionAggregator::new(),
        }
    }

    /// The text streamed so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// One event of `kind` with the next sequence number and `fields`.
    fn event(&mut self, kind: &str, fields: Value) -> Value {
        let mut event = Map::new();
        event.insert("type".into(), kind.into());
        event.insert("sequence_number".into(), self.sequence.into());
        self.sequence += 1;
        if let Value::Object(fields) = fields {
            event.extend(fields);
        }
        Value::Object(event)
    }

    /// The response so far, in `status`, with no output.
    fn shell(&self, status: &str) -> Value {
        Value::Object(response_shell(
            &self.id,
            self.created_at,
            &self.model,
            &self.request,
            status,
        ))
    }

    /// `response.created` and `response.in_progress` (nothing if already started or ended).
    pub fn start(&mut self) -> Vec<Value> {
        if self.started || self.ended {
            return Vec::new();
        }
        self.started = true;
        let response = self.shell("in_progress");
        vec![
            self.event("response.created", json!({ "response": response })),
            self.event("response.in_progress", json!({ "response": response })),
        ]
    }

    /// The events of one chunk (after those of [`start`](Self::start) if it was not called).
    /// Only the first choice is streamed; tool calls and refusals are not.
    pub fn push(&mut self, chunk: &ChatCompletionChunk) -> Vec<Value> {
        if self.ended {
            return Vec::new();
        }
        let mut events = self.start();
        self.aggregator.push(chunk);
        for choice in chunk.choices.iter().filter(|c| c.index == 0) {
            if let Some(piece) = choice.delta.reasoning.as_deref().filter(|p| !p.is_empty()) {
                self.push_reasoning(piece, &mut events);
            }
            if let Some(piece) = choice.delta.content.as_deref().filter(|p| !p.is_empty()) {
                self.push_text(piece, &mut events);
            }
        }
        events
    }

    /// The events of a piece of reasoning. Reasoning after the message began is not streamed.
    fn push_reasoning(&mut self, piece: &str, events: &mut Vec<Value>) {
        let output_index = match self.reasoning {
            ItemState::Done(_) => return,
            ItemState::Open(index) => index,
            ItemState::Unopened => {
                if self.message != ItemState::Unopened {
                    return;
                }
                let index = self.next_output_index;
                self.next_output_index += 1;
                self.reasoning = ItemState::Open(index);
                let item = reasoning_item(&self.id, None);
                let item_id = reasoning_id(&self.id);
                events.push(self.event(
                    "response.output_item.added",
                    json!({"output_index": index, "item": item}),
                ));
                events.push(self.event(
                    "response.reasoning_summary_part.added",
                    json!({
                        "item_id": item_id,
                        "output_index": index,
                        "summary_index": 0,
                        "part": {"type": "summary_text", "text": ""},
                    }),
                ));
                index
            }
        };
        self.reasoning_text.push_str(piece);
        let item_id = reasoning_id(&self.id);
        events.push(self.event(
            "response.reasoning_summary_text.delta",
            json!({"item_id": item_id, "output_index": output_index, "summary_index": 0, "delta": piece}),
        ));
    }

    /// Closes the reasoning item if it is open.
    fn close_reasoning(&mut self, events: &mut Vec<Value>) {
        let ItemState::Open(index) = self.reasoning else {
            return;
        };
        self.reasoning = ItemState::Done(index);
        let item_id = reasoning_id(&self.id);
        let text = self.reasoning_text.clone();
        events.push(self.event(
            "response.reasoning_summary_text.done",
            json!({"item_id": item_id, "output_index": index, "summary_index": 0, "text": text}),
        ));
        events.push(self.event(
            "response.reasoning_summary_part.done",
            json!({
                "item_id": item_id,
                "output_index": index,
                "summary_index": 0,
                "part": {"type": "summary_text", "text": text},
            }),
        ));
        let item = reasoning_item(&self.id, Some(&text));
        events.push(self.event(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        ));
    }

    /// Announces the message item and its text part; returns its output index.
    fn open_message(&mut self, events: &mut Vec<Value>) -> u32 {
        match self.message {
            ItemState::Open(index) | ItemState::Done(index) => index,
            ItemState::Unopened => {
                self.close_reasoning(events);
                let index = self.next_output_index;
                self.next_output_index += 1;
                self.message = ItemState::Open(index);
                let item = message_item(&self.id, "in_progress", None);
                let item_id = message_id(&self.id);
                events.push(self.event(
                    "response.output_item.added",
                    json!({"output_index": index, "item": item}),
                ));
                events.push(self.event(
                    "response.content_part.added",
                    json!({
                        "item_id": item_id,
                        "output_index": index,
                        "content_index": 0,
                        "part": output_text(""),
                    }),
                ));
                index
            }
        }
    }

    /// The events of a piece of content.
    fn push_text(&mut self, piece: &str, events: &mut Vec<Value>) {
        let output_index = self.open_message(events);
        self.text.push_str(piece);
        let item_id = message_id(&self.id);
        events.push(self.event(
            "response.output_text.delta",
            json!({
                "item_id": item_id,
                "output_index": output_index,
                "content_index": 0,
                "delta": piece,
                "logprobs": [],
            }),
        ));
    }

    /// The closing events: the items done, then `response.completed` (or
    /// `response.incomplete`) with the whole response, usage included when the chunks had it.
    pub fn finish(&mut self) -> Vec<Value> {
        if self.ended {
            return Vec::new();
        }
        let mut events = self.start();
        let index = self.open_message(&mut events);
        self.ended = true;

        let mut completion = std::mem::take(&mut self.aggregator).finish();
        if completion.choices.is_empty() {
            completion.choices.push(super::Choice {
                index: 0,
                message: super::ResponseMessage {
                    role: Role::Assistant,
                    content: None,
                    reasoning: None,
                    refusal: None,
                    tool_calls: None,
                    extra: Extra::new(),
                },
                finish_reason: None,
                logprobs: None,
            });
        }
        // The final object shows what was streamed.
        if let Some(choice) = completion.choices.first_mut() {
            choice.message.content = Some(self.text.clone());
            choice.message.reasoning =
                (!self.reasoning_text.is_empty()).then(|| self.reasoning_text.clone());
        }
        let reason = incomplete_reason(
            completion
                .choices
                .first()
                .and_then(|c| c.finish_reason.as_ref()),
        );
        let status = if reason.is_some() {
            "incomplete"
        } else {
            "completed"
        };

        let item_id = message_id(&self.id);
        let text = self.text.clone();
        events.push(self.event(
            "response.output_text.done",
            json!({
                "item_id": item_id,
                "output_index": index,
                "content_index": 0,
                "text": text,
                "logprobs": [],
            }),
        ));
        events.push(self.event(
            "response.content_part.done",
            json!({
                "item_id": item_id,
                "output_index": index,
                "content_index": 0,
                "part": output_text(&text),
            }),
        ));
        let item = message_item(&self.id, status, Some(&text));
        events.push(self.event(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        ));
        self.message = ItemState::Done(index);

        let response = response_object(
            &self.id,
            self.created_at,
            &self.model,
            &self.request,
            &completion,
        );
        let kind = if reason.is_some() {
            "response.incomplete"
        } else {
            "response.completed"
        };
        events.push(self.event(kind, json!({ "response": response })));
        events
    }

    /// A `response.failed` event: the response failed with a `server_error` saying `message`.
    pub fn fail(&mut self, message: &str) -> Vec<Value> {
        if self.ended {
            return Vec::new();
        }
        self.ended = true;
        let mut response = self.shell("failed");
        if let Value::Object(body) = &mut response {
            body.insert(
                "error".into(),
                json!({"code": "server_error", "message": message}),
            );
        }
        vec![self.event("response.failed", json!({ "response": response }))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::{ChunkChoice, ChunkDelta, MessageContent};

    fn request(body: Value) -> ResponsesRequest {
        serde_json::from_value(body).unwrap()
    }

    fn text_of(message: &ChatMessage) -> String {
        message.text_content().unwrap()
    }

    #[test]
    fn string_input_is_one_user_message() {
        let chat = to_chat(&request(json!({
            "model": "m", "input": "Hi", "max_output_tokens": 50, "temperature": 0.5,
            "top_p": 0.9, "stream": true, "user": "u1", "store": false,
            "visibility": "private", "top_k": 40,
        })))
        .unwrap();
        assert_eq!(chat.model, "m");
        assert_eq!(chat.messages, vec![ChatMessage::user("Hi")]);
        assert_eq!(chat.max_tokens, Some(50));
        assert_eq!(chat.temperature, Some(0.5));
        assert_eq!(chat.top_p, Some(0.9));
        assert_eq!(chat.stream, Some(true));
        assert!(chat.wants_stream_usage());
        assert_eq!(chat.user.as_deref(), Some("u1"));
        assert!(!chat.extra.contains_key("store"));
        assert_eq!(chat.extra.get("visibility"), Some(&json!("private")));
        assert_eq!(chat.extra.get("top_k"), Some(&json!(40)));
    }

    #[test]
    fn items_with_parts_and_instructions() {
        let chat = to_chat(&request(json!({
            "model": "m",
            "instructions": "Be brief.",
            "input": [
                {"role": "developer", "content": "Answer in French."},
                {"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "Hello"},
                    {"type": "input_text", "text": "there"},
                ]},
                {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                 "content": [{"type": "output_text", "text": "Bonjour", "annotations": []}]},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"role": "user", "content": "Merci"},
            ],
            "reasoning": {"effort": "low"},
            "stop": ["\n\n"],
        })))
        .unwrap();
        let roles: Vec<Role> = chat.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [
                Role::System,
                Role::System,
                Role::User,
                Role::Assistant,
                Role::User
            ]
        );
        assert_eq!(text_of(&chat.messages[0]), "Be brief.");
        assert_eq!(text_of(&chat.messages[2]), "Hello\nthere");
        assert_eq!(text_of(&chat.messages[3]), "Bonjour");
        assert!(matches!(
            chat.messages[4].content,
            Some(MessageContent::Text(_))
        ));
        assert_eq!(chat.reasoning_effort.as_deref(), Some("low"));
        assert!(
            chat.stop.is_some(),
            "a chat field passed on lands in its field"
        );
        assert!(chat.stream.is_none() && chat.stream_options.is_none());
        assert!(!chat.extra.contains_key("reasoning"));
    }

    #[test]
    fn text_format_becomes_response_format() {
        let chat = to_chat(&request(json!({
            "model": "m", "input": "x",
            "text": {"format": {"type": "json_schema", "name": "p", "schema": {"type": "object"}, "strict": true}},
        })))
        .unwrap();
        let format = chat.response_format.unwrap();
        assert_eq!(format.kind, "json_schema");
        assert_eq!(
            format.json_schema,
            Some(json!({"name": "p", "schema": {"type": "object"}, "strict": true}))
        );
    }

    #[test]
    fn unsupported_input_is_refused_naming_the_field() {
        let cases = [
            (
                json!([{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}]),
                "input[0].type",
            ),
            (
                json!([{"role": "user", "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": "https://x/y.png"},
                ]}]),
                "input[0].content[1].type",
            ),
            (json!([{"role": "tool", "content": "x"}]), "input[0].role"),
            (json!([{"role": "user"}]), "input[0].content"),
            (json!([]), "input"),
        ];
        for (input, field) in cases {
            let err = to_chat(&request(json!({"model": "m", "input": input}))).unwrap_err();
            assert!(err.starts_with(field), "{err}");
        }
        let err = to_chat(&request(json!({
            "model": "m", "input": "x",
            "tools": [{"type": "function", "name": "f", "parameters": {}}],
        })))
        .unwrap_err();
        assert!(err.starts_with("tools"), "{err}");
        let err = to_chat(&request(
            json!({"model": "m", "input": "x", "previous_response_id": "resp_1"}),
        ))
        .unwrap_err();
        assert!(err.starts_with("previous_response_id"), "{err}");
        let err = serde_json::from_value::<ResponsesRequest>(json!({"model": "m", "input": 3}))
            .unwrap_err();
        assert!(err.to_string().contains("input"), "{err}");
    }

    fn completion(finish_reason: FinishReason, reasoning: Option<&str>) -> ChatCompletion {
        let mut agg = ChatCompletionAggregator::new();
        if let Some(reasoning) = reasoning {
            agg.push(
                &ChatCompletionChunk::new("c", "m", 1).with_delta(ChunkDelta::reasoning(reasoning)),
            );
        }
        let mut chunk =
            ChatCompletionChunk::new("c", "m", 1).with_delta(ChunkDelta::content("Hello!"));
        chunk.choices[0].finish_reason = Some(finish_reason);
        chunk.usage = Some(Usage::new(7, 3));
        agg.push(&chunk);
        agg.finish()
    }

    #[test]
    fn response_object_shape() {
        let req = request(
            json!({"model": "m", "input": "Hi", "instructions": "Be kind", "metadata": {"k": "v"}}),
        );
        let obj = response_object(
            "resp_abc",
            1_700_000_000,
            "m",
            &req,
            &completion(FinishReason::Stop, None),
        );
        assert_eq!(obj["id"], "resp_abc");
        assert_eq!(obj["object"], "response");
        assert_eq!(obj["status"], "completed");
        assert_eq!(obj["error"], Value::Null);
        assert_eq!(obj["incomplete_details"], Value::Null);
        assert_eq!(obj["instructions"], "Be kind");
        assert_eq!(obj["metadata"], json!({"k": "v"}));
        assert_eq!(obj["tools"], json!([]));
        assert_eq!(obj["text"], json!({"format": {"type": "text"}}));
        assert_eq!(
            obj["output"],
            json!([{"type": "message", "id": "msg_abc", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": "Hello!", "annotations": []}]}])
        );
        assert_eq!(obj["usage"]["input_tokens"], 7);
        assert_eq!(obj["usage"]["output_tokens"], 3);
        assert_eq!(obj["usage"]["total_tokens"], 10);
        assert_eq!(obj["usage"]["input_tokens_details"]["cached_tokens"], 0);
        assert_eq!(obj["usage"]["output_tokens_details"]["reasoning_tokens"], 0);

        let obj = response_object(
            "resp_abc",
            1,
            "m",
            &request(json!({"model": "m", "input": "Hi"})),
            &completion(FinishReason::Length, Some("Thinking.")),
        );
        assert_eq!(obj["status"], "incomplete");
        assert_eq!(
            obj["incomplete_details"],
            json!({"reason": "max_output_tokens"})
        );
        assert_eq!(obj["metadata"], json!({}));
        assert_eq!(
            obj["output"][0],
            json!({"type": "reasoning", "id": "rs_abc", "summary": [{"type": "summary_text", "text": "Thinking."}]})
        );
        assert_eq!(obj["output"][1]["status"], "incomplete");
    }

    fn content_chunk(delta: ChunkDelta) -> ChatCompletionChunk {
        ChatCompletionChunk::new("c", "m", 1).with_delta(delta)
    }

    fn stream(chunks: &[ChatCompletionChunk]) -> Vec<Value> {
        let req = request(json!({"model": "m", "input": "Hi", "stream": true}));
        let mut streamer = ResponseStreamer::new("resp_abc", 1_700_000_000, "m", &req);
        let mut events = streamer.start();
        for chunk in chunks {
            events.extend(streamer.push(chunk));
        }
        events.extend(streamer.finish());
        assert!(streamer.finish().is_empty() && streamer.fail("late").is_empty());
        events
    }

    fn assert_sequence_numbers(events: &[Value]) {
        for (n, event) in events.iter().enumerate() {
            assert_eq!(event["sequence_number"], json!(n));
        }
    }

    #[test]
    fn stream_of_text() {
        let mut last = ChatCompletionChunk::new("c", "m", 1);
        last.choices.push(ChunkChoice {
            index: 0,
            delta: ChunkDelta::default(),
            finish_reason: Some(FinishReason::Stop),
            logprobs: None,
        });
        let mut usage = ChatCompletionChunk::new("c", "m", 1);
        usage.usage = Some(Usage::new(5, 2));
        let events = stream(&[
            content_chunk(ChunkDelta {
                role: Some(Role::Assistant),
                ..ChunkDelta::content("")
            }),
            content_chunk(ChunkDelta::content("Hel")),
            content_chunk(ChunkDelta::content("lo")),
            last,
            usage,
        ]);
        let names: Vec<&str> = events.iter().map(event_name).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_sequence_numbers(&events);
        let deltas: String = events
            .iter()
            .filter(|e| event_name(e) == "response.output_text.delta")
            .filter_map(|e| e["delta"].as_str())
            .collect();
        assert_eq!(deltas, "Hello");
        assert_eq!(events[0]["response"]["status"], "in_progress");
        assert_eq!(events[2]["item"]["status"], "in_progress");
        assert_eq!(events[4]["item_id"], "msg_abc");
        assert_eq!(events[6]["text"], "Hello");
        let done = &events[9]["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(done["usage"]["total_tokens"], 7);
    }

    #[test]
    fn stream_with_reasoning_and_length() {
        let mut last = content_chunk(ChunkDelta::content("!"));
        last.choices[0].finish_reason = Some(FinishReason::Length);
        let events = stream(&[
            content_chunk(ChunkDelta::reasoning("Hmm")),
            content_chunk(ChunkDelta::content("Hi")),
            last,
        ]);
        let names: Vec<&str> = events.iter().map(event_name).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.reasoning_summary_part.added",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.done",
                "response.reasoning_summary_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.incomplete",
            ]
        );
        assert_sequence_numbers(&events);
        assert_eq!(events[8]["output_index"], 1);
        let done = &events[15]["response"];
        assert_eq!(done["output"][0]["summary"][0]["text"], "Hmm");
        assert_eq!(done["output"][1]["content"][0]["text"], "Hi!");
        assert_eq!(done["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(done["usage"], Value::Null);
    }

    #[test]
    fn empty_stream_and_failure() {
        let events = stream(&[]);
        assert_eq!(event_name(&events[events.len() - 1]), "response.completed");
        assert_eq!(
            events[events.len() - 1]["response"]["output"][0]["content"][0]["text"],
            ""
        );

        let req = request(json!({"model": "m", "input": "Hi"}));
        let mut streamer = ResponseStreamer::new("resp_abc", 1, "m", &req);
        let mut events = streamer.start();
        events.extend(streamer.push(&content_chunk(ChunkDelta::content("Hi"))));
        events.extend(streamer.fail("engine went away"));
        assert_sequence_numbers(&events);
        let failed = &events[events.len() - 1];
        assert_eq!(event_name(failed), "response.failed");
        assert_eq!(failed["response"]["status"], "failed");
        assert_eq!(
            failed["response"]["error"],
            json!({"code": "server_error", "message": "engine went away"})
        );
        assert!(
            streamer
                .push(&content_chunk(ChunkDelta::content("x")))
                .is_empty()
        );
    }
}
