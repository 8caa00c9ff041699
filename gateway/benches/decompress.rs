//! zstd-stream against zlib-stream on the same corpus: bytes on the wire per message, and the
//! gateway's CPU per message to decompress it ([`ZstdDecoder`] against [`ZlibInflater`]).
//!
//! `cargo bench -p shardyard-gateway --bench decompress -- --warm-up-time 1 --measurement-time 5`
//!
//! The corpus is the envelope bench's everyday one (1,000 Discord-shaped frames), compressed as
//! the simulator compresses one connection: zlib-stream with one deflate context at the fast
//! level and a sync flush per message; zstd-stream with one zstd context at level 3 and a flush
//! per message (`shardyard_sim::gateway::{zlib, zstd}`). Each iteration decompresses the next
//! message in order (every message refers back into the ones before); both restart with a fresh
//! context once per 1,000 messages. The decompression context's own size, once the stream has
//! passed through it, is printed too: what each idle connection keeps besides its buffers.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, criterion_group, criterion_main};
use shardyard_gateway::inflate::ZlibInflater;
use shardyard_gateway::zstd::ZstdDecoder;
use shardyard_sim::gateway::zlib::ZlibStream;
use shardyard_sim::gateway::zstd::ZstdStream;

#[allow(dead_code)]
#[path = "../../protocol/benches/corpus/mod.rs"]
mod corpus;

fn compressed<F: FnMut(&[u8], &mut BytesMut)>(frames: &[String], mut compress: F) -> Vec<Vec<u8>> {
    frames
        .iter()
        .map(|frame| {
            let mut out = BytesMut::new();
            compress(frame.as_bytes(), &mut out);
            out.to_vec()
        })
        .collect()
}

fn decompress(c: &mut Criterion) {
    let frames = corpus::everyday_frames();
    let mut zlib = ZlibStream::new();
    let zlib_stream = compressed(&frames, |m, out| zlib.compress(m, out));
    let mut zstd = ZstdStream::new();
    let zstd_stream = compressed(&frames, |m, out| zstd.compress(m, out));

    // Both give back every message exactly.
    let mut inflater = ZlibInflater::new();
    let mut decoder = ZstdDecoder::new();
    for ((frame, z), s) in frames.iter().zip(&zlib_stream).zip(&zstd_stream) {
        assert_eq!(inflater.push(z).unwrap(), Some(frame.as_bytes()));
        assert_eq!(decoder.push(s).unwrap(), frame.as_bytes());
    }
    let per_message = |stream: &[Vec<u8>]| {
        stream.iter().map(Vec::len).sum::<usize>() as f64 / stream.len() as f64
    };
    let raw = frames.iter().map(String::len).sum::<usize>() as f64 / frames.len() as f64;
    println!(
        "{} messages, {raw:.0} bytes each on average: zlib-stream {:.1} bytes on the wire, \
         zstd-stream {:.1} ({:.2}× zlib's); zstd's decompression context after the stream: {} bytes",
        frames.len(),
        per_message(&zlib_stream),
        per_message(&zstd_stream),
        per_message(&zstd_stream) / per_message(&zlib_stream),
        decoder.context_bytes(),
    );

    let mut group = c.benchmark_group("decompress_message");
    group.bench_function("zlib_stream", |b| {
        let mut inflater = ZlibInflater::new();
        let mut next = 0;
        b.iter(|| {
            if next == zlib_stream.len() {
                inflater = ZlibInflater::new();
                next = 0;
            }
            let frame = &zlib_stream[next];
            next += 1;
            inflater
                .push(black_box(frame))
                .map(|message| message.map(<[u8]>::len))
        });
    });
    group.bench_function("zstd_stream", |b| {
        let mut decoder = ZstdDecoder::new();
        let mut next = 0;
        b.iter(|| {
            if next == zstd_stream.len() {
                decoder = ZstdDecoder::new();
                next = 0;
            }
            let frame = &zstd_stream[next];
            next += 1;
            decoder.push(black_box(frame)).map(<[u8]>::len)
        });
    });
    group.finish();
}

criterion_group!(benches, decompress);
criterion_main!(benches);
