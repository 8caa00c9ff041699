//! The comparison receiver of the gateway benchmark (`benches/gateway_receive.rs`):
//! twilight-gateway 0.18 holding shards `0..N` of `--total` against the simulator, with
//! zlib-stream (the crate's `zlib` feature), counting dispatches. It does what a twilight bot
//! must at the least to get each event: the `Shard` stream (inflate, twilight's envelope scan,
//! sequence and heartbeat bookkeeping) and, per text message, twilight-model's
//! `GatewayEventDeserializer` to tell dispatches (op 0) and READY apart. It deserializes no
//! event body and publishes nothing.
//!
//! ```text
//! twilight-receiver --addr 127.0.0.1:PORT --token TOKEN --total 1000 --shards 1000 \
//!     --max-concurrency 1000 --control 127.0.0.1:CONTROL_PORT
//! ```
//!
//! Every connection to `--control` gets one line, `dispatches=D ready=R`, and is closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::StreamExt as _;
use tokio::io::AsyncWriteExt as _;
use twilight_gateway::queue::InMemoryQueue;
use twilight_gateway::{ConfigBuilder, Intents, Message, Shard, ShardId};
use twilight_model::gateway::event::GatewayEventDeserializer;

#[derive(Default)]
struct Counts {
    dispatches: AtomicU64,
    ready: AtomicU64,
}

impl Counts {
    fn line(&self) -> String {
        format!(
            "dispatches={} ready={}\n",
            self.dispatches.load(Ordering::Relaxed),
            self.ready.load(Ordering::Relaxed)
        )
    }
}

struct Args {
    addr: String,
    token: String,
    total: u32,
    shards: u32,
    max_concurrency: u16,
    control: String,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = std::env::args().skip(1);
    let (mut addr, mut token, mut total, mut shards, mut max_concurrency, mut control) =
        (None, None, None, None, 1_u16, None);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => addr = Some(value),
            "--token" => token = Some(value),
            "--total" => total = Some(value.parse()?),
            "--shards" => shards = Some(value.parse()?),
            "--max-concurrency" => max_concurrency = value.parse()?,
            "--control" => control = Some(value),
            _ => bail!("unknown flag {flag}"),
        }
    }
    let total = total.context("--total is required")?;
    Ok(Args {
        addr: addr.context("--addr is required")?,
        token: token.context("--token is required")?,
        total,
        shards: shards.unwrap_or(total),
        max_concurrency,
        control: control.context("--control is required")?,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = parse_args()?;
    let counts = Arc::new(Counts::default());
    let intents = Intents::GUILDS
        | Intents::GUILD_MESSAGES
        | Intents::MESSAGE_CONTENT
        | Intents::GUILD_MEMBERS;
    // One identify queue for every shard, as `twilight_gateway::create_recommended` would build
    // from `/gateway/bot`'s `session_start_limit`.
    let queue = InMemoryQueue::new(
        args.max_concurrency,
        u32::MAX / 2,
        Duration::from_secs(86_400),
        u32::MAX / 2,
    );
    for id in 0..args.shards {
        let config = ConfigBuilder::new(args.token.clone(), intents)
            .proxy_url(format!("ws://{}/gateway", args.addr))
            .queue(queue.clone())
            .build();
        let mut shard = Shard::with_config(ShardId::new(id, args.total), config);
        let counts = Arc::clone(&counts);
        tokio::spawn(async move {
            while let Some(item) = shard.next().await {
                match item {
                    Ok(Message::Text(text)) => {
                        let Some(envelope) = GatewayEventDeserializer::from_json(&text) else {
                            continue;
                        };
                        if envelope.op() == 0 {
                            counts.dispatches.fetch_add(1, Ordering::Relaxed);
                            if envelope.event_type() == Some("READY") {
                                counts.ready.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Ok(Message::Close(_)) => {}
                    Err(error) => eprintln!("shard {id}: {error}"),
                }
            }
        });
    }
    let listener = tokio::net::TcpListener::bind(&args.control)
        .await
        .with_context(|| format!("cannot listen on {}", args.control))?;
    println!(
        "twilight-receiver: {} shards, control on {}",
        args.shards, args.control
    );
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (mut socket, _) = accepted?;
                let line = counts.line();
                let _ = socket.write_all(line.as_bytes()).await;
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    print!("twilight-receiver: {}", counts.line());
    Ok(())
}
