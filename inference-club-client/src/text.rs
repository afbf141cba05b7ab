//! Text completions (`POST /v1/completions`, whole and streamed) and embeddings
//! (`POST /v1/embeddings`): their requests, their answers and the client's calls.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use futures_util::future::BoxFuture;
use inference_club_core::openai::{ApiError, FinishReason, StreamOptions, Usage};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::stream::{Event, EventStream};
use crate::{Client, Error};

/// A legacy text completion request: `CompletionRequest::new(model, prompt)`, then the
/// builder methods. Fields this type does not name go in `extra` (vendor parameters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CompletionRequest {
    /// The model.
    pub model: String,
    /// The text to continue.
    pub prompt: String,
    /// Caps the tokens generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// The sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Where generation stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
    /// Whether the answer streams (set by the client's call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Stream options (set by the client's call: usage at the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Other parameters, sent as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl CompletionRequest {
    /// A request to continue `prompt` with `model`.
    pub fn new(model: impl Into<String>, prompt: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            prompt: prompt.into(),
            max_tokens: None,
            temperature: None,
            stop: None,
            stream: None,
            stream_options: None,
            extra: Map::new(),
        }
    }

    /// Caps the tokens generated.
    pub fn max_tokens(mut self, max: u32) -> Self {
        self.max_tokens = Some(max);
        self
    }

    /// Sets the sampling temperature.
    pub fn temperature(mut self, temperature: f64) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Adds a stop sequence.
    pub fn stop(mut self, sequence: impl Into<String>) -> Self {
        self.stop.get_or_insert_with(Vec::new).push(sequence.into());
        self
    }
}

/// A text completion as OpenAI writes it (`"object": "text_completion"`); also each chunk of a
/// streamed one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextCompletion {
    /// Its id (`cmpl-…`, derived from the record id).
    #[serde(default)]
    pub id: String,
    /// `text_completion`.
    #[serde(default = "text_completion")]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The model that answered.
    #[serde(default)]
    pub model: String,
    /// The answers (one unless `n` asked for more).
    #[serde(default)]
    pub choices: Vec<CompletionChoice>,
    /// Token counts, when the engine reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Fields this client does not know, passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn text_completion() -> String {
    "text_completion".into()
}

impl TextCompletion {
    /// The text of the first choice.
    pub fn text(&self) -> Option<&str> {
        self.choices
            .iter()
            .find(|c| c.index == 0)
            .map(|c| c.text.as_str())
    }
}

/// One answer of a text completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionChoice {
    /// The text generated (a piece of it, in a stream).
    #[serde(default)]
    pub text: String,
    /// Which answer.
    #[serde(default)]
    pub index: u32,
    /// Log probabilities, when asked for.
    #[serde(default)]
    pub logprobs: Option<Value>,
    /// Why generation stopped.
    #[serde(default, deserialize_with = "finish_reason")]
    pub finish_reason: Option<FinishReason>,
    /// Fields this client does not know, passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Reads `finish_reason`, where `null`, `""` and a missing field all mean "not finished".
fn finish_reason<'de, D: Deserializer<'de>>(d: D) -> Result<Option<FinishReason>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.and_then(|s| FinishReason::parse(&s)))
}

/// A whole text completion and the id of its record.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionResponse {
    /// The completion.
    pub completion: TextCompletion,
    /// The record's id (`x-club-request-id`).
    pub record_id: Option<String>,
}

impl CompletionResponse {
    /// The text of the first choice.
    pub fn text(&self) -> Option<&str> {
        self.completion.text()
    }
}

/// A streamed text completion: a [`Stream`] of the first choice's text pieces as they arrive.
///
/// As with [`ChatStream`](crate::ChatStream), an error inside the stream or a timeout between
/// pieces ends it with an error; [`usage`](Self::usage) and
/// [`finish_reason`](Self::finish_reason) are known once it has ended, and
/// [`record_id`](Self::record_id) from the start. [`collect`](Self::collect) waits for the whole
/// answer.
pub struct CompletionStream {
    record_id: Option<String>,
    inner: EventStream<TextCompletion>,
    head: Option<TextCompletion>,
    usage: Option<Usage>,
    finish_reason: Option<FinishReason>,
    finished: bool,
}

impl CompletionStream {
    /// The record's id (`x-club-request-id`).
    pub fn record_id(&self) -> Option<String> {
        self.record_id.clone()
    }

    /// The token counts the stream reported (known once it has ended).
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// Why generation stopped (known once the last piece arrived).
    pub fn finish_reason(&self) -> Option<&FinishReason> {
        self.finish_reason.as_ref()
    }

