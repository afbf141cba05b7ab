//! What each `club` command does.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use inference_club_client::{
    AccountSettings, ChatEvent, ChatRequest, Client, ClientBuilder, Error, ProviderSettings,
    Record, RecordFilter, RoutingPreference, Status, Visibility,
};

use super::config::{self, SavedLogin};
use super::output::{Ui, printable, snippet, table, when};
use super::{
    AccountCommand, ChatArgs, Cli, Command, KeysCommand, ListArgs, LoginArgs, ProvidersCommand,
    RequestsCommand,
};
use crate::demo::{self, DemoOptions};

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
            None if matches!(error, Error::Transport(_)) => {
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
            },
            &mut out,
        )
        .await;
    }
    let target = Target::resolve(&cli)?;
    let result = match cli.command {
        Command::Chat(args) => chat(&target, ui, args).await,
        Command::Models => models(&target, ui).await,
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

async fn chat(target: &Target, ui: Ui, args: ChatArgs) -> Outcome {
    let prompt = if args.prompt.is_empty() {
        if std::io::stdin().is_terminal() {
            eprintln!("(type your prompt, then Ctrl-D)");
        }
        let mut text = String::new();
        std::io::stdin()
            .lock()
            .take(MAX_STDIN_BYTES)
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read the prompt from stdin: {e}"))?;
        text
    } else {
        args.prompt.join(" ")
    };
    if prompt.trim().is_empty() {
        return Err("no prompt: give one as an argument or on stdin"
            .to_owned()
            .into());
    }
    let mut request = ChatRequest::new(args.model.clone());
    if let Some(system) = &args.system {
        request = request.system(system.clone());
    }
    request = request.user(prompt);
    if let Some(visibility) = &args.visibility {
        request = request.visibility(parse_visibility(visibility)?);
    }
    if let Some(max) = args.max_tokens {
        request = request.max_tokens(max);
    }
    if config::first_notice(target.dir.as_deref()) {
        eprintln!(
            "Note: requests are public by default — anyone can read the prompt and the answer in \
             the club's public feed. Use --visibility unlisted|private for one request, or \
             `club account set --default-visibility private` for all of yours. (Shown once.)"
        );
    }
    let client = target
        .builder()
        .first_token_timeout(Duration::from_secs(args.first_token_timeout.max(1)))
        .idle_timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| e.to_string())?;
    let stream = client.chat_stream(request).await?;
    if ui.json {
        let whole = stream.collect_completion().await?;
        return ui
            .print_json(&serde_json::json!({
                "record_id": whole.record_id,
                "completion": whole.completion,
            }))
            .map_err(Failure::from);
    }
    // The answer goes to stdout; reasoning too on a terminal (dimmed), else to stderr so that
    // a pipe gets the answer alone.
    let reasoning_on_stdout = std::io::stdout().is_terminal();
    let dim = if reasoning_on_stdout {
        ui.styled_stdout
    } else {
        ui.styled_stderr
    };
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let mut events = stream.events();
    let mut in_reasoning = false;
    let mut ended_with_newline = true;
    let mut summary = None;
    let mut failure = None;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                failure = Some(error);
                break;
            }
        };
        match event {
            ChatEvent::Reasoning(text) if !args.hide_reasoning => {
                let sink: &mut dyn Write = if reasoning_on_stdout {
                    &mut out
                } else {
                    &mut err
                };
                if !in_reasoning {
                    in_reasoning = true;
                    let _ = write!(sink, "{}", if dim { "\x1b[2m" } else { "" });
                }
                let _ = write!(sink, "{}", printable(&text));
                let _ = sink.flush();
            }
            ChatEvent::Content(text) | ChatEvent::Refusal(text) => {
                if in_reasoning {
                    in_reasoning = false;
                    let sink: &mut dyn Write = if reasoning_on_stdout {
                        &mut out
                    } else {
                        &mut err
                    };
                    let _ = writeln!(sink, "{}", if dim { "\x1b[0m" } else { "" });
                }
                let text = printable(&text);
                ended_with_newline = text.ends_with('\n');
                let _ = write!(out, "{text}");
                let _ = out.flush();
            }
            ChatEvent::ToolCall(call) => {
                if let Some(function) = &call.function
                    && let Some(name) = &function.name
                {
                    let _ = writeln!(err, "[tool call: {}]", printable(name));
                }
            }
            ChatEvent::Done { record_id, usage } => summary = Some((record_id, usage)),
            _ => {}
        }
    }
    if in_reasoning && dim {
        let sink: &mut dyn Write = if reasoning_on_stdout {
            &mut out
        } else {
            &mut err
        };
        let _ = write!(sink, "\x1b[0m");
    }
    if !ended_with_newline {
        let _ = writeln!(out);
    }
    let record_id = events.record_id();
    if let Some(error) = failure {
        if let Some(id) = record_id {
            let _ = writeln!(err, "record: {id}");
        }
        return Err(error.into());
    }
    if let Some((record_id, usage)) = summary {
        let visibility = args
            .visibility
            .as_deref()
            .unwrap_or("your default visibility");
        let mut line = format!("record: {} ({visibility})", record_id.unwrap_or_default());
        if let Some(usage) = usage {
            line.push_str(&format!(
                " · {} prompt + {} completion tokens",
                usage.prompt_tokens, usage.completion_tokens
            ));
        }
        let _ = writeln!(err, "{line}");
    }
    Ok(())
}

