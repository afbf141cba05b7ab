//! The client and its builder.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use inference_club_core::openai::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ErrorResponse, Model, ModelList,
    StreamPayload,
};
use url::Url;

use crate::{ChatRequest, Error};

/// The header that names a response's record.
const REQUEST_ID_HEADER: &str = "x-club-request-id";

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base_url: String,
    api_key: Option<String>,
    connect_timeout: Duration,
    request_timeout: Option<Duration>,
    user_agent: String,
    http: Option<reqwest::Client>,
}

impl ClientBuilder {
    /// The API key (sent as `Authorization: Bearer …`).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Time allowed to connect (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// A limit on whole (non-streamed) requests; none by default.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// The `User-Agent` header.
    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = agent.into();
        self
    }

    /// A caller-supplied HTTP client (its own timeouts then apply).
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// The client; fails when the base URL is not an absolute http(s) URL.
    pub fn build(self) -> Result<Client, Error> {
        let mut base = Url::parse(&self.base_url)
            .map_err(|e| Error::Config(format!("invalid base URL {:?}: {e}", self.base_url)))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(Error::Config(format!("{:?} is not http(s)", self.base_url)));
        }
        // `…/v1` (as OpenAI SDKs are configured) and the bare coordinator URL both work.
        let path = base
            .path()
            .trim_end_matches('/')
            .trim_end_matches("/v1")
            .to_owned();
        base.set_path(&format!("{path}/"));
        let http = match self.http {
            Some(http) => http,
            None => {
                let _ = rustls::crypto::ring::default_provider().install_default();
                reqwest::Client::builder()
                    .connect_timeout(self.connect_timeout)
                    .user_agent(self.user_agent)
                    .build()
                    .map_err(|e| Error::Config(e.to_string()))?
            }
        };
        Ok(Client {
            base,
            api_key: self.api_key,
            request_timeout: self.request_timeout,
            http,
        })
    }
}

/// A client of one coordinator.
#[derive(Debug, Clone)]
pub struct Client {
    base: Url,
    api_key: Option<String>,
    request_timeout: Option<Duration>,
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

/// A streamed chat answer: chunks as they arrive. An error sent inside the stream is an error of
/// the stream ([`Error::InStream`]), never a silent end.
pub struct ChatStream {
    record_id: Option<String>,
    inner: Pin<Box<dyn Stream<Item = Result<ChatCompletionChunk, Error>> + Send>>,
}

impl ChatStream {
    /// The record's id (`x-club-request-id`).
    pub fn record_id(&self) -> Option<String> {
        self.record_id.clone()
    }
}

impl std::fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatStream")
            .field("record_id", &self.record_id)
            .finish_non_exhaustive()
    }
}

impl Stream for ChatStream {
    type Item = Result<ChatCompletionChunk, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl Client {
    /// A builder for the coordinator at `base_url` (with or without the `/v1` suffix).
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.into(),
            api_key: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: None,
            user_agent: concat!("inference-club-client/", env!("CARGO_PKG_VERSION")).into(),
            http: None,
        }
    }

    /// A client configured from `CLUB_URL` (default `http://127.0.0.1:8080`) and `CLUB_API_KEY`.
    pub fn from_env() -> Result<Self, Error> {
        let url = std::env::var("CLUB_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
        let mut builder = Self::builder(url);
        if let Ok(key) = std::env::var("CLUB_API_KEY") {
            builder = builder.api_key(key);
        }
        builder.build()
    }

    fn url(&self, path: &str) -> Result<Url, Error> {
        self.base
            .join(path)
            .map_err(|e| Error::Config(format!("bad path {path:?}: {e}")))
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, Error> {
        let builder = self.http.request(method, self.url(path)?);
        Ok(match &self.api_key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        })
    }

    async fn send(&self, builder: reqwest::RequestBuilder) -> Result<reqwest::Response, Error> {
        let response = builder.send().await.map_err(Error::from_reqwest)?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = response.bytes().await.map_err(Error::from_reqwest)?;
        let error = match serde_json::from_slice::<ErrorResponse>(&body) {
            Ok(envelope) => envelope.error,
            Err(_) => inference_club_core::openai::ApiError::new(
                "http_error",
                String::from_utf8_lossy(&body).into_owned(),
                None,
            ),
        };
        Err(Error::Api {
            status,
            error,
            retry_after,
        })
    }

    /// The models the caller may use.
    pub async fn models(&self) -> Result<Vec<Model>, Error> {
        let response = self
            .send(self.request(reqwest::Method::GET, "v1/models")?)
            .await?;
        let body = response.bytes().await.map_err(Error::from_reqwest)?;
        let list: ModelList =
            serde_json::from_slice(&body).map_err(|e| Error::Decode(e.to_string()))?;
        Ok(list.data)
    }

    /// A whole chat answer.
    pub async fn chat(&self, request: impl Into<ChatRequest>) -> Result<ChatResponse, Error> {
        let mut request: ChatCompletionRequest = request.into().into();
        request.stream = Some(false);
        let mut builder = self
            .request(reqwest::Method::POST, "v1/chat/completions")?
            .json(&request);
        if let Some(timeout) = self.request_timeout {
            builder = builder.timeout(timeout);
        }
        let response = self.send(builder).await?;
        let record_id = record_id(&response);
        let body = response.bytes().await.map_err(Error::from_reqwest)?;
        let completion = serde_json::from_slice(&body).map_err(|e| Error::Decode(e.to_string()))?;
        Ok(ChatResponse {
            completion,
            record_id,
        })
    }

    /// A streamed chat answer: chunks as they arrive; usage at the end.
    pub async fn chat_stream(&self, request: impl Into<ChatRequest>) -> Result<ChatStream, Error> {
        let mut request: ChatCompletionRequest = request.into().into();
        request.stream = Some(true);
        request
            .stream_options
            .get_or_insert_with(Default::default)
            .include_usage = Some(true);
        let builder = self
            .request(reqwest::Method::POST, "v1/chat/completions")?
            .json(&request);
        let response = self.send(builder).await?;
        let record_id = record_id(&response);
        let events = Box::pin(response.bytes_stream().eventsource());
        let inner = sse_chunks(events);
        Ok(ChatStream {
            record_id,
            inner: Box::pin(inner),
        })
    }

    /// One record, as the club API shows it.
    pub async fn record(&self, id: &str) -> Result<serde_json::Value, Error> {
        let response = self
            .send(self.request(reqwest::Method::GET, &format!("api/v1/requests/{id}"))?)
            .await?;
        response
            .json()
            .await
            .map_err(|e| Error::Decode(e.to_string()))
    }
}

fn record_id(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Turns SSE events into chunks: `[DONE]` ends, an error object is an error of the stream,
/// anything malformed is a decode error.
fn sse_chunks<S, E>(events: S) -> impl Stream<Item = Result<ChatCompletionChunk, Error>> + Send
where
    S: Stream<Item = Result<eventsource_stream::Event, E>> + Send + Unpin,
    E: std::fmt::Display + Send,
{
    futures_util::stream::unfold(Some(events), |state| async move {
        let mut events = state?;
        match events.next().await {
            None => None,
            Some(Err(e)) => Some((Err(Error::Transport(e.to_string())), None)),
            Some(Ok(event)) => match StreamPayload::parse(&event.data) {
                Ok(StreamPayload::Done) => None,
                Ok(StreamPayload::Chunk(chunk)) => Some((Ok(*chunk), Some(events))),
                Ok(StreamPayload::Error(error)) => Some((Err(Error::InStream(error)), None)),
                Err(e) => Some((Err(Error::Decode(e.to_string())), None)),
            },
        }
    })
}
