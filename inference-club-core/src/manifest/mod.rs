//! The service manifest: what a provider node declares about its hosts, services and models.
//!
//! The format is the existing public agent's `agent.yaml` (`schema_version: 1`) plus optional
//! additions (`access`, `max_concurrent`); a file written for that agent reads unchanged. One
//! validator serves node and coordinator alike, and the JSON Schema ([`json_schema`]) is generated
//! from the same types.
//!
//! - [`ServiceManifest::parse`] reads YAML or JSON (at most 64 KiB) and reports every type problem;
//! - [`ServiceManifest::validate`] checks every rule and reports every problem, each with its path;
//! - [`ServiceManifest::parse_and_validate`] does both at once;
//! - [`ServiceManifest::redacted`] is the manifest fit to leave the machine.
//!
//! Unknown fields are ignored: a newer agent's additions do not break reading, and since they are
//! not kept they are never forwarded (they could hold secrets redaction does not know about).
//!
//! ```
//! use inference_club_core::manifest::{AccessPolicy, ServiceManifest, effective_access};
//!
//! let yaml = "
//! schema_version: 1
//! agent: {name: home, access: owner}
//! hosts:
//!   - id: desk
//!     services:
//!       - name: ollama
//!         engine: ollama
//!         url: http://127.0.0.1:11434
//!         api_key: do-not-share
//!         models:
//!           - id: qwen3:8b
//!             hf: Qwen/Qwen3-8B
//! ";
//! let manifest = ServiceManifest::parse_and_validate(yaml)?;
//! let service = &manifest.hosts[0].services[0];
//! assert!(service.models[0].answers_to("qwen/qwen3-8b"));
//! assert_eq!(effective_access(&manifest.agent, service), &AccessPolicy::Owner);
//! assert_eq!(manifest.redacted().hosts[0].services[0].api_key, None);
//!
//! let broken = "schema_version: 1\nagent: {name: home}\nhosts:\n  - id: desk\n    services:\n      - name: x\n        engine: foo\n";
//! let error = ServiceManifest::parse_and_validate(broken).unwrap_err();
//! assert_eq!(
//!     error.lines(),
//!     [r#"hosts[0].services[0].engine: must be one of [vllm, lmstudio, ollama, sglang, llamacpp, tgi, other], got "foo""#]
//! );
//! # Ok::<(), inference_club_core::manifest::ManifestError>(())
//! ```

mod access;
mod decode;
mod parse;
mod problem;
mod redact;
mod schema;
mod types;
mod validate;

pub use access::{AccessPolicy, DEFAULT_ACCESS, effective_access, is_github_login};
pub use parse::detect_format;
pub use problem::{
    FieldPath, Format, ManifestError, PathSegment, Problem, ProblemKind, TextPosition, UrlProblem,
    ValidationErrors,
};
pub use redact::{SECRET_KEY_FRAGMENTS, is_secret_key};
pub use schema::{SCHEMA_PATH, json_schema, json_schema_pretty};
pub use types::{
    Agent, Choice, Engine, Extra, Gpu, GpuVendor, Host, Model, Service, ServiceManifest,
    ServiceType,
};
pub use validate::check_url;

/// The limits a manifest must keep to.
pub mod limits {
    /// The only manifest format version.
    pub const SUPPORTED_SCHEMA_VERSION: u32 = 1;
    /// Largest accepted document, in bytes; larger ones are refused before parsing.
    pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;
    /// Most hosts in one manifest.
    pub const MAX_HOSTS: usize = 50;
    /// Most services in one manifest, over all hosts.
    pub const MAX_SERVICES: usize = 100;
    /// Longest string anywhere in a manifest, in characters.
    pub const MAX_STRING_CHARS: usize = 1024;
    /// Largest memory per GPU, in GB.
    pub const MAX_VRAM_GB: f64 = 4096.0;
    /// Most GPUs in one host.
    pub const MAX_GPU_COUNT: u32 = 1024;
}
