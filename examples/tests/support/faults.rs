//! Support for the fault suite: a TCP proxy whose network can stall, and the PostgreSQL server.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP proxy on 127.0.0.1 in front of `upstream`. While stalled it forwards nothing, in
/// either direction, on any connection (old or new), and closes nothing: what a node sees when
/// its network goes away without a word (a sleeping laptop, a dropped Wi-Fi, a NAT that forgot
/// the connection).
#[derive(Debug, Clone)]
pub struct StallProxy {
    /// `host:port` to dial instead of the upstream.
    pub address: String,
    stalled: Arc<watch::Sender<bool>>,
    accepted: Arc<AtomicUsize>,
}

impl StallProxy {
    /// Starts a proxy to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (stalled, _) = watch::channel(false);
        let stalled = Arc::new(stalled);
        let accepted = Arc::new(AtomicUsize::new(0));
        let upstream = upstream.to_owned();
        let (gate, count) = (stalled.clone(), accepted.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let upstream = upstream.clone();
                let gate = gate.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(
                        pipe(client_read, server_write, gate.subscribe()),
                        pipe(server_read, client_write, gate.subscribe()),
                    );
                });
            }
        });
        Self {
            address,
            stalled,
            accepted,
        }
    }

    /// `http://` and the proxy's address.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Stops forwarding (connections stay open).
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// Forwards again, on every connection.
    pub fn resume(&self) {
        self.stalled.send_replace(false);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Copies `from` to `to`, holding each piece while the network is stalled.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// The PostgreSQL server's URL for tests, or `None` (and a loud SKIPPED line naming `test`).
pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("CLUB_TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            super::loud(&format!(
                "SKIPPED {test}: CLUB_TEST_DATABASE_URL is not set (scripts/postgres.sh starts a server and prints it)"
            ));
            None
        }
    }
}
