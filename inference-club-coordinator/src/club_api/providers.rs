//! `/api/v1/providers`: public provider profiles, and for an operator the records their nodes
//! served.

use std::sync::Arc;

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use inference_club_core::manifest::{AccessPolicy, ServiceManifest, is_github_login};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::records::page;
use super::{
    ListPage, ListParams, MAX_FILTER_CHARS, bad_path, bad_query, json_body, record_member,
};
use crate::auth;
use crate::error::ApiError;
use crate::fleet::Fleet;
use crate::fleet::OnlineNode;
use crate::nodes::NodeKey;
use crate::store::Store;
use crate::store::{Provider, ProviderPolicy, RecordQuery, Scope};

/// A profile counts the requests a provider served up to this many; beyond, it says "at
/// least" (`requests_served_exact: false`).
pub const MAX_COUNTED: u64 = 1000;

/// A provider's public profile.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderProfile {
    /// Always `club.provider`.
    pub object: &'static str,
    /// The operator's handle.
    pub operator: String,
    /// The provider's name (`agent.name`).
    pub name: String,
    /// Whether a node of it is linked now.
    pub online: bool,
    /// When the current link was made, if online.
    pub connected_at: Option<DateTime<Utc>>,
    /// When it was first seen.
    pub first_seen: DateTime<Utc>,
    /// When it was last heard from (now-ish while online).
    pub last_seen: DateTime<Utc>,
    /// The number of its latest manifest revision.
    pub manifest_revision: i64,
    /// Its manifest, redacted (no `api_key`, no `command`, no secret-looking `extra`, no URL
    /// credentials).
    pub manifest: Value,
    /// The models it declares.
    pub models: Vec<ProviderModel>,
    /// Counts.
    pub counts: ProviderCounts,
    /// False while its operator's kill switch is on (nothing is routed to it).
    pub accepting: bool,
    /// The access policies its operator set through the API, over the manifest's.
    pub access_overrides: AccessOverrides,
}

/// The access policies an operator set through the API: for a service, its own override wins,
/// else the node-wide one, else the manifest's policy.
#[derive(Debug, Clone, Serialize)]
pub struct AccessOverrides {
    /// The node-wide override (`owner`, `members` or `{"logins": [...]}`), if any.
    pub access: Option<AccessPolicy>,
    /// Per-service overrides, by service name.
    pub services: BTreeMap<String, AccessPolicy>,
}

/// A model a provider declares, with its capabilities.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderModel {
    /// The id it is served under.
    pub id: String,
    /// Its Hugging Face id.
    pub hf: Option<String>,
    /// Its display name.
    pub name: Option<String>,
    /// The service that runs it.
    pub service: String,
    /// Its context length, in tokens.
    pub context_length: Option<u32>,
    /// What it takes in.
    pub input_modalities: Vec<String>,
    /// What it puts out.
    pub output_modalities: Vec<String>,
    /// Its features (model and service features).
    pub features: Vec<String>,
    /// Its quantization.
    pub quantization: Option<String>,
}

/// A provider's counts.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderCounts {
    /// Models declared.
    pub models: usize,
    /// Jobs running on it now.
    pub in_flight: u32,
    /// Requests it served (any visibility and status); only in a single profile, and counted
    /// up to [`MAX_COUNTED`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_served: Option<u64>,
    /// Whether `requests_served` is exact (false: there are at least that many).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_served_exact: Option<bool>,
}

/// The manifest's models (of every service, whatever its type), with defaults for absent
/// modalities.
fn models_of(manifest: &ServiceManifest) -> Vec<ProviderModel> {
    let mut models = Vec::new();
    for service in manifest.services() {
        let (input, output) = service.service_type.default_modalities();
        for model in &service.models {
            let Some(id) = model.served_id() else {
                continue;
            };
            let or_default = |given: &[String], default: &[&str]| {
                if given.is_empty() {
                    default.iter().map(|m| (*m).to_owned()).collect()
                } else {
                    given.to_vec()
                }
            };
            let mut features = model.features.clone();
            for feature in &service.features {
                if !features.contains(feature) {
                    features.push(feature.clone());
                }
            }
            models.push(ProviderModel {
                id: id.to_owned(),
                hf: model.hf.clone(),
                name: model.name.clone(),
                service: service.name.clone(),
                context_length: model.context_length,
                input_modalities: or_default(&model.input_modalities, input),
                output_modalities: or_default(&model.output_modalities, output),
                features,
                quantization: model.quantization.clone(),
            });
        }
    }
    models
}

