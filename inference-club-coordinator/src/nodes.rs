//! The live nodes: one entry per linked provider, each usable as a
//! [`Provider`] that sends jobs over its link.
//!
//! This is the coordinator's only in-memory state besides queues: it is rebuilt as nodes
//! reconnect.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_stream::stream;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use inference_club_core::endpoint::Endpoint;
use inference_club_core::link::{
    self, BinaryHeader, CallJob, Cancel, CoordinatorMessage, Job, JobError, JobId, ServiceLoad,
};
use inference_club_core::manifest::{AccessPolicy, Service, ServiceManifest, effective_access};
use inference_club_core::openai::{
    ChatCompletionChunk, ChatCompletionRequest, ConsumerEvents, Model,
};
use inference_club_core::provider::{
    Call, CallOutput, CallStream, ChunkStream, Provider, ProviderError, RequestContext,
};
use inference_club_core::routing::Ewma;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::store::{ProviderPolicy, UserId};
use crate::bounded;
use crate::streamed::{self, Streamed, StreamedAnswer};

/// How many events of one job may wait for a slow consumer before the job is cancelled (so that
/// one slow consumer never holds up the link).
pub const JOB_BUFFER: usize = 1024;

/// How many bytes of one job's events (as the node's frames carried them) may wait for a slow
/// consumer before the job is cancelled: whatever a node sends, the coordinator holds at most
/// this (and one message more) for one job. Room for a large binary answer (speech, images)
/// to a consumer on a slow line.
pub const JOB_BUFFER_BYTES: usize = 64 * 1024 * 1024;

/// The link's end of one job's events; each carries the bytes of the frame it came in.
type JobSender = bounded::Sender<JobEvent>;

/// The consumer's end of one job's events.
pub(crate) type JobEvents = bounded::Receiver<JobEvent>;

/// A job's event channel: the link's end and the consumer's.
fn job_channel() -> (JobSender, JobEvents) {
    bounded::channel(JOB_BUFFER, JOB_BUFFER_BYTES)
}

/// Identifies a provider: its operator and its `agent.name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeKey {
    /// The operator's user id.
    pub operator_id: UserId,
    /// The provider name.
    pub provider: String,
}

/// What the link tells a job's consumer.
#[derive(Debug)]
pub(crate) enum JobEvent {
    Chunk(ChatCompletionChunk),
    /// What an events job's events added up to.
    Answer(Box<ChatCompletionChunk>),
    /// A JSON answer of a call, or one event of it.
    Output(serde_json::Value),
    /// A binary answer of a call starts; its pieces follow.
    Bytes(BinaryHeader),
    /// A piece of a binary answer.
    Piece(Bytes),
    Done,
    Failed(JobError),
}

/// What goes to a node over its link: a message, or a binary frame of a call's upload.
#[derive(Debug)]
pub(crate) enum Outbound {
    Message(CoordinatorMessage),
    Binary(Vec<u8>),
}

impl From<CoordinatorMessage> for Outbound {
    fn from(message: CoordinatorMessage) -> Self {
        Self::Message(message)
    }
}

/// The largest binary answer (speech) the coordinator takes from a node, in bytes.
pub const MAX_BINARY_ANSWER_BYTES: u64 = 64 * 1024 * 1024;

/// A model as a node serves it: the served id and the service it runs on, with the names it
/// answers to and who may use it.
#[derive(Debug, Clone)]
pub struct NodeModel {
    /// The id the node's engine serves it under.
    pub served_id: String,
    /// Its Hugging Face id, if declared.
    pub hf: Option<String>,
    /// The service it runs on.
    pub service: String,
    /// Who may use it.
    pub access: AccessPolicy,
    /// The endpoints it answers.
    pub endpoints: Vec<Endpoint>,
}

impl NodeModel {
    /// Whether it answers `endpoint`.
    pub fn serves(&self, endpoint: Endpoint) -> bool {
        self.endpoints.contains(&endpoint)
    }

    /// Whether a consumer's model name means this model (served id or `hf`, case-insensitively).
    pub fn answers_to(&self, requested: &str) -> bool {
        self.served_id.eq_ignore_ascii_case(requested)
            || self
                .hf
                .as_deref()
                .is_some_and(|hf| hf.eq_ignore_ascii_case(requested))
    }
}

