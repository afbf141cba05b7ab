//! The one dispatch path every endpoint uses: choose a node with core's routing policy, send the
//! job, fail over before the first output, and wait in a bounded, fair queue when every node
//! that could serve the request is full.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use inference_club_core::endpoint::Endpoint;
use inference_club_core::openai::{ChatCompletionRequest, ConsumerEvents};
use inference_club_core::provider::{Call, CallStream, ChunkStream, ProviderError, RequestContext};
use inference_club_core::record::{InferenceRecord, ServedBy};
use inference_club_core::routing::failover;
use inference_club_core::routing::{self, Availability, Candidate};

use crate::error::ApiError;
use crate::fleet::{Fleet, OnlineNode};
use crate::metrics::Metrics;
use crate::nodes::{NodeKey, NodeSlot, SendError};
use crate::store::RoutingPreference;
use crate::streamed::{Streamed, StreamedAnswer};

/// Where requests go: the fleet of online nodes, the queues of requests waiting for room, and
/// how long and how many may wait.
#[derive(Debug)]
pub(crate) struct Dispatcher {
    /// The online nodes.
    pub fleet: Arc<Fleet>,
    /// The waiting requests, and the selection lock.
    pub queues: DispatchQueues,
    metrics: Arc<Metrics>,
    /// How long a request may wait for a node with room before 503.
    queue_timeout: Duration,
    /// How many requests may wait at once before new ones get 503 straight away.
    max_queued: usize,
}

impl Dispatcher {
    /// A dispatcher over `fleet`, sharing `queues`' selection lock with the cluster.
    pub fn new(
        fleet: Arc<Fleet>,
        queues: DispatchQueues,
        metrics: Arc<Metrics>,
        queue_timeout: Duration,
        max_queued: usize,
    ) -> Self {
        Self {
            fleet,
            queues,
            metrics,
            queue_timeout,
            max_queued,
        }
    }
}

/// Waiting requests and the lock that makes selection and reservation one step.
#[derive(Debug, Default)]
pub struct DispatchQueues {
    /// Held while a node is chosen and its slot taken (shared with the cluster, which takes
    /// slots for other replicas' jobs).
    pub(crate) select: Arc<Mutex<()>>,
    turnstiles: Mutex<HashMap<String, Arc<Turnstile>>>,
    waiting: AtomicUsize,
    tiebreak: AtomicUsize,
}

/// The line of requests waiting for one model: whoever holds the lock is at its head.
#[derive(Debug, Default)]
struct Turnstile {
    lock: tokio::sync::Mutex<()>,
    waiting: AtomicUsize,
}

/// Counts one waiter on a counter until dropped (also when the waiting request is dropped
/// because its consumer went away).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(counter: &'a AtomicUsize) -> (Self, usize) {
        let before = counter.fetch_add(1, Ordering::AcqRel);
        (Self(counter), before)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The outcome of ranking the online nodes for one request.
enum Pick {
    Node(OnlineNode, NodeSlot, String),
    Wait,
    Fail(Availability),
}

impl DispatchQueues {
    /// Requests waiting for a node with room now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    fn turnstile(&self, model: &str) -> Arc<Turnstile> {
        self.turnstiles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(model.to_ascii_lowercase())
            .or_default()
            .clone()
    }

    /// Whether requests for `model` are waiting: a newcomer then queues behind them.
    fn has_waiters(&self, model: &str) -> bool {
        self.turnstiles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&model.to_ascii_lowercase())
            .is_some_and(|t| t.waiting.load(Ordering::Acquire) > 0)
    }
}

/// Whether `node` is run by `consumer`.
fn is_own(node: &OnlineNode, consumer: Option<&str>) -> bool {
    consumer.is_some_and(|c| node.operator().eq_ignore_ascii_case(c))
}

