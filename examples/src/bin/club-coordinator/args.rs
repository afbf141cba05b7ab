//! The flags of `club-coordinator serve` that configure the library: limits and GitHub sign-in.

use std::net::IpAddr;

use inference_club_coordinator::defaults::*;
use inference_club_coordinator::{CoordinatorBuilder, GitHubConfig, Limits};

/// Rate, concurrency and size limits; every value at least 1.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitsArgs {
    /// Inference requests (`/v1/…`) per minute per API key (or session); 429 beyond.
    #[arg(long, env = "CLUB_REQUESTS_PER_MINUTE", default_value_t = DEFAULT_REQUESTS_PER_MINUTE,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub requests_per_minute: u32,
    /// Inference requests in flight at once per member; 429 beyond.
    #[arg(long, env = "CLUB_MAX_CONCURRENT_PER_MEMBER",
          default_value_t = DEFAULT_MAX_CONCURRENT_PER_MEMBER,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_per_member: u32,
    /// The largest chat request body, in bytes; 413 beyond.
    #[arg(long, env = "CLUB_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES,
          value_parser = positive_usize)]
    pub max_body_bytes: usize,
    /// The largest upload (`/v1/audio/transcriptions`, the whole multipart body), in bytes;
    /// 413 beyond.
    #[arg(long, env = "CLUB_MAX_UPLOAD_BYTES", default_value_t = DEFAULT_MAX_UPLOAD_BYTES,
          value_parser = positive_usize)]
    pub max_upload_bytes: usize,
    /// The largest audio or image kept with a record, in bytes; a larger one is served but not
    /// stored.
    #[arg(long, env = "CLUB_MAX_BLOB_BYTES", default_value_t = DEFAULT_MAX_BLOB_BYTES,
          value_parser = positive_usize)]
    pub max_blob_bytes: usize,
    /// The largest file a member may upload for a batch (`/v1/files`), in bytes; 413 beyond.
    #[arg(long, env = "CLUB_MAX_FILE_BYTES", default_value_t = DEFAULT_MAX_FILE_BYTES,
          value_parser = positive_usize)]
    pub max_file_bytes: usize,
    /// The most messages in one chat request; 400 beyond.
    #[arg(long, env = "CLUB_MAX_MESSAGES", default_value_t = DEFAULT_MAX_MESSAGES,
          value_parser = positive_usize)]
    pub max_messages: usize,
    /// The most characters of text over all messages of a chat request; 400 beyond.
    #[arg(long, env = "CLUB_MAX_INPUT_CHARS", default_value_t = DEFAULT_MAX_INPUT_CHARS,
          value_parser = positive_usize)]
    pub max_input_chars: usize,
    /// The largest `max_tokens` / `max_completion_tokens` a request may ask for; 400 beyond.
    #[arg(long, env = "CLUB_MAX_TOKENS_CEILING", default_value_t = DEFAULT_MAX_TOKENS_CEILING,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tokens_ceiling: u32,
    /// The largest manifest a node may announce, in bytes of JSON; the link refuses it beyond.
    #[arg(long, env = "CLUB_MAX_MANIFEST_BYTES", default_value_t = DEFAULT_MAX_MANIFEST_BYTES,
          value_parser = positive_usize)]
    pub max_manifest_bytes: usize,
    /// Sign-in requests (`/auth/…`, `/api/v1/auth/…`) per minute per client address; 429 beyond.
    #[arg(long, env = "CLUB_SIGN_IN_PER_MINUTE", default_value_t = DEFAULT_SIGN_IN_PER_MINUTE,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub sign_in_per_minute: u32,
    /// API keys a member may create per hour; 429 beyond.
    #[arg(long, env = "CLUB_KEY_CREATIONS_PER_HOUR",
          default_value_t = DEFAULT_KEY_CREATIONS_PER_HOUR,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub key_creations_per_hour: u32,
    /// Addresses of the reverse proxies (load balancers) in front of the coordinator. A request
    /// that comes from one of them is counted, for the per-address limits, under the client
    /// address its `X-Forwarded-For` names (the nearest one that is not itself a trusted
    /// proxy); from anyone else, `X-Forwarded-For` is ignored.
    #[arg(
        long = "trusted-proxy",
        env = "CLUB_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<IpAddr>,
}

