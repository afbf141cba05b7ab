//! Batches: OpenAI's Batch API run on the club's nodes.
//!
//! A batch is created from an uploaded JSONL file ([`BatchRunner::create`]): every line becomes
//! a row of the store, to run or (malformed) already answered with an error. The runner of each
//! coordinator ([`BatchRunner::start`]) then, every [`TICK`] (and as soon as one of its lines
//! is answered):
//!
//! - moves new batches from `validating` to `in_progress`;
//! - claims lines of batches in progress, round the batches in turn (a fair share for each),
//!   while it runs fewer than `max_in_flight` and no interactive request waits for a node —
//!   and runs each exactly as an HTTP request of the batch's owner would run, recorded with the
//!   batch's visibility and linked to it, except that it never queues: a line that finds every
//!   node busy goes back, uncounted, to wait for room;
//! - retries a line that failed for a reason that may pass (a node died before answering, no
//!   node could take it) up to [`MAX_ATTEMPTS`] times;
//! - holds back, without a try counted, the lines no online node can take (none serves the
//!   model at the batch's endpoint, or admits its owner), for up to `batch_unserved_grace` of
//!   the configuration, 60 s by default (nodes link again within seconds after a coordinator
//!   restarts, or after their replica dies): only then does such a line run, and get its
//!   refusal (`model_not_found`, `unsupported_endpoint`, …) as its answer;
//! - finishes a batch whose lines are all answered (its output and error files, in line order),
//!   cancels those asked to stop (within a tick, stopping the lines it runs), and expires those
//!   past their completion window.
//!
//! Everything is in the store: a claimed line holds a lease (`batch_lease` of the
//! configuration, 30 s by default) its runner renews while it runs the line; a runner that
//! dies (or a coordinator killed) leaves leases that run out, and the lines are claimed again
//! by whichever runner is next — on a single coordinator, by itself at its next start at once.
//! Each run of a coordinator holds lines under a name of its own, so a replica restarted under
//! the same id does not take its dead run's lines for its own. A line is answered once: only
//! its holder may write its answer; a batch whose finalizing runner died is finalized by
//! another once its lease has run out.

pub mod input;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use chrono::Utc;
use inference_club_core::endpoint::Endpoint;
use inference_club_core::record::Visibility;
use serde_json::{Value, json};
use tokio::task::AbortHandle;

use crate::CoordinatorConfig;
use crate::api::serve::{Admission, Parts};
use crate::api::{REQUEST_ID_HEADER, VISIBILITY_HEADER};
use crate::auth::{self, Caller};
use crate::dispatch::BackgroundRoom;
use crate::error::ApiError;
use crate::limits::InFlightSlot;
use crate::store::{ClaimedLine, NewLine, RequestCounts, Store, StoreError, UserId};

/// How often the runner looks at the batches.
pub const TICK: Duration = Duration::from_millis(250);
/// How long a batch whose line found no node for it waits before the next line is tried.
const UNSERVED_PAUSE: Duration = Duration::from_secs(1);
/// How many times the answer of a line is written before the runner gives up on it (its
/// lease then runs out and it is claimed again).
const SAVE_TRIES: u32 = 5;
/// How many times a line is tried before its last failure is its answer.
pub const MAX_ATTEMPTS: u64 = 3;
/// The only completion window (OpenAI's).
pub const COMPLETION_WINDOW: &str = "24h";
/// The largest answer of one line kept for the output file.
const MAX_LINE_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Runs the batches of the store on this coordinator's share of the nodes.
pub(crate) struct BatchRunner {
    store: Store,
    parts: Parts,
    config: Arc<CoordinatorConfig>,
    /// Who this runner is, in the lines it claims.
    holder: String,
    /// Lines running here.
    in_flight: AtomicUsize,
    /// How many lines to run at once: up to `max_batch_in_flight`, fewer while the nodes have
    /// no room for more.
    room: Room,
    /// The lines running here (batch, line number): the leases the runner renews.
    held: Mutex<HashSet<(String, u64)>>,
    /// Since when no online node could take the lines of each endpoint and model (lower-case).
    unserved: Mutex<HashMap<(Endpoint, String), Instant>>,
    /// Batches not to claim lines of until then (a line found no node for it).
    paused: Mutex<HashMap<String, Instant>>,
    /// How long a claimed line is held without a renewal.
    lease: Duration,
    /// The tasks running each batch's lines here, to stop them when it is cancelled.
    running: Mutex<HashMap<String, Vec<AbortHandle>>>,
    /// Where the next round of claims starts, so that every batch gets its turn.
    rotation: AtomicUsize,
    /// Woken when a batch is created or cancelled.
    wake: tokio::sync::Notify,
}

