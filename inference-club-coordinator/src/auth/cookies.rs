//! Browser sessions' cookies: reading them, setting and clearing them, the redirects that carry
//! them, and the session a cookie names.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::CoordinatorConfig;
use crate::error::ApiError;
use crate::store::{Session, Store, User};

/// The largest form or query string a browser's request may carry, in bytes.
pub const MAX_FORM_BYTES: usize = 4 * 1024;
/// The longest `next` path a sign-in or form may send the browser back to.
const MAX_NEXT_CHARS: usize = 512;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "club_session";
/// The header a cookie-authenticated state-changing request must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The longest cookie value looked at.
const MAX_COOKIE_VALUE: usize = 256;

/// Whether cookies get `Secure`: the coordinator is served over https.
pub fn secure_cookies(config: &CoordinatorConfig) -> bool {
    config
        .public_url
        .as_ref()
        .is_some_and(|url| url.scheme() == "https")
}

/// The value of cookie `name` in the request's `Cookie` headers, if any.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim().trim_matches('"'))
        .filter(|value| !value.is_empty() && value.len() <= MAX_COOKIE_VALUE)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, `Secure` if `secure`.
pub(crate) fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    max_age: Duration,
    secure: bool,
) -> Result<HeaderValue, ApiError> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        max_age.as_secs()
    ))
    .map_err(|e| ApiError::internal("cookie", e))
}

/// A `Set-Cookie` value that removes cookie `name`.
pub(crate) fn clear_cookie(name: &str, path: &str, secure: bool) -> Result<HeaderValue, ApiError> {
    set_cookie(name, "", path, Duration::ZERO, secure)
}

/// A 303 to `location` setting `cookies`.
pub(crate) fn see_other(location: &str, cookies: Vec<HeaderValue>) -> Result<Response, ApiError> {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(location).map_err(|e| ApiError::internal("redirect", e))?,
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for cookie in cookies {
        headers.append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// The member and session of the request's cookie, if it names a live session.
pub async fn from_cookie(
    store: &Store,
    headers: &HeaderMap,
) -> Result<Option<(User, Session)>, ApiError> {
    match cookie(headers, SESSION_COOKIE) {
        Some(token) => Ok(store.session(token).await?),
        None => Ok(None),
    }
}

/// `next` if it is a path on this site (`/...`, not `//host` nor `/\host`), else `/`.
pub fn local_path(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.starts_with("/\\")
                && path.len() <= MAX_NEXT_CHARS
                && !path.chars().any(|c| c.is_control() || c == '\\') =>
        {
            path.to_owned()
        }
        _ => "/".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_from_every_header() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        headers.append(header::COOKIE, HeaderValue::from_static("club_session=abc"));
        assert_eq!(cookie(&headers, "b"), Some("2"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "c"), None);
        let value = set_cookie("n", "v", "/", Duration::from_secs(5), true).unwrap();
        assert_eq!(
            value.to_str().unwrap(),
            "n=v; Path=/; Max-Age=5; HttpOnly; SameSite=Lax; Secure"
        );
    }
}