/// What a node offers: its manifest, the models in it and its capacity, under the policy its
/// operator set through the API. Replaced whole when the node announces a new manifest or the
/// operator changes the policy.
#[derive(Debug)]
pub struct NodeOffer {
    /// Its validated, redacted manifest.
    pub manifest: ServiceManifest,
    /// The models it serves.
    pub models: Vec<NodeModel>,
    /// Its total capacity (the sum of its services' `max_concurrent`, when every service has one).
    pub capacity: Option<u32>,
    /// What its operator set through the API: access overrides and the kill switch.
    pub policy: ProviderPolicy,
}

impl NodeOffer {
    /// The offer of a validated manifest under `policy`.
    pub fn new(manifest: ServiceManifest, policy: ProviderPolicy) -> Self {
        let (models, capacity) = models_of(&manifest, &policy);
        Self {
            manifest,
            models,
            capacity,
            policy,
        }
    }

    /// Whether it takes requests (the operator's kill switch is off).
    pub fn accepting(&self) -> bool {
        self.policy.accepting
    }

    /// Who may use `service` of its manifest: see [`access_for`].
    pub fn access_for<'a>(&'a self, service: &'a Service) -> &'a AccessPolicy {
        access_for(&self.policy, &self.manifest, service)
    }

    /// The first model answering to `requested` that serves `endpoint`.
    pub fn find_model_for(&self, endpoint: Endpoint, requested: &str) -> Option<&NodeModel> {
        self.models
            .iter()
            .find(|m| m.answers_to(requested) && m.serves(endpoint))
    }
}

/// One linked node.
pub struct LiveNode {
    /// Who runs it.
    pub key: NodeKey,
    /// The operator's handle.
    pub operator: String,
    offer: RwLock<Arc<NodeOffer>>,
    outgoing: mpsc::Sender<Outbound>,
    jobs: Mutex<HashMap<JobId, JobSender>>,
    next_job: AtomicU64,
    /// It speaks protocol version 2 or later: it takes calls (endpoints other than chat).
    takes_calls: bool,
    in_flight: Arc<AtomicU32>,
    ttft: Mutex<Ewma>,
    last_heard: Mutex<Instant>,
    load: Mutex<Vec<ServiceLoad>>,
    closed: CancellationToken,
    connected_at: chrono::DateTime<chrono::Utc>,
}

