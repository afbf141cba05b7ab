//! The adapter for Ollama's native API (`/api/chat`, `/api/tags`).

use std::collections::HashMap;

use async_stream::stream;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use inference_club_core::endpoint::Endpoint;
use inference_club_core::openai::{
    ChatCompletionChunk, ChatCompletionRequest, ChatMessage, ChunkDelta, ContentPart, FinishReason,
    FunctionCallDelta, MessageContent, Model, Role, StopSequences, ToolCallDelta, Usage,
};
use inference_club_core::provider::{
    Call, CallOutput, CallStream, ChunkStream, Provider, ProviderError, RequestContext,
    TimeoutPhase,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use url::Url;

use super::OpenAiCompatible;
use crate::{Timeouts, http};

/// Ollama's own option names, which are moved from a request's extra fields into `options`.
const OPTION_NAMES: &[&str] = &[
    "num_keep",
    "seed",
    "num_predict",
    "top_k",
    "top_p",
    "min_p",
    "typical_p",
    "repeat_last_n",
    "temperature",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "penalize_newline",
    "stop",
    "num_ctx",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "use_mmap",
    "use_mlock",
    "num_thread",
    "low_vram",
    "numa",
    "tfs_z",
    "mirostat",
    "mirostat_tau",
    "mirostat_eta",
];

/// An Ollama server spoken to in its native API: `POST /api/chat` streamed as NDJSON, and
/// `GET /api/tags` for the model list.
///
/// The OpenAI request is mapped to Ollama's shape: text content, images from `image_url` data
/// URLs, tools (OpenAI function tools, which Ollama accepts as they are), `think` (from a
/// passthrough `think` field or from `reasoning_effort`), `format` (from `response_format`) and
/// `options` (sampling parameters; `max_completion_tokens`/`max_tokens` become `num_predict`;
/// Ollama option names such as `top_k`, `min_p` or `num_ctx` among the request's extra fields,
/// `repetition_penalty` as `repeat_penalty`, and an `options` object). `keep_alive` passes
/// through; other extra fields are not Ollama's and are left out.
///
/// Each NDJSON line becomes one [`ChatCompletionChunk`] (`message.thinking` as the reasoning
/// trace, tool calls with generated ids and their arguments as a JSON string); the last line's
/// `done_reason` becomes the finish reason and its token counts a usage-only chunk.
///
/// Two other endpoints are served ([`Provider::call`]), translated to and from the native API:
///
/// - `/v1/completions` through `POST /api/generate` with `raw: true` (no chat template): the
///   prompt (a string, or the first string of an array), `stream`, and `options` as for chat
///   (`max_tokens` as `num_predict`, `temperature`, `top_p`, `stop`, `seed`, penalties, Ollama
///   option names); each answer or NDJSON line becomes an OpenAI `text_completion` object, the
///   last with the finish reason, then the usage (whole: in the object; streamed: in a chunk
///   without choices when `stream_options.include_usage` asks for it).
/// - `/v1/embeddings` through `POST /api/embed` (`input` a string or an array of strings,
///   `dimensions`, `truncate`): the answer becomes OpenAI's list of `embedding` objects with
///   the prompt's token count as usage.
///
/// Whole answers are read up to [`OpenAiCompatible::MAX_ANSWER_BYTES`]. Other endpoints are
/// refused with [`ProviderError::unsupported`].
///
/// Use [`OpenAiCompatible`] instead for Ollama's `/v1` endpoint.
#[derive(Debug, Clone)]
pub struct Ollama {
    chat_url: Url,
    tags_url: Url,
    generate_url: Url,
    embed_url: Url,
    api_key: Option<String>,
    timeouts: Timeouts,
    http: reqwest::Client,
}

/// Builds an [`Ollama`] adapter.
#[derive(Debug, Clone)]
pub struct OllamaBuilder {
    base_url: String,
    api_key: Option<String>,
    timeouts: Timeouts,
    http: Option<reqwest::Client>,
}

impl OllamaBuilder {
    /// The API key sent as `Authorization: Bearer …` (for an Ollama behind an authenticating
    /// proxy; Ollama itself has none).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The timeouts (default: [`Timeouts::default`]).
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// A caller-supplied HTTP client (its own connect timeout then applies).
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// The adapter; fails when the base URL is not an absolute http(s) URL.
    pub fn build(self) -> Result<Ollama, ProviderError> {
        let [chat_url, tags_url, generate_url, embed_url] = http::endpoint_urls(
            &self.base_url,
            ["api/chat", "api/tags", "api/generate", "api/embed"],
        )?;
        Ok(Ollama {
            chat_url,
            tags_url,
            generate_url,
            embed_url,
            api_key: self.api_key,
            timeouts: self.timeouts,
            http: http::client_or_new(self.http, self.timeouts.connect)?,
        })
    }
}

impl Ollama {
    /// Largest single NDJSON line accepted from the engine, in bytes.
    pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

    /// A builder for the Ollama server at `base_url`, such as `http://127.0.0.1:11434` (without
    /// `/v1`: this adapter speaks the native API).
    pub fn builder(base_url: impl Into<String>) -> OllamaBuilder {
        OllamaBuilder {
            base_url: base_url.into(),
            api_key: None,
            timeouts: Timeouts::default(),
            http: None,
        }
    }

    fn authorized(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        http::authorized(builder, self.api_key.as_deref())
    }
}

/// The error for a non-success answer of a native endpoint. Each exists on every Ollama, so a
/// 404 that says "not found" is about the model.
async fn status_error(response: reqwest::Response, model: String) -> ProviderError {
    match http::status_error(response, &model).await {
        ProviderError::Rejected {
            status: 404,
            message,
            ..
        } if message.contains("not found") => ProviderError::ModelNotFound { model },
        other => other,
    }
}

#[async_trait]
impl Provider for Ollama {
    async fn models(&self) -> Result<Vec<Model>, ProviderError> {
        let request = self.authorized(self.http.get(self.tags_url.clone()));
        let response = tokio::time::timeout(self.timeouts.connect, request.send())
            .await
            .map_err(|_| ProviderError::Timeout {
                phase: TimeoutPhase::Connect,
                after: self.timeouts.connect,
            })?
            .map_err(|e| http::send_error(&e, self.timeouts.connect))?;
        if !response.status().is_success() {
            return Err(http::status_error(response, "").await);
        }
        let body = tokio::time::timeout(self.timeouts.idle, response.bytes())
            .await
            .map_err(|_| ProviderError::Timeout {
                phase: TimeoutPhase::Idle,
                after: self.timeouts.idle,
            })?
            .map_err(|e| http::send_error(&e, self.timeouts.connect))?;
        let tags: Tags = serde_json::from_slice(&body).map_err(|e| ProviderError::Protocol {
            message: format!("engine's model list (/api/tags) is not valid: {e}"),
        })?;
        Ok(tags
            .models
            .into_iter()
            .map(|entry| {
                let id = if entry.name.is_empty() {
                    entry.model
                } else {
                    entry.name
                };
                let mut model = Model::new(id, "ollama");
                model.created = entry
                    .modified_at
                    .as_deref()
                    .and_then(unix_seconds)
                    .unwrap_or(0);
                model
            })
            .filter(|model| !model.id.is_empty())
            .collect())
    }

    async fn chat(
        &self,
        request: ChatCompletionRequest,
        context: RequestContext,
    ) -> Result<ChunkStream, ProviderError> {
        let model = request.model.clone();
        let body =
            serde_json::to_vec(&chat_body(&request)?).map_err(|e| ProviderError::Protocol {
                message: format!("cannot encode the request: {e}"),
            })?;
        let send = self
            .authorized(self.http.post(self.chat_url.clone()))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/x-ndjson")
            .body(body)
            .send();
        // Ollama sends its headers once the model is loaded, which may take a while.
        let sent_at = std::time::Instant::now();
        let response = tokio::select! {
            () = context.cancel.cancelled() => return Err(ProviderError::Cancelled),
            sent = tokio::time::timeout(self.timeouts.first_token, send) => sent,
        }
        .map_err(|_| ProviderError::Timeout {
            phase: TimeoutPhase::FirstToken,
            after: self.timeouts.first_token,
        })?
        .map_err(|e| http::send_error(&e, self.timeouts.connect))?;
        if !response.status().is_success() {
            return Err(status_error(response, model).await);
        }
        let chunks = chunks(
            response.bytes_stream(),
            format!("chatcmpl-ollama-{}", context.request_id),
            model,
            now_unix(),
        );
        Ok(crate::timeouts::guard(
            chunks.boxed(),
            self.timeouts,
            &context,
            sent_at,
        ))
    }

    async fn call(&self, call: Call, context: RequestContext) -> Result<CallStream, ProviderError> {
        self.native_call(call, context).await
    }
}

impl Ollama {
    /// Answers [`Provider::call`] for the endpoints translated to the native API.
    async fn native_call(
        &self,
        call: Call,
        context: RequestContext,
    ) -> Result<CallStream, ProviderError> {
        let (url, body) = match call.endpoint {
            Endpoint::Completions => (&self.generate_url, generate_body(&call)?),
            Endpoint::Embeddings => (&self.embed_url, embed_body(&call.body)?),
            other => return Err(ProviderError::unsupported(other)),
        };
        let model = call.model().to_owned();
        let streamed = call.is_stream();
        let body = serde_json::to_vec(&body).map_err(|e| ProviderError::Protocol {
            message: format!("cannot encode the request: {e}"),
        })?;
        let request = self
            .authorized(self.http.post(url.clone()))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                reqwest::header::ACCEPT,
                if streamed {
                    "application/x-ndjson"
                } else {
                    "application/json"
                },
            )
            .body(body);
        let sent_at = std::time::Instant::now();
        let response = http::send_for_output(request, self.timeouts, &context).await?;
        if !response.status().is_success() {
            return Err(status_error(response, model).await);
        }
        let completion = Completion {
            id: format!("cmpl-ollama-{}", context.request_id),
            model,
            created: now_unix(),
        };
        if streamed {
            let include_usage = call
                .body
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let chunks = completion_chunks(response.bytes_stream(), completion, include_usage)
                .map(|chunk| chunk.map(CallOutput::Json));
            return Ok(crate::timeouts::guard_call(
                Box::pin(chunks),
                self.timeouts,
                &context,
                sent_at,
            ));
        }
        let data = http::read_body(
            response,
            OpenAiCompatible::MAX_ANSWER_BYTES,
            self.timeouts.idle,
            &context,
        )
        .await?;
        let answer = match call.endpoint {
            Endpoint::Embeddings => embeddings_answer(&data, &completion.model)?,
            _ => {
                let answer = parse_answer::<GenerateLine>(&data, "/api/generate")?;
                if let Some(error) = answer.error.clone().filter(|e| !e.is_null()) {
                    return Err(line_error(error));
                }
                completion.whole(answer)
            }
        };
        Ok(Box::pin(futures_util::stream::once(async move {
            Ok(CallOutput::Json(answer))
        })))
    }
}

