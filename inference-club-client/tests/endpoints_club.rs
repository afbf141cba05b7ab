//! The client's calls of the other endpoints against a real coordinator in this process and a
//! real node: the Echo engine for text completions and embeddings, the fake media engine (behind
//! the OpenAI-compatible backend) for transcription, speech and images. Each answer, its record
//! id, the record it names, visibility per request, and the coordinator's errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use futures_util::StreamExt;
use inference_club_client::{
    AudioFormat, Client, CompletionRequest, EmbeddingsRequest, EncodingFormat, ImageData,
    ImageFormat, ImageRequest, SpeechRequest, TranscriptionFormat, TranscriptionRequest,
    Visibility,
};
use inference_club_coordinator::testing::media_engine::{self, MediaEngine};
use inference_club_coordinator::testing::{TestClub, TestService};
use inference_club_core::manifest::ServiceType;
use inference_club_core::provider::Provider;
use inference_club_provider::backends::{Echo, OpenAiCompatible};

/// A club whose node serves `echo` (completions), `echo-embed` (embeddings) and, through the
/// fake media engine, `whisper-1`, `tts-1` and `dall-e-test`.
async fn club() -> (TestClub, MediaEngine, Client) {
    let media = MediaEngine::start().await;
    let backend = || -> Arc<dyn Provider> {
        Arc::new(
            OpenAiCompatible::builder(media.url.clone())
                .build()
                .unwrap(),
        )
    };
    let echo: Arc<dyn Provider> = Arc::new(Echo::new().models(["echo", "echo-embed"]));
    let club = TestClub::start_services(vec![
        TestService::new("echo", echo.clone()),
        TestService::new("echo-embed", echo).features(["embeddings"]),
        TestService::new("whisper-1", backend()).service_type(ServiceType::Stt),
        TestService::new("tts-1", backend()).service_type(ServiceType::Tts),
        TestService::new("dall-e-test", backend()).service_type(ServiceType::Image),
    ])
    .await;
    let client = Client::builder(format!("{}/v1", club.url))
        .api_key(&club.key)
        .build()
        .unwrap();
    (club, media, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_and_embeddings_through_a_real_coordinator() {
    let (_club, _media, client) = club().await;

    // A whole completion: Echo continues the prompt with itself.
    let whole = client
        .completion(CompletionRequest::new("echo", "the quick brown fox"))
        .await
        .unwrap();
    assert_eq!(whole.text(), Some("the quick brown fox"));
    let id = whole
        .record_id
        .clone()
        .expect("the answer names its record");
    assert_eq!(whole.completion.object, "text_completion");
    assert!(
        whole.completion.id.starts_with("cmpl-"),
        "{}",
        whole.completion.id
    );
    assert_eq!(whole.completion.usage.as_ref().unwrap().prompt_tokens, 4);
    let record = client.record(&id).await.unwrap();
    assert_eq!(record.visibility, Visibility::Public);
    assert_eq!(record.endpoint, "completions");
    assert_eq!(record.prompt().as_deref(), Some("the quick brown fox"));

    // Streamed, one word a piece, with usage at the end; private on request.
    let mut stream = client
        .completion_stream(
            CompletionRequest::new("echo", "one two three")
                .max_tokens(2)
                .visibility(Visibility::Private),
        )
        .await
        .unwrap();
    let streamed_id = stream.record_id().unwrap();
    let mut pieces = Vec::new();
    while let Some(piece) = stream.next().await {
        pieces.push(piece.unwrap());
    }
    assert_eq!(pieces, ["one", " two"]);
    assert_eq!(stream.finish_reason().unwrap().as_str(), "length");
    assert_eq!(stream.usage().unwrap().completion_tokens, 2);
    assert_eq!(
        client.record(&streamed_id).await.unwrap().visibility,
        Visibility::Private
    );

    // Embeddings: Echo's vectors, read from floats and from base64 alike, in input order.
    for format in [EncodingFormat::Float, EncodingFormat::Base64] {
        let answer = client
            .embeddings(
                EmbeddingsRequest::new("echo-embed", ["hello world", "goodbye"])
                    .encoding_format(format),
            )
            .await
            .unwrap();
        assert!(answer.record_id.is_some());
        let vectors: Vec<&[f32]> = answer.vectors().collect();
        assert_eq!(vectors.len(), 2);
        for (vector, text) in vectors.iter().zip(["hello world", "goodbye"]) {
            let expected = Echo::embedding(text);
            assert_eq!(vector.len(), Echo::EMBEDDING_DIMENSIONS);
            for (got, want) in vector.iter().zip(&expected) {
                assert!(
                    (f64::from(*got) - want).abs() < 1e-6,
                    "{format:?}: {got} {want}"
                );
            }
        }
        assert_eq!(answer.usage().unwrap().prompt_tokens, 3);
    }

    // The coordinator's errors come typed: an unknown model, and a model of another kind.
    let missing = client
        .embeddings(EmbeddingsRequest::new("no-such-model", "x"))
        .await
        .unwrap_err();
    assert_eq!(missing.status(), Some(404), "{missing}");
    assert!(!missing.is_retryable());
    let wrong_kind = client
        .completion(CompletionRequest::new("tts-1", "x"))
        .await
        .unwrap_err();
    assert!(wrong_kind.status().is_some(), "{wrong_kind}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcription_speech_and_images_through_a_real_coordinator() {
    let (_club, media, client) = club().await;

    // A transcription: the upload reaches the engine whole, with its fields.
    let audio = media_engine::speech_wav("hi");
    let answer = client
        .transcribe(
            TranscriptionRequest::new("whisper-1", "hi.wav", audio.clone())
                .language("en")
                .visibility(Visibility::Unlisted),
        )
        .await
        .unwrap();
    assert_eq!(
        answer.text,
        media_engine::transcript_of(audio.len(), Some("audio/wav"))
    );
    let id = answer.record_id.unwrap();
    let record = client.record(&id).await.unwrap();
    assert_eq!(record.visibility, Visibility::Unlisted);
    assert_eq!(record.endpoint, "audio_transcriptions");
    let asked = media.last_on("/v1/audio/transcriptions").unwrap();
    assert_eq!(asked.field("language"), Some("en"));
    let file = asked.file.unwrap();
    assert_eq!(file.data.as_ref(), audio.as_slice());
    assert_eq!(file.file_name.as_deref(), Some("hi.wav"));

    // As plain text.
    let text = client
        .transcribe(
            TranscriptionRequest::new("whisper-1", "hi.wav", audio.clone())
                .response_format(TranscriptionFormat::Text),
        )
        .await
        .unwrap();
    assert_eq!(
        text.text.trim_end(),
        media_engine::transcript_of(audio.len(), Some("audio/wav"))
    );
    assert_eq!(text.details, None);

    // Speech: the engine's WAV, byte for byte, with its content type.
    let speech = client
        .speech(
            SpeechRequest::new("tts-1", "hello")
                .voice("alloy")
                .format(AudioFormat::Wav),
        )
        .await
        .unwrap();
    assert_eq!(speech.audio.as_ref(), media_engine::speech_wav("hello"));
    assert!(
        speech
            .content_type
            .as_deref()
            .unwrap()
            .starts_with("audio/wav"),
        "{:?}",
        speech.content_type
    );
    assert!(speech.record_id.is_some());

    // Images: n PNGs decoded from base64.
    let images = client
        .generate_image(
            ImageRequest::new("dall-e-test", "a red square")
                .n(2)
                .size("256x256")
                .response_format(ImageFormat::B64Json),
        )
        .await
        .unwrap();
    assert_eq!(images.images.len(), 2);
    for (i, image) in images.images.iter().enumerate() {
        assert_eq!(
            image.data,
            ImageData::Bytes(media_engine::png_for("a red square", i).into())
        );
    }
    assert!(images.record_id.is_some());

    // An engine's refusal comes back typed (this engine makes no mp3).
    let refused = client
        .speech(SpeechRequest::new("tts-1", "hello").format(AudioFormat::Mp3))
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(400), "{refused}");
}
