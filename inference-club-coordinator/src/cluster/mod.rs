//! Several coordinator replicas as one club: they share PostgreSQL (records, accounts,
//! manifests) and NATS (jobs, their chunks, and who is linked where).
//!
//! A node links to any replica; a consumer's request may land on any other. Routing here sees
//! the nodes linked here ([`NodeRegistry`](super::nodes::NodeRegistry)) and those linked to the
//! others ([`Directory`], kept fresh by messages, no query per request). A job for a node linked
//! elsewhere goes to the node's own subject (core NATS request/reply), and the replica holding
//! its link runs it and publishes its events back in order ([`relay`]).
//!
//! Each replica renews a lease in PostgreSQL; a replica whose lease ran out and that went
//! silent on NATS is dead, and the first replica to notice fails the records it was handling.
//! Without a cluster (no `--nats`), none of this runs: jobs go straight over the links of the
//! one process.

pub mod directory;
pub mod relay;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use self::directory::{Directory, PeerNode};
use self::wire::{Beat, Control, NodeDown, NodeLoad, NodeUp, SyncReply};
use super::nodes::LiveNode;
use crate::bounded;
use crate::limits::Limiter;
use crate::nodes::NodeRegistry;
use crate::store::Store;

/// How a replica joins its cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The NATS server, e.g. `nats://127.0.0.1:4222`.
    pub nats_url: String,
    /// This replica's id (letters, digits, `-`, `_`; at most 64); `None`: a random one.
    pub replica_id: Option<String>,
}

impl ClusterConfig {
    /// Joins the cluster on `nats_url` with a random replica id.
    pub fn new(nats_url: impl Into<String>) -> Self {
        Self {
            nats_url: nats_url.into(),
            replica_id: None,
        }
    }
}

/// Why a replica could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The configuration is not usable.
    #[error("{0}")]
    Invalid(String),
    /// NATS could not be reached, or refused a subscription.
    #[error("NATS at {url}: {what}")]
    Nats {
        /// Where.
        url: String,
        /// What failed.
        what: &'static str,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl From<ClusterError> for crate::Error {
    fn from(error: ClusterError) -> Self {
        let retryable = matches!(error, ClusterError::Nats { .. });
        crate::Error::caused_by(crate::ErrorKind::Cluster, retryable, error)
    }
}

/// A replica's lease in PostgreSQL: renewed every [`LEASE_RENEWAL`]; a replica whose lease is
/// older than this (and that is silent on NATS) is dead.
pub const LEASE: Duration = Duration::from_secs(5);
/// How often a replica renews its lease and looks for dead ones.
pub const LEASE_RENEWAL: Duration = Duration::from_secs(1);

/// What the cluster's background work reaches of its replica: the nodes linked here, the limits
/// and the store. The first two are held weakly: the work stops once the coordinator is gone.
#[derive(Debug, Clone)]
struct Host {
    nodes: Weak<NodeRegistry>,
    limits: Weak<Limiter>,
    store: Store,
}

/// A [`Host`] whose coordinator is alive.
struct Live {
    nodes: Arc<NodeRegistry>,
    limits: Arc<Limiter>,
    store: Store,
}

impl Host {
    fn upgrade(&self) -> Option<Live> {
        Some(Live {
            nodes: self.nodes.upgrade()?,
            limits: self.limits.upgrade()?,
            store: self.store.clone(),
        })
    }
}

/// In a cluster, how long a replica that just started lets requests for a model no node serves
/// wait, instead of failing at once: until it has heard every other replica's beat and list of
/// nodes.
pub const STARTUP_GRACE: Duration = wire::BEAT_EXPIRY;

/// In a cluster, how long after a model's last node went offline a request for it waits for
/// the node to link again (to another replica) instead of failing at once.
pub const RELINK_GRACE: Duration = Duration::from_secs(10);

