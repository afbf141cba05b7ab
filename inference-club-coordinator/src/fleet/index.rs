//! Which online nodes serve which model: dispatch ranks only those for a request, not every
//! node of the club.
//!
//! The index is built from [`Fleet::online_nodes`](super::Fleet::online_nodes)
//! and built again when the nodes linked here or the directory of the other replicas changed
//! (their generation counters: a node linked, left, or announced a new manifest; a replica
//! started or stopped draining). A node's load, its operator's policy and whether it is still
//! linked are read live from the node itself when it is ranked, so jobs, beats and policy
//! changes never rebuild it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use super::OnlineNode;

/// The nodes serving each model name, as of two generations.
#[derive(Debug, Default)]
pub struct ModelIndex {
    built: Mutex<Option<Built>>,
}

#[derive(Debug)]
struct Built {
    /// The generations of the local registry and of the directory it was built at.
    generations: (u64, u64),
    /// Lower-case model name (served id or Hugging Face id) → the nodes answering to it.
    by_name: HashMap<String, Arc<[OnlineNode]>>,
}

impl ModelIndex {
    /// The nodes whose offer answers to `model` (its served id or Hugging Face id, in any
    /// case), as of `generations`; `online` lists every online node when the index must be
    /// built again. Read `generations` before anything changes that `online` would list.
    pub fn nodes_for(
        &self,
        generations: (u64, u64),
        model: &str,
        online: impl FnOnce() -> Vec<OnlineNode>,
    ) -> Arc<[OnlineNode]> {
        let mut built = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        if built.as_ref().is_none_or(|b| b.generations != generations) {
            *built = Some(Built {
                generations,
                by_name: by_name(online()),
            });
        }
        built
            .as_ref()
            .and_then(|b| b.by_name.get(&model.to_ascii_lowercase()).cloned())
            .unwrap_or_else(|| Arc::from(Vec::new()))
    }
}

/// Every name each node's models answer to, with the nodes answering to it (each node once
/// per name).
fn by_name(nodes: Vec<OnlineNode>) -> HashMap<String, Arc<[OnlineNode]>> {
    let mut lists: HashMap<String, Vec<OnlineNode>> = HashMap::new();
    for node in nodes {
        let offer = node.offer();
        let names: HashSet<String> = offer
            .models
            .iter()
            .flat_map(|m| std::iter::once(&m.served_id).chain(m.hf.as_ref()))
            .map(|name| name.to_ascii_lowercase())
            .collect();
        for name in names {
            lists.entry(name).or_default().push(node.clone());
        }
    }
    lists
        .into_iter()
        .map(|(name, nodes)| (name, Arc::from(nodes)))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::cluster::directory::{Directory, testing::peer};

    fn providers(nodes: &[OnlineNode]) -> Vec<String> {
        let mut names: Vec<String> = nodes.iter().map(|n| n.key().provider.clone()).collect();
        names.sort();
        names
    }

    #[test]
    fn nodes_are_found_by_served_id_or_hf_id_in_any_case_each_once() {
        let directory = Directory::default();
        let nodes = vec![
            peer(
                &directory,
                "a",
                &[("qwen3-8b", Some("Qwen/Qwen3-8B"))],
                None,
            ),
            // Its second model is served under the first one's Hugging Face id.
            peer(
                &directory,
                "b",
                &[("Qwen/Qwen3-8B", None), ("llama", Some("qwen/qwen3-8b"))],
                None,
            ),
            peer(&directory, "c", &[("llama", None)], None),
        ];
        let index = ModelIndex::default();
        let find = |model: &str| providers(&index.nodes_for((0, 0), model, || nodes.clone()));
        assert_eq!(find("qwen/qwen3-8b"), ["a", "b"]);
        assert_eq!(find("QWEN3-8B"), ["a"]);
        assert_eq!(find("llama"), ["b", "c"]);
        assert!(find("mistral").is_empty());
    }

    #[test]
    fn it_is_built_again_only_when_a_generation_changes() {
        let directory = Directory::default();
        let first = peer(&directory, "a", &[("m", None)], None);
        let index = ModelIndex::default();
        let builds = AtomicUsize::new(0);
        let online = |nodes: Vec<OnlineNode>| {
            builds.fetch_add(1, Ordering::SeqCst);
            nodes
        };
        let found = index.nodes_for((1, 1), "m", || online(vec![first.clone()]));
        assert_eq!(providers(&found), ["a"]);
        let second = peer(&directory, "b", &[("m", None)], None);
        // Same generations: the index as built, not asked again.
        let found = index.nodes_for((1, 1), "m", || online(vec![first.clone(), second.clone()]));
        assert_eq!(
            (providers(&found).len(), builds.load(Ordering::SeqCst)),
            (1, 1)
        );
        // Either one changed: built again.
        for generations in [(2, 1), (2, 2)] {
            let found = index.nodes_for(generations, "m", || {
                online(vec![first.clone(), second.clone()])
            });
            assert_eq!(providers(&found), ["a", "b"]);
        }
        assert_eq!(builds.load(Ordering::SeqCst), 3);
    }
}