impl std::fmt::Debug for LiveNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveNode")
            .field("operator", &self.operator)
            .field("provider", &self.key.provider)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl LiveNode {
    /// A node linked now, that receives its messages through `outgoing`.
    pub(crate) fn new(
        key: NodeKey,
        operator: String,
        manifest: ServiceManifest,
        policy: ProviderPolicy,
        protocol_version: u32,
        outgoing: mpsc::Sender<Outbound>,
    ) -> Self {
        Self {
            key,
            operator,
            offer: RwLock::new(Arc::new(NodeOffer::new(manifest, policy))),
            outgoing,
            jobs: Mutex::new(HashMap::new()),
            next_job: AtomicU64::new(1),
            takes_calls: protocol_version >= link::CALLS_SINCE,
            in_flight: Arc::new(AtomicU32::new(0)),
            ttft: Mutex::new(Ewma::default()),
            last_heard: Mutex::new(Instant::now()),
            load: Mutex::new(Vec::new()),
            closed: CancellationToken::new(),
            connected_at: chrono::Utc::now(),
        }
    }

    /// Whether it takes calls (endpoints other than chat): it speaks protocol version 2.
    pub fn takes_calls(&self) -> bool {
        self.takes_calls
    }

    /// Counts one more job on this node until the slot is dropped. The dispatcher takes slots
    /// while it holds its selection lock, so two requests never take the last one.
    pub fn reserve(&self) -> NodeSlot {
        NodeSlot::take(&self.in_flight)
    }

    /// Jobs running on it now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Its recent time to first token.
    pub fn recent_ttft(&self) -> Option<Duration> {
        self.ttft
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .value()
    }

    /// Records a time to first token.
    pub fn record_ttft(&self, sample: Duration) {
        self.ttft
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .update(sample);
    }

    /// When it linked.
    pub fn connected_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.connected_at
    }

    /// The load it last reported.
    pub fn reported_load(&self) -> Vec<ServiceLoad> {
        self.load
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn heard_from(&self) {
        *self
            .last_heard
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    pub(crate) fn set_load(&self, load: Vec<ServiceLoad>) {
        *self.load.lock().unwrap_or_else(PoisonError::into_inner) = load;
    }

    /// How long since it last sent anything.
    pub fn silent_for(&self) -> Duration {
        self.last_heard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed()
    }

    /// Whether its link is gone.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Resolves when its link is gone (closed, or replaced by a newer link).
    pub async fn closed(&self) {
        self.closed.cancelled().await;
    }

    /// Marks the link gone: every running job ends with an error.
    pub(crate) fn close(&self) {
        self.closed.cancel();
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Hands an event from the link to its job; `size` is the bytes of the frame that carried
    /// it. A job whose consumer cannot keep up ([`JOB_BUFFER`] events or [`JOB_BUFFER_BYTES`]
    /// waiting) is cancelled.
    pub(crate) fn deliver(&self, job: JobId, event: JobEvent, size: usize) {
        let finished = matches!(event, JobEvent::Done | JobEvent::Failed(_));
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(sender) = jobs.get(&job) else {
            return;
        };
        match sender.try_send(event, size) {
            Ok(()) if finished => {
                jobs.remove(&job);
            }
            Ok(()) => {}
            Err(bounded::TrySendError::Full(_)) => {
                jobs.remove(&job);
                let _ = self
                    .outgoing
                    .try_send(CoordinatorMessage::Cancel(Cancel { job }).into());
            }
            Err(bounded::TrySendError::Closed(_)) => {
                jobs.remove(&job);
            }
        }
    }

    /// Queues a message for the node without waiting; false when the queue is full or gone.
    pub(crate) fn try_send(&self, message: CoordinatorMessage) -> bool {
        self.outgoing.try_send(message.into()).is_ok()
    }

    /// What it offers now.
    pub fn offer(&self) -> Arc<NodeOffer> {
        self.offer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces what it offers (a new manifest was announced), under the same policy. Through
    /// [`NodeRegistry::set_manifest`], which notes the change.
    fn set_offer(&self, manifest: ServiceManifest) {
        let mut offer = self.offer.write().unwrap_or_else(PoisonError::into_inner);
        let policy = offer.policy.clone();
        *offer = Arc::new(NodeOffer::new(manifest, policy));
    }

    /// Puts `policy` in force at once (the operator changed it).
    pub fn set_policy(&self, policy: ProviderPolicy) {
        let mut offer = self.offer.write().unwrap_or_else(PoisonError::into_inner);
        let manifest = offer.manifest.clone();
        *offer = Arc::new(NodeOffer::new(manifest, policy));
    }
}

/// Who may use `service` of `manifest` under `policy`: the operator's override for the service,
/// else their node-wide override, else the manifest's policy (the service's, the agent's, or
/// `members`).
pub fn access_for<'a>(
    policy: &'a ProviderPolicy,
    manifest: &'a ServiceManifest,
    service: &'a Service,
) -> &'a AccessPolicy {
    policy
        .services
        .get(&service.name)
        .or(policy.access.as_ref())
        .unwrap_or_else(|| effective_access(&manifest.agent, service))
}

/// The models of a manifest's `llm` services, and the node's total capacity.
fn models_of(manifest: &ServiceManifest, policy: &ProviderPolicy) -> (Vec<NodeModel>, Option<u32>) {
    let mut models = Vec::new();
    let mut capacity = Some(0u32);
    for service in manifest
        .services()
        .filter(|s| !Endpoint::all_served_by(s.service_type, &s.features, None).is_empty())
    {
        capacity = capacity
            .zip(service.max_concurrent)
            .map(|(a, b)| a.saturating_add(b));
        let access = access_for(policy, manifest, service).clone();
        for model in &service.models {
            if let Some(served_id) = model.served_id() {
                models.push(NodeModel {
                    served_id: served_id.to_owned(),
                    hf: model.hf.clone(),
                    service: service.name.clone(),
                    access: access.clone(),
                    endpoints: Endpoint::all_served_by(
                        service.service_type,
                        &service.features,
                        Some(model),
                    ),
                });
            }
        }
    }
    (models, capacity.filter(|c| *c > 0))
}

/// A job slot on a node: counted in its `in_flight` until dropped.
#[derive(Debug)]
pub struct NodeSlot(Arc<AtomicU32>);

impl NodeSlot {
    /// Counts one more on `counter` until the slot is dropped.
    pub(crate) fn take(counter: &Arc<AtomicU32>) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Self(counter.clone())
    }
}

