//! `shardyard sim` as a process does what its documented flags say (they are an interface other
//! tools script against).

use serde_json::{Value, json};
use shardyard_tests::{SimArgs, SimProcess};

async fn get(sim: &SimProcess, path: &str, token: Option<&str>) -> anyhow::Result<(u16, Value)> {
    let mut request = reqwest::Client::new().get(format!("{}{path}", sim.http_base()));
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bot {token}"));
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

#[tokio::test]
async fn flags_set_the_token_guilds_and_identify_limits() -> anyhow::Result<()> {
    let sim = SimProcess::start(SimArgs {
        token: "cli-token".into(),
        guilds: 2500,
        max_concurrency: 4,
        events_per_second: 0.0,
        extra: vec!["--members-per-guild".into(), "2".into()],
        ..SimArgs::default()
    })
    .await?;
    let (status, bot) = get(&sim, "/api/v10/gateway/bot", Some("cli-token")).await?;
    assert_eq!(status, 200, "{bot}");
    assert_eq!(bot["url"], format!("ws://{}/gateway", sim.addr()));
    assert_eq!(bot["shards"], 3, "one shard per 1,000 guilds");
    assert_eq!(bot["session_start_limit"]["max_concurrency"], 4);
    assert_eq!(
        bot["session_start_limit"]["remaining"],
        bot["session_start_limit"]["total"]
    );
    let (status, _) = get(&sim, "/api/v10/gateway/bot", Some("wrong")).await?;
    assert_eq!(status, 401);
    let (status, _) = get(&sim, "/api/v10/gateway/bot", None).await?;
    assert_eq!(status, 401);
    let stats = sim.stats().await?;
    assert_eq!(stats["bots"][0]["guilds"], 2500);
    assert_eq!(stats["bots"][0]["events_per_second"], 0.0);
    Ok(())
}

#[tokio::test]
async fn a_config_file_serves_several_bots_each_with_its_own_world() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("sim.json");
    std::fs::write(
        &path,
        json!({"bots": [
            {"name": "alpha", "token": "alpha-token", "guilds": 3},
            {"name": "beta", "token": "beta-token", "guilds": 1500, "max_concurrency": 2}
        ]})
        .to_string(),
    )?;
    // The exact flags override the file's first bot.
    let sim = SimProcess::start(SimArgs {
        token: "alpha-flag-token".into(),
        guilds: 5,
        extra: vec!["--config".into(), path.display().to_string()],
        ..SimArgs::default()
    })
    .await?;
    let (_, alpha) = get(&sim, "/api/v10/users/@me", Some("alpha-flag-token")).await?;
    let (_, beta) = get(&sim, "/api/v10/users/@me", Some("beta-token")).await?;
    assert!(alpha["id"].is_string() && beta["id"].is_string());
    assert_ne!(alpha["id"], beta["id"], "each bot is its own application");
    let (status, _) = get(&sim, "/api/v10/users/@me", Some("alpha-token")).await?;
    assert_eq!(status, 401, "the flag replaced the file's token");
    let (_, beta_gateway) = get(&sim, "/api/v10/gateway/bot", Some("beta-token")).await?;
    assert_eq!(beta_gateway["shards"], 2);
    assert_eq!(beta_gateway["session_start_limit"]["max_concurrency"], 2);
    let (_, alpha_guilds) =
        get(&sim, "/api/v10/users/@me/guilds", Some("alpha-flag-token")).await?;
    assert_eq!(alpha_guilds.as_array().map(Vec::len), Some(5));
    Ok(())
}

/// A service whose log reader went away (`| head -1`, a collector that died) still stops on
/// SIGTERM: a log line it cannot write is dropped, where tracing-subscriber's own report of the
/// failure used to panic the task that was logging (the one waiting for the signal among them).
#[tokio::test]
async fn sigterm_stops_the_simulator_after_its_log_reader_went_away() -> anyhow::Result<()> {
    use std::io::{BufRead as _, BufReader};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let mut child = Command::new(shardyard_tests::shardyard_bin()?)
        .args(["sim", "--addr", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut first)?;
    assert!(first.starts_with("shardyard sim listening on"), "{first}");
    // Both readers gone: every write from now on fails with EPIPE. (The signal handler is
    // installed right after the line above is printed.)
    drop(child.stderr.take());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id())?).expect("a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            child.kill()?;
            anyhow::bail!("the simulator ignored SIGTERM with its log pipe closed");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    Ok(())
}
