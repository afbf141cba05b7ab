//! The manifest's data types: what a node declares about its hosts, services and models.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::access::AccessPolicy;
use super::limits::{MAX_HOSTS, MAX_STRING_CHARS};

/// Free-form, engine-specific settings of a service (`extra:`).
pub type Extra = serde_json::Map<String, serde_json::Value>;

/// A provider node's service manifest (`agent.yaml`, `schema_version: 1`).
///
/// Hosts contain services; services contain models. Unknown fields are ignored when reading, so a file
/// written for a newer agent still loads; they are not kept, so they are never forwarded.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "ServiceManifest")]
pub struct ServiceManifest {
    /// Version of the manifest format. Must be `1`.
    #[schemars(range(min = 1, max = 1))]
    pub schema_version: u32,
    /// The node itself (its `name` is required).
    #[serde(default)]
    #[schemars(required)]
    pub agent: Agent,
    /// The machines this node serves from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_HOSTS))]
    pub hosts: Vec<Host>,
}

/// The node (the agent process) as a whole.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Agent {
    /// The node's name: its provider's name in the club (`OPERATOR/NAME`). Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(required, length(min = 1, max = MAX_STRING_CHARS))]
    pub name: Option<String>,
    /// The hostname the agent runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_STRING_CHARS))]
    pub hostname: Option<String>,
    /// The local port the agent listens on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub listen_port: Option<u16>,
    /// Inference Club addition: who may use this node's services unless a service says otherwise.
    /// Absent means `members` (any signed-in member).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessPolicy>,
}

/// One machine of the node.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Host {
    /// Identifier of the host, unique within the manifest.
    #[schemars(length(min = 1, max = MAX_STRING_CHARS))]
    pub id: String,
    /// The machine's hostname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_STRING_CHARS))]
    pub hostname: Option<String>,
    /// The machine's address (IP or name) on the operator's network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_STRING_CHARS))]
    pub address: Option<String>,
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_STRING_CHARS))]
    pub notes: Option<String>,
    /// The machine's accelerators, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Gpu>,
    /// The inference services running on this machine. May be empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
}

/// The accelerators of a host.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Gpu {
    /// Who makes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<GpuVendor>,
    /// The model name, e.g. `RTX 4090`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_STRING_CHARS))]
    pub model: Option<String>,
    /// Memory per device, in GB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = super::limits::MAX_VRAM_GB))]
    pub vram_gb: Option<f64>,
    /// How many devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = super::limits::MAX_GPU_COUNT))]
    pub count: Option<u32>,
}

/// One inference server (an engine listening on a URL).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Service {
    /// Name of the service, unique within the manifest.
    #[schemars(length(min = 1, max = MAX_STRING_CHARS))]
    pub name: String,
    /// What the service does. Defaults to `llm`.
    #[serde(rename = "type", default)]
    pub service_type: ServiceType,
    /// The inference engine behind the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<Engine>,
    /// Base URL of the engine's API: an absolute `http` or `https` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_STRING_CHARS))]
    pub url: Option<String>,
    /// Capabilities of the service as a whole (e.g. `tools`, `streaming`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(length(max = MAX_STRING_CHARS)))]
    pub features: Vec<String>,
    /// The command line that starts the engine. Local only: removed by redaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_STRING_CHARS))]
    pub command: Option<String>,
    /// Free-form, engine-specific settings. Keys that look secret are removed by redaction.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: Extra,
    /// The key the node sends to the engine. Local only: never leaves the machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_STRING_CHARS))]
    pub api_key: Option<String>,
    /// Inference Club addition: how many requests the service handles at once (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_concurrent: Option<u32>,
    /// Inference Club addition: who may use this service; overrides `agent.access`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessPolicy>,
    /// The models served. May be empty: the node then asks the engine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<Model>,
}

/// One model served by a service.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Model {
    /// The id the engine serves the model under. If absent, `hf` is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_STRING_CHARS))]
    pub id: Option<String>,
    /// The Hugging Face repository id, e.g. `Qwen/Qwen3-8B`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_STRING_CHARS))]
    pub hf: Option<String>,
    /// A display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_STRING_CHARS))]
    pub name: Option<String>,
    /// What the model takes in (`text`, `image`, `audio`, ...). Defaulted by service type when absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(length(max = MAX_STRING_CHARS)))]
    pub input_modalities: Vec<String>,
    /// What the model puts out. Defaulted by service type when absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(length(max = MAX_STRING_CHARS)))]
    pub output_modalities: Vec<String>,
    /// Capabilities of the model (e.g. `tools`, `reasoning`, `vision`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(length(max = MAX_STRING_CHARS)))]
    pub features: Vec<String>,
    /// Context window, in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub context_length: Option<u32>,
    /// Quantization, e.g. `Q4_K_M`, `fp8`, `awq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_STRING_CHARS))]
    pub quantization: Option<String>,
}

