//! Typed views of what the coordinator answers: models, records, providers, keys, the account,
//! and device sign-in. Every type tolerates fields it does not know (a newer coordinator) and
//! keeps them in `extra` where they matter.

use chrono::{DateTime, Utc};
use inference_club_core::openai::{ChatCompletionRequest, FinishReason, ToolCall};
use inference_club_core::record::{Status, UsageSource, Visibility};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A model the caller may use, with its capabilities merged across the nodes serving it
/// (`GET /v1/models`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The id to request it by.
    pub id: String,
    /// Unix seconds: the earliest link among the nodes serving it.
    #[serde(default)]
    pub created: u64,
    /// The operator's handle, or `inference-club` when several members serve it.
    #[serde(default)]
    pub owned_by: String,
    /// Its Hugging Face id.
    #[serde(default)]
    pub hf: Option<String>,
    /// The smallest context length the serving nodes declare, in tokens.
    #[serde(default)]
    pub context_length: Option<u64>,
    /// What it takes in (`text`, `image`, …).
    #[serde(default)]
    pub input_modalities: Vec<String>,
    /// What it puts out.
    #[serde(default)]
    pub output_modalities: Vec<String>,
    /// Features every serving node declares (`tools`, `reasoning`, …).
    #[serde(default)]
    pub features: Vec<String>,
    /// How many online nodes serve it to this caller.
    #[serde(default)]
    pub nodes: Option<u32>,
    /// Fields this client does not know, passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ModelInfo {
    /// Whether the model declares `feature` (case-insensitively).
    pub fn has_feature(&self, feature: &str) -> bool {
        self.features
            .iter()
            .any(|f| f.eq_ignore_ascii_case(feature))
    }
}

/// One page of a listing: `{"object": "list", "data", "has_more", "next_cursor"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items, newest first.
    pub data: Vec<T>,
    /// Whether another page follows.
    #[serde(default)]
    pub has_more: bool,
    /// What to pass as `cursor` for the next page; `None` on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// Filters and paging of a record listing. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordFilter {
    /// Only requests for this model.
    pub model: Option<String>,
    /// Only requests in this status.
    pub status: Option<Status>,
    /// Only requests of this visibility (not for the public feed).
    pub visibility: Option<Visibility>,
    /// Page size, 1 to 100 (the server's default is 50).
    pub limit: Option<u32>,
    /// Start after this cursor (a `next_cursor` from an earlier page).
    pub cursor: Option<String>,
}

impl RecordFilter {
    /// No filter: everything, newest first.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only requests for `model`.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Only requests in `status`.
    pub fn status(mut self, status: Status) -> Self {
        self.status = Some(status);
        self
    }

    /// Only requests of `visibility`.
    pub fn visibility(mut self, visibility: Visibility) -> Self {
        self.visibility = Some(visibility);
        self
    }

    /// Pages of `limit` items.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Start after `cursor`.
    pub fn cursor(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }

    pub(crate) fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        if let Some(model) = &self.model {
            query.push(("model", model.clone()));
        }
        if let Some(status) = self.status {
            query.push(("status", status.as_str().to_owned()));
        }
        if let Some(visibility) = self.visibility {
            query.push(("visibility", visibility.as_str().to_owned()));
        }
        if let Some(limit) = self.limit {
            query.push(("limit", limit.to_string()));
        }
        if let Some(cursor) = &self.cursor {
            query.push(("cursor", cursor.clone()));
        }
        query
    }
}

/// The record of one inference request, as the club API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The record id (what `x-club-request-id` carries).
    pub id: String,
    /// The completion id derived from it (`chatcmpl-…`).
    #[serde(default)]
    pub completion_id: Option<String>,
    /// The member who made the request, if still a member.
    #[serde(default)]
    pub consumer: Option<String>,
    /// The model as requested.
    pub model_requested: String,
    /// The model id the engine served it under.
    #[serde(default)]
    pub model_served: Option<String>,
    /// Who served it.
    #[serde(default)]
    pub provider: Option<ProviderRef>,
    /// Where the request is in its life.
    pub status: Status,
    /// Who may read it.
    pub visibility: Visibility,
    /// When things happened.
    pub timing: RecordTiming,
    /// Token counts and where they came from.
    pub usage: RecordUsage,
    /// The request as the consumer sent it.
    pub request: ChatCompletionRequest,
    /// The answer as assembled.
    pub response: RecordResponse,
    /// Every provider tried, in order.
    #[serde(default)]
    pub attempts: Vec<RecordAttempt>,
    /// Why it failed or was cancelled.
    #[serde(default)]
    pub failure: Option<String>,
    /// The endpoint the request was made to (`chat_completions`, `completions`,
    /// `embeddings`, `audio_transcriptions`, `audio_speech`, `images_generations`, …).
    #[serde(default = "chat_completions")]
    pub endpoint: String,
    /// The body of a request to an endpoint other than chat (an uploaded file is not in it).
    #[serde(default)]
    pub input: Option<Value>,
    /// Fields this client does not know (blobs, embedding counts, …), passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn chat_completions() -> String {
    "chat_completions".into()
}

