//! A cgroup of the test node's own (`/<name>` in every hierarchy), the node's kubelet puts its
//! pods under (`cgroupRoot`) and containerd with its shims runs in: so two test nodes never share
//! `/kubepods`, and everything a node started is found and killed by its cgroup, shims and
//! containers included, which outlive the processes that started them.
//!
//! cgroup v1 (this machine: one hierarchy per controller) and v2 (one unified hierarchy) both
//! work. A node whose test process was killed leaves its cgroup behind; the next node sweeps up
//! every such cgroup whose network namespace slot is no longer locked ([`sweep_abandoned`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::netns::TestNetns;

const ROOT: &str = "/sys/fs/cgroup";

/// `/<name>` in every cgroup hierarchy; everything in it is killed and it is removed on drop.
#[derive(Debug)]
pub(crate) struct NodeCgroup {
    name: String,
    /// The cgroup's folder in each hierarchy.
    dirs: Vec<PathBuf>,
}

impl NodeCgroup {
    /// Creates `/<name>` (and `/<name>/runtime`, for containerd) in every hierarchy, after
    /// killing and removing one left by an earlier holder of the name.
    pub(crate) fn create(name: &str) -> anyhow::Result<Self> {
        let hierarchies = hierarchies()?;
        anyhow::ensure!(!hierarchies.is_empty(), "no cgroup hierarchy under {ROOT}");
        let cgroup = Self {
            name: name.to_owned(),
            dirs: hierarchies.iter().map(|h| h.join(name)).collect(),
        };
        cgroup.destroy();
        for (hierarchy, dir) in hierarchies.iter().zip(&cgroup.dirs) {
            for dir in [dir.clone(), dir.join("runtime")] {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating the cgroup {}", dir.display()))?;
                inherit_cpuset(hierarchy, &dir)?;
            }
        }
        if let Some(unified) = cgroup
            .dirs
            .iter()
            .find(|d| d.join("cgroup.controllers").exists())
        {
            delegate_controllers(unified)?;
        }
        Ok(cgroup)
    }

    /// The cgroup's path as the kubelet's `cgroupRoot` takes it: `/<name>`.
    pub(crate) fn path(&self) -> String {
        format!("/{}", self.name)
    }

    /// Moves process `pid` into `/<name>/runtime` in every hierarchy (the processes it starts
    /// from then on are born there).
    pub(crate) fn adopt_runtime(&self, pid: u32) -> anyhow::Result<()> {
        for dir in &self.dirs {
            let procs = dir.join("runtime/cgroup.procs");
            std::fs::write(&procs, pid.to_string())
                .with_context(|| format!("moving {pid} into {}", procs.display()))?;
        }
        Ok(())
    }

    /// Kills every process in the cgroup and removes it (deepest folders first), retrying while
    /// the kernel still counts processes that were just killed.
    fn destroy(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut alive = false;
            for dir in self.dirs.iter().filter(|d| d.exists()) {
                for pid in processes(dir) {
                    alive = true;
                    if let Some(pid) = i32::try_from(pid)
                        .ok()
                        .and_then(rustix::process::Pid::from_raw)
                    {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                }
            }
            let removed = self
                .dirs
                .iter()
                .all(|dir| !dir.exists() || remove_tree(dir));
            if (removed && !alive) || Instant::now() > deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NodeCgroup {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// Removes the cgroups of test nodes (`/shardyard-<slot>`) whose test process is gone: their
/// network namespace slot's lock is free ([`TestNetns::if_abandoned`]). Best effort.
pub(crate) fn sweep_abandoned() {
    let Ok(hierarchies) = hierarchies() else {
        return;
    };
    let mut names: Vec<String> = hierarchies
        .iter()
        .filter_map(|h| std::fs::read_dir(h).ok())
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("shardyard-"))
        .collect();
    names.sort();
    names.dedup();
    for name in names {
        TestNetns::if_abandoned(&name, || {
            drop(NodeCgroup {
                dirs: hierarchies.iter().map(|h| h.join(&name)).collect(),
                name: name.clone(),
            });
        });
    }
}

/// Every mounted hierarchy: the folders of `/sys/fs/cgroup` holding `cgroup.procs` (v1, and
/// hybrid's `unified`), or `/sys/fs/cgroup` itself (v2 alone).
fn hierarchies() -> anyhow::Result<Vec<PathBuf>> {
    let root = Path::new(ROOT);
    if root.join("cgroup.controllers").exists() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(root)
        .with_context(|| format!("reading {ROOT}"))?
        .flatten()
        .map(|e| e.path())
        // cpu,cpuacct style symlinks point at a hierarchy listed under its own name too.
        .filter(|p| !p.is_symlink() && p.join("cgroup.procs").exists())
        .collect();
    found.sort();
    Ok(found)
}

/// A v1 cpuset cgroup takes no process until it has CPUs and memory nodes: its parent's.
fn inherit_cpuset(hierarchy: &Path, dir: &Path) -> anyhow::Result<()> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = dir.join(file);
        if !own.exists() || hierarchy.join("cgroup.controllers").exists() {
            continue;
        }
        let parent = dir.parent().context("a cgroup has a parent")?.join(file);
        let value = std::fs::read_to_string(&parent)
            .with_context(|| format!("reading {}", parent.display()))?;
        if std::fs::read_to_string(&own)?.trim().is_empty() {
            std::fs::write(&own, value.trim())
                .with_context(|| format!("writing {}", own.display()))?;
        }
    }
    Ok(())
}

/// v2: the controllers the kubelet needs, enabled for the cgroup's children.
fn delegate_controllers(dir: &Path) -> anyhow::Result<()> {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers"))?;
    let enable: Vec<String> = available
        .split_whitespace()
        .map(|c| format!("+{c}"))
        .collect();
    if !enable.is_empty() {
        std::fs::write(dir.join("cgroup.subtree_control"), enable.join(" "))
            .with_context(|| format!("delegating controllers under {}", dir.display()))?;
    }
    Ok(())
}

/// Every process in `dir` and below.
fn processes(dir: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for child in subdirs(dir) {
        pids.extend(processes(&child));
    }
    pids
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

/// Removes `dir` and its children, deepest first; whether it is gone.
fn remove_tree(dir: &Path) -> bool {
    for child in subdirs(dir) {
        remove_tree(&child);
    }
    std::fs::remove_dir(dir).is_ok() || !dir.exists()
}