/// This replica's part in the cluster.
pub struct Cluster {
    client: async_nats::Client,
    /// This replica's id.
    pub replica: String,
    /// This run of it (random: a replica restarted under the same id is told apart).
    incarnation: u64,
    /// The nodes of the other replicas.
    pub directory: Directory,
    draining: AtomicBool,
    /// Jobs from other replicas running on nodes linked here, by inbox.
    running: Mutex<HashMap<String, CancellationToken>>,
    /// This replica's jobs on other replicas' nodes: where their events go, by job id.
    inboxes: Mutex<HashMap<u64, bounded::Sender<async_nats::Message>>>,
    next_inbox: AtomicU64,
    /// The dispatcher's selection lock (so that local and remote jobs never both take a node's
    /// last slot).
    select: Arc<Mutex<()>>,
    stop: CancellationToken,
    /// When each model (lower-case) was last seen on a node ([`RELINK_GRACE`]).
    models_seen: Mutex<HashMap<String, Instant>>,
    /// When it started (a replica learns the others' nodes in its first seconds).
    started: Instant,
    /// Messages for the publishing task (subject, payload), sent in order.
    outbox: mpsc::UnboundedSender<(String, Vec<u8>)>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

/// A random replica id: `replica-` and 8 hex digits.
fn random_replica_id() -> String {
    let mut bytes = [0u8; 4];
    let _ = getrandom::fill(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("replica-{hex}")
}

impl Cluster {
    /// Connects to NATS as the replica `config` names.
    pub async fn connect(
        config: &ClusterConfig,
        select: Arc<Mutex<()>>,
    ) -> Result<Arc<Self>, ClusterError> {
        let replica = match &config.replica_id {
            Some(id) if wire::valid_replica_id(id) => id.clone(),
            Some(id) => {
                return Err(ClusterError::Invalid(format!(
                    "replica id {id:?}: use 1 to 64 letters, digits, '-' or '_'"
                )));
            }
            None => random_replica_id(),
        };
        let client = async_nats::ConnectOptions::new()
            .name(format!("club-coordinator {replica}"))
            .connection_timeout(Duration::from_secs(5))
            .subscription_capacity(super::nodes::JOB_BUFFER * 16)
            .connect(config.nats_url.as_str())
            .await
            .map_err(|e| ClusterError::Nats {
                url: config.nats_url.clone(),
                what: "cannot connect",
                source: Box::new(e),
            })?;
        let mut nonce = [0u8; 8];
        let _ = getrandom::fill(&mut nonce);
        let (outbox, mut outgoing) = mpsc::unbounded_channel::<(String, Vec<u8>)>();
        let publisher = client.clone();
        tokio::spawn(async move {
            while let Some((subject, payload)) = outgoing.recv().await {
                if let Err(error) = publisher.publish(subject.clone(), payload.into()).await {
                    tracing::warn!(%subject, "cannot publish to the cluster: {error}");
                }
            }
        });
        Ok(Arc::new_cyclic(|cluster| Self {
            outbox,
            client,
            replica,
            incarnation: u64::from_le_bytes(nonce).max(1),
            directory: Directory::of(cluster.clone()),
            draining: AtomicBool::new(false),
            running: Mutex::new(HashMap::new()),
            inboxes: Mutex::new(HashMap::new()),
            next_inbox: AtomicU64::new(1),
            select,
            stop: CancellationToken::new(),
            models_seen: Mutex::default(),
            started: Instant::now(),
        }))
    }

    /// Notes the models served now (every beat), for [`Cluster::may_relink`]: those of the
    /// nodes linked here and to every other replica, draining ones included (their nodes are
    /// about to link elsewhere).
    fn note_models_online(&self, linked: &NodeRegistry) {
        let now = Instant::now();
        let mut offers: Vec<_> = linked.online().iter().map(|node| node.offer()).collect();
        offers.extend(self.directory.all_nodes().iter().map(|node| node.offer()));
        let mut seen = self
            .models_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        seen.retain(|_, at| at.elapsed() < RELINK_GRACE);
        for offer in &offers {
            for model in &offer.models {
                seen.insert(model.served_id.to_ascii_lowercase(), now);
                if let Some(hf) = &model.hf {
                    seen.insert(hf.to_ascii_lowercase(), now);
                }
            }
        }
    }

    /// Whether a node served `model` within [`RELINK_GRACE`], or this replica started less
    /// than [`STARTUP_GRACE`] ago and may not know it yet: a request for it waits for a node
    /// instead of failing.
    pub fn may_relink(&self, model: &str) -> bool {
        self.started.elapsed() < STARTUP_GRACE
            || self
                .models_seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&model.to_ascii_lowercase())
                .is_some_and(|at| at.elapsed() < RELINK_GRACE)
    }

    /// The largest message NATS takes (requests larger than this cannot cross replicas).
    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// Whether this replica is shutting down.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    fn select_lock(&self) -> MutexGuard<'_, ()> {
        self.select.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn track(&self, inbox: &str) -> CancellationToken {
        let token = CancellationToken::new();
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(inbox.to_owned(), token.clone());
        token
    }

    fn untrack(&self, inbox: &str) {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(inbox);
    }

    /// An inbox for the events of one job this replica sends elsewhere (all share one NATS
    /// subscription); closed when dropped.
    fn open_inbox(self: &Arc<Self>) -> Inbox {
        let id = self.next_inbox.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) =
            bounded::channel(super::nodes::JOB_BUFFER, super::nodes::JOB_BUFFER_BYTES);
        self.inboxes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, sender);
        Inbox {
            cluster: self.clone(),
            id,
            subject: wire::inbox(&self.replica, id),
            receiver,
        }
    }

    /// Jobs from other replicas running on nodes linked here.
    pub fn remote_jobs(&self) -> usize {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Starts the replica's background work for `coordinator`: listening to the other
    /// replicas, beating, renewing the lease and retiring dead replicas. It stops with
    /// [`Cluster::stop`] or when the coordinator is dropped.
    pub async fn start(
        self: &Arc<Self>,
        nodes: &Arc<NodeRegistry>,
        limits: &Arc<Limiter>,
        store: &Store,
    ) -> Result<(), ClusterError> {
        let subscribe = |subject: String| {
            let client = self.client.clone();
            async move {
                client
                    .subscribe(subject.clone())
                    .await
                    .map_err(|e| ClusterError::Nats {
                        url: subject,
                        what: "cannot subscribe",
                        source: Box::new(e),
                    })
            }
        };
        let ups = subscribe(wire::UP.into()).await?;
        let downs = subscribe(wire::DOWN.into()).await?;
        let beats = subscribe(wire::BEATS.into()).await?;
        let control = subscribe(wire::CONTROL.into()).await?;
        let syncs = subscribe(wire::sync_subject(&self.replica)).await?;
        let cancels = subscribe(wire::cancel_subject(&self.replica)).await?;
        let events = subscribe(wire::inboxes(&self.replica)).await?;
        let usage = subscribe(wire::USAGE.into()).await?;
        limits.share_usage();
        let weak = Host {
            nodes: Arc::downgrade(nodes),
            limits: Arc::downgrade(limits),
            store: store.clone(),
        };
        self.spawn(listen(self.clone(), weak.clone(), ups, downs, beats));
        self.spawn(answer_syncs(self.clone(), weak.clone(), syncs));
        self.spawn(take_cancels(self.clone(), cancels));
        self.spawn(deliver_events(self.clone(), events));
        self.spawn(apply_control(self.clone(), weak.clone(), control));
        self.spawn(beat(self.clone(), weak.clone()));
        self.spawn(keep_lease(self.clone(), weak.clone()));
        self.spawn(report_usage(self.clone(), weak.clone()));
        self.spawn(charge_usage(self.clone(), weak.clone(), usage));
        self.spawn(pass_on_forgotten(self.clone(), weak));
        Ok(())
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = task => {}
                () = stop.cancelled() => {}
            }
        });
    }

    /// Stops the background work (beats stop: the others drop this replica's nodes after
    /// [`wire::BEAT_EXPIRY`]).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// A node linked here: the others learn of it, and jobs for it are taken from them.
    pub fn node_linked(self: &Arc<Self>, node: &Arc<LiveNode>) {
        self.announce(node);
        self.spawn(relay::serve_node(self.clone(), node.clone()));
    }

    /// Tells the others what `node` (linked here) offers now.
    pub fn announce(&self, node: &LiveNode) {
        self.publish(wire::UP, &up_of(self, node));
    }

    /// A node's link here closed (and no newer link took its place).
    pub fn node_unlinked(&self, node: &LiveNode) {
        let down = NodeDown {
            replica: self.replica.clone(),
            operator_id: node.key.operator_id,
            provider: node.key.provider.clone(),
        };
        self.publish(wire::DOWN, &down);
    }

    /// Tells every replica of a club-wide change.
    pub fn broadcast(&self, control: &Control) {
        self.publish(wire::CONTROL, control);
    }

    fn publish<M: serde::Serialize>(&self, subject: &'static str, message: &M) {
        if let Some(payload) = wire::encode_or_log(subject, message) {
            self.publish_later(subject.to_owned(), payload);
        }
    }

    /// Hands a message to the task that publishes this replica's messages in order (it ends
    /// with the cluster).
    fn publish_later(&self, subject: String, payload: Vec<u8>) {
        let _ = self.outbox.send((subject, payload));
    }

    /// Starts draining: the others route nothing new to the nodes linked here, and jobs they
    /// still send are refused (they go elsewhere). Says so at once.
    pub async fn begin_drain(&self, nodes: &NodeRegistry) {
        self.draining.store(true, Ordering::Release);
        let beat = Beat {
            changes_only: true,
            nodes: Vec::new(),
            ..beat_of(self, nodes)
        };
        if let Some(payload) = wire::encode_or_log("a beat", &beat) {
            let _ = self.client.publish(wire::BEATS, payload.into()).await;
        }
        let _ = self.client.flush().await;
    }

    /// Leaves the cluster for good: the others hear that its nodes are gone, records still in
    /// flight here fail with a reason, the lease is given up, and the background work stops.
    pub async fn leave(&self, nodes: &NodeRegistry, store: &Store) {
        self.stop();
        let last = Beat {
            nodes: Vec::new(),
            total: 0,
            changes_only: false,
            ..beat_of(self, nodes)
        };
        if let Some(payload) = wire::encode_or_log("the last beat", &last) {
            let _ = self.client.publish(wire::BEATS, payload.into()).await;
        }
        match store
            .retire_replica(
                &self.replica,
                "the coordinator replica handling it shut down",
            )
            .await
        {
            Ok(0) => {}
            Ok(failed) => {
                tracing::warn!(failed, "records still in flight at shutdown are now failed")
            }
            Err(error) => tracing::warn!("cannot give up the replica's lease: {error}"),
        }
        let _ = self.client.flush().await;
    }
}