/// Who makes a host's GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum GpuVendor {
    /// NVIDIA.
    Nvidia,
    /// AMD.
    Amd,
    /// Apple silicon.
    Apple,
    /// Intel.
    Intel,
}

/// The inference engine behind a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Engine {
    /// vLLM.
    Vllm,
    /// LM Studio.
    Lmstudio,
    /// Ollama.
    Ollama,
    /// SGLang.
    Sglang,
    /// llama.cpp server.
    Llamacpp,
    /// Hugging Face Text Generation Inference.
    Tgi,
    /// Any other OpenAI-compatible server.
    Other,
}

/// What a service does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ServiceType {
    /// Text generation (chat completions). The default.
    #[default]
    Llm,
    /// Speech to text.
    Stt,
    /// Text to speech.
    Tts,
    /// Image generation.
    Image,
    /// 3D mesh generation.
    Mesh,
    /// Music generation.
    Music,
    /// Video generation.
    Video,
    /// Web scraping.
    Scrape,
    /// Audio enhancement.
    AudioEnhance,
}

/// A closed set of names, spelled as in the manifest.
pub trait Choice: Sized + Copy + 'static {
    /// Every value, in the order the names are listed.
    const ALL: &'static [Self];
    /// Every name, in the same order as [`Choice::ALL`].
    const NAMES: &'static [&'static str];

    /// The name of this value as written in a manifest.
    fn as_str(self) -> &'static str;

    /// The value with this exact name, if any.
    fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|value| value.as_str() == name)
    }
}

impl Choice for GpuVendor {
    const ALL: &'static [Self] = &[Self::Nvidia, Self::Amd, Self::Apple, Self::Intel];
    const NAMES: &'static [&'static str] = &["nvidia", "amd", "apple", "intel"];

    fn as_str(self) -> &'static str {
        match self {
            Self::Nvidia => "nvidia",
            Self::Amd => "amd",
            Self::Apple => "apple",
            Self::Intel => "intel",
        }
    }
}

impl Choice for Engine {
    const ALL: &'static [Self] = &[
        Self::Vllm,
        Self::Lmstudio,
        Self::Ollama,
        Self::Sglang,
        Self::Llamacpp,
        Self::Tgi,
        Self::Other,
    ];
    const NAMES: &'static [&'static str] = &[
        "vllm", "lmstudio", "ollama", "sglang", "llamacpp", "tgi", "other",
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Vllm => "vllm",
            Self::Lmstudio => "lmstudio",
            Self::Ollama => "ollama",
            Self::Sglang => "sglang",
            Self::Llamacpp => "llamacpp",
            Self::Tgi => "tgi",
            Self::Other => "other",
        }
    }
}

impl Choice for ServiceType {
    const ALL: &'static [Self] = &[
        Self::Llm,
        Self::Stt,
        Self::Tts,
        Self::Image,
        Self::Mesh,
        Self::Music,
        Self::Video,
        Self::Scrape,
        Self::AudioEnhance,
    ];
    const NAMES: &'static [&'static str] = &[
        "llm",
        "stt",
        "tts",
        "image",
        "mesh",
        "music",
        "video",
        "scrape",
        "audio-enhance",
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Llm => "llm",
            Self::Stt => "stt",
            Self::Tts => "tts",
            Self::Image => "image",
            Self::Mesh => "mesh",
            Self::Music => "music",
            Self::Video => "video",
            Self::Scrape => "scrape",
            Self::AudioEnhance => "audio-enhance",
        }
    }
}

impl ServiceType {
    /// The modalities a model of this type takes in and puts out when the manifest does not say.
    pub fn default_modalities(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Self::Llm | Self::Scrape => (&["text"], &["text"]),
            Self::Stt => (&["audio"], &["text"]),
            Self::Tts | Self::Music => (&["text"], &["audio"]),
            Self::Image => (&["text"], &["image"]),
            Self::Mesh => (&["text"], &["mesh"]),
            Self::Video => (&["text"], &["video"]),
            Self::AudioEnhance => (&["audio"], &["audio"]),
        }
    }
}

impl Model {
    /// The id the engine serves this model under: `id`, else `hf`. Empty strings count as absent.
    pub fn served_id(&self) -> Option<&str> {
        non_empty(self.id.as_deref()).or_else(|| non_empty(self.hf.as_deref()))
    }

    /// Whether a consumer asking for `requested` means this model: its served id or its `hf` id,
    /// compared case-insensitively.
    pub fn answers_to(&self, requested: &str) -> bool {
        [self.served_id(), non_empty(self.hf.as_deref())]
            .into_iter()
            .flatten()
            .any(|name| name.eq_ignore_ascii_case(requested))
    }

