//! Calls (embeddings, transcriptions, speech) cross replicas as chats do: the node is linked to
//! one replica, the consumer asks another.

use std::time::Duration;

use inference_club_coordinator::testing::media_engine::{self, MediaEngine};
use inference_club_core::endpoint::Endpoint;
use inference_club_core::record::Status;
use inference_club_provider::backends::Echo;
use serde_json::json;

use crate::on_fresh_database;
use crate::support::cluster::{CallService, Cluster, EmbeddingEngine, tools};
use crate::support::loud;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_transcriptions_and_speech_cross_replicas() {
    let Some(tools) = tools("embeddings_transcriptions_and_speech_cross_replicas") else {
        return;
    };
    on_fresh_database(tools, |tools, database| async move {
        let embedder = EmbeddingEngine::start("echo-embed").await;
        let media = MediaEngine::start().await;
        let mut cluster = Cluster::start(&tools, &database).await;

        // The only node serving these models links to replica 1.
        let services = [
            CallService {
                service_type: "llm",
                engine: "vllm",
                url: embedder.url.clone(),
                features: vec!["embeddings"],
                model: "echo-embed".into(),
            },
            CallService {
                service_type: "stt",
                engine: "other",
                url: media.url.clone(),
                features: Vec::new(),
                model: "whisper-1".into(),
            },
            CallService {
                service_type: "tts",
                engine: "other",
                url: media.url.clone(),
                features: Vec::new(),
                model: "tts-1".into(),
            },
        ];
        let r1 = cluster.url(0);
        cluster.add_call_node("node-a", &services, &r1).await;
        cluster
            .wait_for_models_everywhere(
                &["echo-embed", "whisper-1", "tts-1"],
                Duration::from_secs(5),
            )
            .await;
        assert_eq!(cluster.replicas_that_linked("node-a"), vec![0]);

        // Every replica lists the node's call endpoints, not only the one holding it.
        let models = cluster
            .club
            .http
            .get(format!("{}/v1/models", cluster.url(1)))
            .bearer_auth(&cluster.club.key)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap();
        let embed = models["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == "echo-embed")
            .unwrap();
        let endpoints = embed["endpoints"].as_array().unwrap();
        assert!(endpoints.contains(&json!("embeddings")), "{embed}");
        assert!(endpoints.contains(&json!("completions")), "{embed}");

        // Embeddings asked of replica 2: the node's vectors, one record on the shared database.
        let inputs = ["hello world", "bye"];
        let answer = cluster
            .post_json(
                &cluster.url(1),
                "/v1/embeddings",
                &json!({"model": "echo-embed", "input": inputs}),
            )
            .await;
        let body = answer.json();
        assert_eq!(answer.status, 200, "{body}");
        assert_eq!(embedder.asked(), 1);
        for (index, input) in inputs.iter().enumerate() {
            let vector: Vec<f64> = body["data"][index]["embedding"]
                .as_array()
                .unwrap_or_else(|| panic!("{body}"))
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            let expected = Echo::embedding(input);
            assert_eq!(vector.len(), expected.len(), "{body}");
            for (got, want) in vector.iter().zip(&expected) {
                assert!((got - want).abs() < 1e-6, "{input}: {vector:?} != {expected:?}");
            }
        }
        let id = answer.id.expect("no x-club-request-id");
        let record = cluster.club.final_record(id, Duration::from_secs(5)).await;
        assert_eq!(record.status(), Status::Succeeded);
        assert_eq!(record.endpoint, Endpoint::Embeddings);
        assert_eq!(record.served_by.as_ref().unwrap().provider, "node-a");
        let records = cluster.club.all_records().await;
        assert_eq!(records.len(), 1, "{records:?}");

        // A transcription asked of replica 3: the upload crosses to the node whole.
        let audio = media_engine::speech_wav("hi there");
        let answer = cluster
            .transcribe(&cluster.url(2), "whisper-1", "hi.wav", &audio)
            .await;
        assert_eq!(answer.status, 200, "{:?}", answer.json());
        assert_eq!(
            answer.json()["text"],
            media_engine::transcript_of(audio.len(), Some("audio/wav"))
        );
        let asked = media.last_on("/v1/audio/transcriptions").unwrap();
        assert_eq!(asked.file.unwrap().data.as_ref(), audio.as_slice());

        // Speech asked of replica 2: 4.8 MB of audio, more than half of NATS's 8 MB message
        // limit, comes back in parts, whole and in order.
        let input = "a".repeat(2_000);
        let answer = cluster
            .post_json(
                &cluster.url(1),
                "/v1/audio/speech",
                &json!({"model": "tts-1", "input": input, "voice": "alloy", "response_format": "wav"}),
            )
            .await;
        assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
        assert_eq!(answer.content_type, "audio/wav");
        let expected = media_engine::speech_wav(&input);
        assert!(expected.len() > 4_000_000);
        assert!(answer.body == expected, "the audio differs ({} bytes)", answer.body.len());
        let record = cluster
            .club
            .final_record(answer.id.unwrap(), Duration::from_secs(5))
            .await;
        assert_eq!(record.status(), Status::Succeeded);
        assert_eq!(record.served_by.as_ref().unwrap().provider, "node-a");

        // An upload too large for one NATS message (7 MB, 9.3 MB in base64) is refused with a
        // 413 before anything runs.
        let before = media.asked_on("/v1/audio/transcriptions").len();
        let big = vec![7u8; 7_000_000];
        let answer = cluster
            .transcribe(&cluster.url(1), "whisper-1", "big.wav", &big)
            .await;
        let body = answer.json();
        assert_eq!(answer.status, 413, "{body}");
        assert_eq!(body["error"]["code"], "request_too_large", "{body}");
        assert_eq!(media.asked_on("/v1/audio/transcriptions").len(), before);
        loud(&format!(
            "cluster: embeddings, a transcription and {} bytes of speech crossed replicas",
            expected.len()
        ));
    })
    .await;
}
