//! What replicas say to each other over NATS, and on which subjects.
//!
//! Every message is JSON. Subjects:
//!
//! | subject | kind | message |
//! |---|---|---|
//! | `club.dir.up` | publish | [`NodeUp`]: a node linked here, or its offer changed |
//! | `club.dir.down` | publish | [`NodeDown`]: a node's link here closed |
//! | `club.dir.beat` | publish, every [`BEAT`] | [`Beat`]: a replica is alive, its nodes' load |
//! | `club.dir.sync.{replica}` | request, replies in parts | [`SyncReply`]s: every node linked to `replica` |
//! | `club.node.{operator}.{provider}.job` | request/reply | [`JobRequest`] → [`JobReply`] |
//! | `club.replica.{replica}.events.{job}` | publish | [`RelayEvent`]s of one job, numbered |
//! | `club.replica.{replica}.cancel` | publish | [`CancelJob`] |
//! | `club.ctl` | publish | [`Control::ForgetKeys`], [`Control::CloseOperator`], [`Control::PolicyChanged`] |
//! | `club.usage` | publish, every [`USAGE_REPORT`] with something to say | [`UsageReport`]: what a replica's callers used of the limits |

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use inference_club_core::endpoint::Endpoint;
use inference_club_core::link::{JobError, ServiceLoad};
use inference_club_core::manifest::ServiceManifest;
use inference_club_core::openai::{ChatCompletionChunk, ChatCompletionRequest};
use inference_club_core::provider::{Call, Upload};
use serde::{Deserialize, Serialize};

pub use crate::limits::USAGE_REPORT;
use crate::limits::Usage;
use crate::nodes::NodeKey;
use crate::store::{ProviderPolicy, UserId};

/// How often a replica says it is alive (and how loaded its nodes are).
pub const BEAT: Duration = Duration::from_millis(500);

/// A replica not heard from for this long is gone: its nodes leave the directory and jobs that
/// ran through it end.
pub const BEAT_EXPIRY: Duration = Duration::from_secs(3);

/// Subject of [`NodeUp`].
pub const UP: &str = "club.dir.up";
/// Subject of [`NodeDown`].
pub const DOWN: &str = "club.dir.down";
/// Subject of [`Beat`].
pub const BEATS: &str = "club.dir.beat";
/// Subject of [`Control`].
pub const CONTROL: &str = "club.ctl";

/// The subject a replica answers [`SyncReply`] requests on.
pub fn sync_subject(replica: &str) -> String {
    format!("club.dir.sync.{replica}")
}

/// The subject jobs for a node are sent to: whichever replica holds its link answers.
pub fn job_subject(key: &NodeKey) -> String {
    // Provider names may hold any character; subjects may not hold `.`, `*`, `>` or spaces.
    let hex: String = key.provider.bytes().map(|b| format!("{b:02x}")).collect();
    format!("club.node.{}.{hex}.job", key.operator_id)
}

/// The subjects of the job-event inboxes of `replica` (one subscription for all its jobs).
pub fn inboxes(replica: &str) -> String {
    format!("club.replica.{replica}.events.*")
}

/// The inbox of job `id` of `replica`.
pub fn inbox(replica: &str, id: u64) -> String {
    format!("club.replica.{replica}.events.{id}")
}

/// The job id an inbox subject ends with.
pub fn inbox_id(subject: &str) -> Option<u64> {
    subject.rsplit('.').next()?.parse().ok()
}

/// The subject a replica takes cancellations on.
pub fn cancel_subject(replica: &str) -> String {
    format!("club.replica.{replica}.cancel")
}

/// Whether `id` may name a replica: 1–64 ASCII letters, digits, `-` and `_`.
pub fn valid_replica_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A node linked to `replica`, with what it offers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeUp {
    /// The replica holding its link.
    pub replica: String,
    /// Which run of that replica (a random number per process: a replica restarted under the
    /// same id has a new one).
    #[serde(default)]
    pub incarnation: u64,
    /// Its operator's id.
    pub operator_id: UserId,
    /// Its operator's handle.
    pub operator: String,
    /// Its provider name.
    pub provider: String,
    /// Its validated, redacted manifest.
    pub manifest: ServiceManifest,
    /// Its operator's policy.
    pub policy: ProviderPolicy,
    /// When it linked.
    pub connected_at: DateTime<Utc>,
    /// It takes calls (endpoints other than chat: it speaks link protocol 2), and its replica
    /// relays them. Absent in the announcements of replicas older than calls across replicas:
    /// their nodes are sent chats only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub takes_calls: bool,
}

