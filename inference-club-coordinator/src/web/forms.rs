//! The web's HTML forms: read with a size limit, from a signed-in browser, with the session's
//! CSRF token in the `csrf_token` field. Every form route reads its form here, so none can
//! forget the check.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};

use super::{Viewer, WebError, viewer};
use crate::auth::cookies::MAX_FORM_BYTES;
use crate::store::Store;
use crate::store::same_secret;

/// A form's fields: every value of each name, in order.
#[derive(Debug, Default)]
pub(crate) struct Fields(HashMap<String, Vec<String>>);

impl Fields {
    /// Parses a URL-encoded form.
    pub(crate) fn parse(bytes: &[u8]) -> Self {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (key, value) in url::form_urlencoded::parse(bytes) {
            map.entry(key.into_owned())
                .or_default()
                .push(value.into_owned());
        }
        Self(map)
    }

    /// The first value of `name`, if any.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .and_then(|values| values.first())
            .map(String::as_str)
    }

    /// The first value of `name`, if any and not empty.
    pub(crate) fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.trim().is_empty())
    }

    /// Every value of `name`.
    pub(crate) fn all(&self, name: &str) -> &[String] {
        self.0.get(name).map(Vec::as_slice).unwrap_or_default()
    }
}

fn csrf_failed() -> WebError {
    WebError {
        status: StatusCode::FORBIDDEN,
        title: "This form has expired".to_owned(),
        message: "The form did not carry this session's security token (it may come from \
                  another session or another site). Go back, reload the page and try again."
            .to_owned(),
        sign_in: None,
    }
}

/// Reads a form posted to `path` by a signed-in browser: 401 (with sign-in) without a session,
/// 413 beyond [`MAX_FORM_BYTES`], 403 when `csrf_token` is not the session's.
pub(crate) async fn signed_form(
    store: &Store,
    headers: &HeaderMap,
    body: Body,
    path: &str,
) -> Result<(Viewer, Fields), WebError> {
    let Some(viewer) = viewer(store, headers).await? else {
        return Err(WebError::sign_in(path));
    };
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| WebError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            title: "Too large".to_owned(),
            message: format!("A form may be at most {MAX_FORM_BYTES} bytes."),
            sign_in: None,
        })?;
    let fields = Fields::parse(&bytes);
    match fields.get("csrf_token") {
        Some(sent) if same_secret(sent, &viewer.csrf_token) => Ok((viewer, fields)),
        _ => Err(csrf_failed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_every_value() {
        let fields = Fields::parse(b"scopes=inference&scopes=account&name=+");
        assert_eq!(fields.all("scopes"), ["inference", "account"]);
        assert_eq!(fields.get("name"), Some(" "));
        assert_eq!(fields.non_empty("name"), None);
        assert!(fields.all("nothing").is_empty());
    }
}
