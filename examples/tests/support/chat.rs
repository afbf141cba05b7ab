//! Chats with a club as a consumer: requests, whole and streamed answers, the record they name.

use inference_club_core::record::RecordId;
use serde_json::{Value, json};

use super::{Club, MODEL, SseReader};

impl Club {
    /// `POST /v1/chat/completions` with `body`, `key` (`None`: no key) and extra headers.
    pub async fn post_chat(
        &self,
        body: &Value,
        key: Option<&str>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}/v1/chat/completions", self.url))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    /// A whole chat as `ada`: status, record id (if named) and body.
    pub async fn chat_whole(&self, body: &Value) -> (u16, Option<RecordId>, Value) {
        let response = self.post_chat(body, Some(&self.key), &[]).await;
        let status = response.status().as_u16();
        let id = request_id(&response);
        (status, id, json_of(response).await)
    }

    /// A streamed chat as `ada`, read to its end.
    pub async fn chat_streamed(&self, body: &Value) -> (u16, Option<RecordId>, Vec<String>) {
        let response = self.post_chat(body, Some(&self.key), &[]).await;
        let status = response.status().as_u16();
        let id = request_id(&response);
        let mut events = SseReader::new(response);
        let mut all = Vec::new();
        while let Some(event) = events.next().await {
            all.push(event);
        }
        (status, id, all)
    }

    /// A streamed chat as `ada` in a task of its own, read to its end.
    pub fn spawn_chat_streamed(
        &self,
        body: Value,
    ) -> tokio::task::JoinHandle<(u16, Option<RecordId>, Vec<String>)> {
        let (http, url, key) = (self.http.clone(), self.url.clone(), self.key.clone());
        tokio::spawn(async move {
            let response = http
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let id = request_id(&response);
            let mut events = SseReader::new(response);
            let mut all = Vec::new();
            while let Some(event) = events.next().await {
                all.push(event);
            }
            (status, id, all)
        })
    }
}

/// The record named by a response.
pub fn request_id(response: &reqwest::Response) -> Option<RecordId> {
    response
        .headers()
        .get("x-club-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(RecordId::parse)
}

/// A response's body as JSON; `Value::Null` when it is not JSON.
pub async fn json_of(response: reqwest::Response) -> Value {
    let bytes = response.bytes().await.unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

/// A chat request for [`MODEL`] with one user message.
pub fn chat_body(stream: bool) -> Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello"}],
        "stream": stream,
    })
}