    /// Fills absent modalities with the defaults of `service_type`.
    fn fill_default_modalities(&mut self, service_type: ServiceType) {
        let (input, output) = service_type.default_modalities();
        if self.input_modalities.is_empty() {
            self.input_modalities = input.iter().map(|m| (*m).to_owned()).collect();
        }
        if self.output_modalities.is_empty() {
            self.output_modalities = output.iter().map(|m| (*m).to_owned()).collect();
        }
    }
}

impl Service {
    /// The models of this service that answer to `requested` (see [`Model::answers_to`]).
    pub fn models_answering<'a>(&'a self, requested: &'a str) -> impl Iterator<Item = &'a Model> {
        self.models
            .iter()
            .filter(move |model| model.answers_to(requested))
    }
}

impl ServiceManifest {
    /// Every service of every host, in order.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.hosts.iter().flat_map(|host| host.services.iter())
    }

    /// The manifest with defaults made explicit: absent model modalities are filled in from the
    /// service type (`llm`: text → text, `stt`: audio → text, `tts`: text → audio, ...).
    #[must_use]
    pub fn with_defaults(mut self) -> Self {
        for service in self
            .hosts
            .iter_mut()
            .flat_map(|host| host.services.iter_mut())
        {
            let service_type = service.service_type;
            for model in &mut service.models {
                model.fill_default_modalities(service_type);
            }
        }
        self
    }
}

fn non_empty(text: Option<&str>) -> Option<&str> {
    text.filter(|text| !text.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde_names<T: Choice + Serialize>() -> Vec<String> {
        T::ALL
            .iter()
            .map(|value| {
                serde_json::to_value(value)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn choice_names_match_serde_names() {
        assert_eq!(serde_names::<GpuVendor>(), GpuVendor::NAMES);
        assert_eq!(serde_names::<Engine>(), Engine::NAMES);
        assert_eq!(serde_names::<ServiceType>(), ServiceType::NAMES);
        for value in ServiceType::ALL {
            assert_eq!(ServiceType::from_name(value.as_str()), Some(*value));
        }
    }

    #[test]
    fn served_id_prefers_id_then_hf() {
        let both = Model {
            id: Some("qwen3:8b".into()),
            hf: Some("Qwen/Qwen3-8B".into()),
            ..Model::default()
        };
        assert_eq!(both.served_id(), Some("qwen3:8b"));
        let hf_only = Model {
            hf: Some("Qwen/Qwen3-8B".into()),
            ..Model::default()
        };
        assert_eq!(hf_only.served_id(), Some("Qwen/Qwen3-8B"));
        let empty_id = Model {
            id: Some(String::new()),
            hf: Some("a/b".into()),
            ..Model::default()
        };
        assert_eq!(empty_id.served_id(), Some("a/b"));
        assert_eq!(Model::default().served_id(), None);
    }

    #[test]
    fn answers_to_served_id_or_hf_case_insensitively() {
        let model = Model {
            id: Some("qwen3:8b".into()),
            hf: Some("Qwen/Qwen3-8B".into()),
            ..Model::default()
        };
        assert!(model.answers_to("QWEN3:8B"));
        assert!(model.answers_to("qwen/qwen3-8b"));
        assert!(!model.answers_to("qwen3"));
        assert!(!Model::default().answers_to(""));
    }

    #[test]
    fn with_defaults_fills_modalities_by_type() {
        let service = |service_type| Service {
            name: "s".into(),
            service_type,
            models: vec![Model {
                id: Some("m".into()),
                ..Model::default()
            }],
            ..Service::default()
        };
        let manifest = ServiceManifest {
            schema_version: 1,
            hosts: vec![Host {
                id: "h".into(),
                services: vec![service(ServiceType::Llm), service(ServiceType::Stt)],
                ..Host::default()
            }],
            ..ServiceManifest::default()
        }
        .with_defaults();
        let models: Vec<&Model> = manifest.services().flat_map(|s| s.models.iter()).collect();
        assert_eq!(models[0].input_modalities, ["text"]);
        assert_eq!(models[0].output_modalities, ["text"]);
        assert_eq!(models[1].input_modalities, ["audio"]);
        assert_eq!(models[1].output_modalities, ["text"]);
    }

    #[test]
    fn with_defaults_keeps_given_modalities() {
        let model = Model {
            id: Some("m".into()),
            input_modalities: vec!["text".into(), "image".into()],
            ..Model::default()
        };
        let mut filled = model.clone();
        filled.fill_default_modalities(ServiceType::Llm);
        assert_eq!(filled.input_modalities, model.input_modalities);
        assert_eq!(filled.output_modalities, ["text"]);
    }
}
