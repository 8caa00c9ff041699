//! The ground-truth method later issues rely on, proven end to end with real processes: a
//! minimal reference bridge (test code, not the gateway) carries the simulator's dispatches into
//! JetStream per the contract in DESIGN.md, and the stream is compared shard by shard with what
//! `shardyard sim` says it dispatched — including across a dropped connection and a resume whose
//! replay JetStream de-duplicates by `Nats-Msg-Id`.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use flate2::{Decompress, FlushDecompress};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use shardyard_protocol::names::{self, headers};
use shardyard_protocol::{BotKey, read_envelope};
use shardyard_tests::ground_truth::wait_until_stream_matches;
use shardyard_tests::{NatsServer, SimArgs, SimProcess};
use tokio_tungstenite::tungstenite::Message;

const TOTAL: u32 = 2;

fn inflate(d: &mut Decompress, input: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() * 4 + 64);
    let start = d.total_in();
    loop {
        let consumed = usize::try_from(d.total_in() - start)?;
        d.decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)?;
        if usize::try_from(d.total_in() - start)? == input.len() && out.len() < out.capacity() {
            return Ok(out);
        }
        out.reserve(out.capacity());
    }
}

/// Where a shard's session stands, shared between connections.
#[derive(Default, Clone)]
struct Session {
    id: String,
    resume_url: String,
    seq: u64,
}

/// Reads one connection until it closes, publishing every dispatch; returns the session.
async fn bridge_connection(
    url: &str,
    token: &str,
    shard: u32,
    mut session: Session,
    resume_from: Option<u64>,
    js: &jetstream::Context,
    bot: &BotKey,
) -> anyhow::Result<Session> {
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("{url}?v=10&encoding=json&compress=zlib-stream"))
            .await?;
    let mut inflater = Decompress::new(true);
    let hello = match ws.next().await.context("no HELLO")?? {
        Message::Binary(b) => inflate(&mut inflater, &b)?,
        other => anyhow::bail!("unexpected {other:?}"),
    };
    anyhow::ensure!(read_envelope(&hello)?.op == 10, "first frame must be HELLO");
    let first = match resume_from {
        Some(seq) => json!({"op": 6, "d": {"token": token, "session_id": session.id, "seq": seq}}),
        None => {
            json!({"op": 2, "d": {"token": token, "intents": 1 | (1 << 9) | (1 << 15), "shard": [shard, TOTAL], "properties": {}}})
        }
    };
    ws.send(Message::Text(first.to_string().into())).await?;
    while let Some(frame) = ws.next().await {
        let bytes = match frame {
            Ok(Message::Binary(b)) => inflate(&mut inflater, &b)?,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let envelope = read_envelope(&bytes)?;
        if envelope.op != 0 {
            continue;
        }
        let (Some(seq), Some(event), Some(data)) = (
            envelope.seq,
            envelope.event_type,
            envelope.data_bytes(&bytes),
        ) else {
            anyhow::bail!("dispatch without s, t or d");
        };
        if event == "READY" {
            let ready: Value = serde_json::from_slice(data)?;
            session.id = ready["session_id"]
                .as_str()
                .context("session_id")?
                .to_owned();
            session.resume_url = ready["resume_gateway_url"]
                .as_str()
                .context("resume url")?
                .to_owned();
        }
        let mut h = async_nats::HeaderMap::new();
        h.insert(headers::MSG_ID, names::msg_id(&session.id, seq).as_str());
        h.insert(headers::SHARD, names::shard_header(shard, TOTAL).as_str());
        h.insert(headers::SEQ, seq.to_string().as_str());
        h.insert(headers::EVENT, event);
        js.publish_with_headers(bot.event_subject(shard, event), h, data.to_vec().into())
            .await?
            .await?;
        // Only past JetStream's ack does the session advance.
        session.seq = seq;
    }
    Ok(session)
}

#[tokio::test]
async fn stream_matches_the_simulators_ground_truth_across_a_drop_and_resume() -> anyhow::Result<()>
{
    let nats = NatsServer::start().await?;
    let sim = SimProcess::start(SimArgs {
        guilds: 30,
        max_concurrency: 2,
        events_per_second: 400.0,
        ..SimArgs::default()
    })
    .await?;
    let js = nats.jetstream().await?;
    let bot = BotKey::local("gt")?;
    js.get_or_create_stream(jetstream::stream::Config {
        name: bot.stream(),
        subjects: vec![bot.events_filter()],
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await?;

    let gateway = format!("ws://{}/gateway", sim.addr());
    let token = sim.token().to_owned();
    let mut tasks = Vec::new();
    for shard in 0..TOTAL {
        let (js, bot, gateway, token) = (js.clone(), bot.clone(), gateway.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let session =
                bridge_connection(&gateway, &token, shard, Session::default(), None, &js, &bot)
                    .await?;
            // Shard 0 is dropped by the simulator mid-traffic; resume a little before the last
            // acknowledged event so the replay overlaps what the stream already has.
            let from = session.seq.saturating_sub(5);
            let url = session.resume_url.clone();
            bridge_connection(&url, &token, shard, session, Some(from), &js, &bot).await
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    sim.post_json("/_sim/shards/0/drop", &json!({})).await?;
    sim.post_json("/_sim/shards/1/drop", &json!({})).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    sim.post_json("/_sim/traffic", &json!({"events_per_second": 0}))
        .await?;

    // The stream catches up with the simulator's record, shard by shard.
    wait_until_stream_matches(&js, &sim, "bot", &bot, TOTAL, Duration::from_secs(20)).await?;
    let stats = sim.stats().await?;
    for shard in stats["shards"].as_array().context("shards")? {
        assert_eq!(shard["resumes"], 1, "each shard resumed once: {shard}");
        assert!(
            shard["replayed"].as_u64().unwrap_or(0) >= 5,
            "the resume replayed events: {shard}"
        );
        assert!(
            shard["dispatched"].as_u64().unwrap_or(0) > 100,
            "traffic flowed: {shard}"
        );
    }
    assert_eq!(stats["violations"], json!([]));
    for task in tasks {
        task.abort();
    }
    Ok(())
}
