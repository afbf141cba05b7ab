//! Files, batches and their lines (the OpenAI Files and Batch APIs), and the first answers to
//! POSTs sent with an `Idempotency-Key`.
//!
//! A batch's lines are claimed by the coordinators that run them ([`Store::claim_lines`]: state
//! `running`, a holder and a lease the holder renews), and answered once
//! ([`Store::finish_line`] only writes a line its caller still holds). A line whose holder died
//! is claimed again when its lease has run out; one whose answer failed for a reason that may
//! pass goes back to `pending` ([`Store::release_line`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::sql::{from_micros, get, micros, now};
use super::{Store, StoreError, UserId};

/// A stored file, without its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// `file-<hex>`.
    pub id: String,
    /// Its owner.
    pub owner_id: UserId,
    /// `batch` (an upload) or `batch_output` (a batch's output or error file).
    pub purpose: String,
    /// The name it was uploaded (or made) under.
    pub filename: String,
    /// Its size.
    pub bytes: u64,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
}

impl StoredFile {
    /// The OpenAI `file` object.
    pub fn object(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at.timestamp(),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": null,
            "expires_at": null,
        })
    }
}

/// The counts of a batch's lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    /// All lines.
    pub total: u64,
    /// Answered with a 2xx.
    pub completed: u64,
    /// Answered otherwise, or malformed.
    pub failed: u64,
}

/// A line of a batch to run, as claimed.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedLine {
    /// Its batch.
    pub batch_id: String,
    /// Its line number in the input file (from 1).
    pub line_no: u64,
    /// The caller's id for it.
    pub custom_id: String,
    /// The request body.
    pub request: Value,
    /// How many times it was claimed before.
    pub attempts: u64,
}

/// A new line of a batch: pending with its request, or already answered (a malformed line, with
/// its error line).
#[derive(Debug, Clone, PartialEq)]
pub struct NewLine {
    /// Its line number (from 1).
    pub line_no: u64,
    /// The caller's id for it (may be empty for a malformed line).
    pub custom_id: String,
    /// The request body, or (for a malformed line) the error line to put in the error file.
    pub content: Result<Value, Value>,
}

/// The first answer to a POST with an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RememberedAnswer {
    /// The route it was sent to.
    pub route: String,
    /// The hash of the body it came with.
    pub request_hash: String,
    /// The status answered.
    pub status: u16,
    /// The body answered.
    pub response: String,
}

fn file_of(row: &sqlx::any::AnyRow) -> Result<StoredFile, StoreError> {
    Ok(StoredFile {
        id: get(row, "id")?,
        owner_id: UserId::from(super::sql::get_uuid(row, "owner_id")?),
        purpose: get(row, "purpose")?,
        filename: get(row, "filename")?,
        bytes: u64::try_from(get::<i64>(row, "bytes")?).unwrap_or(0),
        created_at: from_micros("created_at", get(row, "created_at")?)?,
    })
}

const FILE_COLUMNS: &str = "id, owner_id, purpose, filename, bytes, created_at";

/// How many lines of a cancelled or expired batch are closed in one commit.
const CLOSE_PER_COMMIT: usize = 500;

