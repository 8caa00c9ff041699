//! What the load benches (`tests/benches/`) share: release binaries, knobs from the
//! environment, and a process's CPU and memory from `/proc`.

pub mod receive;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::repo_root;

const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// The environment variable `name` parsed, else `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `<target>/release`: a bench binary lives in `<target>/release/deps/`.
#[must_use]
pub fn release_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| repo_root().join("target/release"))
}

/// Makes sure the bench measures release binaries: unless `SHARDYARD_BIN` is set, runs
/// `cargo build --release <build_args>`, then runs this bench again with `SHARDYARD_BIN`
/// pointing at the release `shardyard` (and `env` set) and exits with its status.
///
/// # Errors
/// When cargo or the second run cannot be started, or the build fails.
pub fn run_on_release_binaries(
    bench: &str,
    build_args: &[&str],
    env: &[(&str, std::ffi::OsString)],
) -> anyhow::Result<()> {
    if std::env::var_os("SHARDYARD_BIN").is_some() {
        return Ok(());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("{bench}: cargo build --release {}", build_args.join(" "));
    let status = Command::new(cargo)
        .args(["build", "--release"])
        .args(build_args)
        .current_dir(repo_root())
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("the release build failed: {status}");
    }
    // The harness finds `shardyard` through SHARDYARD_BIN: run again with it set.
    let status = Command::new(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .env("SHARDYARD_BIN", release_dir().join("shardyard"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .status()
        .context("cannot run the bench again")?;
    std::process::exit(status.code().unwrap_or(1));
}

/// utime + stime of a process (all its threads), in seconds.
///
/// # Errors
/// When `/proc/<pid>/stat` cannot be read or parsed.
pub fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = stat.rsplit_once(')').context("no comm in stat")?.1;
    // After the comm: state (field 3), …, utime (14), stime (15).
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    #[allow(clippy::cast_precision_loss)]
    Ok((utime + stime) as f64 / CLOCK_TICKS_PER_SEC)
}

/// VmRSS of a process, in KiB.
///
/// # Errors
/// When `/proc/<pid>/status` cannot be read or parsed.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("bad VmRSS")?
        .parse()?)
}
