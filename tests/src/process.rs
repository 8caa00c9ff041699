//! Child processes that cannot leak: [`ProcessGuard`].
//!
//! Every child is started in its own process group, with stdout and stderr captured to a log
//! file, and the whole group is killed when the guard is dropped — also when the test panics.
//! A test process that is itself killed (a nextest timeout, Ctrl-C) runs no destructors, so every
//! group is also registered with a tiny watchdog process that kills the groups still registered
//! when the test process goes away.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions, kill_process, kill_process_group};
use tempfile::TempDir;

/// How many log lines error messages and panic reports include.
pub(crate) const TAIL_LINES: usize = 40;

/// How often waits poll.
const POLL: Duration = Duration::from_millis(20);

/// A running child process, in its own process group, with its output captured to a log file.
///
/// Dropping the guard kills the whole process group with SIGKILL and reaps the child, so
/// nothing outlives the test, not even grandchildren. When the guard is dropped during a panic,
/// the tail of the log is printed to stderr, where the test runner shows it.
///
/// The exited child is not reaped before the guard is dropped: its process id, which is also the
/// id of its process group, stays reserved until then, so signalling the group is always safe.
///
/// Set `SHARDYARD_TEST_LOG_DIR` to keep the log files in that directory (for CI artifacts);
/// by default they live in a temporary directory removed with the guard.
#[derive(Debug)]
pub struct ProcessGuard {
    name: String,
    child: Child,
    pid: Pid,
    /// The exit status, once the child has exited (the child is still a zombie then).
    status: Option<ExitStatus>,
    log_path: PathBuf,
    _log_dir: Option<TempDir>,
}

impl ProcessGuard {
    /// Spawns `command` in its own process group, with stdin closed and stdout and stderr
    /// appended to a log file. `name` identifies the process in logs and error messages.
    pub fn spawn(name: impl Into<String>, command: Command) -> anyhow::Result<Self> {
        let name = name.into();
        let (log_dir, log_path) = log_file_path(&name)?;
        Self::spawn_inner(name, command, log_dir, log_path)
    }

    /// Like [`spawn`](Self::spawn), but appends the output to `log_path`, which the caller
    /// keeps (so one log can span several runs of a process).
    pub fn spawn_with_log(
        name: impl Into<String>,
        command: Command,
        log_path: &Path,
    ) -> anyhow::Result<Self> {
        Self::spawn_inner(name.into(), command, None, log_path.to_path_buf())
    }

