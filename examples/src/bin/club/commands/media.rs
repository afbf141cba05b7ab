//! `club transcribe` (audio to text), `club speak` (text to an audio file) and `club image`
//! (a prompt to image files).

use std::path::Path;

use inference_club_client::{
    AudioFormat, ImageData, ImageFormat, ImageRequest, SpeechRequest, TranscriptionFormat,
    TranscriptionRequest,
};

use super::*;

/// The longest audio file `club transcribe` uploads.
const MAX_AUDIO_BYTES: u64 = 256 * 1024 * 1024;

/// Audio and images take longer than text: the whole-request timeout of these commands.
const MEDIA_TIMEOUT: Duration = Duration::from_secs(600);

/// A client whose whole requests may take [`MEDIA_TIMEOUT`].
fn media_client(target: &Target) -> Result<Client, String> {
    target
        .builder()
        .request_timeout(MEDIA_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())
}

pub(super) async fn transcribe(target: &Target, ui: Ui, args: TranscribeArgs) -> Outcome {
    let size = std::fs::metadata(&args.file)
        .map_err(|e| format!("cannot read {}: {e}", args.file.display()))?
        .len();
    if size > MAX_AUDIO_BYTES {
        return Err(format!(
            "{} is {size} bytes; the largest upload is {MAX_AUDIO_BYTES}",
            args.file.display()
        )
        .into());
    }
    let audio = std::fs::read(&args.file)
        .map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
    let file_name = args
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "audio".to_owned());
    let mut request = TranscriptionRequest::new(args.model.clone(), file_name, audio);
    if let Some(format) = &args.format {
        request = request.response_format(format.parse::<TranscriptionFormat>()?);
    }
    if let Some(language) = &args.language {
        request = request.language(language.clone());
    }
    if let Some(prompt) = &args.prompt {
        request = request.prompt(prompt.clone());
    }
    if let Some(visibility) = visibility_flag(args.visibility.as_deref())? {
        request = request.visibility(visibility);
    }
    public_notice(target);
    let answer = media_client(target)?.transcribe(request).await?;
    if ui.json {
        return ui
            .print_json(&serde_json::json!({
                "record_id": answer.record_id,
                "text": answer.text,
                "details": answer.details,
            }))
            .map_err(Failure::from);
    }
    let text = printable(&answer.text);
    if text.ends_with('\n') {
        print!("{text}");
    } else {
        println!("{text}");
    }
    print_record(answer.record_id.as_deref(), args.visibility.as_deref(), "");
    Ok(())
}

pub(super) async fn speak(target: &Target, ui: Ui, args: SpeakArgs) -> Outcome {
    let to_stdout = args.output.as_os_str() == "-";
    if to_stdout && ui.json {
        return Err("--json cannot go with -o - (the audio goes to stdout)"
            .to_owned()
            .into());
    }
    let input = text_or_stdin(&args.text, "text")?;
    // The format asked for, else the output's extension when it names one.
    let format = match &args.format {
        Some(format) => Some(format.parse::<AudioFormat>()?),
        None => args
            .output
            .extension()
            .and_then(|e| e.to_str())
            .and_then(|e| e.parse::<AudioFormat>().ok()),
    };
    let mut request = SpeechRequest::new(args.model.clone(), input);
    if let Some(format) = format {
        request = request.format(format);
    }
    if let Some(voice) = &args.voice {
        request = request.voice(voice.clone());
    }
    if let Some(speed) = args.speed {
        request = request.speed(speed);
    }
    if let Some(visibility) = visibility_flag(args.visibility.as_deref())? {
        request = request.visibility(visibility);
    }
    public_notice(target);
    let answer = media_client(target)?.speech(request).await?;
    let content_type = answer.content_type.clone().unwrap_or_default();
    if to_stdout {
        let mut out = std::io::stdout().lock();
        out.write_all(&answer.audio)
            .and_then(|()| out.flush())
            .map_err(|e| format!("cannot write the audio to stdout: {e}"))?;
    } else {
        write_file(&args.output, &answer.audio)?;
    }
    if ui.json {
        return ui
            .print_json(&serde_json::json!({
                "record_id": answer.record_id,
                "file": args.output,
                "bytes": answer.audio.len(),
                "content_type": answer.content_type,
            }))
            .map_err(Failure::from);
    }
    if !to_stdout {
        println!(
            "wrote {} ({} bytes, {})",
            args.output.display(),
            answer.audio.len(),
            printable(&content_type)
        );
    }
    print_record(answer.record_id.as_deref(), args.visibility.as_deref(), "");
    Ok(())
}

pub(super) async fn image(target: &Target, ui: Ui, args: ImageArgs) -> Outcome {
    let prompt = text_or_stdin(&args.prompt, "prompt")?;
    let mut request = ImageRequest::new(args.model.clone(), prompt)
        .n(args.n.max(1))
        .response_format(ImageFormat::B64Json);
    if let Some(size) = &args.size {
        request = request.size(size.clone());
    }
    if let Some(visibility) = visibility_flag(args.visibility.as_deref())? {
        request = request.visibility(visibility);
    }
    public_notice(target);
    let answer = media_client(target)?.generate_image(request).await?;
    let several = answer.images.len() > 1;
    let mut written = Vec::new();
    for (i, image) in answer.images.iter().enumerate() {
        let entry = match &image.data {
            ImageData::Bytes(bytes) => {
                let path = if several {
                    numbered(&args.output, i + 1)
                } else {
                    args.output.clone()
                };
                write_file(&path, bytes)?;
                if !ui.json {
                    println!("wrote {} ({} bytes)", path.display(), bytes.len());
                }
                serde_json::json!({"file": path, "bytes": bytes.len()})
            }
            ImageData::Url(url) => {
                if !ui.json {
                    println!("{}", printable(url));
                }
                serde_json::json!({"url": url})
            }
            _ => serde_json::json!({}),
        };
        let mut entry = entry;
        if let Some(revised) = &image.revised_prompt {
            entry["revised_prompt"] = revised.clone().into();
            if !ui.json {
                eprintln!("revised prompt: {}", printable(revised));
            }
        }
        written.push(entry);
    }
    if ui.json {
        return ui
            .print_json(&serde_json::json!({
                "record_id": answer.record_id,
                "created": answer.created,
                "images": written,
            }))
            .map_err(Failure::from);
    }
    print_record(answer.record_id.as_deref(), args.visibility.as_deref(), "");
    Ok(())
}

/// `OUT.png` as `OUT-N.png` (`OUT-N` without an extension).
fn numbered(path: &Path, n: usize) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(extension) => format!("{stem}-{n}.{}", extension.to_string_lossy()),
        None => format!("{stem}-{n}"),
    };
    path.with_file_name(name)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_images_are_numbered_before_the_extension() {
        assert_eq!(
            numbered(Path::new("out/cat.png"), 2),
            PathBuf::from("out/cat-2.png")
        );
        assert_eq!(numbered(Path::new("cat"), 1), PathBuf::from("cat-1"));
    }
}
