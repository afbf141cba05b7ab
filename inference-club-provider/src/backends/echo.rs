//! A test engine that repeats the prompt back. Not a language model.

use std::time::Duration;

use async_stream::stream;
use async_trait::async_trait;
use inference_club_core::endpoint::Endpoint;
use inference_club_core::openai::{
    ChatCompletionChunk, ChatCompletionRequest, ChunkDelta, FinishReason, Model, Role, Usage,
};
use inference_club_core::provider::{
    Call, CallOutput, CallStream, ChunkStream, Provider, ProviderError, RequestContext,
};
use serde_json::{Value, json};

/// **A test engine, not a language model**: it answers every request with `echo: ` and the last
/// user message, one word per chunk, optionally preceded by a reasoning trace, with usage counted
/// in words. Deterministic, so tests and the demo can assert what they get. Honours
/// `max_tokens`/`max_completion_tokens` (in words), and cancellation.
///
/// It also answers two other endpoints ([`Provider::call`]): `/v1/completions` with the prompt
/// itself as the completion text (whole, or streamed one word per chunk; `max_tokens` in words),
/// and `/v1/embeddings` with [`Echo::embedding`] of each input. Others are refused with
/// [`ProviderError::unsupported`].
#[derive(Debug, Clone)]
pub struct Echo {
    models: Vec<String>,
    pace: Duration,
    reasoning: bool,
}

impl Default for Echo {
    fn default() -> Self {
        Self::new()
    }
}

impl Echo {
    /// An echo engine serving the model `echo`, with no pacing and no reasoning.
    pub fn new() -> Self {
        Self {
            models: vec!["echo".into()],
            pace: Duration::ZERO,
            reasoning: false,
        }
    }

    /// Serve these model ids instead of `echo`.
    pub fn models(mut self, models: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.models = models.into_iter().map(Into::into).collect();
        self
    }

    /// Wait this long before each chunk.
    pub fn pace(mut self, pace: Duration) -> Self {
        self.pace = pace;
        self
    }

    /// Think out loud first: a reasoning trace precedes the answer.
    pub fn with_reasoning(mut self, on: bool) -> Self {
        self.reasoning = on;
        self
    }

    /// The answer text this engine gives to `request`.
    pub fn answer(request: &ChatCompletionRequest) -> String {
        let prompt = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .and_then(|m| m.text_content())
            .unwrap_or_default();
        format!("echo: {prompt}")
    }

    /// The number of floats in each of this engine's embeddings.
    pub const EMBEDDING_DIMENSIONS: usize = 8;

    /// The embedding this engine gives `text`: [`Echo::EMBEDDING_DIMENSIONS`] floats derived
    /// from a hash of the text (FNV-1a, then SplitMix64), scaled to length 1. The same text
    /// always gives the same vector, on every platform and build; different texts differ.
    pub fn embedding(text: &str) -> Vec<f64> {
        let mut state = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        // 53 random bits as a float in [-1, 1).
        let raw: Vec<f64> = (0..Self::EMBEDDING_DIMENSIONS)
            .map(|_| (next() >> 11) as f64 / (1_u64 << 52) as f64 - 1.0)
            .collect();
        let length = raw.iter().map(|x| x * x).sum::<f64>().sqrt();
        if length == 0.0 {
            let mut unit = vec![0.0; Self::EMBEDDING_DIMENSIONS];
            unit[0] = 1.0;
            return unit;
        }
        raw.into_iter().map(|x| x / length).collect()
    }

    fn check_model(&self, model: &str) -> Result<(), ProviderError> {
        if self.models.iter().any(|m| m == model) {
            Ok(())
        } else {
            Err(ProviderError::ModelNotFound {
                model: model.to_owned(),
            })
        }
    }

