//! Group commit: record writes go over a channel to one writer task, which commits whatever is
//! queued (up to [`MAX_BATCH`] writes) in one transaction and then acknowledges each write.
//!
//! A write is durable when its acknowledgement arrives. One write's refusal (a status
//! regression, an existing id) is that write's answer and does not affect the others of its
//! batch; if the batch itself fails, each write is retried alone so that one bad write cannot
//! sink the rest.
//!
//! Writes of one batch to the same record fold into one statement: a save that does not move
//! the record back supersedes the write queued before it (an insert stays an insert, carrying
//! the newer row), and every caller of the folded writes gets that statement's outcome. A
//! request accepted, started and finished between two commits costs one statement, not three.

use std::collections::HashMap;
use std::time::Duration;

use inference_club_core::record::RecordId;
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

impl Write {
    fn row(&self) -> &RecordRow {
        match self {
            Self::Insert(row) | Self::Save(row) => row,
        }
    }

    /// The same kind of write, of a newer row.
    fn replace_row(&mut self, newer: RecordRow) {
        match self {
            Self::Insert(row) | Self::Save(row) => *row = newer,
        }
    }
}

/// Where a write's outcome goes.
#[derive(Debug)]
enum Ack {
    /// To a caller waiting for it.
    Wait(oneshot::Sender<Result<(), StoreError>>),
    /// Nobody waits: a failure is logged (a save refused because the record moved on is not a
    /// failure).
    Log,
}

impl Ack {
    fn send(self, outcome: Result<(), StoreError>) {
        match (self, outcome) {
            (Self::Wait(sender), outcome) => {
                let _ = sender.send(outcome);
            }
            (Self::Log, Ok(()) | Err(StoreError::StatusRegression { .. })) => {}
            (Self::Log, Err(error)) => tracing::warn!("a queued record write failed: {error}"),
        }
    }
}

/// A write and where its outcome goes.
#[derive(Debug)]
pub(crate) struct Job {
    write: Write,
    ack: Ack,
    /// A progress save: held back for [`PROGRESS_DELAY`], and dropped if a later save of the
    /// same record comes first.
    progress: bool,
}

/// One statement to run: a write, and everyone waiting for it (several when writes folded).
#[derive(Debug)]
struct Folded {
    write: Write,
    acks: Vec<Ack>,
}

impl Folded {
    /// Sends `outcome` to everyone waiting for this statement.
    fn answer(self, outcome: Result<(), StoreError>) {
        let mut acks = self.acks.into_iter();
        let first = acks.next();
        for ack in acks {
            ack.send(replicate(&outcome));
        }
        if let Some(first) = first {
            first.send(outcome);
        }
    }
}

/// Folds the writes of a batch to the same record, keeping their order otherwise.
fn fold(jobs: Vec<Job>) -> Vec<Folded> {
    let mut folded: Vec<Folded> = Vec::with_capacity(jobs.len());
    let mut last_of: HashMap<RecordId, usize> = HashMap::with_capacity(jobs.len());
    for Job { write, ack, .. } in jobs {
        let id = write.row().id();
        let earlier = match &write {
            Write::Save(row) => last_of.get(&id).copied().filter(|&at| {
                folded
                    .get(at)
                    .is_some_and(|e| row.stage() >= e.write.row().stage())
            }),
            Write::Insert(_) => None,
        };
        match (earlier.and_then(|at| folded.get_mut(at)), write) {
            (Some(earlier), Write::Save(row)) => {
                earlier.write.replace_row(row);
                earlier.acks.push(ack);
            }
            (_, write) => {
                last_of.insert(id, folded.len());
                folded.push(Folded {
                    write,
                    acks: vec![ack],
                });
            }
        }
    }
    folded
}

/// The same outcome for another caller of a folded write. Only outcomes reach here (errors that
/// end a transaction are answered one by one, unfolded).
fn replicate(outcome: &Result<(), StoreError>) -> Result<(), StoreError> {
    match outcome {
        Ok(()) => Ok(()),
        Err(StoreError::NotFound(entity)) => Err(StoreError::NotFound(*entity)),
        Err(StoreError::RecordExists(id)) => Err(StoreError::RecordExists(*id)),
        Err(StoreError::StatusRegression {
            id,
            stored,
            attempted,
        }) => Err(StoreError::StatusRegression {
            id: *id,
            stored: *stored,
            attempted: *attempted,
        }),
        Err(other) => Err(StoreError::invalid("record", other.to_string())),
    }
}

/// Starts the writer; it ends when every sender is dropped.
pub(crate) fn spawn(pool: AnyPool, backend: Backend) -> mpsc::Sender<Job> {
    let (sender, receiver) = mpsc::channel(QUEUE);
    tokio::spawn(run(pool, backend, receiver));
    sender
}

async fn run(pool: AnyPool, backend: Backend, mut receiver: mpsc::Receiver<Job>) {
    let mut incoming = Vec::with_capacity(MAX_BATCH);
    let mut progress = Progress::default();
    loop {
        let due = progress.next_due();
        let open = tokio::select! {
            received = receiver.recv_many(&mut incoming, MAX_BATCH) => received > 0,
            () = sleep_until_due(due) => true,
        };
        let mut batch = Vec::with_capacity(incoming.len());
        for job in incoming.drain(..) {
            if job.progress {
                batch.extend(progress.hold(job));
            } else {
                if let Some(held) = progress.superseded_by(&job) {
                    batch.push(held);
                }
                batch.push(job);
            }
        }
        if open {
            batch.extend(progress.take_due(tokio::time::Instant::now()));
        } else {
            batch.extend(progress.take_all());
        }
        if !batch.is_empty() {
            commit(&pool, backend, batch).await;
        }
        if !open {
            break;
        }
    }
}

