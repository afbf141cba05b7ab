//! Jobs across replicas: the requester's side ([`PeerNode::chat`] and [`PeerNode::call`]: send
//! the job to the node's subject, read its events from an inbox) and the link holder's side
//! (`serve_node`: take jobs for a linked node, run them over its link, publish their events in
//! order). Chats and calls share both sides: only what travels differs (chunks; JSON outputs
//! and binary answers in parts).

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_stream::stream;
use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, Stream, StreamExt};
use inference_club_core::link::JobError;
use inference_club_core::openai::{ChatCompletionChunk, ChatCompletionRequest};
use inference_club_core::provider::{
    Call, CallOutput, CallStream, ChunkStream, Provider, ProviderError, RequestContext,
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::Cluster;
use super::directory::PeerNode;
use super::wire::{self, CancelJob, JobReply, JobRequest, RelayEvent, RelayKind, Work};
use crate::nodes::{LiveNode, MAX_BINARY_ANSWER_BYTES, RemoteNode, SendError};

/// The most pieces of a job's answer sent in one message (those ready at the same moment
/// travel together).
const MAX_CHUNKS_PER_MESSAGE: usize = 64;

/// Room left in a message for everything around a job's chunks or outputs (its number, its
/// type, a binary part's content type, size and offset).
const ENVELOPE: usize = 256;

/// The longest content type a binary answer may have to cross replicas.
const MAX_CONTENT_TYPE: usize = 1024;

/// One piece of a job's answer: a chat's chunk or a call's output.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Chunk(ChatCompletionChunk),
    Output(CallOutput),
}

/// A job's answer, piece by piece.
type PieceStream = Pin<Box<dyn Stream<Item = Result<Piece, ProviderError>> + Send + 'static>>;

/// The holder's side of one job: publishes its events to the requester's inbox, numbered.
struct Relay {
    client: async_nats::Client,
    inbox: String,
    /// The largest message to send (half of NATS's limit).
    limit: usize,
    seq: u64,
}

impl Relay {
    /// Publishes one event; false when it could not be sent.
    async fn send(&mut self, event: RelayKind) -> bool {
        let Some(payload) = wire::encode_or_log(
            "a job event",
            &RelayEvent {
                seq: self.seq,
                event,
            },
        ) else {
            return false;
        };
        self.publish(payload).await
    }

    /// Publishes the job's failure.
    async fn fail(&mut self, error: &ProviderError) {
        self.send(RelayKind::Failed {
            error: JobError::from(error),
        })
        .await;
    }

