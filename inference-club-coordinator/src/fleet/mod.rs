//! The club's online nodes, wherever they are linked: here ([`NodeRegistry`]), or in a cluster to
//! another replica (the cluster's directory). Routing, the model catalogue and the providers'
//! pages read them from here; an operator's policy change and an account deletion reach them
//! from here.

pub(crate) mod catalog;
mod index;
mod online;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub(crate) use self::online::OnlineNode;
use crate::cluster::{self, Cluster};
use crate::nodes::{NodeKey, NodeRegistry};
use crate::store::{ProviderPolicy, Store, UserId};

/// Every node routing may choose, and the index of which serves what.
#[derive(Debug)]
pub(crate) struct Fleet {
    /// The nodes linked to this coordinator.
    pub nodes: Arc<NodeRegistry>,
    cluster: Option<Arc<Cluster>>,
    index: index::ModelIndex,
    draining: AtomicBool,
}

impl Fleet {
    /// The nodes of `nodes`, and in a cluster those of the other replicas too.
    pub fn new(nodes: Arc<NodeRegistry>, cluster: Option<Arc<Cluster>>) -> Self {
        Self {
            nodes,
            cluster,
            index: index::ModelIndex::default(),
            draining: AtomicBool::new(false),
        }
    }

    /// This replica's part in a cluster, if it runs as one.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// Every node routing may choose: those linked here, and (in a cluster) those linked to
    /// the other replicas.
    pub fn online_nodes(&self) -> Vec<OnlineNode> {
        let mut nodes: Vec<OnlineNode> = self
            .nodes
            .online()
            .into_iter()
            .map(OnlineNode::Local)
            .collect();
        if let Some(cluster) = &self.cluster {
            let here: HashSet<NodeKey> = nodes.iter().map(|n| n.key().clone()).collect();
            nodes.extend(
                cluster
                    .directory
                    .nodes()
                    .into_iter()
                    .filter(|n| !here.contains(&n.key))
                    .map(OnlineNode::Peer),
            );
        }
        nodes
    }

    /// The online nodes serving `model` (by served id or Hugging Face id, in any case),
    /// wherever they are linked: what dispatch ranks (see [`index`]).
    pub fn nodes_for(&self, model: &str) -> Arc<[OnlineNode]> {
        let generations = (
            self.nodes.generation(),
            self.cluster
                .as_ref()
                .map_or(0, |c| c.directory.generation()),
        );
        self.index
            .nodes_for(generations, model, || self.online_nodes())
    }

    /// The node with this identity, wherever it is linked.
    pub fn find_node(&self, key: &NodeKey) -> Option<OnlineNode> {
        if let Some(node) = self.nodes.get(key) {
            return Some(OnlineNode::Local(node));
        }
        self.cluster
            .as_ref()?
            .directory
            .get(key)
            .filter(|n| !n.is_gone())
            .map(OnlineNode::Peer)
    }

    /// Puts an operator's new policy for a node in force, wherever the node is linked.
    pub fn set_node_policy(&self, key: &NodeKey, policy: ProviderPolicy) {
        if let Some(node) = self.nodes.get(key) {
            node.set_policy(policy.clone());
            self.nodes.notify_changed();
            if let Some(cluster) = &self.cluster {
                cluster.announce(&node);
            }
        } else if let Some(cluster) = &self.cluster {
            cluster.broadcast(&cluster::wire::Control::PolicyChanged {
                operator_id: key.operator_id,
                provider: key.provider.clone(),
                policy,
            });
        }
    }

    /// Closes every link of an operator who deleted their account, on every replica (see
    /// [`NodeRegistry::close_operator`]). Returns how many links were closed here.
    pub fn close_operator(&self, operator_id: UserId, handle: &str) -> usize {
        if let Some(cluster) = &self.cluster {
            cluster.broadcast(&cluster::wire::Control::CloseOperator {
                operator_id,
                handle: handle.to_owned(),
            });
        }
        self.nodes.close_operator(operator_id, handle)
    }

    /// Whether, in a cluster, a request for `model` that no node serves now should wait for
    /// one (see [`Cluster::may_relink`]).
    pub fn may_relink(&self, model: &str) -> bool {
        self.cluster.as_ref().is_some_and(|c| c.may_relink(model))
    }

    /// Whether this coordinator is shutting down (it takes no new node links).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// The first half of a graceful stop: no new links, and (in a cluster) the other replicas
    /// route nothing new to the nodes linked here. Call before the HTTP server stops accepting.
    pub async fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
        if let Some(cluster) = &self.cluster {
            cluster.begin_drain(&self.nodes).await;
        }
    }

    /// The second half: waits up to `within` for the jobs running on the nodes linked here to
    /// end, closes the links (the nodes link again elsewhere), and (in a cluster) leaves it:
    /// records still in flight here become `failed`, the lease is given up.
    pub async fn finish_drain(&self, within: Duration, store: &Store) {
        let deadline = tokio::time::Instant::now() + within;
        while self.nodes.online().iter().any(|n| n.in_flight() > 0)
            && tokio::time::Instant::now() < deadline
        {
            tokio::select! {
                () = self.nodes.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        for node in self.nodes.online() {
            self.nodes.remove(&node);
        }
        if let Some(cluster) = &self.cluster {
            cluster.leave(&self.nodes, store).await;
        }
    }
}
