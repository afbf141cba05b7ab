//! The client, its builder, and the OpenAI-compatible calls.

use futures_util::future::BoxFuture;
use std::time::Duration;

use inference_club_core::openai::{ChatCompletion, ChatCompletionRequest, ErrorResponse};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use url::Url;

use crate::error::TimeoutPhase;
use crate::stream::{ChatStream, StreamTimeouts};
use crate::types::ModelInfo;
use crate::{ChatRequest, Error, RetryPolicy};

/// The header that names a response's record.
pub const REQUEST_ID_HEADER: &str = "x-club-request-id";

/// The coordinator a client talks to when none is configured (`club-coordinator serve`'s
/// default).
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// The largest whole (non-streamed) response body read, by default: 32 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// Builds a [`Client`]: [`Client::builder`] or [`ClientBuilder::from_env`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base_url: String,
    api_key: Option<String>,
    connect_timeout: Duration,
    first_token_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    request_timeout: Option<Duration>,
    retry: RetryPolicy,
    user_agent: String,
    max_response_bytes: usize,
    http: Option<reqwest::Client>,
}

impl ClientBuilder {
    fn new(base_url: String) -> Self {
        Self {
            base_url,
            api_key: None,
            connect_timeout: Duration::from_secs(10),
            first_token_timeout: None,
            idle_timeout: None,
            request_timeout: None,
            retry: RetryPolicy::default(),
            user_agent: concat!("inference-club-client/", env!("CARGO_PKG_VERSION")).into(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            http: None,
        }
    }

    /// A builder configured from the environment: `CLUB_URL` (default `http://127.0.0.1:8080`)
    /// and `CLUB_API_KEY` (none when unset or empty).
    pub fn from_env() -> Self {
        let url = std::env::var("CLUB_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_URL.into());
        let mut builder = Self::new(url);
        builder.api_key = std::env::var("CLUB_API_KEY")
            .ok()
            .filter(|k| !k.trim().is_empty());
        builder
    }

    /// The coordinator's URL (with or without the `/v1` suffix).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// The API key, sent as `Authorization: Bearer …`.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Time allowed to connect (default 10 s). Not applied to a caller-supplied HTTP client.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time allowed from sending a streamed request to its first output — content, reasoning or
    /// a tool call, so a model that reasons counts as answering. None by default.
    pub fn first_token_timeout(mut self, timeout: Duration) -> Self {
        self.first_token_timeout = Some(timeout);
        self
    }

    /// Time allowed between two chunks of a stream once it has produced output. None by
    /// default.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Time allowed for a whole request, each attempt, streamed answers to their end included.
    /// None by default.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// How failures before any output are retried (default: [`RetryPolicy::default`], 3
    /// attempts; [`RetryPolicy::never`] to turn retries off).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The `User-Agent` header. Not applied to a caller-supplied HTTP client.
    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = agent.into();
        self
    }

    /// The largest whole response body read (default 32 MiB); a larger one is an error.
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// A caller-supplied HTTP client: its connection pool, proxy, TLS and connect timeout
    /// apply. It should not retry on its own: the client's retry policy is the one layer.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// The client; fails when the base URL is not an absolute http(s) URL.
    pub fn build(self) -> Result<Client, Error> {
        let mut base = Url::parse(self.base_url.trim())
            .map_err(|e| Error::Config(format!("invalid base URL {:?}: {e}", self.base_url)))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(Error::Config(format!(
                "{:?} is not an http(s) URL",
                self.base_url
            )));
        }
        // `…/v1` (as OpenAI SDKs are configured) and the bare coordinator URL both work.
        let path = base
            .path()
            .trim_end_matches('/')
            .trim_end_matches("/v1")
            .to_owned();
        base.set_path(&format!("{path}/"));
        base.set_query(None);
        base.set_fragment(None);
        if let Some(key) = &self.api_key
            && reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).is_err()
        {
            return Err(Error::Config(
                "the API key holds characters not allowed in a header".into(),
            ));
        }
        let http = match self.http {
            Some(http) => http,
            None => {
                let tls = inference_club_core::tls::client_config()
                    .map_err(|e| Error::Config(format!("cannot configure TLS: {e}")))?;
                reqwest::Client::builder()
                    .tls_backend_preconfigured(tls)
                    .connect_timeout(self.connect_timeout)
                    .user_agent(self.user_agent)
                    .build()
                    .map_err(|e| Error::Config(e.to_string()))?
            }
        };
        Ok(Client {
            base,
            api_key: self.api_key,
            first_token_timeout: self.first_token_timeout,
            idle_timeout: self.idle_timeout,
            request_timeout: self.request_timeout,
            retry: self.retry,
            max_response_bytes: self.max_response_bytes,
            http,
        })
    }
}

