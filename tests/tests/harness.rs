//! Proves the harness itself: nats-server with JetStream, restarts, parallel servers, and that
//! no process outlives its guard.

use std::process::Command;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt as _;
use shardyard_tests::{
    NatsConfig, NatsServer, ProcessGuard, SimArgs, SimProcess, eventually, free_port, pid_alive,
};

const SUBJECT_PREFIX: &str = "harness";

async fn create_stream(js: &jetstream::Context, name: &str) -> anyhow::Result<stream::Stream> {
    Ok(js
        .create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![format!("{SUBJECT_PREFIX}.>")],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?)
}

async fn publish(js: &jetstream::Context, subject: &str, payload: &str) -> anyhow::Result<u64> {
    let ack = js
        .publish(subject.to_owned(), payload.to_owned().into())
        .await?
        .await?;
    Ok(ack.sequence)
}

/// Reads `n` messages through a new durable pull consumer and acks them.
async fn read_all(stream: &stream::Stream, n: usize) -> anyhow::Result<Vec<(String, String)>> {
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("reader".to_owned()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer
        .fetch()
        .max_messages(n)
        .expires(Duration::from_secs(5))
        .messages()
        .await?;
    let mut out = Vec::new();
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
        out.push((
            message.subject.to_string(),
            String::from_utf8(message.payload.to_vec())?,
        ));
        message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(out)
}

#[tokio::test]
async fn nats_server_runs_jetstream_on_a_free_port() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    assert_eq!(nats.url(), format!("nats://127.0.0.1:{}", nats.port()));
    assert!(nats.store_dir().is_dir());

    let js = nats.jetstream().await?;
    let stream = create_stream(&js, "HARNESS").await?;
    let seq = publish(&js, "harness.one", "hello").await?;
    assert_eq!(seq, 1);
    assert_eq!(
        read_all(&stream, 1).await?,
        [("harness.one".to_owned(), "hello".to_owned())]
    );

    // The monitoring port works, and the store is where we said.
    let jsz = nats.monitor_json("/jsz").await?;
    assert_eq!(jsz["streams"], 1, "{jsz}");
    assert!(
        nats.store_dir().join("jetstream").is_dir(),
        "no jetstream/ in the store dir"
    );
    Ok(())
}

#[tokio::test]
async fn two_servers_get_their_own_ports_and_stores() -> anyhow::Result<()> {
    let (a, b) = tokio::join!(NatsServer::start(), NatsServer::start());
    let (a, b) = (a?, b?);
    let ports = [a.port(), a.monitor_port(), b.port(), b.monitor_port()];
    for (i, p) in ports.iter().enumerate() {
        assert!(
            !ports[i + 1..].contains(p),
            "port {p} used twice: {ports:?}"
        );
    }
    assert_ne!(a.store_dir(), b.store_dir());

    // Each has its own JetStream: a stream on one does not exist on the other.
    let (js_a, js_b) = (a.jetstream().await?, b.jetstream().await?);
    create_stream(&js_a, "ONLY_ON_A").await?;
    assert!(js_b.get_stream("ONLY_ON_A").await.is_err());
    assert_eq!(js_b.query_account().await?.streams, 0);
    Ok(())
}

#[tokio::test]
async fn restart_keeps_port_and_stream_data() -> anyhow::Result<()> {
    let mut nats = NatsServer::start().await?;
    let (port, first_pid) = (nats.port(), nats.pid());
    let js = nats.jetstream().await?;
    create_stream(&js, "DURABLE").await?;
    for i in 0..3 {
        publish(&js, &format!("harness.{i}"), &format!("message {i}")).await?;
    }

    nats.restart().await?;
    assert_eq!(nats.port(), port);
    assert_ne!(nats.pid(), first_pid);
    assert!(!pid_alive(first_pid.unwrap_or_default()));

    // A fresh client sees the data; the old one reconnects by itself.
    let fresh = nats.jetstream().await?;
    let mut stream = fresh.get_stream("DURABLE").await?;
    assert_eq!(stream.info().await?.state.messages, 3);
    let read = read_all(&stream, 3).await?;
    let payloads: Vec<&str> = read.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(payloads, ["message 0", "message 1", "message 2"]);
    // The message id makes retried publishes idempotent.
    let ack = eventually(Duration::from_secs(15), "old client reconnects", || async {
        let publish = jetstream::message::PublishMessage::build()
            .payload("after restart".into())
            .message_id("after-restart");
        Ok(js.send_publish("harness.after", publish).await?.await?)
    })
    .await?;
    assert_eq!(ack.sequence, 4);

    // A crash and a start later: the data is still there.
    let pid = nats.pid().unwrap_or_default();
    nats.kill_9()?;
    assert!(!nats.is_running());
    assert!(!pid_alive(pid));
    nats.start_again().await?;
    let mut stream = nats.jetstream().await?.get_stream("DURABLE").await?;
    assert_eq!(stream.info().await?.state.messages, 4);

    // Every run is in the one log.
    let log = std::fs::read_to_string(nats.log_path())?;
    assert_eq!(
        log.matches("=== shardyard-tests: start #").count(),
        3,
        "{log}"
    );
    Ok(())
}

