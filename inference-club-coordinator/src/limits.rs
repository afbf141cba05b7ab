//! Limits and abuse controls: how much one key, member or address may ask of the coordinator.
//!
//! Every limit is a field of [`Limits`] (part of [`CoordinatorConfig`](super::CoordinatorConfig),
//! and the `club-coordinator serve` flags with environment fallbacks); [`Limiter`] is their
//! running state. Limits are checked before anything is recorded or routed: a refused request
//! leaves no record and reaches no node.
//!
//! - **Rates** ([`Limiter::inference`], [`Limiter::sign_in`], [`Limiter::key_creation`]): a
//!   keyed GCRA limiter (the `governor` crate) per API key, per client address, per member.
//!   Over the limit: 429 with `Retry-After`; every answer of a limited route carries
//!   `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (seconds until the
//!   whole allowance is back). The keyed maps forget keys that have been quiet long enough to be
//!   back at their full allowance, so their memory is bounded by the keys active in one window.
//! - **Concurrency** ([`Limiter::enter`]): requests in flight per member; 429
//!   `too_many_concurrent_requests` beyond.
//! - **Across replicas** ([`Limiter::share_usage`]): in a cluster each replica reports what its
//!   callers used ([`Limiter::take_usage`]) and charges what the others report
//!   ([`Limiter::apply_usage`]), so rates and concurrency hold club-wide, not per replica. The
//!   reports go every [`USAGE_REPORT`]; only a burst within one report can overshoot.
//! - **Sizes** ([`Limiter::check_request`], [`Limiter::check_manifest`]): the body (413), the
//!   number of messages and their total characters, a ceiling on `max_tokens` (400 naming the
//!   limit and the parameter), and the size of a node's manifest on the link.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use inference_club_core::openai::ChatCompletionRequest;

use super::error::ApiError;
use super::store::UserId;

/// Default: inference requests per minute per API key.
pub const DEFAULT_REQUESTS_PER_MINUTE: u32 = 60;
/// Default: inference requests in flight at once per member.
pub const DEFAULT_MAX_CONCURRENT_PER_MEMBER: u32 = 8;
/// Default: the largest chat request body, in bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Default [`Limits::max_upload_bytes`]: 25 MiB, OpenAI's limit on an audio file.
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = 25 * 1024 * 1024;
/// Default [`Limits::max_blob_bytes`]: 16 MiB.
pub const DEFAULT_MAX_BLOB_BYTES: usize = 16 * 1024 * 1024;
/// Default [`Limits::max_file_bytes`]: 64 MiB.
pub const DEFAULT_MAX_FILE_BYTES: usize = 64 * 1024 * 1024;
/// Default: the most messages in one chat request.
pub const DEFAULT_MAX_MESSAGES: usize = 256;
/// Default: the most characters of text over all messages of one chat request.
pub const DEFAULT_MAX_INPUT_CHARS: usize = 500_000;
/// Default: the largest `max_tokens` / `max_completion_tokens` a request may ask for.
pub const DEFAULT_MAX_TOKENS_CEILING: u32 = 32_768;
/// Default: the largest manifest a node may announce on its link, in bytes of JSON (the
/// manifest format's own limit).
pub const DEFAULT_MAX_MANIFEST_BYTES: usize =
    inference_club_core::manifest::limits::MAX_DOCUMENT_BYTES;
/// Default: sign-in requests (`/auth/…`, `/api/v1/auth/…`) per minute per client address.
pub const DEFAULT_SIGN_IN_PER_MINUTE: u32 = 30;
/// Default: API keys a member may create per hour.
pub const DEFAULT_KEY_CREATIONS_PER_HOUR: u32 = 20;

/// The path prefixes of the sign-in routes, limited per client address.
pub const SIGN_IN_PREFIXES: &[&str] = &["/auth/", "/api/v1/auth/"];

/// How often a replica reports its callers' usage to the others (see `Limiter::take_usage`).
pub const USAGE_REPORT: Duration = Duration::from_millis(100);
/// Every this many usage reports lists every member with requests in flight; the others list
/// only the counts that changed.
pub const FULL_IN_FLIGHT_EVERY: u64 = 5;
/// Another replica's in-flight count for a member stops counting when it has not been reported
/// again for this long (its replica went away): three full reports.
pub const REMOTE_IN_FLIGHT_FRESH: Duration = Duration::from_millis(1500);
/// The most distinct keys of one rate held for the next usage report; uses of further keys in
/// the same interval go unreported.
const MAX_UNREPORTED: usize = 100_000;