/// Ranks the online nodes for `model` and `consumer`, leaving out those `tried` already, and
/// reserves a slot on the best one. The consumer's routing preference decides which nodes
/// count: `only_own` their own nodes only; `prefer_own` their own nodes when one has room,
/// else every node; `any` every node. A node whose operator turned the kill switch on serves
/// nothing.
fn pick(state: &Dispatcher, wanted: Wanted<'_>, tried: &[NodeKey]) -> Pick {
    let queues = &state.queues;
    let _selecting = queues.select.lock().unwrap_or_else(PoisonError::into_inner);
    let model = wanted.model;
    let nodes = state.fleet.nodes_for(model);
    let tiebreak = queues.tiebreak.fetch_add(1, Ordering::Relaxed) as u64;
    let rank = |own_only| rank_and_reserve(&nodes, wanted, own_only, tried, tiebreak);
    let picked = match wanted.preference {
        RoutingPreference::Any => rank(false),
        RoutingPreference::OnlyOwn => rank(true),
        RoutingPreference::PreferOwn => match rank(true) {
            picked @ Pick::Node(..) => picked,
            _ => rank(false),
        },
    };
    match picked {
        // In a cluster, a node that just left one replica is relinking to another: wait for it.
        Pick::Fail(Availability::NotServed | Availability::Offline)
            if tried.is_empty() && state.fleet.may_relink(model) =>
        {
            Pick::Wait
        }
        picked => picked,
    }
}

/// Whether a batch's line could be sent to a node now ([`Dispatcher::room_for_background`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackgroundRoom {
    /// A node has room for it.
    Free,
    /// The nodes that could take it are busy (or keep their last slots for interactive
    /// requests), interactive requests wait for its model, or a node serving it is linking
    /// again: room comes.
    Busy,
    /// No node can take it: none online serves its model at its endpoint, or admits its
    /// consumer. Sent anyway, it gets the refusal an interactive request would.
    NoNode,
}

impl Dispatcher {
    /// Whether a batch's line of `consumer`'s for `model` at `endpoint` would find a node with
    /// room now (leaving interactive requests theirs, and behind any waiting for the model):
    /// asked before a line is recorded and sent, so that a line with no room costs nothing. A
    /// moment later the answer may differ; the line is then refused as busy.
    pub fn room_for_background(
        &self,
        endpoint: Endpoint,
        model: &str,
        consumer: &str,
        preference: RoutingPreference,
    ) -> BackgroundRoom {
        if self.queues.has_waiters(model) {
            return BackgroundRoom::Busy;
        }
        let wanted = Wanted {
            endpoint,
            model,
            consumer: Some(consumer),
            preference,
            background: true,
        };
        // The slot taken to find out is given back at once.
        match pick(self, wanted, &[]) {
            Pick::Node(..) => BackgroundRoom::Free,
            Pick::Wait | Pick::Fail(Availability::AllFull) => BackgroundRoom::Busy,
            Pick::Fail(_) => BackgroundRoom::NoNode,
        }
    }
}

/// Beyond this many nodes serving a model, a request ranks a random sample of this many (the
/// best of d choices: load stays spread while the cost per request stays bounded), and every
/// node only when the sample has none with room.
pub const ROUTING_SAMPLE: usize = 64;

/// Ranks `nodes` (only the consumer's own when `own_only`) and reserves a slot on the best;
/// a sample of [`ROUTING_SAMPLE`] first when there are more. The caller holds the selection
/// lock; `tiebreak` advances per request.
fn rank_and_reserve(
    nodes: &[OnlineNode],
    wanted: Wanted<'_>,
    own_only: bool,
    tried: &[NodeKey],
    tiebreak: u64,
) -> Pick {
    if own_only {
        // Own nodes are few among many: pick them out by name (cheap) before ranking them.
        let own: Vec<OnlineNode> = nodes
            .iter()
            .filter(|node| is_own(node, wanted.consumer))
            .cloned()
            .collect();
        return choose_among(&own, wanted, tried, tiebreak);
    }
    if nodes.len() > ROUTING_SAMPLE {
        let start = sample_start(tiebreak, nodes.len());
        let sample: Vec<OnlineNode> = (0..ROUTING_SAMPLE)
            .filter_map(|i| nodes.get((start + i) % nodes.len()).cloned())
            .collect();
        if let picked @ Pick::Node(..) = choose_among(&sample, wanted, tried, tiebreak) {
            return picked;
        }
    }
    choose_among(nodes, wanted, tried, tiebreak)
}