#[tokio::test]
async fn nats_server_is_gone_after_drop() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let pid = nats.pid().expect("running");
    let store = nats.store_dir().to_path_buf();
    assert!(pid_alive(pid));
    drop(nats);
    // Reaped, not a zombie: /proc/PID is gone.
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "nats-server {pid} still exists"
    );
    assert!(!store.exists(), "store dir {} left behind", store.display());
    Ok(())
}

#[test]
fn nats_server_is_gone_after_a_panicking_test() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let nats = NatsServer::start().await.expect("nats-server starts");
            tx.send(nats.pid().expect("running")).expect("send");
            panic!("deliberate panic with nats-server {} running", nats.url());
        })
    })
    .join();
    assert!(result.is_err(), "the thread should have panicked");
    let pid = rx.recv().expect("the thread reported the pid");
    assert!(!pid_alive(pid), "nats-server {pid} survived the panic");
}

#[tokio::test]
async fn missing_nats_server_binary_is_a_clear_error() {
    let config = NatsConfig {
        bin: Some("/nonexistent/nats-server".into()),
        ..Default::default()
    };
    let error = NatsServer::start_with(config)
        .await
        .expect_err("cannot start");
    assert!(
        format!("{error:#}").contains("/nonexistent/nats-server"),
        "{error:#}"
    );
}

#[tokio::test]
async fn failed_start_reports_the_server_log() {
    let config = NatsConfig {
        extra_args: vec!["-c".to_owned(), "/nonexistent/nats.conf".to_owned()],
        ..Default::default()
    };
    let error = NatsServer::start_with(config)
        .await
        .expect_err("cannot start");
    let message = format!("{error:#}");
    assert!(message.contains("exited during start-up"), "{message}");
    assert!(message.contains("/nonexistent/nats.conf"), "{message}");
}