impl Record {
    /// What was asked: the text of the last user message of a chat, else the `prompt` or
    /// (first) `input` text of another endpoint's request.
    pub fn prompt(&self) -> Option<String> {
        let chat = self
            .request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == inference_club_core::openai::Role::User)
            .and_then(|m| m.text_content());
        chat.or_else(|| {
            let input = self.input.as_ref()?;
            let text = |v: &Value| match v {
                Value::String(s) => Some(s.clone()),
                Value::Array(items) => items.first().and_then(Value::as_str).map(str::to_owned),
                _ => None,
            };
            input
                .get("prompt")
                .and_then(text)
                .or_else(|| input.get("input").and_then(text))
        })
    }
}

/// A serving provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderRef {
    /// Its operator's handle.
    pub operator: String,
    /// Its name.
    pub name: String,
    /// The service of the node that ran the model.
    #[serde(default)]
    pub service: Option<String>,
}

impl std::fmt::Display for ProviderRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.operator, self.name)
    }
}

/// A record's timestamps and the durations derived from them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordTiming {
    /// Accepted by the coordinator.
    pub received_at: DateTime<Utc>,
    /// Sent to the provider that served it.
    #[serde(default)]
    pub dispatched_at: Option<DateTime<Utc>>,
    /// First output.
    #[serde(default)]
    pub first_token_at: Option<DateTime<Utc>>,
    /// Final status reached.
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Milliseconds from acceptance to the final status.
    #[serde(default)]
    pub latency_ms: Option<i64>,
    /// Milliseconds from acceptance to the first output.
    #[serde(default)]
    pub time_to_first_token_ms: Option<i64>,
}

/// A record's token counts: `source` says whether the engine reported them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordUsage {
    /// `reported` (by the engine) or `absent` (nothing is estimated).
    pub source: UsageSource,
    /// Tokens in the prompt.
    #[serde(default)]
    pub prompt_tokens: Option<u64>,
    /// Tokens generated, reasoning included.
    #[serde(default)]
    pub completion_tokens: Option<u64>,
    /// Their sum.
    #[serde(default)]
    pub total_tokens: Option<u64>,
    /// Generated tokens spent on reasoning, where reported.
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
}

/// A record's answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordResponse {
    /// The answer text.
    #[serde(default)]
    pub content: Option<String>,
    /// The reasoning trace.
    #[serde(default)]
    pub reasoning: Option<String>,
    /// A refusal.
    #[serde(default)]
    pub refusal: Option<String>,
    /// Tool calls.
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    /// Why generation stopped.
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
}

/// One try at a provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordAttempt {
    /// Who was tried.
    pub provider: ProviderRef,
    /// When.
    pub started_at: DateTime<Utc>,
    /// Why it failed; `None` for the attempt that served it.
    #[serde(default)]
    pub error: Option<AttemptError>,
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptError {
    /// Its kind.
    pub kind: String,
    /// What happened.
    pub message: String,
}

/// A provider's public profile (`GET /api/v1/providers[/{operator}/{name}]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderProfile {
    /// The operator's handle.
    pub operator: String,
    /// The provider's name (`agent.name`).
    pub name: String,
    /// Whether a node of it is linked now.
    #[serde(default)]
    pub online: bool,
    /// When the current link was made, if online.
    #[serde(default)]
    pub connected_at: Option<DateTime<Utc>>,
    /// When it was first seen.
    #[serde(default)]
    pub first_seen: Option<DateTime<Utc>>,
    /// When it was last heard from.
    #[serde(default)]
    pub last_seen: Option<DateTime<Utc>>,
    /// The number of its latest manifest revision.
    #[serde(default)]
    pub manifest_revision: Option<i64>,
    /// Its manifest, redacted.
    #[serde(default)]
    pub manifest: Value,
    /// The models it declares.
    #[serde(default)]
    pub models: Vec<ProviderModel>,
    /// Counts.
    #[serde(default)]
    pub counts: ProviderCounts,
    /// Fields this client does not know (settings such as `accepting`), passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A model a provider declares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderModel {
    /// The id it is served under.
    pub id: String,
    /// Its Hugging Face id.
    #[serde(default)]
    pub hf: Option<String>,
    /// Its display name.
    #[serde(default)]
    pub name: Option<String>,
    /// The service that runs it.
    #[serde(default)]
    pub service: Option<String>,
    /// Its context length, in tokens.
    #[serde(default)]
    pub context_length: Option<u64>,
    /// What it takes in.
    #[serde(default)]
    pub input_modalities: Vec<String>,
    /// What it puts out.
    #[serde(default)]
    pub output_modalities: Vec<String>,
    /// Its features.
    #[serde(default)]
    pub features: Vec<String>,
    /// Its quantization.
    #[serde(default)]
    pub quantization: Option<String>,
}

