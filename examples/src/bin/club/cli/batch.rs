//! The command line of `club batch`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `club batch …`.
#[derive(Debug, Subcommand)]
pub enum BatchCommand {
    /// Upload a JSONL file of requests and run it as a batch; prints the batch's id.
    Submit(SubmitArgs),
    /// Where a batch is: its status and progress (a bar on a terminal).
    Status {
        /// The batch's id.
        id: String,
        /// Follow it until it ends.
        #[arg(long)]
        wait: bool,
    },
    /// A batch's answers (its output file) or failures (--errors), as JSONL.
    Results {
        /// The batch's id.
        id: String,
        /// Where to write them (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The error file instead: malformed, failed and unanswered lines.
        #[arg(long)]
        errors: bool,
    },
    /// Your batches, newest first.
    List {
        /// How many to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Stop a batch: what was answered by then stays in its files.
    Cancel {
        /// The batch's id.
        id: String,
    },
}

/// `club batch submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The JSONL file: one `{"custom_id", "method": "POST", "url", "body"}` per line.
    pub file: PathBuf,
    /// The endpoint every line runs on: /v1/chat/completions, /v1/completions,
    /// /v1/embeddings or /v1/responses.
    #[arg(short, long)]
    pub endpoint: String,
    /// A metadata pair KEY=VALUE (repeat for more; at most 16).
    #[arg(long = "metadata", value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,
    /// Who may read the lines' records: public, unlisted or private (default: your default).
    #[arg(long)]
    pub visibility: Option<String>,
    /// Follow the batch until it ends (progress on stderr).
    #[arg(long)]
    pub wait: bool,
}
