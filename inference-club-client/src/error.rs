//! The client's error type.

use std::time::Duration;

use inference_club_core::openai::ApiError;

/// Which wait ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutPhase {
    /// Connecting to the coordinator.
    Connect,
    /// Waiting for the first output of a stream (content, reasoning or a tool call).
    FirstToken,
    /// Waiting for the next chunk of a stream that had produced output.
    Idle,
    /// The whole request, from sending it to its last byte.
    Request,
}

impl TimeoutPhase {
    /// A short name: `connect`, `first token`, `idle`, `request`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::FirstToken => "first token",
            Self::Idle => "idle",
            Self::Request => "request",
        }
    }
}

impl std::fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The underlying error of a transport or decoding failure.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong talking to the coordinator. Keeps the server's message and code.
///
/// Ask it what kind of failure it was with [`is_retryable`](Self::is_retryable),
/// [`is_timeout`](Self::is_timeout), [`status`](Self::status), [`code`](Self::code) and
/// [`retry_after`](Self::retry_after) rather than matching on its variants.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The coordinator answered with an error status.
    #[error("{} ({status}{})", error.message, error.code.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error object from the body (OpenAI envelope).
        error: ApiError,
        /// How long the server asked to wait before retrying (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// An error sent inside a stream after it had started: the stream ends with it.
    #[error("error in the stream: {}{}", .0.message, .0.code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    InStream(ApiError),
    /// The coordinator could not be reached, or the connection broke.
    #[error("cannot reach the coordinator: {message}")]
    Transport {
        /// What happened, with its causes.
        message: String,
        /// The HTTP stack's error, when there was one.
        #[source]
        source: Option<BoxError>,
    },
    /// A wait ran out.
    #[error("timed out ({phase}) after {after:?}")]
    Timeout {
        /// Which wait.
        phase: TimeoutPhase,
        /// How long it waited (zero when the HTTP stack did not say).
        after: Duration,
    },
    /// The coordinator sent something that is not the expected format.
    #[error("unexpected answer from the coordinator: {message}")]
    Decode {
        /// What was wrong with it.
        message: String,
        /// The decoder's error, when there was one.
        #[source]
        source: Option<BoxError>,
    },
    /// The client was configured wrongly (bad URL, bad key characters).
    #[error("configuration: {0}")]
    Config(String),
}

impl Error {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's error code (`model_not_found`, `invalid_api_key`, …), if any.
    pub fn code(&self) -> Option<&str> {
        self.api_error().and_then(|e| e.code.as_deref())
    }

    /// The server's error object, for an API error or an error inside a stream.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Self::Api { error, .. } | Self::InStream(error) => Some(error),
            _ => None,
        }
    }

    /// What to tell a person: the server's own message when it sent one, else a description.
    pub fn message(&self) -> String {
        match self.api_error() {
            Some(error) => error.message.clone(),
            None => self.to_string(),
        }
    }

    /// Whether trying again may succeed: transport failures, timeouts, 408, 409, 429 and 5xx
    /// (but not 501). An error inside a stream is not: the request was served and failed; nor
    /// is an `Idempotency-Key` used before with another request (409 `idempotency_key_reused`).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api {
                status: 409, error, ..
            } if error.code.as_deref() == Some("idempotency_key_reused") => false,
            Self::Api { status, .. } => {
                matches!(status, 408 | 409 | 429) || (*status >= 500 && *status != 501)
            }
            Self::Transport { .. } | Self::Timeout { .. } => true,
            Self::InStream(_) | Self::Decode { .. } | Self::Config(_) => false,
        }
    }

    /// Whether a wait ran out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }

    /// Which wait ran out, for a timeout.
    pub fn timeout_phase(&self) -> Option<TimeoutPhase> {
        match self {
            Self::Timeout { phase, .. } => Some(*phase),
            _ => None,
        }
    }

    /// How long the server asked to wait before retrying (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub(crate) fn from_reqwest(error: reqwest::Error, timeout: Option<Duration>) -> Self {
        if error.is_timeout() {
            let phase = if error.is_connect() {
                TimeoutPhase::Connect
            } else {
                TimeoutPhase::Request
            };
            Self::Timeout {
                phase,
                after: timeout.unwrap_or_default(),
            }
        } else if error.is_decode() {
            Self::Decode {
                message: error.to_string(),
                source: Some(Box::new(error)),
            }
        } else if error.is_builder() {
            Self::Config(error.to_string())
        } else {
            // The source chain says why (refused, reset, DNS); reqwest's own message does not.
            let mut message = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(": ");
                message.push_str(&cause.to_string());
                source = cause.source();
            }
            Self::Transport {
                message,
                source: Some(Box::new(error)),
            }
        }
    }

    /// A transport failure without an underlying error.
    pub(crate) fn transport(message: impl Into<String>) -> Self {
        Self::Transport {
            message: message.into(),
            source: None,
        }
    }

    /// An answer not in the expected format; `source` says why, when a decoder did.
    pub(crate) fn decode(
        message: impl Into<String>,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Decode {
            message: message.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates_follow_the_kind() {
        let overloaded = Error::Api {
            status: 503,
            error: ApiError::new("server_error", "busy", Some("overloaded")),
            retry_after: Some(Duration::from_secs(2)),
        };
        assert!(overloaded.is_retryable());
        assert_eq!(overloaded.status(), Some(503));
        assert_eq!(overloaded.code(), Some("overloaded"));
        assert_eq!(overloaded.message(), "busy");
        assert_eq!(overloaded.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(overloaded.to_string(), "busy (503 overloaded)");

        let missing = Error::Api {
            status: 404,
            error: ApiError::new("invalid_request_error", "no", Some("model_not_found")),
            retry_after: None,
        };
        assert!(!missing.is_retryable());
        let reused = Error::Api {
            status: 409,
            error: ApiError::new(
                "invalid_request_error",
                "used",
                Some("idempotency_key_reused"),
            ),
            retry_after: None,
        };
        assert!(!reused.is_retryable());
        let in_stream = Error::InStream(ApiError::new("server_error", "node died", None));
        assert!(!in_stream.is_retryable());
        assert_eq!(in_stream.status(), None);
        let idle = Error::Timeout {
            phase: TimeoutPhase::Idle,
            after: Duration::from_secs(1),
        };
        assert!(idle.is_timeout() && idle.is_retryable());
        assert_eq!(idle.timeout_phase(), Some(TimeoutPhase::Idle));
    }
}