impl Store {
    /// Stores a file of `owner`'s; answers it.
    pub async fn put_file(
        &self,
        owner: UserId,
        purpose: &str,
        filename: &str,
        data: &[u8],
    ) -> Result<StoredFile, StoreError> {
        let file = StoredFile {
            id: format!("file-{}", uuid::Uuid::now_v7().simple()),
            owner_id: owner,
            purpose: purpose.to_owned(),
            filename: filename.to_owned(),
            bytes: data.len() as u64,
            created_at: now(),
        };
        sqlx::query(
            "INSERT INTO files (id, owner_id, purpose, filename, bytes, created_at, data)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(file.id.clone())
        .bind(owner.to_string())
        .bind(file.purpose.clone())
        .bind(file.filename.clone())
        .bind(i64::try_from(data.len()).unwrap_or(i64::MAX))
        .bind(micros(file.created_at))
        .bind(data.to_vec())
        .execute(&self.inner.pool)
        .await?;
        Ok(file)
    }

    /// `owner`'s file `id`, if it exists and is theirs.
    pub async fn file(&self, owner: UserId, id: &str) -> Result<Option<StoredFile>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE id = $1 AND owner_id = $2"
        ))
        .bind(id.to_owned())
        .bind(owner.to_string())
        .fetch_optional(&self.inner.pool)
        .await?;
        row.as_ref().map(file_of).transpose()
    }

    /// The bytes of `owner`'s file `id`.
    pub async fn file_content(
        &self,
        owner: UserId,
        id: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT data FROM files WHERE id = $1 AND owner_id = $2")
            .bind(id.to_owned())
            .bind(owner.to_string())
            .fetch_optional(&self.inner.pool)
            .await?;
        row.map(|row| get(&row, "data")).transpose()
    }

    /// `owner`'s files (of `purpose`, when given), newest first: at most `limit`, before the
    /// file `after` when given.
    pub async fn list_files(
        &self,
        owner: UserId,
        purpose: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<StoredFile>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {FILE_COLUMNS} FROM files
             WHERE owner_id = $1 AND ($2 = '' OR id < $2) AND ($4 = '' OR purpose = $4)
             ORDER BY id DESC LIMIT $3"
        ))
        .bind(owner.to_string())
        .bind(after.unwrap_or_default().to_owned())
        .bind(i64::from(limit))
        .bind(purpose.unwrap_or_default().to_owned())
        .fetch_all(&self.inner.pool)
        .await?;
        rows.iter().map(file_of).collect()
    }

    /// Deletes `owner`'s file `id`; whether there was one.
    pub async fn delete_file(&self, owner: UserId, id: &str) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM files WHERE id = $1 AND owner_id = $2")
            .bind(id.to_owned())
            .bind(owner.to_string())
            .execute(&self.inner.pool)
            .await?;
        Ok(deleted.rows_affected() > 0)
    }

    /// Stores a new batch of `owner`'s (its object `body`, with `id` and `status`) and its
    /// lines, in one transaction.
    pub async fn insert_batch(
        &self,
        owner: UserId,
        body: &Value,
        lines: &[NewLine],
    ) -> Result<(), StoreError> {
        let id = batch_field(body, "id")?;
        let status = batch_field(body, "status")?;
        let mut tx = self
            .inner
            .pool
            .begin_with(self.inner.backend.begin_write())
            .await?;
        sqlx::query(
            "INSERT INTO batches (id, owner_id, status, created_at, body) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id.clone())
        .bind(owner.to_string())
        .bind(status)
        .bind(micros(now()))
        .bind(body.to_string())
        .execute(&mut *tx)
        .await?;
        for line in lines {
            let (state, request, result, ok) = match &line.content {
                Ok(request) => ("pending", request.to_string(), None, None),
                Err(error) => ("done", String::new(), Some(error.to_string()), Some(0i64)),
            };
            sqlx::query(
                "INSERT INTO batch_lines (batch_id, line_no, custom_id, request, state, ok, result)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(id.clone())
            .bind(i64::try_from(line.line_no).unwrap_or(i64::MAX))
            .bind(line.custom_id.clone())
            .bind(request)
            .bind(state)
            .bind(ok)
            .bind(result)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The batch `id` as stored (its owner, its object), if it exists.
    pub async fn batch(&self, id: &str) -> Result<Option<(UserId, Value)>, StoreError> {
        let row = sqlx::query("SELECT owner_id, body FROM batches WHERE id = $1")
            .bind(id.to_owned())
            .fetch_optional(&self.inner.pool)
            .await?;
        row.map(|row| {
            let owner = UserId::from(super::sql::get_uuid(&row, "owner_id")?);
            let body = serde_json::from_str(&get::<String>(&row, "body")?)
                .map_err(|e| StoreError::corrupt("body", e))?;
            Ok((owner, body))
        })
        .transpose()
    }

    /// `owner`'s batches, newest first: at most `limit`, before the batch `after` when given.
    pub async fn list_batches(
        &self,
        owner: UserId,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Value>, StoreError> {
        let rows = sqlx::query(
            "SELECT body FROM batches WHERE owner_id = $1 AND ($2 = '' OR id < $2)
             ORDER BY id DESC LIMIT $3",
        )
        .bind(owner.to_string())
        .bind(after.unwrap_or_default().to_owned())
        .bind(i64::from(limit))
        .fetch_all(&self.inner.pool)
        .await?;
        rows.iter()
            .map(|row| {
                serde_json::from_str(&get::<String>(row, "body")?)
                    .map_err(|e| StoreError::corrupt("body", e))
            })
            .collect()
    }

    /// The ids of the batches in `status`.
    pub async fn batches_in(&self, status: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT id FROM batches WHERE status = $1 ORDER BY id")
            .bind(status.to_owned())
            .fetch_all(&self.inner.pool)
            .await?;
        rows.iter().map(|row| get(row, "id")).collect()
    }

    /// Saves a batch's object when its status is still `from` (one of several replicas moving
    /// it wins); whether it was saved.
    pub async fn update_batch(&self, body: &Value, from: &[&str]) -> Result<bool, StoreError> {
        let id = batch_field(body, "id")?;
        let status = batch_field(body, "status")?;
        let mut updated = false;
        for from in from {
            let done = sqlx::query(
                "UPDATE batches SET status = $1, body = $2 WHERE id = $3 AND status = $4",
            )
            .bind(status.clone())
            .bind(body.to_string())
            .bind(id.clone())
            .bind((*from).to_owned())
            .execute(&self.inner.pool)
            .await?;
            updated |= done.rows_affected() > 0;
            if updated {
                break;
            }
        }
        Ok(updated)
    }

    /// Saves a batch's object `body` when the stored one is still exactly `previous` (one of
    /// several replicas taking it over wins); whether it was saved.
    pub async fn replace_batch(&self, body: &Value, previous: &Value) -> Result<bool, StoreError> {
        let id = batch_field(body, "id")?;
        let status = batch_field(body, "status")?;
        let done =
            sqlx::query("UPDATE batches SET status = $1, body = $2 WHERE id = $3 AND body = $4")
                .bind(status)
                .bind(body.to_string())
                .bind(id)
                .bind(previous.to_string())
                .execute(&self.inner.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Whether some line of `batch` is not answered yet (pending or running): a lookup in the
    /// index of line states, however many lines the batch has.
    pub async fn has_open_lines(&self, batch: &str) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT 1 AS open FROM batch_lines
             WHERE state IN ('pending', 'running') AND batch_id = $1 LIMIT 1",
        )
        .bind(batch.to_owned())
        .fetch_optional(&self.inner.pool)
        .await?;
        Ok(row.is_some())
    }

    /// The counts of a batch's lines: all, answered with a 2xx, answered otherwise; and how
    /// many are not answered yet.
    pub async fn line_counts(&self, batch: &str) -> Result<(RequestCounts, u64), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS total,
                    COALESCE(SUM(CASE WHEN state = 'done' AND ok = 1 THEN 1 ELSE 0 END), 0) AS completed,
                    COALESCE(SUM(CASE WHEN state = 'done' AND ok = 0 THEN 1 ELSE 0 END), 0) AS failed
             FROM batch_lines WHERE batch_id = $1",
        )
        .bind(batch.to_owned())
        .fetch_one(&self.inner.pool)
        .await?;
        let count = |column| get::<i64>(&row, column).map(|n| u64::try_from(n).unwrap_or(0));
        let counts = RequestCounts {
            total: count("total")?,
            completed: count("completed")?,
            failed: count("failed")?,
        };
        let open = counts.total - counts.completed.min(counts.total) - counts.failed;
        Ok((counts, open))
    }

    /// Claims up to `limit` lines of batch `batch` for `holder` until `lease_until`: pending
    /// lines, and running ones whose lease ran out (their holder died), in line order.
    pub async fn claim_lines(
        &self,
        batch: &str,
        holder: &str,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<ClaimedLine>, StoreError> {
        let skip_locked = match self.inner.backend {
            super::Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            super::Backend::Sqlite => "",
        };
        let mut tx = self
            .inner
            .pool
            .begin_with(self.inner.backend.begin_write())
            .await?;
        let rows = sqlx::query(&format!(
            "SELECT line_no, custom_id, request, attempts FROM batch_lines
             WHERE batch_id = $1 AND (state = 'pending' OR (state = 'running' AND lease_until < $2))
             ORDER BY line_no LIMIT $3{skip_locked}"
        ))
        .bind(batch.to_owned())
        .bind(micros(now()))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let line_no: i64 = get(row, "line_no")?;
            sqlx::query(
                "UPDATE batch_lines SET state = 'running', holder = $1, lease_until = $2,
                        attempts = attempts + 1
                 WHERE batch_id = $3 AND line_no = $4",
            )
            .bind(holder.to_owned())
            .bind(micros(lease_until))
            .bind(batch.to_owned())
            .bind(line_no)
            .execute(&mut *tx)
            .await?;
            claimed.push(ClaimedLine {
                batch_id: batch.to_owned(),
                line_no: u64::try_from(line_no).unwrap_or(0),
                custom_id: get(row, "custom_id")?,
                request: serde_json::from_str(&get::<String>(row, "request")?)
                    .map_err(|e| StoreError::corrupt("request", e))?,
                attempts: u64::try_from(get::<i64>(row, "attempts")?).unwrap_or(0),
            });
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Renews until `lease_until` the leases of `lines` (batch, line number) that `holder` still
    /// runs; answers how many it renewed. Only the lines named are renewed: one whose answer
    /// could not be written is not kept forever, its lease runs out and it is claimed again.
    pub async fn renew_lines(
        &self,
        holder: &str,
        lease_until: DateTime<Utc>,
        lines: &[(String, u64)],
    ) -> Result<u64, StoreError> {
        let mut tx = self
            .inner
            .pool
            .begin_with(self.inner.backend.begin_write())
            .await?;
        let mut renewed = 0;
        for (batch, line_no) in lines {
            let done = sqlx::query(
                "UPDATE batch_lines SET lease_until = $1
                 WHERE batch_id = $2 AND line_no = $3 AND holder = $4 AND state = 'running'",
            )
            .bind(micros(lease_until))
            .bind(batch.clone())
            .bind(i64::try_from(*line_no).unwrap_or(i64::MAX))
            .bind(holder.to_owned())
            .execute(&mut *tx)
            .await?;
            renewed += done.rows_affected();
        }
        tx.commit().await?;
        Ok(renewed)
    }

    /// Answers a line `holder` runs with `result` (`ok`: a 2xx); false (and nothing written)
    /// when it no longer holds it: the line is answered once.
    pub async fn finish_line(
        &self,
        line: &ClaimedLine,
        holder: &str,
        ok: bool,
        result: &Value,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE batch_lines SET state = 'done', ok = $1, result = $2, holder = NULL,
                    lease_until = NULL
             WHERE batch_id = $3 AND line_no = $4 AND state = 'running' AND holder = $5",
        )
        .bind(i64::from(ok))
        .bind(result.to_string())
        .bind(line.batch_id.clone())
        .bind(i64::try_from(line.line_no).unwrap_or(i64::MAX))
        .bind(holder.to_owned())
        .execute(&self.inner.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Gives a line `holder` runs back, to be claimed again: its answer failed for a reason
    /// that may pass (`counted`: the try counts), or it found no room (nothing ran).
    pub async fn release_line(
        &self,
        line: &ClaimedLine,
        holder: &str,
        counted: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE batch_lines SET state = 'pending', holder = NULL, lease_until = NULL,
                    attempts = attempts - $4
             WHERE batch_id = $1 AND line_no = $2 AND state = 'running' AND holder = $3",
        )
        .bind(line.batch_id.clone())
        .bind(i64::try_from(line.line_no).unwrap_or(i64::MAX))
        .bind(holder.to_owned())
        .bind(i64::from(!counted))
        .execute(&self.inner.pool)
        .await?;
        Ok(())
    }

    /// Makes every running line claimable at once: for a single coordinator at its start, when
    /// whatever ran was an earlier run of its own.
    pub async fn reclaim_all_lines(&self) -> Result<u64, StoreError> {
        let reclaimed = sqlx::query(
            "UPDATE batch_lines SET state = 'pending', holder = NULL, lease_until = NULL
             WHERE state = 'running'",
        )
        .execute(&self.inner.pool)
        .await?;
        Ok(reclaimed.rows_affected())
    }

    /// Answers every line of `batch` not answered yet with `result(custom_id)` as a failure
    /// (the batch was cancelled or expired); lines running elsewhere are answered too, and
    /// their holders' answers then find them answered.
    pub async fn close_open_lines(
        &self,
        batch: &str,
        result: impl Fn(&str) -> Value,
    ) -> Result<u64, StoreError> {
        let rows = sqlx::query(
            "SELECT line_no, custom_id FROM batch_lines WHERE batch_id = $1 AND state <> 'done'",
        )
        .bind(batch.to_owned())
        .fetch_all(&self.inner.pool)
        .await?;
        let mut closed = 0;
        // A commit per line made a batch of 50,000 lines take minutes to close; one commit for
        // all would hold the database's write lock as long. A commit per chunk does neither.
        for chunk in rows.chunks(CLOSE_PER_COMMIT) {
            let mut tx = self
                .inner
                .pool
                .begin_with(self.inner.backend.begin_write())
                .await?;
            for row in chunk {
                let custom_id: String = get(row, "custom_id")?;
                let done = sqlx::query(
                    "UPDATE batch_lines SET state = 'done', ok = 0, result = $1, holder = NULL,
                            lease_until = NULL
                     WHERE batch_id = $2 AND line_no = $3 AND state <> 'done'",
                )
                .bind(result(&custom_id).to_string())
                .bind(batch.to_owned())
                .bind(get::<i64>(row, "line_no")?)
                .execute(&mut *tx)
                .await?;
                closed += done.rows_affected();
            }
            tx.commit().await?;
        }
        Ok(closed)
    }

    /// The answered lines of `batch` in line order: (answered with a 2xx, the line).
    pub async fn line_results(&self, batch: &str) -> Result<Vec<(bool, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT ok, result FROM batch_lines WHERE batch_id = $1 AND state = 'done'
             ORDER BY line_no",
        )
        .bind(batch.to_owned())
        .fetch_all(&self.inner.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    get::<Option<i64>>(row, "ok")? == Some(1),
                    get::<Option<String>>(row, "result")?.unwrap_or_default(),
                ))
            })
            .collect()
    }

    /// The answer remembered for `owner`'s `key`, if any.
    pub async fn remembered_answer(
        &self,
        owner: UserId,
        key: &str,
    ) -> Result<Option<RememberedAnswer>, StoreError> {
        let row = sqlx::query(
            "SELECT route, request_hash, status, response FROM idempotency_keys
             WHERE owner_id = $1 AND key = $2",
        )
        .bind(owner.to_string())
        .bind(key.to_owned())
        .fetch_optional(&self.inner.pool)
        .await?;
        row.map(|row| {
            Ok(RememberedAnswer {
                route: get(&row, "route")?,
                request_hash: get(&row, "request_hash")?,
                status: u16::try_from(get::<i64>(&row, "status")?).unwrap_or(500),
                response: get(&row, "response")?,
            })
        })
        .transpose()
    }

    /// Remembers the first answer to `owner`'s `key` (a second, racing one changes nothing).
    pub async fn remember_answer(
        &self,
        owner: UserId,
        key: &str,
        answer: &RememberedAnswer,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO idempotency_keys (owner_id, key, route, request_hash, status, response, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (owner_id, key) DO NOTHING",
        )
        .bind(owner.to_string())
        .bind(key.to_owned())
        .bind(answer.route.clone())
        .bind(answer.request_hash.clone())
        .bind(i64::from(answer.status))
        .bind(answer.response.clone())
        .bind(micros(now()))
        .execute(&self.inner.pool)
        .await?;
        Ok(())
    }
}

fn batch_field(body: &Value, field: &'static str) -> Result<String, StoreError> {
    body.get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| StoreError::invalid(field, "a batch object needs it"))
}
