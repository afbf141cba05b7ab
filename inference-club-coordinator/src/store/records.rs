//! Request records: written at acceptance, saved as they progress, listed with filters and
//! keyset pagination, read under the visibility rules, deleted by their owners.
//!
//! Each record is kept whole as JSON, beside indexed columns for the filters. Its `visibility`
//! column is the truth (the owner may change it while the request runs; the coordinator's saves
//! never overwrite it), so reads put that column into the record they return.

use chrono::{DateTime, Utc};
use inference_club_core::record::{InferenceRecord, RecordId, Status, Visibility};
use serde::Serialize;
use sqlx::any::AnyArguments;
use sqlx::any::AnyRow;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection};

use super::error::Entity;
use super::sql::{Backend, get, get_parsed, micros, now};
use super::users::handle_key;
use super::{Store, StoreError, UserId};

/// The most records one page holds.
pub const MAX_PAGE_SIZE: u32 = 100;
/// The page size when a query names none.
pub const DEFAULT_PAGE_SIZE: u32 = 50;

/// A record with the ids the read rules need.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredRecord {
    /// The record (its `visibility` is the stored one).
    pub record: InferenceRecord,
    /// The member who made the request, if they are still a member.
    pub consumer_id: Option<UserId>,
    /// The operator of the node that served it, if it was served and they are still a member.
    pub operator_id: Option<UserId>,
}

impl StoredRecord {
    /// Whether `viewer` (`None`: not signed in) may read the record: anyone for `public` and
    /// `unlisted`; for `private`, its consumer and the operator whose node served it.
    pub fn readable_by(&self, viewer: Option<UserId>) -> bool {
        match self.record.visibility {
            Visibility::Public | Visibility::Unlisted => true,
            Visibility::Private => {
                viewer.is_some() && (viewer == self.consumer_id || viewer == self.operator_id)
            }
        }
    }
}

/// Where a listing continues: opaque to clients, handed back as it was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cursor(RecordId);

impl Cursor {
    /// Reads a cursor that a [`Page`] handed out ([`StoreError::Invalid`] otherwise).
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        uuid::Uuid::try_parse(text.trim())
            .map(|uuid| Self(RecordId::from(uuid)))
            .map_err(|_| StoreError::invalid("cursor", format!("{text:?} is not a cursor")))
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.as_uuid().simple().fmt(f)
    }
}

impl std::str::FromStr for Cursor {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One page of a listing, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

/// What [`Store::list_records`] lists: every filter set must hold. Newest first.
///
/// ```
/// use inference_club_coordinator::testing::RecordQuery;
/// use inference_club_core::record::Status;
///
/// let feed = RecordQuery::public_feed().with_status(Status::Succeeded).with_limit(20);
/// assert_eq!(feed.limit, 20);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordQuery {
    /// Requests made by this member.
    pub consumer: Option<UserId>,
    /// Requests served by this operator's nodes.
    pub operator: Option<UserId>,
    /// Requests served by the provider of this name (with [`operator`](Self::operator)).
    pub provider: Option<String>,
    /// Requests of this visibility (the public feed: [`Visibility::Public`]).
    pub visibility: Option<Visibility>,
    /// Requests for this model, exactly as requested.
    pub model: Option<String>,
    /// Requests in this status.
    pub status: Option<Status>,
    /// Requests received at or after this time.
    pub received_from: Option<DateTime<Utc>>,
    /// Requests received before this time.
    pub received_before: Option<DateTime<Utc>>,
    /// Continue after this cursor (from the previous [`Page`]).
    pub after: Option<Cursor>,
    /// Page size: 0 means [`DEFAULT_PAGE_SIZE`]; at most [`MAX_PAGE_SIZE`].
    pub limit: u32,
}

impl RecordQuery {
    /// The public feed: public records of everyone.
    pub fn public_feed() -> Self {
        Self {
            visibility: Some(Visibility::Public),
            ..Self::default()
        }
    }

    /// A member's own requests, whatever their visibility.
    pub fn made_by(consumer: UserId) -> Self {
        Self {
            consumer: Some(consumer),
            ..Self::default()
        }
    }

    /// What an operator's nodes served, whatever its visibility.
    pub fn served_by(operator: UserId) -> Self {
        Self {
            operator: Some(operator),
            ..Self::default()
        }
    }

