//! A full node's queue: first come, first served, then 503 with Retry-After.

use std::time::{Duration, Instant};

use inference_club_coordinator::testing::RecordQuery;
use inference_club_core::record::Status;
use serde_json::json;

use crate::bounded;
use crate::support::{
    ANSWER, Club, FakeEngine, Fault, Script, ServiceSpec, SseReader, chat_body, json_of,
    request_id, streamed_content,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_is_first_come_first_served_and_a_consumer_may_leave_it() {
    bounded(async {
        let engine = FakeEngine::start(
            "one-at-a-time",
            Script::default().with_fault(Fault::HoldAfter(1)),
        )
        .await;
        let mut club = Club::start(&["--queue-timeout-secs", "10"]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&engine).max_concurrent(1)])
            .await;
        let ask = |n: usize| {
            let mut body = chat_body(true);
            body["messages"][0]["content"] = json!(format!("request {n}"));
            body
        };
        let queued = club.metric("queued_total").await;
        let first = club.spawn_chat_streamed(ask(1));
        engine.wait_received(1, Duration::from_secs(5)).await;
        // Three more wait, in this order; the one in the middle gives up.
        let mut waiting = Vec::new();
        for n in 2..=4 {
            waiting.push(club.spawn_chat_streamed(ask(n)));
            let deadline = Instant::now() + Duration::from_secs(5);
            while club.metric("queued_total").await < queued + (n - 1) as f64 {
                assert!(Instant::now() < deadline, "request {n} never queued");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let fourth = waiting.pop().unwrap();
        let third = waiting.pop().unwrap();
        let second = waiting.pop().unwrap();
        third.abort();
        let ada = club.store().user_by_handle("ada").await.unwrap().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let page = club
                .store()
                .list_records(&RecordQuery::made_by(ada.id).with_status(Status::Cancelled))
                .await
                .unwrap();
            if page.items.len() == 1 {
                assert!(
                    page.items[0].request.messages[0]
                        .text_content()
                        .unwrap_or_default()
                        .contains("request 3")
                );
                assert!(page.items[0].served_by.is_none());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the record of the request that left the queue is not cancelled"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // A newcomer arriving the moment the first ends still queues behind those waiting.
        engine.release(4);
        let (status, _, _) = first.await.unwrap();
        assert_eq!(status, 200);
        let fifth = club.spawn_chat_streamed(ask(5));
        for (n, task) in [(2, second), (4, fourth), (5, fifth)] {
            let (status, id, events) = task.await.unwrap();
            assert_eq!(status, 200, "request {n}");
            assert_eq!(streamed_content(&events), ANSWER, "request {n}");
            let record = club.final_record(id.unwrap(), Duration::from_secs(5)).await;
            assert_eq!(record.status(), Status::Succeeded);
        }
        let order: Vec<String> = engine
            .requests()
            .iter()
            .map(|r| r["messages"][0]["content"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(order, ["request 1", "request 2", "request 4", "request 5"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_queues_requests_then_answers_503_with_retry_after() {
    bounded(async {
        let engine = FakeEngine::start(
            "one-at-a-time",
            Script::default().with_fault(Fault::HoldAfter(1)),
        )
        .await;
        let mut club = Club::start(&["--queue-timeout-secs", "1"]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&engine).max_concurrent(1)])
            .await;

        // The first request takes the only slot and holds it.
        let first = club.post_chat(&chat_body(true), Some(&club.key), &[]).await;
        assert_eq!(first.status().as_u16(), 200);
        let first_id = request_id(&first).unwrap();
        let mut first_events = SseReader::new(first);
        assert_eq!(
            streamed_content(&[
                first_events.next().await.unwrap(),
                first_events.next().await.unwrap()
            ]),
            "Hello"
        );

        // The second waits in the queue, and is served when the first ends.
        let queued_before = club.metric("queued_total").await;
        let second_body = chat_body(false);
        let second = {
            let post = club.post_chat(&second_body, Some(&club.key), &[]);
            async move {
                let response = post.await;
                let status = response.status().as_u16();
                let id = request_id(&response);
                (status, id, json_of(response).await)
            }
        };
        let waiter = async {
            let deadline = Instant::now() + Duration::from_secs(1);
            while club.metric("queued_total").await <= queued_before {
                assert!(Instant::now() < deadline, "the second request never queued");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(
                engine.received(),
                1,
                "the second request reached the engine while the first held the slot"
            );
            assert_eq!(
                club.metric("club_queue_depth").await,
                1.0,
                "/metrics shows the waiter"
            );
            engine.release(2);
            let mut rest = Vec::new();
            while let Some(event) = first_events.next().await {
                rest.push(event);
            }
            rest
        };
        let ((status, second_id, body), rest) = tokio::join!(second, waiter);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
        assert_eq!(rest.last().map(String::as_str), Some("[DONE]"));
        let first_record = club.final_record(first_id, Duration::from_secs(5)).await;
        let second_record = club
            .final_record(second_id.unwrap(), Duration::from_secs(5))
            .await;
        assert_eq!(first_record.status(), Status::Succeeded);
        assert_eq!(second_record.status(), Status::Succeeded);
        // The slot frees when the node's answer ends, a moment before the first record is
        // stamped finished: the second is dispatched no earlier than that moment.
        let freed_by =
            first_record.timing.finished_at.unwrap() - chrono::Duration::milliseconds(100);
        assert!(
            second_record.timing.dispatched_at.unwrap() >= freed_by,
            "the second request was dispatched only when the first ended"
        );

        // While the slot is held for longer than the queue timeout: 503 with Retry-After.
        let third = club.post_chat(&chat_body(true), Some(&club.key), &[]).await;
        let third_id = request_id(&third).unwrap();
        let mut third_events = SseReader::new(third);
        third_events.next().await.unwrap();
        let asked = Instant::now();
        let refused = club
            .post_chat(&chat_body(false), Some(&club.key), &[])
            .await;
        let waited = asked.elapsed();
        assert_eq!(refused.status().as_u16(), 503);
        assert!(
            waited >= Duration::from_millis(900),
            "refused after {waited:?}, before the queue timeout"
        );
        let retry_after: u64 = refused
            .headers()
            .get("retry-after")
            .expect("a Retry-After header")
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry_after >= 1);
        let refused_id = request_id(&refused);
        let error = json_of(refused).await;
        assert_eq!(error["error"]["type"], "server_error", "{error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert!(error["error"].get("code").is_some());
        assert!(error["error"].get("param").is_some());
        if let Some(refused_id) = refused_id {
            let record = club.final_record(refused_id, Duration::from_secs(5)).await;
            assert_eq!(record.status(), Status::Failed);
        }
        engine.release(1);
        while third_events.next().await.is_some() {}
        let third_record = club.final_record(third_id, Duration::from_secs(5)).await;
        assert_eq!(third_record.status(), Status::Succeeded);
        assert_eq!(
            engine.received(),
            3,
            "the refused request never reached the engine"
        );
    })
    .await;
}