/// Above this many tracked keys, a limiter forgets quiet keys at once (it also does every
/// [`PRUNE_EVERY`] checks).
const PRUNE_ABOVE: usize = 10_000;
/// A limiter forgets quiet keys every this many checks.
const PRUNE_EVERY: u64 = 1024;

/// Every configurable limit, with defaults a small public club can run with. As flags of
/// `club-coordinator serve` (each with an environment fallback), every value at least 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Inference requests (`/v1/…`) per minute per API key (or session); 429 beyond.
    pub requests_per_minute: u32,
    /// Inference requests in flight at once per member; 429 beyond.
    pub max_concurrent_per_member: u32,
    /// The largest chat request body, in bytes; 413 beyond.
    pub max_body_bytes: usize,
    /// The largest upload (`/v1/audio/transcriptions`: the multipart body, file included), in
    /// bytes; 413 beyond.
    pub max_upload_bytes: usize,
    /// The largest audio or image kept with a record, in bytes: a larger one is served but not
    /// stored (the record says it was dropped).
    pub max_blob_bytes: usize,
    /// The largest file a member may upload for a batch (`/v1/files`), in bytes; 413 beyond.
    pub max_file_bytes: usize,
    /// The most messages in one chat request; 400 beyond.
    pub max_messages: usize,
    /// The most characters of text over all messages of a chat request; 400 beyond.
    pub max_input_chars: usize,
    /// The largest `max_tokens` / `max_completion_tokens` a request may ask for; 400 beyond.
    pub max_tokens_ceiling: u32,
    /// The largest manifest a node may announce, in bytes of JSON; the link refuses it beyond.
    pub max_manifest_bytes: usize,
    /// Sign-in requests (`/auth/…`, `/api/v1/auth/…`) per minute per client address; 429 beyond.
    pub sign_in_per_minute: u32,
    /// API keys a member may create per hour; 429 beyond.
    pub key_creations_per_hour: u32,
    /// Addresses of the reverse proxies (load balancers) in front of the coordinator. A request
    /// that comes from one of them is counted, for the per-address limits, under the client
    /// address its `X-Forwarded-For` names (the nearest one that is not itself a trusted
    /// proxy); from anyone else, `X-Forwarded-For` is ignored.
    pub trusted_proxies: Vec<IpAddr>,
}

/// The most `X-Forwarded-For` entries read (from the right) when looking for the client.
pub const MAX_FORWARDED_HOPS: usize = 16;

