//! What this replica knows of the nodes linked to the others: their offers (from
//! [`NodeUp`]s), their load (from [`Beat`]s), and whether their replica is alive.
//!
//! Routing reads it without a query: it is kept fresh by messages, and a replica silent for
//! [`BEAT_EXPIRY`] is dropped with its nodes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use inference_club_core::link::ServiceLoad;
use inference_club_core::routing::Ewma;
use tokio_util::sync::CancellationToken;

use super::wire::{BEAT_EXPIRY, Beat, NodeDown, NodeUp};
use crate::coordinator::nodes::{NodeKey, NodeOffer, NodeSlot};
use crate::coordinator::store::ProviderPolicy;

/// A node linked to another replica, as routing here sees it.
pub struct PeerNode {
    /// Its identity.
    pub key: NodeKey,
    /// Its operator's handle.
    pub operator: String,
    /// The replica holding its link.
    pub replica: String,
    offer: RwLock<Arc<NodeOffer>>,
    /// Jobs on it, as its replica last said.
    reported: AtomicU32,
    /// Jobs this replica runs on it now.
    mine: Arc<AtomicU32>,
    ttft: Mutex<Ewma>,
    load: Mutex<Vec<ServiceLoad>>,
    /// When its replica last said how it is.
    heard: Mutex<Instant>,
    /// Until when it counts as full (its replica refused a job for lack of room).
    full_until: Mutex<Option<Instant>>,
    connected_at: chrono::DateTime<chrono::Utc>,
    /// Cancelled when it leaves the directory (its link closed, or its replica is gone).
    gone: CancellationToken,
}

impl std::fmt::Debug for PeerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerNode")
            .field("operator", &self.operator)
            .field("provider", &self.key.provider)
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

impl PeerNode {
    fn new(up: NodeUp, gone: CancellationToken) -> Self {
        let key = up.key();
        Self {
            key,
            operator: up.operator,
            replica: up.replica,
            offer: RwLock::new(Arc::new(NodeOffer::new(up.manifest, up.policy))),
            reported: AtomicU32::new(0),
            mine: Arc::new(AtomicU32::new(0)),
            ttft: Mutex::new(Ewma::default()),
            load: Mutex::new(Vec::new()),
            full_until: Mutex::new(None),
            heard: Mutex::new(Instant::now()),
            connected_at: up.connected_at,
            gone,
        }
    }

    /// What it offers.
    pub fn offer(&self) -> Arc<NodeOffer> {
        self.offer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_offer(
        &self,
        manifest: inference_club_core::manifest::ServiceManifest,
        policy: ProviderPolicy,
    ) {
        *self.offer.write().unwrap_or_else(PoisonError::into_inner) =
            Arc::new(NodeOffer::new(manifest, policy));
    }

    /// Jobs on it as far as this replica knows: the more of what its replica last said and what
    /// runs from here; its whole capacity while it counts as full.
    pub fn in_flight(&self) -> u32 {
        let full = self
            .full_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|until| Instant::now() < until);
        if full && let Some(capacity) = self.offer().capacity {
            return capacity;
        }
        self.reported
            .load(Ordering::Acquire)
            .max(self.mine.load(Ordering::Acquire))
    }

    /// Counts one more job from here until the slot is dropped.
    pub fn reserve(&self) -> NodeSlot {
        NodeSlot::take(&self.mine)
    }

    /// Its replica refused a job for lack of room: it counts as full until the next beat says
    /// otherwise (or a second passes).
    pub fn mark_full(&self) {
        *self
            .full_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) =
            Some(Instant::now() + Duration::from_secs(1));
    }

    /// Its recent time to first token.
    pub fn recent_ttft(&self) -> Option<Duration> {
        self.ttft
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .value()
    }

    /// Records a time to first token seen from here.
    pub fn record_ttft(&self, sample: Duration) {
        self.ttft
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .update(sample);
    }

    /// The load it last reported.
    pub fn reported_load(&self) -> Vec<ServiceLoad> {
        self.load
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// When it linked.
    pub fn connected_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.connected_at
    }

    /// Whether it left the directory.
    pub fn is_gone(&self) -> bool {
        self.gone.is_cancelled()
    }

    /// Cancelled when it leaves the directory.
    pub fn gone(&self) -> &CancellationToken {
        &self.gone
    }

    /// How long since its replica last said how it is.
    pub fn silent_for(&self) -> Duration {
        self.heard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed()
    }

    fn apply_beat(&self, in_flight: u32, ttft: Option<Duration>, load: Vec<ServiceLoad>) {
        *self.heard.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.reported.store(in_flight, Ordering::Release);
        *self
            .full_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        if let Some(ttft) = ttft {
            self.record_ttft(ttft);
        }
        *self.load.lock().unwrap_or_else(PoisonError::into_inner) = load;
    }
}

/// One other replica.
#[derive(Debug)]
struct Replica {
    heard: Instant,
    draining: bool,
    nodes: HashMap<NodeKey, Arc<PeerNode>>,
    /// Cancelled when the replica is gone.
    gone: CancellationToken,
    /// When this replica last asked it for its nodes.
    synced: Option<Instant>,
}

impl Replica {
    fn new() -> Self {
        Self {
            heard: Instant::now(),
            draining: false,
            nodes: HashMap::new(),
            gone: CancellationToken::new(),
            synced: None,
        }
    }

