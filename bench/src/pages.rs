//! The web pages' server time with a full store: a SQLite store filled with 10,000 records
//! (every visibility, two members, a provider), a coordinator on 127.0.0.1, and each page
//! requested many times. The time is the server's own, from the `Server-Timing: app;dur=…`
//! header every page carries (routing, store reads and rendering; not the loopback hop).
//!
//! Wire it into `club-bench` with `mod pages;` and a subcommand that runs
//! `pages::measure(10_000, 50).await`.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use inference_club_coordinator::Coordinator;
use inference_club_coordinator::testing::store_of;
use serde_json::{Value, json};

use crate::BoxError;

/// The target: every page under this much server time (median and p95).
pub const TARGET_MS: f64 = 50.0;

/// One page's server times over the rounds, in milliseconds.
#[derive(Debug, Clone)]
pub struct PageTiming {
    /// The page (its route with an example path).
    pub page: String,
    /// The median.
    pub median_ms: f64,
    /// The 95th percentile.
    pub p95_ms: f64,
    /// The slowest.
    pub max_ms: f64,
}

/// A record as the store keeps it, as JSON: `i` decides its visibility, status and sizes.
fn record(i: usize, consumer: &str, at: chrono::DateTime<chrono::Utc>) -> Value {
    let visibility = match i % 10 {
        0 => "private",
        1 => "unlisted",
        _ => "public",
    };
    let model = if i.is_multiple_of(3) {
        "qwen3-8b"
    } else {
        "echo"
    };
    let prompt = format!(
        "Question {i}: explain, in a few paragraphs, how a coordinator routes requests to nodes \
         that members run on their own hardware, and what it records."
    );
    let answer = "A coordinator keeps the live links of the nodes and picks, for each request, \
                  a node that serves the model and has room. "
        .repeat(8);
    let ms = |n: i64| at + chrono::Duration::milliseconds(n);
    let failed = i.is_multiple_of(25);
    json!({
        "id": uuid::Uuid::now_v7().to_string(),
        "consumer": consumer,
        "model_requested": model,
        "model_served": model,
        "served_by": {"operator": "grace", "provider": "basement-rig", "service": "vllm"},
        "request": {"model": model, "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": prompt}
        ]},
        "response": {
            "content": if failed { Value::Null } else { Value::String(answer) },
            "reasoning": "Let me think about routing, queues and records first. ".repeat(4),
            "finish_reason": if failed { Value::Null } else { json!("stop") },
        },
        "usage": {"source": "reported", "counts": {"prompt_tokens": 42, "completion_tokens": 180, "total_tokens": 222}},
        "timing": {
            "received_at": at,
            "dispatched_at": ms(2),
            "first_token_at": ms(120 + (i % 50) as i64),
            "finished_at": ms(1800 + (i % 400) as i64),
        },
        "status": if failed { "failed" } else { "succeeded" },
        "failure": if failed { json!("the node went away") } else { Value::Null },
        "attempts": [{"served_by": {"operator": "grace", "provider": "basement-rig", "service": "vllm"}, "started_at": ms(2)}],
        "visibility": visibility,
    })
}

