//! `club`, the consumer's command line, over the client SDK: chat, models, one's requests, the
//! public feed, providers, keys, sign-in and the account — and `club demo`.
//!
//! Output is for people by default and JSON with `--json`; errors print the server's message on
//! stderr and exit non-zero. The coordinator is `--url`/`CLUB_URL`, else the one `club login`
//! signed in to, else `http://127.0.0.1:8080`; the key is `--api-key`/`CLUB_API_KEY`, else the
//! one `club login` saved for that coordinator.

#[path = "../../common.rs"]
mod common;

mod cli;
mod commands;
mod config;
mod demo;
mod output;

use std::process::ExitCode;

use clap::Parser;

use self::cli::Cli;

/// Exit status: done.
const EXIT_OK: u8 = 0;
/// Exit status: the command failed (the message says why).
const EXIT_FAILED: u8 = 1;

fn main() -> ExitCode {
    let cli = Cli::parse();
    common::init("warn", false);
    let Ok(runtime) = common::runtime() else {
        eprintln!("error: cannot start the async runtime");
        return ExitCode::from(2);
    };
    ExitCode::from(runtime.block_on(run(cli)))
}

/// Runs a parsed command line; answers the exit status.
async fn run(cli: Cli) -> u8 {
    let ui = output::Ui::detect(cli.json);
    match commands::run(cli, ui).await {
        Ok(()) => EXIT_OK,
        Err(message) => {
            eprintln!("error: {}", output::printable(&message));
            EXIT_FAILED
        }
    }
}