async fn sleep_until_due(due: Option<tokio::time::Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How long a progress save waits: a request that ends sooner never writes its progress.
pub const PROGRESS_DELAY: Duration = Duration::from_millis(250);
/// The most progress saves held at once; beyond, the oldest is written at once.
const MAX_HELD: usize = 65_536;

/// Progress saves held back, by record, in the order they are due.
#[derive(Debug, Default)]
struct Progress {
    held: HashMap<RecordId, (tokio::time::Instant, Job)>,
    order: std::collections::VecDeque<(tokio::time::Instant, RecordId)>,
}

impl Progress {
    /// Holds `job` until [`PROGRESS_DELAY`] from now; it replaces a held save of the same record.
    /// Returns the oldest held save when too many are held, to be written at once.
    fn hold(&mut self, job: Job) -> Option<Job> {
        let id = job.write.row().id();
        let due = tokio::time::Instant::now() + PROGRESS_DELAY;
        if let Some((_, replaced)) = self.held.insert(id, (due, job)) {
            replaced.ack.send(Ok(()));
        }
        self.order.push_back((due, id));
        if self.held.len() <= MAX_HELD {
            return None;
        }
        self.next_due()?;
        let (_, oldest) = self.order.pop_front()?;
        self.held.remove(&oldest).map(|(_, job)| job)
    }

    /// A held save that `job` (a save or insert of the same record) does not supersede, to be
    /// written before it; a superseded one is dropped, its caller told it is done.
    fn superseded_by(&mut self, job: &Job) -> Option<Job> {
        let row = job.write.row();
        let (_, held) = self.held.remove(&row.id())?;
        if matches!(job.write, Write::Save(_)) && row.stage() >= held.write.row().stage() {
            held.ack.send(Ok(()));
            None
        } else {
            Some(held)
        }
    }

    /// When the next held save is due.
    fn next_due(&mut self) -> Option<tokio::time::Instant> {
        while let Some((due, id)) = self.order.front() {
            match self.held.get(id) {
                Some((at, _)) if at == due => return Some(*due),
                // Written or replaced since: forget its place.
                _ => {
                    self.order.pop_front();
                }
            }
        }
        None
    }

    /// The held saves due by `now`.
    fn take_due(&mut self, now: tokio::time::Instant) -> Vec<Job> {
        let mut due = Vec::new();
        while let Some(at) = self.next_due() {
            if at > now {
                break;
            }
            if let Some((_, id)) = self.order.pop_front()
                && let Some((_, job)) = self.held.remove(&id)
            {
                due.push(job);
            }
        }
        due
    }

    /// Every held save (the writer is closing).
    fn take_all(&mut self) -> Vec<Job> {
        self.order.clear();
        self.held.drain().map(|(_, (_, job))| job).collect()
    }
}

async fn commit(pool: &AnyPool, backend: Backend, jobs: Vec<Job>) {
    let statements = fold(jobs);
    tracing::trace!(statements = statements.len(), "committing a record batch");
    let writes: Vec<&Write> = statements.iter().map(|folded| &folded.write).collect();
    match with_retries(pool, backend, &writes).await {
        Ok(outcomes) => {
            for (folded, outcome) in statements.into_iter().zip(outcomes) {
                folded.answer(outcome);
            }
        }
        Err(error) if statements.len() == 1 => {
            if let Some(folded) = statements.into_iter().next() {
                folded.answer(Err(error));
            }
        }
        Err(error) => {
            tracing::warn!(%error, statements = statements.len(), "record batch failed; writing one by one");
            for folded in statements {
                let outcome = match with_retries(pool, backend, &[&folded.write]).await {
                    Ok(mut outcomes) => outcomes.pop().unwrap_or(Err(StoreError::Closed)),
                    Err(error) => Err(error),
                };
                folded.answer(outcome);
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

/// A queued write whose outcome has not been asked for yet.
#[derive(Debug)]
pub struct PendingWrite(oneshot::Receiver<Result<(), StoreError>>);

impl PendingWrite {
    /// Waits until the write is committed (or refused).
    pub async fn committed(self) -> Result<(), StoreError> {
        self.0.await.map_err(|_| StoreError::Closed)?
    }
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
        self.send_job(Job {
            write,
            ack: Ack::Wait(ack),
            progress: false,
        })
        .await?;
        Ok(outcome)
    }

    async fn send_job(&self, job: Job) -> Result<(), StoreError> {
        self.inner
            .writes
            .send(job)
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// Queues `write` and returns what tells when it is committed.
    pub(crate) async fn write_pending(&self, write: Write) -> Result<PendingWrite, StoreError> {
        Ok(PendingWrite(self.enqueue(write).await?))
    }

    /// Queues a progress save: written after [`PROGRESS_DELAY`] unless a later save of the same
    /// record supersedes it first. What becomes of it is logged, not returned.
    pub(crate) async fn write_progress(&self, write: Write) -> Result<(), StoreError> {
        self.send_job(Job {
            write,
            ack: Ack::Log,
            progress: true,
        })
        .await
    }
}
