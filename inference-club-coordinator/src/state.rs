//! The running state of a coordinator: its store, its live nodes, its queues, its limits. The
//! routes of the HTTP application are built over it ([`AppState::app`]).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::dispatch::DispatchQueues;
use crate::error::{Error, ErrorKind};
use crate::metrics::Metrics;
use crate::nodes::{NodeKey, NodeRegistry, OnlineNode};
use crate::store::Store;
use crate::{accounts, api, club_api, cluster, index, limits, link, store, web};

/// How the coordinator behaves.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// How often nodes heartbeat (and the coordinator pings them); two missed means offline.
    pub heartbeat_interval: Duration,
    /// How long a request may wait for a node with room before 503.
    pub queue_timeout: Duration,
    /// How many requests may wait at once before new ones get 503 straight away.
    pub max_queued: usize,
    /// GitHub sign-in: the OAuth app and GitHub's endpoints. `None`: sign-in routes answer 404
    /// `sign_in_unavailable` (admin commands still create members and keys).
    pub github: Option<accounts::GitHubConfig>,
    /// The coordinator's externally visible base URL (e.g. `https://club.example`): the OAuth
    /// callback is `{public_url}/auth/github/callback`, and cookies are `Secure` when it is
    /// https.
    pub public_url: Option<url::Url>,
    /// Rate, concurrency and size limits (the chat body limit among them).
    pub limits: limits::Limits,
    /// Run as one replica of a cluster (PostgreSQL + NATS); `None`: a single coordinator.
    pub cluster: Option<cluster::ClusterConfig>,
    /// How long a stopping coordinator lets requests in flight finish.
    pub drain: Duration,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(10),
            queue_timeout: Duration::from_secs(30),
            max_queued: 1024,
            github: None,
            public_url: None,
            limits: limits::Limits::default(),
            cluster: None,
            drain: Duration::from_secs(30),
        }
    }
}

/// The coordinator: its store, its live nodes and its queues.
#[derive(Debug)]
pub struct AppState {
    /// Everything persisted.
    pub store: Store,
    /// The linked nodes.
    pub nodes: NodeRegistry,
    /// Settings.
    pub config: CoordinatorConfig,
    /// Metrics.
    pub metrics: Metrics,
    /// The limits in force and their running state.
    pub limits: limits::Limiter,
    pub(crate) queues: DispatchQueues,
    /// Which online nodes serve which model.
    index: index::ModelIndex,
    pub(crate) github: Option<accounts::GitHub>,
    cluster: Option<Arc<cluster::Cluster>>,
    draining: std::sync::atomic::AtomicBool,
    /// In a cluster: when each model (lower-case) was last seen on a node ([`RELINK_GRACE`]).
    models_seen: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// When it started (a replica learns the others' nodes in its first seconds).
    started: std::time::Instant,
}

/// In a cluster, how long a replica that just started lets requests for a model no node serves
/// wait, instead of failing at once: until it has heard every other replica's beat and list of
/// nodes.
pub const STARTUP_GRACE: Duration = cluster::wire::BEAT_EXPIRY;

/// In a cluster, how long after a model's last node went offline a request for it waits for
/// the node to link again (to another replica) instead of failing at once.
pub const RELINK_GRACE: Duration = Duration::from_secs(10);

impl AppState {
    /// A coordinator over `store`. Records left in flight by an earlier run become `failed`
    /// (in a cluster: those of no live replica). With `config.cluster`, joins the cluster
    /// (which needs PostgreSQL) and starts its background work.
    pub async fn start(store: Store, config: CoordinatorConfig) -> Result<Arc<Self>, Error> {
        let queues = DispatchQueues::default();
        let cluster = match &config.cluster {
            Some(cluster_config) => {
                if store.backend() != store::Backend::Postgres {
                    return Err(Error::new(
                        ErrorKind::Config,
                        "a cluster of replicas needs a PostgreSQL database (postgres://…)",
                    ));
                }
                let cluster =
                    cluster::Cluster::connect(cluster_config, queues.select.clone()).await?;
                store.set_replica(&cluster.replica);
                store.renew_replica(&cluster.replica).await?;
                Some(cluster)
            }
            None => None,
        };
        let failed = match &cluster {
            Some(_) => {
                store
                    .fail_in_flight_of(
                        store::InFlight::Orphaned,
                        "the coordinator replica handling it stopped while it was in flight",
                    )
                    .await?
            }
            None => {
                store
                    .fail_in_flight("the coordinator restarted while the request was in flight")
                    .await?
            }
        };
        if failed > 0 {
            tracing::warn!(
                failed,
                "records left in flight by the last run are now failed"
            );
        }
        let github = match &config.github {
            Some(github) => Some(
                accounts::GitHub::new(
                    github.clone(),
                    config.public_url.as_ref().map(accounts::callback_url),
                )
                .map_err(|e| Error::new(ErrorKind::Config, format!("GitHub configuration: {e}")))?,
            ),
            None => None,
        };
        let coordinator = Arc::new(Self {
            github,
            store,
            nodes: NodeRegistry::default(),
            limits: limits::Limiter::new(config.limits.clone()),
            config,
            metrics: Metrics::default(),
            queues,
            index: index::ModelIndex::default(),
            cluster,
            draining: std::sync::atomic::AtomicBool::new(false),
            models_seen: std::sync::Mutex::default(),
            started: std::time::Instant::now(),
        });
        if let Some(cluster) = &coordinator.cluster {
            cluster.start(&coordinator).await?;
            tracing::info!(replica = %cluster.replica, "joined the cluster");
        }
        Ok(coordinator)
    }

