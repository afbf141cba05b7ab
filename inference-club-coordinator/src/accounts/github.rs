//! The GitHub client: the OAuth mechanics (the `oauth2` crate, over the workspace's `reqwest`)
//! and the two API calls sign-in needs, `/user` and `/user/emails`. Every endpoint comes from
//! [`GitHubConfig`], so tests point it at a fake GitHub on 127.0.0.1.
//!
//! GitHub departs from RFC 6749 in one way that matters: its token endpoint answers errors
//! (`authorization_pending`, `bad_verification_code`, …) with status 200. The HTTP adapter
//! here gives such answers the status the RFC asks for (400), so `oauth2` reads them as the
//! errors they are.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use inference_club_core::manifest::is_github_login;
use oauth2::basic::BasicClient;
use oauth2::{
    AccessToken, AsyncHttpClient, AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret,
    CsrfToken, DeviceAuthorizationUrl, DeviceCodeErrorResponseType, EndpointNotSet, EndpointSet,
    HttpRequest, HttpResponse, RedirectUrl, RequestTokenError, Scope,
    StandardDeviceAuthorizationResponse, TokenResponse, TokenUrl,
};
use serde::Deserialize;
use url::Url;

pub use crate::config::GitHubConfig;
use crate::config::join;

use crate::store::GitHubIdentity;

/// The largest answer read from GitHub, in bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// How long one call to GitHub may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// The OAuth scope sign-in asks for: the e-mail addresses (the public profile needs none).
const SCOPE: &str = "user:email";

/// An error talking to GitHub.
#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    /// GitHub could not be reached, timed out, or failed on its side.
    #[error("GitHub could not be reached: {0}")]
    Unreachable(String),
    /// GitHub refused (an OAuth error such as `bad_verification_code`).
    #[error("GitHub refused: {code}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused {
        /// GitHub's error code.
        code: String,
        /// GitHub's description, if any.
        description: Option<String>,
    },
    /// GitHub answered something that is not what its API documents.
    #[error("GitHub answered unexpectedly: {0}")]
    Protocol(String),
}

/// What one poll of the device flow found.
#[derive(Debug)]
pub enum DevicePoll {
    /// The member approved: a token to read who they are (used once, then dropped).
    Approved(AccessToken),
    /// Not yet approved.
    Pending,
    /// Polled too fast: wait longer.
    SlowDown,
    /// The device code expired.
    Expired,
    /// The member declined.
    Denied,
}

type OAuthClient =
    BasicClient<EndpointSet, EndpointSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// The GitHub client of a coordinator.
pub struct GitHub {
    config: GitHubConfig,
    oauth: OAuthClient,
    http: reqwest::Client,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHub")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What the HTTP adapter saw of the last answer: GitHub's error code, or a transport failure.
#[derive(Debug, Clone)]
enum Observed {
    ErrorCode(String),
    Transport(String),
}

/// The failure of one HTTP call, as `oauth2` sees it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpFailure(String);

/// `reqwest` as `oauth2`'s HTTP client, noting what each answer was.
struct Adapter<'a> {
    http: &'a reqwest::Client,
    observed: &'a Mutex<Option<Observed>>,
}

impl Adapter<'_> {
    fn observe(&self, what: Observed) {
        if let Ok(mut slot) = self.observed.lock() {
            *slot = Some(what);
        }
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpFailure> {
        let (parts, body) = request.into_parts();
        let sent = self
            .http
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(error) => {
                let message = error.to_string();
                self.observe(Observed::Transport(message.clone()));
                return Err(HttpFailure(message));
            }
        };
        let mut status = response.status();
        let headers = response.headers().clone();
        let body = match read_capped(response).await {
            Ok(b) => b,
            Err(message) => {
                self.observe(Observed::Transport(message.clone()));
                return Err(HttpFailure(message));
            }
        };
        #[derive(Deserialize)]
        struct ErrorField {
            error: Option<String>,
        }
        if let Ok(ErrorField { error: Some(code) }) = serde_json::from_slice(&body) {
            // GitHub answers OAuth errors with 200; RFC 6749 says 400.
            if status.is_success() {
                status = reqwest::StatusCode::BAD_REQUEST;
            }
            self.observe(Observed::ErrorCode(code));
        }
        let mut answer = oauth2::http::Response::new(body);
        *answer.status_mut() = status;
        *answer.headers_mut() = headers;
        Ok(answer)
    }
}

impl<'c> AsyncHttpClient<'c> for Adapter<'_> {
    type Error = HttpFailure;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpFailure>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

