//! The catalogue behind `GET /v1/models`: the models of the online nodes that a consumer may
//! use, merged across nodes, with their capabilities from the manifests.
//!
//! Models are merged by served id, compared case-insensitively (as routing compares them). As a
//! request may land on any node that serves a model, the capabilities are what every one of
//! them declares: the smallest declared context length, and the modalities and features they
//! all share. `nodes` counts the online nodes that serve it to this consumer.

use std::collections::{BTreeMap, BTreeSet};

use inference_club_core::endpoint::Endpoint;
use inference_club_core::openai::Model;
use serde_json::Value;

use super::OnlineNode;

/// `owned_by` of a model that members of the club serve together (more than one operator).
pub const SHARED_OWNER: &str = "inference-club";

/// What the nodes serving one model declare, merged node by node.
struct Entry {
    id: String,
    hf: Option<String>,
    /// Every offering's Hugging Face id, lower-case: a request names the model by any of them.
    hf_ids: BTreeSet<String>,
    name: Option<String>,
    /// The first offering's operator.
    operator: String,
    /// Another operator serves it too.
    shared: bool,
    /// The earliest link among its nodes.
    created: u64,
    /// The smallest declared context length.
    context_length: Option<u32>,
    /// What every offering declares (intersections).
    input: BTreeSet<String>,
    output: BTreeSet<String>,
    features: BTreeSet<String>,
    /// The endpoints some node serves it at (a request at one of them is routed to those).
    endpoints: BTreeSet<usize>,
    /// Distinct nodes serving it, and the last one counted.
    nodes: usize,
    last_node: usize,
}

impl Entry {
    fn into_model(self) -> Model {
        let owned_by = if self.shared {
            SHARED_OWNER.to_owned()
        } else {
            self.operator
        };
        let mut model = Model::new(self.id, owned_by);
        model.created = self.created;
        let extra = &mut model.extra;
        if let Some(hf) = self.hf {
            extra.insert("hf".into(), Value::String(hf));
        }
        if let Some(name) = self.name {
            extra.insert("name".into(), Value::String(name));
        }
        if let Some(context) = self.context_length {
            extra.insert("context_length".into(), Value::from(context));
        }
        let list =
            |items: BTreeSet<String>| Value::Array(items.into_iter().map(Value::String).collect());
        extra.insert("input_modalities".into(), list(self.input));
        extra.insert("output_modalities".into(), list(self.output));
        extra.insert("features".into(), list(self.features));
        let endpoints = self
            .endpoints
            .into_iter()
            .filter_map(|i| Endpoint::ALL.get(i))
            .map(|e| Value::String(e.as_str().to_owned()))
            .collect();
        extra.insert("endpoints".into(), Value::Array(endpoints));
        extra.insert("nodes".into(), Value::from(self.nodes));
        model
    }
}

/// The modalities a model declares, or its service type's `default` when it declares none.
fn declared(given: &[String], default: &[&str]) -> BTreeSet<String> {
    if given.is_empty() {
        default.iter().map(|m| (*m).to_owned()).collect()
    } else {
        given.iter().cloned().collect()
    }
}

/// Whether `modality` is among those [`declared`] would give.
fn declares(given: &[String], default: &[&str], modality: &str) -> bool {
    if given.is_empty() {
        default.contains(&modality)
    } else {
        given.iter().any(|m| m == modality)
    }
}

/// The models of `nodes` that `consumer` (a member's handle; `None` when anonymous) may use,
/// keyed by lower-case id, each with `id`, `object`, `created` (the earliest link among its
/// nodes), `owned_by` (the operator, or [`SHARED_OWNER`] when several serve it) and the
/// capabilities `context_length`, `input_modalities`, `output_modalities`, `features`, `nodes`
/// (and `hf`, `name` where declared).
///
/// Each model also lists `endpoints`: the API routes (`chat_completions`, `completions`,
/// `embeddings`, `responses`, `audio_transcriptions`, `audio_speech`, `images_generations`)
/// some node serves it at (a node of an older protocol serves chat only). Services that answer
/// no endpoint (`mesh`, `video`, …) are left out. Only nodes that accept requests count (the
/// operator's kill switch is off), and only services whose access policy (with the operator's
/// overrides) admits `consumer`: anonymous callers are admitted by no policy, so they see
/// none.
pub fn models_for(nodes: &[OnlineNode], consumer: Option<&str>) -> BTreeMap<String, Model> {
    entries(nodes, consumer)
        .into_iter()
        .map(|(key, entry)| (key, entry.into_model()))
        .collect()
}

