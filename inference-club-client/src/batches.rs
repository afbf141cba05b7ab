//! Files and batches: OpenAI's Files API (`/v1/files`, as far as batches need it) and Batch
//! API (`/v1/batches`): their objects, the request that creates a batch, the lines of its output
//! and error files, and the client's calls.
//!
//! A batch runs the lines of an uploaded JSONL file (`{"custom_id", "method": "POST", "url",
//! "body"}` each) on the club's nodes, behind interactive requests; each line is recorded as an
//! ordinary request of its owner. Its answers are in its output file, its failures (malformed
//! lines, requests that failed, lines a cancellation or expiry left unanswered) in its error
//! file, both in line order.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{Stream, StreamExt};
use inference_club_core::record::Visibility;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::client::{Idempotence, Payload};
use crate::club::{FetchPage, Paginated};
use crate::media::FormSpec;
use crate::{Client, Error};

/// The header that makes a creating request (an upload, a new batch) safe to send again: the
/// same key with the same request answers the first answer again.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The size of the pages [`Client::files`] and [`Client::batches`] fetch.
const PAGE_SIZE: u32 = 50;

/// A file of the member's: an uploaded batch input, or a batch's output or error file
/// (`{"id", "object": "file", "bytes", "created_at", "filename", "purpose"}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileObject {
    /// Its id (`file-…`).
    pub id: String,
    /// Its size in bytes.
    #[serde(default)]
    pub bytes: u64,
    /// Unix seconds.
    #[serde(default)]
    pub created_at: i64,
    /// Its name.
    #[serde(default)]
    pub filename: String,
    /// What it is for: `batch` (an input), `batch_output` (an output or error file).
    #[serde(default)]
    pub purpose: String,
    /// Fields this client does not know (`object`, `status`, …), passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An endpoint a batch may run its lines on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BatchEndpoint {
    /// `/v1/chat/completions`.
    ChatCompletions,
    /// `/v1/completions`.
    Completions,
    /// `/v1/embeddings`.
    Embeddings,
    /// `/v1/responses`.
    Responses,
    /// A path this client does not know, sent as given (one a newer coordinator runs).
    Other(String),
}

impl BatchEndpoint {
    /// Every endpoint this client knows batches run on.
    pub const KNOWN: [BatchEndpoint; 4] = [
        Self::ChatCompletions,
        Self::Completions,
        Self::Embeddings,
        Self::Responses,
    ];

    /// Its path, as batches name it (`/v1/chat/completions`).
    pub fn path(&self) -> &str {
        match self {
            Self::ChatCompletions => "/v1/chat/completions",
            Self::Completions => "/v1/completions",
            Self::Embeddings => "/v1/embeddings",
            Self::Responses => "/v1/responses",
            Self::Other(path) => path,
        }
    }

    /// The known endpoint of `path` (with or without its `/v1`), else `Other(path)`.
    pub fn from_path(path: &str) -> Self {
        path.parse()
            .unwrap_or_else(|_| Self::Other(path.to_owned()))
    }
}

impl std::fmt::Display for BatchEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.path())
    }
}

impl std::str::FromStr for BatchEndpoint {
    type Err = String;

    /// Reads a known endpoint's path, with or without its `/v1` (`/v1/embeddings`,
    /// `embeddings`); refuses any other.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bare = s.trim().trim_start_matches('/');
        let bare = bare.strip_prefix("v1/").unwrap_or(bare);
        Self::KNOWN
            .into_iter()
            .find(|e| e.path().trim_start_matches("/v1/") == bare)
            .ok_or_else(|| {
                format!(
                    "a batch runs on /v1/chat/completions, /v1/completions, /v1/embeddings or \
                     /v1/responses, not {s:?}"
                )
            })
    }
}

impl Serialize for BatchEndpoint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.path())
    }
}

impl<'de> Deserialize<'de> for BatchEndpoint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let path = String::deserialize(deserializer)?;
        Ok(Self::from_path(&path))
    }
}

/// Where a batch is: `validating` → `in_progress` → `finalizing` → `completed`, or
/// `cancelling` → `cancelled`, or `expired`, or `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BatchStatus {
    /// Its lines are being read.
    Validating,
    /// Its lines are running.
    InProgress,
    /// Every line is answered; its files are being written.
    Finalizing,
    /// Done: its output and error files are there.
    Completed,
    /// It could not run (its `errors` say why).
    Failed,
    /// Its 24 hours ran out; what was answered by then is in its files.
    Expired,
    /// Asked to stop.
    Cancelling,
    /// Stopped; what was answered by then is in its files.
    Cancelled,
    /// A status this client does not know (a newer coordinator).
    #[serde(other)]
    Unknown,
}

