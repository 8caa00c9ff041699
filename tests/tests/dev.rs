//! `shardyard dev -f bot.yaml` end to end (issue 16): the real binary with the simulator in
//! Discord's place and a real nats-server, checked against the simulator's ground truth.

use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use shardyard_protocol::BotKey;
use shardyard_protocol::names::keys;
use shardyard_tests::dev::{DevRun, names, pid, pids};
use shardyard_tests::ground_truth::{
    check_handover, per_shard, read_stream_events, session_logs, wait_until_stream_matches,
};
use shardyard_tests::{
    NatsServer, SimApi as _, SimArgs, SimProcess, eventually, pid_alive, repo_root, shardyard_bin,
};

/// The simulator's one bot (dev starts it with the default configuration).
const SIM_BOT: &str = "bot";

fn as_u64(value: &Value) -> anyhow::Result<u64> {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| value.as_u64())
        .with_context(|| format!("not an id: {value}"))
}

/// A small bot of `shards` shards, two per gateway process, on the test's NATS.
fn manifest(shards: u32, extra: &str) -> String {
    format!(
        "apiVersion: shardyard.dev/v1alpha1\nkind: DiscordBot\nmetadata: {{name: devbot}}\nspec:\n  \
         tokenSecret: {{name: devbot-token}}\n  shards: {shards}\n  shardsPerPod: 2\n  \
         intents: [GUILDS, GUILD_MESSAGES, MESSAGE_CONTENT, GUILD_MESSAGE_REACTIONS, GUILD_MESSAGE_TYPING]\n  \
         nats: {{url: 'nats://nats.nats.svc:4222'}}\n  rest: {{replicas: 1}}\n{extra}"
    )
}

/// Someone says `!ping`; the example bot's `pong` lands in that channel.
async fn ping_gets_pong(dev: &DevRun) -> anyhow::Result<()> {
    let said = dev
        .sim()
        .post_json("/_sim/say", &json!({"content": "!ping"}))
        .await?;
    let channel = as_u64(&said["channel_id"])?;
    eventually(Duration::from_secs(30), "pong arrives", || async {
        let got = dev.sim().channel_message_contents(channel).await?;
        anyhow::ensure!(got == ["pong"], "{got:?}");
        Ok(())
    })
    .await
    .with_context(|| dev.report())
}

/// Stops the traffic and checks that the stream holds exactly what the simulator dispatched to
/// each of `total` shards: nothing lost, nothing twice, in order.
async fn stream_matches_ground_truth(
    dev: &DevRun,
    nats: &NatsServer,
    bot: &BotKey,
    total: u32,
) -> anyhow::Result<()> {
    dev.sim()
        .post_json("/_sim/traffic", &json!({"events_per_second": 0}))
        .await?;
    let js = nats.jetstream().await?;
    wait_until_stream_matches(&js, dev.sim(), SIM_BOT, bot, total, Duration::from_secs(30))
        .await
        .with_context(|| dev.report())
}

#[tokio::test]
async fn the_example_manifest_runs_every_event_reaches_the_stream_and_ctrl_c_leaves_nothing()
-> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let example = std::fs::read_to_string(repo_root().join("config/examples/bot.yaml"))?;
    let mut dev = DevRun::start(
        &example,
        &["--nats", &nats.url()],
        &[
            ("SHARDYARD_DEV_GUILDS", "2500"),
            ("SHARDYARD_DEV_EVENTS_PER_SECOND", "50"),
        ],
    )
    .await?;
    let status = dev.wait_ready(Duration::from_secs(120)).await?;
    // The planner's answer for 2,500 guilds (3 shards, 16 per pod) and the example's settings.
    let mut running: Vec<String> = pids(&status).into_iter().map(|(n, _)| n).collect();
    running.sort();
    assert_eq!(
        running,
        [
            "mybot-cache-0",
            "mybot-gateway-g1-0",
            "mybot-rest-0",
            "mybot-rest-1",
            "mybot-worker-0",
            "sim"
        ],
        "{status:#}"
    );
    assert_eq!(status["active"], json!({"number": 1, "total": 3}));
    assert_eq!(status["shards"]["1"]["ready"], 3, "{status:#}");

    ping_gets_pong(&dev).await?;
    let bot = BotKey::namespaced("default", "mybot")?;
    stream_matches_ground_truth(&dev, &nats, &bot, 3).await?;
    // …and the workers took all of it.
    dev.wait_for(Duration::from_secs(30), "the queue drains", |s| {
        anyhow::ensure!(s["pending"] == 0, "pending {}", s["pending"]);
        Ok(())
    })
    .await?;
    let stats = dev.sim().stats().await?;
    assert_eq!(stats["violations"], json!([]), "Discord's rules held");

    // Ctrl-C: workers stop before gateways, and nothing is left running.
    let status = dev.status().await?;
    let exit = dev.interrupt(Duration::from_secs(90)).await?;
    assert!(exit.success(), "{exit:?}\n{}", dev.report());
    for (name, pid) in pids(&status) {
        assert!(!pid_alive(pid), "{name} (pid {pid}) was left running");
    }
    let output = dev.output();
    let at = |needle: &str| {
        output
            .find(needle)
            .with_context(|| format!("{needle:?} not in dev's output:\n{output}"))
    };
    assert!(at("mybot-worker-0 stopped")? < at("mybot-gateway-g1-0 stopped")?);
    assert!(at("mybot-gateway-g1-0 stopped")? < at("sim stopped")?);
    Ok(())
}

