//! `club`: the consumer's command line. Argument parsing only; the logic lives in
//! `inference_club_examples::club_cli`.

use std::process::ExitCode;

use clap::Parser;
use inference_club_examples::club_cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    inference_club_examples::cli_support::init_logging("warn", false);
    let Ok(runtime) = inference_club_examples::cli_support::runtime() else {
        eprintln!("error: cannot start the async runtime");
        return ExitCode::from(2);
    };
    ExitCode::from(runtime.block_on(club_cli::run(cli)))
}