    /// Whether the stream has ended (with `[DONE]` or an error).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Waits for the whole answer and assembles it into one completion.
    pub async fn collect(mut self) -> Result<CompletionResponse, Error> {
        use futures_util::StreamExt;
        let mut text = String::new();
        while let Some(piece) = self.next().await {
            text.push_str(&piece?);
        }
        let mut completion = self.head.take().unwrap_or_else(|| TextCompletion {
            id: String::new(),
            object: text_completion(),
            created: 0,
            model: String::new(),
            choices: Vec::new(),
            usage: None,
            extra: Map::new(),
        });
        completion.choices = vec![CompletionChoice {
            text,
            index: 0,
            logprobs: None,
            finish_reason: self.finish_reason.take(),
            extra: Map::new(),
        }];
        completion.usage = self.usage.take();
        Ok(CompletionResponse {
            completion,
            record_id: self.record_id,
        })
    }
}

impl std::fmt::Debug for CompletionStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompletionStream")
            .field("record_id", &self.record_id)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl Stream for CompletionStream {
    type Item = Result<String, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.finished {
                return Poll::Ready(None);
            }
            let chunk = match self.inner.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.finished = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(error))) => {
                    self.finished = true;
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(Some(Ok(chunk))) => chunk,
            };
            let TextCompletion {
                id,
                object,
                created,
                model,
                choices,
                usage,
                extra,
            } = chunk;
            if let Some(usage) = usage {
                self.usage = Some(usage);
            }
            if self.head.is_none() {
                self.head = Some(TextCompletion {
                    id,
                    object,
                    created,
                    model,
                    choices: Vec::new(),
                    usage: None,
                    extra,
                });
            }
            let mut text = String::new();
            for choice in choices.into_iter().filter(|c| c.index == 0) {
                if let Some(reason) = choice.finish_reason {
                    self.finish_reason = Some(reason);
                }
                text.push_str(&choice.text);
            }
            if !text.is_empty() {
                return Poll::Ready(Some(Ok(text)));
            }
        }
    }
}

/// Reads one event of a streamed completion.
fn completion_event(data: &str) -> Result<Event<TextCompletion>, serde_json::Error> {
    let data = data.trim();
    if data == "[DONE]" {
        return Ok(Event::Done);
    }
    let mut chunk: TextCompletion = serde_json::from_str(data)?;
    // `{"error": {...}}` without choices is an error sent inside the stream.
    if chunk.choices.is_empty()
        && let Some(error) = chunk.extra.remove("error").filter(|e| !e.is_null())
    {
        return Ok(Event::Error(serde_json::from_value::<ApiError>(error)?));
    }
    let output = chunk.choices.iter().any(|c| !c.text.is_empty());
    Ok(Event::Item(chunk, output))
}

/// What to embed: one text or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text (one embedding).
    Text(String),
    /// Several texts (one embedding each, in order).
    Texts(Vec<String>),
}

impl From<&str> for EmbeddingInput {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl From<String> for EmbeddingInput {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<Vec<String>> for EmbeddingInput {
    fn from(texts: Vec<String>) -> Self {
        Self::Texts(texts)
    }
}

impl From<Vec<&str>> for EmbeddingInput {
    fn from(texts: Vec<&str>) -> Self {
        Self::Texts(texts.into_iter().map(str::to_owned).collect())
    }
}

impl<const N: usize> From<[&str; N]> for EmbeddingInput {
    fn from(texts: [&str; N]) -> Self {
        Self::Texts(texts.into_iter().map(str::to_owned).collect())
    }
}

/// How the vectors travel: JSON numbers, or base64 of little-endian `f32`s (a third of the
/// size). The client reads either into `Vec<f32>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum EncodingFormat {
    /// JSON numbers (OpenAI's default).
    Float,
    /// Base64 of little-endian `f32`s.
    Base64,
}

/// An embeddings request: `EmbeddingsRequest::new(model, input)`, then the builder methods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EmbeddingsRequest {
    /// The model.
    pub model: String,
    /// The text or texts.
    pub input: EmbeddingInput,
    /// How the vectors travel (the server's default, float, when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<EncodingFormat>,
    /// The number of dimensions, for models that can shorten their vectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    /// Other parameters, sent as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl EmbeddingsRequest {
    /// A request for the embeddings of `input` (a text, or several) by `model`.
    pub fn new(model: impl Into<String>, input: impl Into<EmbeddingInput>) -> Self {
        Self {
            model: model.into(),
            input: input.into(),
            encoding_format: None,
            dimensions: None,
            extra: Map::new(),
        }
    }

