use super::*;

pub(super) async fn chat(target: &Target, ui: Ui, args: ChatArgs) -> Outcome {
    let prompt = text_or_stdin(&args.prompt, "prompt")?;
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
    public_notice(target);
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
        let detail = usage.map_or_else(String::new, |usage| {
            format!(
                " · {} prompt + {} completion tokens",
                usage.prompt_tokens, usage.completion_tokens
            )
        });
        print_record(record_id.as_deref(), args.visibility.as_deref(), &detail);
    }
    Ok(())
}

pub(super) async fn models(target: &Target, ui: Ui) -> Outcome {
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