impl NodeUp {
    /// Its identity.
    pub fn key(&self) -> NodeKey {
        NodeKey {
            operator_id: self.operator_id,
            provider: self.provider.clone(),
        }
    }
}

/// A node's link to `replica` closed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeDown {
    /// The replica it was linked to.
    pub replica: String,
    /// Its operator's id.
    pub operator_id: UserId,
    /// Its provider name.
    pub provider: String,
}

/// One node's load, as its replica sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// Its operator's id.
    pub operator_id: UserId,
    /// Its provider name.
    pub provider: String,
    /// Jobs running on it (from every replica).
    pub in_flight: u32,
    /// Its recent time to first token, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<u64>,
    /// The load it reported itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load: Vec<ServiceLoad>,
}

/// A replica is alive; the load of its nodes: of every one (every [`FULL_BEAT_EVERY`]th beat),
/// or of those whose load changed since its last beat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Beat {
    /// Who.
    pub replica: String,
    /// Which run of it (see [`NodeUp::incarnation`]).
    #[serde(default)]
    pub incarnation: u64,
    /// It is shutting down: route nothing new to its nodes.
    #[serde(default)]
    pub draining: bool,
    /// How many nodes are linked to it.
    pub total: u32,
    /// `nodes` lists only nodes whose load changed (or one part of a list too long for one
    /// message); otherwise it lists every node.
    #[serde(default)]
    pub changes_only: bool,
    /// Its nodes (all, or those that changed).
    pub nodes: Vec<NodeLoad>,
}

/// Every how many beats a replica lists all its nodes (the others only those that changed).
pub const FULL_BEAT_EVERY: u64 = 10;

/// Part of the list of every node linked to a replica (split to stay under NATS's message
/// size limit).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncReply {
    /// The nodes in this part.
    pub nodes: Vec<NodeUp>,
    /// Which part this is, from 0.
    pub part: u32,
    /// How many parts there are.
    pub parts: u32,
}

/// Splits `items` into groups whose JSON (each item's, plus a byte between them) adds up to at
/// most `limit` bytes; an item larger than `limit` gets a group of its own. In order; always at
/// least one group. For lists that must travel in several messages under NATS's size limit.
pub fn groups_under<T: Serialize>(items: Vec<T>, limit: usize) -> Vec<Vec<T>> {
    let mut groups: Vec<Vec<T>> = vec![Vec::new()];
    let mut size = 0;
    for item in items {
        // An item that cannot be encoded travels in a group of its own (and fails there).
        let bytes = encode(&item).map_or(limit, |payload| payload.len() + 1);
        if size + bytes > limit && groups.last().is_some_and(|g| !g.is_empty()) {
            groups.push(Vec::new());
            size = 0;
        }
        size += bytes;
        if let Some(group) = groups.last_mut() {
            group.push(item);
        }
    }
    groups
}

/// Splits `nodes` into [`SyncReply`] payloads of at most about `limit` bytes each
/// ([`groups_under`]). Always at least one part.
pub fn sync_parts(nodes: Vec<NodeUp>, limit: usize) -> Vec<Vec<u8>> {
    let groups = groups_under(nodes, limit);
    let parts = u32::try_from(groups.len()).unwrap_or(u32::MAX);
    groups
        .into_iter()
        .enumerate()
        .filter_map(|(part, nodes)| {
            encode_or_log(
                "a list of nodes",
                &SyncReply {
                    nodes,
                    part: u32::try_from(part).unwrap_or(u32::MAX),
                    parts,
                },
            )
        })
        .collect()
}

/// Run this request on the node (sent to its [`job_subject`]): a chat (`request`) or a call of
/// another endpoint (`call`), exactly one of them ([`JobRequest::take_work`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRequest {
    /// The replica asking (the consumer's).
    pub replica: String,
    /// Where to publish the job's [`RelayEvent`]s.
    pub inbox: String,
    /// The record id.
    pub request_id: String,
    /// The consumer's handle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    /// How long the job may take in all, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// The consumer takes the answer whole ([`RequestContext::whole`]): the node may send it
    /// in fewer chunks and ask its engine for it whole. A replica that does not know the field
    /// reads it as false, and the answer is streamed, which is as correct.
    ///
    /// [`RequestContext::whole`]: inference_club_core::provider::RequestContext::whole
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub whole: bool,
    /// A chat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<ChatCompletionRequest>,
    /// A call. Sent only for nodes announced with [`NodeUp::takes_calls`] (a replica that
    /// relays calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<CallRequest>,
}

