//! The store's behaviour, one suite run against SQLite (always) and PostgreSQL (when
//! `CLUB_TEST_DATABASE_URL` names a server: `scripts/postgres.sh` starts one). On PostgreSQL
//! each test gets a fresh database of its own, dropped at the end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;

use std::io::Write as _;

use chrono::{Duration, Utc};
use inference_club_coordinator::testing::{
    Backend, CHECKPOINT_EVERY, InFlight, MAX_PAGE_SIZE, PROGRESS_DELAY, RecordQuery, Scope,
    ScopeParseError, Scopes, Store, StoreError, TestDatabase, User, unique_name,
};
use inference_club_core::openai::{
    ChatCompletionAggregator, ChatCompletionChunk, ChatCompletionRequest, ChatMessage, ChunkDelta,
};
use inference_club_core::record::{InferenceRecord, RecordId, ServedBy, Status, Visibility};
use serde_json::json;
use sqlx::{AnyPool, Row};

/// A store on a database of its own, and a raw pool on the same database to look inside.
struct TestDb {
    store: Store,
    raw: AnyPool,
    database: TestDatabase,
}

impl TestDb {
    async fn sqlite() -> Self {
        Self::on(TestDatabase::sqlite(), Backend::Sqlite).await
    }

    async fn postgres() -> Option<Self> {
        let database = TestDatabase::postgres("the PostgreSQL store tests").await?;
        Some(Self::on(database, Backend::Postgres).await)
    }

    async fn on(database: TestDatabase, backend: Backend) -> Self {
        let store = Store::connect(&database.url).await.unwrap();
        assert_eq!(store.backend(), backend);
        let raw = database.raw().await;
        Self {
            store,
            raw,
            database,
        }
    }

    async fn finish(self) {
        self.store.close().await;
        self.raw.close().await;
        self.database.remove().await;
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query(sql)
            .fetch_one(&self.raw)
            .await
            .unwrap()
            .try_get::<i64, _>(0)
            .unwrap()
    }
}

/// Each scenario runs once on SQLite and once on PostgreSQL, on two threads, or on one thread
/// (`one thread:`).
macro_rules! on_both {
    (one thread: $($name:ident),* $(,)?) => {
        on_both!(@tests [tokio::test] $($name),*);
    };
    ($($name:ident),* $(,)?) => {
        on_both!(@tests [tokio::test(flavor = "multi_thread", worker_threads = 2)] $($name),*);
    };
    (@tests [$test:meta] $($name:ident),*) => {
        mod sqlite {
            $(
                #[$test]
                async fn $name() {
                    let db = super::TestDb::sqlite().await;
                    super::$name(&db).await;
                    db.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[$test]
                async fn $name() {
                    let Some(db) = super::TestDb::postgres().await else { return };
                    super::$name(&db).await;
                    db.finish().await;
                }
            )*
        }
    };
}

on_both!(
    users_have_unique_handles_case_insensitively,
    key_secret_is_shown_once_and_only_its_hash_is_stored,
    authenticate_accepts_only_the_right_live_key,
    scope_lists_parse_with_clear_errors,
    only_the_owner_changes_visibility_or_deletes,
    coordinator_saves_keep_the_owners_visibility,
    a_final_record_cannot_move_back,
    fail_in_flight_closes_what_was_running,
    a_dead_replica_fails_only_its_own_records,
    pagination_is_newest_first_without_duplicates_or_gaps,
    public_feed_shows_only_public_records,
    listings_filter_by_operator_model_status_and_time,
    private_records_are_read_by_owner_and_serving_operator_only,
    manifest_revisions_only_on_change,
    delete_user_removes_everything_theirs_and_nothing_else,
    concurrent_batched_writes_all_land,
    writes_queued_together_end_in_the_latest_state,
    progress_is_written_late_or_not_at_all,
    held_inserts_are_written_when_asked_for_or_after_the_delay,
    queued_final_saves_fold_into_the_held_insert_and_are_written_unasked,
    migrating_again_changes_nothing,
);

/// On one thread, writes given in one poll are all queued before the writer runs, so that they
/// share one commit.
mod one_commit {
    use super::*;

    on_both!(
        one thread:
        inserts_and_saves_of_many_records_in_one_commit_get_their_own_answers,
        a_record_inserted_twice_in_one_commit_is_inserted_once,
        a_failure_telling_why_an_insert_was_skipped_is_its_own,
    );
}

// ---------------------------------------------------------------------------------------------

fn record(consumer: &User, model: &str, visibility: Visibility) -> InferenceRecord {
    let request = ChatCompletionRequest::new(model, vec![ChatMessage::user("hello")]);
    InferenceRecord::new(
        RecordId::new(),
        Some(consumer.handle.clone()),
        request,
        visibility,
        Utc::now(),
    )
}

fn served_by(operator: &User, provider: &str) -> ServedBy {
    ServedBy {
        operator: operator.handle.clone(),
        provider: provider.to_owned(),
        service: Some("ollama".into()),
    }
}

fn succeed(record: &mut InferenceRecord, text: &str) {
    let mut aggregator = ChatCompletionAggregator::new();
    aggregator.push(
        &ChatCompletionChunk::new("c", record.model_requested.clone(), 0)
            .with_delta(ChunkDelta::content(text)),
    );
    record.first_token(Utc::now());
    record.succeeded(&aggregator.finish(), Utc::now()).unwrap();
}

/// The status stored in the database, read past the store (whose reads by id first write what
/// its writer holds of the record).
async fn stored_status(db: &TestDb, id: RecordId) -> Status {
    let row = sqlx::query("SELECT status FROM records WHERE id = $1")
        .bind(id.to_string())
        .fetch_one(&db.raw)
        .await
        .unwrap();
    row.get::<String, _>("status").parse().unwrap()
}

// ---------------------------------------------------------------------------------------------

async fn users_have_unique_handles_case_insensitively(db: &TestDb) {
    let store = &db.store;
    let ada = store
        .create_user("Ada", Some("ada@example.org"))
        .await
        .unwrap();
    assert_eq!(ada.default_visibility, Visibility::Public);
    assert_eq!(ada.terms_accepted_at, None);
    let taken = store.create_user("aDA", None).await.unwrap_err();
    assert!(taken.is_conflict(), "{taken}");
    assert!(matches!(taken, StoreError::HandleTaken { .. }));
    assert!(
        store
            .create_user("not a login", None)
            .await
            .unwrap_err()
            .is_invalid()
    );
    assert!(
        store
            .create_user("bob", Some("nope"))
            .await
            .unwrap_err()
            .is_invalid()
    );

    assert_eq!(
        store.user_by_handle("ADA").await.unwrap(),
        Some(ada.clone())
    );
    assert_eq!(store.user_by_id(ada.id).await.unwrap(), Some(ada.clone()));
    assert_eq!(store.user_by_handle("nobody").await.unwrap(), None);

    let updated = store
        .update_settings(ada.id, Visibility::Private)
        .await
        .unwrap();
    assert_eq!(updated.default_visibility, Visibility::Private);
    let accepted = store.accept_terms(ada.id, Utc::now()).await.unwrap();
    assert!(accepted.terms_accepted_at.is_some());
    let unknown = store
        .update_settings(Default::default(), Visibility::Unlisted)
        .await
        .unwrap_err();
    assert!(unknown.is_not_found());
}

async fn key_secret_is_shown_once_and_only_its_hash_is_stored(db: &TestDb) {
    let store = &db.store;
    let ada = store.create_user("ada", None).await.unwrap();
    let (key, secret) = store
        .create_key(ada.id, "laptop", "inference,provider".parse().unwrap())
        .await
        .unwrap();
    assert!(secret.starts_with("icl_"));
    assert!(secret.len() >= 4 + 43, "{secret}");
    assert_eq!(key.prefix, secret[..12]);
    assert!(key.scopes.contains(Scope::Provider));

    // The table holds the hash and the prefix, never the secret.
    let row = sqlx::query("SELECT * FROM api_keys")
        .fetch_one(&db.raw)
        .await
        .unwrap();
    let mut stored_text = String::new();
    for column in ["id", "user_id", "name", "prefix", "secret_hash", "scopes"] {
        stored_text.push_str(&row.try_get::<String, _>(column).unwrap());
    }
    assert!(!stored_text.contains(&secret));
    assert!(!stored_text.contains(&secret[12..]));
    let hash: String = row.try_get("secret_hash").unwrap();
    use sha2::Digest as _;
    let expected: String = sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hash, expected);

    // Listings show the prefix and name, never the secret or its hash.
    let listed = store.list_keys(ada.id).await.unwrap();
    assert_eq!(listed, vec![key.clone()]);
    let json = serde_json::to_string(&listed).unwrap();
    assert!(!json.contains(&secret) && !json.contains(&hash), "{json}");

    // Two keys never share a secret.
    let (_, other) = store
        .create_key(ada.id, "ci", Scopes::only(Scope::Inference))
        .await
        .unwrap();
    assert_ne!(other, secret);
    assert_eq!(store.list_keys(ada.id).await.unwrap().len(), 2);
}

