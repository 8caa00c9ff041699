//! The project's images as OCI image archives (`scripts/image`, no Docker engine): shardyard's,
//! the pause image a test node's containerd starts every pod sandbox with, and nats-server's (the
//! binary the tests already run, packaged the same way) for a bot whose NATS runs in the test
//! cluster. `scripts/test` builds them once and names them in `SHARDYARD_IMAGE_ARCHIVE`,
//! `SHARDYARD_PAUSE_ARCHIVE` and `SHARDYARD_NATS_ARCHIVE`; without those, the first test that
//! asks builds them (once per test process).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::Context as _;

use crate::repo_root;

/// Names shardyard's image archive.
pub const IMAGE_ARCHIVE_ENV: &str = "SHARDYARD_IMAGE_ARCHIVE";
/// Names the pause image's archive.
pub const PAUSE_ARCHIVE_ENV: &str = "SHARDYARD_PAUSE_ARCHIVE";
/// Names nats-server's image archive.
pub const NATS_ARCHIVE_ENV: &str = "SHARDYARD_NATS_ARCHIVE";

/// An image archive and the name (`repository:tag`) it is imported under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageArchive {
    /// The `.oci.tar` file.
    pub path: PathBuf,
    /// What containerd names it on import (the `io.containerd.image.name` annotation).
    pub name: String,
}

/// shardyard's image.
///
/// # Errors
/// When `scripts/image` fails or the archive is unreadable.
pub fn shardyard_image() -> anyhow::Result<ImageArchive> {
    static IMAGE: OnceLock<Result<ImageArchive, String>> = OnceLock::new();
    cached(&IMAGE, IMAGE_ARCHIVE_ENV, || build(&[]))
}

/// The pause image.
///
/// # Errors
/// As [`shardyard_image`].
pub fn pause_image() -> anyhow::Result<ImageArchive> {
    static IMAGE: OnceLock<Result<ImageArchive, String>> = OnceLock::new();
    cached(&IMAGE, PAUSE_ARCHIVE_ENV, || build(&["--pause"]))
}

/// nats-server's image (`shardyard.test/nats-server:<its version>`, the binary at
/// [`crate::nats_server_bin`]), entrypoint `nats-server`.
///
/// # Errors
/// As [`shardyard_image`].
pub fn nats_image() -> anyhow::Result<ImageArchive> {
    static IMAGE: OnceLock<Result<ImageArchive, String>> = OnceLock::new();
    cached(&IMAGE, NATS_ARCHIVE_ENV, build_nats)
}

/// As `scripts/test` builds it: tagged with the binary's version, into the target folder.
fn build_nats() -> anyhow::Result<PathBuf> {
    let binary = crate::nats_server_bin()?;
    build(&[
        "--binary",
        binary.to_str().context("nats-server's path")?,
        "--program",
        "nats-server",
        "--name",
        "shardyard.test/nats-server",
    ])
}

/// The archive `env` names, else the one `build` makes; once per process either way.
fn cached(
    cell: &OnceLock<Result<ImageArchive, String>>,
    env: &str,
    build: impl FnOnce() -> anyhow::Result<PathBuf>,
) -> anyhow::Result<ImageArchive> {
    cell.get_or_init(|| {
        let path = std::env::var_os(env).map_or_else(build, |path| Ok(PathBuf::from(path)));
        path.and_then(|path| {
            Ok(ImageArchive {
                name: image_name(&path)?,
                path,
            })
        })
        .map_err(|e| format!("{e:#}"))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

fn build(args: &[&str]) -> anyhow::Result<PathBuf> {
    let output = Command::new(repo_root().join("scripts/image"))
        .args(args)
        .output()
        .context("running scripts/image")?;
    anyhow::ensure!(
        output.status.success(),
        "scripts/image {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout)?;
    Ok(PathBuf::from(
        stdout
            .lines()
            .last()
            .context("scripts/image printed no path")?,
    ))
}

/// The name an archive's `index.json` gives its image (`io.containerd.image.name`).
///
/// # Errors
/// When the archive has no `index.json` or it names no image.
pub fn image_name(archive: &Path) -> anyhow::Result<String> {
    let output = Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .arg("index.json")
        .output()
        .context("running tar")?;
    anyhow::ensure!(
        output.status.success(),
        "no index.json in {}: {}",
        archive.display(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let index: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("index.json is JSON")?;
    index["manifests"][0]["annotations"]["io.containerd.image.name"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("{} names no image", archive.display()))
}