    /// Publishes the pieces ready at the same moment: chunks (or JSON outputs) in one message,
    /// or in as few as fit under the limit; a binary answer in parts. False when the job
    /// failed (and the failure was sent, if it could be) or NATS refused a message.
    async fn pieces(&mut self, pieces: Vec<Piece>) -> bool {
        let mut chunks = Vec::new();
        let mut outputs = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Chunk(chunk) => {
                    if !outputs.is_empty() && !self.outputs(std::mem::take(&mut outputs)).await {
                        return false;
                    }
                    chunks.push(chunk);
                }
                Piece::Output(CallOutput::Json(output)) => {
                    if !chunks.is_empty() && !self.chunks(std::mem::take(&mut chunks)).await {
                        return false;
                    }
                    outputs.push(output);
                }
                Piece::Output(CallOutput::Bytes { content_type, data }) => {
                    if !chunks.is_empty() && !self.chunks(std::mem::take(&mut chunks)).await {
                        return false;
                    }
                    if !outputs.is_empty() && !self.outputs(std::mem::take(&mut outputs)).await {
                        return false;
                    }
                    if !self.binary(content_type, data).await {
                        return false;
                    }
                }
            }
        }
        if !chunks.is_empty() {
            return self.chunks(chunks).await;
        }
        if !outputs.is_empty() {
            return self.outputs(outputs).await;
        }
        true
    }

    /// Publishes chat chunks ([`Relay::batch`]).
    async fn chunks(&mut self, chunks: Vec<ChatCompletionChunk>) -> bool {
        self.batch(
            chunks,
            |chunks| RelayKind::Chunks { chunks },
            |event| match event {
                RelayKind::Chunks { chunks } => chunks,
                _ => Vec::new(),
            },
        )
        .await
    }

    /// Publishes a call's JSON outputs ([`Relay::batch`]).
    async fn outputs(&mut self, outputs: Vec<serde_json::Value>) -> bool {
        self.batch(
            outputs,
            |outputs| RelayKind::Outputs { outputs },
            |event| match event {
                RelayKind::Outputs { outputs } => outputs,
                _ => Vec::new(),
            },
        )
        .await
    }

    /// Publishes `items` in one event made by `pack`, or in as few as fit under the limit
    /// ([`wire::groups_under`]; `unpack` takes them back out of the event that did not fit).
    /// A single item larger than the limit fails the job (false), as does a message NATS
    /// refused.
    async fn batch<T: Serialize>(
        &mut self,
        items: Vec<T>,
        pack: fn(Vec<T>) -> RelayKind,
        unpack: fn(RelayKind) -> Vec<T>,
    ) -> bool {
        let event = RelayEvent {
            seq: self.seq,
            event: pack(items),
        };
        let Some(payload) = wire::encode_or_log("a job's answer", &event) else {
            return false;
        };
        if payload.len() <= self.limit {
            return self.publish(payload).await;
        }
        let items = unpack(event.event);
        for group in wire::groups_under(items, self.limit.saturating_sub(ENVELOPE)) {
            let Some(payload) = wire::encode_or_log(
                "a job's answer",
                &RelayEvent {
                    seq: self.seq,
                    event: pack(group),
                },
            ) else {
                return false;
            };
            if payload.len() > self.limit {
                self.fail(&ProviderError::Protocol {
                    message: format!(
                        "a piece of the answer of {} bytes is larger than the cluster's message \
                         limit",
                        payload.len()
                    ),
                })
                .await;
                return false;
            }
            if !self.publish(payload).await {
                return false;
            }
        }
        true
    }

    /// Publishes a binary answer in numbered parts under the limit (at least one, even for an
    /// empty answer).
    async fn binary(&mut self, content_type: String, data: Bytes) -> bool {
        if content_type.len() > MAX_CONTENT_TYPE {
            self.fail(&ProviderError::Protocol {
                message: format!(
                    "the answer's content type is longer than {MAX_CONTENT_TYPE} bytes"
                ),
            })
            .await;
            return false;
        }
        // A content type's JSON may be up to 6 times its length (escapes).
        let part = wire::binary_part_size(self.limit, ENVELOPE + 6 * content_type.len());
        let size = data.len() as u64;
        let mut offset = 0;
        loop {
            let end = data.len().min(offset + part);
            let sent = self
                .send(RelayKind::Bytes {
                    content_type: content_type.clone(),
                    size,
                    offset: offset as u64,
                    data: data.slice(offset..end),
                })
                .await;
            if !sent {
                return false;
            }
            if end >= data.len() {
                return true;
            }
            offset = end;
        }
    }

    /// Publishes the next event's payload; false when NATS refused it.
    async fn publish(&mut self, payload: Vec<u8>) -> bool {
        self.seq += 1;
        self.client
            .publish(self.inbox.clone(), payload.into())
            .await
            .is_ok()
    }
}

/// A binary answer being put back together.
#[derive(Debug)]
struct Binary {
    content_type: String,
    size: u64,
    data: BytesMut,
}

/// The requester's reading of a job's answer: chunks and outputs as they come, the parts of a
/// binary answer put back together (in order, whole, at most [`MAX_BINARY_ANSWER_BYTES`]).
#[derive(Debug, Default)]
struct Reassembly {
    binary: Option<Binary>,
}

impl Reassembly {
    /// The pieces of the answer that an event of it completes (none for an event that ends
    /// the job: the caller handles those).
    fn take(&mut self, event: RelayKind) -> Result<Vec<Piece>, ProviderError> {
        match event {
            RelayKind::Chunks { chunks } => {
                self.between_answers()?;
                Ok(chunks.into_iter().map(Piece::Chunk).collect())
            }
            RelayKind::Outputs { outputs } => {
                self.between_answers()?;
                Ok(outputs
                    .into_iter()
                    .map(|o| Piece::Output(CallOutput::Json(o)))
                    .collect())
            }
            RelayKind::Bytes {
                content_type,
                size,
                offset,
                data,
            } => Ok(self
                .part(content_type, size, offset, &data)?
                .map(Piece::Output)
                .into_iter()
                .collect()),
            RelayKind::Done | RelayKind::Failed { .. } => Ok(Vec::new()),
        }
    }

    /// The job ended well: no binary answer may be left half done.
    fn finish(&self) -> Result<(), ProviderError> {
        self.between_answers()
    }

    fn between_answers(&self) -> Result<(), ProviderError> {
        match &self.binary {
            None => Ok(()),
            Some(binary) => Err(ProviderError::Protocol {
                message: format!(
                    "the node's binary answer ended early ({} of {} bytes came)",
                    binary.data.len(),
                    binary.size
                ),
            }),
        }
    }

