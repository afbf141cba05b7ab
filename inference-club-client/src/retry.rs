//! When and how long to wait before trying a request again.

use std::time::Duration;

use crate::Error;

/// How the client retries a request that failed before any output was received.
///
/// Only errors for which [`Error::is_retryable`] holds are retried (transport failures, timeouts
/// before the answer started, 408, 409, 429, 5xx). The wait before retry *n* (from 1) is
/// `base_backoff · 2ⁿ⁻¹`, capped at `max_backoff`, with full jitter when `jitter` is on; a
/// `Retry-After` from the server replaces it, unless it asks for
/// more than `max_retry_after`, in which case the error is returned at once. A stream that has
/// started is never retried: the client retries only until the coordinator accepted the request.
///
/// This is the only retry layer: the client never wraps another one, so a caller-supplied
/// `reqwest::Client` should not retry on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: never retry). Default 3.
    pub max_attempts: u32,
    /// The wait before the first retry, before jitter. Default 250 ms.
    pub base_backoff: Duration,
    /// The longest wait between attempts, before jitter. Default 8 s.
    pub max_backoff: Duration,
    /// Whether to spread waits randomly over `[backoff/2, backoff]`. Default on.
    pub jitter: bool,
    /// The longest `Retry-After` honoured; a server asking for more gets its error returned.
    /// Default 60 s.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
            jitter: true,
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn never() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The default policy with `attempts` attempts in all.
    pub fn attempts(attempts: u32) -> Self {
        Self {
            max_attempts: attempts.max(1),
            ..Self::default()
        }
    }

    /// The same policy with these backoff bounds.
    pub fn with_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.base_backoff = base;
        self.max_backoff = max.max(base);
        self
    }

    /// The same policy with jitter on or off.
    pub fn with_jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// How long to wait before attempt `attempt + 1` after `error` ended attempt `attempt`
    /// (counted from 1), or `None` when the error is to be returned.
    pub fn delay(&self, attempt: u32, error: &Error) -> Option<Duration> {
        if attempt >= self.max_attempts || !error.is_retryable() {
            return None;
        }
        let exponent = attempt.saturating_sub(1).min(20);
        let backoff = self
            .base_backoff
            .saturating_mul(1u32 << exponent)
            .min(self.max_backoff);
        let backoff = if self.jitter {
            let half = backoff / 2;
            half + half.mul_f64(fastrand::f64())
        } else {
            backoff
        };
        match error.retry_after() {
            Some(asked) if asked > self.max_retry_after => None,
            Some(asked) => Some(asked),
            None => Some(backoff),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inference_club_core::openai::ApiError;

    fn api(status: u16, retry_after: Option<u64>) -> Error {
        Error::Api {
            status,
            error: ApiError::new("server_error", "x", None),
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn backs_off_exponentially_and_stops() {
        let policy = RetryPolicy::attempts(4)
            .with_backoff(Duration::from_millis(100), Duration::from_millis(300))
            .with_jitter(false);
        let e = api(503, None);
        assert_eq!(policy.delay(1, &e), Some(Duration::from_millis(100)));
        assert_eq!(policy.delay(2, &e), Some(Duration::from_millis(200)));
        assert_eq!(policy.delay(3, &e), Some(Duration::from_millis(300)));
        assert_eq!(policy.delay(4, &e), None);
        assert_eq!(policy.delay(1, &api(400, None)), None);
    }

    #[test]
    fn jitter_stays_within_half_and_whole() {
        let policy =
            RetryPolicy::attempts(5).with_backoff(Duration::from_secs(1), Duration::from_secs(1));
        for _ in 0..100 {
            let d = policy.delay(1, &api(502, None)).unwrap_or_default();
            assert!(
                d >= Duration::from_millis(500) && d <= Duration::from_secs(1),
                "{d:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_the_wait_unless_too_long() {
        let policy = RetryPolicy::default().with_jitter(false);
        assert_eq!(
            policy.delay(1, &api(429, Some(2))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(policy.delay(1, &api(429, Some(600))), None);
    }
}