/// What the others need to know of `node`, linked here.
fn up_of(cluster: &Cluster, node: &LiveNode) -> NodeUp {
    let offer = node.offer();
    NodeUp {
        replica: cluster.replica.clone(),
        incarnation: cluster.incarnation,
        operator_id: node.key.operator_id,
        operator: node.operator.clone(),
        provider: node.key.provider.clone(),
        manifest: offer.manifest.clone(),
        policy: offer.policy.clone(),
        connected_at: node.connected_at(),
        takes_calls: node.takes_calls(),
    }
}

/// The full beat of this replica: every node's load.
fn beat_of(cluster: &Cluster, linked: &NodeRegistry) -> Beat {
    let nodes: Vec<NodeLoad> = linked
        .online()
        .iter()
        .map(|node| NodeLoad {
            operator_id: node.key.operator_id,
            provider: node.key.provider.clone(),
            in_flight: node.in_flight(),
            ttft_ms: node
                .recent_ttft()
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            load: node.reported_load(),
        })
        .collect();
    Beat {
        replica: cluster.replica.clone(),
        incarnation: cluster.incarnation,
        draining: cluster.is_draining(),
        total: u32::try_from(nodes.len()).unwrap_or(u32::MAX),
        changes_only: false,
        nodes,
    }
}

