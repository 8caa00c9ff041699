//! zlib-stream compression: one deflate context per connection, every message ending with a
//! sync flush (`00 00 ff ff`), as Discord's `compress=zlib-stream` sends it.

use bytes::BytesMut;
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

    /// Compresses one whole message onto the end of `out`, ending with a sync flush.
    pub fn compress(&mut self, input: &[u8], out: &mut BytesMut) {
        let start_in = self.deflate.total_in();
        loop {
            let consumed =
                usize::try_from(self.deflate.total_in() - start_in).unwrap_or(input.len());
            let filled = out.len();
            let room = (input.len() - consumed) / 2 + 64;
            out.resize(filled + room, 0);
            let before_out = self.deflate.total_out();
            let status =
                self.deflate
                    .compress(&input[consumed..], &mut out[filled..], FlushCompress::Sync);
            let written = usize::try_from(self.deflate.total_out() - before_out).unwrap_or(0);
            out.truncate(filled + written);
            let done = usize::try_from(self.deflate.total_in() - start_in).unwrap_or(input.len())
                == input.len();
            // With output space left over, the sync flush is complete.
            if status.is_err() || (done && written < room) {
                break;
            }
        }
    }
}

/// Bytes that no inflater accepts at a message boundary: a final block of the reserved type 3.
pub const CORRUPT_FRAME: [u8; 8] = [0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0xff, 0xff];

#[cfg(test)]
mod tests {
    use flate2::{Decompress, FlushDecompress};

    use bytes::BytesMut;

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
        for i in 0..50 {
            let mut out = BytesMut::new();
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
        let mut out = BytesMut::new();
        z.compress(b"{\"op\":10}", &mut out);
        inflate(&mut d, &out).unwrap();
        assert!(inflate(&mut d, &CORRUPT_FRAME).is_err());
    }
}
