//! `/api/v1/me` and `/api/v1/keys`: the member's account, settings, deletion and API keys. Every
//! route needs a key with the `account` scope.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use inference_club_core::record::Visibility;
use serde::{Deserialize, Serialize};

use super::{bad_path, json_body};
use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::fleet::Fleet;
use crate::limits::Limiter;
use crate::store::Store;
use crate::store::{ApiKey, KeyId, RoutingPreference, Scope, Scopes, User};

/// The most live keys a member may hold.
pub const MAX_KEYS_PER_MEMBER: usize = 50;
/// The longest key name, in characters.
pub const MAX_KEY_NAME_CHARS: usize = 100;

/// The member as `/api/v1/me` shows them (only to themselves).
#[derive(Debug, Clone, Serialize)]
pub struct MeView {
    /// Always `club.member`.
    pub object: &'static str,
    /// Their id.
    pub id: String,
    /// Their handle (GitHub login).
    pub handle: String,
    /// Their e-mail address, if known.
    pub email: Option<String>,
    /// When the account was created.
    pub created_at: DateTime<Utc>,
    /// The visibility of their requests when a request names none.
    pub default_visibility: Visibility,
    /// When they accepted the terms.
    pub terms_accepted_at: Option<DateTime<Utc>>,
    /// Where their requests may go: `any`, `prefer_own` or `only_own`.
    pub routing_preference: RoutingPreference,
}

impl From<User> for MeView {
    fn from(user: User) -> Self {
        Self {
            object: "club.member",
            id: user.id.to_string(),
            handle: user.handle,
            email: user.email,
            created_at: user.created_at,
            default_visibility: user.default_visibility,
            terms_accepted_at: user.terms_accepted_at,
            routing_preference: user.routing_preference,
        }
    }
}

/// A key as listed: its prefix, never its secret.
#[derive(Debug, Clone, Serialize)]
pub struct KeyView {
    /// Always `club.api_key`.
    pub object: &'static str,
    /// Its id (what `DELETE /api/v1/keys/{id}` takes).
    pub id: String,
    /// Its name.
    pub name: String,
    /// The first characters of the secret: enough to recognise it, useless to use it.
    pub prefix: String,
    /// What it may be used for.
    pub scopes: Scopes,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last used (to the minute).
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<ApiKey> for KeyView {
    fn from(key: ApiKey) -> Self {
        Self {
            object: "club.api_key",
            id: key.id.to_string(),
            name: key.name,
            prefix: key.prefix,
            scopes: key.scopes,
            created_at: key.created_at,
            last_used_at: key.last_used_at,
        }
    }
}

/// A key just created: its listing and, this once, its secret.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedKey {
    /// The key as it will be listed.
    #[serde(flatten)]
    pub key: KeyView,
    /// The secret: shown here and never again (only its hash is kept).
    pub secret: String,
}

async fn account(store: &Store, headers: &HeaderMap) -> Result<Caller, ApiError> {
    auth::require(store, headers, Scope::Account).await
}

/// `GET /api/v1/me`.
pub async fn me(State(store): State<Store>, headers: HeaderMap) -> Result<Response, ApiError> {
    let caller = account(&store, &headers).await?;
    Ok(axum::Json(MeView::from(caller.user)).into_response())
}

/// The body of `PATCH /api/v1/me`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    default_visibility: Option<String>,
    routing_preference: Option<String>,
}

/// `PATCH /api/v1/me` with `{"default_visibility": "public" | "unlisted" | "private",
/// "routing_preference": "any" | "prefer_own" | "only_own"}` (either or both). Every value is
/// checked before anything changes.
pub async fn update_me(
    State(store): State<Store>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = account(&store, &headers).await?;
    let settings: Settings = json_body(body).await?;
    let user = change_settings(
        &store,
        caller.user,
        settings.default_visibility.as_deref(),
        settings.routing_preference.as_deref(),
    )
    .await?;
    Ok(axum::Json(MeView::from(user)).into_response())
}

/// Changes a member's settings (the rules of `PATCH /api/v1/me`, shared with the dashboard):
/// every value is checked before anything changes; at least one must be given.
pub(crate) async fn change_settings(
    store: &Store,
    user: User,
    default_visibility: Option<&str>,
    routing_preference: Option<&str>,
) -> Result<User, ApiError> {
    if default_visibility.is_none() && routing_preference.is_none() {
        return Err(ApiError::bad_request(
            "nothing_to_change",
            "send the settings to change: {\"default_visibility\": \"public\" | \"unlisted\" | \"private\", \"routing_preference\": \"any\" | \"prefer_own\" | \"only_own\"}",
        ));
    }
    let visibility = default_visibility
        .map(super::parse_visibility)
        .transpose()?;
    let preference = routing_preference
        .map(|text| {
            text.parse::<RoutingPreference>().map_err(|error| {
                ApiError::bad_request("invalid_routing_preference", error.to_string())
                    .with_param("routing_preference")
            })
        })
        .transpose()?;
    let mut user = user;
    if let Some(visibility) = visibility {
        user = store.update_settings(user.id, visibility).await?;
    }
    if let Some(preference) = preference {
        user = store.set_routing_preference(user.id, preference).await?;
    }
    Ok(user)
}