    /// Adds a part of a binary answer; the whole answer when it is the last.
    fn part(
        &mut self,
        content_type: String,
        size: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<Option<CallOutput>, ProviderError> {
        let protocol = |message: String| ProviderError::Protocol { message };
        if size > MAX_BINARY_ANSWER_BYTES {
            return Err(protocol(format!(
                "the node's answer of {size} bytes is larger than {MAX_BINARY_ANSWER_BYTES}"
            )));
        }
        let mut binary = match self.binary.take() {
            None if offset == 0 => Binary {
                data: BytesMut::with_capacity(usize::try_from(size).unwrap_or(0)),
                content_type,
                size,
            },
            Some(binary)
                if binary.data.len() as u64 == offset
                    && binary.size == size
                    && binary.content_type == content_type =>
            {
                binary
            }
            _ => {
                return Err(protocol(format!(
                    "a part of the node's binary answer came out of place (at {offset} of \
                     {size} bytes)"
                )));
            }
        };
        if binary.data.len() as u64 + data.len() as u64 > size {
            return Err(protocol("more binary data than announced".into()));
        }
        binary.data.extend_from_slice(data);
        if binary.data.len() as u64 == size {
            return Ok(Some(CallOutput::Bytes {
                content_type: binary.content_type,
                data: binary.data.freeze(),
            }));
        }
        self.binary = Some(binary);
        Ok(None)
    }
}

/// How long the replica holding a node's link has to accept or refuse a job.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(5);

fn unavailable(message: impl Into<String>) -> ProviderError {
    ProviderError::Unavailable {
        status: None,
        message: message.into(),
    }
}

/// Publishes a cancel for the job behind `inbox` when dropped before the job ended.
struct CancelOnDrop {
    cluster: Arc<Cluster>,
    holder: String,
    inbox: String,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let cancel = CancelJob {
            inbox: std::mem::take(&mut self.inbox),
        };
        if let Some(payload) = wire::encode_or_log("a cancel", &cancel) {
            self.cluster
                .publish_later(wire::cancel_subject(&self.holder), payload);
        }
    }
}

/// The items of `pieces` that `pick` takes; a piece it does not take ends the stream with
/// `wrong` (a protocol error).
fn narrow<T: Send + 'static>(
    pieces: PieceStream,
    pick: fn(Piece) -> Option<T>,
    wrong: &'static str,
) -> Pin<Box<dyn Stream<Item = Result<T, ProviderError>> + Send + 'static>> {
    Box::pin(stream! {
        let mut pieces = pieces;
        while let Some(piece) = pieces.next().await {
            match piece.map(pick) {
                Ok(Some(item)) => yield Ok(item),
                Ok(None) => {
                    yield Err(ProviderError::Protocol { message: wrong.into() });
                    break;
                }
                Err(error) => {
                    yield Err(error);
                    break;
                }
            }
        }
    })
}

impl PeerNode {
    /// Runs `request` on this node through the replica holding its link. A refusal (no room:
    /// the node then counts as full here for a moment; draining; nobody holds the node's link
    /// any more) is [`SendError::Refused`]; a replica that goes away mid-job ends the stream
    /// with [`ProviderError::Unavailable`].
    pub async fn chat(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        request: ChatCompletionRequest,
        context: RequestContext,
    ) -> Result<ChunkStream, SendError> {
        let pieces = self
            .run(cluster, Work::Chat(Box::new(request)), context)
            .await?;
        Ok(narrow(
            pieces,
            |piece| match piece {
                Piece::Chunk(chunk) => Some(chunk),
                Piece::Output(_) => None,
            },
            "the replica holding the node answered a chat with a call's output",
        ))
    }

    /// Runs `call` on this node through the replica holding its link, as [`PeerNode::chat`]
    /// runs a chat; its upload travels with it (the whole job must fit in one NATS message:
    /// a larger one is a 413 `request_too_large`), a binary answer comes back in parts.
    /// A node that does not take calls ([`PeerNode::takes_calls`]) refuses with a 404
    /// `unsupported_endpoint`.
    pub async fn call(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        call: Call,
        context: RequestContext,
    ) -> Result<CallStream, SendError> {
        if !self.takes_calls() {
            return Err(ProviderError::Rejected {
                status: 404,
                message: format!(
                    "node {} does not take {} through another replica (an older node or \
                     coordinator version)",
                    self.key.provider,
                    call.endpoint.path()
                ),
                code: Some("unsupported_endpoint".into()),
            }
            .into());
        }
        let pieces = self.run(cluster, Work::Call(call), context).await?;
        Ok(narrow(
            pieces,
            |piece| match piece {
                Piece::Output(output) => Some(output),
                Piece::Chunk(_) => None,
            },
            "the replica holding the node answered a call with chat chunks",
        ))
    }

