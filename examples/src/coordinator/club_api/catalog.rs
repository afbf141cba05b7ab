//! The catalogue behind `GET /v1/models`: the models of the online nodes that a consumer may
//! use, merged across nodes, with their capabilities from the manifests.
//!
//! Models are merged by served id, compared case-insensitively (as routing compares them). As a
//! request may land on any node that serves a model, the capabilities are what every one of
//! them declares: the smallest declared context length, and the modalities and features they
//! all share. `nodes` counts the online nodes that serve it to this consumer.

use std::collections::{BTreeMap, BTreeSet};

use inference_club_core::manifest::ServiceType;
use inference_club_core::openai::Model;
use serde_json::Value;

use crate::coordinator::nodes::OnlineNode;

/// `owned_by` of a model that members of the club serve together (more than one operator).
pub const SHARED_OWNER: &str = "inference-club";

/// What one node declares about one model.
struct Offering {
    operator: String,
    created: u64,
    context_length: Option<u32>,
    input: BTreeSet<String>,
    output: BTreeSet<String>,
    features: BTreeSet<String>,
}

/// Merges what the nodes declare.
struct Entry {
    id: String,
    hf: Option<String>,
    name: Option<String>,
    offerings: Vec<Offering>,
    nodes: BTreeSet<usize>,
}

fn intersect(sets: impl Iterator<Item = BTreeSet<String>>) -> Vec<String> {
    sets.reduce(|a, b| a.intersection(&b).cloned().collect())
        .unwrap_or_default()
        .into_iter()
        .collect()
}

impl Entry {
    fn into_model(self) -> Model {
        let operators: BTreeSet<String> = self
            .offerings
            .iter()
            .map(|o| o.operator.to_ascii_lowercase())
            .collect();
        let owned_by = match (operators.len(), self.offerings.first()) {
            (1, Some(first)) => first.operator.clone(),
            _ => SHARED_OWNER.to_owned(),
        };
        let mut model = Model::new(self.id, owned_by);
        model.created = self.offerings.iter().map(|o| o.created).min().unwrap_or(0);
        let extra = &mut model.extra;
        if let Some(hf) = self.hf {
            extra.insert("hf".into(), Value::String(hf));
        }
        if let Some(name) = self.name {
            extra.insert("name".into(), Value::String(name));
        }
        if let Some(context) = self.offerings.iter().filter_map(|o| o.context_length).min() {
            extra.insert("context_length".into(), Value::from(context));
        }
        let list =
            |items: Vec<String>| Value::Array(items.into_iter().map(Value::String).collect());
        extra.insert(
            "input_modalities".into(),
            list(intersect(self.offerings.iter().map(|o| o.input.clone()))),
        );
        extra.insert(
            "output_modalities".into(),
            list(intersect(self.offerings.iter().map(|o| o.output.clone()))),
        );
        extra.insert(
            "features".into(),
            list(intersect(self.offerings.iter().map(|o| o.features.clone()))),
        );
        extra.insert("nodes".into(), Value::from(self.nodes.len()));
        model
    }
}

/// The models of `nodes` that `consumer` (a member's handle; `None` when anonymous) may use,
/// keyed by lower-case id, each with `id`, `object`, `created` (the earliest link among its
/// nodes), `owned_by` (the operator, or [`SHARED_OWNER`] when several serve it) and the
/// capabilities `context_length`, `input_modalities`, `output_modalities`, `features`, `nodes`
/// (and `hf`, `name` where declared).
///
/// Only `llm` services count (the ones chat completions reach), only on nodes that accept
/// requests (the operator's kill switch is off), and only those whose access policy (with the
/// operator's overrides) admits `consumer`: anonymous callers are admitted by no policy, so
/// they see none.
pub fn models_for(nodes: &[OnlineNode], consumer: Option<&str>) -> BTreeMap<String, Model> {
    let mut nodes: Vec<&OnlineNode> = nodes.iter().collect();
    nodes.sort_by(|a, b| {
        (a.operator().to_ascii_lowercase(), &a.key().provider)
            .cmp(&(b.operator().to_ascii_lowercase(), &b.key().provider))
    });
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    for (index, node) in nodes.iter().enumerate() {
        let offer = node.offer();
        if !offer.accepting() {
            continue;
        }
        let manifest = &offer.manifest;
        let created = u64::try_from(node.connected_at().timestamp()).unwrap_or(0);
        for service in manifest
            .services()
            .filter(|s| s.service_type == ServiceType::Llm)
        {
            if !offer.access_for(service).admits(node.operator(), consumer) {
                continue;
            }
            let (default_in, default_out) = service.service_type.default_modalities();
            let set = |given: &[String], default: &[&str]| -> BTreeSet<String> {
                if given.is_empty() {
                    default.iter().map(|m| (*m).to_owned()).collect()
                } else {
                    given.iter().cloned().collect()
                }
            };
            for model in &service.models {
                let Some(id) = model.served_id() else {
                    continue;
                };
                let entry = entries
                    .entry(id.to_ascii_lowercase())
                    .or_insert_with(|| Entry {
                        id: id.to_owned(),
                        hf: None,
                        name: None,
                        offerings: Vec::new(),
                        nodes: BTreeSet::new(),
                    });
                if entry.hf.is_none() {
                    entry.hf = model.hf.clone().filter(|h| !h.is_empty());
                }
                if entry.name.is_none() {
                    entry.name = model.name.clone().filter(|n| !n.is_empty());
                }
                entry.nodes.insert(index);
                entry.offerings.push(Offering {
                    operator: node.operator().to_owned(),
                    created,
                    context_length: model.context_length,
                    input: set(&model.input_modalities, default_in),
                    output: set(&model.output_modalities, default_out),
                    features: model
                        .features
                        .iter()
                        .chain(&service.features)
                        .cloned()
                        .collect(),
                });
            }
        }
    }
    entries
        .into_iter()
        .map(|(key, entry)| (key, entry.into_model()))
        .collect()
}
