//! `club demo`: a whole club in one process on the embedded defaults — a coordinator on a SQLite
//! file, a node serving a local engine if one answers (else the Echo test engine), a member with
//! a key, and one streamed chat through the client SDK.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use inference_club_client::{ChatRequest, Client};
use inference_club_core::manifest::{
    Agent, Host, Model as ManifestModel, Service, ServiceManifest,
};
use inference_club_core::record::RecordId;
use inference_club_provider::backends::Echo;
use inference_club_provider::discover;
use inference_club_provider::node::{Node, NodeConfig, Offer, backend_for};
use inference_club_provider::router::{Route, Router};
use tokio_util::sync::CancellationToken;

use crate::coordinator::store::{RecordQuery, Scope, Scopes, Store};
use crate::coordinator::{Coordinator, CoordinatorConfig, serve};
use crate::coordinator_cli::database_url;

/// Options of `club demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where to listen (falls back to a free port when taken).
    pub listen: String,
    /// The database (a SQLite file by default).
    pub database: String,
    /// The prompt of the demo chat.
    pub prompt: String,
    /// Exit after the demo chat instead of serving until Ctrl-C.
    pub once: bool,
}

/// What the demo node serves.
struct DemoEngine {
    offer: Offer,
    model: String,
    description: String,
}

/// A local engine if one answers on its default port, else the Echo test engine.
async fn demo_engine() -> DemoEngine {
    let found = discover::find_engines("127.0.0.1", Duration::from_millis(500)).await;
    for engine in found {
        let Some(model) = engine.models.first().cloned() else {
            continue;
        };
        let service = Service {
            name: engine.known.name.to_owned(),
            engine: Some(engine.known.engine),
            url: Some(engine.url.clone()),
            models: vec![ManifestModel {
                id: Some(model.clone()),
                ..ManifestModel::default()
            }],
            ..Service::default()
        };
        let Ok(backend) = backend_for(&service) else {
            continue;
        };
        let manifest = demo_manifest(service);
        let router = Router::builder()
            .route(Route::new(engine.known.name, backend).model(model.clone()))
            .build();
        return DemoEngine {
            offer: Offer::new(
                router,
                serde_json::to_value(manifest.redacted()).unwrap_or_default(),
            ),
            description: format!("{} at {} (model {model})", engine.known.name, engine.url),
            model,
        };
    }
    let echo = Echo::new()
        .pace(Duration::from_millis(40))
        .with_reasoning(true);
    let service = Service {
        name: "echo".into(),
        features: vec!["test-engine".into()],
        models: vec![ManifestModel {
            id: Some("echo".into()),
            name: Some(
                "Echo (a test engine that repeats your prompt; not a language model)".into(),
            ),
            ..ManifestModel::default()
        }],
        ..Service::default()
    };
    let manifest = demo_manifest(service);
    let router = Router::builder()
        .route(Route::new("echo", Arc::new(echo)).model("echo"))
        .build();
    DemoEngine {
        offer: Offer::new(router, serde_json::to_value(manifest).unwrap_or_default()),
        model: "echo".into(),
        description: "the Echo test engine (no local engine answered on its default port; it repeats your prompt)".into(),
    }
}

fn demo_manifest(service: Service) -> ServiceManifest {
    ServiceManifest {
        schema_version: 1,
        agent: Agent {
            name: Some("demo-node".into()),
            ..Agent::default()
        },
        hosts: vec![Host {
            id: "this-machine".into(),
            services: vec![service],
            ..Host::default()
        }],
    }
}