impl std::fmt::Debug for BatchRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchRunner")
            .field("holder", &self.holder)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

/// A batch in progress, as the runner needs it.
struct Running {
    id: String,
    endpoint: Endpoint,
    visibility: Option<Visibility>,
    owner: Caller,
}

impl BatchRunner {
    /// A runner over `store`, running lines through `parts`; its loop runs until the runner is
    /// dropped. `replica` names it in a cluster; a single coordinator reclaims at once the lines
    /// an earlier run of itself held.
    pub async fn start(
        store: Store,
        parts: Parts,
        config: Arc<CoordinatorConfig>,
        replica: Option<&str>,
    ) -> Result<Arc<Self>, StoreError> {
        // A name of this run's own: a replica restarted under the same id must not renew (and
        // so keep forever) the leases of the lines its dead run held.
        let run = uuid::Uuid::now_v7().simple();
        let holder = match replica {
            Some(replica) => format!("{replica}-{run}"),
            None => {
                // Nobody else runs lines of this database: whatever is running was ours.
                store.reclaim_all_lines().await?;
                format!("local-{run}")
            }
        };
        let lease = config.batch_lease.max(Duration::from_secs(1));
        let room = Room::new(config.max_batch_in_flight);
        let runner = Arc::new(Self {
            room,
            store,
            parts,
            config,
            holder,
            in_flight: AtomicUsize::new(0),
            held: Mutex::new(HashSet::new()),
            unserved: Mutex::new(HashMap::new()),
            paused: Mutex::new(HashMap::new()),
            lease,
            running: Mutex::new(HashMap::new()),
            rotation: AtomicUsize::new(0),
            wake: tokio::sync::Notify::new(),
        });
        let weak = Arc::downgrade(&runner);
        tokio::spawn(run_loop(weak, lease));
        Ok(runner)
    }

    /// Looks at the batches now rather than at the next tick.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Creates a batch of `owner`'s over `lines` of their file `input_file_id`: its object.
    pub async fn create(
        &self,
        owner: UserId,
        endpoint: Endpoint,
        input_file_id: &str,
        metadata: Option<Value>,
        visibility: Option<Visibility>,
        lines: &[NewLine],
    ) -> Result<Value, ApiError> {
        let now = Utc::now().timestamp();
        let id = format!("batch_{}", uuid::Uuid::now_v7().simple());
        let failed = lines.iter().filter(|l| l.content.is_err()).count() as u64;
        let mut body = json!({
            "id": id,
            "object": "batch",
            "endpoint": endpoint.path(),
            "errors": null,
            "input_file_id": input_file_id,
            "completion_window": COMPLETION_WINDOW,
            "status": "validating",
            "output_file_id": null,
            "error_file_id": null,
            "created_at": now,
            "in_progress_at": null,
            "expires_at": now + 24 * 3600,
            "finalizing_at": null,
            "completed_at": null,
            "failed_at": null,
            "expired_at": null,
            "cancelling_at": null,
            "cancelled_at": null,
            "request_counts": {"total": lines.len(), "completed": 0, "failed": failed},
            "metadata": metadata,
        });
        if let Some(visibility) = visibility {
            body["visibility"] = json!(visibility);
        }
        self.store.insert_batch(owner, &body, lines).await?;
        self.wake();
        Ok(body)
    }

