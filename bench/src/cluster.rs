//! The processes under test: the fake engine, a coordinator recording on SQLite and a provider
//! node, each a child process of the bench.
//!
//! The children are this binary re-run with a hidden subcommand (`serve-engine`,
//! `serve-coordinator`, `serve-provider`) that calls exactly what `club-coordinator serve` and
//! `club-provider run` call after parsing their arguments
//! (`coordinator_cli::serve_command`, `provider_ops::run`), on the same kind of multi-threaded
//! runtime. So the load generator does not share a runtime (or a process) with what it
//! measures, and no other binary has to be built first.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use inference_club_coordinator::{Admin, Scope, Scopes};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::BoxError;
use crate::engine::MODELS;

/// A running child and the address it listens on (if it listens).
pub struct Process {
    name: &'static str,
    child: Child,
    /// `http://HOST:PORT`, for those that listen.
    pub url: String,
}

impl Process {
    /// Starts this binary with `args` (a hidden subcommand) as a child; see [`Process::spawn`].
    pub async fn start_self<S: AsRef<OsStr>>(
        name: &'static str,
        args: &[S],
        envs: &[(&str, &str)],
        log: &Path,
        listens: bool,
    ) -> Result<Self, BoxError> {
        let exe = std::env::current_exe()?;
        Self::spawn(name, &exe, args, envs, log, listens).await
    }

    /// Starts `program` with `args` as a child, its stderr in `log`; when `listens`, waits for
    /// its `listening on http://ADDR` line on stdout (otherwise stdout goes to `log` too).
    pub async fn spawn<S: AsRef<OsStr>>(
        name: &'static str,
        program: &Path,
        args: &[S],
        envs: &[(&str, &str)],
        log: &Path,
        listens: bool,
    ) -> Result<Self, BoxError> {
        let log_file = std::fs::File::create(log)?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(if listens {
                Stdio::piped()
            } else {
                Stdio::from(log_file.try_clone()?)
            })
            .stderr(log_file)
            .kill_on_drop(true);
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command.spawn()?;
        let mut url = String::new();
        if listens {
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| format!("{name}: no stdout"))?;
            let mut lines = BufReader::new(stdout).lines();
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .map_err(|_| format!("{name} did not start within 30 s; see {}", log.display()))??
                .ok_or_else(|| format!("{name} exited before listening; see {}", log.display()))?;
            url = line
                .strip_prefix("listening on ")
                .ok_or_else(|| format!("{name} said {line:?}"))?
                .trim()
                .to_owned();
            // Keep draining stdout so the child never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        }
        Ok(Self { name, child, url })
    }

    /// The child's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Asks the child to stop (SIGTERM, through `kill`), waits up to `grace` for it, then stops
    /// it as [`Process::stop`] does. For children that must clean up their own children (nginx),
    /// or finish their work (the coordinator saves the records it holds). Whether it exited by
    /// itself, within `grace`.
    pub async fn terminate(mut self, grace: Duration) -> bool {
        if let Some(pid) = self.child.id() {
            let asked = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
            if asked.is_ok_and(|s| s.success())
                && tokio::time::timeout(grace, self.child.wait()).await.is_ok()
            {
                return true;
            }
        }
        self.stop().await;
        false
    }

