//! Splitting `<think>…</think>` out of content into the reasoning trace.

use std::collections::HashMap;

use super::ChatCompletionChunk;

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// Moves a `<think>…</think>` block at the start of a choice's content into its reasoning trace,
/// chunk by chunk, even when the tags are split across chunks.
///
/// Only a block that opens the content (after white space) counts; `<think>` later in an answer is
/// left alone. White space right after `</think>` is dropped.
///
/// ```
/// use inference_club_core::openai::{ChatCompletionChunk, ChunkDelta, ThinkSplitter};
///
/// let mut splitter = ThinkSplitter::new();
/// let mut chunk = ChatCompletionChunk::new("c", "m", 0)
///     .with_delta(ChunkDelta::content("<think>hmm</think>\n\nHi"));
/// splitter.apply(&mut chunk);
/// assert_eq!(chunk.choices[0].delta.reasoning.as_deref(), Some("hmm"));
/// assert_eq!(chunk.choices[0].delta.content.as_deref(), Some("Hi"));
/// ```
#[derive(Debug, Default, Clone)]
pub struct ThinkSplitter {
    choices: HashMap<u32, SplitState>,
    starts_inside: bool,
}

#[derive(Debug, Clone)]
enum SplitState {
    /// No content seen yet but white space or a part of `<think>`, held back.
    Start(String),
    /// As `Start`, for models whose chat template opens the block in the prompt: content is
    /// reasoning until `</think>`, whether or not the output repeats `<think>`.
    StartInside(String),
    /// Inside the block; holds back what may be the start of `</think>`.
    Thinking(String),
    /// Right after `</think>`: leading white space is dropped.
    AfterThink,
    /// Everything from here on is content.
    Content,
}

impl Default for SplitState {
    fn default() -> Self {
        Self::Start(String::new())
    }
}

/// What one piece of content turns into.
#[derive(Debug, Default, PartialEq)]
struct Split {
    reasoning: String,
    content: String,
}

impl SplitState {
    fn push(&mut self, piece: &str, out: &mut Split) {
        match self {
            Self::Start(held) => {
                held.push_str(piece);
                let trimmed = held.trim_start();
                if let Some(rest) = trimmed.strip_prefix(OPEN) {
                    let rest = rest.to_owned();
                    *self = Self::Thinking(String::new());
                    self.push(&rest, out);
                } else if trimmed.is_empty() || OPEN.starts_with(trimmed) {
                    // Still undecided.
                } else {
                    out.content.push_str(held);
                    *self = Self::Content;
                }
            }
            Self::StartInside(held) => {
                held.push_str(piece);
                let trimmed = held.trim_start();
                if trimmed.is_empty() || (OPEN.starts_with(trimmed) && trimmed != OPEN) {
                    // Still undecided.
                } else {
                    let rest = trimmed.strip_prefix(OPEN).unwrap_or(held).to_owned();
                    *self = Self::Thinking(String::new());
                    self.push(&rest, out);
                }
            }
            Self::Thinking(held) => {
                held.push_str(piece);
                if let Some(end) = held.find(CLOSE) {
                    out.reasoning.push_str(&held[..end]);
                    let rest = held[end + CLOSE.len()..].to_owned();
                    *self = Self::AfterThink;
                    self.push(&rest, out);
                } else {
                    let keep = partial_suffix(held, CLOSE);
                    let emit = held.len() - keep;
                    out.reasoning.push_str(&held[..emit]);
                    held.drain(..emit);
                }
            }
            Self::AfterThink => {
                let rest = piece.trim_start();
                if !rest.is_empty() {
                    out.content.push_str(rest);
                    *self = Self::Content;
                }
            }
            Self::Content => out.content.push_str(piece),
        }
    }

    fn flush(&mut self, out: &mut Split) {
        match std::mem::replace(self, Self::Content) {
            Self::Start(held) => out.content.push_str(&held),
            Self::StartInside(held) | Self::Thinking(held) => out.reasoning.push_str(&held),
            Self::AfterThink | Self::Content => {}
        }
    }
}

