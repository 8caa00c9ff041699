//! The dispatch envelope reader against twilight's scan and serde_json, on the same frames.
//!
//! `cargo bench -p shardyard-protocol --bench envelope -- --warm-up-time 1 --measurement-time 3`
//!
//! The corpus is built here, Discord-shaped: a mix of MESSAGE_CREATE, TYPING_START,
//! MESSAGE_REACTION_ADD, PRESENCE_UPDATE and GUILD_MEMBER_UPDATE frames (about 750 bytes on
//! average), and one large GUILD_CREATE. Each reader is timed per frame, cycling through the mix.
//!
//! - `shardyard`: [`read_envelope`]: `op`, `s`, `t` and the byte range of `d`, with the whole
//!   frame's structure walked, so `d`'s end is known and extra keys after it are handled.
//! - `twilight_scan`: `GatewayEventDeserializer::from_json`, what twilight-gateway's `Shard` runs
//!   on every frame: substring searches for `"op":`, `"t":` and `"s":` that stop early because
//!   Discord writes those keys first. It does not locate `d`, and trusts that the first `"t":` in
//!   the text is the envelope's.
//! - `serde_json_raw`: serde_json into a struct with a borrowed `&RawValue` for `d`.

use std::borrow::Cow;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde::Deserialize;
use serde_json::value::RawValue;
use shardyard_protocol::read_envelope;
use twilight_model::gateway::event::GatewayEventDeserializer;

mod corpus;

use corpus::{everyday_frames, guild_create};

/// The serde_json reader: the same answer as ours, through serde.
#[derive(Deserialize)]
struct SerdeEnvelope<'a> {
    op: u8,
    s: Option<u64>,
    #[serde(borrow)]
    t: Option<Cow<'a, str>>,
    #[serde(borrow)]
    d: Option<&'a RawValue>,
}

/// Checks, once, that the three readers agree on the corpus.
fn check_agreement(frames: &[String]) {
    for frame in frames {
        let ours = read_envelope(frame.as_bytes()).expect("our reader reads the corpus");
        let serde: SerdeEnvelope<'_> = serde_json::from_str(frame).expect("valid JSON");
        let twilight = GatewayEventDeserializer::from_json(frame).expect("twilight reads it");
        assert_eq!(ours.op, serde.op);
        assert_eq!(ours.seq, serde.s);
        assert_eq!(ours.event_type, serde.t.as_deref());
        assert_eq!(
            ours.data_bytes(frame.as_bytes()),
            serde.d.map(|d| d.get().as_bytes())
        );
        assert_eq!(
            (twilight.op(), twilight.sequence(), twilight.event_type()),
            (ours.op, ours.seq, ours.event_type)
        );
    }
}

fn bench_readers(c: &mut Criterion, group_name: &str, frames: &[String]) {
    let mut group = c.benchmark_group(group_name);
    group.bench_function("shardyard", |b| {
        let mut next = frames.iter().cycle();
        b.iter(|| {
            let frame = next.next().unwrap_or_else(|| unreachable!());
            read_envelope(black_box(frame.as_bytes()))
                .map(|e| (e.op, e.seq, e.event_type.map(str::len), e.data))
        });
    });
    group.bench_function("twilight_scan", |b| {
        let mut next = frames.iter().cycle();
        b.iter(|| {
            let frame = next.next().unwrap_or_else(|| unreachable!());
            GatewayEventDeserializer::from_json(black_box(frame)).map(|t| t.into_parts())
        });
    });
    group.bench_function("serde_json_raw", |b| {
        let mut next = frames.iter().cycle();
        b.iter(|| {
            let frame = next.next().unwrap_or_else(|| unreachable!());
            serde_json::from_str::<SerdeEnvelope<'_>>(black_box(frame))
                .map(|e| (e.op, e.s, e.t.map(|t| t.len()), e.d.map(|d| d.get().len())))
        });
    });
    group.finish();
}

fn envelope(c: &mut Criterion) {
    let everyday = everyday_frames();
    let guild = vec![guild_create()];
    check_agreement(&everyday);
    check_agreement(&guild);

    let total: usize = everyday.iter().map(String::len).sum();
    let smallest = everyday.iter().map(String::len).min().unwrap_or_default();
    let largest = everyday.iter().map(String::len).max().unwrap_or_default();
    println!(
        "corpus: {} everyday frames, average {} bytes (from {smallest} to {largest}); \
         GUILD_CREATE {} bytes",
        everyday.len(),
        total / everyday.len(),
        guild[0].len()
    );

    bench_readers(c, "average_frame", &everyday);
    bench_readers(c, "guild_create", &guild);
}

criterion_group!(benches, envelope);
criterion_main!(benches);
