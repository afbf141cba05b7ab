//! What differs between OpenAI-compatible engines, as data.

use inference_club_core::manifest::Engine;

/// The differences between OpenAI-compatible engines that an adapter must cope with. One constant
/// per engine; the adapter reads these flags and has no engine-specific branches of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineQuirks {
    /// The engine honours `stream_options.include_usage`, so usage can be asked for in the stream.
    pub stream_usage: bool,
    /// The engine ignores `max_completion_tokens`; its value is sent as `max_tokens` too.
    pub needs_max_tokens: bool,
    /// Models may be served without a reasoning parser, so `<think>…</think>` may open the
    /// content and is split into the reasoning trace.
    pub think_tags: bool,
}

impl EngineQuirks {
    /// vLLM: usage in streams, reasoning parsers usually on.
    pub const VLLM: Self = Self {
        stream_usage: true,
        needs_max_tokens: false,
        think_tags: true,
    };
    /// SGLang: as vLLM.
    pub const SGLANG: Self = Self::VLLM;
    /// llama.cpp's server (also through llama-cpp-python): ignores `max_completion_tokens`.
    pub const LLAMACPP: Self = Self {
        stream_usage: true,
        needs_max_tokens: true,
        think_tags: true,
    };
    /// LM Studio.
    pub const LMSTUDIO: Self = Self {
        stream_usage: true,
        needs_max_tokens: true,
        think_tags: true,
    };
    /// Ollama's OpenAI-compatible endpoint (`/v1`).
    pub const OLLAMA: Self = Self {
        stream_usage: true,
        needs_max_tokens: true,
        think_tags: true,
    };
    /// Text Generation Inference.
    pub const TGI: Self = Self {
        stream_usage: false,
        needs_max_tokens: true,
        think_tags: true,
    };
    /// Any other OpenAI-compatible server: ask for usage, copy the token limit, split think tags.
    pub const GENERIC: Self = Self {
        stream_usage: true,
        needs_max_tokens: true,
        think_tags: true,
    };

    /// The quirks of an engine named in a manifest.
    pub fn for_engine(engine: Engine) -> Self {
        match engine {
            Engine::Vllm => Self::VLLM,
            Engine::Sglang => Self::SGLANG,
            Engine::Llamacpp => Self::LLAMACPP,
            Engine::Lmstudio => Self::LMSTUDIO,
            Engine::Ollama => Self::OLLAMA,
            Engine::Tgi => Self::TGI,
            _ => Self::GENERIC,
        }
    }
}

impl Default for EngineQuirks {
    fn default() -> Self {
        Self::GENERIC
    }
}