// ----- the request -----

/// The `/api/generate` body for an OpenAI text-completion request; see [`Ollama`].
fn generate_body(call: &Call) -> Result<Value, ProviderError> {
    let given = call.body.as_object().cloned().unwrap_or_default();
    let prompt = match given.get("prompt") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(prompt)) => prompt.clone(),
        Some(Value::Array(prompts)) => match prompts.first() {
            None => String::new(),
            Some(Value::String(prompt)) => prompt.clone(),
            Some(_) => return Err(text_only("prompt")),
        },
        Some(_) => return Err(text_only("prompt")),
    };
    let mut body = Map::new();
    body.insert("model".into(), json!(call.model()));
    body.insert("prompt".into(), json!(prompt));
    body.insert("raw".into(), json!(true));
    body.insert("stream".into(), json!(call.is_stream()));
    if let Some(keep_alive) = given.get("keep_alive") {
        body.insert("keep_alive".into(), keep_alive.clone());
    }
    let mut options = match given.get("options") {
        Some(Value::Object(options)) => options.clone(),
        _ => Map::new(),
    };
    for (from, to) in [
        ("max_tokens", "num_predict"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("seed", "seed"),
        ("presence_penalty", "presence_penalty"),
        ("frequency_penalty", "frequency_penalty"),
        ("repetition_penalty", "repeat_penalty"),
    ] {
        if let Some(value) = given.get(from).filter(|v| !v.is_null()) {
            options.insert(to.into(), value.clone());
        }
    }
    match given.get("stop") {
        Some(Value::String(stop)) => {
            options.insert("stop".into(), json!([stop]));
        }
        Some(stop @ Value::Array(_)) => {
            options.insert("stop".into(), stop.clone());
        }
        _ => {}
    }
    for (name, value) in &given {
        if OPTION_NAMES.contains(&name.as_str()) && name != "stop" && !value.is_null() {
            options.insert(name.clone(), value.clone());
        }
    }
    if !options.is_empty() {
        body.insert("options".into(), Value::Object(options));
    }
    Ok(Value::Object(body))
}