/// The body of an answer, refused beyond [`MAX_ANSWER_BYTES`].
async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(format!("answer larger than {MAX_ANSWER_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn token_error<RE: std::error::Error + 'static, T: oauth2::ErrorResponse>(
    error: RequestTokenError<RE, T>,
    describe: impl Fn(&T) -> (String, Option<String>),
) -> GitHubError {
    match error {
        RequestTokenError::ServerResponse(response) => {
            let (code, description) = describe(&response);
            GitHubError::Refused { code, description }
        }
        RequestTokenError::Request(error) => GitHubError::Unreachable(error.to_string()),
        RequestTokenError::Parse(error, _) => GitHubError::Protocol(error.to_string()),
        RequestTokenError::Other(message) => GitHubError::Protocol(message),
    }
}

impl GitHub {
    /// A client for `config`; `redirect` is the web flow's callback (`{public_url}/auth/github/callback`),
    /// if the coordinator knows its public address (otherwise GitHub uses the app's own).
    pub fn new(config: GitHubConfig, redirect: Option<Url>) -> Result<Self, GitHubError> {
        let tls = inference_club_core::tls::client_config()
            .map_err(|e| GitHubError::Unreachable(format!("cannot configure TLS: {e}")))?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            // OAuth endpoints must not redirect (a redirect could leak codes to another host).
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(CALL_TIMEOUT)
            .user_agent(concat!("inference-club/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GitHubError::Unreachable(format!("cannot build the HTTP client: {e}")))?;
        let mut oauth = BasicClient::new(ClientId::new(config.client_id.clone()))
            .set_client_secret(ClientSecret::new(config.client_secret.clone()))
            .set_auth_type(AuthType::RequestBody)
            .set_auth_uri(AuthUrl::from_url(config.authorize_url.clone()))
            .set_token_uri(TokenUrl::from_url(config.token_url.clone()))
            .set_device_authorization_url(DeviceAuthorizationUrl::from_url(
                config.device_code_url.clone(),
            ));
        if let Some(redirect) = redirect {
            oauth = oauth.set_redirect_uri(RedirectUrl::from_url(redirect));
        }
        Ok(Self {
            config,
            oauth,
            http,
        })
    }

    /// The authorize page to send the browser to, carrying `state`.
    pub fn authorize_url(&self, state: &str) -> Url {
        let state = state.to_owned();
        let (url, _) = self
            .oauth
            .authorize_url(move || CsrfToken::new(state))
            .add_scope(Scope::new(SCOPE.to_owned()))
            .url();
        url
    }

    /// Exchanges the web flow's `code` for an access token.
    pub async fn exchange_code(&self, code: &str) -> Result<AccessToken, GitHubError> {
        let observed = Mutex::new(None);
        let adapter = Adapter {
            http: &self.http,
            observed: &observed,
        };
        let token = self
            .oauth
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .request_async(&adapter)
            .await
            .map_err(|e| {
                token_error(e, |r| {
                    (
                        r.error().as_ref().to_owned(),
                        r.error_description().cloned(),
                    )
                })
            })?;
        Ok(token.access_token().clone())
    }

    /// Starts a device flow: GitHub's device code, user code and verification page.
    pub async fn start_device(&self) -> Result<StandardDeviceAuthorizationResponse, GitHubError> {
        let observed = Mutex::new(None);
        let adapter = Adapter {
            http: &self.http,
            observed: &observed,
        };
        self.oauth
            .exchange_device_code()
            .add_scope(Scope::new(SCOPE.to_owned()))
            .request_async(&adapter)
            .await
            .map_err(|e| {
                token_error(e, |r| {
                    (
                        r.error().as_ref().to_owned(),
                        r.error_description().cloned(),
                    )
                })
            })
    }

    /// Polls GitHub once for the device flow's outcome.
    ///
    /// `oauth2` polls in a loop, sleeping between polls with a function it is given; here that
    /// function ends the loop instead, so each call is exactly one request to GitHub.
    pub async fn poll_device(
        &self,
        authorization: &StandardDeviceAuthorizationResponse,
    ) -> Result<DevicePoll, GitHubError> {
        let observed = Mutex::new(None);
        let adapter = Adapter {
            http: &self.http,
            observed: &observed,
        };
        let (again, mut wants_again) = tokio::sync::mpsc::unbounded_channel::<()>();
        let poll = self
            .oauth
            .exchange_device_access_token(authorization)
            .request_async(
                &adapter,
                move |_interval| {
                    let again = again.clone();
                    async move {
                        let _ = again.send(());
                        std::future::pending::<()>().await;
                    }
                },
                Some(Duration::from_secs(24 * 60 * 60)),
            );
        tokio::select! {
            biased;
            result = poll => match result {
                Ok(token) => Ok(DevicePoll::Approved(token.access_token().clone())),
                Err(RequestTokenError::ServerResponse(response)) => match response.error() {
                    DeviceCodeErrorResponseType::ExpiredToken => Ok(DevicePoll::Expired),
                    DeviceCodeErrorResponseType::AccessDenied => Ok(DevicePoll::Denied),
                    DeviceCodeErrorResponseType::AuthorizationPending => Ok(DevicePoll::Pending),
                    DeviceCodeErrorResponseType::SlowDown => Ok(DevicePoll::SlowDown),
                    other => Err(GitHubError::Refused {
                        code: other.as_ref().to_owned(),
                        description: response.error_description().cloned(),
                    }),
                },
                Err(error) => Err(token_error(error, |r: &oauth2::DeviceCodeErrorResponse| {
                    (r.error().as_ref().to_owned(), r.error_description().cloned())
                })),
            },
            _ = wants_again.recv() => {
                let seen = observed.lock().ok().and_then(|mut s| s.take());
                match seen {
                    Some(Observed::ErrorCode(code)) if code == "slow_down" => Ok(DevicePoll::SlowDown),
                    Some(Observed::ErrorCode(code)) if code == "authorization_pending" => Ok(DevicePoll::Pending),
                    Some(Observed::ErrorCode(code)) => Err(GitHubError::Refused { code, description: None }),
                    Some(Observed::Transport(message)) => Err(GitHubError::Unreachable(message)),
                    None => Err(GitHubError::Protocol("no answer to the device poll".to_owned())),
                }
            }
        }
    }

    /// Who the token's owner is: `/user` (id and login) and `/user/emails` (the primary
    /// verified address, if GitHub lets us read it). The token is not kept.
    pub async fn identity(&self, token: &AccessToken) -> Result<GitHubIdentity, GitHubError> {
        #[derive(Deserialize)]
        struct UserAnswer {
            id: i64,
            login: String,
        }
        #[derive(Deserialize)]
        struct EmailAnswer {
            email: String,
            #[serde(default)]
            primary: bool,
            #[serde(default)]
            verified: bool,
        }
        let (status, body) = self.api_get(token, "user").await?;
        if !status.is_success() {
            return Err(GitHubError::Refused {
                code: format!("http_{}", status.as_u16()),
                description: Some("GitHub refused to say who signed in".to_owned()),
            });
        }
        let user: UserAnswer = serde_json::from_slice(&body)
            .map_err(|e| GitHubError::Protocol(format!("/user: {e}")))?;
        if user.id <= 0 || !is_github_login(&user.login) {
            return Err(GitHubError::Protocol(format!(
                "/user: id {} and login {:?} are not a GitHub account",
                user.id, user.login
            )));
        }
        let (status, body) = self.api_get(token, "user/emails").await?;
        let email = if status.is_success() {
            let emails: Vec<EmailAnswer> = serde_json::from_slice(&body)
                .map_err(|e| GitHubError::Protocol(format!("/user/emails: {e}")))?;
            emails
                .into_iter()
                .find(|e| e.primary && e.verified)
                .map(|e| e.email.trim().to_owned())
                .filter(|e| !e.is_empty() && e.len() <= 320 && e.contains('@'))
        } else if status.is_server_error() {
            return Err(GitHubError::Unreachable(format!(
                "/user/emails answered {status}"
            )));
        } else {
            // Not granted (a token without the scope): sign in without an address.
            None
        };
        Ok(GitHubIdentity {
            id: user.id,
            login: user.login,
            email,
        })
    }

    async fn api_get(
        &self,
        token: &AccessToken,
        path: &str,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), GitHubError> {
        let response = self
            .http
            .get(join(&self.config.api_url, path))
            .bearer_auth(token.secret())
            .header(reqwest::header::ACCEPT, "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .send()
            .await
            .map_err(|e| GitHubError::Unreachable(e.to_string()))?;
        let status = response.status();
        let body = read_capped(response)
            .await
            .map_err(GitHubError::Unreachable)?;
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_follow_the_base() {
        let config = GitHubConfig::new("id", "secret");
        assert_eq!(
            config.token_url.as_str(),
            "https://github.com/login/oauth/access_token"
        );
        assert_eq!(config.api_url.as_str(), "https://api.github.com/");
        let base = Url::parse("http://127.0.0.1:9/ghe/").unwrap();
        let config = config.with_github_url(&base);
        assert_eq!(
            config.device_code_url.as_str(),
            "http://127.0.0.1:9/ghe/login/device/code"
        );
        assert_eq!(
            join(&Url::parse("http://h/api/v3").unwrap(), "user").as_str(),
            "http://h/api/v3/user"
        );
        assert!(!format!("{config:?}").contains("secret\""));
    }
}
