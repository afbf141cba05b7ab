//! The HTML of sign-in, kept in one place: the new member's confirmation form.

use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};

/// `text` with the characters HTML gives meaning to escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// The confirmation form a new member fills in once: 18 or older, the terms (linked), and the
/// flow token in a hidden field. Posts to `/auth/confirm`.
pub fn confirm_page(handle: &str, flow_token: &str) -> Response {
    let handle = escape(handle);
    let flow_token = escape(flow_token);
    let html = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Join Inference Club</title>
</head>
<body>
<main>
<h1>Join Inference Club as {handle}</h1>
<p>Your account will keep your GitHub username and e-mail address, and nothing else about you.
Requests you make are public by default; you can make them unlisted or private, delete them, or
delete your account at any time.</p>
<form method="post" action="/auth/confirm">
<input type="hidden" name="flow" value="{flow_token}">
<p><input type="checkbox" id="age" name="age" value="yes" required>
<label for="age">I am 18 or older</label></p>
<p><input type="checkbox" id="terms" name="terms" value="yes" required>
<label for="terms">I accept the <a href="/terms">terms</a></label></p>
<p><button type="submit">Create my account</button></p>
</form>
</main>
</body>
</html>
"#
    );
    let mut response = Html(html).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; form-action 'self'; frame-ancestors 'none'"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
