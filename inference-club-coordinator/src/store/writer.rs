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
//! the newer row), and every caller of the folded writes gets that statement's outcome.
//!
//! A *held* write (the insert at acceptance, a progress save) waits up to [`PROGRESS_DELAY`]
//! for a later write of the same record to fold into: a request that ends sooner costs one
//! statement, its insert carrying the final row. Held writes are left where the writer takes
//! them when it next runs, without waking it ([`Writes`]). A *queued* write (a final save) is
//! not waited for; the writer waits a moment for more before committing it ([`LINGER`]).
//! Reading or changing a record by id first flushes what is held of it
//! ([`Store::flush_record`]), and a listing or an account's deletion flushes everything
//! ([`Store::flush_records`]), so the store never answers without a write it was given. When
//! the writer stops (its store dropped, or [`Store::flush_records`] at shutdown) it writes
//! everything held.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use inference_club_core::record::RecordId;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Connection};
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
    /// A save, or the insert when the record is not there (a deferred save whose insert never
    /// landed).
    Put(RecordRow),
}

impl Write {
    fn row(&self) -> &RecordRow {
        match self {
            Self::Insert(row) | Self::Save(row) | Self::Put(row) => row,
        }
    }

    fn into_row(self) -> RecordRow {
        match self {
            Self::Insert(row) | Self::Save(row) | Self::Put(row) => row,
        }
    }

