//! One writer per state store (DESIGN.md guarantee 8).
//!
//! A command that may write holds an exclusive OS lock (`flock(2)`, through
//! std's `File::try_lock`) on a file beside the store, `<state.path>.lock`,
//! for as long as its [`StoreLock`] lives. The kernel releases it when the
//! process exits or dies (kill -9 included), so a dead holder never keeps
//! the store locked and there is no liveness check to get wrong.
//!
//! Once it holds the lock, the holder writes who it is into the file (pid,
//! command, since); a writer that finds the store taken reads it for its
//! message. The file is never deleted: removing a lock file while another
//! process waits on it would let two writers lock two different files.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};

/// How often a waiting writer tries the lock again.
const POLL: Duration = Duration::from_millis(100);
/// At most this much of a lock file is read (it holds three short lines).
const MAX_HOLDER_BYTES: u64 = 4096;
/// A command name longer than this in a lock file is cut.
const MAX_COMMAND_CHARS: usize = 200;

/// The lock file of the store at `store`: `<store>.lock`.
pub fn lock_path(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Who holds a store, as its lock file says. Every part is optional: the
/// file may be empty (the holder is between taking the lock and writing
/// it), from another version, or damaged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holder {
    pub pid: Option<u32>,
    /// The command line words after the options, e.g. `run`, `sync --once`.
    pub command: Option<String>,
    pub since: Option<DateTime<Utc>>,
}

impl Holder {
    /// This process, running `command`, from now.
    pub fn this_process(command: &str) -> Holder {
        Holder {
            pid: Some(std::process::id()),
            command: Some(command.to_owned()),
            since: Some(Utc::now()),
        }
    }

    /// The lock file's text: `key=value` lines, readable with `cat`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some(pid) = self.pid {
            out.push_str(&format!("pid={pid}\n"));
        }
        if let Some(command) = &self.command {
            out.push_str(&format!("command={}\n", clean(command)));
        }
        if let Some(since) = self.since {
            out.push_str(&format!(
                "since={}\n",
                since.to_rfc3339_opts(SecondsFormat::Secs, true)
            ));
        }
        out
    }

    /// Reads a lock file's text; what cannot be read is left out.
    pub fn parse(text: &str) -> Holder {
        let mut holder = Holder::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "pid" => holder.pid = value.parse().ok().filter(|p| *p > 0),
                "command" => {
                    let c = clean(value);
                    holder.command = (!c.is_empty()).then_some(c);
                }
                "since" => {
                    holder.since = DateTime::parse_from_rfc3339(value)
                        .ok()
                        .map(|d| d.with_timezone(&Utc));
                }
                _ => {}
            }
        }
        holder
    }

    /// Reads the lock file at `path` (a missing or unreadable file gives an
    /// unknown holder).
    pub fn read(path: &Path) -> Holder {
        let mut bytes = Vec::new();
        match File::open(path) {
            Ok(f) => {
                if f.take(MAX_HOLDER_BYTES).read_to_end(&mut bytes).is_err() {
                    return Holder::default();
                }
            }
            Err(_) => return Holder::default(),
        }
        Holder::parse(&String::from_utf8_lossy(&bytes))
    }

    /// Whether the file said anything at all.
    pub fn is_known(&self) -> bool {
        self.pid.is_some() || self.command.is_some() || self.since.is_some()
    }

    fn is_service(&self) -> bool {
        self.command.as_deref() == Some("run")
    }
}

/// One line, printable: control characters dropped, length bounded.
fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(MAX_COMMAND_CHARS)
        .collect::<String>()
        .trim()
        .to_owned()
}

impl std::fmt::Display for Holder {
    /// `pid 4242 (run) since 2026-12-02T10:00:00Z`, or what is known of it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.is_known() {
            return f.write_str("another cosell-sync process (its lock file does not say which)");
        }
        let mut parts = Vec::new();
        parts.push(match self.pid {
            Some(pid) => format!("pid {pid}"),
            None => "another cosell-sync process".to_owned(),
        });
        if let Some(c) = &self.command {
            parts.push(format!("({c})"));
        }
        if let Some(s) = self.since {
            parts.push(format!(
                "since {}",
                s.to_rfc3339_opts(SecondsFormat::Secs, true)
            ));
        }
        f.write_str(&parts.join(" "))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process held the store for the whole wait.
    #[error("the state store {} is in use by {holder}; {}", .path.display(), advice(.holder))]
    Held {
        /// The store (not its lock file).
        path: PathBuf,
        holder: Holder,
        waited: Duration,
    },
    #[error("cannot lock the state store {} (lock file {}): {error}", .path.display(), .lock.display())]
    Io {
        path: PathBuf,
        lock: PathBuf,
        error: std::io::Error,
    },
}

