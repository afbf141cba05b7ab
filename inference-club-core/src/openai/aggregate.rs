//! Folding a stream of chunks into one completion.

use std::collections::BTreeMap;

use super::{
    ChatCompletion, ChatCompletionChunk, Choice, Extra, FinishReason, FunctionCall,
    ResponseMessage, Role, ToolCall, Usage, chat::function_kind,
};

/// Folds chunks into one [`ChatCompletion`]: content, reasoning and refusals concatenated per
/// choice, tool-call fragments merged by index, the last finish reason and the last usage kept.
///
/// ```
/// use inference_club_core::openai::{ChatCompletionAggregator, ChatCompletionChunk, ChunkDelta};
///
/// let mut agg = ChatCompletionAggregator::new();
/// agg.push(&ChatCompletionChunk::new("c1", "m", 0).with_delta(ChunkDelta::content("Hel")));
/// agg.push(&ChatCompletionChunk::new("c1", "m", 0).with_delta(ChunkDelta::content("lo")));
/// assert_eq!(agg.finish().text().as_deref(), Some("Hello"));
/// ```
#[derive(Debug, Default, Clone)]
pub struct ChatCompletionAggregator {
    id: String,
    model: String,
    created: u64,
    system_fingerprint: Option<String>,
    usage: Option<Usage>,
    choices: BTreeMap<u32, ChoiceParts>,
}

#[derive(Debug, Default, Clone)]
struct ChoiceParts {
    role: Option<Role>,
    content: Option<String>,
    reasoning: Option<String>,
    refusal: Option<String>,
    tool_calls: BTreeMap<u32, ToolCallParts>,
    finish_reason: Option<FinishReason>,
}

#[derive(Debug, Default, Clone)]
struct ToolCallParts {
    id: String,
    kind: Option<String>,
    name: String,
    arguments: String,
}

fn append(target: &mut Option<String>, piece: Option<&str>) {
    if let Some(piece) = piece {
        target.get_or_insert_with(String::new).push_str(piece);
    }
}

impl ChatCompletionAggregator {
    /// An empty aggregator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one chunk.
    pub fn push(&mut self, chunk: &ChatCompletionChunk) {
        if self.id.is_empty() {
            self.id.clone_from(&chunk.id);
        }
        if self.model.is_empty() {
            self.model.clone_from(&chunk.model);
        }
        if self.created == 0 {
            self.created = chunk.created;
        }
        if chunk.system_fingerprint.is_some() {
            self.system_fingerprint
                .clone_from(&chunk.system_fingerprint);
        }
        if chunk.usage.is_some() {
            self.usage.clone_from(&chunk.usage);
        }
        for choice in &chunk.choices {
            let parts = self.choices.entry(choice.index).or_default();
            let delta = &choice.delta;
            if delta.role.is_some() {
                parts.role = delta.role;
            }
            append(&mut parts.content, delta.content.as_deref());
            append(&mut parts.reasoning, delta.reasoning.as_deref());
            append(&mut parts.refusal, delta.refusal.as_deref());
            for fragment in delta.tool_calls.iter().flatten() {
                let call = parts.tool_calls.entry(fragment.index).or_default();
                if let Some(id) = fragment.id.as_deref().filter(|id| !id.is_empty()) {
                    call.id = id.to_owned();
                }
                if fragment.kind.is_some() {
                    call.kind.clone_from(&fragment.kind);
                }
                if let Some(function) = &fragment.function {
                    // LM Studio repeats `name: ""` on argument-only fragments.
                    if let Some(name) = function.name.as_deref().filter(|n| !n.is_empty()) {
                        call.name = name.to_owned();
                    }
                    if let Some(arguments) = &function.arguments {
                        call.arguments.push_str(arguments);
                    }
                }
            }
            if choice.finish_reason.is_some() {
                parts.finish_reason.clone_from(&choice.finish_reason);
            }
        }
    }

    /// The usage seen so far (the last usage any chunk carried).
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// The completion assembled from every chunk pushed.
    pub fn finish(self) -> ChatCompletion {
        let choices = self
            .choices
            .into_iter()
            .map(|(index, parts)| {
                let tool_calls: Vec<ToolCall> = parts
                    .tool_calls
                    .into_values()
                    .map(|call| ToolCall {
                        id: call.id,
                        kind: call.kind.unwrap_or_else(function_kind),
                        function: FunctionCall {
                            name: call.name,
                            arguments: call.arguments,
                        },
                    })
                    .collect();
                Choice {
                    index,
                    message: ResponseMessage {
                        role: parts.role.unwrap_or(Role::Assistant),
                        content: parts.content,
                        reasoning: parts.reasoning,
                        refusal: parts.refusal,
                        tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                        extra: Extra::new(),
                    },
                    finish_reason: parts.finish_reason,
                    logprobs: None,
                }
            })
            .collect();
        ChatCompletion {
            id: self.id,
            object: "chat.completion".into(),
            created: self.created,
            model: self.model,
            choices,
            usage: self.usage,
            system_fingerprint: self.system_fingerprint,
            extra: Extra::new(),
        }
    }
}
