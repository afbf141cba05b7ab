//! Chats through a cluster: request bodies, streamed answers with arrival times, records.

use std::time::Instant;

use inference_club_core::record::RecordId;
use serde_json::{Value, json};

use super::super::{SseReader, json_of, request_id};
use super::Cluster;

/// A chat request for `model` with one user message.
pub fn chat_for(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "Say hello"}],
        "stream": stream,
    })
}

/// A streamed answer read to its end.
#[derive(Debug)]
pub struct Streamed {
    /// The HTTP status.
    pub status: u16,
    /// The record it names.
    pub id: Option<RecordId>,
    /// The `data:` payloads, `[DONE]` included.
    pub events: Vec<String>,
    /// Whether the body ended with a transport error.
    pub broken: bool,
}

/// A streamed answer read to its end, with the time each event arrived.
pub async fn read_streamed(response: reqwest::Response) -> (Streamed, Vec<Instant>) {
    let status = response.status().as_u16();
    let id = request_id(&response);
    let mut reader = SseReader::new(response);
    let mut events = Vec::new();
    let mut arrivals = Vec::new();
    while let Some(event) = reader.next().await {
        arrivals.push(Instant::now());
        events.push(event);
    }
    let streamed = Streamed {
        status,
        id,
        events,
        broken: reader.broken,
    };
    (streamed, arrivals)
}

impl Cluster {
    /// `POST {base}/v1/chat/completions` with `body`, as `ada`.
    pub async fn post_chat(&self, base: &str, body: &Value) -> reqwest::Response {
        self.club
            .http
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&self.club.key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    /// A whole chat at `base`: status, record id and body.
    pub async fn chat_whole(&self, base: &str, body: &Value) -> (u16, Option<RecordId>, Value) {
        let response = self.post_chat(base, body).await;
        let status = response.status().as_u16();
        let id = request_id(&response);
        (status, id, json_of(response).await)
    }

    /// A streamed chat at `base`, read to its end.
    pub async fn chat_streamed(&self, base: &str, body: &Value) -> Streamed {
        read_streamed(self.post_chat(base, body).await).await.0
    }

    /// `GET {base}/api/v1/requests/{id}` as `ada`: status and body.
    pub async fn record_via(&self, base: &str, id: RecordId) -> (u16, Value) {
        let response = self
            .club
            .http
            .get(format!("{base}/api/v1/requests/{id}"))
            .bearer_auth(&self.club.key)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, json_of(response).await)
    }
}
