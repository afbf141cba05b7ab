//! A fake coordinator for the node's tests: a WebSocket server on 127.0.0.1 that plays the
//! coordinator's side of the link (`docs/protocol.md`), driven step by step by the test.
//!
//! Each connection that passes the `Authorization: Bearer` check becomes a [`Link`] handed to
//! the test, which reads the node's messages and binary frames from it (with their arrival
//! times), answers `welcome` or `refused`, sends jobs and cancels, pings, and drops the
//! connection or goes silent at will. Every upgrade attempt is recorded with its time and outcome, for the backoff tests.

#![allow(dead_code, clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use inference_club_core::link::{
    self, Cancel, CoordinatorMessage, Heartbeat, Hello, Job, JobDone, JobError, JobId, NodeMessage,
    Refused, Welcome,
};
use inference_club_core::openai::{
    ChatCompletionChunk, ChatCompletionRequest, ChatMessage, ConsumerEvents,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::{Message, http};

/// The API key the fake coordinator accepts.
pub const KEY: &str = "icl_test_provider_key";

/// How long any one wait for the node may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// One upgrade attempt the fake saw.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// When the upgrade request arrived.
    pub at: Instant,
    /// The HTTP status it was refused with; `None` when it became a link.
    pub refused_with: Option<u16>,
}

#[derive(Debug, Default)]
struct Settings {
    /// Refuse every upgrade with this status (a coordinator that is down or overloaded).
    refuse_upgrades: Option<u16>,
    attempts: Vec<Attempt>,
}

/// A fake coordinator on 127.0.0.1, stopped when dropped.
pub struct FakeCoordinator {
    /// `http://127.0.0.1:PORT`: what a node is configured with.
    pub url: String,
    settings: Arc<Mutex<Settings>>,
    links: mpsc::UnboundedReceiver<Link>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeCoordinator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeCoordinator {
    /// Starts listening on a free port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let settings = Arc::new(Mutex::new(Settings::default()));
        let (links_tx, links) = mpsc::unbounded_channel();
        let server = tokio::spawn(serve(listener, settings.clone(), links_tx));
        Self {
            url,
            settings,
            links,
            server,
        }
    }

    /// Refuse every upgrade with `status` (`Some`), or accept them again (`None`).
    pub fn refuse_upgrades(&self, status: Option<u16>) {
        self.settings.lock().unwrap().refuse_upgrades = status;
    }