/// The `/api/embed` body for an OpenAI embeddings request; see [`Ollama`].
fn embed_body(given: &Value) -> Result<Value, ProviderError> {
    let input = match given.get("input") {
        Some(Value::String(text)) => json!(text),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => json!(items),
        _ => return Err(text_only("input")),
    };
    let mut body = Map::new();
    body.insert(
        "model".into(),
        given.get("model").cloned().unwrap_or(Value::Null),
    );
    body.insert("input".into(), input);
    for name in ["dimensions", "truncate", "keep_alive", "options"] {
        if let Some(value) = given.get(name).filter(|v| !v.is_null()) {
            body.insert(name.into(), value.clone());
        }
    }
    Ok(Value::Object(body))
}

/// The refusal of a field that is not text (token ids, which Ollama's native API does not take).
fn text_only(field: &str) -> ProviderError {
    ProviderError::Rejected {
        status: 400,
        message: format!("Ollama takes `{field}` only as a string or an array of strings"),
        code: Some("invalid_value".into()),
    }
}

/// The `/api/chat` body for an OpenAI request.
fn chat_body(request: &ChatCompletionRequest) -> Result<Value, ProviderError> {
    let mut body = Map::new();
    body.insert("model".into(), json!(request.model));
    body.insert(
        "messages".into(),
        Value::Array(messages(&request.messages)?),
    );
    body.insert("stream".into(), json!(true));
    if let Some(tools) = &request.tools {
        body.insert("tools".into(), json!(tools));
    }
    if let Some(think) = request
        .extra
        .get("think")
        .cloned()
        .or_else(|| request.reasoning_effort.as_deref().map(think_from_effort))
    {
        body.insert("think".into(), think);
    }
    if let Some(keep_alive) = request.extra.get("keep_alive") {
        body.insert("keep_alive".into(), keep_alive.clone());
    }
    let format = match &request.response_format {
        Some(format) if format.kind == "json_object" => Some(json!("json")),
        Some(format) if format.kind == "json_schema" => format
            .json_schema
            .as_ref()
            .map(|s| s.get("schema").cloned().unwrap_or_else(|| s.clone())),
        _ => request.extra.get("format").cloned(),
    };
    if let Some(format) = format {
        body.insert("format".into(), format);
    }
    let options = options(request);
    if !options.is_empty() {
        body.insert("options".into(), Value::Object(options));
    }
    Ok(Value::Object(body))
}

/// Ollama's `think` for an OpenAI `reasoning_effort`.
fn think_from_effort(effort: &str) -> Value {
    match effort {
        "none" => json!(false),
        "minimal" | "low" => json!("low"),
        "medium" => json!("medium"),
        "high" | "xhigh" => json!("high"),
        _ => json!(true),
    }
}

