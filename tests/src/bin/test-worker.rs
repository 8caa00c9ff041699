//! A worker built on `shardyard-worker` for the end-to-end tests (`tests/worker.rs`) and the
//! worker benchmark (`benches/worker.rs`): behaviours the example bot does not have, chosen by
//! flags, and a record of what it handled that the test reads back.
//!
//! ```text
//! SHARDYARD_BOT=b SHARDYARD_NATS_URL=… SHARDYARD_REST_URL=… test-worker \
//!     [--types MESSAGE_CREATE,TYPING_START] [--typed] [--record FILE] [--delay-ms N] \
//!     [--random-delay-ms N] [--fail-when CONTENT] [--panic-when CONTENT] \
//!     [--members-when CONTENT] [--latencies FILE] [--admin-addr ADDR]
//! ```
//!
//! The configuration comes from the environment (`WorkerConfig::from_env`). Handlers:
//! `--types` registers a raw handler per type; `--typed` handles `MESSAGE_CREATE` as
//! twilight-model's `MessageCreate` instead (so a payload of another shape is dead-lettered).
//! Each handler sleeps `--delay-ms` plus up to `--random-delay-ms`, fails (retryably) when the
//! payload contains `--fail-when`, panics when it contains `--panic-when`, and asks the gateway
//! for the members of the payload's guild when it contains `--members-when`. `--record FILE`
//! gets one line per handler start and one per success, written before the event is acked:
//! `start <stream seq> <Nats-Msg-Id> <type> <delivered>` / `done …`. `--types all` handles every
//! type twilight-model knows; `--latencies FILE` writes, on exit, a line per first delivery:
//! `<Shardyard-Received-At> <µs from it to the handler's start> <µs from JetStream storing it to
//! the handler's start>`.

use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use shardyard_worker::twilight_model::gateway::payload::incoming::MessageCreate;
use shardyard_worker::twilight_model::id::Id;
use shardyard_worker::{
    Bot, Context, HandlerError, KNOWN_EVENTS, MemberQuery, RequestGuildMembers,
};

#[derive(Default)]
struct Args {
    types: Vec<String>,
    typed: bool,
    record: Option<String>,
    delay_ms: u64,
    random_delay_ms: u64,
    fail_when: Option<String>,
    panic_when: Option<String>,
    members_when: Option<String>,
    latencies: Option<String>,
    admin_addr: Option<SocketAddr>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        types: vec!["MESSAGE_CREATE".to_owned()],
        ..Args::default()
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--typed" {
            args.typed = true;
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--types" if value == "all" => {
                args.types = KNOWN_EVENTS.iter().map(|t| (*t).to_owned()).collect();
            }
            "--types" => args.types = value.split(',').map(str::to_owned).collect(),
            "--latencies" => args.latencies = Some(value),
            "--record" => args.record = Some(value),
            "--delay-ms" => args.delay_ms = value.parse()?,
            "--random-delay-ms" => args.random_delay_ms = value.parse()?,
            "--fail-when" => args.fail_when = Some(value),
            "--panic-when" => args.panic_when = Some(value),
            "--members-when" => args.members_when = Some(value),
            "--admin-addr" => args.admin_addr = Some(value.parse()?),
            _ => bail!("unknown flag {flag}"),
        }
    }
    Ok(args)
}

struct Behaviour {
    record: Option<Mutex<File>>,
    delay: Duration,
    random_delay_ms: u64,
    fail_when: Option<String>,
    panic_when: Option<String>,
    members_when: Option<String>,
    /// Gateway receive to handler start of each event, in µs, when `--latencies` is given.
    latencies: Option<Mutex<Vec<(u64, u64, u64)>>>,
}

impl Behaviour {
    fn record(&self, what: &str, ctx: &Context) {
        if let Some(file) = &self.record {
            let event = ctx.event();
            let line = format!(
                "{what} {} {} {} {}\n",
                event.stream_sequence,
                event.msg_id.as_deref().unwrap_or("-"),
                event.event_type,
                event.delivered
            );
            let mut file = file
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let _ = file.write_all(line.as_bytes());
            let _ = file.flush();
        }
    }