/// What a job asks a node to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    /// A chat completion.
    Chat(Box<ChatCompletionRequest>),
    /// A call of another endpoint.
    Call(Call),
}

impl JobRequest {
    /// Sets what the job does.
    pub fn with_work(mut self, work: Work) -> Self {
        match work {
            Work::Chat(request) => {
                self.request = Some(*request);
                self.call = None;
            }
            Work::Call(call) => {
                self.request = None;
                self.call = Some(CallRequest::from(call));
            }
        }
        self
    }

    /// Takes what the job does out of it; an error when it carries neither a chat nor a call,
    /// or both.
    pub fn take_work(&mut self) -> Result<Work, String> {
        match (self.request.take(), self.call.take()) {
            (Some(request), None) => Ok(Work::Chat(Box::new(request))),
            (None, Some(call)) => Ok(Work::Call(call.into())),
            (None, None) => Err("the job carries neither a chat nor a call".into()),
            (Some(_), Some(_)) => Err("the job carries both a chat and a call".into()),
        }
    }
}

/// A call as it crosses replicas: [`Call`] with its upload's bytes in base64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRequest {
    /// Which endpoint.
    pub endpoint: Endpoint,
    /// The request body.
    pub body: serde_json::Value,
    /// The uploaded file, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadRequest>,
}

/// A call's uploaded file as it crosses replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadRequest {
    /// The file's name.
    pub file_name: String,
    /// Its content type.
    pub content_type: String,
    /// Its bytes (base64 on the wire).
    #[serde(with = "base64_bytes")]
    pub data: Bytes,
}

impl From<Call> for CallRequest {
    fn from(call: Call) -> Self {
        Self {
            endpoint: call.endpoint,
            body: call.body,
            upload: call.upload.map(|u| UploadRequest {
                file_name: u.file_name,
                content_type: u.content_type,
                data: u.data,
            }),
        }
    }
}

impl From<CallRequest> for Call {
    fn from(call: CallRequest) -> Self {
        Self {
            endpoint: call.endpoint,
            body: call.body,
            upload: call.upload.map(|u| Upload {
                file_name: u.file_name,
                content_type: u.content_type,
                data: u.data,
            }),
        }
    }
}

/// Bytes as a base64 string (standard alphabet, padded) in JSON.
mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(data))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        STANDARD
            .decode(text.as_bytes())
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

/// How many bytes of a binary answer one [`RelayKind::Bytes`] of at most `limit` bytes of
/// JSON carries (base64 makes 4 characters of 3 bytes; `overhead` is the rest of the message).
pub fn binary_part_size(limit: usize, overhead: usize) -> usize {
    (limit.saturating_sub(overhead) / 4 * 3).max(3)
}

/// The answer of the replica holding the node's link.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobReply {
    /// The job runs; its events follow on the inbox.
    Accepted {
        /// The replica running it (the node may have moved since the requester's directory
        /// said where it was): its going away ends the job.
        replica: String,
    },
    /// The node has no room now (another replica's job took it), or its replica is draining.
    Busy {
        /// Why.
        message: String,
        /// The replica is shutting down.
        #[serde(default)]
        draining: bool,
    },
    /// The node could not take the job.
    Failed {
        /// What went wrong.
        error: JobError,
    },
}

/// What happened in a job, in order (`seq` counts from 0).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelayEvent {
    /// Its place in the job's events.
    pub seq: u64,
    /// The event.
    pub event: RelayKind,
}

/// A job's event.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RelayKind {
    /// Chunks of the answer, in order (those ready at the same moment travel together).
    Chunks {
        /// The chunks.
        chunks: Vec<ChatCompletionChunk>,
    },
    /// JSON outputs of a call's answer (a whole answer, or the events of a streamed one), in
    /// order (those ready at the same moment travel together).
    Outputs {
        /// The outputs.
        outputs: Vec<serde_json::Value>,
    },
    /// A part of a call's binary answer (audio, text as `srt`, …): the parts of one answer
    /// follow each other, from `offset` 0 until `size` bytes came.
    Bytes {
        /// The answer's content type.
        content_type: String,
        /// The whole answer's size in bytes.
        size: u64,
        /// Where in the answer this part starts.
        offset: u64,
        /// The part's bytes (base64 on the wire).
        #[serde(with = "base64_bytes")]
        data: Bytes,
    },
    /// The job ended well.
    Done,
    /// The job failed.
    Failed {
        /// What went wrong.
        error: JobError,
    },
}

