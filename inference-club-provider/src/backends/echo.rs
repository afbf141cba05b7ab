//! A test engine that repeats the prompt back. Not a language model.

use std::time::Duration;

use async_stream::stream;
use async_trait::async_trait;
use inference_club_core::openai::{
    ChatCompletionChunk, ChatCompletionRequest, ChunkDelta, FinishReason, Model, Role, Usage,
};
use inference_club_core::provider::{ChunkStream, Provider, ProviderError, RequestContext};

/// **A test engine, not a language model**: it answers every request with `echo: ` and the last
/// user message, one word per chunk, optionally preceded by a reasoning trace, with usage counted
/// in words. Deterministic, so tests and the demo can assert what they get. Honours
/// `max_tokens`/`max_completion_tokens` (in words), and cancellation.
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
        if !self.models.iter().any(|m| m == &request.model) {
            return Err(ProviderError::ModelNotFound {
                model: request.model,
            });
        }
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
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
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
