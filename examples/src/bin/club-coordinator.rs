//! `club-coordinator`: the coordinator's command line. Argument parsing only; the logic lives in
//! `inference_club_examples::coordinator_cli`.

use std::io;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use inference_club_examples::coordinator::CoordinatorConfig;
use inference_club_examples::coordinator::cluster::ClusterConfig;
use inference_club_examples::coordinator::limits::Limits;
use inference_club_examples::coordinator_cli::{self as cli, DEFAULT_DATABASE, DEFAULT_LISTEN};

/// The Inference Club coordinator: the OpenAI-compatible API, the club API and the node links.
#[derive(Debug, Parser)]
#[command(name = "club-coordinator", version)]
struct Cli {
    /// The database: a SQLite file (`sqlite:club.db`, the default) or `postgres://…`.
    #[arg(long, global = true, env = "CLUB_DATABASE_URL", default_value = DEFAULT_DATABASE)]
    database: String,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of `Serve` does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API and accept node links.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "CLUB_LISTEN", default_value = DEFAULT_LISTEN)]
        listen: String,
        /// Node heartbeat interval in seconds.
        #[arg(long, default_value_t = 10)]
        heartbeat_secs: u64,
        /// How long a request may wait for a free node, in seconds.
        #[arg(long, default_value_t = 30)]
        queue_timeout_secs: u64,
        /// How long a stopping coordinator (SIGTERM) lets requests in flight finish, in seconds.
        #[arg(long, env = "CLUB_DRAIN_SECS", default_value_t = 30)]
        drain_secs: u64,
        #[command(flatten)]
        sign_in: SignInArgs,
        /// Rate, concurrency and size limits.
        #[command(flatten)]
        limits: Limits,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Manage members.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage API keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Bring the database schema up to date.
    Migrate,
}

/// Running as one replica of a cluster (several coordinators on one PostgreSQL database).
#[derive(Debug, clap::Args)]
struct ClusterArgs {
    /// The NATS server the replicas share (`nats://HOST:4222`); without it the coordinator runs
    /// alone. Needs a PostgreSQL database.
    #[arg(long, env = "CLUB_NATS_URL")]
    nats: Option<String>,
    /// This replica's id (letters, digits, `-`, `_`); default: a random one.
    #[arg(long, env = "CLUB_REPLICA_ID", requires = "nats")]
    replica_id: Option<String>,
}

/// GitHub sign-in; without a client id, sign-in is off.
#[derive(Debug, clap::Args)]
struct SignInArgs {
    /// The GitHub OAuth app's client id (enables sign-in).
    #[arg(long, env = "CLUB_GITHUB_CLIENT_ID")]
    github_client_id: Option<String>,
    /// The GitHub OAuth app's client secret.
    #[arg(long, env = "CLUB_GITHUB_CLIENT_SECRET", hide_env_values = true)]
    github_client_secret: Option<String>,
    /// GitHub's base URL for the login/oauth endpoints (default: github.com).
    #[arg(long, env = "CLUB_GITHUB_URL")]
    github_url: Option<String>,
    /// GitHub's REST API base URL (default: api.github.com).
    #[arg(long, env = "CLUB_GITHUB_API_URL")]
    github_api_url: Option<String>,
    /// The coordinator's public base URL (for the OAuth callback; https makes cookies Secure).
    #[arg(long, env = "CLUB_PUBLIC_URL")]
    public_url: Option<String>,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a member (no GitHub needed).
    Add {
        /// Their handle (a GitHub login).
        handle: String,
        /// Their e-mail address.
        #[arg(long)]
        email: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Create a key and print it (its only appearance).
    Create {
        /// The member it is for.
        #[arg(long)]
        user: String,
        /// Comma-separated scopes: inference, provider, account.
        #[arg(long, default_value = "inference")]
        scope: String,
        /// A name to recognise it by.
        #[arg(long, default_value = "cli")]
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    inference_club_examples::cli_support::init_logging("info", false);
    let Ok(runtime) = inference_club_examples::cli_support::runtime() else {
        eprintln!("error: cannot start the async runtime");
        return ExitCode::from(cli::EXIT_FAILED);
    };
    let database = cli.database;
    let status = runtime.block_on(async move {
        let (mut out, mut err) = (io::stdout(), io::stderr());
        match cli.command {
            Command::Serve {
                listen,
                heartbeat_secs,
                queue_timeout_secs,
                drain_secs,
                sign_in,
                limits,
                cluster,
            } => {
                let sign_in = cli::SignInOptions {
                    github_client_id: sign_in.github_client_id,
                    github_client_secret: sign_in.github_client_secret,
                    github_url: sign_in.github_url,
                    github_api_url: sign_in.github_api_url,
                    public_url: sign_in.public_url,
                };
                let config = CoordinatorConfig {
                    heartbeat_interval: Duration::from_secs(heartbeat_secs.max(1)),
                    queue_timeout: Duration::from_secs(queue_timeout_secs),
                    limits,
                    cluster: cluster.nats.map(|nats_url| ClusterConfig {
                        replica_id: cluster.replica_id,
                        ..ClusterConfig::new(nats_url)
                    }),
                    drain: Duration::from_secs(drain_secs),
                    ..CoordinatorConfig::default()
                };
                match sign_in.apply(config) {
                    Ok(config) => cli::serve_command(&listen, &database, config).await,
                    Err(message) => {
                        eprintln!("error: {message}");
                        cli::EXIT_INVALID
                    }
                }
            }
            Command::User {
                command: UserCommand::Add { handle, email },
            } => cli::user_add(&database, &handle, email.as_deref(), &mut out, &mut err).await,
            Command::Key {
                command: KeyCommand::Create { user, scope, name },
            } => cli::key_create(&database, &user, &scope, &name, &mut out, &mut err).await,
            Command::Migrate => cli::migrate(&database, &mut out, &mut err).await,
        }
    });
    ExitCode::from(status)
}
