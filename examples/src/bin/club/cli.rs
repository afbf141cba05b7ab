//! The command line of `club`: its commands, flags and arguments.

use clap::{Args, Parser, Subcommand};

mod batch;

pub use self::batch::{BatchCommand, SubmitArgs};

/// Use an Inference Club coordinator — or run a whole club on this machine with `club demo`.
#[derive(Debug, Parser)]
#[command(name = "club", version)]
pub struct Cli {
    /// The coordinator (default: the one `club login` signed in to, else http://127.0.0.1:8080).
    #[arg(long, global = true, env = "CLUB_URL")]
    pub url: Option<String>,
    /// The API key (default: the one `club login` saved).
    #[arg(long, global = true, env = "CLUB_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Print JSON instead of tables and text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands of `club`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Chat with a model; the answer streams as it arrives.
    Chat(ChatArgs),
    /// Continue a text (legacy completions); the text streams as it arrives.
    Complete(CompleteArgs),
    /// The embeddings of texts: their dimensions and first values (the whole answer with --json).
    Embed(EmbedArgs),
    /// Transcribe an audio file; the text goes to stdout.
    Transcribe(TranscribeArgs),
    /// Speak a text into an audio file.
    Speak(SpeakArgs),
    /// Generate images from a prompt into PNG files.
    Image(ImageArgs),
    /// The models you may use, with their capabilities.
    Models,
    /// Batches of requests run behind interactive traffic: submit, status, results, list,
    /// cancel.
    #[command(subcommand)]
    Batch(BatchCommand),
    /// Your requests: list, show, delete, change visibility.
    #[command(subcommand)]
    Requests(RequestsCommand),
    /// The public feed: everyone's public requests, newest first.
    Feed(FeedArgs),
    /// Providers: list their profiles, show one, what your nodes served.
    Providers {
        /// What to do (default: list).
        #[command(subcommand)]
        command: Option<ProvidersCommand>,
    },
    /// Your API keys: list, create, revoke.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Sign in with your browser (device flow) and save a key for this coordinator.
    Login(LoginArgs),
    /// Forget the key `club login` saved.
    Logout,
    /// Your account: show it, change settings, delete it.
    Account {
        /// What to do (default: show).
        #[command(subcommand)]
        command: Option<AccountCommand>,
    },
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

/// `club chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// The model.
    #[arg(short, long)]
    pub model: String,
    /// The prompt (read from stdin when absent).
    pub prompt: Vec<String>,
    /// A system message.
    #[arg(short, long)]
    pub system: Option<String>,
    /// Who may read this request: public (default), unlisted or private.
    #[arg(long)]
    pub visibility: Option<String>,
    /// Do not show the model's reasoning.
    #[arg(long)]
    pub hide_reasoning: bool,
    /// Caps the tokens generated.
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Seconds to wait for the first output (reasoning counts).
    #[arg(long, default_value_t = 300)]
    pub first_token_timeout: u64,
}

/// `club complete`.
#[derive(Debug, Args)]
pub struct CompleteArgs {
    /// The model.
    #[arg(short, long)]
    pub model: String,
    /// The text to continue (read from stdin when absent).
    pub prompt: Vec<String>,
    /// Who may read this request: public (default), unlisted or private.
    #[arg(long)]
    pub visibility: Option<String>,
    /// Caps the tokens generated.
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Seconds to wait for the first output.
    #[arg(long, default_value_t = 300)]
    pub first_token_timeout: u64,
}

/// `club embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// The model.
    #[arg(short, long)]
    pub model: String,
    /// The texts, one embedding each (one text read from stdin when absent).
    pub texts: Vec<String>,
    /// Who may read this request: public (default), unlisted or private.
    #[arg(long)]
    pub visibility: Option<String>,
    /// Ask for vectors of this many dimensions (models that can shorten theirs).
    #[arg(long)]
    pub dimensions: Option<u32>,
}

/// `club transcribe`.
#[derive(Debug, Args)]
pub struct TranscribeArgs {
    /// The model.
    #[arg(short, long)]
    pub model: String,
    /// The audio file.
    pub file: std::path::PathBuf,
    /// What to answer: json (default: the text), text, verbose_json, srt or vtt.
    #[arg(long)]
    pub format: Option<String>,
    /// The language spoken (ISO-639-1, such as en).
    #[arg(long)]
    pub language: Option<String>,
    /// Text to guide the transcription.
    #[arg(long)]
    pub prompt: Option<String>,
    /// Who may read this request: public (default), unlisted or private.
    #[arg(long)]
    pub visibility: Option<String>,
}

