//! The HTTP plumbing shared by the backends.

use std::time::Duration;

use inference_club_core::openai::ErrorResponse;
use inference_club_core::provider::{ProviderError, RequestContext, TimeoutPhase};

use crate::Timeouts;

/// The most of an error body that is read from an engine.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// An HTTP client for engines: connect timeout, no total timeout (streams may be long).
pub(crate) fn client(connect: Duration) -> Result<reqwest::Client, ProviderError> {
    let tls = inference_club_core::tls::client_config().map_err(|e| ProviderError::Protocol {
        message: format!("cannot configure TLS: {e}"),
    })?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(connect)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| ProviderError::Protocol {
            message: format!("cannot build an HTTP client: {e}"),
        })
}

/// The URLs of an engine's endpoints, `paths` relative to `base_url` (an absolute http(s) URL,
/// with or without a trailing slash).
pub(crate) fn endpoint_urls<const N: usize>(
    base_url: &str,
    paths: [&str; N],
) -> Result<[url::Url; N], ProviderError> {
    let invalid = |why: String| ProviderError::Protocol {
        message: format!("invalid engine URL {base_url:?}: {why}"),
    };
    let mut base = url::Url::parse(base_url).map_err(|e| invalid(e.to_string()))?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(invalid("not http(s)".into()));
    }
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    let mut urls = Vec::with_capacity(N);
    for path in paths {
        urls.push(base.join(path).map_err(|e| invalid(e.to_string()))?);
    }
    urls.try_into()
        .map_err(|_| invalid("wrong number of endpoints".into()))
}

/// The caller's client, or a new one with the connect timeout.
pub(crate) fn client_or_new(
    given: Option<reqwest::Client>,
    connect: Duration,
) -> Result<reqwest::Client, ProviderError> {
    match given {
        Some(client) => Ok(client),
        None => client(connect),
    }
}

/// The request with `Authorization: Bearer KEY` when there is a key.
pub(crate) fn authorized(
    builder: reqwest::RequestBuilder,
    api_key: Option<&str>,
) -> reqwest::RequestBuilder {
    match api_key {
        Some(key) => builder.bearer_auth(key),
        None => builder,
    }
}

/// The error for a request that did not get a response.
pub(crate) fn send_error(error: &reqwest::Error, connect: Duration) -> ProviderError {
    if error.is_timeout() {
        ProviderError::Timeout {
            phase: TimeoutPhase::Connect,
            after: connect,
        }
    } else {
        ProviderError::Unavailable {
            status: None,
            message: format!("cannot reach the engine: {}", error_chain(error)),
        }
    }
}

/// An error with its causes, which reqwest keeps in its source chain.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The error for a non-success response: the engine's message when the body is an OpenAI or
/// Ollama error object, the body as text otherwise. A 404 whose body is an error object naming
/// the model is [`ProviderError::ModelNotFound`].
pub(crate) async fn status_error(response: reqwest::Response, model: &str) -> ProviderError {
    let status = response.status().as_u16();
    let body = read_limited(response, MAX_ERROR_BODY_BYTES).await;
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    let (message, code) = if let Ok(envelope) = serde_json::from_str::<ErrorResponse>(&text) {
        (envelope.error.message, envelope.error.code)
    } else if let Some(message) = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
    {
        (message, None)
    } else if text.is_empty() {
        (format!("HTTP {status}"), None)
    } else {
        (text, None)
    };
    if status == 404 && !model.is_empty() && message.contains(model) {
        return ProviderError::ModelNotFound {
            model: model.to_owned(),
        };
    }
    ProviderError::from_status(status, message, code)
}

/// Whether a `content-type` names JSON: `application/json`, or a `+json` type such as
/// `application/problem+json` (parameters such as `charset` aside).
pub(crate) fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence.to_ascii_lowercase().ends_with("+json")
}

/// The response's `content-type`, or `application/octet-stream` when it has none.
pub(crate) fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map_or_else(|| "application/octet-stream".to_owned(), str::to_owned)
}

