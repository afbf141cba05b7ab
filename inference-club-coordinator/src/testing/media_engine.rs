//! A fake media engine on 127.0.0.1 for the audio and image endpoints: a small real HTTP server
//! speaking OpenAI's wire format, with deterministic answers that tests can assert.
//!
//! - `POST /v1/audio/transcriptions` (`multipart/form-data` with the parts `file` and `model`,
//!   optionally `response_format` = `json` (default) | `text` | `verbose_json` | `srt` | `vtt`,
//!   `language`, `prompt`, `temperature`, …): the transcript is [`transcript_of`] the upload,
//!   `transcript of N bytes of CONTENT-TYPE` (`text` answers it as `text/plain` with no trailing
//!   newline; `srt` and `vtt` as one cue).
//! - `POST /v1/audio/speech` (JSON `model`, `input`, `voice`, optional `response_format`,
//!   `speed`): a real WAV (RIFF header, 24 kHz mono 16-bit PCM, a tone) of
//!   [`SAMPLES_PER_CHAR`] samples per character of `input`, `Content-Type: audio/wav`; with
//!   `response_format: pcm` the same samples without the header (`audio/pcm`). **No
//!   `response_format` means `wav` here** (OpenAI's default is `mp3`, which this fake cannot
//!   make); `mp3`, `opus`, `aac`, `flac` and anything else are refused with a 400.
//! - `POST /v1/images/generations` (JSON `prompt`, optional `model`, `n` 1–10, `size`,
//!   `response_format`): `{"created", "data": [{"b64_json", "revised_prompt"}, …]}` with `n`
//!   real 8×8 PNGs ([`png_for`] of the prompt and the image's index). **`response_format: url`
//!   is refused with a 400** (`this engine answers b64_json only`): a coordinator that serves
//!   `url` answers must ask its engine for `b64_json` and store the image itself.
//! - `GET /v1/models`: the models given to [`MediaEngine::start_with_models`].
//!
//! Every request to these routes is recorded ([`MediaEngine::asked`]) before it is answered,
//! refused ones included, with its `Authorization` header, its JSON body (for a multipart
//! upload: its text parts as strings) and the uploaded file. Errors use OpenAI's envelope
//! `{"error": {"message", "type", "param", "code"}}`. [`MediaEngine::fail_next`] makes the next
//! request fail with a chosen status.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

/// The models a [`MediaEngine::start`] lists.
pub const DEFAULT_MODELS: [&str; 3] = ["whisper-1", "tts-1", "dall-e-test"];
/// The sample rate of the speech it makes (OpenAI's `pcm` rate).
pub const SAMPLE_RATE: u32 = 24_000;
/// How many samples of speech each character of the input makes (50 ms).
pub const SAMPLES_PER_CHAR: usize = 1_200;
/// The width and height of the images it makes.
pub const IMAGE_SIDE: u32 = 8;
/// The largest request body it reads (uploads included).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// A file uploaded in a multipart request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedFile {
    /// The part's file name, if it had one.
    pub file_name: Option<String>,
    /// The part's content type, if it had one.
    pub content_type: Option<String>,
    /// The bytes.
    pub data: Bytes,
}

/// One request the engine received.
#[derive(Debug, Clone, PartialEq)]
pub struct Asked {
    /// Its path (`/v1/audio/speech`, …).
    pub path: String,
    /// Its `Authorization` header.
    pub authorization: Option<String>,
    /// Its `Content-Type` header.
    pub content_type: Option<String>,
    /// Its JSON body, or for a multipart upload an object of its text parts (as strings; a name
    /// given twice keeps the last). `Null` when the body was not JSON.
    pub body: Value,
    /// The part `file` of a multipart upload.
    pub file: Option<UploadedFile>,
}

impl Asked {
    /// The string field `name` of the body.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.body.get(name).and_then(Value::as_str)
    }

    /// The model the request named.
    pub fn model(&self) -> Option<&str> {
        self.field("model")
    }
}

#[derive(Debug)]
struct Inner {
    models: Vec<String>,
    asked: Vec<Asked>,
    fail_next: Option<(StatusCode, String)>,
}