/// What this replica said in its last beats, so that the next says only what changed.
#[derive(Debug, Default)]
struct BeatState {
    sent: HashMap<(crate::store::UserId, String), NodeLoad>,
    beats: u64,
}

impl BeatState {
    /// The next beat: all nodes every [`wire::FULL_BEAT_EVERY`]th time, else those whose load
    /// changed. Split into messages of at most `limit` bytes.
    fn next(&mut self, full: Beat, limit: usize) -> Vec<Vec<u8>> {
        let everything = self.beats.is_multiple_of(wire::FULL_BEAT_EVERY);
        self.beats += 1;
        let mut beat = full;
        let current: HashMap<_, _> = beat
            .nodes
            .iter()
            .map(|n| ((n.operator_id, n.provider.clone()), n.clone()))
            .collect();
        if !everything {
            beat.nodes
                .retain(|n| self.sent.get(&(n.operator_id, n.provider.clone())) != Some(n));
            beat.changes_only = true;
        }
        self.sent = current;
        let Some(payload) = wire::encode_or_log("a beat", &beat) else {
            return Vec::new();
        };
        if payload.len() <= limit || beat.nodes.len() < 2 {
            return vec![payload];
        }
        // Too long for one message: parts, each listing some nodes.
        let nodes = std::mem::take(&mut beat.nodes);
        wire::groups_under(nodes, limit)
            .into_iter()
            .filter_map(|nodes| {
                wire::encode_or_log(
                    "a beat",
                    &Beat {
                        changes_only: true,
                        nodes,
                        ..beat.clone()
                    },
                )
            })
            .collect()
    }
}

