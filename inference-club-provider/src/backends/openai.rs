//! The adapter for OpenAI-compatible engines.

use async_trait::async_trait;
use futures_util::StreamExt;
use inference_club_core::openai::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Model, ModelList, StreamOptions,
};
use inference_club_core::provider::{
    Call, CallOutput, CallStream, ChunkStream, Provider, ProviderError, RequestContext,
    TimeoutPhase, Upload,
};
use serde_json::Value;
use url::Url;

use crate::{EngineQuirks, Timeouts, http, normalize, sse};

/// An engine that speaks the OpenAI chat completions API: vLLM, SGLang, llama.cpp server, LM
/// Studio, TGI, Ollama's `/v1`, or any compatible server.
///
/// It streams from the engine (asking for usage in the stream where the engine supports it), so
/// time to first token is measured, unless the consumer takes the answer whole
/// ([`RequestContext::whole`]): then the engine is asked for a whole answer too, which becomes
/// one chunk (its time to first token is the time to the answer). The
/// request's `model` is sent as it is: it must be the engine's served id (the
/// [`Router`](crate::Router) maps public names to served ids).
///
/// The other endpoints ([`Provider::call`]) are passed through to `{base}/{engine path}`
/// (`completions`, `embeddings`, `audio/transcriptions`, …): the body as JSON, or for an upload
/// as `multipart/form-data` (the file as the part `file`, each top-level field of the body as a
/// text part). A streamed call's server-sent events become one [`CallOutput::Json`] each; a
/// whole JSON answer one [`CallOutput::Json`]; any other answer (audio, plain-text
/// transcriptions) one [`CallOutput::Bytes`] with the engine's content type. A whole answer is
/// read up to [`OpenAiCompatibleBuilder::max_answer_bytes`].
#[derive(Debug, Clone)]
pub struct OpenAiCompatible {
    base_url: String,
    chat_url: Url,
    models_url: Url,
    api_key: Option<String>,
    quirks: EngineQuirks,
    timeouts: Timeouts,
    max_answer_bytes: usize,
    http: reqwest::Client,
}

/// Builds an [`OpenAiCompatible`] adapter.
#[derive(Debug, Clone)]
pub struct OpenAiCompatibleBuilder {
    base_url: String,
    api_key: Option<String>,
    quirks: EngineQuirks,
    timeouts: Timeouts,
    max_answer_bytes: usize,
    http: Option<reqwest::Client>,
}

impl OpenAiCompatibleBuilder {
    /// The API key sent as `Authorization: Bearer …`.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The engine's quirks (default: [`EngineQuirks::GENERIC`]).
    pub fn quirks(mut self, quirks: EngineQuirks) -> Self {
        self.quirks = quirks;
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

    /// The largest whole (not streamed) answer of a [`Provider::call`] read from the engine, in
    /// bytes (default: [`OpenAiCompatible::MAX_ANSWER_BYTES`]); a larger one is refused with
    /// [`ProviderError::Protocol`].
    pub fn max_answer_bytes(mut self, limit: usize) -> Self {
        self.max_answer_bytes = limit;
        self
    }

    /// The adapter; fails when the base URL is not an absolute http(s) URL.
    pub fn build(self) -> Result<OpenAiCompatible, ProviderError> {
        let [chat_url, models_url] =
            http::endpoint_urls(&self.base_url, ["chat/completions", "models"])?;
        Ok(OpenAiCompatible {
            base_url: self.base_url,
            chat_url,
            models_url,
            api_key: self.api_key,
            quirks: self.quirks,
            timeouts: self.timeouts,
            max_answer_bytes: self.max_answer_bytes,
            http: http::client_or_new(self.http, self.timeouts.connect)?,
        })
    }
}

impl OpenAiCompatible {
    /// The default limit on a whole answer of a [`Provider::call`] (64 MiB: a few minutes of
    /// uncompressed speech, or a large batch of embeddings as JSON).
    pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

