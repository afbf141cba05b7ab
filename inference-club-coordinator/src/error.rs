//! Errors as the API answers them: the OpenAI envelope with the fitting status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use inference_club_core::openai::ApiError as WireError;
use inference_club_core::provider::ProviderError;

use super::store::StoreError;

/// An error answer: `{"error": {"message", "type", "param", "code"}}` with its HTTP status.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The error object.
    pub error: WireError,
    /// Seconds after which to retry (`Retry-After`), for 429 and 503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status, OpenAI error type, code and message.
    pub fn new(status: StatusCode, kind: &str, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            error: WireError::new(kind, message, Some(code)),
            retry_after: None,
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message,
        )
    }

    /// 401: no or an unknown key.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_api_key",
            message,
        )
    }

    /// 403: the key may not do this.
    pub fn forbidden(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_error", code, message)
    }

    /// 404: no such thing (or not one the caller may see).
    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            code,
            message,
        )
    }

    /// 413: the body is too large.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            message,
        )
    }

    /// 503 with `Retry-After`: no capacity right now.
    pub fn overloaded(message: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "overloaded",
                message,
            )
        }
    }

    /// 500: something broke on our side; the details go to the log, not to the caller.
    pub fn internal(context: &str, error: impl std::fmt::Display) -> Self {
        tracing::error!("{context}: {error}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            format!("internal error ({context})"),
        )
    }

    /// The same error naming the parameter at fault.
    pub fn with_param(mut self, param: &str) -> Self {
        self.error.param = Some(param.to_owned());
        self
    }

    /// The answer for a provider's error (after every candidate was tried).
    pub fn from_provider(error: &ProviderError) -> Self {
        match error {
            ProviderError::ModelNotFound { model } => Self::not_found(
                "model_not_found",
                format!("The model `{model}` does not exist or no online node serves it."),
            )
            .with_param("model"),
            ProviderError::Rejected {
                status,
                message,
                code,
            } => {
                let status = StatusCode::from_u16(*status)
                    .ok()
                    .filter(|s| s.is_client_error())
                    .unwrap_or(StatusCode::BAD_REQUEST);
                let kind = if status == StatusCode::FORBIDDEN {
                    "permission_error"
                } else {
                    "invalid_request_error"
                };
                Self::new(
                    status,
                    kind,
                    code.as_deref().unwrap_or("rejected_by_engine"),
                    message.clone(),
                )
            }
            ProviderError::Busy { message } => Self::overloaded(message.clone(), 2),
            ProviderError::Timeout { .. } => Self::new(
                StatusCode::BAD_GATEWAY,
                "server_error",
                "upstream_timeout",
                error.to_string(),
            ),
            ProviderError::Cancelled => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "cancelled",
                "the request was cancelled",
            ),
            _ => Self::new(
                StatusCode::BAD_GATEWAY,
                "server_error",
                "upstream_error",
                error.to_string(),
            ),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if error.is_not_found() {
            Self::not_found("not_found", error.to_string())
        } else if error.is_invalid() {
            Self::bad_request("invalid_value", error.to_string())
        } else if error.is_conflict() {
            Self::new(
                StatusCode::CONFLICT,
                "invalid_request_error",
                "conflict",
                error.to_string(),
            )
        } else if error.is_retryable() {
            Self {
                retry_after: Some(1),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    "store_unavailable",
                    "the store cannot take this write now (busy, full or restarting); try again shortly",
                )
            }
        } else {
            Self::internal("store", error)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.error.into_response())).into_response();
        if let Some(seconds) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// An error of the coordinator's public API: starting it, serving, administering members and
/// keys. Ask [`kind`](Self::kind) or the predicates; [`source`](std::error::Error::source) gives
/// the underlying error (the database's, NATS's, …).
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    retryable: bool,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// What went wrong, broadly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The database could not be opened, migrated or written.
    Database,
    /// The cluster (NATS, or the replicas' shared tables) could not be joined.
    Cluster,
    /// The configuration is not usable (a cluster on SQLite, a bad GitHub URL, …).
    Config,
    /// The input was refused before anything changed (a bad handle, unknown scopes, …).
    InvalidInput,
    /// What was named does not exist (no member with that handle).
    NotFound,
    /// The change conflicts with what exists (the handle is taken).
    Conflict,
    /// Listening or serving failed.
    Io,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            retryable: false,
            message: message.into(),
            source: None,
        }
    }

    /// An error of `kind` caused by `source` (whose message it shows).
    pub(crate) fn caused_by(
        kind: ErrorKind,
        retryable: bool,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            kind,
            retryable,
            message: source.to_string(),
            source: Some(Box::new(source)),
        }
    }

    /// What went wrong, broadly.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether trying again later may succeed (the database was busy or restarting, NATS was
    /// unreachable).
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// Whether the input was refused before anything changed.
    pub fn is_invalid_input(&self) -> bool {
        self.kind == ErrorKind::InvalidInput
    }

    /// Whether what was named does not exist.
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        let kind = if error.is_not_found() {
            ErrorKind::NotFound
        } else if error.is_conflict() {
            ErrorKind::Conflict
        } else if error.is_invalid() {
            ErrorKind::InvalidInput
        } else {
            ErrorKind::Database
        };
        Self {
            kind,
            retryable: error.is_retryable(),
            message: error.to_string(),
            source: Some(Box::new(error)),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Self {
        Self {
            kind: ErrorKind::Io,
            retryable: false,
            message: error.to_string(),
            source: Some(Box::new(error)),
        }
    }
}
