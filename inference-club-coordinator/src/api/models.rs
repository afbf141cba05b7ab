//! `GET /v1/models`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use inference_club_core::openai::{Model, ModelList};

use crate::auth;
use crate::fleet::{Fleet, catalog};
use crate::limits::{self, Limiter};
use crate::store::{RoutingPreference, Scope, Store};

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
    let caller = match auth::caller(&store, &headers).await {
        Ok(Some(caller)) => match caller.require(Scope::Inference) {
            Ok(caller) => Some(caller),
            Err(error) => return error.into_response(),
        },
        Ok(None) => None,
        Err(error) => return error.into_response(),
    };
    let rate = match &caller {
        Some(caller) => match limits.inference(&caller.key.id.to_string()) {
            Ok(rate) => Some(rate),
            Err(throttled) => return throttled.into_response(),
        },
        None => None,
    };
    let handle = caller.as_ref().map(|c| c.user.handle.as_str());
    let mut nodes = fleet.online_nodes();
    if let Some(caller) = &caller
        && caller.user.routing_preference == RoutingPreference::OnlyOwn
    {
        nodes.retain(|node| node.key().operator_id == caller.user.id);
    }
    let models: BTreeMap<String, Model> = catalog::models_for(&nodes, handle);
    limits::with_rate(
        axum::Json(ModelList::new(models.into_values().collect())).into_response(),
        rate,
    )
}
