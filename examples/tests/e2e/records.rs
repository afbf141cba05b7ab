//! Records and their visibility: who may read, change and delete them.

use std::time::Duration;

use inference_club_core::record::{Status, Visibility};
use serde_json::{Value, json};

use crate::bounded;
use crate::support::{
    ANSWER, Club, FakeEngine, Script, ServiceSpec, chat_body, json_of, request_id, streamed_content,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visibility_comes_from_the_header_or_the_body_and_never_reaches_the_engine() {
    bounded(async {
        let engine = FakeEngine::start("a", Script::default()).await;
        let mut club = Club::start(&[]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&engine)]).await;

        let response = club
            .post_chat(
                &chat_body(false),
                Some(&club.key),
                &[("x-club-visibility", "private")],
            )
            .await;
        assert_eq!(response.status().as_u16(), 200);
        let by_header = request_id(&response).unwrap();
        json_of(response).await;

        let mut body = chat_body(true);
        body["visibility"] = json!("private");
        let (status, by_body, events) = club.chat_streamed(&body).await;
        assert_eq!(status, 200);
        assert_eq!(streamed_content(&events), ANSWER);

        let mut body = chat_body(false);
        body["visibility"] = json!("unlisted");
        let (status, unlisted, _) = club.chat_whole(&body).await;
        assert_eq!(status, 200);

        let (status, default, _) = club.chat_whole(&chat_body(false)).await;
        assert_eq!(status, 200);

        let mut body = chat_body(false);
        body["visibility"] = json!("secret");
        let (status, _, error) = club.chat_whole(&body).await;
        assert_eq!(status, 400, "{error}");
        assert_eq!(error["error"]["param"], "visibility");

        for (id, expected) in [
            (by_header, Visibility::Private),
            (by_body.unwrap(), Visibility::Private),
            (unlisted.unwrap(), Visibility::Unlisted),
            (default.unwrap(), Visibility::Public),
        ] {
            let record = club.final_record(id, Duration::from_secs(5)).await;
            assert_eq!(record.visibility, expected);
            assert_eq!(record.status(), Status::Succeeded);
            assert!(!record.request.extra.contains_key("visibility"));
        }
        let requests = engine.requests();
        assert_eq!(requests.len(), 4);
        for request in requests {
            assert!(
                request.get("visibility").is_none(),
                "the engine saw {request}"
            );
        }
    })
    .await;
}

/// Who may read, change and delete a record, through the club API of a real coordinator process:
/// `ada` asks privately on `bob`'s node; `eve` is a stranger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_visibility_and_deletion_follow_the_rules_for_every_viewer() {
    bounded(async {
        let engine = FakeEngine::start("a", Script::default()).await;
        let mut club = Club::start(&[]).await;
        let bob = club.add_member("bob", "provider,inference").await;
        let eve = club.add_member("eve", "inference,account").await;
        let index = club.spawn_node_with_key("bobs-node", &[ServiceSpec::fake(&engine)], &bob);
        club.nodes[index]
            .proc
            .wait_for_line("linked to the coordinator", Duration::from_secs(20))
            .await;
        club.wait_for_model(&ServiceSpec::fake(&engine).model).await;

        let mut body = chat_body(false);
        body["visibility"] = json!("private");
        let (status, id, _) = club.chat_whole(&body).await;
        assert_eq!(status, 200);
        let id = id.unwrap();
        club.final_record(id, Duration::from_secs(5)).await;

        let url = format!("{}/api/v1/requests/{id}", club.url);
        let get = |key: Option<String>| {
            let mut request = club.http.get(&url);
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            async move { request.send().await.unwrap().status().as_u16() }
        };
        assert_eq!(get(Some(club.key.clone())).await, 200, "the owner reads it");
        assert_eq!(
            get(Some(bob.clone())).await,
            200,
            "the serving operator reads it"
        );
        assert_eq!(get(Some(eve.clone())).await, 404, "a stranger does not");
        assert_eq!(get(None).await, 404, "nor does anyone signed out");
        let feed: Value = club
            .http
            .get(format!("{}/api/v1/requests/public", club.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            !feed.to_string().contains(&id.to_string()),
            "private records stay off the feed"
        );

        // Only the owner changes visibility or deletes; others change nothing.
        let patch = |key: String, visibility: &str| {
            club.http
                .patch(&url)
                .bearer_auth(key)
                .json(&json!({"visibility": visibility}))
                .send()
        };
        assert_eq!(
            patch(eve.clone(), "public")
                .await
                .unwrap()
                .status()
                .as_u16(),
            404
        );
        assert_eq!(get(None).await, 404);
        assert_eq!(
            patch(club.key.clone(), "unlisted")
                .await
                .unwrap()
                .status()
                .as_u16(),
            200
        );
        assert_eq!(get(None).await, 200, "unlisted: anyone with the id");
        assert_eq!(get(Some(eve.clone())).await, 200);

        let delete = |key: String| club.http.delete(&url).bearer_auth(key).send();
        assert_eq!(delete(eve.clone()).await.unwrap().status().as_u16(), 404);
        assert_eq!(
            delete(bob.clone()).await.unwrap().status().as_u16(),
            404,
            "the serving operator reads it but cannot delete it"
        );
        assert!(
            club.store().record(id).await.unwrap().is_some(),
            "nothing was deleted yet"
        );
        assert_eq!(
            delete(club.key.clone()).await.unwrap().status().as_u16(),
            204
        );
        assert_eq!(get(Some(club.key.clone())).await, 404, "gone for the owner");
        assert_eq!(get(Some(bob.clone())).await, 404, "gone for the operator");
        assert!(
            club.store().record(id).await.unwrap().is_none(),
            "gone from the database"
        );
    })
    .await;
}