/// The slots of a node with `capacity` that background work leaves to interactive requests: a
/// quarter, rounded up, but never all of them.
pub fn interactive_reserve(capacity: u32) -> u32 {
    capacity.div_ceil(4).min(capacity.saturating_sub(1))
}

/// Where a request's sample starts among `len` nodes: spread evenly over successive requests
/// (a SplitMix64 step of the request counter).
fn sample_start(counter: u64, len: usize) -> usize {
    let mut z = counter.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // `len` is at least 1 here, and the remainder is below it: no truncation.
    (z % len.max(1) as u64) as usize
}

/// Ranks exactly `nodes` for what is `wanted` and reserves a slot on the best. A node serves a
/// call (any endpoint but chat) only when it takes calls (protocol 2). Background work (a
/// batch's line) leaves a quarter of a node's slots (at least one, when it has two or more)
/// to interactive requests.
fn choose_among(
    nodes: &[OnlineNode],
    wanted: Wanted<'_>,
    tried: &[NodeKey],
    tiebreak: u64,
) -> Pick {
    let Wanted {
        endpoint,
        model,
        consumer,
        background,
        ..
    } = wanted;
    let candidates: Vec<Candidate<usize>> = nodes
        .iter()
        .enumerate()
        .map(|(index, node)| {
            let offer = node.offer();
            let takes = endpoint == Endpoint::ChatCompletions || node.takes_calls();
            let found = offer
                .find_model_for(endpoint, model)
                .filter(|_| takes && offer.accepting());
            Candidate {
                key: index,
                serves_model: found.is_some(),
                admits_consumer: found.is_some_and(|m| m.access.admits(node.operator(), consumer)),
                online: !node.is_closed(),
                in_flight: node.in_flight(),
                max_concurrent: offer.capacity.map(|c| {
                    if background {
                        c - interactive_reserve(c)
                    } else {
                        c
                    }
                }),
                recent_ttft: node.recent_ttft(),
                resting: false,
            }
        })
        .collect();
    let tried: Vec<usize> = nodes
        .iter()
        .enumerate()
        .filter(|(_, node)| tried.contains(node.key()))
        .map(|(index, _)| index)
        .collect();
    let choice = routing::choose(&candidates, &tried, tiebreak);
    match (choice.availability, choice.best) {
        (Availability::HasRoom, Some(index)) => match nodes.get(index) {
            Some(node) => {
                let service = node
                    .offer()
                    .find_model_for(endpoint, model)
                    .map(|m| m.service.clone())
                    .unwrap_or_default();
                Pick::Node(node.clone(), node.reserve(), service)
            }
            None => Pick::Fail(Availability::Offline),
        },
        (Availability::AllFull, _) => Pick::Wait,
        (availability, _) => Pick::Fail(availability),
    }
}

fn unplaceable(
    availability: Availability,
    model: &str,
    preference: RoutingPreference,
    last: Option<ProviderError>,
) -> ApiError {
    // Every node that served the model was tried, failed and is gone now: the model exists and
    // its nodes failed — say what went wrong (502), not that nobody serves it (404).
    if matches!(
        availability,
        Availability::NotServed | Availability::Offline
    ) && let Some(error) = &last
    {
        return ApiError::from_provider(error);
    }
    match availability {
        Availability::NotServed | Availability::Offline
            if preference == RoutingPreference::OnlyOwn =>
        {
            ApiError::not_found(
                "model_not_found",
                format!(
                    "None of your online nodes serves `{model}`, and your routing preference is \
                     only_own; change it with PATCH /api/v1/me {{\"routing_preference\": \"any\"}}."
                ),
            )
            .with_param("model")
        }
        Availability::NotServed | Availability::Offline => {
            ApiError::from_provider(&ProviderError::ModelNotFound {
                model: model.to_owned(),
            })
        }
        Availability::NotAdmitted => ApiError::forbidden(
            "access_denied",
            format!("no node serving `{model}` admits you (their operators restrict access)"),
        ),
        Availability::AllFull => ApiError::overloaded(
            format!("every node serving `{model}` is busy; try again shortly"),
            2,
        ),
        _ => match last {
            Some(error) => ApiError::from_provider(&error),
            None => ApiError::from_provider(&ProviderError::Unavailable {
                status: None,
                message: format!("no node serving `{model}` could answer"),
            }),
        },
    }
}

