//! A club's nodes: their manifests, their processes, and the models they make listed.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Club, FakeEngine, MODEL, Proc, STARTUP, json_of};

/// One service of a node's manifest.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// Its engine's base URL.
    pub url: String,
    /// `vllm`, `llamacpp`, `other`, …
    pub engine: String,
    /// Its `max_concurrent`, if any.
    pub max_concurrent: Option<u32>,
    /// The model it serves.
    pub model: String,
}

impl ServiceSpec {
    /// A vLLM-style service for a fake engine, serving [`MODEL`].
    pub fn fake(engine: &FakeEngine) -> Self {
        Self {
            url: engine.url.clone(),
            engine: "vllm".into(),
            max_concurrent: None,
            model: MODEL.into(),
        }
    }

    /// The same with `max_concurrent`.
    pub fn max_concurrent(mut self, n: u32) -> Self {
        self.max_concurrent = Some(n);
        self
    }
}

fn manifest_yaml(name: &str, services: &[ServiceSpec]) -> String {
    let mut yaml =
        format!("schema_version: 1\nagent:\n  name: {name}\nhosts:\n  - id: box\n    services:\n");
    for (n, service) in services.iter().enumerate() {
        yaml.push_str(&format!(
            "      - name: svc{n}\n        engine: {}\n        url: {}\n",
            service.engine, service.url
        ));
        if let Some(max) = service.max_concurrent {
            yaml.push_str(&format!("        max_concurrent: {max}\n"));
        }
        yaml.push_str(&format!(
            "        models:\n          - id: {}\n",
            service.model
        ));
    }
    yaml
}

/// A node process and its manifest.
#[derive(Debug)]
pub struct NodeProc {
    /// Its `agent.name`.
    pub name: String,
    /// The process.
    pub proc: Proc,
}

impl Club {
    /// Starts a node named `name` with these services, using `key` (default: `ada`'s), and
    /// returns its index in `nodes`. Does not wait for it to link.
    pub fn spawn_node_with_key(
        &mut self,
        name: &str,
        services: &[ServiceSpec],
        key: &str,
    ) -> usize {
        let url = self.url.clone();
        self.spawn_node_with(name, services, key, &url, &[])
    }

    /// Starts a node named `name` that dials `coordinator_url` (e.g. through a proxy) with
    /// `key`, with `extra_args` added to `club-provider run`, and returns its index in `nodes`.
    /// Does not wait for it to link.
    pub fn spawn_node_with(
        &mut self,
        name: &str,
        services: &[ServiceSpec],
        key: &str,
        coordinator_url: &str,
        extra_args: &[&str],
    ) -> usize {
        let manifest = self.dir.join(format!("{name}.yaml"));
        std::fs::write(&manifest, manifest_yaml(name, services)).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_club-provider"));
        command
            .arg("run")
            .arg("--coordinator")
            .arg(coordinator_url)
            .arg("--key")
            .arg(key)
            .arg("--manifest")
            .arg(&manifest)
            .args(extra_args);
        self.nodes.push(NodeProc {
            name: name.to_owned(),
            proc: Proc::spawn(&format!("node {name}"), command),
        });
        self.nodes.len() - 1
    }

    /// Writes node `name`'s manifest anew with `services` (the node announces it when it
    /// reads it again: on SIGHUP, or within its watch interval).
    pub fn rewrite_manifest(&self, name: &str, services: &[ServiceSpec]) {
        std::fs::write(
            self.dir.join(format!("{name}.yaml")),
            manifest_yaml(name, services),
        )
        .unwrap();
    }

    /// Starts a node and waits until it is linked and its model is listed.
    pub async fn add_node(&mut self, name: &str, services: &[ServiceSpec]) -> usize {
        let key = self.key.clone();
        let index = self.spawn_node_with_key(name, services, &key);
        self.nodes[index]
            .proc
            .wait_for_line("linked to the coordinator", STARTUP)
            .await;
        for service in services {
            self.wait_for_model(&service.model).await;
        }
        index
    }

    /// The node named `name`.
    pub fn node(&mut self, name: &str) -> &mut NodeProc {
        self.nodes.iter_mut().find(|n| n.name == name).unwrap()
    }

    /// The models `GET /v1/models` lists now.
    pub async fn models(&self) -> Vec<String> {
        let response = self
            .http
            .get(format!("{}/v1/models", self.url))
            .bearer_auth(&self.key)
            .send()
            .await;
        let Ok(response) = response else {
            return Vec::new();
        };
        let body: Value = json_of(response).await;
        body["data"]
            .as_array()
            .map(|d| {
                d.iter()
                    .filter_map(|m| m["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until `GET /v1/models` lists `model`.
    pub async fn wait_for_model(&self, model: &str) {
        let deadline = Instant::now() + STARTUP;
        while !self.models().await.iter().any(|m| m == model) {
            assert!(
                Instant::now() < deadline,
                "{model} never appeared in /v1/models"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
