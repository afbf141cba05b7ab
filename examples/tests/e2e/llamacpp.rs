//! A node in front of the CI llama.cpp server (`CLUB_TEST_LLAMACPP_URL`).

use std::time::Duration;

use inference_club_core::record::{Status, UsageSource};
use serde_json::json;

use crate::bounded;
use crate::support::{Club, ServiceSpec, error_of, loud, streamed_content};

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