    /// Sends `work` to the replica holding this node's link and reads the job's events: what
    /// [`PeerNode::chat`] and [`PeerNode::call`] share.
    async fn run(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        work: Work,
        context: RequestContext,
    ) -> Result<PieceStream, SendError> {
        if self.is_gone() {
            // It left the directory since it was chosen: nothing ran; choose again.
            return Err(SendError::Refused(format!(
                "node {} went offline",
                self.key.provider
            )));
        }
        let mut events = cluster.open_inbox();
        let inbox = events.subject.clone();
        let job = JobRequest {
            replica: cluster.replica.clone(),
            inbox: inbox.clone(),
            request_id: context.request_id.clone(),
            consumer: context.consumer.clone(),
            deadline_ms: context.deadline.map(|d| {
                u64::try_from(d.saturating_duration_since(Instant::now()).as_millis())
                    .unwrap_or(u64::MAX)
            }),
            whole: context.whole,
            request: None,
            call: None,
        }
        .with_work(work);
        let payload = wire::encode(&job).map_err(|error| ProviderError::Protocol {
            message: format!("cannot encode the job for another replica: {error}"),
        })?;
        drop(job);
        if payload.len() > cluster.max_payload() {
            return Err(ProviderError::Rejected {
                status: 413,
                message: format!(
                    "the request ({} bytes as it crosses replicas) is larger than the \
                     cluster's message limit ({} bytes; nats-server's max_payload)",
                    payload.len(),
                    cluster.max_payload()
                ),
                code: Some("request_too_large".into()),
            }
            .into());
        }
        let subject = wire::job_subject(&self.key);
        // From here on, a job that may have been accepted is cancelled if this ends early
        // (an answer that came too late, the consumer gone).
        let mut guard = CancelOnDrop {
            cluster: cluster.clone(),
            holder: self.replica.clone(),
            inbox,
            armed: true,
        };
        let reply = tokio::time::timeout(
            ACCEPT_TIMEOUT,
            cluster.client.request(subject, payload.into()),
        )
        .await
        .map_err(|_| {
            unavailable(format!(
                "the replica holding node {} did not answer",
                self.key.provider
            ))
        })?
        .map_err(|e| match e.kind() {
            // Nobody holds its link any more: it is linking again, here or elsewhere. Nothing
            // ran; dispatch chooses again (and waits for it).
            async_nats::RequestErrorKind::NoResponders => {
                guard.armed = false;
                cluster.directory.forget(&self.key, &self.replica);
                SendError::Refused(format!("node {} is linking again", self.key.provider))
            }
            _ => unavailable(format!("cannot reach node {}: {e}", self.key.provider)).into(),
        })?;
        // Refused: nothing runs there.
        let answer = wire::decode::<JobReply>(&reply.payload);
        guard.armed = matches!(answer, Ok(JobReply::Accepted { .. }));
        match answer {
            Ok(JobReply::Accepted { replica }) => {
                // Whoever answered runs the job, wherever the directory thought the node was.
                guard.holder = replica;
            }
            Ok(JobReply::Busy { message, draining }) => {
                if draining {
                    cluster.directory.mark_draining(&self.replica);
                } else {
                    self.mark_full();
                }
                return Err(SendError::Refused(message));
            }
            Ok(JobReply::Failed { error }) => return Err(ProviderError::from(error).into()),
            Err(e) => {
                return Err(ProviderError::Protocol {
                    message: format!("a replica answered a job with {e}"),
                }
                .into());
            }
        }
        // Only the holder's going away ends the job here: the node's own troubles come from the
        // holder as the job's error, and the node moving on leaves a running job alone.
        let gone = cluster.directory.replica_gone(&guard.holder);
        let cancel = context.cancel.clone();
        Ok(Box::pin(stream! {
            let mut guard = guard;
            let mut expected = 0u64;
            let mut answer = Reassembly::default();
            loop {
                let message = tokio::select! {
                    biased;
                    () = cancel.cancelled() => {
                        yield Err(ProviderError::Cancelled);
                        break;
                    }
                    message = events.receiver.recv() => message,
                    () = gone.cancelled() => {
                        guard.armed = false;
                        yield Err(unavailable(
                            "the coordinator replica holding the node's link went away",
                        ));
                        break;
                    }
                };
                let Some(message) = message else {
                    yield Err(unavailable(
                        "the job's events came faster than they were read, and some were lost",
                    ));
                    break;
                };
                let event = match wire::decode::<RelayEvent>(&message.payload) {
                    Ok(event) if event.seq == expected => event.event,
                    Ok(event) => {
                        yield Err(ProviderError::Protocol {
                            message: format!(
                                "events of the job were lost between replicas (got {} after {})",
                                event.seq, expected
                            ),
                        });
                        break;
                    }
                    Err(e) => {
                        yield Err(ProviderError::Protocol {
                            message: format!("a replica sent a bad job event: {e}"),
                        });
                        break;
                    }
                };
                expected += 1;
                match event {
                    RelayKind::Done => {
                        guard.armed = false;
                        if let Err(error) = answer.finish() {
                            yield Err(error);
                        }
                        break;
                    }
                    RelayKind::Failed { error } => {
                        guard.armed = false;
                        yield Err(ProviderError::from(error));
                        break;
                    }
                    event => match answer.take(event) {
                        Ok(pieces) => {
                            for piece in pieces {
                                yield Ok(piece);
                            }
                        }
                        Err(error) => {
                            yield Err(error);
                            break;
                        }
                    },
                }
            }
        }))
    }
}

