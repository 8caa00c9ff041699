//! Offline checks of everything shardyard asks users to apply (issue 14): what the chart renders
//! and what `shardyard plan` prints for each example are valid for Kubernetes 1.29 and 1.33
//! (kubernetes-validate, strict: an unknown field fails too), the examples pass the CRD's schema
//! and rules, and a deliberately broken bot does not. The validator itself must be able to
//! fail: a broken Deployment is refused.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context as _;
use shardyard_tests::kube_cluster::{kube_tools_dir, succeeded};
use shardyard_tests::{SimArgs, SimProcess, repo_root, shardyard_bin};

/// The Kubernetes releases the chart and the planned objects must be valid for.
const VERSIONS: [&str; 2] = ["1.29", "1.33"];

fn kubernetes_validate() -> anyhow::Result<PathBuf> {
    let bin = repo_root().join(".tools/venv/bin/kubernetes-validate");
    anyhow::ensure!(
        bin.is_file(),
        "{} is missing: scripts/test installs it",
        bin.display()
    );
    Ok(bin)
}

/// `kubernetes-validate --strict -k VERSION` on `yaml`: whether it passed, and what it said.
fn validate(yaml: &str, version: &str) -> anyhow::Result<(bool, String)> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("manifests.yaml");
    std::fs::write(&file, yaml)?;
    let output = Command::new(kubernetes_validate()?)
        .args(["--strict", "--quiet", "-k", version])
        .arg(&file)
        .output()
        .context("running kubernetes-validate")?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status.success(), said))
}

#[test]
fn a_broken_deployment_is_refused_so_the_checks_below_can_fail() -> anyhow::Result<()> {
    let broken = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: two\n  \
                  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    \
                  spec: {containers: [{name: c, image: i}]}\n";
    for version in VERSIONS {
        let (passed, said) = validate(broken, version)?;
        assert!(
            !passed,
            "{version}: a Deployment with replicas: two passed: {said}"
        );
        assert!(said.contains("spec.replicas"), "{said}");
    }
    Ok(())
}

#[test]
fn what_the_chart_renders_is_valid_for_each_kubernetes_release() -> anyhow::Result<()> {
    let helm = kube_tools_dir()?.join("helm");
    let home = tempfile::tempdir()?;
    let chart = repo_root().join("charts/shardyard");
    for values in [
        &[][..],
        &[
            "--set",
            "metrics.serviceMonitor.enabled=false",
            "--set",
            "operator.replicas=3",
        ][..],
        &["--set", "metricsAdapter.enabled=false"][..],
    ] {
        let output = Command::new(&helm)
            .args(["template", "sy"])
            .arg(&chart)
            .args(["--namespace", "shardyard"])
            .args(values)
            .env("HOME", home.path())
            .output()?;
        let rendered = succeeded(&output)?;
        for version in VERSIONS {
            let (passed, said) = validate(&rendered, version)?;
            assert!(passed, "the chart is not valid for {version}: {said}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn what_plan_prints_for_each_example_is_valid_and_a_broken_bot_is_refused()
-> anyhow::Result<()> {
    let sim = SimProcess::start(SimArgs {
        guilds: 2500,
        ..SimArgs::default()
    })
    .await?;
    let examples = repo_root().join("config/examples");
    let mut planned_any = false;
    for entry in std::fs::read_dir(&examples)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let output = Command::new(shardyard_bin()?)
            .arg("plan")
            .arg("-f")
            .arg(&path)
            .args(["--api-base", &sim.api_base()])
            .env("SHARDYARD_TOKEN", sim.token())
            .env("RUST_BACKTRACE", "0")
            .output()?;
        let planned = succeeded(&output).with_context(|| path.display().to_string())?;
        for version in VERSIONS {
            let (passed, said) = validate(&planned, version)?;
            assert!(
                passed,
                "{}: not valid for {version}: {said}",
                path.display()
            );
        }
        planned_any = true;
    }
    assert!(planned_any, "no example in {}", examples.display());

    let broken = repo_root().join("tests/kube/testdata/broken-bot.yaml");
    let output = Command::new(shardyard_bin()?)
        .arg("plan")
        .arg("-f")
        .arg(&broken)
        .env("RUST_BACKTRACE", "0")
        .output()?;
    let refusal = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the broken bot was planned");
    assert!(
        refusal.contains("spec.shards: Invalid value: 0: shards must be"),
        "{refusal}"
    );
    assert!(
        refusal.contains("spec.workers: Invalid value: workers.minReplicas must not exceed"),
        "{refusal}"
    );
    Ok(())
}
