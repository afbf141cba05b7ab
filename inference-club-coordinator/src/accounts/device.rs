//! The CLI's sign-in (`club login`): GitHub's device flow, with the coordinator as the OAuth
//! client. The CLI gets an opaque `device_token`, shows the member the code and the page, polls
//! the coordinator, and ends with a new API key (scopes `inference` and `account`).
//!
//! - `POST /api/v1/auth/device` (no auth, no body): 200 `club.device_authorization` with
//!   `device_token`, `user_code`, `verification_uri`, `expires_in`, `interval`. GitHub's own
//!   device code stays on the coordinator, in a flow row keyed by the hash of `device_token`.
//! - `POST /api/v1/auth/device/token` `{"device_token", "accept_terms": false, "key_name"}`:
//!   one poll of GitHub. 200 `club.device_token` with the key (shown once) when approved; 400
//!   `authorization_pending` / `slow_down` / `expired_token` / `access_denied` (GitHub's
//!   answers) or `invalid_device_token`; 403 `terms_required` when the GitHub account has no
//!   club account yet and `accept_terms` was not true (the identity is kept on the flow, so
//!   the next poll with `"accept_terms": true` creates the account). A `device_token` that
//!   returned a key is spent.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use oauth2::StandardDeviceAuthorizationResponse;
use serde::{Deserialize, Serialize};

use super::{DevicePoll, MAX_DEVICE_LIFETIME, returning_member, sign_in_error};
use crate::CoordinatorConfig;
use crate::accounts::SignIn;
use crate::club_api::account::{MAX_KEY_NAME_CHARS, MAX_KEYS_PER_MEMBER};
use crate::club_api::json_body;
use crate::error::ApiError;
use crate::store::Store;
use crate::store::{FlowKind, GitHubIdentity, Scope, Scopes, SignInFlow, User, now, random_token};

/// The name of a key `club login` creates when the CLI names none.
pub const DEFAULT_KEY_NAME: &str = "club login";

/// What `POST /api/v1/auth/device` answers.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceAuthorization {
    /// Always `club.device_authorization`.
    pub object: &'static str,
    /// The CLI's handle on this sign-in (send it to `/api/v1/auth/device/token`).
    pub device_token: String,
    /// The code the member types at `verification_uri`.
    pub user_code: String,
    /// Where the member approves (GitHub's device page).
    pub verification_uri: String,
    /// Seconds until the codes expire.
    pub expires_in: u64,
    /// Seconds to wait between polls.
    pub interval: u64,
}

/// What `POST /api/v1/auth/device/token` answers once approved.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceToken {
    /// Always `club.device_token`.
    pub object: &'static str,
    /// The new API key: shown here and never again.
    pub key: String,
    /// Its id (what `DELETE /api/v1/keys/{id}` takes).
    pub key_id: String,
    /// The member's handle.
    pub handle: String,
    /// The key's scopes: `["inference", "account"]` (a list, as `/api/v1/keys` shows them).
    pub scopes: Scopes,
}

/// `POST /api/v1/auth/device`: starts a device flow at GitHub.
pub async fn start(
    State(store): State<Store>,
    State(sign_in): State<Arc<SignIn>>,
) -> Result<Response, ApiError> {
    let github = sign_in.github()?;
    let authorization = github.start_device().await?;
    let lifetime = authorization.expires_in().min(MAX_DEVICE_LIFETIME);
    let interval = authorization.interval().as_secs();
    let device_token = random_token()?;
    let mut flow = SignInFlow::new(FlowKind::Device, lifetime);
    flow.device_authorization = Some(
        serde_json::to_string(&authorization).map_err(|e| ApiError::internal("device flow", e))?,
    );
    flow.poll_interval = Some(interval);
    store.start_flow(&device_token, &flow).await?;
    no_store(axum::Json(DeviceAuthorization {
        object: "club.device_authorization",
        device_token,
        user_code: authorization.user_code().secret().clone(),
        verification_uri: authorization.verification_uri().to_string(),
        expires_in: lifetime.as_secs(),
        interval,
    }))
}

fn no_store(body: impl IntoResponse) -> Result<Response, ApiError> {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The body of `POST /api/v1/auth/device/token`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    device_token: String,
    #[serde(default)]
    accept_terms: bool,
    #[serde(default)]
    key_name: Option<String>,
}

fn device_error(code: &str, message: &str) -> ApiError {
    ApiError::bad_request(code, message)
}

fn invalid_device_token() -> ApiError {
    device_error(
        "invalid_device_token",
        "this device_token is unknown or already used; start again with POST /api/v1/auth/device",
    )
    .with_param("device_token")
}

fn expired() -> ApiError {
    device_error(
        "expired_token",
        "the code expired before it was approved; start again with POST /api/v1/auth/device",
    )
}