    /// Stops the child (SIGKILL) and waits for it.
    pub async fn stop(mut self) {
        if let Err(error) = self.child.start_kill() {
            eprintln!("cannot stop the {}: {error}", self.name);
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// The engine, coordinator and node, and the consumer's key.
pub struct Cluster {
    /// The fake engine.
    pub engine: Process,
    /// The coordinator (SQLite).
    pub coordinator: Process,
    /// The provider node.
    pub node: Process,
    /// An inference key for the coordinator.
    pub key: String,
    dir: PathBuf,
    /// The coordinator's SQLite file, when the cluster made it.
    sqlite: Option<PathBuf>,
}

impl Cluster {
    /// Starts the engine, a coordinator over `database` (a fresh SQLite database in a temporary
    /// directory when `None`), and a node serving the engine's models through
    /// `OpenAiCompatible`; returns once the coordinator lists the node's models. `label` names
    /// the temporary directory (the children's logs).
    pub async fn start(label: &str, database: Option<&str>) -> Result<Self, BoxError> {
        Self::start_with(label, database, None, &[]).await
    }

    /// [`Cluster::start`] with the node's service running at most `max_concurrent` requests
    /// at once, and serving `more_models` besides the bench's.
    pub async fn start_with(
        label: &str,
        database: Option<&str>,
        max_concurrent: Option<u32>,
        more_models: &[&str],
    ) -> Result<Self, BoxError> {
        let dir = std::env::temp_dir().join(format!("club-bench-{}-{label}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let sqlite = database.is_none().then(|| dir.join("club.db"));
        let database = match (database, &sqlite) {
            (Some(url), _) => url.to_owned(),
            (None, Some(file)) => format!("sqlite:{}", file.display()),
            (None, None) => return Err("no database".into()),
        };
        let key = bench_key(&database).await?;
        let engine = Process::start_self(
            "engine",
            &["serve-engine", "--listen", "127.0.0.1:0"],
            &[],
            &dir.join("engine.log"),
            true,
        )
        .await?;
        let args = [
            "serve-coordinator",
            "--listen",
            "127.0.0.1:0",
            "--database",
            &database,
        ];
        let coordinator = Process::start_self(
            "coordinator",
            &args,
            &[],
            &dir.join("coordinator.log"),
            true,
        )
        .await?;
        let manifest_arg = write_manifest_with(&dir, &engine.url, max_concurrent, more_models)?
            .display()
            .to_string();
        let node = Process::start_self(
            "node",
            &[
                "serve-provider",
                "--coordinator",
                &coordinator.url,
                "--manifest",
                &manifest_arg,
            ],
            &[("CLUB_API_KEY", &key)],
            &dir.join("node.log"),
            false,
        )
        .await?;
        let cluster = Self {
            engine,
            coordinator,
            node,
            key,
            dir,
            sqlite,
        };
        cluster.wait_for_models().await?;
        Ok(cluster)
    }

    async fn wait_for_models(&self) -> Result<(), BoxError> {
        wait_for_models(&self.coordinator.url, &self.key, &self.dir).await
    }

    /// Stops every child and removes the temporary directory.
    pub async fn stop(self) {
        self.node.stop().await;
        self.coordinator.stop().await;
        self.engine.stop().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Stops the cluster as an operator would: the node, then the coordinator with SIGTERM
    /// (it saves every record it holds before it exits), each given `grace`; then the engine.
    /// Returns the records in the coordinator's SQLite file, counted once it has exited, and
    /// removes the temporary directory.
    pub async fn stop_counting_records(self, grace: Duration) -> Result<u64, BoxError> {
        self.node.terminate(grace).await;
        let exited = self.coordinator.terminate(grace).await;
        self.engine.stop().await;
        let counted = match &self.sqlite {
            Some(file) => count_records(file).await,
            None => Err("the coordinator's database is not a SQLite file of the bench".into()),
        };
        let _ = std::fs::remove_dir_all(&self.dir);
        match counted {
            Ok(count) if !exited => Err(format!(
                "{count} records counted, but the coordinator did not exit within {grace:?} of \
                 SIGTERM and was killed: records it held may be missing"
            )
            .into()),
            other => other,
        }
    }
}

/// `SELECT COUNT(*) FROM records` on the SQLite file `file` of a coordinator that has exited,
/// opened read-only. Immutable when its write-ahead log is gone (the coordinator checkpointed
/// it and removed it with the `-shm` file as it closed, and a read-only reader of a WAL
/// database cannot make a `-shm` file); through the log when one was left behind.
pub async fn count_records(file: &Path) -> Result<u64, BoxError> {
    use sqlx::ConnectOptions;
    let mut log = file.as_os_str().to_owned();
    log.push("-wal");
    let mut connection = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(file)
        .read_only(true)
        .immutable(!Path::new(&log).exists())
        .connect()
        .await
        .map_err(|e| format!("cannot open {} read-only: {e}", file.display()))?;
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM records")
        .fetch_one(&mut connection)
        .await?;
    let _ = sqlx::Connection::close(connection).await;
    Ok(u64::try_from(count)?)
}

/// Creates the user `bench` in `database` (migrating it first) and returns a new key of theirs
/// with the inference and provider scopes.
pub async fn bench_key(database: &str) -> Result<String, BoxError> {
    let admin = Admin::open(database).await?;
    admin.add_user("bench", None).await?;
    let scopes = Scopes::only(Scope::Inference).with(Scope::Provider);
    let key = admin.create_key("bench", "bench", scopes).await?;
    admin.close().await;
    Ok(key)
}

/// Writes `dir/manifest.json`: one node with one service, the fake engine at `engine_url`
/// (`http://HOST:PORT`), serving every bench model; returns its path.
pub fn write_manifest(dir: &Path, engine_url: &str) -> Result<PathBuf, BoxError> {
    write_manifest_with(dir, engine_url, None, &[])
}

/// [`write_manifest`] with a `max_concurrent` for the service and `more_models`.
pub fn write_manifest_with(
    dir: &Path,
    engine_url: &str,
    max_concurrent: Option<u32>,
    more_models: &[&str],
) -> Result<PathBuf, BoxError> {
    let mut service = serde_json::json!({
        "name": "fake-engine",
        "type": "llm",
        "engine": "vllm",
        "url": format!("{engine_url}/v1"),
        "models": MODELS.iter().chain(more_models).map(|id| serde_json::json!({"id": id})).collect::<Vec<_>>(),
    });
    if let Some(max) = max_concurrent {
        service["max_concurrent"] = serde_json::json!(max);
    }
    let manifest = serde_json::json!({
        "schema_version": 1,
        "agent": {"name": "bench-node"},
        "hosts": [{"id": "h", "services": [service]}]
    });
    let manifest_path = dir.join("manifest.json");
    std::fs::write(&manifest_path, manifest.to_string())?;
    Ok(manifest_path)
}

/// Waits (up to 30 s) until the coordinator at `coordinator_url` lists every bench model;
/// `dir` (the children's logs) is named in the error.
pub async fn wait_for_models(coordinator_url: &str, key: &str, dir: &Path) -> Result<(), BoxError> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let url = format!("{coordinator_url}/v1/models");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(response) = client.get(&url).bearer_auth(key).send().await
            && let Ok(text) = response.text().await
            && MODELS.iter().all(|m| text.contains(m))
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "the node's models did not appear at the coordinator {coordinator_url} within 30 s; see the logs in {}",
        dir.display()
    )
    .into())
}

/// utime + stime of process `pid` and of its direct children (nginx's workers, a Python
/// server's workers), in clock ticks.
pub fn tree_ticks(pid: u32) -> u64 {
    let mut total = ticks_of(pid);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return total;
    };
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if parent_of(child) == Some(pid) {
            total += ticks_of(child);
        }
    }
    total
}

/// utime + stime of every process whose command name is `name` (the PostgreSQL server's
/// processes: other clients of the same server count too), in clock ticks.
pub fn ticks_named(name: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let wanted = format!("({name})");
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| stat.split_whitespace().nth(1) == Some(wanted.as_str()))
        })
        .map(ticks_of)
        .sum()
}

/// The parent process id of `pid`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of process `pid`, in clock ticks (0 when unreadable).
pub fn ticks_of(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}