impl BatchStatus {
    /// The wire name (`in_progress`); `unknown` for a status this client does not know.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validating => "validating",
            Self::InProgress => "in_progress",
            Self::Finalizing => "finalizing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Cancelling => "cancelling",
            Self::Cancelled => "cancelled",
            Self::Unknown => "unknown",
        }
    }

    /// Whether the batch has ended: it changes no more, and its files are final.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Expired | Self::Cancelled
        )
    }
}

impl std::fmt::Display for BatchStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many lines a batch has, and how many were answered: with a 2xx (`completed`) or
/// otherwise (`failed`, malformed lines included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestCounts {
    /// Every line.
    #[serde(default)]
    pub total: u64,
    /// Lines answered with a 2xx.
    #[serde(default)]
    pub completed: u64,
    /// Lines that failed.
    #[serde(default)]
    pub failed: u64,
}

impl RequestCounts {
    /// The lines answered so far, either way.
    pub fn done(&self) -> u64 {
        self.completed.saturating_add(self.failed)
    }

    /// The share of lines answered, 0 to 1 (1 for an empty batch).
    pub fn fraction(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            (self.done() as f64 / self.total as f64).min(1.0)
        }
    }
}

/// A batch (OpenAI's batch object, with the club's `visibility`). Timestamps are Unix seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Its id (`batch_…`).
    pub id: String,
    /// The endpoint its lines run on.
    pub endpoint: BatchEndpoint,
    /// The file of its lines.
    #[serde(default)]
    pub input_file_id: String,
    /// Its completion window (`24h`).
    #[serde(default)]
    pub completion_window: String,
    /// Where it is.
    pub status: BatchStatus,
    /// The file of its answers, once it has ended (none when no line succeeded).
    #[serde(default)]
    pub output_file_id: Option<String>,
    /// The file of its failures, once it has ended (none when no line failed).
    #[serde(default)]
    pub error_file_id: Option<String>,
    /// Its lines: how many, how many answered.
    #[serde(default)]
    pub request_counts: RequestCounts,
    /// The caller's own key-value pairs.
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    /// Who may read its lines' records.
    #[serde(default)]
    pub visibility: Option<Visibility>,
    /// Why it failed, if it did (OpenAI's `{"object": "list", "data": [...]}`).
    #[serde(default)]
    pub errors: Option<Value>,
    /// When it was created.
    #[serde(default)]
    pub created_at: i64,
    /// When its lines started running.
    #[serde(default)]
    pub in_progress_at: Option<i64>,
    /// When its completion window ends.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// When its files started being written.
    #[serde(default)]
    pub finalizing_at: Option<i64>,
    /// When it completed.
    #[serde(default)]
    pub completed_at: Option<i64>,
    /// When it failed.
    #[serde(default)]
    pub failed_at: Option<i64>,
    /// When it expired.
    #[serde(default)]
    pub expired_at: Option<i64>,
    /// When it was asked to stop.
    #[serde(default)]
    pub cancelling_at: Option<i64>,
    /// When it stopped.
    #[serde(default)]
    pub cancelled_at: Option<i64>,
    /// Fields this client does not know (`object`, …), passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A new batch: `CreateBatch::new(input_file_id, endpoint)`, then the builder methods.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CreateBatch {
    /// The uploaded file of its lines (purpose `batch`).
    pub input_file_id: String,
    /// The endpoint every line runs on (each line's `url` must name it).
    pub endpoint: BatchEndpoint,
    /// Key-value pairs of the caller's (at most 16; keys up to 64 characters, values up to 512).
    pub metadata: Vec<(String, String)>,
    /// Who may read its lines' records (default: the member's default).
    pub visibility: Option<Visibility>,
    /// Its `Idempotency-Key`: the same key with the same request answers the same batch. When
    /// unset, the client makes one for the call, so that its retries create one batch.
    pub idempotency_key: Option<String>,
}

