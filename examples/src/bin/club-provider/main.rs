//! `club-provider`: the provider node's command line. It parses arguments and calls
//! `inference_club_provider`.

#[path = "../../common.rs"]
mod common;

mod doctor;
mod init;
mod run;
mod validate;

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// Run an Inference Club provider node and manage its service manifest.
#[derive(Debug, Parser)]
#[command(name = "club-provider", version)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "CLUB_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Link to the coordinator and serve the models of the manifest until stopped.
    Run {
        /// The coordinator's base URL, as http(s)://HOST or http(s)://HOST:PORT, with or without /v1.
        #[arg(long, env = "CLUB_COORDINATOR")]
        coordinator: String,
        /// An API key with the `provider` scope.
        #[arg(long, env = "CLUB_API_KEY", hide_env_values = true)]
        key: String,
        /// The service manifest (YAML or JSON).
        #[arg(long, env = "CLUB_MANIFEST")]
        manifest: PathBuf,
        /// Keep a local log of the jobs served (JSON lines, rotated by size).
        #[arg(long, env = "CLUB_JOB_LOG")]
        job_log: Option<PathBuf>,
        /// Also log prompts and answers in the job log.
        #[arg(long)]
        log_content: bool,
        /// Seconds to wait for an engine to accept a request and answer with headers.
        #[arg(long, env = "CLUB_ENGINE_CONNECT_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
        engine_connect_timeout_secs: u64,
        /// Seconds to wait for an engine's first output (long: models may reason silently first).
        #[arg(long, env = "CLUB_FIRST_TOKEN_TIMEOUT_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86400))]
        first_token_timeout_secs: u64,
        /// Seconds an engine may stay silent between two chunks once output has started.
        #[arg(long, env = "CLUB_IDLE_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
        idle_timeout_secs: u64,
        /// Seconds to wait for a whole answer (a consumer that does not stream: the engine is
        /// asked for the answer whole, and sends nothing until it is complete).
        #[arg(long, env = "CLUB_WHOLE_ANSWER_TIMEOUT_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86400))]
        whole_answer_timeout_secs: u64,
    },
    /// Check the manifest, every service and model, and the key; one ✓/✗ line per check.
    Doctor {
        /// The service manifest.
        #[arg(long, env = "CLUB_MANIFEST")]
        manifest: PathBuf,
        /// The coordinator's URL, to check the key against.
        #[arg(long, env = "CLUB_COORDINATOR", requires = "key")]
        coordinator: Option<String>,
        /// The API key to check.
        #[arg(long, env = "CLUB_API_KEY", hide_env_values = true)]
        key: Option<String>,
    },
    /// Find engines on their default local ports and write a manifest for review.
    Init {
        /// Where to write the manifest.
        #[arg(long, short, default_value = "agent.yaml")]
        output: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
        /// The host to look on.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
    },
    /// Check a manifest (YAML or JSON) and print every problem with its path.
    Validate {
        /// The manifest file.
        file: PathBuf,
    },
    /// Print the manifest's JSON Schema (as checked in at docs/manifest.schema.json).
    Schema,
}

/// mimalloc: glibc's malloc cost an eighth of the coordinator's CPU under load
/// (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();

    let status = match cli.command {
        Command::Validate { file } => {
            validate::validate(&file, &mut io::stdout(), &mut io::stderr())
        }
        Command::Schema => validate::schema(&mut io::stdout().lock()),
        command => {
            common::init("info", matches!(cli.log_format, LogFormat::Json));
            let Ok(runtime) = common::runtime() else {
                eprintln!("error: cannot start the async runtime");
                return ExitCode::from(validate::EXIT_IO);
            };
            runtime.block_on(async move {
                match command {
                    Command::Run {
                        coordinator,
                        key,
                        manifest,
                        job_log,
                        log_content,
                        engine_connect_timeout_secs,
                        first_token_timeout_secs,
                        idle_timeout_secs,
                        whole_answer_timeout_secs,
                    } => {
                        run::run(run::RunOptions {
                            coordinator,
                            key,
                            manifest,
                            job_log,
                            log_content,
                            engine_timeouts: inference_club_provider::Timeouts {
                                connect: Duration::from_secs(engine_connect_timeout_secs),
                                first_token: Duration::from_secs(first_token_timeout_secs),
                                idle: Duration::from_secs(idle_timeout_secs),
                                whole: Duration::from_secs(whole_answer_timeout_secs),
                            },
                        })
                        .await
                    }
                    Command::Doctor {
                        manifest,
                        coordinator,
                        key,
                    } => {
                        let target = coordinator.as_deref().zip(key.as_deref());
                        doctor::doctor(&manifest, target, &mut io::stdout()).await
                    }
                    Command::Init {
                        output,
                        force,
                        host,
                    } => init::init(&output, force, &host, &mut io::stdout()).await,
                    Command::Validate { .. } | Command::Schema => validate::EXIT_OK,
                }
            })
        }
    };
    ExitCode::from(status)
}