impl Drop for NodeSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sends `cancel` for a job when dropped before the job ended.
struct CancelOnDrop {
    node: Arc<LiveNode>,
    job: JobId,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let removed = self
            .node
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.job)
            .is_some();
        if self.armed && removed && !self.node.is_closed() {
            let _ = self
                .node
                .outgoing
                .try_send(CoordinatorMessage::Cancel(Cancel { job: self.job }).into());
        }
    }
}

/// A node as a [`Provider`]: each chat is a job over its link. (Capacity is counted by the
/// caller with [`LiveNode::reserve`].)
#[derive(Debug, Clone)]
pub struct RemoteNode(pub Arc<LiveNode>);

#[async_trait]
impl Provider for RemoteNode {
    async fn models(&self) -> Result<Vec<Model>, ProviderError> {
        Ok(self
            .0
            .offer()
            .models
            .iter()
            .map(|m| Model::new(m.served_id.clone(), self.0.operator.clone()))
            .collect())
    }

    /// Sends the job; `request.model` is passed as the consumer named it (the node's router
    /// maps it to its engine's id).
    async fn chat(
        &self,
        request: ChatCompletionRequest,
        context: RequestContext,
    ) -> Result<ChunkStream, ProviderError> {
        let (mut events, mut guard) = open_chat(&self.0, request, &context, None).await?;
        let closed = self.0.closed.clone();
        let cancel = context.cancel.clone();
        Ok(Box::pin(stream! {
            loop {
                match next_event(&mut events, &cancel, &closed, &mut guard).await {
                    Ok(Some(JobEvent::Chunk(chunk))) => yield Ok(chunk),
                    Ok(Some(_)) => {
                        yield Err(ProviderError::Protocol {
                            message: "the node answered a chat job with a call's output".into(),
                        });
                        break;
                    }
                    Ok(None) => break,
                    Err(error) => {
                        yield Err(error);
                        break;
                    }
                }
            }
        }))
    }

