//! Prometheus metrics (`GET /metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The labels of a finished request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The model as routed (lower-case; a name, or Hugging Face id, that a node's manifest
    /// declares), or `none` when no node was tried. Neither the name a consumer gave a model no
    /// node serves nor the engine's name for the model is used: either would be unbounded.
    pub model: String,
    /// `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// `stream` or `whole`.
    pub mode: String,
}

/// The coordinator's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Inference requests finished, by status and mode.
    pub requests: Family<RequestLabels, Counter>,
    /// Seconds from acceptance to the first output.
    pub time_to_first_token: Histogram,
    /// Seconds from acceptance to the end.
    pub latency: Histogram,
    /// Attempts that failed before output and were retried on another node.
    pub failovers: Counter,
    /// Requests that found every node full and waited.
    pub queued: Counter,
    /// Nodes linked now.
    pub nodes_online: Gauge,
    /// Requests waiting for a node with room now.
    pub queue_depth: Gauge,
    /// Final record saves the database refused for a passing reason, being tried again now.
    pub deferred_saves: Gauge,
    /// Tasks alive in the coordinator's async runtime now (a leak shows as steady growth).
    pub runtime_tasks: Gauge,
    /// In a cluster: the other replicas heard from lately.
    pub cluster_replicas: Gauge,
    /// In a cluster: nodes linked to the other replicas that routing here sees.
    pub cluster_peer_nodes: Gauge,
    /// In a cluster: jobs from other replicas running on the nodes linked here now.
    pub cluster_relayed_jobs: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("club");
        let requests = Family::<RequestLabels, Counter>::default();
        let time_to_first_token = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let latency = Histogram::new(exponential_buckets(0.005, 2.0, 16));
        let failovers = Counter::default();
        let queued = Counter::default();
        let nodes_online = Gauge::default();
        let queue_depth = Gauge::default();
        let deferred_saves = Gauge::default();
        let runtime_tasks = Gauge::default();
        let cluster_replicas = Gauge::default();
        let cluster_peer_nodes = Gauge::default();
        let cluster_relayed_jobs = Gauge::default();
        registry.register(
            "cluster_replicas",
            "Other coordinator replicas heard from lately (cluster mode)",
            cluster_replicas.clone(),
        );
        registry.register(
            "cluster_peer_nodes",
            "Nodes linked to other replicas that routing here sees (cluster mode)",
            cluster_peer_nodes.clone(),
        );
        registry.register(
            "cluster_relayed_jobs",
            "Jobs from other replicas running on the nodes linked here (cluster mode)",
            cluster_relayed_jobs.clone(),
        );
        registry.register("requests", "Inference requests finished", requests.clone());
        registry.register(
            "time_to_first_token_seconds",
            "Seconds from acceptance to the first output",
            time_to_first_token.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Seconds from acceptance to the end",
            latency.clone(),
        );
        registry.register(
            "failovers",
            "Attempts that failed before output and were retried elsewhere",
            failovers.clone(),
        );
        registry.register(
            "queued",
            "Requests that waited for capacity",
            queued.clone(),
        );
        registry.register("nodes_online", "Nodes linked now", nodes_online.clone());
        registry.register(
            "queue_depth",
            "Requests waiting for a node with room",
            queue_depth.clone(),
        );
        registry.register(
            "record_saves_deferred",
            "Final record saves being tried again after the database refused them",
            deferred_saves.clone(),
        );
        registry.register(
            "runtime_tasks",
            "Tasks alive in the async runtime",
            runtime_tasks.clone(),
        );
        Self {
            registry,
            requests,
            time_to_first_token,
            latency,
            failovers,
            queued,
            nodes_online,
            queue_depth,
            deferred_saves,
            runtime_tasks,
            cluster_replicas,
            cluster_peer_nodes,
            cluster_relayed_jobs,
        }
    }
}

impl Metrics {
    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}