/// What a request asks a node to do: a chat, or a call of another endpoint.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Work<'a> {
    /// `POST /v1/chat/completions` (and the Responses API, mapped onto chat).
    Chat(&'a ChatCompletionRequest),
    /// A streamed chat whose consumer gets its events as they say.
    Streamed(&'a ChatCompletionRequest, &'a ConsumerEvents),
    /// Any other endpoint.
    Call(&'a Call),
}

impl Work<'_> {
    /// The endpoint whose nodes may serve it.
    fn endpoint(self) -> Endpoint {
        match self {
            Self::Chat(_) | Self::Streamed(..) => Endpoint::ChatCompletions,
            Self::Call(call) => call.endpoint,
        }
    }
}

/// A node's answer, read up to its first output.
enum Opening {
    Chat(failover::Opened),
    Streamed(failover::Opened<Streamed>),
    Call(failover::OpenedCall),
}

impl Opening {
    fn output_started(&self) -> bool {
        match self {
            Self::Chat(opened) => opened.output_started(),
            Self::Streamed(opened) => opened.output_started(),
            Self::Call(opened) => opened.output_started(),
        }
    }

    fn into_answer(self, slot: NodeSlot) -> Answer {
        match self {
            Self::Chat(opened) => Answer::Chat(opened.into_stream(slot)),
            Self::Streamed(opened) => Answer::Streamed(opened.into_stream(slot)),
            Self::Call(opened) => Answer::Call(opened.into_stream(slot)),
        }
    }
}

/// The stream of the node that answered, holding its slot until it ends or is dropped.
pub(crate) enum Answer {
    /// Chat chunks.
    Chat(ChunkStream),
    /// A streamed chat's events.
    Streamed(StreamedAnswer),
    /// A call's outputs.
    Call(CallStream),
}

/// Sends `work` to `node` and reads its answer up to the first output.
async fn open(
    state: &Dispatcher,
    node: &OnlineNode,
    work: Work<'_>,
    context: &RequestContext,
) -> Result<Result<Opening, ProviderError>, SendError> {
    Ok(match work {
        Work::Chat(request) => {
            let chunks = node
                .chat(state.fleet.cluster(), request.clone(), context.clone())
                .await?;
            failover::read_until_output(chunks).await.map(Opening::Chat)
        }
        Work::Streamed(request, events) => {
            let pieces = node
                .chat_events(
                    state.fleet.cluster(),
                    request.clone(),
                    context.clone(),
                    events.clone(),
                )
                .await?;
            failover::read_until_output(pieces)
                .await
                .map(Opening::Streamed)
        }
        Work::Call(call) => {
            let outputs = node.call(call.clone(), context.clone()).await?;
            failover::call_until_output(outputs)
                .await
                .map(Opening::Call)
        }
    })
}

/// How a request is placed: the consumer's routing preference, and whether it may wait in the
/// queue for a node with room (a batch's line may not: interactive requests go first).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placing {
    pub preference: RoutingPreference,
    pub waits: bool,
}

