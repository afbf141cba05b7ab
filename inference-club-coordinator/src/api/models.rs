//! `GET /v1/models` and `GET /v1/models/{model}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use inference_club_core::openai::{Model, ModelList};
use inference_club_core::provider::ProviderError;

use crate::auth;
use crate::error::ApiError;
use crate::fleet::{Fleet, OnlineNode, catalog};
use crate::limits::{self, Limiter, RateState};
use crate::store::{RoutingPreference, Scope, Store};

/// What the models routes show a caller: the online nodes they may see, their handle (`None`
/// when anonymous) and the rate to report.
struct Visible {
    nodes: Vec<OnlineNode>,
    handle: Option<String>,
    rate: Option<RateState>,
}

/// The caller of a models route, admitted as both routes admit them: without a key anonymous
/// (no access policy admits anonymous consumers, so they see no model); a key without the
/// `inference` scope gets 403; a key is counted against its request rate. A member whose
/// routing preference is `only_own` sees only their own nodes.
async fn visible(
    store: &Store,
    limits: &Limiter,
    fleet: &Fleet,
    headers: &HeaderMap,
) -> Result<Visible, Response> {
    let caller = match auth::caller(store, headers).await {
        Ok(Some(caller)) => Some(
            caller
                .require(Scope::Inference)
                .map_err(IntoResponse::into_response)?,
        ),
        Ok(None) => None,
        Err(error) => return Err(error.into_response()),
    };
    let rate = match &caller {
        Some(caller) => Some(
            limits
                .inference(&caller.key.id.to_string())
                .map_err(IntoResponse::into_response)?,
        ),
        None => None,
    };
    let mut nodes = fleet.online_nodes();
    if let Some(caller) = &caller
        && caller.user.routing_preference == RoutingPreference::OnlyOwn
    {
        nodes.retain(|node| node.key().operator_id == caller.user.id);
    }
    Ok(Visible {
        nodes,
        handle: caller.map(|c| c.user.handle),
        rate,
    })
}

/// `GET /v1/models`: the models of online nodes that the caller may use, merged across nodes,
/// with their capabilities (see [`catalog`]). Without a key
/// the list is empty (no access policy admits anonymous consumers); a key without the
/// `inference` scope gets 403. A member whose routing preference is `only_own` sees only what
/// their own nodes serve. Counted against the key's request rate.
pub async fn models(
    State(store): State<Store>,
    State(limits): State<Arc<Limiter>>,
    State(fleet): State<Arc<Fleet>>,
    headers: HeaderMap,
) -> Response {
    let visible = match visible(&store, &limits, &fleet, &headers).await {
        Ok(visible) => visible,
        Err(refused) => return refused,
    };
    let models: BTreeMap<String, Model> =
        catalog::models_for(&visible.nodes, visible.handle.as_deref());
    limits::with_rate(
        axum::Json(ModelList::new(models.into_values().collect())).into_response(),
        visible.rate,
    )
}

/// `GET /v1/models/{model}`: the entry of `GET /v1/models` that a request naming `model` is
/// routed to (its served id or a Hugging Face id, in any case; ids may hold `/`), under the
/// same rules as the list; 404 `model_not_found` when the list has none.
pub async fn model(
    State(store): State<Store>,
    State(limits): State<Arc<Limiter>>,
    State(fleet): State<Arc<Fleet>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let visible = match visible(&store, &limits, &fleet, &headers).await {
        Ok(visible) => visible,
        Err(refused) => return refused,
    };
    let answer = match path {
        Err(rejection) => {
            ApiError::bad_request("invalid_path", rejection.body_text()).into_response()
        }
        Ok(Path(requested)) => {
            match catalog::model_for(&visible.nodes, visible.handle.as_deref(), &requested) {
                Some(model) => axum::Json(model).into_response(),
                None => ApiError::from_provider(&ProviderError::ModelNotFound { model: requested })
                    .into_response(),
            }
        }
    };
    limits::with_rate(answer, visible.rate)
}