impl CreateBatch {
    /// A batch of the lines of `input_file_id`, each run on `endpoint`.
    pub fn new(input_file_id: impl Into<String>, endpoint: BatchEndpoint) -> Self {
        Self {
            input_file_id: input_file_id.into(),
            endpoint,
            metadata: Vec::new(),
            visibility: None,
            idempotency_key: None,
        }
    }

    /// Adds a metadata pair.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// Who may read its lines' records.
    pub fn visibility(mut self, visibility: Visibility) -> Self {
        self.visibility = Some(visibility);
        self
    }

    /// Its `Idempotency-Key` (1 to 255 visible ASCII characters).
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// The body of `POST /v1/batches`.
    fn body(&self) -> Value {
        let mut body = serde_json::json!({
            "input_file_id": self.input_file_id,
            "endpoint": self.endpoint.path(),
            "completion_window": "24h",
        });
        if !self.metadata.is_empty() {
            let pairs: Map<String, Value> = self
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            body["metadata"] = Value::Object(pairs);
        }
        if let Some(visibility) = self.visibility {
            body["visibility"] = visibility.as_str().into();
        }
        body
    }
}

/// The answer to one line: its HTTP status, its record, its body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchLineResponse {
    /// The status the endpoint answered.
    pub status_code: u16,
    /// The id of the line's record (`x-club-request-id`), when it was recorded.
    #[serde(default)]
    pub request_id: Option<String>,
    /// The endpoint's answer (a completion, embeddings, …, or an error envelope).
    #[serde(default)]
    pub body: Value,
}

/// Why a line has no answer: it was malformed (`line` names it), or its batch was cancelled or
/// expired before it ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchLineError {
    /// What went wrong (`invalid_json`, `duplicate_custom_id`, `batch_cancelled`, …).
    #[serde(default)]
    pub code: Option<String>,
    /// What to tell a person.
    #[serde(default)]
    pub message: String,
    /// The line of the input file (from 1), for a malformed line.
    #[serde(default)]
    pub line: Option<u64>,
}

/// One line of a batch's output or error file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchResultLine {
    /// Its id (`batch_req_…`).
    pub id: String,
    /// The input line's `custom_id` (none for a line that had none).
    #[serde(default)]
    pub custom_id: Option<String>,
    /// The endpoint's answer, when the line ran.
    #[serde(default)]
    pub response: Option<BatchLineResponse>,
    /// Why it did not run.
    #[serde(default)]
    pub error: Option<BatchLineError>,
}

impl BatchResultLine {
    /// Whether the line ran and was answered with a 2xx.
    pub fn is_success(&self) -> bool {
        self.error.is_none()
            && self
                .response
                .as_ref()
                .is_some_and(|r| (200..300).contains(&r.status_code))
    }

    /// The id of the line's record, if it ran.
    pub fn record_id(&self) -> Option<&str> {
        self.response.as_ref()?.request_id.as_deref()
    }

    /// The answer's body read as `T` (a [`ChatCompletion`](crate::ChatCompletion), …), when
    /// the line was answered with a 2xx.
    pub fn body_as<T: DeserializeOwned>(&self) -> Option<Result<T, Error>> {
        let response = self.response.as_ref().filter(|_| self.is_success())?;
        Some(
            T::deserialize(&response.body)
                .map_err(|e| Error::decode(e.to_string(), Some(Box::new(e)))),
        )
    }

    /// What went wrong, for a line that did not succeed: the error's message, or that of the
    /// answer's error envelope, or its status.
    pub fn failure(&self) -> Option<String> {
        if self.is_success() {
            return None;
        }
        if let Some(error) = &self.error {
            return Some(error.message.clone());
        }
        let response = self.response.as_ref()?;
        Some(
            response.body["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("HTTP {}", response.status_code)),
        )
    }
}

/// A batch's results: the batch, and the lines of its output and error files, each in line
/// order. Empty before the batch has ended (its files are written at its end).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchResults {
    /// The batch, as it was when its files were read.
    pub batch: Batch,
    /// Its output file's lines: the answers.
    pub output: Vec<BatchResultLine>,
    /// Its error file's lines: failed, malformed and unanswered lines.
    pub errors: Vec<BatchResultLine>,
}

/// Reads a JSONL file of result lines (blank lines skipped).
pub(crate) fn parse_result_lines(
    file_id: &str,
    data: &[u8],
) -> Result<Vec<BatchResultLine>, Error> {
    let text = std::str::from_utf8(data)
        .map_err(|e| Error::decode(format!("file {file_id} is not text: {e}"), None))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| {
                Error::decode(
                    format!(
                        "line {} of file {file_id} is not a batch result: {e}",
                        i + 1
                    ),
                    Some(Box::new(e)),
                )
            })
        })
        .collect()
}

