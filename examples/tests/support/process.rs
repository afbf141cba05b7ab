//! Child processes for the tests: output captured line by line, killed (SIGKILL) when dropped.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::wait_until;

/// A running child process; killed and reaped when dropped, even when a test fails.
#[derive(Debug)]
pub struct Proc {
    /// What the test calls it (for logs).
    pub name: String,
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
}

fn capture(stream: impl Read + Send + 'static, lines: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            lines.lock().unwrap().push(line);
        }
    });
}

impl Proc {
    /// Starts `command` with stdout and stderr captured.
    pub fn spawn(name: &str, mut command: Command) -> Self {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("NO_COLOR", "1")
            .env("CLUB_LOG", "info");
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            capture(out, lines.clone());
        }
        if let Some(err) = child.stderr.take() {
            capture(err, lines.clone());
        }
        Self {
            name: name.to_owned(),
            child: Some(child),
            lines,
        }
    }

    /// Everything it printed so far (stdout and stderr interleaved by line).
    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The first line containing `needle`, if any yet.
    pub fn line_with(&self, needle: &str) -> Option<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(needle))
            .cloned()
    }

    /// How many lines contain `needle`.
    pub fn count_lines_with(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits for a line containing `needle`, and returns it.
    pub async fn wait_for_line(&self, needle: &str, within: Duration) -> String {
        let what = format!("{} prints {needle:?}", self.name);
        wait_until(&what, within, || self.line_with(needle).is_some()).await;
        self.line_with(needle).unwrap()
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Its exit status, once it has exited (`None` while it runs, or after [`Proc::kill`]).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }

    /// Sends `signal` (a name such as `STOP` or `CONT`) with `kill(1)`.
    pub fn signal(&self, signal: &str) {
        let Some(child) = &self.child else { return };
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