type Shared = Arc<Mutex<Inner>>;

/// A fake OpenAI-compatible media engine serving on 127.0.0.1 (see the module docs).
#[derive(Clone)]
pub struct MediaEngine {
    /// Its base URL, ending in `/v1` (`http://127.0.0.1:PORT/v1`): what an `OpenAiCompatible`
    /// backend or a manifest's service `url` takes.
    pub url: String,
    inner: Shared,
}

impl std::fmt::Debug for MediaEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaEngine")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl MediaEngine {
    /// Starts an engine listing [`DEFAULT_MODELS`].
    pub async fn start() -> Self {
        Self::start_with_models(DEFAULT_MODELS).await
    }

    /// Starts an engine whose `GET /v1/models` lists `models` (it answers any model name).
    pub async fn start_with_models(models: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            models: models.into_iter().map(Into::into).collect(),
            asked: Vec::new(),
            fail_next: None,
        }));
        let app = Router::new()
            .route("/v1/models", get(list_models))
            .route("/v1/audio/transcriptions", post(transcriptions))
            .route("/v1/audio/speech", post(speech))
            .route("/v1/images/generations", post(images))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, inner }
    }

    /// Every request received so far, oldest first.
    pub fn asked(&self) -> Vec<Asked> {
        self.inner.lock().unwrap().asked.clone()
    }

    /// The requests received so far on `path` (`/v1/audio/speech`, …), oldest first.
    pub fn asked_on(&self, path: &str) -> Vec<Asked> {
        self.asked()
            .into_iter()
            .filter(|a| a.path == path)
            .collect()
    }

    /// The last request received on `path`.
    pub fn last_on(&self, path: &str) -> Option<Asked> {
        self.asked_on(path).pop()
    }

    /// Forgets the requests received so far.
    pub fn clear(&self) {
        self.inner.lock().unwrap().asked.clear();
    }

    /// Makes the next request (to any route but `/v1/models`) fail with `status` and an OpenAI
    /// error carrying `message`.
    pub fn fail_next(&self, status: u16, message: &str) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        self.inner.lock().unwrap().fail_next = Some((status, message.to_owned()));
    }
}

/// The transcript the engine gives an upload of `bytes` bytes with `content_type` (the part's
/// content type, `application/octet-stream` when it had none).
pub fn transcript_of(bytes: usize, content_type: Option<&str>) -> String {
    format!(
        "transcript of {bytes} bytes of {}",
        content_type.unwrap_or("application/octet-stream")
    )
}

/// The PCM samples (16-bit little-endian, mono, [`SAMPLE_RATE`]) of the speech for `input`:
/// [`SAMPLES_PER_CHAR`] per character, a 440 Hz tone.
pub fn speech_pcm(input: &str) -> Vec<u8> {
    let samples = input.chars().count() * SAMPLES_PER_CHAR;
    let mut pcm = Vec::with_capacity(samples * 2);
    for i in 0..samples {
        let t = i as f64 / f64::from(SAMPLE_RATE);
        let sample = (f64::sin(2.0 * std::f64::consts::PI * 440.0 * t) * 8_000.0) as i16;
        pcm.extend_from_slice(&sample.to_le_bytes());
    }
    pcm
}

