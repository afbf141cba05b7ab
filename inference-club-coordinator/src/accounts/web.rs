//! The browser's sign-in with GitHub.
//!
//! 1. `GET /auth/github[?next=/path]`: a random `state` is stored (a flow row, 10 minutes) and
//!    set in a short-lived HttpOnly cookie, and the browser goes to GitHub's authorize page.
//! 2. `GET /auth/github/callback?code&state`: the `state` must equal the cookie's and name a
//!    stored flow (used once); otherwise 400 and nothing happens. The code is exchanged, and
//!    `/user` and `/user/emails` read; the token is then dropped. A member (found by GitHub id)
//!    gets a session and goes to `next`; anyone else is parked in a pending confirmation.
//! 3. `GET /auth/confirm`: the form (18 or older, the terms); `POST /auth/confirm` with both
//!    boxes creates the account, starts a session and goes to `next`. Without both: 400, no
//!    account.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::session::start_session;
use super::{FLOW_LIFETIME, MAX_FORM_BYTES, pages, returning_member, sign_in_error};
use crate::CoordinatorConfig;
use crate::accounts::SignIn;
use crate::auth::cookies::local_path;
use crate::auth::cookies::{clear_cookie, cookie, secure_cookies, see_other, set_cookie};
use crate::error::ApiError;
use crate::store::Store;
use crate::store::{FlowKind, SignInFlow, random_token, same_secret};

/// The cookie that binds a web sign-in's `state` to the browser that started it.
pub const STATE_COOKIE: &str = "club_oauth_state";
/// The cookie that binds a pending confirmation to the browser.
pub const CONFIRM_COOKIE: &str = "club_sign_in";
/// Where the sign-in cookies live.
const AUTH_PATH: &str = "/auth";

/// The parameters of a query string or form (the first value of each name), at most
/// [`MAX_FORM_BYTES`].
fn params(text: &[u8]) -> Result<HashMap<String, String>, ApiError> {
    if text.len() > MAX_FORM_BYTES {
        return Err(ApiError::too_large(format!(
            "the query or form is larger than {MAX_FORM_BYTES} bytes"
        )));
    }
    let mut map = HashMap::new();
    for (key, value) in url::form_urlencoded::parse(text) {
        map.entry(key.into_owned())
            .or_insert_with(|| value.into_owned());
    }
    Ok(map)
}

/// The page a browser gets when this club has no GitHub sign-in.
fn sign_in_not_set_up() -> Response {
    crate::web::WebError {
        status: StatusCode::NOT_FOUND,
        title: "Sign-in is not set up on this club".to_owned(),
        message: "This coordinator has no GitHub sign-in configured (its operator starts it \
                  with --github-client-id and --github-client-secret to enable it). Until then \
                  members get API keys from the operator (club-coordinator key create); the \
                  feed, the providers and the API work without signing in."
            .to_owned(),
        sign_in: None,
    }
    .into_response()
}

/// `GET /auth/github[?next=/path]`: to GitHub's authorize page. Without GitHub configured, a
/// page (404) that says so: this is where the site's "Sign in" button leads.
pub async fn start(
    State(store): State<Store>,
    State(config): State<Arc<CoordinatorConfig>>,
    State(sign_in): State<Arc<SignIn>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let Ok(github) = sign_in.github() else {
        return Ok(sign_in_not_set_up());
    };
    let query = params(query.unwrap_or_default().as_bytes())?;
    let secret = random_token()?;
    let mut flow = SignInFlow::new(FlowKind::Web, FLOW_LIFETIME);
    flow.next_path = Some(local_path(query.get("next").map(String::as_str)));
    store.start_flow(&secret, &flow).await?;
    let location = github.authorize_url(&secret);
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(location.as_str()).map_err(|e| ApiError::internal("redirect", e))?,
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::SET_COOKIE,
        set_cookie(
            STATE_COOKIE,
            &secret,
            AUTH_PATH,
            FLOW_LIFETIME,
            secure_cookies(&config),
        )?,
    );
    Ok(response)
}

fn invalid_state() -> ApiError {
    ApiError::bad_request(
        "invalid_state",
        "this sign-in is not one this browser started, or it expired; start again at /auth/github",
    )
    .with_param("state")
}

