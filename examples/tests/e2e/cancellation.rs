//! A consumer that goes away cancels the job at the engine and frees its slot.

use std::time::{Duration, Instant};

use inference_club_coordinator::testing::RecordQuery;
use inference_club_core::record::Status;

use crate::bounded;
use crate::support::{
    Club, FakeEngine, Fault, Script, ServiceSpec, SseReader, abort_request, chat_body, leave_after,
    request_id, streamed_content,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_goes_away_cancels_the_job_at_the_engine() {
    bounded(async {
        let pieces: Vec<String> = (0..100).map(|n| format!("w{n} ")).collect();
        let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let engine =
            FakeEngine::start("slow", Script::answer(&pieces, Duration::from_millis(100))).await;
        let mut club = Club::start(&[]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&engine)]).await;

        let response = club.post_chat(&chat_body(true), Some(&club.key), &[]).await;
        let id = request_id(&response).unwrap();
        let noticed = leave_after(response, "w0 w1 ", &engine).await;
        assert!(
            noticed < Duration::from_secs(2),
            "the engine noticed after {noticed:?}"
        );
        assert_eq!(engine.completed(), 0);
        let record = club.final_record(id, Duration::from_secs(5)).await;
        assert_eq!(record.status(), Status::Cancelled);
        assert!(
            record
                .response
                .content
                .as_deref()
                .is_some_and(|c| c.starts_with("w0 w1 "))
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_goes_away_before_the_first_chunk_cancels_the_job_and_the_record() {
    bounded(async {
        let engine = FakeEngine::start(
            "silent",
            Script::default().with_fault(Fault::HoldBeforeFirstChunk),
        )
        .await;
        let mut club = Club::start(&[]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&engine)]).await;

        // The response has no headers yet (they come with the first output): abort the request.
        let reading = club.spawn_chat_streamed(chat_body(true));
        engine.wait_received(1, Duration::from_secs(10)).await;
        let noticed = abort_request(reading, &engine).await;
        assert!(
            noticed < Duration::from_secs(2),
            "the engine noticed after {noticed:?}"
        );

        let ada = club.store().user_by_handle("ada").await.unwrap().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let record = loop {
            let page = club
                .store()
                .list_records(&RecordQuery::made_by(ada.id))
                .await
                .unwrap();
            assert_eq!(page.items.len(), 1);
            if page.items[0].status().is_final() {
                break page.items[0].clone();
            }
            assert!(
                Instant::now() < deadline,
                "the record stayed {:?}",
                page.items[0].status()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(record.status(), Status::Cancelled);
        assert_eq!(record.served_by.unwrap().provider, "node-a");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_right_after_a_cancelled_one_gets_the_freed_slot() {
    bounded(async {
        let pieces: Vec<String> = (0..100).map(|n| format!("w{n} ")).collect();
        let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let engine =
            FakeEngine::start("slow", Script::answer(&pieces, Duration::from_millis(50))).await;
        let mut club = Club::start(&["--queue-timeout-secs", "5"]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&engine).max_concurrent(1)])
            .await;
        for round in 0..3 {
            engine.set_script(Script::answer(&pieces, Duration::from_millis(50)));
            let response = club.post_chat(&chat_body(true), Some(&club.key), &[]).await;
            let mut events = SseReader::new(response);
            let mut seen = Vec::new();
            while streamed_content(&seen) != "w0 w1 " {
                seen.push(events.next().await.expect("the stream ended early"));
            }
            drop(events);
            // The consumer tries again at once: the node's only slot is being freed.
            engine.set_script(Script::default());
            let (status, id, body) = club.chat_whole(&chat_body(false)).await;
            assert_eq!(status, 200, "round {round}: {body}");
            let record = club.final_record(id.unwrap(), Duration::from_secs(5)).await;
            assert_eq!(record.status(), Status::Succeeded);
        }
    })
    .await;
}
