//! `club batch`: submit → status --wait → results, list and cancel, against a real coordinator
//! and node (Echo).

use std::sync::Arc;

use inference_club_coordinator::testing::{TestClub, TestService};
use inference_club_core::provider::Provider;
use inference_club_provider::backends::Echo;
use serde_json::{Value, json};

use crate::{config_dir, run_club};

fn chat_line(id: &str, text: &str) -> String {
    json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions",
           "body": {"model": "echo", "messages": [{"role": "user", "content": text}]}})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_follow_and_fetch_a_batch_as_a_user_would() {
    let echo: Arc<dyn Provider> = Arc::new(Echo::new().models(["echo"]));
    let club = TestClub::start_services(vec![TestService::new("echo", echo)]).await;
    let config = config_dir("batch");
    std::fs::create_dir_all(&config).unwrap();
    let (url, key) = (club.url.as_str(), club.key.as_str());
    let run = |args: &[&str]| {
        let mut all = vec!["--url", url, "--api-key", key];
        all.extend_from_slice(args);
        let all: Vec<String> = all.into_iter().map(str::to_owned).collect();
        let config = config.clone();
        async move {
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            run_club(&config, &all, "").await
        }
    };

    let mut lines: Vec<String> = (0..4)
        .map(|i| chat_line(&format!("q{i}"), &format!("question {i}")))
        .collect();
    lines.push("not a request".into());
    let input = config.join("questions.jsonl");
    std::fs::write(&input, lines.join("\n")).unwrap();
    let input = input.to_str().unwrap();

    // submit: the id alone on stdout, what happened on stderr.
    let submitted = run(&[
        "batch",
        "submit",
        input,
        "--endpoint",
        "/v1/chat/completions",
        "--metadata",
        "run=cli",
        "--visibility",
        "private",
    ])
    .await;
    assert!(submitted.ok, "{}", submitted.stderr);
    let id = submitted.stdout.trim().to_owned();
    assert!(id.starts_with("batch_"), "{}", submitted.stdout);
    assert!(
        submitted
            .stderr
            .contains("uploaded questions.jsonl as file-"),
        "{}",
        submitted.stderr
    );
    assert!(submitted.stderr.contains("5 lines on /v1/chat/completions"));

    // status --wait, not on a terminal: a plain line per change, then the batch as it ended.
    let status = run(&["batch", "status", &id, "--wait"]).await;
    assert!(status.ok, "{}", status.stderr);
    assert!(!status.stdout.contains('\r'), "{}", status.stdout);
    assert!(
        status
            .stdout
            .contains(&format!("{id} completed 5/5 answered (1 failed)")),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("status    completed"),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("metadata  run=cli"),
        "{}",
        status.stdout
    );
    let shown = run(&["--json", "batch", "status", &id]).await.json();
    assert_eq!(shown["status"], "completed");
    assert_eq!(
        shown["request_counts"],
        json!({"total": 5, "completed": 4, "failed": 1})
    );
    assert_eq!(shown["visibility"], "private");

    // results: the output file's lines on stdout, or into a file; --errors the error file.
    let results = run(&["batch", "results", &id]).await;
    assert!(results.ok, "{}", results.stderr);
    let answers: Vec<Value> = results
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 4);
    let q2 = answers.iter().find(|a| a["custom_id"] == "q2").unwrap();
    assert_eq!(
        q2["response"]["body"]["choices"][0]["message"]["content"],
        "echo: question 2"
    );
    assert!(
        results.stderr.contains("4 output lines"),
        "{}",
        results.stderr
    );
    assert!(results.stderr.contains("--errors"), "{}", results.stderr);
    let out = config.join("errors.jsonl");
    let errors = run(&[
        "batch",
        "results",
        &id,
        "--errors",
        "-o",
        out.to_str().unwrap(),
    ])
    .await;
    assert!(errors.ok, "{}", errors.stderr);
    assert!(errors.stdout.is_empty());
    let written = std::fs::read_to_string(&out).unwrap();
    let failed: Value = serde_json::from_str(written.trim()).unwrap();
    assert_eq!(failed["error"]["code"], "invalid_json");
    assert_eq!(failed["error"]["line"], 5);

    // list, and cancel of a batch that has ended (it stays as it is).
    let list = run(&["batch", "list"]).await;
    assert!(list.ok, "{}", list.stderr);
    assert!(list.stdout.starts_with("ID"), "{}", list.stdout);
    assert!(list.stdout.contains(&id) && list.stdout.contains("5/5"));
    let listed = run(&["--json", "batch", "list"]).await.json();
    assert_eq!(listed["data"][0]["id"], id.as_str());
    let cancel = run(&["batch", "cancel", &id]).await;
    assert!(cancel.ok, "{}", cancel.stderr);
    assert!(cancel.stdout.contains(&format!("{id} completed")));

    // submit --wait --json: the batch as it ended; bad input is refused clearly.
    let waited = run(&[
        "--json",
        "batch",
        "submit",
        input,
        "--endpoint",
        "chat/completions",
        "--wait",
    ])
    .await;
    assert!(waited.ok, "{}", waited.stderr);
    assert_eq!(waited.json()["status"], "completed");
    assert!(
        waited.stderr.contains("completed 5/5 answered"),
        "{}",
        waited.stderr
    );
    let bad = run(&["batch", "submit", input, "--endpoint", "/v1/audio/speech"]).await;
    assert!(!bad.ok);
    assert!(bad.stderr.contains("a batch runs on"), "{}", bad.stderr);
    let unknown = run(&["batch", "status", "batch_nope"]).await;
    assert!(!unknown.ok);
    assert!(
        unknown.stderr.contains("batch_not_found"),
        "{}",
        unknown.stderr
    );
    let _ = std::fs::remove_dir_all(&config);
}
