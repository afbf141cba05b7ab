//! What each `club` command does.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use inference_club_client::{
    AccountSettings, ChatEvent, ChatRequest, Client, ClientBuilder, Error, ProviderSettings,
    Record, RecordFilter, RoutingPreference, Status, Visibility,
};

mod account;
mod batch;
mod chat;
mod keys;
mod media;
mod providers;
mod records;
mod text;

use self::account::{account, login, logout};
use self::batch::batch;
use self::chat::{chat, models};
use self::keys::keys;
use self::media::{image, speak, transcribe};
use self::providers::providers;
use self::records::{feed, print_records, requests, take_records};
use self::text::{complete, embed};
use crate::cli::{
    AccountCommand, ChatArgs, Cli, Command, CompleteArgs, EmbedArgs, ImageArgs, KeysCommand,
    ListArgs, LoginArgs, ProvidersCommand, RequestsCommand, SpeakArgs, TranscribeArgs,
};
use crate::config::{self, SavedLogin};
use crate::demo::{self, DemoOptions};
use crate::output::{Ui, printable, snippet, table, when};

/// The longest prompt read from stdin: the coordinator's default body limit.
const MAX_STDIN_BYTES: u64 = 4 * 1024 * 1024;

/// The coordinator and key a command uses.
struct Target {
    url: String,
    api_key: Option<String>,
    /// The key came from the saved sign-in.
    saved_key: bool,
    /// A saved sign-in exists for another coordinator.
    saved_elsewhere: Option<String>,
    dir: Option<PathBuf>,
}

impl Target {
    fn resolve(cli: &Cli) -> Result<Self, String> {
        let dir = config::config_dir();
        let saved = match &dir {
            Some(dir) => config::load(dir)?,
            None => SavedLogin::default(),
        };
        let flag = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let url = flag(&cli.url)
            .or_else(|| saved.url.clone())
            .unwrap_or_else(|| inference_club_client::DEFAULT_URL.into());
        let mut target = Self {
            api_key: flag(&cli.api_key),
            saved_key: false,
            saved_elsewhere: None,
            url,
            dir,
        };
        if target.api_key.is_none()
            && let (Some(saved_url), Some(key)) = (&saved.url, &saved.api_key)
        {
            // A saved key goes only to the coordinator that issued it.
            if config::same_coordinator(saved_url, &target.url) {
                target.api_key = Some(key.clone());
                target.saved_key = true;
            } else {
                target.saved_elsewhere = Some(saved_url.clone());
            }
        }
        Ok(target)
    }

    fn builder(&self) -> ClientBuilder {
        let mut builder = Client::builder(self.url.clone())
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("club/", env!("CARGO_PKG_VERSION")));
        if let Some(key) = &self.api_key {
            builder = builder.api_key(key.clone());
        }
        builder
    }

    fn client(&self) -> Result<Client, String> {
        self.builder()
            .request_timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| e.to_string())
    }

    /// The message of a failed call, with a hint where one helps.
    fn explain(&self, error: &Error) -> String {
        let mut message = error.message();
        if let Some(code) = error.code() {
            message.push_str(&format!(" ({code})"));
        }
        match error.status() {
            Some(401) if self.api_key.is_none() => {
                message.push_str(
                    "\nhint: sign in with `club login`, or pass --api-key / set CLUB_API_KEY",
                );
                if let Some(other) = &self.saved_elsewhere {
                    message.push_str(&format!(
                        " (your saved sign-in is for {other}; pass --url {other} to use it)"
                    ));
                }
            }
            Some(401) if self.saved_key => {
                message.push_str("\nhint: the saved key no longer works; run `club login` again");
            }
            None if matches!(error, Error::Transport { .. }) => {
                message.push_str(&format!(
                    "\nhint: is a coordinator running at {}? (--url or CLUB_URL)",
                    self.url
                ));
            }
            _ => {}
        }
        message
    }
}

