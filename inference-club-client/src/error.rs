//! The client's error type.

use inference_club_core::openai::ApiError;

/// What went wrong talking to the coordinator. Keeps the server's message and code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The coordinator answered with an error status.
    #[error("{status}: {}", error.message)]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error object from the body.
        error: ApiError,
        /// Seconds the server asked to wait before retrying.
        retry_after: Option<u64>,
    },
    /// An error sent inside a stream after it had started.
    #[error("error in the stream: {}", .0.message)]
    InStream(ApiError),
    /// The coordinator could not be reached, or the connection broke.
    #[error("transport: {0}")]
    Transport(String),
    /// A wait ran out.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The coordinator sent something that is not the expected format.
    #[error("unexpected answer: {0}")]
    Decode(String),
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

    /// The server's error code, if any.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { error, .. } | Self::InStream(error) => error.code.as_deref(),
            _ => None,
        }
    }

    /// Whether trying again may succeed: transport failures, timeouts, 408, 409, 429 and 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api { status, .. } => matches!(status, 408 | 409 | 429) || *status >= 500,
            Self::Transport(_) | Self::Timeout(_) => true,
            Self::InStream(_) | Self::Decode(_) | Self::Config(_) => false,
        }
    }

    /// Whether a wait ran out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }

    /// How long the server asked to wait before retrying.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Api { retry_after, .. } => retry_after.map(std::time::Duration::from_secs),
            _ => None,
        }
    }

    pub(crate) fn from_reqwest(error: reqwest::Error) -> Self {
        if error.is_timeout() {
            Self::Timeout(error.to_string())
        } else {
            Self::Transport(error.to_string())
        }
    }
}
