//! The coordinator's HTTP application: every route, and the layers over them.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::dispatch::Dispatcher;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::{AppState, accounts, api, club_api, limits, link, web};

/// Every route of the coordinator over `state`.
pub(crate) fn app(state: &AppState) -> Router {
    Router::new()
        .merge(inference())
        .route("/v1/link", get(link::upgrade))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .merge(club())
        .merge(sign_in())
        .merge(pages())
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

/// The OpenAI-compatible API.
fn inference() -> Router<AppState> {
    Router::new()
        .route("/v1/models", get(api::models::models))
        // Model ids may hold `/` (`Qwen/Qwen3-8B`): the rest of the path names the model.
        .route("/v1/models/{*model}", get(api::models::model))
        .route("/v1/chat/completions", post(api::chat::chat_completions))
        .route("/v1/completions", post(api::calls::completions))
        .route("/v1/responses", post(api::responses::create))
        .route("/v1/embeddings", post(api::calls::embeddings))
        .route("/v1/audio/transcriptions", post(api::calls::transcriptions))
        .route("/v1/audio/speech", post(api::calls::speech))
        .route("/v1/images/generations", post(api::calls::images))
        .route("/v1/files", post(api::files::upload).get(api::files::list))
        .route(
            "/v1/files/{id}",
            get(api::files::get_one).delete(api::files::delete),
        )
        .route("/v1/files/{id}/content", get(api::files::content))
        .route(
            "/v1/batches",
            post(api::batches::create).get(api::batches::list),
        )
        .route("/v1/batches/{id}", get(api::batches::get_one))
        .route("/v1/batches/{id}/cancel", post(api::batches::cancel))
        // A route asked with a method it does not take: 405 in OpenAI's error envelope.
        .method_not_allowed_fallback(club_api::method_not_allowed)
}

/// The club's own API (`/api/v1/…`) and its OpenAPI document.
fn club() -> Router<AppState> {
    Router::new()
        .route("/api/v1/requests", get(club_api::records::list_mine))
        .route(
            "/api/v1/requests/public",
            get(club_api::records::public_feed),
        )
        .route(
            "/api/v1/requests/{id}",
            get(club_api::records::get_one)
                .patch(club_api::records::change_visibility)
                .delete(club_api::records::delete_one),
        )
        .route(
            "/api/v1/requests/{id}/blobs/{blob}",
            get(club_api::records::get_blob),
        )
        .route("/api/v1/providers", get(club_api::providers::list))
        .route(
            "/api/v1/providers/{operator}/{name}",
            get(club_api::providers::profile_route).patch(club_api::providers::update_policy),
        )
        .route(
            "/api/v1/providers/{operator}/{name}/requests",
            get(club_api::providers::served_requests),
        )
        .route(
            "/api/v1/me",
            get(club_api::account::me)
                .patch(club_api::account::update_me)
                .delete(club_api::account::delete_me),
        )
        .route(
            "/api/v1/keys",
            get(club_api::account::list_keys).post(club_api::account::create_key),
        )
        .route(
            "/api/v1/keys/{id}",
            axum::routing::delete(club_api::account::revoke_key),
        )
        .route("/openapi.json", get(club_api::openapi::serve))
        // A route asked with a method it does not take: 405 in the error envelope.
        .method_not_allowed_fallback(club_api::method_not_allowed)
}

/// Sign-in (web and device flows) and browser sessions.
fn sign_in() -> Router<AppState> {
    Router::new()
        .route("/auth/github", get(accounts::web::start))
        .route("/auth/github/callback", get(accounts::web::callback))
        .route(
            "/auth/confirm",
            get(accounts::web::confirm_form).post(accounts::web::confirm),
        )
        .route("/auth/signout", post(accounts::session::sign_out))
        .route(
            "/auth/signout-everywhere",
            post(accounts::session::sign_out_everywhere),
        )
        .route("/api/v1/session", get(accounts::session::current))
        .route("/api/v1/auth/device", post(accounts::device::start))
        .route("/api/v1/auth/device/token", post(accounts::device::token))
}

/// The web pages and their assets, each with its server time.
fn pages() -> Router<AppState> {
    Router::new()
        .route("/", get(web::public::feed))
        .route("/r/{id}", get(web::public::request_page))
        .route("/u/{handle}", get(web::public::profile))
        .route("/providers", get(web::public::providers))
        .route("/models/{*model}", get(web::public::model))
        .route("/terms", get(web::public::terms))
        .route("/playground", get(web::playground::page))
        .route("/dashboard", get(web::dashboard::overview))
        .route("/dashboard/requests", get(web::dashboard::requests))
        .route(
            "/dashboard/requests/{id}/visibility",
            post(web::dashboard::set_visibility),
        )
        .route(
            "/dashboard/requests/{id}/delete",
            get(web::dashboard::confirm_delete).post(web::dashboard::delete_request),
        )
        .route("/dashboard/batches", get(web::batches::list))
        .route("/dashboard/files/{id}", get(web::batches::download))
        .route(
            "/dashboard/keys",
            get(web::dashboard::keys).post(web::dashboard::create_key),
        )
        .route(
            "/dashboard/keys/{id}/revoke",
            post(web::dashboard::revoke_key),
        )
        .route("/dashboard/nodes", get(web::dashboard::nodes))
        .route(
            "/dashboard/nodes/accepting",
            post(web::dashboard::set_accepting),
        )
        .route(
            "/dashboard/settings",
            get(web::dashboard::settings).post(web::dashboard::save_settings),
        )
        .route("/dashboard/account", get(web::dashboard::account))
        .route(
            "/dashboard/account/delete",
            post(web::dashboard::delete_account),
        )
        .route("/static/club.css", get(web::assets::stylesheet))
        .route("/static/club.js", get(web::assets::script))
        .route("/static/icon.svg", get(web::assets::icon))
        .route("/favicon.ico", get(web::assets::icon))
        .layer(axum::middleware::from_fn(web::timed))
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