/// Takes jobs for `node` (linked here) from other replicas until its link closes.
pub(super) async fn serve_node(cluster: Arc<Cluster>, node: Arc<LiveNode>) {
    let subject = wire::job_subject(&node.key);
    let mut jobs = match cluster.client.subscribe(subject).await {
        Ok(jobs) => jobs,
        Err(error) => {
            tracing::warn!(provider = %node.key.provider, "cannot take jobs from other replicas: {error}");
            return;
        }
    };
    loop {
        let message = tokio::select! {
            message = jobs.next() => message,
            () = node.closed() => break,
        };
        let Some(message) = message else { break };
        let Some(reply_to) = message.reply else {
            continue;
        };
        let answer = match wire::decode::<JobRequest>(&message.payload) {
            Ok(job) => take_job(&cluster, &node, job),
            // A job this replica cannot read (a newer replica's, say) is refused, not left
            // to time out.
            Err(error) => {
                tracing::warn!("refusing a job from another replica that cannot be read: {error}");
                refuse(format!(
                    "the coordinator replica holding node {} cannot read the job: {error}",
                    node.key.provider
                ))
            }
        };
        if let Some(payload) = wire::encode_or_log("a job's answer", &answer) {
            let _ = cluster.client.publish(reply_to, payload.into()).await;
        }
    }
    let _ = jobs.unsubscribe().await;
}

/// The answer to a job that cannot run (it is an attempt that failed: nothing ran).
fn refuse(message: String) -> JobReply {
    JobReply::Failed {
        error: JobError::from(&ProviderError::Protocol { message }),
    }
}

/// Accepts or refuses one job from another replica; an accepted job runs in its own task.
fn take_job(cluster: &Arc<Cluster>, node: &Arc<LiveNode>, mut job: JobRequest) -> JobReply {
    if cluster.is_draining() {
        return JobReply::Busy {
            message: "the coordinator replica holding the node's link is shutting down".into(),
            draining: true,
        };
    }
    let work = match job.take_work() {
        Ok(work) => work,
        Err(message) => return refuse(message),
    };
    let slot = {
        let _selecting = cluster.select_lock();
        if node
            .offer()
            .capacity
            .is_some_and(|capacity| node.in_flight() >= capacity)
        {
            return JobReply::Busy {
                message: format!("node {} has no free slot", node.key.provider),
                draining: false,
            };
        }
        node.reserve()
    };
    let cancel = cluster.track(&job.inbox);
    let context = RequestContext {
        request_id: job.request_id,
        consumer: job.consumer,
        deadline: job
            .deadline_ms
            .map(|ms| Instant::now() + Duration::from_millis(ms)),
        cancel: cancel.clone(),
        whole: job.whole,
    };
    let requester_gone = cluster.directory.replica_gone(&job.replica);
    let answer = JobReply::Accepted {
        replica: cluster.replica.clone(),
    };
    let cluster = cluster.clone();
    let node = node.clone();
    let inbox = job.inbox;
    tokio::spawn(async move {
        let mut relay = Relay {
            client: cluster.client.clone(),
            inbox: inbox.clone(),
            limit: cluster.max_payload() / 2,
            seq: 0,
        };
        let started = Instant::now();
        let provider = RemoteNode(node.clone());
        let opened: Result<PieceStream, ProviderError> = match work {
            Work::Chat(request) => provider
                .chat(*request, context)
                .await
                .map(|chunks| Box::pin(chunks.map(|c| c.map(Piece::Chunk))) as PieceStream),
            Work::Call(call) => provider
                .call(call, context)
                .await
                .map(|outputs| Box::pin(outputs.map(|o| o.map(Piece::Output))) as PieceStream),
        };
        match opened {
            Err(error) => relay.fail(&error).await,
            Ok(pieces) => {
                let first = || node.record_ttft(started.elapsed());
                forward(&mut relay, pieces, first, &cancel, &requester_gone).await;
            }
        }
        drop(slot);
        cluster.untrack(&inbox);
    });
    answer
}