/// Ollama's `options`: an `options` object among the extra fields, then the typed sampling
/// parameters, then Ollama option names among the extra fields.
fn options(request: &ChatCompletionRequest) -> Map<String, Value> {
    let mut options = match request.extra.get("options") {
        Some(Value::Object(given)) => given.clone(),
        _ => Map::new(),
    };
    let mut set = |name: &str, value: Option<Value>| {
        if let Some(value) = value {
            options.insert(name.to_owned(), value);
        }
    };
    set("temperature", request.temperature.map(Value::from));
    set("top_p", request.top_p.map(Value::from));
    set("seed", request.seed.map(Value::from));
    set(
        "presence_penalty",
        request.presence_penalty.map(Value::from),
    );
    set(
        "frequency_penalty",
        request.frequency_penalty.map(Value::from),
    );
    set(
        "stop",
        request.stop.as_ref().map(|stop| match stop {
            StopSequences::One(one) => json!([one]),
            StopSequences::Many(many) => json!(many),
        }),
    );
    set(
        "num_predict",
        request
            .max_completion_tokens
            .or(request.max_tokens)
            .map(Value::from),
    );
    set(
        "repeat_penalty",
        request.extra.get("repetition_penalty").cloned(),
    );
    for (name, value) in &request.extra {
        if OPTION_NAMES.contains(&name.as_str()) {
            options.insert(name.clone(), value.clone());
        }
    }
    options
}

/// Ollama's messages for OpenAI's.
fn messages(messages: &[ChatMessage]) -> Result<Vec<Value>, ProviderError> {
    // Tool results name their call by id; Ollama wants the tool's name.
    let mut tool_names: HashMap<&str, &str> = HashMap::new();
    let mut out = Vec::with_capacity(messages.len());
    for message in messages {
        let mut m = Map::new();
        let role = match message.role {
            Role::System | Role::Developer => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool | Role::Function => "tool",
            // A role newer than Ollama's API: the closest is the user's.
            _ => "user",
        };
        m.insert("role".into(), json!(role));
        let (content, images) = match &message.content {
            None => (String::new(), Vec::new()),
            Some(MessageContent::Text(text)) => (text.clone(), Vec::new()),
            Some(MessageContent::Parts(parts)) => content_parts(parts)?,
        };
        m.insert("content".into(), json!(content));
        if !images.is_empty() {
            m.insert("images".into(), json!(images));
        }
        let thinking = ["thinking", "reasoning_content", "reasoning"]
            .iter()
            .find_map(|name| message.extra.get(*name).and_then(Value::as_str));
        if let Some(thinking) = thinking {
            m.insert("thinking".into(), json!(thinking));
        }
        if let Some(calls) = message.tool_calls.as_ref().filter(|c| !c.is_empty()) {
            let calls: Vec<Value> = calls
                .iter()
                .map(|call| {
                    tool_names.insert(&call.id, &call.function.name);
                    // Ollama takes the arguments as an object.
                    let arguments = serde_json::from_str::<Value>(&call.function.arguments)
                        .unwrap_or_else(|_| json!(call.function.arguments));
                    json!({"function": {"name": call.function.name, "arguments": arguments}})
                })
                .collect();
            m.insert("tool_calls".into(), Value::Array(calls));
        }
        let tool_name = message
            .tool_call_id
            .as_deref()
            .and_then(|id| tool_names.get(id).copied())
            .or(message.name.as_deref().filter(|_| role == "tool"));
        if let Some(name) = tool_name {
            m.insert("tool_name".into(), json!(name));
        }
        out.push(Value::Object(m));
    }
    Ok(out)
}

/// The text and base64 images of a message's parts.
fn content_parts(parts: &[ContentPart]) -> Result<(String, Vec<String>), ProviderError> {
    let mut texts = Vec::new();
    let mut images = Vec::new();
    for part in parts {
        if let Some(text) = &part.text {
            texts.push(text.as_str());
        }
        if part.kind != "image_url" {
            continue;
        }
        let url = match part.extra.get("image_url") {
            Some(Value::String(url)) => Some(url.as_str()),
            Some(Value::Object(image)) => image.get("url").and_then(Value::as_str),
            _ => None,
        };
        let data = url
            .filter(|url| url.starts_with("data:"))
            .and_then(|url| url.split_once(";base64,"))
            .map(|(_, data)| data.to_owned());
        match data {
            Some(data) => images.push(data),
            None => {
                return Err(ProviderError::Rejected {
                    status: 400,
                    message: "Ollama takes images only as base64 data URLs \
                              (data:image/…;base64,…)"
                        .into(),
                    code: Some("unsupported_image_url".into()),
                });
            }
        }
    }
    Ok((texts.join("\n"), images))
}

// ----- the response -----

#[derive(Deserialize)]
struct Tags {
    #[serde(default)]
    models: Vec<TagEntry>,
}

#[derive(Deserialize)]
struct TagEntry {
    #[serde(default)]
    name: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    modified_at: Option<String>,
}

/// One NDJSON line of `/api/chat`.
#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    message: Option<LineMessage>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    eval_count: Option<u64>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct LineMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<LineToolCall>>,
}