    /// A builder for the engine at `base_url`, the URL that `/chat/completions` and `/models` are
    /// relative to (usually ending in `/v1`).
    pub fn builder(base_url: impl Into<String>) -> OpenAiCompatibleBuilder {
        OpenAiCompatibleBuilder {
            base_url: base_url.into(),
            api_key: None,
            quirks: EngineQuirks::default(),
            timeouts: Timeouts::default(),
            max_answer_bytes: Self::MAX_ANSWER_BYTES,
            http: None,
        }
    }

    /// The body sent to the engine: the consumer's request, streamed with usage asked for (where
    /// the engine supports it) or, when the consumer takes it `whole`, not streamed; the token
    /// limit copied where the engine needs it.
    fn engine_body(
        &self,
        mut request: ChatCompletionRequest,
        whole: bool,
    ) -> Result<Vec<u8>, ProviderError> {
        request.stream = Some(!whole);
        if self.quirks.stream_usage && !whole {
            request
                .stream_options
                .get_or_insert_with(StreamOptions::default)
                .include_usage = Some(true);
        } else {
            request.stream_options = None;
        }
        if self.quirks.needs_max_tokens && request.max_tokens.is_none() {
            request.max_tokens = request.max_completion_tokens;
        }
        serde_json::to_vec(&request).map_err(|e| ProviderError::Protocol {
            message: format!("cannot encode the request: {e}"),
        })
    }

    /// Reads a whole answer of the engine, up to [`OpenAiCompatibleBuilder::max_answer_bytes`],
    /// waiting at most the idle timeout for each piece.
    async fn read_answer(
        &self,
        response: reqwest::Response,
        context: &RequestContext,
    ) -> Result<bytes::Bytes, ProviderError> {
        http::read_body(response, self.max_answer_bytes, self.timeouts.idle, context).await
    }

    fn authorized(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        http::authorized(builder, self.api_key.as_deref())
    }
}

#[async_trait]
impl Provider for OpenAiCompatible {
    async fn models(&self) -> Result<Vec<Model>, ProviderError> {
        let request = self.authorized(self.http.get(self.models_url.clone()));
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
        let list: ModelList =
            serde_json::from_slice(&body).map_err(|e| ProviderError::Protocol {
                message: format!("engine's model list is not valid: {e}"),
            })?;
        Ok(list.data)
    }

    /// Streams from the engine; when the consumer takes the answer whole
    /// ([`RequestContext::whole`]), asks the engine for it whole too (one answer to write and to
    /// read, not an event per token), which becomes one chunk
    /// ([`ChatCompletionChunk::from_completion`]). [`Timeouts::whole`] then bounds the wait for
    /// the answer to begin (the engine sends nothing before it is complete); an engine that
    /// streams anyway is read as a stream, and any other answer is a protocol error.
    ///
    /// [`ChatCompletionChunk::from_completion`]: inference_club_core::openai::ChatCompletionChunk::from_completion
    async fn chat(
        &self,
        request: ChatCompletionRequest,
        context: RequestContext,
    ) -> Result<ChunkStream, ProviderError> {
        let model = request.model.clone();
        let whole = context.whole;
        let body = self.engine_body(request, whole)?;
        let mut send = self
            .authorized(self.http.post(self.chat_url.clone()))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        // Some engines send headers only once the first token is ready; a whole answer's come
        // with the answer.
        let timeouts = if whole {
            Timeouts {
                first_token: self.timeouts.whole,
                ..self.timeouts
            }
        } else {
            send = send.header(reqwest::header::ACCEPT, "text/event-stream");
            self.timeouts
        };
        let sent_at = std::time::Instant::now();
        let response = http::send_for_output(send, timeouts, &context).await?;
        if !response.status().is_success() {
            return Err(http::status_error(response, &model).await);
        }
        let content_type = http::content_type(&response);
        let mut chunks: ChunkStream = if !whole || is_event_stream(&content_type) {
            Box::pin(sse::chunks(response.bytes_stream()))
        } else if http::is_json(&content_type) {
            let data = self.read_answer(response, &context).await?;
            let answer: ChatCompletion =
                serde_json::from_slice(&data).map_err(|e| ProviderError::Protocol {
                    message: format!("engine's answer is not a chat completion: {e}"),
                })?;
            let chunk = ChatCompletionChunk::from_completion(answer);
            Box::pin(futures_util::stream::once(async move { Ok(chunk) }))
        } else {
            return Err(ProviderError::Protocol {
                message: format!("engine answered a chat request with {content_type}"),
            });
        };
        if self.quirks.think_tags {
            chunks = normalize::split_think_tags(chunks);
        }
        Ok(crate::timeouts::guard(chunks, timeouts, &context, sent_at))
    }

