//! A whole chat answer and its record.
//!
//! ```text
//! CLUB_URL=http://127.0.0.1:8080 CLUB_API_KEY=icl_… cargo run -p inference-club-client --example chat -- echo "Hello!"
//! ```

use inference_club_client::{ChatRequest, Client, Error};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let model = args.next().unwrap_or_else(|| "echo".into());
    let prompt = args.next().unwrap_or_else(|| "Hello, club!".into());

    let client = Client::from_env()?;
    let answer = client
        .chat(ChatRequest::new(model).system("Be brief.").user(prompt))
        .await?;
    if let Some(reasoning) = answer.reasoning() {
        println!("(thinking) {reasoning}");
    }
    println!("{}", answer.text().unwrap_or_default());
    if let Some(usage) = &answer.completion.usage {
        println!(
            "tokens: {} in, {} out",
            usage.prompt_tokens, usage.completion_tokens
        );
    }
    println!("record: {}", answer.record_id.unwrap_or_default());
    Ok(())
}