#[derive(Deserialize)]
struct LineToolCall {
    #[serde(default)]
    id: Option<String>,
    function: LineFunction,
}

#[derive(Deserialize)]
struct LineFunction {
    #[serde(default)]
    name: String,
    #[serde(default)]
    arguments: Value,
}

/// An answer of `/api/generate`, or one NDJSON line of a streamed one.
#[derive(Deserialize)]
struct GenerateLine {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    response: Option<String>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    eval_count: Option<u64>,
    #[serde(default)]
    error: Option<Value>,
}

/// An answer of `/api/embed`.
#[derive(Deserialize)]
struct EmbedAnswer {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    embeddings: Vec<Value>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    error: Option<Value>,
}

/// A whole answer of a native endpoint, parsed.
fn parse_answer<T: serde::de::DeserializeOwned>(
    data: &[u8],
    endpoint: &str,
) -> Result<T, ProviderError> {
    serde_json::from_slice(data).map_err(|e| ProviderError::Protocol {
        message: format!("engine's answer from {endpoint} is not valid: {e}"),
    })
}

/// OpenAI's embeddings list for an `/api/embed` answer.
fn embeddings_answer(data: &[u8], model: &str) -> Result<Value, ProviderError> {
    let answer = parse_answer::<EmbedAnswer>(data, "/api/embed")?;
    if let Some(error) = answer.error.filter(|e| !e.is_null()) {
        return Err(line_error(error));
    }
    let data: Vec<Value> = answer
        .embeddings
        .into_iter()
        .enumerate()
        .map(|(index, embedding)| json!({"object": "embedding", "index": index, "embedding": embedding}))
        .collect();
    let tokens = answer.prompt_eval_count.unwrap_or(0);
    Ok(json!({
        "object": "list",
        "data": data,
        "model": answer.model.filter(|m| !m.is_empty()).unwrap_or_else(|| model.to_owned()),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
}

/// What every `text_completion` object of one answer shares.
struct Completion {
    id: String,
    model: String,
    created: u64,
}

impl Completion {
    /// One `text_completion` object with one choice.
    fn object(&self, text: &str, finish_reason: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "text": text,
                "index": 0,
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
        })
    }

    /// Takes the model Ollama names in `line`, if any.
    fn note_model(&mut self, line: &GenerateLine) {
        if let Some(model) = line.model.as_ref().filter(|m| !m.is_empty()) {
            model.clone_into(&mut self.model);
        }
    }

    /// The whole completion for a whole `/api/generate` answer.
    fn whole(mut self, answer: GenerateLine) -> Value {
        self.note_model(&answer);
        let mut object = self.object(
            answer.response.as_deref().unwrap_or_default(),
            Some(finish_reason(answer.done_reason.as_deref())),
        );
        object["usage"] = usage(&answer);
        object
    }
}

/// OpenAI's finish reason for Ollama's `done_reason`.
fn finish_reason(done_reason: Option<&str>) -> &'static str {
    match done_reason {
        Some("length") => "length",
        _ => "stop",
    }
}

/// OpenAI's usage for the token counts of Ollama's last line.
fn usage(line: &GenerateLine) -> Value {
    json!(Usage::new(
        line.prompt_eval_count.unwrap_or(0),
        line.eval_count.unwrap_or(0)
    ))
}

/// Parses the bytes of a streamed `/api/generate` NDJSON body into `text_completion` chunks:
/// one per line, the last (`done: true`) with the finish reason, then a usage chunk without
/// choices when `include_usage`. Errors as for [`chunks`].
fn completion_chunks<S, E>(
    body: S,
    mut completion: Completion,
    include_usage: bool,
) -> impl Stream<Item = Result<Value, ProviderError>>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    stream! {
        let mut lines = std::pin::pin!(lines(body, Ollama::MAX_LINE_BYTES));
        while let Some(line) = lines.next().await {
            let parsed = line.and_then(|line| {
                serde_json::from_slice::<GenerateLine>(&line).map_err(|e| ProviderError::Protocol {
                    message: format!(
                        "engine sent a malformed line ({e}): {}",
                        String::from_utf8_lossy(&line[..line.len().min(200)])
                    ),
                })
            });
            let line = match parsed {
                Ok(line) => line,
                Err(error) => {
                    yield Err(error);
                    return;
                }
            };
            if let Some(error) = line.error.clone().filter(|e| !e.is_null()) {
                yield Err(line_error(error));
                return;
            }
            completion.note_model(&line);
            let text = line.response.as_deref().unwrap_or_default();
            if !line.done {
                yield Ok(completion.object(text, None));
                continue;
            }
            yield Ok(completion.object(text, Some(finish_reason(line.done_reason.as_deref()))));
            if include_usage {
                let mut last = completion.object("", None);
                last["choices"] = json!([]);
                last["usage"] = usage(&line);
                yield Ok(last);
            }
            return;
        }
        yield Err(ProviderError::Unavailable {
            status: None,
            message: "engine stream ended before its last line (done: true)".into(),
        });
    }
}

/// The error for an `{"error": …}` line (or answer) of Ollama.
fn line_error(error: Value) -> ProviderError {
    let message = match error {
        Value::String(text) => text,
        Value::Object(ref object) => object
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| error.to_string(), str::to_owned),
        other => other.to_string(),
    };
    crate::error_from_engine(None, message, None)
}

