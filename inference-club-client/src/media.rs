//! Audio and images: transcription (`POST /v1/audio/transcriptions`, a multipart upload), speech
//! (`POST /v1/audio/speech`) and image generation (`POST /v1/images/generations`): their
//! requests, their answers and the client's calls.

use bytes::Bytes;
use futures_util::future::BoxFuture;
use inference_club_core::record::Visibility;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::client::{Idempotence, Payload};
use crate::{Client, Error};

/// The header that carries a request's visibility where its body cannot (a multipart upload).
pub const VISIBILITY_HEADER: &str = "x-club-visibility";

/// What a transcription answers: `json` (`{"text"}`, the default), `text`, `verbose_json`
/// (with segments and timings), `srt` or `vtt` (subtitles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TranscriptionFormat {
    /// `{"text": "…"}`.
    Json,
    /// The text alone.
    Text,
    /// The text with language, duration and segments.
    VerboseJson,
    /// SubRip subtitles.
    Srt,
    /// WebVTT subtitles.
    Vtt,
}

impl TranscriptionFormat {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Text => "text",
            Self::VerboseJson => "verbose_json",
            Self::Srt => "srt",
            Self::Vtt => "vtt",
        }
    }
}

impl std::str::FromStr for TranscriptionFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Self::Json,
            Self::Text,
            Self::VerboseJson,
            Self::Srt,
            Self::Vtt,
        ]
        .into_iter()
        .find(|f| f.as_str() == s)
        .ok_or_else(|| {
            format!("response format must be json, text, verbose_json, srt or vtt, got {s:?}")
        })
    }
}

/// A transcription request: `TranscriptionRequest::new(model, file_name, bytes)`, then the
/// builder methods. Sent as `multipart/form-data`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TranscriptionRequest {
    /// The model.
    pub model: String,
    /// The audio file's name (its extension tells the engine the format).
    pub file_name: String,
    /// The audio.
    pub file: Bytes,
    /// The audio's content type (default: from the file name's extension).
    pub content_type: Option<String>,
    /// What to answer (the server's default, json, when unset).
    pub response_format: Option<TranscriptionFormat>,
    /// The language spoken (ISO-639-1, such as `en`).
    pub language: Option<String>,
    /// Text to guide the style, or the previous segment's text.
    pub prompt: Option<String>,
    /// The sampling temperature.
    pub temperature: Option<f64>,
    /// Who may read the record (sent as the `x-club-visibility` header).
    pub visibility: Option<Visibility>,
    /// Other form fields, sent as given.
    pub fields: Vec<(String, String)>,
}

impl TranscriptionRequest {
    /// A request to transcribe the audio `file`, named `file_name`, with `model`.
    pub fn new(
        model: impl Into<String>,
        file_name: impl Into<String>,
        file: impl Into<Bytes>,
    ) -> Self {
        Self {
            model: model.into(),
            file_name: file_name.into(),
            file: file.into(),
            content_type: None,
            response_format: None,
            language: None,
            prompt: None,
            temperature: None,
            visibility: None,
            fields: Vec::new(),
        }
    }

    /// What to answer.
    pub fn response_format(mut self, format: TranscriptionFormat) -> Self {
        self.response_format = Some(format);
        self
    }

    /// The language spoken.
    pub fn language(mut self, language: impl Into<String>) -> Self {
        self.language = Some(language.into());
        self
    }

    /// Text to guide the transcription.
    pub fn prompt(mut self, prompt: impl Into<String>) -> Self {
        self.prompt = Some(prompt.into());
        self
    }

    /// The sampling temperature.
    pub fn temperature(mut self, temperature: f64) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// The audio's content type.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Who may read the record of this request (default: the member's default).
    pub fn visibility(mut self, visibility: Visibility) -> Self {
        self.visibility = Some(visibility);
        self
    }

    /// Any other form field, sent as given.
    pub fn field(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.fields.push((name.into(), value.into()));
        self
    }

    /// The form this request is sent as.
    fn form(&self) -> FormSpec {
        let mut fields = vec![("model".to_owned(), self.model.clone())];
        let optional = [
            (
                "response_format",
                self.response_format.map(|f| f.as_str().to_owned()),
            ),
            ("language", self.language.clone()),
            ("prompt", self.prompt.clone()),
            ("temperature", self.temperature.map(|t| t.to_string())),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                fields.push((name.to_owned(), value));
            }
        }
        fields.extend(self.fields.iter().cloned());
        let content_type = self
            .content_type
            .clone()
            .unwrap_or_else(|| audio_content_type(&self.file_name).to_owned());
        FormSpec {
            fields,
            file_name: self.file_name.clone(),
            content_type,
            file: self.file.clone(),
            visibility: self.visibility,
        }
    }
}

