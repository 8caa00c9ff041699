//! Where the test bed's programs are: the control plane's (`etcd`, `kube-apiserver`,
//! `kube-controller-manager`, `kube-scheduler`, `kubectl`, `helm`) and the node's (`kubelet`,
//! `kube-proxy`, `containerd` with `ctr` and its runc shim, `runc`, the CNI plugins in `cni/`,
//! `coredns` and its image),
//! built from Go modules by `scripts/kube-tools`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::Context as _;

use crate::repo_root;

/// The environment variable naming the folder (`scripts/test` sets it to what
/// `scripts/kube-tools` printed).
pub const KUBE_TOOLS_ENV: &str = "SHARDYARD_KUBE_TOOLS";

/// The programs (and the one image) the folder must hold.
pub const PROGRAMS: [&str; 18] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "helm",
    "kubelet",
    "kube-proxy",
    "containerd",
    "ctr",
    "containerd-shim-runc-v2",
    "runc",
    "cni/bridge",
    "cni/host-local",
    "cni/loopback",
    "cni/portmap",
    "coredns",
    COREDNS_IMAGE,
];

/// The cluster DNS's image archive, in the folder.
pub const COREDNS_IMAGE: &str = "images/coredns.oci.tar";

/// The folder holding the test bed's programs: `SHARDYARD_KUBE_TOOLS`, else the last line
/// `scripts/kube-tools` prints (which builds them first when they are missing: a while on a
/// new machine, so `scripts/test` does it once before the tests). Asked once per process.
///
/// # Errors
/// When the folder lacks a program or `scripts/kube-tools` fails.
pub fn kube_tools_dir() -> anyhow::Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| find().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn find() -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os(KUBE_TOOLS_ENV) {
        Some(dir) => PathBuf::from(dir),
        None => build()?,
    };
    check(&dir)?;
    Ok(dir)
}

fn build() -> anyhow::Result<PathBuf> {
    let script = repo_root().join("scripts/kube-tools");
    let output = Command::new(&script)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "{} failed ({}):\n{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout
        .lines()
        .last()
        .context("scripts/kube-tools printed nothing")?;
    Ok(PathBuf::from(last.trim()))
}

fn check(dir: &Path) -> anyhow::Result<()> {
    for program in PROGRAMS {
        let path = dir.join(program);
        anyhow::ensure!(
            path.is_file(),
            "{} is missing: run scripts/kube-tools (or set {KUBE_TOOLS_ENV} to the folder it \
             prints)",
            path.display()
        );
    }
    Ok(())
}