fn advice(holder: &Holder) -> &'static str {
    if holder.is_service() {
        "wait for it to finish or stop it (systemctl stop cosell-sync)"
    } else {
        "wait for it to finish and try again"
    }
}

impl LockError {
    /// What an operator can do about it.
    pub fn hint(&self) -> String {
        match self {
            LockError::Held { waited, .. } => format!(
                "only one command that writes may use a state store at a time; this one waited {} (`state.lock_wait`); read-only commands (status, referrals list, failures list) work meanwhile",
                humantime::format_duration(*waited)
            ),
            LockError::Io { .. } => {
                "check that the directory of state.path is writable (systemd: StateDirectory=)"
                    .to_owned()
            }
        }
    }
}

/// The exclusive writer lock on a state store; released when dropped (or
/// by the kernel when the process dies).
#[derive(Debug)]
pub struct StoreLock {
    file: File,
    path: PathBuf,
    holder: Holder,
}

impl StoreLock {
    /// Takes the lock of the store at `store` for `command`, trying again
    /// every 100 ms for up to `wait` (zero: one try) while another process
    /// holds it. Blocks the calling thread while it waits.
    pub fn acquire(store: &Path, command: &str, wait: Duration) -> Result<StoreLock, LockError> {
        let path = lock_path(store);
        let io = |error| LockError::Io {
            path: store.to_path_buf(),
            lock: path.clone(),
            error,
        };
        if let Some(dir) = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && !d.exists())
        {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        // Never truncated on open: the file may name the current holder.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let deadline = Instant::now() + wait;
        let mut last_known = Holder::default();
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
            }
            let holder = Holder::read(&path);
            let now = Instant::now();
            if now >= deadline {
                // An empty file is a holder between locking and writing;
                // what it said a moment ago is the better answer.
                let holder = if holder.is_known() {
                    holder
                } else {
                    last_known
                };
                return Err(LockError::Held {
                    path: store.to_path_buf(),
                    holder,
                    waited: wait,
                });
            }
            if holder.is_known() {
                if holder != last_known {
                    tracing::info!(
                        store = %store.display(),
                        %holder,
                        wait = %humantime::format_duration(wait),
                        "the state store is in use by another writer; waiting for it"
                    );
                }
                last_known = holder;
            }
            std::thread::sleep(POLL.min(deadline - now));
        }
        let holder = Holder::this_process(command);
        let mut lock = StoreLock {
            file,
            path: path.clone(),
            holder,
        };
        lock.write_holder().map_err(io)?;
        Ok(lock)
    }

    fn write_holder(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(self.holder.render().as_bytes())?;
        self.file.flush()
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What this process wrote into the lock file.
    pub fn holder(&self) -> &Holder {
        &self.holder
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        // Still locked here: clear the record so the file does not name a
        // finished process; closing the file then releases the lock.
        let _ = self.file.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_in(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("cosell-sync.db")
    }

    #[test]
    fn the_lock_file_sits_beside_the_store() {
        assert_eq!(
            lock_path(Path::new("/var/lib/cosell-sync/cosell-sync.db")),
            PathBuf::from("/var/lib/cosell-sync/cosell-sync.db.lock")
        );
        assert_eq!(
            lock_path(Path::new("state.db")),
            PathBuf::from("state.db.lock")
        );
    }

    #[test]
    fn two_opens_in_one_process_conflict() {
        // flock(2) locks belong to the open file description, not the
        // process: two opens of one file exclude each other, which is what
        // makes these in-process tests meaningful.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.lock");
        let a = File::create(&path).unwrap();
        let b = OpenOptions::new().write(true).open(&path).unwrap();
        a.try_lock().unwrap();
        assert!(matches!(
            b.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        drop(a);
        b.try_lock().unwrap();
    }

    #[test]
    fn the_holder_is_recorded_and_a_second_writer_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir);
        let first = StoreLock::acquire(&store, "run", Duration::ZERO).unwrap();
        let on_disk = Holder::read(&lock_path(&store));
        assert_eq!(on_disk.pid, Some(std::process::id()));
        assert_eq!(on_disk.command.as_deref(), Some("run"));
        let since = on_disk.since.unwrap();
        assert!((Utc::now() - since).num_seconds().abs() < 60);
        assert_eq!(first.holder().command, on_disk.command);

        let err = StoreLock::acquire(&store, "sync --once", Duration::ZERO).unwrap_err();
        let LockError::Held { path, holder, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(path, &store);
        assert_eq!(holder, &on_disk);
        let message = err.to_string();
        assert_eq!(
            message,
            format!(
                "the state store {} is in use by pid {} (run) since {}; wait for it to finish or stop it (systemctl stop cosell-sync)",
                store.display(),
                std::process::id(),
                since.to_rfc3339_opts(SecondsFormat::Secs, true)
            )
        );
        assert!(err.hint().contains("state.lock_wait"), "{}", err.hint());
        // The refused writer did not touch the holder's record.
        assert_eq!(Holder::read(&lock_path(&store)), on_disk);
    }

    #[test]
    fn a_released_lock_is_taken_again_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir);
        let first = StoreLock::acquire(&store, "failures retry 3", Duration::ZERO).unwrap();
        drop(first);
        assert_eq!(
            std::fs::read_to_string(lock_path(&store)).unwrap(),
            "",
            "a released lock names nobody"
        );
        let second = StoreLock::acquire(&store, "resync", Duration::ZERO).unwrap();
        assert_eq!(
            Holder::read(second.path()).command.as_deref(),
            Some("resync")
        );
    }

    #[test]
    fn a_waiting_writer_proceeds_when_the_holder_finishes_within_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir);
        let first = StoreLock::acquire(&store, "sync --once", Duration::ZERO).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(first);
        });
        let started = Instant::now();
        let second = StoreLock::acquire(&store, "resync", Duration::from_secs(20)).unwrap();
        let took = started.elapsed();
        release.join().unwrap();
        assert!(took >= Duration::from_millis(250), "it waited: {took:?}");
        assert!(
            took < Duration::from_secs(10),
            "not the whole wait: {took:?}"
        );
        assert_eq!(second.holder().command.as_deref(), Some("resync"));
    }

    #[test]
    fn a_writer_gives_up_after_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir);
        let _first = StoreLock::acquire(&store, "sync --once", Duration::ZERO).unwrap();
        let started = Instant::now();
        let err =
            StoreLock::acquire(&store, "sync --once", Duration::from_millis(400)).unwrap_err();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(400), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        let LockError::Held { waited, holder, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(*waited, Duration::from_millis(400));
        assert_eq!(holder.command.as_deref(), Some("sync --once"));
        assert!(
            err.to_string()
                .ends_with("; wait for it to finish and try again"),
            "no systemctl advice for a one-off command: {err}"
        );
    }

    #[test]
    fn an_unreadable_holder_file_still_gives_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir);
        let lock = lock_path(&store);
        // Another process holds the lock but its file says nothing useful.
        let other = File::create(&lock).unwrap();
        other.try_lock().unwrap();
        for garbage in [
            &b""[..],
            b"\xff\xfe\x00garbage",
            b"pid=-3\ncommand=\nsince=yesterday\n",
        ] {
            std::fs::write(&lock, garbage).unwrap();
            let err = StoreLock::acquire(&store, "resync", Duration::ZERO).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "the state store {} is in use by another cosell-sync process (its lock file does not say which); wait for it to finish and try again",
                    store.display()
                )
            );
        }
        // What is readable is used, the rest left out.
        std::fs::write(
            &lock,
            "pid=77\nsince=not a time\nextra line\ncommand=run\x1b[2J\n",
        )
        .unwrap();
        let err = StoreLock::acquire(&store, "resync", Duration::ZERO).unwrap_err();
        let LockError::Held { holder, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(
            holder,
            &Holder {
                pid: Some(77),
                command: Some("run[2J".into()),
                since: None
            }
        );
        assert!(
            err.to_string().contains("in use by pid 77 (run[2J);"),
            "{err}"
        );
    }

    #[test]
    fn holder_text_round_trips() {
        let h = Holder {
            pid: Some(4242),
            command: Some("sync --once".into()),
            since: DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z")
                .ok()
                .map(|d| d.with_timezone(&Utc)),
        };
        assert_eq!(
            h.render(),
            "pid=4242\ncommand=sync --once\nsince=2026-12-02T10:00:00Z\n"
        );
        assert_eq!(Holder::parse(&h.render()), h);
        assert_eq!(
            h.to_string(),
            "pid 4242 (sync --once) since 2026-12-02T10:00:00Z"
        );
    }

    #[test]
    fn the_store_directory_is_created_for_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("new").join("dir").join("state.db");
        let lock = StoreLock::acquire(&store, "run", Duration::ZERO).unwrap();
        assert!(lock.path().exists());
    }
}