/// The content type of an audio file, from its name's extension.
fn audio_content_type(file_name: &str) -> &'static str {
    let extension = file_name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "wav" => "audio/wav",
        "mp3" | "mpga" | "mpeg" => "audio/mpeg",
        "m4a" | "mp4" => "audio/mp4",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "webm" => "audio/webm",
        "flac" => "audio/flac",
        _ => "application/octet-stream",
    }
}

/// A multipart form that can be built again for each attempt (a form is sent only once).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FormSpec {
    fields: Vec<(String, String)>,
    file_name: String,
    content_type: String,
    file: Bytes,
    visibility: Option<Visibility>,
}

impl FormSpec {
    /// A form of text `fields` and one `file` part named `file_name`, of `content_type`.
    pub(crate) fn new(
        fields: Vec<(String, String)>,
        file_name: String,
        content_type: &str,
        file: Bytes,
    ) -> Self {
        Self {
            fields,
            file_name,
            content_type: content_type.to_owned(),
            file,
            visibility: None,
        }
    }

    /// `builder` with this form as its body.
    pub(crate) fn attach(
        &self,
        builder: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, Error> {
        let mut form = reqwest::multipart::Form::new();
        for (name, value) in &self.fields {
            form = form.text(name.clone(), value.clone());
        }
        let file = reqwest::multipart::Part::stream_with_length(
            reqwest::Body::from(self.file.clone()),
            self.file.len() as u64,
        )
        .file_name(self.file_name.clone())
        .mime_str(&self.content_type)
        .map_err(|e| Error::Config(format!("invalid content type of the file: {e}")))?;
        let builder = match self.visibility {
            Some(visibility) => builder.header(VISIBILITY_HEADER, visibility.as_str()),
            None => builder,
        };
        Ok(builder.multipart(form.part("file", file)))
    }
}

/// A transcription and the id of its record.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptionResponse {
    /// The text: the transcript, or the subtitles for `srt` and `vtt`.
    pub text: String,
    /// The whole JSON answer, for `json` and `verbose_json` (language, duration, segments).
    pub details: Option<Value>,
    /// The answer's content type.
    pub content_type: Option<String>,
    /// The record's id (`x-club-request-id`).
    pub record_id: Option<String>,
}

/// An audio format of speech: `mp3` (OpenAI's default), `wav`, `opus`, `flac`, `aac` or `pcm`
/// (raw 24 kHz 16-bit little-endian mono).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AudioFormat {
    /// MP3.
    Mp3,
    /// WAV.
    Wav,
    /// Opus in Ogg.
    Opus,
    /// FLAC.
    Flac,
    /// AAC.
    Aac,
    /// Raw PCM samples.
    Pcm,
}

impl AudioFormat {
    /// Every format.
    pub const ALL: [AudioFormat; 6] = [
        Self::Mp3,
        Self::Wav,
        Self::Opus,
        Self::Flac,
        Self::Aac,
        Self::Pcm,
    ];

    /// The wire name, also the usual file extension.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mp3 => "mp3",
            Self::Wav => "wav",
            Self::Opus => "opus",
            Self::Flac => "flac",
            Self::Aac => "aac",
            Self::Pcm => "pcm",
        }
    }
}

impl std::str::FromStr for AudioFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|f| f.as_str() == s.to_ascii_lowercase())
            .ok_or_else(|| {
                format!("audio format must be mp3, wav, opus, flac, aac or pcm, got {s:?}")
            })
    }
}

/// A speech request: `SpeechRequest::new(model, input)`, then the builder methods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SpeechRequest {
    /// The model.
    pub model: String,
    /// The text to speak.
    pub input: String,
    /// The voice (which ones exist depends on the model; OpenAI's include `alloy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    /// The audio format (the server's default, mp3, when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<AudioFormat>,
    /// The speed, 0.25 to 4 (1 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<f64>,
    /// Other parameters, sent as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl SpeechRequest {
    /// A request to speak `input` with `model`.
    pub fn new(model: impl Into<String>, input: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            input: input.into(),
            voice: None,
            response_format: None,
            speed: None,
            extra: Map::new(),
        }
    }

    /// The voice.
    pub fn voice(mut self, voice: impl Into<String>) -> Self {
        self.voice = Some(voice.into());
        self
    }

    /// The audio format.
    pub fn format(mut self, format: AudioFormat) -> Self {
        self.response_format = Some(format);
        self
    }

    /// The speed.
    pub fn speed(mut self, speed: f64) -> Self {
        self.speed = Some(speed);
        self
    }
}