impl From<LimitsArgs> for Limits {
    fn from(args: LimitsArgs) -> Self {
        Limits {
            requests_per_minute: args.requests_per_minute,
            max_concurrent_per_member: args.max_concurrent_per_member,
            max_body_bytes: args.max_body_bytes,
            max_upload_bytes: args.max_upload_bytes,
            max_blob_bytes: args.max_blob_bytes,
            max_file_bytes: args.max_file_bytes,
            max_messages: args.max_messages,
            max_input_chars: args.max_input_chars,
            max_tokens_ceiling: args.max_tokens_ceiling,
            max_manifest_bytes: args.max_manifest_bytes,
            sign_in_per_minute: args.sign_in_per_minute,
            key_creations_per_hour: args.key_creations_per_hour,
            trusted_proxies: args.trusted_proxies,
        }
    }
}

fn positive_usize(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "expected a whole number of at least 1, got {text:?}"
        )),
    }
}

/// GitHub sign-in; without a client id, sign-in is off.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SignInArgs {
    /// The GitHub OAuth app's client id (enables sign-in).
    #[arg(long, env = "CLUB_GITHUB_CLIENT_ID")]
    pub github_client_id: Option<String>,
    /// The GitHub OAuth app's client secret.
    #[arg(long, env = "CLUB_GITHUB_CLIENT_SECRET", hide_env_values = true)]
    pub github_client_secret: Option<String>,
    /// GitHub's base URL for the login/oauth endpoints (default: github.com).
    #[arg(long, env = "CLUB_GITHUB_URL")]
    pub github_url: Option<String>,
    /// GitHub's REST API base URL (default: api.github.com).
    #[arg(long, env = "CLUB_GITHUB_API_URL")]
    pub github_api_url: Option<String>,
    /// The coordinator's public base URL (for the OAuth callback; https makes cookies Secure).
    #[arg(long, env = "CLUB_PUBLIC_URL")]
    pub public_url: Option<String>,
}

fn parse_url(flag: &str, text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text.trim()).map_err(|e| format!("{flag} {text:?}: {e}"))?;
    if matches!(url.scheme(), "http" | "https") {
        Ok(url)
    } else {
        Err(format!(
            "{flag} {text:?}: expected an http:// or https:// URL"
        ))
    }
}

/// An option given as an empty string counts as not given.
fn given(option: Option<&str>) -> Option<&str> {
    option.map(str::trim).filter(|text| !text.is_empty())
}

impl SignInArgs {
    /// `builder` with these options: GitHub sign-in on when a client id is given (a secret is
    /// then required), the public URL set when given. Bad URLs are refused with a message.
    pub fn apply(self, mut builder: CoordinatorBuilder) -> Result<CoordinatorBuilder, String> {
        if let Some(public_url) = given(self.public_url.as_deref()) {
            builder = builder.public_url(parse_url("--public-url", public_url)?);
        }
        let Some(client_id) = given(self.github_client_id.as_deref()) else {
            return Ok(builder);
        };
        let Some(secret) = given(self.github_client_secret.as_deref()) else {
            return Err(
                "--github-client-id needs --github-client-secret (or CLUB_GITHUB_CLIENT_SECRET)"
                    .to_owned(),
            );
        };
        let mut github = GitHubConfig::new(client_id, secret);
        if let Some(base) = given(self.github_url.as_deref()) {
            github = github.with_github_url(&parse_url("--github-url", base)?);
        }
        if let Some(api) = given(self.github_api_url.as_deref()) {
            github = github.with_api_url(parse_url("--github-api-url", api)?);
        }
        Ok(builder.github(github))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_id_needs_a_secret_and_urls_must_be_http() {
        assert!(
            SignInArgs::default()
                .apply(CoordinatorBuilder::new())
                .is_ok()
        );
        let full = SignInArgs {
            github_client_id: Some("id".into()),
            github_client_secret: Some("secret".into()),
            github_url: Some("http://127.0.0.1:9".into()),
            github_api_url: Some("http://127.0.0.1:9/api".into()),
            public_url: Some("https://club.example".into()),
        };
        assert!(full.apply(CoordinatorBuilder::new()).is_ok());
        let no_secret = SignInArgs {
            github_client_id: Some("id".into()),
            ..SignInArgs::default()
        };
        assert!(no_secret.apply(CoordinatorBuilder::new()).is_err());
        let bad_url = SignInArgs {
            public_url: Some("ftp://x".into()),
            ..SignInArgs::default()
        };
        assert!(bad_url.apply(CoordinatorBuilder::new()).is_err());
    }
}