    /// Only what the operator's provider named `provider` served.
    pub fn with_provider(mut self, provider: impl Into<String>) -> Self {
        self.provider = Some(provider.into());
        self
    }

    /// Only requests for `model`.
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    #[cfg(feature = "testing")]
    /// Only requests in `status`.
    pub fn with_status(mut self, status: Status) -> Self {
        self.status = Some(status);
        self
    }

    /// Only requests of `visibility`.
    pub fn with_visibility(mut self, visibility: Visibility) -> Self {
        self.visibility = Some(visibility);
        self
    }

    #[cfg(feature = "testing")]
    /// Only requests received in `[from, before)`.
    pub fn received_between(
        mut self,
        from: Option<DateTime<Utc>>,
        before: Option<DateTime<Utc>>,
    ) -> Self {
        self.received_from = from;
        self.received_before = before;
        self
    }

    #[cfg(feature = "testing")]
    /// Continue after `cursor`.
    pub fn after(mut self, cursor: Option<Cursor>) -> Self {
        self.after = cursor;
        self
    }

    /// At most `limit` records a page.
    pub fn with_limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }

    fn page_size(&self) -> u32 {
        match self.limit {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        }
    }
}

/// A record ready to be written.
#[derive(Debug)]
pub(crate) struct RecordRow {
    id: RecordId,
    consumer: Option<String>,
    operator: Option<String>,
    provider: Option<String>,
    model_requested: String,
    status: Status,
    visibility: Visibility,
    received_at: i64,
    body: Body,
    /// The replica handling it (cluster mode), written with the insert only.
    replica: Option<String>,
}

/// A record's body: its JSON, or the record itself when it may never be written (a held write
/// that a later one replaces): serialized only if it is.
#[derive(Debug)]
enum Body {
    Json(String),
    Record(Box<InferenceRecord>),
}

impl RecordRow {
    /// A row serialized now, on the caller's task (a write that will be written).
    pub(crate) fn new(record: &InferenceRecord) -> Result<Self, StoreError> {
        let body = serde_json::to_string(record)
            .map_err(|error| StoreError::invalid("record", error.to_string()))?;
        Ok(Self::with_body(record, Body::Json(body)))
    }

    /// A row serialized only when written (a held write: most are replaced before).
    pub(crate) fn held(record: &InferenceRecord) -> Self {
        Self::with_body(record, Body::Record(Box::new(record.clone())))
    }

    /// The record the row was made of (its JSON read back when it was serialized).
    pub(crate) fn into_record(self) -> Result<InferenceRecord, StoreError> {
        match self.body {
            Body::Record(record) => Ok(*record),
            Body::Json(json) => serde_json::from_str(&json)
                .map_err(|error| StoreError::invalid("record", error.to_string())),
        }
    }

    /// The body's JSON.
    fn body(&self) -> Result<std::borrow::Cow<'_, str>, StoreError> {
        match &self.body {
            Body::Json(json) => Ok(std::borrow::Cow::Borrowed(json)),
            Body::Record(record) => serde_json::to_string(record)
                .map(std::borrow::Cow::Owned)
                .map_err(|error| StoreError::invalid("record", error.to_string())),
        }
    }

    fn with_body(record: &InferenceRecord, body: Body) -> Self {
        Self {
            id: record.id,
            consumer: record.consumer.clone(),
            operator: served_by(record).map(|s| s.operator.clone()),
            provider: served_by(record).map(|s| s.provider.clone()),
            model_requested: record.model_requested.clone(),
            status: record.status(),
            visibility: record.visibility,
            received_at: micros(record.timing.received_at),
            body,
            replica: None,
        }
    }

    /// The same row, marked as handled by `replica`.
    fn handled_by(mut self, replica: Option<&str>) -> Self {
        self.replica = replica.map(str::to_owned);
        self
    }

    /// Takes the replica of `earlier` (an insert this newer row is folded into).
    pub(crate) fn keep_replica_of(&mut self, earlier: &mut RecordRow) {
        if self.replica.is_none() {
            self.replica = earlier.replica.take();
        }
    }
}

/// Which in-flight records [`Store::fail_in_flight_of`] fails.
#[derive(Debug, Clone, Copy)]
pub enum InFlight<'a> {
    /// Every one (a single coordinator starting).
    All,
    /// Those the replica with this id accepted (it died).
    OfReplica(&'a str),
    /// Those accepted by no live replica: by a single coordinator (no replica), or by a
    /// replica no longer registered (a cluster replica starting).
    Orphaned,
}