/// Stop the job whose events go to `inbox`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CancelJob {
    /// The job's inbox.
    pub inbox: String,
}

/// Club-wide changes every replica applies.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// A member's keys changed: forget the cached ones.
    ForgetKeys {
        /// Who.
        user_id: UserId,
    },
    /// An operator deleted their account: close their links, forget them in records in flight.
    CloseOperator {
        /// Their id.
        operator_id: UserId,
        /// Their handle.
        handle: String,
    },
    /// An operator changed a node's policy: the replica holding it puts it in force.
    PolicyChanged {
        /// The node.
        operator_id: UserId,
        /// Its provider name.
        provider: String,
        /// The policy now.
        policy: ProviderPolicy,
    },
}

/// Where replicas report their callers' usage of the limits.
pub const USAGE: &str = "club.usage";

/// What one replica's callers used of the club-wide limits (in parts when long).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsageReport {
    /// The reporting replica.
    pub replica: String,
    /// Rate uses since its last report, and in-flight counts now.
    pub usage: Vec<Usage>,
}

/// Encodes a message.
pub fn encode<M: Serialize>(message: &M) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(message)
}

/// Encodes a message, or logs why it cannot be (it is then not sent).
pub fn encode_or_log<M: Serialize>(what: &str, message: &M) -> Option<Vec<u8>> {
    match encode(message) {
        Ok(payload) => Some(payload),
        Err(error) => {
            tracing::error!("cannot encode {what} for the cluster: {error}");
            None
        }
    }
}