/// Turns Ollama's NDJSON lines into chunks; see [`Ollama`].
struct ChunkMaker {
    id: String,
    model: String,
    created: u64,
    role_sent: bool,
    tool_calls: u32,
}

impl ChunkMaker {
    /// The chunks for one line, and whether it was the last.
    fn line(&mut self, line: Line) -> Result<(Vec<ChatCompletionChunk>, bool), ProviderError> {
        if let Some(error) = line.error.filter(|e| !e.is_null()) {
            return Err(line_error(error));
        }
        if let Some(model) = line.model.filter(|m| !m.is_empty()) {
            self.model = model;
        }
        let mut delta = ChunkDelta::default();
        if let Some(message) = line.message {
            delta.content = message.content.filter(|c| !c.is_empty());
            delta.reasoning = message.thinking.filter(|t| !t.is_empty());
            let calls: Vec<ToolCallDelta> = message
                .tool_calls
                .unwrap_or_default()
                .into_iter()
                .map(|call| self.tool_call(call))
                .collect();
            delta.tool_calls = (!calls.is_empty()).then_some(calls);
        }
        if !self.role_sent {
            delta.role = Some(Role::Assistant);
        }
        let mut out = Vec::new();
        if !line.done {
            if delta.has_output() || !self.role_sent {
                self.role_sent = true;
                out.push(self.chunk(delta));
            }
            return Ok((out, false));
        }
        self.role_sent = true;
        let finish = match line.done_reason.as_deref().and_then(FinishReason::parse) {
            None | Some(FinishReason::Stop) if self.tool_calls > 0 => FinishReason::ToolCalls,
            None => FinishReason::Stop,
            Some(reason) => reason,
        };
        let mut last = self.chunk(delta);
        if let Some(choice) = last.choices.first_mut() {
            choice.finish_reason = Some(finish);
        }
        out.push(last);
        if line.prompt_eval_count.is_some() || line.eval_count.is_some() {
            let mut usage =
                ChatCompletionChunk::new(self.id.clone(), self.model.clone(), self.created);
            usage.usage = Some(Usage::new(
                line.prompt_eval_count.unwrap_or(0),
                line.eval_count.unwrap_or(0),
            ));
            out.push(usage);
        }
        Ok((out, true))
    }

    fn tool_call(&mut self, call: LineToolCall) -> ToolCallDelta {
        let index = self.tool_calls;
        self.tool_calls = self.tool_calls.saturating_add(1);
        let arguments = match call.function.arguments {
            Value::Null => "{}".to_owned(),
            Value::String(text) => text,
            other => other.to_string(),
        };
        ToolCallDelta {
            index,
            id: Some(
                call.id
                    .filter(|id| !id.is_empty())
                    .unwrap_or_else(|| format!("call_{}_{index}", self.id)),
            ),
            kind: Some("function".into()),
            function: Some(FunctionCallDelta {
                name: Some(call.function.name),
                arguments: Some(arguments),
            }),
        }
    }

    fn chunk(&self, delta: ChunkDelta) -> ChatCompletionChunk {
        ChatCompletionChunk::new(self.id.clone(), self.model.clone(), self.created)
            .with_delta(delta)
    }
}

/// Parses the bytes of an `/api/chat` NDJSON body into chunks. Lines split across reads (and
/// characters split across them), CRLF and blank lines are handled; a line longer than
/// [`Ollama::MAX_LINE_BYTES`] or one that is not JSON ends the stream with a protocol error; an
/// `{"error": …}` line ends it with [`ProviderError::Unavailable`], and so does a body that ends
/// before the line with `done: true`.
pub(crate) fn chunks<S, E>(
    body: S,
    id: String,
    model: String,
    created: u64,
) -> impl Stream<Item = Result<ChatCompletionChunk, ProviderError>>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    stream! {
        let mut maker = ChunkMaker { id, model, created, role_sent: false, tool_calls: 0 };
        let mut lines = std::pin::pin!(lines(body, Ollama::MAX_LINE_BYTES));
        while let Some(line) = lines.next().await {
            let parsed = line.and_then(|line| {
                serde_json::from_slice::<Line>(&line).map_err(|e| ProviderError::Protocol {
                    message: format!(
                        "engine sent a malformed line ({e}): {}",
                        String::from_utf8_lossy(&line[..line.len().min(200)])
                    ),
                })
            });
            match parsed.and_then(|line| maker.line(line)) {
                Ok((chunks, done)) => {
                    for chunk in chunks {
                        yield Ok(chunk);
                    }
                    if done {
                        return;
                    }
                }
                Err(error) => {
                    yield Err(error);
                    return;
                }
            }
        }
        yield Err(ProviderError::Unavailable {
            status: None,
            message: "engine stream ended before its last line (done: true)".into(),
        });
    }
}