/// A client of one coordinator: its OpenAI-compatible API (chat, models) and the club API
/// (records, the public feed, providers, keys, the account, sign-in).
///
/// Cheap to clone; clones share connections.
#[derive(Debug, Clone)]
pub struct Client {
    base: Url,
    api_key: Option<String>,
    first_token_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    request_timeout: Option<Duration>,
    retry: RetryPolicy,
    max_response_bytes: usize,
    http: reqwest::Client,
}

/// A whole chat answer and the id of its record.
#[derive(Debug, Clone)]
pub struct ChatResponse {
    /// The completion.
    pub completion: ChatCompletion,
    /// The record's id (`x-club-request-id`).
    pub record_id: Option<String>,
}

impl ChatResponse {
    /// The answer text of the first choice.
    pub fn text(&self) -> Option<String> {
        self.completion.text()
    }

    /// The reasoning trace of the first choice.
    pub fn reasoning(&self) -> Option<&str> {
        self.completion
            .choices
            .first()
            .and_then(|c| c.message.reasoning.as_deref())
    }
}

/// Whether a request may be sent again after a failure whose effect is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idempotence {
    /// Sending it twice does no harm (reads, deletes, settings; chat, whose retries OpenAI
    /// clients also make).
    Retryable,
    /// Retried only when the server said it did nothing (429, 503).
    OnlyIfRefused,
}