/// The length of the longest suffix of `text` that is a proper prefix of `tag`.
fn partial_suffix(text: &str, tag: &str) -> usize {
    (1..tag.len())
        .rev()
        .find(|&k| {
            text.len() >= k
                && text.is_char_boundary(text.len() - k)
                && tag.starts_with(&text[text.len() - k..])
        })
        .unwrap_or(0)
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl ThinkSplitter {
    /// A splitter with no content seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A splitter for models whose chat template opens the `<think>` block in the prompt (as
    /// DeepSeek-R1's current template does): the output starts inside the block, so content is
    /// reasoning until `</think>`. Only for such models: an answer without `</think>` would all
    /// be taken for reasoning.
    pub fn starting_inside() -> Self {
        Self {
            starts_inside: true,
            ..Self::default()
        }
    }

    /// Rewrites the content of each choice of `chunk`: reasoning inside the block goes to
    /// `reasoning`, the rest stays in `content`; text that may be a split tag is held back until
    /// the next chunk (or [`ThinkSplitter::flush`]).
    pub fn apply(&mut self, chunk: &mut ChatCompletionChunk) {
        for choice in &mut chunk.choices {
            let Some(piece) = choice.delta.content.take() else {
                continue;
            };
            let mut out = Split::default();
            let starts_inside = self.starts_inside;
            self.choices
                .entry(choice.index)
                .or_insert_with(|| {
                    if starts_inside {
                        SplitState::StartInside(String::new())
                    } else {
                        SplitState::default()
                    }
                })
                .push(&piece, &mut out);
            let delta = &mut choice.delta;
            if !out.reasoning.is_empty() {
                delta
                    .reasoning
                    .get_or_insert_with(String::new)
                    .push_str(&out.reasoning);
            }
            delta.content = non_empty(out.content);
        }
    }

    /// Whatever is still held back, per choice index, as `(index, reasoning, content)`; call at
    /// the end of the stream and emit it before the final chunk.
    pub fn flush(&mut self) -> Vec<(u32, Option<String>, Option<String>)> {
        let mut flushed: Vec<_> = self
            .choices
            .iter_mut()
            .filter_map(|(index, state)| {
                let mut out = Split::default();
                state.flush(&mut out);
                (!out.reasoning.is_empty() || !out.content.is_empty())
                    .then(|| (*index, non_empty(out.reasoning), non_empty(out.content)))
            })
            .collect();
        flushed.sort_by_key(|(index, _, _)| *index);
        flushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::{ChatCompletionAggregator, ChunkDelta};

    fn run(pieces: &[&str]) -> (String, String) {
        let mut splitter = ThinkSplitter::new();
        let mut agg = ChatCompletionAggregator::new();
        for piece in pieces {
            let mut chunk =
                ChatCompletionChunk::new("c", "m", 0).with_delta(ChunkDelta::content(*piece));
            splitter.apply(&mut chunk);
            agg.push(&chunk);
        }
        for (_, reasoning, content) in splitter.flush() {
            let delta = ChunkDelta {
                reasoning,
                content,
                ..ChunkDelta::default()
            };
            agg.push(&ChatCompletionChunk::new("c", "m", 0).with_delta(delta));
        }
        let done = agg.finish();
        let msg = &done.choices[0].message;
        (
            msg.reasoning.clone().unwrap_or_default(),
            msg.content.clone().unwrap_or_default(),
        )
    }

    #[test]
    fn whole_block_in_one_piece() {
        assert_eq!(
            run(&["<think>a b</think>\n\nanswer"]),
            ("a b".into(), "answer".into())
        );
    }

    #[test]
    fn tags_split_everywhere() {
        let text = "<think>let me see</think>\n\nThe answer is 4.";
        for cut in 1..text.len() {
            let (a, b) = text.split_at(cut);
            assert_eq!(
                run(&[a, b]),
                ("let me see".into(), "The answer is 4.".into()),
                "cut at {cut}"
            );
        }
        let pieces: Vec<String> = text.chars().map(String::from).collect();
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        assert_eq!(run(&refs), ("let me see".into(), "The answer is 4.".into()));
    }

    #[test]
    fn content_without_block_is_untouched() {
        assert_eq!(
            run(&["<th", "is is not thinking"]),
            (String::new(), "<this is not thinking".into())
        );
        assert_eq!(
            run(&["Hello ", "<think>x</think>"]),
            (String::new(), "Hello <think>x</think>".into())
        );
        assert_eq!(run(&["<"]), (String::new(), "<".into()));
    }

    #[test]
    fn unclosed_block_is_all_reasoning() {
        assert_eq!(
            run(&["<think>still thinking </thi"]),
            ("still thinking </thi".into(), String::new())
        );
    }

    fn run_inside(pieces: &[&str]) -> (String, String) {
        let mut splitter = ThinkSplitter::starting_inside();
        let mut agg = ChatCompletionAggregator::new();
        for piece in pieces {
            let mut chunk =
                ChatCompletionChunk::new("c", "m", 0).with_delta(ChunkDelta::content(*piece));
            splitter.apply(&mut chunk);
            agg.push(&chunk);
        }
        for (_, reasoning, content) in splitter.flush() {
            agg.push(
                &ChatCompletionChunk::new("c", "m", 0).with_delta(ChunkDelta {
                    reasoning,
                    content,
                    ..ChunkDelta::default()
                }),
            );
        }
        let message = agg.finish().choices[0].message.clone();
        (
            message.reasoning.unwrap_or_default(),
            message.content.unwrap_or_default(),
        )
    }

    #[test]
    fn starting_inside_splits_at_the_bare_closing_tag() {
        let expected = ("sum is 4".to_owned(), "4.".to_owned());
        assert_eq!(run_inside(&["sum is 4</th", "ink>\n\n4."]), expected);
        // The output may still repeat the opening tag, split or whole.
        assert_eq!(run_inside(&["<thi", "nk>sum is 4</think>4."]), expected);
        assert_eq!(
            run_inside(&["<think>", "sum is 4", "</think>", "4."]),
            expected
        );
        // Never closed: all of it is reasoning (the mode is only for such models).
        assert_eq!(
            run_inside(&["still thinking"]),
            ("still thinking".into(), String::new())
        );
    }

    #[test]
    fn multibyte_text_near_tags() {
        assert_eq!(run(&["<think>é</", "think>ü"]), ("é".into(), "ü".into()));
    }
}
