//! The HTTP server under the coordinator's routes, with the read limits that keep slow or
//! oversized clients from holding it: see [`ServeSettings`].
//!
//! `axum::serve` sets no header read timeout (hyper only enforces one with a timer, which it is
//! not given) and no deadline for a request body, so a client that sends its headers a byte at
//! a time, or never finishes its body, would hold a connection and a task for ever. This server
//! is hyper's HTTP/1.1 connection with a timer and a header read timeout, plus a layer that
//! answers every request whose headers are too large, or whose body does not arrive in time,
//! with an error in the OpenAI envelope.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::{Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use super::error::ApiError;

/// Default: how long a client may take to send a request's headers.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default: how long a client may take to send a request's whole body, once its headers are in.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Default: the most bytes of header names and values in one request.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;

/// How the server treats slow and oversized requests.
///
/// - Headers that do not arrive within `header_read_timeout` (counted from the first byte of a
///   request): the connection is closed (hyper answers `408` when it can).
/// - Headers of more than `max_header_bytes` in total: `431` with `code`
///   `request_headers_too_large`. Beyond hyper's own buffer (about 400 KiB) hyper answers a
///   bare `431` and closes the connection.
/// - A body that does not arrive whole within `body_read_timeout` of its headers: `408` with
///   `code` `request_timeout`, and the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeSettings {
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request's whole body.
    pub body_read_timeout: Duration,
    /// The most bytes of header names and values in one request.
    pub max_header_bytes: usize,
}

impl Default for ServeSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        }
    }
}

/// Serves `app` on `listener` with `settings` until `shutdown` is cancelled, then lets the open
/// connections finish. Logs `listening on http://ADDR` once it accepts connections. Each
/// request carries its client's address (`ConnectInfo<SocketAddr>`), which the per-address
/// limits use.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: CancellationToken,
    settings: ServeSettings,
) -> std::io::Result<()> {
    let address: SocketAddr = listener.local_addr()?;
    tracing::info!("listening on http://{address}");
    let app = app.layer(axum::middleware::from_fn(move |request, next| {
        read_limits(settings, request, next)
    }));
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors and the like: wait a little rather than spin.
                    tracing::warn!("cannot accept a connection: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        // Chunks and link frames are small and must leave at once, not wait for a delayed ACK.
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: Request<_>| {
            request.extensions_mut().insert(ConnectInfo(remote));
            let mut app = app.clone();
            async move { app.call(request).await }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(settings.header_read_timeout);
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(tcp), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%remote, "connection ended: {error}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The layer that enforces [`ServeSettings::max_header_bytes`] and
/// [`ServeSettings::body_read_timeout`].
async fn read_limits(settings: ServeSettings, request: Request, next: Next) -> Response {
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > settings.max_header_bytes {
        return closing(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "invalid_request_error",
            "request_headers_too_large",
            format!(
                "the request headers are {header_bytes} bytes; at most {} are accepted",
                settings.max_header_bytes
            ),
        ));
    }
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    // The body ends with an error at the deadline; whoever reads it then fails, and the answer
    // is replaced by a 408 below.
    let expired = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| {
        Body::new(DeadlineBody {
            inner: body,
            deadline: Box::pin(tokio::time::sleep(settings.body_read_timeout)),
            expired: expired.clone(),
        })
    });
    let response = next.run(request).await;
    if expired.load(Ordering::SeqCst) {
        return closing(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "request_timeout",
            format!(
                "the request body did not arrive within {} s",
                settings.body_read_timeout.as_secs_f64()
            ),
        ));
    }
    response
}

/// A request body that fails once its deadline has passed (and says so in `expired`).
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    expired: Arc<AtomicBool>,
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(context) {
            return Poll::Ready(frame);
        }
        if this.deadline.as_mut().poll(context).is_ready() {
            this.expired.store(true, Ordering::SeqCst);
            return Poll::Ready(Some(Err(axum::Error::new(
                "the request body did not arrive in time",
            ))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The error, with `Connection: close`: what is left of the request is not read.
fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