#[tokio::test]
async fn without_nats_dev_runs_its_own_nats_server_and_an_authors_worker_command()
-> anyhow::Result<()> {
    // The author's worker: here the example bot's binary, started by the command dev is given
    // with the pod's environment (the bot, NATS, the REST proxy's Service).
    let worker = format!("{} worker", shardyard_bin()?.display());
    let mut dev = DevRun::start(&manifest(1, ""), &["--worker-command", &worker], &[]).await?;
    let status = dev.wait_ready(Duration::from_secs(120)).await?;
    let nats = pid(&status, "nats").context("dev's nats-server")?;
    let worker_pid = pid(&status, "devbot-worker-0").context("the worker")?;
    let cmdline = std::fs::read(format!("/proc/{worker_pid}/cmdline"))?;
    assert_eq!(
        String::from_utf8_lossy(&cmdline).replace('\0', " ").trim(),
        worker,
        "the worker command runs in place of the container (exec, so signals reach it)"
    );
    ping_gets_pong(&dev).await?;
    let js = dev.jetstream().await?;
    let stream = js
        .get_stream(BotKey::namespaced("default", "devbot")?.stream())
        .await;
    assert!(stream.is_ok(), "the bot's stream is on dev's NATS");
    assert!(
        dev.state_dir().join("nats/jetstream").is_dir(),
        "its store is in the state dir"
    );
    let exit = dev.interrupt(Duration::from_secs(90)).await?;
    assert!(exit.success(), "{exit:?}");
    assert!(!pid_alive(nats), "nats-server was left running");
    assert!(!pid_alive(worker_pid), "the worker was left running");
    Ok(())
}

#[tokio::test]
async fn an_invalid_manifest_is_refused_with_the_rules_message_and_field_path_and_nothing_starts()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bot.yaml");
    std::fs::write(
        &file,
        manifest(2, "  workers: {minReplicas: 5, maxReplicas: 2}\n"),
    )?;
    let sim_addr = format!("127.0.0.1:{}", shardyard_tests::free_port());
    let output = tokio::task::spawn_blocking({
        let file = file.clone();
        let state = dir.path().join("state");
        let sim_addr = sim_addr.clone();
        move || {
            Command::new(shardyard_bin()?)
                .arg("dev")
                .arg("-f")
                .arg(&file)
                .args(["--sim-addr", &sim_addr])
                .arg("--state-dir")
                .arg(&state)
                .env_remove("SHARDYARD_TOKEN")
                .output()
                .context("running dev")
        }
    })
    .await??;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("spec.workers: Invalid value")
            && stderr.contains("workers.minReplicas must not exceed workers.maxReplicas"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&file.display().to_string()),
        "names the file: {stderr}"
    );
    assert!(
        !dir.path().join("state").exists(),
        "nothing started, not even the state directory"
    );
    assert!(
        std::net::TcpStream::connect(&sim_addr).is_err(),
        "no simulator listens"
    );

    // A port in use gets a clear message too.
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let taken_addr = taken.local_addr()?.to_string();
    std::fs::write(&file, manifest(2, ""))?;
    let output = tokio::task::spawn_blocking(move || {
        Command::new(shardyard_bin()?)
            .arg("dev")
            .arg("-f")
            .arg(&file)
            .args(["--sim-addr", &taken_addr])
            .arg("--state-dir")
            .arg(dir.path().join("state2"))
            .env_remove("SHARDYARD_TOKEN")
            .output()
            .context("running dev")
    })
    .await??;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("the simulator's address") && stderr.contains("--sim-addr"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn an_unreachable_nats_and_an_unreadable_token_file_get_clear_errors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bot.yaml");
    std::fs::write(&file, manifest(1, ""))?;
    let closed = format!("nats://127.0.0.1:{}", shardyard_tests::free_port());
    let run = |extra: Vec<String>| {
        let file = file.clone();
        let state = dir.path().join("state");
        tokio::task::spawn_blocking(move || {
            Command::new(shardyard_bin()?)
                .arg("dev")
                .arg("-f")
                .arg(&file)
                .args([
                    "--sim-addr",
                    &format!("127.0.0.1:{}", shardyard_tests::free_port()),
                ])
                .arg("--state-dir")
                .arg(&state)
                .args(extra)
                .env_remove("SHARDYARD_TOKEN")
                .output()
                .context("running dev")
        })
    };
    let output = run(vec!["--nats".into(), closed.clone()]).await??;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("cannot reach NATS at {closed} (--nats)")),
        "{stderr}"
    );
    let output = run(vec!["--token-file".into(), "/nonexistent/token".into()]).await??;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("reading the token file /nonexistent/token (--token-file)"),
        "{stderr}"
    );
    Ok(())
}

