//! `club`: the consumer's command line. Argument parsing only; the logic lives in
//! `inference_club_examples`.

use std::io;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use inference_club_examples::demo::{self, DemoOptions};

/// Use an Inference Club coordinator — or run a whole club on this machine with `club demo`.
#[derive(Debug, Parser)]
#[command(name = "club", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a whole club in one process: coordinator, node, member, and one streamed chat.
    Demo {
        /// Where the coordinator listens (a free port is used if this one is taken).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// The database (a SQLite file by default).
        #[arg(long, env = "CLUB_DATABASE_URL", default_value = "sqlite:club-demo.db")]
        database: String,
        /// The prompt of the demo chat.
        #[arg(long, default_value = "Hello, club! What is this place?")]
        prompt: String,
        /// Exit after the demo chat instead of serving until Ctrl-C.
        #[arg(long)]
        once: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    inference_club_examples::cli_support::init_logging("warn", false);
    let Ok(runtime) = inference_club_examples::cli_support::runtime() else {
        eprintln!("error: cannot start the async runtime");
        return ExitCode::from(2);
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Demo {
                listen,
                database,
                prompt,
                once,
            } => {
                let mut out = io::stdout();
                demo::run(
                    DemoOptions {
                        listen,
                        database,
                        prompt,
                        once,
                    },
                    &mut out,
                )
                .await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(1)
        }
    }
}