/// `club speak`.
#[derive(Debug, Args)]
pub struct SpeakArgs {
    /// The model.
    #[arg(short, long)]
    pub model: String,
    /// The text to speak (read from stdin when absent).
    pub text: Vec<String>,
    /// Where to write the audio (`-`: stdout).
    #[arg(short, long)]
    pub output: std::path::PathBuf,
    /// The voice.
    #[arg(long)]
    pub voice: Option<String>,
    /// The audio format: mp3, wav, opus, flac, aac or pcm (default: the output's extension).
    #[arg(long)]
    pub format: Option<String>,
    /// The speed, 0.25 to 4.
    #[arg(long)]
    pub speed: Option<f64>,
    /// Who may read this request: public (default), unlisted or private.
    #[arg(long)]
    pub visibility: Option<String>,
}

/// `club image`.
#[derive(Debug, Args)]
pub struct ImageArgs {
    /// The model.
    #[arg(short, long)]
    pub model: String,
    /// What to draw (read from stdin when absent).
    pub prompt: Vec<String>,
    /// Where to write the image (OUT-1.png, OUT-2.png, … when there are several).
    #[arg(short, long)]
    pub output: std::path::PathBuf,
    /// How many images.
    #[arg(short, default_value_t = 1)]
    pub n: u32,
    /// Their size, WIDTHxHEIGHT (such as 1024x1024).
    #[arg(long)]
    pub size: Option<String>,
    /// Who may read this request: public (default), unlisted or private.
    #[arg(long)]
    pub visibility: Option<String>,
}

/// Filters shared by listings.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only requests for this model.
    #[arg(long)]
    pub model: Option<String>,
    /// Only requests in this status (queued, running, succeeded, failed, cancelled).
    #[arg(long)]
    pub status: Option<String>,
    /// How many to show.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

/// `club requests …`.
#[derive(Debug, Subcommand)]
pub enum RequestsCommand {
    /// Your requests, newest first.
    List {
        /// Filters.
        #[command(flatten)]
        list: ListArgs,
        /// Only requests of this visibility.
        #[arg(long)]
        visibility: Option<String>,
    },
    /// One request: prompt, answer, timing, usage.
    Show {
        /// Its id (or completion id).
        id: String,
    },
    /// Delete one of your requests for good.
    Delete {
        /// Its id.
        id: String,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
    /// Change who may read one of your requests.
    Visibility {
        /// Its id.
        id: String,
        /// public, unlisted or private.
        visibility: String,
    },
}

/// `club feed`.
#[derive(Debug, Args)]
pub struct FeedArgs {
    /// Filters.
    #[command(flatten)]
    pub list: ListArgs,
}

/// `club providers …`.
#[derive(Debug, Subcommand)]
pub enum ProvidersCommand {
    /// Every provider's profile.
    List,
    /// One provider's profile (`OPERATOR/NAME`).
    Show {
        /// `OPERATOR/NAME`.
        provider: String,
    },
    /// What your provider's nodes served, any visibility (`OPERATOR/NAME`).
    Served {
        /// `OPERATOR/NAME`.
        provider: String,
        /// Filters.
        #[command(flatten)]
        list: ListArgs,
    },
    /// Change your provider's settings, where the coordinator supports it.
    Set {
        /// `OPERATOR/NAME`.
        provider: String,
        /// Whether it accepts new requests.
        #[arg(long)]
        accepting: Option<bool>,
    },
}

/// `club keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Your live keys (prefix only).
    List,
    /// Create a key; its secret is printed this once.
    Create {
        /// Its name.
        name: String,
        /// Its scopes, comma-separated: inference, provider, account.
        #[arg(long, default_value = "inference")]
        scopes: String,
    },
    /// Revoke a key at once.
    Revoke {
        /// Its id.
        id: String,
    },
}

/// `club login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The name of the key this device gets.
    #[arg(long)]
    pub key_name: Option<String>,
    /// Accept the terms (and confirm you are 18 or older) without being asked.
    #[arg(long)]
    pub accept_terms: bool,
}

/// `club account …`.
#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Your account and settings.
    Show,
    /// Change your settings.
    Set {
        /// The visibility of requests that name none: public, unlisted or private.
        #[arg(long)]
        default_visibility: Option<String>,
        /// Which nodes serve your requests: any, prefer_own or only_own.
        #[arg(long)]
        routing_preference: Option<String>,
    },
    /// Delete your account and everything of yours the club holds.
    Delete {
        /// Do not ask you to type your handle.
        #[arg(long, short)]
        yes: bool,
    },
}
