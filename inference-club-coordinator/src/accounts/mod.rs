//! Accounts: GitHub sign-in and browser sessions.
//!
//! - [`github`]: the GitHub client (OAuth by the `oauth2` crate; `/user`, `/user/emails`), its
//!   endpoints configurable ([`GitHubConfig`]).
//! - [`web`]: the browser's sign-in — `GET /auth/github` → GitHub → `GET /auth/github/callback`
//!   → a session, or for a new member first `GET`/`POST /auth/confirm` (18 or older, terms).
//! - [`device`]: the CLI's sign-in (`club login`) — `POST /api/v1/auth/device` and
//!   `POST /api/v1/auth/device/token`; the coordinator is the OAuth client, the CLI never talks
//!   to GitHub, and what it gets is a new API key.
//! - [`session`]: the `club_session` cookie, CSRF, `GET /api/v1/session`, sign-out.
//! - [`pages`]: the little HTML sign-in needs.
//!
//! Accounts are found by GitHub's numeric user id, so a GitHub rename changes the handle (and
//! e-mail) at the next sign-in and keeps everything else. A new account keeps only the handle,
//! the primary verified e-mail, the GitHub id and when its owner confirmed they are 18 or older
//! and accept the terms. GitHub's access token is used to read who signed in and then dropped.
//!
//! Without [`CoordinatorConfig::github`](super::CoordinatorConfig::github), every sign-in
//! route answers 404 `sign_in_unavailable`; the rest of the coordinator works as before.

pub(crate) mod device;
pub mod github;
pub mod pages;
pub(crate) mod session;
pub(crate) mod web;

use std::time::Duration;

use axum::http::StatusCode;

pub use github::{DevicePoll, GitHub, GitHubError};

use super::error::ApiError;
use super::store::{GitHubIdentity, Store, StoreError, User};

/// How long a web sign-in may take at GitHub, and how long a new member's confirmation waits.
pub const FLOW_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// The longest a device flow lasts (GitHub's own limit is 15 minutes).
pub const MAX_DEVICE_LIFETIME: Duration = Duration::from_secs(15 * 60);
pub(crate) use crate::auth::cookies::MAX_FORM_BYTES;

/// Sign-in with GitHub, when the coordinator is configured for it.
#[derive(Debug)]
pub(crate) struct SignIn {
    github: Option<GitHub>,
}

impl SignIn {
    /// Sign-in through `github`; `None`: sign-in is off.
    pub fn new(github: Option<GitHub>) -> Self {
        Self { github }
    }

    /// The coordinator's GitHub client, or 404 `sign_in_unavailable` when none is configured.
    pub fn github(&self) -> Result<&GitHub, ApiError> {
        self.github.as_ref().ok_or_else(|| {
            ApiError::not_found(
                "sign_in_unavailable",
                "GitHub sign-in is not configured on this coordinator (no GitHub client id); \
                 ask its operator for an API key",
            )
        })
    }
}

impl From<GitHubError> for ApiError {
    fn from(error: GitHubError) -> Self {
        match error {
            GitHubError::Refused { code, description } => ApiError::bad_request(
                "github_refused",
                format!(
                    "GitHub refused the sign-in ({code}{}); start again",
                    description.map(|d| format!(": {d}")).unwrap_or_default()
                ),
            ),
            other => {
                tracing::warn!("GitHub: {other}");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "server_error",
                    "github_unavailable",
                    "GitHub could not be reached or answered unexpectedly; try again",
                )
            }
        }
    }
}

/// A store error of sign-in in the envelope: a handle held by another account is a 409 that
/// says what to do.
pub(crate) fn sign_in_error(error: StoreError) -> ApiError {
    if let StoreError::HandleTaken { handle } = &error {
        ApiError::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            "handle_taken",
            format!(
                "another club account holds the handle {handle:?} (its GitHub account was \
                 probably renamed); it is freed when that member signs in again, or by the operator"
            ),
        )
    } else {
        ApiError::from(error)
    }
}

/// The account of a GitHub identity that signed in, if it has one; its handle and e-mail
/// follow what GitHub says now.
pub(crate) async fn returning_member(
    store: &Store,
    identity: &GitHubIdentity,
) -> Result<Option<User>, ApiError> {
    let Some(user) = store.user_by_github_id(identity.id).await? else {
        return Ok(None);
    };
    if user.handle == identity.login && user.email == identity.email {
        return Ok(Some(user));
    }
    let user = store
        .update_github_identity(user.id, identity)
        .await
        .map_err(sign_in_error)?;
    Ok(Some(user))
}

/// The web flow's callback address under `public_url`.
pub fn callback_url(public_url: &url::Url) -> url::Url {
    let mut url = public_url.clone();
    let path = format!(
        "{}/auth/github/callback",
        public_url.path().trim_end_matches('/')
    );
    url.set_path(&path);
    url.set_query(None);
    url.set_fragment(None);
    url
}