/// The profile of a stored provider, with its live state from the registry.
pub(crate) fn profile(fleet: &Fleet, provider: Provider) -> ProviderProfile {
    let node: Option<OnlineNode> = fleet.find_node(&NodeKey {
        operator_id: provider.operator_id,
        provider: provider.name.clone(),
    });
    // The live manifest when online (validated and redacted at link time), else the stored
    // one; redacted once more here, whatever its source.
    let manifest = match &node {
        Some(node) => Some(node.offer().manifest.redacted()),
        None => serde_json::from_value::<ServiceManifest>(provider.manifest.clone())
            .ok()
            .map(|m| m.redacted()),
    };
    let models = manifest.as_ref().map(models_of).unwrap_or_default();
    let last_seen = match &node {
        Some(node) => chrono::Duration::from_std(node.silent_for())
            .map(|silent| Utc::now() - silent)
            .unwrap_or(provider.last_seen)
            .max(provider.last_seen),
        None => provider.last_seen,
    };
    let accepting = provider.policy.accepting;
    let access_overrides = AccessOverrides {
        access: provider.policy.access.clone(),
        services: provider.policy.services.clone(),
    };
    ProviderProfile {
        object: "club.provider",
        accepting,
        access_overrides,
        operator: provider.operator,
        name: provider.name,
        online: node.is_some(),
        connected_at: node.as_ref().map(|n| n.connected_at()),
        first_seen: provider.first_seen,
        last_seen,
        manifest_revision: provider.revision,
        manifest: manifest
            .and_then(|m| serde_json::to_value(m).ok())
            .unwrap_or(Value::Null),
        counts: ProviderCounts {
            models: models.len(),
            in_flight: node.as_ref().map_or(0, |n| n.in_flight()),
            requests_served: None,
            requests_served_exact: None,
        },
        models,
    }
}

/// Counts what a provider served, up to [`MAX_COUNTED`]; whether the count is exact.
async fn count_served(store: &Store, provider: &Provider) -> Result<(u64, bool), ApiError> {
    let counted = store
        .count_served(provider.operator_id, &provider.name, MAX_COUNTED + 1)
        .await?;
    Ok((counted.min(MAX_COUNTED), counted <= MAX_COUNTED))
}

/// Finds a provider by the path's operator and name (404 for anything else).
async fn find(store: &Store, operator: &str, name: &str) -> Result<Provider, ApiError> {
    let not_found = || {
        ApiError::not_found(
            "provider_not_found",
            format!("No provider {name:?} of operator {operator:?}."),
        )
    };
    if !is_github_login(operator) || name.is_empty() || name.chars().count() > MAX_FILTER_CHARS {
        return Err(not_found());
    }
    store.provider(operator, name).await?.ok_or_else(not_found)
}

/// `GET /api/v1/providers`: every provider's public profile (by operator, then name), for
/// anyone.
pub async fn list(
    State(store): State<Store>,
    State(fleet): State<Arc<Fleet>>,
) -> Result<Response, ApiError> {
    let providers = store.list_providers().await?;
    let data: Vec<ProviderProfile> = providers
        .into_iter()
        .map(|provider| profile(&fleet, provider))
        .collect();
    Ok(axum::Json(serde_json::json!({ "object": "list", "data": data })).into_response())
}

/// `GET /api/v1/providers/{operator}/{name}`: one provider's public profile, with the number
/// of requests it served.
pub async fn profile_of(
    store: &Store,
    fleet: &Fleet,
    operator: &str,
    name: &str,
) -> Result<ProviderProfile, ApiError> {
    let provider = find(store, operator, name).await?;
    let (served, exact) = count_served(store, &provider).await?;
    let mut view = profile(fleet, provider);
    view.counts.requests_served = Some(served);
    view.counts.requests_served_exact = Some(exact);
    Ok(view)
}

/// `GET /api/v1/providers/{operator}/{name}`, for anyone.
pub async fn profile_route(
    State(store): State<Store>,
    State(fleet): State<Arc<Fleet>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((operator, name)) = path.map_err(bad_path)?;
    Ok(axum::Json(profile_of(&store, &fleet, &operator, &name).await?).into_response())
}

/// `GET /api/v1/providers/{operator}/{name}/requests`: the records that provider served, any
/// visibility, newest first, paginated and filtered like `/api/v1/requests`. Its operator only
/// (a key with `inference` or `account`); other members get 403.
pub async fn served_requests(
    State(store): State<Store>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let caller = record_member(&store, &headers).await?;
    let Path((operator, name)) = path.map_err(bad_path)?;
    let Query(params) = params.map_err(bad_query)?;
    if !caller.user.handle.eq_ignore_ascii_case(&operator) {
        return Err(ApiError::forbidden(
            "not_operator",
            "only a provider's operator may list the requests it served",
        ));
    }
    let provider = find(&store, &operator, &name).await?;
    let query = params.apply(
        RecordQuery::served_by(caller.user.id).with_provider(provider.name),
        true,
    )?;
    Ok(axum::Json::<ListPage<_>>(page(&store, &query).await?).into_response())
}