    /// Asks `owner`'s batch `id` to stop: `cancelling` now, `cancelled` within a tick with what
    /// was answered. A batch that has ended is answered as it is.
    pub async fn cancel(&self, owner: UserId, id: &str) -> Result<Option<Value>, ApiError> {
        let Some((batch_owner, mut body)) = self.store.batch(id).await? else {
            return Ok(None);
        };
        if batch_owner != owner {
            return Ok(None);
        }
        let status = body["status"].as_str().unwrap_or_default().to_owned();
        if matches!(status.as_str(), "validating" | "in_progress") {
            body["status"] = json!("cancelling");
            body["cancelling_at"] = json!(Utc::now().timestamp());
            if self
                .store
                .update_batch(&body, &["validating", "in_progress"])
                .await?
            {
                self.stop_lines(id);
                self.wake();
                return Ok(Some(body));
            }
            // It moved on meanwhile: answer what it is now.
            return Ok(self.store.batch(id).await?.map(|(_, body)| body));
        }
        Ok(Some(body))
    }

    /// Stops the lines of batch `id` running here.
    fn stop_lines(&self, id: &str) {
        let tasks = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        for task in tasks.into_iter().flatten() {
            task.abort();
        }
    }

    /// One look at every batch that is not over.
    async fn tick(self: &Arc<Self>) -> Result<(), StoreError> {
        for id in self.store.batches_in("validating").await? {
            self.transition(&id, "validating", "in_progress", "in_progress_at")
                .await?;
        }
        for id in self.store.batches_in("cancelling").await? {
            self.stop_lines(&id);
            self.store
                .close_open_lines(&id, |custom_id| closed_line(custom_id, "batch_cancelled"))
                .await?;
            self.finalize(&id, "cancelling", "cancelled", "cancelled_at")
                .await?;
        }
        for id in self.store.batches_in("finalizing").await? {
            self.take_over_finalizing(&id).await?;
        }
        let mut open = Vec::new();
        for id in self.store.batches_in("in_progress").await? {
            let Some((owner, body)) = self.store.batch(&id).await? else {
                continue;
            };
            let expires_at = body["expires_at"].as_i64().unwrap_or(i64::MAX);
            if Utc::now().timestamp() >= expires_at {
                self.stop_lines(&id);
                self.store
                    .close_open_lines(&id, |custom_id| closed_line(custom_id, "batch_expired"))
                    .await?;
                self.finalize(&id, "in_progress", "expired", "expired_at")
                    .await?;
                continue;
            }
            if !self.store.has_open_lines(&id).await? {
                self.finalize(&id, "in_progress", "completed", "completed_at")
                    .await?;
                continue;
            }
            let Some(user) = self.store.user_by_id(owner).await? else {
                continue;
            };
            open.push(Running {
                endpoint: body["endpoint"]
                    .as_str()
                    .and_then(Endpoint::from_path)
                    .unwrap_or_default(),
                visibility: body["visibility"]
                    .as_str()
                    .and_then(|v| v.parse::<Visibility>().ok()),
                owner: auth::batch_caller(user),
                id,
            });
        }
        self.claim(open).await
    }

