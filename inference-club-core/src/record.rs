//! The request record: one per inference request, from acceptance to its final state.
//!
//! A record's [`Status`] only moves forward (`queued` → `running` → `succeeded` | `failed` |
//! `cancelled`); the methods of [`InferenceRecord`] refuse any other move, so a finished record
//! cannot go back to running.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::endpoint::Endpoint;
use crate::openai::{ChatCompletion, ChatCompletionRequest, FinishReason, ToolCall, Usage};

/// The id of a record: a time-ordered UUID (v7), so ids sort by arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RecordId(Uuid);

impl RecordId {
    /// A new id for a request arriving now.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// The completion id derived from the record id (`chatcmpl-` and the id without hyphens), so a
    /// client holding a completion can find its record.
    pub fn completion_id(&self) -> String {
        format!("chatcmpl-{}", self.0.simple())
    }

    /// The text completion id derived from it (`cmpl-<hex>`), for `/v1/completions`.
    pub fn text_completion_id(&self) -> String {
        format!("cmpl-{}", self.0.simple())
    }

    /// The response id derived from it (`resp_<hex>`), for `/v1/responses`.
    pub fn response_id(&self) -> String {
        format!("resp_{}", self.0.simple())
    }

    /// Reads a record id from its UUID form or from an id derived from it (a chat completion,
    /// text completion or response id).
    pub fn parse(text: &str) -> Option<Self> {
        let text = ["chatcmpl-", "cmpl-", "resp_"]
            .iter()
            .find_map(|prefix| text.strip_prefix(prefix))
            .unwrap_or(text);
        Uuid::try_parse(text).ok().map(Self)
    }
}

impl Default for RecordId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for RecordId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl std::fmt::Display for RecordId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Accepted, waiting for a provider.
    Queued,
    /// Sent to a provider.
    Running,
    /// Answered in full.
    Succeeded,
    /// Ended with an error.
    Failed,
    /// The consumer went away or cancelled.
    Cancelled,
}

impl Status {
    /// Whether the status is final.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// Whether a record in this status may move to `next`.
    pub fn can_become(self, next: Status) -> bool {
        match self {
            Self::Queued => matches!(next, Self::Running | Self::Failed | Self::Cancelled),
            Self::Running => matches!(next, Self::Succeeded | Self::Failed | Self::Cancelled),
            Self::Succeeded | Self::Failed | Self::Cancelled => false,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for Status {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Self::Queued,
            Self::Running,
            Self::Succeeded,
            Self::Failed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
        .ok_or_else(|| UnknownName(s.to_owned()))
    }
}

/// Who may read a record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Anyone, and listed in the public feed (the default).
    #[default]
    Public,
    /// Anyone with its id; not listed.
    Unlisted,
    /// The owner and the operator of the node that served it.
    Private,
}

impl Visibility {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Unlisted => "unlisted",
            Self::Private => "private",
        }
    }
}

impl std::str::FromStr for Visibility {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Public, Self::Unlisted, Self::Private]
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownName(s.to_owned()))
    }
}

/// A name that is not one of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value {0:?}")]
pub struct UnknownName(pub String);

/// A move between statuses that is not allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {from:?} record cannot become {to:?}")]
pub struct TransitionError {
    /// The record's status.
    pub from: Status,
    /// The refused status.
    pub to: Status,
}

/// Where token counts came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UsageSource {
    /// Reported by the engine.
    Reported,
    /// The engine reported none; nothing is estimated.
    #[default]
    Absent,
}

/// Token counts of a request and where they came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Where the counts came from.
    pub source: UsageSource,
    /// The counts, when the engine reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<Usage>,
}

impl TokenUsage {
    /// Counts reported by the engine, or absent.
    pub fn from_reported(usage: Option<Usage>) -> Self {
        Self {
            source: if usage.is_some() {
                UsageSource::Reported
            } else {
                UsageSource::Absent
            },
            counts: usage,
        }
    }
}

/// Who served a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedBy {
    /// The operator (member handle) who owns the provider.
    pub operator: String,
    /// The provider's name (`agent.name` of its manifest).
    pub provider: String,
    /// The service of the node that ran the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// One try at a provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// Who was tried.
    pub served_by: ServedBy,
    /// When.
    pub started_at: DateTime<Utc>,
    /// Why it failed; `None` for the attempt that succeeded (or is running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<AttemptError>,
}

