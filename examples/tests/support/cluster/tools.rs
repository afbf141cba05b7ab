//! What the cluster tests need from the machine: PostgreSQL, `nats-server`, nginx, free ports.

use std::path::{Path, PathBuf};

use super::super::loud;

/// What the cluster tests need from the machine.
#[derive(Debug, Clone)]
pub struct Tools {
    /// The PostgreSQL server's URL (`CLUB_TEST_DATABASE_URL`).
    pub postgres: String,
    /// The `nats-server` binary.
    pub nats_server: PathBuf,
    /// The `nginx` binary.
    pub nginx: PathBuf,
}

/// `name` from `$env` (which must then exist), else from PATH, `/usr/sbin` or `/usr/bin`.
fn program(env: &str, name: &str) -> Option<PathBuf> {
    if let Ok(path) = std::env::var(env)
        && !path.trim().is_empty()
    {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{env} names {}, which does not exist",
            path.display()
        );
        return Some(path);
    }
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/usr/bin"])
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| candidate.is_file())
}

/// The tools, or `None` and a loud SKIPPED line naming `test` and what is missing.
pub fn tools(test: &str) -> Option<Tools> {
    let postgres = super::super::faults::postgres_url(test)?;
    let Some(nats_server) = program("CLUB_TEST_NATS_SERVER", "nats-server") else {
        loud(&format!(
            "SKIPPED {test}: no nats-server (Debian's package nats-server; or set CLUB_TEST_NATS_SERVER)"
        ));
        return None;
    };
    let Some(nginx) = program("CLUB_TEST_NGINX", "nginx") else {
        loud(&format!(
            "SKIPPED {test}: no nginx (Debian's package nginx-light; or set CLUB_TEST_NGINX)"
        ));
        return None;
    };
    Some(Tools {
        postgres,
        nats_server,
        nginx,
    })
}

/// A free TCP port on 127.0.0.1 (free when asked; the caller binds it soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
