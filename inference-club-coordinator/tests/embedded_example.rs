//! The crate's example `embedded` runs: a coordinator and a node in one program serve a chat.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../examples/embedded.rs"]
#[allow(dead_code)] // its `main` is the example's, not the test's
mod embedded;

use inference_club_coordinator::testing::{TestDatabase, install_crypto};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_example_serves_a_chat() {
    install_crypto();
    let database = TestDatabase::sqlite();
    let answer = embedded::run(&database.url, "Is anybody out there?")
        .await
        .unwrap();
    // Echo repeats the prompt.
    assert!(answer.contains("Is anybody out there?"), "{answer}");
    database.remove().await;
}