    /// Sends the call (and its upload, in binary frames); the node's router maps the model.
    async fn call(&self, call: Call, context: RequestContext) -> Result<CallStream, ProviderError> {
        if !self.0.takes_calls {
            return Err(ProviderError::Rejected {
                status: 404,
                message: format!(
                    "node {} speaks an older protocol without {}",
                    self.0.key.provider,
                    call.endpoint.path()
                ),
                code: Some("unsupported_endpoint".into()),
            });
        }
        let Call {
            endpoint,
            body,
            upload,
        } = call;
        let header = upload.as_ref().map(|u| BinaryHeader {
            file_name: u.file_name.clone(),
            content_type: u.content_type.clone(),
            size: u.data.len() as u64,
        });
        let data = upload.map(|u| u.data);
        let (mut events, mut guard) =
            open_job(&self.0, &context, data.as_ref(), |job, deadline_ms| {
                CoordinatorMessage::Call(Box::new(CallJob {
                    job,
                    request_id: context.request_id.clone(),
                    consumer: context.consumer.clone(),
                    deadline_ms,
                    endpoint,
                    body,
                    upload: header,
                }))
            })
            .await?;
        let closed = self.0.closed.clone();
        let cancel = context.cancel.clone();
        Ok(Box::pin(stream! {
            let mut binary: Option<(BinaryHeader, BytesMut)> = None;
            loop {
                match next_event(&mut events, &cancel, &closed, &mut guard).await {
                    Ok(Some(JobEvent::Output(value))) => yield Ok(CallOutput::Json(value)),
                    Ok(Some(JobEvent::Bytes(header))) => {
                        if header.size > MAX_BINARY_ANSWER_BYTES {
                            yield Err(ProviderError::Protocol {
                                message: format!(
                                    "the node's answer of {} bytes is larger than {MAX_BINARY_ANSWER_BYTES}",
                                    header.size
                                ),
                            });
                            break;
                        }
                        binary = Some((header, BytesMut::new()));
                    }
                    Ok(Some(JobEvent::Piece(piece))) => {
                        let Some((header, data)) = binary.as_mut() else {
                            yield Err(ProviderError::Protocol {
                                message: "binary data without a header".into(),
                            });
                            break;
                        };
                        if data.len() as u64 + piece.len() as u64 > header.size {
                            yield Err(ProviderError::Protocol {
                                message: "more binary data than announced".into(),
                            });
                            break;
                        }
                        data.extend_from_slice(&piece);
                        if data.len() as u64 == header.size
                            && let Some((header, data)) = binary.take()
                        {
                            yield Ok(CallOutput::Bytes {
                                content_type: header.content_type,
                                data: data.freeze(),
                            });
                        }
                    }
                    Ok(Some(JobEvent::Chunk(_))) => {
                        yield Err(ProviderError::Protocol {
                            message: "the node answered a call with chat chunks".into(),
                        });
                        break;
                    }
                    Ok(Some(_)) | Ok(None) => {
                        if binary.is_some() {
                            yield Err(ProviderError::Protocol {
                                message: "the node's binary answer ended early".into(),
                            });
                        }
                        break;
                    }
                    Err(error) => {
                        yield Err(error);
                        break;
                    }
                }
            }
        }))
    }
}

impl RemoteNode {
    /// Sends a streamed chat job whose node may write the consumer's events itself, as
    /// `written` says ([`Job::events`]): they are handed on as they are (checked to be whole
    /// events), chunks from a node that sends chunks are written here, and the node's answer
    /// goes to the record.
    pub(crate) async fn chat_events(
        &self,
        request: ChatCompletionRequest,
        context: RequestContext,
        written: ConsumerEvents,
    ) -> Result<StreamedAnswer, ProviderError> {
        let (mut events, mut guard) =
            open_chat(&self.0, request, &context, Some(written.clone())).await?;
        let closed = self.0.closed.clone();
        let cancel = context.cancel.clone();
        Ok(Box::pin(stream! {
            loop {
                let piece = match next_event(&mut events, &cancel, &closed, &mut guard).await {
                    Ok(Some(JobEvent::Piece(piece))) => match link::split_events(&piece) {
                        Ok((output, _)) => Ok(Streamed::Events { sse: piece.slice(1..), output }),
                        Err(error) => Err(ProviderError::Protocol {
                            message: format!("the node sent bad events: {error}"),
                        }),
                    },
                    Ok(Some(JobEvent::Chunk(chunk))) => streamed::written(&written, chunk),
                    Ok(Some(JobEvent::Answer(answer))) => Ok(Streamed::Answer(answer)),
                    Ok(Some(_)) => Err(ProviderError::Protocol {
                        message: "the node answered a chat job with a call's output".into(),
                    }),
                    Ok(None) => break,
                    Err(error) => Err(error),
                };
                let failed = piece.is_err();
                yield piece;
                if failed {
                    break;
                }
            }
        }))
    }
}

/// Registers a chat job on `node` and sends it, asking for the consumer's `events` when given.
async fn open_chat(
    node: &Arc<LiveNode>,
    request: ChatCompletionRequest,
    context: &RequestContext,
    events: Option<ConsumerEvents>,
) -> Result<(JobEvents, CancelOnDrop), ProviderError> {
    open_job(node, context, None, |job, deadline_ms| {
        CoordinatorMessage::Job(Box::new(Job {
            job,
            request_id: context.request_id.clone(),
            consumer: context.consumer.clone(),
            deadline_ms,
            whole: context.whole,
            events,
            request,
        }))
    })
    .await
}

