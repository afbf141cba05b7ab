//! The replicas of a cluster: their addresses and output, killed, terminated and restarted.

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use super::super::{Proc, STARTUP};
use super::{Cluster, DRAIN_SECS, REPLICAS, replica_args, replica_command};

impl Cluster {
    /// `http://host:port` of replica `n` (0-based).
    pub fn url(&self, n: usize) -> String {
        format!("http://{}", self.addresses[n])
    }

    /// Every replica's URL, then nginx's.
    pub fn every_door(&self) -> Vec<String> {
        let mut all: Vec<String> = (0..REPLICAS).map(|n| self.url(n)).collect();
        all.push(self.nginx_url.clone());
        all
    }

    /// The process of replica `n`.
    pub fn replica(&mut self, n: usize) -> &mut Proc {
        if n == 0 {
            &mut self.club.coordinator
        } else {
            &mut self.others[n - 1]
        }
    }

    /// The output of replica `n`.
    pub fn replica_output(&self, n: usize) -> String {
        if n == 0 {
            self.club.coordinator.output()
        } else {
            self.others[n - 1].output()
        }
    }

    /// SIGKILLs replica `n`.
    pub fn kill_replica(&mut self, n: usize) {
        self.replica(n).kill();
    }

    /// Sends SIGTERM to replica `n` and waits until it exits (within the drain time and some),
    /// returning its exit status.
    pub async fn terminate_replica(&mut self, n: usize) -> ExitStatus {
        self.replica(n).signal("TERM");
        let within = Duration::from_secs(DRAIN_SECS + 10);
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.replica(n).exit_status() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "replica r{} did not exit within {within:?} of SIGTERM",
                n + 1
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts replica `n` again on its address (after it exited or was killed), and waits until
    /// it listens.
    pub async fn restart_replica(&mut self, n: usize) {
        self.replica(n).kill();
        let command = replica_command(
            &self.database,
            &self.addresses[n],
            &replica_args(&self.nats_url, n, &self.extra_args),
        );
        let process = Proc::spawn(&format!("replica r{} (restarted)", n + 1), command);
        process.wait_for_line("listening on http://", STARTUP).await;
        *self.replica(n) = process;
    }
}
