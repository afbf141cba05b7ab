//! Browser sessions: the `club_session` cookie, CSRF protection, `GET /api/v1/session` and
//! sign-out.
//!
//! The cookie is HttpOnly, SameSite=Lax, Path=/, `Secure` when the coordinator's public URL is
//! https, and lasts [`SESSION_LIFETIME`]. A session authenticates like a key with every scope
//! ([`auth::caller`]); a state-changing request (POST, PATCH,
//! PUT, DELETE) authenticated by the cookie must carry `x-csrf-token` equal to the session's
//! CSRF token, else 403 `csrf_failed` ([`csrf_guard`]). Requests with a bearer key need no CSRF
//! token: a browser never adds that header on its own.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::auth::cookies::{
    CSRF_HEADER, MAX_FORM_BYTES, SESSION_COOKIE, clear_cookie, cookie, from_cookie, secure_cookies,
    see_other, set_cookie,
};
use crate::error::ApiError;
use crate::store::Store;
use crate::store::{SESSION_LIFETIME, Session, User, UserId, same_secret};
use crate::{CoordinatorConfig, auth};

/// Starts a session for `user_id` and sends the browser to `next`, clearing `also_clear`
/// (the sign-in's own cookies: name and path).
pub(crate) async fn start_session(
    store: &Store,
    config: &CoordinatorConfig,
    user_id: UserId,
    next: &str,
    also_clear: &[(&str, &str)],
) -> Result<Response, ApiError> {
    let secure = secure_cookies(config);
    let (_, token) = store.create_session(user_id).await?;
    let mut cookies = vec![set_cookie(
        SESSION_COOKIE,
        &token,
        "/",
        SESSION_LIFETIME,
        secure,
    )?];
    for (name, path) in also_clear {
        cookies.push(clear_cookie(name, path, secure)?);
    }
    see_other(next, cookies)
}

fn csrf_failed() -> ApiError {
    ApiError::forbidden(
        "csrf_failed",
        "this request is authenticated by the session cookie, so it must carry the header \
         `x-csrf-token` with the session's CSRF token (from GET /api/v1/session)",
    )
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Middleware: a state-changing request authenticated by the session cookie (no bearer key)
/// must carry `x-csrf-token` equal to the session's token; 403 `csrf_failed` otherwise, and
/// the handler does not run. `/auth/*` routes check their own (a form field or the header), as
/// do the web pages' HTML forms ([`web::checks_own_csrf`](crate::web::checks_own_csrf)).
pub async fn csrf_guard(State(store): State<Store>, request: Request, next: Next) -> Response {
    let guarded = changes_state(request.method())
        && !request.uri().path().starts_with("/auth/")
        && !crate::web::checks_own_csrf(request.method(), request.uri().path())
        && auth::bearer(request.headers()).is_none()
        && cookie(request.headers(), SESSION_COOKIE).is_some();
    if guarded {
        match from_cookie(&store, request.headers()).await {
            Ok(Some((_, session))) => {
                let sent = request
                    .headers()
                    .get(CSRF_HEADER)
                    .and_then(|v| v.to_str().ok());
                if !sent.is_some_and(|sent| same_secret(sent, &session.csrf_token)) {
                    return csrf_failed().into_response();
                }
            }
            // An unknown or ended session authenticates nobody: the handler answers.
            Ok(None) => {}
            Err(error) => return error.into_response(),
        }
    }
    next.run(request).await
}

/// What `GET /api/v1/session` answers.
#[derive(Debug, Clone, Serialize)]
pub struct SessionView {
    /// Always `club.session`.
    pub object: &'static str,
    /// The member's handle.
    pub handle: String,
    /// What to send as `x-csrf-token` with state-changing requests.
    pub csrf_token: String,
    /// When the session ends.
    pub expires_at: DateTime<Utc>,
}

/// `GET /api/v1/session`: the browser's session (401 without one).
pub async fn current(State(store): State<Store>, headers: HeaderMap) -> Result<Response, ApiError> {
    let Some((user, session)) = from_cookie(&store, &headers).await? else {
        return Err(ApiError::unauthorized(
            "No session: sign in at /auth/github.",
        ));
    };
    let mut response = axum::Json(SessionView {
        object: "club.session",
        handle: user.handle,
        csrf_token: session.csrf_token,
        expires_at: session.expires_at,
    })
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The session of a sign-out request, whose CSRF token (form field `csrf_token` or the header)
/// must match; `None` when the cookie names no live session.
async fn signing_out(
    store: &Store,
    headers: &HeaderMap,
    body: Body,
) -> Result<Option<(User, Session)>, ApiError> {
    let Some((user, session)) = from_cookie(store, headers).await? else {
        return Ok(None);
    };
    let header = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| {
            ApiError::too_large(format!("the form is larger than {MAX_FORM_BYTES} bytes"))
        })?;
    let field = url::form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "csrf_token")
        .map(|(_, v)| v.into_owned());
    let sent = header.map(str::to_owned).or(field);
    if sent.is_some_and(|sent| same_secret(&sent, &session.csrf_token)) {
        Ok(Some((user, session)))
    } else {
        Err(csrf_failed())
    }
}

fn signed_out(config: &CoordinatorConfig) -> Result<Response, ApiError> {
    see_other(
        "/",
        vec![clear_cookie(SESSION_COOKIE, "/", secure_cookies(config))?],
    )
}

/// `POST /auth/signout`: ends this session; 303 to `/`.
pub async fn sign_out(
    State(store): State<Store>,
    State(config): State<Arc<CoordinatorConfig>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if signing_out(&store, &headers, body).await?.is_some()
        && let Some(token) = cookie(&headers, SESSION_COOKIE)
    {
        store.end_session(token).await?;
    }
    signed_out(&config)
}

/// `POST /auth/signout-everywhere`: ends every session of the member; 303 to `/`.
pub async fn sign_out_everywhere(
    State(store): State<Store>,
    State(config): State<Arc<CoordinatorConfig>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if let Some((user, _)) = signing_out(&store, &headers, body).await? {
        store.end_sessions_of(user.id).await?;
    }
    signed_out(&config)
}