/// Registers a job on `node` and sends it the message `make` builds (and the `upload`, in
/// binary frames), giving the job's events and the guard that cancels it when dropped.
async fn open_job(
    node: &Arc<LiveNode>,
    context: &RequestContext,
    upload: Option<&Bytes>,
    make: impl FnOnce(JobId, Option<u64>) -> CoordinatorMessage,
) -> Result<(JobEvents, CancelOnDrop), ProviderError> {
    if node.is_closed() {
        return Err(ProviderError::Unavailable {
            status: None,
            message: format!("node {} is offline", node.key.provider),
        });
    }
    let job = node.next_job.fetch_add(1, Ordering::Relaxed);
    let (events_tx, events) = job_channel();
    node.jobs
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(job, events_tx);
    let mut guard = CancelOnDrop {
        node: node.clone(),
        job,
        armed: true,
    };
    let deadline_ms = context.deadline.map(|d| {
        u64::try_from(d.saturating_duration_since(Instant::now()).as_millis()).unwrap_or(u64::MAX)
    });
    let went_offline = || ProviderError::Unavailable {
        status: None,
        message: format!("node {} went offline", node.key.provider),
    };
    if node
        .outgoing
        .send(make(job, deadline_ms).into())
        .await
        .is_err()
    {
        guard.armed = false;
        return Err(went_offline());
    }
    for piece in upload
        .map(|data| data.chunks(link::BINARY_CHUNK_BYTES))
        .into_iter()
        .flatten()
    {
        let frame = Outbound::Binary(link::binary_frame(job, piece));
        if node.outgoing.send(frame).await.is_err() {
            guard.armed = false;
            return Err(went_offline());
        }
    }
    Ok((events, guard))
}

/// The next event of a job: `Ok(None)` when it is done, `Err` when it failed, was cancelled or
/// its link closed. Biased: events already delivered are read before the link's closing is
/// noticed (closing drops the job's sender, so `recv` ends after them).
async fn next_event(
    events: &mut JobEvents,
    cancel: &CancellationToken,
    closed: &CancellationToken,
    guard: &mut CancelOnDrop,
) -> Result<Option<JobEvent>, ProviderError> {
    let event = tokio::select! {
        biased;
        () = cancel.cancelled() => return Err(ProviderError::Cancelled),
        event = events.recv() => event,
        () = closed.cancelled() => None,
    };
    match event {
        Some(JobEvent::Done) => {
            guard.armed = false;
            Ok(None)
        }
        Some(JobEvent::Failed(error)) => {
            guard.armed = false;
            Err(ProviderError::from(error))
        }
        Some(event) => Ok(Some(event)),
        None if events.fell_behind() => {
            guard.armed = false;
            Err(ProviderError::Unavailable {
                status: None,
                message: "the consumer did not keep up with the node's answer: the job was \
                          cancelled"
                    .into(),
            })
        }
        None => {
            guard.armed = false;
            Err(ProviderError::Unavailable {
                status: None,
                message: "the node's link closed during the job".into(),
            })
        }
    }
}

/// Every linked node, by identity. A second link with the same identity replaces the first.
#[derive(Debug, Default)]
pub struct NodeRegistry {
    nodes: RwLock<HashMap<NodeKey, Arc<LiveNode>>>,
    /// Counts every change of which nodes are linked or what models they offer (for
    /// [`ModelIndex`](super::index::ModelIndex)).
    generation: AtomicU64,
    changed: tokio::sync::Notify,
    /// Operators who deleted their account lately (lower-case handle, when): records still in
    /// flight on their nodes forget them before they are saved. Memory only, pruned.
    departed: Mutex<HashMap<String, Instant>>,
}

/// How long the registry remembers an operator who left, for records still in flight.
const DEPARTED_MEMORY: Duration = Duration::from_secs(3600);
/// The most departed operators remembered at once.
const MAX_DEPARTED: usize = 10_000;

impl NodeRegistry {
    /// Adds a node, closing any earlier link with the same identity.
    pub(crate) fn insert(&self, node: Arc<LiveNode>) {
        let previous = {
            let mut nodes = self.nodes.write().unwrap_or_else(PoisonError::into_inner);
            let previous = nodes.insert(node.key.clone(), node);
            self.generation.fetch_add(1, Ordering::AcqRel);
            previous
        };
        if let Some(previous) = previous {
            previous.close();
        }
        self.changed.notify_waiters();
    }

