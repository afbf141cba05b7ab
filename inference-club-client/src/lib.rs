//! Inference Club's consumer SDK: the coordinator's OpenAI-compatible API and the club's own
//! API, from Rust.
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use inference_club_client::{ChatEvent, ChatRequest, Client, RecordFilter, Visibility};
//!
//! # async fn run() -> Result<(), inference_club_client::Error> {
//! // Or `Client::from_env()`, which reads `CLUB_URL` and `CLUB_API_KEY`.
//! let client = Client::builder("http://127.0.0.1:8080")
//!     .api_key("icl_…")
//!     .first_token_timeout(std::time::Duration::from_secs(60))
//!     .build()?;
//!
//! // Stream an answer as it arrives; the request is recorded, here as unlisted.
//! let request = ChatRequest::new("llama3.2")
//!     .system("Be brief.")
//!     .user("Hello!")
//!     .visibility(Visibility::Unlisted);
//! let mut events = client.chat_stream(request).await?.events();
//! let mut record = None;
//! while let Some(event) = events.next().await {
//!     match event? {
//!         ChatEvent::Reasoning(text) => eprint!("{text}"),
//!         ChatEvent::Content(text) => print!("{text}"),
//!         ChatEvent::Done { record_id, usage } => {
//!             println!("\n({} tokens)", usage.map_or(0, |u| u.total_tokens));
//!             record = record_id;
//!         }
//!         _ => {}
//!     }
//! }
//!
//! // Every request is recorded: read it back, list my history, or delete it.
//! if let Some(id) = record {
//!     let stored = client.record(&id).await?;
//!     println!("{} took {:?} ms", stored.model_requested, stored.timing.latency_ms);
//!     client.delete_record(&id).await?;
//! }
//! let mut mine = client.my_requests(RecordFilter::new().limit(20));
//! while let Some(record) = mine.next().await {
//!     let record = record?;
//!     println!("{} {:?} {}", record.id, record.status, record.prompt().unwrap_or_default());
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The other OpenAI-compatible endpoints have typed calls of their own, each answering the
//! record id too: [`Client::completion`] and [`Client::completion_stream`] (text completions),
//! [`Client::embeddings`], [`Client::transcribe`] (a multipart upload), [`Client::speech`] and
//! [`Client::generate_image`].
//!
//! # Batches
//!
//! Many requests at once, run behind interactive traffic (OpenAI's Batch API): upload a JSONL
//! file of lines with [`Client::upload_file`], make a batch of it with [`Client::create_batch`],
//! follow it with [`Client::watch_batch`] or [`Client::wait_for_batch`], and read its answers
//! with [`Client::batch_results`]. [`Client::batches`], [`Client::cancel_batch`] and the file
//! calls ([`Client::files`], [`Client::file_content`], [`Client::delete_file`]) do the rest.
//!
//! ```no_run
//! use inference_club_client::{BatchEndpoint, Client, CreateBatch};
//!
//! # async fn run(client: Client) -> Result<(), inference_club_client::Error> {
//! let lines = r#"{"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "llama3.2", "messages": [{"role": "user", "content": "Hi"}]}}"#;
//! let file = client.upload_file("questions.jsonl", lines.as_bytes().to_vec()).await?;
//! let batch = client
//!     .create_batch(CreateBatch::new(file.id, BatchEndpoint::ChatCompletions).metadata("run", "1"))
//!     .await?;
//! client.wait_for_batch(&batch.id, std::time::Duration::from_secs(2)).await?;
//! for line in client.batch_results(&batch.id).await?.output {
//!     println!("{:?}: {:?}", line.custom_id, line.response.map(|r| r.status_code));
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Errors and retries
//!
//! Every call returns [`Error`], which keeps the server's message and code and answers
//! [`is_retryable`](Error::is_retryable), [`is_timeout`](Error::is_timeout),
//! [`status`](Error::status) and [`retry_after`](Error::retry_after). Failures before any output
//! are retried by the [`RetryPolicy`] (exponential backoff with jitter, honouring `Retry-After`);
//! a stream that has started is never retried, and an error the coordinator sends inside it ends
//! the stream as [`Error::InStream`].
#![warn(missing_docs)]

mod base64;
mod batches;
mod client;
mod club;
mod error;
mod media;
mod request;
mod retry;
mod stream;
mod text;
mod types;

pub use batches::{
    Batch, BatchEndpoint, BatchLineError, BatchLineResponse, BatchResultLine, BatchResults,
    BatchStatus, BatchWatch, CreateBatch, FileObject, IDEMPOTENCY_KEY_HEADER, RequestCounts,
};
pub use client::{
    ChatResponse, Client, ClientBuilder, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_URL, REQUEST_ID_HEADER,
};
pub use club::Paginated;
pub use error::{BoxError, Error, TimeoutPhase};
pub use inference_club_core::openai::{
    ChatCompletion, ChatCompletionChunk, ChatMessage, FinishReason, ToolCallDelta, Usage,
};
pub use inference_club_core::record::{Status, Visibility};
pub use media::{
    AudioFormat, GeneratedImage, ImageData, ImageFormat, ImageRequest, ImagesResponse,
    SpeechRequest, SpeechResponse, TranscriptionFormat, TranscriptionRequest,
    TranscriptionResponse, VISIBILITY_HEADER,
};
pub use request::ChatRequest;
pub use retry::RetryPolicy;
pub use stream::{ChatEvent, ChatEvents, ChatStream};
pub use text::{
    CompletionChoice, CompletionRequest, CompletionResponse, CompletionStream, Embedding,
    EmbeddingInput, EmbeddingList, EmbeddingUsage, EmbeddingsRequest, EmbeddingsResponse,
    EncodingFormat, TextCompletion,
};
pub use types::{
    Account, AccountDeletion, AccountSettings, ApiKey, AttemptError, CreatedKey,
    DeviceAuthorization, DeviceToken, ModelInfo, Page, ProviderCounts, ProviderModel,
    ProviderProfile, ProviderRef, ProviderSettings, Record, RecordAttempt, RecordFilter,
    RecordResponse, RecordTiming, RecordUsage, RoutingPreference,
};

/// The README's example, compiled as a test (`cargo test --doc`).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
