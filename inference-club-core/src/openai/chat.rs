//! Chat completion requests and whole (non-streamed) responses.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Extra, FinishReason, Usage};

/// `POST /v1/chat/completions` request body.
///
/// Known fields are typed; every other field is kept in [`ChatCompletionRequest::extra`] and
/// serialized back unchanged, so engine-specific parameters reach the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    /// The model to use: a served id or a Hugging Face id.
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<ChatMessage>,
    /// Whether to stream the answer as server-sent events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Streaming options (`include_usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Number of choices to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopSequences>,
    /// Maximum tokens to generate (legacy name, honoured by most engines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Maximum tokens to generate, reasoning included (current OpenAI name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Presence penalty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    /// Frequency penalty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    /// Seed for deterministic sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Token bias map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<Extra>,
    /// Whether to return log probabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// How many top log probabilities to return per token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// Which tool, if any, the model must call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Whether the model may call several tools at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// Output format (`text`, `json_object`, `json_schema`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// Reasoning effort (`low`, `medium`, `high`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<String>,
    /// End-user identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Every other field, passed through untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ChatCompletionRequest {
    /// A request for `model` with the given messages and nothing else set.
    pub fn new(model: impl Into<String>, messages: Vec<ChatMessage>) -> Self {
        Self {
            model: model.into(),
            messages,
            stream: None,
            stream_options: None,
            temperature: None,
            top_p: None,
            n: None,
            stop: None,
            max_tokens: None,
            max_completion_tokens: None,
            presence_penalty: None,
            frequency_penalty: None,
            seed: None,
            logit_bias: None,
            logprobs: None,
            top_logprobs: None,
            tools: None,
            tool_choice: None,
            parallel_tool_calls: None,
            response_format: None,
            reasoning_effort: None,
            user: None,
            extra: Extra::new(),
        }
    }

    /// Whether the consumer asked for a streamed answer.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether the consumer asked for a usage chunk at the end of a stream.
    pub fn wants_stream_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }
}

/// `stream_options` of a request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Send one last chunk with `choices: []` and the full usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    /// Other options, passed through.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `stop`: one sequence or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StopSequences {
    /// A single stop sequence.
    One(String),
    /// Several stop sequences.
    Many(Vec<String>),
}

/// The author of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Role {
    /// Instructions from the application.
    System,
    /// Instructions from the developer (newer name for `system`).
    Developer,
    /// The person asking.
    User,
    /// The model.
    Assistant,
    /// The result of a tool call.
    Tool,
    /// The result of a legacy function call.
    Function,
}

/// One message of a conversation in a request.
///
/// Fields other than the typed ones — such as a reasoning trace replayed by the consumer, under
/// whichever name they used — are kept in `extra` and passed to the engine as they came.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// Text or content parts; absent on assistant messages that only call tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<MessageContent>,
    /// Optional participant name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tool calls made by an assistant message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// The call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Other fields, passed through.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ChatMessage {
    /// A message with plain text content.
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            content: Some(MessageContent::Text(text.into())),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            extra: Extra::new(),
        }
    }

    /// A `system` message.
    pub fn system(text: impl Into<String>) -> Self {
        Self::text(Role::System, text)
    }

    /// A `user` message.
    pub fn user(text: impl Into<String>) -> Self {
        Self::text(Role::User, text)
    }

    /// An `assistant` message.
    pub fn assistant(text: impl Into<String>) -> Self {
        Self::text(Role::Assistant, text)
    }

    /// The text of the message: the string, or its text parts joined.
    pub fn text_content(&self) -> Option<String> {
        self.content.as_ref().map(MessageContent::to_text)
    }
}

/// Message content: a plain string or a list of parts (text, images, audio, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Typed parts.
    Parts(Vec<ContentPart>),
}

impl MessageContent {
    /// The text of the content: the string itself, or every text part joined with newlines.
    pub fn to_text(&self) -> String {
        match self {
            Self::Text(text) => text.clone(),
            Self::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// One part of a message's content. The part's fields other than `text` (such as `image_url`
/// or `input_audio`) are kept in `extra`, so every part type passes through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentPart {
    /// The part type: `text`, `image_url`, `input_audio`, `file`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Other fields of the part.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ContentPart {
    /// A `text` part.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            kind: "text".into(),
            text: Some(text.into()),
            extra: Extra::new(),
        }
    }

    /// An `image_url` part.
    pub fn image_url(url: impl Into<String>) -> Self {
        let mut extra = Extra::new();
        extra.insert("image_url".into(), serde_json::json!({ "url": url.into() }));
        Self {
            kind: "image_url".into(),
            text: None,
            extra,
        }
    }
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Always `function` today.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function.
    pub function: FunctionDefinition,
}