    /// Removes `node` if it is still the registered link for its identity.
    pub(crate) fn remove(&self, node: &Arc<LiveNode>) {
        node.close();
        let mut nodes = self.nodes.write().unwrap_or_else(PoisonError::into_inner);
        if nodes.get(&node.key).is_some_and(|n| Arc::ptr_eq(n, node)) {
            nodes.remove(&node.key);
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        drop(nodes);
        self.changed.notify_waiters();
    }

    /// Closes every link of the operator `operator_id` (whose handle is `handle`) at once: their
    /// running jobs end with an error, and records still in flight forget them when saved
    /// ([`NodeRegistry::forget_departed`]). Returns how many links were closed.
    pub fn close_operator(&self, operator_id: UserId, handle: &str) -> usize {
        {
            let mut departed = self.departed.lock().unwrap_or_else(PoisonError::into_inner);
            departed.retain(|_, at| at.elapsed() < DEPARTED_MEMORY);
            if departed.len() >= MAX_DEPARTED {
                departed.clear();
            }
            departed.insert(handle.to_ascii_lowercase(), Instant::now());
        }
        let closed: Vec<Arc<LiveNode>> = {
            let mut nodes = self.nodes.write().unwrap_or_else(PoisonError::into_inner);
            let keys: Vec<NodeKey> = nodes
                .keys()
                .filter(|key| key.operator_id == operator_id)
                .cloned()
                .collect();
            let closed: Vec<Arc<LiveNode>> =
                keys.iter().filter_map(|key| nodes.remove(key)).collect();
            self.generation.fetch_add(1, Ordering::AcqRel);
            closed
        };
        for node in &closed {
            node.close();
        }
        self.changed.notify_waiters();
        closed.len()
    }

    /// Removes from `record` every operator who deleted their account lately (see
    /// [`NodeRegistry::close_operator`]).
    pub fn forget_departed(&self, record: &mut inference_club_core::record::InferenceRecord) {
        let departed = self.departed.lock().unwrap_or_else(PoisonError::into_inner);
        if departed.is_empty() {
            return;
        }
        let mentioned: Vec<String> = record
            .served_by
            .iter()
            .chain(record.attempts.iter().map(|a| &a.served_by))
            .map(|s| s.operator.to_ascii_lowercase())
            .filter(|handle| departed.contains_key(handle))
            .collect();
        drop(departed);
        for handle in mentioned {
            super::store::forget_operator(record, &handle);
        }
    }

    /// Replaces what `node` offers (it announced a new manifest on its link).
    pub(crate) fn set_manifest(&self, node: &LiveNode, manifest: ServiceManifest) {
        node.set_offer(manifest);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_waiters();
    }

    /// Changes with every node linked or gone and every new manifest: equal values mean the
    /// same nodes offering the same models.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Every online node.
    pub fn online(&self) -> Vec<Arc<LiveNode>> {
        self.nodes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|n| !n.is_closed())
            .cloned()
            .collect()
    }

    /// The node with this identity, if online.
    pub fn get(&self, key: &NodeKey) -> Option<Arc<LiveNode>> {
        self.nodes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .filter(|n| !n.is_closed())
            .cloned()
    }

    /// Wakes those waiting for capacity or for nodes.
    pub fn notify_changed(&self) {
        self.changed.notify_waiters();
    }

    /// Resolves when a node links, leaves, or a job ends.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// Why a job could not be handed to a node.
#[derive(Debug)]
pub enum SendError {
    /// Nothing ran: the replica holding the node's link had no room for it or is shutting
    /// down, or the node is linking again elsewhere. Choosing again is the answer; it is not a
    /// failed attempt.
    Refused(String),
    /// The node or its engine failed (an attempt, which failover may retry elsewhere).
    Failed(ProviderError),
}

impl From<ProviderError> for SendError {
    fn from(error: ProviderError) -> Self {
        Self::Failed(error)
    }
}