/// A fresh `Idempotency-Key` for one call, so that its retries create one thing.
fn fresh_key() -> String {
    format!("club-{:032x}", fastrand::u128(..))
}

/// An OpenAI list page: `{"object": "list", "data", "first_id", "last_id", "has_more"}`.
#[derive(Deserialize)]
struct ListPage<T> {
    data: Vec<T>,
    #[serde(default)]
    last_id: Option<String>,
    #[serde(default)]
    has_more: bool,
}

/// A batch as it moves: each state it is seen in (polled), ending after the one where it ended.
/// From [`Client::watch_batch`].
pub struct BatchWatch {
    inner: Pin<Box<dyn Stream<Item = Result<Batch, Error>> + Send>>,
}

impl std::fmt::Debug for BatchWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchWatch").finish_non_exhaustive()
    }
}

impl Stream for BatchWatch {
    type Item = Result<Batch, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl Client {
    /// An OpenAI-listing (`after`, `limit`) under `segments`, page after page.
    fn listing<T: DeserializeOwned + Send + 'static>(&self, segments: &[&str]) -> Paginated<T> {
        let client = self.clone();
        let segments: Arc<[String]> = segments.iter().map(|s| (*s).to_owned()).collect();
        let fetch: FetchPage<T> = Arc::new(move |after| {
            let (client, segments) = (client.clone(), segments.clone());
            Box::pin(async move {
                let mut query = vec![("limit", PAGE_SIZE.to_string())];
                if let Some(after) = after {
                    query.push(("after", after));
                }
                let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
                let page: ListPage<T> = client
                    .call_json(
                        Method::GET,
                        &segments,
                        &query,
                        None::<&()>,
                        Idempotence::Retryable,
                    )
                    .await?;
                let next = page.last_id.filter(|_| page.has_more);
                Ok((page.data, next))
            })
        });
        Paginated::from_pages(None, fetch)
    }