/// `pcm` (16-bit mono at [`SAMPLE_RATE`]) as a WAV file: a 44-byte RIFF header, then the data.
pub fn wav(pcm: &[u8]) -> Vec<u8> {
    let data_len = u32::try_from(pcm.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(44 + pcm.len());
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVE");
    out.extend_from_slice(b"fmt ");
    out.extend_from_slice(&16_u32.to_le_bytes()); // size of the fmt chunk
    out.extend_from_slice(&1_u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1_u16.to_le_bytes()); // mono
    out.extend_from_slice(&SAMPLE_RATE.to_le_bytes());
    out.extend_from_slice(&(SAMPLE_RATE * 2).to_le_bytes()); // bytes per second
    out.extend_from_slice(&2_u16.to_le_bytes()); // bytes per frame
    out.extend_from_slice(&16_u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    out.extend_from_slice(pcm);
    out
}

/// The WAV the engine answers for `input`.
pub fn speech_wav(input: &str) -> Vec<u8> {
    wav(&speech_pcm(input))
}

/// A valid [`IMAGE_SIDE`]×[`IMAGE_SIDE`] RGB PNG whose colours are derived from `prompt` and
/// `index` (the same arguments always give the same bytes).
pub fn png_for(prompt: &str, index: usize) -> Vec<u8> {
    let seed = fnv1a(format!("{index}:{prompt}").as_bytes());
    let [r, g, b, ..] = seed.to_le_bytes();
    let side = IMAGE_SIDE as usize;
    // The raw scanlines: a filter byte (0: none), then RGB per pixel.
    let mut raw = Vec::with_capacity(side * (1 + side * 3));
    for y in 0..side {
        raw.push(0);
        for x in 0..side {
            let shade = ((x + y) * 255 / (2 * side - 2)) as u8;
            raw.extend_from_slice(&[r ^ shade, g, b.wrapping_add(shade)]);
        }
    }
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&IMAGE_SIDE.to_be_bytes());
    ihdr.extend_from_slice(&IMAGE_SIDE.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8 bits, RGB, deflate, no filter, no interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png_chunk(&mut png, b"IHDR", &ihdr);
    png_chunk(&mut png, b"IDAT", &zlib_stored(&raw));
    png_chunk(&mut png, b"IEND", &[]);
    png
}

fn png_chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend_from_slice(&u32::try_from(data.len()).unwrap_or(0).to_be_bytes());
    let start = png.len();
    png.extend_from_slice(kind);
    png.extend_from_slice(data);
    let crc = crc32(&png[start..]);
    png.extend_from_slice(&crc.to_be_bytes());
}

/// `data` as a zlib stream of stored (uncompressed) deflate blocks.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = if data.is_empty() {
        vec![&[][..]]
    } else {
        data.chunks(65_535).collect()
    };
    let last = blocks.len() - 1;
    for (i, block) in blocks.into_iter().enumerate() {
        out.push(u8::from(i == last));
        let len = u16::try_from(block.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    let (mut a, mut b) = (1_u32, 0_u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffff_u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0_u32, |n, (i, byte)| n | u32::from(*byte) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An answer in OpenAI's error envelope.
fn error(status: StatusCode, message: &str, param: Option<&str>, code: Option<&str>) -> Response {
    let kind = if status.is_server_error() {
        "server_error"
    } else {
        "invalid_request_error"
    };
    (
        status,
        axum::Json(json!({
            "error": {"message": message, "type": kind, "param": param, "code": code}
        })),
    )
        .into_response()
}

fn bad_request(message: &str, param: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        message,
        Some(param),
        Some("invalid_value"),
    )
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Records the request and answers the failure [`MediaEngine::fail_next`] set, if any.
fn record(
    inner: &Shared,
    path: &str,
    headers: &HeaderMap,
    body: Value,
    file: Option<UploadedFile>,
) -> Option<Response> {
    let mut inner = inner.lock().unwrap();
    inner.asked.push(Asked {
        path: path.to_owned(),
        authorization: header_text(headers, header::AUTHORIZATION),
        content_type: header_text(headers, header::CONTENT_TYPE),
        body,
        file,
    });
    inner
        .fail_next
        .take()
        .map(|(status, message)| error(status, &message, None, None))
}

async fn list_models(State(inner): State<Shared>) -> Response {
    let models = inner.lock().unwrap().models.clone();
    let created = now_unix();
    let data: Vec<Value> = models
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": created, "owned_by": "media-engine"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

async fn transcriptions(
    State(inner): State<Shared>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    const PATH: &str = "/v1/audio/transcriptions";
    let mut multipart = match multipart {
        Ok(multipart) => multipart,
        Err(rejection) => {
            record(&inner, PATH, &headers, Value::Null, None);
            return bad_request(
                &format!("expected a multipart/form-data body: {rejection}"),
                "file",
            );
        }
    };
    let mut fields = Map::new();
    let mut file = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => {
                record(&inner, PATH, &headers, Value::Object(fields), file);
                return bad_request(&format!("malformed multipart body: {e}"), "file");
            }
        };
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            let file_name = field.file_name().map(str::to_owned);
            let content_type = field.content_type().map(str::to_owned);
            match field.bytes().await {
                Ok(data) => {
                    file = Some(UploadedFile {
                        file_name,
                        content_type,
                        data,
                    });
                }
                Err(e) => {
                    record(&inner, PATH, &headers, Value::Object(fields), file);
                    return bad_request(&format!("cannot read the file: {e}"), "file");
                }
            }
        } else {
            match field.text().await {
                Ok(text) => {
                    fields.insert(name, Value::String(text));
                }
                Err(e) => {
                    record(&inner, PATH, &headers, Value::Object(fields), file);
                    return bad_request(&format!("cannot read the part `{name}`: {e}"), &name);
                }
            }
        }
    }
    let body = Value::Object(fields);
    if let Some(failure) = record(&inner, PATH, &headers, body.clone(), file.clone()) {
        return failure;
    }
    let Some(file) = file else {
        return bad_request("the part `file` is missing", "file");
    };
    if body
        .get("model")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return bad_request("the part `model` is missing", "model");
    }
    let text = transcript_of(file.data.len(), file.content_type.as_deref());
    let seconds = audio_seconds(&file.data);
    let format = body
        .get("response_format")
        .and_then(Value::as_str)
        .unwrap_or("json");
    let plain = |content_type: &'static str, text: String| {
        ([(header::CONTENT_TYPE, content_type)], text).into_response()
    };
    match format {
        "json" => axum::Json(json!({
            "text": text,
            "usage": {"type": "duration", "seconds": seconds.ceil() as u64}
        }))
        .into_response(),
        "text" => plain("text/plain; charset=utf-8", text),
        "verbose_json" => axum::Json(json!({
            "task": "transcribe",
            "language": body.get("language").and_then(Value::as_str).unwrap_or("english"),
            "duration": seconds,
            "text": text,
            "segments": [{
                "id": 0, "seek": 0, "start": 0.0, "end": seconds, "text": text,
                "tokens": [50364, 50365], "temperature": 0.0, "avg_logprob": -0.25,
                "compression_ratio": 1.0, "no_speech_prob": 0.01
            }],
            "usage": {"type": "duration", "seconds": seconds.ceil() as u64}
        }))
        .into_response(),
        "srt" => plain(
            "text/plain; charset=utf-8",
            format!("1\n00:00:00,000 --> {}\n{text}\n\n", srt_time(seconds, ',')),
        ),
        "vtt" => plain(
            "text/vtt; charset=utf-8",
            format!(
                "WEBVTT\n\n00:00:00.000 --> {}\n{text}\n\n",
                srt_time(seconds, '.')
            ),
        ),
        other => bad_request(
            &format!(
                "response_format must be one of json, text, srt, verbose_json, vtt; got `{other}`"
            ),
            "response_format",
        ),
    }
}

