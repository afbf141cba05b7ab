//! A proxy on 127.0.0.1 in front of a coordinator that can answer some requests itself (faults,
//! the device sign-in routes) and forwards the rest, for the client SDK and CLI tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::HANDLE;

/// What the proxy's hook sees of a request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub body: serde_json::Value,
    /// How many requests with this method and path came before it.
    pub nth: usize,
}

/// The proxy's hook: an answer of its own, or `None` to forward the request.
pub type Hook = Arc<dyn Fn(&Seen) -> Option<Response<Body>> + Send + Sync>;

/// A proxy on 127.0.0.1 in front of a coordinator.
pub struct Proxy {
    pub url: String,
    seen: Arc<std::sync::Mutex<Vec<Seen>>>,
    shutdown: CancellationToken,
}

impl Proxy {
    /// Forwards everything to `upstream` unless `hook` answers.
    pub async fn start(upstream: &str, hook: Hook) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen: Arc<std::sync::Mutex<Vec<Seen>>> = Arc::default();
        let http = reqwest::Client::new();
        let upstream = upstream.to_owned();
        let log = seen.clone();
        let app = axum::Router::new().fallback(move |request: Request<Body>| {
            let (http, upstream, hook, log) =
                (http.clone(), upstream.clone(), hook.clone(), log.clone());
            async move {
                let (parts, body) = request.into_parts();
                let bytes = axum::body::to_bytes(body, 1 << 24).await.unwrap();
                let path = parts.uri.path().to_owned();
                let seen = {
                    let mut log = log.lock().unwrap();
                    let nth = log
                        .iter()
                        .filter(|s| s.method == parts.method.as_str() && s.path == path)
                        .count();
                    let seen = Seen {
                        method: parts.method.to_string(),
                        path: path.clone(),
                        body: serde_json::from_slice(&bytes).unwrap_or_default(),
                        nth,
                    };
                    log.push(seen.clone());
                    seen
                };
                if let Some(answer) = hook(&seen) {
                    return answer;
                }
                let target = format!(
                    "{upstream}{}",
                    parts
                        .uri
                        .path_and_query()
                        .map(|p| p.as_str())
                        .unwrap_or("/")
                );
                let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap();
                let mut forward = http.request(method, target).body(bytes.to_vec());
                for (name, value) in &parts.headers {
                    if name != "host" && name != "content-length" {
                        forward = forward.header(name.as_str(), value.as_bytes());
                    }
                }
                let answer = match forward.send().await {
                    Ok(answer) => answer,
                    Err(error) => {
                        return Response::builder()
                            .status(StatusCode::BAD_GATEWAY)
                            .body(Body::from(error.to_string()))
                            .unwrap();
                    }
                };
                let mut response = Response::builder().status(answer.status().as_u16());
                for (name, value) in answer.headers() {
                    if name != "content-length" && name != "transfer-encoding" {
                        response = response.header(name.as_str(), value.as_bytes());
                    }
                }
                response
                    .body(Body::from_stream(answer.bytes_stream()))
                    .unwrap()
            }
        });
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });
        Self {
            url,
            seen,
            shutdown,
        }
    }

    /// How many requests with `method` and `path` arrived.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == method && s.path == path)
            .count()
    }

    /// Every request that arrived.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A JSON answer.
pub fn json_response(status: u16, body: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// An OpenAI error envelope.
pub fn error_response(status: u16, code: &str, message: &str) -> Response<Body> {
    json_response(
        status,
        serde_json::json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}}),
    )
}

/// The device sign-in routes of the coordinator, faked: the first poll is pending, then (until
/// `accept_terms` is sent) the terms are required, then the sign-in answers `key`.
pub fn device_login_hook(key: String) -> Hook {
    let polls = Arc::new(AtomicUsize::new(0));
    Arc::new(
        move |seen: &Seen| match (seen.method.as_str(), seen.path.as_str()) {
            ("POST", "/api/v1/auth/device") => Some(json_response(
                200,
                serde_json::json!({
                    "object": "club.device_authorization",
                    "device_token": "dev-secret",
                    "user_code": "WXYZ-1234",
                    "verification_uri": "http://127.0.0.1/login/device",
                    "expires_in": 60,
                    "interval": 1
                }),
            )),
            ("POST", "/api/v1/auth/device/token") => {
                assert_eq!(seen.body["device_token"], "dev-secret");
                let n = polls.fetch_add(1, Ordering::SeqCst);
                if n == 0 {
                    Some(error_response(400, "authorization_pending", "not yet"))
                } else if seen.body["accept_terms"] != true {
                    Some(error_response(
                        403,
                        "terms_required",
                        "You have no account yet. Read the terms at http://127.0.0.1/terms.",
                    ))
                } else {
                    Some(json_response(
                        200,
                        serde_json::json!({
                            "object": "club.device_token",
                            "key": key,
                            "key_id": "00000000-0000-0000-0000-000000000000",
                            "handle": HANDLE,
                            "scopes": ["inference", "account"]
                        }),
                    ))
                }
            }
            _ => None,
        },
    )
}

/// A byte stream that never ends, for an answer that never comes.
pub fn never() -> Body {
    Body::from_stream(
        futures_util::stream::pending::<Result<axum::body::Bytes, std::io::Error>>().boxed(),
    )
}
