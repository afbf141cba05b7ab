//! The batch suite: OpenAI's Files and Batch APIs on real processes (the built
//! `club-coordinator` and `club-provider`), fake engines slow enough that a batch is still
//! running when something dies, and one death per test:
//!
//! - `sdk`: the official OpenAI Python SDK runs a 1,000-line batch while one of the two nodes
//!   serving its model is SIGKILLed half-way;
//! - `restarts`: the coordinator SIGKILLed mid-batch on SQLite and started again on the same
//!   database;
//! - `cluster`: one replica of a cluster on PostgreSQL and NATS SIGKILLed mid-batch; the others
//!   take its lines over once their leases run out.
//!
//! What each writes down: the batch completes; its output file answers every line of the input,
//! each `custom_id` exactly once, in OpenAI's output format; and no line is answered twice —
//! each output line names a succeeded record of its own, linked to the batch, and the only
//! other succeeded records of the batch are answers that died with a killed coordinator before
//! their line could be written (finished before the kill, at most as many as it ran at once).
//! Every other attempt recorded is `failed`, with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

mod cluster;
mod restarts;
mod sdk;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use inference_club_coordinator::testing::{RecordQuery, Store};
use inference_club_core::record::{InferenceRecord, Status};
use serde_json::{Value, json};
use support::{ANSWER, MODEL, Script, loud};

/// How many lines a batch runs at once on one coordinator (the default).
const IN_FLIGHT: usize = 16;

/// The fake engines' answer: [`ANSWER`] in four pieces, `pace` before each.
fn slow_answer(pace: Duration) -> Script {
    Script::answer(&["Hello", ", ", "world", "!"], pace)
}

/// The custom ids of a batch of `n` lines.
fn custom_ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("line-{i:04}")).collect()
}

/// A JSONL file of `n` chat requests for [`MODEL`].
fn input_file(n: usize) -> String {
    custom_ids(n)
        .iter()
        .enumerate()
        .map(|(i, id)| {
            json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions",
                   "body": {"model": MODEL, "messages": [{"role": "user", "content": format!("request {i}")}]}})
            .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The consumer's side of the Files and Batch APIs at one base URL.
struct Batches<'a> {
    http: &'a reqwest::Client,
    base: String,
    key: &'a str,
}

impl<'a> Batches<'a> {
    fn new(http: &'a reqwest::Client, base: &str, key: &'a str) -> Self {
        Self {
            http,
            base: base.to_owned(),
            key,
        }
    }

