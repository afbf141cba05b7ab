//! Failover before output and in-stream errors across replicas.

use std::time::{Duration, Instant};

use inference_club_core::record::Status;
use serde_json::Value;

use crate::support::cluster::{Cluster, Streamed, chat_for, tools};
use crate::support::{
    ANSWER, FakeEngine, Fault, MODEL, Script, ServiceSpec, SseReader, error_of, loud, request_id,
    streamed_content,
};
use crate::{assert_whole_stream, content_of, on_fresh_database, serving};

/// The stream ended cleanly with `[DONE]` right after one error event, which it returns.
fn ends_with_error(streamed: &Streamed) -> Value {
    let events = &streamed.events;
    assert!(!streamed.broken, "the stream must end cleanly: {events:?}");
    let n = events.len();
    assert!(n >= 2, "{events:?}");
    assert_eq!(events[n - 1], "[DONE]", "{events:?}");
    let error = error_of(&events[n - 2]).unwrap_or_else(|| panic!("no error event: {events:?}"));
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{error}"
    );
    assert!(error.get("type").is_some(), "{error}");
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_another_replica_that_fails_before_output_is_failed_over() {
    let Some(tools) = tools("a_node_on_another_replica_that_fails_before_output_is_failed_over")
    else {
        return;
    };
    on_fresh_database(tools, |tools, database| async move {
        let broken = FakeEngine::start(
            "broken",
            Script::default().with_fault(Fault::DropBeforeFirstChunk),
        )
        .await;
        let good = FakeEngine::start("good", Script::default()).await;
        let mut cluster = Cluster::start(&tools, &database).await;
        let (r1, r2, r3) = (cluster.url(0), cluster.url(1), cluster.url(2));
        cluster
            .add_node("node-broken", &[ServiceSpec::fake(&broken)], &r1)
            .await;
        cluster
            .add_node("node-good", &[ServiceSpec::fake(&good)], &r2)
            .await;
        cluster
            .wait_online_everywhere(
                &["node-broken".into(), "node-good".into()],
                Duration::from_secs(3),
            )
            .await;

        // From replica 3, whole and streamed: every answer is whole, and the broken node (on
        // replica 1) is tried and given up for the good one (on replica 2) within a few.
        let mut failed_over = Vec::new();
        for n in 0..6 {
            let stream = n % 2 == 1;
            let id = if stream {
                let streamed = cluster.chat_streamed(&r3, &chat_for(MODEL, true)).await;
                assert_whole_stream(&streamed, ANSWER);
                streamed.id.unwrap()
            } else {
                let (status, id, body) = cluster.chat_whole(&r3, &chat_for(MODEL, false)).await;
                assert_eq!(status, 200, "{body}");
                assert_eq!(content_of(&body), ANSWER);
                id.unwrap()
            };
            let record = cluster.club.final_record(id, Duration::from_secs(5)).await;
            assert_eq!(record.status(), Status::Succeeded);
            assert_eq!(record.served_by.as_ref().unwrap().provider, "node-good");
            if record.attempts.len() == 2 {
                failed_over.push((stream, record));
            }
        }
        assert!(broken.received() >= 1, "the broken node was never tried");
        assert!(!failed_over.is_empty(), "no request was failed over");
        for (_, record) in &failed_over {
            let first = &record.attempts[0];
            assert_eq!(first.served_by.provider, "node-broken");
            assert!(first.error.is_some(), "the failed attempt names its error");
            let second = &record.attempts[1];
            assert_eq!(second.served_by.provider, "node-good");
            assert!(second.error.is_none());
            assert_eq!(record.response.content.as_deref(), Some(ANSWER));
        }
        // The failed attempt is visible from any replica.
        let (_, record) = &failed_over[0];
        let (status, view) = cluster.record_via(&r1, record.id).await;
        assert_eq!(status, 200);
        assert_eq!(view["attempts"][0]["provider"]["name"], "node-broken");
        assert!(
            view["attempts"][0]["error"]["message"].is_string(),
            "{view}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_or_node_that_dies_mid_stream_ends_the_stream_on_another_replica_with_an_error() {
    let Some(tools) = tools(
        "an_engine_or_node_that_dies_mid_stream_ends_the_stream_on_another_replica_with_an_error",
    ) else {
        return;
    };
    on_fresh_database(tools, |tools, database| async move {
        let garbage = FakeEngine::start(
            "garbage",
            Script::default().with_fault(Fault::GarbageAfter(2)),
        )
        .await;
        let held =
            FakeEngine::start("held", Script::default().with_fault(Fault::HoldAfter(2))).await;
        let mut cluster = Cluster::start(&tools, &database).await;
        let r1 = cluster.url(0);
        cluster
            .add_node("node-garbage", &[serving(&garbage, "m-garbage")], &r1)
            .await;
        cluster
            .add_node("node-held", &[serving(&held, "m-held")], &r1)
            .await;
        cluster
            .wait_for_models_everywhere(&["m-garbage", "m-held"], Duration::from_secs(3))
            .await;

        // The engine sends garbage after two pieces: the consumer on replica 2 gets what was
        // made, then the error event; not retried.
        let streamed = cluster
            .chat_streamed(&cluster.url(1), &chat_for("m-garbage", true))
            .await;
        assert_eq!(streamed.status, 200);
        let error = ends_with_error(&streamed);
        assert_eq!(error["code"], "upstream_error", "{error}");
        assert_eq!(streamed_content(&streamed.events), "Hello, ");
        assert_eq!(garbage.received(), 1);
        let record = cluster
            .club
            .final_record(streamed.id.unwrap(), Duration::from_secs(5))
            .await;
        assert_eq!(record.status(), Status::Failed);
        assert!(record.failure.is_some());
        assert_eq!(record.response.content.as_deref(), Some("Hello, "));

        // The node itself dies after two pieces: the consumer on replica 3 gets the error
        // event from the replica that held the link.
        let response = cluster
            .post_chat(&cluster.url(2), &chat_for("m-held", true))
            .await;
        assert_eq!(response.status().as_u16(), 200);
        let id = request_id(&response).unwrap();
        let mut reader = SseReader::new(response);
        let mut events = Vec::new();
        while streamed_content(&events) != "Hello, " {
            events.push(reader.next().await.expect("the stream ended early"));
        }
        cluster.club.node("node-held").proc.kill();
        let killed = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(event) = reader.next().await {
                events.push(event);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the stream did not end after the node died: {events:?}"));
        loud(&format!(
            "cluster: the stream ended {:?} after its node died",
            killed.elapsed()
        ));
        let streamed = Streamed {
            status: 200,
            id: Some(id),
            events,
            broken: reader.broken,
        };
        ends_with_error(&streamed);
        assert_eq!(streamed_content(&streamed.events), "Hello, ");
        let record = cluster.club.final_record(id, Duration::from_secs(5)).await;
        assert_eq!(record.status(), Status::Failed);
        assert!(record.failure.is_some());
        assert_eq!(record.response.content.as_deref(), Some("Hello, "));
        assert_eq!(record.served_by.unwrap().provider, "node-held");
    })
    .await;
}