/// Splits a byte stream into its non-blank lines, without the line end (`\n` or `\r\n`).
fn lines<S, E>(body: S, max_line: usize) -> impl Stream<Item = Result<Vec<u8>, ProviderError>>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    fn finish(mut line: Vec<u8>) -> Option<Vec<u8>> {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        (!line.iter().all(u8::is_ascii_whitespace)).then_some(line)
    }
    let too_long = move || ProviderError::Protocol {
        message: format!("engine sent a line longer than {max_line} bytes"),
    };
    stream! {
        let mut body = std::pin::pin!(body);
        let mut buffer: Vec<u8> = Vec::new();
        while let Some(piece) = body.next().await {
            let piece = match piece {
                Ok(piece) => piece,
                Err(e) => {
                    yield Err(ProviderError::Unavailable {
                        status: None,
                        message: format!("engine stream broke: {e}"),
                    });
                    return;
                }
            };
            let mut rest = &piece[..];
            while let Some(end) = rest.iter().position(|b| *b == b'\n') {
                if buffer.len() + end > max_line {
                    yield Err(too_long());
                    return;
                }
                buffer.extend_from_slice(&rest[..end]);
                rest = &rest[end + 1..];
                if let Some(line) = finish(std::mem::take(&mut buffer)) {
                    yield Ok(line);
                }
            }
            if buffer.len() + rest.len() > max_line {
                yield Err(too_long());
                return;
            }
            buffer.extend_from_slice(rest);
        }
        if let Some(line) = finish(buffer) {
            yield Ok(line);
        }
    }
}