    /// `POST /v1/files` of `jsonl` (purpose `batch`): the file object.
    async fn upload(&self, jsonl: &str) -> Value {
        let boundary = format!("club-{}", uuid::Uuid::now_v7().simple());
        let body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"input.jsonl\"\r\n\
             Content-Type: application/jsonl\r\n\r\n{jsonl}\r\n--{boundary}--\r\n"
        );
        let response = self
            .http
            .post(format!("{}/v1/files", self.base))
            .bearer_auth(self.key)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// `POST /v1/batches` over `file` for chat completions: the batch object.
    async fn create(&self, file: &Value) -> Value {
        let response = self
            .http
            .post(format!("{}/v1/batches", self.base))
            .bearer_auth(self.key)
            .json(
                &json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                          "completion_window": "24h"}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// `GET /v1/batches/{id}`, or `None` while nobody answers (a coordinator being killed).
    async fn get(&self, id: &str) -> Option<Value> {
        let response = self
            .http
            .get(format!("{}/v1/batches/{id}", self.base))
            .bearer_auth(self.key)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    /// Waits until at least `answered` lines of batch `id` are answered; the batch then.
    async fn wait_answered(&self, id: &str, answered: u64, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(batch) = self.get(id).await {
                let counts = &batch["request_counts"];
                let done = counts["completed"].as_u64().unwrap_or(0)
                    + counts["failed"].as_u64().unwrap_or(0);
                if done >= answered {
                    return batch;
                }
                assert!(
                    Instant::now() < deadline,
                    "{answered} lines not answered within {within:?}: {batch}"
                );
            } else {
                assert!(Instant::now() < deadline, "no batch {id} within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until batch `id` has ended; the batch then.
    async fn wait_ended(&self, id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        let mut last = Value::Null;
        loop {
            if let Some(batch) = self.get(id).await {
                if matches!(
                    batch["status"].as_str(),
                    Some("completed" | "failed" | "expired" | "cancelled")
                ) {
                    return batch;
                }
                last = batch;
            }
            assert!(
                Instant::now() < deadline,
                "the batch did not end within {within:?}: {last}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The lines of file `id`.
    async fn file_lines(&self, id: &Value) -> Vec<Value> {
        let response = self
            .http
            .get(format!(
                "{}/v1/files/{}/content",
                self.base,
                id.as_str().unwrap()
            ))
            .bearer_auth(self.key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response
            .text()
            .await
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Every record of `ada` linked to batch `id`, as stored now.
async fn batch_records(store: &Store, id: &str) -> Vec<InferenceRecord> {
    let ada = store.user_by_handle("ada").await.unwrap().unwrap();
    let mut query = RecordQuery::made_by(ada.id);
    query.limit = inference_club_coordinator::testing::MAX_PAGE_SIZE;
    let mut all = Vec::new();
    loop {
        let page = store.list_records(&query).await.unwrap();
        all.extend(
            page.items
                .into_iter()
                .filter(|r| r.batch.as_deref() == Some(id)),
        );
        match page.next {
            Some(cursor) => query = query.after(Some(cursor)),
            None => return all,
        }
    }
}

/// Waits until lines of batch `id` are in flight (their records not final yet).
async fn wait_in_flight(store: &Store, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let records = batch_records(store, id).await;
        if records.iter().filter(|r| !r.status().is_final()).count() >= 2 {
            return;
        }
        assert!(Instant::now() < deadline, "no lines of the batch in flight");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until every record linked to batch `id` is final (a killed replica's are failed by
/// the others once they see it gone); returns them.
async fn final_batch_records(store: &Store, id: &str, within: Duration) -> Vec<InferenceRecord> {
    support::until_all_final("records of the batch", within, || batch_records(store, id)).await
}

/// What a batch's run left: its output lines and the records linked to it.
struct Outcome {
    /// The batch as it ended.
    batch: Value,
    /// Its output file's lines.
    output: Vec<Value>,
    /// Every record linked to it.
    records: Vec<InferenceRecord>,
}

impl Outcome {
    /// Waits for batch `id` to end at `api` and gathers what it left.
    async fn gather(api: &Batches<'_>, store: &Store, id: &str, within: Duration) -> Self {
        let batch = api.wait_ended(id, within).await;
        assert_eq!(batch["status"], "completed", "{batch}");
        let output = api.file_lines(&batch["output_file_id"]).await;
        let records = final_batch_records(store, id, Duration::from_secs(20)).await;
        Self {
            batch,
            output,
            records,
        }
    }

    /// The batch answered each of `ids` exactly once, in OpenAI's output format, each with a
    /// succeeded record of its own linked to the batch. A succeeded record no output line names
    /// is an answer that died with a coordinator killed at `killed` before its line could be
    /// written: it finished before then, and there are at most [`IN_FLIGHT`] of them; any
    /// other record failed. Returns how many answers were lost so, and the failed records.
    fn assert_answered_once(
        &self,
        ids: &[String],
        killed: Option<DateTime<Utc>>,
    ) -> (usize, Vec<&InferenceRecord>) {
        let total = ids.len() as u64;
        assert_eq!(
            self.batch["request_counts"],
            json!({"total": total, "completed": total, "failed": 0}),
            "{}",
            self.batch
        );
        assert!(self.batch["error_file_id"].is_null(), "{}", self.batch);
        assert_eq!(
            self.output.len(),
            ids.len(),
            "one output line per input line"
        );
        let mut answered: HashMap<&str, &str> = HashMap::new();
        for line in &self.output {
            let custom_id = line["custom_id"].as_str().unwrap();
            assert!(line["id"].as_str().unwrap().starts_with("batch_req_"));
            assert!(line["error"].is_null(), "{line}");
            let response = &line["response"];
            assert_eq!(response["status_code"], 200, "{line}");
            let body = &response["body"];
            assert_eq!(body["object"], "chat.completion", "{line}");
            assert_eq!(body["choices"][0]["message"]["content"], ANSWER, "{line}");
            let request_id = response["request_id"].as_str().unwrap();
            assert!(
                answered.insert(custom_id, request_id).is_none(),
                "{custom_id} answered twice"
            );
        }
        let expected: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let got: HashSet<&str> = answered.keys().copied().collect();
        assert_eq!(got, expected, "the custom ids map one to one to the input");
        let named: HashSet<String> = answered.values().map(|id| (*id).to_owned()).collect();
        assert_eq!(
            named.len(),
            ids.len(),
            "each line names a record of its own"
        );

        let succeeded: HashMap<String, &InferenceRecord> = self
            .records
            .iter()
            .filter(|r| r.status() == Status::Succeeded)
            .map(|r| (r.id.to_string(), r))
            .collect();
        for id in &named {
            assert!(
                succeeded.contains_key(id),
                "the record {id} an output line names is not a succeeded record of the batch"
            );
        }
        let lost: Vec<&InferenceRecord> = succeeded
            .iter()
            .filter(|(id, _)| !named.contains(*id))
            .map(|(_, r)| *r)
            .collect();
        match killed {
            None => assert!(
                lost.is_empty(),
                "{} lines were answered twice: {:?}",
                lost.len(),
                lost.iter().map(|r| r.id).collect::<Vec<_>>()
            ),
            Some(killed) => {
                for record in &lost {
                    let finished = record.timing.finished_at.unwrap();
                    assert!(
                        finished <= killed,
                        "record {} succeeded at {finished} (after the kill at {killed}) and \
                         no output line names it: a line answered twice",
                        record.id
                    );
                }
                assert!(lost.len() <= IN_FLIGHT, "{} answers lost", lost.len());
            }
        }
        let failed: Vec<&InferenceRecord> = self
            .records
            .iter()
            .filter(|r| r.status() != Status::Succeeded)
            .collect();
        for record in &failed {
            assert_eq!(record.status(), Status::Failed, "{record:?}");
            assert!(record.failure.is_some(), "{record:?}");
        }
        loud(&format!(
            "batch {}: {} lines, {} succeeded records, {} answers lost with a killed coordinator, {} failed attempts",
            self.batch["id"],
            ids.len(),
            succeeded.len(),
            lost.len(),
            failed.len()
        ));
        (lost.len(), failed)
    }
}