    async fn handle(&self, ctx: &Context, payload: &[u8]) -> Result<(), HandlerError> {
        if let Some(latencies) = &self.latencies
            && ctx.event().delivered == 1
            && let Some(age) = ctx.event().age()
        {
            let micros = u64::try_from(age.as_micros()).unwrap_or(u64::MAX);
            let event = ctx.event();
            let received = event.received_at_us.unwrap_or_default();
            let from_stored = event
                .stored_at_us
                .map_or(0, |stored| (received + micros).saturating_sub(stored));
            latencies
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((received, micros, from_stored));
        }
        self.record("start", ctx);
        let mut delay = self.delay;
        if self.random_delay_ms > 0 {
            delay += Duration::from_millis(rand::random_range(0..=self.random_delay_ms));
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let contains = |needle: &Option<String>| {
            needle.as_ref().is_some_and(|n| {
                payload
                    .windows(n.len())
                    .any(|window| window == n.as_bytes())
            })
        };
        if contains(&self.panic_when) {
            panic!("deliberate panic");
        }
        if contains(&self.fail_when) {
            return Err(HandlerError::retry("deliberate failure"));
        }
        if contains(&self.members_when) {
            request_members(ctx, payload).await?;
        }
        self.record("done", ctx);
        Ok(())
    }
}

/// Asks the gateway for the members of the payload's guild, on the shard that holds it; a
/// refusal is fatal (the event is dead-lettered with the gateway's reason).
async fn request_members(ctx: &Context, payload: &[u8]) -> Result<(), HandlerError> {
    let guild: u64 = serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v["guild_id"].as_str().and_then(|g| g.parse().ok()))
        .ok_or_else(|| HandlerError::fatal("no guild_id"))?;
    let guild_id = Id::new_checked(guild).ok_or_else(|| HandlerError::fatal("guild 0"))?;
    let request = RequestGuildMembers {
        guild_id,
        query: MemberQuery::Prefix {
            query: String::new(),
            limit: 0,
        },
        presences: false,
        nonce: None,
    };
    ctx.gateway()
        .request_guild_members(&request)
        .await
        .map_err(HandlerError::fatal)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = parse_args()?;
    let behaviour = Arc::new(Behaviour {
        record: match &args.record {
            Some(path) => Some(Mutex::new(
                File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("cannot open {path}"))?,
            )),
            None => None,
        },
        delay: Duration::from_millis(args.delay_ms),
        random_delay_ms: args.random_delay_ms,
        fail_when: args.fail_when.clone(),
        panic_when: args.panic_when.clone(),
        members_when: args.members_when.clone(),
        latencies: args.latencies.as_ref().map(|_| Mutex::new(Vec::new())),
    });
    let mut builder = Bot::from_env().context("configuration from SHARDYARD_*")?;
    for event_type in &args.types {
        if args.typed && event_type == "MESSAGE_CREATE" {
            let behaviour = Arc::clone(&behaviour);
            builder = builder.on(move |ctx: Context, message: MessageCreate| {
                let behaviour = Arc::clone(&behaviour);
                async move { behaviour.handle(&ctx, message.content.as_bytes()).await }
            });
        } else {
            let behaviour = Arc::clone(&behaviour);
            builder = builder.on_raw(event_type, move |ctx: Context, payload: Bytes| {
                let behaviour = Arc::clone(&behaviour);
                async move { behaviour.handle(&ctx, &payload).await }
            });
        }
    }
    let bot = builder.build()?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    if let Some(addr) = args.admin_addr {
        shardyard_admin::spawn(addr, bot.metrics(), shutdown.clone()).await?;
    }
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        stop.cancel();
    });
    bot.run(shutdown).await?;
    if let (Some(path), Some(latencies)) = (&args.latencies, &behaviour.latencies) {
        let latencies = latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let text: String = latencies
            .iter()
            .map(|(received, latency, stored)| format!("{received} {latency} {stored}\n"))
            .collect();
        std::fs::write(path, text).with_context(|| format!("writing {path}"))?;
    }
    eprintln!("test-worker: stopped");
    Ok(())
}