impl Client {
    /// A builder for the coordinator at `base_url` (with or without the `/v1` suffix).
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(base_url.into())
    }

    /// A client configured from `CLUB_URL` (default `http://127.0.0.1:8080`) and `CLUB_API_KEY`.
    pub fn from_env() -> Result<Self, Error> {
        ClientBuilder::from_env().build()
    }

    /// The coordinator's base URL (ending in `/`).
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// Whether the client sends an API key.
    pub fn has_api_key(&self) -> bool {
        self.api_key.is_some()
    }

    /// The URL of `segments` under the base URL, each segment percent-encoded.
    pub(crate) fn url(&self, segments: &[&str]) -> Result<Url, Error> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| Error::Config("the base URL cannot take a path".into()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    fn request(&self, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, url);
        match &self.api_key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    /// Sends one request, retried by the policy; every error status becomes [`Error::Api`].
    /// `deadline` bounds the wait for the response headers of each attempt.
    pub(crate) async fn send<F>(
        &self,
        idempotence: Idempotence,
        mut build: F,
        deadline: impl Fn() -> Option<(Instant, TimeoutPhase, Duration)>,
    ) -> Result<reqwest::Response, Error>
    where
        F: FnMut() -> Result<reqwest::RequestBuilder, Error>,
    {
        let mut attempt = 1;
        loop {
            let builder = build()?;
            let sent = match deadline() {
                Some((at, phase, after)) => {
                    match tokio::time::timeout_at(at, self.send_once(builder)).await {
                        Ok(result) => result,
                        Err(_) => Err(Error::Timeout { phase, after }),
                    }
                }
                None => self.send_once(builder).await,
            };
            let error = match sent {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            let allowed = match idempotence {
                Idempotence::Retryable => true,
                Idempotence::OnlyIfRefused => matches!(error.status(), Some(429 | 503)),
            };
            match self.retry.delay(attempt, &error).filter(|_| allowed) {
                Some(wait) => {
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                None => return Err(error),
            }
        }
    }

    async fn send_once(
        &self,
        builder: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Error> {
        let response = builder
            .send()
            .await
            .map_err(|e| Error::from_reqwest(e, self.request_timeout))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(86_400.0)));
        let body = read_limited(response, 64 * 1024, self.request_timeout)
            .await
            .unwrap_or_default();
        let error = match serde_json::from_slice::<ErrorResponse>(&body) {
            Ok(envelope) => envelope.error,
            Err(_) => {
                let text = String::from_utf8_lossy(&body);
                let text = text.trim();
                inference_club_core::openai::ApiError::new(
                    "http_error",
                    if text.is_empty() {
                        format!("the coordinator answered HTTP {status}")
                    } else {
                        text.chars().take(500).collect()
                    },
                    None,
                )
            }
        };
        Err(Error::Api {
            status,
            error,
            retry_after,
        })
    }

    fn whole_deadline(&self) -> impl Fn() -> Option<(Instant, TimeoutPhase, Duration)> + use<> {
        let limit = self.request_timeout;
        move || limit.map(|l| (Instant::now() + l, TimeoutPhase::Request, l))
    }

    /// A club API call with an optional JSON body; `None` for an empty answer (204).
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&(impl Serialize + Sync)>,
        idempotence: Idempotence,
    ) -> Result<Option<T>, Error> {
        let body = match body {
            Some(body) => Some(serde_json::to_vec(body).map_err(|e| {
                Error::Config(format!("the request cannot be written as JSON: {e}"))
            })?),
            None => None,
        };
        let answer = self
            .exchange(
                method,
                segments,
                query,
                body.map(Payload::Json),
                &[],
                idempotence,
            )
            .await?;
        match answer.body {
            Some(_) => answer.json().map(Some),
            None => Ok(None),
        }
    }

    /// One whole exchange, every typed call's path: sends `payload` (rebuilt for each
    /// attempt) with `headers`, retried per the policy under the whole-request timeout, and
    /// reads the whole answer with its record id and content type (no body for 204). Compiled
    /// once, here; the typed wrappers only add serde.
    #[inline(never)]
    pub(crate) fn exchange<'a>(
        &'a self,
        method: reqwest::Method,
        segments: &'a [&'a str],
        query: &'a [(&'a str, String)],
        payload: Option<Payload>,
        headers: &'a [(&'static str, String)],
        idempotence: Idempotence,
    ) -> BoxFuture<'a, Result<Exchanged, Error>> {
        Box::pin(async move {
            let mut url = self.url(segments)?;
            if !query.is_empty() {
                url.query_pairs_mut().extend_pairs(query);
            }
            let response = self
                .send(
                    idempotence,
                    || {
                        let mut builder = self.request(method.clone(), url.clone());
                        if let Some(payload) = &payload {
                            builder = payload.attach(builder)?;
                        }
                        for (name, value) in headers {
                            builder = builder.header(*name, value.as_str());
                        }
                        if let Some(limit) = self.request_timeout {
                            builder = builder.timeout(limit);
                        }
                        Ok(builder)
                    },
                    self.whole_deadline(),
                )
                .await?;
            let record_id = record_id(&response);
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = if response.status() == reqwest::StatusCode::NO_CONTENT {
                None
            } else {
                Some(read_limited(response, self.max_response_bytes, self.request_timeout).await?)
            };
            Ok(Exchanged {
                record_id,
                content_type,
                body,
            })
        })
    }

    /// POSTs a JSON body to an OpenAI-compatible endpoint and reads the whole answer.
    pub(crate) async fn post_json(
        &self,
        segments: &[&str],
        body: &(impl Serialize + Sync),
    ) -> Result<Exchanged, Error> {
        let body = serde_json::to_vec(body)
            .map_err(|e| Error::Config(format!("the request cannot be written as JSON: {e}")))?;
        self.exchange(
            reqwest::Method::POST,
            segments,
            &[],
            Some(Payload::Json(body)),
            &[],
            Idempotence::Retryable,
        )
        .await
    }

    /// POSTs a JSON body asking for an event stream, retried per the policy until the answer
    /// starts (its headers arrive) under the first-token and whole-request timeouts; answers the
    /// response and the waits that apply to the rest of the stream. Compiled once, here.
    #[inline(never)]
    pub(crate) fn open_stream<'a>(
        &'a self,
        segments: &'a [&'a str],
        body: Vec<u8>,
    ) -> BoxFuture<'a, Result<(reqwest::Response, StreamTimeouts), Error>> {
        Box::pin(async move {
            let url = self.url(segments)?;
            let started = std::sync::Mutex::new(Instant::now());
            let timeouts_at = |started: Instant| StreamTimeouts {
                started,
                first_token: self.first_token_timeout,
                idle: self.idle_timeout,
                request: self.request_timeout,
            };
            let response = self
                .send(
                    Idempotence::Retryable,
                    || {
                        if let Ok(mut at) = started.lock() {
                            *at = Instant::now();
                        }
                        Ok(self
                            .request(reqwest::Method::POST, url.clone())
                            .header(reqwest::header::ACCEPT, "text/event-stream")
                            .header(reqwest::header::CONTENT_TYPE, "application/json")
                            .body(body.clone()))
                    },
                    || {
                        let at = started
                            .lock()
                            .map(|at| *at)
                            .unwrap_or_else(|_| Instant::now());
                        timeouts_at(at).header_deadline()
                    },
                )
                .await?;
            let at = started
                .lock()
                .map(|at| *at)
                .unwrap_or_else(|_| Instant::now());
            Ok((response, timeouts_at(at)))
        })
    }

    /// A club API call that must answer a JSON body.
    pub(crate) async fn call_json<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&(impl Serialize + Sync)>,
        idempotence: Idempotence,
    ) -> Result<T, Error> {
        self.call(method, segments, query, body, idempotence)
            .await?
            .ok_or_else(|| Error::decode("an empty answer where a JSON body was expected", None))
    }

    /// The models the caller may use, with their capabilities (`GET /v1/models`). Anonymous
    /// callers get an empty list.
    #[inline(never)]
    pub fn models(&self) -> BoxFuture<'_, Result<Vec<ModelInfo>, Error>> {
        #[derive(serde::Deserialize)]
        struct List {
            data: Vec<ModelInfo>,
        }
        Box::pin(async move {
            let list: List = self
                .call_json(
                    reqwest::Method::GET,
                    &["v1", "models"],
                    &[],
                    None::<&()>,
                    Idempotence::Retryable,
                )
                .await?;
            Ok(list.data)
        })
    }

    /// A whole chat answer and its record id. Retried (per the policy) while it fails before
    /// the answer arrives; the whole-request timeout applies to each attempt.
    ///
    /// Its future is boxed (so is [`chat_stream`](Self::chat_stream)'s): a crate calling it
    /// does not compile the HTTP client's state machines again.
    pub fn chat(
        &self,
        request: impl Into<ChatRequest>,
    ) -> BoxFuture<'_, Result<ChatResponse, Error>> {
        self.chat_whole(request.into().into())
    }

    #[inline(never)]
    fn chat_whole(
        &self,
        request: ChatCompletionRequest,
    ) -> BoxFuture<'_, Result<ChatResponse, Error>> {
        Box::pin(self.chat_whole_inner(request))
    }

    async fn chat_whole_inner(
        &self,
        mut request: ChatCompletionRequest,
    ) -> Result<ChatResponse, Error> {
        request.stream = Some(false);
        let answer = self
            .post_json(&["v1", "chat", "completions"], &request)
            .await?;
        Ok(ChatResponse {
            record_id: answer.record_id.clone(),
            completion: answer.json()?,
        })
    }

    /// A streamed chat answer: chunks as they arrive, usage at the end (the client asks for it).
    ///
    /// Failures before the coordinator accepted the request (connection refused, 429, 503, a
    /// first-token timeout before the answer started, …) are retried per the policy; once the
    /// stream has started nothing is retried, and an error is an error of the stream.
    pub fn chat_stream(
        &self,
        request: impl Into<ChatRequest>,
    ) -> BoxFuture<'_, Result<ChatStream, Error>> {
        self.chat_streamed(request.into().into())
    }

    #[inline(never)]
    fn chat_streamed(
        &self,
        request: ChatCompletionRequest,
    ) -> BoxFuture<'_, Result<ChatStream, Error>> {
        Box::pin(self.chat_streamed_inner(request))
    }

    async fn chat_streamed_inner(
        &self,
        mut request: ChatCompletionRequest,
    ) -> Result<ChatStream, Error> {
        request.stream = Some(true);
        request
            .stream_options
            .get_or_insert_with(Default::default)
            .include_usage = Some(true);
        let body = serde_json::to_vec(&request)
            .map_err(|e| Error::Config(format!("the request cannot be written as JSON: {e}")))?;
        let (response, timeouts) = self
            .open_stream(&["v1", "chat", "completions"], body)
            .await?;
        let record_id = record_id(&response);
        let chunks = crate::stream::chunks(response.bytes_stream(), timeouts);
        Ok(ChatStream::new(record_id, chunks))
    }
}

