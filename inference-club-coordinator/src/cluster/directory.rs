//! What this replica knows of the nodes linked to the others: their offers (from
//! [`NodeUp`]s), their load (from [`Beat`]s), and whether their replica is alive.
//!
//! Routing reads it without a query: it is kept fresh by messages, and a replica silent for
//! [`BEAT_EXPIRY`] is dropped with its nodes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use inference_club_core::link::ServiceLoad;
use inference_club_core::routing::Ewma;
use tokio_util::sync::CancellationToken;

use super::Cluster;
use super::wire::{BEAT_EXPIRY, Beat, NodeDown, NodeUp};
use crate::nodes::{NodeKey, NodeOffer, NodeSlot};
use crate::store::ProviderPolicy;

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
    /// It takes calls, through its replica ([`NodeUp::takes_calls`]).
    takes_calls: bool,
    /// This replica's part in the cluster, through which jobs reach it.
    cluster: Weak<Cluster>,
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
    fn new(up: NodeUp, gone: CancellationToken, cluster: Weak<Cluster>) -> Self {
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
            takes_calls: up.takes_calls,
            cluster,
        }
    }

    /// Whether it takes calls (endpoints other than chat): it speaks link protocol 2 and its
    /// replica relays calls.
    pub fn takes_calls(&self) -> bool {
        self.takes_calls
    }

    /// This replica's part in the cluster (`None` once it is gone, or in unit tests of the
    /// directory alone).
    pub fn cluster(&self) -> Option<Arc<Cluster>> {
        self.cluster.upgrade()
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

    /// When it linked.
    pub fn connected_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.connected_at
    }

    /// Whether it left the directory.
    pub fn is_gone(&self) -> bool {
        self.gone.is_cancelled()
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
    /// Which run of it this is (0: not known yet).
    incarnation: u64,
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
            incarnation: 0,
            heard: Instant::now(),
            draining: false,
            nodes: HashMap::new(),
            gone: CancellationToken::new(),
            synced: None,
        }
    }

    /// Starts over when `incarnation` is a new run of the replica (it restarted under the same
    /// id): the old run's nodes and jobs are gone.
    /// Returns whether it started over (its nodes are gone).
    fn meet(&mut self, incarnation: u64) -> bool {
        if incarnation == 0 || incarnation == self.incarnation {
            return false;
        }
        let restarted = self.incarnation != 0;
        if restarted {
            self.gone.cancel();
            self.gone = CancellationToken::new();
            self.nodes.clear();
            self.synced = None;
            self.draining = false;
        }
        self.incarnation = incarnation;
        restarted
    }

    /// Returns whether the node was listed.
    fn remove(&mut self, key: &NodeKey) -> bool {
        match self.nodes.remove(key) {
            Some(node) => {
                node.gone.cancel();
                true
            }
            None => false,
        }
    }
}

/// The other replicas and their nodes.
#[derive(Debug, Default)]
pub struct Directory {
    replicas: RwLock<HashMap<String, Replica>>,
    /// Counts every change of which nodes are routable or what they offer (for
    /// [`ModelIndex`](crate::index::ModelIndex)).
    generation: AtomicU64,
    /// The cluster it belongs to (given to its nodes, so that jobs can reach them).
    cluster: Weak<Cluster>,
}

/// How often at most one replica asks another for its whole node list.
const SYNC_EVERY: Duration = Duration::from_secs(1);

impl Directory {
    /// The directory of `cluster`'s replica.
    pub(super) fn of(cluster: Weak<Cluster>) -> Self {
        Self {
            cluster,
            ..Self::default()
        }
    }

    /// Changes with every node that comes, goes or changes its offer, and every replica that
    /// starts or stops draining: equal values mean the same routable nodes and offers.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Notes a change (called under the write lock, after the change).
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

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