impl Limits {
    /// The address a request counts under for the per-address limits: `peer` (the TCP peer),
    /// unless it is a trusted proxy; then the nearest address in `X-Forwarded-For` that is not a
    /// trusted proxy (reading at most `MAX_FORWARDED_HOPS` (16) entries from the right). A missing
    /// or unreadable header leaves `peer`.
    pub fn client_address(
        &self,
        peer: Option<IpAddr>,
        headers: &axum::http::HeaderMap,
    ) -> Option<IpAddr> {
        let trusted = |ip: &IpAddr| self.trusted_proxies.contains(ip);
        if !peer.as_ref().is_some_and(trusted) {
            return peer;
        }
        let mut hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        hops.reverse();
        for hop in hops.into_iter().take(MAX_FORWARDED_HOPS) {
            match hop.parse::<IpAddr>() {
                Ok(ip) if trusted(&ip) => continue,
                Ok(ip) => return Some(ip),
                Err(_) => return peer,
            }
        }
        peer
    }
    /// The default sizes, with rate and concurrency limits so high they never bind: for
    /// benchmarks and load tests, which measure the coordinator rather than its limits.
    pub fn without_rate_limits() -> Self {
        Self {
            requests_per_minute: u32::MAX,
            max_concurrent_per_member: u32::MAX,
            sign_in_per_minute: u32::MAX,
            key_creations_per_hour: u32::MAX,
            ..Self::default()
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            requests_per_minute: DEFAULT_REQUESTS_PER_MINUTE,
            max_concurrent_per_member: DEFAULT_MAX_CONCURRENT_PER_MEMBER,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            max_blob_bytes: DEFAULT_MAX_BLOB_BYTES,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_messages: DEFAULT_MAX_MESSAGES,
            max_input_chars: DEFAULT_MAX_INPUT_CHARS,
            max_tokens_ceiling: DEFAULT_MAX_TOKENS_CEILING,
            max_manifest_bytes: DEFAULT_MAX_MANIFEST_BYTES,
            sign_in_per_minute: DEFAULT_SIGN_IN_PER_MINUTE,
            key_creations_per_hour: DEFAULT_KEY_CREATIONS_PER_HOUR,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Where a key stands against a rate limit: what the `X-RateLimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateState {
    /// Requests allowed per window.
    pub limit: u32,
    /// Requests left now.
    pub remaining: u32,
    /// Seconds until the whole allowance is back.
    pub reset_secs: u64,
}

impl RateState {
    /// Adds `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` to `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in [
            ("x-ratelimit-limit", u64::from(self.limit)),
            ("x-ratelimit-remaining", u64::from(self.remaining)),
            ("x-ratelimit-reset", self.reset_secs),
        ] {
            headers.insert(name, HeaderValue::from(value));
        }
    }
}

/// A request refused by a limit: 429 with `Retry-After` (and the `X-RateLimit-*` headers for a
/// rate), in the OpenAI error envelope.
#[derive(Debug, Clone)]
pub struct Throttled {
    /// The error answered.
    pub error: Box<ApiError>,
    /// The rate state, for a rate limit.
    pub rate: Option<RateState>,
}

impl IntoResponse for Throttled {
    fn into_response(self) -> Response {
        let mut response = (*self.error).into_response();
        if let Some(rate) = self.rate {
            rate.apply(response.headers_mut());
        }
        response
    }
}

impl From<Throttled> for ApiError {
    fn from(throttled: Throttled) -> Self {
        *throttled.error
    }
}

type Governor =
    RateLimiter<String, HashMapStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// A keyed rate limit: `limit` requests per `window`, refilled evenly.
struct KeyedRate {
    governor: Governor,
    limit: u32,
    /// Time to earn back one request.
    period: Duration,
    checks: AtomicU64,
    what: &'static str,
    /// Uses allowed here since the last usage report, by key (kept only when shared).
    unreported: Mutex<HashMap<String, u32>>,
}

impl std::fmt::Debug for KeyedRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedRate")
            .field("what", &self.what)
            .field("limit", &self.limit)
            .field("tracked", &self.governor.len())
            .finish()
    }
}

impl KeyedRate {
    fn new(limit: u32, window: Duration, what: &'static str) -> Self {
        let burst = NonZeroU32::new(limit).unwrap_or(NonZeroU32::MIN);
        let period = (window / burst.get()).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(burst))
            .allow_burst(burst);
        Self {
            governor: RateLimiter::hashmap(quota).with_middleware::<StateInformationMiddleware>(),
            limit: burst.get(),
            period,
            checks: AtomicU64::new(0),
            what,
            unreported: Mutex::new(HashMap::new()),
        }
    }

    fn prune(&self) {
        let checks = self.checks.fetch_add(1, Ordering::Relaxed);
        if checks.is_multiple_of(PRUNE_EVERY) || self.governor.len() > PRUNE_ABOVE {
            self.governor.retain_recent();
            self.governor.shrink_to_fit();
        }
    }

    /// Counts one request of `key`: its state if allowed, else 429 naming the limit. When
    /// `shared`, an allowed request is also kept for the next usage report.
    fn check(&self, key: String, shared: bool) -> Result<RateState, Throttled> {
        self.prune();
        match self.governor.check_key(&key) {
            Ok(snapshot) => {
                if shared {
                    self.note_unreported(key);
                }
                let remaining = snapshot.remaining_burst_capacity().min(self.limit);
                let owed = self.limit - remaining;
                Ok(RateState {
                    limit: self.limit,
                    remaining,
                    reset_secs: ceil_secs(self.period * owed),
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.governor.clock().now());
                let retry_after = ceil_secs(wait).max(1);
                let rate = RateState {
                    limit: self.limit,
                    remaining: 0,
                    reset_secs: ceil_secs(wait + self.period * (self.limit - 1)),
                };
                let mut error = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "requests",
                    "rate_limit_exceeded",
                    format!(
                        "Rate limit reached: {} ({}). Try again in {retry_after} s.",
                        self.what, self.limit
                    ),
                );
                error.retry_after = Some(retry_after);
                Err(Throttled {
                    error: Box::new(error),
                    rate: Some(rate),
                })
            }
        }
    }

    fn note_unreported(&self, key: String) {
        let mut unreported = self
            .unreported
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = unreported.get_mut(&key) {
            *count = count.saturating_add(1);
        } else if unreported.len() < MAX_UNREPORTED {
            unreported.insert(key, 1);
        }
    }

    /// The uses kept for the report, emptied.
    fn take_unreported(&self) -> HashMap<String, u32> {
        std::mem::take(
            &mut *self
                .unreported
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Takes `uses` of `key`'s allowance, made on another replica, as far as it goes (an
    /// allowance already spent stays at zero: it is not driven into debt).
    fn charge(&self, key: String, uses: u32) {
        self.prune();
        for _ in 0..uses.min(self.limit) {
            if self.governor.check_key(&key).is_err() {
                break;
            }
        }
    }
}

fn ceil_secs(duration: Duration) -> u64 {
    let secs = duration.as_secs();
    if duration.subsec_nanos() > 0 {
        secs.saturating_add(1)
    } else {
        secs
    }
}

/// The limits in force and their running state: rate limiters and in-flight counts.
#[derive(Debug)]
pub struct Limiter {
    limits: Limits,
    inference: KeyedRate,
    sign_in: KeyedRate,
    key_creation: KeyedRate,
    in_flight: Arc<Mutex<HashMap<UserId, u32>>>,
    /// Set in a cluster: uses are kept for the usage reports.
    shared: AtomicBool,
    /// The in-flight counts the reports gave so far (members with none left out), and how
    /// many reports were taken.
    reported_in_flight: Mutex<(HashMap<UserId, u32>, u64)>,
    /// Other replicas' in-flight counts, by member.
    remote_in_flight: Mutex<HashMap<UserId, Reported>>,
}

/// One member's requests in flight on other replicas: replica → (count, when reported).
type Reported = HashMap<String, (u32, Instant)>;

/// Which keyed rate a usage report speaks of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateKind {
    /// Inference requests per API key ([`Limiter::inference`]).
    Inference,
    /// Sign-in requests per client address ([`Limiter::sign_in`]).
    SignIn,
    /// Keys created per member ([`Limiter::key_creation`]).
    KeyCreation,
}