/// Sends `request` and waits for the response headers, at most the first-token timeout (some
/// engines send them only once the first output is ready) and not past the context's deadline;
/// [`ProviderError::Cancelled`] when the context is cancelled first.
pub(crate) async fn send_for_output(
    request: reqwest::RequestBuilder,
    timeouts: Timeouts,
    context: &RequestContext,
) -> Result<reqwest::Response, ProviderError> {
    let (until, phase, after) = wait_until(
        TimeoutPhase::FirstToken,
        timeouts.first_token,
        context.deadline,
    );
    tokio::select! {
        biased;
        () = context.cancel.cancelled() => Err(ProviderError::Cancelled),
        sent = tokio::time::timeout_at(until, request.send()) => sent
            .map_err(|_| ProviderError::Timeout { phase, after })?
            .map_err(|e| send_error(&e, timeouts.connect)),
    }
}

/// Reads a whole response body of at most `limit` bytes, waiting at most `idle` for each piece
/// (and not past the context's deadline). A larger body (by its `content-length`, or as it
/// arrives) is refused with [`ProviderError::Protocol`]; a body that breaks off is
/// [`ProviderError::Unavailable`]; [`ProviderError::Cancelled`] when the context is cancelled.
pub(crate) async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
    idle: Duration,
    context: &RequestContext,
) -> Result<bytes::Bytes, ProviderError> {
    let too_large = || ProviderError::Protocol {
        message: format!("engine's answer is larger than {limit} bytes"),
    };
    let announced = response.content_length().unwrap_or(0);
    if announced > u64::try_from(limit).unwrap_or(u64::MAX) {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(usize::try_from(announced).unwrap_or(0).min(limit));
    loop {
        let (until, phase, after) = wait_until(TimeoutPhase::Idle, idle, context.deadline);
        let piece = tokio::select! {
            biased;
            () = context.cancel.cancelled() => return Err(ProviderError::Cancelled),
            piece = tokio::time::timeout_at(until, response.chunk()) => piece,
        };
        match piece.map_err(|_| ProviderError::Timeout { phase, after })? {
            Ok(Some(piece)) => {
                if body.len().saturating_add(piece.len()) > limit {
                    return Err(too_large());
                }
                body.extend_from_slice(&piece);
            }
            Ok(None) => return Ok(body.into()),
            Err(e) => {
                return Err(ProviderError::Unavailable {
                    status: None,
                    message: format!("engine's answer broke off: {}", error_chain(&e)),
                });
            }
        }
    }
}

/// When a wait of `wait` from now ends, which phase runs out then, and how long the wait is:
/// the context's deadline (phase [`TimeoutPhase::Total`]) when it comes first.
fn wait_until(
    phase: TimeoutPhase,
    wait: Duration,
    deadline: Option<std::time::Instant>,
) -> (tokio::time::Instant, TimeoutPhase, Duration) {
    let now = tokio::time::Instant::now();
    // A wait too long to represent is as good as none (about thirty years).
    let until = now
        .checked_add(wait)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400));
    match deadline.map(tokio::time::Instant::from_std) {
        Some(deadline) if deadline < until => (
            deadline,
            TimeoutPhase::Total,
            deadline.saturating_duration_since(now),
        ),
        _ => (until, phase, wait),
    }
}

async fn read_limited(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(piece)) = response.chunk().await {
        let room = limit.saturating_sub(body.len());
        body.extend_from_slice(&piece[..piece.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_engine_client_installs_no_process_wide_tls_provider() {
        client(Duration::from_secs(1)).unwrap();
        assert!(rustls::crypto::CryptoProvider::get_default().is_none());
    }

    #[test]
    fn endpoint_urls_keep_the_base_path() {
        let [chat, models] =
            endpoint_urls("http://127.0.0.1:8000/v1", ["chat/completions", "models"]).unwrap();
        assert_eq!(chat.as_str(), "http://127.0.0.1:8000/v1/chat/completions");
        assert_eq!(models.as_str(), "http://127.0.0.1:8000/v1/models");
        let [tags] = endpoint_urls("http://127.0.0.1:11434/", ["api/tags"]).unwrap();
        assert_eq!(tags.as_str(), "http://127.0.0.1:11434/api/tags");
    }

    #[test]
    fn endpoint_urls_refuse_what_is_not_http() {
        for bad in ["ftp://host/v1", "not a url", "/v1"] {
            assert!(matches!(
                endpoint_urls(bad, ["models"]),
                Err(ProviderError::Protocol { .. })
            ));
        }
    }
}
