//! The peers: gateways people run today, each started as one hop in front of the same fake
//! engine, with a generated configuration, and measured with the same load generator.
//!
//! - **nginx**: a plain reverse proxy (`proxy_buffering off`, a keep-alive upstream): the floor
//!   for one hop. Found on `PATH`, in `/usr/sbin`, or at `CLUB_BENCH_NGINX`.
//! - **vllm-router** (PyPI `vllm-router`, a Rust router): `--worker-urls ENGINE`, round robin.
//! - **LiteLLM proxy** (PyPI `litellm[proxy]`): one model per engine model, one worker.
//!
//! The Python peers are found in `bench/.venv-peers/bin` (what `bench/peers.sh` installs) or at
//! `CLUB_BENCH_VLLM_ROUTER` / `CLUB_BENCH_LITELLM`. A peer that is not found is reported, never
//! required.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::BoxError;
use crate::cluster::Process;
use crate::engine::{STREAM_MODEL, WHOLE_MODEL};

/// Which peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// nginx as a reverse proxy.
    Nginx,
    /// vllm-router.
    VllmRouter,
    /// LiteLLM proxy.
    Litellm,
}

impl Kind {
    /// Every peer, fastest first.
    pub const ALL: [Kind; 3] = [Kind::Nginx, Kind::VllmRouter, Kind::Litellm];

    /// The row label.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx (one hop)",
            Kind::VllmRouter => "vllm-router (one hop)",
            Kind::Litellm => "LiteLLM proxy (one hop)",
        }
    }

    fn env(self) -> &'static str {
        match self {
            Kind::Nginx => "CLUB_BENCH_NGINX",
            Kind::VllmRouter => "CLUB_BENCH_VLLM_ROUTER",
            Kind::Litellm => "CLUB_BENCH_LITELLM",
        }
    }

    fn program(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::VllmRouter => "vllm-router",
            Kind::Litellm => "litellm",
        }
    }

    /// How long it may take to answer after starting (LiteLLM imports a lot).
    fn startup(self) -> Duration {
        match self {
            Kind::Nginx => Duration::from_secs(10),
            Kind::VllmRouter => Duration::from_secs(60),
            Kind::Litellm => Duration::from_secs(120),
        }
    }
}

/// A peer found on this machine.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Found {
    /// The row label.
    pub name: &'static str,
    /// Its version, when it says.
    pub version: Option<String>,
    #[serde(skip)]
    kind: Option<Kind>,
    #[serde(skip)]
    program: PathBuf,
}

/// The venv `bench/peers.sh` installs into.
fn venv() -> Vec<PathBuf> {
    let mut places = vec![
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-peers"),
        PathBuf::from("bench/.venv-peers"),
    ];
    places.dedup();
    places
}

fn executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// Where `kind` is installed, if it is.
fn locate(kind: Kind) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(kind.env()) {
        let path = PathBuf::from(path);
        return executable(&path).then_some(path);
    }
    let mut places: Vec<PathBuf> = Vec::new();
    match kind {
        Kind::Nginx => {
            if let Some(path) = std::env::var_os("PATH") {
                places.extend(std::env::split_paths(&path));
            }
            places.push(PathBuf::from("/usr/sbin"));
        }
        Kind::VllmRouter | Kind::Litellm => {
            places.extend(venv().into_iter().map(|v| v.join("bin")));
        }
    }
    places
        .into_iter()
        .map(|dir| dir.join(kind.program()))
        .find(|p| executable(p))
}

/// The installed version of a Python distribution in the venv that holds `program`
/// (from its `*.dist-info` folder's name).
fn python_version(program: &Path, distribution: &str) -> Option<String> {
    let venv = program.parent()?.parent()?;
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    let prefix = format!("{}-", distribution.replace('-', "_"));
    for python in lib.flatten() {
        let Ok(packages) = std::fs::read_dir(python.path().join("site-packages")) else {
            continue;
        };
        for entry in packages.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(version) = name
                .strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(".dist-info"))
            {
                return Some(version.to_owned());
            }
        }
    }
    None
}

async fn nginx_version(program: &Path) -> Option<String> {
    let output = tokio::process::Command::new(program)
        .arg("-v")
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&output.stderr).into_owned();
    text.trim()
        .strip_prefix("nginx version: ")
        .map(|v| v.trim_start_matches("nginx/").to_owned())
}

/// `kind`, if it is installed.
pub async fn find(kind: Kind) -> Option<Found> {
    let program = locate(kind)?;
    let version = match kind {
        Kind::Nginx => nginx_version(&program).await,
        Kind::VllmRouter => python_version(&program, "vllm-router"),
        Kind::Litellm => python_version(&program, "litellm"),
    };
    Some(Found {
        name: kind.label(),
        version,
        kind: Some(kind),
        program,
    })
}

