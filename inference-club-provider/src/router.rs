//! The model router: one [`Provider`] over several backends, keyed by the models they serve.
//!
//! A node runs several engines (a vLLM on one GPU box, an Ollama on a laptop, ...). The
//! [`Router`] puts them behind one `Provider`: for each request it finds the services whose
//! models answer to the requested name, picks the least loaded one that has room, rewrites the
//! model name to the id that engine serves, and fails over to the next one when an engine
//! fails before producing output.
//!
//! # How a request is placed
//!
//! 1. **Which services.** A service is a candidate when one of its models answers to
//!    `request.model`: its served id or its Hugging Face id, case-insensitively (see
//!    [`manifest::Model::answers_to`]). No candidate at all is
//!    [`ProviderError::ModelNotFound`], never a silent default.
//! 2. **Who may use it.** A route with an access policy admits the consumer named in
//!    [`RequestContext::consumer`] by [`AccessPolicy::admits`], with the router's owner as the
//!    node's owner. Candidates exist but none admits the consumer: [`ProviderError::Rejected`]
//!    with status 403 and code `access_denied`.
//! 3. **Which one first.** The best candidate is the one core's placement policy picks
//!    ([`routing::choose`], the same as the coordinator's dispatch uses): least relative
//!    load (`in_flight / max_concurrent`) first, then the fastest recent time to first token
//!    (a [`routing::Ewma`] per route), then round robin. A route at its `max_concurrent` is
//!    never chosen; when every candidate is full the answer is [`ProviderError::Busy`] (the
//!    router has no queue: the caller decides whether to wait and retry).
//! 4. **Reserve, then call.** Ranking and taking the slot happen under one lock, so two
//!    requests can never both take a route's last slot. The slot is held by the returned
//!    stream until it ends or is dropped.
//! 5. **Fail over before output.** If the engine fails before its first output (an error from
//!    `chat`, or an error in the stream before any content, reasoning, tool call or finish
//!    reason) and the error [is retryable](ProviderError::is_retryable), the next candidate is
//!    tried, never the same one twice. A non-retryable error (such as
//!    [`ProviderError::Rejected`]) is returned at once: the same request would be refused
//!    anywhere. Once output has started, an error passes through as the stream's last item.
//!
//! The chunks keep the model id the engine served them under.
//!
//! A route that failed stays a candidate: it is ranked by load like the others (a failure
//! counts as a slow [time to first token](FAILED_ATTEMPT_TTFT), which matters between routes of
//! equal load). A route whose engine could not be reached at all (refused, reset, connect
//! timeout) rests for [`UNREACHABLE_COOLDOWN`] while another route can serve the model (the
//! policy's `resting` candidates), so that requests do not each pay a failed attempt on a dead
//! engine; alone, it is tried anyway.
//!
//! # Services that list no models
//!
//! A route (or a manifest service) that names no models serves whatever its backend lists.
//! Such a route serves nothing until [`Router::discover_models`] has asked its backend; call it
//! after building the router, and again whenever the engines may have loaded other models.
//!
//! # Example
//!
//! Two engines serving the same model under different ids; a consumer names it by its Hugging
//! Face id, and each engine receives its own id.
//!
//! ```
//! use std::sync::Arc;
//!
//! use futures_util::StreamExt;
//! use inference_club_core::openai::{ChatCompletionRequest, ChatMessage};
//! use inference_club_core::provider::{Provider, RequestContext};
//! use inference_club_provider::backends::Echo;
//! use inference_club_provider::router::{Route, Router};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let router = Router::builder()
//!     .route(
//!         Route::new("ollama", Arc::new(Echo::new().models(["qwen3:8b"])))
//!             .model_with_hf("qwen3:8b", "Qwen/Qwen3-8B")
//!             .max_concurrent(2),
//!     )
//!     .route(
//!         Route::new("vllm", Arc::new(Echo::new().models(["Qwen/Qwen3-8B"])))
//!             .model("Qwen/Qwen3-8B")
//!             .max_concurrent(8),
//!     )
//!     .build();
//!
//! let ask = || ChatCompletionRequest::new("qwen/qwen3-8b", vec![ChatMessage::user("hi")]);
//! let mut first = router.chat(ask(), RequestContext::new("req-1")).await?;
//! // `first` holds a slot on one engine, so the next request goes to the other, idle one.
//! let mut second = router.chat(ask(), RequestContext::new("req-2")).await?;
//!
//! // Each engine received (and answers under) its own id for the model.
//! let mut models = Vec::new();
//! for chunks in [&mut first, &mut second] {
//!     if let Some(chunk) = chunks.next().await.transpose()? {
//!         models.push(chunk.model);
//!     }
//! }
//! models.sort();
//! assert_eq!(models, ["Qwen/Qwen3-8B", "qwen3:8b"]);
//!
//! // Open streams hold their slots, as the node's heartbeat reports.
//! let in_flight = |router: &Router| router.load().iter().map(|s| s.in_flight).sum::<u32>();
//! assert_eq!(in_flight(&router), 2);
//! drop((first, second));
//! assert_eq!(in_flight(&router), 0);
//!
//! let served: Vec<String> = router.models().await?.into_iter().map(|m| m.id).collect();
//! assert_eq!(served, ["qwen3:8b", "Qwen/Qwen3-8B"]);
//! # Ok(())
//! # }
//! ```

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use inference_club_core::endpoint::Endpoint;
use inference_club_core::link::ServiceLoad;
use inference_club_core::manifest::{
    self, AccessPolicy, Service, ServiceManifest, ServiceType, effective_access,
};
use inference_club_core::openai::{ChatCompletionRequest, Model};
use inference_club_core::provider::{
    Call, CallStream, ChunkStream, Provider, ProviderError, RequestContext,
};
use inference_club_core::routing::{self, Availability, Candidate, Ewma};

