//! The coordinator killed with answers streaming and queued, then restarted.

use std::time::{Duration, Instant};

use inference_club_core::record::Status;

use crate::support::{
    Club, FakeEngine, Fault, MODEL, Script, ServiceSpec, SseReader, chat_body, request_id,
    wait_until,
};
use crate::{bounded, read_rest, read_until_content};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_with_requests_streaming_and_queued_fails_them_all_at_restart() {
    bounded(async {
        let engine =
            FakeEngine::start("a", Script::default().with_fault(Fault::HoldAfter(1))).await;
        let mut club = Club::start(&["--queue-timeout-secs", "30"]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&engine).max_concurrent(1)])
            .await;

        // One answer streaming (holding the node's only slot) and one whole request queued.
        let response = club.post_chat(&chat_body(true), Some(&club.key), &[]).await;
        let streaming = request_id(&response).unwrap();
        let mut events = SseReader::new(response);
        let mut seen = Vec::new();
        read_until_content(&mut events, &mut seen, "Hello").await;
        let queued_task = {
            let (http, url, key) = (club.http.clone(), club.url.clone(), club.key.clone());
            tokio::spawn(async move {
                http.post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(key)
                    .json(&chat_body(false))
                    .send()
                    .await
            })
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let queued = loop {
            let records = club.all_records().await;
            let running = records.iter().find(|r| r.id == streaming);
            let waiting = records.iter().find(|r| r.id != streaming);
            if let (Some(running), Some(waiting)) = (running, waiting)
                && running.status() == Status::Running
                && waiting.status() == Status::Queued
            {
                break waiting.id;
            }
            assert!(
                Instant::now() < deadline,
                "never one running and one queued"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };

        club.kill_coordinator();
        // Both consumers are told at once: the stream breaks, the waiting request errors.
        read_rest(&mut events, &mut seen, Duration::from_secs(3)).await;
        assert!(events.broken || seen.last().map(String::as_str) != Some("[DONE]"));
        let waiting = tokio::time::timeout(Duration::from_secs(3), queued_task)
            .await
            .unwrap()
            .unwrap();
        assert!(
            waiting.is_err(),
            "the queued request got an answer from a dead coordinator"
        );
        // The node cancels what its engine was doing when the link goes.
        wait_until(
            "the engine's response is dropped",
            Duration::from_secs(5),
            || engine.dropped() >= 1,
        )
        .await;

        club.restart_coordinator().await;
        for id in [streaming, queued] {
            let record = club.final_record(id, Duration::from_secs(5)).await;
            assert_eq!(record.status(), Status::Failed, "{id}");
            assert!(
                record
                    .failure
                    .as_deref()
                    .is_some_and(|f| f.contains("restart")),
                "{:?}",
                record.failure
            );
        }
        assert_eq!(
            club.record(streaming).await.served_by.unwrap().provider,
            "node-a"
        );
        assert!(club.record(queued).await.served_by.is_none());

        // The node links again by itself and the club serves.
        wait_until("node-a links again", Duration::from_secs(15), || {
            club.nodes[0]
                .proc
                .count_lines_with("linked to the coordinator")
                >= 2
        })
        .await;
        club.wait_for_model(MODEL).await;
        engine.set_script(Script::default());
        let (status, id, body) = club.chat_whole(&chat_body(false)).await;
        assert_eq!(status, 200, "{body}");
        let record = club.final_record(id.unwrap(), Duration::from_secs(5)).await;
        assert_eq!(record.status(), Status::Succeeded);
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
