//! The state directory: where the database lives, private to this user, and held by one server
//! at a time.
//!
//! Two servers on one directory would each hand out the same notification seqs and settle each
//! other's running jobs as `interrupted` at start-up, so the second one is refused: the first
//! holds an exclusive lock on `lock` for as long as it runs (the kernel releases it when the
//! process dies, however it dies).

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use super::StoreError;

/// The database's file name inside the state directory.
pub const DATABASE: &str = "jobs.sqlite";

/// `$XDG_STATE_HOME/codex-async-mcp`, else `~/.local/state/codex-async-mcp`.
pub fn default_dir() -> Option<PathBuf> {
    crate::paths::xdg("XDG_STATE_HOME", ".local/state").map(|base| base.join("codex-async-mcp"))
}

/// The state directory, locked for this process until it is dropped.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    _lock: File,
}

impl StateDir {
    /// Creates the directory (mode 0700) if needed and takes its lock.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let fail = |what: &str, e: std::io::Error| {
            StoreError::Open(format!(
                "the state directory {} {what} ({e}); pass another --state-dir",
                path.display()
            ))
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| fail("cannot be created", e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| fail("cannot be made private", e))?;
        let lock_path = path.join("lock");
        let mut lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| fail("cannot hold a lock file", e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&lock_path).unwrap_or_default();
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {holder})")
                };
                return Err(StoreError::Open(format!(
                    "another codex-async-mcp{holder} is using the state directory {}. Stop it, or \
                     give this server its own --state-dir",
                    path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(fail("cannot be locked", e)),
        }
        // Only a note for the message above; the lock itself is what counts.
        let _ = lock.set_len(0);
        let _ = write!(lock, "{}", std::process::id());
        Ok(Self {
            path: path.to_owned(),
            _lock: lock,
        })
    }

    pub fn database(&self) -> PathBuf {
        self.path.join(DATABASE)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The pid of the server running on the state directory at `path`, if one is: the pid its lock
/// file names, when that process lives. Read without taking the lock, so a server starting
/// meanwhile is never refused.
pub fn server_pid(path: &Path) -> Option<u32> {
    let noted = std::fs::read_to_string(path.join("lock")).ok()?;
    let pid: u32 = noted.trim().parse().ok()?;
    let raw = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: signal 0 only asks whether the process exists; nothing is sent.
    let alive = unsafe { libc::kill(raw, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    alive.then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_is_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/state");
        let state = StateDir::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(state.database(), path.join(DATABASE));
    }

    #[test]
    fn a_second_server_on_the_same_directory_is_refused_while_the_first_runs() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateDir::open(dir.path()).unwrap();
        let second = StateDir::open(dir.path()).unwrap_err().to_string();
        assert!(second.contains("another codex-async-mcp"), "{second}");
        assert!(
            second.contains(&format!("pid {}", std::process::id())),
            "{second}"
        );
        assert!(second.contains("--state-dir"), "{second}");
        drop(first);
        StateDir::open(dir.path()).expect("free again once the first is gone");
    }
}
