//! Transport compression of one connection: the context that turns websocket messages into
//! payloads, for `zlib-stream` ([`crate::inflate`]) or `zstd-stream` ([`crate::zstd`]).

use crate::config::Compression;
use crate::inflate::{InflateError, ZlibInflater};
use crate::zstd::{ZstdDecoder, ZstdError};

/// A message that cannot be decompressed: the connection must be replaced.
#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    /// zlib-stream.
    #[error(transparent)]
    Zlib(#[from] InflateError),
    /// zstd-stream.
    #[error(transparent)]
    Zstd(#[from] ZstdError),
}

/// One connection's decompression context.
#[derive(Debug)]
pub enum Decompressor {
    /// zlib-stream: a payload may span several messages, and ends with `00 00 ff ff`.
    Zlib(ZlibInflater),
    /// zstd-stream: every message is one payload.
    Zstd(ZstdDecoder),
}

impl Decompressor {
    /// The context a new connection with `compression` needs; `None` for plain text frames.
    #[must_use]
    pub fn for_compression(compression: Compression) -> Option<Self> {
        match compression {
            Compression::ZlibStream => Some(Self::Zlib(ZlibInflater::new())),
            Compression::ZstdStream => Some(Self::Zstd(ZstdDecoder::new())),
            Compression::None => None,
        }
    }

    /// Feeds one binary websocket message; returns the whole payload once it is complete.
    ///
    /// # Errors
    /// [`DecompressError`] when the bytes are not a valid continuation of the stream.
    pub fn push(&mut self, message: &[u8]) -> Result<Option<&[u8]>, DecompressError> {
        match self {
            Self::Zlib(zlib) => Ok(zlib.push(message)?),
            Self::Zstd(zstd) => Ok(Some(zstd.push(message)?)),
        }
    }

    /// The last whole payload [`push`](Self::push) returned.
    #[must_use]
    pub fn message(&self) -> &[u8] {
        match self {
            Self::Zlib(zlib) => zlib.message(),
            Self::Zstd(zstd) => zstd.message(),
        }
    }
}