    /// Every upgrade attempt so far.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.settings.lock().unwrap().attempts.clone()
    }

    /// Waits until at least `n` upgrade attempts were seen, at most `within`.
    pub async fn wait_for_attempts(&self, n: usize, within: Duration) -> Vec<Attempt> {
        let deadline = Instant::now() + within;
        loop {
            let attempts = self.attempts();
            if attempts.len() >= n || Instant::now() >= deadline {
                return attempts;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The next link the node opens, within `within`.
    pub async fn next_link_within(&mut self, within: Duration) -> Option<Link> {
        tokio::time::timeout(within, self.links.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next link the node opens; fails the test after [`WAIT`].
    pub async fn next_link(&mut self) -> Link {
        self.next_link_within(WAIT)
            .await
            .expect("the node opened no link")
    }

    /// The next link, its `hello` read and answered with `welcome` (heartbeat every
    /// `heartbeat_ms`).
    pub async fn linked(&mut self, heartbeat_ms: u64) -> (Link, Hello) {
        let mut link = self.next_link().await;
        let hello = link.hello().await;
        link.welcome(heartbeat_ms);
        (link, hello)
    }
}

async fn serve(
    listener: TcpListener,
    settings: Arc<Mutex<Settings>>,
    links: mpsc::UnboundedSender<Link>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let settings = settings.clone();
        let links = links.clone();
        tokio::spawn(async move {
            let mut authorization = None;
            let check = |request: &Request, response: Response| {
                authorization = request
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let mut settings = settings.lock().unwrap();
                let refuse = if authorization.as_deref() != Some(&format!("Bearer {KEY}")) {
                    Some(401)
                } else {
                    settings.refuse_upgrades
                };
                settings.attempts.push(Attempt {
                    at: Instant::now(),
                    refused_with: refuse,
                });
                match refuse {
                    None => Ok(response),
                    Some(status) => {
                        let mut refusal = ErrorResponse::new(Some(format!("refused: {status}")));
                        *refusal.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Err(refusal)
                    }
                }
            };
            let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, check).await else {
                return;
            };
            let (incoming_tx, incoming) = mpsc::unbounded_channel();
            let (commands, commands_rx) = mpsc::unbounded_channel();
            tokio::spawn(drive(ws, incoming_tx, commands_rx));
            let _ = links.send(Link {
                authorization,
                incoming,
                commands,
                heartbeats: Vec::new(),
                pending: Vec::new(),
            });
        });
    }
}

/// Job `id`: the prompt `prompt` for `model`, from consumer `bob`, streamed as chunks.
pub fn chat_job(id: JobId, model: &str, prompt: &str) -> Job {
    Job {
        job: id,
        request_id: format!("req-{id}"),
        consumer: Some("bob".into()),
        deadline_ms: None,
        whole: false,
        events: None,
        request: ChatCompletionRequest::new(model, vec![ChatMessage::user(prompt)]),
    }
}

/// A message the node sent, as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// When it arrived.
    pub at: Instant,
    /// The frame's text, exactly as sent.
    pub raw: String,
    /// The decoded message.
    pub message: NodeMessage,
}

/// A binary frame the node sent (an events frame of an events job), as received.
#[derive(Debug, Clone)]
pub struct BinaryReceived {
    /// When it arrived.
    pub at: Instant,
    /// The job its first 8 bytes name.
    pub job: JobId,
    /// What follows the job id, exactly as sent.
    pub piece: Vec<u8>,
}

/// Any frame the node sent: a message, or a binary frame.
#[derive(Debug, Clone)]
enum Frame {
    Message(Box<Received>),
    Binary(BinaryReceived),
}

enum Command {
    /// Messages to send in one write.
    Send(Vec<CoordinatorMessage>),
    Ping,
    PingEvery(Duration),
    Drop,
    Silent,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Owns one connection: forwards the node's frames to the test and the test's commands to the
/// node.
async fn drive(
    mut ws: Ws,
    incoming: mpsc::UnboundedSender<Frame>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut ping_every: Option<tokio::time::Interval> = None;
    loop {
        let ping_tick = async {
            match ping_every.as_mut() {
                Some(interval) => {
                    interval.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            command = commands.recv() => match command {
                None | Some(Command::Drop) => return,
                Some(Command::Send(messages)) => {
                    for message in messages {
                        let frame = link::encode(&message).unwrap();
                        if ws.feed(Message::Text(frame.into())).await.is_err() {
                            return;
                        }
                    }
                    if ws.flush().await.is_err() {
                        return;
                    }
                }
                Some(Command::Ping) => {
                    if ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                        return;
                    }
                }
                Some(Command::PingEvery(every)) => {
                    ping_every = Some(tokio::time::interval(every));
                }
                Some(Command::Silent) => {
                    // Keep the TCP connection open, but neither read nor write (no pongs
                    // either) until the test lets go of the link.
                    while let Some(command) = commands.recv().await {
                        if matches!(command, Command::Drop) {
                            return;
                        }
                    }
                    return;
                }
            },
            () = ping_tick => {
                if ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let message = link::decode_node(&text)
                        .unwrap_or_else(|e| panic!("the node sent a bad frame {text}: {e}"));
                    let _ = incoming.send(Frame::Message(Box::new(Received {
                        at: Instant::now(),
                        raw: text.to_string(),
                        message,
                    })));
                }
                Some(Ok(Message::Binary(bytes))) => {
                    let (job, piece) = link::split_binary_frame(&bytes)
                        .unwrap_or_else(|e| panic!("the node sent a bad binary frame: {e}"));
                    let _ = incoming.send(Frame::Binary(BinaryReceived {
                        at: Instant::now(),
                        job,
                        piece: piece.to_vec(),
                    }));
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// How a job ended, as the fake coordinator saw it.
#[derive(Debug, Clone)]
pub enum JobEnd {
    /// `done`.
    Done(JobDone),
    /// `error`.
    Error(JobError),
}

/// What one job sent, by kind, for [`JobTrace::sequence`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// A `chunk` message.
    Chunk,
    /// A binary frame (an events frame).
    Binary,
    /// An `answer` message.
    Answer,
    /// `done` or `error`.
    End,
}

/// Everything one job sent.
#[derive(Debug, Clone, Default)]
pub struct JobTrace {
    /// Its chunks, with arrival times.
    pub chunks: Vec<(Instant, ChatCompletionChunk)>,
    /// Its binary frames (events frames of an events job): what follows the job id, with
    /// arrival times.
    pub binary: Vec<(Instant, Vec<u8>)>,
    /// Its `answer`, with arrival time.
    pub answer: Option<(Instant, ChatCompletionChunk)>,
    /// Its end, with arrival time.
    pub end: Option<(Instant, JobEnd)>,
    /// The kind of everything it sent, in the order it arrived.
    pub sequence: Vec<Sent>,
}

impl JobTrace {
    /// Its binary frames read as events frames: each frame's output flag and its events, as
    /// [`link::split_events`] reads them. Fails the test on a frame that is not one.
    pub fn events_frames(&self) -> Vec<(bool, Vec<ChatCompletionChunk>)> {
        self.binary
            .iter()
            .map(|(_, piece)| {
                let (output, events) = link::split_events(piece).unwrap_or_else(|e| {
                    panic!("{e}: {:?}", String::from_utf8_lossy(piece));
                });
                let chunks: Vec<_> = ConsumerEvents::chunks_of(events).collect();
                let count = events.windows(2).filter(|w| w == b"\n\n").count();
                assert_eq!(
                    chunks.len(),
                    count,
                    "an event that is not a chunk in {events:?}"
                );
                (output, chunks)
            })
            .collect()
    }

    /// The answer text its events carry, in order.
    pub fn events_text(&self) -> String {
        self.events_frames()
            .iter()
            .flat_map(|(_, chunks)| chunks)
            .filter_map(|c| c.choices.first().and_then(|c| c.delta.content.clone()))
            .collect()
    }

    /// The `answer` body; fails the test if the job sent none.
    pub fn answer(&self) -> &ChatCompletionChunk {
        &self.answer.as_ref().expect("the job sent an answer").1
    }

    /// The answer text the chunks carry.
    pub fn text(&self) -> String {
        self.chunks
            .iter()
            .filter_map(|(_, c)| c.choices.first().and_then(|c| c.delta.content.clone()))
            .collect()
    }

    /// When the first chunk with content arrived.
    pub fn first_content_at(&self) -> Option<Instant> {
        self.chunks
            .iter()
            .find(|(_, c)| c.choices.first().is_some_and(|c| c.delta.content.is_some()))
            .map(|(at, _)| *at)
    }

    /// The `done` body; fails the test if the job did not end with one.
    pub fn done(&self) -> &JobDone {
        match &self.end {
            Some((_, JobEnd::Done(done))) => done,
            other => panic!("expected done, got {other:?}"),
        }
    }

    /// The `error` body; fails the test if the job did not end with one.
    pub fn error(&self) -> &JobError {
        match &self.end {
            Some((_, JobEnd::Error(error))) => error,
            other => panic!("expected error, got {other:?}"),
        }
    }

    /// When the job ended; fails the test if it did not.
    pub fn ended_at(&self) -> Instant {
        self.end.as_ref().expect("the job ended").0
    }
}

/// One link from the node, as the coordinator holds it.
pub struct Link {
    /// The `Authorization` header of the upgrade request.
    pub authorization: Option<String>,
    incoming: mpsc::UnboundedReceiver<Frame>,
    commands: mpsc::UnboundedSender<Command>,
    /// Every heartbeat received so far, with its arrival time.
    pub heartbeats: Vec<(Instant, Heartbeat)>,
    /// Frames read while looking for something else (no heartbeats), in their order: returned
    /// by [`Link::next`] (messages) and [`Link::run_jobs`] (any) first.
    pending: Vec<Frame>,
}

impl Link {
    /// The next frame off the connection, within `within`, heartbeats noted; `None` on timeout
    /// or when the link closed.
    async fn next_frame_off_the_wire(&mut self, within: Duration) -> Option<Frame> {
        let frame = tokio::time::timeout(within, self.incoming.recv())
            .await
            .ok()
            .flatten()?;
        if let Frame::Message(received) = &frame
            && let NodeMessage::Heartbeat(heartbeat) = &received.message
        {
            self.heartbeats.push((received.at, heartbeat.clone()));
        }
        Some(frame)
    }

    /// The next message of any kind, within `within`; `None` on timeout or when the link
    /// closed. Binary frames met meanwhile are kept for [`Link::run_jobs`].
    pub async fn next_any_within(&mut self, within: Duration) -> Option<Received> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_frame_off_the_wire(left).await? {
                Frame::Message(received) => return Some(*received),
                binary @ Frame::Binary(_) => self.pending.push(binary),
            }
        }
    }

    /// The next message that is not a heartbeat, within `within`. Binary frames met meanwhile
    /// are kept for [`Link::run_jobs`].
    pub async fn next_within(&mut self, within: Duration) -> Option<Received> {
        if let Some(at) = self
            .pending
            .iter()
            .position(|f| matches!(f, Frame::Message(_)))
            && let Frame::Message(received) = self.pending.remove(at)
        {
            return Some(*received);
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let received = self.next_any_within(left).await?;
            if !matches!(received.message, NodeMessage::Heartbeat(_)) {
                return Some(received);
            }
        }
    }

    /// The next frame that is not a heartbeat, message or binary, within `within`.
    async fn next_frame_within(&mut self, within: Duration) -> Option<Frame> {
        if !self.pending.is_empty() {
            return Some(self.pending.remove(0));
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = self.next_frame_off_the_wire(left).await?;
            if !matches!(&frame, Frame::Message(r) if matches!(r.message, NodeMessage::Heartbeat(_)))
            {
                return Some(frame);
            }
        }
    }

    /// The next message that is not a heartbeat; fails the test after [`WAIT`].
    pub async fn next(&mut self) -> Received {
        self.next_within(WAIT)
            .await
            .expect("no message from the node")
    }

    /// The next heartbeat; fails the test after [`WAIT`]. Other messages are kept for
    /// [`Link::next`].
    pub async fn next_heartbeat(&mut self) -> (Instant, Heartbeat) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let received = self
                .next_any_within(left)
                .await
                .expect("no heartbeat from the node");
            match received.message {
                NodeMessage::Heartbeat(heartbeat) => return (received.at, heartbeat),
                _ => self.pending.push(Frame::Message(Box::new(received))),
            }
        }
    }

    /// Reads the `hello` that opens the link, and its raw frame.
    pub async fn hello_frame(&mut self) -> (Hello, String) {
        let received = self.next().await;
        match received.message {
            NodeMessage::Hello(hello) => (hello, received.raw),
            other => panic!("expected hello, got {other:?}"),
        }
    }

    /// Reads the `hello` that opens the link.
    pub async fn hello(&mut self) -> Hello {
        self.hello_frame().await.0
    }

    /// Sends a message.
    pub fn send(&self, message: CoordinatorMessage) {
        self.send_together(vec![message]);
    }

    /// Sends messages in one write, as a coordinator sends what it has queued for a node.
    pub fn send_together(&self, messages: Vec<CoordinatorMessage>) {
        let _ = self.commands.send(Command::Send(messages));
    }

    /// Answers `welcome`.
    pub fn welcome(&self, heartbeat_ms: u64) {
        self.send(CoordinatorMessage::Welcome(Welcome {
            protocol_version: link::PROTOCOL_VERSION,
            operator: "ada".into(),
            provider: "test-node".into(),
            heartbeat_interval_ms: heartbeat_ms,
        }));
    }

    /// Answers `refused`, then closes the link as a coordinator does.
    pub fn refuse(&self, reason: &str, errors: &[&str]) {
        self.send(CoordinatorMessage::Refused(Refused {
            reason: reason.into(),
            errors: errors.iter().map(|e| (*e).to_owned()).collect(),
        }));
        self.drop_connection();
    }

    /// Sends job `id`: the prompt `prompt` for `model`, from consumer `bob`.
    pub fn job(&self, id: JobId, model: &str, prompt: &str) {
        self.send_job(chat_job(id, model, prompt));
    }

    /// Sends a job as given.
    pub fn send_job(&self, job: Job) {
        self.send(CoordinatorMessage::Job(Box::new(job)));
    }

    /// Cancels job `id`.
    pub fn cancel(&self, id: JobId) {
        self.send(CoordinatorMessage::Cancel(Cancel { job: id }));
    }

    /// Sends one WebSocket ping.
    pub fn ping(&self) {
        let _ = self.commands.send(Command::Ping);
    }

    /// Sends a WebSocket ping every `every` from now on.
    pub fn ping_every(&self, every: Duration) {
        let _ = self.commands.send(Command::PingEvery(every));
    }

    /// Drops the TCP connection without a close frame.
    pub fn drop_connection(&self) {
        let _ = self.commands.send(Command::Drop);
    }

    /// Stops reading and writing (no pongs either), keeping the connection open: a hung
    /// coordinator or a half-open link.
    pub fn go_silent(&self) {
        let _ = self.commands.send(Command::Silent);
    }

    /// Whether the node closed the link (or it was dropped) within `within`; messages read
    /// meanwhile are kept.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.incoming.recv()).await {
                Err(_) => return false,
                Ok(None) => return true,
                Ok(Some(Frame::Message(received))) => {
                    if let NodeMessage::Heartbeat(heartbeat) = &received.message {
                        self.heartbeats.push((received.at, heartbeat.clone()));
                    } else {
                        self.pending.push(Frame::Message(received));
                    }
                }
                Ok(Some(binary @ Frame::Binary(_))) => self.pending.push(binary),
            }
        }
    }

    /// Reads until every job in `ids` has ended (or fails the test after `within`), and returns
    /// what each sent. Frames of other jobs are kept for later reads.
    pub async fn run_jobs(&mut self, ids: &[JobId], within: Duration) -> HashMap<JobId, JobTrace> {
        let mut traces: HashMap<JobId, JobTrace> =
            ids.iter().map(|id| (*id, JobTrace::default())).collect();
        let mut kept = Vec::new();
        let deadline = Instant::now() + within;
        while traces.values().any(|t| t.end.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(frame) = self.next_frame_within(left).await else {
                let open: Vec<_> = traces
                    .iter()
                    .filter(|(_, t)| t.end.is_none())
                    .map(|(id, _)| *id)
                    .collect();
                panic!("jobs {open:?} did not end within {within:?}");
            };
            let id = match &frame {
                Frame::Binary(binary) => binary.job,
                Frame::Message(received) => match &received.message {
                    NodeMessage::Chunk(c) => c.job,
                    NodeMessage::Answer(a) => a.job,
                    NodeMessage::Done(d) => d.job,
                    NodeMessage::Error(e) => e.job,
                    _ => {
                        kept.push(frame);
                        continue;
                    }
                },
            };
            let Some(trace) = traces.get_mut(&id) else {
                kept.push(frame);
                continue;
            };
            assert!(trace.end.is_none(), "job {id} sent {frame:?} after its end");
            let sent = match frame {
                Frame::Binary(binary) => {
                    trace.binary.push((binary.at, binary.piece));
                    Sent::Binary
                }
                Frame::Message(received) => {
                    let at = received.at;
                    match received.message {
                        NodeMessage::Chunk(c) => {
                            trace.chunks.push((at, c.chunk));
                            Sent::Chunk
                        }
                        NodeMessage::Answer(a) => {
                            assert!(trace.answer.is_none(), "job {id} sent a second answer");
                            trace.answer = Some((at, a.answer));
                            Sent::Answer
                        }
                        NodeMessage::Done(d) => {
                            trace.end = Some((at, JobEnd::Done(d)));
                            Sent::End
                        }
                        NodeMessage::Error(e) => {
                            trace.end = Some((at, JobEnd::Error(e.error)));
                            Sent::End
                        }
                        other => unreachable!("kept above: {other:?}"),
                    }
                }
            };
            trace.sequence.push(sent);
        }
        self.pending.extend(kept);
        traces
    }

    /// Runs one job to its end.
    pub async fn run_job(&mut self, id: JobId, model: &str, prompt: &str) -> JobTrace {
        self.job(id, model, prompt);
        let mut traces = self.run_jobs(&[id], WAIT).await;
        traces.remove(&id).unwrap()
    }
}
