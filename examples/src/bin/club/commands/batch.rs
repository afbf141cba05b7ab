//! `club batch`: submit a JSONL file as a batch, follow it, fetch its results, list, cancel.

use inference_club_client::{Batch, BatchEndpoint, CreateBatch, RequestCounts};

use super::*;
use crate::cli::{BatchCommand, SubmitArgs};

/// How often a followed batch is polled.
const POLL: Duration = Duration::from_millis(500);
/// The width of the progress bar, in cells.
const BAR_CELLS: usize = 30;

pub(super) async fn batch(target: &Target, ui: Ui, command: BatchCommand) -> Outcome {
    let client = target.client()?;
    match command {
        BatchCommand::Submit(args) => submit(&client, ui, args).await,
        BatchCommand::Status { id, wait } => {
            if !wait {
                let batch = client.batch(&id).await?;
                return show(ui, &batch).map_err(Failure::from);
            }
            let mut out = std::io::stdout();
            let terminal = out.is_terminal() && !ui.json;
            let batch = follow(&client, &id, &mut out, terminal, ui.json).await?;
            show(ui, &batch).map_err(Failure::from)
        }
        BatchCommand::Results { id, output, errors } => results(&client, &id, output, errors).await,
        BatchCommand::List { limit } => list(&client, ui, limit).await,
        BatchCommand::Cancel { id } => {
            let batch = client.cancel_batch(&id).await?;
            if ui.json {
                return ui.print_json(&batch).map_err(Failure::from);
            }
            println!("{} {} ({})", batch.id, batch.status, progress_text(&batch));
            Ok(())
        }
    }
}

async fn submit(client: &Client, ui: Ui, args: SubmitArgs) -> Outcome {
    let endpoint: BatchEndpoint = args.endpoint.parse::<BatchEndpoint>()?;
    let mut request = CreateBatch::new(String::new(), endpoint);
    for pair in &args.metadata {
        let (key, value) = pair
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| format!("--metadata takes KEY=VALUE, got {pair:?}"))?;
        request = request.metadata(key.trim(), value);
    }
    if let Some(visibility) = visibility_flag(args.visibility.as_deref())? {
        request = request.visibility(visibility);
    }
    let data = std::fs::read(&args.file)
        .map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
    let name = args
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "input.jsonl".into());
    let file = client.upload_file(&name, data).await?;
    eprintln!(
        "uploaded {} as {} ({} bytes)",
        printable(&name),
        file.id,
        file.bytes
    );
    request.input_file_id = file.id;
    let batch = client.create_batch(request).await?;
    eprintln!(
        "batch {} {}: {} lines on {}",
        batch.id, batch.status, batch.request_counts.total, batch.endpoint
    );
    let batch = if args.wait {
        let mut err = std::io::stderr();
        let terminal = err.is_terminal();
        follow(client, &batch.id, &mut err, terminal, false).await?
    } else {
        batch
    };
    if ui.json {
        return ui.print_json(&batch).map_err(Failure::from);
    }
    println!("{}", batch.id);
    Ok(())
}

/// Follows batch `id` until it ends, drawing its progress on `out` (a bar redrawn in place on a
/// terminal, a line per change otherwise; nothing with `quiet`); answers it as it ended.
async fn follow(
    client: &Client,
    id: &str,
    out: &mut dyn Write,
    terminal: bool,
    quiet: bool,
) -> Result<Batch, Failure> {
    let mut watch = client.watch_batch(id, POLL);
    let mut last = None;
    while let Some(batch) = watch.next().await {
        let batch = batch?;
        if !quiet {
            let line = if terminal {
                format!("\r\x1b[2K{}", progress_bar(&batch, BAR_CELLS))
            } else {
                format!("{} {} {}\n", batch.id, batch.status, progress_text(&batch))
            };
            let _ = out.write_all(line.as_bytes());
            let _ = out.flush();
        }
        last = Some(batch);
    }
    if terminal && !quiet {
        let _ = writeln!(out);
    }
    last.ok_or_else(|| Failure::Message(format!("batch {id} could not be read")))
}

/// `[#######-------]  7/14 answered (1 failed) · in_progress`.
fn progress_bar(batch: &Batch, cells: usize) -> String {
    let counts = batch.request_counts;
    let filled = ((counts.fraction() * cells as f64).round() as usize).min(cells);
    format!(
        "[{}{}] {} · {}",
        "#".repeat(filled),
        "-".repeat(cells - filled),
        counts_text(counts),
        batch.status
    )
}

/// `7/14 answered (1 failed)`.
fn counts_text(counts: RequestCounts) -> String {
    let mut text = format!("{}/{} answered", counts.done(), counts.total);
    if counts.failed > 0 {
        text.push_str(&format!(" ({} failed)", counts.failed));
    }
    text
}

