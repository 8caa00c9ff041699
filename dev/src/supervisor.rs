//! Local processes kept running as the kubelet keeps containers running: each in a process group
//! of its own (Ctrl-C at the terminal reaches dev alone, which stops them in order), its output
//! appended to `<state-dir>/logs/<name>.log`, restarted with backoff when it dies (1 s, doubling
//! to 30 s; back to 1 s after a minute up), stopped with SIGTERM and, after its grace period,
//! SIGKILL. Readiness is polled from its `/readyz` every second.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::local::EnvValue;

/// The first wait before a restart.
const BACKOFF_START: Duration = Duration::from_secs(1);
/// The longest.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Up this long, a process's next restart waits [`BACKOFF_START`] again.
const BACKOFF_RESET: Duration = Duration::from_secs(60);
/// How often readiness is polled.
const PROBE_PERIOD: Duration = Duration::from_secs(1);

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Its name (the log file's and the pid file's).
    pub name: String,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its own environment, on top of dev's (without dev's `SHARDYARD_*` variables).
    pub env: Vec<(String, EnvValue)>,
    /// Where `200` means ready.
    pub ready_url: Option<String>,
    /// SIGTERM's grace period.
    pub grace: Duration,
}

/// Something that happened to a process, for the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Started (again), with its pid.
    Started {
        /// The process.
        name: String,
        /// Its pid.
        pid: u32,
        /// How many times it was restarted before.
        restarts: u32,
        /// Where its health is served (its `/readyz` without the path).
        at: Option<String>,
    },
    /// Exited on its own: it will be restarted after `backoff`.
    Died {
        /// The process.
        name: String,
        /// How it ended.
        status: String,
        /// The wait before it starts again.
        backoff: Duration,
    },
    /// Could not be started.
    SpawnFailed {
        /// The process.
        name: String,
        /// Why.
        reason: String,
    },
    /// Stopped on purpose.
    Stopped {
        /// The process.
        name: String,
        /// How it ended.
        status: String,
    },
}

/// What is known of a running process.
#[derive(Debug, Default)]
pub struct Health {
    pid: AtomicU32,
    running: AtomicBool,
    ready: AtomicBool,
    restarts: AtomicU32,
}

impl Health {
    /// Its pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.running
            .load(Ordering::Relaxed)
            .then(|| self.pid.load(Ordering::Relaxed))
    }

    /// Whether it runs.
    pub fn running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    /// Whether its `/readyz` said 200 last.
    pub fn ready(&self) -> bool {
        self.running() && self.ready.load(Ordering::Relaxed)
    }

    /// Restarts after it died.
    pub fn restarts(&self) -> u32 {
        self.restarts.load(Ordering::Relaxed)
    }
}