/// One line of a replica's usage report (see [`Limiter::take_usage`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Usage {
    /// `uses` requests of `key` allowed under the rate `rate` since the last report.
    Rate {
        /// Which rate.
        rate: RateKind,
        /// The key, address or member it counts under.
        key: String,
        /// How many.
        uses: u32,
    },
    /// `member` has `count` requests in flight on the reporting replica now (0: none any
    /// more).
    InFlight {
        /// The member.
        member: UserId,
        /// Requests in flight there.
        count: u32,
    },
}

impl Limiter {
    /// The running state of `limits`.
    pub fn new(limits: Limits) -> Self {
        let minute = Duration::from_secs(60);
        Self {
            inference: KeyedRate::new(
                limits.requests_per_minute,
                minute,
                "inference requests per minute per key",
            ),
            sign_in: KeyedRate::new(
                limits.sign_in_per_minute,
                minute,
                "sign-in requests per minute per address",
            ),
            key_creation: KeyedRate::new(
                limits.key_creations_per_hour,
                Duration::from_secs(3600),
                "keys created per hour per member",
            ),
            in_flight: Arc::default(),
            shared: AtomicBool::new(false),
            reported_in_flight: Mutex::default(),
            remote_in_flight: Mutex::default(),
            limits,
        }
    }

    fn rate(&self, kind: RateKind) -> &KeyedRate {
        match kind {
            RateKind::Inference => &self.inference,
            RateKind::SignIn => &self.sign_in,
            RateKind::KeyCreation => &self.key_creation,
        }
    }

    fn is_shared(&self) -> bool {
        self.shared.load(Ordering::Relaxed)
    }

    /// Makes the limits club-wide: from now on the uses allowed here are kept for
    /// [`Limiter::take_usage`]. A cluster replica calls it when it joins.
    pub fn share_usage(&self) {
        self.shared.store(true, Ordering::Relaxed);
    }

