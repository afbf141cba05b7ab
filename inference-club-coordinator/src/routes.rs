//! The coordinator's HTTP application: every route, and the layers over them.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::dispatch::Dispatcher;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::{AppState, accounts, api, club_api, limits, link, web};

/// Every route of the coordinator over `state`.
pub(crate) fn app(state: &AppState) -> Router {
    Router::new()
        .merge(api::routes())
        .route("/v1/link", get(link::upgrade))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .merge(club_api::routes())
        .merge(accounts::routes())
        .merge(web::routes())
        .fallback(web::fallback)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            accounts::session::csrf_guard,
        ))
        // Sign-in routes are limited per client address, whichever route serves them.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::sign_in_layer,
        ))
        .with_state(state.clone())
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics_text(
    State(metrics): State<Arc<Metrics>>,
    State(dispatcher): State<Arc<Dispatcher>>,
    State(store): State<Store>,
) -> impl IntoResponse {
    metrics
        .queue_depth
        .set(i64::try_from(dispatcher.queues.waiting()).unwrap_or(i64::MAX));
    metrics
        .deferred_saves
        .set(i64::try_from(store.deferred_saves()).unwrap_or(i64::MAX));
    if let Some(cluster) = dispatcher.fleet.cluster() {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        metrics
            .cluster_replicas
            .set(gauge(cluster.directory.replicas()));
        metrics
            .cluster_peer_nodes
            .set(gauge(cluster.directory.nodes().len()));
        metrics
            .cluster_relayed_jobs
            .set(gauge(cluster.remote_jobs()));
    }
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    metrics
        .runtime_tasks
        .set(i64::try_from(tasks).unwrap_or(i64::MAX));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
}
