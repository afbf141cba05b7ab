//! Scenario 7 (issue 20): interactive chat latency while a batch runs.
//!
//! One engine, one coordinator (SQLite), one node whose service runs at most
//! [`MAX_CONCURRENT`] requests at once; every answer takes about 64 ms (32 chunks, one every
//! 2 ms). Interactive consumers ask for whole answers at concurrency [`INTERACTIVE`]: first
//! alone, then while a batch of [`LINES`] lines of the same model runs through the Files and
//! Batch APIs. The p50 of the second run against the first is the figure; the batch is checked
//! to complete with every line answered. Every interactive answer must be a 200 with the right
//! content, or the run is not a result.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::BoxError;
use crate::cluster::Cluster;
use crate::load::{self, Load, Outcome, Target};

/// The model: 32 chunks, one every 2 ms.
pub const MODEL: &str = "bench-c32-p2";
/// The node's capacity.
pub const MAX_CONCURRENT: u32 = 8;
/// Interactive requests in flight.
pub const INTERACTIVE: usize = 2;
/// The batch's lines.
pub const LINES: usize = 1_000;

/// What the scenario measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BatchOutcome {
    /// Interactive answers with no batch running.
    pub alone: Outcome,
    /// Interactive answers while the batch ran.
    pub during: Outcome,
    /// The batch's lines answered (2xx) and failed.
    pub completed: u64,
    /// The batch's failed lines.
    pub failed: u64,
    /// Seconds from creating the batch to its completion.
    pub batch_seconds: f64,
    /// Lines still unanswered when the second interactive run ended (it must have overlapped
    /// the batch).
    pub open_at_end: u64,
}

impl BatchOutcome {
    /// The p50 latency while the batch ran, against alone.
    pub fn ratio(&self) -> f64 {
        self.during.latency.p50_us as f64 / self.alone.latency.p50_us.max(1) as f64
    }
}

/// Runs the scenario for `seconds` per interactive run.
pub async fn measure(seconds: f64) -> Result<BatchOutcome, BoxError> {
    let cluster = Cluster::start_with("batch", None, Some(MAX_CONCURRENT), &[MODEL]).await?;
    let outcome = run(&cluster, seconds).await;
    cluster.stop().await;
    outcome
}

async fn run(cluster: &Cluster, seconds: f64) -> Result<BatchOutcome, BoxError> {
    let url = cluster.coordinator.url.clone();
    let shape = crate::engine::Shape::parse(MODEL).ok_or("unknown model")?;
    let target = Target {
        base_url: url.clone(),
        key: Some(cluster.key.clone()),
        model: MODEL.to_owned(),
        stream: false,
        expected_chunks: shape.chunks,
        expected_content: shape.content(),
    };
    let client = load::client(INTERACTIVE)?;
    let interactive = Load {
        concurrency: INTERACTIVE,
        duration: Duration::from_secs_f64(seconds),
        max_requests: u64::MAX,
        strict: false,
    };
    // Warm up, then alone.
    load::run(
        &client,
        &target,
        Load {
            duration: Duration::from_millis(500),
            ..interactive
        },
    )
    .await;
    let alone = load::run(&client, &target, interactive).await;

    let lines: Vec<String> = (0..LINES)
        .map(|i| {
            json!({"custom_id": format!("line-{i}"), "method": "POST", "url": "/v1/chat/completions",
                   "body": {"model": MODEL, "messages": [{"role": "user", "content": "Say something."}]}})
            .to_string()
        })
        .collect();
    let form = reqwest::multipart::Form::new()
        .text("purpose", "batch")
        .part(
            "file",
            reqwest::multipart::Part::bytes(lines.join("\n").into_bytes()).file_name("bench.jsonl"),
        );
    let file: Value = client
        .post(format!("{url}/v1/files"))
        .bearer_auth(&cluster.key)
        .multipart(form)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let created = Instant::now();
    let batch: Value = client
        .post(format!("{url}/v1/batches"))
        .bearer_auth(&cluster.key)
        .json(&json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = batch["id"].as_str().ok_or("no batch id")?.to_owned();
    // Let the batch fill its share of the node first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = load::run(&client, &target, interactive).await;
    let status = |batch: &Value| batch["status"].as_str().unwrap_or_default().to_owned();
    let get = || async {
        client
            .get(format!("{url}/v1/batches/{id}"))
            .bearer_auth(&cluster.key)
            .send()
            .await?
            .json::<Value>()
            .await
    };
    let now = get().await?;
    let count = |batch: &Value, field: &str| batch["request_counts"][field].as_u64().unwrap_or(0);
    let open_at_end = count(&now, "total") - count(&now, "completed") - count(&now, "failed");
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let batch = get().await?;
        if matches!(
            status(&batch).as_str(),
            "completed" | "failed" | "cancelled" | "expired"
        ) {
            break batch;
        }
        if Instant::now() > deadline {
            return Err(format!("the batch did not finish within 120 s: {batch}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    Ok(BatchOutcome {
        alone,
        during,
        completed: count(&done, "completed"),
        failed: count(&done, "failed"),
        batch_seconds: created.elapsed().as_secs_f64(),
        open_at_end,
    })
}

/// Prints the scenario's table; false when it is not a result (an interactive answer that was
/// not a correct 200, or a batch line that failed).
pub fn print(outcome: &BatchOutcome) -> bool {
    let ms = |us: u64| us as f64 / 1000.0;
    println!("## Scenario 7: interactive chat while a {LINES}-line batch runs");
    println!(
        "(one node, max_concurrent {MAX_CONCURRENT}; whole answers of {MODEL}, about 64 ms each; interactive concurrency {INTERACTIVE})"
    );
    println!();
    println!("| interactive | req/s | p50 ms | p99 ms | errors |");
    println!("|---|---|---|---|---|");
    for (name, run) in [
        ("alone", &outcome.alone),
        ("while the batch runs", &outcome.during),
    ] {
        println!(
            "| {name} | {:.0} | {:.1} | {:.1} | {} |",
            run.requests_per_s,
            ms(run.latency.p50_us),
            ms(run.latency.p99_us),
            run.errors
        );
    }
    println!();
    println!(
        "p50 while the batch runs: {:.2}× alone (target < 1.20×). Batch: {} lines answered, {} failed, {:.1} s from creation to completion; {} lines were still open when the interactive run ended.",
        outcome.ratio(),
        outcome.completed,
        outcome.failed,
        outcome.batch_seconds,
        outcome.open_at_end
    );
    let valid = outcome.alone.errors == 0
        && outcome.during.errors == 0
        && outcome.failed == 0
        && outcome.completed == LINES as u64
        && outcome.open_at_end > 0;
    if !valid {
        println!(
            "NOT A RESULT: an interactive answer or a batch line failed, or the batch did not overlap the run"
        );
        if let Some(error) = outcome
            .alone
            .first_error
            .as_ref()
            .or(outcome.during.first_error.as_ref())
        {
            println!("first error: {error}");
        }
    }
    valid
}