    /// What the other replicas need to charge since the last call: the rate uses allowed here
    /// (by key), and the in-flight counts that changed (0 for a member with none left); every
    /// [`FULL_IN_FLIGHT_EVERY`]th call, every member's with requests in flight. Empty when
    /// there is nothing to say.
    pub fn take_usage(&self) -> Vec<Usage> {
        let mut usage = Vec::new();
        for rate in [RateKind::Inference, RateKind::SignIn, RateKind::KeyCreation] {
            usage.extend(
                self.rate(rate)
                    .take_unreported()
                    .into_iter()
                    .map(|(key, uses)| Usage::Rate { rate, key, uses }),
            );
        }
        let counts = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut reported = self
            .reported_in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (last, reports) = &mut *reported;
        let everything = reports.is_multiple_of(FULL_IN_FLIGHT_EVERY);
        *reports += 1;
        if everything {
            self.drop_stale_remote_counts();
        }
        for member in last.keys() {
            if !counts.contains_key(member) {
                usage.push(Usage::InFlight {
                    member: *member,
                    count: 0,
                });
            }
        }
        for (member, count) in &counts {
            if everything || last.get(member) != Some(count) {
                usage.push(Usage::InFlight {
                    member: *member,
                    count: *count,
                });
            }
        }
        *last = counts;
        usage
    }

    /// Charges what the replica `from` reported: its rate uses come off the same keys'
    /// allowances here, and its in-flight counts count against members' concurrency here until
    /// it reports them again (or for [`REMOTE_IN_FLIGHT_FRESH`]).
    pub fn apply_usage(&self, from: &str, usage: Vec<Usage>) {
        let now = Instant::now();
        for line in usage {
            match line {
                Usage::Rate { rate, key, uses } => self.rate(rate).charge(key, uses),
                Usage::InFlight { member, count } => {
                    let mut remote = self
                        .remote_in_flight
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    if count == 0 {
                        if let Some(replicas) = remote.get_mut(&member) {
                            replicas.remove(from);
                            if replicas.is_empty() {
                                remote.remove(&member);
                            }
                        }
                    } else {
                        remote
                            .entry(member)
                            .or_default()
                            .insert(from.to_owned(), (count, now));
                    }
                }
            }
        }
    }

    /// Forgets the other replicas' counts not reported again for [`REMOTE_IN_FLIGHT_FRESH`]
    /// (their replica went away), for every member.
    fn drop_stale_remote_counts(&self) {
        self.remote_in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, replicas| {
                replicas.retain(|_, (_, at)| at.elapsed() < REMOTE_IN_FLIGHT_FRESH);
                !replicas.is_empty()
            });
    }

    /// `member`'s requests in flight on other replicas, as last reported (stale reports are
    /// dropped).
    fn remote_in_flight(&self, member: UserId) -> u32 {
        let mut remote = self
            .remote_in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(replicas) = remote.get_mut(&member) else {
            return 0;
        };
        replicas.retain(|_, (_, at)| at.elapsed() < REMOTE_IN_FLIGHT_FRESH);
        let total = replicas.values().map(|(count, _)| *count).sum();
        if replicas.is_empty() {
            remote.remove(&member);
        }
        total
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Counts one inference request made with the key (or session) `key_id`.
    pub fn inference(&self, key_id: &str) -> Result<RateState, Throttled> {
        self.inference.check(key_id.to_owned(), self.is_shared())
    }

    /// Counts one sign-in request from `address` (IPv6 addresses count per /64 network;
    /// `None`, when the address is unknown, shares one allowance).
    pub fn sign_in(&self, address: Option<IpAddr>) -> Result<RateState, Throttled> {
        self.sign_in.check(address_key(address), self.is_shared())
    }

    /// Counts one key created by `member`.
    pub fn key_creation(&self, member: UserId) -> Result<RateState, Throttled> {
        self.key_creation
            .check(member.to_string(), self.is_shared())
    }

    /// Takes one of `member`'s in-flight slots until the returned slot is dropped; 429
    /// `too_many_concurrent_requests` when they are all taken (in a cluster, counting those
    /// the other replicas reported).
    pub fn enter(&self, member: UserId) -> Result<InFlightSlot, Throttled> {
        let max = self.limits.max_concurrent_per_member;
        let elsewhere = if self.is_shared() {
            self.remote_in_flight(member)
        } else {
            0
        };
        let mut counts = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let here = counts.get(&member).copied().unwrap_or(0);
        if here.saturating_add(elsewhere) >= max {
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                "too_many_concurrent_requests",
                format!(
                    "You have {max} requests in flight, the most this club allows at once; \
                     wait for one to finish."
                ),
            );
            error.retry_after = Some(1);
            return Err(Throttled {
                error: Box::new(error),
                rate: None,
            });
        }
        counts.insert(member, here + 1);
        Ok(InFlightSlot {
            counts: Some(self.in_flight.clone()),
            member,
        })
    }

    /// Requests `member` has in flight now on this replica.
    #[cfg(test)]
    pub fn in_flight(&self, member: UserId) -> u32 {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&member)
            .copied()
            .unwrap_or(0)
    }

    /// Checks a parsed chat request against the message, input and `max_tokens` limits: 400
    /// naming the limit and the parameter at fault.
    pub fn check_request(&self, request: &ChatCompletionRequest) -> Result<(), ApiError> {
        let limits = &self.limits;
        if request.messages.len() > limits.max_messages {
            return Err(ApiError::bad_request(
                "too_many_messages",
                format!(
                    "`messages` has {} messages; this club accepts at most {} (max_messages)",
                    request.messages.len(),
                    limits.max_messages
                ),
            )
            .with_param("messages"));
        }
        let mut chars = 0usize;
        for message in &request.messages {
            chars = chars.saturating_add(message.text_content().map_or(0, |t| t.chars().count()));
        }
        if chars > limits.max_input_chars {
            return Err(ApiError::bad_request(
                "input_too_long",
                format!(
                    "the messages hold {chars} characters of text; this club accepts at most {} \
                     (max_input_chars)",
                    limits.max_input_chars
                ),
            )
            .with_param("messages"));
        }
        for (param, value) in [
            ("max_tokens", request.max_tokens),
            ("max_completion_tokens", request.max_completion_tokens),
        ] {
            if let Some(value) = value
                && value > limits.max_tokens_ceiling
            {
                return Err(ApiError::bad_request(
                    "max_tokens_too_large",
                    format!(
                        "`{param}` is {value}; this club allows at most {} (max_tokens_ceiling)",
                        limits.max_tokens_ceiling
                    ),
                )
                .with_param(param));
            }
        }
        Ok(())
    }

    /// Checks the size of a manifest a node announces: the reason to refuse it with, when it
    /// is larger than `max_manifest_bytes` (measured as compact JSON, without building it).
    pub fn check_manifest(&self, manifest: &serde_json::Value) -> Result<(), String> {
        let max = self.limits.max_manifest_bytes;
        let mut counter = Counter { written: 0, max };
        if serde_json::to_writer(&mut counter, manifest).is_err() || counter.written > max {
            return Err(format!(
                "the manifest is larger than {max} bytes, the most this coordinator accepts \
                 (max_manifest_bytes)"
            ));
        }
        Ok(())
    }
}