    /// The answer to `/v1/completions`.
    fn completion(
        &self,
        call: &Call,
        context: &RequestContext,
    ) -> Result<CallStream, ProviderError> {
        let prompt = match call.body.get("prompt") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(prompt)) => prompt.clone(),
            Some(Value::Array(prompts)) => match prompts.first() {
                None => String::new(),
                Some(Value::String(prompt)) => prompt.clone(),
                Some(_) => return Err(text_only("prompt")),
            },
            Some(_) => return Err(text_only("prompt")),
        };
        let prompt_words = prompt.split_whitespace().count() as u64;
        let mut answer = words(&prompt);
        let finish = match call
            .body
            .get("max_tokens")
            .and_then(Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
        {
            Some(limit) if answer.len() > limit => {
                answer.truncate(limit);
                "length"
            }
            _ => "stop",
        };
        let completion_words = answer.len() as u64;
        let usage = json!(Usage::new(prompt_words, completion_words));
        let id = format!("cmpl-echo-{}", context.request_id);
        let model = call.model().to_owned();
        let created = now_unix();
        let object = move |text: &str, finish: Option<&str>| {
            json!({
                "id": id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}],
            })
        };
        if !call.is_stream() {
            let mut whole = object(&answer.concat(), Some(finish));
            whole["usage"] = usage;
            return Ok(Box::pin(futures_util::stream::once(async move {
                Ok(CallOutput::Json(whole))
            })));
        }
        let want_usage = call
            .body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let pace = self.pace;
        let cancel = context.cancel.clone();
        Ok(Box::pin(stream! {
            for word in answer {
                if !pace.is_zero() {
                    tokio::select! {
                        () = cancel.cancelled() => {
                            yield Err(ProviderError::Cancelled);
                            return;
                        }
                        () = tokio::time::sleep(pace) => {}
                    }
                }
                yield Ok(CallOutput::Json(object(&word, None)));
            }
            yield Ok(CallOutput::Json(object("", Some(finish))));
            if want_usage {
                let mut last = object("", None);
                last["choices"] = json!([]);
                last["usage"] = usage;
                yield Ok(CallOutput::Json(last));
            }
        }))
    }

    /// The answer to `/v1/embeddings`.
    fn embeddings(call: &Call) -> Result<CallStream, ProviderError> {
        let inputs: Vec<&str> = match call.body.get("input") {
            Some(Value::String(text)) => vec![text],
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().ok_or_else(|| text_only("input")))
                .collect::<Result<_, _>>()?,
            _ => return Err(text_only("input")),
        };
        let tokens: u64 = inputs
            .iter()
            .map(|text| text.split_whitespace().count() as u64)
            .sum();
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(index, text)| {
                json!({"object": "embedding", "index": index, "embedding": Self::embedding(text)})
            })
            .collect();
        let answer = json!({
            "object": "list",
            "data": data,
            "model": call.model(),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        });
        Ok(Box::pin(futures_util::stream::once(async move {
            Ok(CallOutput::Json(answer))
        })))
    }
}

