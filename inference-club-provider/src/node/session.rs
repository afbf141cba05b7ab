//! One connection to the coordinator: hello, then jobs, heartbeats and cancels until the link
//! ends.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use inference_club_core::link::{
    self, CoordinatorMessage, Goodbye, Heartbeat, Hello, JobError, JobFailed, JobId, NodeMessage,
    PROTOCOL_VERSION, Refused,
};
use inference_club_core::provider::ProviderError;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};
use tokio_util::sync::CancellationToken;

use super::call::{Outgoing, PendingUpload, refusal, serve_call};
use super::failures::FailureWarnings;
use super::job::serve_job;
use super::job_log::JobLog;
use super::{NodeConfig, Offer};

/// How a session ended.
#[derive(Debug)]
pub(crate) enum SessionEnd {
    /// Shutdown was asked for and the session said goodbye.
    Shutdown,
    /// The link was lost or could not be made; try again after a backoff.
    Lost(String),
    /// The coordinator refused the hello.
    Refused(Refused),
    /// The coordinator refused the node's key (401 or 403): retrying soon cannot help.
    KeyRejected(String),
}

/// Why a link could not be made.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// The coordinator refused the key (401 or 403), with what it said.
    KeyRejected(String),
    /// Anything else: the network, a timeout, another status.
    Failed(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::KeyRejected(why) | Self::Failed(why) => f.write_str(why),
        }
    }
}

/// The most frames written to the link before it is flushed: bursts of chunks share a write,
/// and a long burst still leaves room for the other branches of the session loop.
const MAX_FRAMES_PER_WRITE: usize = 64;

/// How long after a job is cancelled new jobs wait for the cancelled ones still running to end.
const HOLD_AFTER_CANCEL: Duration = Duration::from_millis(250);

/// A job's task, ready to run: it gives its id when it ends.
type JobTask = Pin<Box<dyn Future<Output = JobId> + Send>>;

/// Starts the jobs' tasks. A job cancelled on this link frees its engine slot only when its
/// task next runs, and the coordinator may send the next job in the same write as the
/// `cancel` (a consumer that cancels and asks again at once): a new job is therefore held
/// while a job cancelled in the last [`HOLD_AFTER_CANCEL`] is still running, so that it finds
/// the slot free instead of being refused as busy. A cancelled job normally ends at once; one
/// that does not holds new jobs no longer than that.
#[derive(Default)]
struct Starts {
    /// The held jobs, in the order they came.
    held: Vec<(JobId, JobTask)>,
    cancelled_at: Option<tokio::time::Instant>,
}

impl Starts {
    /// A job was cancelled just now.
    fn cancelled(&mut self) {
        self.cancelled_at = Some(tokio::time::Instant::now());
    }

    /// Whether new jobs wait: a job cancelled lately is still running (a held job cancelled
    /// before it started holds no slot, and does not count).
    fn must_wait(&self, jobs: &HashMap<JobId, CancellationToken>) -> bool {
        self.cancelled_at
            .is_some_and(|at| at.elapsed() < HOLD_AFTER_CANCEL)
            && jobs.iter().any(|(id, token)| {
                token.is_cancelled() && !self.held.iter().any(|(held, _)| held == id)
            })
    }

    /// Starts job `id`'s `task` now, or holds it while cancelled jobs end.
    fn start(
        &mut self,
        running: &mut JoinSet<JobId>,
        jobs: &HashMap<JobId, CancellationToken>,
        id: JobId,
        task: JobTask,
    ) {
        if self.must_wait(jobs) {
            self.held.push((id, task));
        } else {
            running.spawn(task);
        }
    }

    /// Starts the held jobs once no cancelled job is running or the wait is over.
    fn release(&mut self, running: &mut JoinSet<JobId>, jobs: &HashMap<JobId, CancellationToken>) {
        if !self.held.is_empty() && !self.must_wait(jobs) {
            for (_, task) in self.held.drain(..) {
                running.spawn(task);
            }
        }
    }

    /// When the held jobs start at the latest, if any are held.
    fn held_until(&self) -> Option<tokio::time::Instant> {
        if self.held.is_empty() {
            return None;
        }
        self.cancelled_at.map(|at| at + HOLD_AFTER_CANCEL)
    }
}

/// Sleeps until `at`, or forever when there is none.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The node software and version, as sent in `hello`.
pub const NODE_VERSION: &str = concat!("inference-club-provider/", env!("CARGO_PKG_VERSION"));