/// The error of a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptError {
    /// The kind (see [`ProviderError::kind`](crate::provider::ProviderError::kind)).
    pub kind: String,
    /// What happened.
    pub message: String,
}

/// The answer as it was assembled from the stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordedResponse {
    /// The answer text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The reasoning trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    /// A refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Tool calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Why generation stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<FinishReason>,
}

impl RecordedResponse {
    /// The first choice of a completion.
    pub fn from_completion(completion: &ChatCompletion) -> Self {
        completion
            .choices
            .first()
            .map(|choice| Self {
                content: choice.message.content.clone(),
                reasoning: choice.message.reasoning.clone(),
                refusal: choice.message.refusal.clone(),
                tool_calls: choice.message.tool_calls.clone().unwrap_or_default(),
                finish_reason: choice.finish_reason.clone(),
            })
            .unwrap_or_default()
    }
}

/// When things happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// Accepted by the coordinator.
    pub received_at: DateTime<Utc>,
    /// Sent to the provider that served it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatched_at: Option<DateTime<Utc>>,
    /// First output (content, reasoning or tool call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_token_at: Option<DateTime<Utc>>,
    /// Final status reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

impl Timing {
    /// Milliseconds from acceptance to the final status.
    pub fn latency_ms(&self) -> Option<i64> {
        self.finished_at
            .map(|t| (t - self.received_at).num_milliseconds())
    }

    /// Milliseconds from acceptance to the first output.
    pub fn time_to_first_token_ms(&self) -> Option<i64> {
        self.first_token_at
            .map(|t| (t - self.received_at).num_milliseconds())
    }
}

/// The record of one inference request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceRecord {
    /// Its id (what `x-club-request-id` carries).
    pub id: RecordId,
    /// The member who asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    /// The model as requested.
    pub model_requested: String,
    /// The model id the engine served it under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_served: Option<String>,
    /// Who served it (the last attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_by: Option<ServedBy>,
    /// The request body as the consumer sent it.
    pub request: ChatCompletionRequest,
    /// The answer.
    #[serde(default)]
    pub response: RecordedResponse,
    /// Token counts.
    #[serde(default)]
    pub usage: TokenUsage,
    /// Timestamps.
    pub timing: Timing,
    status: Status,
    /// Why it failed or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Every provider tried, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
    /// Who may read it.
    #[serde(default)]
    pub visibility: Visibility,
    /// The endpoint the request was made to (chat completions unless said otherwise).
    #[serde(default, skip_serializing_if = "is_chat")]
    pub endpoint: Endpoint,
    /// The request body of an endpoint other than chat, as the consumer sent it (an uploaded
    /// file is in [`InferenceRecord::blobs`], not here); `request` then holds only the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
    /// The embeddings answered: how many and of what dimension (the vectors are not kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embeddings: Option<EmbeddingsSummary>,
    /// The audio and images of the request and its answer, stored apart from the record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blobs: Vec<BlobRef>,
    /// The batch this request is a line of (`batch_…`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
}

fn is_chat(endpoint: &Endpoint) -> bool {
    *endpoint == Endpoint::ChatCompletions
}

/// How many embeddings an answer held, and their dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingsSummary {
    /// The number of vectors.
    pub count: u64,
    /// The length of each (of the first, when they differ).
    pub dimensions: u64,
}

/// Whether a blob came with the request or with the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobRole {
    /// Uploaded by the consumer (audio to transcribe).
    Input,
    /// Produced by the engine (speech, an image).
    Output,
}

/// A stored blob of a record: audio or an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// Its id (unique among all blobs).
    pub id: String,
    /// Input or output.
    pub role: BlobRole,
    /// Its content type (`audio/wav`, `image/png`, …).
    pub content_type: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Not stored: larger than the cap, or removed after the retention period.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dropped: bool,
}

impl BlobRef {
    /// Whether it holds audio.
    pub fn is_audio(&self) -> bool {
        self.content_type.starts_with("audio/")
    }

