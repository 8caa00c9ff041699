//! shardyard's image (issue 17), as `scripts/image` builds it without a Docker engine: a
//! well-formed OCI image archive (every blob matches its digest and size), the config the
//! Dockerfile gives (user 65532, the entrypoint), and an entrypoint that runs with nothing
//! else in its root file system: the binary is static.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use serde_json::Value;
use shardyard_tests::repo_root;

/// The archive `scripts/test` built (`SHARDYARD_IMAGE_ARCHIVE`), else one built now.
fn image_archive() -> anyhow::Result<PathBuf> {
    Ok(shardyard_tests::images::shardyard_image()?.path)
}

fn run(command: &mut Command) -> anyhow::Result<String> {
    let output = command.output().with_context(|| format!("{command:?}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{command:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

fn sha256(path: &Path) -> anyhow::Result<String> {
    let out = run(Command::new("sha256sum").arg(path))?;
    Ok(format!(
        "sha256:{}",
        out.split_whitespace().next().context("sha256sum")?
    ))
}

/// A blob of the layout, checked against its descriptor.
fn blob(layout: &Path, descriptor: &Value) -> anyhow::Result<PathBuf> {
    let digest = descriptor["digest"].as_str().context("a digest")?;
    let path = layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").context("sha256")?);
    assert_eq!(
        sha256(&path)?,
        digest,
        "{} matches its digest",
        path.display()
    );
    assert_eq!(
        Some(std::fs::metadata(&path)?.len()),
        descriptor["size"].as_u64(),
        "{} has its size",
        path.display()
    );
    Ok(path)
}

/// An image archive, unpacked and checked: its name, every blob against its descriptor, its
/// config, and its root file system (the one layer, extracted into `into/root`).
struct Unpacked {
    name: String,
    config: Value,
    root: PathBuf,
}

fn unpack(archive: &Path, into: &Path) -> anyhow::Result<Unpacked> {
    let layout = into.join("layout");
    std::fs::create_dir_all(&layout)?;
    run(Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(&layout))?;
    let oci_layout: Value = serde_json::from_slice(&std::fs::read(layout.join("oci-layout"))?)?;
    assert_eq!(oci_layout["imageLayoutVersion"], "1.0.0");
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
    let entry = &index["manifests"][0];
    let name = entry["annotations"]["io.containerd.image.name"]
        .as_str()
        .context("the image's name")?
        .to_owned();
    let manifest: Value = serde_json::from_slice(&std::fs::read(blob(&layout, entry)?)?)?;
    let config: Value =
        serde_json::from_slice(&std::fs::read(blob(&layout, &manifest["config"])?)?)?;
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["config"]["User"], "65532:65532", "non-root");
    let layers = manifest["layers"].as_array().context("layers")?;
    assert_eq!(layers.len(), 1);
    let layer = blob(&layout, &layers[0])?;
    // The config's diff_id is the digest of the uncompressed layer.
    let raw = into.join("layer.tar");
    let unzipped = Command::new("gzip").arg("-dc").arg(&layer).output()?;
    anyhow::ensure!(unzipped.status.success(), "the layer is not gzip");
    std::fs::write(&raw, &unzipped.stdout)?;
    assert_eq!(
        config["rootfs"]["diff_ids"][0].as_str(),
        Some(sha256(&raw)?.as_str())
    );
    let root = into.join("root");
    std::fs::create_dir_all(&root)?;
    run(Command::new("tar")
        .arg("-xf")
        .arg(&raw)
        .arg("-C")
        .arg(&root))?;
    Ok(Unpacked { name, config, root })
}

/// `program args…` inside `root`, as the images' user.
fn in_root(root: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("chroot");
    command.arg("--userspec=65532:65532").arg(root).args(args);
    command
}

#[test]
fn the_image_is_a_valid_oci_archive_whose_static_entrypoint_runs_as_nonroot() -> anyhow::Result<()>
{
    let archive = image_archive()?;
    let dir = tempfile::tempdir()?;
    let image = unpack(&archive, dir.path())?;
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        image.name,
        format!("ghcr.io/shardyard/shardyard:{version}"),
        "the chart's and the planner's default image"
    );
    assert_eq!(
        image.config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/shardyard"])
    );

    // The root file system is the layer alone: no libc, no shell. The entrypoint runs there,
    // as the image's user.
    let mut files = Vec::new();
    for entry in walk(&image.root)? {
        files.push(entry.strip_prefix(&image.root)?.display().to_string());
    }
    files.sort();
    assert_eq!(
        files,
        [
            "etc/group",
            "etc/passwd",
            "etc/ssl/certs/ca-certificates.crt",
            "home/nonroot",
            "tmp",
            "usr/local/bin/shardyard"
        ]
    );
    // TLS clients (Discord's API, NATS over TLS) find the CA certificates where the system
    // keeps them, as in the Dockerfile's distroless base: without them the operator cannot
    // start.
    let bundle = std::fs::read_to_string(image.root.join("etc/ssl/certs/ca-certificates.crt"))?;
    assert!(
        bundle.matches("BEGIN CERTIFICATE").count() > 50,
        "a CA bundle"
    );
    let version_line = run(&mut in_root(
        &image.root,
        &["/usr/local/bin/shardyard", "--version"],
    ))?;
    assert_eq!(version_line.trim(), format!("shardyard {version}"));
    // A subcommand that does real work: the CRD, as `shardyard crd` prints it outside.
    let crd = run(&mut in_root(
        &image.root,
        &["/usr/local/bin/shardyard", "crd"],
    ))?;
    let committed =
        std::fs::read_to_string(repo_root().join("crds/discordbots.shardyard.dev.yaml"))?;
    assert_eq!(crd, committed);

    // The pause image, built the same way from the same binary: it holds a pod sandbox until
    // SIGTERM.
    let pause_archive = dir.path().join("pause.oci.tar");
    run(Command::new(repo_root().join("scripts/image"))
        .arg("--pause")
        .arg("--binary")
        .arg(image.root.join("usr/local/bin/shardyard"))
        .arg("--output")
        .arg(&pause_archive))?;
    let pause = unpack(&pause_archive, &dir.path().join("pause"))?;
    assert_eq!(pause.name, format!("ghcr.io/shardyard/pause:{version}"));
    assert_eq!(
        pause.config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/shardyard", "pause"])
    );
    let mut sandbox = in_root(&pause.root, &["/usr/local/bin/shardyard", "pause"])
        .spawn()
        .context("the pause entrypoint")?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(sandbox.try_wait()?.is_none(), "pause waits");
    let pid = rustix::process::Pid::from_raw(i32::try_from(sandbox.id())?).context("pid")?;
    rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let status = loop {
        if let Some(status) = sandbox.try_wait()? {
            break status;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "pause ignored SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "pause exits 0 on SIGTERM: {status:?}");
    Ok(())
}

/// Every file and empty directory under `dir`.
fn walk(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            let inner = walk(&path)?;
            if inner.is_empty() {
                found.push(path);
            } else {
                found.extend(inner);
            }
        } else {
            found.push(path);
        }
    }
    Ok(found)
}