/// Dispatches `work` for `record`'s consumer: returns the stream from the first node that
/// produces output (or ends), with the record's attempts filled in; or the error to answer
/// with, after every candidate was tried or the queue timed out.
pub(crate) async fn dispatch_work(
    state: &Dispatcher,
    work: Work<'_>,
    record: &mut InferenceRecord,
    context: &RequestContext,
    placing: Placing,
) -> Result<Answer, ApiError> {
    let Placing { preference, waits } = placing;
    let endpoint = work.endpoint();
    let model = match work {
        Work::Chat(request) | Work::Streamed(request, _) => request.model.clone(),
        Work::Call(call) => call.model().to_owned(),
    };
    let consumer = record.consumer.clone();
    let deadline = Instant::now() + state.queue_timeout;
    let mut tried: Vec<NodeKey> = Vec::new();
    let mut last_error: Option<ProviderError> = None;
    let mut queued = false;
    let mut refusals = 0u32;
    loop {
        if context.cancel.is_cancelled() {
            return Err(ApiError::from_provider(&ProviderError::Cancelled));
        }
        let wanted = Wanted {
            endpoint,
            model: &model,
            consumer: consumer.as_deref(),
            preference,
            background: !waits,
        };
        // Nobody overtakes the requests already waiting for this model.
        let picked = if state.queues.has_waiters(&model) {
            Pick::Wait
        } else {
            pick(state, wanted, &tried)
        };
        let picked = match picked {
            // Room now or never: the caller tries again later.
            Pick::Wait if !waits => {
                return Err(unplaceable(
                    Availability::AllFull,
                    &model,
                    preference,
                    last_error,
                ));
            }
            Pick::Wait => {
                if !queued {
                    queued = true;
                    state.metrics.queued.inc();
                }
                wait_for_slot(state, wanted, &tried, deadline).await?
            }
            other => other,
        };
        let (node, slot, service) = match picked {
            Pick::Node(node, slot, service) => (node, slot, service),
            Pick::Fail(availability) => {
                if tried.is_empty()
                    && matches!(
                        availability,
                        Availability::NotServed | Availability::Offline
                    )
                    && let Some(error) = other_endpoints(state, endpoint, &model)
                {
                    return Err(error);
                }
                return Err(unplaceable(availability, &model, preference, last_error));
            }
            Pick::Wait => {
                return Err(unplaceable(
                    Availability::AllFull,
                    &model,
                    preference,
                    last_error,
                ));
            }
        };
        let served_by = ServedBy {
            operator: node.operator().to_owned(),
            provider: node.key().provider.clone(),
            service: Some(service).filter(|s| !s.is_empty()),
        };
        // A record that is final cannot be dispatched again; that cannot happen here.
        let _ = record.dispatched(served_by, Utc::now());
        let started = Instant::now();
        let opened = match open(state, &node, work, context).await {
            Ok(opened) => opened,
            // Nothing ran (another replica took the node's last slot, its replica is shutting
            // down, or it is linking again): choose again, a few times, without an attempt.
            Err(SendError::Refused(_)) if refusals < MAX_REFUSALS && Instant::now() < deadline => {
                refusals += 1;
                drop(slot);
                tokio::time::sleep(Duration::from_millis(2 * u64::from(refusals))).await;
                continue;
            }
            Err(SendError::Refused(message)) => Err(ProviderError::Busy { message }),
            Err(SendError::Failed(error)) => Err(error),
        };
        match opened {
            Ok(opened) => {
                // A whole chat answer's first output comes with the rest of it (its node may
                // ask the engine for it whole): not a time to first token to compare nodes by.
                if opened.output_started() && !(context.whole && matches!(work, Work::Chat(_))) {
                    node.record_ttft(started.elapsed());
                }
                return Ok(opened.into_answer(slot));
            }
            Err(error) if error.is_retryable() => {
                tracing::info!(provider = %node.key().provider, %error, "failing over");
                state.metrics.failovers.inc();
                record.attempt_failed(error.kind(), error.to_string());
                node.record_ttft(started.elapsed().max(Duration::from_secs(10)));
                tried.push(node.key().clone());
                last_error = Some(error);
            }
            Err(error) => {
                record.attempt_failed(error.kind(), error.to_string());
                return Err(ApiError::from_provider(&error));
            }
        }
    }
}