/// Keeps the directory: nodes up and down, beats (asking a replica for its list when they
/// disagree with it).
async fn listen(
    cluster: Arc<Cluster>,
    coordinator: Host,
    mut ups: async_nats::Subscriber,
    mut downs: async_nats::Subscriber,
    mut beats: async_nats::Subscriber,
) {
    loop {
        tokio::select! {
            Some(message) = ups.next() => {
                if let Ok(up) = wire::decode::<NodeUp>(&message.payload)
                    && up.replica != cluster.replica
                {
                    cluster.directory.up(up);
                    notify(&coordinator);
                }
            }
            Some(message) = downs.next() => {
                if let Ok(down) = wire::decode::<NodeDown>(&message.payload)
                    && down.replica != cluster.replica
                {
                    cluster.directory.down(&down);
                }
            }
            Some(message) = beats.next() => {
                let Ok(beat) = wire::decode::<Beat>(&message.payload) else { continue };
                if beat.replica == cluster.replica {
                    continue;
                }
                let replica = beat.replica.clone();
                if cluster.directory.beat(beat) {
                    tokio::spawn(sync_with(cluster.clone(), coordinator.clone(), replica));
                }
                notify(&coordinator);
            }
            else => break,
        }
    }
}

fn notify(coordinator: &Host) {
    if let Some(coordinator) = coordinator.upgrade() {
        coordinator.nodes.notify_changed();
    }
}

