//! `club complete` (a text completion, streamed) and `club embed` (embeddings).

use inference_club_client::{CompletionRequest, EmbeddingInput, EmbeddingsRequest};

use super::*;

/// How many values of each vector `club embed` shows.
const SHOWN_VALUES: usize = 5;

pub(super) async fn complete(target: &Target, ui: Ui, args: CompleteArgs) -> Outcome {
    let prompt = text_or_stdin(&args.prompt, "prompt")?;
    let mut request = CompletionRequest::new(args.model.clone(), prompt);
    if let Some(visibility) = visibility_flag(args.visibility.as_deref())? {
        request = request.visibility(visibility);
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
    let mut stream = client.completion_stream(request).await?;
    if ui.json {
        let whole = stream.collect().await?;
        return ui
            .print_json(&serde_json::json!({
                "record_id": whole.record_id,
                "completion": whole.completion,
            }))
            .map_err(Failure::from);
    }
    let mut out = std::io::stdout();
    let mut ended_with_newline = true;
    let mut failure = None;
    while let Some(piece) = stream.next().await {
        match piece {
            Ok(text) => {
                let text = printable(&text);
                ended_with_newline = text.ends_with('\n');
                let _ = write!(out, "{text}");
                let _ = out.flush();
            }
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    if !ended_with_newline {
        let _ = writeln!(out);
    }
    let record_id = stream.record_id();
    if let Some(error) = failure {
        if let Some(id) = record_id {
            eprintln!("record: {id}");
        }
        return Err(error.into());
    }
    let detail = stream.usage().map_or_else(String::new, |usage| {
        format!(
            " · {} prompt + {} completion tokens",
            usage.prompt_tokens, usage.completion_tokens
        )
    });
    print_record(record_id.as_deref(), args.visibility.as_deref(), &detail);
    Ok(())
}

pub(super) async fn embed(target: &Target, ui: Ui, args: EmbedArgs) -> Outcome {
    let input = if args.texts.is_empty() {
        EmbeddingInput::Text(text_or_stdin(&[], "text")?)
    } else {
        EmbeddingInput::Texts(args.texts.clone())
    };
    let mut request = EmbeddingsRequest::new(args.model.clone(), input);
    if let Some(visibility) = visibility_flag(args.visibility.as_deref())? {
        request = request.visibility(visibility);
    }
    if let Some(dimensions) = args.dimensions {
        request = request.dimensions(dimensions);
    }
    public_notice(target);
    let answer = target.client()?.embeddings(request).await?;
    if ui.json {
        return ui
            .print_json(&serde_json::json!({
                "record_id": answer.record_id,
                "embeddings": answer.embeddings,
            }))
            .map_err(Failure::from);
    }
    for embedding in &answer.embeddings.data {
        println!("{}", describe_vector(embedding.index, &embedding.embedding));
    }
    let detail = answer.usage().map_or_else(String::new, |usage| {
        format!(" · {} prompt tokens", usage.prompt_tokens)
    });
    print_record(
        answer.record_id.as_deref(),
        args.visibility.as_deref(),
        &detail,
    );
    Ok(())
}

/// `[0] 8 dimensions: 0.1234, -0.5678, …`
fn describe_vector(index: u32, vector: &[f32]) -> String {
    let shown: Vec<String> = vector
        .iter()
        .take(SHOWN_VALUES)
        .map(|x| format!("{x:.4}"))
        .collect();
    let more = if vector.len() > SHOWN_VALUES {
        ", …"
    } else {
        ""
    };
    format!(
        "[{index}] {} dimensions: {}{more}",
        vector.len(),
        shown.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vector_is_shown_by_its_size_and_first_values() {
        assert_eq!(
            describe_vector(1, &[0.5, -0.25, 1.0, 0.0, 2.0, 3.0]),
            "[1] 6 dimensions: 0.5000, -0.2500, 1.0000, 0.0000, 2.0000, …"
        );
        assert_eq!(describe_vector(0, &[1.0]), "[0] 1 dimensions: 1.0000");
    }
}
