//! What a node announces and links with: manifests, new or invalid, and its key.

use std::time::Duration;

use serde_json::json;

use crate::bounded;
use crate::support::{ANSWER, Club, FakeEngine, Script, ServiceSpec};

/// A linked node that announces a new manifest (edited, then SIGHUP) is routed the model it
/// added at once, and no longer the one it dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_node_serves_what_its_new_manifest_says() {
    bounded(async {
        let engine = FakeEngine::start("e", Script::default()).await;
        let mut club = Club::start(&[]).await;
        let serving = |model: &str| ServiceSpec {
            model: model.into(),
            ..ServiceSpec::fake(&engine)
        };
        club.add_node("box", &[serving("m-one")]).await;
        let ask =
            |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(club.chat_whole(&ask("m-one")).await.0, 200);
        assert_eq!(club.chat_whole(&ask("m-two")).await.0, 404);

        club.rewrite_manifest("box", &[serving("m-two")]);
        club.node("box").proc.signal("HUP");
        club.wait_for_model("m-two").await;
        let (status, _, body) = club.chat_whole(&ask("m-two")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
        assert_eq!(engine.requests().last().unwrap()["model"], "m-two");
        let (status, _, body) = club.chat_whole(&ask("m-one")).await;
        assert_eq!(status, 404, "{body}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_key_without_the_provider_scope_is_refused() {
    bounded(async {
        let engine = FakeEngine::start("a", Script::default()).await;
        let mut club = Club::start(&[]).await;
        let inference_only = club.key_with_scopes("inference").await;
        let node =
            club.spawn_node_with_key("node-a", &[ServiceSpec::fake(&engine)], &inference_only);
        let line = club.nodes[node]
            .proc
            .wait_for_line("403", Duration::from_secs(10))
            .await;
        assert!(
            line.contains("provider"),
            "the refusal names the missing scope: {line}"
        );
        assert!(club.models().await.is_empty());
        assert!(
            club.nodes[node]
                .proc
                .line_with("linked to the coordinator")
                .is_none()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_with_an_invalid_manifest_is_refused_with_every_problem() {
    use futures_util::{SinkExt, StreamExt};
    use inference_club_core::link::{self, CoordinatorMessage, Hello, NodeMessage};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

    bounded(async {
        let club = Club::start(&[]).await;
        let connect = |key: String| {
            let mut request = format!("ws://{}/v1/link", club.address)
                .into_client_request()
                .unwrap();
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {key}").parse().unwrap());
            tokio_tungstenite::connect_async(request)
        };

        // The node's own validator would never send this: speak the protocol by hand.
        let (mut ws, _) = connect(club.key.clone()).await.unwrap();
        let manifest = json!({
            "schema_version": 1,
            "agent": {"name": "hand-made"},
            "hosts": [{"id": "box", "services": [{
                "name": "chat", "engine": "foo", "url": "localhost:8080", "max_concurrent": 0,
                "models": [{"id": "m"}],
            }]}],
        });
        let hello = NodeMessage::Hello(Hello {
            protocol_version: 1,
            node_version: "e2e-test".into(),
            manifest,
        });
        ws.send(Message::Text(link::encode(&hello).unwrap().into()))
            .await
            .unwrap();
        let answer = loop {
            match ws.next().await.expect("an answer to hello").unwrap() {
                Message::Text(text) => break link::decode_coordinator(&text).unwrap(),
                _ => continue,
            }
        };
        let CoordinatorMessage::Refused(refused) = answer else {
            panic!("expected refused, got {answer:?}");
        };
        for path in ["engine", "url", "max_concurrent"] {
            let path = format!("hosts[0].services[0].{path}");
            assert!(
                refused.errors.iter().any(|e| e.starts_with(&path)),
                "{path} is not listed in {:?}",
                refused.errors
            );
        }
        assert!(club.models().await.is_empty());

        // A key without the provider scope is refused at the upgrade.
        let inference_only = club.key_with_scopes("inference").await;
        match connect(inference_only).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 403);
            }
            other => panic!("expected 403 at the upgrade, got {other:?}"),
        }
    })
    .await;
}
