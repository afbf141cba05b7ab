//! A node routing may choose, wherever it is linked.

use std::sync::Arc;
use std::time::Duration;

use inference_club_core::openai::{ChatCompletionRequest, ConsumerEvents};
use inference_club_core::provider::{
    Call, CallStream, ChunkStream, Provider, ProviderError, RequestContext,
};

use crate::cluster::{Cluster, PeerNode};
use crate::nodes::{LiveNode, NodeKey, NodeOffer, NodeSlot, RemoteNode, SendError};
use crate::streamed::{self, StreamedAnswer};

/// A node routing may choose: linked to this coordinator, or (in a cluster) to another
/// replica. Jobs reach the first over its link ([`RemoteNode`]) and the second through the
/// replica holding its link ([`PeerNode::chat`], [`PeerNode::call`]): the two hand-offs behind
/// one interface.
#[derive(Debug, Clone)]
pub(crate) enum OnlineNode {
    /// Linked here.
    Local(Arc<LiveNode>),
    /// Linked to another replica.
    Peer(Arc<PeerNode>),
}

impl OnlineNode {
    /// Its identity.
    pub fn key(&self) -> &NodeKey {
        match self {
            Self::Local(node) => &node.key,
            Self::Peer(node) => &node.key,
        }
    }

    /// Its operator's handle.
    pub fn operator(&self) -> &str {
        match self {
            Self::Local(node) => &node.operator,
            Self::Peer(node) => &node.operator,
        }
    }

    /// What it offers now.
    pub fn offer(&self) -> Arc<NodeOffer> {
        match self {
            Self::Local(node) => node.offer(),
            Self::Peer(node) => node.offer(),
        }
    }

    /// Jobs running on it, as far as this coordinator knows.
    pub fn in_flight(&self) -> u32 {
        match self {
            Self::Local(node) => node.in_flight(),
            Self::Peer(node) => node.in_flight(),
        }
    }

    /// Counts one more job on it until the slot is dropped.
    pub fn reserve(&self) -> NodeSlot {
        match self {
            Self::Local(node) => node.reserve(),
            Self::Peer(node) => node.reserve(),
        }
    }

    /// Its recent time to first token.
    pub fn recent_ttft(&self) -> Option<Duration> {
        match self {
            Self::Local(node) => node.recent_ttft(),
            Self::Peer(node) => node.recent_ttft(),
        }
    }

    /// Records a time to first token.
    pub fn record_ttft(&self, sample: Duration) {
        match self {
            Self::Local(node) => node.record_ttft(sample),
            Self::Peer(node) => node.record_ttft(sample),
        }
    }

    /// Whether it went offline.
    pub fn is_closed(&self) -> bool {
        match self {
            Self::Local(node) => node.is_closed(),
            Self::Peer(node) => node.is_gone(),
        }
    }

    /// When it linked.
    pub fn connected_at(&self) -> chrono::DateTime<chrono::Utc> {
        match self {
            Self::Local(node) => node.connected_at(),
            Self::Peer(node) => node.connected_at(),
        }
    }

    /// How long since it (or, for a peer, its replica) was last heard from.
    pub fn silent_for(&self) -> Duration {
        match self {
            Self::Local(node) => node.silent_for(),
            Self::Peer(node) => node.silent_for(),
        }
    }

    /// Whether it takes calls (endpoints other than chat): it speaks protocol 2, and, when
    /// linked to another replica, that replica relays calls (it said so when it announced the
    /// node).
    pub fn takes_calls(&self) -> bool {
        match self {
            Self::Local(node) => node.takes_calls(),
            Self::Peer(node) => node.takes_calls(),
        }
    }

    /// Sends it a call (see [`OnlineNode::takes_calls`]): over its link, or through the replica
    /// holding it.
    pub async fn call(&self, call: Call, context: RequestContext) -> Result<CallStream, SendError> {
        match self {
            Self::Local(node) => Ok(RemoteNode(node.clone()).call(call, context).await?),
            Self::Peer(node) => match node.cluster() {
                Some(cluster) => node.call(&cluster, call, context).await,
                None => Err(SendError::Failed(ProviderError::Unavailable {
                    status: None,
                    message: format!("node {} is linked to another replica", node.key.provider),
                })),
            },
        }
    }

    /// Sends it a job.
    pub async fn chat(
        &self,
        cluster: Option<&Arc<Cluster>>,
        request: ChatCompletionRequest,
        context: RequestContext,
    ) -> Result<ChunkStream, SendError> {
        match (self, cluster) {
            (Self::Local(node), _) => Ok(RemoteNode(node.clone()).chat(request, context).await?),
            (Self::Peer(node), Some(cluster)) => node.chat(cluster, request, context).await,
            (Self::Peer(node), None) => Err(SendError::Failed(ProviderError::Unavailable {
                status: None,
                message: format!("node {} is linked to another replica", node.key.provider),
            })),
        }
    }

    /// Sends it a streamed chat job, its consumer's events written as `events` says: by the
    /// node over its own link, here for one linked to another replica (which relays chunks).
    pub async fn chat_events(
        &self,
        cluster: Option<&Arc<Cluster>>,
        request: ChatCompletionRequest,
        context: RequestContext,
        events: ConsumerEvents,
    ) -> Result<StreamedAnswer, SendError> {
        match self {
            Self::Local(node) => Ok(RemoteNode(node.clone())
                .chat_events(request, context, events)
                .await?),
            Self::Peer(_) => {
                let chunks = self.chat(cluster, request, context).await?;
                Ok(streamed::from_chunks(chunks, events))
            }
        }
    }
}
