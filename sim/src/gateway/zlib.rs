//! zlib-stream compression: one deflate context per connection, every message ending with a
//! sync flush (`00 00 ff ff`), as Discord's `compress=zlib-stream` sends it.

use flate2::{Compress, Compression, FlushCompress};

/// The compressor of one connection.
pub struct ZlibStream {
    deflate: Compress,
}

impl std::fmt::Debug for ZlibStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZlibStream")
            .field("total_in", &self.deflate.total_in())
            .finish()
    }
}

impl Default for ZlibStream {
    fn default() -> Self {
        Self::new()
    }
}

impl ZlibStream {
    /// A new context with a zlib header, at the fast level Discord's volume calls for.
    #[must_use]
    pub fn new() -> Self {
        Self {
            deflate: Compress::new(Compression::fast(), true),
        }
    }

    /// Compresses one whole message into `out` (cleared first), ending with a sync flush.
    pub fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.reserve(input.len() / 2 + 64);
        let start = self.deflate.total_in();
        loop {
            let consumed = usize::try_from(self.deflate.total_in() - start).unwrap_or(input.len());
            let status = self
                .deflate
                .compress_vec(&input[consumed..], out, FlushCompress::Sync);
            let done = usize::try_from(self.deflate.total_in() - start).unwrap_or(input.len())
                == input.len();
            // With output space left over, the sync flush is complete.
            if status.is_err() || (done && out.len() < out.capacity()) {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
    }
}

/// Bytes that no inflater accepts at a message boundary: a final block of the reserved type 3.
pub const CORRUPT_FRAME: [u8; 8] = [0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0xff, 0xff];

#[cfg(test)]
mod tests {
    use flate2::{Decompress, FlushDecompress};

    use super::{CORRUPT_FRAME, ZlibStream};

    fn inflate(d: &mut Decompress, input: &[u8]) -> Result<Vec<u8>, flate2::DecompressError> {
        let mut out = Vec::with_capacity(input.len() * 8 + 64);
        let start = d.total_in();
        loop {
            let consumed = (d.total_in() - start) as usize;
            d.decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)?;
            if (d.total_in() - start) as usize == input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            out.reserve(out.capacity());
        }
    }

    #[test]
    fn messages_share_one_context_and_end_with_the_suffix() {
        let mut z = ZlibStream::new();
        let mut d = Decompress::new(true);
        let mut out = Vec::new();
        for i in 0..50 {
            let msg = format!("{{\"op\":0,\"s\":{i},\"d\":{}}}", "x".repeat(i * 100));
            z.compress(msg.as_bytes(), &mut out);
            assert_eq!(&out[out.len() - 4..], &[0, 0, 0xff, 0xff]);
            assert_eq!(inflate(&mut d, &out).unwrap(), msg.as_bytes());
        }
    }

    #[test]
    fn corrupt_frame_breaks_the_inflater() {
        let mut z = ZlibStream::new();
        let mut d = Decompress::new(true);
        let mut out = Vec::new();
        z.compress(b"{\"op\":10}", &mut out);
        inflate(&mut d, &out).unwrap();
        assert!(inflate(&mut d, &CORRUPT_FRAME).is_err());
    }
}