    /// Asks for the vectors as JSON numbers or as base64.
    pub fn encoding_format(mut self, format: EncodingFormat) -> Self {
        self.encoding_format = Some(format);
        self
    }

    /// Asks for vectors of `dimensions` numbers.
    pub fn dimensions(mut self, dimensions: u32) -> Self {
        self.dimensions = Some(dimensions);
        self
    }
}

/// The answer of `/v1/embeddings` (`"object": "list"`), its vectors decoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingList {
    /// `list`.
    #[serde(default = "list")]
    pub object: String,
    /// One embedding per input, in the order of the inputs.
    pub data: Vec<Embedding>,
    /// The model that answered.
    #[serde(default)]
    pub model: String,
    /// Token counts, when the engine reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<EmbeddingUsage>,
    /// Fields this client does not know, passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn list() -> String {
    "list".into()
}

/// One input's embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    /// `embedding`.
    #[serde(default = "embedding")]
    pub object: String,
    /// Which input it is of.
    #[serde(default)]
    pub index: u32,
    /// The vector, read from JSON numbers or from base64 (written back as numbers).
    #[serde(deserialize_with = "vector")]
    pub embedding: Vec<f32>,
}

fn embedding() -> String {
    "embedding".into()
}

/// The token counts of an embeddings request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingUsage {
    /// Tokens in the inputs.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// The same, as OpenAI writes it.
    #[serde(default)]
    pub total_tokens: u64,
}

/// Reads a vector written as JSON numbers or as base64 of little-endian `f32`s.
fn vector<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
    struct Vector;
    impl<'de> serde::de::Visitor<'de> for Vector {
        type Value = Vec<f32>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array of numbers or a base64 string")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
            decode_f32s(text).map_err(E::custom)
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(x) = seq.next_element::<f32>()? {
                out.push(x);
            }
            Ok(out)
        }
    }
    d.deserialize_any(Vector)
}