/// The processes of a component in a `/status`, sorted.
fn sorted(status: &Value, component: &str) -> Vec<String> {
    let mut all = names(status, component);
    all.sort();
    all
}

/// The position of `needle` in dev's output.
fn position(output: &str, needle: &str) -> anyhow::Result<usize> {
    output
        .find(needle)
        .with_context(|| format!("{needle:?} not in dev's output:\n{output}"))
}

#[tokio::test]
async fn a_changed_gateway_setting_restarts_the_gateways_one_at_a_time_and_they_resume()
-> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let dev = DevRun::start(
        &manifest(4, ""),
        &["--nats", &nats.url()],
        &[("SHARDYARD_DEV_EVENTS_PER_SECOND", "100")],
    )
    .await?;
    let before = dev.wait_ready(Duration::from_secs(120)).await?;
    let gateways = sorted(&before, "gateway");
    assert_eq!(gateways, ["devbot-gateway-g1-0", "devbot-gateway-g1-1"]);
    let old: Vec<u32> = gateways.iter().filter_map(|g| pid(&before, g)).collect();
    assert_eq!(
        per_shard(&dev.sim().stats().await?, SIM_BOT, 4, "identifies"),
        [1, 1, 1, 1]
    );

    dev.edit(&manifest(4, "  gateway: {largeThreshold: 100}\n"))?;
    dev.wait_for(
        Duration::from_secs(180),
        "both gateways run the new setting and are ready",
        |status| {
            for (name, old) in gateways.iter().zip(&old) {
                let now = pid(status, name);
                anyhow::ensure!(now.is_some_and(|p| p != *old), "{name} not restarted yet");
            }
            let ready = status["processes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["component"] == "gateway")
                .all(|p| p["ready"] == true);
            anyhow::ensure!(ready, "not ready yet");
            Ok(())
        },
    )
    .await?;
    // Highest ordinal first, the next only once the first is back.
    let output = dev.output();
    let first = position(&output, "devbot-gateway-g1-1 restarts with the new spec")?;
    let back = first + position(&output[first..], "devbot-gateway-g1-1 started")?;
    let second = position(&output, "devbot-gateway-g1-0 restarts with the new spec")?;
    assert!(back < second, "{output}");

    // They resumed: no shard identified again, each resumed at least once.
    let stats = dev.sim().stats().await?;
    assert_eq!(per_shard(&stats, SIM_BOT, 4, "identifies"), [1, 1, 1, 1]);
    assert!(
        per_shard(&stats, SIM_BOT, 4, "resumes")
            .iter()
            .all(|r| *r >= 1),
        "{:?}",
        per_shard(&stats, SIM_BOT, 4, "resumes")
    );
    let bot = BotKey::namespaced("default", "devbot")?;
    stream_matches_ground_truth(&dev, &nats, &bot, 4).await?;
    assert_eq!(dev.sim().stats().await?["violations"], json!([]));
    Ok(())
}