/// Decodes a message.
pub fn decode<'a, M: Deserialize<'a>>(payload: &'a [u8]) -> Result<M, serde_json::Error> {
    serde_json::from_slice(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_make_safe_subjects() {
        let key = NodeKey {
            operator_id: UserId::new(),
            provider: "gpu box.*>".into(),
        };
        let subject = job_subject(&key);
        let provider = subject.split('.').nth(3).unwrap();
        assert!(provider.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(subject.split('.').count(), 5);
    }

    #[test]
    fn sync_lists_split_under_the_limit_and_join_again() {
        let manifest: ServiceManifest = serde_json::from_value(serde_json::json!({
            "schema_version": 1,
            "agent": {"name": "n"},
            "hosts": [{"id": "h", "services": [{"name": "s", "engine": "vllm",
                "url": "http://127.0.0.1:1", "models": [{"id": "m"}]}]}]
        }))
        .unwrap();
        let nodes: Vec<NodeUp> = (0..50)
            .map(|i| NodeUp {
                replica: "r1".into(),
                incarnation: 1,
                operator_id: UserId::new(),
                operator: "ada".into(),
                provider: format!("node-{i}"),
                manifest: manifest.clone(),
                policy: ProviderPolicy::default(),
                connected_at: Utc::now(),
                takes_calls: i % 2 == 0,
            })
            .collect();
        let one = encode(&nodes[0]).unwrap().len();
        let parts = sync_parts(nodes.clone(), one * 10);
        assert!(parts.len() >= 5, "{} parts", parts.len());
        let mut joined = Vec::new();
        for (i, payload) in parts.iter().enumerate() {
            assert!(payload.len() < one * 12);
            let part: SyncReply = decode(payload).unwrap();
            assert_eq!(part.part as usize, i);
            assert_eq!(part.parts as usize, parts.len());
            joined.extend(part.nodes.into_iter().map(|n| n.provider));
        }
        let expected: Vec<String> = nodes.iter().map(|n| n.provider.clone()).collect();
        assert_eq!(joined, expected);
        assert_eq!(sync_parts(Vec::new(), 10).len(), 1);
    }

    #[test]
    fn groups_stay_under_the_limit_in_order_and_an_oversized_item_goes_alone() {
        let items = vec![
            "aaaa".to_owned(),
            "b".repeat(40),
            "cc".into(),
            "dd".into(),
            "e".into(),
        ];
        // "aaaa" is 6 bytes of JSON + 1; the 40-byte item alone is over the limit.
        let groups = groups_under(items.clone(), 16);
        assert_eq!(
            groups,
            vec![
                vec![items[0].clone()],
                vec![items[1].clone()],
                vec![items[2].clone(), items[3].clone(), items[4].clone()],
            ]
        );
        assert_eq!(
            groups_under(Vec::<String>::new(), 16),
            vec![Vec::<String>::new()]
        );
    }

    #[test]
    fn inboxes_name_their_job() {
        let subject = inbox("r1", 42);
        assert_eq!(inbox_id(&subject), Some(42));
        assert!(subject.starts_with(inboxes("r1").trim_end_matches('*')));
        assert_eq!(inbox_id("club.replica.r1.events.x"), None);
    }

    #[test]
    fn replica_ids_are_subject_tokens() {
        assert!(valid_replica_id("replica-1_a"));
        assert!(!valid_replica_id(""));
        assert!(!valid_replica_id("a.b"));
        assert!(!valid_replica_id("a b"));
        assert!(!valid_replica_id(&"x".repeat(65)));
    }

    #[test]
    fn a_job_carries_a_chat_or_a_call_with_its_upload_and_older_messages_still_read() {
        let job = |work: Work| {
            JobRequest {
                replica: "r1".into(),
                inbox: inbox("r1", 1),
                request_id: "req".into(),
                consumer: None,
                deadline_ms: None,
                whole: true,
                request: None,
                call: None,
            }
            .with_work(work)
        };
        let call = Call::new(
            Endpoint::AudioTranscriptions,
            serde_json::json!({"model": "whisper-1"}),
        )
        .with_upload(Upload {
            file_name: "a.wav".into(),
            content_type: "audio/wav".into(),
            data: Bytes::from_static(&[0, 1, 2, 255]),
        });
        let payload = encode(&job(Work::Call(call.clone()))).unwrap();
        let text = String::from_utf8(payload.clone()).unwrap();
        assert!(text.contains("\"data\":\"AAEC/w==\""), "{text}");
        assert!(!text.contains("\"request\""), "{text}");
        let mut back: JobRequest = decode(&payload).unwrap();
        assert!(back.whole, "whole is carried across");
        assert_eq!(back.take_work().unwrap(), Work::Call(call));

        // A chat job as replicas before calls wrote it.
        let chat = ChatCompletionRequest::new("m", Vec::new());
        let old = serde_json::json!({
            "replica": "r1", "inbox": "i", "request_id": "req",
            "request": serde_json::to_value(&chat).unwrap(),
        });
        let mut back: JobRequest = serde_json::from_value(old).unwrap();
        assert!(!back.whole, "an older replica's job is streamed");
        assert_eq!(
            back.take_work().unwrap(),
            Work::Chat(Box::new(chat.clone()))
        );
        assert!(job(Work::Chat(Box::new(chat))).take_work().is_ok());

        // Neither, or an endpoint this replica does not know: refused, not guessed.
        let mut neither: JobRequest = serde_json::from_value(
            serde_json::json!({"replica": "r1", "inbox": "i", "request_id": "x"}),
        )
        .unwrap();
        assert!(neither.take_work().is_err());
        let unknown = serde_json::json!({"replica": "r1", "inbox": "i", "request_id": "x",
            "call": {"endpoint": "video_generations", "body": {}}});
        assert!(serde_json::from_value::<JobRequest>(unknown).is_err());
    }

    #[test]
    fn an_announcement_without_takes_calls_means_chat_only() {
        let manifest = serde_json::json!({
            "schema_version": 1,
            "agent": {"name": "n"},
            "hosts": [{"id": "h", "services": [{"name": "s", "engine": "vllm",
                "url": "http://127.0.0.1:1", "models": [{"id": "m"}]}]}]
        });
        let up = serde_json::json!({
            "replica": "r1", "operator_id": UserId::new(), "operator": "ada", "provider": "p",
            "manifest": manifest, "policy": ProviderPolicy::default(),
            "connected_at": Utc::now(),
        });
        let up: NodeUp = serde_json::from_value(up).unwrap();
        assert!(!up.takes_calls);
        let again: NodeUp = decode(
            &encode(&NodeUp {
                takes_calls: true,
                ..up
            })
            .unwrap(),
        )
        .unwrap();
        assert!(again.takes_calls);
    }

    #[test]
    fn binary_parts_fit_their_message() {
        let limit = 2_000;
        let part = binary_part_size(limit, 256);
        let event = RelayEvent {
            seq: u64::MAX,
            event: RelayKind::Bytes {
                content_type: "audio/wav".into(),
                size: u64::MAX,
                offset: u64::MAX,
                data: Bytes::from(vec![7u8; part]),
            },
        };
        assert!(encode(&event).unwrap().len() <= limit);
        assert_eq!(binary_part_size(10, 256), 3);
    }
}
