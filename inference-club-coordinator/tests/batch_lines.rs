//! How a batch's lines run in one coordinator, beyond `tests/batches.rs`: a line whose model no
//! online node serves waits for one (no try counted, no record) instead of failing at once —
//! as after a restart, while the nodes link again; and a line's record names its batch in the
//! club API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use inference_club_coordinator::testing::{RecordQuery, TestClub, TestDatabase};
use inference_club_core::provider::Provider;
use inference_club_provider::backends::Echo;
use serde_json::{Value, json};

async fn upload(club: &TestClub, jsonl: String) -> Value {
    let form = reqwest::multipart::Form::new()
        .text("purpose", "batch")
        .part(
            "file",
            reqwest::multipart::Part::bytes(jsonl.into_bytes()).file_name("input.jsonl"),
        );
    reqwest::Client::new()
        .post(format!("{}/v1/files", club.url))
        .bearer_auth(&club.key)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn create(club: &TestClub, file: &Value) -> Value {
    reqwest::Client::new()
        .post(format!("{}/v1/batches", club.url))
        .bearer_auth(&club.key)
        .json(
            &json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                      "completion_window": "24h"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn get(club: &TestClub, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}{path}", club.url))
        .bearer_auth(&club.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn chat_lines(model: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            json!({"custom_id": format!("l{i}"), "method": "POST", "url": "/v1/chat/completions",
                   "body": {"model": model, "messages": [{"role": "user", "content": format!("hi {i}")}]}})
            .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_of_a_model_no_node_serves_wait_for_one_without_failing_or_records() {
    let club =
        TestClub::start_services_with(TestDatabase::sqlite(), Vec::new(), |builder| builder).await;
    let file = upload(&club, chat_lines("echo", 20)).await;
    let batch = create(&club, &file).await;
    let id = batch["id"].as_str().unwrap().to_owned();
    // Well past the first ticks: still in progress, nothing answered, nothing recorded.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = get(&club, &format!("/v1/batches/{id}")).await;
    assert_eq!(now["status"], "in_progress", "{now}");
    assert_eq!(
        now["request_counts"],
        json!({"total": 20, "completed": 0, "failed": 0})
    );
    let user = club.store.user_by_handle("ada").await.unwrap().unwrap();
    let records = club
        .store
        .list_records(&RecordQuery::made_by(user.id))
        .await
        .unwrap();
    assert!(records.items.is_empty(), "{:?}", records.items);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lines_record_names_its_batch_in_the_club_api() {
    let echo: Arc<dyn Provider> = Arc::new(Echo::new());
    let club = TestClub::start(vec![("echo", echo)]).await;
    let file = upload(&club, chat_lines("echo", 3)).await;
    let batch = create(&club, &file).await;
    let id = batch["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    let done = loop {
        let now = get(&club, &format!("/v1/batches/{id}")).await;
        if now["status"] == "completed" {
            break now;
        }
        assert!(Instant::now() < deadline, "{now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let output = reqwest::Client::new()
        .get(format!(
            "{}/v1/files/{}/content",
            club.url,
            done["output_file_id"].as_str().unwrap()
        ))
        .bearer_auth(&club.key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let first: Value = serde_json::from_str(output.lines().next().unwrap()).unwrap();
    let record_id = first["response"]["request_id"].as_str().unwrap();
    let record = get(&club, &format!("/api/v1/requests/{record_id}")).await;
    assert_eq!(record["batch"], id.as_str(), "{record}");
    // A request of the member's own names none.
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", club.url))
        .bearer_auth(&club.key)
        .json(&json!({"model": "echo", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let own = response.headers()["x-club-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let record = get(&club, &format!("/api/v1/requests/{own}")).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert!(record["batch"].is_null(), "{record}");
}