fn hello(offer: &Offer) -> NodeMessage {
    NodeMessage::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        node_version: NODE_VERSION.into(),
        manifest: offer.manifest.clone(),
    })
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn connect(config: &NodeConfig) -> Result<WsStream, ConnectError> {
    let url =
        super::link_url(&config.coordinator).map_err(|e| ConnectError::Failed(e.to_string()))?;
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| ConnectError::Failed(format!("invalid coordinator URL: {e}")))?;
    let bearer = format!("Bearer {}", config.api_key)
        .parse()
        .map_err(|_| ConnectError::Failed("the API key is not a valid header value".to_owned()))?;
    request.headers_mut().insert("authorization", bearer);
    let tls = inference_club_core::tls::client_config()
        .map_err(|e| ConnectError::Failed(format!("cannot configure TLS: {e}")))?;
    let mut ws_config = tungstenite::protocol::WebSocketConfig::default();
    ws_config.max_message_size = Some(link::MAX_MESSAGE_BYTES);
    ws_config.max_frame_size = Some(link::MAX_MESSAGE_BYTES);
    ws_config.read_buffer_size = link::BUFFER_BYTES;
    ws_config.write_buffer_size = link::BUFFER_BYTES;
    let connecting = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(ws_config),
        true,
        Some(tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(
            tls,
        ))),
    );
    match tokio::time::timeout(config.connect_timeout, connecting).await {
        Err(_) => Err(ConnectError::Failed(format!(
            "no answer from {} within {:?}",
            url, config.connect_timeout
        ))),
        Ok(Err(tungstenite::Error::Http(response))) => {
            let status = response.status();
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
                .into_owned();
            let mut why = if body.trim().is_empty() {
                format!("coordinator answered {status}")
            } else {
                format!("coordinator answered {status}: {body}")
            };
            if status == 404 {
                why.push_str(&format!(
                    " (no link endpoint at {url}: the coordinator URL should be the \
                     coordinator's base URL, such as http://HOST:8080)"
                ));
            }
            if status == 401 || status == 403 {
                Err(ConnectError::KeyRejected(why))
            } else {
                Err(ConnectError::Failed(why))
            }
        }
        Ok(Err(e)) => Err(ConnectError::Failed(format!(
            "cannot connect to {url}: {e}"
        ))),
        Ok(Ok((ws, _))) => Ok(ws),
    }
}

fn text(message: &NodeMessage) -> Result<Message, String> {
    link::encode(message)
        .map(|t| Message::Text(t.into()))
        .map_err(|e| format!("cannot encode a message: {e}"))
}

/// The frames of an outgoing message, in order.
fn frames_of(outgoing: Outgoing) -> Vec<Result<Message, String>> {
    match outgoing {
        Outgoing::Message(message) => vec![text(&message)],
        Outgoing::Binary(bytes) => vec![Ok(Message::Binary(bytes.into()))],
        Outgoing::Together(all) => all.into_iter().flat_map(frames_of).collect(),
    }
}

