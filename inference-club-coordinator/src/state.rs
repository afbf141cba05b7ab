//! The running state of a coordinator, in parts that each own their state and rules: the
//! store, the fleet of online nodes, the dispatcher, the limits, the metrics, the settings and
//! sign-in. Handlers extract only the parts they use (axum's `FromRef`); the routes are put
//! together in [`routes`](crate::routes).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;

use crate::CoordinatorConfig;
use crate::accounts::{self, SignIn};
use crate::api::Recorder;
use crate::cluster::Cluster;
use crate::dispatch::{DispatchQueues, Dispatcher};
use crate::error::{Error, ErrorKind};
use crate::fleet::Fleet;
use crate::jobs::BatchRunner;
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::nodes::NodeRegistry;
use crate::store::{self, Store};

/// A running coordinator's parts. Cheap to clone: one shared pointer (the HTTP layers clone
/// it for every request).
#[derive(Debug, Clone)]
pub(crate) struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Everything persisted.
    pub store: Store,
    /// The online nodes, wherever linked.
    pub fleet: Arc<Fleet>,
    /// Where requests go.
    pub dispatcher: Arc<Dispatcher>,
    /// The limits in force and their running state.
    pub limits: Arc<Limiter>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Settings.
    pub config: Arc<CoordinatorConfig>,
    /// GitHub sign-in, when configured.
    pub sign_in: Arc<SignIn>,
    /// Saves and counts the records of inference requests.
    pub recorder: Arc<Recorder>,
    /// Runs the batches.
    pub batches: Arc<BatchRunner>,
}

macro_rules! part {
    ($($field:ident: $part:ty),* $(,)?) => {
        $(
            impl FromRef<AppState> for $part {
                fn from_ref(state: &AppState) -> Self {
                    state.$field.clone()
                }
            }
        )*
    };
}

part!(
    store: Store,
    fleet: Arc<Fleet>,
    dispatcher: Arc<Dispatcher>,
    limits: Arc<Limiter>,
    metrics: Arc<Metrics>,
    config: Arc<CoordinatorConfig>,
    sign_in: Arc<SignIn>,
    recorder: Arc<Recorder>,
    batches: Arc<BatchRunner>,
);

impl FromRef<AppState> for crate::api::serve::Parts {
    fn from_ref(state: &AppState) -> Self {
        Self {
            limits: state.limits.clone(),
            dispatcher: state.dispatcher.clone(),
            recorder: state.recorder.clone(),
        }
    }
}

impl AppState {
    /// A coordinator over `store`. Records left in flight by an earlier run become `failed`
    /// (in a cluster: those of no live replica). With `config.cluster`, joins the cluster
    /// (which needs PostgreSQL) and starts its background work.
    pub async fn start(store: Store, config: CoordinatorConfig) -> Result<Self, Error> {
        let queues = DispatchQueues::default();
        let cluster = match &config.cluster {
            Some(cluster_config) => {
                if store.backend() != store::Backend::Postgres {
                    return Err(Error::new(
                        ErrorKind::Config,
                        "a cluster of replicas needs a PostgreSQL database (postgres://…)",
                    ));
                }
                let cluster = Cluster::connect(cluster_config, queues.select.clone()).await?;
                store.set_replica(&cluster.replica);
                store.renew_replica(&cluster.replica).await?;
                Some(cluster)
            }
            None => None,
        };
        let failed = match &cluster {
            Some(cluster) => {
                // Its own id's records are an earlier run's of this replica (restarted under the
                // same id before the others retired it): nothing of this run is in flight yet.
                let own = store
                    .fail_in_flight_of(
                        store::InFlight::OfReplica(&cluster.replica),
                        "the coordinator replica handling it restarted while it was in flight",
                    )
                    .await?;
                own + store
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
        let nodes = Arc::new(NodeRegistry::default());
        let limits = Arc::new(Limiter::new(config.limits.clone()));
        let metrics = Arc::new(Metrics::default());
        if let Some(cluster) = &cluster {
            cluster.start(&nodes, &limits, &store).await?;
            tracing::info!(replica = %cluster.replica, "joined the cluster");
        }
        let recorder = Recorder::start(store.clone(), nodes.clone(), metrics.clone());
        expire_blobs(&recorder, config.blob_retention);
        let fleet = Arc::new(Fleet::new(nodes, cluster));
        let dispatcher = Arc::new(Dispatcher::new(
            fleet.clone(),
            queues,
            metrics.clone(),
            config.queue_timeout,
            config.max_queued,
        ));
        let config = Arc::new(config);
        let parts = crate::api::serve::Parts {
            limits: limits.clone(),
            dispatcher: dispatcher.clone(),
            recorder: recorder.clone(),
        };
        let replica = fleet.cluster().as_ref().map(|c| c.replica.clone());
        let batches =
            BatchRunner::start(store.clone(), parts, config.clone(), replica.as_deref()).await?;
        Ok(Self(Arc::new(Shared {
            store,
            fleet,
            dispatcher,
            limits,
            metrics,
            sign_in: Arc::new(SignIn::new(github)),
            recorder,
            config,
            batches,
        })))
    }

    /// The first half of a graceful stop: no new links, and (in a cluster) the other replicas
    /// route nothing new to the nodes linked here. Call before the HTTP server stops accepting.
    pub async fn begin_drain(&self) {
        self.fleet.begin_drain().await;
    }

    /// The second half: waits up to `within` for the jobs running on the nodes linked here to
    /// end, closes the links, and (in a cluster) leaves it.
    pub async fn finish_drain(&self, within: Duration) {
        self.fleet.finish_drain(within, &self.store).await;
        // Records abandoned in the drain are saved, then every held record write is committed.
        self.recorder.settle().await;
        if let Err(error) = self.store.flush_records().await {
            tracing::error!("cannot write the last records before stopping: {error}");
        }
    }
}

/// Removes, every [`BLOB_EXPIRY_INTERVAL`](crate::config::BLOB_EXPIRY_INTERVAL), the blobs
/// older than `retention` and those whose record is gone; the task ends with the recorder.
fn expire_blobs(recorder: &Arc<Recorder>, retention: Duration) {
    let recorder = Arc::downgrade(recorder);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(crate::config::BLOB_EXPIRY_INTERVAL);
        loop {
            every.tick().await;
            let Some(recorder) = recorder.upgrade() else {
                return;
            };
            let before = chrono::Duration::from_std(retention)
                .ok()
                .and_then(|retention| chrono::Utc::now().checked_sub_signed(retention));
            let Some(before) = before else {
                continue; // kept longer than time can tell: nothing expires
            };
            match recorder.store().expire_blobs(before).await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "blobs past their retention removed"),
                Err(error) => tracing::warn!("cannot remove old blobs: {error}"),
            }
        }
    });
}
