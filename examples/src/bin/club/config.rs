//! The `club` CLI's own files: the saved sign-in (`config.json`, mode 0600) and the marker that
//! the public-by-default notice was shown, in `$CLUB_CONFIG_DIR` or the platform's config
//! directory (`…/inference-club/`).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The environment variable naming the CLI's config directory.
pub const CONFIG_DIR_ENV: &str = "CLUB_CONFIG_DIR";

/// The saved sign-in's file name inside the config directory.
pub const CONFIG_FILE: &str = "config.json";

/// The marker written once the public-by-default notice was shown.
pub const NOTICE_MARKER: &str = "public-notice-shown";

/// The largest config file read.
const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// What `club login` saves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedLogin {
    /// The coordinator the key belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// The key's id, to revoke it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The member's handle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
}

/// The CLI's config directory: `$CLUB_CONFIG_DIR`, else the platform's config directory joined
/// with `inference-club` (`$XDG_CONFIG_HOME` or `~/.config` on Linux, `~/Library/Application
/// Support` on macOS, `%APPDATA%` on Windows). `None` when none can be found.
pub fn config_dir() -> Option<PathBuf> {
    let env = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = env(CONFIG_DIR_ENV) {
        return Some(dir);
    }
    let base = if cfg!(windows) {
        env("APPDATA")
    } else if cfg!(target_os = "macos") {
        env("HOME").map(|h| h.join("Library").join("Application Support"))
    } else {
        env("XDG_CONFIG_HOME").or_else(|| env("HOME").map(|h| h.join(".config")))
    };
    base.map(|b| b.join("inference-club"))
}

/// Reads the saved sign-in from `dir` (none when there is no file).
pub fn load(dir: &Path) -> Result<SavedLogin, String> {
    let path = dir.join(CONFIG_FILE);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(SavedLogin::default());
        }
        Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
    };
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_CONFIG_BYTES), &mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        format!(
            "{} is not a valid config ({e}); remove it or run `club logout`",
            path.display()
        )
    })
}

/// Writes the saved sign-in to `dir`, readable by its owner only; answers the file's path.
pub fn save(dir: &Path, login: &SavedLogin) -> Result<PathBuf, String> {
    create_dir(dir)?;
    let path = dir.join(CONFIG_FILE);
    let temporary = dir.join(format!("{CONFIG_FILE}.tmp"));
    let text = serde_json::to_string_pretty(login).map_err(|e| e.to_string())?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()
        })
        .and_then(|()| restrict(&temporary))
        .and_then(|()| std::fs::rename(&temporary, &path));
    written.map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// Forgets the saved sign-in; answers whether there was one.
pub fn forget(dir: &Path) -> Result<bool, String> {
    let path = dir.join(CONFIG_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(format!("cannot remove {}: {error}", path.display())),
    }
}

/// Whether the public-by-default notice is still to be shown; marks it shown. Without a config
/// directory it is shown every time.
pub fn first_notice(dir: Option<&Path>) -> bool {
    let Some(dir) = dir else {
        return true;
    };
    let marker = dir.join(NOTICE_MARKER);
    if marker.exists() {
        return false;
    }
    let _ = create_dir(dir)
        .and_then(|()| std::fs::write(&marker, b"shown\n").map_err(|e| e.to_string()));
    true
}

fn create_dir(dir: &Path) -> Result<(), String> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

#[cfg(unix)]
fn restrict(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn restrict(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Two coordinator URLs name the same coordinator (trailing `/` and `/v1` ignored).
pub fn same_coordinator(a: &str, b: &str) -> bool {
    fn normal(url: &str) -> String {
        url.trim()
            .trim_end_matches('/')
            .trim_end_matches("/v1")
            .trim_end_matches('/')
            .to_ascii_lowercase()
    }
    normal(a) == normal(b)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn saves_loads_and_forgets_privately() {
        let dir = std::env::temp_dir().join(format!(
            "club-cli-config-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        ));
        assert_eq!(load(&dir).unwrap(), SavedLogin::default());
        let login = SavedLogin {
            url: Some("http://127.0.0.1:1".into()),
            api_key: Some("icl_x".into()),
            key_id: None,
            handle: Some("ada".into()),
        };
        let path = save(&dir, &login).unwrap();
        assert_eq!(load(&dir).unwrap(), login);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(first_notice(Some(&dir)));
        assert!(!first_notice(Some(&dir)));
        assert!(forget(&dir).unwrap());
        assert!(!forget(&dir).unwrap());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn urls_compare_loosely() {
        assert!(same_coordinator("http://h:1/", "http://H:1/v1"));
        assert!(!same_coordinator("http://h:1", "http://h:2"));
    }
}
