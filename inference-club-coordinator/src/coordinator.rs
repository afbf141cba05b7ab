//! The public face of the crate: [`CoordinatorBuilder`] configures a coordinator, and
//! [`Coordinator`] serves it.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::admin::Admin;
use crate::error::Error;
use crate::server::{ServeSettings, serve_with};
use crate::store::Store;
use crate::{AppState, ClusterConfig, CoordinatorConfig, DEFAULT_DATABASE, GitHubConfig, Limits};

/// Why a coordinator could not start: the database, the cluster or the configuration (see
/// [`Error::kind`]).
pub type StartError = Error;

/// Configures a [`Coordinator`]: its database, limits, timeouts, GitHub sign-in and cluster.
///
/// Every setting has a default a small club can run with: a SQLite file `club.db` in the
/// working directory, the limits of [`Limits::default`], no GitHub sign-in (members and keys
/// come from [`Admin`]), and no cluster.
#[derive(Debug, Clone)]
pub struct CoordinatorBuilder {
    database: String,
    config: CoordinatorConfig,
    serve: ServeSettings,
}

impl Default for CoordinatorBuilder {
    fn default() -> Self {
        Self {
            database: DEFAULT_DATABASE.to_owned(),
            config: CoordinatorConfig::default(),
            serve: ServeSettings::default(),
        }
    }
}

impl CoordinatorBuilder {
    /// A builder with the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The database: `sqlite:PATH` (created when missing), `sqlite::memory:`, or
    /// `postgres://…`. A plain path is a SQLite file.
    pub fn database(mut self, url: impl Into<String>) -> Self {
        self.database = url.into();
        self
    }

    /// Rate, concurrency and size limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// How often nodes heartbeat (and the coordinator pings them); two missed beats make a node
    /// offline. Default 10 s; at least 1 s.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.config.heartbeat_interval = interval.max(Duration::from_secs(1));
        self
    }

    /// How long a request may wait for a node with room before it is answered 503. Default 30 s.
    pub fn queue_timeout(mut self, timeout: Duration) -> Self {
        self.config.queue_timeout = timeout;
        self
    }

    /// How many requests may wait at once before new ones get 503 straight away. Default 1024.
    pub fn max_queued(mut self, max: usize) -> Self {
        self.config.max_queued = max;
        self
    }

    /// How long a stopping coordinator lets requests in flight finish. Default 30 s.
    pub fn drain(mut self, drain: Duration) -> Self {
        self.config.drain = drain;
        self
    }

    /// How many lines of batches this coordinator runs at once. Default 16.
    pub fn max_batch_in_flight(mut self, max: usize) -> Self {
        self.config.max_batch_in_flight = max.max(1);
        self
    }

    /// How long a claimed line of a batch stays held without its coordinator renewing the lease
    /// (renewed every third of it): in a cluster, how long the lines of a replica that died
    /// wait before another takes them. Default 30 s; at least 1 s.
    pub fn batch_lease(mut self, lease: Duration) -> Self {
        self.config.batch_lease = lease.max(Duration::from_secs(1));
        self
    }

    /// How long the lines of a batch that no online node can take wait for one before they run
    /// and get their refusal (`model_not_found`, …) as their answer. Default 60 s.
    pub fn batch_unserved_grace(mut self, grace: Duration) -> Self {
        self.config.batch_unserved_grace = grace;
        self
    }

    /// How long the audio and images of records are kept. Default 30 days.
    pub fn blob_retention(mut self, retention: Duration) -> Self {
        self.config.blob_retention = retention;
        self
    }

    /// GitHub sign-in (web and device flows) with this OAuth app. Without it, members and keys
    /// come from [`Admin`] and the sign-in routes answer 404 `sign_in_unavailable`.
    pub fn github(mut self, github: GitHubConfig) -> Self {
        self.config.github = Some(github);
        self
    }

    /// The coordinator's externally visible base URL (e.g. `https://club.example`): the OAuth
    /// callback is `{public_url}/auth/github/callback`, and cookies are `Secure` under https.
    pub fn public_url(mut self, url: url::Url) -> Self {
        self.config.public_url = Some(url);
        self
    }

    /// Run as one replica of a cluster (needs a PostgreSQL database).
    pub fn cluster(mut self, cluster: ClusterConfig) -> Self {
        self.config.cluster = Some(cluster);
        self
    }

    /// How the HTTP server treats slow and oversized requests.
    pub fn serve_settings(mut self, settings: ServeSettings) -> Self {
        self.serve = settings;
        self
    }

    /// Opens the database (bringing its schema up to date), marks records left in flight by an
    /// earlier run as `failed`, joins the cluster if configured, and returns the coordinator,
    /// ready to [`serve`](Coordinator::serve).
    ///
    /// Like every future of this crate's API it is boxed, so that a crate calling it does not
    /// compile the coordinator's state machines again.
    #[inline(never)]
    pub fn build(self) -> BoxFuture<'static, Result<Coordinator, StartError>> {
        Box::pin(async move {
            let store = Store::connect(&crate::store::database_url(&self.database)).await?;
            let state = AppState::start(store, self.config).await?;
            Ok(Coordinator {
                state,
                serve: self.serve,
            })
        })
    }
}

