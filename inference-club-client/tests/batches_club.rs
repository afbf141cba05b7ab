//! Files and batches through the client against a real coordinator in this process and a real
//! node (the Echo engine): upload, a batch run to its end, its results as typed lines,
//! `Idempotency-Key`, listings, cancellation, and the coordinator's refusals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use inference_club_client::{
    BatchEndpoint, BatchStatus, ChatCompletion, Client, CreateBatch, RetryPolicy, Visibility,
};
use inference_club_coordinator::testing::{TestClub, TestService};
use inference_club_core::provider::Provider;
use inference_club_provider::backends::Echo;
use serde_json::json;

async fn club(echo: Echo) -> (TestClub, Client) {
    let echo: Arc<dyn Provider> = Arc::new(echo.models(["echo", "echo-embed"]));
    let club = TestClub::start_services(vec![
        TestService::new("echo", echo.clone()),
        TestService::new("echo-embed", echo).features(["embeddings"]),
    ])
    .await;
    let client = client_of(&club, &club.key);
    (club, client)
}

fn client_of(club: &TestClub, key: &str) -> Client {
    Client::builder(format!("{}/v1", club.url))
        .api_key(key)
        .retry_policy(
            RetryPolicy::attempts(3)
                .with_backoff(Duration::from_millis(20), Duration::from_millis(100)),
        )
        .build()
        .unwrap()
}

fn chat_line(id: &str, text: &str) -> String {
    json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions",
           "body": {"model": "echo", "messages": [{"role": "user", "content": text}]}})
    .to_string()
}

