//! zstd-stream compression, as Discord's `compress=zstd-stream` sends it: one zstd frame that
//! lasts as long as the connection, compressed by one context, flushed at the end of every
//! message (`ZSTD_e_flush`), so each websocket message decompresses to exactly one payload with
//! the bytes received so far and later messages refer back to earlier ones.

use bytes::BytesMut;
use zstd_safe::zstd_sys::ZSTD_EndDirective;
use zstd_safe::{CCtx, CParameter, InBuffer, OutBuffer};

/// The level of a streaming compressor at Discord's volume: libzstd's default.
const LEVEL: i32 = 3;

/// The compressor of one connection.
pub struct ZstdStream {
    cctx: CCtx<'static>,
    /// Compressed output before it is copied to the connection's buffer.
    scratch: Vec<u8>,
    total_in: u64,
}

impl std::fmt::Debug for ZstdStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZstdStream")
            .field("total_in", &self.total_in)
            .finish_non_exhaustive()
    }
}

impl Default for ZstdStream {
    fn default() -> Self {
        Self::new()
    }
}

impl ZstdStream {
    /// A new context; the frame starts with the first message.
    #[must_use]
    pub fn new() -> Self {
        let mut cctx = CCtx::create();
        // Only fails for a level out of range, and LEVEL is in range.
        let _ = cctx.set_parameter(CParameter::CompressionLevel(LEVEL));
        Self {
            cctx,
            scratch: Vec::new(),
            total_in: 0,
        }
    }

    /// Compresses one whole message onto the end of `out`, flushed so that it decompresses on
    /// its own (given the ones before it).
    pub fn compress(&mut self, input: &[u8], out: &mut BytesMut) {
        self.total_in += input.len() as u64;
        let mut input = InBuffer::around(input);
        loop {
            self.scratch.clear();
            self.scratch
                .reserve((input.src.len() - input.pos) / 2 + CCtx::out_size().min(16 * 1024));
            let mut output = OutBuffer::around(&mut self.scratch);
            let left = self.cctx.compress_stream2(
                &mut output,
                &mut input,
                ZSTD_EndDirective::ZSTD_e_flush,
            );
            out.extend_from_slice(&self.scratch);
            // 0: everything is in and flushed. An error cannot come from valid parameters; the
            // connection's client would see a broken stream, as with a corrupt frame.
            if !matches!(left, Ok(n) if n > 0) {
                break;
            }
        }
    }
}

/// Bytes that no decompressor accepts where a block begins: a block header of the reserved
/// type 3.
pub const CORRUPT_FRAME: [u8; 3] = [0x06, 0x00, 0x00];

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use zstd_safe::{DCtx, InBuffer, OutBuffer};

    use super::{CORRUPT_FRAME, ZstdStream};

    fn decompress(d: &mut DCtx<'_>, input: &[u8]) -> Result<Vec<u8>, usize> {
        let mut out = Vec::new();
        let mut input = InBuffer::around(input);
        let mut chunk = Vec::with_capacity(64 * 1024);
        loop {
            chunk.clear();
            let mut output = OutBuffer::around(&mut chunk);
            d.decompress_stream(&mut output, &mut input)?;
            let full = output.pos() == chunk.capacity();
            out.extend_from_slice(&chunk);
            if input.pos == input.src.len() && !full {
                return Ok(out);
            }
        }
    }

    #[test]
    fn messages_share_one_frame_and_each_decompresses_whole() {
        let mut z = ZstdStream::new();
        let mut d = DCtx::create();
        let mut total = 0;
        for i in 0..50 {
            let mut out = BytesMut::new();
            let msg = format!("{{\"op\":0,\"s\":{i},\"d\":{}}}", "x".repeat(i * 1000));
            z.compress(msg.as_bytes(), &mut out);
            total += out.len();
            assert_eq!(
                decompress(&mut d, &out).unwrap(),
                msg.as_bytes(),
                "message {i}"
            );
        }
        // Repetitive payloads compress by far: the frame refers back across messages.
        assert!(total < 50 * 1000 / 4, "{total} bytes");
    }

    #[test]
    fn the_first_message_starts_a_zstd_frame() {
        let mut out = BytesMut::new();
        ZstdStream::new().compress(b"{\"op\":10}", &mut out);
        assert_eq!(&out[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd's magic number");
    }

    #[test]
    fn a_corrupt_frame_breaks_the_decompressor() {
        let mut z = ZstdStream::new();
        let mut d = DCtx::create();
        let mut out = BytesMut::new();
        z.compress(b"{\"op\":10}", &mut out);
        decompress(&mut d, &out).unwrap();
        assert!(decompress(&mut d, &CORRUPT_FRAME).is_err());
    }
}
