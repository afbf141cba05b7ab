//! `club-coordinator`: the coordinator's command line. It parses arguments and calls
//! `inference_club_coordinator`.

#[path = "../../common.rs"]
mod common;

mod args;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use inference_club_coordinator::{Admin, ClusterConfig, Coordinator, DEFAULT_DATABASE, Scopes};

use self::args::{LimitsArgs, SignInArgs};

/// The default listening address.
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Exit status: done.
const EXIT_OK: u8 = 0;
/// Exit status: bad input (unknown user, bad scopes, …).
const EXIT_INVALID: u8 = 1;
/// Exit status: the database or the network failed.
const EXIT_FAILED: u8 = 2;

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
        /// How long a line of a batch a coordinator claimed stays held without it renewing
        /// the lease, in seconds: in a cluster, how long the lines of a replica that died wait
        /// before another replica takes them.
        #[arg(long, env = "CLUB_BATCH_LEASE_SECS", default_value_t = 30,
              value_parser = clap::value_parser!(u64).range(1..=3600))]
        batch_lease_secs: u64,
        /// How long the audio and images of records are kept, in days.
        #[arg(long, env = "CLUB_BLOB_RETENTION_DAYS", default_value_t = 30,
              value_parser = clap::value_parser!(u64).range(1..=36500))]
        blob_retention_days: u64,
        #[command(flatten)]
        sign_in: SignInArgs,
        /// Rate, concurrency and size limits.
        #[command(flatten)]
        limits: LimitsArgs,
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

/// mimalloc: glibc's malloc cost an eighth of the coordinator's CPU under load
/// (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    common::init("info", false);
    let Ok(runtime) = common::runtime() else {
        eprintln!("error: cannot start the async runtime");
        return ExitCode::from(EXIT_FAILED);
    };
    let database = cli.database;
    let status = runtime.block_on(async move {
        let outcome = match cli.command {
            Command::Serve {
                listen,
                heartbeat_secs,
                queue_timeout_secs,
                drain_secs,
                batch_lease_secs,
                blob_retention_days,
                sign_in,
                limits,
                cluster,
            } => {
                let mut builder = Coordinator::builder()
                    .database(&database)
                    .heartbeat_interval(Duration::from_secs(heartbeat_secs))
                    .queue_timeout(Duration::from_secs(queue_timeout_secs))
                    .drain(Duration::from_secs(drain_secs))
                    .batch_lease(Duration::from_secs(batch_lease_secs))
                    .blob_retention(Duration::from_secs(blob_retention_days * 24 * 3600))
                    .limits(limits.into());
                if let Some(nats_url) = cluster.nats {
                    builder = builder.cluster(ClusterConfig {
                        replica_id: cluster.replica_id,
                        ..ClusterConfig::new(nats_url)
                    });
                }
                match sign_in.apply(builder) {
                    Ok(builder) => serve(&listen, builder).await,
                    Err(message) => Err((EXIT_INVALID, message)),
                }
            }
            Command::User {
                command: UserCommand::Add { handle, email },
            } => user_add(&database, &handle, email.as_deref()).await,
            Command::Key {
                command: KeyCommand::Create { user, scope, name },
            } => key_create(&database, &user, &scope, &name).await,
            Command::Migrate => match Admin::migrate(&database).await {
                Ok(()) => {
                    println!("the database is up to date");
                    Ok(())
                }
                Err(error) => Err((EXIT_FAILED, error.to_string())),
            },
        };
        match outcome {
            Ok(()) => EXIT_OK,
            Err((status, message)) => {
                eprintln!("error: {message}");
                status
            }
        }
    });
    ExitCode::from(status)
}

/// A failure: the exit status and what to print.
type Failure = (u8, String);

/// The exit status for a library error: refused input (a bad or taken handle, an unknown
/// member) is the caller's to fix; the rest is the database's or the network's failure.
fn status_of(error: &inference_club_coordinator::AdminError) -> u8 {
    use inference_club_coordinator::ErrorKind;
    match error.kind() {
        ErrorKind::InvalidInput | ErrorKind::NotFound | ErrorKind::Conflict => EXIT_INVALID,
        _ => EXIT_FAILED,
    }
}

/// `serve`: runs until SIGINT/SIGTERM, then drains.
async fn serve(
    listen: &str,
    builder: inference_club_coordinator::CoordinatorBuilder,
) -> Result<(), Failure> {
    let coordinator = builder
        .build()
        .await
        .map_err(|error| (EXIT_FAILED, format!("cannot start: {error}")))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|error| (EXIT_FAILED, format!("cannot listen on {listen}: {error}")))?;
    // The line scripts and tests wait for: connections are taken from here on.
    if let Ok(address) = listener.local_addr() {
        println!("listening on http://{address}");
    }
    coordinator
        .serve(listener, common::signalled())
        .await
        .map_err(|error| (EXIT_FAILED, error.to_string()))
}

/// `user add HANDLE`.
async fn user_add(database: &str, handle: &str, email: Option<&str>) -> Result<(), Failure> {
    let admin = open(database).await?;
    let member = admin
        .add_user(handle, email)
        .await
        .map_err(|error| (status_of(&error), error.to_string()))?;
    println!("created user {} ({})", member.handle, member.id);
    Ok(())
}

/// `key create --user HANDLE --scope …`: prints the new key on stdout, its only appearance.
async fn key_create(database: &str, handle: &str, scopes: &str, name: &str) -> Result<(), Failure> {
    let scopes: Scopes =
        scopes
            .parse()
            .map_err(|error: inference_club_coordinator::ScopeParseError| {
                (EXIT_INVALID, error.to_string())
            })?;
    let admin = open(database).await?;
    let secret = admin
        .create_key(handle, name, scopes)
        .await
        .map_err(|error| match error.is_not_found() {
            true => (
                EXIT_INVALID,
                format!("no user {handle:?}; add one with `club-coordinator user add {handle}`"),
            ),
            false => (status_of(&error), error.to_string()),
        })?;
    println!("{secret}");
    Ok(())
}

async fn open(database: &str) -> Result<Admin, Failure> {
    Admin::open(database).await.map_err(|error| {
        (
            EXIT_FAILED,
            format!("cannot open the database {database}: {error}"),
        )
    })
}
