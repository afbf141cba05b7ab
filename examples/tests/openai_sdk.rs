//! The official OpenAI Python SDK against a real coordinator: `tests/python/test_openai_sdk.py`,
//! run with the interpreter named by `CLUB_TEST_PYTHON` (`scripts/python-sdk.sh` makes one;
//! `scripts/test.sh` sets it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use inference_club_examples::coordinator::store::{Scope, Scopes, Store};
use inference_club_examples::coordinator::{Coordinator, CoordinatorConfig, serve};
use inference_club_provider::backends::Echo;
use inference_club_provider::node::{Node, NodeConfig, Offer};
use inference_club_provider::router::{Route, Router};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_python_sdk_passes() {
    let Ok(python) = std::env::var("CLUB_TEST_PYTHON") else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: CLUB_TEST_PYTHON not set — the OpenAI SDK tests need a venv with `openai`; run scripts/python-sdk.sh (scripts/test.sh does)"
        );
        return;
    };
    let club = EchoClub::start("sdk").await;
    let (url, key) = (club.url.clone(), club.key.clone());

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/python/test_openai_sdk.py"
    );
    let output = tokio::process::Command::new(python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", script])
        .env("CLUB_URL", &url)
        .env("CLUB_API_KEY", &key)
        .output()
        .await
        .unwrap();
    drop(club);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "pytest failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("passed"), "{stdout}");
}

/// A coordinator in this process with one node serving the Echo test engine (model `echo`, with
/// a reasoning trace), and a member key with the inference and provider scopes.
struct EchoClub {
    url: String,
    key: String,
    dir: std::path::PathBuf,
    node: inference_club_provider::node::NodeHandle,
    shutdown: CancellationToken,
}

impl EchoClub {
    async fn start(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "club-{name}-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::connect(&format!("sqlite:{}", dir.join("club.db").display()))
            .await
            .unwrap();
        let user = store.create_user("sdk-tester", None).await.unwrap();
        let scopes = Scopes::only(Scope::Inference).with(Scope::Provider);
        let (_, key) = store.create_key(user.id, "sdk", scopes).await.unwrap();
        let coordinator = Coordinator::start(store, CoordinatorConfig::default())
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(listener, coordinator.app(), shutdown.clone()));

        let router = Router::builder()
            .route(Route::new("echo", Arc::new(Echo::new().with_reasoning(true))).model("echo"))
            .build();
        let manifest = serde_json::json!({
            "schema_version": 1,
            "agent": {"name": "sdk-node"},
            "hosts": [{"id": "h", "services": [{"name": "echo", "url": "http://127.0.0.1:9/v1", "models": [{"id": "echo"}]}]}]
        });
        let node = Node::from_offer(
            NodeConfig::new(url.clone(), key.clone()),
            Offer::new(router, manifest),
        )
        .unwrap();
        let handle = node.handle();
        tokio::spawn(node.run());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while coordinator.nodes.online().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the node did not link"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            url,
            key,
            dir,
            node: handle,
            shutdown,
        }
    }
}

impl Drop for EchoClub {
    fn drop(&mut self) {
        self.node.shutdown();
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
