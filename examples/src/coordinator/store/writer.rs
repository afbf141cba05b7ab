//! Group commit: record writes go over a channel to one writer task, which commits whatever is
//! queued (up to [`MAX_BATCH`] writes) in one transaction and then acknowledges each write.
//!
//! A write is durable when its acknowledgement arrives. One write's refusal (a status
//! regression, an existing id) is that write's answer and does not affect the others of its
//! batch; if the batch itself fails, each write is retried alone so that one bad write cannot
//! sink the rest.

use std::time::Duration;

use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use super::records::{self, RecordRow};
use super::sql::Backend;
use super::{Store, StoreError};

/// The most writes committed in one transaction.
pub const MAX_BATCH: usize = 256;
/// Writes that may wait for the writer before callers wait to enqueue.
const QUEUE: usize = 4096;
/// Tries of a batch that failed for a retryable reason.
const TRIES: u32 = 3;

/// One record write.
#[derive(Debug)]
pub(crate) enum Write {
    /// A new record.
    Insert(RecordRow),
    /// A record's progress.
    Save(RecordRow),
}

/// A write and where its outcome goes.
#[derive(Debug)]
pub(crate) struct Job {
    write: Write,
    ack: oneshot::Sender<Result<(), StoreError>>,
}

/// Starts the writer; it ends when every sender is dropped.
pub(crate) fn spawn(pool: AnyPool, backend: Backend) -> mpsc::Sender<Job> {
    let (sender, receiver) = mpsc::channel(QUEUE);
    tokio::spawn(run(pool, backend, receiver));
    sender
}

async fn run(pool: AnyPool, backend: Backend, mut receiver: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        commit(&pool, backend, std::mem::take(&mut batch)).await;
    }
}

async fn commit(pool: &AnyPool, backend: Backend, jobs: Vec<Job>) {
    tracing::trace!(writes = jobs.len(), "committing a record batch");
    let writes: Vec<&Write> = jobs.iter().map(|job| &job.write).collect();
    match with_retries(pool, backend, &writes).await {
        Ok(outcomes) => {
            for (job, outcome) in jobs.into_iter().zip(outcomes) {
                let _ = job.ack.send(outcome);
            }
        }
        Err(error) if jobs.len() == 1 => {
            if let Some(job) = jobs.into_iter().next() {
                let _ = job.ack.send(Err(error));
            }
        }
        Err(error) => {
            tracing::warn!(%error, writes = jobs.len(), "record batch failed; writing one by one");
            for job in jobs {
                let outcome = match with_retries(pool, backend, &[&job.write]).await {
                    Ok(mut outcomes) => outcomes.pop().unwrap_or(Err(StoreError::Closed)),
                    Err(error) => Err(error),
                };
                let _ = job.ack.send(outcome);
            }
        }
    }
}

async fn with_retries(
    pool: &AnyPool,
    backend: Backend,
    writes: &[&Write],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let mut tries = 1;
    loop {
        match one_transaction(pool, backend, writes).await {
            Err(error) if error.is_retryable() && tries < TRIES => {
                tokio::time::sleep(Duration::from_millis(20 * u64::from(tries))).await;
                tries += 1;
            }
            result => return result,
        }
    }
}

/// Applies the writes in one transaction: each write's own refusal is its outcome; any other
/// error rolls the whole transaction back.
async fn one_transaction(
    pool: &AnyPool,
    backend: Backend,
    writes: &[&Write],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let mut tx = pool.begin_with(backend.begin_write()).await?;
    let mut outcomes = Vec::with_capacity(writes.len());
    for write in writes {
        let outcome = match write {
            Write::Insert(row) => records::insert(&mut tx, row).await,
            Write::Save(row) => records::save(&mut tx, row).await,
        };
        match outcome {
            Err(error) if !error.is_outcome() => return Err(error),
            outcome => outcomes.push(outcome),
        }
    }
    tx.commit().await?;
    Ok(outcomes)
}

impl Store {
    /// Hands a write to the writer and waits for its outcome.
    pub(crate) async fn write(&self, write: Write) -> Result<(), StoreError> {
        let outcome = self.enqueue(write).await?;
        outcome.await.map_err(|_| StoreError::Closed)?
    }

    /// Puts `write` on the writer's queue; the receiver gets its outcome after its commit.
    async fn enqueue(
        &self,
        write: Write,
    ) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        let (ack, outcome) = oneshot::channel();
        self.inner
            .writes
            .send(Job { write, ack })
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(outcome)
    }

    /// Queues `write` behind every write queued before it, without waiting for its commit. What
    /// becomes of it is logged, not returned.
    pub(crate) async fn write_soon(&self, write: Write) -> Result<(), StoreError> {
        let outcome = self.enqueue(write).await?;
        tokio::spawn(async move {
            match outcome.await {
                Ok(Err(StoreError::StatusRegression { .. })) | Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!("a queued record write failed: {error}"),
                Err(_) => tracing::warn!("a queued record write was dropped: the store closed"),
            }
        });
        Ok(())
    }
}
