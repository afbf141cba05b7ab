use super::*;

/// Up to `limit` records of a paginated listing.
pub(super) async fn take_records(
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

pub(super) fn print_records(ui: Ui, records: &[Record], empty: &str) -> Outcome {
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

pub(super) fn print_record(ui: Ui, record: &Record) -> Outcome {
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

pub(super) async fn requests(target: &Target, ui: Ui, command: RequestsCommand) -> Outcome {
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

pub(super) async fn feed(target: &Target, ui: Ui, list: ListArgs) -> Outcome {
    let client = target.client()?;
    let records = take_records(client.public_feed(filter(&list)?), list.limit).await?;
    print_records(ui, &records, "The public feed is empty.")
}