/// What a request sends: a JSON body, or a multipart form (rebuilt for each attempt, a form
/// being sent only once).
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    /// A JSON body.
    Json(Vec<u8>),
    /// A multipart form and the headers that go with it.
    Form(crate::media::FormSpec),
}

impl Payload {
    fn attach(&self, builder: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder, Error> {
        Ok(match self {
            Self::Json(body) => builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone()),
            Self::Form(form) => form.attach(builder)?,
        })
    }
}

/// A whole answer: its body (`None` for 204), record id and content type.
#[derive(Debug, Clone)]
pub(crate) struct Exchanged {
    /// The record's id (`x-club-request-id`).
    pub record_id: Option<String>,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The body.
    pub body: Option<Vec<u8>>,
}

impl Exchanged {
    /// The body, which must be there.
    pub(crate) fn bytes(self) -> Result<Vec<u8>, Error> {
        self.body
            .ok_or_else(|| Error::decode("an empty answer where a body was expected", None))
    }

    /// The body read as JSON.
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        let body = self
            .body
            .as_deref()
            .ok_or_else(|| Error::decode("an empty answer where JSON was expected", None))?;
        serde_json::from_slice(body).map_err(|e| Error::decode(e.to_string(), Some(Box::new(e))))
    }
}

/// The record id a response names.
pub(crate) fn record_id(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Reads a body of at most `limit` bytes.
async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
    timeout: Option<Duration>,
) -> Result<Vec<u8>, Error> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(Error::decode(
            format!("the answer is larger than {limit} bytes"),
            None,
        ));
    }
    let mut body = Vec::new();
    while let Some(piece) = response
        .chunk()
        .await
        .map_err(|e| Error::from_reqwest(e, timeout))?
    {
        if body.len() + piece.len() > limit {
            return Err(Error::decode(
                format!("the answer is larger than {limit} bytes"),
                None,
            ));
        }
        body.extend_from_slice(&piece);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn building_a_client_installs_no_process_wide_tls_provider() {
        let client = Client::builder("https://club.example").build().unwrap();
        assert_eq!(client.base_url().as_str(), "https://club.example/");
        assert!(rustls::crypto::CryptoProvider::get_default().is_none());
    }
}