/// The refusal of a field that is not text (or an array of texts).
fn text_only(field: &str) -> ProviderError {
    ProviderError::Rejected {
        status: 400,
        message: format!("the echo engine takes `{field}` only as a string or an array of strings"),
        code: Some("invalid_value".into()),
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn words(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    for ch in text.chars() {
        if ch.is_whitespace() && !current.trim().is_empty() {
            pieces.push(std::mem::take(&mut current));
        }
        current.push(ch);
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

#[async_trait]
impl Provider for Echo {
    async fn models(&self) -> Result<Vec<Model>, ProviderError> {
        Ok(self
            .models
            .iter()
            .map(|id| Model::new(id.clone(), "echo"))
            .collect())
    }

    async fn chat(
        &self,
        request: ChatCompletionRequest,
        context: RequestContext,
    ) -> Result<ChunkStream, ProviderError> {
        self.check_model(&request.model)?;
        let prompt_words: u64 = request
            .messages
            .iter()
            .filter_map(|m| m.text_content())
            .map(|t| t.split_whitespace().count() as u64)
            .sum();
        let limit = request
            .max_completion_tokens
            .or(request.max_tokens)
            .map(|n| n as usize);
        let reasoning = if self.reasoning {
            words(&format!("The user said {} words.", prompt_words))
        } else {
            Vec::new()
        };
        let mut answer = words(&Self::answer(&request));
        let finish = match limit {
            Some(limit) if answer.len() > limit => {
                answer.truncate(limit);
                FinishReason::Length
            }
            _ => FinishReason::Stop,
        };
        let id = format!("chatcmpl-echo-{}", context.request_id);
        let model = request.model.clone();
        let created = now_unix();
        let pace = self.pace;
        let want_usage = request.wants_stream_usage() || !request.is_stream();
        let cancel = context.cancel.clone();
        let chunk = move |delta: ChunkDelta| {
            ChatCompletionChunk::new(id.clone(), model.clone(), created).with_delta(delta)
        };
        Ok(Box::pin(stream! {
            let completion_words = (reasoning.len() + answer.len()) as u64;
            yield Ok(chunk(ChunkDelta { role: Some(Role::Assistant), ..ChunkDelta::default() }));
            let pieces = reasoning
                .into_iter()
                .map(ChunkDelta::reasoning)
                .chain(answer.into_iter().map(ChunkDelta::content));
            for delta in pieces {
                if !pace.is_zero() {
                    tokio::select! {
                        () = cancel.cancelled() => {
                            yield Err(ProviderError::Cancelled);
                            return;
                        }
                        () = tokio::time::sleep(pace) => {}
                    }
                }
                yield Ok(chunk(delta));
            }
            let mut last = chunk(ChunkDelta::default());
            if let Some(choice) = last.choices.first_mut() {
                choice.finish_reason = Some(finish);
            }
            yield Ok(last);
            if want_usage {
                let mut usage_chunk = chunk(ChunkDelta::default());
                usage_chunk.choices.clear();
                usage_chunk.usage = Some(Usage::new(prompt_words, completion_words));
                yield Ok(usage_chunk);
            }
        }))
    }

    async fn call(&self, call: Call, context: RequestContext) -> Result<CallStream, ProviderError> {
        match call.endpoint {
            Endpoint::Completions => {
                self.check_model(call.model())?;
                self.completion(&call, &context)
            }
            Endpoint::Embeddings => {
                self.check_model(call.model())?;
                Self::embeddings(&call)
            }
            other => Err(ProviderError::unsupported(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use inference_club_core::openai::{ChatCompletionAggregator, ChatMessage};

    #[tokio::test]
    async fn echoes_the_last_user_message_with_usage() {
        let echo = Echo::new().with_reasoning(true);
        let request = ChatCompletionRequest::new("echo", vec![ChatMessage::user("hello there")]);
        let mut stream = echo.chat(request, RequestContext::new("r1")).await.unwrap();
        let mut agg = ChatCompletionAggregator::new();
        while let Some(chunk) = stream.next().await {
            agg.push(&chunk.unwrap());
        }
        let done = agg.finish();
        assert_eq!(done.text().as_deref(), Some("echo: hello there"));
        assert_eq!(
            done.choices[0].message.reasoning.as_deref(),
            Some("The user said 2 words.")
        );
        assert_eq!(done.choices[0].finish_reason, Some(FinishReason::Stop));
        assert_eq!(done.usage.unwrap().prompt_tokens, 2);
    }

    #[tokio::test]
    async fn unknown_model_and_token_limit() {
        let echo = Echo::new();
        let request = ChatCompletionRequest::new("other", vec![ChatMessage::user("x")]);
        assert!(matches!(
            echo.chat(request, RequestContext::new("r")).await,
            Err(ProviderError::ModelNotFound { .. })
        ));
        let mut request = ChatCompletionRequest::new("echo", vec![ChatMessage::user("a b c d")]);
        request.max_tokens = Some(2);
        let mut stream = echo.chat(request, RequestContext::new("r")).await.unwrap();
        let mut agg = ChatCompletionAggregator::new();
        while let Some(chunk) = stream.next().await {
            agg.push(&chunk.unwrap());
        }
        let done = agg.finish();
        assert_eq!(done.text().as_deref(), Some("echo: a"));
        assert_eq!(done.choices[0].finish_reason, Some(FinishReason::Length));
    }
}