    /// Claims lines of the batches in `open`, in turn, up to the room left here; none while an
    /// interactive request waits for a node.
    async fn claim(self: &Arc<Self>, open: Vec<Running>) -> Result<(), StoreError> {
        if open.is_empty() || self.parts.dispatcher.queues.waiting() > 0 {
            return Ok(());
        }
        let max = self.room.limit();
        let room = max.saturating_sub(self.in_flight.load(Ordering::Acquire));
        if room == 0 {
            return Ok(());
        }
        let share = u32::try_from((room / open.len()).max(1)).unwrap_or(1);
        let start = self.rotation.fetch_add(1, Ordering::Relaxed) % open.len();
        let lease = self.lease_until();
        let paused: HashSet<String> = {
            let now = Instant::now();
            let mut paused = self.paused.lock().unwrap_or_else(PoisonError::into_inner);
            paused.retain(|_, until| *until > now);
            paused.keys().cloned().collect()
        };
        let mut left = room;
        for index in 0..open.len() {
            let Some(batch) = open.get((start + index) % open.len()) else {
                continue;
            };
            if paused.contains(&batch.id) {
                continue;
            }
            let take = share.min(u32::try_from(left).unwrap_or(u32::MAX));
            if take == 0 {
                break;
            }
            let lines = self
                .store
                .claim_lines(&batch.id, &self.holder, lease, take)
                .await?;
            left = left.saturating_sub(lines.len());
            for line in lines {
                self.spawn_line(batch, line);
            }
        }
        Ok(())
    }

    /// When a lease taken (or renewed) now runs out.
    fn lease_until(&self) -> chrono::DateTime<Utc> {
        Utc::now() + chrono::Duration::from_std(self.lease).unwrap_or_default()
    }

    /// Renews the leases of the lines running here.
    async fn renew(&self) {
        let held: Vec<(String, u64)> = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        if held.is_empty() {
            return;
        }
        if let Err(error) = self
            .store
            .renew_lines(&self.holder, self.lease_until(), &held)
            .await
        {
            tracing::warn!("cannot renew the leases of batch lines: {error}");
        }
    }

