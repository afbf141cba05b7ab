//! A whole club in one program: a coordinator on a SQLite file, a provider node serving the
//! Echo test engine, a member with a key, and one chat through the client SDK.
//!
//! ```sh
//! cargo run -p inference-club-coordinator --example embedded
//! ```
//!
//! Swap `Echo` for `inference_club_provider::backends::OpenAiCompatible` (or `Ollama`) to serve
//! a real engine.

use std::sync::Arc;
use std::time::Duration;

use inference_club_client::{ChatRequest, Client};
use inference_club_coordinator::{Coordinator, Scopes};
use inference_club_core::manifest::{Agent, Host, Model, Service, ServiceManifest};
use inference_club_provider::backends::Echo;
use inference_club_provider::node::{Node, NodeConfig, Offer};
use inference_club_provider::router::{Route, Router};
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // This program owns its process: it picks the TLS provider (the libraries never do).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let database = std::env::temp_dir().join(format!("club-embedded-{}.db", std::process::id()));
    let answer = run(&format!("sqlite:{}", database.display()), "Hello, club!").await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", database.display()));
    }
    println!("{}", answer?);
    Ok(())
}

/// Runs a coordinator on `database` and a node beside it, sends `prompt` to the node's model
/// through the coordinator, stops both, and returns the answer.
pub async fn run(database: &str, prompt: &str) -> Result<String, BoxError> {
    // The coordinator, and a member whose key may both link a node and call the API.
    let coordinator = Coordinator::builder()
        .database(database)
        .heartbeat_interval(Duration::from_secs(2))
        .build()
        .await?;
    let admin = coordinator.admin();
    admin.add_user("ada", None).await?;
    let key = admin.create_key("ada", "embedded", Scopes::ALL).await?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let stop = CancellationToken::new();
    let server = tokio::spawn({
        let coordinator = coordinator.clone();
        let stop = stop.clone();
        async move { coordinator.serve(listener, stop.cancelled_owned()).await }
    });

    // A node of ada's, dialling the coordinator like any node behind NAT would.
    let manifest = ServiceManifest {
        schema_version: 1,
        agent: Agent {
            name: Some("laptop".into()),
            ..Agent::default()
        },
        hosts: vec![Host {
            id: "this-machine".into(),
            services: vec![Service {
                name: "echo".into(),
                models: vec![Model {
                    id: Some("echo".into()),
                    ..Model::default()
                }],
                ..Service::default()
            }],
            ..Host::default()
        }],
    };
    let router = Router::builder()
        .route(Route::new("echo", Arc::new(Echo::new())).model("echo"))
        .build();
    let node = Node::from_offer(
        NodeConfig::new(url.clone(), key.clone()),
        Offer::announcing(router, &manifest)?,
    )?;
    let node_handle = node.handle();
    let node_task = tokio::spawn(node.run());

    // A consumer: wait until the model is online, then chat.
    let client = Client::builder(url).api_key(key).build()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !client.models().await?.iter().any(|m| m.id == "echo") {
        if tokio::time::Instant::now() > deadline {
            return Err("the node did not come online within 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let response = client.chat(ChatRequest::new("echo").user(prompt)).await?;
    let answer = response.text().unwrap_or_default();

    node_handle.shutdown();
    let _ = node_task.await;
    stop.cancel();
    server.await??;
    Ok(answer)
}