/// Publishes a job's answer to the requester as it comes (the pieces ready at the same moment
/// in one message), then its end; `first_output` runs when the first piece arrives. Stops
/// (cancelling the job) when the requester's replica goes away.
async fn forward(
    relay: &mut Relay,
    mut pieces: PieceStream,
    first_output: impl FnOnce(),
    cancel: &CancellationToken,
    requester_gone: &CancellationToken,
) {
    let mut first_output = Some(first_output);
    loop {
        let item = tokio::select! {
            item = pieces.next() => item,
            () = requester_gone.cancelled() => {
                cancel.cancel();
                return;
            }
        };
        let first = match item {
            Some(Ok(piece)) => piece,
            Some(Err(ProviderError::Cancelled)) => return,
            Some(Err(error)) => {
                relay.fail(&error).await;
                return;
            }
            None => {
                relay.send(RelayKind::Done).await;
                return;
            }
        };
        if let Some(first_output) = first_output.take() {
            first_output();
        }
        // The pieces that are ready now travel in one message.
        let mut batch = vec![first];
        let mut after = None;
        while batch.len() < MAX_CHUNKS_PER_MESSAGE {
            match pieces.next().now_or_never() {
                Some(Some(Ok(piece))) => batch.push(piece),
                Some(other) => {
                    after = Some(other);
                    break;
                }
                None => break,
            }
        }
        if !relay.pieces(batch).await {
            cancel.cancel();
            return;
        }
        match after {
            None => {}
            Some(None) => {
                relay.send(RelayKind::Done).await;
                return;
            }
            Some(Some(Err(ProviderError::Cancelled))) => return,
            Some(Some(Err(error))) => {
                relay.fail(&error).await;
                return;
            }
            Some(Some(Ok(_))) => return, // not returned by the loop above
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inference_club_core::openai::ChunkDelta;
    use std::sync::PoisonError;

    /// Debian's `nats-server` (or `CLUB_TEST_NATS_SERVER`) on 127.0.0.1, killed when its
    /// process handle is dropped, and a client of it; `None` (said loudly) where there is none.
    async fn nats(test: &str) -> Option<(tokio::process::Child, async_nats::Client)> {
        nats_at(test)
            .await
            .map(|(server, client, _)| (server, client))
    }

    /// [`nats`], with the server's URL.
    async fn nats_at(test: &str) -> Option<(tokio::process::Child, async_nats::Client, String)> {
        let program = std::env::var("CLUB_TEST_NATS_SERVER").ok().or_else(|| {
            ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
                .into_iter()
                .find(|p| std::path::Path::new(p).exists())
                .map(str::to_owned)
        });
        let Some(program) = program else {
            eprintln!(
                "SKIPPED {test}: no nats-server (Debian's package nats-server; or set CLUB_TEST_NATS_SERVER)"
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new(program)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let url = format!("nats://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(client) = async_nats::connect(url.as_str()).await {
                return Some((child, client, url));
            }
            assert!(Instant::now() < deadline, "nats-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn chunk(text: &str) -> ChatCompletionChunk {
        ChatCompletionChunk::new("c", "m", 1).with_delta(ChunkDelta::content(text))
    }

    /// The events published to `inbox` until one that ends the job.
    async fn events_until_the_end(inbox: &mut async_nats::Subscriber) -> Vec<(usize, RelayEvent)> {
        let mut events = Vec::new();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(5), inbox.next())
                .await
                .expect("no event within 5 s")
                .unwrap();
            let event: RelayEvent = wire::decode(&message.payload).unwrap();
            let ends = matches!(event.event, RelayKind::Done | RelayKind::Failed { .. });
            events.push((message.payload.len(), event));
            if ends {
                return events;
            }
        }
    }

    async fn relay_to(
        client: &async_nats::Client,
        limit: usize,
    ) -> (Relay, async_nats::Subscriber) {
        let inbox = client.subscribe("test.inbox").await.unwrap();
        client.flush().await.unwrap();
        let relay = Relay {
            client: client.clone(),
            inbox: "test.inbox".into(),
            limit,
            seq: 0,
        };
        (relay, inbox)
    }

    #[tokio::test]
    async fn chunks_over_the_message_limit_cross_in_numbered_parts_whole_and_in_order() {
        let Some((_server, client)) = nats("chunks_over_the_message_limit_cross_in_parts").await
        else {
            return;
        };
        const LIMIT: usize = 2_000;
        let (mut relay, mut inbox) = relay_to(&client, LIMIT).await;
        let chunks: Vec<ChatCompletionChunk> = (0..40)
            .map(|n| chunk(&format!("{n:02}{}", "x".repeat(100))))
            .collect();
        assert!(relay.chunks(chunks[..2].to_vec()).await, "two fit in one");
        assert!(relay.chunks(chunks[2..].to_vec()).await);
        assert!(relay.send(RelayKind::Done).await);

        let events = events_until_the_end(&mut inbox).await;
        let seqs: Vec<u64> = events.iter().map(|(_, e)| e.seq).collect();
        assert_eq!(seqs, (0..events.len() as u64).collect::<Vec<_>>());
        assert!(
            events.len() >= 4,
            "38 chunks of ~200 bytes in parts: {seqs:?}"
        );
        let mut crossed = Vec::new();
        for (size, event) in events {
            assert!(size <= LIMIT, "a message of {size} bytes");
            if let RelayKind::Chunks { chunks } = event.event {
                crossed.extend(chunks);
            }
        }
        assert_eq!(crossed, chunks);
    }

    #[tokio::test]
    async fn a_chunk_larger_than_the_limit_fails_the_job_after_what_came_before() {
        let Some((_server, client)) = nats("a_chunk_larger_than_the_limit_fails_the_job").await
        else {
            return;
        };
        let (mut relay, mut inbox) = relay_to(&client, 2_000).await;
        let first = chunk("fits");
        assert!(
            !relay
                .chunks(vec![first.clone(), chunk(&"y".repeat(3_000))])
                .await
        );
        let events = events_until_the_end(&mut inbox).await;
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(matches!(&events[0].1.event, RelayKind::Chunks { chunks } if chunks == &[first]));
        let RelayKind::Failed { error } = &events[1].1.event else {
            panic!("{events:?}");
        };
        assert!(
            error
                .message
                .contains("larger than the cluster's message limit"),
            "{error:?}"
        );
        assert_eq!(events[1].1.seq, 1);
    }

    #[tokio::test]
    async fn outputs_and_binary_answers_over_the_limit_cross_in_numbered_parts_and_come_back_whole()
    {
        let Some((_server, client)) = nats("outputs_and_binary_answers_cross_in_parts").await
        else {
            return;
        };
        const LIMIT: usize = 2_000;
        let (mut relay, mut inbox) = relay_to(&client, LIMIT).await;
        let outputs: Vec<Piece> = (0..30)
            .map(|n| {
                Piece::Output(CallOutput::Json(serde_json::json!({
                    "index": n,
                    "embedding": vec![0.125_f64 * f64::from(n); 12],
                })))
            })
            .collect();
        // 50 KB of audio: base64 in parts of under 2 KB.
        let audio: Vec<u8> = (0..50_000u32).map(|n| (n % 251) as u8).collect();
        let speech = Piece::Output(CallOutput::Bytes {
            content_type: "audio/wav".into(),
            data: Bytes::from(audio),
        });
        let empty = Piece::Output(CallOutput::Bytes {
            content_type: "text/plain".into(),
            data: Bytes::new(),
        });
        let mut sent = outputs.clone();
        sent.push(speech.clone());
        sent.push(empty.clone());
        sent.push(outputs[0].clone());
        assert!(relay.pieces(sent.clone()).await);
        assert!(relay.send(RelayKind::Done).await);

        let events = events_until_the_end(&mut inbox).await;
        let seqs: Vec<u64> = events.iter().map(|(_, e)| e.seq).collect();
        assert_eq!(seqs, (0..events.len() as u64).collect::<Vec<_>>());
        assert!(events.len() > 30, "{} events", events.len());
        let mut answer = Reassembly::default();
        let mut crossed = Vec::new();
        for (size, event) in events {
            assert!(size <= LIMIT, "a message of {size} bytes");
            if matches!(event.event, RelayKind::Done) {
                answer.finish().unwrap();
                break;
            }
            crossed.extend(answer.take(event.event).unwrap());
        }
        assert_eq!(crossed, sent);
    }

    #[test]
    fn a_binary_answer_out_of_place_cut_short_or_over_the_cap_is_an_error() {
        let part = |offset: u64, data: &[u8]| RelayKind::Bytes {
            content_type: "audio/wav".into(),
            size: 6,
            offset,
            data: Bytes::copy_from_slice(data),
        };
        // In order: whole.
        let mut answer = Reassembly::default();
        assert!(answer.take(part(0, b"abc")).unwrap().is_empty());
        assert!(answer.finish().is_err(), "half an answer");
        assert!(
            answer
                .take(RelayKind::Outputs {
                    outputs: vec![serde_json::json!(1)]
                })
                .is_err(),
            "an output inside a binary answer"
        );
        let mut answer = Reassembly::default();
        answer.take(part(0, b"abc")).unwrap();
        assert_eq!(
            answer.take(part(3, b"def")).unwrap(),
            vec![Piece::Output(CallOutput::Bytes {
                content_type: "audio/wav".into(),
                data: Bytes::from_static(b"abcdef"),
            })]
        );
        answer.finish().unwrap();
        // Out of place: a gap, a part that does not start an answer, too much.
        let mut answer = Reassembly::default();
        answer.take(part(0, b"ab")).unwrap();
        assert!(answer.take(part(3, b"def")).is_err());
        assert!(Reassembly::default().take(part(3, b"def")).is_err());
        let mut answer = Reassembly::default();
        answer.take(part(0, b"abcd")).unwrap();
        assert!(answer.take(part(4, b"efg")).is_err());
        // Over the cap.
        let huge = RelayKind::Bytes {
            content_type: "audio/wav".into(),
            size: MAX_BINARY_ANSWER_BYTES + 1,
            offset: 0,
            data: Bytes::from_static(b"a"),
        };
        let error = Reassembly::default().take(huge).unwrap_err();
        assert!(error.to_string().contains("larger than"), "{error}");
    }

    #[tokio::test]
    async fn an_output_larger_than_the_limit_fails_the_job_after_what_came_before() {
        let Some((_server, client)) = nats("an_output_larger_than_the_limit_fails_the_job").await
        else {
            return;
        };
        let (mut relay, mut inbox) = relay_to(&client, 2_000).await;
        let first = serde_json::json!({"fits": true});
        assert!(
            !relay
                .pieces(vec![
                    Piece::Output(CallOutput::Json(first.clone())),
                    Piece::Output(CallOutput::Json(serde_json::json!("z".repeat(3_000)))),
                ])
                .await
        );
        let events = events_until_the_end(&mut inbox).await;
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(
            matches!(&events[0].1.event, RelayKind::Outputs { outputs } if outputs == &[first])
        );
        assert!(matches!(&events[1].1.event, RelayKind::Failed { .. }));
    }

    /// A replica holds at most [`JOB_BUFFER_BYTES`](crate::nodes::JOB_BUFFER_BYTES) of one job's
    /// events (and one message more) for a consumer that reads none, however many messages that
    /// takes: then the job's inbox closes, and its stream ends with an error after what came.
    #[tokio::test]
    async fn an_inbox_holds_a_jobs_events_up_to_a_bound_in_bytes() {
        let Some((_server, client, url)) =
            nats_at("an_inbox_holds_a_jobs_events_up_to_a_bound").await
        else {
            return;
        };
        let config = crate::cluster::ClusterConfig::new(url);
        let cluster = Cluster::connect(&config, Arc::default()).await.unwrap();
        let events = cluster
            .client
            .subscribe(wire::inboxes(&cluster.replica))
            .await
            .unwrap();
        cluster.client.flush().await.unwrap();
        tokio::spawn(super::super::deliver_events(cluster.clone(), events));
        let mut inbox = cluster.open_inbox();
        // 96 messages of almost 1 MiB (the server's largest by default): far fewer than the
        // messages an inbox may hold, half as many bytes again as it may.
        let payload = Bytes::from(vec![b'x'; 1_000_000]);
        for _ in 0..96 {
            client
                .publish(inbox.subject.clone(), payload.clone())
                .await
                .unwrap();
        }
        client.flush().await.unwrap();
        let open = || {
            cluster
                .inboxes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains_key(&inbox.id)
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while open() {
            assert!(
                Instant::now() < deadline,
                "the inbox still takes events after 96 MB that nobody read"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut held = 0;
        while let Some(message) = inbox.receiver.recv().await {
            held += message.payload.len();
        }
        assert!(
            held <= crate::nodes::JOB_BUFFER_BYTES + payload.len(),
            "{held} bytes held"
        );
        assert!(
            held >= crate::nodes::JOB_BUFFER_BYTES - payload.len(),
            "{held} bytes held"
        );
        assert!(inbox.receiver.fell_behind());
    }
}