    /// This replica's part in a cluster, if it runs as one.
    pub fn cluster(&self) -> Option<&Arc<cluster::Cluster>> {
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
            let here: std::collections::HashSet<NodeKey> =
                nodes.iter().map(|n| n.key().clone()).collect();
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
    pub fn set_node_policy(&self, key: &NodeKey, policy: store::ProviderPolicy) {
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
    pub fn close_operator(&self, operator_id: store::UserId, handle: &str) -> usize {
        if let Some(cluster) = &self.cluster {
            cluster.broadcast(&cluster::wire::Control::CloseOperator {
                operator_id,
                handle: handle.to_owned(),
            });
        }
        self.nodes.close_operator(operator_id, handle)
    }

    /// Notes the models served now (the cluster does, every beat), for [`AppState::may_relink`].
    pub fn note_models_online(&self) {
        let now = std::time::Instant::now();
        let mut nodes = self.online_nodes();
        // A draining replica's nodes are about to link elsewhere: their models stay "seen".
        if let Some(cluster) = &self.cluster {
            nodes.extend(
                cluster
                    .directory
                    .all_nodes()
                    .into_iter()
                    .map(OnlineNode::Peer),
            );
        }
        let mut seen = self
            .models_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.retain(|_, at| at.elapsed() < RELINK_GRACE);
        for node in &nodes {
            for model in &node.offer().models {
                seen.insert(model.served_id.to_ascii_lowercase(), now);
                if let Some(hf) = &model.hf {
                    seen.insert(hf.to_ascii_lowercase(), now);
                }
            }
        }
    }

    /// Whether a node served `model` within [`RELINK_GRACE`], or this replica started less
    /// than [`STARTUP_GRACE`] ago and may not know it yet (in a cluster only): a request for it
    /// waits for a node instead of failing.
    pub fn may_relink(&self, model: &str) -> bool {
        if self.cluster.is_none() {
            return false;
        }
        self.started.elapsed() < STARTUP_GRACE
            || self
                .models_seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&model.to_ascii_lowercase())
                .is_some_and(|at| at.elapsed() < RELINK_GRACE)
    }

    /// Whether this coordinator is shutting down (it takes no new node links).
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The first half of a graceful stop: no new links, and (in a cluster) the other replicas
    /// route nothing new to the nodes linked here. Call before the HTTP server stops accepting.
    pub async fn begin_drain(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Release);
        if let Some(cluster) = &self.cluster {
            cluster.begin_drain(self).await;
        }
    }

    /// The second half: waits up to `within` for the jobs running on the nodes linked here to
    /// end, closes the links (the nodes link again elsewhere), and (in a cluster) leaves it:
    /// records still in flight here become `failed`, the lease is given up.
    pub async fn finish_drain(&self, within: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.nodes.online().iter().any(|n| n.in_flight() > 0)
            && tokio::time::Instant::now() < deadline
        {
            tokio::select! {
                () = self.nodes.changed() => {}
                () = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
            }
        }
        for node in self.nodes.online() {
            self.nodes.remove(&node);
        }
        if let Some(cluster) = &self.cluster {
            cluster.leave(self).await;
        }
    }

    /// The HTTP application: every route of the coordinator.
    pub fn app(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/models", get(api::models))
            .route("/v1/chat/completions", post(api::chat_completions))
            .route("/v1/link", get(link::upgrade))
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics_text))
            .merge(club_api::routes())
            .merge(accounts::routes())
            .merge(web::routes())
            .fallback(web::fallback)
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                accounts::session::csrf_guard,
            ))
            // Sign-in routes are limited per client address, whichever route serves them.
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                limits::sign_in_layer,
            ))
            .with_state(self.clone())
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    state
        .metrics
        .queue_depth
        .set(i64::try_from(state.queues.waiting()).unwrap_or(i64::MAX));
    state
        .metrics
        .deferred_saves
        .set(i64::try_from(state.store.deferred_saves()).unwrap_or(i64::MAX));
    if let Some(cluster) = &state.cluster {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        state
            .metrics
            .cluster_replicas
            .set(gauge(cluster.directory.replicas()));
        state
            .metrics
            .cluster_peer_nodes
            .set(gauge(cluster.directory.nodes().len()));
        state
            .metrics
            .cluster_relayed_jobs
            .set(gauge(cluster.remote_jobs()));
    }
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    state
        .metrics
        .runtime_tasks
        .set(i64::try_from(tasks).unwrap_or(i64::MAX));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