fn manifest() -> Value {
    json!({
        "schema_version": 1,
        "agent": {"name": "basement-rig"},
        "hosts": [{
            "id": "rig",
            "gpu": {"vendor": "nvidia", "model": "RTX 4090", "vram_gb": 24, "count": 2},
            "services": [{
                "name": "vllm", "engine": "vllm", "url": "http://127.0.0.1:8000",
                "models": [{"id": "qwen3-8b", "hf": "Qwen/Qwen3-8B", "context_length": 32768}, {"id": "echo"}]
            }]
        }]
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Fills a fresh SQLite store with `records` records, serves the coordinator on 127.0.0.1,
/// requests each page `rounds` times (after a warm-up) and prints a table of the server times.
/// Returns the timings; fails if a page does not answer 200.
pub async fn measure(records: usize, rounds: usize) -> Result<Vec<PageTiming>, BoxError> {
    let db = std::env::temp_dir().join(format!(
        "club-bench-pages-{}-{}.db",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    ));
    let coordinator = Coordinator::builder()
        .database(format!("sqlite:{}", db.display()))
        .build()
        .await?;
    let store = store_of(&coordinator);
    let ada = store.create_user("ada", None).await?;
    let grace = store.create_user("grace", None).await?;
    store
        .upsert_provider(grace.id, "basement-rig", &manifest())
        .await?;

    let filling = Instant::now();
    let start = chrono::Utc::now() - chrono::Duration::hours(24);
    let mut inserts = futures_util::stream::iter(0..records)
        .map(|i| {
            let store = store.clone();
            let consumer = if i.is_multiple_of(2) { "ada" } else { "grace" };
            let value = record(i, consumer, start + chrono::Duration::seconds(i as i64));
            async move {
                let record = serde_json::from_value(value)?;
                store.insert_record(&record).await?;
                Ok::<_, BoxError>(())
            }
        })
        .buffer_unordered(256);
    while let Some(done) = inserts.next().await {
        done?;
    }
    drop(inserts);
    println!(
        "pages: {records} records written in {:.1} s",
        filling.elapsed().as_secs_f64()
    );

    let (_, session) = store.create_session(ada.id).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn({
        let coordinator = coordinator.clone();
        let stop = stop.clone();
        async move { coordinator.serve(listener, stop.cancelled_owned()).await }
    });

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    // A public record for the request page.
    let feed: Value = http
        .get(format!("{url}/api/v1/requests/public?limit=1"))
        .send()
        .await?
        .json()
        .await?;
    let one = feed["data"][0]["id"]
        .as_str()
        .ok_or("the feed is empty")?
        .to_owned();
    let cookie = format!("club_session={session}");
    let pages: Vec<(String, bool)> = vec![
        ("/".into(), false),
        ("/?model=qwen3-8b".into(), false),
        (format!("/r/{one}"), false),
        ("/u/ada".into(), false),
        ("/providers".into(), false),
        ("/models/qwen3-8b".into(), false),
        ("/terms".into(), false),
        ("/playground".into(), true),
        ("/dashboard".into(), true),
        ("/dashboard/requests".into(), true),
        (
            "/dashboard/requests?visibility=private&status=succeeded".into(),
            true,
        ),
        ("/dashboard/keys".into(), true),
        ("/dashboard/nodes".into(), true),
        ("/dashboard/settings".into(), true),
    ];
    let mut results = Vec::new();
    for (path, signed_in) in &pages {
        let mut times = Vec::with_capacity(rounds);
        for round in 0..rounds + 3 {
            let mut request = http.get(format!("{url}{path}"));
            if *signed_in {
                request = request.header("cookie", &cookie);
            }
            let response = request.send().await?;
            if !response.status().is_success() {
                return Err(format!("{path} answered {}", response.status()).into());
            }
            let timing = response
                .headers()
                .get("server-timing")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("app;dur="))
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| format!("{path} has no Server-Timing"))?;
            response.bytes().await?;
            if round >= 3 {
                times.push(timing);
            }
        }
        times.sort_by(f64::total_cmp);
        results.push(PageTiming {
            page: path.clone(),
            median_ms: percentile(&times, 0.5),
            p95_ms: percentile(&times, 0.95),
            max_ms: times.last().copied().unwrap_or(0.0),
        });
    }
    stop.cancel();
    let _ = server.await;
    store.close().await;
    let _ = std::fs::remove_file(&db);

    println!(
        "\nServer time per page, {records} records, {rounds} rounds each (target: under {TARGET_MS} ms)\n"
    );
    println!(
        "| {:<58} | {:>9} | {:>9} | {:>9} |",
        "page", "median ms", "p95 ms", "max ms"
    );
    println!("|{:-<60}|{:->11}|{:->11}|{:->11}|", "", "", "", "");
    for r in &results {
        println!(
            "| {:<58} | {:>9.2} | {:>9.2} | {:>9.2} |",
            r.page, r.median_ms, r.p95_ms, r.max_ms
        );
    }
    let over: Vec<&PageTiming> = results.iter().filter(|r| r.p95_ms >= TARGET_MS).collect();
    if over.is_empty() {
        println!("\nevery page is under {TARGET_MS} ms at p95");
    } else {
        for r in over {
            println!("OVER TARGET: {} p95 {:.2} ms", r.page, r.p95_ms);
        }
    }
    Ok(results)
}
