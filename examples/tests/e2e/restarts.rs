//! A coordinator killed and restarted: what was in flight fails, nodes come back.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use inference_club_coordinator::testing::RecordQuery;
use inference_club_core::record::Status;

use crate::bounded;
use crate::support::{
    ANSWER, Club, FakeEngine, Fault, MODEL, Script, ServiceSpec, SseReader, chat_body, loud,
    request_id, streamed_content, wait_until,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_coordinator_fails_what_was_in_flight_and_nodes_come_back() {
    bounded(async {
        let a = FakeEngine::start("a", Script::default().with_fault(Fault::HoldAfter(1))).await;
        let b = FakeEngine::start("b", Script::default().with_fault(Fault::HoldAfter(1))).await;
        let mut club = Club::start(&[]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&a)]).await;
        club.add_node("node-b", &[ServiceSpec::fake(&b)]).await;

        let (status, done_before, _) = {
            a.set_script(Script::default());
            b.set_script(Script::default());
            club.chat_whole(&chat_body(false)).await
        };
        assert_eq!(status, 200);
        a.set_script(Script::default().with_fault(Fault::HoldAfter(1)));
        b.set_script(Script::default().with_fault(Fault::HoldAfter(1)));

        let response = club.post_chat(&chat_body(true), Some(&club.key), &[]).await;
        let in_flight = request_id(&response).unwrap();
        let mut events = SseReader::new(response);
        let mut seen = Vec::new();
        while streamed_content(&seen) != "Hello" {
            seen.push(events.next().await.expect("the stream ended early"));
        }
        // The running state is saved without delaying the first chunk; wait until it is durable,
        // so that the crash below comes after it (a crash within those few milliseconds leaves
        // a failed record that does not name the node).
        let deadline = Instant::now() + Duration::from_secs(5);
        while club.stored_record(in_flight).await.map(|r| r.status()) != Some(Status::Running) {
            assert!(
                Instant::now() < deadline,
                "the running state was never saved"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let linked_before: Vec<usize> = club
            .nodes
            .iter()
            .map(|n| n.proc.count_lines_with("linked to the coordinator"))
            .collect();
        club.kill_coordinator();
        while events.next().await.is_some() {}
        assert!(events.broken || seen.last().map(String::as_str) != Some("[DONE]"));

        let restarted = Instant::now();
        club.restart_coordinator().await;
        let record = club.final_record(in_flight, Duration::from_secs(5)).await;
        assert_eq!(record.status(), Status::Failed);
        assert!(
            record
                .failure
                .as_deref()
                .is_some_and(|f| f.contains("restart")),
            "{:?}",
            record.failure
        );
        // The record kept what was known when the coordinator died.
        assert!(
            record.served_by.is_some(),
            "the failed record names the node that served it"
        );
        assert!(record.timing.dispatched_at.is_some());

        for (node, before) in club.nodes.iter().zip(linked_before) {
            wait_until(
                &format!("{} links again", node.name),
                Duration::from_secs(15),
                || node.proc.count_lines_with("linked to the coordinator") > before,
            )
            .await;
        }
        let relinked = restarted.elapsed();
        club.wait_for_model(MODEL).await;
        a.set_script(Script::default());
        b.set_script(Script::default());
        let (status, after, body) = club.chat_whole(&chat_body(false)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
        let after = club
            .final_record(after.unwrap(), Duration::from_secs(5))
            .await;
        assert_eq!(after.status(), Status::Succeeded);

        // No record lost: each of the three requests has one, and all are final.
        let ada = club.store().user_by_handle("ada").await.unwrap().unwrap();
        let page = club
            .store()
            .list_records(&RecordQuery::made_by(ada.id))
            .await
            .unwrap();
        let ids: HashSet<_> = page.items.iter().map(|r| r.id).collect();
        let expected: HashSet<_> = [done_before.unwrap(), in_flight, after.id].into();
        assert_eq!(ids, expected);
        assert!(page.items.iter().all(|r| r.status().is_final()));
        loud(&format!(
            "restart: nodes linked again {relinked:?} after the coordinator restarted"
        ));
    })
    .await;
}
