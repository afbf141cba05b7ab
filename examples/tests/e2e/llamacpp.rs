//! A node in front of the CI llama.cpp server (`CLUB_TEST_LLAMACPP_URL`): chat, and
//! completions and embeddings (`CLUB_TEST_LLAMACPP_EMBED_MODEL`, the embedding model it serves).

use std::time::Duration;

use inference_club_core::endpoint::Endpoint;
use inference_club_core::record::{RecordId, Status, UsageSource};
use serde_json::json;

use crate::bounded;
use crate::support::{
    Club, NodeProc, Proc, STARTUP, ServiceSpec, error_of, loud, request_id, streamed_content,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_in_front_of_llamacpp_serves_whole_and_streamed_chats() {
    let Ok(url) = std::env::var("CLUB_TEST_LLAMACPP_URL") else {
        loud(
            "SKIPPED: CLUB_TEST_LLAMACPP_URL is not set — the llama.cpp end-to-end test needs the server that scripts/llamacpp/start.sh starts",
        );
        return;
    };
    let model = std::env::var("CLUB_TEST_LLAMACPP_MODEL").unwrap_or_else(|_| "tiny-llama".into());
    bounded(async {
        let mut club = Club::start(&[]).await;
        let service = ServiceSpec {
            url: url.clone(),
            engine: "llamacpp".into(),
            max_concurrent: Some(1),
            model: model.clone(),
        };
        club.add_node("llamacpp-node", &[service]).await;
        let body = |stream: bool| {
            json!({
                "model": model,
                "messages": [{"role": "user", "content": "Say hello"}],
                "max_tokens": 8,
                "stream": stream,
            })
        };

        let (status, id, whole) = club.chat_whole(&body(false)).await;
        assert_eq!(status, 200, "{whole}");
        assert_eq!(whole["object"], "chat.completion");
        assert!(
            whole["choices"][0]["message"]["content"].is_string(),
            "{whole}"
        );
        let record = club
            .final_record(id.unwrap(), Duration::from_secs(10))
            .await;
        assert_eq!(record.status(), Status::Succeeded);
        assert_eq!(record.served_by.as_ref().unwrap().provider, "llamacpp-node");
        assert_eq!(
            record.response.content.clone().unwrap_or_default(),
            whole["choices"][0]["message"]["content"].as_str().unwrap()
        );
        // Usage is what the engine reported, the same for the consumer and the record, or
        // honestly absent from both.
        match (&record.usage.source, &record.usage.counts) {
            (UsageSource::Reported, Some(counts)) => {
                assert_eq!(
                    whole["usage"]["completion_tokens"],
                    json!(counts.completion_tokens)
                );
            }
            (UsageSource::Absent, None) => assert!(whole["usage"].is_null(), "{whole}"),
            other => panic!("inconsistent usage {other:?}"),
        }
        loud(&format!("llama.cpp whole chat: usage {:?}", record.usage));

        let (status, id, events) = club.chat_streamed(&body(true)).await;
        assert_eq!(status, 200);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        assert!(events.iter().all(|e| error_of(e).is_none()), "{events:?}");
        let record = club
            .final_record(id.unwrap(), Duration::from_secs(10))
            .await;
        assert_eq!(record.status(), Status::Succeeded);
        assert_eq!(
            record.response.content.clone().unwrap_or_default(),
            streamed_content(&events)
        );
        // Usage is recorded as the engine reported it, or honestly absent.
        match record.usage.source {
            UsageSource::Reported => assert!(record.usage.counts.is_some()),
            UsageSource::Absent => assert!(record.usage.counts.is_none()),
            other => panic!("llama.cpp's usage has an unexpected source {other:?}"),
        }
        loud(&format!(
            "llama.cpp streamed chat: usage {:?}",
            record.usage
        ));
    })
    .await;
}

/// The manifest of a node with two llama.cpp services on one server: `model` for generation
/// and `embed_model` with the `embeddings` feature.
fn calls_manifest(name: &str, url: &str, model: &str, embed_model: &str) -> String {
    format!(
        "schema_version: 1\nagent:\n  name: {name}\nhosts:\n  - id: box\n    services:\n\
         \x20     - name: generate\n        engine: llamacpp\n        url: {url}\n        max_concurrent: 1\n\
         \x20       models:\n          - id: {model}\n\
         \x20     - name: embed\n        engine: llamacpp\n        url: {url}\n        max_concurrent: 1\n\
         \x20       features: [embeddings]\n        models:\n          - id: {embed_model}\n"
    )
}

/// Standard base64 (with padding) decoded; panics on anything else.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    assert_eq!(text.len() % 4, 0, "base64 comes in groups of 4: {text}");
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for group in text.as_bytes().chunks(4) {
        let padding = group.iter().filter(|b| **b == b'=').count();
        let n = group.iter().fold(0_u32, |n, b| {
            let digit = match b {
                b'=' => 0,
                b => ALPHABET
                    .iter()
                    .position(|a| a == b)
                    .unwrap_or_else(|| panic!("not base64: {text}")) as u32,
            };
            n << 6 | digit
        });
        out.extend_from_slice(&n.to_be_bytes()[1..4 - padding]);
    }
    out
}