/// Runs the demo, writing what happens to `out`. Returns the exit status.
pub async fn run(options: DemoOptions, out: &mut (dyn Write + Send)) -> Result<(), String> {
    let store = Store::connect(&database_url(&options.database))
        .await
        .map_err(|e| format!("cannot open the database {}: {e}", options.database))?;
    let user = match store
        .user_by_handle("demo")
        .await
        .map_err(|e| e.to_string())?
    {
        Some(user) => user,
        None => store
            .create_user("demo", None)
            .await
            .map_err(|e| e.to_string())?,
    };
    let scopes = Scopes::only(Scope::Inference)
        .with(Scope::Provider)
        .with(Scope::Account);
    let (_, key) = store
        .create_key(user.id, "demo", scopes)
        .await
        .map_err(|e| e.to_string())?;
    let coordinator = Coordinator::start(
        store.clone(),
        CoordinatorConfig {
            heartbeat_interval: Duration::from_secs(5),
            ..CoordinatorConfig::default()
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let listener = match tokio::net::TcpListener::bind(&options.listen).await {
        Ok(listener) => listener,
        Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot listen: {e}"))?,
    };
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let url = format!("http://{address}");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(listener, coordinator.app(), shutdown.clone()));

    let engine = demo_engine().await;
    let _ = writeln!(out, "node: serving {}", engine.description);
    let node = Node::from_offer(NodeConfig::new(url.clone(), key.clone()), engine.offer)
        .map_err(|e| e.to_string())?;
    let node_handle = node.handle();
    let node_task = tokio::spawn(node.run());

    let client = Client::builder(url.clone())
        .api_key(key.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let models = client.models().await.map_err(|e| e.to_string())?;
        if models.iter().any(|m| m.id == engine.model) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err("the demo node did not come online within 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let _ = writeln!(out, "\n> {}", options.prompt);
    let mut stream = client
        .chat_stream(
            ChatRequest::new(engine.model.clone())
                .user(options.prompt.clone())
                .max_tokens(200),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut in_reasoning = false;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        for choice in &chunk.choices {
            if let Some(reasoning) = &choice.delta.reasoning {
                if !in_reasoning {
                    let _ = write!(out, "\x1b[2m(thinking) ");
                    in_reasoning = true;
                }
                let _ = write!(out, "{reasoning}");
            }
            if let Some(content) = &choice.delta.content {
                if in_reasoning {
                    let _ = writeln!(out, "\x1b[0m");
                    in_reasoning = false;
                }
                let _ = write!(out, "{content}");
            }
        }
        let _ = out.flush();
    }
    if in_reasoning {
        let _ = write!(out, "\x1b[0m");
    }
    let _ = writeln!(out, "\n");

    let id = stream
        .record_id()
        .and_then(|id| RecordId::parse(&id))
        .ok_or("the answer named no record")?;
    let stored = store
        .record(id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the record is missing")?;
    let record = &stored.record;
    let served = record
        .served_by
        .as_ref()
        .map(|s| {
            format!(
                "{}/{} ({})",
                s.operator,
                s.provider,
                s.service.as_deref().unwrap_or("?")
            )
        })
        .unwrap_or_default();
    let tokens = record
        .usage
        .counts
        .as_ref()
        .map(|u| {
            format!(
                "{} prompt + {} completion",
                u.prompt_tokens, u.completion_tokens
            )
        })
        .unwrap_or_else(|| "not reported by the engine".into());
    let _ = writeln!(out, "record {id}");
    let _ = writeln!(out, "  status          {}", record.status().as_str());
    let _ = writeln!(
        out,
        "  model           {} (asked {})",
        record.model_served.as_deref().unwrap_or("?"),
        record.model_requested
    );
    let _ = writeln!(out, "  node            {served}");
    let _ = writeln!(out, "  tokens          {tokens}");
    let _ = writeln!(
        out,
        "  latency         {} ms",
        record.timing.latency_ms().unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "  first token     {} ms",
        record.timing.time_to_first_token_ms().unwrap_or_default()
    );
    let _ = writeln!(out, "  visibility      {}", record.visibility.as_str());
    let feed = store
        .list_records(&RecordQuery::public_feed().with_limit(1))
        .await
        .map_err(|e| e.to_string())?;
    if let Some(entry) = feed.items.first() {
        let _ = writeln!(
            out,
            "public feed, newest entry: {} {} by {} — {}",
            entry.id,
            entry.model_requested,
            entry.consumer.as_deref().unwrap_or("?"),
            entry
                .response
                .content
                .as_deref()
                .unwrap_or("")
                .chars()
                .take(60)
                .collect::<String>()
        );
    }

    if !options.once {
        let _ = writeln!(
            out,
            "\nThe club is running at {url} (Ctrl-C to stop). Try it:\n\n  curl {url}/v1/chat/completions -H 'authorization: Bearer {key}' \\\n    -H 'content-type: application/json' -d '{{\"model\": \"{model}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hi\"}}]}}'\n\n  # Python, with the official OpenAI SDK\n  from openai import OpenAI\n  client = OpenAI(base_url=\"{url}/v1\", api_key=\"{key}\")\n  print(client.chat.completions.create(model=\"{model}\", messages=[{{\"role\": \"user\", \"content\": \"Hi\"}}]).choices[0].message.content)\n\n  # the public feed\n  curl {url}/api/v1/requests/public\n",
            model = engine.model
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    node_handle.shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(5), node_task).await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(())
}
