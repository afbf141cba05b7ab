//! My request history and the public feed, page after page. With `--change` (it changes your
//! records), it then makes the newest request private and deletes the oldest one listed.
//!
//! ```text
//! CLUB_API_KEY=icl_… cargo run -p inference-club-client --example history
//! CLUB_API_KEY=icl_… cargo run -p inference-club-client --example history -- --change
//! ```

use futures_util::StreamExt;
use inference_club_client::{Client, Error, RecordFilter, Status, Visibility};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let client = Client::from_env()?;

    println!("my last 20 requests:");
    let mut mine = client.my_requests(RecordFilter::new().limit(20)).take(20);
    let mut ids = Vec::new();
    while let Some(record) = mine.next().await {
        let record = record?;
        println!(
            "  {}  {:<10} {:<9} {:<8} {}",
            record.id,
            record.model_requested,
            record.status.as_str(),
            record.visibility.as_str(),
            record
                .prompt()
                .unwrap_or_default()
                .chars()
                .take(50)
                .collect::<String>()
        );
        ids.push(record.id);
    }

    println!("the public feed (succeeded only), first page:");
    let page = client
        .public_feed_page(&RecordFilter::new().status(Status::Succeeded).limit(5))
        .await?;
    for record in &page.data {
        println!(
            "  {} by {} — {}",
            record.id,
            record.consumer.as_deref().unwrap_or("(deleted member)"),
            record.response.content.as_deref().unwrap_or_default()
        );
    }

    if !std::env::args().any(|arg| arg == "--change") {
        println!("(run with --change to make the newest private and delete the oldest listed)");
        return Ok(());
    }
    if let Some(newest) = ids.first() {
        let record = client.set_visibility(newest, Visibility::Private).await?;
        println!("{} is now {}", record.id, record.visibility.as_str());
    }
    if let Some(oldest) = ids.get(1..).and_then(|rest| rest.last()) {
        client.delete_record(oldest).await?;
        println!("deleted {oldest}");
    }
    Ok(())
}