fn progress_text(batch: &Batch) -> String {
    counts_text(batch.request_counts)
}

/// A Unix time in seconds, to the second in UTC.
fn at(seconds: Option<i64>) -> String {
    seconds
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map(|t| when(&t))
        .unwrap_or_else(|| "-".into())
}

/// One batch, for people or as JSON.
fn show(ui: Ui, batch: &Batch) -> Result<(), String> {
    if ui.json {
        return ui.print_json(batch);
    }
    let mut out = std::io::stdout().lock();
    let mut lines = vec![
        format!("batch     {}", batch.id),
        format!("status    {}", batch.status),
        format!("endpoint  {}", batch.endpoint),
        format!("progress  {}", progress_text(batch)),
        format!("created   {} UTC", at(Some(batch.created_at))),
    ];
    let ended = [
        batch.completed_at,
        batch.cancelled_at,
        batch.expired_at,
        batch.failed_at,
    ]
    .into_iter()
    .flatten()
    .next();
    if ended.is_some() {
        lines.push(format!("ended     {} UTC", at(ended)));
    } else {
        lines.push(format!("expires   {} UTC", at(batch.expires_at)));
    }
    for (label, file) in [
        ("output", &batch.output_file_id),
        ("errors", &batch.error_file_id),
    ] {
        if let Some(file) = file {
            lines.push(format!("{label:<9} {file}"));
        }
    }
    if let Some(metadata) = batch.metadata.as_ref().filter(|m| !m.is_empty()) {
        let pairs: Vec<String> = metadata
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        lines.push(format!("metadata  {}", printable(&pairs.join(", "))));
    }
    for line in lines {
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn results(client: &Client, id: &str, output: Option<PathBuf>, errors: bool) -> Outcome {
    let batch = client.batch(id).await?;
    if !batch.status.is_terminal() {
        return Err(Failure::Message(format!(
            "batch {id} is {}: its files are written when it ends (`club batch status {id} --wait`)",
            batch.status
        )));
    }
    let (file, what) = if errors {
        (&batch.error_file_id, "error")
    } else {
        (&batch.output_file_id, "output")
    };
    let data = match file {
        Some(file) => client.file_content(file).await?,
        None => Default::default(),
    };
    let lines = data
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    match &output {
        Some(path) => std::fs::write(path, &data)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&data)
                .and_then(|()| out.flush())
                .map_err(|e| e.to_string())?;
        }
    }
    let counts = batch.request_counts;
    let mut note = format!(
        "{lines} {what} lines{} · batch {} {}",
        output
            .as_ref()
            .map(|p| format!(" written to {}", p.display()))
            .unwrap_or_default(),
        batch.status,
        counts_text(counts)
    );
    if !errors && counts.failed > 0 {
        note.push_str(&format!(
            " · the failures: `club batch results {id} --errors`"
        ));
    }
    eprintln!("{note}");
    Ok(())
}

async fn list(client: &Client, ui: Ui, limit: usize) -> Outcome {
    let batches: Vec<Batch> = client
        .batches()
        .take(limit.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    if ui.json {
        return ui.print_list(&batches).map_err(Failure::from);
    }
    if batches.is_empty() {
        println!("No batches yet: `club batch submit FILE.jsonl --endpoint /v1/chat/completions`.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = batches
        .iter()
        .map(|b| {
            vec![
                b.id.clone(),
                b.status.to_string(),
                printable(b.endpoint.path()),
                format!("{}/{}", b.request_counts.done(), b.request_counts.total),
                b.request_counts.failed.to_string(),
                at(Some(b.created_at)),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "STATUS",
            "ENDPOINT",
            "DONE",
            "FAILED",
            "CREATED (UTC)",
        ],
        &rows,
    )
    .map_err(Failure::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_with_the_lines_answered() {
        let mut batch: Batch = serde_json::from_value(serde_json::json!({
            "id": "batch_1", "endpoint": "/v1/embeddings", "status": "in_progress",
            "request_counts": {"total": 10, "completed": 4, "failed": 1}
        }))
        .unwrap();
        assert_eq!(
            progress_bar(&batch, 10),
            "[#####-----] 5/10 answered (1 failed) · in_progress"
        );
        batch.request_counts.total = 0;
        batch.request_counts.completed = 0;
        batch.request_counts.failed = 0;
        assert_eq!(progress_bar(&batch, 4), "[####] 0/0 answered · in_progress");
        assert_eq!(at(Some(0)), "1970-01-01 00:00:00");
        assert_eq!(at(None), "-");
    }
}