/// Spoken audio and the id of its record.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeechResponse {
    /// The audio, in the format asked for.
    pub audio: Bytes,
    /// Its content type (`audio/mpeg`, `audio/wav`, …), as the coordinator sent it.
    pub content_type: Option<String>,
    /// The record's id (`x-club-request-id`).
    pub record_id: Option<String>,
}

/// How generated images travel: as base64 in the answer, or as URLs to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ImageFormat {
    /// Base64 in the answer (the client decodes it).
    B64Json,
    /// URLs (valid for a while).
    Url,
}

/// An image generation request: `ImageRequest::new(model, prompt)`, then the builder methods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ImageRequest {
    /// The model.
    pub model: String,
    /// What to draw.
    pub prompt: String,
    /// How many images (1 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Their size, `WIDTHxHEIGHT` (such as `1024x1024`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// How they travel (the server's default when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ImageFormat>,
    /// Other parameters (`quality`, `style`, …), sent as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ImageRequest {
    /// A request for an image of `prompt` by `model`.
    pub fn new(model: impl Into<String>, prompt: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            prompt: prompt.into(),
            n: None,
            size: None,
            response_format: None,
            extra: Map::new(),
        }
    }

    /// How many images.
    pub fn n(mut self, n: u32) -> Self {
        self.n = Some(n);
        self
    }

    /// Their size, `WIDTHxHEIGHT`.
    pub fn size(mut self, size: impl Into<String>) -> Self {
        self.size = Some(size.into());
        self
    }

    /// How they travel.
    pub fn response_format(mut self, format: ImageFormat) -> Self {
        self.response_format = Some(format);
        self
    }
}

/// One generated image: its bytes (decoded from `b64_json`) or its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImageData {
    /// The image file (PNG unless the model says otherwise).
    Bytes(Bytes),
    /// Where to fetch it.
    Url(String),
}

/// One image of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedImage {
    /// The image.
    pub data: ImageData,
    /// The prompt as the model rewrote it, if it did.
    pub revised_prompt: Option<String>,
}

/// Generated images and the id of their record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagesResponse {
    /// Unix seconds.
    pub created: u64,
    /// The images, in order.
    pub images: Vec<GeneratedImage>,
    /// The record's id (`x-club-request-id`).
    pub record_id: Option<String>,
}

impl ImagesResponse {
    /// Reads the wire answer `{"created", "data": [{"b64_json"} or {"url"}, …]}`.
    fn from_wire(body: &Value, record_id: Option<String>) -> Result<Self, Error> {
        let created = body.get("created").and_then(Value::as_u64).unwrap_or(0);
        let items = body
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::decode("an image answer without `data`", None))?;
        let mut images = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let text = |key| item.get(key).and_then(Value::as_str);
            let data = match (text("b64_json"), text("url")) {
                (Some(b64), _) => ImageData::Bytes(
                    crate::base64::decode(b64)
                        .map_err(|e| Error::decode(format!("image {i}: {e}"), None))?
                        .into(),
                ),
                (None, Some(url)) => ImageData::Url(url.to_owned()),
                (None, None) => {
                    return Err(Error::decode(
                        format!("image {i} has neither `b64_json` nor `url`"),
                        None,
                    ));
                }
            };
            images.push(GeneratedImage {
                data,
                revised_prompt: text("revised_prompt").map(str::to_owned),
            });
        }
        Ok(Self {
            created,
            images,
            record_id,
        })
    }
}

