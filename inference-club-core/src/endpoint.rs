//! The kinds of inference the club routes: one [`Endpoint`] per OpenAI API route, and which
//! services and models serve each.
//!
//! ```
//! use inference_club_core::endpoint::Endpoint;
//! use inference_club_core::manifest::{Model, ServiceType};
//!
//! let embedder = Model { id: Some("nomic-embed".into()), features: vec!["embeddings".into()], ..Model::default() };
//! let chatter = Model { id: Some("qwen3".into()), ..Model::default() };
//! assert!(Endpoint::Embeddings.served_by(ServiceType::Llm, &[], Some(&embedder)));
//! assert!(!Endpoint::Embeddings.served_by(ServiceType::Llm, &[], Some(&chatter)));
//! assert!(Endpoint::Completions.served_by(ServiceType::Llm, &[], Some(&chatter)));
//! assert!(!Endpoint::AudioSpeech.served_by(ServiceType::Llm, &[], Some(&chatter)));
//! assert_eq!(Endpoint::from_path("/v1/audio/speech"), Some(Endpoint::AudioSpeech));
//! ```

use serde::{Deserialize, Serialize};

use crate::manifest::{Model, ServiceType};

/// The feature (of a model or of its service) that says it answers `/v1/embeddings`.
pub const EMBEDDINGS_FEATURE: &str = "embeddings";

/// One OpenAI API route the club serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    #[default]
    ChatCompletions,
    /// `POST /v1/completions` (legacy text completions).
    Completions,
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `POST /v1/responses` (answered by chat engines: the coordinator maps it onto chat).
    Responses,
    /// `POST /v1/audio/transcriptions` (a multipart upload).
    AudioTranscriptions,
    /// `POST /v1/audio/speech` (answers audio bytes).
    AudioSpeech,
    /// `POST /v1/images/generations`.
    ImagesGenerations,
}

impl Endpoint {
    /// Every endpoint, in the order of [`Endpoint::as_str`]'s names.
    pub const ALL: [Endpoint; 7] = [
        Self::ChatCompletions,
        Self::Completions,
        Self::Embeddings,
        Self::Responses,
        Self::AudioTranscriptions,
        Self::AudioSpeech,
        Self::ImagesGenerations,
    ];

    /// The name used in records, link messages and `/v1/models` (`chat_completions`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat_completions",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
            Self::Responses => "responses",
            Self::AudioTranscriptions => "audio_transcriptions",
            Self::AudioSpeech => "audio_speech",
            Self::ImagesGenerations => "images_generations",
        }
    }

    /// The path under an OpenAI-compatible base URL that ends in `/v1` (`chat/completions`, …).
    pub fn engine_path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat/completions",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
            Self::Responses => "responses",
            Self::AudioTranscriptions => "audio/transcriptions",
            Self::AudioSpeech => "audio/speech",
            Self::ImagesGenerations => "images/generations",
        }
    }

    /// The coordinator's path (`/v1/chat/completions`, …).
    pub fn path(self) -> String {
        format!("/v1/{}", self.engine_path())
    }

    /// The endpoint served at `path` (with or without the `/v1/` prefix).
    pub fn from_path(path: &str) -> Option<Self> {
        let path = path.trim_start_matches('/');
        let path = path.strip_prefix("v1/").unwrap_or(path);
        Self::ALL.into_iter().find(|e| e.engine_path() == path)
    }

    /// The endpoint named `name` (as [`Endpoint::as_str`] spells it).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }

    /// The service type whose services answer this endpoint.
    pub fn service_type(self) -> ServiceType {
        match self {
            Self::ChatCompletions | Self::Completions | Self::Embeddings | Self::Responses => {
                ServiceType::Llm
            }
            Self::AudioTranscriptions => ServiceType::Stt,
            Self::AudioSpeech => ServiceType::Tts,
            Self::ImagesGenerations => ServiceType::Image,
        }
    }

    /// Whether a service of `service_type` with `service_features` answers this endpoint for
    /// `model` (`None`: a model the engine listed, whose features are unknown). Chat,
    /// completions and responses: every `llm` model; embeddings: an `llm` model or service with
    /// the [`EMBEDDINGS_FEATURE`] (or a model whose output modality is `embedding`); audio and
    /// images: every model of an `stt`, `tts` or `image` service.
    pub fn served_by(
        self,
        service_type: ServiceType,
        service_features: &[String],
        model: Option<&Model>,
    ) -> bool {
        if service_type != self.service_type() {
            return false;
        }
        if self != Self::Embeddings {
            return true;
        }
        let has = |features: &[String]| {
            features
                .iter()
                .any(|f| f.eq_ignore_ascii_case(EMBEDDINGS_FEATURE))
        };
        has(service_features)
            || model.is_some_and(|m| {
                has(&m.features)
                    || m.output_modalities
                        .iter()
                        .any(|o| o.eq_ignore_ascii_case("embedding"))
            })
    }

    /// Every endpoint a model of such a service answers.
    pub fn all_served_by(
        service_type: ServiceType,
        service_features: &[String],
        model: Option<&Model>,
    ) -> Vec<Endpoint> {
        Self::ALL
            .into_iter()
            .filter(|e| e.served_by(service_type, service_features, model))
            .collect()
    }

    /// Whether the answer may be streamed (`"stream": true`) as server-sent events.
    pub fn streams(self) -> bool {
        matches!(
            self,
            Self::ChatCompletions | Self::Completions | Self::Responses
        )
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_round_trip() {
        for endpoint in Endpoint::ALL {
            assert_eq!(Endpoint::from_name(endpoint.as_str()), Some(endpoint));
            assert_eq!(Endpoint::from_path(&endpoint.path()), Some(endpoint));
            let json = serde_json::to_string(&endpoint).unwrap();
            assert_eq!(json, format!("\"{}\"", endpoint.as_str()));
        }
        assert_eq!(Endpoint::from_path("/v1/nope"), None);
    }

    #[test]
    fn each_service_type_answers_its_endpoints() {
        let plain = Model::default();
        assert_eq!(
            Endpoint::all_served_by(ServiceType::Llm, &[], Some(&plain)),
            [
                Endpoint::ChatCompletions,
                Endpoint::Completions,
                Endpoint::Responses
            ]
        );
        assert!(Endpoint::Embeddings.served_by(ServiceType::Llm, &["Embeddings".into()], None));
        assert_eq!(
            Endpoint::all_served_by(ServiceType::Stt, &[], None),
            [Endpoint::AudioTranscriptions]
        );
        assert_eq!(
            Endpoint::all_served_by(ServiceType::Image, &[], None),
            [Endpoint::ImagesGenerations]
        );
        assert!(Endpoint::all_served_by(ServiceType::Mesh, &[], None).is_empty());
    }
}
