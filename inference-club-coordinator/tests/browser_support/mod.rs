//! A real browser for the tests: Debian's Chromium, headless, driven through chromedriver by
//! fantoccini. Each [`Browser`] is a fresh profile (`--user-data-dir` of its own), with
//! background networking off, so two browsers share no cookies.
//!
//! Shared by the browser test binaries, each of which uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// A chromedriver process on a free port of 127.0.0.1, killed when dropped.
pub struct Driver {
    url: String,
    chromium: Option<PathBuf>,
    child: tokio::process::Child,
    profiles: Vec<PathBuf>,
}

/// The chromedriver to use: `CLUB_TEST_CHROMEDRIVER`, else `chromedriver` on the usual paths.
fn chromedriver() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("CLUB_TEST_CHROMEDRIVER") {
        return Some(PathBuf::from(path));
    }
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// The Chromium to use: `CLUB_TEST_CHROMIUM`, else `/usr/bin/chromium` if present (else
/// chromedriver's own choice).
fn chromium() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("CLUB_TEST_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    Some(PathBuf::from("/usr/bin/chromium")).filter(|p| p.exists())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Driver {
    /// Starts chromedriver, or `None` (having said so loudly) when it is not installed.
    pub async fn start() -> Option<Self> {
        let Some(binary) = chromedriver() else {
            use std::io::Write as _;
            // Straight to stderr: the test harness captures `eprintln!`.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: the browser tests need chromedriver (Debian packages chromium and \
                 chromium-driver; `scripts/browser.sh` installs them and prints \
                 CLUB_TEST_CHROMEDRIVER)"
            );
            return None;
        };
        let port = free_port();
        let child = tokio::process::Command::new(&binary)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = reqwest::get(format!("{url}/status")).await
                && response.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(Self {
            url,
            chromium: chromium(),
            child,
            profiles: Vec::new(),
        })
    }

    /// A new headless browser with a fresh profile.
    pub async fn browser(&mut self) -> Browser {
        let profile = std::env::temp_dir().join(format!(
            "club-browser-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&profile).unwrap();
        self.profiles.push(profile.clone());
        let mut options = json!({
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--disable-gpu",
                format!("--user-data-dir={}", profile.display()),
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--disable-extensions",
                "--no-first-run",
                "--no-default-browser-check",
                "--metrics-recording-only",
                "--window-size=1280,900",
                "--force-device-scale-factor=1",
                "--lang=en-US",
            ],
        });
        if let Some(chromium) = &self.chromium {
            options["binary"] = Value::String(chromium.display().to_string());
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert("goog:chromeOptions".into(), options);
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a chromedriver session");
        Browser { client }
    }

    /// Stops chromedriver and removes the profiles.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        for profile in &self.profiles {
            let _ = std::fs::remove_dir_all(profile);
        }
    }
}

/// One browser window.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
}

impl Browser {
    /// Opens `url` and waits for the page.
    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// The element matching `css`, waiting for it up to 10 s.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.client.find(Locator::Css(css)).await {
                Ok(element) => return element,
                Err(error) => {
                    assert!(Instant::now() < deadline, "no element {css:?}: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Whether an element matches `css` now.
    pub async fn has(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .unwrap()
            .is_empty()
    }

    /// The text of the element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    /// The whole page's visible text.
    pub async fn page_text(&self) -> String {
        self.text("body").await
    }

    /// Clicks the element matching `css`.
    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap();
    }

    /// Types `text` into the field matching `css`.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// The current path (and query).
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Waits until the path starts with `prefix`.
    pub async fn wait_for_path(&self, prefix: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let path = self.path().await;
            if path.starts_with(prefix) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "still at {path}, expected {prefix}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a screenshot of the window as `dir/name.png`.
    pub async fn screenshot(&self, dir: &Path, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Ends the session.
    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}
