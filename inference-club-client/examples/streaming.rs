//! A streamed answer, printed as it arrives, with its reasoning, usage and record id; an
//! unlisted request that does not appear in the public feed.
//!
//! ```text
//! CLUB_API_KEY=icl_… cargo run -p inference-club-client --example streaming -- echo "Tell me a story"
//! ```

use std::io::{IsTerminal, Write};
use std::time::Duration;

use futures_util::StreamExt;
use inference_club_client::{
    ChatEvent, ChatRequest, ClientBuilder, Error, RetryPolicy, Visibility,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let model = args.next().unwrap_or_else(|| "echo".into());
    let prompt = args.next().unwrap_or_else(|| "Tell me a story".into());

    let client = ClientBuilder::from_env()
        .first_token_timeout(Duration::from_secs(120))
        .idle_timeout(Duration::from_secs(30))
        .retry_policy(RetryPolicy::attempts(4))
        .build()?;
    let request = ChatRequest::new(model)
        .user(prompt)
        .visibility(Visibility::Unlisted);
    let mut events = client.chat_stream(request).await?.events();
    let mut out = std::io::stdout();
    // The reasoning is shown dim on a terminal.
    let styled = out.is_terminal();
    while let Some(event) = events.next().await {
        match event? {
            ChatEvent::Reasoning(text) if styled => {
                let _ = write!(out, "\x1b[2m{text}\x1b[0m");
            }
            ChatEvent::Reasoning(text) => {
                let _ = write!(out, "{text}");
            }
            ChatEvent::Content(text) => {
                let _ = write!(out, "{text}");
            }
            ChatEvent::ToolCall(call) => {
                let _ = write!(out, "\n[tool call {}]", call.index);
            }
            ChatEvent::Done { record_id, usage } => {
                let _ = writeln!(out);
                if let Some(usage) = usage {
                    let _ = writeln!(out, "tokens: {}", usage.total_tokens);
                }
                let _ = writeln!(out, "record: {}", record_id.unwrap_or_default());
            }
            _ => {}
        }
        let _ = out.flush();
    }
    Ok(())
}