async fn authenticate_accepts_only_the_right_live_key(db: &TestDb) {
    let store = &db.store;
    let ada = store.create_user("ada", None).await.unwrap();
    let bob = store.create_user("bob", None).await.unwrap();
    let (key, secret) = store
        .create_key(ada.id, "laptop", Scopes::ALL)
        .await
        .unwrap();

    let (user, used) = store.authenticate(&secret).await.unwrap().unwrap();
    assert_eq!(user, ada);
    assert_eq!(used.id, key.id);
    assert!(used.last_used_at.is_some());
    let listed = store.list_keys(ada.id).await.unwrap();
    assert!(listed[0].last_used_at.is_some());

    // Same prefix, wrong rest; wrong shape; empty.
    let mut wrong = secret.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'a' { 'b' } else { 'a' });
    assert!(store.authenticate(&wrong).await.unwrap().is_none());
    assert!(store.authenticate("icl_nope").await.unwrap().is_none());
    assert!(store.authenticate("").await.unwrap().is_none());
    assert!(
        store
            .authenticate(&secret.replace("icl_", "sk-_"))
            .await
            .unwrap()
            .is_none()
    );

    // Only the owner revokes.
    assert!(!store.revoke_key(bob.id, key.id).await.unwrap());
    assert!(store.authenticate(&secret).await.unwrap().is_some());
    assert!(store.revoke_key(ada.id, key.id).await.unwrap());
    assert!(!store.revoke_key(ada.id, key.id).await.unwrap());
    assert!(store.authenticate(&secret).await.unwrap().is_none());
    assert!(store.list_keys(ada.id).await.unwrap().is_empty());
}

