//! Failed jobs in the node's own log: a warning naming the model and the error (never the
//! request), at most one line per model every [`WARN_EVERY`], with how many failed in between, so
//! that an engine down under load does not flood the log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use inference_club_core::provider::ProviderError;

/// At most one warning per model this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The most models remembered; a failure of another model beyond that shares one window with
/// the others left out.
const MAX_MODELS: usize = 1024;

/// The window shared by the models beyond [`MAX_MODELS`] (a model id is never empty).
const OTHERS: &str = "";

/// The warnings about a node's failed jobs; cheap to clone, shared by all its jobs.
#[derive(Debug, Clone, Default)]
pub(crate) struct FailureWarnings {
    limit: Arc<Mutex<RateLimit>>,
}

impl FailureWarnings {
    /// A job for `model` failed with `error`: warns, unless a warning about `model` went out
    /// less than [`WARN_EVERY`] ago (the failure is then counted, and the count goes with the
    /// next warning). A cancellation is no failure, and a request the engine refused is the
    /// consumer's to mend (its answer says why): neither is warned about.
    pub(crate) fn failed(&self, model: &str, error: &ProviderError) {
        if matches!(
            error,
            ProviderError::Cancelled | ProviderError::Rejected { .. }
        ) {
            return;
        }
        let warn = self
            .limit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .failed(model, Instant::now());
        match warn {
            None => {}
            Some(0) => tracing::warn!(model, kind = error.kind(), "a job failed: {error}"),
            Some(more) => tracing::warn!(
                model,
                kind = error.kind(),
                "a job failed: {error} ({more} more failed since the last warning about this \
                 model)"
            ),
        }
    }
}

/// One warning per model per window.
#[derive(Debug)]
struct RateLimit {
    every: Duration,
    models: HashMap<String, Window>,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new(WARN_EVERY)
    }
}

/// A model's last warning.
#[derive(Debug)]
struct Window {
    warned_at: Instant,
    /// Failures since then, not warned about.
    suppressed: u64,
}

impl RateLimit {
    fn new(every: Duration) -> Self {
        Self {
            every,
            models: HashMap::new(),
        }
    }

    /// A failure of `model` at `now`: `Some` with the number of failures not warned about since
    /// the last warning when this one is to be warned about, `None` when it is only counted.
    fn failed(&mut self, model: &str, now: Instant) -> Option<u64> {
        let every = self.every;
        let open = |window: &Window| now.saturating_duration_since(window.warned_at) < every;
        if !self.models.contains_key(model) && self.models.len() >= MAX_MODELS {
            // Windows that are over are forgotten (with the failures they counted).
            self.models.retain(|_, window| open(window));
        }
        let key = if self.models.contains_key(model) || self.models.len() < MAX_MODELS {
            model
        } else {
            OTHERS
        };
        match self.models.get_mut(key) {
            Some(window) if open(window) => {
                window.suppressed += 1;
                None
            }
            Some(window) => {
                window.warned_at = now;
                Some(std::mem::take(&mut window.suppressed))
            }
            None => {
                self.models.insert(
                    key.to_owned(),
                    Window {
                        warned_at: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first failure is warned about; the next ones within the window are only counted, and
    /// the count goes with the first warning after it.
    #[test]
    fn one_warning_per_model_per_window_with_the_count_of_the_rest() {
        let mut limit = RateLimit::new(Duration::from_secs(10));
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        assert_eq!(limit.failed("a", at(0)), Some(0));
        assert_eq!(limit.failed("a", at(1)), None);
        assert_eq!(limit.failed("a", at(9)), None);
        // Another model has its own window.
        assert_eq!(limit.failed("b", at(9)), Some(0));
        assert_eq!(limit.failed("a", at(10)), Some(2));
        assert_eq!(limit.failed("a", at(11)), None);
        assert_eq!(limit.failed("b", at(30)), Some(0));
        assert_eq!(limit.failed("a", at(30)), Some(1));
    }

    /// Past [`MAX_MODELS`], models whose window is over are forgotten, and the rest share one
    /// window: the memory and the lines stay bounded whatever the model ids.
    #[test]
    fn the_models_remembered_are_bounded() {
        let mut limit = RateLimit::new(Duration::from_secs(10));
        let start = Instant::now();
        for n in 0..MAX_MODELS {
            assert_eq!(limit.failed(&format!("m{n}"), start), Some(0));
        }
        let soon = start + Duration::from_secs(1);
        assert_eq!(limit.failed("new", soon), Some(0));
        assert_eq!(
            limit.failed("newer", soon),
            None,
            "shares the window of `new`"
        );
        assert!(limit.models.len() <= MAX_MODELS + 1);
        let later = start + Duration::from_secs(11);
        assert_eq!(limit.failed("newest", later), Some(0));
        assert_eq!(
            limit.models.len(),
            1,
            "the windows that were over are forgotten"
        );
    }
}