impl RecordRow {
    /// The record's id.
    pub(crate) fn id(&self) -> RecordId {
        self.id
    }

    /// How far along the record is (see [`stage`]).
    pub(crate) fn stage(&self) -> u8 {
        stage(self.status)
    }
}

/// Who served a record, unless that was forgotten (a deleted operator: [`forget_operator`]).
fn served_by(record: &InferenceRecord) -> Option<&inference_club_core::record::ServedBy> {
    record.served_by.as_ref().filter(|s| !s.operator.is_empty())
}

/// Removes every mention of the operator `handle` (compared case-insensitively) from a record:
/// the provider that served it and those it tried keep an empty operator and provider name.
/// Returns whether anything changed.
pub fn forget_operator(record: &mut InferenceRecord, handle: &str) -> bool {
    let mut changed = false;
    let served = record.served_by.iter_mut();
    let tried = record.attempts.iter_mut().map(|a| &mut a.served_by);
    for served_by in served.chain(tried) {
        if !served_by.operator.is_empty() && served_by.operator.eq_ignore_ascii_case(handle) {
            served_by.operator.clear();
            served_by.provider.clear();
            served_by.service = None;
            changed = true;
        }
    }
    changed
}

/// Within a member's deletion: forgets the operator `user_id` / `handle` in every record that
/// names them (as the serving operator, or among the attempts).
pub(crate) async fn forget_operator_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user_id: &str,
    handle: &str,
) -> Result<(), StoreError> {
    // Handles are letters, digits and hyphens: nothing LIKE reads as a wildcard.
    let mention = format!("%\"operator\":\"{handle}\"%");
    let rows = sqlx::query(
        "SELECT id, operator_id, body FROM records
         WHERE operator_id = $1 OR operator = $2 OR body LIKE $3",
    )
    .bind(user_id)
    .bind(handle)
    .bind(&mention)
    .fetch_all(&mut **tx)
    .await?;
    for row in &rows {
        let id: String = get(row, "id")?;
        let mut record: InferenceRecord = serde_json::from_str(&get::<String>(row, "body")?)
            .map_err(|error| StoreError::corrupt("body", error))?;
        forget_operator(&mut record, handle);
        // Served by them under an earlier handle (before a rename): that one goes too.
        let operator_id: Option<String> = get(row, "operator_id")?;
        if operator_id.as_deref() == Some(user_id)
            && let Some(earlier) = record.served_by.as_ref().map(|s| s.operator.clone())
        {
            forget_operator(&mut record, &earlier);
        }
        let body = serde_json::to_string(&record)
            .map_err(|error| StoreError::invalid("record", error.to_string()))?;
        // Served by someone else (the member was only tried): only the body changes.
        let statement = if served_by(&record).is_some() {
            "UPDATE records SET body = $1 WHERE id = $2"
        } else {
            "UPDATE records SET operator_id = NULL, operator = NULL, provider = NULL, body = $1
             WHERE id = $2"
        };
        sqlx::query(statement)
            .bind(body)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// How far along a status is: queued, then running, then final.
fn stage(status: Status) -> u8 {
    match status {
        Status::Queued => 0,
        Status::Running => 1,
        Status::Succeeded | Status::Failed | Status::Cancelled => 2,
    }
}

/// The statuses a stored record may have for a save in `next` to apply: the same status, or an
/// earlier stage (a save may skip one: a fast request goes from queued to succeeded).
fn may_precede(next: Status) -> String {
    [
        Status::Queued,
        Status::Running,
        Status::Succeeded,
        Status::Failed,
        Status::Cancelled,
    ]
    .into_iter()
    .filter(|stored| *stored == next || stage(*stored) < stage(next))
    .map(|stored| format!("'{}'", stored.as_str()))
    .collect::<Vec<_>>()
    .join(", ")
}

/// Binds what every write of a record starts with, in this order: its id, operator, the
/// operator's handle key (to look up their id: [`OPERATOR_ID`]), provider, requested model and
/// status.
fn bind_leading<'q>(
    query: Query<'q, Any, AnyArguments<'q>>,
    row: &RecordRow,
) -> Query<'q, Any, AnyArguments<'q>> {
    query
        .bind(row.id.to_string())
        .bind(row.operator.clone())
        .bind(row.operator.as_deref().map(handle_key))
        .bind(row.provider.clone())
        .bind(row.model_requested.clone())
        .bind(row.status.as_str())
}

/// The serving operator's user id, looked up by handle in the same statement.
const OPERATOR_ID: &str = "(SELECT o.id FROM users o WHERE o.handle_key = $3)";

/// Inserts a record (inside the writer's transaction).
pub(crate) async fn insert(conn: &mut AnyConnection, row: &RecordRow) -> Result<(), StoreError> {
    let columns = "INSERT INTO records (id, operator_id, operator, provider, model_requested, \
                   status, visibility, received_at, updated_at, body, replica, consumer, consumer_id)";
    let values = format!("$1, {OPERATOR_ID}, $2, $4, $5, $6, $7, $8, $9, $10, $11, $12");
    let sql = if row.consumer.is_some() {
        format!(
            "{columns} SELECT {values}, u.id FROM users u WHERE u.handle_key = $13 \
             ON CONFLICT (id) DO NOTHING"
        )
    } else {
        format!("{columns} VALUES ({values}, NULL) ON CONFLICT (id) DO NOTHING")
    };
    let mut query = bind_leading(sqlx::query(&sql), row)
        .bind(row.visibility.as_str())
        .bind(row.received_at)
        .bind(micros(now()))
        .bind(row.body()?.into_owned())
        .bind(row.replica.clone())
        .bind(row.consumer.clone());
    if let Some(consumer) = &row.consumer {
        query = query.bind(handle_key(consumer));
    }
    if query.execute(&mut *conn).await?.rows_affected() > 0 {
        return Ok(());
    }
    let exists = sqlx::query("SELECT id FROM records WHERE id = $1")
        .bind(row.id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    Err(match exists {
        Some(_) => StoreError::RecordExists(row.id),
        None => StoreError::NotFound(Entity::User),
    })
}

/// Inserts several records in one statement (atomic on its own: no transaction around it, no
/// statement journal), and gives back the ids it inserted. A row whose id exists or whose
/// consumer is not a member is skipped; [`insert`] tells why.
pub(crate) async fn insert_many(
    conn: &mut AnyConnection,
    backend: Backend,
    rows: &[&RecordRow],
) -> Result<std::collections::HashSet<String>, StoreError> {
    const COLUMNS: usize = 13;
    let values = values_list(backend, rows.len(), COLUMNS);
    // The VALUES columns, in order: id, operator, operator's handle key, provider, model, status,
    // visibility, received_at, updated_at, body, replica, consumer's handle key, consumer.
    let sql = format!(
        "INSERT INTO records (id, operator_id, operator, provider, model_requested, status, \
         visibility, received_at, updated_at, body, replica, consumer, consumer_id) \
         SELECT v.column1, (SELECT o.id FROM users o WHERE o.handle_key = v.column3), \
         v.column2, v.column4, v.column5, v.column6, v.column7, v.column8, v.column9, \
         v.column10, v.column11, u.handle, u.id \
         FROM (VALUES {values}) AS v LEFT JOIN users u ON u.handle_key = v.column12 \
         WHERE v.column12 IS NULL OR u.id IS NOT NULL \
         ON CONFLICT (id) DO NOTHING RETURNING id"
    );
    let updated_at = micros(now());
    let mut query = sqlx::query(&sql);
    for row in rows {
        query = bind_leading(query, row)
            .bind(row.visibility.as_str())
            .bind(row.received_at)
            .bind(updated_at)
            .bind(row.body()?.into_owned())
            .bind(row.replica.clone())
            .bind(row.consumer.as_deref().map(handle_key))
            .bind(row.consumer.clone());
    }
    let inserted = query.fetch_all(&mut *conn).await?;
    inserted
        .iter()
        .map(|row| get::<String>(row, "id"))
        .collect()
}

/// The rows of a `VALUES` list of `rows` rows of `columns` parameters each, bound in order.
/// SQLite finds a numbered parameter's name by walking the list of them, once per parameter
/// bound: anonymous ones keep a batch linear. PostgreSQL numbers them.
fn values_list(backend: Backend, rows: usize, columns: usize) -> String {
    use std::fmt::Write as _;
    let mut values = String::with_capacity(rows * columns * 5);
    for n in 0..rows {
        values.push_str(if n == 0 { "(" } else { ", (" });
        for column in 1..=columns {
            let comma = if column == 1 { "" } else { ", " };
            match backend {
                Backend::Sqlite => {
                    let _ = write!(values, "{comma}?");
                }
                Backend::Postgres => {
                    let _ = write!(values, "{comma}${}", n * columns + column);
                }
            }
        }
        values.push(')');
    }
    values
}

/// Saves several records as [`save`] does, each once, with one statement per status saved (a
/// batch's final saves: usually one), and gives back the ids it saved. A row whose save would
/// move its record back, or whose record is not there, is skipped; [`save`] tells why.
pub(crate) async fn save_many(
    conn: &mut AnyConnection,
    backend: Backend,
    rows: &[&RecordRow],
) -> Result<std::collections::HashSet<String>, StoreError> {
    const COLUMNS: usize = 8;
    let mut saved = std::collections::HashSet::with_capacity(rows.len());
    let mut statuses: Vec<Status> = rows.iter().map(|row| row.status).collect();
    statuses.sort_by_key(|status| status.as_str());
    statuses.dedup();
    for status in statuses {
        let group: Vec<&&RecordRow> = rows.iter().filter(|row| row.status == status).collect();
        // The VALUES columns, in order: id, operator, operator's handle key, provider, model,
        // status, updated_at, body.
        let sql = format!(
            "UPDATE records SET operator_id = (SELECT o.id FROM users o WHERE o.handle_key = \
             v.column3), operator = v.column2, provider = v.column4, model_requested = v.column5, \
             status = v.column6, updated_at = v.column7, body = v.column8 \
             FROM (VALUES {}) AS v WHERE records.id = v.column1 AND records.status IN ({}) \
             RETURNING id",
            values_list(backend, group.len(), COLUMNS),
            may_precede(status)
        );
        let updated_at = micros(now());
        let mut query = sqlx::query(&sql);
        for row in group {
            query = bind_leading(query, row)
                .bind(updated_at)
                .bind(row.body()?.into_owned());
        }
        for row in query.fetch_all(&mut *conn).await? {
            saved.insert(get::<String>(&row, "id")?);
        }
    }
    Ok(saved)
}

/// Saves a record's mutable fields (inside the writer's transaction), refusing to move it back.
pub(crate) async fn save(conn: &mut AnyConnection, row: &RecordRow) -> Result<(), StoreError> {
    let sql = format!(
        "UPDATE records SET operator_id = {OPERATOR_ID}, operator = $2, provider = $4, \
         model_requested = $5, status = $6, updated_at = $7, body = $8 \
         WHERE id = $1 AND status IN ({})",
        may_precede(row.status)
    );
    let updated = bind_leading(sqlx::query(&sql), row)
        .bind(micros(now()))
        .bind(row.body()?.into_owned())
        .execute(&mut *conn)
        .await?;
    if updated.rows_affected() > 0 {
        return Ok(());
    }
    let stored = sqlx::query("SELECT status FROM records WHERE id = $1")
        .bind(row.id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    Err(match stored {
        Some(stored) => StoreError::StatusRegression {
            id: row.id,
            stored: get_parsed(&stored, "status")?,
            attempted: row.status,
        },
        None => StoreError::NotFound(Entity::Record),
    })
}

/// Saves a record, or inserts it when it is not there (inside the writer's transaction).
pub(crate) async fn put(conn: &mut AnyConnection, row: &RecordRow) -> Result<(), StoreError> {
    match save(&mut *conn, row).await {
        Err(StoreError::NotFound(Entity::Record)) => insert(conn, row).await,
        other => other,
    }
}

fn record_from_row(row: &AnyRow) -> Result<InferenceRecord, StoreError> {
    let body: String = get(row, "body")?;
    let mut record: InferenceRecord =
        serde_json::from_str(&body).map_err(|error| StoreError::corrupt("body", error))?;
    record.visibility = get_parsed(row, "visibility")?;
    Ok(record)
}

fn user_id_column(row: &AnyRow, column: &'static str) -> Result<Option<UserId>, StoreError> {
    let text: Option<String> = get(row, column)?;
    text.map(|t| {
        UserId::parse(&t).ok_or_else(|| StoreError::corrupt(column, format!("{t:?} is not an id")))
    })
    .transpose()
}

impl Store {
    #[cfg(feature = "testing")]
    /// Records a request at acceptance (normally `queued`), through the batched writer: durable
    /// when this returns. Fails with [`StoreError::RecordExists`] for a known id and
    /// [`StoreError::NotFound`] when its consumer is not a member.
    pub async fn insert_record(&self, record: &InferenceRecord) -> Result<(), StoreError> {
        let row = RecordRow::new(record)?.handled_by(self.replica());
        self.write(super::writer::Write::Insert(row)).await
    }

    /// Queues the insert of [`Store::insert_record`] and returns at once. The insert is held (see
    /// the writer) so that the record's next save folds into it: a request that ends within
    /// [`PROGRESS_DELAY`](super::PROGRESS_DELAY) costs one statement. Reads and changes of the
    /// record by id, and listings, write it first. A crash of the coordinator before it is
    /// written loses it, with a final save queued after it ([`Store::save_record_queued`]).
    pub fn insert_record_soon(&self, record: &InferenceRecord) -> Result<(), StoreError> {
        let row = RecordRow::held(record).handled_by(self.replica());
        self.write_held(super::writer::Write::Insert(row))
    }

    /// Queues the insert of [`Store::insert_record`], not held (a stream's: its record is named
    /// before the answer is complete), and returns at once; the insert is durable when
    /// `PendingWrite::committed` says so.
    pub async fn insert_record_now(
        &self,
        record: &InferenceRecord,
    ) -> Result<super::writer::PendingWrite, StoreError> {
        let row = RecordRow::new(record)?.handled_by(self.replica());
        self.write_pending(super::writer::Write::Insert(row)).await
    }

    /// Saves everything about a record that may change (status, serving provider, response,
    /// usage, timing, attempts), through the batched writer: durable when this returns. Its
    /// consumer, id and visibility are not touched (visibility belongs to the owner:
    /// [`Store::set_visibility`]).
    ///
    /// Refuses, leaving the stored record unchanged, a save that would move it back: a final
    /// record to another status, or a running one to queued ([`StoreError::StatusRegression`]).
    /// A save may skip a stage (queued straight to succeeded).
    /// A deleted record stays deleted ([`StoreError::NotFound`]).
    pub async fn save_record(&self, record: &InferenceRecord) -> Result<(), StoreError> {
        let row = RecordRow::new(record)?;
        self.write(super::writer::Write::Save(row)).await
    }

    /// Queues the final save of `record` ([`Store::save_record`]) and returns without waiting
    /// for its commit: the writer commits it with its next batch (a held insert of the record
    /// folds it in). Reads and changes of the record by id, listings and the shutdown flush it
    /// first, so the store never answers without it. When the commit fails for a reason that
    /// may pass, the save is tried again in the background, as
    /// [`Store::save_record_or_retry`] does. A crash of the coordinator (not a stop) before the
    /// commit loses it.
    pub async fn save_record_queued(&self, record: &InferenceRecord) -> Result<(), StoreError> {
        let row = RecordRow::new(record)?;
        self.write_queued(super::writer::Write::Save(row)).await
    }

    /// Saves `record`, or inserts it when its insert never landed (a deferred final save whose
    /// insert was folded into it): durable when this returns.
    pub(crate) async fn put_record(&self, record: &InferenceRecord) -> Result<(), StoreError> {
        let row = RecordRow::new(record)?.handled_by(self.replica());
        self.write(super::writer::Write::Put(row)).await
    }

    /// Queues a progress save (such as `running`, with the node serving the request): written
    /// [`PROGRESS_DELAY`](super::PROGRESS_DELAY) from now unless a later save of the record
    /// comes first, so a request that ends sooner costs no write for its progress. A crash of
    /// the coordinator in that time leaves the record as it was accepted; the next start makes it
    /// `failed` all the same.
    pub fn save_progress(&self, record: &InferenceRecord) -> Result<(), StoreError> {
        let row = RecordRow::held(record);
        self.write_held(super::writer::Write::Save(row))
    }

    /// A record and the ids the read rules need ([`StoredRecord::readable_by`]).
    pub async fn record(&self, id: RecordId) -> Result<Option<StoredRecord>, StoreError> {
        self.flush_record(id).await?;
        let row = sqlx::query(
            "SELECT consumer_id, operator_id, visibility, body FROM records WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.inner.pool)
        .await?;
        row.map(|row| {
            Ok(StoredRecord {
                record: record_from_row(&row)?,
                consumer_id: user_id_column(&row, "consumer_id")?,
                operator_id: user_id_column(&row, "operator_id")?,
            })
        })
        .transpose()
    }

    /// How many records the provider named `provider` of `operator` served (any visibility and
    /// status), counted up to `most`: from the index alone, without reading a record.
    pub async fn count_served(
        &self,
        operator: UserId,
        provider: &str,
        most: u64,
    ) -> Result<u64, StoreError> {
        self.flush_records().await?;
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM (SELECT 1 FROM records \
             WHERE operator_id = $1 AND provider = $2 LIMIT $3) AS served",
        )
        .bind(operator.to_string())
        .bind(provider.to_owned())
        .bind(i64::try_from(most).unwrap_or(i64::MAX))
        .fetch_one(&self.inner.pool)
        .await?;
        Ok(u64::try_from(get::<i64>(&row, "n")?).unwrap_or(0))
    }

    /// Records matching `query`, newest first, one page at a time.
    pub async fn list_records(
        &self,
        query: &RecordQuery,
    ) -> Result<Page<InferenceRecord>, StoreError> {
        self.flush_records().await?;
        let mut conditions: Vec<String> = Vec::new();
        let mut texts: Vec<String> = Vec::new();
        let mut numbers: Vec<i64> = Vec::new();
        // Text parameters come first ($1..), then numbers; both lists are bound in order.
        let mut text = |conditions: &mut Vec<String>, column: &str, value: String| {
            texts.push(value);
            conditions.push(format!("{column} = ${}", texts.len()));
        };
        if let Some(consumer) = query.consumer {
            text(&mut conditions, "consumer_id", consumer.to_string());
        }
        if let Some(operator) = query.operator {
            text(&mut conditions, "operator_id", operator.to_string());
        }
        if let Some(provider) = &query.provider {
            text(&mut conditions, "provider", provider.clone());
        }
        if let Some(visibility) = query.visibility {
            text(
                &mut conditions,
                "visibility",
                visibility.as_str().to_owned(),
            );
        }
        if let Some(model) = &query.model {
            text(&mut conditions, "model_requested", model.clone());
        }
        if let Some(status) = query.status {
            text(&mut conditions, "status", status.as_str().to_owned());
        }
        if let Some(after) = query.after {
            texts.push(after.0.to_string());
            conditions.push(format!("id < ${}", texts.len()));
        }
        let mut number = |conditions: &mut Vec<String>, condition: &str, value: i64| {
            numbers.push(value);
            conditions.push(format!("{condition} ${}", texts.len() + numbers.len()));
        };
        if let Some(from) = query.received_from {
            number(&mut conditions, "received_at >=", micros(from));
        }
        if let Some(before) = query.received_before {
            number(&mut conditions, "received_at <", micros(before));
        }
        let size = query.page_size();
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT visibility, body FROM records {filter} ORDER BY id DESC LIMIT {}",
            size + 1
        );
        let mut statement = sqlx::query(&sql);
        for value in texts {
            statement = statement.bind(value);
        }
        for value in numbers {
            statement = statement.bind(value);
        }
        let rows = statement.fetch_all(&self.inner.pool).await?;
        let more = rows.len() > size as usize;
        let items = rows
            .iter()
            .take(size as usize)
            .map(record_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if more {
            items.last().map(|r| Cursor(r.id))
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// Changes the visibility of one of `owner`'s records. Returns `false`, changing nothing,
    /// when there is no such record or it is not theirs.
    pub async fn set_visibility(
        &self,
        id: RecordId,
        owner: UserId,
        visibility: Visibility,
    ) -> Result<bool, StoreError> {
        self.flush_record(id).await?;
        let updated = sqlx::query(
            "UPDATE records SET visibility = $1, updated_at = $2 WHERE id = $3 AND consumer_id = $4",
        )
        .bind(visibility.as_str())
        .bind(micros(now()))
        .bind(id.to_string())
        .bind(owner.to_string())
        .execute(&self.inner.pool)
        .await?;
        Ok(updated.rows_affected() > 0)
    }

    /// Deletes one of `owner`'s records for good. Returns `false`, changing nothing, when there
    /// is no such record or it is not theirs.
    pub async fn delete_record(&self, id: RecordId, owner: UserId) -> Result<bool, StoreError> {
        self.flush_record(id).await?;
        let deleted = sqlx::query("DELETE FROM records WHERE id = $1 AND consumer_id = $2")
            .bind(id.to_string())
            .bind(owner.to_string())
            .execute(&self.inner.pool)
            .await?;
        if deleted.rows_affected() == 0 {
            // Not stored yet: its final save may be waiting to be tried again (a full disk).
            let Some(user) = self.user_by_id(owner).await? else {
                return Ok(false);
            };
            return Ok(self.drop_deferred_save(id, &user.handle));
        }
        // Its audio and images go with it (a failure here leaves them to `expire_blobs`,
        // which removes blobs whose record is gone).
        if let Err(error) = self.delete_blobs_of(id).await {
            tracing::warn!(%id, "cannot delete a record's blobs now: {error}");
        }
        Ok(true)
    }

    /// At coordinator start: every record still `queued` or `running` becomes `failed` with
    /// `reason` and a finish time of now. Returns how many changed.
    ///
    /// A record saved concurrently (between this call's read and its write) is left to its
    /// writer. Every in-flight record in the database is failed, so with several coordinators on
    /// one database use [`Store::fail_in_flight_of`] instead.
    pub async fn fail_in_flight(&self, reason: &str) -> Result<u64, StoreError> {
        self.fail_in_flight_of(InFlight::All, reason).await
    }

    /// Fails the in-flight records `which` names, as [`Store::fail_in_flight`] does.
    pub async fn fail_in_flight_of(
        &self,
        which: InFlight<'_>,
        reason: &str,
    ) -> Result<u64, StoreError> {
        const CHUNK: i64 = 200;
        let filter = match which {
            InFlight::All => "",
            InFlight::OfReplica(_) => "AND replica = $3",
            InFlight::Orphaned => {
                "AND (replica IS NULL OR replica NOT IN (SELECT r.id FROM replicas r))"
            }
        };
        let select = format!(
            "SELECT id, body FROM records
             WHERE status IN ('queued', 'running') AND id > $1 {filter}
             ORDER BY id LIMIT $2"
        );
        let mut failed = 0;
        let mut after = String::new();
        loop {
            let mut query = sqlx::query(&select).bind(&after).bind(CHUNK);
            if let InFlight::OfReplica(replica) = which {
                query = query.bind(replica.to_owned());
            }
            let rows = query.fetch_all(&self.inner.pool).await?;
            let Some(last) = rows.last() else {
                return Ok(failed);
            };
            after = get(last, "id")?;
            let at = now();
            let mut tx = self
                .inner
                .pool
                .begin_with(self.inner.backend.begin_write())
                .await?;
            for row in &rows {
                let id: String = get(row, "id")?;
                let old: String = get(row, "body")?;
                let mut record: InferenceRecord = serde_json::from_str(&old)
                    .map_err(|error| StoreError::corrupt("body", error))?;
                record
                    .failed(reason, None, at)
                    .map_err(|error| StoreError::corrupt("status", error))?;
                let body = serde_json::to_string(&record)
                    .map_err(|error| StoreError::corrupt("body", error))?;
                let updated = sqlx::query(
                    "UPDATE records SET status = $1, updated_at = $2, body = $3
                     WHERE id = $4 AND body = $5",
                )
                .bind(Status::Failed.as_str())
                .bind(micros(at))
                .bind(body)
                .bind(id)
                .bind(old)
                .execute(&mut *tx)
                .await?;
                failed += updated.rows_affected();
            }
            tx.commit().await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_never_move_back() {
        assert_eq!(may_precede(Status::Queued), "'queued'");
        assert_eq!(may_precede(Status::Running), "'queued', 'running'");
        assert_eq!(
            may_precede(Status::Succeeded),
            "'queued', 'running', 'succeeded'"
        );
        assert_eq!(may_precede(Status::Failed), "'queued', 'running', 'failed'");
    }

    #[test]
    fn cursors_round_trip() {
        let cursor = Cursor(RecordId::new());
        assert_eq!(Cursor::parse(&cursor.to_string()).unwrap(), cursor);
        assert!(Cursor::parse("nope").unwrap_err().is_invalid());
    }
}