/// The most logins an access policy set through the API may name.
pub const MAX_POLICY_LOGINS: usize = 1000;

/// The body of `PATCH /api/v1/providers/{operator}/{name}`: each field is optional; a field
/// that is absent changes nothing, `null` removes an override.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyChange {
    /// The kill switch: `false` routes nothing to the provider.
    pub accepting: Option<bool>,
    /// The provider-wide access override (`Some(None)` removes it).
    #[serde(default, deserialize_with = "present")]
    pub access: Option<Option<AccessPolicy>>,
    /// Per-service access overrides (`None` removes one).
    pub services: Option<BTreeMap<String, Option<AccessPolicy>>>,
}

/// A field that is present, even as `null`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

fn check_policy(policy: &AccessPolicy, param: &str) -> Result<(), ApiError> {
    if let AccessPolicy::Logins(logins) = policy {
        let bad = logins.iter().find(|login| !is_github_login(login));
        if logins.is_empty() || logins.len() > MAX_POLICY_LOGINS || bad.is_some() {
            let message = match bad {
                Some(login) => format!("{login:?} is not a GitHub login"),
                None => format!("logins must list 1 to {MAX_POLICY_LOGINS} GitHub logins"),
            };
            return Err(ApiError::bad_request("invalid_access", message).with_param(param));
        }
    }
    Ok(())
}

/// `PATCH /api/v1/providers/{operator}/{name}` with `{"accepting": bool, "access": <policy> |
/// null, "services": {"<service>": <policy> | null}}`: the operator's access overrides and kill
/// switch, stored, in force at once on the live node and on its next links. Its operator only
/// (a key with the `account` scope, or a session); answers with the updated profile.
pub async fn update_policy(
    State(store): State<Store>,
    State(fleet): State<Arc<Fleet>>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = auth::require(&store, &headers, Scope::Account).await?;
    let Path((operator, name)) = path.map_err(bad_path)?;
    let change: PolicyChange = json_body(body).await?;
    change_policy(
        &store,
        &fleet,
        &caller.user.handle,
        &operator,
        &name,
        change,
    )
    .await?;
    Ok(axum::Json(profile_of(&store, &fleet, &operator, &name).await?).into_response())
}

/// Applies `change` to the provider `operator/name` for the member `handle` (the rules of
/// `PATCH /api/v1/providers/{operator}/{name}`, shared with the dashboard): its operator only,
/// every value checked before anything changes, stored and in force at once on the live node.
pub(crate) async fn change_policy(
    store: &Store,
    fleet: &Fleet,
    handle: &str,
    operator: &str,
    name: &str,
    change: PolicyChange,
) -> Result<(), ApiError> {
    if !handle.eq_ignore_ascii_case(operator) {
        return Err(ApiError::forbidden(
            "not_operator",
            "only a provider's operator may change its access or stop it accepting requests",
        ));
    }
    if change.accepting.is_none() && change.access.is_none() && change.services.is_none() {
        return Err(ApiError::bad_request(
            "nothing_to_change",
            "send what to change: {\"accepting\": bool, \"access\": <policy> | null, \
             \"services\": {\"<service>\": <policy> | null}}",
        ));
    }
    let provider = find(store, operator, name).await?;
    let key = NodeKey {
        operator_id: provider.operator_id,
        provider: provider.name.clone(),
    };
    let live = fleet.find_node(&key);
    let manifest = match &live {
        Some(node) => Some(node.offer().manifest.clone()),
        None => serde_json::from_value::<ServiceManifest>(provider.manifest.clone()).ok(),
    };
    let mut policy: ProviderPolicy = provider.policy.clone();
    if let Some(accepting) = change.accepting {
        policy.accepting = accepting;
    }
    if let Some(access) = change.access {
        if let Some(access) = &access {
            check_policy(access, "access")?;
        }
        policy.access = access;
    }
    if let Some(services) = change.services {
        for (service, access) in services {
            let param = format!("services.{service}");
            let known = manifest
                .as_ref()
                .is_some_and(|m| m.services().any(|s| s.name == service));
            if !known {
                return Err(ApiError::bad_request(
                    "unknown_service",
                    format!("the provider's manifest has no service named {service:?}"),
                )
                .with_param(&param));
            }
            match access {
                Some(access) => {
                    check_policy(&access, &param)?;
                    policy.services.insert(service, access);
                }
                None => {
                    policy.services.remove(&service);
                }
            }
        }
    }
    store.set_provider_policy(provider.id, &policy).await?;
    fleet.set_node_policy(&key, policy);
    Ok(())
}
