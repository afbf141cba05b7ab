//! The nodes of a cluster: linked to a replica or through nginx, listed on every replica.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::super::{STARTUP, ServiceSpec, json_of};
use super::{Cluster, REPLICAS};

impl Cluster {
    /// Starts a node named `name` with `services` that dials `coordinator_url` (a replica or
    /// nginx) with `ada`'s key. Does not wait for it to link.
    pub fn spawn_node(
        &mut self,
        name: &str,
        services: &[ServiceSpec],
        coordinator_url: &str,
    ) -> usize {
        let key = self.club.key.clone();
        self.club
            .spawn_node_with(name, services, &key, coordinator_url, &[])
    }

    /// The same, waiting until the node says it is linked.
    pub async fn add_node(
        &mut self,
        name: &str,
        services: &[ServiceSpec],
        coordinator_url: &str,
    ) -> usize {
        let index = self.spawn_node(name, services, coordinator_url);
        self.club.nodes[index]
            .proc
            .wait_for_line("linked to the coordinator", STARTUP)
            .await;
        index
    }

    /// How many times node `name` linked (its own count of `linked to the coordinator`).
    pub fn links_of(&mut self, name: &str) -> usize {
        self.club
            .node(name)
            .proc
            .count_lines_with("linked to the coordinator")
    }

    /// The replicas (0-based) that logged a link of node `name` so far, in order.
    pub fn replicas_that_linked(&self, name: &str) -> Vec<usize> {
        let field = format!("provider={name}");
        (0..REPLICAS)
            .filter(|n| {
                self.replica_output(*n).lines().any(|line| {
                    line.contains("node linked") && line.split_whitespace().any(|w| w == field)
                })
            })
            .collect()
    }

    /// The models `GET /v1/models` at `base` lists now.
    pub async fn models(&self, base: &str) -> Vec<String> {
        let response = self
            .club
            .http
            .get(format!("{base}/v1/models"))
            .bearer_auth(&self.club.key)
            .send()
            .await;
        let Ok(response) = response else {
            return Vec::new();
        };
        json_of(response).await["data"]
            .as_array()
            .map(|data| {
                data.iter()
                    .filter_map(|m| m["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until every replica (and nginx) lists each of `models`; fails after `within`.
    /// Returns how long it took.
    pub async fn wait_for_models_everywhere(&self, models: &[&str], within: Duration) -> Duration {
        let started = Instant::now();
        for base in self.every_door() {
            loop {
                let listed = self.models(&base).await;
                if models.iter().all(|m| listed.iter().any(|l| l == m)) {
                    break;
                }
                assert!(
                    started.elapsed() < within,
                    "{base} does not list {models:?} after {within:?} (it lists {listed:?})"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        started.elapsed()
    }

    /// `ada`'s provider `name` as `GET /api/v1/providers/ada/{name}` at `base` shows it.
    pub async fn provider(&self, base: &str, name: &str) -> Option<Value> {
        let response = self
            .club
            .http
            .get(format!("{base}/api/v1/providers/ada/{name}"))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        Some(json_of(response).await)
    }

    /// Whether `GET /api/v1/providers` at `base` lists `name` online.
    pub async fn listed_online(&self, base: &str, name: &str) -> bool {
        let Ok(response) = self
            .club
            .http
            .get(format!("{base}/api/v1/providers"))
            .send()
            .await
        else {
            return false;
        };
        json_of(response).await["data"]
            .as_array()
            .is_some_and(|data| {
                data.iter()
                    .any(|p| p["name"] == name && p["online"] == json!(true))
            })
    }

    /// Waits until every replica lists each of `names` online; fails after `within`.
    pub async fn wait_online_everywhere(&self, names: &[String], within: Duration) -> Duration {
        let started = Instant::now();
        for n in 0..REPLICAS {
            let base = self.url(n);
            for name in names {
                while !self.listed_online(&base, name).await {
                    assert!(
                        started.elapsed() < within,
                        "replica r{} does not list {name} online after {within:?}",
                        n + 1
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        started.elapsed()
    }
}
