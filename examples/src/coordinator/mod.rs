//! The reference coordinator: the meeting point of consumers and provider nodes.
//!
//! - [`api`]: the OpenAI-compatible API; [`club_api`]: the club's own API (records, providers,
//!   keys, account).
//! - [`dispatch`]: the one path every request takes to a node.
//! - [`nodes`]: the live node links (the only in-memory state), each usable as a `Provider`;
//!   [`link`]: the WebSocket endpoint nodes dial.
//! - [`store`]: everything the coordinator persists, on SQLite or PostgreSQL.
//! - [`accounts`]: GitHub sign-in (web and device flows) and browser sessions.
//! - [`auth`]: API keys, session cookies and scopes; [`error`]: errors in the OpenAI envelope;
//!   [`metrics`]: Prometheus metrics; [`limits`]: rate, concurrency and size limits.
//! - [`web`]: the club on the web (server-rendered pages: feed, requests, profiles, providers,
//!   models, dashboard, playground, terms).
//! - [`server`]: the HTTP server, with header and body read timeouts ([`serve`], [`serve_with`]).

pub mod accounts;
pub mod api;
pub mod auth;
pub mod club_api;
pub mod dispatch;
pub mod error;
pub mod limits;
pub mod link;
pub mod metrics;
pub mod nodes;
pub mod server;
pub mod store;
pub mod web;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use self::dispatch::DispatchQueues;
use self::metrics::Metrics;
use self::nodes::NodeRegistry;
pub use self::server::{ServeSettings, serve_with};
use self::store::Store;

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
        }
    }
}

/// The coordinator: its store, its live nodes and its queues.
#[derive(Debug)]
pub struct Coordinator {
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
    queues: DispatchQueues,
    github: Option<accounts::GitHub>,
}

impl Coordinator {
    /// A coordinator over `store`. Records left in flight by an earlier run become `failed`.
    pub async fn start(
        store: Store,
        config: CoordinatorConfig,
    ) -> Result<Arc<Self>, store::StoreError> {
        let failed = store
            .fail_in_flight("the coordinator restarted while the request was in flight")
            .await?;
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
                .map_err(|e| store::StoreError::invalid("GitHub configuration", e.to_string()))?,
            ),
            None => None,
        };
        Ok(Arc::new(Self {
            github,
            store,
            nodes: NodeRegistry::default(),
            limits: limits::Limiter::new(config.limits.clone()),
            config,
            metrics: Metrics::default(),
            queues: DispatchQueues::default(),
        }))
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

async fn metrics_text(State(state): State<Arc<Coordinator>>) -> impl IntoResponse {
    state
        .metrics
        .queue_depth
        .set(i64::try_from(state.queues.waiting()).unwrap_or(i64::MAX));
    state
        .metrics
        .deferred_saves
        .set(i64::try_from(state.store.deferred_saves()).unwrap_or(i64::MAX));
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

/// Serves `app` on `listener` until `shutdown` is cancelled, with the default
/// [`ServeSettings`] (header and body read timeouts, a header size limit). Prints `listening on
/// http://ADDR` once it accepts connections. Each request carries its client's address
/// (`ConnectInfo<SocketAddr>`), which the per-address limits use.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, app, shutdown, ServeSettings::default()).await
}