#[tokio::test]
async fn a_new_shard_count_reshards_blue_green_without_losing_an_event() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let dev = DevRun::start(
        &manifest(2, ""),
        &["--nats", &nats.url()],
        &[("SHARDYARD_DEV_EVENTS_PER_SECOND", "100")],
    )
    .await?;
    dev.wait_ready(Duration::from_secs(120)).await?;
    dev.edit(&manifest(4, ""))?;
    dev.wait_for(
        Duration::from_secs(180),
        "generation 2 (4 shards) publishes alone",
        |status| {
            anyhow::ensure!(
                status["active"] == json!({"number": 2, "total": 4}) && status["reshard"].is_null(),
                "active {} reshard {}",
                status["active"],
                status["reshard"]
            );
            anyhow::ensure!(
                sorted(status, "gateway") == ["devbot-gateway-g2-0", "devbot-gateway-g2-1"],
                "{:?}",
                sorted(status, "gateway")
            );
            Ok(())
        },
    )
    .await?;
    let output = dev.output();
    let starting = position(
        &output,
        "reshard: generation 2 (4 shards) starts beside generation 1",
    )?;
    let handing = position(&output, "both publish until generation 1 stops")?;
    let done = position(
        &output,
        "reshard done: generation 2 (4 shards) publishes alone",
    )?;
    assert!(starting < handing && handing < done);

    dev.sim()
        .post_json("/_sim/traffic", &json!({"events_per_second": 0}))
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let js = nats.jetstream().await?;
    let bot = BotKey::namespaced("default", "devbot")?;
    let logs = session_logs(dev.sim()).await?;
    let stored = read_stream_events(&js, &bot).await?;
    let report = check_handover(&logs, &stored, 2, 4);
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    assert!(report.shared > 0, "the generations overlapped");
    assert_eq!(
        dev.sim().stats().await?["violations"],
        json!([]),
        "no identify too fast, no session start burnt"
    );
    Ok(())
}

