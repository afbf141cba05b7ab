//! One replica of a cluster (PostgreSQL + NATS, nginx in front) SIGKILLed mid-batch, and started
//! again under the same id once the others have retired it: the lines its dead run held are
//! taken over (by the others, or its new run) once their leases run out, and the batch
//! finishes.

use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::Connection;

use crate::support::cluster::{Cluster, tools};
use crate::support::{FakeEngine, STARTUP, ServiceSpec, bounded_by, loud};
use crate::{Batches, Outcome, custom_ids, input_file, slow_answer};

/// The lines of the batch.
const LINES: usize = 600;
/// The lease of a claimed line (`--batch-lease-secs`): long enough that the victim, started
/// again once the others have retired it (about 6 s), finds its dead run's leases running.
const LEASE_SECS: u64 = 15;

/// The lines of batch `id` held now by holders named like `holder` (SQL `LIKE`: `r2-%`, the runs
/// of replica r2), straight from the database.
async fn held_by(database: &str, id: &str, holder: &str) -> i64 {
    let mut db = sqlx::PgConnection::connect(database).await.unwrap();
    let held: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM batch_lines WHERE batch_id = $1 AND state = 'running' AND holder LIKE $2",
    )
    .bind(id)
    .bind(holder)
    .fetch_one(&mut db)
    .await
    .unwrap();
    let _ = db.close().await;
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_batch_leaves_its_lines_to_the_others_and_no_line_is_answered_twice() {
    let Some(tools) = tools(
        "a_replica_killed_mid_batch_leaves_its_lines_to_the_others_and_no_line_is_answered_twice",
    ) else {
        return;
    };
    let database =
        inference_club_coordinator::testing::TestDatabase::postgres("the batch cluster test")
            .await
            .unwrap();
    let url = database.url.clone();
    bounded_by(Duration::from_secs(150), async {
        let lease = LEASE_SECS.to_string();
        let mut cluster =
            Cluster::start_with(&tools, &url, &["--batch-lease-secs", &lease]).await;
        // Three nodes through nginx (so that the victim's nodes link again to the others).
        let mut engines = Vec::new();
        let mut names = Vec::new();
        for n in 1..=3 {
            let name = format!("node-{n}");
            let engine = FakeEngine::start(&name, slow_answer(Duration::from_millis(40))).await;
            let nginx = cluster.nginx_url.clone();
            cluster.spawn_node(&name, &[ServiceSpec::fake(&engine)], &nginx);
            names.push(name);
            engines.push(engine);
        }
        for name in &names {
            cluster
                .club
                .node(name)
                .proc
                .wait_for_line("linked to the coordinator", STARTUP)
                .await;
        }
        cluster.wait_online_everywhere(&names, STARTUP).await;

        // The batch, made on replica r1 and watched there; r2 is the victim.
        let (victim, survivor) = (1, 0);
        let http = cluster.club.http.clone();
        let (base, key) = (cluster.url(survivor), cluster.club.key.clone());
        let api = Batches::new(&http, &base, &key);
        let file = api.upload(&input_file(LINES)).await;
        let batch = api.create(&file).await;
        let id = batch["id"].as_str().unwrap().to_owned();
        let before = api
            .wait_answered(&id, LINES as u64 / 4, Duration::from_secs(60))
            .await;
        // Killed while it holds lines.
        let deadline = Instant::now() + Duration::from_secs(20);
        let held = loop {
            let held = held_by(&url, &id, "r2-%").await;
            if held > 0 {
                break held;
            }
            assert!(Instant::now() < deadline, "r2 never held a line of the batch");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let killed = Utc::now();
        let killed_at = Instant::now();
        cluster.kill_replica(victim);
        loud(&format!(
            "killed r2 holding about {held} lines, at {}",
            before["request_counts"]
        ));

        let dead_run: Vec<String> = {
            let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query_scalar(
                "SELECT DISTINCT holder FROM batch_lines WHERE batch_id = $1 AND holder LIKE 'r2-%'",
            )
            .bind(&id)
            .fetch_all(&mut db)
            .await
            .unwrap()
        };
        assert_eq!(dead_run.len(), 1, "{dead_run:?}");

        // Once the others have retired r2 (its records in flight failed), it comes back under
        // the same id while its dead run's leases still run: its new run must not take those
        // lines for its own (and renew them forever).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
            let registered: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM replicas WHERE id = 'r2'")
                    .fetch_one(&mut db)
                    .await
                    .unwrap();
            let _ = db.close().await;
            if registered == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "r2 was never retired");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cluster.restart_replica(victim).await;
        let still_leased = held_by(&url, &id, &dead_run[0]).await;
        loud(&format!(
            "r2 started again {:?} after the kill; its dead run still holds {still_leased} lines",
            killed_at.elapsed()
        ));
        assert!(
            still_leased > 0,
            "the dead run's leases ran out before r2 came back: the test proves nothing"
        );

        let outcome =
            Outcome::gather(&api, cluster.club.store(), &id, Duration::from_secs(90)).await;
        let took = killed_at.elapsed();
        let (lost, failed) = outcome.assert_answered_once(&custom_ids(LINES), Some(killed));
        // What r2 ran when it died is failed (by the others, which saw it go), saying why.
        let stopped = failed
            .iter()
            .filter(|r| {
                r.failure
                    .as_deref()
                    .is_some_and(|f| f.contains("replica handling it stopped"))
            })
            .count();
        loud(&format!(
            "the batch ended {took:?} after the kill; {stopped} records failed with r2, {lost} answers lost"
        ));
        assert!(stopped + lost > 0, "nothing r2 ran was recorded as cut off");
        assert_eq!(held_by(&url, &id, "%").await, 0, "no line is left held");
        // No line failed because its model was unserved while the nodes linked again.
        assert!(
            failed
                .iter()
                .all(|r| !r.failure.as_deref().unwrap_or_default().contains("no online node")),
            "{failed:?}"
        );
        drop(engines);
    })
    .await;
    database.remove().await;
}