    fn remove(&mut self, key: &NodeKey) {
        if let Some(node) = self.nodes.remove(key) {
            node.gone.cancel();
        }
    }
}

/// The other replicas and their nodes.
#[derive(Debug, Default)]
pub struct Directory {
    replicas: RwLock<HashMap<String, Replica>>,
}

/// How often at most one replica asks another for its whole node list.
const SYNC_EVERY: Duration = Duration::from_secs(1);

impl Directory {
    /// Every routable node of the other replicas (not those of a draining replica).
    pub fn nodes(&self) -> Vec<Arc<PeerNode>> {
        self.replicas
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|r| !r.draining)
            .flat_map(|r| r.nodes.values().cloned())
            .collect()
    }

    /// The node with this identity, on whichever other replica.
    pub fn get(&self, key: &NodeKey) -> Option<Arc<PeerNode>> {
        self.replicas
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .find_map(|r| r.nodes.get(key).cloned())
    }

    /// Cancelled when `replica` is gone (known or not yet: it counts as heard from now).
    pub fn replica_gone(&self, replica: &str) -> CancellationToken {
        let mut replicas = self
            .replicas
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        replicas
            .entry(replica.to_owned())
            .or_insert_with(Replica::new)
            .gone
            .clone()
    }

    /// Marks `replica` as draining until its next beat says otherwise.
    pub fn mark_draining(&self, replica: &str) {
        if let Some(entry) = self
            .replicas
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(replica)
        {
            entry.draining = true;
        }
    }

    /// Whether `replica` was heard from within [`BEAT_EXPIRY`].
    pub fn is_heard(&self, replica: &str) -> bool {
        self.replicas
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(replica)
            .is_some_and(|r| r.heard.elapsed() <= BEAT_EXPIRY)
    }

    /// How many other replicas are alive.
    pub fn replicas(&self) -> usize {
        self.replicas
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// A node linked (or changed its offer) on another replica. It leaves any other replica's
    /// list (it moved).
    pub fn up(&self, up: NodeUp) {
        let key = up.key();
        let mut replicas = self
            .replicas
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for (id, replica) in replicas.iter_mut() {
            if *id != up.replica {
                replica.remove(&key);
            }
        }
        let replica = replicas
            .entry(up.replica.clone())
            .or_insert_with(Replica::new);
        replica.heard = Instant::now();
        match replica.nodes.get(&key) {
            Some(node) if node.connected_at == up.connected_at => {
                node.set_offer(up.manifest, up.policy);
            }
            _ => {
                let node = Arc::new(PeerNode::new(up, replica.gone.child_token()));
                if let Some(old) = replica.nodes.insert(key, node) {
                    old.gone.cancel();
                }
            }
        }
    }

    /// A node's link to another replica closed.
    pub fn down(&self, down: &NodeDown) {
        let key = NodeKey {
            operator_id: down.operator_id,
            provider: down.provider.clone(),
        };
        let mut replicas = self
            .replicas
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(replica) = replicas.get_mut(&down.replica) {
            replica.remove(&key);
        }
    }

    /// A replica's beat. Returns true when its node list differs from what is known here (a
    /// message was missed, or this replica just started): the caller then asks it for the list
    /// ([`Directory::replace`]), at most every second.
    pub fn beat(&self, beat: Beat) -> bool {
        let mut replicas = self
            .replicas
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let replica = replicas
            .entry(beat.replica.clone())
            .or_insert_with(Replica::new);
        replica.heard = Instant::now();
        replica.draining = beat.draining;
        let mut matches = beat.nodes.len() == replica.nodes.len();
        for load in beat.nodes {
            let key = NodeKey {
                operator_id: load.operator_id,
                provider: load.provider,
            };
            match replica.nodes.get(&key) {
                Some(node) => node.apply_beat(
                    load.in_flight,
                    load.ttft_ms.map(Duration::from_millis),
                    load.load,
                ),
                None => matches = false,
            }
        }
        if matches || replica.synced.is_some_and(|at| at.elapsed() < SYNC_EVERY) {
            return false;
        }
        replica.synced = Some(Instant::now());
        true
    }

    /// Replaces what is known of `replica`'s nodes by its own list.
    pub fn replace(&self, replica: &str, nodes: Vec<NodeUp>) {
        let keys: Vec<NodeKey> = nodes.iter().map(NodeUp::key).collect();
        for up in nodes.into_iter().filter(|up| up.replica == replica) {
            self.up(up);
        }
        let mut replicas = self
            .replicas
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = replicas.get_mut(replica) {
            let stale: Vec<NodeKey> = entry
                .nodes
                .keys()
                .filter(|k| !keys.contains(k))
                .cloned()
                .collect();
            for key in stale {
                entry.remove(&key);
            }
        }
    }

    /// Drops the replicas not heard from within [`BEAT_EXPIRY`], with their nodes; returns
    /// their ids.
    pub fn expire(&self) -> Vec<String> {
        let mut replicas = self
            .replicas
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let gone: Vec<String> = replicas
            .iter()
            .filter(|(_, r)| r.heard.elapsed() > BEAT_EXPIRY)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            if let Some(replica) = replicas.remove(id) {
                replica.gone.cancel();
            }
        }
        gone
    }
}
