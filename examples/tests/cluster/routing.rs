//! Requests, streams and cancels that cross replicas behave as in one process.

use std::time::Duration;

use inference_club_core::record::{RecordId, Status};
use serde_json::Value;

use crate::support::cluster::{Cluster, REPLICAS, chat_for, read_streamed, tools};
use crate::support::{
    ANSWER, FakeEngine, MODEL, Script, ServiceSpec, leave_after, loud, request_id, streamed_content,
};
use crate::{assert_whole_stream, content_of, on_fresh_database, serving};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_succeeds_whichever_replica_it_lands_on() {
    let Some(tools) = tools("every_request_succeeds_whichever_replica_it_lands_on") else {
        return;
    };
    on_fresh_database(tools, |tools, database| async move {
        let a = FakeEngine::start("a", Script::default()).await;
        let b = FakeEngine::start("b", Script::default()).await;
        let mut cluster = Cluster::start(&tools, &database).await;

        // node-a links to replica 1, node-b to replica 2; every replica (and nginx) lists both
        // models soon after each link.
        let (r1, r2) = (cluster.url(0), cluster.url(1));
        cluster.add_node("node-a", &[serving(&a, "m-a")], &r1).await;
        let seen = cluster
            .wait_for_models_everywhere(&["m-a"], Duration::from_secs(3))
            .await;
        loud(&format!(
            "cluster: m-a listed by every replica {seen:?} after its link"
        ));
        cluster.add_node("node-b", &[serving(&b, "m-b")], &r2).await;
        let seen = cluster
            .wait_for_models_everywhere(&["m-a", "m-b"], Duration::from_secs(3))
            .await;
        loud(&format!(
            "cluster: m-b listed by every replica {seen:?} after its link"
        ));
        assert_eq!(cluster.replicas_that_linked("node-a"), vec![0]);
        assert_eq!(cluster.replicas_that_linked("node-b"), vec![1]);
        cluster
            .wait_online_everywhere(&["node-a".into(), "node-b".into()], Duration::from_secs(3))
            .await;

        // Both models through every door, whole and streamed.
        let mut served: Vec<(RecordId, &str)> = Vec::new();
        for door in cluster.every_door() {
            for (model, node, engine) in [("m-a", "node-a", &a), ("m-b", "node-b", &b)] {
                let before = engine.received();
                let (status, id, body) = cluster.chat_whole(&door, &chat_for(model, false)).await;
                assert_eq!(status, 200, "{model} at {door}: {body}");
                assert_eq!(content_of(&body), ANSWER, "{model} at {door}: {body}");
                let id = id.expect("no x-club-request-id");
                assert_eq!(body["id"], id.completion_id());
                // Asked whole through any door (relayed too): the engine is asked for it whole.
                assert_eq!(
                    engine.requests().last().unwrap()["stream"],
                    false,
                    "{model} at {door}"
                );
                served.push((id, node));

                let streamed = cluster.chat_streamed(&door, &chat_for(model, true)).await;
                assert_whole_stream(&streamed, ANSWER);
                served.push((streamed.id.expect("no x-club-request-id"), node));
                assert_eq!(engine.received(), before + 2, "{model} at {door}");
                assert_eq!(engine.requests().last().unwrap()["model"], model);
            }
        }

        // A large request (1.2 MB of text, over NATS's default 1 MiB message) crosses from
        // replica 3 to the node on replica 1 whole.
        let big = "€".repeat(400_000);
        let body = serde_json::json!({
            "model": "m-a",
            "messages": [{"role": "user", "content": big}],
        });
        let (status, id, answer) = cluster.chat_whole(&cluster.url(2), &body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(content_of(&answer), ANSWER);
        served.push((id.unwrap(), "node-a"));
        let asked = a.requests().last().unwrap()["messages"][0]["content"].clone();
        assert!(asked == big.as_str(), "the engine got another text");

        // Every record is final, readable from every replica, and names the node that served it.
        for (id, node) in &served {
            for n in 0..REPLICAS {
                let (status, record) = cluster.record_via(&cluster.url(n), *id).await;
                assert_eq!(status, 200, "record {id} from r{}: {record}", n + 1);
                assert_eq!(record["status"], "succeeded", "{record}");
                assert_eq!(record["provider"]["name"], *node, "{record}");
                assert_eq!(record["provider"]["operator"], "ada", "{record}");
                assert_eq!(record["response"]["content"], ANSWER, "{record}");
            }
        }
        assert_eq!(a.completed() + b.completed(), served.len());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_across_replicas_arrives_whole_in_order_and_as_it_is_made() {
    let Some(tools) = tools("a_stream_across_replicas_arrives_whole_in_order_and_as_it_is_made")
    else {
        return;
    };
    on_fresh_database(tools, |tools, database| async move {
        let pieces: Vec<String> = (0..30).map(|n| format!("piece{n:02} ")).collect();
        let words: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let pace = Duration::from_millis(15);
        let engine = FakeEngine::start("paced", Script::answer(&words, pace)).await;
        let mut cluster = Cluster::start(&tools, &database).await;
        let r1 = cluster.url(0);
        cluster
            .add_node("node-a", &[ServiceSpec::fake(&engine)], &r1)
            .await;
        cluster
            .wait_for_models_everywhere(&[MODEL], Duration::from_secs(3))
            .await;

        // Four consumers at once on replicas 2 and 3, the node on replica 1: the chunks of each
        // job stay with their job, in order, one for one.
        let readers: Vec<_> = [1, 2, 1, 2]
            .into_iter()
            .map(|n| {
                let (http, key) = (cluster.club.http.clone(), cluster.club.key.clone());
                let url = cluster.url(n);
                tokio::spawn(async move {
                    let response = http
                        .post(format!("{url}/v1/chat/completions"))
                        .bearer_auth(key)
                        .json(&chat_for(MODEL, true))
                        .send()
                        .await
                        .unwrap();
                    read_streamed(response).await
                })
            })
            .collect();
        for reader in readers {
            let (streamed, arrivals) = reader.await.unwrap();
            assert_whole_stream(&streamed, &pieces.concat());
            let id = streamed.id.unwrap();
            let chunks: Vec<Value> = streamed
                .events
                .iter()
                .filter_map(|e| serde_json::from_str(e).ok())
                .collect();
            let deltas: Vec<&str> = chunks
                .iter()
                .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
                .filter(|c| !c.is_empty())
                .collect();
            assert_eq!(deltas, words, "one chunk per piece, in order");
            assert!(
                chunks.iter().all(|c| c["id"] == id.completion_id()),
                "every chunk names the record"
            );
            // Streamed as made, not gathered: the pieces took 30 × 15 ms to make.
            let first = streamed
                .events
                .iter()
                .position(|e| streamed_content(std::slice::from_ref(e)).starts_with("piece00"))
                .unwrap();
            let spread = arrivals[arrivals.len() - 1] - arrivals[first];
            assert!(
                spread >= pace * 15,
                "the chunks came in a burst ({spread:?}), not as they were made"
            );
            let record = cluster.club.final_record(id, Duration::from_secs(5)).await;
            assert_eq!(record.status(), Status::Succeeded);
            assert_eq!(
                record.response.content.as_deref(),
                Some(pieces.concat().as_str())
            );
            assert_eq!(record.served_by.unwrap().provider, "node-a");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_on_another_replica_that_goes_away_cancels_the_job_at_the_engine() {
    let Some(tools) =
        tools("a_consumer_on_another_replica_that_goes_away_cancels_the_job_at_the_engine")
    else {
        return;
    };
    on_fresh_database(tools, |tools, database| async move {
        let pieces: Vec<String> = (0..100).map(|n| format!("w{n} ")).collect();
        let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let engine =
            FakeEngine::start("slow", Script::answer(&pieces, Duration::from_millis(100))).await;
        let mut cluster = Cluster::start(&tools, &database).await;
        let r1 = cluster.url(0);
        cluster
            .add_node("node-a", &[ServiceSpec::fake(&engine)], &r1)
            .await;
        cluster
            .wait_for_models_everywhere(&[MODEL], Duration::from_secs(3))
            .await;

        let response = cluster
            .post_chat(&cluster.url(2), &chat_for(MODEL, true))
            .await;
        assert_eq!(response.status().as_u16(), 200);
        let id = request_id(&response).unwrap();
        let noticed = leave_after(response, "w0 w1 ", &engine).await;
        loud(&format!(
            "cluster: the engine saw the cancel after {noticed:?}"
        ));
        assert!(
            noticed < Duration::from_secs(2),
            "the engine noticed after {noticed:?}"
        );
        assert_eq!(engine.completed(), 0);
        let record = cluster.club.final_record(id, Duration::from_secs(5)).await;
        assert_eq!(record.status(), Status::Cancelled);
        assert!(
            record
                .response
                .content
                .as_deref()
                .is_some_and(|c| c.starts_with("w0 w1 ")),
            "{:?}",
            record.response.content
        );
        // The node serves the next request as usual.
        engine.set_script(Script::default());
        let streamed = cluster
            .chat_streamed(&cluster.url(2), &chat_for(MODEL, true))
            .await;
        assert_whole_stream(&streamed, ANSWER);
    })
    .await;
}