/// How long the upload plays: from its header when it is a PCM WAV, else as if it were 16 kHz
/// 16-bit mono.
fn audio_seconds(data: &[u8]) -> f64 {
    let read_u32 = |at: usize| {
        data.get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
    };
    if data.starts_with(b"RIFF")
        && data.get(8..12) == Some(b"WAVE")
        && let Some(rate) = read_u32(28).filter(|r| *r > 0)
    {
        let payload = data.len().saturating_sub(44);
        return payload as f64 / f64::from(rate);
    }
    data.len() as f64 / 32_000.0
}

fn srt_time(seconds: f64, separator: char) -> String {
    let millis = (seconds * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{separator}{:03}",
        millis / 3_600_000,
        millis / 60_000 % 60,
        millis / 1000 % 60,
        millis % 1000
    )
}

/// The JSON object of a body, or why it is none.
fn json_object(body: &Bytes) -> Result<Value, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) if value.is_object() => Ok(value),
        Ok(_) => Err("the body must be a JSON object".into()),
        Err(e) => Err(format!("the body is not valid JSON: {e}")),
    }
}

async fn speech(State(inner): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    const PATH: &str = "/v1/audio/speech";
    let parsed = json_object(&body);
    let recorded = parsed.as_ref().map_or(Value::Null, Clone::clone);
    if let Some(failure) = record(&inner, PATH, &headers, recorded, None) {
        return failure;
    }
    let body = match parsed {
        Ok(body) => body,
        Err(refusal) => return bad_request(&refusal, "body"),
    };
    if body
        .get("model")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return bad_request("`model` is required", "model");
    }
    let Some(input) = body.get("input").and_then(Value::as_str) else {
        return bad_request("`input` is required and must be a string", "input");
    };
    if input.is_empty() {
        return bad_request("`input` must not be empty", "input");
    }
    if body.get("voice").and_then(Value::as_str).is_none() {
        return bad_request("`voice` is required", "voice");
    }
    match body
        .get("response_format")
        .and_then(Value::as_str)
        .unwrap_or("wav")
    {
        "wav" => ([(header::CONTENT_TYPE, "audio/wav")], speech_wav(input)).into_response(),
        "pcm" => ([(header::CONTENT_TYPE, "audio/pcm")], speech_pcm(input)).into_response(),
        other => bad_request(
            &format!("this engine makes only wav and pcm, not `{other}`"),
            "response_format",
        ),
    }
}