async fn scope_lists_parse_with_clear_errors(db: &TestDb) {
    let error = "inference,admin".parse::<Scopes>().unwrap_err();
    assert_eq!(error, ScopeParseError::Unknown("admin".into()));
    let message = error.to_string();
    assert!(
        message.contains("\"admin\"") && message.contains("inference, provider, account"),
        "{message}"
    );
    assert_eq!("".parse::<Scopes>(), Err(ScopeParseError::Empty));
    let scopes: Scopes = " provider , inference ".parse().unwrap();
    assert_eq!(scopes.to_string(), "inference,provider");

    let ada = db.store.create_user("ada", None).await.unwrap();
    let refused = db
        .store
        .create_key(ada.id, "none", Scopes::NONE)
        .await
        .unwrap_err();
    assert!(refused.is_invalid(), "{refused}");
    assert!(
        db.store
            .create_key(ada.id, " ", Scopes::ALL)
            .await
            .unwrap_err()
            .is_invalid()
    );
    assert!(
        db.store
            .create_key(Default::default(), "x", Scopes::ALL)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM api_keys").await, 0);
}

async fn only_the_owner_changes_visibility_or_deletes(db: &TestDb) {
    let store = &db.store;
    let ada = store.create_user("ada", None).await.unwrap();
    let eve = store.create_user("eve", None).await.unwrap();
    let mine = record(&ada, "m", Visibility::Public);
    store.insert_record(&mine).await.unwrap();

    assert!(
        !store
            .set_visibility(mine.id, eve.id, Visibility::Private)
            .await
            .unwrap()
    );
    assert!(!store.delete_record(mine.id, eve.id).await.unwrap());
    let stored = store.record(mine.id).await.unwrap().unwrap();
    assert_eq!(stored.record, mine);
    assert_eq!(stored.consumer_id, Some(ada.id));

    assert!(
        store
            .set_visibility(mine.id, ada.id, Visibility::Private)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .record(mine.id)
            .await
            .unwrap()
            .unwrap()
            .record
            .visibility,
        Visibility::Private
    );
    assert!(
        !store
            .set_visibility(RecordId::new(), ada.id, Visibility::Private)
            .await
            .unwrap()
    );
    assert!(store.delete_record(mine.id, ada.id).await.unwrap());
    assert!(store.record(mine.id).await.unwrap().is_none());
    assert!(!store.delete_record(mine.id, ada.id).await.unwrap());
}

async fn coordinator_saves_keep_the_owners_visibility(db: &TestDb) {
    let store = &db.store;
    let ada = store.create_user("ada", None).await.unwrap();
    let bob = store.create_user("bob", None).await.unwrap();
    let mut running = record(&ada, "m", Visibility::Public);
    store.insert_record(&running).await.unwrap();
    // The owner hides it while it runs; the coordinator's copy still says public.
    assert!(
        store
            .set_visibility(running.id, ada.id, Visibility::Private)
            .await
            .unwrap()
    );
    running
        .dispatched(served_by(&bob, "box"), Utc::now())
        .unwrap();
    store.save_record(&running).await.unwrap();
    succeed(&mut running, "hi");
    store.save_record(&running).await.unwrap();
    let stored = store.record(running.id).await.unwrap().unwrap();
    assert_eq!(stored.record.visibility, Visibility::Private);
    assert_eq!(stored.record.status(), Status::Succeeded);
    assert_eq!(stored.record.response.content.as_deref(), Some("hi"));
    assert_eq!(stored.operator_id, Some(bob.id));
    // A deleted record stays deleted.
    assert!(store.delete_record(running.id, ada.id).await.unwrap());
    assert!(
        store
            .save_record(&running)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(store.record(running.id).await.unwrap().is_none());
}

async fn a_final_record_cannot_move_back(db: &TestDb) {
    let store = &db.store;
    let ada = store.create_user("ada", None).await.unwrap();
    let bob = store.create_user("bob", None).await.unwrap();
    let queued = record(&ada, "m", Visibility::Public);
    store.insert_record(&queued).await.unwrap();
    let duplicate = store.insert_record(&queued).await.unwrap_err();
    assert!(matches!(duplicate, StoreError::RecordExists(id) if id == queued.id));

    let mut running = queued.clone();
    running
        .dispatched(served_by(&bob, "box"), Utc::now())
        .unwrap();
    store.save_record(&running).await.unwrap();
    // Running cannot go back to queued.
    let back = store.save_record(&queued).await.unwrap_err();
    assert!(back.is_conflict(), "{back}");
    assert_eq!(stored_status(db, queued.id).await, Status::Running);

    let mut done = running.clone();
    succeed(&mut done, "the answer");
    store.save_record(&done).await.unwrap();
    // Saving the final record again is fine; moving it anywhere else is not.
    store.save_record(&done).await.unwrap();
    for stale in [&running, &queued] {
        let error = store.save_record(stale).await.unwrap_err();
        assert!(
            matches!(
                error,
                StoreError::StatusRegression {
                    stored: Status::Succeeded,
                    ..
                }
            ),
            "{error}"
        );
    }
    let mut failed = running.clone();
    failed.failed("late", None, Utc::now()).unwrap();
    assert!(store.save_record(&failed).await.unwrap_err().is_conflict());
    let stored = store.record(done.id).await.unwrap().unwrap().record;
    assert_eq!(stored, done);

    // Unknown records and unknown consumers are refused.
    assert!(
        store
            .save_record(&record(&ada, "m", Visibility::Public))
            .await
            .unwrap_err()
            .is_not_found()
    );
    let mut stranger = record(&ada, "m", Visibility::Public);
    stranger.consumer = Some("nobody".into());
    assert!(
        store
            .insert_record(&stranger)
            .await
            .unwrap_err()
            .is_not_found()
    );
    // Anonymous records are allowed.
    let mut anonymous = record(&ada, "m", Visibility::Public);
    anonymous.consumer = None;
    store.insert_record(&anonymous).await.unwrap();
    assert_eq!(
        store
            .record(anonymous.id)
            .await
            .unwrap()
            .unwrap()
            .consumer_id,
        None
    );
}

async fn fail_in_flight_closes_what_was_running(db: &TestDb) {
    let store = &db.store;
    let ada = store.create_user("ada", None).await.unwrap();
    let bob = store.create_user("bob", None).await.unwrap();
    let queued = record(&ada, "m", Visibility::Public);
    let mut running = record(&ada, "m", Visibility::Private);
    let mut done = record(&ada, "m", Visibility::Public);
    for r in [&queued, &running, &done] {
        store.insert_record(r).await.unwrap();
    }
    running
        .dispatched(served_by(&bob, "box"), Utc::now())
        .unwrap();
    store.save_record(&running).await.unwrap();
    done.dispatched(served_by(&bob, "box"), Utc::now()).unwrap();
    succeed(&mut done, "ok");
    store.save_record(&done).await.unwrap();

    assert_eq!(
        store.fail_in_flight("coordinator restarted").await.unwrap(),
        2
    );
    for id in [queued.id, running.id] {
        let stored = store.record(id).await.unwrap().unwrap().record;
        assert_eq!(stored.status(), Status::Failed);
        assert_eq!(stored.failure.as_deref(), Some("coordinator restarted"));
        assert!(stored.timing.finished_at.is_some());
    }
    assert_eq!(
        store
            .record(running.id)
            .await
            .unwrap()
            .unwrap()
            .record
            .visibility,
        Visibility::Private
    );
    assert_eq!(store.record(done.id).await.unwrap().unwrap().record, done);
    assert_eq!(store.fail_in_flight("again").await.unwrap(), 0);
    // The coordinator that owned them cannot revive them.
    assert!(store.save_record(&running).await.unwrap_err().is_conflict());
    let page = store
        .list_records(&RecordQuery::default().with_status(Status::Failed))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2);
}

async fn a_dead_replica_fails_only_its_own_records(db: &TestDb) {
    let store = &db.store;
    assert!(store.set_replica("r1"));
    assert!(!store.set_replica("r2"), "a store's replica is set once");
    assert_eq!(store.replica(), Some("r1"));
    let ada = store.create_user("ada", None).await.unwrap();
    let mine = record(&ada, "m", Visibility::Public);
    let theirs = record(&ada, "m", Visibility::Public);
    let single = record(&ada, "m", Visibility::Public);
    for r in [&mine, &theirs, &single] {
        store.insert_record(r).await.unwrap();
    }
    assert_eq!(
        db.count("SELECT COUNT(*) FROM records WHERE replica = 'r1'")
            .await,
        3
    );
    // Another replica accepted `theirs`; a single coordinator (no replica) accepted `single`.
    for (id, replica) in [(theirs.id, Some("r2")), (single.id, None)] {
        sqlx::query("UPDATE records SET replica = $1 WHERE id = $2")
            .bind(replica)
            .bind(id.to_string())
            .execute(&db.raw)
            .await
            .unwrap();
    }
    store.renew_replica("r1").await.unwrap();
    store.renew_replica("r2").await.unwrap();
    assert!(
        store
            .expired_replicas(std::time::Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM replicas").await, 2);

    // Records of no live replica: only the single coordinator's.
    assert_eq!(
        store
            .fail_in_flight_of(InFlight::Orphaned, "orphaned")
            .await
            .unwrap(),
        1
    );
    assert_eq!(stored_status(db, single.id).await, Status::Failed);
    assert_eq!(stored_status(db, theirs.id).await, Status::Queued);

    // r2 dies: its lease runs out (its last renewal a minute ago), and retiring it fails its
    // records and nothing else.
    sqlx::query("UPDATE replicas SET seen_at = seen_at - 60000000 WHERE id = 'r2'")
        .execute(&db.raw)
        .await
        .unwrap();
    let expired = store
        .expired_replicas(std::time::Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(expired, ["r2"]);
    assert_eq!(store.retire_replica("r2", "r2 died").await.unwrap(), 1);
    let failed = store.record(theirs.id).await.unwrap().unwrap().record;
    assert_eq!(failed.status(), Status::Failed);
    assert_eq!(failed.failure.as_deref(), Some("r2 died"));
    assert_eq!(stored_status(db, mine.id).await, Status::Queued);
    assert_eq!(db.count("SELECT COUNT(*) FROM replicas").await, 1);
    // Retiring again (another replica noticed too) changes nothing.
    assert_eq!(store.retire_replica("r2", "again").await.unwrap(), 0);
}

async fn pagination_is_newest_first_without_duplicates_or_gaps(db: &TestDb) {
    let store = &db.store;
    let ada = store.create_user("ada", None).await.unwrap();
    let bob = store.create_user("bob", None).await.unwrap();
    let total = 250;
    let mut mine = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let user = if i % 5 == 0 { &bob } else { &ada };
        let r = record(user, "m", Visibility::Public);
        if user.id == ada.id {
            mine.push(r.id);
        }
        let store = store.clone();
        tasks.spawn(async move { store.insert_record(&r).await });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    mine.sort();
    mine.reverse();

    let mut seen = Vec::new();
    let mut query = RecordQuery::made_by(ada.id).with_limit(37);
    loop {
        let page = store.list_records(&query).await.unwrap();
        assert!(page.items.len() <= 37);
        seen.extend(page.items.iter().map(|r| r.id));
        match page.next {
            Some(cursor) => {
                // Cursors survive a round trip through text.
                let cursor = cursor.to_string().parse().unwrap();
                query = query.after(Some(cursor));
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), mine.len());
    assert_eq!(seen, mine, "newest first, no duplicates, no gaps");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len());

    // The page size is capped.
    let capped = store
        .list_records(&RecordQuery::default().with_limit(10_000))
        .await
        .unwrap();
    assert_eq!(capped.items.len(), MAX_PAGE_SIZE as usize);
    assert!(capped.next.is_some());
    let all = store.list_records(&RecordQuery::default()).await.unwrap();
    assert_eq!(all.items.len(), 50);
}

async fn public_feed_shows_only_public_records(db: &TestDb) {
    let store = &db.store;
    let ada = store.create_user("ada", None).await.unwrap();
    let mut public = HashSet::new();
    for (i, visibility) in [
        Visibility::Public,
        Visibility::Unlisted,
        Visibility::Private,
    ]
    .into_iter()
    .cycle()
    .take(30)
    .enumerate()
    {
        let r = record(&ada, &format!("m{}", i % 2), visibility);
        store.insert_record(&r).await.unwrap();
        if visibility == Visibility::Public {
            public.insert(r.id);
        }
    }
    let feed = store
        .list_records(&RecordQuery::public_feed())
        .await
        .unwrap();
    assert!(
        feed.items
            .iter()
            .all(|r| r.visibility == Visibility::Public)
    );
    assert_eq!(
        feed.items.iter().map(|r| r.id).collect::<HashSet<_>>(),
        public
    );
    // Hiding a record takes it off the feed.
    let hidden = *public.iter().next().unwrap();
    store
        .set_visibility(hidden, ada.id, Visibility::Unlisted)
        .await
        .unwrap();
    let feed = store
        .list_records(&RecordQuery::public_feed())
        .await
        .unwrap();
    assert_eq!(feed.items.len(), public.len() - 1);
    assert!(feed.items.iter().all(|r| r.id != hidden));
    // The owner still sees all of theirs.
    let mine = store
        .list_records(&RecordQuery::made_by(ada.id))
        .await
        .unwrap();
    assert_eq!(mine.items.len(), 30);
}

async fn listings_filter_by_operator_model_status_and_time(db: &TestDb) {
    let store = &db.store;
    let ada = store.create_user("ada", None).await.unwrap();
    let bob = store.create_user("bob", None).await.unwrap();
    let start = Utc::now() - Duration::hours(1);
    let mut on_box = record(&ada, "qwen", Visibility::Private);
    on_box.timing.received_at = start;
    let mut on_rig = record(&ada, "llama", Visibility::Public);
    on_rig.timing.received_at = start + Duration::minutes(30);
    let unserved = record(&ada, "qwen", Visibility::Public);
    for r in [&on_box, &on_rig, &unserved] {
        store.insert_record(r).await.unwrap();
    }
    on_box
        .dispatched(served_by(&bob, "box"), Utc::now())
        .unwrap();
    succeed(&mut on_box, "a");
    store.save_record(&on_box).await.unwrap();
    on_rig
        .dispatched(served_by(&bob, "rig"), Utc::now())
        .unwrap();
    store.save_record(&on_rig).await.unwrap();

    let ids = |page: inference_club_coordinator::testing::Page<InferenceRecord>| {
        page.items.into_iter().map(|r| r.id).collect::<Vec<_>>()
    };
    let served = store
        .list_records(&RecordQuery::served_by(bob.id))
        .await
        .unwrap();
    assert_eq!(ids(served), vec![on_rig.id, on_box.id]);
    let on_box_only = store
        .list_records(&RecordQuery::served_by(bob.id).with_provider("box"))
        .await
        .unwrap();
    assert_eq!(ids(on_box_only), vec![on_box.id]);
    // Counted from the index, up to a bound.
    let mut on_box_too = record(&ada, "qwen", Visibility::Public);
    store.insert_record(&on_box_too).await.unwrap();
    on_box_too
        .dispatched(served_by(&bob, "box"), Utc::now())
        .unwrap();
    store.save_record(&on_box_too).await.unwrap();
    assert_eq!(store.count_served(bob.id, "box", 10).await.unwrap(), 2);
    assert_eq!(store.count_served(bob.id, "box", 1).await.unwrap(), 1);
    assert_eq!(store.count_served(bob.id, "rig", 10).await.unwrap(), 1);
    assert_eq!(store.count_served(ada.id, "box", 10).await.unwrap(), 0);
    assert!(store.delete_record(on_box_too.id, ada.id).await.unwrap());
    assert!(
        store
            .list_records(&RecordQuery::served_by(ada.id))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let qwen = store
        .list_records(&RecordQuery::made_by(ada.id).with_model("qwen"))
        .await
        .unwrap();
    assert_eq!(ids(qwen), vec![unserved.id, on_box.id]);
    let running = store
        .list_records(&RecordQuery::default().with_status(Status::Running))
        .await
        .unwrap();
    assert_eq!(ids(running), vec![on_rig.id]);
    let early = store
        .list_records(&RecordQuery::default().received_between(
            Some(start - Duration::seconds(1)),
            Some(start + Duration::minutes(10)),
        ))
        .await
        .unwrap();
    assert_eq!(ids(early), vec![on_box.id]);
    let later = store
        .list_records(
            &RecordQuery::default()
                .received_between(Some(start + Duration::minutes(1)), None)
                .with_visibility(Visibility::Public),
        )
        .await
        .unwrap();
    assert_eq!(ids(later), vec![unserved.id, on_rig.id]);
}

async fn private_records_are_read_by_owner_and_serving_operator_only(db: &TestDb) {
    let store = &db.store;
    let ada = store.create_user("ada", None).await.unwrap();
    let bob = store.create_user("bob", None).await.unwrap();
    let eve = store.create_user("eve", None).await.unwrap();
    let mut private = record(&ada, "m", Visibility::Private);
    store.insert_record(&private).await.unwrap();
    private
        .dispatched(served_by(&bob, "box"), Utc::now())
        .unwrap();
    store.save_record(&private).await.unwrap();
    let stored = store.record(private.id).await.unwrap().unwrap();
    assert_eq!(stored.consumer_id, Some(ada.id));
    assert_eq!(stored.operator_id, Some(bob.id));
    assert!(stored.readable_by(Some(ada.id)));
    assert!(stored.readable_by(Some(bob.id)));
    assert!(!stored.readable_by(Some(eve.id)));
    assert!(!stored.readable_by(None));
    store
        .set_visibility(private.id, ada.id, Visibility::Unlisted)
        .await
        .unwrap();
    let unlisted = store.record(private.id).await.unwrap().unwrap();
    assert!(unlisted.readable_by(None) && unlisted.readable_by(Some(eve.id)));
}

async fn manifest_revisions_only_on_change(db: &TestDb) {
    let store = &db.store;
    let bob = store.create_user("Bob", None).await.unwrap();
    let first = json!({"schema_version": 1, "agent": {"name": "box"}, "hosts": [{"id": "desk"}]});
    let reordered =
        json!({"hosts": [{"id": "desk"}], "agent": {"name": "box"}, "schema_version": 1});
    let second = json!({"schema_version": 1, "agent": {"name": "box"}, "hosts": [{"id": "desk"}, {"id": "rack"}]});

    let r1 = store.upsert_provider(bob.id, "box", &first).await.unwrap();
    assert_eq!((r1.revision, r1.is_new), (1, true));
    let again = store
        .upsert_provider(bob.id, "box", &reordered)
        .await
        .unwrap();
    assert_eq!((again.revision, again.is_new), (1, false));
    assert_eq!(again.provider_id, r1.provider_id);
    assert_eq!(again.created_at, r1.created_at);
    let r2 = store.upsert_provider(bob.id, "box", &second).await.unwrap();
    assert_eq!((r2.revision, r2.is_new), (2, true));
    let back = store.upsert_provider(bob.id, "box", &first).await.unwrap();
    assert_eq!((back.revision, back.is_new), (3, true));

    let revisions = store.manifest_revisions(r1.provider_id).await.unwrap();
    assert_eq!(
        revisions.iter().map(|r| r.revision).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(revisions[1].manifest, second);
    assert_eq!(revisions[2].manifest, first);

    let provider = store.provider("bob", "box").await.unwrap().unwrap();
    assert_eq!(provider.operator, "Bob");
    assert_eq!(provider.revision, 3);
    assert_eq!(provider.manifest, first);
    assert!(store.provider("bob", "rig").await.unwrap().is_none());
    let later = provider.last_seen + Duration::minutes(5);
    assert!(store.touch_provider(provider.id, later).await.unwrap());
    assert!(
        store
            .touch_provider(provider.id, later - Duration::hours(1))
            .await
            .unwrap()
    );
    let touched = store.provider("BOB", "box").await.unwrap().unwrap();
    assert_eq!(touched.last_seen, later);
    assert_eq!(touched.first_seen, provider.first_seen);

    store.upsert_provider(bob.id, "rig", &second).await.unwrap();
    let all = store.list_providers().await.unwrap();
    assert_eq!(
        all.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        vec!["box", "rig"]
    );
    assert!(
        store
            .upsert_provider(Default::default(), "x", &first)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM provider_revisions").await, 4);
}

async fn delete_user_removes_everything_theirs_and_nothing_else(db: &TestDb) {
    let store = &db.store;
    let ada = store.create_user("ada", None).await.unwrap();
    let bob = store.create_user("bob", None).await.unwrap();
    let manifest = json!({"agent": {"name": "box"}});
    let (_, ada_secret) = store.create_key(ada.id, "k", Scopes::ALL).await.unwrap();
    let (_, bob_secret) = store.create_key(bob.id, "k", Scopes::ALL).await.unwrap();
    store
        .upsert_provider(ada.id, "box", &manifest)
        .await
        .unwrap();
    store
        .upsert_provider(ada.id, "box", &json!({"agent": {"name": "box", "v": 2}}))
        .await
        .unwrap();
    store
        .upsert_provider(bob.id, "rig", &manifest)
        .await
        .unwrap();
    // Ada's requests, one served by Bob; Bob's request served by Ada's node.
    let mut ada_records = Vec::new();
    for visibility in [Visibility::Public, Visibility::Private] {
        let r = record(&ada, "m", visibility);
        store.insert_record(&r).await.unwrap();
        ada_records.push(r.id);
    }
    let mut bobs = record(&bob, "m", Visibility::Private);
    store.insert_record(&bobs).await.unwrap();
    bobs.dispatched(served_by(&ada, "box"), Utc::now()).unwrap();
    store.save_record(&bobs).await.unwrap();

    assert!(store.delete_user(ada.id).await.unwrap());
    assert!(!store.delete_user(ada.id).await.unwrap());

    assert!(store.user_by_id(ada.id).await.unwrap().is_none());
    assert!(store.authenticate(&ada_secret).await.unwrap().is_none());
    for id in ada_records {
        assert!(store.record(id).await.unwrap().is_none());
    }
    assert!(store.provider("ada", "box").await.unwrap().is_none());
    let ada_id = ada.id.to_string();
    for table_and_column in [
        "records WHERE consumer_id",
        "records WHERE operator_id",
        "api_keys WHERE user_id",
        "providers WHERE operator_id",
        "users WHERE id",
    ] {
        let left = db
            .count(&format!(
                "SELECT COUNT(*) FROM {table_and_column} = '{ada_id}'"
            ))
            .await;
        assert_eq!(left, 0, "{table_and_column}");
    }
    assert_eq!(db.count("SELECT COUNT(*) FROM provider_revisions").await, 1);

    // Bob keeps everything of his, including his request that Ada's node served.
    assert!(store.authenticate(&bob_secret).await.unwrap().is_some());
    let kept = store.record(bobs.id).await.unwrap().unwrap();
    assert_eq!(kept.consumer_id, Some(bob.id));
    assert_eq!(kept.operator_id, None);
    assert!(!kept.readable_by(Some(ada.id)));
    assert!(store.provider("bob", "rig").await.unwrap().is_some());
    assert_eq!(db.count("SELECT COUNT(*) FROM users").await, 1);
    // The handle is free again, and its new owner does not inherit anything.
    let new_ada = store.create_user("ada", None).await.unwrap();
    assert!(
        !store
            .record(bobs.id)
            .await
            .unwrap()
            .unwrap()
            .readable_by(Some(new_ada.id))
    );
    assert!(
        store
            .list_records(&RecordQuery::served_by(new_ada.id))
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

async fn concurrent_batched_writes_all_land(db: &TestDb) {
    let store = &db.store;
    let ada = store.create_user("ada", None).await.unwrap();
    let bob = store.create_user("bob", None).await.unwrap();
    let tasks_count = 50;
    let per_task = 10;
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..tasks_count {
        let store = store.clone();
        let (ada, bob) = (ada.clone(), bob.clone());
        tasks.spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..per_task {
                let mut r = record(&ada, "m", Visibility::Public);
                store.insert_record(&r).await?;
                r.dispatched(served_by(&bob, "box"), Utc::now()).unwrap();
                store.save_record(&r).await?;
                succeed(&mut r, "done");
                store.save_record(&r).await?;
                ids.push(r.id);
            }
            Ok::<_, StoreError>(ids)
        });
    }
    let mut ids = HashSet::new();
    while let Some(result) = tasks.join_next().await {
        ids.extend(result.unwrap().unwrap());
    }
    let elapsed = started.elapsed();
    let total = tasks_count * per_task;
    assert_eq!(ids.len(), total);
    assert_eq!(db.count("SELECT COUNT(*) FROM records").await, total as i64);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM records WHERE status = 'succeeded'")
            .await,
        total as i64
    );
    let _ = writeln!(
        std::io::stderr(),
        "{:?}: {} batched writes from {tasks_count} tasks in {elapsed:?}",
        db.store.backend(),
        total * 3
    );
}

/// A request's insert, running save and final save queued back to back (as the coordinator
/// does for a fast request) may share one commit; whatever the batching, every write gets its
/// true answer, the record ends in its latest state, and a save that moves it back is still
/// refused.
async fn writes_queued_together_end_in_the_latest_state(db: &TestDb) {
    let store = &db.store;
    let ada = store.create_user("ada", None).await.unwrap();
    let bob = store.create_user("bob", None).await.unwrap();
    for _ in 0..20 {
        let queued = record(&ada, "m", Visibility::Public);
        let mut running = queued.clone();
        running
            .dispatched(served_by(&bob, "box"), Utc::now())
            .unwrap();
        let mut done = running.clone();
        succeed(&mut done, "the answer");

        store.insert_record_soon(&queued).unwrap();
        store.save_progress(&running).unwrap();
        let (finished, stale) = tokio::join!(store.save_record(&done), store.save_record(&running));
        finished.unwrap();
        assert!(
            matches!(
                stale,
                Err(StoreError::StatusRegression {
                    stored: Status::Succeeded,
                    attempted: Status::Running,
                    ..
                })
            ),
            "{stale:?}"
        );
        assert_eq!(store.record(done.id).await.unwrap().unwrap().record, done);
    }
    // A held insert of a consumer who is not a member is refused: nothing is stored, and the
    // final save that folds into it says so.
    let mut stranger = record(&ada, "m", Visibility::Public);
    stranger.consumer = Some("nobody".into());
    store.insert_record_soon(&stranger).unwrap();
    let mut stranger_done = stranger.clone();
    stranger_done
        .dispatched(served_by(&bob, "box"), Utc::now())
        .unwrap();
    succeed(&mut stranger_done, "x");
    assert!(
        store
            .save_record(&stranger_done)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(store.record(stranger.id).await.unwrap().is_none());
}

/// Streams' inserts and final saves, many records at once (as the writer commits them together,
/// a statement for the inserts and one per status saved): each write gets the answer it would
/// get alone, and each record ends as its own writes left it.
async fn inserts_and_saves_of_many_records_in_one_commit_get_their_own_answers(db: &TestDb) {
    let store = &db.store;
    let ada = store.create_user("ada", None).await.unwrap();
    let bob = store.create_user("bob", None).await.unwrap();
    for round in 0..10 {
        // Running records, each to be saved final: most succeed, one fails, one is cancelled.
        let mut running = Vec::new();
        for _ in 0..6 {
            let mut r = record(&ada, "m", Visibility::Public);
            r.dispatched(served_by(&bob, "box"), Utc::now()).unwrap();
            store.insert_record(&r).await.unwrap();
            running.push(r);
        }
        let mut finals = running.clone();
        for (n, r) in finals.iter_mut().enumerate() {
            match n {
                4 => r.failed("engine down", None, Utc::now()).unwrap(),
                5 => r.cancelled("consumer left", None, Utc::now()).unwrap(),
                _ => succeed(r, &format!("answer {round}.{n}")),
            }
        }
        // A record already final, saved back to running; one never inserted.
        let mut done = record(&ada, "m", Visibility::Public);
        done.dispatched(served_by(&bob, "box"), Utc::now()).unwrap();
        let stale = done.clone();
        succeed(&mut done, "kept");
        store.insert_record(&done).await.unwrap();
        let mut missing = record(&ada, "m", Visibility::Public);
        missing
            .dispatched(served_by(&bob, "box"), Utc::now())
            .unwrap();
        succeed(&mut missing, "lost");
        // New streams' inserts: one new, one of an id already stored, one of a stranger.
        let fresh = record(&ada, "m", Visibility::Private);
        let again = record(&ada, "m", Visibility::Public);
        store.insert_record(&again).await.unwrap();
        let mut stranger = record(&ada, "m", Visibility::Public);
        stranger.consumer = Some("nobody".into());

        let saves = futures_util::future::join_all(finals.iter().map(|r| store.save_record(r)));
        let (saved, regressed, unknown, inserted, duplicate, refused) = tokio::join!(
            saves,
            store.save_record(&stale),
            store.save_record(&missing),
            store.insert_record(&fresh),
            store.insert_record(&again),
            store.insert_record(&stranger),
        );
        for outcome in saved {
            outcome.unwrap();
        }
        assert!(
            matches!(
                regressed,
                Err(StoreError::StatusRegression {
                    stored: Status::Succeeded,
                    attempted: Status::Running,
                    ..
                })
            ),
            "{regressed:?}"
        );
        assert!(unknown.unwrap_err().is_not_found());
        inserted.unwrap();
        assert!(
            matches!(duplicate, Err(StoreError::RecordExists(id)) if id == again.id),
            "{duplicate:?}"
        );
        assert!(refused.unwrap_err().is_not_found());

        for r in finals.iter().chain([&done, &fresh]) {
            assert_eq!(&store.record(r.id).await.unwrap().unwrap().record, r);
        }
        assert_eq!(stored_status(db, finals[4].id).await, Status::Failed);
        assert_eq!(stored_status(db, finals[5].id).await, Status::Cancelled);
        assert!(store.record(missing.id).await.unwrap().is_none());
        assert!(store.record(stranger.id).await.unwrap().is_none());
    }
}

/// Two inserts of one record in one commit (with another record's): one is done, the other is
/// refused as an existing id, as they would be one after the other.
async fn a_record_inserted_twice_in_one_commit_is_inserted_once(db: &TestDb) {
    let store = &db.store;
    let ada = store.create_user("ada", None).await.unwrap();
    let twice = record(&ada, "m", Visibility::Public);
    let other = record(&ada, "m", Visibility::Public);
    let (first, second, third) = tokio::join!(
        store.insert_record(&twice),
        store.insert_record(&other),
        store.insert_record(&twice),
    );
    first.unwrap();
    second.unwrap();
    assert!(
        matches!(third, Err(StoreError::RecordExists(id)) if id == twice.id),
        "{third:?}"
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM records").await, 2);
}

/// Inserts share one statement outside a transaction. When telling why it skipped one of them
/// fails, the error is that insert's: the others landed and are answered so (not tried again and
/// refused as existing ids).
async fn a_failure_telling_why_an_insert_was_skipped_is_its_own(db: &TestDb) {
    let store = &db.store;
    let ada = store.create_user("ada", None).await.unwrap();
    let existing = record(&ada, "m", Visibility::Public);
    store.insert_record(&existing).await.unwrap();
    fail_every_insert_but_the_next_of(db, existing.id).await;
    let new = record(&ada, "m", Visibility::Public);
    let (new_outcome, existing_outcome) =
        tokio::join!(store.insert_record(&new), store.insert_record(&existing));
    new_outcome.unwrap();
    assert!(
        matches!(existing_outcome, Err(StoreError::Database(_))),
        "{existing_outcome:?}"
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM records").await, 2);
    assert_eq!(store.record(new.id).await.unwrap().unwrap().record, new);
}

/// Makes every try to insert the record `id` fail with a database error, but for the next one
/// (a trigger, which counts the tries; a failed try's count is rolled back with it).
async fn fail_every_insert_but_the_next_of(db: &TestDb, id: RecordId) {
    let statements = match db.database.is_postgres() {
        false => vec![
            "CREATE TABLE injected (n INTEGER NOT NULL)".to_owned(),
            "INSERT INTO injected VALUES (0)".to_owned(),
            format!(
                "CREATE TRIGGER inject BEFORE INSERT ON records WHEN NEW.id = '{id}' BEGIN \
                 UPDATE injected SET n = n + 1; \
                 SELECT RAISE(ABORT, 'injected') WHERE (SELECT n FROM injected) >= 2; END"
            ),
        ],
        true => vec![
            "CREATE TABLE injected (n INTEGER NOT NULL)".to_owned(),
            "INSERT INTO injected VALUES (0)".to_owned(),
            format!(
                "CREATE FUNCTION inject() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF NEW.id = '{id}' THEN UPDATE injected SET n = n + 1; \
                 IF (SELECT n FROM injected) >= 2 THEN RAISE EXCEPTION 'injected'; END IF; \
                 END IF; RETURN NEW; END $$"
            ),
            "CREATE TRIGGER inject BEFORE INSERT ON records FOR EACH ROW EXECUTE FUNCTION inject()"
                .to_owned(),
        ],
    };
    for statement in statements {
        sqlx::query(&statement).execute(&db.raw).await.unwrap();
    }
}

/// A held insert is written when its record is read by id, when records are listed, and after
/// the delay; the final save folds into it (one statement).
async fn held_inserts_are_written_when_asked_for_or_after_the_delay(db: &TestDb) {
    let store = &db.store;
    let ada = store.create_user("ada", None).await.unwrap();
    let count = |db: &TestDb| {
        let raw = db.raw.clone();
        async move {
            let row = sqlx::query("SELECT COUNT(*) AS n FROM records")
                .fetch_one(&raw)
                .await
                .unwrap();
            row.get::<i64, _>("n")
        }
    };
    let read = record(&ada, "m", Visibility::Public);
    store.insert_record_soon(&read).unwrap();
    assert_eq!(count(db).await, 0, "written before anyone asked");
    assert_eq!(store.record(read.id).await.unwrap().unwrap().record, read);
    assert_eq!(count(db).await, 1);

    let listed = record(&ada, "m", Visibility::Public);
    store.insert_record_soon(&listed).unwrap();
    let page = store.list_records(&RecordQuery::default()).await.unwrap();
    assert!(page.items.iter().any(|r| r.id == listed.id));

    let waited = record(&ada, "m", Visibility::Public);
    store.insert_record_soon(&waited).unwrap();
    let deadline = std::time::Instant::now() + PROGRESS_DELAY * 20;
    while count(db).await < 3 {
        assert!(std::time::Instant::now() < deadline, "never written");
        tokio::time::sleep(PROGRESS_DELAY / 5).await;
    }
    assert_eq!(stored_status(db, waited.id).await, Status::Queued);

    // Deleting the account removes what was held too.
    let gone = record(&ada, "m", Visibility::Public);
    store.insert_record_soon(&gone).unwrap();
    store.delete_user(ada.id).await.unwrap();
    tokio::time::sleep(PROGRESS_DELAY * 2).await;
    assert_eq!(count(db).await, 0);
}

/// A queued final save (not waited for) folds into the record's held insert, one row carrying
/// the final state; a read by id sees it at once, and without any read it is written soon.
async fn queued_final_saves_fold_into_the_held_insert_and_are_written_unasked(db: &TestDb) {
    let store = &db.store;
    let ada = store.create_user("ada", None).await.unwrap();
    let bob = store.create_user("bob", None).await.unwrap();
    let answered = |db: &TestDb, id: RecordId| {
        let raw = db.raw.clone();
        async move {
            sqlx::query("SELECT status FROM records WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&raw)
                .await
                .unwrap()
                .map(|row| row.get::<String, _>("status"))
        }
    };
    let finished = |queued: &InferenceRecord| {
        let mut done = queued.clone();
        done.dispatched(served_by(&bob, "box"), Utc::now()).unwrap();
        succeed(&mut done, "the answer");
        done
    };

    // Read at once: the read writes it first.
    let read = record(&ada, "m", Visibility::Public);
    store.insert_record_soon(&read).unwrap();
    let done = finished(&read);
    store.save_record_queued(&done).await.unwrap();
    assert_eq!(store.record(read.id).await.unwrap().unwrap().record, done);

    // Not read: written soon all the same, as the final row (well before the insert's delay).
    let unread = record(&ada, "m", Visibility::Public);
    store.insert_record_soon(&unread).unwrap();
    store.save_record_queued(&finished(&unread)).await.unwrap();
    let deadline = std::time::Instant::now() + PROGRESS_DELAY;
    while answered(db, unread.id).await.is_none() {
        assert!(std::time::Instant::now() < deadline, "not written unasked");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(answered(db, unread.id).await.as_deref(), Some("succeeded"));
}

/// A progress save (`running`) is written after the delay when the request is still going, and
/// never when the request ends first.
async fn progress_is_written_late_or_not_at_all(db: &TestDb) {
    let store = &db.store;
    let ada = store.create_user("ada", None).await.unwrap();
    let bob = store.create_user("bob", None).await.unwrap();

    // A long request: its progress shows after the delay.
    let queued = record(&ada, "m", Visibility::Public);
    store.insert_record(&queued).await.unwrap();
    let mut running = queued.clone();
    running
        .dispatched(served_by(&bob, "box"), Utc::now())
        .unwrap();
    store.save_progress(&running).unwrap();
    assert_eq!(stored_status(db, queued.id).await, Status::Queued);
    let deadline = std::time::Instant::now() + PROGRESS_DELAY * 20;
    while stored_status(db, queued.id).await != Status::Running {
        assert!(
            std::time::Instant::now() < deadline,
            "progress never written"
        );
        tokio::time::sleep(PROGRESS_DELAY / 5).await;
    }
    assert_eq!(
        store.record(queued.id).await.unwrap().unwrap().record,
        running
    );

    // A short one: the final save supersedes the held progress, which is never written after.
    let quick = record(&ada, "m", Visibility::Public);
    store.insert_record(&quick).await.unwrap();
    let mut quick_running = quick.clone();
    quick_running
        .dispatched(served_by(&bob, "box"), Utc::now())
        .unwrap();
    store.save_progress(&quick_running).unwrap();
    let mut done = quick_running.clone();
    succeed(&mut done, "fast");
    store.save_record(&done).await.unwrap();
    tokio::time::sleep(PROGRESS_DELAY * 2).await;
    assert_eq!(store.record(quick.id).await.unwrap().unwrap().record, done);
}

async fn migrating_again_changes_nothing(db: &TestDb) {
    let ada = db.store.create_user("ada", None).await.unwrap();
    db.store.migrate().await.unwrap();
    db.store.migrate().await.unwrap();
    assert_eq!(db.store.user_by_handle("ada").await.unwrap(), Some(ada));
}

/// No connection checkpoints inside a commit (it would hold up whoever waits on the commit):
/// the store copies the write-ahead log into the database file in the background, so the file
/// grows with what was written within a few checkpoint intervals, and the log stays bounded.
#[tokio::test]
async fn sqlite_checkpoints_run_in_the_background() {
    let dir = std::env::temp_dir().join(unique_name("club_test"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("checkpointed.db");
    let store = Store::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    let file_size = || std::fs::metadata(&path).map_or(0, |m| m.len());
    // Migrations may still be in the log: wait for the first checkpoint to settle the file.
    tokio::time::sleep(2 * CHECKPOINT_EVERY).await;
    let before = file_size();
    let ada = store.create_user("ada", None).await.unwrap();
    for _ in 0..300 {
        let mut r = record(&ada, "m", Visibility::Public);
        r.request.messages[0] = ChatMessage::user("a prompt long enough ".repeat(20));
        store.insert_record(&r).await.unwrap();
    }
    let written = tokio::time::Instant::now();
    while file_size() <= before {
        assert!(
            written.elapsed() < 5 * CHECKPOINT_EVERY,
            "the database file did not grow from {before} bytes: no checkpoint ran"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    store.close().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn sqlite_data_survives_reopening_and_plain_paths_work() {
    let dir = std::env::temp_dir().join(unique_name("club_test"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("nested-missing-is-not-created.db");
    let url = format!("sqlite:{}", path.display());
    let store = Store::connect(&url).await.unwrap();
    let ada = store.create_user("ada", None).await.unwrap();
    let r = record(&ada, "m", Visibility::Public);
    store.insert_record(&r).await.unwrap();
    store.close().await;
    drop(store);
    let reopened = Store::connect(&path.to_string_lossy()).await.unwrap();
    assert_eq!(reopened.record(r.id).await.unwrap().unwrap().record, r);
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&AnyPool::connect(&url).await.unwrap())
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(mode.to_lowercase(), "wal");
    reopened.close().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
