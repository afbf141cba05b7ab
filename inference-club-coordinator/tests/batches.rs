//! Files and batches through a real coordinator and node (the Echo engine): a JSONL upload, a
//! batch over it run to completion, its output and error files in OpenAI's shapes, each line
//! answered once and recorded (linked to the batch, with its visibility), `Idempotency-Key`,
//! cancellation, and bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use inference_club_coordinator::testing::{TestClub, TestDatabase, TestService};
use inference_club_core::provider::Provider;
use inference_club_provider::backends::Echo;
use serde_json::{Value, json};

async fn club_on(database: TestDatabase, echo: Echo) -> TestClub {
    let echo: Arc<dyn Provider> = Arc::new(echo.models(["echo", "echo-embed"]));
    TestClub::start_services_with(
        database,
        vec![
            TestService::new("echo", echo.clone()),
            TestService::new("echo-embed", echo).features(["embeddings"]),
        ],
        |builder| builder,
    )
    .await
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

fn chat_line(id: &str, text: &str) -> String {
    json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions",
           "body": {"model": "echo", "messages": [{"role": "user", "content": text}]}})
    .to_string()
}

async fn upload(
    club: &TestClub,
    key: &str,
    jsonl: String,
    idempotency: Option<&str>,
) -> reqwest::Response {
    let form = reqwest::multipart::Form::new()
        .text("purpose", "batch")
        .part(
            "file",
            reqwest::multipart::Part::bytes(jsonl.into_bytes()).file_name("input.jsonl"),
        );
    let mut request = http()
        .post(format!("{}/v1/files", club.url))
        .bearer_auth(key)
        .multipart(form);
    if let Some(idempotency) = idempotency {
        request = request.header("idempotency-key", idempotency);
    }
    request.send().await.unwrap()
}

async fn post(
    club: &TestClub,
    path: &str,
    body: Value,
    idempotency: Option<&str>,
) -> reqwest::Response {
    let mut request = http()
        .post(format!("{}{path}", club.url))
        .bearer_auth(&club.key)
        .json(&body);
    if let Some(idempotency) = idempotency {
        request = request.header("idempotency-key", idempotency);
    }
    request.send().await.unwrap()
}

async fn get(club: &TestClub, path: &str) -> reqwest::Response {
    http()
        .get(format!("{}{path}", club.url))
        .bearer_auth(&club.key)
        .send()
        .await
        .unwrap()
}

