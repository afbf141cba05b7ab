//! The club API: records, the public feed, providers, keys, the account, and device sign-in.

use futures_util::future::BoxFuture;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use inference_club_core::record::Visibility;
use reqwest::Method;
use serde::de::DeserializeOwned;

use crate::client::Idempotence;
use crate::types::{
    Account, AccountDeletion, AccountSettings, ApiKey, CreatedKey, DeviceAuthorization,
    DeviceToken, Page, ProviderProfile, ProviderSettings, Record, RecordFilter,
};
use crate::{Client, Error};

/// Every item of a paginated listing, fetching the next page when the last one is used up.
/// Items arrive newest first; an error ends the stream.
pub struct Paginated<T> {
    inner: Pin<Box<dyn Stream<Item = Result<T, Error>> + Send>>,
}

impl<T> std::fmt::Debug for Paginated<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Paginated").finish_non_exhaustive()
    }
}

impl<T> Stream for Paginated<T> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// What fetches one page of a listing: from a cursor (`None`: the first page), its items and
/// the cursor of the next page (`None` after the last).
pub(crate) type FetchPage<T> = Arc<
    dyn Fn(Option<String>) -> BoxFuture<'static, Result<(Vec<T>, Option<String>), Error>>
        + Send
        + Sync,
>;

struct PageState<T> {
    fetch: FetchPage<T>,
    buffer: VecDeque<T>,
    /// `None` once the last page was fetched.
    next: Option<Option<String>>,
}

impl<T: Send + 'static> Paginated<T> {
    /// Every item of the pages `fetch` answers, starting at `first` (a cursor, or `None`).
    pub(crate) fn from_pages(first: Option<String>, fetch: FetchPage<T>) -> Self {
        let state = PageState {
            fetch,
            buffer: VecDeque::new(),
            next: Some(first),
        };
        let inner = futures_util::stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            loop {
                if let Some(item) = state.buffer.pop_front() {
                    return Some((Ok(item), Some(state)));
                }
                let cursor = state.next.take()?;
                match (state.fetch)(cursor.clone()).await {
                    Ok((items, next)) => {
                        state.buffer.extend(items);
                        // A cursor that does not move would fetch the same page forever.
                        state.next = next.filter(|n| Some(n) != cursor.as_ref()).map(Some);
                    }
                    Err(error) => return Some((Err(error), None)),
                }
            }
        });
        Self {
            inner: Box::pin(inner),
        }
    }
}

impl<T: DeserializeOwned + Send + 'static> Paginated<T> {
    /// The records under `segments` matching `filter`, page after page (`next_cursor`).
    fn new(client: &Client, segments: &[&str], filter: RecordFilter) -> Self {
        let client = client.clone();
        let segments: Arc<[String]> = segments.iter().map(|s| (*s).to_owned()).collect();
        let first = filter.cursor.clone();
        Self::from_pages(
            first,
            Arc::new(move |cursor| {
                let (client, segments) = (client.clone(), segments.clone());
                let mut filter = filter.clone();
                filter.cursor = cursor;
                Box::pin(async move {
                    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
                    let page = client.page::<T>(&segments, &filter).await?;
                    let next = page.next_cursor.filter(|_| page.has_more);
                    Ok((page.data, next))
                })
            }),
        )
    }
}

fn visibility_body(visibility: Visibility) -> serde_json::Value {
    serde_json::json!({ "visibility": visibility.as_str() })
}