/// Asks `replica` for every node linked to it (the answer comes in parts).
async fn sync_with(cluster: Arc<Cluster>, coordinator: Host, replica: String) {
    let inbox = cluster.client.new_inbox();
    let Ok(mut parts) = cluster.client.subscribe(inbox.clone()).await else {
        return;
    };
    if cluster
        .client
        .publish_with_reply(wire::sync_subject(&replica), inbox, Vec::new().into())
        .await
        .is_err()
    {
        return;
    }
    let mut nodes = Vec::new();
    let mut received = 0u32;
    let deadline = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(deadline);
    loop {
        let message = tokio::select! {
            message = parts.next() => message,
            () = &mut deadline => None,
        };
        let Some(message) = message else {
            tracing::debug!(%replica, "a replica did not send its whole node list in time");
            return;
        };
        match wire::decode::<SyncReply>(&message.payload) {
            Ok(part) if part.part == received => {
                nodes.extend(part.nodes);
                received += 1;
                if received >= part.parts {
                    break;
                }
            }
            Ok(_) => {
                tracing::debug!(%replica, "a part of a replica's node list was lost");
                return;
            }
            Err(error) => {
                tracing::warn!(%replica, "bad node list from a replica: {error}");
                return;
            }
        }
    }
    cluster.directory.replace(&replica, nodes);
    notify(&coordinator);
}

/// Answers other replicas' requests for the nodes linked here, in parts under NATS's message
/// size limit.
async fn answer_syncs(cluster: Arc<Cluster>, coordinator: Host, mut syncs: async_nats::Subscriber) {
    while let Some(message) = syncs.next().await {
        let Some(coordinator) = coordinator.upgrade() else {
            break;
        };
        let Some(reply) = message.reply else { continue };
        let nodes: Vec<NodeUp> = coordinator
            .nodes
            .online()
            .iter()
            .map(|node| up_of(&cluster, node))
            .collect();
        for part in wire::sync_parts(nodes, cluster.max_payload() / 2) {
            let _ = cluster.client.publish(reply.clone(), part.into()).await;
        }
    }
}

/// The events of one job this replica sent to another, read from [`Cluster::open_inbox`].
struct Inbox {
    cluster: Arc<Cluster>,
    id: u64,
    /// Where the replica running the job publishes them.
    subject: String,
    /// The events, in the order they came. Ends if the reader fell too far behind (as many
    /// events or bytes waiting as a job may hold on the link: [`JOB_BUFFER`] and
    /// [`JOB_BUFFER_BYTES`]).
    ///
    /// [`JOB_BUFFER`]: super::nodes::JOB_BUFFER
    /// [`JOB_BUFFER_BYTES`]: super::nodes::JOB_BUFFER_BYTES
    receiver: bounded::Receiver<async_nats::Message>,
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.cluster
            .inboxes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// Hands each job event that arrives for this replica to its job's [`Inbox`]. A job that cannot
/// keep up loses its inbox (its stream ends with an error) rather than holding up the others.
async fn deliver_events(cluster: Arc<Cluster>, mut events: async_nats::Subscriber) {
    while let Some(message) = events.next().await {
        let Some(id) = wire::inbox_id(message.subject.as_str()) else {
            continue;
        };
        let mut inboxes = cluster
            .inboxes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let size = message.payload.len();
        if let Some(sender) = inboxes.get(&id)
            && sender.try_send(message, size).is_err()
        {
            inboxes.remove(&id);
        }
    }
}

/// Stops jobs from other replicas whose consumer went away.
async fn take_cancels(cluster: Arc<Cluster>, mut cancels: async_nats::Subscriber) {
    while let Some(message) = cancels.next().await {
        if let Ok(cancel) = wire::decode::<wire::CancelJob>(&message.payload)
            && let Some(token) = cluster
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&cancel.inbox)
        {
            token.cancel();
        }
    }
}