#[tokio::test]
async fn a_killed_worker_and_gateway_are_restarted_and_nothing_is_lost() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let dev = DevRun::start(
        &manifest(
            2,
            "  autoscaling: {provider: none}\n  workers: {minReplicas: 2}\n",
        ),
        &["--nats", &nats.url()],
        &[("SHARDYARD_DEV_EVENTS_PER_SECOND", "100")],
    )
    .await?;
    let before = dev.wait_ready(Duration::from_secs(120)).await?;
    // A gateway resumes what it saved, and it saves a session within a second or so of READY:
    // the kill waits for both saves, and may land inside READY's burst of GUILD_CREATEs.
    let bot = BotKey::namespaced("default", "devbot")?;
    let js = nats.jetstream().await?;
    eventually(Duration::from_secs(30), "both sessions saved", || async {
        let sessions = js.get_key_value(bot.sessions_bucket()).await?;
        for shard in 0..2 {
            sessions
                .get(keys::session(2, shard))
                .await?
                .with_context(|| format!("shard {shard} not saved yet"))?;
        }
        Ok(())
    })
    .await?;
    let worker = pid(&before, "devbot-worker-1").context("worker 1")?;
    let gateway = pid(&before, "devbot-gateway-g1-0").context("the gateway")?;
    for victim in [worker, gateway] {
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(i32::try_from(victim)?).context("pid")?,
            rustix::process::Signal::KILL,
        )?;
    }
    dev.wait_for(
        Duration::from_secs(120),
        "both are back and ready",
        |status| {
            for (name, old) in [
                ("devbot-worker-1", worker),
                ("devbot-gateway-g1-0", gateway),
            ] {
                let row = status["processes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|p| p["name"] == name)
                    .with_context(|| format!("{name} missing"))?;
                anyhow::ensure!(
                    row["restarts"].as_u64() >= Some(1)
                        && row["pid"].as_u64() != Some(u64::from(old))
                        && row["ready"] == true,
                    "{row}"
                );
            }
            Ok(())
        },
    )
    .await?;
    let output = dev.output();
    assert!(
        output.contains("devbot-worker-1 died (killed (SIGKILL))"),
        "{output}"
    );
    ping_gets_pong(&dev).await?;
    stream_matches_ground_truth(&dev, &nats, &bot, 2).await?;
    // The killed worker's unacknowledged events went to the others: the queue drains.
    dev.wait_for(Duration::from_secs(90), "the queue drains", |s| {
        anyhow::ensure!(s["pending"] == 0, "pending {}", s["pending"]);
        Ok(())
    })
    .await?;
    // The gateway resumed rather than identified again.
    let stats = dev.sim().stats().await?;
    assert_eq!(per_shard(&stats, SIM_BOT, 2, "identifies"), [1, 1]);
    assert_eq!(stats["violations"], json!([]));

    // An edit the schema refuses changes nothing; a new worker count scales.
    dev.edit(&manifest(
        2,
        "  autoscaling: {provider: none}\n  workers: {minReplicas: -1}\n",
    ))?;
    eventually(Duration::from_secs(10), "the edit is refused", || async {
        let output = dev.output();
        anyhow::ensure!(
            output.contains("the edited manifest is refused, so the bot keeps running as it was"),
            "not yet"
        );
        Ok(())
    })
    .await?;
    assert_eq!(sorted(&dev.status().await?, "worker").len(), 2);
    dev.edit(&manifest(
        2,
        "  autoscaling: {provider: none}\n  workers: {minReplicas: 3}\n",
    ))?;
    dev.wait_for(Duration::from_secs(60), "three workers", |status| {
        anyhow::ensure!(
            sorted(status, "worker") == ["devbot-worker-0", "devbot-worker-1", "devbot-worker-2"],
            "{:?}",
            sorted(status, "worker")
        );
        Ok(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_burst_scales_the_workers_up_and_back_down_as_the_hpa_would() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let dev = DevRun::start(
        &manifest(
            2,
            "  workers: {minReplicas: 1, maxReplicas: 4, targetPendingPerReplica: 100}\n  \
             autoscaling: {provider: hpa, scaleDownStabilizationSeconds: 10}\n",
        ),
        &["--nats", &nats.url()],
        &[("SHARDYARD_DEV_EVENTS_PER_SECOND", "0")],
    )
    .await?;
    let before = dev.wait_ready(Duration::from_secs(120)).await?;
    assert_eq!(sorted(&before, "worker"), ["devbot-worker-0"]);

    // A burst of 50,000 events, at 10,000/s.
    let dispatched = || async {
        let stats = dev.sim().stats().await?;
        Ok::<u64, anyhow::Error>(
            stats["shards"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["dispatched"].as_u64())
                .sum(),
        )
    };
    let start = dispatched().await?;
    dev.sim()
        .post_json("/_sim/traffic", &json!({"events_per_second": 10_000}))
        .await?;
    eventually(
        Duration::from_secs(60),
        "50,000 events dispatched",
        || async {
            let now = dispatched().await?;
            anyhow::ensure!(now - start >= 50_000, "{}", now - start);
            Ok(())
        },
    )
    .await?;
    dev.sim()
        .post_json("/_sim/traffic", &json!({"events_per_second": 0}))
        .await?;

    let scaled = dev
        .wait_for(Duration::from_secs(60), "more workers", |status| {
            anyhow::ensure!(
                status["workers_desired"].as_u64() > Some(1)
                    && status["workers_running"] == status["workers_desired"],
                "{} wanted, {} running, pending {}",
                status["workers_desired"],
                status["workers_running"],
                status["pending"]
            );
            Ok(())
        })
        .await?;
    eprintln!(
        "scaled to {} workers with {} pending",
        scaled["workers_desired"], scaled["pending"]
    );
    dev.wait_for(Duration::from_secs(120), "the backlog drains", |s| {
        anyhow::ensure!(s["pending"] == 0, "pending {}", s["pending"]);
        Ok(())
    })
    .await?;
    // After the scale-down window (10 s) without a backlog: back to one.
    dev.wait_for(Duration::from_secs(90), "back to one worker", |status| {
        anyhow::ensure!(
            status["workers_desired"] == 1 && sorted(status, "worker") == ["devbot-worker-0"],
            "{} wanted, {:?}",
            status["workers_desired"],
            sorted(status, "worker")
        );
        Ok(())
    })
    .await?;
    let output = dev.output();
    assert!(output.contains("autoscaler: workers 1 → "), "{output}");
    let bot = BotKey::namespaced("default", "devbot")?;
    stream_matches_ground_truth(&dev, &nats, &bot, 2).await?;
    Ok(())
}

#[tokio::test]
async fn with_real_discord_a_second_run_on_the_same_state_resumes_the_saved_sessions()
-> anyhow::Result<()> {
    // A simulator the test runs stands in for real Discord: dev is given a token and no --sim.
    let discord = SimProcess::start(SimArgs {
        guilds: 20,
        events_per_second: 50.0,
        ..SimArgs::default()
    })
    .await?;
    let manifest = manifest(
        2,
        &format!("  discord: {{apiBase: '{}'}}\n", discord.api_base()),
    );
    let first =
        DevRun::start_with_token(tempfile::tempdir()?, &manifest, discord.token(), &[]).await?;
    let status = first.wait_ready(Duration::from_secs(120)).await?;
    assert!(pid(&status, "sim").is_none(), "no simulator of dev's own");
    assert!(
        first
            .output()
            .contains(&format!("Discord: {}", discord.api_base())),
        "{}",
        first.output()
    );
    let dir = first.stop_keeping_state().await?;

    let second = DevRun::start_with_token(dir, &manifest, discord.token(), &[]).await?;
    second.wait_ready(Duration::from_secs(120)).await?;
    let stats = discord.stats().await?;
    assert_eq!(
        per_shard(&stats, SIM_BOT, 2, "identifies"),
        [1, 1],
        "the second run identified again"
    );
    assert!(
        per_shard(&stats, SIM_BOT, 2, "resumes")
            .iter()
            .all(|r| *r >= 1),
        "{:?}",
        per_shard(&stats, SIM_BOT, 2, "resumes")
    );
    // Nothing fell between the runs: the stream (in the state directory's NATS store) holds
    // everything Discord dispatched.
    discord
        .post_json("/_sim/traffic", &json!({"events_per_second": 0}))
        .await?;
    let js = second.jetstream().await?;
    let bot = BotKey::namespaced("default", "devbot")?;
    wait_until_stream_matches(&js, &discord, SIM_BOT, &bot, 2, Duration::from_secs(30))
        .await
        .with_context(|| second.report())?;
    assert_eq!(discord.stats().await?["violations"], json!([]));
    Ok(())
}

/// `spec.interactions` for [`manifest`]: one endpoint, its public key from a Secret that the
/// simulated application's key stands for.
const INTERACTIONS: &str =
    "  interactions: {publicKeySecret: {name: devbot-public-key, key: key}, replicas: 1}\n";

#[tokio::test]
async fn with_spec_interactions_the_simulator_sends_interactions_to_the_endpoint_dev_runs()
-> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let dev = DevRun::start(
        &manifest(1, INTERACTIONS),
        &["--nats", &nats.url()],
        &[
            ("SHARDYARD_DEV_GUILDS", "20"),
            ("SHARDYARD_DEV_EVENTS_PER_SECOND", "10"),
        ],
    )
    .await?;
    let status = dev.wait_ready(Duration::from_secs(60)).await?;
    assert_eq!(
        names(&status, "interactions"),
        ["devbot-interactions-0"],
        "{status:#}"
    );
    let service = status["services"]["devbot-interactions:80"]
        .as_str()
        .with_context(|| format!("no interactions Service: {status:#}"))?;
    let url = format!("{service}/interactions");
    // dev points the simulated application at the endpoint's Service, through Discord's check.
    let pointed = format!("interactions: the simulator sends them to {url}");
    eventually(Duration::from_secs(15), "the URL is set", || async {
        anyhow::ensure!(dev.output().contains(&pointed), "not yet");
        Ok(())
    })
    .await
    .with_context(|| dev.report())?;

    let issued = dev
        .sim()
        .post_json("/_sim/interactions", &json!({"name": "ping"}))
        .await?;
    assert_eq!(issued["via"], "http", "{issued}");
    let answer = eventually(Duration::from_secs(10), "the endpoint's answer", || async {
        let all = dev.sim().get_json("/_sim/rest/interactions").await?;
        all.as_array()
            .into_iter()
            .flatten()
            .find(|a| a["id"] == issued["id"] && a["via"] == "endpoint")
            .cloned()
            .context("not answered yet")
    })
    .await
    .with_context(|| dev.report())?;
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["type"], 4, "{answer}");
    assert_eq!(answer["data"]["content"], "pong", "{answer}");
    let response_ms = answer["response_ms"].as_u64().context("no response_ms")?;
    assert!(response_ms < 3000, "answered in {response_ms} ms");

    // Without spec.interactions the URL is cleared: interactions come over the gateway again.
    dev.edit(&manifest(1, ""))?;
    eventually(Duration::from_secs(10), "the URL is cleared", || async {
        anyhow::ensure!(
            dev.output()
                .contains("the simulator sends them over the gateway again"),
            "not yet"
        );
        Ok(())
    })
    .await
    .with_context(|| dev.report())?;
    let issued = dev
        .sim()
        .post_json("/_sim/interactions", &json!({"name": "ping"}))
        .await?;
    assert_eq!(issued["via"], "gateway", "{issued}");

    assert_eq!(dev.sim().stats().await?["violations"], json!([]));
    assert!(
        !dev.output().contains("shardyard-dev-token"),
        "the token is in dev's output"
    );
    Ok(())
}