/// Polls the batch until it reaches one of `statuses`.
async fn wait_for(club: &TestClub, id: &str, statuses: &[&str], within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let batch: Value = get(club, &format!("/v1/batches/{id}"))
            .await
            .json()
            .await
            .unwrap();
        if statuses.contains(&batch["status"].as_str().unwrap()) {
            return batch;
        }
        assert!(Instant::now() < deadline, "batch stuck: {batch}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A file's lines, as `/v1/files/{id}/content` gives them: JSONL that a browser never runs
/// as a page.
async fn file_lines(club: &TestClub, id: &Value) -> Vec<Value> {
    let response = get(club, &format!("/v1/files/{}/content", id.as_str().unwrap())).await;
    let headers = response.headers();
    assert_eq!(headers["content-type"], "application/jsonl");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(
        headers["content-security-policy"],
        "default-src 'none'; sandbox"
    );
    let text = response.text().await.unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_runs_every_line_once_and_writes_openai_files() {
    let club = club_on(TestDatabase::sqlite(), Echo::new()).await;
    let mut jsonl: Vec<String> = (0..60)
        .map(|i| chat_line(&format!("req-{i}"), &format!("hello {i}")))
        .collect();
    jsonl.insert(10, "this is not json".into());
    jsonl.insert(20, chat_line("req-5", "a duplicate id"));
    let file: Value = upload(&club, &club.key, jsonl.join("\n"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(file["object"], "file");
    assert_eq!(file["purpose"], "batch");
    let response = post(
        &club,
        "/v1/batches",
        json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
               "completion_window": "24h", "metadata": {"run": "one"}, "visibility": "unlisted"}),
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    let batch: Value = response.json().await.unwrap();
    assert_eq!(batch["object"], "batch");
    assert_eq!(batch["metadata"]["run"], "one");
    let id = batch["id"].as_str().unwrap().to_owned();
    let done = wait_for(&club, &id, &["completed"], Duration::from_secs(30)).await;
    assert_eq!(
        done["request_counts"],
        json!({"total": 62, "completed": 60, "failed": 2})
    );
    for field in ["in_progress_at", "finalizing_at", "completed_at"] {
        assert!(done[field].is_i64(), "{field}: {done}");
    }

    let output = file_lines(&club, &done["output_file_id"]).await;
    assert_eq!(output.len(), 60);
    let ids: HashSet<&str> = output
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 60, "every line answered once");
    let first = output.iter().find(|l| l["custom_id"] == "req-7").unwrap();
    assert_eq!(first["response"]["status_code"], 200);
    assert_eq!(
        first["response"]["body"]["choices"][0]["message"]["content"],
        "echo: hello 7"
    );
    assert!(first["error"].is_null());
    // Its record is an ordinary record, linked to the batch, with the batch's visibility.
    let record_id = first["response"]["request_id"].as_str().unwrap();
    let record: Value = get(&club, &format!("/api/v1/requests/{record_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(record["visibility"], "unlisted");
    assert_eq!(record["status"], "succeeded");

    let errors = file_lines(&club, &done["error_file_id"]).await;
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["error"]["code"], "invalid_json");
    assert_eq!(errors[0]["error"]["line"], 11);
    assert_eq!(errors[1]["error"]["code"], "duplicate_custom_id");
    assert_eq!(errors[1]["custom_id"], "req-5");

    let list: Value = get(&club, "/v1/batches?limit=5")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"][0]["id"], id.as_str());
}

/// Lines no node can take (a model nobody serves; a model served, but not at the batch's
/// endpoint) wait for one for the grace, then get the refusal an interactive request would, and
/// the batch completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_no_node_can_take_are_refused_after_the_grace() {
    const GRACE: Duration = Duration::from_secs(2);
    let echo: Arc<dyn Provider> = Arc::new(Echo::new().models(["echo", "echo-embed"]));
    let club = TestClub::start_services_with(
        TestDatabase::sqlite(),
        vec![
            TestService::new("echo", echo.clone()),
            TestService::new("echo-embed", echo).features(["embeddings"]),
        ],
        |builder| builder.batch_unserved_grace(GRACE),
    )
    .await;
    let line = |id: &str, model: &str| {
        json!({"custom_id": id, "method": "POST", "url": "/v1/embeddings",
               "body": {"model": model, "input": "text"}})
        .to_string()
    };
    let jsonl = [
        line("unknown", "nope"),
        line("chat-only", "echo"),
        line("served", "echo-embed"),
    ];
    let file: Value = upload(&club, &club.key, jsonl.join("\n"), None)
        .await
        .json()
        .await
        .unwrap();
    let created = Instant::now();
    let batch: Value = post(
        &club,
        "/v1/batches",
        json!({"input_file_id": file["id"], "endpoint": "/v1/embeddings", "completion_window": "24h"}),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let id = batch["id"].as_str().unwrap();
    // While the others wait, the served line is answered, and the listing counts it too.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now: Value = get(&club, &format!("/v1/batches/{id}"))
            .await
            .json()
            .await
            .unwrap();
        if now["request_counts"]["completed"] == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the served line is not answered: {now}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let list: Value = get(&club, "/v1/batches").await.json().await.unwrap();
    assert_eq!(list["data"][0]["id"], id);
    assert_eq!(list["data"][0]["request_counts"]["completed"], 1, "{list}");
    let done = wait_for(&club, id, &["completed"], Duration::from_secs(30)).await;
    assert!(
        created.elapsed() >= GRACE,
        "answered before the grace ran out"
    );
    assert_eq!(
        done["request_counts"],
        json!({"total": 3, "completed": 1, "failed": 2})
    );
    let mut lines = file_lines(&club, &done["output_file_id"]).await;
    lines.extend(file_lines(&club, &done["error_file_id"]).await);
    let answer = |id: &str| {
        let line = lines.iter().find(|l| l["custom_id"] == id).unwrap();
        (
            line["response"]["status_code"].as_u64().unwrap(),
            line["response"]["body"]["error"]["code"].clone(),
        )
    };
    assert_eq!(answer("unknown"), (404, json!("model_not_found")));
    assert_eq!(answer("chat-only"), (400, json!("unsupported_endpoint")));
    assert_eq!(answer("served"), (200, Value::Null));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_batches_and_idempotent_creation() {
    let club = club_on(TestDatabase::sqlite(), Echo::new()).await;
    let jsonl: Vec<String> = (0..5)
        .map(|i| {
            json!({"custom_id": format!("e{i}"), "method": "POST", "url": "/v1/embeddings",
                   "body": {"model": "echo-embed", "input": format!("text {i}")}})
            .to_string()
        })
        .collect();
    let first = upload(&club, &club.key, jsonl.join("\n"), Some("upload-1")).await;
    let first: Value = first.json().await.unwrap();
    let again = upload(&club, &club.key, jsonl.join("\n"), Some("upload-1")).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(
        first["id"], again["id"],
        "the same upload is not stored twice"
    );
    let other = upload(&club, &club.key, "other".into(), Some("upload-1")).await;
    assert_eq!(other.status(), 409);

    let body = json!({"input_file_id": first["id"], "endpoint": "/v1/embeddings", "completion_window": "24h"});
    let batch: Value = post(&club, "/v1/batches", body.clone(), Some("batch-1"))
        .await
        .json()
        .await
        .unwrap();
    let same: Value = post(&club, "/v1/batches", body, Some("batch-1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(batch["id"], same["id"]);
    let done = wait_for(
        &club,
        batch["id"].as_str().unwrap(),
        &["completed"],
        Duration::from_secs(20),
    )
    .await;
    let output = file_lines(&club, &done["output_file_id"]).await;
    assert_eq!(output.len(), 5);
    let vector = &output[0]["response"]["body"]["data"][0]["embedding"];
    assert_eq!(vector.as_array().unwrap().len(), Echo::EMBEDDING_DIMENSIONS);
    assert!(done["error_file_id"].is_null());

    // Listing by purpose: the two newest files are outputs, yet a page of one upload is found.
    let body = json!({"input_file_id": first["id"], "endpoint": "/v1/embeddings", "completion_window": "24h"});
    let second: Value = post(&club, "/v1/batches", body, None)
        .await
        .json()
        .await
        .unwrap();
    wait_for(
        &club,
        second["id"].as_str().unwrap(),
        &["completed"],
        Duration::from_secs(20),
    )
    .await;
    let uploads: Value = get(&club, "/v1/files?purpose=batch&limit=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(uploads["data"].as_array().unwrap().len(), 1, "{uploads}");
    assert_eq!(uploads["data"][0]["id"], first["id"]);
    assert_eq!(uploads["has_more"], false);
    let outputs: Value = get(&club, "/v1/files?purpose=batch_output")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(outputs["data"].as_array().unwrap().len(), 2);
    assert_eq!(outputs["data"][1]["id"], done["output_file_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_new_lines_within_a_second() {
    // Slow answers, so that the batch is still running when it is cancelled.
    let club = club_on(
        TestDatabase::sqlite(),
        Echo::new().pace(Duration::from_millis(40)),
    )
    .await;
    let jsonl: Vec<String> = (0..200)
        .map(|i| chat_line(&format!("c{i}"), "one two three four five"))
        .collect();
    let file: Value = upload(&club, &club.key, jsonl.join("\n"), None)
        .await
        .json()
        .await
        .unwrap();
    let batch: Value = post(
        &club,
        "/v1/batches",
        json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let id = batch["id"].as_str().unwrap().to_owned();
    wait_for(&club, &id, &["in_progress"], Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let asked = Instant::now();
    let cancelling: Value = post(&club, &format!("/v1/batches/{id}/cancel"), json!({}), None)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        matches!(
            cancelling["status"].as_str(),
            Some("cancelling" | "cancelled")
        ),
        "{cancelling}"
    );
    let cancelled = wait_for(&club, &id, &["cancelled"], Duration::from_secs(5)).await;
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    let counts = &cancelled["request_counts"];
    assert_eq!(counts["total"], 200);
    let completed = counts["completed"].as_u64().unwrap();
    assert!(completed < 200, "{cancelled}");
    let errors = file_lines(&club, &cancelled["error_file_id"]).await;
    assert!(
        errors
            .iter()
            .any(|l| l["error"]["code"] == "batch_cancelled")
    );
    // No line runs after it: the count stays.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later: Value = get(&club, &format!("/v1/batches/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(later["request_counts"], cancelled["request_counts"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batch_input_is_refused_clearly() {
    let club = club_on(TestDatabase::sqlite(), Echo::new()).await;
    let file: Value = upload(&club, &club.key, chat_line("a", "x"), None)
        .await
        .json()
        .await
        .unwrap();
    let cases = [
        (
            json!({"input_file_id": file["id"], "endpoint": "/v1/audio/speech", "completion_window": "24h"}),
            400,
            "endpoint",
        ),
        (
            json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "1h"}),
            400,
            "completion_window",
        ),
        (
            json!({"input_file_id": "file-nope", "endpoint": "/v1/chat/completions", "completion_window": "24h"}),
            404,
            "input_file_id",
        ),
    ];
    for (body, status, param) in cases {
        let response = post(&club, "/v1/batches", body.clone(), None).await;
        assert_eq!(response.status(), status, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["param"], param, "{error}");
    }
    // Another member's file is not found either.
    let bob = club.add_member("bob").await;
    let theirs = upload(&club, &bob, chat_line("b", "y"), None)
        .await
        .json::<Value>()
        .await
        .unwrap();
    let response = post(
        &club,
        "/v1/batches",
        json!({"input_file_id": theirs["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}),
        None,
    )
    .await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        get(
            &club,
            &format!("/v1/files/{}", theirs["id"].as_str().unwrap())
        )
        .await
        .status(),
        404
    );
    // A wrong purpose, and a file that is not text.
    let form = reqwest::multipart::Form::new()
        .text("purpose", "fine-tune")
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"{}".to_vec()).file_name("x.jsonl"),
        );
    let response = http()
        .post(format!("{}/v1/files", club.url))
        .bearer_auth(&club.key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = upload(
        &club,
        &club.key,
        String::from_utf8_lossy(&[0xff]).into_owned(),
        None,
    )
    .await;
    assert_eq!(response.status(), 200, "a replacement character is text");
    // Deleting a file.
    let deleted: Value = http()
        .delete(format!(
            "{}/v1/files/{}",
            club.url,
            file["id"].as_str().unwrap()
        ))
        .bearer_auth(&club.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(deleted["deleted"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_file_is_413() {
    let club = TestClub::start_services_with(TestDatabase::sqlite(), Vec::new(), |builder| {
        builder.limits(inference_club_coordinator::Limits {
            max_file_bytes: 1024,
            ..inference_club_coordinator::Limits::default()
        })
    })
    .await;
    let big = chat_line("a", &"x".repeat(2000));
    let response = upload(&club, &club.key, big, None).await;
    assert_eq!(response.status(), 413);
}