/// Counts bytes written, failing once past `max`.
struct Counter {
    written: usize,
    max: usize,
}

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written = self.written.saturating_add(buf.len());
        if self.written > self.max {
            return Err(std::io::Error::other("too large"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The key an address is limited by: IPv4 as is, IPv6 by its /64 network (one host usually
/// holds a whole /64).
fn address_key(address: Option<IpAddr>) -> String {
    match address {
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        None => "unknown".to_owned(),
    }
}

/// One of a member's in-flight slots, given back when dropped.
#[derive(Debug)]
pub struct InFlightSlot {
    /// The counts it is one of; `None` for a slot that counts nowhere.
    counts: Option<Arc<Mutex<HashMap<UserId, u32>>>>,
    member: UserId,
}

impl InFlightSlot {
    /// A slot that counts against no limit: a batch's line, which does not use up its owner's
    /// concurrency (the batch scheduler bounds its own).
    pub fn uncounted(member: UserId) -> Self {
        Self {
            counts: None,
            member,
        }
    }
}

impl Drop for InFlightSlot {
    fn drop(&mut self) {
        let Some(counts) = &self.counts else {
            return;
        };
        let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.member) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.member);
            }
        }
    }
}

/// Whether `path` is a sign-in route (limited per client address).
pub fn is_sign_in_path(path: &str) -> bool {
    SIGN_IN_PREFIXES
        .iter()
        .any(|prefix| path.starts_with(prefix) || path == prefix.trim_end_matches('/'))
}