impl Tool {
    /// A function tool.
    pub fn function(function: FunctionDefinition) -> Self {
        Self {
            kind: "function".into(),
            function,
        }
    }
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDefinition {
    /// Function name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of its arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Whether the arguments must follow the schema exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// `tool_choice`: a mode (`none`, `auto`, `required`) or a named function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    /// `"none"`, `"auto"` or `"required"`.
    Mode(String),
    /// `{"type": "function", "function": {"name": …}}`.
    Named(Value),
}

/// `response_format`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseFormat {
    /// `text`, `json_object` or `json_schema`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The schema of a `json_schema` format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<Value>,
    /// Other fields, passed through.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A tool call made by the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Call id, echoed by the `tool` message that answers it.
    pub id: String,
    /// Always `function` today.
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    /// The function and its arguments.
    pub function: FunctionCall,
}

pub(crate) fn function_kind() -> String {
    "function".into()
}

/// The function of a tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// Function name.
    pub name: String,
    /// Arguments as a JSON string.
    pub arguments: String,
}

/// A whole chat completion (`object: "chat.completion"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// Completion id.
    pub id: String,
    /// Always `chat.completion` (whatever an engine sent).
    #[serde(
        default = "completion_object",
        deserialize_with = "read_completion_object"
    )]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// The choices.
    pub choices: Vec<Choice>,
    /// Token counts.
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

fn completion_object() -> String {
    "chat.completion".into()
}

fn read_completion_object<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| completion_object())
}

impl ChatCompletion {
    /// The text of the first choice, if any.
    pub fn text(&self) -> Option<String> {
        self.choices.first().and_then(|c| c.message.content.clone())
    }
}

/// The assistant's message in a whole completion.
///
/// The reasoning trace is read from `reasoning_content` or `reasoning` (both may be present; they
/// then carry the same text) and written as `reasoning_content`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "ResponseMessageWire")]
pub struct ResponseMessage {
    /// Always `assistant`.
    pub role: Role,
    /// The answer text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The reasoning trace.
    #[serde(rename = "reasoning_content", skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    /// A refusal by the model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Tool calls the model made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// Other fields, passed through.
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Deserialize)]
struct ResponseMessageWire {
    #[serde(default = "assistant_role")]
    role: Role,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    reasoning: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
    #[serde(flatten)]
    extra: Extra,
}

fn assistant_role() -> Role {
    Role::Assistant
}

impl From<ResponseMessageWire> for ResponseMessage {
    fn from(w: ResponseMessageWire) -> Self {
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

impl From<ResponseMessage> for ChatMessage {
    /// The message to append to the conversation for the next turn: content and tool calls,
    /// without the reasoning trace (whether to replay it is the consumer's choice).
    fn from(m: ResponseMessage) -> Self {
        Self {
            role: m.role,
            content: m.content.map(MessageContent::Text),
            name: None,
            tool_calls: m.tool_calls,
            tool_call_id: None,
            extra: Extra::new(),
        }
    }
}

/// One choice of a whole completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Choice index.
    pub index: u32,
    /// The assistant's message.
    pub message: ResponseMessage,
    /// Why generation stopped.
    #[serde(default, deserialize_with = "super::chunk::deserialize_finish_reason")]
    pub finish_reason: Option<FinishReason>,
    /// Log probabilities, passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_request_fields_pass_through() {
        let body = json!({
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "top_k": 20,
            "chat_template_kwargs": {"enable_thinking": false}
        });
        let req: ChatCompletionRequest = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(req.extra["top_k"], json!(20));
        assert_eq!(serde_json::to_value(&req).unwrap(), body);
    }

    #[test]
    fn content_parts_round_trip() {
        let body = json!({"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}
        ]});
        let msg: ChatMessage = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(msg.text_content().as_deref(), Some("what is this?"));
        assert_eq!(serde_json::to_value(&msg).unwrap(), body);
    }

    #[test]
    fn tool_choice_forms() {
        let auto: ToolChoice = serde_json::from_value(json!("auto")).unwrap();
        assert_eq!(auto, ToolChoice::Mode("auto".into()));
        let named: ToolChoice =
            serde_json::from_value(json!({"type": "function", "function": {"name": "f"}})).unwrap();
        assert!(matches!(named, ToolChoice::Named(_)));
    }

    #[test]
    fn replayed_reasoning_passes_through_under_its_own_name() {
        for name in ["reasoning", "reasoning_content"] {
            let body = json!({"role": "assistant", "content": "x", name: "r"});
            let msg: ChatMessage = serde_json::from_value(body.clone()).unwrap();
            assert_eq!(serde_json::to_value(&msg).unwrap(), body);
        }
    }

    #[test]
    fn response_message_reads_either_reasoning_name_and_writes_one() {
        for body in [
            json!({"role": "assistant", "content": "x", "reasoning": "r"}),
            json!({"role": "assistant", "content": "x", "reasoning_content": "r"}),
            json!({"role": "assistant", "content": "x", "reasoning": "r", "reasoning_content": "r"}),
        ] {
            let msg: ResponseMessage = serde_json::from_value(body).unwrap();
            assert_eq!(msg.reasoning.as_deref(), Some("r"));
            assert_eq!(
                serde_json::to_value(&msg).unwrap(),
                json!({"role": "assistant", "content": "x", "reasoning_content": "r"})
            );
        }
    }
}