    /// Whether it holds an image.
    pub fn is_image(&self) -> bool {
        self.content_type.starts_with("image/")
    }
}

impl InferenceRecord {
    /// A `queued` record of a request accepted at `received_at`.
    pub fn new(
        id: RecordId,
        consumer: Option<String>,
        request: ChatCompletionRequest,
        visibility: Visibility,
        received_at: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            consumer,
            model_requested: request.model.clone(),
            model_served: None,
            served_by: None,
            request,
            response: RecordedResponse::default(),
            usage: TokenUsage::default(),
            timing: Timing {
                received_at,
                dispatched_at: None,
                first_token_at: None,
                finished_at: None,
            },
            status: Status::Queued,
            failure: None,
            attempts: Vec::new(),
            visibility,
            endpoint: Endpoint::ChatCompletions,
            input: None,
            embeddings: None,
            blobs: Vec::new(),
            batch: None,
        }
    }

    /// A new record of a request to `endpoint` (not chat) for `model`, with the body the
    /// consumer sent as its `input`.
    pub fn for_call(
        id: RecordId,
        consumer: Option<String>,
        endpoint: Endpoint,
        input: serde_json::Value,
        visibility: Visibility,
        received_at: DateTime<Utc>,
    ) -> Self {
        let model = input
            .get("model")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        let mut record = Self::new(
            id,
            consumer,
            ChatCompletionRequest::new(model, Vec::new()),
            visibility,
            received_at,
        );
        record.endpoint = endpoint;
        record.input = Some(input);
        record
    }

    /// The text the request asked about, for lists and previews: the last user message of a
    /// chat, the prompt, input or text of other endpoints.
    pub fn prompt_preview(&self) -> Option<String> {
        if let Some(input) = &self.input {
            let text = ["prompt", "input", "text"]
                .iter()
                .find_map(|field| input.get(*field))
                .map(|value| match value {
                    serde_json::Value::String(text) => text.clone(),
                    serde_json::Value::Array(items) => items
                        .iter()
                        .filter_map(serde_json::Value::as_str)
                        .collect::<Vec<_>>()
                        .join(" · "),
                    other => other.to_string(),
                });
            return text.or_else(|| {
                self.blobs
                    .iter()
                    .find(|b| b.role == BlobRole::Input)
                    .map(|b| format!("({}, {} bytes)", b.content_type, b.bytes))
            });
        }
        self.request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == crate::openai::Role::User)
            .and_then(|m| m.text_content())
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.status
    }

    fn move_to(&mut self, to: Status) -> Result<(), TransitionError> {
        if self.status == to && to == Status::Running {
            return Ok(());
        }
        if !self.status.can_become(to) {
            return Err(TransitionError {
                from: self.status,
                to,
            });
        }
        self.status = to;
        Ok(())
    }

    /// An attempt at `served_by` begins; the record is `running`. Each failover calls this again
    /// after [`InferenceRecord::attempt_failed`].
    pub fn dispatched(
        &mut self,
        served_by: ServedBy,
        at: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        self.move_to(Status::Running)?;
        self.timing.dispatched_at = Some(at);
        self.served_by = Some(served_by.clone());
        self.attempts.push(Attempt {
            served_by,
            started_at: at,
            error: None,
        });
        Ok(())
    }

    /// The current attempt failed before any output; another may follow.
    pub fn attempt_failed(&mut self, kind: &str, message: impl Into<String>) {
        if let Some(last) = self.attempts.last_mut() {
            last.error = Some(AttemptError {
                kind: kind.to_owned(),
                message: message.into(),
            });
        }
    }

    /// The first output arrived (only the first call counts).
    pub fn first_token(&mut self, at: DateTime<Utc>) {
        if self.timing.first_token_at.is_none() {
            self.timing.first_token_at = Some(at);
        }
    }

    /// The request was answered in full.
    pub fn succeeded(
        &mut self,
        completion: &ChatCompletion,
        at: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        self.move_to(Status::Succeeded)?;
        self.response = RecordedResponse::from_completion(completion);
        self.model_served = Some(completion.model.clone()).filter(|m| !m.is_empty());
        self.usage = TokenUsage::from_reported(completion.usage.clone());
        self.timing.finished_at = Some(at);
        Ok(())
    }

    /// The request failed; `partial` is what was produced before the failure, if anything.
    pub fn failed(
        &mut self,
        reason: impl Into<String>,
        partial: Option<&ChatCompletion>,
        at: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        self.move_to(Status::Failed)?;
        self.finish_with(reason.into(), partial, at);
        Ok(())
    }

    /// The request was cancelled; `partial` is what was produced before, if anything.
    pub fn cancelled(
        &mut self,
        reason: impl Into<String>,
        partial: Option<&ChatCompletion>,
        at: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        self.move_to(Status::Cancelled)?;
        self.finish_with(reason.into(), partial, at);
        Ok(())
    }

    fn finish_with(&mut self, reason: String, partial: Option<&ChatCompletion>, at: DateTime<Utc>) {
        if let Some(partial) = partial {
            self.response = RecordedResponse::from_completion(partial);
            self.usage = TokenUsage::from_reported(partial.usage.clone());
        }
        self.failure = Some(reason);
        self.timing.finished_at = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::{ChatCompletionAggregator, ChatCompletionChunk, ChatMessage, ChunkDelta};

    fn record() -> InferenceRecord {
        let request = ChatCompletionRequest::new("m", vec![ChatMessage::user("hi")]);
        InferenceRecord::new(
            RecordId::new(),
            Some("ada".into()),
            request,
            Visibility::default(),
            Utc::now(),
        )
    }

    fn served() -> ServedBy {
        ServedBy {
            operator: "bob".into(),
            provider: "box".into(),
            service: Some("ollama".into()),
        }
    }

    #[test]
    fn finished_records_cannot_move() {
        let mut r = record();
        r.dispatched(served(), Utc::now()).unwrap();
        let mut agg = ChatCompletionAggregator::new();
        agg.push(&ChatCompletionChunk::new("c", "m", 0).with_delta(ChunkDelta::content("yo")));
        r.succeeded(&agg.finish(), Utc::now()).unwrap();
        assert_eq!(r.status(), Status::Succeeded);
        assert_eq!(r.response.content.as_deref(), Some("yo"));
        assert!(r.dispatched(served(), Utc::now()).is_err());
        assert!(r.failed("late", None, Utc::now()).is_err());
        assert_eq!(r.status(), Status::Succeeded);
    }

    #[test]
    fn queued_cannot_succeed_without_running() {
        let mut r = record();
        let done = ChatCompletionAggregator::new().finish();
        assert_eq!(
            r.succeeded(&done, Utc::now()),
            Err(TransitionError {
                from: Status::Queued,
                to: Status::Succeeded
            })
        );
    }

    #[test]
    fn failover_keeps_every_attempt() {
        let mut r = record();
        r.dispatched(served(), Utc::now()).unwrap();
        r.attempt_failed("unavailable", "connection refused");
        r.dispatched(served(), Utc::now()).unwrap();
        assert_eq!(r.attempts.len(), 2);
        assert!(r.attempts[0].error.is_some());
        assert!(r.attempts[1].error.is_none());
        r.failed("boom", None, Utc::now()).unwrap();
        assert_eq!(r.failure.as_deref(), Some("boom"));
        assert!(r.timing.latency_ms().is_some());
    }

    #[test]
    fn ids_round_trip_through_completion_ids() {
        let id = RecordId::new();
        assert_eq!(RecordId::parse(&id.completion_id()), Some(id));
        assert_eq!(RecordId::parse(&id.text_completion_id()), Some(id));
        assert_eq!(RecordId::parse(&id.response_id()), Some(id));
        assert_eq!(RecordId::parse(&id.to_string()), Some(id));
        assert_eq!(RecordId::parse("nope"), None);
    }

    #[test]
    fn status_and_visibility_names() {
        assert_eq!("private".parse::<Visibility>(), Ok(Visibility::Private));
        assert!("secret".parse::<Visibility>().is_err());
        assert_eq!(Visibility::default(), Visibility::Public);
        assert_eq!("failed".parse::<Status>(), Ok(Status::Failed));
        assert_eq!(
            serde_json::to_value(Status::Cancelled).unwrap(),
            "cancelled"
        );
    }
}