    /// Runs one line in a task of its own (stopped if its batch is cancelled).
    fn spawn_line(self: &Arc<Self>, batch: &Running, line: ClaimedLine) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let key = (line.batch_id.clone(), line.line_no);
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone());
        let runner = self.clone();
        let owner = batch.owner.clone();
        let (endpoint, visibility) = (batch.endpoint, batch.visibility);
        let batch_id = batch.id.clone();
        let task = tokio::spawn(async move {
            let ran = {
                let _counted = Counted(&runner.in_flight);
                let _held = Held(&runner.held, key);
                runner.run_line(line, owner, endpoint, visibility).await
            };
            // Room for another line now, not at the next tick (unless this one found no room
            // or no node for its model: then the next tick is soon enough).
            if ran {
                runner.wake();
            }
        });
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let tasks = running.entry(batch_id).or_default();
        tasks.retain(|t| !t.is_finished());
        tasks.push(task.abort_handle());
    }

    /// Runs `line` as its owner's request to `endpoint` and answers it (or gives it back, to
    /// be tried again); whether it ran (false: it found no room, or no node for its model).
    async fn run_line(
        &self,
        line: ClaimedLine,
        owner: Caller,
        endpoint: Endpoint,
        visibility: Option<Visibility>,
    ) -> bool {
        let model = line.request["model"].as_str().unwrap_or_default();
        let room = self.parts.dispatcher.room_for_background(
            endpoint,
            model,
            &owner.user.handle,
            owner.user.routing_preference,
        );
        match room {
            BackgroundRoom::Free => {
                self.found_a_node(endpoint, model);
                self.room.raise();
            }
            BackgroundRoom::Busy => {
                // Every node serving it is busy (or keeps its last slots for interactive
                // requests): nothing runs, nothing is recorded, no try is counted, and this
                // runner takes fewer lines at once until there is room again.
                self.room.lower(self.in_flight.load(Ordering::Acquire));
                self.give_back(&line).await;
                return false;
            }
            BackgroundRoom::NoNode if self.waits_for_a_node(endpoint, model) => {
                // No node can take it now (they may be linking again): nothing runs, no try
                // is counted, and the batch pauses a moment.
                self.paused
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(line.batch_id.clone(), Instant::now() + UNSERVED_PAUSE);
                self.give_back(&line).await;
                return false;
            }
            // No node could take it for the grace: it runs, and the refusal it gets (the model
            // not found, not served at this endpoint, not to this member) is its answer.
            BackgroundRoom::NoNode => {}
        }
        let mut body = line.request.clone();
        if let Some(object) = body.as_object_mut() {
            object.insert("stream".into(), Value::Bool(false));
            object.remove("stream_options");
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(visibility) = visibility
            && let Ok(value) = HeaderValue::from_str(visibility.as_str())
        {
            headers.insert(VISIBILITY_HEADER, value);
        }
        let admission = Admission {
            slot: InFlightSlot::uncounted(owner.user.id),
            caller: owner,
            received: Instant::now(),
            batch: Some(line.batch_id.clone()),
        };
        let response = match crate::api::serve_endpoint(
            &self.parts,
            &self.config,
            endpoint,
            admission,
            &headers,
            Body::from(body.to_string()),
        )
        .await
        {
            Ok(response) | Err(response) => response,
        };
        let answer = LineAnswer::read(response).await;
        let result = answer.line(&line.custom_id);
        // The answer is written (or the line given back) even when the database hiccups: a line
        // left running would wait for its lease to run out and run again.
        for attempt in 1..=SAVE_TRIES {
            let outcome = if answer.no_room {
                // Nothing ran: wait for room, without counting a try.
                self.store.release_line(&line, &self.holder, false).await
            } else if answer.may_pass && line.attempts + 1 < MAX_ATTEMPTS {
                self.store.release_line(&line, &self.holder, true).await
            } else {
                self.store
                    .finish_line(&line, &self.holder, answer.ok, &result)
                    .await
                    .map(|_| ())
            };
            match outcome {
                Ok(()) => return !answer.no_room,
                Err(error) if attempt < SAVE_TRIES => {
                    tracing::warn!(batch = %line.batch_id, line = line.line_no, "cannot save a batch line, trying again: {error}");
                    tokio::time::sleep(Duration::from_millis(200) * attempt).await;
                }
                Err(error) => {
                    tracing::error!(batch = %line.batch_id, line = line.line_no, "cannot save a batch line: {error}");
                }
            }
        }
        false
    }

    /// Gives `line` back, uncounted, to be claimed again.
    async fn give_back(&self, line: &ClaimedLine) {
        let released = self.store.release_line(line, &self.holder, false).await;
        if let Err(error) = released {
            tracing::warn!(batch = %line.batch_id, line = line.line_no, "cannot give a batch line back: {error}");
        }
    }

    /// Whether a line for `model` at `endpoint`, which no node can take now, is to wait for
    /// one: none could for less than the grace (`batch_unserved_grace` of the configuration)
    /// as this runner saw it.
    fn waits_for_a_node(&self, endpoint: Endpoint, model: &str) -> bool {
        let mut unserved = self.unserved.lock().unwrap_or_else(PoisonError::into_inner);
        let since = *unserved
            .entry((endpoint, model.to_ascii_lowercase()))
            .or_insert_with(Instant::now);
        since.elapsed() < self.config.batch_unserved_grace
    }

    /// A node could take a line for `model` at `endpoint`: the grace starts again the next time
    /// none can.
    fn found_a_node(&self, endpoint: Endpoint, model: &str) {
        let mut unserved = self.unserved.lock().unwrap_or_else(PoisonError::into_inner);
        if !unserved.is_empty() {
            unserved.remove(&(endpoint, model.to_ascii_lowercase()));
        }
    }

    /// Moves batch `id` from `from` to `to`, stamping `at`.
    async fn transition(
        &self,
        id: &str,
        from: &str,
        to: &str,
        at: &str,
    ) -> Result<bool, StoreError> {
        let Some((_, mut body)) = self.store.batch(id).await? else {
            return Ok(false);
        };
        body["status"] = json!(to);
        body[at] = json!(Utc::now().timestamp());
        self.store.update_batch(&body, &[from]).await
    }

    /// Ends batch `id` (from `from`): `finalizing` while its output and error files are
    /// written, then `to`, stamped `at`, with the files and the final counts. One runner of
    /// several wins the move and writes the files.
    async fn finalize(&self, id: &str, from: &str, to: &str, at: &str) -> Result<(), StoreError> {
        let Some((owner, mut body)) = self.store.batch(id).await? else {
            return Ok(());
        };
        if from == "in_progress" {
            if !self
                .transition(id, "in_progress", "finalizing", "finalizing_at")
                .await?
            {
                return Ok(());
            }
            if let Some((_, now)) = self.store.batch(id).await? {
                body = now;
            }
        }
        let mut output = Vec::new();
        let mut errors = Vec::new();
        for (ok, line) in self.store.line_results(id).await? {
            let file = if ok { &mut output } else { &mut errors };
            file.extend_from_slice(line.as_bytes());
            file.push(b'\n');
        }
        for (data, field, name) in [
            (&output, "output_file_id", "output"),
            (&errors, "error_file_id", "error"),
        ] {
            if !data.is_empty() {
                let file = self
                    .store
                    .put_file(owner, "batch_output", &format!("{id}_{name}.jsonl"), data)
                    .await?;
                body[field] = json!(file.id);
            }
        }
        let (counts, _) = self.store.line_counts(id).await?;
        body["request_counts"] = counts_json(counts);
        body["status"] = json!(to);
        body[at] = json!(Utc::now().timestamp());
        let from = if from == "in_progress" {
            "finalizing"
        } else {
            from
        };
        self.store.update_batch(&body, &[from]).await?;
        Ok(())
    }

    /// Finalizes batch `id`, found `finalizing`, when the runner that moved it there has not
    /// finished within a lease (it died): this runner takes it over (one of several wins) and
    /// writes its files.
    async fn take_over_finalizing(&self, id: &str) -> Result<(), StoreError> {
        let Some((_, body)) = self.store.batch(id).await? else {
            return Ok(());
        };
        let now = Utc::now().timestamp();
        let since = body["finalizing_at"].as_i64().unwrap_or(now);
        let lease = i64::try_from(self.lease.as_secs()).unwrap_or(i64::MAX);
        if now.saturating_sub(since) <= lease {
            return Ok(());
        }
        let mut taken = body.clone();
        taken["finalizing_at"] = json!(now);
        if !self.store.replace_batch(&taken, &body).await? {
            return Ok(());
        }
        let expired = body["expires_at"].as_i64().is_some_and(|at| since >= at);
        let (to, at) = if expired {
            ("expired", "expired_at")
        } else {
            ("completed", "completed_at")
        };
        self.finalize(id, "finalizing", to, at).await
    }

    /// A batch's object with its counts as they are now.
    pub async fn current(&self, owner: UserId, id: &str) -> Result<Option<Value>, StoreError> {
        let Some((batch_owner, mut body)) = self.store.batch(id).await? else {
            return Ok(None);
        };
        if batch_owner != owner {
            return Ok(None);
        }
        self.count_now(id, &mut body).await?;
        Ok(Some(body))
    }

    /// The caller's batches as stored (`batches`, from [`Store::list_batches`]), with the
    /// counts of those still running as they are now.
    pub async fn current_all(&self, mut batches: Vec<Value>) -> Result<Vec<Value>, StoreError> {
        for body in &mut batches {
            if let Some(id) = body["id"].as_str().map(str::to_owned) {
                self.count_now(&id, body).await?;
            }
        }
        Ok(batches)
    }

    /// Sets the `request_counts` of batch `id` (`body`) as they are now, when it is still
    /// running (the stored counts are those of its last change of status).
    async fn count_now(&self, id: &str, body: &mut Value) -> Result<(), StoreError> {
        if matches!(
            body["status"].as_str(),
            Some("validating" | "in_progress" | "cancelling" | "finalizing")
        ) {
            let (counts, _) = self.store.line_counts(id).await?;
            body["request_counts"] = counts_json(counts);
        }
        Ok(())
    }
}

