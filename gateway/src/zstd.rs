//! zstd-stream decompression: one decompression context per connection. Discord compresses a
//! connection as one zstd frame, flushed at the end of every message, so each websocket message
//! decompresses to one whole payload given the messages before it.

use zstd_safe::{DCtx, DParameter, InBuffer, OutBuffer};

/// The largest window a server may make a connection keep (2^23 = 8 MiB, the least a decoder
/// must support by RFC 8878): libzstd would otherwise allow 128 MiB per connection.
const WINDOW_LOG_MAX: u32 = 23;

/// A message libzstd refused: the connection's stream is broken and must be replaced.
#[derive(Debug, thiserror::Error)]
#[error("corrupt zstd-stream frame: {0}")]
pub struct ZstdError(&'static str);

/// The decompressor of one connection.
pub struct ZstdDecoder {
    dctx: DCtx<'static>,
    out: Vec<u8>,
}

impl std::fmt::Debug for ZstdDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZstdDecoder")
            .field("context_bytes", &self.context_bytes())
            .finish_non_exhaustive()
    }
}

impl Default for ZstdDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ZstdDecoder {
    /// A fresh context, for a new connection.
    #[must_use]
    pub fn new() -> Self {
        let mut dctx = DCtx::create();
        // Only fails for a value out of libzstd's range, and 23 is in it.
        let _ = dctx.set_parameter(DParameter::WindowLogMax(WINDOW_LOG_MAX));
        Self {
            dctx,
            out: Vec::with_capacity(8192),
        }
    }

    /// Bytes libzstd holds for this connection: its context and window, allocated with the
    /// first message at the size the stream's frame header asks for.
    #[must_use]
    pub fn context_bytes(&self) -> usize {
        self.dctx.sizeof()
    }

    /// The last whole message [`push`](Self::push) returned (empty before the first).
    #[must_use]
    pub fn message(&self) -> &[u8] {
        &self.out
    }

    /// Decompresses one websocket message into its payload.
    ///
    /// # Errors
    /// [`ZstdError`] when the bytes are not a valid continuation of the stream.
    pub fn push(&mut self, message: &[u8]) -> Result<&[u8], ZstdError> {
        self.out.clear();
        let mut input = InBuffer::around(message);
        loop {
            let filled = self.out.len();
            self.out.reserve(message.len().saturating_mul(4).max(256));
            let mut output = OutBuffer::around_pos(&mut self.out, filled);
            self.dctx
                .decompress_stream(&mut output, &mut input)
                .map_err(|code| ZstdError(zstd_safe::get_error_name(code)))?;
            // A full buffer may hold back output that fits in more room.
            let full = output.pos() == self.out.capacity();
            if input.pos == input.src.len() && !full {
                return Ok(&self.out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use shardyard_sim::gateway::zstd::{CORRUPT_FRAME, ZstdStream};

    use super::ZstdDecoder;

    fn compressed(z: &mut ZstdStream, message: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        z.compress(message, &mut out);
        out.to_vec()
    }

    #[test]
    fn each_message_decompresses_whole_across_one_frame() {
        let mut z = ZstdStream::new();
        let mut d = ZstdDecoder::new();
        for i in 0..200 {
            let msg = format!(
                "{{\"op\":0,\"s\":{i},\"t\":\"MESSAGE_CREATE\",\"d\":{{\"content\":\"{}\"}}}}",
                "y".repeat(i * 97 % 5000)
            );
            let frame = compressed(&mut z, msg.as_bytes());
            assert_eq!(d.push(&frame).unwrap(), msg.as_bytes(), "message {i}");
            assert_eq!(d.message(), msg.as_bytes());
        }
    }

    #[test]
    fn a_payload_far_larger_than_its_frame_comes_out_whole() {
        let mut z = ZstdStream::new();
        let mut d = ZstdDecoder::new();
        let big = format!("{{\"d\":\"{}\"}}", "guild".repeat(400_000));
        let frame = compressed(&mut z, big.as_bytes());
        assert!(frame.len() * 100 < big.len());
        assert_eq!(d.push(&frame).unwrap(), big.as_bytes());
    }

    #[test]
    fn corrupt_and_foreign_bytes_are_errors_not_panics() {
        let mut z = ZstdStream::new();
        let mut d = ZstdDecoder::new();
        d.push(&compressed(&mut z, b"{\"op\":10}")).unwrap();
        let error = d.push(&CORRUPT_FRAME).unwrap_err();
        assert!(error.to_string().starts_with("corrupt zstd-stream frame"));
        // Not zstd at all (a zlib-stream's first message).
        let mut fresh = ZstdDecoder::new();
        assert!(fresh.push(&[0x78, 0x9c, 0x00, 0x00, 0xff, 0xff]).is_err());
    }

    #[test]
    fn a_window_past_the_limit_is_refused() {
        // A frame header announcing a 2^30-byte window (Window_Descriptor exponent 20).
        let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 20 << 3];
        frame.extend_from_slice(&[0x01, 0x00, 0x00]);
        let error = ZstdDecoder::new().push(&frame).unwrap_err();
        assert!(error.to_string().contains("too much memory"), "{error}");
    }
}