use inference_club_core::routing::failover;

/// The time to first token recorded for an attempt that failed before its first output (or
/// its actual wait, if longer), so that a failing route ranks behind healthy peers of equal
/// load instead of staying "unmeasured" and being tried first.
pub const FAILED_ATTEMPT_TTFT: Duration = Duration::from_secs(10);

/// How long a route whose engine could not be reached is passed over (while another route can
/// serve the model; when none can, it is tried anyway).
pub const UNREACHABLE_COOLDOWN: Duration = Duration::from_secs(2);

/// One service behind the router: a backend, the models it serves, its capacity and who may use
/// it. Built with [`Route::new`] and the methods below, then given to [`RouterBuilder::route`].
pub struct Route {
    service: String,
    backend: Arc<dyn Provider>,
    service_type: ServiceType,
    features: Vec<String>,
    models: Vec<manifest::Model>,
    max_concurrent: Option<u32>,
    access: Option<AccessPolicy>,
}

impl Route {
    /// A route to `backend`, reported in [`Router::load`] as `service`. An `llm` service,
    /// unbounded, open to every consumer, and serving no models yet: add them with
    /// [`Route::model`] and its siblings, or leave none to serve what the backend lists (see
    /// [`Router::discover_models`]).
    pub fn new(service: impl Into<String>, backend: Arc<dyn Provider>) -> Self {
        Self {
            service: service.into(),
            backend,
            service_type: ServiceType::Llm,
            features: Vec::new(),
            models: Vec::new(),
            max_concurrent: None,
            access: None,
        }
    }

    /// Serves the model the engine knows as `served_id`; consumers name it by that id
    /// (case-insensitively).
    pub fn model(self, served_id: impl Into<String>) -> Self {
        self.manifest_model(manifest::Model {
            id: Some(served_id.into()),
            ..manifest::Model::default()
        })
    }

    /// Serves the model the engine knows as `served_id`; consumers name it by that id or by its
    /// Hugging Face id `hf` (both case-insensitively).
    pub fn model_with_hf(self, served_id: impl Into<String>, hf: impl Into<String>) -> Self {
        self.manifest_model(manifest::Model {
            id: Some(served_id.into()),
            hf: Some(hf.into()),
            ..manifest::Model::default()
        })
    }

    /// Serves a model as a manifest describes it: under its
    /// [`served_id`](manifest::Model::served_id), answering to what
    /// [`answers_to`](manifest::Model::answers_to) accepts. A model without a served id (which
    /// validation refuses) is ignored.
    pub fn manifest_model(mut self, model: manifest::Model) -> Self {
        if model.served_id().is_some() {
            self.models.push(model);
        }
        self
    }

    /// The route's service type (default `llm`): which [`Endpoint`]s it answers.
    pub fn service_type(mut self, service_type: ServiceType) -> Self {
        self.service_type = service_type;
        self
    }