    /// Every node of the other replicas, those of draining replicas too (they are about to
    /// link elsewhere).
    pub fn all_nodes(&self) -> Vec<Arc<PeerNode>> {
        self.replicas
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
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

    /// Forgets a node that its replica no longer holds (a job sent to it found nobody).
    pub fn forget(&self, key: &NodeKey, replica: &str) {
        if let Some(entry) = self
            .replicas
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(replica)
            && entry.remove(key)
        {
            self.changed();
        }
    }

    /// Marks `replica` as draining until its next beat says otherwise.
    pub fn mark_draining(&self, replica: &str) {
        if let Some(entry) = self
            .replicas
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(replica)
            && !entry.draining
        {
            entry.draining = true;
            self.changed();
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
        replica.meet(up.incarnation);
        replica.heard = Instant::now();
        match replica.nodes.get(&key) {
            Some(node)
                if node.connected_at == up.connected_at && node.takes_calls == up.takes_calls =>
            {
                node.set_offer(up.manifest, up.policy);
            }
            _ => {
                let node = Arc::new(PeerNode::new(
                    up,
                    replica.gone.child_token(),
                    self.cluster.clone(),
                ));
                if let Some(old) = replica.nodes.insert(key, node) {
                    old.gone.cancel();
                }
            }
        }
        self.changed();
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
        if let Some(replica) = replicas.get_mut(&down.replica)
            && replica.remove(&key)
        {
            self.changed();
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
        let mut changed = replica.meet(beat.incarnation) || replica.draining != beat.draining;
        replica.heard = Instant::now();
        replica.draining = beat.draining;
        if !beat.changes_only {
            // A full list: nodes it does not name are gone.
            let listed: std::collections::HashSet<(crate::store::UserId, &str)> = beat
                .nodes
                .iter()
                .map(|n| (n.operator_id, n.provider.as_str()))
                .collect();
            let stale: Vec<NodeKey> = replica
                .nodes
                .keys()
                .filter(|k| !listed.contains(&(k.operator_id, k.provider.as_str())))
                .cloned()
                .collect();
            for key in stale {
                changed |= replica.remove(&key);
            }
        }
        if changed {
            self.changed();
        }
        let mut matches = usize::try_from(beat.total).is_ok_and(|t| t == replica.nodes.len())
            && (beat.changes_only || beat.nodes.len() == replica.nodes.len());
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
        let keys: std::collections::HashSet<NodeKey> = nodes.iter().map(NodeUp::key).collect();
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
                .filter(|k| !keys.contains(*k))
                .cloned()
                .collect();
            let mut changed = false;
            for key in stale {
                changed |= entry.remove(&key);
            }
            if changed {
                self.changed();
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
        if !gone.is_empty() {
            self.changed();
        }
        gone
    }
}

/// Nodes for unit tests elsewhere (routing, the model index).
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::cluster::wire::NodeLoad;
    use crate::fleet::OnlineNode;
    use crate::store::{ProviderPolicy, UserId};

    /// A full beat of `replica` listing `nodes` (operator, provider, jobs in flight).
    pub(crate) fn beat(replica: &str, draining: bool, nodes: &[(UserId, &str, u32)]) -> Beat {
        Beat {
            replica: replica.into(),
            incarnation: 1,
            draining,
            total: u32::try_from(nodes.len()).unwrap(),
            changes_only: false,
            nodes: nodes
                .iter()
                .map(|(operator_id, provider, in_flight)| NodeLoad {
                    operator_id: *operator_id,
                    provider: (*provider).into(),
                    in_flight: *in_flight,
                    ttft_ms: None,
                    load: Vec::new(),
                })
                .collect(),
        }
    }

    /// `ada`'s node on the replica `r2` serving `models` (`(served id, hf)`) with
    /// `max_concurrent`, added to `directory`.
    pub(crate) fn peer(
        directory: &Directory,
        provider: &str,
        models: &[(&str, Option<&str>)],
        max_concurrent: Option<u32>,
    ) -> OnlineNode {
        operated_peer(directory, "ada", provider, models, max_concurrent)
    }

    /// The same, run by `operator`.
    pub(crate) fn operated_peer(
        directory: &Directory,
        operator: &str,
        provider: &str,
        models: &[(&str, Option<&str>)],
        max_concurrent: Option<u32>,
    ) -> OnlineNode {
        let models: Vec<_> = models
            .iter()
            .map(|(id, hf)| serde_json::json!({"id": id, "hf": hf}))
            .collect();
        let operator_id = UserId::new();
        directory.up(NodeUp {
            replica: "r2".into(),
            incarnation: 1,
            operator_id,
            operator: operator.into(),
            provider: provider.into(),
            manifest: serde_json::from_value(serde_json::json!({
                "schema_version": 1,
                "agent": {"name": provider},
                "hosts": [{"id": "h", "services": [{"name": "s", "engine": "vllm",
                    "url": "http://127.0.0.1:1", "max_concurrent": max_concurrent,
                    "models": models}]}]
            }))
            .unwrap(),
            policy: ProviderPolicy::default(),
            connected_at: chrono::Utc::now(),
            takes_calls: false,
        });
        let key = NodeKey {
            operator_id,
            provider: provider.into(),
        };
        OnlineNode::Peer(directory.get(&key).unwrap())
    }
}

#[cfg(test)]
mod tests {
    use super::testing::beat;
    use super::*;
    use crate::store::UserId;

    fn up(replica: &str, operator_id: UserId, provider: &str) -> NodeUp {
        NodeUp {
            replica: replica.into(),
            incarnation: 1,
            operator_id,
            operator: "ada".into(),
            provider: provider.into(),
            manifest: serde_json::from_value(serde_json::json!({
                "schema_version": 1,
                "agent": {"name": provider},
                "hosts": [{"id": "h", "services": [{"name": "s", "engine": "vllm",
                    "url": "http://127.0.0.1:1", "max_concurrent": 4, "models": [{"id": "m"}]}]}]
            }))
            .unwrap(),
            policy: ProviderPolicy::default(),
            connected_at: chrono::Utc::now(),
            takes_calls: false,
        }
    }

    #[test]
    fn the_generation_moves_when_routable_nodes_change_not_with_their_load() {
        let directory = Directory::default();
        let ada = UserId::new();
        let mut last = directory.generation();
        let mut moved = |what: &str, expected: bool| {
            let now = directory.generation();
            assert_eq!(now != last, expected, "{what}");
            last = now;
        };
        directory.up(up("r1", ada, "box"));
        moved("a node came", true);
        directory.beat(beat("r1", false, &[(ada, "box", 3)]));
        moved("a beat with its load", false);
        directory.beat(beat("r1", true, &[(ada, "box", 3)]));
        moved("its replica is draining", true);
        directory.beat(beat("r1", true, &[(ada, "box", 1)]));
        moved("still draining", false);
        directory.mark_draining("r1");
        moved("already draining", false);
        directory.beat(beat("r1", false, &[]));
        moved("a full beat without it: gone, and no longer draining", true);
        directory.up(up("r1", ada, "box"));
        directory.down(&NodeDown {
            replica: "r1".into(),
            operator_id: ada,
            provider: "box".into(),
        });
        moved("up and down", true);
        directory.down(&NodeDown {
            replica: "r1".into(),
            operator_id: ada,
            provider: "box".into(),
        });
        moved("down again: nothing to remove", false);
    }

    #[test]
    fn nodes_come_go_and_move_between_replicas() {
        let directory = Directory::default();
        let ada = UserId::new();
        directory.up(up("r1", ada, "box"));
        let node = directory.nodes().pop().unwrap();
        assert_eq!(node.replica, "r1");
        assert_eq!(node.offer().capacity, Some(4));

        // It links again to r2 (r1 died or drained): r1's entry goes, its jobs see it gone.
        directory.up(up("r2", ada, "box"));
        assert!(node.is_gone());
        let moved = directory.nodes();
        assert_eq!(moved.len(), 1);
        assert_eq!(moved[0].replica, "r2");

        directory.down(&NodeDown {
            replica: "r2".into(),
            operator_id: ada,
            provider: "box".into(),
        });
        assert!(directory.nodes().is_empty());
        assert!(moved[0].is_gone());
    }

    #[test]
    fn beats_carry_load_and_draining_and_ask_for_a_sync_when_they_disagree() {
        let directory = Directory::default();
        let ada = UserId::new();
        directory.up(up("r1", ada, "box"));
        assert!(!directory.beat(beat("r1", false, &[(ada, "box", 3)])));
        let node = directory.get(&NodeKey {
            operator_id: ada,
            provider: "box".into(),
        });
        assert_eq!(node.as_ref().unwrap().in_flight(), 3);

        // A node this replica never heard of: ask for the list (once a second at most).
        assert!(directory.beat(beat("r1", false, &[(ada, "box", 3), (ada, "other", 0)])));
        assert!(!directory.beat(beat("r1", false, &[(ada, "box", 3), (ada, "other", 0)])));

        // A full refusal counts the node as full until the next beat.
        let node = node.unwrap();
        node.mark_full();
        assert_eq!(node.in_flight(), 4);
        directory.beat(beat("r1", false, &[(ada, "box", 1)]));
        assert_eq!(node.in_flight(), 1);

        // A draining replica's nodes are not routable, but still known.
        directory.beat(beat("r1", true, &[(ada, "box", 1)]));
        assert!(directory.nodes().is_empty());
        assert!(!node.is_gone());
        assert!(directory.is_heard("r1"));
    }

    #[test]
    fn a_replica_restarted_under_the_same_id_starts_over() {
        let directory = Directory::default();
        let ada = UserId::new();
        directory.up(up("r1", ada, "box"));
        let old = directory.nodes().pop().unwrap();
        let jobs_through_it = directory.replica_gone("r1");

        // Its new run beats with a new incarnation and no nodes yet.
        let mut fresh = beat("r1", false, &[]);
        fresh.incarnation = 2;
        directory.beat(fresh);
        assert!(directory.nodes().is_empty());
        assert!(old.is_gone());
        assert!(jobs_through_it.is_cancelled());
        assert!(!directory.replica_gone("r1").is_cancelled());
    }

    #[test]
    fn a_full_beat_drops_the_nodes_it_does_not_name() {
        let directory = Directory::default();
        let ada = UserId::new();
        directory.up(up("r1", ada, "a"));
        directory.up(up("r1", ada, "b"));
        directory.beat(beat("r1", false, &[(ada, "b", 0)]));
        let names: Vec<String> = directory
            .nodes()
            .iter()
            .map(|n| n.key.provider.clone())
            .collect();
        assert_eq!(names, ["b"]);
        // A job that found nobody behind a node forgets it.
        directory.forget(
            &NodeKey {
                operator_id: ada,
                provider: "b".into(),
            },
            "r1",
        );
        assert!(directory.nodes().is_empty());
    }

    #[test]
    fn a_sync_replaces_the_list() {
        let directory = Directory::default();
        let ada = UserId::new();
        directory.up(up("r1", ada, "a"));
        directory.up(up("r1", ada, "b"));
        directory.replace("r1", vec![up("r1", ada, "b"), up("r1", ada, "c")]);
        let mut names: Vec<String> = directory
            .nodes()
            .iter()
            .map(|n| n.key.provider.clone())
            .collect();
        names.sort();
        assert_eq!(names, ["b", "c"]);
    }
}