async fn images(State(inner): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    const PATH: &str = "/v1/images/generations";
    let parsed = json_object(&body);
    let recorded = parsed.as_ref().map_or(Value::Null, Clone::clone);
    if let Some(failure) = record(&inner, PATH, &headers, recorded, None) {
        return failure;
    }
    let body = match parsed {
        Ok(body) => body,
        Err(refusal) => return bad_request(&refusal, "body"),
    };
    let Some(prompt) = body.get("prompt").and_then(Value::as_str) else {
        return bad_request("`prompt` is required and must be a string", "prompt");
    };
    let n = match body.get("n") {
        None | Some(Value::Null) => 1,
        Some(n) => match n.as_u64() {
            Some(n @ 1..=10) => n as usize,
            _ => return bad_request("`n` must be an integer from 1 to 10", "n"),
        },
    };
    match body.get("response_format").and_then(Value::as_str) {
        None | Some("b64_json") => {}
        Some("url") => {
            return bad_request(
                "this engine answers b64_json only, not url",
                "response_format",
            );
        }
        Some(other) => {
            return bad_request(
                &format!("response_format must be b64_json or url, not `{other}`"),
                "response_format",
            );
        }
    }
    let data: Vec<Value> = (0..n)
        .map(|index| json!({"b64_json": base64(&png_for(prompt, index)), "revised_prompt": prompt}))
        .collect();
    axum::Json(json!({"created": now_unix(), "data": data})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_vectors() {
        for (raw, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), encoded);
        }
    }

    #[test]
    fn crc_and_png_are_well_formed() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        let png = png_for("a cat", 0);
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert_eq!(&png[12..16], b"IHDR");
        assert!(png.ends_with(&[0xae, 0x42, 0x60, 0x82])); // IEND's CRC
        assert_ne!(png, png_for("a cat", 1));
        assert_eq!(png, png_for("a cat", 0));
    }

    #[test]
    fn wav_length_follows_the_input() {
        let short = speech_wav("hi");
        let long = speech_wav("hello");
        assert_eq!(short.len(), 44 + 2 * 2 * SAMPLES_PER_CHAR);
        assert_eq!(long.len(), 44 + 5 * 2 * SAMPLES_PER_CHAR);
        assert_eq!(&short[..4], b"RIFF");
        assert_eq!(&short[8..16], b"WAVEfmt ");
        assert!((audio_seconds(&long) - 0.25).abs() < 1e-9);
        assert_eq!(srt_time(3_723.5, ','), "01:02:03,500");
    }
}