/// The entry of [`models_for`] that a request naming `requested` is routed to (as routing
/// matches names): the model whose served id is `requested` in any case, else the first (by
/// id) that some node serves under the Hugging Face id `requested`. `None` when the caller may
/// use no such model.
pub fn model_for(nodes: &[OnlineNode], consumer: Option<&str>, requested: &str) -> Option<Model> {
    let mut entries = entries(nodes, consumer);
    let key = requested.to_ascii_lowercase();
    entries
        .remove(&key)
        .or_else(|| entries.into_values().find(|e| e.hf_ids.contains(&key)))
        .map(Entry::into_model)
}

/// The entries behind [`models_for`], keyed by lower-case served id.
fn entries(nodes: &[OnlineNode], consumer: Option<&str>) -> BTreeMap<String, Entry> {
    let mut nodes: Vec<&OnlineNode> = nodes.iter().collect();
    nodes.sort_by_cached_key(|n| (n.operator().to_ascii_lowercase(), n.key().provider.clone()));
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    for (index, node) in nodes.iter().enumerate() {
        let offer = node.offer();
        if !offer.accepting() {
            continue;
        }
        let created = u64::try_from(node.connected_at().timestamp()).unwrap_or(0);
        for service in offer.manifest.services() {
            if !offer.access_for(service).admits(node.operator(), consumer) {
                continue;
            }
            let (default_in, default_out) = service.service_type.default_modalities();
            for model in &service.models {
                let Some(id) = model.served_id() else {
                    continue;
                };
                let served =
                    Endpoint::all_served_by(service.service_type, &service.features, Some(model));
                if served.is_empty()
                    || (!node.takes_calls() && !served.contains(&Endpoint::ChatCompletions))
                {
                    continue;
                }
                let endpoints = served
                    .iter()
                    .filter(|e| **e == Endpoint::ChatCompletions || node.takes_calls())
                    .filter_map(|e| Endpoint::ALL.iter().position(|a| a == e));
                let features = || model.features.iter().chain(&service.features);
                let key = id.to_ascii_lowercase();
                let hf_id = model
                    .hf
                    .as_deref()
                    .filter(|h| !h.is_empty())
                    .map(str::to_ascii_lowercase);
                let Some(entry) = entries.get_mut(&key) else {
                    entries.insert(
                        key,
                        Entry {
                            id: id.to_owned(),
                            hf: model.hf.clone().filter(|h| !h.is_empty()),
                            hf_ids: hf_id.into_iter().collect(),
                            name: model.name.clone().filter(|n| !n.is_empty()),
                            operator: node.operator().to_owned(),
                            shared: false,
                            created,
                            context_length: model.context_length,
                            input: declared(&model.input_modalities, default_in),
                            output: declared(&model.output_modalities, default_out),
                            features: features().cloned().collect(),
                            endpoints: endpoints.collect(),
                            nodes: 1,
                            last_node: index,
                        },
                    );
                    continue;
                };
                if entry.hf.is_none() {
                    entry.hf = model.hf.clone().filter(|h| !h.is_empty());
                }
                entry.hf_ids.extend(hf_id);
                if entry.name.is_none() {
                    entry.name = model.name.clone().filter(|n| !n.is_empty());
                }
                entry.shared |= !entry.operator.eq_ignore_ascii_case(node.operator());
                entry.created = entry.created.min(created);
                entry.context_length = match (entry.context_length, model.context_length) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                entry
                    .input
                    .retain(|m| declares(&model.input_modalities, default_in, m));
                entry
                    .output
                    .retain(|m| declares(&model.output_modalities, default_out, m));
                entry.features.retain(|f| features().any(|g| g == f));
                entry.endpoints.extend(endpoints);
                if entry.last_node != index {
                    entry.nodes += 1;
                    entry.last_node = index;
                }
            }
        }
    }
    entries
}