impl Client {
    async fn page<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        filter: &RecordFilter,
    ) -> Result<Page<T>, Error> {
        self.call_json(
            Method::GET,
            segments,
            &filter.query(),
            None::<&()>,
            Idempotence::Retryable,
        )
        .await
    }

    /// One page of my requests, any visibility, newest first (`GET /api/v1/requests`).
    #[inline(never)]
    pub fn my_requests_page<'a>(
        &'a self,
        filter: &'a RecordFilter,
    ) -> BoxFuture<'a, Result<Page<Record>, Error>> {
        Box::pin(async move { self.page(&["api", "v1", "requests"], filter).await })
    }

    /// All my requests matching `filter`, newest first, page after page.
    pub fn my_requests(&self, filter: RecordFilter) -> Paginated<Record> {
        Paginated::new(self, &["api", "v1", "requests"], filter)
    }

    /// One page of the public feed (`GET /api/v1/requests/public`); needs no key.
    #[inline(never)]
    pub fn public_feed_page<'a>(
        &'a self,
        filter: &'a RecordFilter,
    ) -> BoxFuture<'a, Result<Page<Record>, Error>> {
        Box::pin(async move {
            self.page(&["api", "v1", "requests", "public"], filter)
                .await
        })
    }

    /// The public feed matching `filter`, newest first, page after page. The feed takes no
    /// visibility filter.
    pub fn public_feed(&self, filter: RecordFilter) -> Paginated<Record> {
        Paginated::new(self, &["api", "v1", "requests", "public"], filter)
    }

    /// One record, by its id or completion id (`GET /api/v1/requests/{id}`).
    #[inline(never)]
    pub fn record<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Record, Error>> {
        Box::pin(async move {
            self.call_json(
                Method::GET,
                &["api", "v1", "requests", id],
                &[],
                None::<&()>,
                Idempotence::Retryable,
            )
            .await
        })
    }

    /// Changes who may read one of my requests; answers the record as it now is.
    #[inline(never)]
    pub fn set_visibility<'a>(
        &'a self,
        id: &'a str,
        visibility: Visibility,
    ) -> BoxFuture<'a, Result<Record, Error>> {
        Box::pin(async move {
            self.call_json(
                Method::PATCH,
                &["api", "v1", "requests", id],
                &[],
                Some(&visibility_body(visibility)),
                Idempotence::Retryable,
            )
            .await
        })
    }

    /// Deletes one of my requests for good (`DELETE /api/v1/requests/{id}`).
    #[inline(never)]
    pub fn delete_record<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            self.call::<serde_json::Value>(
                Method::DELETE,
                &["api", "v1", "requests", id],
                &[],
                None::<&()>,
                Idempotence::Retryable,
            )
            .await
            .map(drop)
        })
    }

    /// Every provider's public profile (`GET /api/v1/providers`).
    #[inline(never)]
    pub fn providers<'a>(&'a self) -> BoxFuture<'a, Result<Vec<ProviderProfile>, Error>> {
        Box::pin(async move {
            #[derive(serde::Deserialize)]
            struct List {
                data: Vec<ProviderProfile>,
            }
            let list: List = self
                .call_json(
                    Method::GET,
                    &["api", "v1", "providers"],
                    &[],
                    None::<&()>,
                    Idempotence::Retryable,
                )
                .await?;
            Ok(list.data)
        })
    }

    /// One provider's profile, with its request count.
    #[inline(never)]
    pub fn provider<'a>(
        &'a self,
        operator: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<ProviderProfile, Error>> {
        Box::pin(async move {
            self.call_json(
                Method::GET,
                &["api", "v1", "providers", operator, name],
                &[],
                None::<&()>,
                Idempotence::Retryable,
            )
            .await
        })
    }

    /// One page of what my provider's nodes served, any visibility
    /// (`GET /api/v1/providers/{operator}/{name}/requests`; its operator only).
    #[inline(never)]
    pub fn provider_requests_page<'a>(
        &'a self,
        operator: &'a str,
        name: &'a str,
        filter: &'a RecordFilter,
    ) -> BoxFuture<'a, Result<Page<Record>, Error>> {
        Box::pin(async move {
            self.page(
                &["api", "v1", "providers", operator, name, "requests"],
                filter,
            )
            .await
        })
    }

    /// Everything my provider's nodes served, newest first, page after page.
    pub fn provider_requests(
        &self,
        operator: &str,
        name: &str,
        filter: RecordFilter,
    ) -> Paginated<Record> {
        Paginated::new(
            self,
            &["api", "v1", "providers", operator, name, "requests"],
            filter,
        )
    }

    /// Changes my provider's settings (`PATCH /api/v1/providers/{operator}/{name}`, where the
    /// coordinator supports it): only the fields set are sent; answers the profile.
    #[inline(never)]
    pub fn update_provider<'a>(
        &'a self,
        operator: &'a str,
        name: &'a str,
        settings: &'a ProviderSettings,
    ) -> BoxFuture<'a, Result<ProviderProfile, Error>> {
        Box::pin(async move {
            self.call_json(
                Method::PATCH,
                &["api", "v1", "providers", operator, name],
                &[],
                Some(settings),
                Idempotence::Retryable,
            )
            .await
        })
    }

    /// My live keys (prefix only, never the secret).
    #[inline(never)]
    pub fn keys<'a>(&'a self) -> BoxFuture<'a, Result<Vec<ApiKey>, Error>> {
        Box::pin(async move {
            #[derive(serde::Deserialize)]
            struct List {
                data: Vec<ApiKey>,
            }
            let list: List = self
                .call_json(
                    Method::GET,
                    &["api", "v1", "keys"],
                    &[],
                    None::<&()>,
                    Idempotence::Retryable,
                )
                .await?;
            Ok(list.data)
        })
    }

    /// Creates a key named `name` with `scopes` (`inference`, `provider`, `account`); its
    /// secret is in the answer and nowhere else, ever.
    #[inline(never)]
    pub fn create_key<'a>(
        &'a self,
        name: &'a str,
        scopes: &'a [&'a str],
    ) -> BoxFuture<'a, Result<CreatedKey, Error>> {
        Box::pin(async move {
            self.call_json(
                Method::POST,
                &["api", "v1", "keys"],
                &[],
                Some(&serde_json::json!({ "name": name, "scopes": scopes })),
                Idempotence::OnlyIfRefused,
            )
            .await
        })
    }

    /// Revokes one of my keys at once.
    #[inline(never)]
    pub fn revoke_key<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            self.call::<serde_json::Value>(
                Method::DELETE,
                &["api", "v1", "keys", id],
                &[],
                None::<&()>,
                Idempotence::Retryable,
            )
            .await
            .map(drop)
        })
    }

    /// My account (`GET /api/v1/me`).
    #[inline(never)]
    pub fn account<'a>(&'a self) -> BoxFuture<'a, Result<Account, Error>> {
        Box::pin(async move {
            self.call_json(
                Method::GET,
                &["api", "v1", "me"],
                &[],
                None::<&()>,
                Idempotence::Retryable,
            )
            .await
        })
    }

    /// Changes my settings (only the fields set are sent); answers the account.
    #[inline(never)]
    pub fn update_account<'a>(
        &'a self,
        settings: &'a AccountSettings,
    ) -> BoxFuture<'a, Result<Account, Error>> {
        Box::pin(async move {
            self.call_json(
                Method::PATCH,
                &["api", "v1", "me"],
                &[],
                Some(settings),
                Idempotence::Retryable,
            )
            .await
        })
    }

    /// Deletes my account and everything of mine the club holds; the answer says what it could
    /// not reach.
    #[inline(never)]
    pub fn delete_account<'a>(&'a self) -> BoxFuture<'a, Result<AccountDeletion, Error>> {
        Box::pin(async move {
            self.call_json(
                Method::DELETE,
                &["api", "v1", "me"],
                &[],
                None::<&()>,
                Idempotence::Retryable,
            )
            .await
        })
    }

    /// Starts a device sign-in (`POST /api/v1/auth/device`, no key needed): show the person
    /// the answer's `user_code` and `verification_uri`, then call
    /// [`wait_for_device_token`](Self::wait_for_device_token).
    #[inline(never)]
    pub fn start_device_login<'a>(&'a self) -> BoxFuture<'a, Result<DeviceAuthorization, Error>> {
        Box::pin(async move {
            self.call_json(
                Method::POST,
                &["api", "v1", "auth", "device"],
                &[],
                None::<&()>,
                Idempotence::OnlyIfRefused,
            )
            .await
        })
    }

    /// Polls `POST /api/v1/auth/device/token` every `interval` seconds (5 more after a
    /// `slow_down`) until the person signed in, and answers the new key.
    ///
    /// Any other answer is returned as an error, with the server's code: `expired_token`,
    /// `access_denied`, or `terms_required` (403: the member has no account yet — ask them, and
    /// call again with `accept_terms: true`). The wait also ends with `expired_token` once
    /// `expires_in` has passed.
    #[inline(never)]
    pub fn wait_for_device_token<'a>(
        &'a self,
        authorization: &'a DeviceAuthorization,
        accept_terms: bool,
        key_name: Option<&'a str>,
    ) -> BoxFuture<'a, Result<DeviceToken, Error>> {
        Box::pin(async move {
            let mut interval = Duration::from_secs(authorization.interval.clamp(1, 60));
            let deadline = tokio::time::Instant::now()
                + Duration::from_secs(authorization.expires_in.min(86_400));
            let mut body = serde_json::json!({
                "device_token": authorization.device_token,
                "accept_terms": accept_terms,
            });
            if let Some(name) = key_name {
                body["key_name"] = name.into();
            }
            loop {
                let polled: Result<DeviceToken, Error> = self
                    .call_json(
                        Method::POST,
                        &["api", "v1", "auth", "device", "token"],
                        &[],
                        Some(&body),
                        Idempotence::OnlyIfRefused,
                    )
                    .await;
                match polled {
                    Ok(token) => return Ok(token),
                    Err(error) => match error.code() {
                        Some("authorization_pending") => {}
                        Some("slow_down") => interval += Duration::from_secs(5),
                        _ => return Err(error),
                    },
                }
                if tokio::time::Instant::now() + interval > deadline {
                    return Err(Error::Api {
                        status: 400,
                        error: inference_club_core::openai::ApiError::new(
                            "invalid_request_error",
                            "the sign-in expired before it was completed; start again",
                            Some("expired_token"),
                        ),
                        retry_after: None,
                    });
                }
                tokio::time::sleep(interval).await;
            }
        })
    }
}