fn terms_required(handle: &str) -> ApiError {
    ApiError::forbidden(
        "terms_required",
        format!(
            "GitHub account {handle} has no club account yet: to create it, confirm that you are \
             18 or older and accept the terms (/terms) by polling again with \"accept_terms\": true"
        ),
    )
}

/// `POST /api/v1/auth/device/token`: one poll.
pub async fn token(
    State(store): State<Store>,
    State(sign_in): State<Arc<SignIn>>,
    State(_config): State<Arc<CoordinatorConfig>>,
    body: Body,
) -> Result<Response, ApiError> {
    let github = sign_in.github()?;
    let request: TokenRequest = json_body(body).await?;
    let key_name = match request.key_name.as_deref().map(str::trim) {
        None | Some("") => DEFAULT_KEY_NAME.to_owned(),
        Some(name)
            if name.chars().count() <= MAX_KEY_NAME_CHARS
                && !name.chars().any(char::is_control) =>
        {
            name.to_owned()
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_name",
                format!(
                    "key_name must be 1 to {MAX_KEY_NAME_CHARS} characters, without control characters"
                ),
            )
            .with_param("key_name"));
        }
    };
    let secret = request.device_token.trim();
    let Some(flow) = store.flow(secret, FlowKind::Device).await? else {
        return Err(invalid_device_token());
    };
    if flow.is_expired() {
        store.take_flow(secret, FlowKind::Device).await?;
        return Err(expired());
    }
    // Approved earlier, waiting for the terms.
    if let Some(identity) = flow.identity {
        if !request.accept_terms {
            return Err(terms_required(&identity.login));
        }
        return finish(&store, secret, &identity, true, &key_name).await;
    }
    let interval = flow.poll_interval.unwrap_or(5);
    if !store.flow_polled(secret, now(), interval).await? {
        return Err(device_error(
            "slow_down",
            &format!("poll at most every {interval} seconds"),
        ));
    }
    let authorization: StandardDeviceAuthorizationResponse = flow
        .device_authorization
        .as_deref()
        .and_then(|json| serde_json::from_str(json).ok())
        .ok_or_else(|| ApiError::internal("device flow", "the stored device code is unreadable"))?;
    match github.poll_device(&authorization).await? {
        DevicePoll::Pending => Err(device_error(
            "authorization_pending",
            "not approved yet: enter the code at the verification page, then poll again",
        )),
        DevicePoll::SlowDown => {
            let slower = interval.saturating_add(5);
            store.set_poll_interval(secret, slower).await?;
            Err(device_error(
                "slow_down",
                &format!("polling too fast: poll at most every {slower} seconds"),
            ))
        }
        DevicePoll::Expired => {
            store.take_flow(secret, FlowKind::Device).await?;
            Err(expired())
        }
        DevicePoll::Denied => {
            store.take_flow(secret, FlowKind::Device).await?;
            Err(device_error(
                "access_denied",
                "the sign-in was declined at GitHub",
            ))
        }
        DevicePoll::Approved(access) => {
            let identity = github.identity(&access).await?;
            drop(access);
            finish(&store, secret, &identity, request.accept_terms, &key_name).await
        }
    }
}

/// Approved: the member's key, creating the account if its owner accepted the terms, or
/// parking the identity (403 `terms_required`) if not.
async fn finish(
    store: &Store,
    secret: &str,
    identity: &GitHubIdentity,
    accept_terms: bool,
    key_name: &str,
) -> Result<Response, ApiError> {
    let existing: Option<User> = returning_member(store, identity).await?;
    if existing.is_none() && !accept_terms {
        store.park_identity(secret, identity).await?;
        return Err(terms_required(&identity.login));
    }
    if let Some(user) = &existing
        && store.list_keys(user.id).await?.len() >= MAX_KEYS_PER_MEMBER
    {
        return Err(ApiError::bad_request(
            "too_many_keys",
            format!("a member may hold at most {MAX_KEYS_PER_MEMBER} keys; revoke one first"),
        ));
    }
    // Spend the device token first, so two polls racing cannot both get a key.
    if store.take_flow(secret, FlowKind::Device).await?.is_none() {
        return Err(invalid_device_token());
    }
    let user = match existing {
        Some(user) => user,
        None => store
            .create_github_member(identity, now())
            .await
            .map_err(sign_in_error)?,
    };
    let scopes = Scopes::only(Scope::Inference).with(Scope::Account);
    let (key, secret_key) = store.create_key(user.id, key_name, scopes).await?;
    no_store(axum::Json(DeviceToken {
        object: "club.device_token",
        key: secret_key,
        key_id: key.id.to_string(),
        handle: user.handle,
        scopes,
    }))
}
