//! The transport compression a connection asked for (`compress=` in its URL), and its one
//! compressor.

use bytes::BytesMut;

use super::zlib::ZlibStream;
use super::zstd::ZstdStream;

/// `compress=` of the connection's URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Compression {
    /// Plain JSON text frames.
    None,
    /// `zlib-stream`.
    ZlibStream,
    /// `zstd-stream`.
    ZstdStream,
}

impl Compression {
    /// The connection's compressor; `None` sends text frames.
    pub(super) fn compressor(self) -> Option<Compressor> {
        match self {
            Self::None => None,
            Self::ZlibStream => Some(Compressor::Zlib(ZlibStream::new())),
            Self::ZstdStream => Some(Compressor::Zstd(Box::default())),
        }
    }
}

/// One connection's compression context: every message it sends goes through it.
#[derive(Debug)]
pub(super) enum Compressor {
    Zlib(ZlibStream),
    Zstd(Box<ZstdStream>),
}

impl Compressor {
    /// Compresses one whole message onto the end of `out`.
    pub(super) fn compress(&mut self, payload: &[u8], out: &mut BytesMut) {
        match self {
            Self::Zlib(zlib) => zlib.compress(payload, out),
            Self::Zstd(zstd) => zstd.compress(payload, out),
        }
    }

    /// Bytes that break this stream where a message begins (the `/_sim/` corrupt fault).
    pub(super) fn corrupt_frame(&self) -> &'static [u8] {
        match self {
            Self::Zlib(_) => &super::zlib::CORRUPT_FRAME,
            Self::Zstd(_) => &super::zstd::CORRUPT_FRAME,
        }
    }
}
