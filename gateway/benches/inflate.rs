//! zlib-stream inflate per message: the gateway's [`ZlibInflater`] against a zlib-mode
//! inflater as twilight-gateway 0.18 runs one, on the same compressed stream, through the same
//! flate2 and zlib-rs build.
//!
//! `cargo bench -p shardyard-gateway --bench inflate -- --warm-up-time 1 --measurement-time 5`
//!
//! The stream is the envelope bench's everyday corpus (1,000 Discord-shaped frames, ~750 bytes
//! on average), compressed as the simulator compresses for one connection
//! (`shardyard_sim::gateway::zlib::ZlibStream`: one deflate context, a sync flush after every
//! message). Each iteration inflates the next message of the stream, in order, since every
//! message refers back into the ones before it; at the end of the stream both start again with
//! a fresh context (once per 1,000 messages).
//!
//! - `shardyard`: [`ZlibInflater::push`]: the zlib header checked and skipped, the rest inflated
//!   as raw deflate (no Adler-32), into a buffer that is reused.
//! - `zlib_mode`: `flate2::Decompress::new(true)` and `decompress_vec` with a sync flush into a
//!   reused buffer: zlib's own framing, with the running Adler-32 over every inflated byte.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, criterion_group, criterion_main};
use flate2::{Decompress, FlushDecompress};
use shardyard_gateway::inflate::ZlibInflater;
use shardyard_sim::gateway::zlib::ZlibStream;

// The envelope bench's corpus, shared so both benches measure the same frames; its
// GUILD_CREATE is not used here.
#[allow(dead_code)]
#[path = "../../protocol/benches/corpus/mod.rs"]
mod corpus;

/// One connection's websocket frames: each message compressed with a sync flush.
fn compressed_stream(frames: &[String]) -> Vec<Vec<u8>> {
    let mut deflate = ZlibStream::new();
    frames
        .iter()
        .map(|frame| {
            let mut out = BytesMut::new();
            deflate.compress(frame.as_bytes(), &mut out);
            out.to_vec()
        })
        .collect()
}

/// twilight-gateway's way: a zlib-mode context, whole messages inflated into one buffer.
struct ZlibMode {
    inflate: Decompress,
    out: Vec<u8>,
}

impl ZlibMode {
    fn new() -> Self {
        Self {
            inflate: Decompress::new(true),
            out: Vec::with_capacity(8192),
        }
    }

    fn push(&mut self, frame: &[u8]) -> &[u8] {
        self.out.clear();
        let start = self.inflate.total_in();
        loop {
            let consumed = usize::try_from(self.inflate.total_in() - start).unwrap_or(frame.len());
            self.out.reserve(frame.len().saturating_mul(4).max(256));
            self.inflate
                .decompress_vec(&frame[consumed..], &mut self.out, FlushDecompress::Sync)
                .expect("the corpus inflates");
            let consumed = usize::try_from(self.inflate.total_in() - start).unwrap_or(frame.len());
            if consumed == frame.len() && self.out.len() < self.out.capacity() {
                break;
            }
        }
        &self.out
    }
}

/// Checks, once, that both give back every message exactly.
fn check_roundtrip(frames: &[String], stream: &[Vec<u8>]) {
    let mut ours = ZlibInflater::new();
    let mut theirs = ZlibMode::new();
    for (frame, compressed) in frames.iter().zip(stream) {
        let inflated = ours.push(compressed).expect("the corpus inflates");
        assert_eq!(inflated, Some(frame.as_bytes()));
        assert_eq!(theirs.push(compressed), frame.as_bytes());
    }
}

fn inflate(c: &mut Criterion) {
    let frames = corpus::everyday_frames();
    let stream = compressed_stream(&frames);
    check_roundtrip(&frames, &stream);
    let raw: usize = frames.iter().map(String::len).sum();
    let compressed: usize = stream.iter().map(Vec::len).sum();
    println!(
        "stream: {} messages, {} bytes inflated on average, {} compressed",
        frames.len(),
        raw / frames.len(),
        compressed / frames.len()
    );

    let mut group = c.benchmark_group("inflate_message");
    group.bench_function("shardyard", |b| {
        let mut inflater = ZlibInflater::new();
        let mut next = 0;
        b.iter(|| {
            if next == stream.len() {
                inflater = ZlibInflater::new();
                next = 0;
            }
            let frame = &stream[next];
            next += 1;
            inflater
                .push(black_box(frame))
                .map(|message| message.map(<[u8]>::len))
        });
    });
    group.bench_function("zlib_mode", |b| {
        let mut inflater = ZlibMode::new();
        let mut next = 0;
        b.iter(|| {
            if next == stream.len() {
                inflater = ZlibMode::new();
                next = 0;
            }
            let frame = &stream[next];
            next += 1;
            inflater.push(black_box(frame)).len()
        });
    });
    group.finish();
}

criterion_group!(benches, inflate);
criterion_main!(benches);