/// Why no node could take `model` at `endpoint` when some node serves the model: it is served at
/// other endpoints only (400 `unsupported_endpoint`, naming them), or at this one only by nodes
/// that cannot take calls — speaking link protocol 1, or linked to a replica of an older
/// version (503 `endpoint_unavailable`). `None`: nobody serves it (the caller says 404).
fn other_endpoints(state: &Dispatcher, endpoint: Endpoint, model: &str) -> Option<ApiError> {
    let mut served: Vec<Endpoint> = Vec::new();
    for node in state.fleet.nodes_for(model).iter() {
        for found in node.offer().models.iter().filter(|m| m.answers_to(model)) {
            for other in &found.endpoints {
                if !served.contains(other) {
                    served.push(*other);
                }
            }
        }
    }
    if served.is_empty() || (served.contains(&endpoint) && endpoint == Endpoint::ChatCompletions) {
        return None;
    }
    if served.contains(&endpoint) {
        return Some(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "endpoint_unavailable",
            format!(
                "`{model}` is served at {} only by nodes of an older version, which take chat \
                 only; ask their operators to update",
                endpoint.path()
            ),
        ));
    }
    served.sort_by_key(|e| Endpoint::ALL.iter().position(|a| a == e));
    let names: Vec<String> = served.iter().map(|e| e.path()).collect();
    Some(
        ApiError::bad_request(
            "unsupported_endpoint",
            format!(
                "`{model}` is not served at {}; it is served at {}",
                endpoint.path(),
                names.join(", ")
            ),
        )
        .with_param("model"),
    )
}

/// What a request wants: a node serving `model` at `endpoint` that admits `consumer`, under
/// their routing preference; `background` for a batch's line.
#[derive(Debug, Clone, Copy)]
struct Wanted<'a> {
    endpoint: Endpoint,
    model: &'a str,
    consumer: Option<&'a str>,
    preference: RoutingPreference,
    background: bool,
}

/// How many times one request chooses again after a node was refused to it ([`SendError::Refused`])
/// before such a refusal counts as a failed attempt.
const MAX_REFUSALS: u32 = 20;