fn counts_json(counts: RequestCounts) -> Value {
    json!({"total": counts.total, "completed": counts.completed, "failed": counts.failed})
}

/// The error line of a line that was never answered: its batch was cancelled or expired.
fn closed_line(custom_id: &str, code: &str) -> Value {
    let message = match code {
        "batch_expired" => "the batch expired before this request ran",
        _ => "the batch was cancelled before this request ran",
    };
    json!({
        "id": format!("batch_req_{}", uuid::Uuid::now_v7().simple()),
        "custom_id": custom_id,
        "response": null,
        "error": {"code": code, "message": message},
    })
}

/// How many lines a runner takes at once: it drops to what ran when a line found no room, and
/// climbs back by one with each line that found room (so it settles at what the nodes have for
/// batches, instead of claiming lines only to give them back).
#[derive(Debug)]
struct Room {
    limit: AtomicUsize,
    max: usize,
}

impl Room {
    fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            limit: AtomicUsize::new(max),
            max,
        }
    }

    fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    /// A line found no room while `running` lines ran (itself included).
    fn lower(&self, running: usize) {
        self.limit
            .store(running.saturating_sub(1).max(1), Ordering::Release);
    }

    /// A line found room.
    fn raise(&self) {
        let _ = self
            .limit
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| {
                Some((l + 1).min(self.max))
            });
    }
}