/// A free port on 127.0.0.1 (bound and released; the peer binds it a moment later).
fn free_port() -> Result<u16, BoxError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A running peer.
pub struct Running {
    process: Process,
    kind: Kind,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The bearer key it wants (LiteLLM refuses to start without a master key).
    pub key: Option<String>,
}

impl Running {
    /// The peer's process id (its workers are its children).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Stops the peer (politely first: nginx must stop its workers).
    pub async fn stop(self) {
        let grace = match self.kind {
            Kind::Nginx | Kind::Litellm => Duration::from_secs(5),
            Kind::VllmRouter => Duration::from_secs(2),
        };
        self.process.terminate(grace).await;
    }
}

fn nginx_config(prefix: &Path, port: u16, engine: &str) -> String {
    let engine = engine.trim_start_matches("http://");
    let p = prefix.display();
    format!(
        r#"worker_processes auto;
daemon off;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    upstream engine {{
        server {engine};
        keepalive 128;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://engine;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"#
    )
}

fn litellm_config(engine: &str, master_key: &str) -> String {
    let mut config = String::from("model_list:\n");
    for model in [WHOLE_MODEL, STREAM_MODEL] {
        config.push_str(&format!(
            "  - model_name: {model}\n    litellm_params:\n      model: openai/{model}\n      api_base: {engine}/v1\n      api_key: bench\n"
        ));
    }
    config.push_str("litellm_settings:\n  telemetry: false\n");
    config.push_str(&format!("general_settings:\n  master_key: {master_key}\n"));
    config
}

/// Starts `peer` in front of the engine at `engine` (`http://HOST:PORT`), its files in `dir`;
/// returns once it answers `/v1/models` through to the engine.
pub async fn start(peer: &Found, engine: &str, dir: &Path) -> Result<Running, BoxError> {
    let kind = peer.kind.ok_or("unknown peer")?;
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let dir = dir.join(kind.program());
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("peer.log");
    let port_arg = port.to_string();
    let mut key = None;
    let process = match kind {
        Kind::Nginx => {
            let config = dir.join("nginx.conf");
            std::fs::write(&config, nginx_config(&dir, port, engine))?;
            let prefix = dir.display().to_string();
            let config = config.display().to_string();
            let args = ["-p", &prefix, "-c", &config, "-e", "stderr"];
            Process::spawn("nginx", &peer.program, &args, &[], &log, false).await?
        }
        Kind::VllmRouter => {
            let args = [
                "--host",
                "127.0.0.1",
                "--port",
                &port_arg,
                "--worker-urls",
                engine,
                "--policy",
                "round_robin",
                "--log-level",
                "warning",
                "--worker-startup-check-interval",
                "1",
            ];
            Process::spawn("vllm-router", &peer.program, &args, &[], &log, false).await?
        }
        Kind::Litellm => {
            let config = dir.join("litellm.yaml");
            let master_key = format!("sk-club-bench-{}-{port}", std::process::id());
            std::fs::write(&config, litellm_config(engine, &master_key))?;
            key = Some(master_key);
            let config = config.display().to_string();
            let args = [
                "--config",
                &config,
                "--host",
                "127.0.0.1",
                "--port",
                &port_arg,
                "--num_workers",
                "1",
            ];
            // The model price list ships inside the package: no fetch at start.
            let envs = [
                ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
                ("LITELLM_LOG", "ERROR"),
                ("LITELLM_TELEMETRY", "False"),
            ];
            Process::spawn("litellm", &peer.program, &args, &envs, &log, false).await?
        }
    };
    let running = Running {
        process,
        kind,
        url,
        key,
    };
    if let Err(error) = wait_ready(&running.url, running.key.as_deref(), kind.startup()).await {
        running.stop().await;
        return Err(format!("{}: {error}; see {}", kind.program(), log.display()).into());
    }
    Ok(running)
}

/// Waits until `url` answers a chat request for the whole-response model.
async fn wait_ready(url: &str, key: Option<&str>, within: Duration) -> Result<(), BoxError> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?;
    let deadline = Instant::now() + within;
    let body = serde_json::json!({
        "model": WHOLE_MODEL,
        "messages": [{"role": "user", "content": "ready?"}],
    });
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        let mut request = client
            .post(format!("{url}/v1/chat/completions"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) => last = format!("status {}", response.status()),
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("not answering within {within:?} ({last})").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_point_at_the_engine() {
        let nginx = nginx_config(Path::new("/tmp/x"), 8080, "http://127.0.0.1:9000");
        assert!(nginx.contains("server 127.0.0.1:9000;"));
        assert!(nginx.contains("listen 127.0.0.1:8080;"));
        assert!(nginx.contains("proxy_buffering off;"));
        let litellm = litellm_config("http://127.0.0.1:9000", "sk-x");
        assert!(litellm.contains("master_key: sk-x"));
        assert!(litellm.contains("api_base: http://127.0.0.1:9000/v1"));
        assert!(litellm.contains("model: openai/bench-c100"));
    }
}