#[tokio::test]
async fn process_guard_kills_the_whole_group() -> anyhow::Result<()> {
    // A shell that starts a grandchild and reports its pid.
    let mut command = Command::new("sh");
    command.args(["-c", "sleep 300 & echo grandchild=$!; wait"]);
    let mut guard = ProcessGuard::spawn("sh-with-grandchild", command)?;
    guard
        .wait_for_log("grandchild=", Duration::from_secs(10))
        .await?;
    let grandchild: u32 = eventually(Duration::from_secs(5), "grandchild pid logged", || async {
        let log = guard.log();
        let line = log
            .lines()
            .find_map(|l| l.strip_prefix("grandchild="))
            .ok_or_else(|| anyhow::anyhow!("not yet"))?;
        Ok(line.trim().parse()?)
    })
    .await?;
    let shell = guard.pid();
    assert!(pid_alive(shell) && pid_alive(grandchild));
    assert_eq!(guard.group_members(), [shell, grandchild]);

    drop(guard);
    assert!(!pid_alive(shell), "shell {shell} survived");
    // The grandchild was killed; its new parent reaps it.
    eventually(Duration::from_secs(5), "grandchild gone", || async {
        anyhow::ensure!(!pid_alive(grandchild), "grandchild {grandchild} alive");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn process_guard_signals_and_exit_status() -> anyhow::Result<()> {
    // SIGTERM: a shell trapping it exits with its own code, and says so in the log.
    let mut command = Command::new("sh");
    command.args([
        "-c",
        "trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.05; done",
    ]);
    let mut trapping = ProcessGuard::spawn("trapping-shell", command)?;
    trapping
        .wait_for_log("ready", Duration::from_secs(10))
        .await?;
    assert!(trapping.is_running());
    trapping.sigterm()?;
    let status = trapping.wait_exit(Duration::from_secs(10)).await?;
    assert_eq!(status.code(), Some(7));
    assert!(
        trapping.log_tail(1).contains("got TERM"),
        "{}",
        trapping.log()
    );
    // Signalling an exited process is an error, not a stray signal.
    assert!(trapping.sigterm().is_err());

    // kill -9: killed by signal 9.
    let mut sleeper = ProcessGuard::spawn("sleeper", {
        let mut c = Command::new("sleep");
        c.arg("300");
        c
    })?;
    let status = sleeper.kill_9()?;
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(status.signal(), Some(9));

    // wait_exit times out with a useful message; wait_for_log fails fast when the child exits.
    let mut quiet = ProcessGuard::spawn("quiet", {
        let mut c = Command::new("sh");
        c.args(["-c", "echo some output; sleep 300"]);
        c
    })?;
    quiet
        .wait_for_log("some output", Duration::from_secs(10))
        .await?;
    let error = quiet
        .wait_exit(Duration::from_millis(100))
        .await
        .expect_err("still running");
    let message = format!("{error:#}");
    assert!(message.contains("quiet did not exit"), "{message}");
    assert!(message.contains("some output"), "{message}");

    let mut short = ProcessGuard::spawn("short", {
        let mut c = Command::new("sh");
        c.args(["-c", "echo bye; exit 3"]);
        c
    })?;
    let error = short
        .wait_for_log("never printed", Duration::from_secs(10))
        .await
        .expect_err("exits first");
    assert!(format!("{error:#}").contains("exited"), "{error:#}");
    assert_eq!(
        short.wait_exit(Duration::from_secs(1)).await?.code(),
        Some(3)
    );
    Ok(())
}

#[test]
fn free_ports_are_not_repeated() {
    let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
    let mut unique = ports.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ports.len(), "{ports:?}");
}

/// Set in the environment of the helper process of
/// `watchdog_kills_what_a_killed_test_process_started`.
#[tokio::test]
async fn watchdog_kills_what_a_killed_test_process_started() -> anyhow::Result<()> {
    // Run a helper as a separate "test process", and SIGKILL it: no destructor runs, so only
    // the watchdog can kill the process the helper started.
    let command = Command::new(env!("CARGO_BIN_EXE_watchdog-helper"));
    let mut helper = ProcessGuard::spawn("watchdog-helper", command)?;
    helper
        .wait_for_log("orphan=", Duration::from_secs(30))
        .await?;
    let orphan: u32 = helper
        .log()
        .lines()
        .find_map(|l| l.strip_prefix("orphan="))
        .and_then(|pid| pid.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no pid in {}", helper.log()))?;
    assert!(pid_alive(orphan));
    // The orphan is in its own process group, so this does not reach it.
    helper.kill_9()?;
    eventually(
        Duration::from_secs(10),
        "the watchdog kills the orphan",
        || async {
            anyhow::ensure!(!pid_alive(orphan), "sleep {orphan} still alive");
            Ok(())
        },
    )
    .await
}

#[tokio::test]
async fn sim_process_serves_rest_and_stats() -> anyhow::Result<()> {
    let mut sim = SimProcess::start(SimArgs::default()).await?;
    assert_eq!(sim.http_base(), format!("http://{}", sim.addr()));
    assert_eq!(sim.api_base(), format!("http://{}/api/v10", sim.addr()));
    let gateway = sim.get_json("/api/v10/gateway").await?;
    assert!(gateway["url"].is_string(), "{gateway}");
    let stats = sim.stats().await?;
    assert!(stats.is_object(), "{stats}");
    let error = sim
        .post_json("/_sim/no-such-control-call", &serde_json::json!({}))
        .await
        .expect_err("unknown control call");
    assert!(format!("{error:#}").contains("404"), "{error:#}");

    let pid = sim.process().pid();
    drop(sim);
    assert!(!pid_alive(pid), "sim {pid} survived its drop");
    Ok(())
}