    async fn call(&self, call: Call, context: RequestContext) -> Result<CallStream, ProviderError> {
        let [url] = http::endpoint_urls(&self.base_url, [call.endpoint.engine_path()])?;
        let model = call.model().to_owned();
        let streamed = call.is_stream();
        let mut request = self.authorized(self.http.post(url));
        request = match call.upload {
            Some(upload) => request.multipart(upload_form(&call.body, upload)),
            None => {
                let body = serde_json::to_vec(&call.body).map_err(|e| ProviderError::Protocol {
                    message: format!("cannot encode the request: {e}"),
                })?;
                request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body)
            }
        };
        if streamed {
            request = request.header(reqwest::header::ACCEPT, "text/event-stream");
        }
        let sent_at = std::time::Instant::now();
        let response = http::send_for_output(request, self.timeouts, &context).await?;
        if !response.status().is_success() {
            return Err(http::status_error(response, &model).await);
        }
        let content_type = http::content_type(&response);
        // An engine that ignores `stream` answers a whole object, which is read as one event.
        if streamed && !http::is_json(&content_type) {
            let events = sse::values(response.bytes_stream()).map(|v| v.map(CallOutput::Json));
            return Ok(crate::timeouts::guard_call(
                Box::pin(events),
                self.timeouts,
                &context,
                sent_at,
            ));
        }
        let data = self.read_answer(response, &context).await?;
        let output = if http::is_json(&content_type) {
            CallOutput::Json(serde_json::from_slice(&data).map_err(|e| {
                ProviderError::Protocol {
                    message: format!("engine's answer is not valid JSON: {e}"),
                }
            })?)
        } else {
            CallOutput::Bytes { content_type, data }
        };
        Ok(Box::pin(futures_util::stream::once(
            async move { Ok(output) },
        )))
    }
}

/// Whether `content_type` is `text/event-stream` (parameters aside).
fn is_event_stream(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("text/event-stream")
}

/// The `multipart/form-data` body of an upload: each top-level field of `body` as a text part
/// (strings as they are, numbers and booleans as their JSON text, each element of an array as a
/// part of the same name, `null` left out), then the file as the part `file` with its name and
/// content type (`application/octet-stream` when the given one is not a valid media type).
fn upload_form(body: &Value, upload: Upload) -> reqwest::multipart::Form {
    fn text(value: &Value) -> Option<String> {
        match value {
            Value::Null => None,
            Value::String(text) => Some(text.clone()),
            other => Some(other.to_string()),
        }
    }
    let mut form = reqwest::multipart::Form::new();
    for (name, value) in body.as_object().into_iter().flatten() {
        let values = match value {
            Value::Array(items) => items.iter().filter_map(text).collect(),
            other => text(other).into_iter().collect::<Vec<_>>(),
        };
        for value in values {
            form = form.text(name.clone(), value);
        }
    }
    let length = u64::try_from(upload.data.len()).unwrap_or(u64::MAX);
    let file = || {
        reqwest::multipart::Part::stream_with_length(upload.data.clone(), length)
            .file_name(upload.file_name.clone())
    };
    let part = file()
        .mime_str(&upload.content_type)
        .or_else(|_| file().mime_str("application/octet-stream"))
        .unwrap_or_else(|_| file());
    form.part("file", part)
}