/// `POST {path}` as `ada`: status, record id and the body (JSON, or the data lines of an SSE
/// stream as a JSON array of strings).
async fn post(
    club: &Club,
    path: &str,
    body: &serde_json::Value,
) -> (u16, Option<RecordId>, serde_json::Value) {
    let response = club
        .http
        .post(format!("{}{path}", club.url))
        .bearer_auth(&club.key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let id = request_id(&response);
    let sse = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream"));
    let text = response.text().await.unwrap();
    let body = if sse {
        let events: Vec<String> = text
            .lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .map(|data| data.trim_start().to_owned())
            .collect();
        json!(events)
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, id, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_in_front_of_llamacpp_serves_completions_and_embeddings() {
    let Ok(url) = std::env::var("CLUB_TEST_LLAMACPP_URL") else {
        loud(
            "SKIPPED: CLUB_TEST_LLAMACPP_URL is not set — the llama.cpp completions and embeddings test needs the server that scripts/llamacpp/start.sh starts",
        );
        return;
    };
    let Ok(embed_model) = std::env::var("CLUB_TEST_LLAMACPP_EMBED_MODEL") else {
        loud(
            "SKIPPED: CLUB_TEST_LLAMACPP_EMBED_MODEL is not set — the llama.cpp embeddings test needs the embedding model that scripts/llamacpp/start.sh serves (restart it with stop.sh, then start.sh)",
        );
        return;
    };
    let model = std::env::var("CLUB_TEST_LLAMACPP_MODEL").unwrap_or_else(|_| "tiny-llama".into());
    bounded(async {
        let mut club = Club::start(&[]).await;
        let name = "llamacpp-calls";
        let manifest = club.dir.join(format!("{name}.yaml"));
        std::fs::write(&manifest, calls_manifest(name, &url, &model, &embed_model)).unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_club-provider"));
        command
            .arg("run")
            .arg("--coordinator")
            .arg(&club.url)
            .arg("--key")
            .arg(&club.key)
            .arg("--manifest")
            .arg(&manifest);
        let node = Proc::spawn(&format!("node {name}"), command);
        node.wait_for_line("linked to the coordinator", STARTUP)
            .await;
        club.nodes.push(NodeProc {
            name: name.into(),
            proc: node,
        });
        club.wait_for_model(&model).await;
        club.wait_for_model(&embed_model).await;

        // A whole completion: text, usage, the record.
        let completion = |stream: bool| {
            json!({
                "model": model,
                "prompt": "Once upon a time",
                "max_tokens": 8,
                "temperature": 0,
                "stream": stream,
            })
        };
        let (status, id, whole) = post(&club, "/v1/completions", &completion(false)).await;
        assert_eq!(status, 200, "{whole}");
        let id = id.expect("x-club-request-id");
        assert_eq!(whole["object"], "text_completion", "{whole}");
        let text = whole["choices"][0]["text"].as_str().unwrap().to_owned();
        assert!(!text.is_empty(), "{whole}");
        assert!(whole["choices"][0]["finish_reason"].is_string(), "{whole}");
        let usage = &whole["usage"];
        let prompt_tokens = usage["prompt_tokens"].as_u64().unwrap();
        let completion_tokens = usage["completion_tokens"].as_u64().unwrap();
        assert!(prompt_tokens > 0 && completion_tokens > 0, "{whole}");
        assert_eq!(
            usage["total_tokens"].as_u64(),
            Some(prompt_tokens + completion_tokens)
        );
        let record = club.final_record(id, Duration::from_secs(10)).await;
        assert_eq!(record.status(), Status::Succeeded);
        assert_eq!(record.endpoint, Endpoint::Completions);
        assert_eq!(record.served_by.as_ref().unwrap().provider, name);
        loud(&format!(
            "llama.cpp whole completion: {text:?}, usage {usage}"
        ));

        // The same completion streamed: the same text (temperature 0), piece by piece.
        let (status, id, events) = post(&club, "/v1/completions", &completion(true)).await;
        assert_eq!(status, 200, "{events}");
        let id = id.expect("x-club-request-id");
        let events: Vec<String> = serde_json::from_value(events).unwrap();
        assert_eq!(
            events.last().map(String::as_str),
            Some("[DONE]"),
            "{events:?}"
        );
        assert!(events.iter().all(|e| error_of(e).is_none()), "{events:?}");
        let chunks: Vec<serde_json::Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        assert!(chunks.len() > 2, "streamed piece by piece: {events:?}");
        assert!(
            chunks.iter().all(|c| c["object"] == "text_completion"),
            "{events:?}"
        );
        let streamed: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["text"].as_str())
            .collect();
        assert_eq!(streamed, text, "{events:?}");
        assert!(
            chunks
                .iter()
                .any(|c| c["choices"][0]["finish_reason"].is_string()),
            "{events:?}"
        );
        let record = club.final_record(id, Duration::from_secs(10)).await;
        assert_eq!(record.status(), Status::Succeeded);
        assert_eq!(record.endpoint, Endpoint::Completions);

        // Embeddings of several inputs, as floats.
        let inputs = ["hello world", "a second, longer input text", "3"];
        let (status, id, floats) = post(
            &club,
            "/v1/embeddings",
            &json!({"model": embed_model, "input": inputs, "encoding_format": "float"}),
        )
        .await;
        assert_eq!(status, 200, "{floats}");
        let id = id.expect("x-club-request-id");
        assert_eq!(floats["object"], "list", "{floats}");
        let data = floats["data"].as_array().unwrap();
        assert_eq!(data.len(), inputs.len(), "{floats}");
        let vectors: Vec<Vec<f64>> = data
            .iter()
            .enumerate()
            .map(|(index, item)| {
                assert_eq!(item["object"], "embedding");
                assert_eq!(item["index"], index);
                item["embedding"]
                    .as_array()
                    .unwrap_or_else(|| panic!("one flat vector per input: {item}"))
                    .iter()
                    .map(|x| x.as_f64().unwrap_or_else(|| panic!("a float: {x}")))
                    .collect()
            })
            .collect();
        // The tiny model's n_embd (make_tiny_model.py).
        assert!(vectors.iter().all(|v| v.len() == 64), "{floats}");
        assert_ne!(vectors[0], vectors[1]);
        let prompt_tokens = floats["usage"]["prompt_tokens"].as_u64().unwrap();
        assert!(prompt_tokens >= inputs.len() as u64, "{floats}");
        let record = club.final_record(id, Duration::from_secs(10)).await;
        assert_eq!(record.status(), Status::Succeeded);
        assert_eq!(record.endpoint, Endpoint::Embeddings);

        // The same as base64 (llama.cpp answers floats whatever is asked; the club packs them).
        let (status, id, packed) = post(
            &club,
            "/v1/embeddings",
            &json!({"model": embed_model, "input": inputs[0], "encoding_format": "base64"}),
        )
        .await;
        assert_eq!(status, 200, "{packed}");
        assert!(id.is_some());
        let encoded = packed["data"][0]["embedding"]
            .as_str()
            .unwrap_or_else(|| panic!("base64 was asked for: {packed}"));
        let bytes = base64_decode(encoded);
        assert_eq!(bytes.len(), 4 * 64);
        for (i, chunk) in bytes.chunks_exact(4).enumerate() {
            let value = f32::from_le_bytes(chunk.try_into().unwrap());
            assert!(
                (f64::from(value) - vectors[0][i]).abs() <= 1e-5 * vectors[0][i].abs().max(1.0),
                "{i}: {value} vs {}",
                vectors[0][i]
            );
        }

        // The generation model has no `embeddings` feature: refused in OpenAI's shape.
        let (status, _, refused) = post(
            &club,
            "/v1/embeddings",
            &json!({"model": model, "input": "x"}),
        )
        .await;
        assert!(matches!(status, 400 | 404), "{status} {refused}");
        assert!(refused["error"]["message"].is_string(), "{refused}");
    })
    .await;
}