/// A provider's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderCounts {
    /// Models declared.
    #[serde(default)]
    pub models: u64,
    /// Jobs running on it now.
    #[serde(default)]
    pub in_flight: u64,
    /// Requests it served (only on a single profile, counted up to a limit).
    #[serde(default)]
    pub requests_served: Option<u64>,
    /// Whether `requests_served` is exact (false: at least that many).
    #[serde(default)]
    pub requests_served_exact: Option<bool>,
}

/// Changes to one's provider (`PATCH /api/v1/providers/{operator}/{name}`). Only the fields set
/// are sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProviderSettings {
    /// Whether the provider accepts new requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepting: Option<bool>,
    /// Who may use it (an access policy, as in the manifest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access: Option<Value>,
}

/// Which nodes serve one's own requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RoutingPreference {
    /// Any node that admits the member.
    Any,
    /// One's own nodes first, others when they cannot.
    PreferOwn,
    /// Only one's own nodes.
    OnlyOwn,
}

impl RoutingPreference {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::PreferOwn => "prefer_own",
            Self::OnlyOwn => "only_own",
        }
    }
}

impl std::str::FromStr for RoutingPreference {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "any" => Ok(Self::Any),
            "prefer_own" => Ok(Self::PreferOwn),
            "only_own" => Ok(Self::OnlyOwn),
            other => Err(format!(
                "routing preference must be any, prefer_own or only_own, got {other:?}"
            )),
        }
    }
}

/// The member's account (`GET /api/v1/me`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// Their id.
    pub id: String,
    /// Their handle (GitHub login).
    pub handle: String,
    /// Their e-mail address, if known.
    #[serde(default)]
    pub email: Option<String>,
    /// When the account was created.
    pub created_at: DateTime<Utc>,
    /// The visibility of their requests when a request names none.
    pub default_visibility: Visibility,
    /// Which nodes serve their requests, where the coordinator supports it.
    #[serde(default)]
    pub routing_preference: Option<RoutingPreference>,
    /// When they accepted the terms.
    #[serde(default)]
    pub terms_accepted_at: Option<DateTime<Utc>>,
    /// Fields this client does not know, passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Changes to the account's settings (`PATCH /api/v1/me`). Only the fields set are sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AccountSettings {
    /// The visibility of requests that name none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_visibility: Option<Visibility>,
    /// Which nodes serve one's requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing_preference: Option<RoutingPreference>,
}

/// What `DELETE /api/v1/me` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountDeletion {
    /// The handle of the deleted account.
    pub handle: String,
    /// Whether it was deleted.
    #[serde(default)]
    pub deleted: bool,
    /// What was removed from the club.
    #[serde(default)]
    pub removed: Vec<String>,
    /// How many node links were closed.
    #[serde(default)]
    pub nodes_disconnected: u64,
    /// What the club cannot reach.
    #[serde(default)]
    pub not_reached: Option<String>,
}

/// A key as listed: its prefix, never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Its id (what [`Client::revoke_key`](crate::Client::revoke_key) takes).
    pub id: String,
    /// Its name.
    pub name: String,
    /// The first characters of the secret.
    pub prefix: String,
    /// What it may be used for: `inference`, `provider`, `account`.
    pub scopes: Vec<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last used.
    #[serde(default)]
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A key just created: its listing and, this once, its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedKey {
    /// The key as it will be listed.
    #[serde(flatten)]
    pub key: ApiKey,
    /// The secret: shown here and never again.
    pub secret: String,
}

/// The start of a device sign-in (`POST /api/v1/auth/device`): show `user_code` and
/// `verification_uri` to the person, then wait with
/// [`Client::wait_for_device_token`](crate::Client::wait_for_device_token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceAuthorization {
    /// The secret this device polls with.
    pub device_token: String,
    /// The code the person enters on the verification page.
    pub user_code: String,
    /// Where the person signs in.
    pub verification_uri: String,
    /// Seconds until the sign-in expires.
    pub expires_in: u64,
    /// Seconds between polls.
    #[serde(default = "default_interval")]
    pub interval: u64,
}

fn default_interval() -> u64 {
    5
}

/// A finished device sign-in: a new API key for this device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceToken {
    /// The API key (`icl_…`).
    pub key: String,
    /// Its id.
    #[serde(default)]
    pub key_id: Option<String>,
    /// The member's handle.
    #[serde(default)]
    pub handle: Option<String>,
    /// The key's scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
}