    fn spawn_inner(
        name: String,
        mut command: Command,
        log_dir: Option<TempDir>,
        log_path: PathBuf,
    ) -> anyhow::Result<Self> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot create log file {}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .context("cannot duplicate the log file handle")?;
        command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name}: {command:?}"))?;
        let pid = Pid::from_child(&child);
        watchdog::register(pid);
        Ok(Self {
            name,
            child,
            pid,
            status: None,
            log_path,
            _log_dir: log_dir,
        })
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's process id, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file holding the child's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the child has written so far (lossy UTF-8).
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log(), lines)
    }

    /// The exit status if the child has exited, without waiting. The child stays a zombie
    /// (its process group id reserved) until the guard is dropped.
    pub fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
            let status = rustix::process::waitid(WaitId::Pid(self.pid), options)
                .with_context(|| format!("waitid({}) for {}", self.pid(), self.name))?;
            self.status = status.and_then(|s| {
                let raw = match (s.exit_status(), s.terminating_signal()) {
                    (Some(code), _) => (code & 0xff) << 8,
                    (None, Some(signal)) => signal | if s.dumped() { 0x80 } else { 0 },
                    (None, None) => return None,
                };
                Some(ExitStatus::from_raw(raw))
            });
        }
        Ok(self.status)
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// Sends SIGTERM to the child (not its group), as Kubernetes does when it stops a pod.
    pub fn sigterm(&mut self) -> anyhow::Result<()> {
        self.signal(Signal::TERM)
    }

    /// Sends SIGINT to the child (not its group).
    pub fn sigint(&mut self) -> anyhow::Result<()> {
        self.signal(Signal::INT)
    }

    fn signal(&mut self, signal: Signal) -> anyhow::Result<()> {
        if let Some(status) = self.try_wait()? {
            bail!(
                "cannot send {signal:?} to {}: it already exited ({status})\n{}",
                self.name,
                self.log_report()
            );
        }
        kill_process(self.pid, signal)
            .with_context(|| format!("cannot send {signal:?} to {} ({})", self.name, self.pid()))
    }

    /// Kills the whole process group with SIGKILL (a crash, no clean-up) and returns the child's
    /// exit status.
    pub fn kill_9(&mut self) -> anyhow::Result<ExitStatus> {
        kill_group(self.pid);
        self.wait_exit_blocking(Duration::from_secs(10))
    }

    /// Waits up to `timeout` for the child to exit; the error includes the log tail.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited_by(deadline, timeout)? {
                return Ok(status);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// [`wait_exit`](Self::wait_exit) for code outside an async runtime.
    pub fn wait_exit_blocking(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited_by(deadline, timeout)? {
                return Ok(status);
            }
            std::thread::sleep(POLL);
        }
    }

    /// One poll of the wait loops: the status once exited, an error past the deadline.
    fn exited_by(
        &mut self,
        deadline: Instant,
        timeout: Duration,
    ) -> anyhow::Result<Option<ExitStatus>> {
        if let Some(status) = self.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not exit within {timeout:?}\n{}",
                self.name,
                self.log_report()
            );
        }
        Ok(None)
    }

    /// Graceful stop: SIGTERM, then SIGKILL to the group if the child is still running after
    /// `grace`. Returns the exit status. Succeeds immediately if the child already exited.
    pub async fn terminate(&mut self, grace: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        // The child may exit between the check and the signal; it is a zombie then, so the
        // signal still reaches our own process and is harmless.
        let _ = kill_process(self.pid, Signal::TERM);
        match self.wait_exit(grace).await {
            Ok(status) => Ok(status),
            Err(_) => self.kill_9(),
        }
    }

    /// Waits up to `timeout` until the log contains `needle`. Fails early, with the log tail,
    /// if the child exits first.
    pub async fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.try_wait()? {
                // It may have logged the line just before exiting.
                if self.log().contains(needle) {
                    return Ok(());
                }
                bail!(
                    "{} exited ({status}) before logging {needle:?}\n{}",
                    self.name,
                    self.log_report()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not log {needle:?} within {timeout:?}\n{}",
                    self.name,
                    self.log_report()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Process ids of the live (non-zombie) processes in the child's process group, the child
    /// included: after the child exits, whatever it left behind.
    pub fn group_members(&self) -> Vec<u32> {
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        let pgid = self.pid();
        let mut members: Vec<u32> = entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| {
                proc_stat(pid).is_some_and(|(state, group)| group == pgid && !is_dead(state))
            })
            .collect();
        members.sort_unstable();
        members
    }

    /// A block for error messages: where the log is and its last lines.
    pub fn log_report(&self) -> String {
        format!(
            "--- last {TAIL_LINES} lines of {} log ({}) ---\n{}\n--- end of {} log ---",
            self.name,
            self.log_path.display(),
            self.log_tail(TAIL_LINES),
            self.name
        )
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        // The group id is still reserved: the child is alive or an unreaped zombie.
        kill_group(self.pid);
        let _ = self.child.wait();
        watchdog::unregister(self.pid);
        if std::thread::panicking() {
            eprintln!("{}", self.log_report());
        }
    }
}

fn kill_group(pid: Pid) {
    // ESRCH when the group is already empty, which is fine.
    let _ = kill_process_group(pid, Signal::KILL);
}

/// Whether a process with this id exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| !is_dead(state))
}

fn is_dead(state: char) -> bool {
    matches!(state, 'Z' | 'X' | 'x')
}

