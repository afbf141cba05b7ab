//! The club on the web: server-rendered HTML pages, fast without JavaScript.
//!
//! | route | page | who |
//! |---|---|---|
//! | `GET /` | the public feed, newest first (`?model=`, `?cursor=`) | anyone |
//! | `GET /r/{id}` | one request: prompt, answer, folded reasoning, metadata | as `GET /api/v1/requests/{id}` |
//! | `GET /u/{handle}` | a member's public requests and the nodes they operate | anyone |
//! | `GET /providers` | who is online, their hardware and models | anyone |
//! | `GET /models/{model}` | which nodes serve a model, their recent speed | anyone |
//! | `GET /terms` | the club's terms and privacy policy | anyone |
//! | `GET /playground` | chat with streaming (a small script over `/v1/chat/completions`) | members |
//! | `GET /dashboard` (+ `/requests`, `/batches`, `/keys`, `/nodes`, `/settings`, `/account`) | the member's own | members |
//! | `GET /dashboard/files/{id}` | one of the member's files (a batch's output or errors), downloaded | its owner |
//!
//! Pages read through the same store queries and the same rules as the JSON API: the feed is
//! [`RecordQuery::public_feed`](super::store::RecordQuery::public_feed), a request page
//! answers a record only when
//! [`StoredRecord::readable_by`](super::store::StoredRecord::readable_by) allows (else the same
//! 404 as an unknown id), and the dashboard's forms go through the club API's own functions
//! (visibility and deletion by owner only, key creation with its limits, settings, a node's
//! kill switch, account deletion). A browser is a member by its session cookie (`club_session`).
//!
//! State-changing forms post to routes under `/dashboard/` and carry the session's CSRF token
//! in a `csrf_token` field ([`checks_own_csrf`]); the playground's script sends the
//! `x-csrf-token` header with `/v1/chat/completions`. Each page carries a strict
//! `Content-Security-Policy` (its own stylesheet and script only: no external assets) and a
//! `Server-Timing: app;dur=…` header with the time the server spent on it. Unknown pages get
//! an HTML 404; unknown `/api/` and `/v1/` routes keep the JSON envelope.

pub(crate) mod assets;
pub(crate) mod batches;
pub(crate) mod dashboard;
mod forms;
pub(crate) mod layout;
pub(crate) mod playground;
pub(crate) mod public;

use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use maud::Markup;

use super::error::ApiError;
use super::store::User;
use crate::auth::cookies;
use crate::store::Store;

/// The prefix of the web's form routes: each checks the `csrf_token` field itself.
pub const FORM_PREFIX: &str = "/dashboard/";

/// Whether a state-changing request to `path` is one of the web's HTML forms, which check the
/// session's CSRF token in their `csrf_token` field themselves (a form cannot set a header).
pub fn checks_own_csrf(method: &Method, path: &str) -> bool {
    *method == Method::POST && path.starts_with(FORM_PREFIX)
}

/// Middleware: `Server-Timing: app;dur=<ms>`, the server's time on the page.
pub(crate) async fn timed(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let mut response = next.run(request).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(value) = HeaderValue::from_str(&format!("app;dur={ms:.3}")) {
        response.headers_mut().insert("server-timing", value);
    }
    response
}

/// The member a browser is signed in as, with the session's CSRF token for its forms.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The member.
    pub user: User,
    /// What the page's forms and scripts send back as the CSRF token.
    pub csrf_token: String,
}

/// The viewer of a request, if its session cookie names a live session. An API key does not
/// sign a browser in.
pub(crate) async fn viewer(store: &Store, headers: &HeaderMap) -> Result<Option<Viewer>, WebError> {
    Ok(cookies::from_cookie(store, headers)
        .await?
        .map(|(user, session)| Viewer {
            user,
            csrf_token: session.csrf_token,
        }))
}

/// The content security policy of every page: its own stylesheet, script, icon, and the audio and
/// images of records, only.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; media-src 'self'; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// An HTML response with the page headers. Personal pages (`private`) are never cached.
pub(crate) fn html(status: StatusCode, markup: Markup, private: bool) -> Response {
    let mut response = (status, markup.into_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if private { "no-store" } else { "no-cache" }),
    );
    response
}

/// An error as a page: its status, a title and what to do.
#[derive(Debug, Clone)]
pub struct WebError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The page's heading.
    pub title: String,
    /// What happened and what to do.
    pub message: String,
    /// Offer the GitHub sign-in, back to this path.
    pub sign_in: Option<String>,
}

impl WebError {
    /// A 404 page for `what` (a request, a member, a model, a page).
    pub fn not_found(what: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            title: "Not found".to_owned(),
            message: format!(
                "There is no {what} here, or it is not visible to you. Private requests are \
                 shown only to the member who made them and to the operator of the node that \
                 served them."
            ),
            sign_in: None,
        }
    }

    /// A 401 page inviting the browser to sign in and come back to `next`.
    pub fn sign_in(next: &str) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            title: "Sign in to continue".to_owned(),
            message: "This page is a member's own: sign in with GitHub to see it.".to_owned(),
            sign_in: Some(crate::auth::cookies::local_path(Some(next))),
        }
    }
}

impl From<ApiError> for WebError {
    fn from(error: ApiError) -> Self {
        let title = match error.status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::UNAUTHORIZED => "Sign in to continue",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::TOO_MANY_REQUESTS => "Too many requests",
            StatusCode::PAYLOAD_TOO_LARGE => "Too large",
            s if s.is_server_error() => "Something went wrong",
            _ => "That did not work",
        };
        Self {
            status: error.status,
            title: title.to_owned(),
            message: error.error.message,
            sign_in: None,
        }
    }
}

impl From<super::store::StoreError> for WebError {
    fn from(error: super::store::StoreError) -> Self {
        ApiError::from(error).into()
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        html(self.status, layout::error_page(&self), true)
    }
}

/// The coordinator's fallback: unknown API routes answer the JSON envelope, anything else an
/// HTML 404 page.
pub async fn fallback(uri: Uri) -> Response {
    let path = uri.path();
    let machine = ["/api", "/v1", "/auth", "/static"]
        .iter()
        .any(|prefix| path == *prefix || path.starts_with(&format!("{prefix}/")));
    if machine {
        ApiError::not_found("unknown_route", "no such route").into_response()
    } else {
        WebError::not_found("page").into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dashboard_posts_check_their_own_csrf() {
        assert!(checks_own_csrf(&Method::POST, "/dashboard/keys"));
        assert!(!checks_own_csrf(&Method::POST, "/dashboard"));
        assert!(!checks_own_csrf(&Method::DELETE, "/dashboard/keys"));
        assert!(!checks_own_csrf(&Method::POST, "/api/v1/keys"));
        assert!(!checks_own_csrf(&Method::POST, "/v1/chat/completions"));
    }
}