struct Managed {
    launch: Launch,
    health: Arc<Health>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The processes dev runs.
pub struct Supervisor {
    logs: PathBuf,
    pids: PathBuf,
    processes: BTreeMap<String, Managed>,
    /// Processes told to stop that may not have exited yet.
    stopping: BTreeMap<String, JoinHandle<()>>,
    notices: mpsc::UnboundedSender<Notice>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("processes", &self.processes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// A supervisor writing logs under `state_dir/logs` and pid files under `state_dir/run`.
    ///
    /// # Errors
    /// When the directories cannot be made.
    pub fn new(state_dir: &Path, notices: mpsc::UnboundedSender<Notice>) -> std::io::Result<Self> {
        let logs = state_dir.join("logs");
        let pids = state_dir.join("run");
        std::fs::create_dir_all(&logs)?;
        std::fs::create_dir_all(&pids)?;
        Ok(Self {
            logs,
            pids,
            processes: BTreeMap::new(),
            stopping: BTreeMap::new(),
            notices,
            http: reqwest::Client::builder()
                .timeout(PROBE_PERIOD)
                .build()
                .unwrap_or_default(),
        })
    }

    /// Kills what a previous dev left running (it was killed itself, so could not stop them):
    /// the process groups named by the pid files whose process is still the one that was
    /// started (the same start time, so a reused pid is left alone). Returns their names.
    pub fn kill_leftovers(state_dir: &Path) -> Vec<String> {
        let mut killed = Vec::new();
        let Ok(entries) = std::fs::read_dir(state_dir.join("run")) else {
            return killed;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let mut lines = text.lines();
            let pid = lines.next().and_then(|p| p.trim().parse::<i32>().ok());
            let started = lines.next().and_then(|s| s.trim().parse::<u64>().ok());
            if let (Some(pid), Some(started)) = (pid, started)
                && start_time(pid) == Some(started)
                && let Some(pid) = Pid::from_raw(pid)
            {
                let _ = kill_process_group(pid, Signal::KILL);
                killed.push(
                    path.file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                );
            }
            let _ = std::fs::remove_file(&path);
        }
        killed
    }

    /// Starts `launch` unless a process of its name runs.
    pub fn start(&mut self, launch: Launch) {
        if self.processes.contains_key(&launch.name) {
            return;
        }
        let health = Arc::new(Health::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(keep_running(
            launch.clone(),
            self.logs.join(format!("{}.log", launch.name)),
            self.pids.join(format!("{}.pid", launch.name)),
            Arc::clone(&health),
            stop.clone(),
            self.notices.clone(),
        ));
        if let Some(url) = launch.ready_url.clone() {
            tokio::spawn(probe(
                self.http.clone(),
                url,
                Arc::clone(&health),
                stop.clone(),
            ));
        }
        self.processes.insert(
            launch.name.clone(),
            Managed {
                launch,
                health,
                stop,
                task,
            },
        );
    }

    /// Stops the named processes at once (SIGTERM, then SIGKILL after each one's grace) and
    /// waits until they are gone.
    pub async fn stop(&mut self, names: &[String]) {
        let mut tasks = Vec::new();
        for name in names {
            if let Some(managed) = self.processes.remove(name) {
                managed.stop.cancel();
                tasks.push(managed.task);
            }
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Tells the named processes to stop, without waiting: [`Self::stopping`] says when they
    /// are gone.
    pub fn stop_in_background(&mut self, names: &[String]) {
        for name in names {
            if let Some(managed) = self.processes.remove(name) {
                managed.stop.cancel();
                self.stopping.insert(name.clone(), managed.task);
            }
        }
    }

    /// Whether a process told to stop is still running.
    pub fn stopping(&mut self, name: &str) -> bool {
        match self.stopping.get(name) {
            Some(task) if task.is_finished() => {
                self.stopping.remove(name);
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Waits for every process told to stop in the background.
    pub async fn wait_stopping(&mut self) {
        for (_, task) in std::mem::take(&mut self.stopping) {
            let _ = task.await;
        }
    }

    /// The launch of a process.
    pub fn launch(&self, name: &str) -> Option<&Launch> {
        self.processes.get(name).map(|m| &m.launch)
    }

    /// Its health.
    pub fn health(&self, name: &str) -> Option<Arc<Health>> {
        self.processes.get(name).map(|m| Arc::clone(&m.health))
    }

    /// Every process's name.
    pub fn names(&self) -> Vec<String> {
        self.processes.keys().cloned().collect()
    }

    /// The log file of a process.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }
}

/// The process's whole life: started, restarted when it dies, stopped when `stop` says so.
async fn keep_running(
    launch: Launch,
    log: PathBuf,
    pid_file: PathBuf,
    health: Arc<Health>,
    stop: CancellationToken,
    notices: mpsc::UnboundedSender<Notice>,
) {
    let mut backoff = BACKOFF_START;
    let mut restarts = 0;
    loop {
        let started = Instant::now();
        let mut child = match spawn(&launch, &log) {
            Ok(child) => child,
            Err(error) => {
                let _ = notices.send(Notice::SpawnFailed {
                    name: launch.name.clone(),
                    reason: error.to_string(),
                });
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let pid = child.id().unwrap_or(0);
        let started_at = i32::try_from(pid).ok().and_then(start_time).unwrap_or(0);
        let _ = std::fs::write(&pid_file, format!("{pid}\n{started_at}\n"));
        health.pid.store(pid, Ordering::Relaxed);
        health.ready.store(false, Ordering::Relaxed);
        health.running.store(true, Ordering::Relaxed);
        let _ = notices.send(Notice::Started {
            name: launch.name.clone(),
            pid,
            restarts,
            at: launch.ready_url.as_deref().map(|url| {
                url.split_once("/readyz")
                    .or_else(|| url.split_once("/healthz"))
                    .map_or(url, |(base, _)| base)
                    .to_owned()
            }),
        });
        tokio::select! {
            status = child.wait() => {
                health.running.store(false, Ordering::Relaxed);
                let _ = std::fs::remove_file(&pid_file);
                if stop.is_cancelled() {
                    return;
                }
                if started.elapsed() >= BACKOFF_RESET {
                    backoff = BACKOFF_START;
                }
                let status = status.map_or_else(|e| e.to_string(), describe);
                let _ = notices.send(Notice::Died { name: launch.name.clone(), status, backoff });
                restarts += 1;
                health.restarts.store(restarts, Ordering::Relaxed);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            () = stop.cancelled() => {
                if let Some(pid) = Pid::from_raw(i32::try_from(pid).unwrap_or(0)) {
                    let _ = kill_process_group(pid, Signal::TERM);
                }
                let status = match tokio::time::timeout(launch.grace, child.wait()).await {
                    Ok(status) => status.map_or_else(|e| e.to_string(), describe),
                    Err(_) => {
                        if let Some(pid) = Pid::from_raw(i32::try_from(pid).unwrap_or(0)) {
                            let _ = kill_process_group(pid, Signal::KILL);
                        }
                        let _ = child.wait().await;
                        format!("killed after its {} s grace period", launch.grace.as_secs())
                    }
                };
                health.running.store(false, Ordering::Relaxed);
                let _ = std::fs::remove_file(&pid_file);
                let _ = notices.send(Notice::Stopped { name: launch.name.clone(), status });
                return;
            }
        }
    }
}

/// When the process started, in clock ticks since boot (`/proc/<pid>/stat`, field 22): with the
/// pid, it names one process for good.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

fn spawn(launch: &Launch, log: &Path) -> std::io::Result<tokio::process::Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let err = out.try_clone()?;
    let mut command = Command::new(&launch.program);
    command
        .args(&launch.args)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(true);
    // dev's own settings are dev's: a `SHARDYARD_TOKEN` in its environment reaches only the
    // containers whose pods get the token.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SHARDYARD_") {
            command.env_remove(name);
        }
    }
    for (name, value) in &launch.env {
        command.env(name, value.expose());
    }
    command.spawn()
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(9)) => "killed (SIGKILL)".to_owned(),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => status.to_string(),
    }
}

async fn probe(http: reqwest::Client, url: String, health: Arc<Health>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(PROBE_PERIOD) => {}
            () = stop.cancelled() => return,
        }
        let ready = health.running()
            && http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
        health.ready.store(ready, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt as _;

    use super::*;

    /// A process of its own group, as the supervisor starts them.
    fn sleeper() -> std::process::Child {
        std::process::Command::new("/bin/sh")
            // exec: the process no longer runs the program that was started.
            .args(["-c", "exec sleep 300"])
            .process_group(0)
            .spawn()
            .unwrap()
    }

    #[test]
    fn what_a_killed_dev_left_is_killed_by_its_pid_file_and_a_reused_pid_is_not() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        let (mut left, mut other) = (sleeper(), sleeper());
        let started = |child: &std::process::Child| {
            let pid = i32::try_from(child.id()).unwrap();
            for _ in 0..100 {
                if let Some(at) = start_time(pid) {
                    return (pid, at);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("no /proc/{pid}/stat");
        };
        let (pid, at) = started(&left);
        std::fs::write(dir.path().join("run/left.pid"), format!("{pid}\n{at}\n")).unwrap();
        // A pid file naming a process that started at another time: the pid was reused.
        let (pid, at) = started(&other);
        std::fs::write(
            dir.path().join("run/reused.pid"),
            format!("{pid}\n{}\n", at + 1),
        )
        .unwrap();

        assert_eq!(Supervisor::kill_leftovers(dir.path()), ["left"]);
        let status = left.wait().unwrap();
        assert!(!status.success(), "killed: {status:?}");
        assert!(
            other.try_wait().unwrap().is_none(),
            "the reused pid's process runs on"
        );
        // The pid files are gone: a second look finds nothing.
        assert!(Supervisor::kill_leftovers(dir.path()).is_empty());
        other.kill().unwrap();
        other.wait().unwrap();
    }
}