/// Runs one session until it ends.
pub(crate) async fn run(
    config: &NodeConfig,
    offers: &mut watch::Receiver<Arc<Offer>>,
    shutdown: &CancellationToken,
    log: &JobLog,
    failures: &FailureWarnings,
    on_welcome: impl FnOnce(),
) -> SessionEnd {
    let ws = tokio::select! {
        () = shutdown.cancelled() => return SessionEnd::Shutdown,
        ws = connect(config) => match ws {
            Ok(ws) => ws,
            Err(ConnectError::KeyRejected(why)) => return SessionEnd::KeyRejected(why),
            Err(ConnectError::Failed(why)) => return SessionEnd::Lost(why),
        },
    };
    let (mut sink, mut frames) = ws.split();
    let offer = offers.borrow_and_update().clone();
    let sent = match text(&hello(&offer)) {
        Ok(frame) => sink.send(frame).await.map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    if let Err(why) = sent {
        return SessionEnd::Lost(why);
    }

    // The answer to hello.
    let welcome = loop {
        let frame = tokio::select! {
            () = shutdown.cancelled() => return SessionEnd::Shutdown,
            frame = tokio::time::timeout(config.connect_timeout, frames.next()) => frame,
        };
        match frame {
            Err(_) => return SessionEnd::Lost("no welcome from the coordinator".into()),
            Ok(None) => return SessionEnd::Lost("the coordinator closed the link".into()),
            Ok(Some(Err(e))) => return SessionEnd::Lost(e.to_string()),
            Ok(Some(Ok(Message::Text(t)))) => match link::decode_coordinator(&t) {
                Ok(CoordinatorMessage::Welcome(w)) => break w,
                Ok(CoordinatorMessage::Refused(r)) => return SessionEnd::Refused(r),
                Ok(other) => {
                    return SessionEnd::Lost(format!("expected welcome, got {other:?}"));
                }
                Err(e) => return SessionEnd::Lost(format!("bad frame from the coordinator: {e}")),
            },
            Ok(Some(Ok(Message::Close(_)))) => {
                return SessionEnd::Lost("the coordinator closed the link".into());
            }
            Ok(Some(Ok(_))) => {}
        }
    };
    on_welcome();
    tracing::info!(
        operator = %welcome.operator,
        provider = %welcome.provider,
        "linked to the coordinator"
    );
    let interval = config.heartbeat_interval.unwrap_or(Duration::from_millis(
        welcome.heartbeat_interval_ms.max(100),
    ));
    // Every heartbeat goes with a WebSocket ping, which a live coordinator answers with a pong
    // even when it has nothing else to say: three intervals without any frame from it mean the
    // link is dead (a half-open TCP connection, a coordinator that hangs).
    let silence_limit = interval * 3;
    let mut heard_at = tokio::time::Instant::now();

    let (out, mut outgoing) = mpsc::channel::<Outgoing>(256);
    let mut uploads: HashMap<JobId, PendingUpload> = HashMap::new();
    let mut jobs: HashMap<JobId, CancellationToken> = HashMap::new();
    let mut running: JoinSet<JobId> = JoinSet::new();
    let mut starts = Starts::default();
    let mut heartbeat = tokio::time::interval(interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut draining: Option<tokio::time::Instant> = None;
    let mut cancelled_all = false;

    let end = loop {
        let grace_over = async {
            match draining {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled(), if draining.is_none() => {
                tracing::info!(jobs = jobs.len(), "shutting down: finishing in-flight jobs");
                draining = Some(tokio::time::Instant::now() + config.shutdown_grace);
                if jobs.is_empty() {
                    break SessionEnd::Shutdown;
                }
            }
            () = sleep_until_some(starts.held_until()) => starts.release(&mut running, &jobs),
            () = grace_over => {
                if cancelled_all {
                    break SessionEnd::Shutdown;
                }
                tracing::warn!(jobs = jobs.len(), "grace period over: cancelling the rest");
                for token in jobs.values() {
                    token.cancel();
                }
                // Let the cancelled jobs report before saying goodbye, briefly.
                cancelled_all = true;
                draining = Some(tokio::time::Instant::now() + Duration::from_secs(2));
            }
            Some(message) = outgoing.recv() => {
                // Whatever else is ready goes out with it: one write for a burst of chunks.
                // The jobs that are ready to run first get their turn to add to it.
                if outgoing.is_empty() {
                    tokio::task::yield_now().await;
                }
                let mut batch = 0;
                let mut next = Some(message);
                let mut sent = Ok(());
                while let Some(message) = next.take() {
                    for frame in frames_of(message) {
                        match frame {
                            Ok(frame) => sent = sink.feed(frame).await,
                            Err(why) => tracing::warn!("{why}"),
                        }
                        if sent.is_err() {
                            break;
                        }
                    }
                    batch += 1;
                    if sent.is_err() || batch == MAX_FRAMES_PER_WRITE {
                        break;
                    }
                    next = outgoing.try_recv().ok();
                }
                if let Err(e) = match sent {
                    Ok(()) => sink.flush().await,
                    Err(e) => Err(e),
                } {
                    break SessionEnd::Lost(e.to_string());
                }
            }
            Some(done) = running.join_next() => {
                if let Ok(job) = done {
                    jobs.remove(&job);
                }
                starts.release(&mut running, &jobs);
                if draining.is_some() && jobs.is_empty() {
                    break SessionEnd::Shutdown;
                }
            }
            _ = heartbeat.tick() => {
                let load = offers.borrow().load();
                if let Ok(frame) = text(&NodeMessage::Heartbeat(Heartbeat { load }))
                    && let Err(e) = sink.feed(frame).await
                {
                    break SessionEnd::Lost(e.to_string());
                }
                if let Err(e) = sink.send(Message::Ping(Vec::new().into())).await {
                    break SessionEnd::Lost(e.to_string());
                }
            }
            () = tokio::time::sleep_until(heard_at + silence_limit) => {
                break SessionEnd::Lost(format!("no word from the coordinator for {silence_limit:?}"));
            }
            Ok(()) = offers.changed() => {
                let offer = offers.borrow_and_update().clone();
                tracing::info!("manifest reloaded: announcing it");
                if let Ok(frame) = text(&hello(&offer))
                    && let Err(e) = sink.send(frame).await
                {
                    break SessionEnd::Lost(e.to_string());
                }
            }
            frame = frames.next() => {
                heard_at = tokio::time::Instant::now();
                let frame = match frame {
                    None | Some(Ok(Message::Close(_))) => {
                        break SessionEnd::Lost("the coordinator closed the link".into());
                    }
                    Some(Err(e)) => break SessionEnd::Lost(e.to_string()),
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Binary(bytes))) => {
                        // A piece of a call's upload: the call starts once all of it is here.
                        let (id, piece) = match link::split_binary_frame(&bytes) {
                            Ok(split) => split,
                            Err(e) => {
                                tracing::warn!("ignoring a bad binary frame from the coordinator: {e}");
                                continue;
                            }
                        };
                        let Some(pending) = uploads.get_mut(&id) else { continue };
                        match pending.push(piece) {
                            Ok(false) => {}
                            Ok(true) => {
                                if let Some(pending) = uploads.remove(&id) {
                                    let (call, upload) = pending.finish();
                                    let token = CancellationToken::new();
                                    jobs.insert(id, token.clone());
                                    let provider = offers.borrow().provider();
                                    let (out, log, failures) = (out.clone(), log.clone(), failures.clone());
                                    starts.start(&mut running, &jobs, id, Box::pin(async move {
                                        serve_call(call, Some(upload), provider, out, token, log, failures).await;
                                        id
                                    }));
                                }
                            }
                            Err(error) => {
                                uploads.remove(&id);
                                if let Ok(frame) = text(&refusal(id, &error))
                                    && let Err(e) = sink.send(frame).await
                                {
                                    break SessionEnd::Lost(e.to_string());
                                }
                            }
                        }
                        continue;
                    }
                    // Pings are answered by the WebSocket layer; pongs only prove the link lives.
                    Some(Ok(_)) => continue,
                };
                match link::decode_coordinator(&frame) {
                    Ok(CoordinatorMessage::Job(job)) => {
                        let id = job.job;
                        if draining.is_some() || jobs.contains_key(&id) {
                            let error = if draining.is_some() {
                                ProviderError::Busy { message: "the node is shutting down".into() }
                            } else {
                                ProviderError::Protocol { message: format!("job {id} is already running") }
                            };
                            let refusal = NodeMessage::Error(JobFailed { job: id, error: JobError::from(&error) });
                            if let Ok(frame) = text(&refusal)
                                && let Err(e) = sink.send(frame).await
                            {
                                break SessionEnd::Lost(e.to_string());
                            }
                            continue;
                        }
                        let token = CancellationToken::new();
                        jobs.insert(id, token.clone());
                        let provider = offers.borrow().provider();
                        let out = out.clone();
                        let log = log.clone();
                        let failures = failures.clone();
                        starts.start(&mut running, &jobs, id, Box::pin(async move {
                            serve_job(*job, provider, out, token, log, failures).await;
                            id
                        }));
                    }
                    Ok(CoordinatorMessage::Call(call)) => {
                        let id = call.job;
                        let busy = draining.is_some() || jobs.contains_key(&id) || uploads.contains_key(&id);
                        let accepted = if busy {
                            Err(if draining.is_some() {
                                ProviderError::Busy { message: "the node is shutting down".into() }
                            } else {
                                ProviderError::Protocol { message: format!("job {id} is already running") }
                            })
                        } else if let Some(header) = call.upload.clone() {
                            // The upload follows in binary frames; the call starts once it is here.
                            PendingUpload::new(*call, header).map(|pending| { uploads.insert(id, pending); })
                        } else {
                            let token = CancellationToken::new();
                            jobs.insert(id, token.clone());
                            let provider = offers.borrow().provider();
                            let (out, log, failures) = (out.clone(), log.clone(), failures.clone());
                            starts.start(&mut running, &jobs, id, Box::pin(async move {
                                serve_call(*call, None, provider, out, token, log, failures).await;
                                id
                            }));
                            Ok(())
                        };
                        if let Err(error) = accepted
                            && let Ok(frame) = text(&refusal(id, &error))
                            && let Err(e) = sink.send(frame).await
                        {
                            break SessionEnd::Lost(e.to_string());
                        }
                    }
                    Ok(CoordinatorMessage::Cancel(cancel)) => {
                        uploads.remove(&cancel.job);
                        if let Some(token) = jobs.get(&cancel.job) {
                            token.cancel();
                            starts.cancelled();
                        }
                    }
                    Ok(CoordinatorMessage::Welcome(_)) => {}
                    Ok(CoordinatorMessage::Refused(refused)) => {
                        // A reloaded manifest was refused: the coordinator keeps the old one.
                        tracing::error!(reason = %refused.reason, "the coordinator refused the reloaded manifest");
                        for problem in &refused.errors {
                            tracing::error!("  {problem}");
                        }
                    }
                    // A message of a newer protocol than this node speaks.
                    Ok(other) => tracing::debug!("ignoring a message this node does not know: {other:?}"),
                    Err(e) => tracing::warn!("ignoring a bad frame from the coordinator: {e}"),
                }
            }
        }
    };

    // Whatever happens, no job outlives its link. A job that ignored its cancellation is
    // aborted, and a held one never starts, so that every sender of `outgoing` is gone before
    // it is drained below.
    for token in jobs.values() {
        token.cancel();
    }
    drop(starts);
    running.abort_all();
    while running.join_next().await.is_some() {}
    if matches!(end, SessionEnd::Shutdown) {
        drop(out);
        while let Some(message) = outgoing.recv().await {
            for frame in frames_of(message).into_iter().flatten() {
                let _ = sink.feed(frame).await;
            }
        }
        let goodbye = NodeMessage::Goodbye(Goodbye {
            reason: "shutting down".into(),
        });
        if let Ok(frame) = text(&goodbye) {
            let _ = sink.send(frame).await;
        }
        let _ = sink.close().await;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: JobId) -> JobTask {
        Box::pin(async move { id })
    }

    /// Jobs 1 (running) and 2, 3 (to start); `cancelled` are cancelled.
    fn jobs(cancelled: &[JobId]) -> HashMap<JobId, CancellationToken> {
        (1..=3)
            .map(|id| {
                let token = CancellationToken::new();
                if cancelled.contains(&id) {
                    token.cancel();
                }
                (id, token)
            })
            .collect()
    }

    /// Job 2 came just after job 1 was cancelled, while job 1 still runs: it is held.
    fn held_behind_a_cancelled_job() -> (JoinSet<JobId>, Starts, HashMap<JobId, CancellationToken>)
    {
        let mut running = JoinSet::new();
        let mut starts = Starts::default();
        let jobs = jobs(&[1]);
        starts.cancelled();
        starts.start(&mut running, &jobs, 2, task(2));
        (running, starts, jobs)
    }

    /// A new job waits for a job cancelled just now, and starts as soon as that one has ended.
    #[tokio::test]
    async fn a_new_job_starts_once_the_cancelled_job_has_ended() {
        let (mut running, mut starts, mut jobs) = held_behind_a_cancelled_job();
        assert!(running.is_empty(), "started while the cancelled job runs");
        starts.release(&mut running, &jobs);
        assert!(running.is_empty());
        jobs.remove(&1);
        starts.release(&mut running, &jobs);
        assert_eq!(running.join_next().await.unwrap().unwrap(), 2);
    }

    /// A held job cancelled before it starts holds no slot: it does not keep the others waiting.
    #[tokio::test]
    async fn a_held_job_cancelled_before_it_starts_holds_no_one_up() {
        let (mut running, mut starts, mut jobs) = held_behind_a_cancelled_job();
        jobs[&2].cancel();
        starts.cancelled();
        starts.start(&mut running, &jobs, 3, task(3));
        jobs.remove(&1);
        starts.release(&mut running, &jobs);
        assert_eq!(running.len(), 2, "the held jobs did not start");
    }

    /// A cancelled job that does not end holds new jobs no longer than [`HOLD_AFTER_CANCEL`].
    #[tokio::test(start_paused = true)]
    async fn a_cancelled_job_that_does_not_end_holds_new_ones_only_a_while() {
        let (mut running, mut starts, jobs) = held_behind_a_cancelled_job();
        let until = starts.held_until().unwrap();
        assert!(until <= tokio::time::Instant::now() + HOLD_AFTER_CANCEL);
        tokio::time::sleep_until(until).await;
        starts.release(&mut running, &jobs);
        assert_eq!(running.len(), 1);
        assert_eq!(starts.held_until(), None);
        starts.start(&mut running, &jobs, 3, task(3));
        assert_eq!(running.len(), 2, "the wait is over: new jobs start at once");
    }
}