async fn models(target: &Target, ui: Ui) -> Outcome {
    let models = target.client()?.models().await?;
    if ui.json {
        return ui.print_list(&models).map_err(Failure::from);
    }
    if models.is_empty() {
        println!(
            "No models available to you{}.",
            if target.api_key.is_none() {
                " (anonymous callers see none: sign in with `club login`)"
            } else {
                " right now"
            }
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = models
        .iter()
        .map(|m| {
            vec![
                printable(&m.id),
                printable(&m.owned_by),
                m.context_length.map(|c| c.to_string()).unwrap_or_default(),
                printable(&m.features.join(",")),
                m.nodes.map(|n| n.to_string()).unwrap_or_default(),
            ]
        })
        .collect();
    table(&["MODEL", "OWNER", "CONTEXT", "FEATURES", "NODES"], &rows).map_err(Failure::from)
}

/// Up to `limit` records of a paginated listing.
async fn take_records(
    mut stream: inference_club_client::Paginated<Record>,
    limit: usize,
) -> Result<Vec<Record>, Error> {
    let mut records = Vec::new();
    while records.len() < limit {
        match stream.next().await {
            Some(record) => records.push(record?),
            None => break,
        }
    }
    Ok(records)
}

fn print_records(ui: Ui, records: &[Record], empty: &str) -> Outcome {
    if ui.json {
        return ui.print_list(records).map_err(Failure::from);
    }
    if records.is_empty() {
        println!("{empty}");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                when(&r.timing.received_at),
                printable(r.consumer.as_deref().unwrap_or("-")),
                snippet(&r.model_requested, 30),
                r.status.as_str().to_owned(),
                r.visibility.as_str().to_owned(),
                snippet(&r.prompt().unwrap_or_default(), 50),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "RECEIVED (UTC)",
            "BY",
            "MODEL",
            "STATUS",
            "VISIBILITY",
            "PROMPT",
        ],
        &rows,
    )
    .map_err(Failure::from)
}

fn print_record(ui: Ui, record: &Record) -> Outcome {
    if ui.json {
        return ui.print_json(record).map_err(Failure::from);
    }
    let mut lines = vec![
        format!("id              {}", record.id),
        format!("status          {}", record.status.as_str()),
        format!("visibility      {}", record.visibility.as_str()),
        format!(
            "by              {}",
            printable(record.consumer.as_deref().unwrap_or("-"))
        ),
        format!("model           {}", printable(&record.model_requested)),
    ];
    if let Some(provider) = &record.provider {
        lines.push(format!(
            "served by       {}",
            printable(&provider.to_string())
        ));
    }
    lines.push(format!(
        "received        {} UTC",
        when(&record.timing.received_at)
    ));
    if let Some(ms) = record.timing.latency_ms {
        lines.push(format!("latency         {ms} ms"));
    }
    if let Some(ms) = record.timing.time_to_first_token_ms {
        lines.push(format!("first token     {ms} ms"));
    }
    if let (Some(p), Some(c)) = (record.usage.prompt_tokens, record.usage.completion_tokens) {
        lines.push(format!("tokens          {p} prompt + {c} completion"));
    }
    if let Some(failure) = &record.failure {
        lines.push(format!("failure         {}", printable(failure)));
    }
    for message in &record.request.messages {
        lines.push(format!(
            "\n[{}]\n{}",
            serde_json::to_value(message.role)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            printable(&message.text_content().unwrap_or_default())
        ));
    }
    if let Some(reasoning) = &record.response.reasoning {
        lines.push(format!("\n[reasoning]\n{}", printable(reasoning)));
    }
    if let Some(content) = &record.response.content {
        lines.push(format!("\n[answer]\n{}", printable(content)));
    }
    println!("{}", lines.join("\n"));
    Ok(())
}

async fn requests(target: &Target, ui: Ui, command: RequestsCommand) -> Outcome {
    let client = target.client()?;
    match command {
        RequestsCommand::List { list, visibility } => {
            let mut filter = filter(&list)?;
            if let Some(visibility) = &visibility {
                filter = filter.visibility(parse_visibility(visibility)?);
            }
            let records = take_records(client.my_requests(filter), list.limit).await?;
            print_records(ui, &records, "You have no requests yet.")
        }
        RequestsCommand::Show { id } => print_record(ui, &client.record(&id).await?),
        RequestsCommand::Delete { id, yes } => {
            if !yes && !confirm(&format!("Delete request {id} for good?")) {
                return Err(
                    "not confirmed; nothing was deleted (--yes skips the question)"
                        .to_owned()
                        .into(),
                );
            }
            client.delete_record(&id).await?;
            if ui.json {
                return ui
                    .print_json(&serde_json::json!({ "id": id, "deleted": true }))
                    .map_err(Failure::from);
            }
            println!("Deleted request {id}.");
            Ok(())
        }
        RequestsCommand::Visibility { id, visibility } => {
            let record = client
                .set_visibility(&id, parse_visibility(&visibility)?)
                .await?;
            if ui.json {
                return ui.print_json(&record).map_err(Failure::from);
            }
            println!(
                "Request {} is now {}.",
                record.id,
                record.visibility.as_str()
            );
            Ok(())
        }
    }
}

async fn feed(target: &Target, ui: Ui, list: ListArgs) -> Outcome {
    let client = target.client()?;
    let records = take_records(client.public_feed(filter(&list)?), list.limit).await?;
    print_records(ui, &records, "The public feed is empty.")
}

fn split_provider(text: &str) -> Result<(&str, &str), String> {
    text.split_once('/')
        .filter(|(o, n)| !o.is_empty() && !n.is_empty())
        .ok_or_else(|| format!("a provider is OPERATOR/NAME, got {text:?}"))
}

async fn providers(target: &Target, ui: Ui, command: ProvidersCommand) -> Outcome {
    let client = target.client()?;
    match command {
        ProvidersCommand::List => {
            let providers = client.providers().await?;
            if ui.json {
                return ui.print_list(&providers).map_err(Failure::from);
            }
            if providers.is_empty() {
                println!("No providers yet.");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = providers
                .iter()
                .map(|p| {
                    vec![
                        printable(&format!("{}/{}", p.operator, p.name)),
                        if p.online { "online" } else { "offline" }.to_owned(),
                        p.counts.in_flight.to_string(),
                        snippet(
                            &p.models
                                .iter()
                                .map(|m| m.id.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                            60,
                        ),
                    ]
                })
                .collect();
            table(&["PROVIDER", "STATE", "IN FLIGHT", "MODELS"], &rows).map_err(Failure::from)
        }
        ProvidersCommand::Show { provider } => {
            let (operator, name) = split_provider(&provider)?;
            let profile = client.provider(operator, name).await?;
            if ui.json {
                return ui.print_json(&profile).map_err(Failure::from);
            }
            println!(
                "provider        {}/{}",
                printable(&profile.operator),
                printable(&profile.name)
            );
            println!(
                "state           {}",
                if profile.online { "online" } else { "offline" }
            );
            if let Some(seen) = &profile.last_seen {
                println!("last seen       {} UTC", when(seen));
            }
            if let Some(served) = profile.counts.requests_served {
                let plus = if profile.counts.requests_served_exact == Some(false) {
                    "+"
                } else {
                    ""
                };
                println!("served          {served}{plus} requests");
            }
            for model in &profile.models {
                println!(
                    "model           {} ({})",
                    printable(&model.id),
                    printable(model.service.as_deref().unwrap_or("-"))
                );
            }
            Ok(())
        }
        ProvidersCommand::Served { provider, list } => {
            let (operator, name) = split_provider(&provider)?;
            let records = take_records(
                client.provider_requests(operator, name, filter(&list)?),
                list.limit,
            )
            .await?;
            print_records(ui, &records, "Your nodes have served no requests yet.")
        }
        ProvidersCommand::Set {
            provider,
            accepting,
        } => {
            let (operator, name) = split_provider(&provider)?;
            if accepting.is_none() {
                return Err("nothing to change: pass --accepting true|false"
                    .to_owned()
                    .into());
            }
            let settings = ProviderSettings {
                accepting,
                access: None,
            };
            let profile = client.update_provider(operator, name, &settings).await?;
            if ui.json {
                return ui.print_json(&profile).map_err(Failure::from);
            }
            println!(
                "Updated {}/{}.",
                printable(&profile.operator),
                printable(&profile.name)
            );
            Ok(())
        }
    }
}

async fn keys(target: &Target, ui: Ui, command: KeysCommand) -> Outcome {
    let client = target.client()?;
    match command {
        KeysCommand::List => {
            let keys = client.keys().await?;
            if ui.json {
                return ui.print_list(&keys).map_err(Failure::from);
            }
            let rows: Vec<Vec<String>> = keys
                .iter()
                .map(|k| {
                    vec![
                        k.id.clone(),
                        printable(&k.name),
                        printable(&format!("{}…", k.prefix)),
                        k.scopes.join(","),
                        when(&k.created_at),
                        k.last_used_at
                            .as_ref()
                            .map(when)
                            .unwrap_or_else(|| "never".into()),
                    ]
                })
                .collect();
            table(
                &[
                    "ID",
                    "NAME",
                    "PREFIX",
                    "SCOPES",
                    "CREATED (UTC)",
                    "LAST USED",
                ],
                &rows,
            )
            .map_err(Failure::from)
        }
        KeysCommand::Create { name, scopes } => {
            let scopes: Vec<&str> = scopes
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            let created = client.create_key(&name, &scopes).await?;
            if ui.json {
                return ui.print_json(&created).map_err(Failure::from);
            }
            println!("{}", created.secret);
            eprintln!(
                "Created key {} ({}) with scopes {}. The secret above is shown this once: keep it safe.",
                created.key.id,
                printable(&created.key.name),
                created.key.scopes.join(",")
            );
            Ok(())
        }
        KeysCommand::Revoke { id } => {
            client.revoke_key(&id).await?;
            if ui.json {
                return ui
                    .print_json(&serde_json::json!({ "id": id, "revoked": true }))
                    .map_err(Failure::from);
            }
            println!("Revoked key {id}.");
            Ok(())
        }
    }
}

async fn login(target: &Target, ui: Ui, args: LoginArgs) -> Result<(), String> {
    let dir = target.dir.clone().ok_or(
        "no config directory to save the key in: set CLUB_CONFIG_DIR (or HOME)".to_owned(),
    )?;
    // Sign-in needs no key; none is sent.
    let client = Client::builder(target.url.clone())
        .user_agent(concat!("club/", env!("CARGO_PKG_VERSION")))
        .request_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    let explain = |error: Error| -> String {
        match error.code() {
            Some("sign_in_unavailable") => format!(
                "sign-in is not available on {}: {}\nhint: ask its operator for an API key and pass it with --api-key or CLUB_API_KEY",
                target.url,
                error.message()
            ),
            Some("expired_token") => {
                format!("{} — run `club login` again", error.message())
            }
            Some("access_denied") => format!("sign-in was refused: {}", error.message()),
            _ if error.status() == Some(404) => format!(
                "{} does not offer sign-in ({})\nhint: pass a key with --api-key or CLUB_API_KEY",
                target.url,
                error.message()
            ),
            _ => target.explain(&error),
        }
    };
    let authorization = client.start_device_login().await.map_err(explain)?;
    let mut err = std::io::stderr();
    let _ = writeln!(
        err,
        "Open {} and enter the code {}\nWaiting for you to sign in…",
        printable(&authorization.verification_uri),
        printable(&authorization.user_code)
    );
    let key_name = args.key_name.as_deref();
    let mut accept = args.accept_terms;
    let token = loop {
        match client
            .wait_for_device_token(&authorization, accept, key_name)
            .await
        {
            Ok(token) => break token,
            Err(error) if error.code() == Some("terms_required") && !accept => {
                let _ = writeln!(err, "{}", printable(&error.message()));
                if !confirm("Are you 18 or older and do you accept the terms?") {
                    return Err("sign-in cancelled: the terms were not accepted".into());
                }
                accept = true;
            }
            Err(error) => return Err(explain(error)),
        }
    };
    let saved = SavedLogin {
        url: Some(target.url.clone()),
        api_key: Some(token.key.clone()),
        key_id: token.key_id.clone(),
        handle: token.handle.clone(),
    };
    let path = config::save(&dir, &saved)?;
    if ui.json {
        return ui.print_json(&serde_json::json!({
            "handle": token.handle,
            "key_id": token.key_id,
            "scopes": token.scopes,
            "url": target.url,
            "config": path,
        }));
    }
    println!(
        "Signed in{} to {}. The key is saved in {}.",
        token
            .handle
            .as_deref()
            .map(|h| format!(" as {}", printable(h)))
            .unwrap_or_default(),
        target.url,
        path.display()
    );
    Ok(())
}

fn logout(target: &Target) -> Result<(), String> {
    let Some(dir) = &target.dir else {
        println!("Not signed in.");
        return Ok(());
    };
    let saved = config::load(dir).unwrap_or_default();
    if config::forget(dir)? {
        println!(
            "Forgot the saved key{}.",
            saved
                .url
                .as_deref()
                .map(|u| format!(" for {u}"))
                .unwrap_or_default()
        );
        if let Some(id) = saved.key_id {
            println!("It stays valid on the coordinator until revoked: club keys revoke {id}");
        }
    } else {
        println!("Not signed in.");
    }
    Ok(())
}

async fn account(target: &Target, ui: Ui, command: AccountCommand) -> Outcome {
    let client = target.client()?;
    match command {
        AccountCommand::Show => {
            let me = client.account().await?;
            if ui.json {
                return ui.print_json(&me).map_err(Failure::from);
            }
            println!("handle              {}", printable(&me.handle));
            if let Some(email) = &me.email {
                println!("email               {}", printable(email));
            }
            println!("member since        {} UTC", when(&me.created_at));
            println!("default visibility  {}", me.default_visibility.as_str());
            if let Some(routing) = me.routing_preference {
                println!("routing preference  {}", routing.as_str());
            }
            if let Some(at) = &me.terms_accepted_at {
                println!("terms accepted      {} UTC", when(at));
            }
            Ok(())
        }
        AccountCommand::Set {
            default_visibility,
            routing_preference,
        } => {
            let settings = AccountSettings {
                default_visibility: default_visibility
                    .as_deref()
                    .map(parse_visibility)
                    .transpose()?,
                routing_preference: routing_preference
                    .as_deref()
                    .map(str::parse::<RoutingPreference>)
                    .transpose()?,
            };
            if settings == AccountSettings::default() {
                return Err(
                    "nothing to change: pass --default-visibility and/or --routing-preference"
                        .to_owned()
                        .into(),
                );
            }
            let me = client.update_account(&settings).await?;
            if ui.json {
                return ui.print_json(&me).map_err(Failure::from);
            }
            println!(
                "Saved. Your requests are now {} unless a request says otherwise.",
                me.default_visibility.as_str()
            );
            Ok(())
        }
        AccountCommand::Delete { yes } => {
            let me = client.account().await?;
            if !yes {
                eprintln!(
                    "This deletes your account {}, its keys, every request you made (any visibility) and your providers. It cannot be undone.",
                    printable(&me.handle)
                );
                let typed = answer(&format!(
                    "Type your handle ({}) to confirm: ",
                    printable(&me.handle)
                ));
                if typed.as_deref() != Some(me.handle.as_str()) {
                    return Err("not confirmed; nothing was deleted".to_owned().into());
                }
            }
            let deleted = client.delete_account().await?;
            if target.saved_key
                && let Some(dir) = &target.dir
            {
                let _ = config::forget(dir);
            }
            if ui.json {
                return ui.print_json(&deleted).map_err(Failure::from);
            }
            println!("Deleted the account {}.", printable(&deleted.handle));
            for removed in &deleted.removed {
                println!("  removed: {}", printable(removed));
            }
            if let Some(not_reached) = &deleted.not_reached {
                println!("Not reached: {}", printable(not_reached));
            }
            Ok(())
        }
    }
}
