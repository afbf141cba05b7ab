//! From a manifest file to what the node offers: a backend per service, a router over them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use inference_club_core::manifest::{
    Engine, ManifestError, Model, Service, ServiceManifest, ServiceType,
};
use inference_club_core::provider::{Provider, ProviderError};

use super::Offer;
use crate::backends::{Ollama, OpenAiCompatible};
use crate::{EngineQuirks, Router, Timeouts};

/// Why a manifest could not be used: unreadable, invalid (every problem with its path), or a
/// service whose backend could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestProblems {
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        error: std::io::Error,
    },
    /// The manifest is not valid.
    #[error("{path} is not a valid manifest:\n{}", error.lines().join("\n"))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem.
        #[source]
        error: ManifestError,
    },
    /// The manifest cannot be written as JSON for the coordinator.
    #[error("the manifest cannot be written as JSON: {error}")]
    Unannounceable {
        /// Why.
        #[source]
        error: serde_json::Error,
    },
    /// A service's backend could not be built.
    #[error("service {service:?}: {error}")]
    Backend {
        /// The service.
        service: String,
        /// Why.
        #[source]
        error: ProviderError,
    },
}

impl ManifestProblems {
    /// One line per problem.
    pub fn lines(&self) -> Vec<String> {
        match self {
            Self::Invalid { error, .. } => error.lines(),
            other => vec![other.to_string()],
        }
    }
}

/// The backend for one service: Ollama's native API for an Ollama service whose URL does not end
/// in `/v1`, the OpenAI-compatible adapter (with the engine's quirks) for everything else. It
/// waits for its engine as [`Timeouts::default`] says.
pub fn backend_for(service: &Service) -> Result<Arc<dyn Provider>, ProviderError> {
    backend_with_timeouts(service, Timeouts::default())
}

/// [`backend_for`], waiting for the engine as `timeouts` says.
pub fn backend_with_timeouts(
    service: &Service,
    timeouts: Timeouts,
) -> Result<Arc<dyn Provider>, ProviderError> {
    let url = service
        .url
        .as_deref()
        .ok_or_else(|| ProviderError::Protocol {
            message: format!("service {:?} has no url", service.name),
        })?;
    let engine = service.engine.unwrap_or(Engine::Other);
    let openai_path = url.trim_end_matches('/').ends_with("/v1");
    if engine == Engine::Ollama && !openai_path {
        let mut builder = Ollama::builder(url).timeouts(timeouts);
        if let Some(key) = &service.api_key {
            builder = builder.api_key(key.clone());
        }
        return Ok(Arc::new(builder.build()?));
    }
    let mut builder = OpenAiCompatible::builder(url)
        .quirks(EngineQuirks::for_engine(engine))
        .timeouts(timeouts);
    if let Some(key) = &service.api_key {
        builder = builder.api_key(key.clone());
    }
    Ok(Arc::new(builder.build()?))
}

/// Reads and validates the manifest at `path`, asks the engines of services that list no models
/// for their models, and builds a backend per service and a router over them (with the default
/// [`Timeouts`]).
pub async fn load_manifest(path: &Path) -> Result<Offer, ManifestProblems> {
    load_manifest_with_timeouts(path, Timeouts::default()).await
}

/// [`load_manifest`], with backends that wait for their engines as `timeouts` says.
pub async fn load_manifest_with_timeouts(
    path: &Path,
    timeouts: Timeouts,
) -> Result<Offer, ManifestProblems> {
    let text =
        tokio::fs::read_to_string(path)
            .await
            .map_err(|error| ManifestProblems::Unreadable {
                path: path.to_owned(),
                error,
            })?;
    let manifest =
        ServiceManifest::parse_and_validate(&text).map_err(|error| ManifestProblems::Invalid {
            path: path.to_owned(),
            error,
        })?;
    offer_for(&manifest, timeouts).await
}

/// The offer for a validated manifest. The engine of each `llm` service that lists no models is
/// asked for its model list first, and the models it names are both served and announced: the
/// coordinator routes by the announced manifest, so a model it is not told about never arrives.
pub async fn offer_for(
    manifest: &ServiceManifest,
    timeouts: Timeouts,
) -> Result<Offer, ManifestProblems> {
    let mut filled = manifest.clone();
    let asks = filled
        .hosts
        .iter_mut()
        .flat_map(|host| host.services.iter_mut())
        .filter(|service| service.service_type == ServiceType::Llm && service.models.is_empty())
        .map(|service| async move {
            let listed = match backend_with_timeouts(service, timeouts) {
                Ok(backend) => backend.models().await,
                Err(error) => Err(error),
            };
            match listed {
                Ok(models) => {
                    service.models = models
                        .into_iter()
                        .map(|model| Model {
                            id: Some(model.id),
                            ..Model::default()
                        })
                        .collect();
                }
                Err(error) => tracing::warn!(
                    service = %service.name,
                    "cannot list the engine's models: {error}; it serves none until the next reload"
                ),
            }
        });
    futures_util::future::join_all(asks).await;

    let mut failed_service = String::new();
    let router = Router::from_manifest(&filled, None, |service| {
        failed_service.clone_from(&service.name);
        backend_with_timeouts(service, timeouts)
    })
    .map_err(|error| ManifestProblems::Backend {
        service: failed_service.clone(),
        error,
    })?;
    Offer::announcing(router, &filled).map_err(|error| ManifestProblems::Unannounceable { error })
}