/// Base64 of little-endian `f32`s, as `encoding_format: "base64"` answers them.
pub(crate) fn decode_f32s(text: &str) -> Result<Vec<f32>, String> {
    let bytes = crate::base64::decode(text)?;
    if !bytes.len().is_multiple_of(4) {
        return Err(format!(
            "a base64 vector of {} bytes is not a whole number of f32s",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Embeddings and the id of their record.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsResponse {
    /// The answer, its embeddings sorted by input.
    pub embeddings: EmbeddingList,
    /// The record's id (`x-club-request-id`).
    pub record_id: Option<String>,
}

impl EmbeddingsResponse {
    /// The vectors, in the order of the inputs.
    pub fn vectors(&self) -> impl Iterator<Item = &[f32]> {
        self.embeddings.data.iter().map(|e| e.embedding.as_slice())
    }

    /// The vector of the first (or only) input.
    pub fn first(&self) -> Option<&[f32]> {
        self.vectors().next()
    }

    /// The token counts, when the engine reported them.
    pub fn usage(&self) -> Option<EmbeddingUsage> {
        self.embeddings.usage
    }
}

impl Client {
    /// A whole text completion (`POST /v1/completions`) and its record id. Retried (per the
    /// policy) while it fails before the answer arrives; the whole-request timeout applies to
    /// each attempt.
    #[inline(never)]
    pub fn completion(
        &self,
        mut request: CompletionRequest,
    ) -> BoxFuture<'_, Result<CompletionResponse, Error>> {
        Box::pin(async move {
            request.stream = Some(false);
            request.stream_options = None;
            let answer = self.post_json(&["v1", "completions"], &request).await?;
            Ok(CompletionResponse {
                completion: answer.json()?,
                record_id: answer.record_id,
            })
        })
    }

    /// A streamed text completion: its text as it arrives, usage at the end (the client asks
    /// for it). Retried, like [`chat_stream`](Self::chat_stream), only until the stream starts;
    /// the first-token, idle and whole-request timeouts apply.
    #[inline(never)]
    pub fn completion_stream(
        &self,
        mut request: CompletionRequest,
    ) -> BoxFuture<'_, Result<CompletionStream, Error>> {
        Box::pin(async move {
            request.stream = Some(true);
            request
                .stream_options
                .get_or_insert_with(Default::default)
                .include_usage = Some(true);
            let body = serde_json::to_vec(&request).map_err(|e| {
                Error::Config(format!("the request cannot be written as JSON: {e}"))
            })?;
            let (response, timeouts) = self.open_stream(&["v1", "completions"], body).await?;
            let record_id = crate::client::record_id(&response);
            let inner = crate::stream::events(response.bytes_stream(), timeouts, completion_event);
            Ok(CompletionStream {
                record_id,
                inner,
                head: None,
                usage: None,
                finish_reason: None,
                finished: false,
            })
        })
    }

    /// The embeddings of one text or several (`POST /v1/embeddings`) and their record id, the
    /// vectors decoded whichever encoding the request asked for. Retried like
    /// [`chat`](Self::chat).
    #[inline(never)]
    pub fn embeddings(
        &self,
        request: EmbeddingsRequest,
    ) -> BoxFuture<'_, Result<EmbeddingsResponse, Error>> {
        Box::pin(async move {
            let answer = self.post_json(&["v1", "embeddings"], &request).await?;
            let mut embeddings: EmbeddingList = answer.json()?;
            embeddings.data.sort_by_key(|e| e.index);
            Ok(EmbeddingsResponse {
                embeddings,
                record_id: answer.record_id,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inference_club_core::record::Visibility;
    use serde_json::json;

    #[test]
    fn requests_are_written_in_openai_shape() {
        let request = CompletionRequest::new("m", "Once upon")
            .max_tokens(5)
            .stop("\n")
            .visibility(Visibility::Private)
            .param("seed", 7);
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({"model": "m", "prompt": "Once upon", "max_tokens": 5, "stop": ["\n"],
                   "visibility": "private", "seed": 7})
        );
        let one = EmbeddingsRequest::new("e", "hello");
        assert_eq!(
            serde_json::to_value(&one).unwrap(),
            json!({"model": "e", "input": "hello"})
        );
        let many = EmbeddingsRequest::new("e", ["a", "b"])
            .encoding_format(EncodingFormat::Base64)
            .dimensions(4);
        assert_eq!(
            serde_json::to_value(&many).unwrap(),
            json!({"model": "e", "input": ["a", "b"], "encoding_format": "base64",
                   "dimensions": 4})
        );
    }

    #[test]
    fn vectors_are_read_from_numbers_and_from_base64() {
        let floats = [0.5f32, -1.25, 3.0e-8, 1.0];
        let bytes: Vec<u8> = floats.iter().flat_map(|x| x.to_le_bytes()).collect();
        let answer = json!({
            "object": "list",
            "model": "e",
            "data": [
                {"object": "embedding", "index": 1, "embedding": crate::base64::encode(&bytes)},
                {"object": "embedding", "index": 0, "embedding": [0.5, -1.25, 3.0e-8, 1.0]}
            ],
            "usage": {"prompt_tokens": 3, "total_tokens": 3}
        });
        let list: EmbeddingList = serde_json::from_value(answer).unwrap();
        assert_eq!(list.data[0].embedding, floats);
        assert_eq!(list.data[1].embedding, floats);
        assert_eq!(list.usage.unwrap().total_tokens, 3);
        // Written back as numbers.
        let written = serde_json::to_value(&list).unwrap();
        assert_eq!(written["data"][0]["embedding"][1], json!(-1.25));
        assert!(
            decode_f32s("AAAA")
                .unwrap_err()
                .contains("whole number of f32s")
        );
        assert!(serde_json::from_value::<Embedding>(json!({"embedding": 5})).is_err());
    }

    #[test]
    fn stream_events_are_pieces_errors_and_done() {
        let piece = r#"{"id":"cmpl-1","object":"text_completion","created":1,"model":"m",
            "choices":[{"text":"Hi","index":0,"logprobs":null,"finish_reason":null}]}"#;
        let Event::Item(chunk, output) = completion_event(piece).unwrap() else {
            panic!("not an item")
        };
        assert!(output);
        assert_eq!(chunk.text(), Some("Hi"));
        assert_eq!(chunk.choices[0].finish_reason, None);
        let last = r#"{"choices":[{"text":"","index":0,"finish_reason":"length"}]}"#;
        let Event::Item(chunk, output) = completion_event(last).unwrap() else {
            panic!("not an item")
        };
        assert!(!output);
        assert_eq!(chunk.choices[0].finish_reason, Some(FinishReason::Length));
        let error = r#"{"error":{"message":"node died","type":"server_error","code":"x"}}"#;
        let Event::Error(error) = completion_event(error).unwrap() else {
            panic!("not an error")
        };
        assert_eq!(error.message, "node died");
        assert!(matches!(completion_event(" [DONE] "), Ok(Event::Done)));
        assert!(completion_event("{").is_err());
    }
}

crate::request::extra_params!(CompletionRequest, EmbeddingsRequest);