impl Client {
    /// Transcribes audio (`POST /v1/audio/transcriptions`, a multipart upload): the text in
    /// the format asked for, and the record id. Retried like [`chat`](Self::chat), the form
    /// sent again whole.
    #[inline(never)]
    pub fn transcribe(
        &self,
        request: TranscriptionRequest,
    ) -> BoxFuture<'_, Result<TranscriptionResponse, Error>> {
        Box::pin(async move {
            let mut answer = self
                .exchange(
                    reqwest::Method::POST,
                    &["v1", "audio", "transcriptions"],
                    &[],
                    Some(Payload::Form(request.form())),
                    &[],
                    Idempotence::Retryable,
                )
                .await?;
            let json = match answer.content_type.as_deref() {
                Some(kind) => kind.trim_start().starts_with("application/json"),
                None => matches!(
                    request.response_format,
                    None | Some(TranscriptionFormat::Json | TranscriptionFormat::VerboseJson)
                ),
            };
            let (text, details) = if json {
                let details: Value = answer.json()?;
                let text = details
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Error::decode("a transcription without `text`", None))?;
                (text.to_owned(), Some(details))
            } else {
                let body = answer.body.take().unwrap_or_default();
                let text = String::from_utf8(body)
                    .map_err(|e| Error::decode(e.to_string(), Some(Box::new(e))))?;
                (text, None)
            };
            Ok(TranscriptionResponse {
                text,
                details,
                content_type: answer.content_type,
                record_id: answer.record_id,
            })
        })
    }

    /// Speaks text (`POST /v1/audio/speech`): the audio bytes, their content type and the
    /// record id. Retried like [`chat`](Self::chat).
    #[inline(never)]
    pub fn speech(&self, request: SpeechRequest) -> BoxFuture<'_, Result<SpeechResponse, Error>> {
        Box::pin(async move {
            let answer = self.post_json(&["v1", "audio", "speech"], &request).await?;
            let content_type = answer.content_type.clone();
            let record_id = answer.record_id.clone();
            Ok(SpeechResponse {
                audio: answer.bytes()?.into(),
                content_type,
                record_id,
            })
        })
    }

    /// Generates images (`POST /v1/images/generations`): each as bytes (decoded from
    /// `b64_json`) or as a URL, whichever the server sent, and the record id. Retried like
    /// [`chat`](Self::chat).
    #[inline(never)]
    pub fn generate_image(
        &self,
        request: ImageRequest,
    ) -> BoxFuture<'_, Result<ImagesResponse, Error>> {
        Box::pin(async move {
            let answer = self
                .post_json(&["v1", "images", "generations"], &request)
                .await?;
            ImagesResponse::from_wire(&answer.json()?, answer.record_id)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_transcription_form_holds_the_fields_the_file_and_its_type() {
        let form = TranscriptionRequest::new("whisper", "talk.WAV", vec![1u8, 2, 3])
            .response_format(TranscriptionFormat::VerboseJson)
            .language("en")
            .temperature(0.5)
            .visibility(Visibility::Unlisted)
            .field("timestamp_granularities[]", "word")
            .form();
        assert_eq!(
            form.fields,
            [
                ("model", "whisper"),
                ("response_format", "verbose_json"),
                ("language", "en"),
                ("temperature", "0.5"),
                ("timestamp_granularities[]", "word"),
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        assert_eq!(form.content_type, "audio/wav");
        assert_eq!(form.file.as_ref(), [1, 2, 3]);
        assert_eq!(form.visibility, Some(Visibility::Unlisted));
        assert_eq!(audio_content_type("noext"), "application/octet-stream");
        assert_eq!(
            "srt".parse::<TranscriptionFormat>(),
            Ok(TranscriptionFormat::Srt)
        );
        assert!("doc".parse::<TranscriptionFormat>().is_err());
    }

    #[test]
    fn speech_and_image_requests_are_written_in_openai_shape() {
        let speech = SpeechRequest::new("tts", "Hello")
            .voice("alloy")
            .format(AudioFormat::Wav)
            .speed(1.5)
            .visibility(Visibility::Private);
        assert_eq!(
            serde_json::to_value(&speech).unwrap(),
            json!({"model": "tts", "input": "Hello", "voice": "alloy", "response_format": "wav",
                   "speed": 1.5, "visibility": "private"})
        );
        assert_eq!("FLAC".parse::<AudioFormat>(), Ok(AudioFormat::Flac));
        let image = ImageRequest::new("sd", "a cat")
            .n(2)
            .size("256x256")
            .response_format(ImageFormat::B64Json)
            .param("quality", "hd");
        assert_eq!(
            serde_json::to_value(&image).unwrap(),
            json!({"model": "sd", "prompt": "a cat", "n": 2, "size": "256x256",
                   "response_format": "b64_json", "quality": "hd"})
        );
    }

    #[test]
    fn images_are_decoded_from_base64_or_kept_as_urls() {
        let body = json!({"created": 9, "data": [
            {"b64_json": crate::base64::encode(b"\x89PNG"), "revised_prompt": "a fat cat"},
            {"url": "https://img.example/1.png"}
        ]});
        let answer = ImagesResponse::from_wire(&body, Some("r1".into())).unwrap();
        assert_eq!(answer.created, 9);
        assert_eq!(
            answer.images[0].data,
            ImageData::Bytes(Bytes::from_static(b"\x89PNG"))
        );
        assert_eq!(
            answer.images[0].revised_prompt.as_deref(),
            Some("a fat cat")
        );
        assert_eq!(
            answer.images[1].data,
            ImageData::Url("https://img.example/1.png".into())
        );
        let bad = json!({"data": [{"b64_json": "no!"}]});
        assert!(ImagesResponse::from_wire(&bad, None).is_err());
        assert!(ImagesResponse::from_wire(&json!({"data": [{}]}), None).is_err());
        assert!(ImagesResponse::from_wire(&json!({}), None).is_err());
    }
}

crate::request::extra_params!(SpeechRequest, ImageRequest);
