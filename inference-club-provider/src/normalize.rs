//! Normalizing an engine's chunk stream before it leaves the adapter.

use async_stream::stream;
use futures_util::StreamExt;
use inference_club_core::openai::{ChatCompletionChunk, ChunkChoice, ChunkDelta, ThinkSplitter};
use inference_club_core::provider::ChunkStream;

/// Splits `<think>…</think>` at the start of content into the reasoning trace. Text held back
/// because it might be a split tag is released before the chunk that finishes its choice, or at
/// the end of the stream.
pub fn split_think_tags(inner: ChunkStream) -> ChunkStream {
    Box::pin(stream! {
        let mut inner = inner;
        let mut splitter = ThinkSplitter::new();
        let mut template: Option<ChatCompletionChunk> = None;
        while let Some(item) = inner.next().await {
            let mut chunk = match item {
                Ok(chunk) => chunk,
                Err(error) => {
                    yield Err(error);
                    return;
                }
            };
            splitter.apply(&mut chunk);
            if chunk.choices.iter().any(|c| c.finish_reason.is_some()) {
                for (index, reasoning, content) in splitter.flush() {
                    let delta = match chunk.choices.iter_mut().find(|c| c.index == index) {
                        Some(choice) => &mut choice.delta,
                        None => {
                            chunk.choices.push(empty_choice(index));
                            let last = chunk.choices.len() - 1;
                            &mut chunk.choices[last].delta
                        }
                    };
                    prepend(&mut delta.reasoning, reasoning);
                    prepend(&mut delta.content, content);
                }
            }
            if template.is_none() {
                template = Some(ChatCompletionChunk::new(chunk.id.clone(), chunk.model.clone(), chunk.created));
            }
            yield Ok(chunk);
        }
        let rest = splitter.flush();
        if let (Some(mut chunk), false) = (template, rest.is_empty()) {
            for (index, reasoning, content) in rest {
                let mut choice = empty_choice(index);
                choice.delta.reasoning = reasoning;
                choice.delta.content = content;
                chunk.choices.push(choice);
            }
            yield Ok(chunk);
        }
    })
}

fn empty_choice(index: u32) -> ChunkChoice {
    ChunkChoice {
        index,
        delta: ChunkDelta::default(),
        finish_reason: None,
        logprobs: None,
    }
}

fn prepend(target: &mut Option<String>, held: Option<String>) {
    if let Some(mut held) = held {
        if let Some(rest) = target.take() {
            held.push_str(&rest);
        }
        *target = Some(held);
    }
}
