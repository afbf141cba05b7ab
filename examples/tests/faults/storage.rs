//! The database fails: a full SQLite disk, a PostgreSQL restart under load.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use inference_club_coordinator::testing::TestDatabase;
use inference_club_core::record::{RecordId, Status};
use serde_json::json;

use crate::support::faults::postgres_url;
use crate::support::{
    ANSWER, Club, FakeEngine, Fault, MODEL, Script, ServiceSpec, SseReader, chat_body, json_of,
    loud, request_id, streamed_content, wait_until,
};
use crate::{assert_envelope, bounded, read_rest, read_until_content};

/// The number of pages of the SQLite database at `path`.
async fn sqlite_pages(path: &std::path::Path) -> u64 {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    u64::try_from(pages).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_new_requests_with_503_and_records_catch_up_when_space_is_freed() {
    bounded(async {
        let long: Vec<String> = (0..40)
            .map(|n| format!("{n:04}{}", "x".repeat(1020)))
            .collect();
        let long: Vec<&str> = long.iter().map(String::as_str).collect();
        let long_answer = long.concat();
        let engine = FakeEngine::start("a", Script::default()).await;
        let mut club = Club::start(&[]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&engine)]).await;
        let (status, _, _) = club.chat_whole(&chat_body(false)).await;
        assert_eq!(status, 200);

        // The same database, capped a little above its size now (SQLite's max_page_count: the
        // file can grow by 256 KiB more, then writes fail as on a full disk).
        let file = club.dir.join("club.db");
        let cap = sqlite_pages(&file).await + 64;
        let capped = format!("sqlite:{}?max_page_count={cap}", file.display());
        club.restart_coordinator_on(&capped).await;
        wait_until("node-a links again", Duration::from_secs(15), || {
            club.nodes[0]
                .proc
                .count_lines_with("linked to the coordinator")
                >= 2
        })
        .await;
        club.wait_for_model(MODEL).await;

        // A long answer in flight, while the disk fills.
        engine.set_script(
            Script::answer(&long, Duration::from_millis(1)).with_fault(Fault::HoldAfter(1)),
        );
        let response = club.post_chat(&chat_body(true), Some(&club.key), &[]).await;
        assert_eq!(response.status().as_u16(), 200);
        let in_flight = request_id(&response).unwrap();
        let mut events = SseReader::new(response);
        let mut seen = Vec::new();
        read_until_content(&mut events, &mut seen, long[0]).await;

        // Requests with long prompts fill the disk; once it is full, a new request is refused
        // with 503 and Retry-After, before anything is routed, and no record is claimed.
        engine.set_script(Script::default());
        let mut filler = chat_body(false);
        filler["messages"][0]["content"] = json!("y".repeat(16 * 1024));
        let mut served = Vec::new();
        let refused = loop {
            let response = club.post_chat(&filler, Some(&club.key), &[]).await;
            let status = response.status().as_u16();
            if status == 200 {
                served.push(request_id(&response).unwrap());
                json_of(response).await;
                assert!(served.len() < 100, "the disk never filled");
                continue;
            }
            break response;
        };
        assert!(
            served.len() >= 3,
            "only {} requests fitted before the disk was full",
            served.len()
        );
        assert_eq!(refused.status().as_u16(), 503);
        assert!(refused.headers().get("retry-after").is_some());
        assert!(request_id(&refused).is_none(), "no record, so no record id");
        let body = json_of(refused).await;
        assert_envelope(&body, "store_unavailable");

        // Reading goes on: the models, an earlier record, the health check.
        club.wait_for_model(MODEL).await;
        let earlier = club
            .http
            .get(format!("{}/api/v1/requests/{}", club.url, served[0]))
            .bearer_auth(&club.key)
            .send()
            .await
            .unwrap();
        assert_eq!(earlier.status().as_u16(), 200);

        // The answer in flight completes for its consumer even though its record cannot be
        // saved yet; the save (queued for the writer, whose commit fails) is retried in the
        // background.
        engine.release(1);
        read_rest(&mut events, &mut seen, Duration::from_secs(5)).await;
        assert_eq!(seen.last().map(String::as_str), Some("[DONE]"));
        assert_eq!(streamed_content(&seen), long_answer);
        let deferred_by = Instant::now() + Duration::from_secs(5);
        while club.metric("record_saves_deferred").await < 1.0 {
            assert!(
                Instant::now() < deferred_by,
                "the failed save was not deferred"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(club.record(in_flight).await.status(), Status::Running);

        // The owner frees space by deleting requests: the deferred save lands, and the record
        // tells the truth; new requests are served again.
        for id in &served[1..] {
            let deleted = club
                .http
                .delete(format!("{}/api/v1/requests/{id}", club.url))
                .bearer_auth(&club.key)
                .send()
                .await
                .unwrap();
            assert_eq!(deleted.status().as_u16(), 204);
        }
        let record = club.final_record(in_flight, Duration::from_secs(10)).await;
        assert_eq!(record.status(), Status::Succeeded);
        assert_eq!(
            record.response.content.as_deref(),
            Some(long_answer.as_str())
        );
        let (status, id, body) = club.chat_whole(&chat_body(false)).await;
        assert_eq!(status, 200, "{body}");
        club.final_record(id.unwrap(), Duration::from_secs(5)).await;
        assert_eq!(club.metric("record_saves_deferred").await, 0.0);
        assert!(
            club.all_records()
                .await
                .iter()
                .all(|r| r.status().is_final()),
            "a record was left in flight"
        );
    })
    .await;
}

/// The data directory of `scripts/postgres.sh`'s cluster serves `url`, so the script can restart
/// it (and not some other server).
fn script_serves(url: &str) -> bool {
    let dir =
        std::env::var("CLUB_PG_DIR").unwrap_or_else(|_| "/tmp/inference-club-postgres".into());
    std::fs::read_to_string(std::path::Path::new(&dir).join("port"))
        .is_ok_and(|port| url.contains(&format!("127.0.0.1:{}/", port.trim())))
}

fn restart_postgres() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/postgres.sh");
    let output = std::process::Command::new("bash")
        .arg(script)
        .arg("restart")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "scripts/postgres.sh restart failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_loses_no_record() {
    let Some(server) = postgres_url("a_postgres_restart_under_load_loses_no_record") else {
        return;
    };
    if !script_serves(&server) {
        loud(
            "SKIPPED a_postgres_restart_under_load_loses_no_record: CLUB_TEST_DATABASE_URL is not the server scripts/postgres.sh runs, so the test cannot restart it",
        );
        return;
    }
    let database = TestDatabase::postgres("the PostgreSQL fault test")
        .await
        .unwrap();
    bounded(async {
        let slow = Script::answer(&["Hello", ", ", "world", "!"], Duration::from_millis(20));
        let a = FakeEngine::start("a", slow.clone()).await;
        let b = FakeEngine::start("b", slow).await;
        let mut club = Club::start_on(Some(&database.url), &[]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&a)]).await;
        club.add_node("node-b", &[ServiceSpec::fake(&b)]).await;

        // Four consumers ask without pause, across the restart and for a while after it.
        let stop = tokio_util::sync::CancellationToken::new();
        let consumers: Vec<_> = (0..4)
            .map(|n| {
                let (http, url, key) = (club.http.clone(), club.url.clone(), club.key.clone());
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut outcomes: Vec<(Instant, Instant, u16, Option<RecordId>, String)> =
                        Vec::new();
                    let mut i = 0usize;
                    while !stop.is_cancelled() {
                        i += 1;
                        let sent = Instant::now();
                        let stream = (n + i).is_multiple_of(2);
                        let response = http
                            .post(format!("{url}/v1/chat/completions"))
                            .bearer_auth(&key)
                            .json(&chat_body(stream))
                            .send()
                            .await
                            .unwrap();
                        let status = response.status().as_u16();
                        let id = request_id(&response);
                        let retry_after = response.headers().contains_key("retry-after");
                        let detail = if status == 200 && stream {
                            let mut events = SseReader::new(response);
                            let mut all = Vec::new();
                            while let Some(event) = events.next().await {
                                all.push(event);
                            }
                            assert_eq!(all.last().map(String::as_str), Some("[DONE]"));
                            streamed_content(&all)
                        } else {
                            let body = json_of(response).await;
                            if status == 200 {
                                body["choices"][0]["message"]["content"]
                                    .as_str()
                                    .unwrap_or_default()
                                    .to_owned()
                            } else {
                                assert!(retry_after, "{status} without Retry-After: {body}");
                                body["error"]["code"].as_str().unwrap_or_default().to_owned()
                            }
                        };
                        outcomes.push((sent, Instant::now(), status, id, detail));
                    }
                    outcomes
                })
            })
            .collect();

        tokio::time::sleep(Duration::from_millis(1500)).await;
        let restarting = Instant::now();
        tokio::task::spawn_blocking(restart_postgres).await.unwrap();
        let restarted = Instant::now();
        loud(&format!(
            "postgres: restarted in {:?}",
            restarted - restarting
        ));
        tokio::time::sleep(Duration::from_secs(4)).await;
        stop.cancel();
        let mut outcomes = Vec::new();
        for consumer in consumers {
            outcomes.extend(consumer.await.unwrap());
        }

        // Each request was answered in full, or refused with 503 `store_unavailable` and
        // Retry-After (while the database was down): nothing else.
        let mut ids = HashSet::new();
        let mut refused = 0;
        for (_, _, status, id, detail) in &outcomes {
            match status {
                200 => {
                    assert_eq!(detail, ANSWER);
                    ids.insert(id.unwrap());
                }
                503 => {
                    assert_eq!(detail, "store_unavailable");
                    refused += 1;
                    if let Some(id) = id {
                        ids.insert(*id);
                    }
                }
                other => panic!("unexpected {other}: {detail}"),
            }
        }
        // Served again soon after the restart: every request of the last two seconds.
        let settled = restarted + Duration::from_secs(2);
        assert!(
            outcomes
                .iter()
                .filter(|(sent, ..)| *sent > settled)
                .all(|(_, _, status, ..)| *status == 200),
            "requests still refused 2 s after the database came back"
        );
        let across = outcomes
            .iter()
            .filter(|(sent, done, ..)| *sent < restarted && *done > restarting)
            .count();
        assert!(across > 0, "no request was in flight while the database restarted");
        loud(&format!(
            "postgres: {} requests, {across} in flight across the restart, {refused} refused with 503",
            outcomes.len()
        ));

        // No record lost, none invented, none left in flight: each answered request has its
        // record, final, and the answered ones say succeeded.
        let deadline = Instant::now() + Duration::from_secs(15);
        let records = loop {
            let records = club.all_records().await;
            if records.iter().all(|r| r.status().is_final()) || Instant::now() > deadline {
                break records;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let stored: HashSet<RecordId> = records.iter().map(|r| r.id).collect();
        assert_eq!(stored, ids, "the records are not exactly the requests answered");
        for record in &records {
            assert_eq!(record.status(), Status::Succeeded, "{:?}", record.failure);
        }
        // The nodes never lost their links.
        for node in &club.nodes {
            assert_eq!(node.proc.count_lines_with("linked to the coordinator"), 1);
        }
        drop(club);
    })
    .await;
    database.remove().await;
}