    /// The service's features (e.g. `embeddings`), which apply to every model of the route.
    pub fn features(mut self, features: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.features = features.into_iter().map(Into::into).collect();
        self
    }

    /// Runs at most `max` requests at once on this route (`0` takes none).
    pub fn max_concurrent(mut self, max: u32) -> Self {
        self.max_concurrent = Some(max);
        self
    }

    /// Admits only the consumers `policy` admits, with the router's owner (see
    /// [`RouterBuilder::owner`]) as the node's owner. Without a policy, the route admits every
    /// request, anonymous ones included.
    pub fn access(mut self, policy: AccessPolicy) -> Self {
        self.access = Some(policy);
        self
    }
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("service", &self.service)
            .field("models", &self.models)
            .field("max_concurrent", &self.max_concurrent)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Router`] by hand; see [`Router::builder`].
#[derive(Debug, Default)]
pub struct RouterBuilder {
    routes: Vec<Route>,
    owner: Option<String>,
}

impl RouterBuilder {
    /// Adds a route. Earlier routes win ties that round robin has not yet spread.
    pub fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }

    /// The node owner's handle: always admitted by routes with an access policy. Without an
    /// owner, nobody is admitted as the owner (so a route with [`AccessPolicy::Owner`] admits
    /// nobody).
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// The router.
    pub fn build(self) -> Router {
        let routes = self
            .routes
            .into_iter()
            .map(|route| RouteState::new(route, self.owner.as_deref()))
            .collect();
        Router {
            routes,
            owner: self.owner,
            selection: Mutex::new(()),
            turns: AtomicU64::new(0),
        }
    }
}

/// A [`Provider`] over several backends that sends each request to a backend serving its model:
/// least loaded first, never beyond a backend's `max_concurrent`, failing over to the next
/// backend when one fails before its first output. See the [module docs](self) for the rules
/// and an example.
pub struct Router {
    routes: Vec<RouteState>,
    owner: Option<String>,
    /// Held while ranking the routes and reserving a slot on the chosen one, so that two
    /// requests cannot both take a route's last slot. Never held across an `await`.
    selection: Mutex<()>,
    /// Advances per request; spreads requests over equally good routes (round robin).
    turns: AtomicU64,
}

impl Router {
    /// A builder for a router made by hand.
    pub fn builder() -> RouterBuilder {
        RouterBuilder::default()
    }

    /// A router over the services of a (validated) manifest that answer an [`Endpoint`]
    /// (`llm`, `stt`, `tts`, `image`), one route per service:
    /// its models, `max_concurrent` and, when `owner` is given, its
    /// [effective access policy](effective_access) with `owner` as the node's owner. Without an
    /// owner the routes admit everyone: a node behind a coordinator passes `None`, since the
    /// coordinator applies the access policies (it knows both the owner and the consumer).
    /// `make_backend` builds each service's backend (from its
    /// `engine`, `url` and `api_key`); the first error it returns is returned.
    ///
    /// Services of other types (`mesh`, `video`, ...) answer no endpoint yet and are left out.
    /// Services that list no models serve what their engine lists once
    /// [`Router::discover_models`] has run.
    pub fn from_manifest<F>(
        manifest: &ServiceManifest,
        owner: Option<&str>,
        mut make_backend: F,
    ) -> Result<Self, ProviderError>
    where
        F: FnMut(&Service) -> Result<Arc<dyn Provider>, ProviderError>,
    {
        let mut builder = Self::builder();
        if let Some(owner) = owner {
            builder = builder.owner(owner);
        }
        for service in manifest.services().filter(|service| {
            !Endpoint::all_served_by(service.service_type, &service.features, None).is_empty()
        }) {
            let mut route = Route::new(service.name.clone(), make_backend(service)?)
                .service_type(service.service_type)
                .features(service.features.iter().cloned());
            if owner.is_some() {
                route = route.access(effective_access(&manifest.agent, service).clone());
            }
            if let Some(max) = service.max_concurrent {
                route = route.max_concurrent(max);
            }
            for model in &service.models {
                route = route.manifest_model(model.clone());
            }
            builder = builder.route(route);
        }
        Ok(builder.build())
    }

    /// Asks the backend of every route that lists no models for its model list, and serves
    /// those models (under the ids the backend gives, with no other aliases) from now on.
    ///
    /// Backends are asked concurrently. A backend that cannot answer keeps the models it had
    /// (none, the first time) and is reported in the returned list; an empty list means every
    /// such backend answered. Routes that list their models are left as they are.
    #[must_use = "a service whose engine did not answer serves no discovered models"]
    pub async fn discover_models(&self) -> Vec<DiscoveryFailure> {
        let asks = self
            .routes
            .iter()
            .filter(|route| route.discovers)
            .map(|route| async move { (route, route.backend.models().await) });
        let mut failures = Vec::new();
        for (route, answer) in futures_util::future::join_all(asks).await {
            match answer {
                Ok(listed) => route.set_models(listed.into_iter().map(ServedModel::discovered)),
                Err(error) => {
                    tracing::warn!(service = %route.service, %error, "cannot list the engine's models");
                    failures.push(DiscoveryFailure {
                        service: route.service.clone(),
                        error,
                    });
                }
            }
        }
        failures
    }

    /// The load of every route, in the order they were added: what the node reports in its
    /// heartbeats. A request counts from the moment it is placed until its stream ends or is
    /// dropped.
    pub fn load(&self) -> Vec<ServiceLoad> {
        self.routes
            .iter()
            .map(|route| ServiceLoad {
                service: route.service.clone(),
                in_flight: route.in_flight.get(),
                max_concurrent: route.max_concurrent,
            })
            .collect()
    }

    /// Ranks the routes for `requested` and reserves a slot on the best one with room, in one
    /// step under the selection lock. `Err` says why no route can take the request.
    fn reserve(
        &self,
        endpoint: Endpoint,
        requested: &str,
        consumer: Option<&str>,
        excluded: &[usize],
    ) -> Result<Reservation<'_>, Availability> {
        let _selecting = self
            .selection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let served_ids: Vec<Option<String>> = self
            .routes
            .iter()
            .map(|route| route.served_id_for(endpoint, requested))
            .collect();
        let candidates: Vec<Candidate<usize>> = self
            .routes
            .iter()
            .zip(&served_ids)
            .enumerate()
            .map(|(index, (route, served_id))| Candidate {
                serves_model: served_id.is_some(),
                admits_consumer: self.admits(route, consumer),
                // An engine that failed to answer rests: it is tried only when no other is left
                // (core's rule 6).
                resting: route.is_down(),
                in_flight: route.in_flight.get(),
                max_concurrent: route.max_concurrent,
                recent_ttft: route.recent_ttft(),
                ..Candidate::new(index)
            })
            .collect();
        let turn = self.turns.fetch_add(1, Ordering::Relaxed);
        let choice = routing::choose(&candidates, excluded, turn);

        let chosen = choice.best.and_then(|index| {
            let route = self.routes.get(index)?;
            let served_id = served_ids.get(index).cloned().flatten()?;
            Some(Reservation {
                index,
                route,
                served_id,
                slot: route.in_flight.take_slot(),
            })
        });
        chosen.ok_or(choice.availability)
    }

    /// Whether `route`'s access policy, if any, admits `consumer`.
    fn admits(&self, route: &RouteState, consumer: Option<&str>) -> bool {
        let Some(policy) = &route.access else {
            return true;
        };
        // An empty handle is nobody: an empty consumer is anonymous, and without a known owner
        // the empty owner handle matches no consumer, so only the policy's other rules apply.
        let consumer = consumer.filter(|consumer| !consumer.is_empty());
        policy.admits(self.owner.as_deref().unwrap_or_default(), consumer)
    }
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("owner", &self.owner)
            .field("load", &self.load())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Provider for Router {
    /// Every route's models, each id once: `id`, `object`, `created` and `owned_by` (the node's
    /// owner, else the service name; an engine's own entry for discovered models).
    async fn models(&self) -> Result<Vec<Model>, ProviderError> {
        let mut seen = HashSet::new();
        let mut listed = Vec::new();
        for route in &self.routes {
            for model in route.models().iter() {
                if seen.insert(model.listing.id.clone()) {
                    listed.push(model.listing.clone());
                }
            }
        }
        Ok(listed)
    }

    async fn chat(
        &self,
        request: ChatCompletionRequest,
        context: RequestContext,
    ) -> Result<ChunkStream, ProviderError> {
        let mut tried: Vec<usize> = Vec::new();
        let mut last_error: Option<ProviderError> = None;
        loop {
            if context.cancel.is_cancelled() {
                return Err(ProviderError::Cancelled);
            }
            let reservation = match self.reserve(
                Endpoint::ChatCompletions,
                &request.model,
                context.consumer.as_deref(),
                &tried,
            ) {
                Ok(reservation) => reservation,
                Err(availability) => {
                    return Err(unplaceable(
                        &request.model,
                        &context,
                        availability,
                        last_error,
                    ));
                }
            };
            let Reservation {
                index,
                route,
                served_id,
                slot,
            } = reservation;

            let mut attempt = request.clone();
            attempt.model = served_id;
            let started = Instant::now();
            let opened = match route.backend.chat(attempt, context.clone()).await {
                Ok(chunks) => failover::read_until_output(chunks).await,
                Err(error) => Err(error),
            };
            match opened {
                Ok(opened) => {
                    // A whole answer's first output is the whole of it: not a time to first
                    // token to compare routes by.
                    if opened.output_started() && !context.whole {
                        route.record_ttft(started.elapsed());
                    }
                    return Ok(opened.into_stream(slot));
                }
                Err(error) if error.is_retryable() => {
                    tracing::debug!(
                        service = %route.service, %error,
                        "failed before its first output; trying the next service"
                    );
                    route.record_ttft(started.elapsed().max(FAILED_ATTEMPT_TTFT));
                    route.note_failure(&error);
                    tried.push(index);
                    last_error = Some(error);
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Places a call as chat is placed: on a route of the endpoint's service type serving the
    /// model, failing over before the first output.
    async fn call(&self, call: Call, context: RequestContext) -> Result<CallStream, ProviderError> {
        let requested = call.model().to_owned();
        let mut tried: Vec<usize> = Vec::new();
        let mut last_error: Option<ProviderError> = None;
        loop {
            if context.cancel.is_cancelled() {
                return Err(ProviderError::Cancelled);
            }
            let Reservation {
                index,
                route,
                served_id,
                slot,
            } = match self.reserve(
                call.endpoint,
                &requested,
                context.consumer.as_deref(),
                &tried,
            ) {
                Ok(reservation) => reservation,
                Err(availability) => {
                    return Err(unplaceable(&requested, &context, availability, last_error));
                }
            };
            let attempt = call.clone().with_model(&served_id);
            let started = Instant::now();
            let opened = match route.backend.call(attempt, context.clone()).await {
                Ok(outputs) => failover::call_until_output(outputs).await,
                Err(error) => Err(error),
            };
            match opened {
                Ok(opened) => {
                    // A whole answer's first output is the whole of it: not a time to first
                    // token to compare routes by.
                    if opened.output_started() && !context.whole {
                        route.record_ttft(started.elapsed());
                    }
                    return Ok(opened.into_stream(slot));
                }
                Err(error) if error.is_retryable() => {
                    route.record_ttft(started.elapsed().max(FAILED_ATTEMPT_TTFT));
                    route.note_failure(&error);
                    tried.push(index);
                    last_error = Some(error);
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// The error for a request no route can take.
fn unplaceable(
    model: &str,
    context: &RequestContext,
    availability: Availability,
    last_error: Option<ProviderError>,
) -> ProviderError {
    let model = model.to_owned();
    match availability {
        Availability::NotServed => ProviderError::ModelNotFound {
            model: model.clone(),
        },
        Availability::NotAdmitted => ProviderError::Rejected {
            status: 403,
            message: match &context.consumer {
                Some(consumer) => format!("{consumer} may not use the services serving {model}"),
                None => format!("the services serving {model} require signing in"),
            },
            code: Some("access_denied".into()),
        },
        Availability::AllFull => ProviderError::Busy {
            message: format!("every service serving {model} is at its max_concurrent"),
        },
        // Every candidate was tried and failed: report the last failure.
        _ => last_error.unwrap_or_else(|| ProviderError::Unavailable {
            status: None,
            message: format!("no service serving {model} is available"),
        }),
    }
}

/// Why [`Router::discover_models`] could not learn a service's models.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryFailure {
    /// The service whose backend did not answer.
    pub service: String,
    /// Its error.
    pub error: ProviderError,
}

/// A route and its live state.
struct RouteState {
    service: String,
    backend: Arc<dyn Provider>,
    service_type: ServiceType,
    features: Vec<String>,
    /// Replaced as a whole by discovery; read per request.
    models: RwLock<Arc<[ServedModel]>>,
    /// The route listed no models: its backend's list is used.
    discovers: bool,
    max_concurrent: Option<u32>,
    access: Option<AccessPolicy>,
    in_flight: Arc<InFlight>,
    ttft: Mutex<Ewma>,
    /// Set when the engine could not be reached: the route is passed over until then.
    down_until: Mutex<Option<Instant>>,
}

impl RouteState {
    fn new(route: Route, owner: Option<&str>) -> Self {
        let owned_by = owner.unwrap_or(&route.service);
        let models: Arc<[ServedModel]> = route
            .models
            .into_iter()
            .filter_map(|model| ServedModel::declared(model, owned_by))
            .collect();
        Self {
            discovers: models.is_empty(),
            models: RwLock::new(models),
            service: route.service,
            backend: route.backend,
            service_type: route.service_type,
            features: route.features,
            max_concurrent: route.max_concurrent,
            access: route.access,
            in_flight: Arc::default(),
            ttft: Mutex::new(Ewma::default()),
            down_until: Mutex::new(None),
        }
    }

    /// Whether the route is resting after its engine could not be reached.
    fn is_down(&self) -> bool {
        self.down_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|until| Instant::now() < until)
    }

    /// Notes an attempt's failure: an engine that cannot be reached (refused, reset, connect
    /// timeout) is passed over for [`UNREACHABLE_COOLDOWN`], so that requests do not each pay for
    /// a dead engine.
    fn note_failure(&self, error: &ProviderError) {
        let unreachable = matches!(
            error,
            ProviderError::Unavailable { status: None, .. }
                | ProviderError::Timeout {
                    phase: inference_club_core::provider::TimeoutPhase::Connect,
                    ..
                }
        );
        if unreachable {
            *self
                .down_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner) =
                Some(Instant::now() + UNREACHABLE_COOLDOWN);
        }
    }

    fn models(&self) -> Arc<[ServedModel]> {
        self.models
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_models(&self, models: impl IntoIterator<Item = ServedModel>) {
        *self.models.write().unwrap_or_else(PoisonError::into_inner) = models.into_iter().collect();
    }

    /// The id this route's engine serves `requested` under, if it serves it at `endpoint`.
    fn served_id_for(&self, endpoint: Endpoint, requested: &str) -> Option<String> {
        self.models()
            .iter()
            .find(|model| model.spec.answers_to(requested))
            .filter(|model| {
                let spec = model.declared.then_some(&model.spec);
                endpoint.served_by(self.service_type, &self.features, spec)
            })
            .and_then(|model| model.spec.served_id())
            .map(str::to_owned)
    }

    fn recent_ttft(&self) -> Option<Duration> {
        self.ttft
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .value()
    }

    fn record_ttft(&self, sample: Duration) {
        self.ttft
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .update(sample);
    }
}

/// A model a route serves: what it answers to, and how it is listed.
struct ServedModel {
    spec: manifest::Model,
    listing: Model,
    /// Declared (its features are known), not listed by the engine.
    declared: bool,
}

impl ServedModel {
    /// A model declared in a route or manifest; `None` without a served id.
    fn declared(spec: manifest::Model, owned_by: &str) -> Option<Self> {
        let listing = Model::new(spec.served_id()?, owned_by);
        Some(Self {
            spec,
            listing,
            declared: true,
        })
    }

    /// A model a backend listed: it answers to its id only.
    fn discovered(listing: Model) -> Self {
        let spec = manifest::Model {
            id: Some(listing.id.clone()),
            ..manifest::Model::default()
        };
        Self {
            spec,
            listing,
            declared: false,
        }
    }
}

/// The number of requests running on a route.
#[derive(Debug, Default)]
struct InFlight(AtomicU32);

impl InFlight {
    fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts one more request until the returned slot is dropped. Called only under the
    /// router's selection lock, after ranking found room, so the count never exceeds the
    /// route's `max_concurrent`.
    fn take_slot(self: &Arc<Self>) -> Slot {
        self.0.fetch_add(1, Ordering::Relaxed);
        Slot(Arc::clone(self))
    }
}

/// One request's place on a route: counted in its `in_flight` while this lives.
#[derive(Debug)]
struct Slot(Arc<InFlight>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The route chosen for an attempt, with its slot already taken.
struct Reservation<'a> {
    index: usize,
    route: &'a RouteState,
    served_id: String,
    slot: Slot,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::Echo;
    use futures_util::StreamExt;
    use inference_club_core::openai::ChatMessage;

    fn echo(models: &[&str]) -> Arc<dyn Provider> {
        Arc::new(Echo::new().models(models.iter().copied()))
    }

    fn ask(model: &str) -> ChatCompletionRequest {
        ChatCompletionRequest::new(model, vec![ChatMessage::user("hi")])
    }

    async fn answer(stream: ChunkStream) -> (String, String) {
        let chunks: Vec<_> = stream.collect().await;
        let mut text = String::new();
        let mut model = String::new();
        for chunk in chunks {
            let chunk = chunk.unwrap();
            model = chunk.model.clone();
            if let Some(content) = chunk.choices.first().and_then(|c| c.delta.content.clone()) {
                text.push_str(&content);
            }
        }
        (model, text)
    }

    /// A backend whose engine cannot be reached; counts the attempts.
    struct Unreachable(std::sync::atomic::AtomicU32);

    #[async_trait]
    impl Provider for Unreachable {
        async fn models(&self) -> Result<Vec<Model>, ProviderError> {
            Ok(Vec::new())
        }

        async fn chat(
            &self,
            _request: ChatCompletionRequest,
            _context: RequestContext,
        ) -> Result<ChunkStream, ProviderError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Err(ProviderError::Unavailable {
                status: None,
                message: "connection refused".into(),
            })
        }
    }

    #[tokio::test]
    async fn an_unreachable_engine_rests_while_another_serves() {
        let dead = Arc::new(Unreachable(std::sync::atomic::AtomicU32::new(0)));
        let router = Router::builder()
            .route(Route::new("dead", dead.clone()).model("m"))
            .route(Route::new("live", echo(&["m"])).model("m"))
            .build();
        for _ in 0..20 {
            let (_, text) = answer(
                router
                    .chat(ask("m"), RequestContext::new("r"))
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(text, "echo: hi");
        }
        assert!(
            dead.0.load(Ordering::SeqCst) <= 1,
            "the dead engine was tried again"
        );

        // Alone, a resting route is still tried (and its error reported).
        let alone = Arc::new(Unreachable(std::sync::atomic::AtomicU32::new(0)));
        let router = Router::builder()
            .route(Route::new("dead", alone.clone()).model("m"))
            .build();
        for _ in 0..2 {
            assert!(matches!(
                router.chat(ask("m"), RequestContext::new("r")).await,
                Err(ProviderError::Unavailable { .. })
            ));
        }
        assert_eq!(alone.0.load(Ordering::SeqCst), 2);
    }

    const MANIFEST: &str = "
schema_version: 1
agent: {name: home, access: owner}
hosts:
  - id: desk
    services:
      - name: small
        engine: ollama
        url: http://127.0.0.1:11434
        max_concurrent: 2
        access: members
        models:
          - id: qwen3:8b
            hf: Qwen/Qwen3-8B
      - name: private
        engine: vllm
        url: http://127.0.0.1:8000/v1
        models:
          - hf: Qwen/Qwen3-8B
      - name: whisper
        type: stt
        engine: other
        url: http://127.0.0.1:9000/v1
      - name: meshes
        type: mesh
        engine: other
        url: http://127.0.0.1:9001/v1
      - name: discovered
        engine: llamacpp
        url: http://127.0.0.1:8080/v1
";

    fn manifest_router() -> Router {
        let manifest = ServiceManifest::parse_and_validate(MANIFEST).unwrap();
        Router::from_manifest(&manifest, Some("alice"), |service| {
            Ok(match service.name.as_str() {
                "small" => echo(&["qwen3:8b"]),
                "private" => echo(&["Qwen/Qwen3-8B"]),
                "discovered" => echo(&["tiny", "qwen3:8b"]),
                "whisper" => echo(&[]),
                other => panic!("no backend expected for {other}"),
            })
        })
        .unwrap()
    }

    #[tokio::test]
    async fn from_manifest_carries_capacity_and_skips_other_types() {
        let router = manifest_router();
        let load = router.load();
        let services: Vec<_> = load.iter().map(|l| l.service.as_str()).collect();
        // `stt` answers an endpoint (transcriptions); `mesh` answers none yet.
        assert_eq!(services, ["small", "private", "whisper", "discovered"]);
        assert_eq!(load[0].max_concurrent, Some(2));
        assert_eq!(load[1].max_concurrent, None);
    }

    #[tokio::test]
    async fn access_policies_come_from_the_manifest() {
        let router = manifest_router();
        // `private` inherits `access: owner` from the agent: bob only gets `small` (2 slots).
        let bob = || RequestContext::new("r").with_consumer("bob");
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(router.chat(ask("Qwen/Qwen3-8B"), bob()).await.unwrap());
        }
        let busy = router.chat(ask("Qwen/Qwen3-8B"), bob()).await;
        assert!(matches!(busy, Err(ProviderError::Busy { .. })));
        // The owner (in any case) may use `private` too.
        let alice = RequestContext::new("r").with_consumer("Alice");
        let stream = router.chat(ask("qwen/qwen3-8b"), alice).await.unwrap();
        assert_eq!(answer(stream).await.0, "Qwen/Qwen3-8B");
        drop(held);
        // Anonymous requests are admitted nowhere.
        let denied = router.chat(ask("qwen3:8b"), RequestContext::new("r")).await;
        assert!(
            matches!(denied, Err(ProviderError::Rejected { status: 403, ref code, .. }) if code.as_deref() == Some("access_denied"))
        );
    }

    #[tokio::test]
    async fn routes_without_models_serve_what_discovery_finds() {
        let router = manifest_router();
        let ctx = || RequestContext::new("r").with_consumer("alice");
        assert!(matches!(
            router.chat(ask("tiny"), ctx()).await,
            Err(ProviderError::ModelNotFound { .. })
        ));
        assert!(router.discover_models().await.is_empty());
        let stream = router.chat(ask("TINY"), ctx()).await.unwrap();
        assert_eq!(answer(stream).await, ("tiny".into(), "echo: hi".into()));

        let ids: Vec<String> = router
            .models()
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, ["qwen3:8b", "Qwen/Qwen3-8B", "tiny"]);
    }

    #[tokio::test]
    async fn failed_discovery_is_reported_per_service() {
        let broken = crate::backends::OpenAiCompatible::builder("http://127.0.0.1:9/v1")
            .build()
            .unwrap();
        let router = Router::builder()
            .route(Route::new("gone", Arc::new(broken)))
            .route(Route::new("fine", echo(&["a"])))
            .build();
        let failures = router.discover_models().await;
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].service, "gone");
        assert!(failures[0].error.is_retryable());
        let ids: Vec<String> = router
            .models()
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, ["a"]);
    }

    #[tokio::test]
    async fn models_lists_each_id_once_with_owner() {
        let router = Router::builder()
            .owner("alice")
            .route(Route::new("one", echo(&["a"])).model("a").model("b"))
            .route(Route::new("two", echo(&["a"])).model("a"))
            .build();
        let models = router.models().await.unwrap();
        let ids: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(
            models
                .iter()
                .all(|m| m.object == "model" && m.owned_by == "alice")
        );
    }

    #[tokio::test]
    async fn without_owner_policies_still_apply() {
        let router = Router::builder()
            .route(
                Route::new("closed", echo(&["a"]))
                    .model("a")
                    .access(AccessPolicy::Owner),
            )
            .route(
                Route::new("listed", echo(&["b"]))
                    .model("b")
                    .access(AccessPolicy::Logins(vec!["bob".into()])),
            )
            .build();
        let with = |who: &str| RequestContext::new("r").with_consumer(who);
        assert!(router.chat(ask("a"), with("bob")).await.is_err());
        assert!(router.chat(ask("a"), with("")).await.is_err());
        assert!(router.chat(ask("b"), with("BOB")).await.is_ok());
        assert!(router.chat(ask("b"), with("carol")).await.is_err());
    }

    #[tokio::test]
    async fn zero_capacity_is_busy() {
        let router = Router::builder()
            .route(Route::new("off", echo(&["a"])).model("a").max_concurrent(0))
            .build();
        let busy = router.chat(ask("a"), RequestContext::new("r")).await;
        assert!(matches!(busy, Err(ProviderError::Busy { .. })));
    }

    #[tokio::test]
    async fn cancelled_before_placing_is_cancelled() {
        let router = Router::builder()
            .route(Route::new("one", echo(&["a"])).model("a"))
            .build();
        let ctx = RequestContext::new("r");
        ctx.cancel.cancel();
        assert_eq!(
            router.chat(ask("a"), ctx).await.err(),
            Some(ProviderError::Cancelled)
        );
    }
}
