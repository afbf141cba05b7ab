//! `club demo`: a whole club in one process on the embedded defaults — a coordinator on a SQLite
//! file, a node serving a local engine if one answers (else the Echo test engine), a member with
//! a key, and one streamed chat through the client SDK.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use inference_club_client::{ChatRequest, Client, Record, RecordFilter};
use inference_club_coordinator::{Coordinator, ErrorKind, Scopes};
use inference_club_core::manifest::{
    Agent, Host, Model as ManifestModel, Service, ServiceManifest,
};
use inference_club_provider::backends::Echo;
use inference_club_provider::discover;
use inference_club_provider::node::{Node, NodeConfig, Offer, backend_for};
use inference_club_provider::router::{Route, Router};
use tokio_util::sync::CancellationToken;

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
    /// Whether `out` takes ANSI styles (the reasoning is shown dim).
    pub styled: bool,
}

/// What the demo node serves.
struct DemoEngine {
    offer: Offer,
    model: String,
    description: String,
}

/// A local engine if one answers on its default port, else the Echo test engine.
async fn demo_engine() -> Result<DemoEngine, String> {
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
        let Ok(offer) = Offer::announcing(router, &manifest) else {
            continue;
        };
        return Ok(DemoEngine {
            offer,
            description: format!("{} at {} (model {model})", engine.known.name, engine.url),
            model,
        });
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
    let offer =
        Offer::announcing(router, &manifest).map_err(|e| format!("the demo manifest: {e}"))?;
    Ok(DemoEngine {
        offer,
        model: "echo".into(),
        description: "the Echo test engine (no local engine answered on its default port; it repeats your prompt)".into(),
    })
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

/// Runs the demo, writing what happens to `out`.
pub async fn run(options: DemoOptions, out: &mut (dyn Write + Send)) -> Result<(), String> {
    let coordinator = Coordinator::builder()
        .database(&options.database)
        .heartbeat_interval(Duration::from_secs(5))
        .build()
        .await
        .map_err(|e| format!("cannot start the coordinator on {}: {e}", options.database))?;
    let admin = coordinator.admin();
    match admin.add_user("demo", None).await {
        Ok(_) => {}
        // A database from an earlier demo has the member already.
        Err(error) if error.kind() == ErrorKind::Conflict => {}
        Err(error) => return Err(error.to_string()),
    }
    let key = admin
        .create_key("demo", "demo", Scopes::ALL)
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
    let _ = writeln!(out, "listening on {url}");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn({
        let coordinator = coordinator.clone();
        let stop = shutdown.clone();
        async move { coordinator.serve(listener, stop.cancelled_owned()).await }
    });

    let engine = demo_engine().await?;
    let _ = writeln!(out, "node: serving {}", engine.description);
    let node = Node::from_offer(NodeConfig::new(url.clone(), key.clone()), engine.offer)
        .map_err(|e| e.to_string())?;
    let node_handle = node.handle();
    let node_task = tokio::spawn(node.run());

    let client = Client::builder(url.clone())
        .api_key(key.clone())
        .build()
        .map_err(|e| e.to_string())?;
    // Every demo makes a key: those that earlier demos on this database made are revoked.
    let keys = client.keys().await.map_err(|e| e.to_string())?;
    for earlier in keys
        .iter()
        .filter(|k| k.name == "demo" && !key.starts_with(&k.prefix))
    {
        client
            .revoke_key(&earlier.id)
            .await
            .map_err(|e| e.to_string())?;
    }
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
    let (dim, plain) = if options.styled {
        ("\x1b[2m", "\x1b[0m")
    } else {
        ("", "")
    };
    let mut in_reasoning = false;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        for choice in &chunk.choices {
            if let Some(reasoning) = &choice.delta.reasoning {
                if !in_reasoning {
                    let _ = write!(out, "{dim}(thinking) ");
                    in_reasoning = true;
                }
                let _ = write!(out, "{reasoning}");
            }
            if let Some(content) = &choice.delta.content {
                if in_reasoning {
                    let _ = writeln!(out, "{plain}");
                    in_reasoning = false;
                }
                let _ = write!(out, "{content}");
            }
        }
        let _ = out.flush();
    }
    if in_reasoning {
        let _ = write!(out, "{plain}");
    }
    let _ = writeln!(out, "\n");

    let id = stream.record_id().ok_or("the answer named no record")?;
    let record = client.record(&id).await.map_err(|e| e.to_string())?;
    print_record(&record, out);
    let feed = client
        .public_feed_page(&RecordFilter::new().limit(1))
        .await
        .map_err(|e| e.to_string())?;
    if let Some(entry) = feed.data.first() {
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

/// The record of the demo chat, as its owner reads it through the API.
fn print_record(record: &Record, out: &mut (dyn Write + Send)) {
    let served = record
        .provider
        .as_ref()
        .map(|p| {
            format!(
                "{}/{} ({})",
                p.operator,
                p.name,
                p.service.as_deref().unwrap_or("?")
            )
        })
        .unwrap_or_default();
    let tokens = match (record.usage.prompt_tokens, record.usage.completion_tokens) {
        (Some(prompt), Some(completion)) => format!("{prompt} prompt + {completion} completion"),
        _ => "not reported by the engine".into(),
    };
    let _ = writeln!(out, "record {}", record.id);
    let _ = writeln!(out, "  status          {}", record.status.as_str());
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
        record.timing.latency_ms.unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "  first token     {} ms",
        record.timing.time_to_first_token_ms.unwrap_or_default()
    );
    let _ = writeln!(out, "  visibility      {}", record.visibility.as_str());
}