fn chat_file(lines: usize) -> String {
    (0..lines)
        .map(|i| chat_line(&format!("q{i}"), &format!("hello {i}")))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_from_upload_to_typed_results() {
    let (club, client) = club(Echo::new()).await;
    let mut lines: Vec<String> = (0..5)
        .map(|i| chat_line(&format!("q{i}"), &format!("hello {i}")))
        .collect();
    lines.insert(2, "{not json".into());
    let jsonl = lines.join("\n");

    // The upload, and the file calls.
    let file = client
        .upload_file("questions.jsonl", jsonl.clone().into_bytes())
        .await
        .unwrap();
    assert!(file.id.starts_with("file-"), "{}", file.id);
    assert_eq!(file.purpose, "batch");
    assert_eq!(file.filename, "questions.jsonl");
    assert_eq!(file.bytes, jsonl.len() as u64);
    assert_eq!(client.file(&file.id).await.unwrap(), file);
    assert_eq!(
        client.file_content(&file.id).await.unwrap().as_ref(),
        jsonl.as_bytes()
    );
    let listed: Vec<_> = client.files().collect().await;
    assert!(listed.iter().any(|f| f.as_ref().unwrap().id == file.id));

    // The batch: created once for one Idempotency-Key, replayed after.
    let request = CreateBatch::new(file.id.clone(), BatchEndpoint::ChatCompletions)
        .metadata("run", "client-test")
        .visibility(Visibility::Unlisted)
        .idempotency_key("client-batch-1");
    let batch = client.create_batch(request.clone()).await.unwrap();
    assert!(batch.id.starts_with("batch_"), "{}", batch.id);
    assert_eq!(batch.endpoint, BatchEndpoint::ChatCompletions);
    assert_eq!(batch.input_file_id, file.id);
    assert_eq!(batch.completion_window, "24h");
    assert_eq!(batch.metadata.as_ref().unwrap()["run"], "client-test");
    assert_eq!(batch.visibility, Some(Visibility::Unlisted));
    assert_eq!(batch.request_counts.total, 6);
    let again = client.create_batch(request).await.unwrap();
    assert_eq!(
        again.id, batch.id,
        "the same key and request: the same batch"
    );
    // The same key with another request: refused, and not retried.
    let asked = Instant::now();
    let reused = client
        .create_batch(
            CreateBatch::new(file.id.clone(), BatchEndpoint::ChatCompletions)
                .idempotency_key("client-batch-1"),
        )
        .await
        .unwrap_err();
    assert_eq!(reused.status(), Some(409));
    assert_eq!(reused.code(), Some("idempotency_key_reused"));
    assert!(!reused.is_retryable());
    assert!(asked.elapsed() < Duration::from_secs(2));

    // Followed to its end: each state once, counts that only grow, the last one terminal.
    let mut watch = client.watch_batch(&batch.id, Duration::from_millis(50));
    let mut states = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Some(state) = watch.next().await {
        states.push(state.unwrap());
        assert!(
            Instant::now() < deadline,
            "the batch did not end: {states:?}"
        );
    }
    let done = states.last().unwrap().clone();
    assert_eq!(done.status, BatchStatus::Completed, "{done:?}");
    assert!(done.status.is_terminal());
    assert!(
        states
            .windows(2)
            .all(|w| w[0].request_counts.done() <= w[1].request_counts.done()),
        "{states:?}"
    );
    assert_eq!(done.request_counts.total, 6);
    assert_eq!(done.request_counts.completed, 5);
    assert_eq!(done.request_counts.failed, 1);
    assert!(done.completed_at.is_some() && done.in_progress_at.is_some());

    // Its results, typed.
    let results = client.batch_results(&batch.id).await.unwrap();
    assert_eq!(results.batch.id, batch.id);
    assert_eq!(results.output.len(), 5);
    for (i, line) in results.output.iter().enumerate() {
        assert!(line.is_success(), "{line:?}");
        assert_eq!(line.failure(), None);
        let completion: ChatCompletion = line.body_as().unwrap().unwrap();
        let n = line.custom_id.as_deref().unwrap().trim_start_matches('q');
        assert_eq!(
            completion.text().as_deref(),
            Some(&*format!("echo: hello {n}"))
        );
        assert!(i == 0 || results.output[i - 1].id != line.id);
    }
    assert_eq!(results.errors.len(), 1);
    let malformed = &results.errors[0];
    assert!(!malformed.is_success());
    let error = malformed.error.as_ref().unwrap();
    assert_eq!(error.code.as_deref(), Some("invalid_json"));
    assert_eq!(error.line, Some(3));
    assert!(malformed.failure().is_some());

    // Each line is an ordinary record of mine, with the batch's visibility.
    let record_id = results.output[0].record_id().unwrap();
    let record = client.record(record_id).await.unwrap();
    assert_eq!(record.visibility, Visibility::Unlisted);

    // The listing has it; `wait_for_batch` on an ended batch answers at once.
    let mine: Vec<_> = client.batches().collect().await;
    assert!(mine.iter().any(|b| b.as_ref().unwrap().id == batch.id));
    let waited = client
        .wait_for_batch(&batch.id, Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(waited.status, BatchStatus::Completed);

    // The output file is a file of mine; deleted, it is gone.
    let output_id = done.output_file_id.clone().unwrap();
    assert_eq!(client.file(&output_id).await.unwrap().id, output_id);
    client.delete_file(&file.id).await.unwrap();
    let gone = client.file(&file.id).await.unwrap_err();
    assert_eq!(gone.status(), Some(404));
    drop(club);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_batches_and_listings_page_after_page() {
    let (_club, client) = club(Echo::new()).await;
    let embed = (0..3)
        .map(|i| {
            json!({"custom_id": format!("e{i}"), "method": "POST", "url": "/v1/embeddings",
                   "body": {"model": "echo-embed", "input": format!("text {i}")}})
            .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n");
    let file = client
        .upload_file("embed.jsonl", embed.into_bytes())
        .await
        .unwrap();
    // More batches than a page holds, so the listing fetches a second page.
    let mut made = Vec::new();
    for _ in 0..52 {
        let batch = client
            .create_batch(CreateBatch::new(file.id.clone(), BatchEndpoint::Embeddings))
            .await
            .unwrap();
        made.push(batch.id);
    }
    let listed: Vec<String> = client
        .batches()
        .map(|b| b.unwrap().id)
        .collect::<Vec<_>>()
        .await;
    assert_eq!(listed.len(), 52, "every batch once");
    made.reverse();
    assert_eq!(listed, made, "newest first");
    let done = client
        .wait_for_batch(&made[0], Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(done.status, BatchStatus::Completed);
    let results = client.batch_results(&made[0]).await.unwrap();
    let vector = &results.output[0].response.as_ref().unwrap().body["data"][0]["embedding"];
    assert_eq!(vector.as_array().unwrap().len(), Echo::EMBEDDING_DIMENSIONS);
    assert!(results.errors.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_batch_keeps_what_was_answered() {
    let (_club, client) = club(Echo::new().pace(Duration::from_millis(40))).await;
    let file = client
        .upload_file("slow.jsonl", chat_file(150).into_bytes())
        .await
        .unwrap();
    let batch = client
        .create_batch(CreateBatch::new(file.id, BatchEndpoint::ChatCompletions))
        .await
        .unwrap();
    let mut watch = client.watch_batch(&batch.id, Duration::from_millis(50));
    while let Some(state) = watch.next().await {
        let state = state.unwrap();
        if state.request_counts.completed > 0 {
            break;
        }
        assert!(!state.status.is_terminal(), "{state:?}");
    }
    let cancelling = client.cancel_batch(&batch.id).await.unwrap();
    assert!(
        matches!(
            cancelling.status,
            BatchStatus::Cancelling | BatchStatus::Cancelled
        ),
        "{cancelling:?}"
    );
    let asked = Instant::now();
    let cancelled = client
        .wait_for_batch(&batch.id, Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(cancelled.status, BatchStatus::Cancelled);
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    assert!(cancelled.request_counts.completed < 150);
    let results = client.batch_results(&batch.id).await.unwrap();
    assert_eq!(
        results.output.len() as u64,
        cancelled.request_counts.completed
    );
    assert!(
        results
            .errors
            .iter()
            .any(|l| l.error.as_ref().and_then(|e| e.code.as_deref()) == Some("batch_cancelled"))
    );
    // Cancelling an ended batch answers it as it is.
    let again = client.cancel_batch(&batch.id).await.unwrap();
    assert_eq!(again.status, BatchStatus::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_refuses_what_is_not_yours_or_not_a_batch() {
    let (club, client) = club(Echo::new()).await;
    let file = client
        .upload_file("one.jsonl", chat_line("a", "x").into_bytes())
        .await
        .unwrap();

    // Another member's file is no file of mine: 404 everywhere.
    let bob = client_of(&club, &club.add_member("bob").await);
    let theirs = bob
        .upload_file("bob.jsonl", chat_line("b", "y").into_bytes())
        .await
        .unwrap();
    for error in [
        client.file(&theirs.id).await.unwrap_err(),
        client.file_content(&theirs.id).await.unwrap_err(),
        client.delete_file(&theirs.id).await.unwrap_err(),
        client
            .create_batch(CreateBatch::new(
                theirs.id.clone(),
                BatchEndpoint::ChatCompletions,
            ))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(error.status(), Some(404), "{error}");
        assert_eq!(error.code(), Some("file_not_found"), "{error}");
    }
    assert!(bob.file(&theirs.id).await.is_ok(), "still Bob's");

    // An unknown file, an unknown batch.
    let unknown = client
        .create_batch(CreateBatch::new("file-nope", BatchEndpoint::Embeddings))
        .await
        .unwrap_err();
    assert_eq!(unknown.status(), Some(404));
    assert_eq!(
        unknown.api_error().unwrap().param.as_deref(),
        Some("input_file_id")
    );
    for error in [
        client.batch("batch_nope").await.unwrap_err(),
        client.cancel_batch("batch_nope").await.unwrap_err(),
        client.batch_results("batch_nope").await.unwrap_err(),
    ] {
        assert_eq!(error.status(), Some(404), "{error}");
        assert_eq!(error.code(), Some("batch_not_found"), "{error}");
    }

    // An endpoint batches do not run on, and too much metadata: 400, naming the field.
    let bad_endpoint = client
        .create_batch(CreateBatch::new(
            file.id.clone(),
            BatchEndpoint::Other("/v1/audio/speech".into()),
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_endpoint.status(), Some(400));
    assert_eq!(
        bad_endpoint.api_error().unwrap().param.as_deref(),
        Some("endpoint")
    );
    assert!(!bad_endpoint.is_retryable());
    let mut crowded = CreateBatch::new(file.id.clone(), BatchEndpoint::ChatCompletions);
    for i in 0..17 {
        crowded = crowded.metadata(format!("k{i}"), "v");
    }
    let crowded = client.create_batch(crowded).await.unwrap_err();
    assert_eq!(crowded.status(), Some(400));
    assert_eq!(
        crowded.api_error().unwrap().param.as_deref(),
        Some("metadata")
    );

    // No key: 401.
    let anonymous = Client::builder(&club.url).build().unwrap();
    let error = anonymous.file(&file.id).await.unwrap_err();
    assert_eq!(error.status(), Some(401));
    let error: Vec<_> = anonymous.batches().collect().await;
    assert_eq!(error.len(), 1);
    assert_eq!(error[0].as_ref().unwrap_err().status(), Some(401));
}
