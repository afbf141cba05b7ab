//! Finding the engines running on this machine, for `club-provider init`.

use std::time::Duration;

use inference_club_core::manifest::{
    Agent, Engine, Gpu, GpuVendor, Host, Model, Service, ServiceManifest,
};
use inference_club_core::provider::Provider;

use crate::backends::{Ollama, OpenAiCompatible};
use crate::{EngineQuirks, Timeouts};

/// Where an engine listens by default, and how to ask it for its models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownEngine {
    /// The engine.
    pub engine: Engine,
    /// A short service name for the manifest.
    pub name: &'static str,
    /// Its default local port.
    pub port: u16,
    /// The API base path: `/v1` for OpenAI-compatible engines, empty for Ollama's native API.
    pub base_path: &'static str,
}

/// The engines `init` looks for, on their default ports.
pub const KNOWN_ENGINES: &[KnownEngine] = &[
    KnownEngine {
        engine: Engine::Ollama,
        name: "ollama",
        port: 11434,
        base_path: "",
    },
    KnownEngine {
        engine: Engine::Lmstudio,
        name: "lmstudio",
        port: 1234,
        base_path: "/v1",
    },
    KnownEngine {
        engine: Engine::Vllm,
        name: "vllm",
        port: 8000,
        base_path: "/v1",
    },
    KnownEngine {
        engine: Engine::Llamacpp,
        name: "llamacpp",
        port: 8080,
        base_path: "/v1",
    },
    KnownEngine {
        engine: Engine::Sglang,
        name: "sglang",
        port: 30000,
        base_path: "/v1",
    },
];

/// An engine found running, with its models.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundEngine {
    /// Which engine.
    pub known: KnownEngine,
    /// The base URL it answered on.
    pub url: String,
    /// The model ids it serves.
    pub models: Vec<String>,
}

/// Asks each known engine on `host` (normally `127.0.0.1`) for its models; the ones that answer
/// are returned. Each probe waits at most `wait`.
pub async fn find_engines(host: &str, wait: Duration) -> Vec<FoundEngine> {
    let probes = KNOWN_ENGINES.iter().map(|known| probe(host, *known, wait));
    futures_util::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn probe(host: &str, known: KnownEngine, wait: Duration) -> Option<FoundEngine> {
    let url = format!("http://{host}:{}{}", known.port, known.base_path);
    let timeouts = Timeouts {
        connect: wait,
        first_token: wait,
        idle: wait,
        whole: wait,
    };
    let models = if known.engine == Engine::Ollama {
        Ollama::builder(url.clone())
            .timeouts(timeouts)
            .build()
            .ok()?
            .models()
            .await
    } else {
        OpenAiCompatible::builder(url.clone())
            .timeouts(timeouts)
            .quirks(EngineQuirks::for_engine(known.engine))
            .build()
            .ok()?
            .models()
            .await
    };
    let models = models.ok()?;
    Some(FoundEngine {
        known,
        url,
        models: models.into_iter().map(|m| m.id).collect(),
    })
}

/// The GPUs `nvidia-smi` reports, if it is installed.
pub fn detect_gpu() -> Option<Gpu> {
    let output = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    parse_nvidia_smi(&String::from_utf8_lossy(&output.stdout))
}

fn parse_nvidia_smi(text: &str) -> Option<Gpu> {
    let rows: Vec<(String, f64)> = text
        .lines()
        .filter_map(|line| {
            let (name, mib) = line.rsplit_once(',')?;
            Some((name.trim().to_owned(), mib.trim().parse::<f64>().ok()?))
        })
        .collect();
    let (model, mib) = rows.first()?.clone();
    Some(Gpu {
        vendor: Some(GpuVendor::Nvidia),
        model: Some(model),
        vram_gb: Some((mib / 1024.0).round()),
        count: u32::try_from(rows.len()).ok(),
    })
}

/// A manifest for the engines found: one host, one service per engine, its models listed.
pub fn manifest_for(hostname: &str, found: &[FoundEngine], gpu: Option<Gpu>) -> ServiceManifest {
    let services = found
        .iter()
        .map(|f| Service {
            name: f.known.name.to_owned(),
            engine: Some(f.known.engine),
            url: Some(f.url.clone()),
            models: f
                .models
                .iter()
                .map(|id| Model {
                    id: Some(id.clone()),
                    ..Model::default()
                })
                .collect(),
            ..Service::default()
        })
        .collect();
    ServiceManifest {
        schema_version: 1,
        agent: Agent {
            name: Some(hostname.to_owned()),
            hostname: Some(hostname.to_owned()),
            ..Agent::default()
        },
        hosts: vec![Host {
            id: hostname.to_owned(),
            hostname: Some(hostname.to_owned()),
            gpu,
            services,
            ..Host::default()
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nvidia_smi() {
        let gpu =
            parse_nvidia_smi("NVIDIA GeForce RTX 4090, 24564\nNVIDIA GeForce RTX 4090, 24564\n")
                .unwrap();
        assert_eq!(gpu.model.as_deref(), Some("NVIDIA GeForce RTX 4090"));
        assert_eq!(gpu.count, Some(2));
        assert_eq!(gpu.vram_gb, Some(24.0));
        assert_eq!(parse_nvidia_smi("garbage"), None);
    }

    #[test]
    fn manifest_for_found_engines_is_valid() {
        let found = vec![FoundEngine {
            known: KNOWN_ENGINES[0],
            url: "http://127.0.0.1:11434".into(),
            models: vec!["llama3.2:latest".into()],
        }];
        let manifest = manifest_for("box", &found, None);
        manifest.validate().unwrap();
    }
}