/// Waits, in order of arrival per model, until a node serving `model` has room, and reserves
/// the slot before the next in line may look (so nobody overtakes). Returns a `Pick::Node`, or
/// `Pick::Fail` when no node could serve the request any more; 503 with `Retry-After` when the
/// queue is full or the wait runs out. A request dropped while waiting leaves the line.
async fn wait_for_slot(
    state: &Dispatcher,
    wanted: Wanted<'_>,
    tried: &[NodeKey],
    deadline: Instant,
) -> Result<Pick, ApiError> {
    let model = wanted.model;
    let queues = &state.queues;
    let busy = || {
        ApiError::overloaded(
            format!("every node serving `{model}` is busy; try again shortly"),
            2,
        )
    };
    let (_counted, before) = Waiting::enter(&queues.waiting);
    if before >= state.max_queued {
        return Err(busy());
    }
    let turnstile = queues.turnstile(model);
    let (_in_line, _) = Waiting::enter(&turnstile.waiting);
    let deadline = tokio::time::Instant::from_std(deadline);
    let _turn = tokio::time::timeout_at(deadline, turnstile.lock.lock())
        .await
        .map_err(|_| busy())?;
    loop {
        match pick(state, wanted, tried) {
            Pick::Wait => {}
            decided => return Ok(decided),
        }
        let tick = tokio::time::sleep(Duration::from_millis(20));
        tokio::select! {
            () = state.fleet.nodes.changed() => {}
            () = tick => {}
            () = tokio::time::sleep_until(deadline) => return Err(busy()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::directory::Directory;
    use crate::cluster::directory::testing::{operated_peer, peer};

    /// A chat for `m` by `consumer`.
    fn wanted(consumer: &str) -> Wanted<'_> {
        Wanted {
            endpoint: Endpoint::ChatCompletions,
            model: "m",
            consumer: Some(consumer),
            preference: RoutingPreference::Any,
            background: false,
        }
    }

    #[test]
    fn background_work_leaves_room_for_interactive_requests() {
        assert_eq!(
            [1, 2, 3, 4, 8, 9].map(interactive_reserve),
            [0, 1, 1, 1, 2, 3]
        );
        let directory = Directory::default();
        let node = nodes(&directory, 1, Some(4));
        let background = Wanted {
            background: true,
            ..wanted("bob")
        };
        // Three of four slots for a batch; the fourth only for an interactive request.
        let held: Vec<NodeSlot> = (0..3)
            .map(
                |t| match rank_and_reserve(&node, background, false, &[], t) {
                    Pick::Node(_, slot, _) => slot,
                    _ => panic!("a batch line found no room"),
                },
            )
            .collect();
        assert!(matches!(
            rank_and_reserve(&node, background, false, &[], 3),
            Pick::Wait
        ));
        assert!(matches!(
            rank_and_reserve(&node, wanted("bob"), false, &[], 4),
            Pick::Node(..)
        ));
        drop(held);
    }

    /// `n` nodes serving `m`, each with `max_concurrent`.
    fn nodes(directory: &Directory, n: usize, max_concurrent: Option<u32>) -> Vec<OnlineNode> {
        (0..n)
            .map(|i| peer(directory, &format!("n{i}"), &[("m", None)], max_concurrent))
            .collect()
    }

    /// Picks for `requests` requests in a row, holding every slot taken.
    fn pick_many(nodes: &[OnlineNode], requests: u64) -> Vec<NodeSlot> {
        (0..requests)
            .map(
                |tiebreak| match rank_and_reserve(nodes, wanted("bob"), false, &[], tiebreak) {
                    Pick::Node(_, slot, _) => slot,
                    _ => panic!("request {tiebreak} found no node"),
                },
            )
            .collect()
    }

    #[test]
    fn among_many_nodes_a_sample_keeps_the_load_spread() {
        let directory = Directory::default();
        let many = nodes(&directory, 1_000, None);
        let _slots = pick_many(&many, 3_000);
        let loads: Vec<u32> = many.iter().map(OnlineNode::in_flight).collect();
        let (least, most) = (loads.iter().min(), loads.iter().max());
        // Every node got work, and none much more than its share of 3.
        assert!(least >= Some(&1) && most <= Some(&5), "{least:?}..{most:?}");
    }

    #[test]
    fn own_only_finds_the_consumers_node_among_many() {
        let directory = Directory::default();
        let mut many = nodes(&directory, 300, None);
        many.insert(
            150,
            operated_peer(&directory, "Bob", "bobs-box", &[("m", None)], None),
        );
        for tiebreak in 0..5 {
            match rank_and_reserve(&many, wanted("bob"), true, &[], tiebreak) {
                Pick::Node(node, _, _) => assert_eq!(node.key().provider, "bobs-box"),
                _ => panic!("bob's node was not found"),
            }
            assert!(matches!(
                rank_and_reserve(&many, wanted("carol"), true, &[], tiebreak),
                Pick::Fail(Availability::NotServed)
            ));
        }
    }

    #[test]
    fn a_sample_without_room_falls_back_to_every_node() {
        let directory = Directory::default();
        let many = nodes(&directory, 500, Some(1));
        // Every node but the last is full.
        let _taken: Vec<NodeSlot> = many[..499].iter().map(OnlineNode::reserve).collect();
        for tiebreak in 0..20 {
            match rank_and_reserve(&many, wanted("bob"), false, &[], tiebreak) {
                Pick::Node(node, _, _) => assert_eq!(node.key().provider, "n499"),
                _ => panic!("the node with room was not found"),
            }
        }
        let _last = many[499].reserve();
        assert!(matches!(
            rank_and_reserve(&many, wanted("bob"), false, &[], 0),
            Pick::Wait
        ));
    }
}