/// A middleware (applied to the whole application) that limits the sign-in routes per client
/// address: whatever route serves the path, and also when none does.
pub async fn sign_in_layer(
    State(limits): State<Arc<Limiter>>,
    request: Request,
    next: Next,
) -> Response {
    if !is_sign_in_path(request.uri().path()) {
        return next.run(request).await;
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let address = limits.limits().client_address(peer, request.headers());
    match limits.sign_in(address) {
        Ok(rate) => {
            let mut response = next.run(request).await;
            rate.apply(response.headers_mut());
            response
        }
        Err(throttled) => throttled.into_response(),
    }
}

/// Adds the rate headers to an answer.
pub fn with_rate(mut response: Response, rate: Option<RateState>) -> Response {
    if let Some(rate) = rate {
        rate.apply(response.headers_mut());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use inference_club_core::openai::ChatMessage;

    fn limits() -> Limits {
        Limits {
            requests_per_minute: 3,
            max_concurrent_per_member: 2,
            max_messages: 2,
            max_input_chars: 10,
            max_tokens_ceiling: 100,
            max_manifest_bytes: 64,
            ..Limits::default()
        }
    }

    #[test]
    fn a_rate_counts_down_then_refuses_with_retry_after() {
        let limiter = Limiter::new(limits());
        let first = limiter.inference("k").unwrap();
        assert_eq!((first.limit, first.remaining), (3, 2));
        assert_eq!(first.reset_secs, 20);
        assert_eq!(limiter.inference("k").unwrap().remaining, 1);
        assert_eq!(limiter.inference("k").unwrap().remaining, 0);
        let refused = limiter.inference("k").unwrap_err();
        assert_eq!(refused.error.status, StatusCode::TOO_MANY_REQUESTS);
        let retry = refused.error.retry_after.unwrap();
        assert!((1..=20).contains(&retry), "{retry}");
        assert_eq!(refused.rate.unwrap().remaining, 0);
        // Another key has its own allowance.
        assert_eq!(limiter.inference("other").unwrap().remaining, 2);
    }

    #[test]
    fn in_flight_slots_are_counted_and_given_back() {
        let limiter = Limiter::new(limits());
        let ada = UserId::new();
        let a = limiter.enter(ada).unwrap();
        let _b = limiter.enter(ada).unwrap();
        let refused = limiter.enter(ada).unwrap_err();
        assert_eq!(
            refused.error.error.code.as_deref(),
            Some("too_many_concurrent_requests")
        );
        assert!(limiter.enter(UserId::new()).is_ok());
        drop(a);
        assert!(limiter.enter(ada).is_ok());
    }

    #[test]
    fn shared_limits_charge_what_other_replicas_report() {
        let (here, there) = (Limiter::new(limits()), Limiter::new(limits()));
        // Not shared: nothing is kept for a report.
        here.inference("k").unwrap();
        assert!(here.take_usage().is_empty());
        here.share_usage();
        there.share_usage();

        // Two uses here and one there of a 3-a-minute key leave nothing anywhere.
        here.inference("k").unwrap();
        there.inference("k").unwrap();
        let from_here = here.take_usage();
        assert_eq!(
            from_here,
            [Usage::Rate {
                rate: RateKind::Inference,
                key: "k".into(),
                uses: 1
            }]
        );
        assert!(here.take_usage().is_empty(), "a use is reported once");
        there.apply_usage("here", from_here);
        here.apply_usage("there", there.take_usage());
        assert_eq!(here.inference("k").unwrap_err().rate.unwrap().remaining, 0);
        assert_eq!(there.inference("k").unwrap().remaining, 0);
        assert!(there.inference("k").is_err());
        // A report larger than the allowance only empties it.
        here.apply_usage(
            "there",
            vec![Usage::Rate {
                rate: RateKind::SignIn,
                key: address_key(None),
                uses: u32::MAX,
            }],
        );
        assert!(here.sign_in(None).is_err());
        assert!(here.sign_in(Some(IpAddr::from([10, 0, 0, 1]))).is_ok());
    }

    #[test]
    fn shared_in_flight_counts_hold_club_wide_until_reported_finished() {
        let (here, there) = (Limiter::new(limits()), Limiter::new(limits()));
        here.share_usage();
        there.share_usage();
        let ada = UserId::new();
        let first = there.enter(ada).unwrap();
        let _second = there.enter(ada).unwrap();
        here.apply_usage("there", there.take_usage());
        let refused = here.enter(ada).unwrap_err();
        assert_eq!(
            refused.error.error.code.as_deref(),
            Some("too_many_concurrent_requests")
        );
        assert_eq!(here.in_flight(ada), 0, "a refusal holds nothing");
        assert!(here.take_usage().is_empty(), "nor is it reported");

        // One finishes there: the next report says so, and here has room for one.
        drop(first);
        let report = there.take_usage();
        assert_eq!(
            report,
            [Usage::InFlight {
                member: ada,
                count: 1
            }]
        );
        here.apply_usage("there", report);
        let _third = here.enter(ada).unwrap();
        assert!(here.enter(ada).is_err());

        // A member with nothing in flight any more is reported once, with 0.
        drop(_second);
        assert_eq!(
            there.take_usage(),
            [Usage::InFlight {
                member: ada,
                count: 0
            }]
        );
        assert!(there.take_usage().is_empty());
    }

    #[test]
    fn in_flight_reports_say_what_changed_and_everything_now_and_then() {
        let limiter = Limiter::new(limits());
        limiter.share_usage();
        let (ada, bob) = (UserId::new(), UserId::new());
        let _a = limiter.enter(ada).unwrap();
        let mut reports = vec![limiter.take_usage()];
        let _b = limiter.enter(bob).unwrap();
        for _ in 1..FULL_IN_FLIGHT_EVERY + 1 {
            reports.push(limiter.take_usage());
        }
        let members = |report: &Vec<Usage>| -> Vec<UserId> {
            let mut members: Vec<UserId> = report
                .iter()
                .filter_map(|u| match u {
                    Usage::InFlight { member, .. } => Some(*member),
                    Usage::Rate { .. } => None,
                })
                .collect();
            members.sort();
            members
        };
        let mut both = vec![ada, bob];
        both.sort();
        assert_eq!(members(&reports[0]), [ada]);
        assert_eq!(members(&reports[1]), [bob], "only the change");
        assert!(
            reports[2..FULL_IN_FLIGHT_EVERY as usize]
                .iter()
                .all(Vec::is_empty)
        );
        assert_eq!(members(&reports[FULL_IN_FLIGHT_EVERY as usize]), both);
    }

    #[test]
    fn requests_over_the_size_limits_name_the_limit() {
        let limiter = Limiter::new(limits());
        let mut request =
            ChatCompletionRequest::new("m", vec![ChatMessage::user("a"), ChatMessage::user("b")]);
        assert!(limiter.check_request(&request).is_ok());
        request.messages.push(ChatMessage::user("c"));
        let e = limiter.check_request(&request).unwrap_err();
        assert_eq!(e.error.code.as_deref(), Some("too_many_messages"));
        assert!(e.error.message.contains("at most 2"));
        let mut request = ChatCompletionRequest::new("m", vec![ChatMessage::user("é".repeat(11))]);
        let e = limiter.check_request(&request).unwrap_err();
        assert_eq!(e.error.code.as_deref(), Some("input_too_long"));
        request.messages = vec![ChatMessage::user("hi")];
        request.max_completion_tokens = Some(101);
        let e = limiter.check_request(&request).unwrap_err();
        assert_eq!(e.error.param.as_deref(), Some("max_completion_tokens"));
        assert!(e.error.message.contains("100"));
    }

    #[test]
    fn manifests_and_paths() {
        let limiter = Limiter::new(limits());
        assert!(limiter.check_manifest(&serde_json::json!({"a": 1})).is_ok());
        let big = serde_json::json!({"a": "x".repeat(100)});
        assert!(
            limiter
                .check_manifest(&big)
                .unwrap_err()
                .contains("64 bytes")
        );
        assert!(is_sign_in_path("/auth/github"));
        assert!(is_sign_in_path("/api/v1/auth/device/code"));
        assert!(is_sign_in_path("/api/v1/auth"));
        assert!(!is_sign_in_path("/api/v1/authors"));
        assert!(!is_sign_in_path("/v1/models"));
        let v6: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        assert_eq!(address_key(Some(v6)), "2001:db8:1:2::/64");
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let other_proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "198.51.100.1, 203.0.113.7, 10.0.0.2".parse().unwrap(),
        );
        let open = Limits::default();
        // Nobody is trusted: the header is ignored.
        assert_eq!(open.client_address(Some(proxy), &headers), Some(proxy));
        let behind = Limits {
            trusted_proxies: vec![proxy, other_proxy],
            ..Limits::default()
        };
        // The nearest untrusted hop; what the client itself wrote further left is not believed.
        assert_eq!(behind.client_address(Some(proxy), &headers), Some(client));
        // From an untrusted peer the header means nothing.
        assert_eq!(behind.client_address(Some(client), &headers), Some(client));
        // No header, or garbage in it: the peer.
        let none = axum::http::HeaderMap::new();
        assert_eq!(behind.client_address(Some(proxy), &none), Some(proxy));
        let mut garbage = axum::http::HeaderMap::new();
        garbage.insert("x-forwarded-for", "not-an-address".parse().unwrap());
        assert_eq!(behind.client_address(Some(proxy), &garbage), Some(proxy));
    }
}
