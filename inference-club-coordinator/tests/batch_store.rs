//! The store's side of batches: lines claimed with leases, answered once by their holder, taken
//! over when a holder's lease runs out, renewed only for the lines named, and a batch taken
//! over by one of several runners. On SQLite, and on PostgreSQL when `CLUB_TEST_DATABASE_URL`
//! names a server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{Duration, Utc};
use inference_club_coordinator::testing::{NewLine, Store, TestDatabase};
use serde_json::{Value, json};

async fn store_on(database: &TestDatabase) -> (Store, inference_club_coordinator::testing::UserId) {
    let store = Store::connect(&database.url).await.unwrap();
    let user = store.create_user("ada", None).await.unwrap();
    (store, user.id)
}

fn batch_body(id: &str) -> Value {
    json!({"id": id, "object": "batch", "status": "in_progress", "finalizing_at": null})
}

fn lines(n: u64) -> Vec<NewLine> {
    (1..=n)
        .map(|line_no| NewLine {
            line_no,
            custom_id: format!("c{line_no}"),
            content: Ok(json!({"model": "m", "messages": []})),
        })
        .collect()
}

async fn leases_and_answers(database: TestDatabase) {
    let (store, owner) = store_on(&database).await;
    let id = format!("batch_{}", uuid::Uuid::now_v7().simple());
    store
        .insert_batch(owner, &batch_body(&id), &lines(4))
        .await
        .unwrap();

    // A claims two lines with a lease that has already run out (it died); B takes them over.
    let gone = Utc::now() - Duration::seconds(1);
    let a = store.claim_lines(&id, "a", gone, 2).await.unwrap();
    assert_eq!(a.iter().map(|l| l.line_no).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(a[0].attempts, 0);
    let lease = Utc::now() + Duration::seconds(30);
    let b = store.claim_lines(&id, "b", lease, 10).await.unwrap();
    assert_eq!(
        b.iter().map(|l| l.line_no).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(b[0].attempts, 1, "the taken-over claim counts as a try");
    // Nothing is left to claim while B's leases run.
    assert!(
        store
            .claim_lines(&id, "c", lease, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // A's late answer is not written: the line is B's.
    let answer = json!({"custom_id": "c1", "from": "a"});
    assert!(!store.finish_line(&a[0], "a", true, &answer).await.unwrap());
    let answer = json!({"custom_id": "c1", "from": "b"});
    assert!(store.finish_line(&b[0], "b", true, &answer).await.unwrap());
    // Answered once: B cannot answer it again either.
    assert!(!store.finish_line(&b[0], "b", false, &answer).await.unwrap());
    let results = store.line_results(&id).await.unwrap();
    assert_eq!(results, vec![(true, answer.to_string())]);

    // B renews only the lines it names: line 3's lease (whose answer B lost) runs out.
    let short = Utc::now() - Duration::seconds(1);
    let named = vec![(id.clone(), 2), (id.clone(), 4)];
    store
        .renew_lines("b", short, &[(id.clone(), 3)])
        .await
        .unwrap();
    assert_eq!(store.renew_lines("b", lease, &named).await.unwrap(), 2);
    // Another runner's name renews nothing of B's.
    assert_eq!(store.renew_lines("c", lease, &named).await.unwrap(), 0);
    let c = store.claim_lines(&id, "c", lease, 10).await.unwrap();
    assert_eq!(c.iter().map(|l| l.line_no).collect::<Vec<_>>(), vec![3]);

    // A line given back after a failure that may pass counts its try; one that found no room
    // does not.
    store.release_line(&b[1], "b", true).await.unwrap();
    store.release_line(&b[3], "b", false).await.unwrap();
    let again = store.claim_lines(&id, "c", lease, 10).await.unwrap();
    let tries: Vec<(u64, u64)> = again.iter().map(|l| (l.line_no, l.attempts)).collect();
    assert_eq!(tries, vec![(2, 2), (4, 0)]);
    let (counts, open) = store.line_counts(&id).await.unwrap();
    assert_eq!(
        (counts.total, counts.completed, counts.failed, open),
        (4, 1, 0, 3)
    );
    assert!(store.has_open_lines(&id).await.unwrap());
    for line in &again {
        store
            .finish_line(line, "c", true, &json!({}))
            .await
            .unwrap();
    }
    assert!(
        store.has_open_lines(&id).await.unwrap(),
        "line 3 is still c's"
    );
    store
        .finish_line(&c[0], "c", false, &json!({}))
        .await
        .unwrap();
    assert!(!store.has_open_lines(&id).await.unwrap());

    // A finalizing batch is taken over by the one runner whose copy is still current.
    let finalizing =
        json!({"id": id, "object": "batch", "status": "finalizing", "finalizing_at": 1});
    assert!(
        store
            .update_batch(&finalizing, &["in_progress"])
            .await
            .unwrap()
    );
    let mut taken = finalizing.clone();
    taken["finalizing_at"] = json!(2);
    assert!(store.replace_batch(&taken, &finalizing).await.unwrap());
    let mut late = finalizing.clone();
    late["finalizing_at"] = json!(3);
    assert!(!store.replace_batch(&late, &finalizing).await.unwrap());
    assert_eq!(store.batch(&id).await.unwrap().unwrap().1, taken);
    database.remove().await;
}

#[tokio::test]
async fn lines_are_leased_answered_once_and_taken_over_on_sqlite() {
    leases_and_answers(TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn lines_are_leased_answered_once_and_taken_over_on_postgres() {
    let Some(database) = TestDatabase::postgres("the batch store tests on PostgreSQL").await else {
        return;
    };
    leases_and_answers(database).await;
}

/// Closing a batch answers every open line, over several commits (500 lines each), and leaves
/// the lines already answered as they were.
async fn closing_answers_every_open_line(database: TestDatabase) {
    let (store, owner) = store_on(&database).await;
    let id = format!("batch_{}", uuid::Uuid::now_v7().simple());
    store
        .insert_batch(owner, &batch_body(&id), &lines(1201))
        .await
        .unwrap();
    let lease = Utc::now() + Duration::seconds(30);
    let claimed = store.claim_lines(&id, "a", lease, 1).await.unwrap();
    assert!(
        store
            .finish_line(
                &claimed[0],
                "a",
                true,
                &json!({"custom_id": "c1", "answered": true})
            )
            .await
            .unwrap()
    );
    let closed = store
        .close_open_lines(
            &id,
            |custom_id| json!({"custom_id": custom_id, "closed": true}),
        )
        .await
        .unwrap();
    assert_eq!(closed, 1200);
    let results = store.line_results(&id).await.unwrap();
    assert_eq!(results.len(), 1201);
    assert!(results[0].0, "the answered line kept its answer");
    assert!(
        results[1..]
            .iter()
            .all(|(ok, line)| !ok && line.contains("\"closed\":true"))
    );
    database.remove().await;
}

#[tokio::test]
async fn closing_answers_every_open_line_on_sqlite() {
    closing_answers_every_open_line(TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn closing_answers_every_open_line_on_postgres() {
    let Some(database) = TestDatabase::postgres("the batch store tests on PostgreSQL").await else {
        return;
    };
    closing_answers_every_open_line(database).await;
}