    /// The same kind of write, of a newer row (an insert keeps the replica it was accepted by).
    fn replace_row(&mut self, mut newer: RecordRow) {
        match self {
            Self::Insert(row) => {
                newer.keep_replica_of(row);
                *row = newer;
            }
            Self::Save(row) | Self::Put(row) => *row = newer,
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
    /// Nobody waits (a final save, queued): a failure that may pass hands the row to the
    /// deferred saves, which try it again until it lands; another failure is logged.
    Retry,
}

impl Ack {
    /// Whether a caller waits for this outcome before going on.
    fn waits(&self) -> bool {
        matches!(self, Self::Wait(_))
    }

    fn send(self, outcome: Result<(), StoreError>) {
        match (self, outcome) {
            (Self::Wait(sender), outcome) => {
                let _ = sender.send(outcome);
            }
            (Self::Log | Self::Retry, Ok(()) | Err(StoreError::StatusRegression { .. })) => {}
            (Self::Log | Self::Retry, Err(error)) => {
                tracing::warn!("a queued record write failed: {error}");
            }
        }
    }
}

/// A write and where its outcome goes. A held one ([`Store::write_held`]) waits up to
/// [`PROGRESS_DELAY`] for a later write of the same record to fold into (an insert then carries
/// the later row; a progress save is dropped for it).
#[derive(Debug)]
pub(crate) struct Job {
    write: Write,
    ack: Ack,
}

/// What the writer is asked to do.
#[derive(Debug)]
pub(crate) enum Command {
    /// Write this.
    Write(Job),
    /// Write now what is held of one record (`Some`) or of every record (`None`); answered
    /// once that, and everything queued before this command, is committed.
    Flush(Option<RecordId>, oneshot::Sender<()>),
    /// Write everything held, give the connection back to the pool (which is closing), answer.
    Release(oneshot::Sender<()>),
}

/// Whether the writer's last commit failed for a reason that may pass (a full disk, a database
/// restarting): while it does, new requests are refused rather than served unrecorded.
#[derive(Debug, Default)]
pub(crate) struct WriteHealth(AtomicBool);

impl WriteHealth {
    /// Whether the last commit failed for a reason that may pass.
    pub(crate) fn failing(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set_failing(&self, failing: bool) {
        self.0.store(failing, Ordering::Release);
    }
}

/// One statement to run: a write, and everyone waiting for it (several when writes folded).
#[derive(Debug)]
struct Folded {
    write: Write,
    acks: Vec<Ack>,
}

impl Folded {
    /// Sends `outcome` to everyone waiting for this statement: the error itself to the last
    /// write folded in (a final save, whose caller may try again), a copy to the others. When
    /// it failed for a reason that may pass and a queued final save is folded in, the row goes
    /// to `retries`.
    fn answer(self, outcome: Result<(), StoreError>, retries: &Retries) {
        if outcome.as_ref().is_err_and(StoreError::is_retryable)
            && self.acks.iter().any(|ack| matches!(ack, Ack::Retry))
        {
            if retries.send(self.write.into_row()).is_err() {
                tracing::error!(
                    "a record save failed and cannot be tried again: the store is closing"
                );
            }
            for ack in self.acks {
                ack.send(replicate(&outcome));
            }
            return;
        }
        let mut acks = self.acks;
        let last = acks.pop();
        for ack in acks {
            ack.send(replicate(&outcome));
        }
        if let Some(last) = last {
            last.send(outcome);
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
            Write::Insert(_) | Write::Put(_) => None,
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

/// The same outcome for another caller of a folded write: a refusal as it is; an error that may
/// pass as [`StoreError::WritesFailing`] (so that the caller tries again); any other error as
/// its message.
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
        Err(error) if error.is_retryable() => Err(StoreError::WritesFailing),
        Err(other) => Err(StoreError::invalid("record", other.to_string())),
    }
}

/// Where the rows of queued final saves that failed for a reason that may pass go: to the
/// store's deferred saves ([`Store::save_record_queued`]).
pub(crate) type Retries = mpsc::UnboundedSender<RecordRow>;

/// The way to the writer: commands, which wake it, and held writes, which it takes when it next
/// runs (at the latest [`HELD_PICKUP`] later) without being woken for them: a request's insert
/// and progress cost no thread wake-up, only its final save does. The held writes left at once
/// are bounded by the requests in flight (an insert and a progress save each); the commands
/// by the queue, whose senders wait for room.
#[derive(Debug)]
pub(crate) struct Writes {
    commands: mpsc::Sender<Command>,
    held: Arc<HeldDrop>,
}

/// Held writes left for the writer, in the order they were given.
type HeldDrop = std::sync::Mutex<Vec<Job>>;

/// How often the writer looks for held writes left for it while nothing wakes it (an idle
/// store's writer wakes this often, and does nothing).
const HELD_PICKUP: Duration = Duration::from_millis(50);

/// Takes the held writes left for the writer, in order, into `held` (the oldest overflowing
/// ones into `batch`).
fn pick_up(left: &HeldDrop, held: &mut Held, batch: &mut Vec<Job>) {
    let jobs = std::mem::take(
        &mut *left
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    for job in jobs {
        batch.extend(held.hold(job));
    }
}

/// Starts the writer; it ends when every sender is dropped. Rows of queued final saves that
/// failed for a reason that may pass are sent to `retries`.
pub(crate) fn spawn(
    pool: AnyPool,
    backend: Backend,
    health: Arc<WriteHealth>,
    retries: Retries,
) -> Writes {
    let (commands, receiver) = mpsc::channel(QUEUE);
    let held = Arc::new(HeldDrop::default());
    tokio::spawn(run(pool, backend, health, retries, receiver, held.clone()));
    Writes { commands, held }
}

async fn run(
    pool: AnyPool,
    backend: Backend,
    health: Arc<WriteHealth>,
    retries: Retries,
    mut receiver: mpsc::Receiver<Command>,
    left: Arc<HeldDrop>,
) {
    let mut incoming = Vec::with_capacity(MAX_BATCH);
    let mut held = Held::default();
    let mut pickup = tokio::time::interval(HELD_PICKUP);
    pickup.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut writer = Writer {
        pool,
        conn: None,
        retries,
    };
    loop {
        let due = held.next_due();
        let mut open = tokio::select! {
            received = receiver.recv_many(&mut incoming, MAX_BATCH) => received > 0,
            () = sleep_until_due(due) => true,
            _ = pickup.tick() => true,
        };
        let mut batch = Batch::default();
        // Held writes were left before the commands received since (a request's insert before
        // its final save): they are taken first.
        pick_up(&left, &mut held, &mut batch.jobs);
        batch.take(&mut incoming, &mut held);
        // Wait a moment for more writes, so that one commit carries several (its page writes
        // are shared): when nobody waits on this one (queued final saves), or when the final
        // saves of other requests in flight (their inserts held) will come soon. Not when
        // someone waits on it to go on (a flush, a stream's insert).
        if open && batch.may_linger(!held.is_empty()) {
            let until = tokio::time::Instant::now() + LINGER;
            while batch.jobs.len() < LINGER_BATCH {
                let more =
                    tokio::time::timeout_at(until, receiver.recv_many(&mut incoming, MAX_BATCH));
                match more.await {
                    Ok(0) => open = false,
                    Ok(_) => {
                        pick_up(&left, &mut held, &mut batch.jobs);
                        batch.take(&mut incoming, &mut held);
                    }
                    Err(_) => break,
                }
                if !open || !batch.may_linger(!held.is_empty()) {
                    break;
                }
            }
        }
        if open {
            batch
                .jobs
                .extend(held.take_due(tokio::time::Instant::now()));
        } else {
            pick_up(&left, &mut held, &mut batch.jobs);
            batch.jobs.extend(held.take_all());
        }
        if !batch.jobs.is_empty() {
            writer.commit(backend, &health, batch.jobs).await;
        }
        if batch.release {
            writer.conn = None;
        }
        for done in batch.flushed {
            let _ = done.send(());
        }
        if !open {
            break;
        }
    }
}

/// How long the writer waits for more writes while other requests are in flight. Nobody waits
/// on such a commit (final saves are queued), so it may be longer than a request's path: a
/// commit writes the same leaf and index pages whether it carries one record or many.
const LINGER: Duration = Duration::from_millis(10);
/// Writes enough for one commit: the writer stops waiting for more.
const LINGER_BATCH: usize = 128;

/// What one commit carries: writes, flushes to answer after it, whether to give the connection
/// back.
#[derive(Default)]
struct Batch {
    jobs: Vec<Job>,
    flushed: Vec<oneshot::Sender<()>>,
    release: bool,
    /// It carries an insert that a request waits on before it goes on (a stream's).
    awaited_insert: bool,
}

impl Batch {
    /// Whether someone waits on this commit before going on: a flush, or a stream's insert (its
    /// first byte waits for it). A final save that is waited for (a batch line's, a cluster's)
    /// is not urgent: it gains from sharing a commit.
    fn urgent(&self) -> bool {
        !self.flushed.is_empty() || self.awaited_insert
    }

    /// Whether the writer may wait for more writes before committing this batch: when nobody
    /// waits on it (queued final saves, held writes come due), or when only final saves wait on
    /// it and `others_in_flight` (requests whose records are held) will end soon.
    fn may_linger(&self, others_in_flight: bool) -> bool {
        !self.jobs.is_empty()
            && !self.urgent()
            && (others_in_flight || self.jobs.iter().all(|job| !job.ack.waits()))
    }

    /// Takes the `incoming` commands into the batch (a write supersedes what is held of its
    /// record, or folds into it).
    fn take(&mut self, incoming: &mut Vec<Command>, held: &mut Held) {
        for command in incoming.drain(..) {
            match command {
                Command::Write(job) => {
                    self.awaited_insert |= matches!(job.write, Write::Insert(_));
                    if let Some(earlier) = held.superseded_by(&job) {
                        self.jobs.push(earlier);
                    }
                    self.jobs.push(job);
                }
                Command::Flush(Some(id), done) => {
                    self.jobs.extend(held.take(id));
                    self.flushed.push(done);
                }
                Command::Flush(None, done) => {
                    self.jobs.extend(held.take_all());
                    self.flushed.push(done);
                }
                Command::Release(done) => {
                    self.jobs.extend(held.take_all());
                    self.flushed.push(done);
                    self.release = true;
                }
            }
        }
    }
}

async fn sleep_until_due(due: Option<tokio::time::Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How long a held write waits: a request that ends sooner writes its record once.
pub const PROGRESS_DELAY: Duration = Duration::from_millis(250);
/// The most writes held at once; beyond, the oldest is written at once.
const MAX_HELD: usize = 65_536;

/// Held writes, by record, in the order they are due.
#[derive(Debug, Default)]
struct Held {
    held: HashMap<RecordId, (tokio::time::Instant, Job)>,
    order: std::collections::VecDeque<(tokio::time::Instant, RecordId)>,
}

impl Held {
    /// Holds `job` until [`PROGRESS_DELAY`] from now. A write already held for the same record
    /// takes its newer row instead (keeping its kind and when it is due); a row that would move
    /// the record back is dropped. Returns the oldest held write when too many are held, to be
    /// written at once.
    fn hold(&mut self, job: Job) -> Option<Job> {
        let id = job.write.row().id();
        if let Some((_, earlier)) = self.held.get_mut(&id) {
            let Job { write, ack, .. } = job;
            if write.row().stage() >= earlier.write.row().stage() {
                earlier.write.replace_row(write.into_row());
            }
            ack.send(Ok(()));
            return None;
        }
        let due = tokio::time::Instant::now() + PROGRESS_DELAY;
        self.held.insert(id, (due, job));
        self.order.push_back((due, id));
        if self.held.len() <= MAX_HELD {
            return None;
        }
        self.next_due()?;
        let (_, oldest) = self.order.pop_front()?;
        self.held.remove(&oldest).map(|(_, job)| job)
    }

    /// A held write that `job` (a write of the same record) does not supersede, to be written
    /// before it (a held insert always is: the batch folds `job` into it); a superseded progress
    /// save is dropped, its caller told it is done.
    fn superseded_by(&mut self, job: &Job) -> Option<Job> {
        let row = job.write.row();
        let (_, held) = self.held.remove(&row.id())?;
        if matches!(job.write, Write::Save(_))
            && matches!(held.write, Write::Save(_))
            && row.stage() >= held.write.row().stage()
        {
            held.ack.send(Ok(()));
            None
        } else {
            Some(held)
        }
    }

    /// Whether nothing is held.
    fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// What is held of record `id`, to be written now.
    fn take(&mut self, id: RecordId) -> Option<Job> {
        self.held.remove(&id).map(|(_, job)| job)
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

    /// Every held write (a flush, or the writer is closing).
    fn take_all(&mut self) -> Vec<Job> {
        self.order.clear();
        self.held.drain().map(|(_, (_, job))| job).collect()
    }
}

/// The writer's database access: one connection of the pool, kept between batches (the same
/// SQLite worker thread, no pool round trip per batch), given back when it fails.
struct Writer {
    pool: AnyPool,
    conn: Option<PoolConnection<Any>>,
    retries: Retries,
}

impl Writer {
    async fn commit(&mut self, backend: Backend, health: &WriteHealth, jobs: Vec<Job>) {
        let statements = fold(jobs);
        tracing::trace!(statements = statements.len(), "committing a record batch");
        let writes: Vec<&Write> = statements.iter().map(|folded| &folded.write).collect();
        match self.with_retries(backend, &writes).await {
            Ok(outcomes) => {
                let mut failing = false;
                for (folded, outcome) in statements.into_iter().zip(outcomes) {
                    // An error that is not the write's refusal (from telling why a batch
                    // statement outside a transaction skipped it) is the write's own: it alone
                    // is tried again.
                    let outcome = match outcome {
                        Err(error) if !error.is_outcome() => {
                            self.alone(backend, &folded.write).await
                        }
                        outcome => outcome,
                    };
                    failing |= outcome.as_ref().is_err_and(StoreError::is_retryable);
                    folded.answer(outcome, &self.retries);
                }
                health.set_failing(failing);
            }
            Err(error) if statements.len() == 1 => {
                health.set_failing(error.is_retryable());
                if let Some(folded) = statements.into_iter().next() {
                    folded.answer(Err(error), &self.retries);
                }
            }
            Err(error) => {
                tracing::warn!(%error, statements = statements.len(), "record batch failed; writing one by one");
                let mut failing = false;
                for folded in statements {
                    let outcome = self.alone(backend, &folded.write).await;
                    failing |= outcome.as_ref().is_err_and(StoreError::is_retryable);
                    folded.answer(outcome, &self.retries);
                }
                health.set_failing(failing);
            }
        }
    }

    /// Applies one write in a commit of its own (with retries), and gives its outcome.
    async fn alone(&mut self, backend: Backend, write: &Write) -> Result<(), StoreError> {
        match self.with_retries(backend, &[write]).await {
            Ok(mut outcomes) => outcomes.pop().unwrap_or(Err(StoreError::Closed)),
            Err(error) => Err(error),
        }
    }

    async fn with_retries(
        &mut self,
        backend: Backend,
        writes: &[&Write],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut tries = 1;
        loop {
            let outcome = self.one_transaction(backend, writes).await;
            if outcome.is_err() {
                // A connection that failed is not trusted with the next batch.
                self.conn = None;
            }
            match outcome {
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
        &mut self,
        backend: Backend,
        writes: &[&Write],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self.conn.insert(self.pool.acquire().await?),
        };
        match Statements::of(writes) {
            // Only inserts (short requests, each folded into one): one statement, atomic on its
            // own, with no transaction around it. What it inserted stays inserted, so an error
            // after it is the outcome of the write it was about, not of the batch.
            Some(statements) if statements.saves.is_empty() => {
                let outcomes = statements.apply(conn, backend, false).await?;
                if outcomes
                    .iter()
                    .any(|o| o.as_ref().is_err_and(|e| !e.is_outcome()))
                {
                    // A connection that failed is not trusted with the next statement.
                    self.conn = None;
                }
                return Ok(outcomes);
            }
            Some(statements) => {
                let mut tx = conn.begin_with(backend.begin_write()).await?;
                let outcomes = statements.apply(&mut tx, backend, true).await?;
                tx.commit().await?;
                return Ok(outcomes);
            }
            None => {}
        }
        let mut tx = conn.begin_with(backend.begin_write()).await?;
        let mut outcomes = Vec::with_capacity(writes.len());
        for write in writes {
            let outcome = match write {
                Write::Insert(row) => records::insert(&mut tx, row).await,
                Write::Save(row) => records::save(&mut tx, row).await,
                Write::Put(row) => records::put(&mut tx, row).await,
            };
            match outcome {
                Err(error) if !error.is_outcome() => return Err(error),
                outcome => outcomes.push(outcome),
            }
        }
        tx.commit().await?;
        Ok(outcomes)
    }
}

/// A batch's writes as a statement for all the inserts and one per status saved, not one per
/// write: each statement is a round trip to the database (to sqlx's SQLite thread), and streams'
/// inserts and final saves share commits.
struct Statements<'a> {
    /// The writes, in the order their outcomes are given.
    writes: &'a [&'a Write],
    inserts: Vec<&'a RecordRow>,
    saves: Vec<&'a RecordRow>,
}

impl<'a> Statements<'a> {
    /// The statements for `writes`; `None` unless they are only inserts and saves of distinct
    /// records (otherwise their order matters, and they go one by one).
    fn of(writes: &'a [&'a Write]) -> Option<Self> {
        let mut ids = HashSet::with_capacity(writes.len());
        let mut statements = Self {
            writes,
            inserts: Vec::new(),
            saves: Vec::new(),
        };
        for write in writes {
            if !ids.insert(write.row().id()) {
                return None;
            }
            match write {
                Write::Insert(row) => statements.inserts.push(row),
                Write::Save(row) => statements.saves.push(row),
                Write::Put(_) => return None,
            }
        }
        Some(statements)
    }

    /// Applies them, giving each write its outcome: its refusal as it would have it alone.
    /// In a transaction (`in_transaction`), any other error is the batch's, as it rolls
    /// everything back; outside one, an error while telling why a write was skipped is that
    /// write's outcome.
    async fn apply(
        self,
        conn: &mut AnyConnection,
        backend: Backend,
        in_transaction: bool,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let inserted = if self.inserts.is_empty() {
            HashSet::new()
        } else {
            records::insert_many(conn, backend, &self.inserts).await?
        };
        let saved = if self.saves.is_empty() {
            HashSet::new()
        } else {
            records::save_many(conn, backend, &self.saves).await?
        };
        let mut outcomes = Vec::with_capacity(self.writes.len());
        for write in self.writes {
            let id = write.row().id().to_string();
            // A write skipped by its statement is tried alone, which says why (an existing id,
            // a departed member; a save that would move its record back, a record not there).
            let outcome = match write {
                Write::Insert(_) if inserted.contains(&id) => Ok(()),
                Write::Save(_) if saved.contains(&id) => Ok(()),
                Write::Insert(row) => records::insert(conn, row).await,
                Write::Save(row) | Write::Put(row) => records::save(conn, row).await,
            };
            match outcome {
                Err(error) if in_transaction && !error.is_outcome() => return Err(error),
                outcome => outcomes.push(outcome),
            }
        }
        Ok(outcomes)
    }
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
        self.send(Command::Write(Job {
            write,
            ack: Ack::Wait(ack),
        }))
        .await?;
        Ok(outcome)
    }

    async fn send(&self, command: Command) -> Result<(), StoreError> {
        self.inner
            .writes
            .commands
            .send(command)
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// Queues `write` (not held) and returns what tells when it is committed.
    pub(crate) async fn write_pending(&self, write: Write) -> Result<PendingWrite, StoreError> {
        Ok(PendingWrite(self.enqueue(write).await?))
    }

    /// Queues a held write: written with the record's next write, when it is read or changed by
    /// id, or after [`PROGRESS_DELAY`], whichever comes first. What becomes of it is logged, not
    /// returned. It is left for the writer, which is not woken for it.
    pub(crate) fn write_held(&self, write: Write) -> Result<(), StoreError> {
        let writes = &self.inner.writes;
        if writes.commands.is_closed() {
            return Err(StoreError::Closed);
        }
        writes
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Job {
                write,
                ack: Ack::Log,
            });
        Ok(())
    }

    /// Queues a final save and returns without waiting for its commit (only for room in the
    /// queue): the writer commits it with its next batch, and when that fails for a reason that
    /// may pass, the save is deferred ([`Store::save_record_or_retry`]). Reads and changes of
    /// the record flush it first, like a held write.
    pub(crate) async fn write_queued(&self, write: Write) -> Result<(), StoreError> {
        self.send(Command::Write(Job {
            write,
            ack: Ack::Retry,
        }))
        .await
    }

    /// Writes now what is held of record `id` (its insert, its progress), and returns once that
    /// and every write queued before is committed: what reads or changes one record calls first.
    pub(crate) async fn flush_record(&self, id: RecordId) -> Result<(), StoreError> {
        self.flush(Some(id)).await
    }

    /// Writes now every held record write and returns once everything queued is committed:
    /// before a listing, an account's deletion, and at shutdown (what
    /// [`Coordinator::serve`](crate::Coordinator::serve) does after its drain).
    pub async fn flush_records(&self) -> Result<(), StoreError> {
        self.flush(None).await
    }

    /// Has the writer write everything held and give its connection back (the pool closes).
    pub(crate) async fn release_writer(&self) {
        let (done, released) = oneshot::channel();
        if self.send(Command::Release(done)).await.is_ok() {
            let _ = released.await;
        }
    }

    async fn flush(&self, which: Option<RecordId>) -> Result<(), StoreError> {
        let (done, flushed) = oneshot::channel();
        self.send(Command::Flush(which, done)).await?;
        flushed.await.map_err(|_| StoreError::Closed)
    }

    /// Whether the last commit of record writes failed for a reason that may pass (a full disk,
    /// the database restarting): new requests are then refused with 503 rather than served
    /// unrecorded.
    pub fn record_writes_failing(&self) -> bool {
        self.inner.write_health.failing()
    }
}
