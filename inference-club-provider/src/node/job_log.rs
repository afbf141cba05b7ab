//! The operator's own log of the jobs their node served: JSON lines, rotated by size.
//!
//! The operator may see what ran on their hardware, so the node keeps this log locally. It records
//! time, consumer, model, token counts, latency and status; the prompt and the answer only when
//! the operator turns that on.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;

/// Where and how the job log is kept.
#[derive(Debug, Clone)]
pub struct JobLogConfig {
    /// The log file; rotated copies are `FILE.1`, `FILE.2`, ….
    pub path: PathBuf,
    /// Rotate when the file would grow past this many bytes.
    pub max_bytes: u64,
    /// How many rotated files to keep.
    pub keep: usize,
    /// Also log the request and the answer text.
    pub log_content: bool,
}

impl JobLogConfig {
    /// A log at `path`: 10 MiB per file, 5 rotated files, no content.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_bytes: 10 * 1024 * 1024,
            keep: 5,
            log_content: false,
        }
    }
}

/// One served job.
#[derive(Debug, Clone, Serialize)]
pub struct JobLogEntry {
    /// When the job ended.
    pub time: DateTime<Utc>,
    /// The record id.
    pub request_id: String,
    /// The consumer's handle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    /// The model as requested.
    pub model: String,
    /// `succeeded`, `failed` or `cancelled`.
    pub status: &'static str,
    /// The error, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Prompt tokens the engine reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    /// Completion tokens the engine reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    /// Milliseconds to the first output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_token_ms: Option<u64>,
    /// Milliseconds in all.
    pub total_ms: u64,
    /// The request, when content logging is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<serde_json::Value>,
    /// The answer text, when content logging is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

/// A handle to the log writer; cheap to clone. Writing never blocks a job: entries go through a
/// bounded queue to a writer thread, and are dropped (with a warning) if it is full.
#[derive(Debug, Clone)]
pub struct JobLog {
    sender: Option<mpsc::Sender<JobLogEntry>>,
    log_content: bool,
}

impl JobLog {
    /// No log.
    pub fn disabled() -> Self {
        Self {
            sender: None,
            log_content: false,
        }
    }

    /// Starts the writer for `config`; fails when the file cannot be opened.
    pub fn start(config: JobLogConfig) -> io::Result<Self> {
        let mut file = RotatingFile::open(config.path.clone(), config.max_bytes, config.keep)?;
        let (sender, mut receiver) = mpsc::channel::<JobLogEntry>(1024);
        std::thread::Builder::new()
            .name("job-log".into())
            .spawn(move || {
                while let Some(entry) = receiver.blocking_recv() {
                    if let Err(e) = file.append(&entry) {
                        tracing::warn!("job log: cannot write {}: {e}", file.path.display());
                    }
                }
            })?;
        Ok(Self {
            sender: Some(sender),
            log_content: config.log_content,
        })
    }

    /// Whether the request and answer text should be filled in.
    pub fn logs_content(&self) -> bool {
        self.log_content
    }

    /// Queues an entry.
    pub fn record(&self, entry: JobLogEntry) {
        if let Some(sender) = &self.sender
            && sender.try_send(entry).is_err()
        {
            tracing::warn!("job log: writer is behind; an entry was dropped");
        }
    }
}

struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: File,
    size: u64,
}

impl RotatingFile {
    fn open(path: PathBuf, max_bytes: u64, keep: usize) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path,
            max_bytes,
            keep,
            file,
            size,
        })
    }

    fn append(&mut self, entry: &JobLogEntry) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let numbered = |n: usize| -> PathBuf {
            let mut name = self.path.as_os_str().to_owned();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        if self.keep == 0 {
            fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                let from = numbered(n);
                if from.exists() {
                    fs::rename(&from, numbered(n + 1))?;
                }
            }
            fs::rename(&self.path, numbered(1))?;
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// The rotated files of a log, newest first (for tests and tools).
pub fn rotated_files(path: &Path, keep: usize) -> Vec<PathBuf> {
    (1..=keep)
        .map(|n| {
            let mut name = path.as_os_str().to_owned();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        })
        .filter(|p| p.exists())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64) -> JobLogEntry {
        JobLogEntry {
            time: Utc::now(),
            request_id: format!("r{n}"),
            consumer: Some("ada".into()),
            model: "m".into(),
            status: "succeeded",
            error: None,
            prompt_tokens: Some(n),
            completion_tokens: None,
            first_token_ms: None,
            total_ms: n,
            request: None,
            answer: None,
        }
    }

    #[test]
    fn rotates_by_size_and_keeps_n_files() {
        let dir = std::env::temp_dir().join(format!("job-log-{}", fastrand::u64(..)));
        let path = dir.join("jobs.jsonl");
        let mut file = RotatingFile::open(path.clone(), 400, 2).unwrap();
        for n in 0..40 {
            file.append(&entry(n)).unwrap();
        }
        assert!(fs::metadata(&path).unwrap().len() <= 400);
        assert_eq!(rotated_files(&path, 5).len(), 2);
        let last = fs::read_to_string(&path).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(last.lines().last().unwrap()).unwrap();
        assert_eq!(parsed["request_id"], "r39");
        assert!(parsed.get("answer").is_none());
        fs::remove_dir_all(dir).unwrap();
    }
}