    /// Uploads a JSONL file of batch lines (`POST /v1/files`, purpose `batch`, at most the
    /// coordinator's `max_file_bytes`, 64 MiB by default). Sent with an `Idempotency-Key` of
    /// its own, so that retries store it once.
    #[inline(never)]
    pub fn upload_file<'a>(
        &'a self,
        name: &'a str,
        bytes: impl Into<Bytes>,
    ) -> BoxFuture<'a, Result<FileObject, Error>> {
        let bytes = bytes.into();
        Box::pin(async move {
            let form = FormSpec::new(
                vec![("purpose".to_owned(), "batch".to_owned())],
                name.to_owned(),
                "application/jsonl",
                bytes,
            );
            let headers = [(IDEMPOTENCY_KEY_HEADER, fresh_key())];
            let answer = self
                .exchange(
                    Method::POST,
                    &["v1", "files"],
                    &[],
                    Some(Payload::Form(form)),
                    &headers,
                    Idempotence::Retryable,
                )
                .await?;
            answer.json()
        })
    }

    /// My files, newest first, page after page (`GET /v1/files`).
    pub fn files(&self) -> Paginated<FileObject> {
        self.listing(&["v1", "files"])
    }

    /// One of my files (`GET /v1/files/{id}`).
    #[inline(never)]
    pub fn file<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<FileObject, Error>> {
        Box::pin(async move {
            self.call_json(
                Method::GET,
                &["v1", "files", id],
                &[],
                None::<&()>,
                Idempotence::Retryable,
            )
            .await
        })
    }

    /// The bytes of one of my files (`GET /v1/files/{id}/content`).
    #[inline(never)]
    pub fn file_content<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Bytes, Error>> {
        Box::pin(async move {
            let answer = self
                .exchange(
                    Method::GET,
                    &["v1", "files", id, "content"],
                    &[],
                    None,
                    &[],
                    Idempotence::Retryable,
                )
                .await?;
            Ok(answer.body.unwrap_or_default().into())
        })
    }

    /// Deletes one of my files (`DELETE /v1/files/{id}`).
    #[inline(never)]
    pub fn delete_file<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            self.call::<Value>(
                Method::DELETE,
                &["v1", "files", id],
                &[],
                None::<&()>,
                Idempotence::Retryable,
            )
            .await
            .map(drop)
        })
    }

    /// Creates a batch over one of my uploaded files (`POST /v1/batches`); its status is
    /// `validating` at first. Malformed lines do not refuse it: they go to its error file.
    #[inline(never)]
    pub fn create_batch(&self, request: CreateBatch) -> BoxFuture<'_, Result<Batch, Error>> {
        Box::pin(async move {
            let body = serde_json::to_vec(&request.body()).map_err(|e| {
                Error::Config(format!("the request cannot be written as JSON: {e}"))
            })?;
            let key = request.idempotency_key.clone().unwrap_or_else(fresh_key);
            let headers = [(IDEMPOTENCY_KEY_HEADER, key)];
            let answer = self
                .exchange(
                    Method::POST,
                    &["v1", "batches"],
                    &[],
                    Some(Payload::Json(body)),
                    &headers,
                    Idempotence::Retryable,
                )
                .await?;
            answer.json()
        })
    }

    /// One of my batches, its counts as they are now (`GET /v1/batches/{id}`).
    #[inline(never)]
    pub fn batch<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Batch, Error>> {
        Box::pin(async move {
            self.call_json(
                Method::GET,
                &["v1", "batches", id],
                &[],
                None::<&()>,
                Idempotence::Retryable,
            )
            .await
        })
    }

    /// My batches, newest first, page after page (`GET /v1/batches`).
    pub fn batches(&self) -> Paginated<Batch> {
        self.listing(&["v1", "batches"])
    }

    /// Stops one of my batches (`POST /v1/batches/{id}/cancel`): `cancelling` at once,
    /// `cancelled` within a second, with what was answered by then in its files. A batch that
    /// has ended is answered as it is.
    #[inline(never)]
    pub fn cancel_batch<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Batch, Error>> {
        Box::pin(async move {
            self.call_json(
                Method::POST,
                &["v1", "batches", id, "cancel"],
                &[],
                None::<&()>,
                Idempotence::Retryable,
            )
            .await
        })
    }

    /// Follows one of my batches: polls it every `every` (at least 50 ms) and yields it each
    /// time its status or counts changed, the first time too; the stream ends after the state
    /// in which it ended ([`BatchStatus::is_terminal`]), or with an error.
    pub fn watch_batch(&self, id: &str, every: Duration) -> BatchWatch {
        struct State {
            client: Client,
            id: String,
            every: Duration,
            seen: Option<(BatchStatus, RequestCounts)>,
            ended: bool,
        }
        let state = State {
            client: self.clone(),
            id: id.to_owned(),
            every: every.max(Duration::from_millis(50)),
            seen: None,
            ended: false,
        };
        let inner = futures_util::stream::unfold(state, |mut state| async move {
            if state.ended {
                return None;
            }
            loop {
                if state.seen.is_some() {
                    tokio::time::sleep(state.every).await;
                }
                let batch = match state.client.batch(&state.id).await {
                    Ok(batch) => batch,
                    Err(error) => {
                        state.ended = true;
                        return Some((Err(error), state));
                    }
                };
                let now = (batch.status, batch.request_counts);
                if state.seen != Some(now) || batch.status.is_terminal() {
                    state.seen = Some(now);
                    state.ended = batch.status.is_terminal();
                    return Some((Ok(batch), state));
                }
            }
        });
        BatchWatch {
            inner: Box::pin(inner),
        }
    }

    /// Waits until one of my batches has ended, polling every `every`; answers it as it ended.
    #[inline(never)]
    pub fn wait_for_batch<'a>(
        &'a self,
        id: &'a str,
        every: Duration,
    ) -> BoxFuture<'a, Result<Batch, Error>> {
        Box::pin(async move {
            let mut watch = self.watch_batch(id, every);
            let mut last = None;
            while let Some(batch) = watch.next().await {
                last = Some(batch?);
            }
            last.ok_or_else(|| Error::decode("the batch was never read", None))
        })
    }

    /// One of my batches with the lines of its output and error files, downloaded and read
    /// (both empty before it has ended).
    #[inline(never)]
    pub fn batch_results<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<BatchResults, Error>> {
        Box::pin(async move {
            let batch = self.batch(id).await?;
            let mut files = [Vec::new(), Vec::new()];
            for (lines, file_id) in files
                .iter_mut()
                .zip([&batch.output_file_id, &batch.error_file_id])
            {
                if let Some(file_id) = file_id {
                    let data = self.file_content(file_id).await?;
                    *lines = parse_result_lines(file_id, &data)?;
                }
            }
            let [output, errors] = files;
            Ok(BatchResults {
                batch,
                output,
                errors,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn endpoints_are_read_with_or_without_v1() {
        for endpoint in BatchEndpoint::KNOWN {
            assert_eq!(
                endpoint.path().parse::<BatchEndpoint>(),
                Ok(endpoint.clone())
            );
            assert_eq!(BatchEndpoint::from_path(endpoint.path()), endpoint);
        }
        assert_eq!("embeddings".parse(), Ok(BatchEndpoint::Embeddings));
        assert_eq!("v1/responses".parse(), Ok(BatchEndpoint::Responses));
        assert!("/v1/audio/speech".parse::<BatchEndpoint>().is_err());
        let other = BatchEndpoint::from_path("/v1/moderations");
        assert_eq!(other, BatchEndpoint::Other("/v1/moderations".into()));
        assert_eq!(serde_json::to_value(&other).unwrap(), "/v1/moderations");
    }

    #[test]
    fn a_new_batch_is_written_in_openai_shape() {
        let request = CreateBatch::new("file-1", BatchEndpoint::Embeddings)
            .metadata("run", "one")
            .visibility(Visibility::Private)
            .idempotency_key("k1");
        assert_eq!(
            request.body(),
            json!({"input_file_id": "file-1", "endpoint": "/v1/embeddings",
                   "completion_window": "24h", "metadata": {"run": "one"},
                   "visibility": "private"})
        );
        let plain = CreateBatch::new("file-2", BatchEndpoint::ChatCompletions).body();
        assert!(plain.get("metadata").is_none() && plain.get("visibility").is_none());
        assert_ne!(fresh_key(), fresh_key());
    }

    #[test]
    fn batches_and_their_lines_are_read_from_openai_shapes() {
        let batch: Batch = serde_json::from_value(json!({
            "id": "batch_1", "object": "batch", "endpoint": "/v1/chat/completions",
            "status": "in_progress", "created_at": 10, "completion_window": "24h",
            "request_counts": {"total": 4, "completed": 1, "failed": 1},
            "output_file_id": null, "metadata": {"k": "v"}, "visibility": "unlisted",
            "brand_new": true
        }))
        .unwrap();
        assert_eq!(batch.status, BatchStatus::InProgress);
        assert!(!batch.status.is_terminal());
        assert_eq!(batch.request_counts.done(), 2);
        assert!((batch.request_counts.fraction() - 0.5).abs() < 1e-9);
        assert_eq!(batch.extra["brand_new"], true);
        assert_eq!(batch.endpoint, BatchEndpoint::ChatCompletions);
        let odd: Batch =
            serde_json::from_value(json!({"id": "b", "endpoint": "/v1/x", "status": "paused"}))
                .unwrap();
        assert_eq!(odd.status, BatchStatus::Unknown);

        let jsonl = concat!(
            r#"{"id":"r1","custom_id":"a","response":{"status_code":200,"request_id":"rec1","body":{"n":1}},"error":null}"#,
            "\n\n",
            r#"{"id":"r2","custom_id":null,"response":null,"error":{"code":"invalid_json","message":"line 2: bad","line":2}}"#,
            "\n",
            r#"{"id":"r3","custom_id":"c","response":{"status_code":404,"request_id":null,"body":{"error":{"message":"no model"}}},"error":null}"#,
        );
        let lines = parse_result_lines("file-x", jsonl.as_bytes()).unwrap();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].is_success());
        assert_eq!(lines[0].record_id(), Some("rec1"));
        assert_eq!(lines[0].body_as::<Value>().unwrap().unwrap()["n"], 1);
        assert_eq!(lines[1].error.as_ref().unwrap().line, Some(2));
        assert_eq!(lines[1].failure().as_deref(), Some("line 2: bad"));
        assert!(lines[1].body_as::<Value>().is_none());
        assert_eq!(lines[2].failure().as_deref(), Some("no model"));
        let broken = parse_result_lines("file-y", b"{\"id\":\"r1\"}\nnot json");
        assert!(
            broken
                .unwrap_err()
                .to_string()
                .contains("line 2 of file file-y")
        );
    }
}