/// A running coordinator: serve it on a listener, administer it, or mount its routes in an
/// application of your own. Cheap to clone; clones share everything.
#[derive(Debug, Clone)]
pub struct Coordinator {
    state: AppState,
    serve: ServeSettings,
}

impl Coordinator {
    /// A builder with the defaults (see [`CoordinatorBuilder`]).
    pub fn builder() -> CoordinatorBuilder {
        CoordinatorBuilder::new()
    }

    /// Serves every route on `listener` until `shutdown` resolves, then stops gracefully:
    /// nodes get no new jobs and no new links are taken, no new connections are accepted,
    /// requests in flight (streams included) get the drain time to finish, and the node links
    /// are closed (the nodes link again elsewhere). Logs `listening on http://ADDR` (at `info`)
    /// once it accepts connections.
    pub fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> BoxFuture<'_, Result<(), Error>> {
        self.serve_until(listener, Box::pin(shutdown))
    }

    /// [`serve`](Self::serve), compiled once, here.
    #[inline(never)]
    fn serve_until(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: BoxFuture<'static, ()>,
    ) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.serve_inner(listener, shutdown))
    }

    async fn serve_inner(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: BoxFuture<'static, ()>,
    ) -> Result<(), Error> {
        let stop = CancellationToken::new();
        let drain = self.state.config.drain;
        let stopping = self.state.clone();
        let signalled_at = Arc::new(std::sync::OnceLock::new());
        let watcher = {
            let stop = stop.clone();
            let signalled_at = signalled_at.clone();
            tokio::spawn(async move {
                shutdown.await;
                let _ = signalled_at.set(Instant::now());
                // No new links or jobs for the nodes here, then no new connections.
                stopping.begin_drain().await;
                stop.cancel();
            })
        };
        let served = serve_with(
            listener,
            crate::routes::app(&self.state),
            stop.clone(),
            self.serve,
        );
        tokio::pin!(served);
        // After the signal, requests in flight get `drain` to finish.
        let result = tokio::select! {
            result = &mut served => result,
            () = async {
                stop.cancelled().await;
                tokio::time::sleep(drain).await;
            } => Ok(()),
        };
        watcher.abort();
        let since_signal = signalled_at.get().map_or(Duration::ZERO, Instant::elapsed);
        self.state
            .finish_drain(drain.saturating_sub(since_signal))
            .await;
        result.map_err(Error::from)
    }

    /// Every route of the coordinator as an axum `Router`, to mount in an application of your
    /// own (serve it with `ConnectInfo<SocketAddr>`; the per-address limits use it). Prefer
    /// [`serve`](Self::serve), which adds read timeouts and drains on shutdown.
    pub fn router(&self) -> axum::Router {
        crate::routes::app(&self.state)
    }

    /// Member and key administration on this coordinator's database.
    pub fn admin(&self) -> Admin {
        Admin::new(self.state.store.clone())
    }

    #[cfg(feature = "testing")]
    pub(crate) fn state(&self) -> &AppState {
        &self.state
    }
}
