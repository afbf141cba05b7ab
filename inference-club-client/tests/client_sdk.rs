//! The Rust client SDK (`inference-club-client`) against a real coordinator in this process:
//! every method, streaming with reasoning and usage, errors in the stream, retries before output
//! and none after, `Retry-After`, and its timeouts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use inference_club_client::{
    AccountSettings, ChatEvent, ChatRequest, Client, Error, RecordFilter, RetryPolicy, Status,
    TimeoutPhase, Visibility,
};
use inference_club_coordinator::testing::proxy::{Proxy, device_login_hook, error_response};
use inference_club_coordinator::testing::{HANDLE, NODE, TestClub};
use inference_club_core::openai::{
    ChatCompletionChunk, ChatCompletionRequest, ChunkDelta, Model, Role,
};
use inference_club_core::provider::{ChunkStream, Provider, ProviderError, RequestContext};
use inference_club_provider::backends::Echo;

fn echo() -> Arc<dyn Provider> {
    Arc::new(Echo::new().with_reasoning(true))
}

fn client(url: &str, key: &str) -> Client {
    Client::builder(url).api_key(key).build().unwrap()
}

/// The text of `events`' content and reasoning, and what `Done` said.
async fn drain(
    mut events: inference_club_client::ChatEvents,
) -> (
    String,
    String,
    Option<(Option<String>, Option<inference_club_client::Usage>)>,
) {
    let (mut content, mut reasoning, mut done) = (String::new(), String::new(), None);
    while let Some(event) = events.next().await {
        match event.unwrap() {
            ChatEvent::Content(text) => content.push_str(&text),
            ChatEvent::Reasoning(text) => reasoning.push_str(&text),
            ChatEvent::Done { record_id, usage } => done = Some((record_id, usage)),
            _ => {}
        }
    }
    (content, reasoning, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_against_a_real_coordinator() {
    let club = TestClub::start(vec![("echo", echo())]).await;
    let client = client(&format!("{}/v1", club.url), &club.key);

    // Models, with the capabilities from the manifest.
    let models = client.models().await.unwrap();
    let model = models
        .iter()
        .find(|m| m.id == "echo")
        .expect("echo is listed");
    assert_eq!(model.context_length, Some(4096));
    assert!(model.has_feature("reasoning"));
    assert_eq!(model.hf.as_deref(), Some("test/echo"));
    assert_eq!(model.nodes, Some(1));
    let anonymous = Client::builder(&club.url).build().unwrap();
    assert!(anonymous.models().await.unwrap().is_empty());

    // A whole answer: text, reasoning, usage and the record id the completion id derives from.
    let whole = client
        .chat(
            ChatRequest::new("echo")
                .system("Be brief.")
                .user("hello there"),
        )
        .await
        .unwrap();
    assert_eq!(whole.text().as_deref(), Some("echo: hello there"));
    assert_eq!(whole.reasoning(), Some("The user said 4 words."));
    let whole_id = whole.record_id.clone().unwrap();
    assert_eq!(
        whole.completion.id,
        format!("chatcmpl-{}", whole_id.replace('-', ""))
    );
    assert_eq!(whole.completion.usage.as_ref().unwrap().prompt_tokens, 4);

    // A stream as typed events: reasoning first, then content, then Done with id and usage.
    let stream = client
        .chat_stream(ChatRequest::new("echo").user("stream this"))
        .await
        .unwrap();
    let streamed_id = stream.record_id().unwrap();
    let (content, reasoning, done) = drain(stream.events()).await;
    assert_eq!(content, "echo: stream this");
    assert_eq!(reasoning, "The user said 2 words.");
    let (done_id, usage) = done.expect("the stream ends with Done");
    assert_eq!(done_id.as_deref(), Some(streamed_id.as_str()));
    let usage = usage.expect("usage comes at the end of the stream");
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (2, 8));

    // The same as raw chunks, collected; usage and finish reason stay on the stream.
    let mut stream = client
        .chat_stream(ChatRequest::new("echo").user("chunks please"))
        .await
        .unwrap();
    let mut chunks = 0;
    while let Some(chunk) = stream.next().await {
        chunk.unwrap();
        chunks += 1;
    }
    assert!(chunks > 3 && stream.is_finished());
    assert_eq!(stream.usage().unwrap().prompt_tokens, 2);
    assert_eq!(stream.finish_reason().unwrap().as_str(), "stop");
    let collected = client
        .chat_stream(ChatRequest::new("echo").user("collect me"))
        .await
        .unwrap()
        .collect_completion()
        .await
        .unwrap();
    assert_eq!(collected.text().as_deref(), Some("echo: collect me"));

    // One record, typed.
    let record = client.record(&streamed_id).await.unwrap();
    assert_eq!(record.id, streamed_id);
    assert_eq!(record.status, Status::Succeeded);
    assert_eq!(record.visibility, Visibility::Public);
    assert_eq!(record.consumer.as_deref(), Some(HANDLE));
    assert_eq!(record.prompt().as_deref(), Some("stream this"));
    assert_eq!(
        record.response.content.as_deref(),
        Some("echo: stream this")
    );
    assert_eq!(record.usage.prompt_tokens, Some(2));
    assert_eq!(
        record.provider.as_ref().unwrap().to_string(),
        format!("{HANDLE}/{NODE}")
    );
    // Also by its completion id.
    let by_completion = client
        .record(record.completion_id.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(by_completion.id, streamed_id);

    // Visibility per request, and changed afterwards.
    let private = client
        .chat(
            ChatRequest::new("echo")
                .user("keep this private")
                .visibility(Visibility::Private),
        )
        .await
        .unwrap();
    let private_id = private.record_id.unwrap();
    assert_eq!(
        client.record(&private_id).await.unwrap().visibility,
        Visibility::Private
    );
    let not_yours = anonymous.record(&private_id).await.unwrap_err();
    assert_eq!(not_yours.status(), Some(404));
    assert_eq!(not_yours.code(), Some("request_not_found"));
    let changed = client
        .set_visibility(&whole_id, Visibility::Unlisted)
        .await
        .unwrap();
    assert_eq!(changed.visibility, Visibility::Unlisted);

    // My requests: every one, page after page (pages of 2), newest first.
    let mine: Vec<_> = client
        .my_requests(RecordFilter::new().limit(2))
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(
        mine.len(),
        5,
        "{:?}",
        mine.iter().map(|r| &r.id).collect::<Vec<_>>()
    );
    assert_eq!(mine[0].id, private_id);
    assert_eq!(mine[4].id, whole_id);
    let page = client
        .my_requests_page(&RecordFilter::new().limit(2))
        .await
        .unwrap();
    assert_eq!(page.data.len(), 2);
    assert!(page.has_more);
    let next = client
        .my_requests_page(
            &RecordFilter::new()
                .limit(2)
                .cursor(page.next_cursor.unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(next.data[0].id, mine[2].id);
    let only_private: Vec<_> = client
        .my_requests(RecordFilter::new().visibility(Visibility::Private))
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(only_private.len(), 1);

    // The public feed, for anyone: public requests only.
    let feed: Vec<_> = anonymous
        .public_feed(RecordFilter::new().model("echo"))
        .map(Result::unwrap)
        .collect()
        .await;
    let feed_ids: Vec<&str> = feed.iter().map(|r| r.id.as_str()).collect();
    assert!(feed_ids.contains(&streamed_id.as_str()));
    assert!(!feed_ids.contains(&private_id.as_str()));
    assert!(
        !feed_ids.contains(&whole_id.as_str()),
        "unlisted is not in the feed"
    );
    let feed_page = anonymous
        .public_feed_page(&RecordFilter::new().limit(1))
        .await
        .unwrap();
    assert_eq!(feed_page.data.len(), 1);
    let bad_filter = anonymous
        .public_feed_page(&RecordFilter::new().visibility(Visibility::Private))
        .await
        .unwrap_err();
    assert_eq!(bad_filter.status(), Some(400));
    assert_eq!(bad_filter.code(), Some("invalid_filter"));

    // Providers and what my node served.
    let providers = anonymous.providers().await.unwrap();
    let mine_provider = providers
        .iter()
        .find(|p| p.operator == HANDLE && p.name == NODE)
        .unwrap();
    assert!(mine_provider.online);
    assert_eq!(mine_provider.models[0].id, "echo");
    let profile = anonymous.provider(HANDLE, NODE).await.unwrap();
    assert_eq!(profile.counts.requests_served, Some(5));
    let served: Vec<_> = client
        .provider_requests(HANDLE, NODE, RecordFilter::new().limit(3))
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(served.len(), 5, "the operator sees every visibility");
    let served_page = client
        .provider_requests_page(HANDLE, NODE, &RecordFilter::new().limit(3))
        .await
        .unwrap();
    assert_eq!(served_page.data.len(), 3);
    let missing = anonymous
        .provider(HANDLE, "no-such-node")
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Some("provider_not_found"));

    // Deletion.
    client.delete_record(&private_id).await.unwrap();
    assert_eq!(
        client.record(&private_id).await.unwrap_err().status(),
        Some(404)
    );
    assert_eq!(
        client
            .delete_record(&private_id)
            .await
            .unwrap_err()
            .status(),
        Some(404)
    );

    // Keys: create (secret once), list (prefix only), revoke (the key stops working at once).
    let created = client.create_key("laptop", &["inference"]).await.unwrap();
    assert!(created.secret.starts_with("icl_"));
    assert_eq!(created.key.scopes, vec!["inference"]);
    let keys = client.keys().await.unwrap();
    let listed = keys.iter().find(|k| k.id == created.key.id).unwrap();
    assert_eq!(listed.name, "laptop");
    assert!(created.secret.starts_with(&listed.prefix));
    let laptop = self::client(&club.url, &created.secret);
    assert!(laptop.models().await.is_ok());
    client.revoke_key(&created.key.id).await.unwrap();
    assert_eq!(laptop.models().await.unwrap_err().status(), Some(401));
    let bad_scope = client.create_key("x", &["root"]).await.unwrap_err();
    assert_eq!(bad_scope.code(), Some("invalid_scopes"));

    // The account: read, settings (a request naming no visibility then takes the default).
    let me = client.account().await.unwrap();
    assert_eq!(me.handle, HANDLE);
    assert_eq!(me.default_visibility, Visibility::Public);
    let me = client
        .update_account(&AccountSettings {
            default_visibility: Some(Visibility::Unlisted),
            ..AccountSettings::default()
        })
        .await
        .unwrap();
    assert_eq!(me.default_visibility, Visibility::Unlisted);
    let later = client
        .chat(ChatRequest::new("echo").user("after the change"))
        .await
        .unwrap();
    assert_eq!(
        client
            .record(&later.record_id.unwrap())
            .await
            .unwrap()
            .visibility,
        Visibility::Unlisted
    );

    // Deleting the account: everything of mine goes, and the key with it.
    let deleted = client.delete_account().await.unwrap();
    assert_eq!(deleted.handle, HANDLE);
    assert!(deleted.deleted);
    assert!(!deleted.removed.is_empty());
    assert_eq!(client.account().await.unwrap_err().status(), Some(401));
    assert_eq!(
        anonymous.record(&streamed_id).await.unwrap_err().status(),
        Some(404)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_errors_keep_the_servers_message_and_code() {
    let club = TestClub::start(vec![("echo", echo())]).await;
    let client = client(&club.url, &club.key);
    let missing = client
        .chat(ChatRequest::new("no-such-model").user("hi"))
        .await
        .unwrap_err();
    assert_eq!(missing.status(), Some(404));
    assert_eq!(missing.code(), Some("model_not_found"));
    assert!(missing.message().contains("no-such-model"), "{missing}");
    assert!(!missing.is_retryable());

    let stranger = self::client(&club.url, "icl_not_a_real_key");
    let denied = stranger
        .chat(ChatRequest::new("echo").user("hi"))
        .await
        .unwrap_err();
    assert_eq!(denied.status(), Some(401));
    assert_eq!(denied.code(), Some("invalid_api_key"));
    assert!(!denied.is_retryable());

    let bad = client
        .my_requests_page(&RecordFilter::new().limit(0))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Some("invalid_limit"));

    let nowhere = Client::builder("http://127.0.0.1:9")
        .retry_policy(RetryPolicy::never())
        .build()
        .unwrap();
    let refused = nowhere.models().await.unwrap_err();
    assert!(refused.is_retryable(), "{refused}");
    assert_eq!(refused.status(), None);

    assert!(Client::builder("not a url").build().is_err());
    assert!(Client::builder("ftp://127.0.0.1").build().is_err());
}

/// An engine that says one word, then fails: an error after output has started.
struct FailsMidway {
    calls: AtomicUsize,
}

#[async_trait]
impl Provider for FailsMidway {
    async fn models(&self) -> Result<Vec<Model>, ProviderError> {
        Ok(vec![Model::new("flaky", "test")])
    }

    async fn chat(
        &self,
        request: ChatCompletionRequest,
        context: RequestContext,
    ) -> Result<ChunkStream, ProviderError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let chunk = |delta| {
            ChatCompletionChunk::new(
                format!("c-{}", context.request_id),
                request.model.clone(),
                0,
            )
            .with_delta(delta)
        };
        let items: Vec<Result<ChatCompletionChunk, ProviderError>> = vec![
            Ok(chunk(ChunkDelta {
                role: Some(Role::Assistant),
                ..ChunkDelta::default()
            })),
            Ok(chunk(ChunkDelta::content("partial"))),
            Err(ProviderError::Unavailable {
                status: None,
                message: "the engine crashed".into(),
            }),
        ];
        Ok(Box::pin(futures_util::stream::iter(items)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_inside_the_stream_ends_it_and_is_never_retried() {
    let flaky = Arc::new(FailsMidway {
        calls: AtomicUsize::new(0),
    });
    let club = TestClub::start(vec![("flaky", flaky.clone())]).await;
    let proxy = Proxy::start(&club.url, Arc::new(|_| None)).await;
    let client = Client::builder(&proxy.url)
        .api_key(&club.key)
        .retry_policy(
            RetryPolicy::attempts(3)
                .with_backoff(Duration::from_millis(10), Duration::from_millis(10)),
        )
        .build()
        .unwrap();
    let mut stream = client
        .chat_stream(ChatRequest::new("flaky").user("hi"))
        .await
        .unwrap();
    let mut text = String::new();
    let mut failure = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => {
                for choice in chunk.choices {
                    text.push_str(choice.delta.content.as_deref().unwrap_or_default());
                }
            }
            Err(error) => {
                assert!(failure.is_none(), "one error ends the stream");
                failure = Some(error);
            }
        }
    }
    assert_eq!(text, "partial");
    let failure = failure.expect("the error is an error of the stream, not a silent end");
    assert!(matches!(failure, Error::InStream(_)), "{failure:?}");
    assert_eq!(failure.code(), Some("upstream_error"));
    assert!(
        failure.message().contains("the engine crashed"),
        "{failure}"
    );
    assert!(!failure.is_retryable());
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        proxy.count("POST", "/v1/chat/completions"),
        1,
        "no retry after output"
    );

    // The record says failed, with the partial answer.
    let record = client.record(&stream.record_id().unwrap()).await.unwrap();
    assert_eq!(record.status, Status::Failed);

    // A whole answer gets the same failure as an API error (502). The client had received no
    // output, so it is retried per the policy (3 attempts), then returned.
    let whole = client
        .chat(ChatRequest::new("flaky").user("hi"))
        .await
        .unwrap_err();
    assert_eq!(whole.status(), Some(502));
    assert_eq!(whole.code(), Some("upstream_error"));
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 4);
    assert_eq!(proxy.count("POST", "/v1/chat/completions"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_first_attempt_is_retried_after_retry_after() {
    let club = TestClub::start(vec![("echo", echo())]).await;
    // The first attempt of each call is refused with 503 and `Retry-After: 1`.
    let proxy = Proxy::start(
        &club.url,
        Arc::new(|seen| {
            (seen.path == "/v1/chat/completions" && seen.nth % 2 == 0).then(|| {
                let mut answer = error_response(503, "overloaded", "every node is busy");
                answer
                    .headers_mut()
                    .insert("retry-after", "1".parse().unwrap());
                answer
            })
        }),
    )
    .await;
    let client = Client::builder(&proxy.url)
        .api_key(&club.key)
        .retry_policy(
            RetryPolicy::attempts(3)
                .with_backoff(Duration::from_millis(10), Duration::from_millis(20))
                .with_jitter(false),
        )
        .build()
        .unwrap();

    let started = Instant::now();
    let stream = client
        .chat_stream(ChatRequest::new("echo").user("second time lucky"))
        .await
        .unwrap();
    let waited = started.elapsed();
    let (content, _, _) = drain(stream.events()).await;
    assert_eq!(content, "echo: second time lucky");
    assert_eq!(proxy.count("POST", "/v1/chat/completions"), 2);
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After: 1 is honoured over a 10 ms backoff, waited {waited:?}"
    );

    let started = Instant::now();
    let whole = client
        .chat(ChatRequest::new("echo").user("whole"))
        .await
        .unwrap();
    assert_eq!(whole.text().as_deref(), Some("echo: whole"));
    assert!(started.elapsed() >= Duration::from_millis(950));
    assert_eq!(proxy.count("POST", "/v1/chat/completions"), 4);

    // Without retries the 503 comes back with its Retry-After.
    let once = Client::builder(&proxy.url)
        .api_key(&club.key)
        .retry_policy(RetryPolicy::never())
        .build()
        .unwrap();
    let refused = once
        .chat(ChatRequest::new("echo").user("no retry"))
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(503));
    assert_eq!(refused.code(), Some("overloaded"));
    assert_eq!(refused.retry_after(), Some(Duration::from_secs(1)));
    assert!(refused.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_beyond_the_policy_is_returned_at_once() {
    let club = TestClub::start(vec![("echo", echo())]).await;
    let proxy = Proxy::start(
        &club.url,
        Arc::new(|seen| {
            (seen.path == "/v1/models").then(|| {
                let mut answer = error_response(429, "rate_limited", "slow down");
                let headers = answer.headers_mut();
                headers.insert("retry-after", "120".parse().unwrap());
                headers.insert("x-ratelimit-remaining", "0".parse().unwrap());
                answer
            })
        }),
    )
    .await;
    let client = client(&proxy.url, &club.key);
    let started = Instant::now();
    let limited = client.models().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(limited.status(), Some(429));
    assert_eq!(limited.retry_after(), Some(Duration::from_secs(120)));
    assert_eq!(proxy.count("GET", "/v1/models"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_fire_for_the_first_token_between_chunks_and_for_the_whole_request() {
    // One word every 400 ms (the role chunk comes at once).
    let slow: Arc<dyn Provider> = Arc::new(
        Echo::new()
            .models(["slow"])
            .pace(Duration::from_millis(400))
            .with_reasoning(true),
    );
    let club = TestClub::start(vec![("slow", slow)]).await;
    let proxy = Proxy::start(&club.url, Arc::new(|_| None)).await;

    // First token: nothing but a role within 150 ms.
    let impatient = Client::builder(&proxy.url)
        .api_key(&club.key)
        .first_token_timeout(Duration::from_millis(150))
        .retry_policy(RetryPolicy::never())
        .build()
        .unwrap();
    let started = Instant::now();
    let error = match impatient
        .chat_stream(ChatRequest::new("slow").user("a b c"))
        .await
    {
        Err(error) => error,
        Ok(mut stream) => loop {
            match stream.next().await {
                Some(Ok(chunk)) => assert!(!chunk.has_output(), "no output within 150 ms"),
                Some(Err(error)) => break error,
                None => panic!("the stream ended without the timeout"),
            }
        },
    };
    assert!(error.is_timeout(), "{error:?}");
    assert_eq!(error.timeout_phase(), Some(TimeoutPhase::FirstToken));
    assert!(
        started.elapsed() < Duration::from_millis(390),
        "{:?}",
        started.elapsed()
    );

    // Idle: the first word arrives (the first-token wait is long), the next one is too late;
    // the stream had output, so it is not retried.
    let before = proxy.count("POST", "/v1/chat/completions");
    let idle = Client::builder(&proxy.url)
        .api_key(&club.key)
        .first_token_timeout(Duration::from_secs(5))
        .idle_timeout(Duration::from_millis(150))
        .retry_policy(RetryPolicy::attempts(3))
        .build()
        .unwrap();
    let mut stream = idle
        .chat_stream(ChatRequest::new("slow").user("a b c"))
        .await
        .unwrap();
    let mut output = 0;
    let error = loop {
        match stream.next().await {
            Some(Ok(chunk)) => output += usize::from(chunk.has_output()),
            Some(Err(error)) => break error,
            None => panic!("the stream ended without the idle timeout"),
        }
    };
    assert_eq!(output, 1, "one word, then silence");
    assert_eq!(error.timeout_phase(), Some(TimeoutPhase::Idle), "{error:?}");
    assert!(stream.next().await.is_none(), "the timeout ends the stream");
    assert_eq!(proxy.count("POST", "/v1/chat/completions"), before + 1);

    // The whole request: a whole answer that takes seconds, cut at 300 ms.
    let hurried = Client::builder(&proxy.url)
        .api_key(&club.key)
        .request_timeout(Duration::from_millis(300))
        .retry_policy(RetryPolicy::never())
        .build()
        .unwrap();
    let started = Instant::now();
    let error = hurried
        .chat(ChatRequest::new("slow").user("a b c"))
        .await
        .unwrap_err();
    assert_eq!(
        error.timeout_phase(),
        Some(TimeoutPhase::Request),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // …and for a stream too, even one that keeps producing output.
    let mut stream = hurried
        .chat_stream(ChatRequest::new("slow").user("a b c d e f g h"))
        .await
        .map(Some)
        .unwrap_or_else(|e| {
            assert_eq!(e.timeout_phase(), Some(TimeoutPhase::Request));
            None
        });
    if let Some(stream) = stream.as_mut() {
        let mut last = None;
        while let Some(item) = stream.next().await {
            last = Some(item);
        }
        let error = last.unwrap().unwrap_err();
        assert_eq!(error.timeout_phase(), Some(TimeoutPhase::Request));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_sign_in_waits_asks_for_the_terms_and_answers_a_key() {
    let club = TestClub::start(vec![("echo", echo())]).await;
    let proxy = Proxy::start(&club.url, device_login_hook(club.key.clone())).await;
    let client = Client::builder(&proxy.url).build().unwrap();
    let authorization = client.start_device_login().await.unwrap();
    assert_eq!(authorization.user_code, "WXYZ-1234");
    assert_eq!(authorization.interval, 1);

    // Pending once (polled again after `interval`), then the terms are required.
    let started = Instant::now();
    let terms = client
        .wait_for_device_token(&authorization, false, Some("laptop"))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "polls every interval"
    );
    assert_eq!(terms.status(), Some(403));
    assert_eq!(terms.code(), Some("terms_required"));
    let token = client
        .wait_for_device_token(&authorization, true, Some("laptop"))
        .await
        .unwrap();
    assert_eq!(token.key, club.key);
    assert_eq!(token.handle.as_deref(), Some(HANDLE));
    let polls: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.path == "/api/v1/auth/device/token")
        .collect();
    assert_eq!(polls.len(), 3);
    assert_eq!(polls[2].body["accept_terms"], true);
    assert_eq!(polls[2].body["key_name"], "laptop");

    // The key works; and a coordinator without sign-in says so.
    assert!(self::client(&proxy.url, &token.key).account().await.is_ok());
    let unavailable = Client::builder(&club.url)
        .build()
        .unwrap()
        .start_device_login()
        .await
        .unwrap_err();
    assert_eq!(unavailable.status(), Some(404));
}
