//! `club-provider`: the provider node's command line. Argument parsing only; the logic lives in
//! `inference_club_examples::provider_cli`.

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use inference_club_examples::provider_cli;

/// Run an Inference Club provider node and manage its service manifest.
#[derive(Debug, Parser)]
#[command(name = "club-provider", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a manifest (YAML or JSON) and print every problem with its path.
    Validate {
        /// The manifest file.
        file: PathBuf,
    },
    /// Print the manifest's JSON Schema (as checked in at docs/manifest.schema.json).
    Schema,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let status = match cli.command {
        Command::Validate { file } => {
            provider_cli::validate(&file, &mut io::stdout(), &mut io::stderr())
        }
        Command::Schema => provider_cli::schema(&mut io::stdout().lock()),
    };
    ExitCode::from(status)
}
