//! @discordjs/rest as a client of the REST proxy: `tests/node/post_messages.cjs` run with the
//! `node` on `PATH` and the package `scripts/test` installs into `.tools/node`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;

use crate::{RestProcess, repo_root};

/// How the script's `REST` client is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscordjsOptions {
    /// `retries: 0, timeout: 30 s`: every request's fate is its first answer.
    Strict,
    /// The library's defaults, as a new user has them (3 retries, a 15 s timeout).
    Defaults,
}

/// `node`'s module path (`.tools/node/node_modules`) and the script.
fn node_script() -> anyhow::Result<(PathBuf, PathBuf)> {
    let modules = repo_root().join(".tools/node/node_modules");
    anyhow::ensure!(
        modules.join("@discordjs/rest/package.json").is_file(),
        "@discordjs/rest is not installed in {}: run scripts/test once (it runs \
         `npm install --prefix .tools/node`)",
        modules.display()
    );
    Ok((modules, repo_root().join("tests/node/post_messages.cjs")))
}

/// Posts `count` messages `<prefix>-<n>` into `channel` at once through the proxy with
/// @discordjs/rest, with its own `token` or none (the proxy injects its own); the script's JSON
/// answer (`ids`, `contents`).
///
/// # Errors
/// When node is missing, the script fails or does not finish within `timeout`.
pub async fn post_messages(
    rest: &RestProcess,
    channel: u64,
    prefix: &str,
    count: u32,
    token: Option<&str>,
    options: DiscordjsOptions,
    timeout: Duration,
) -> anyhow::Result<Value> {
    let (modules, script) = node_script()?;
    let mut command = tokio::process::Command::new("node");
    command
        .arg(&script)
        .arg(format!("http://{}/api", rest.addr()))
        .arg(channel.to_string())
        .arg(prefix)
        .arg(count.to_string())
        .args(token)
        .env("NODE_PATH", &modules)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if options == DiscordjsOptions::Defaults {
        command.env("POST_MESSAGES_DEFAULTS", "1");
    }
    let output = tokio::time::timeout(timeout, command.output())
        .await
        .with_context(|| format!("node did not finish within {timeout:?}"))?
        .context("running node (is it installed?)")?;
    anyhow::ensure!(
        output.status.success(),
        "node failed ({}): {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        rest.log_report()
    );
    serde_json::from_slice(&output.stdout).context("node's output is not JSON")
}