/// Applies club-wide changes made on other replicas (and, harmlessly, this one's own).
async fn apply_control(
    cluster: Arc<Cluster>,
    coordinator: Host,
    mut control: async_nats::Subscriber,
) {
    while let Some(message) = control.next().await {
        let Some(coordinator) = coordinator.upgrade() else {
            break;
        };
        match wire::decode::<Control>(&message.payload) {
            Ok(Control::ForgetKeys { user_id }) => coordinator.store.forget_cached_member(user_id),
            Ok(Control::CloseOperator {
                operator_id,
                handle,
            }) => {
                coordinator.nodes.close_operator(operator_id, &handle);
            }
            Ok(Control::PolicyChanged {
                operator_id,
                provider,
                policy,
            }) => {
                let key = super::nodes::NodeKey {
                    operator_id,
                    provider,
                };
                if let Some(node) = coordinator.nodes.get(&key) {
                    node.set_policy(policy);
                    coordinator.nodes.notify_changed();
                    cluster.announce(&node);
                }
            }
            Err(error) => tracing::warn!("ignoring a bad control message: {error}"),
        }
    }
}

/// Says every [`wire::BEAT`] that this replica is alive and how loaded its nodes are; drops
/// the replicas that went silent.
async fn beat(cluster: Arc<Cluster>, coordinator: Host) {
    let mut every = tokio::time::interval(wire::BEAT);
    let mut state = BeatState::default();
    loop {
        every.tick().await;
        let Some(coordinator) = coordinator.upgrade() else {
            break;
        };
        let full = beat_of(&cluster, &coordinator.nodes);
        for payload in state.next(full, cluster.max_payload() / 2) {
            if let Err(error) = cluster.client.publish(wire::BEATS, payload.into()).await {
                tracing::warn!("cannot beat: {error}");
            }
        }
        cluster.note_models_online(&coordinator.nodes);
        for gone in cluster.directory.expire() {
            tracing::warn!(replica = %gone, "a coordinator replica went silent; its nodes are offline here");
            coordinator.nodes.notify_changed();
        }
    }
}

/// Renews this replica's lease, and retires the replicas whose lease ran out and that are
/// silent on NATS too (their records in flight become `failed`).
async fn keep_lease(cluster: Arc<Cluster>, coordinator: Host) {
    let mut every = tokio::time::interval(LEASE_RENEWAL);
    loop {
        every.tick().await;
        let Some(coordinator) = coordinator.upgrade() else {
            break;
        };
        if let Err(error) = coordinator.store.renew_replica(&cluster.replica).await {
            tracing::warn!("cannot renew the replica's lease: {error}");
            continue;
        }
        let expired = match coordinator.store.expired_replicas(LEASE).await {
            Ok(expired) => expired,
            Err(error) => {
                tracing::warn!("cannot look for dead replicas: {error}");
                continue;
            }
        };
        for replica in expired {
            if replica == cluster.replica || cluster.directory.is_heard(&replica) {
                continue;
            }
            match coordinator
                .store
                .retire_replica(
                    &replica,
                    "the coordinator replica handling it stopped while it was in flight",
                )
                .await
            {
                Ok(failed) => {
                    tracing::warn!(%replica, failed, "retired a dead coordinator replica")
                }
                Err(error) => tracing::warn!(%replica, "cannot retire a dead replica: {error}"),
            }
        }
    }
}

/// Reports every [`wire::USAGE_REPORT`] what this replica's callers used of the limits, so
/// that the others charge it (limits hold club-wide).
async fn report_usage(cluster: Arc<Cluster>, coordinator: Host) {
    let mut every = tokio::time::interval(wire::USAGE_REPORT);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(coordinator) = coordinator.upgrade() else {
            break;
        };
        let usage = coordinator.limits.take_usage();
        if usage.is_empty() {
            continue;
        }
        for usage in wire::groups_under(usage, cluster.max_payload() / 2) {
            let report = wire::UsageReport {
                replica: cluster.replica.clone(),
                usage,
            };
            let Some(payload) = wire::encode_or_log("a usage report", &report) else {
                continue;
            };
            if let Err(error) = cluster.client.publish(wire::USAGE, payload.into()).await {
                tracing::warn!("cannot report usage to the cluster: {error}");
            }
        }
    }
}

