//! Final record saves that the database refused for a passing reason (a full disk, a restarting
//! server, a pool that timed out) are tried again in the background until they land, so that a
//! record still tells the truth once the database is back. Bounded: at most
//! [`MAX_DEFERRED_SAVES`] wait at once, each for at most [`DEFERRED_FOR`].

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use inference_club_core::record::{InferenceRecord, RecordId};
use tokio_util::sync::CancellationToken;

use super::{Store, StoreError};

/// The most saves waiting to be tried again at once; beyond it a failed save is only logged
/// (and the record, left in flight, becomes `failed` at the coordinator's next start).
pub const MAX_DEFERRED_SAVES: usize = 4096;
/// How long a deferred save keeps trying.
pub const DEFERRED_FOR: Duration = Duration::from_secs(3600);
/// The first pause before trying again; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(5);

impl Store {
    /// Saves `record` like [`Store::save_record`]; when the database refuses for a reason that
    /// may pass ([`StoreError::is_retryable`]), keeps trying in the background (see
    /// `MAX_DEFERRED_SAVES`) and returns that first error. Other errors are returned as they
    /// are, and nothing is retried.
    pub async fn save_record_or_retry(&self, record: &InferenceRecord) -> Result<(), StoreError> {
        match self.save_record(record).await {
            Err(error) if error.is_retryable() => {
                self.retry_save(record.clone());
                Err(error)
            }
            other => other,
        }
    }

    /// Tries again, in the background, the queued final saves ([`Store::save_record_queued`])
    /// whose commit failed for a reason that may pass, as they come from the writer. The task
    /// holds the store weakly: it ends when the store does.
    pub(super) fn retry_failed_saves(
        &self,
        mut failed: tokio::sync::mpsc::UnboundedReceiver<super::records::RecordRow>,
    ) {
        let store = std::sync::Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            while let Some(row) = failed.recv().await {
                let Some(inner) = store.upgrade() else {
                    break;
                };
                match row.into_record() {
                    Ok(record) => Store { inner }.retry_save(record),
                    Err(error) => {
                        tracing::error!("a failed record save cannot be read back: {error}")
                    }
                }
            }
        });
    }

    /// Saves waiting to be tried again now.
    pub fn deferred_saves(&self) -> usize {
        self.inner.deferred.load(Ordering::Acquire)
    }

    fn retry_save(&self, record: InferenceRecord) {
        let deferred = &self.inner.deferred;
        if deferred.fetch_add(1, Ordering::AcqRel) >= MAX_DEFERRED_SAVES {
            deferred.fetch_sub(1, Ordering::AcqRel);
            tracing::error!(id = %record.id, "too many record saves waiting: this one is dropped");
            return;
        }
        let deleted = CancellationToken::new();
        self.deferred_records()
            .insert(record.id, (record.consumer.clone(), deleted.clone()));
        let store = self.clone();
        tokio::spawn(async move {
            let give_up = Instant::now() + DEFERRED_FOR;
            let mut pause = FIRST_PAUSE;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = deleted.cancelled() => {
                        tracing::info!(id = %record.id, "a deferred record save is dropped: its owner deleted it");
                        break;
                    }
                }
                // Its insert may have been folded into the save that failed: put, not save.
                match store.put_record(&record).await {
                    Ok(()) => {
                        tracing::info!(id = %record.id, "a deferred record save landed");
                        break;
                    }
                    Err(error) if error.is_retryable() && Instant::now() < give_up => {
                        pause = (pause * 2).min(MAX_PAUSE);
                    }
                    Err(error) => {
                        tracing::error!(id = %record.id, "a deferred record save failed: {error}");
                        break;
                    }
                }
            }
            store.deferred_records().remove(&record.id);
            store.inner.deferred.fetch_sub(1, Ordering::AcqRel);
        });
    }

    /// Stops the deferred save of record `id` when `owner` (a handle) made the request: its owner
    /// deleted it before it could land. Returns whether there was one.
    pub(crate) fn drop_deferred_save(&self, id: RecordId, owner: &str) -> bool {
        let mut deferred = self.deferred_records();
        let owned = deferred.get(&id).is_some_and(|(consumer, _)| {
            consumer
                .as_deref()
                .is_some_and(|consumer| consumer.eq_ignore_ascii_case(owner))
        });
        if !owned {
            return false;
        }
        if let Some((_, deleted)) = deferred.remove(&id) {
            deleted.cancel();
        }
        true
    }

    fn deferred_records(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<RecordId, (Option<String>, CancellationToken)>> {
        self.inner
            .deferred_records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