/// What `DELETE /api/v1/me` answers.
#[derive(Debug, Clone, Serialize)]
pub struct AccountDeleted {
    /// Always `club.account_deleted`.
    pub object: &'static str,
    /// The handle of the deleted account.
    pub handle: String,
    /// Always true.
    pub deleted: bool,
    /// What was removed from the club.
    pub removed: Vec<&'static str>,
    /// How many node links were closed.
    pub nodes_disconnected: usize,
    /// What the club cannot reach.
    pub not_reached: &'static str,
}

/// `DELETE /api/v1/me`: deletes the account and everything of theirs (their requests, keys,
/// providers and manifest history), closes their nodes' links, and says what it cannot reach.
pub async fn delete_me(
    State(store): State<Store>,
    State(fleet): State<Arc<Fleet>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = account(&store, &headers).await?;
    Ok(axum::Json(delete_account(&store, &fleet, caller.user).await?).into_response())
}

/// Deletes a member's account and everything of theirs (the rules of `DELETE /api/v1/me`,
/// shared with the dashboard).
pub(crate) async fn delete_account(
    store: &Store,
    fleet: &Fleet,
    user: User,
) -> Result<AccountDeleted, ApiError> {
    // Links first, so that no new job reaches their nodes while the account goes.
    let disconnected = fleet.close_operator(user.id, &user.handle);
    store.delete_user(user.id).await?;
    Ok(AccountDeleted {
        object: "club.account_deleted",
        handle: user.handle,
        deleted: true,
        removed: vec![
            "account",
            "api keys",
            "requests you made (every visibility)",
            "providers and their manifest history",
            "your handle on requests your nodes served for others",
        ],
        nodes_disconnected: disconnected,
        not_reached: "copies that operators of the nodes that served your requests kept on \
                      their own machines (such as their nodes' and engines' job logs), and \
                      copies others made of public content before deletion; requests others \
                      made that your nodes served stay theirs (without your handle)",
    })
}

/// `GET /api/v1/keys`: the member's live keys, newest first (prefix only).
pub async fn list_keys(
    State(store): State<Store>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = account(&store, &headers).await?;
    let keys = store.list_keys(caller.user.id).await?;
    let data: Vec<KeyView> = keys.into_iter().map(KeyView::from).collect();
    Ok(axum::Json(serde_json::json!({ "object": "list", "data": data })).into_response())
}

/// The body of `POST /api/v1/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    scopes: Vec<String>,
}

fn parse_new_key(new: NewKey) -> Result<(String, Scopes), ApiError> {
    let name = new.name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_KEY_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!(
                "name must be 1 to {MAX_KEY_NAME_CHARS} characters, without control characters"
            ),
        )
        .with_param("name"));
    }
    if new.scopes.is_empty() || new.scopes.len() > Scope::ALL.len() {
        return Err(ApiError::bad_request(
            "invalid_scopes",
            "scopes must list 1 to 3 of inference, provider, account",
        )
        .with_param("scopes"));
    }
    let scopes = new
        .scopes
        .iter()
        .map(|s| s.parse::<Scope>())
        .collect::<Result<Scopes, _>>()
        .map_err(|error| {
            ApiError::bad_request("invalid_scopes", error.to_string()).with_param("scopes")
        })?;
    Ok((name.to_owned(), scopes))
}

/// `POST /api/v1/keys` with `{"name", "scopes": ["inference", "provider", "account"]}`: 201
/// with the key and its secret, shown this once.
pub async fn create_key(
    State(limits): State<Arc<Limiter>>,
    State(store): State<Store>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = account(&store, &headers).await?;
    let rate = match limits.key_creation(caller.user.id) {
        Ok(rate) => rate,
        Err(throttled) => return Ok(throttled.into_response()),
    };
    let new: NewKey = json_body(body).await?;
    let created = create_key_for(&store, &caller.user, new.name, new.scopes).await?;
    let mut response = (StatusCode::CREATED, axum::Json(created)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    rate.apply(response.headers_mut());
    Ok(response)
}

/// Creates a key for `user` (the rules of `POST /api/v1/keys`, shared with the dashboard; the
/// caller checks the creation rate first): the name and scopes are checked, and a member holds
/// at most [`MAX_KEYS_PER_MEMBER`].
pub(crate) async fn create_key_for(
    store: &Store,
    user: &User,
    name: String,
    scopes: Vec<String>,
) -> Result<CreatedKey, ApiError> {
    let (name, scopes) = parse_new_key(NewKey { name, scopes })?;
    if store.list_keys(user.id).await?.len() >= MAX_KEYS_PER_MEMBER {
        return Err(ApiError::bad_request(
            "too_many_keys",
            format!("a member may hold at most {MAX_KEYS_PER_MEMBER} keys; revoke one first"),
        ));
    }
    let (key, secret) = store.create_key(user.id, &name, scopes).await?;
    Ok(CreatedKey {
        key: KeyView::from(key),
        secret,
    })
}

/// `DELETE /api/v1/keys/{id}`: revokes one of the member's keys at once; 204 (404 for a key
/// that is not theirs, unknown or already revoked).
pub async fn revoke_key(
    State(store): State<Store>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let caller = account(&store, &headers).await?;
    let Path(text) = path.map_err(bad_path)?;
    let id = (text.len() <= 64)
        .then(|| KeyId::parse(text.trim()))
        .flatten()
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_key_id",
                "a key id is a UUID (the `id` of a listed key)",
            )
            .with_param("id")
        })?;
    if store.revoke_key(caller.user.id, id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(
            "key_not_found",
            format!("No live key with id {text:?} is yours."),
        ))
    }
}
