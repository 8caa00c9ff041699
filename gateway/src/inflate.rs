//! zlib-stream decompression: one inflate context per connection; a message is complete when
//! the bytes received so far end with `00 00 ff ff`.
//!
//! The stream's two-byte zlib header is checked and skipped, and the rest inflated as raw
//! deflate: a zlib-stream never ends, so its Adler-32 trailer never arrives, and computing the
//! running checksum over every inflated byte (what a zlib-mode inflater does) checks nothing.

use flate2::{Decompress, FlushDecompress};
use shardyard_protocol::ZLIB_SUFFIX;

/// A frame that cannot be inflated: the connection's stream is broken and must be replaced.
#[derive(Debug, thiserror::Error)]
#[error("corrupt zlib-stream frame")]
pub struct InflateError(#[source] Option<flate2::DecompressError>);

/// The inflater of one connection.
pub struct ZlibInflater {
    inflate: Decompress,
    /// Whether the stream's zlib header was seen (it starts the first message).
    header_seen: bool,
    pending: Vec<u8>,
    out: Vec<u8>,
    /// Compressed bytes received, for metrics.
    pub compressed_in: u64,
}

impl std::fmt::Debug for ZlibInflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZlibInflater")
            .field("compressed_in", &self.compressed_in)
            .finish_non_exhaustive()
    }
}

impl Default for ZlibInflater {
    fn default() -> Self {
        Self::new()
    }
}

impl ZlibInflater {
    /// A fresh context, for a new connection.
    #[must_use]
    pub fn new() -> Self {
        Self {
            inflate: Decompress::new(false),
            header_seen: false,
            pending: Vec::new(),
            out: Vec::with_capacity(8192),
            compressed_in: 0,
        }
    }

    /// The last whole message [`push`](Self::push) returned (empty before the first).
    #[must_use]
    pub fn message(&self) -> &[u8] {
        &self.out
    }

    /// Feeds one websocket frame; returns the whole message once its last frame arrived.
    ///
    /// # Errors
    /// [`InflateError`] when the bytes are not a valid continuation of the stream.
    pub fn push(&mut self, frame: &[u8]) -> Result<Option<&[u8]>, InflateError> {
        self.compressed_in += frame.len() as u64;
        let input: &[u8] = if self.pending.is_empty() {
            if !frame.ends_with(&ZLIB_SUFFIX) {
                self.pending.extend_from_slice(frame);
                return Ok(None);
            }
            frame
        } else {
            self.pending.extend_from_slice(frame);
            if !self.pending.ends_with(&ZLIB_SUFFIX) {
                return Ok(None);
            }
            &self.pending
        };
        let input = if self.header_seen {
            input
        } else {
            // CMF/FLG: deflate (CM 8, window ≤ 32 KiB), no preset dictionary, check bits.
            let &[cmf, flg, ..] = input else {
                return Err(InflateError(None));
            };
            let valid = cmf & 0x0f == 8
                && cmf >> 4 <= 7
                && flg & 0x20 == 0
                && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0;
            if !valid {
                return Err(InflateError(None));
            }
            self.header_seen = true;
            &input[2..]
        };
        self.out.clear();
        let start = self.inflate.total_in();
        loop {
            let consumed = usize::try_from(self.inflate.total_in() - start).unwrap_or(input.len());
            self.out.reserve(input.len().saturating_mul(4).max(256));
            self.inflate
                .decompress_vec(&input[consumed..], &mut self.out, FlushDecompress::Sync)
                .map_err(|e| InflateError(Some(e)))?;
            let consumed = usize::try_from(self.inflate.total_in() - start).unwrap_or(input.len());
            if consumed == input.len() && self.out.len() < self.out.capacity() {
                break;
            }
        }
        self.pending.clear();
        Ok(Some(&self.out))
    }
}

#[cfg(test)]
mod tests {
    use flate2::{Compress, Compression, FlushCompress};

    use super::ZlibInflater;

    fn deflate(c: &mut Compress, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len() + 64);
        c.compress_vec(input, &mut out, FlushCompress::Sync)
            .unwrap();
        out
    }

    #[test]
    fn inflates_messages_split_over_frames() {
        let mut c = Compress::new(Compression::fast(), true);
        let mut inflater = ZlibInflater::new();
        for i in 0..20 {
            let message = format!("{{\"op\":0,\"s\":{i},\"d\":\"{}\"}}", "x".repeat(i * 300));
            let compressed = deflate(&mut c, message.as_bytes());
            let (a, b) = compressed.split_at(compressed.len() / 2);
            assert!(
                inflater.push(a).unwrap().is_none(),
                "half a message is not a message"
            );
            if i > 0 {
                assert_ne!(inflater.message(), message.as_bytes());
            }
            assert_eq!(inflater.push(b).unwrap().unwrap(), message.as_bytes());
            // The shard reads the message from here after `push` said it is whole.
            assert_eq!(inflater.message(), message.as_bytes());
        }
    }

    #[test]
    fn corrupt_frames_are_an_error_not_a_panic() {
        let mut inflater = ZlibInflater::new();
        assert!(
            inflater
                .push(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0xff, 0xff])
                .is_err()
        );
        let mut inflater = ZlibInflater::new();
        assert!(
            inflater.push(&[0, 0, 0xff, 0xff]).is_err()
                || inflater.push(&[1, 2, 3, 0, 0, 0xff, 0xff]).is_err()
        );
        // A valid header, then garbage deflate data.
        let mut inflater = ZlibInflater::new();
        assert!(
            inflater
                .push(&[0x78, 0x9c, 0xff, 0xff, 0, 0, 0xff, 0xff])
                .is_err()
        );
        // A header with a preset dictionary, which zlib-stream never uses.
        let mut inflater = ZlibInflater::new();
        assert!(inflater.push(&[0x78, 0xbb, 0, 0, 0xff, 0xff]).is_err());
    }

    #[test]
    fn every_compression_level_s_header_is_accepted() {
        for level in [0, 1, 6, 9] {
            let mut c = Compress::new(Compression::new(level), true);
            let mut inflater = ZlibInflater::new();
            for message in [&b"{\"op\":10}"[..], b"{\"op\":11}"] {
                let compressed = deflate(&mut c, message);
                assert_eq!(inflater.push(&compressed).unwrap().unwrap(), message);
            }
        }
    }
}
