//! Jobs across replicas: the requester's side ([`PeerNode::chat`]: send the job to the node's
//! subject, read its events from an inbox) and the link holder's side (`serve_node`: take
//! jobs for a linked node, run them over its link, publish their events in order).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_stream::stream;
use futures_util::{FutureExt, StreamExt};
use inference_club_core::link::JobError;
use inference_club_core::openai::{ChatCompletionChunk, ChatCompletionRequest};
use inference_club_core::provider::{ChunkStream, Provider, ProviderError, RequestContext};

use super::Cluster;
use super::directory::PeerNode;
use super::wire::{self, CancelJob, JobReply, JobRequest, RelayEvent, RelayKind};
use crate::nodes::{LiveNode, RemoteNode, SendError};

/// The most chunks of a job sent in one message (those ready at the same moment travel
/// together).
const MAX_CHUNKS_PER_MESSAGE: usize = 64;

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

    /// Publishes chunks in one message, or in as few as fit under the limit
    /// ([`wire::groups_under`]). A single chunk larger than the limit fails the job (false), as
    /// does a message NATS refused.
    async fn chunks(&mut self, chunks: Vec<ChatCompletionChunk>) -> bool {
        let event = RelayEvent {
            seq: self.seq,
            event: RelayKind::Chunks { chunks },
        };
        let Some(payload) = wire::encode_or_log("a job's chunks", &event) else {
            return false;
        };
        if payload.len() <= self.limit {
            return self.publish(payload).await;
        }
        let RelayKind::Chunks { chunks } = event.event else {
            return false;
        };
        for group in wire::groups_under(chunks, self.limit) {
            let Some(payload) = wire::encode_or_log(
                "a job's chunks",
                &RelayEvent {
                    seq: self.seq,
                    event: RelayKind::Chunks { chunks: group },
                },
            ) else {
                return false;
            };
            if payload.len() > self.limit {
                self.fail(&ProviderError::Protocol {
                    message: format!(
                        "a chunk of {} bytes is larger than the cluster's message limit",
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

    /// Publishes the next event's payload; false when NATS refused it.
    async fn publish(&mut self, payload: Vec<u8>) -> bool {
        self.seq += 1;
        self.client
            .publish(self.inbox.clone(), payload.into())
            .await
            .is_ok()
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
            request,
        };
        let payload = wire::encode(&job).map_err(|error| ProviderError::Protocol {
            message: format!("cannot encode the job for another replica: {error}"),
        })?;
        if payload.len() > cluster.max_payload() {
            return Err(ProviderError::Rejected {
                status: 413,
                message: format!(
                    "the request ({} bytes) is larger than the cluster's message limit ({} \
                     bytes; nats-server's max_payload)",
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
                    RelayKind::Chunks { chunks } => {
                        for chunk in chunks {
                            yield Ok(chunk);
                        }
                    }
                    RelayKind::Done => {
                        guard.armed = false;
                        break;
                    }
                    RelayKind::Failed { error } => {
                        guard.armed = false;
                        yield Err(ProviderError::from(error));
                        break;
                    }
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
        let job = match wire::decode::<JobRequest>(&message.payload) {
            Ok(job) => job,
            Err(error) => {
                tracing::warn!("ignoring a bad job from another replica: {error}");
                continue;
            }
        };
        let answer = take_job(&cluster, &node, job);
        if let Some(payload) = wire::encode_or_log("a job's answer", &answer) {
            let _ = cluster.client.publish(reply_to, payload.into()).await;
        }
    }
    let _ = jobs.unsubscribe().await;
}

/// Accepts or refuses one job from another replica; an accepted job runs in its own task.
fn take_job(cluster: &Arc<Cluster>, node: &Arc<LiveNode>, job: JobRequest) -> JobReply {
    if cluster.is_draining() {
        return JobReply::Busy {
            message: "the coordinator replica holding the node's link is shutting down".into(),
            draining: true,
        };
    }
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
    };
    let requester_gone = cluster.directory.replica_gone(&job.replica);
    let answer = JobReply::Accepted {
        replica: cluster.replica.clone(),
    };
    let cluster = cluster.clone();
    let node = node.clone();
    let inbox = job.inbox;
    let request = job.request;
    tokio::spawn(async move {
        let mut relay = Relay {
            client: cluster.client.clone(),
            inbox: inbox.clone(),
            limit: cluster.max_payload() / 2,
            seq: 0,
        };
        let started = Instant::now();
        match RemoteNode(node.clone()).chat(request, context).await {
            Err(error) => relay.fail(&error).await,
            Ok(mut chunks) => loop {
                let item = tokio::select! {
                    item = chunks.next() => item,
                    () = requester_gone.cancelled() => {
                        cancel.cancel();
                        break;
                    }
                };
                let first = match item {
                    Some(Ok(chunk)) => chunk,
                    Some(Err(ProviderError::Cancelled)) => break,
                    Some(Err(error)) => {
                        relay.fail(&error).await;
                        break;
                    }
                    None => {
                        relay.send(RelayKind::Done).await;
                        break;
                    }
                };
                if relay.seq == 0 {
                    node.record_ttft(started.elapsed());
                }
                // The chunks that are ready now travel in one message.
                let mut batch = vec![first];
                let mut after = None;
                while batch.len() < MAX_CHUNKS_PER_MESSAGE {
                    match chunks.next().now_or_never() {
                        Some(Some(Ok(chunk))) => batch.push(chunk),
                        Some(other) => {
                            after = Some(other);
                            break;
                        }
                        None => break,
                    }
                }
                if !relay.chunks(batch).await {
                    cancel.cancel();
                    break;
                }
                match after {
                    None => {}
                    Some(None) => {
                        relay.send(RelayKind::Done).await;
                        break;
                    }
                    Some(Some(Err(ProviderError::Cancelled))) => break,
                    Some(Some(Err(error))) => {
                        relay.fail(&error).await;
                        break;
                    }
                    Some(Some(Ok(_))) => break, // not returned by the loop above
                }
            },
        }
        drop(slot);
        cluster.untrack(&inbox);
    });
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use inference_club_core::openai::ChunkDelta;

    /// Debian's `nats-server` (or `CLUB_TEST_NATS_SERVER`) on 127.0.0.1, killed when its
    /// process handle is dropped, and a client of it; `None` (said loudly) where there is none.
    async fn nats(test: &str) -> Option<(tokio::process::Child, async_nats::Client)> {
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
                return Some((child, client));
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
            let ends = !matches!(event.event, RelayKind::Chunks { .. });
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
}
