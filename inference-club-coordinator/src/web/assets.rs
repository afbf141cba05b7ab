//! The one stylesheet, the small script and the icon, compiled into the binary.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// The stylesheet.
pub(crate) const STYLESHEET: &str = include_str!("static/club.css");
/// The script: copy buttons and the playground's streaming chat.
pub(crate) const SCRIPT: &str = include_str!("static/club.js");
/// The icon.
pub(crate) const ICON: &str = include_str!("static/icon.svg");

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `GET /static/club.css`.
pub async fn stylesheet() -> Response {
    asset(STYLESHEET, "text/css; charset=utf-8")
}

/// `GET /static/club.js`.
pub async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /static/icon.svg` (and `/favicon.ico`).
pub async fn icon() -> Response {
    asset(ICON, "image/svg+xml")
}