// ----- time -----

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Unix seconds of an RFC 3339 timestamp such as `2024-05-01T10:20:30.123456789-07:00`; `None`
/// when it is not one (or is before 1970).
fn unix_seconds(text: &str) -> Option<u64> {
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = text.get(range)?;
        digits
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let bytes = text.as_bytes();
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't' | b' ')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        rest = &fraction[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hours: i64 = rest[1..3].parse().ok()?;
            let minutes: i64 = rest[4..6].parse().ok()?;
            sign * (hours * 3600 + minutes * 60)
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    u64::try_from(seconds).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use inference_club_core::openai::{
        ChatCompletionAggregator, Extra, FunctionCall, FunctionDefinition, ResponseFormat, Tool,
        ToolCall,
    };

    async fn parse(pieces: Vec<&'static [u8]>) -> Vec<Result<ChatCompletionChunk, ProviderError>> {
        let body = futures_util::stream::iter(
            pieces
                .into_iter()
                .map(|p| Ok::<_, std::io::Error>(Bytes::from_static(p))),
        );
        chunks(body, "chatcmpl-ollama-r1".into(), "m".into(), 7)
            .collect()
            .await
    }

    fn aggregate(
        results: &[Result<ChatCompletionChunk, ProviderError>],
    ) -> inference_club_core::openai::ChatCompletion {
        let mut agg = ChatCompletionAggregator::new();
        for chunk in results.iter().filter_map(|r| r.as_ref().ok()) {
            agg.push(chunk);
        }
        agg.finish()
    }

    #[tokio::test]
    async fn lines_split_across_reads_crlf_and_utf8() {
        let out = parse(vec![
            b"{\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\",\"content\":\"h\xc3",
            b"\xa9\"},\"done\":false}\r\n\r\n{\"model\":\"llama3.2\",\"message\":{\"thinking\":\"hm\",\"content\":\"\"},\"done\":false}\n",
            b"{\"message\":{\"content\":\"!\"},\"done\":false}\n{\"model\":\"llama3.2\",\"message\":{\"content\":\"\"},",
            b"\"done\":true,\"done_reason\":\"length\",\"prompt_eval_count\":4,\"eval_count\":3}",
        ])
        .await;
        assert!(out.iter().all(Result::is_ok), "{out:?}");
        let first = out[0].as_ref().unwrap();
        assert_eq!(first.id, "chatcmpl-ollama-r1");
        assert_eq!(first.model, "llama3.2");
        assert_eq!(first.choices[0].delta.role, Some(Role::Assistant));
        let done = aggregate(&out);
        assert_eq!(done.text().as_deref(), Some("hé!"));
        assert_eq!(done.choices[0].message.reasoning.as_deref(), Some("hm"));
        assert_eq!(done.choices[0].finish_reason, Some(FinishReason::Length));
        assert_eq!(done.usage, Some(Usage::new(4, 3)));
        // The usage comes in its own chunk, with no choices, after the finish reason.
        let last = out.last().unwrap().as_ref().unwrap();
        assert!(last.choices.is_empty() && last.usage.is_some());
    }

    #[tokio::test]
    async fn tool_calls_get_ids_and_string_arguments() {
        let out = parse(vec![
            b"{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}},{\"function\":{\"name\":\"now\",\"arguments\":{}}}]},\"done\":false}\n",
            b"{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\"}\n",
        ])
        .await;
        let done = aggregate(&out);
        let calls = done.choices[0].message.tool_calls.clone().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].function.name, "get_weather");
        let args: Value = serde_json::from_str(&calls[0].function.arguments).unwrap();
        assert_eq!(args, json!({"city": "Paris"}));
        assert_ne!(calls[0].id, calls[1].id);
        assert!(!calls[0].id.is_empty());
        assert_eq!(done.choices[0].finish_reason, Some(FinishReason::ToolCalls));
    }

    #[tokio::test]
    async fn errors_end_the_stream() {
        let out = parse(vec![
            b"{\"message\":{\"content\":\"a\"},\"done\":false}\n{\"error\":\"out of memory\"}\n{\"message\":{\"content\":\"b\"},\"done\":false}\n",
        ])
        .await;
        assert_eq!(out.len(), 2);
        assert!(matches!(
            &out[1],
            Err(ProviderError::Unavailable { status: None, message }) if message == "out of memory"
        ));

        let out = parse(vec![b"{oops\n"]).await;
        assert!(matches!(out[..], [Err(ProviderError::Protocol { .. })]));

        let out = parse(vec![b"{\"message\":{\"content\":\"a\"},\"done\":false}\n"]).await;
        assert!(matches!(
            out.last(),
            Some(Err(ProviderError::Unavailable { .. }))
        ));
    }

    #[tokio::test]
    async fn overlong_lines_are_refused() {
        let body = futures_util::stream::iter(vec![
            Ok::<_, std::io::Error>(Bytes::from_static(b"{\"a\":\"0123")),
            Ok(Bytes::from_static(b"456789\"}\nmore")),
        ]);
        let out: Vec<_> = lines(body, 8).collect().await;
        assert!(matches!(out[..], [Err(ProviderError::Protocol { .. })]));
        let body = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(
            b"0123456789",
        ))]);
        let out: Vec<_> = lines(body, 8).collect().await;
        assert!(matches!(out[..], [Err(ProviderError::Protocol { .. })]));
        let body = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(
            b"01234567\n0123",
        ))]);
        let out: Vec<_> = lines(body, 8).collect().await;
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(Result::is_ok));
    }

    #[test]
    fn request_maps_to_ollama_shape() {
        let mut request = ChatCompletionRequest::new(
            "llama3.2",
            vec![
                ChatMessage::system("be brief"),
                ChatMessage {
                    content: Some(MessageContent::Parts(vec![
                        ContentPart::text("what is this?"),
                        ContentPart::image_url("data:image/png;base64,AAAA"),
                    ])),
                    ..ChatMessage::user("")
                },
                ChatMessage {
                    tool_calls: Some(vec![ToolCall {
                        id: "call_1".into(),
                        kind: "function".into(),
                        function: FunctionCall {
                            name: "lookup".into(),
                            arguments: "{\"q\":\"x\"}".into(),
                        },
                    }]),
                    content: None,
                    ..ChatMessage::assistant("")
                },
                ChatMessage {
                    tool_call_id: Some("call_1".into()),
                    ..ChatMessage::text(Role::Tool, "42")
                },
            ],
        );
        request.temperature = Some(0.5);
        request.max_completion_tokens = Some(64);
        request.stop = Some(StopSequences::One("\n\n".into()));
        request.reasoning_effort = Some("high".into());
        request.tools = Some(vec![Tool::function(FunctionDefinition {
            name: "lookup".into(),
            description: None,
            parameters: Some(json!({"type": "object"})),
            strict: None,
        })]);
        request.response_format = Some(ResponseFormat {
            kind: "json_schema".into(),
            json_schema: Some(json!({"name": "s", "schema": {"type": "object"}})),
            extra: Extra::new(),
        });
        request.extra.insert("top_k".into(), json!(20));
        request
            .extra
            .insert("repetition_penalty".into(), json!(1.1));
        request.extra.insert("keep_alive".into(), json!("5m"));
        request
            .extra
            .insert("chat_template_kwargs".into(), json!({}));
        let body = chat_body(&request).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "llama3.2",
                "stream": true,
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "what is this?", "images": ["AAAA"]},
                    {"role": "assistant", "content": "", "tool_calls": [
                        {"function": {"name": "lookup", "arguments": {"q": "x"}}}
                    ]},
                    {"role": "tool", "content": "42", "tool_name": "lookup"}
                ],
                "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
                "think": "high",
                "keep_alive": "5m",
                "format": {"type": "object"},
                "options": {
                    "temperature": 0.5,
                    "num_predict": 64,
                    "stop": ["\n\n"],
                    "top_k": 20,
                    "repeat_penalty": 1.1
                }
            })
        );

        request.response_format = Some(ResponseFormat {
            kind: "json_object".into(),
            json_schema: None,
            extra: Extra::new(),
        });
        request.extra.insert("think".into(), json!(false));
        let body = chat_body(&request).unwrap();
        assert_eq!(body["format"], json!("json"));
        assert_eq!(body["think"], json!(false));
    }

    #[test]
    fn image_urls_that_are_not_data_are_refused() {
        let request = ChatCompletionRequest::new(
            "m",
            vec![ChatMessage {
                content: Some(MessageContent::Parts(vec![ContentPart::image_url(
                    "https://example.com/cat.png",
                )])),
                ..ChatMessage::user("")
            }],
        );
        assert!(matches!(
            chat_body(&request),
            Err(ProviderError::Rejected { status: 400, .. })
        ));
    }

    #[test]
    fn rfc3339_timestamps() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(unix_seconds("2024-05-01T10:20:30Z"), Some(1_714_558_830));
        assert_eq!(
            unix_seconds("2024-05-01T03:20:30.123456789-07:00"),
            Some(1_714_558_830)
        );
        assert_eq!(unix_seconds("2000-02-29T00:00:00+00:00"), Some(951_782_400));
        for bad in [
            "",
            "yesterday",
            "2024-13-01T00:00:00Z",
            "2024-05-01T10:20:30",
            "2024-05-01T10:20:30+0700",
            "١٢٣٤-05-01T10:20:30Z",
        ] {
            assert_eq!(unix_seconds(bad), None, "{bad}");
        }
    }
}