/// State letter and process group id from `/proc/<pid>/stat`.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp ..."; comm may contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// The last `lines` lines of a log, without backtrace frames: a process that exits with an error
/// under `RUST_BACKTRACE` prints dozens of frames after the one line that says what went wrong,
/// and a short tail would show only the frames.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text
        .lines()
        .filter(|line| !is_backtrace_frame(line))
        .collect();
    let start = all.len().saturating_sub(lines);
    let mut out = String::new();
    for line in &all[start..] {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// `  12: std::rt::lang_start` and its `             at /rustc/…` line.
fn is_backtrace_frame(line: &str) -> bool {
    let trimmed = line.trim_start();
    if trimmed.len() == line.len() {
        return false;
    }
    trimmed.starts_with("at ")
        || trimmed.split_once(": ").is_some_and(|(number, _)| {
            !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())
        })
}

pub(crate) fn log_file_path(name: &str) -> anyhow::Result<(Option<TempDir>, PathBuf)> {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if let Some(dir) = std::env::var_os("SHARDYARD_TEST_LOG_DIR") {
        let dir = PathBuf::from(dir);
        fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create SHARDYARD_TEST_LOG_DIR {}", dir.display()))?;
        let file = tempfile::Builder::new()
            .prefix(&format!("{safe}-"))
            .suffix(".log")
            .tempfile_in(&dir)
            .context("cannot create a log file")?;
        let (_, path) = file.keep().context("cannot keep the log file")?;
        return Ok((None, path));
    }
    let dir = tempfile::Builder::new()
        .prefix(&format!("shardyard-test-{safe}-"))
        .tempdir()
        .context("cannot create a temporary log directory")?;
    let path = dir.path().join(format!("{safe}.log"));
    Ok((Some(dir), path))
}

/// The watchdog: a `sh` in its own process group that reads `+PGID` / `-PGID` lines on stdin
/// and, when stdin closes because this test process is gone (however it ended), kills every
/// group still registered.
mod watchdog {
    use super::*;

    const SCRIPT: &str = r#"
groups=""
while read -r line; do
  case "$line" in
    +*) groups="$groups ${line#+}" ;;
    -*) keep=""; for g in $groups; do [ "$g" = "${line#-}" ] || keep="$keep $g"; done; groups="$keep" ;;
  esac
done
for g in $groups; do kill -9 -"$g" 2>/dev/null; done
"#;

    struct Watchdog {
        stdin: Mutex<ChildStdin>,
        // Never waited for: it outlives this process on purpose.
        _child: Child,
    }

    fn get() -> Option<&'static Watchdog> {
        static WATCHDOG: OnceLock<Option<Watchdog>> = OnceLock::new();
        WATCHDOG
            .get_or_init(|| {
                let mut child = Command::new("sh")
                    .arg("-c")
                    .arg(SCRIPT)
                    .process_group(0)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| eprintln!("shardyard-tests: cannot start the watchdog: {e}"))
                    .ok()?;
                let stdin = child.stdin.take()?;
                Some(Watchdog {
                    stdin: Mutex::new(stdin),
                    _child: child,
                })
            })
            .as_ref()
    }

    fn send(line: &str) {
        if let Some(watchdog) = get() {
            let mut stdin = watchdog
                .stdin
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Best effort: without the watchdog, Drop still cleans up.
            let _: io::Result<()> = stdin.write_all(line.as_bytes());
        }
    }

    pub(super) fn register(pgid: Pid) {
        send(&format!("+{}\n", pgid.as_raw_nonzero()));
    }

    pub(super) fn unregister(pgid: Pid) {
        send(&format!("-{}\n", pgid.as_raw_nonzero()));
    }
}

#[cfg(test)]
mod tests {
    use super::tail;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail("a\nb", 5), "a\nb\n");
        assert_eq!(tail("", 3), "");
    }

    #[test]
    fn tail_leaves_out_backtrace_frames() {
        let log = "Error: binding the HTTP API on 127.0.0.1:34915\n\nCaused by:\n    \
                   Address already in use (os error 98)\n\nStack backtrace:\n   \
                   0: anyhow::error::<impl anyhow::Error>::msg\n             \
                   at /rustc/abc/library/std/src/rt.rs:206:18\n  41: _start\n";
        let tail = tail(log, 4);
        assert!(tail.contains("Address already in use"), "{tail}");
        assert!(!tail.contains("_start"), "{tail}");
    }
}