/// Counts a running line until dropped (also when its task is stopped).
struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Keeps a running line's lease renewed until dropped (also when its task is stopped).
struct Held<'a>(&'a Mutex<HashSet<(String, u64)>>, (String, u64));

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.1);
    }
}

/// What a line's request was answered.
struct LineAnswer {
    status: u16,
    ok: bool,
    /// Every node was busy: nothing ran, nothing was recorded.
    no_room: bool,
    /// A failure that may pass (a node failed, none could take it): worth another try.
    may_pass: bool,
    request_id: Option<String>,
    body: Value,
}

impl LineAnswer {
    async fn read(response: Response) -> Self {
        let status = response.status().as_u16();
        let request_id = response
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = match axum::body::to_bytes(response.into_body(), MAX_LINE_ANSWER_BYTES).await {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                json!({"error": {"message": String::from_utf8_lossy(&bytes), "type": "server_error", "param": null, "code": null}})
            }),
            Err(error) => {
                json!({"error": {"message": format!("the answer could not be read: {error}"), "type": "server_error", "param": null, "code": null}})
            }
        };
        let code = body["error"]["code"].as_str().unwrap_or_default();
        Self {
            status,
            ok: (200..300).contains(&status),
            no_room: status == 503 && code == "overloaded" && request_id.is_none(),
            may_pass: (502..=504).contains(&status),
            request_id,
            body,
        }
    }

    /// The line of the output (or error) file.
    fn line(&self, custom_id: &str) -> Value {
        json!({
            "id": format!("batch_req_{}", uuid::Uuid::now_v7().simple()),
            "custom_id": custom_id,
            "response": {
                "status_code": self.status,
                "request_id": self.request_id,
                "body": self.body,
            },
            "error": null,
        })
    }
}

/// The runner's loop: a tick every [`TICK`] (or when woken), and the leases of the lines it
/// runs renewed every third of `lease`; it ends with the runner.
async fn run_loop(runner: Weak<BatchRunner>, lease: Duration) {
    let mut ticks = tokio::time::interval(TICK);
    let mut renewals = tokio::time::interval(lease / 3);
    loop {
        let wake = {
            let Some(runner) = runner.upgrade() else {
                return;
            };
            tokio::select! {
                _ = ticks.tick() => {}
                () = runner.wake.notified() => {}
                _ = renewals.tick() => {
                    runner.renew().await;
                    continue;
                }
            }
            runner
        };
        if let Err(error) = wake.tick().await {
            tracing::warn!("the batch runner could not look at the batches: {error}");
        }
    }
}