/// Runs one command.
pub async fn run(cli: Cli, ui: Ui) -> Result<(), String> {
    if let Command::Demo {
        listen,
        database,
        prompt,
        once,
    } = cli.command
    {
        let mut out = std::io::stdout();
        return demo::run(
            DemoOptions {
                listen,
                database,
                prompt,
                once,
                styled: ui.styled_stdout,
            },
            &mut out,
        )
        .await;
    }
    let target = Target::resolve(&cli)?;
    let result = match cli.command {
        Command::Chat(args) => chat(&target, ui, args).await,
        Command::Complete(args) => complete(&target, ui, args).await,
        Command::Embed(args) => embed(&target, ui, args).await,
        Command::Transcribe(args) => transcribe(&target, ui, args).await,
        Command::Speak(args) => speak(&target, ui, args).await,
        Command::Image(args) => image(&target, ui, args).await,
        Command::Models => models(&target, ui).await,
        Command::Batch(command) => batch(&target, ui, command).await,
        Command::Requests(command) => requests(&target, ui, command).await,
        Command::Feed(args) => feed(&target, ui, args.list).await,
        Command::Providers { command } => {
            providers(&target, ui, command.unwrap_or(ProvidersCommand::List)).await
        }
        Command::Keys(command) => keys(&target, ui, command).await,
        Command::Login(args) => return login(&target, ui, args).await,
        Command::Logout => return logout(&target),
        Command::Account { command } => {
            account(&target, ui, command.unwrap_or(AccountCommand::Show)).await
        }
        Command::Demo { .. } => Ok(()),
    };
    result.map_err(|e| match e {
        Failure::Api(error) => target.explain(&error),
        Failure::Message(message) => message,
    })
}

/// A failed command: a client error (explained with hints) or a message.
enum Failure {
    Api(Error),
    Message(String),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self::Api(error)
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self::Message(message)
    }
}

type Outcome = Result<(), Failure>;

/// The words given joined by spaces, else what stdin holds (`what` names it in errors); never
/// blank.
fn text_or_stdin(words: &[String], what: &str) -> Result<String, String> {
    let text = if words.is_empty() {
        if std::io::stdin().is_terminal() {
            eprintln!("(type your {what}, then Ctrl-D)");
        }
        let mut text = String::new();
        std::io::stdin()
            .lock()
            .take(MAX_STDIN_BYTES)
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read the {what} from stdin: {e}"))?;
        text
    } else {
        words.join(" ")
    };
    if text.trim().is_empty() {
        return Err(format!("no {what}: give one as an argument or on stdin"));
    }
    Ok(text)
}

/// Once per configuration: requests are public unless one says otherwise.
fn public_notice(target: &Target) {
    if config::first_notice(target.dir.as_deref()) {
        eprintln!(
            "Note: requests are public by default — anyone can read the prompt and the answer in \
             the club's public feed. Use --visibility unlisted|private for one request, or \
             `club account set --default-visibility private` for all of yours. (Shown once.)"
        );
    }
}

/// Prints on stderr `record: ID (VISIBILITY)` and what follows it (` · 12 prompt tokens`).
fn print_record(record_id: Option<&str>, visibility: Option<&str>, detail: &str) {
    let visibility = visibility.unwrap_or("your default visibility");
    eprintln!(
        "record: {} ({visibility}){detail}",
        record_id.unwrap_or_default()
    );
}

/// The visibility flag, parsed.
fn visibility_flag(flag: Option<&str>) -> Result<Option<Visibility>, String> {
    flag.map(parse_visibility).transpose()
}

fn parse_visibility(text: &str) -> Result<Visibility, String> {
    match text {
        "public" => Ok(Visibility::Public),
        "unlisted" => Ok(Visibility::Unlisted),
        "private" => Ok(Visibility::Private),
        other => Err(format!(
            "visibility must be public, unlisted or private, got {other:?}"
        )),
    }
}

fn parse_status(text: &str) -> Result<Status, String> {
    text.parse::<Status>().map_err(|_| {
        format!("status must be queued, running, succeeded, failed or cancelled, got {text:?}")
    })
}

fn filter(list: &ListArgs) -> Result<RecordFilter, String> {
    let mut filter = RecordFilter::new().limit(list.limit.clamp(1, 100) as u32);
    if let Some(model) = &list.model {
        filter = filter.model(model.clone());
    }
    if let Some(status) = &list.status {
        filter = filter.status(parse_status(status)?);
    }
    Ok(filter)
}

/// Asks a yes/no question on stderr and reads the answer from stdin (no answer is no).
fn confirm(question: &str) -> bool {
    answer(&format!("{question} [y/N] "))
        .is_some_and(|a| matches!(a.to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// Asks on stderr and reads one line from stdin.
fn answer(question: &str) -> Option<String> {
    let mut err = std::io::stderr();
    let _ = write!(err, "{question}");
    let _ = err.flush();
    let mut line = String::new();
    let mut input = std::io::stdin().lock().take(4096);
    match input.read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim().to_owned()),
    }
}