/// `GET /auth/github/callback?code&state`: back from GitHub.
pub async fn callback(
    State(store): State<Store>,
    State(config): State<Arc<CoordinatorConfig>>,
    State(sign_in): State<Arc<SignIn>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let github = sign_in.github()?;
    let query = params(query.unwrap_or_default().as_bytes())?;
    let sent = query.get("state").map(String::as_str).unwrap_or_default();
    let bound = cookie(&headers, STATE_COOKIE).unwrap_or_default();
    if sent.is_empty() || !same_secret(sent, bound) {
        return Err(invalid_state());
    }
    let Some(flow) = store.take_flow(sent, FlowKind::Web).await? else {
        return Err(invalid_state());
    };
    if let Some(error) = query.get("error") {
        let code = if error == "access_denied" {
            "access_denied"
        } else {
            "github_refused"
        };
        return Err(ApiError::bad_request(
            code,
            format!("GitHub did not sign you in ({error}); start again at /auth/github"),
        ));
    }
    let Some(code) = query
        .get("code")
        .filter(|c| !c.is_empty() && c.len() <= 256)
    else {
        return Err(
            ApiError::bad_request("invalid_code", "GitHub sent no code back").with_param("code"),
        );
    };
    let token = github.exchange_code(code).await?;
    let identity = github.identity(&token).await?;
    drop(token);
    let next = flow.next_path.unwrap_or_else(|| "/".to_owned());
    if let Some(user) = returning_member(&store, &identity).await? {
        return start_session(
            &store,
            &config,
            user.id,
            &next,
            &[(STATE_COOKIE, AUTH_PATH)],
        )
        .await;
    }
    let secret = random_token()?;
    let mut pending = SignInFlow::new(FlowKind::Confirm, FLOW_LIFETIME);
    pending.next_path = Some(next);
    pending.identity = Some(identity);
    store.start_flow(&secret, &pending).await?;
    let secure = secure_cookies(&config);
    see_other(
        "/auth/confirm",
        vec![
            clear_cookie(STATE_COOKIE, AUTH_PATH, secure)?,
            set_cookie(CONFIRM_COOKIE, &secret, AUTH_PATH, FLOW_LIFETIME, secure)?,
        ],
    )
}

fn no_pending() -> ApiError {
    ApiError::bad_request(
        "no_pending_sign_in",
        "no sign-in is waiting for confirmation in this browser (it may have expired); \
         start again at /auth/github",
    )
}

/// `GET /auth/confirm`: the new member's confirmation form.
pub async fn confirm_form(
    State(store): State<Store>,
    State(sign_in): State<Arc<SignIn>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    sign_in.github()?;
    let Some(secret) = cookie(&headers, CONFIRM_COOKIE) else {
        return Err(no_pending());
    };
    let flow = store.flow(secret, FlowKind::Confirm).await?;
    let Some(identity) = flow.filter(|f| !f.is_expired()).and_then(|f| f.identity) else {
        return Err(no_pending());
    };
    Ok(pages::confirm_page(&identity.login, secret))
}

/// `POST /auth/confirm` (form: `flow`, `age=yes`, `terms=yes`): creates the account.
pub async fn confirm(
    State(store): State<Store>,
    State(sign_in): State<Arc<SignIn>>,
    State(config): State<Arc<CoordinatorConfig>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    sign_in.github()?;
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| {
            ApiError::too_large(format!("the form is larger than {MAX_FORM_BYTES} bytes"))
        })?;
    let form = params(&bytes)?;
    let bound = cookie(&headers, CONFIRM_COOKIE).unwrap_or_default();
    let sent = form.get("flow").map(String::as_str).unwrap_or_default();
    if sent.is_empty() || !same_secret(sent, bound) {
        return Err(no_pending());
    }
    let checked = |name: &str| form.get(name).is_some_and(|v| v == "yes" || v == "on");
    if !checked("age") || !checked("terms") {
        return Err(ApiError::bad_request(
            "confirmation_required",
            "to join, confirm that you are 18 or older and that you accept the terms (both boxes)",
        ));
    }
    let Some(flow) = store.take_flow(sent, FlowKind::Confirm).await? else {
        return Err(no_pending());
    };
    let Some(identity) = flow.identity else {
        return Err(no_pending());
    };
    let user = store
        .create_github_member(&identity, crate::store::now())
        .await
        .map_err(sign_in_error)?;
    let next = flow.next_path.unwrap_or_else(|| "/".to_owned());
    start_session(
        &store,
        &config,
        user.id,
        &next,
        &[(CONFIRM_COOKIE, AUTH_PATH)],
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_only_a_local_path() {
        assert_eq!(local_path(Some("/requests?x=1")), "/requests?x=1");
        assert_eq!(local_path(Some("//evil.example/")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(Some("https://evil.example/")), "/");
        assert_eq!(local_path(Some("/a\nb")), "/");
        assert_eq!(local_path(None), "/");
    }
}