/// Charges what the other replicas report of their callers' usage.
async fn charge_usage(
    cluster: Arc<Cluster>,
    coordinator: Host,
    mut reports: async_nats::Subscriber,
) {
    while let Some(message) = reports.next().await {
        let Some(coordinator) = coordinator.upgrade() else {
            break;
        };
        match wire::decode::<wire::UsageReport>(&message.payload) {
            Ok(report) if report.replica != cluster.replica => {
                coordinator
                    .limits
                    .apply_usage(&report.replica, report.usage);
            }
            Ok(_) => {}
            Err(error) => tracing::warn!("ignoring a bad usage report: {error}"),
        }
    }
}

/// Passes on the members whose cached keys this replica forgot, so that every replica does.
async fn pass_on_forgotten(cluster: Arc<Cluster>, coordinator: Host) {
    let Some(mut forgotten) = coordinator.upgrade().map(|c| c.store.forgotten_members()) else {
        return;
    };
    loop {
        match forgotten.recv().await {
            Ok(user_id) => cluster.broadcast(&Control::ForgetKeys { user_id }),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                tracing::warn!(
                    "missed some key changes to pass on; other replicas see them within the key cache's lifetime"
                );
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::UserId;

    /// Replica r1's full beat listing `loads`.
    fn full(loads: &[(UserId, &str, u32)]) -> Beat {
        super::directory::testing::beat("r1", false, loads)
    }

    fn decoded(payloads: Vec<Vec<u8>>) -> Vec<Beat> {
        payloads
            .iter()
            .map(|p| wire::decode::<Beat>(p).unwrap())
            .collect()
    }

    #[test]
    fn beats_list_everything_then_only_changes_then_everything_again() {
        let ada = UserId::new();
        let mut state = BeatState::default();
        let first = decoded(state.next(full(&[(ada, "a", 0), (ada, "b", 1)]), 1 << 20));
        assert_eq!(first.len(), 1);
        assert!(!first[0].changes_only);
        assert_eq!(first[0].nodes.len(), 2);

        let second = decoded(state.next(full(&[(ada, "a", 0), (ada, "b", 2)]), 1 << 20));
        assert!(second[0].changes_only);
        assert_eq!(second[0].total, 2);
        assert_eq!(second[0].nodes.len(), 1);
        assert_eq!(second[0].nodes[0].provider, "b");

        for _ in 2..wire::FULL_BEAT_EVERY {
            let quiet = decoded(state.next(full(&[(ada, "a", 0), (ada, "b", 2)]), 1 << 20));
            assert!(quiet[0].nodes.is_empty());
        }
        let again = decoded(state.next(full(&[(ada, "a", 0), (ada, "b", 2)]), 1 << 20));
        assert!(!again[0].changes_only);
        assert_eq!(again[0].nodes.len(), 2);
    }

    #[test]
    fn long_beats_are_split_under_the_limit() {
        let ada = UserId::new();
        let names: Vec<String> = (0..200).map(|i| format!("node-{i}")).collect();
        let loads: Vec<(UserId, &str, u32)> = names.iter().map(|n| (ada, n.as_str(), 1)).collect();
        let one = wire::encode(&full(&loads)).unwrap().len();
        let parts = decoded(BeatState::default().next(full(&loads), one / 4));
        assert!(parts.len() >= 4, "{} parts", parts.len());
        assert!(parts.iter().all(|p| p.changes_only && p.total == 200));
        assert_eq!(parts.iter().map(|p| p.nodes.len()).sum::<usize>(), 200);
        for part in &parts {
            assert!(wire::encode(part).unwrap().len() <= one / 4 + 200);
        }
    }
}
