//! The dispatch envelope reader: the gateway's hot path.
//!
//! Every gateway frame is a JSON object `{"op": …, "s": …, "t": …, "d": …}`. The gateway needs
//! `op`, `s` and `t` to route a frame and the raw bytes of `d` to forward it, and nothing else, so
//! [`read_envelope`] finds exactly those without building a DOM and without re-serializing `d`.
//!
//! # What it answers
//!
//! For every input that is valid JSON, [`read_envelope`] gives the same answer as `serde_json`
//! deserializing the frame into
//! `struct { op: u8, s: Option<u64>, t: Option<&str>, d: &RawValue }` (with `d` optional): keys in
//! any order, unknown keys skipped, whitespace anywhere JSON allows it, keys written with escapes
//! (`"\u006fp"` is `op`), and `d` of any JSON type, nested and escaped however it likes. The
//! property tests in `tests/envelope_props.rs` check exactly that against serde_json. (One
//! deliberate difference: the frame must be an object, where serde_json would also read such a
//! struct from an array `[op, s, t, d]`.)
//!
//! - `op` must be present and an integer from 0 to 255.
//! - `s` absent or `null` is `None`; otherwise it must be an integer from 0 to `u64::MAX`.
//! - `t` absent or `null` is `None`; otherwise it must be a string. It is borrowed from the frame,
//!   so a `t` that contains an escape sequence (Discord never sends one: event names are
//!   `UPPER_SNAKE_CASE`) is refused with [`EnvelopeError::EscapedEventType`], as serde_json refuses
//!   it when asked for a borrowed `&str`.
//! - `d` absent is `None`; otherwise [`Envelope::data`] is the byte range of its value exactly as
//!   it is on the wire, without surrounding whitespace, **including a `null`**: `"d":null` gives
//!   the range of the four bytes `null`, `"d":false` the range of `false`. So `data` is `None`
//!   only when the frame has no `d` at all.
//! - A key among `op`, `s`, `t`, `d` given twice is an error, as it is for serde_json.
//!
//! # What it checks
//!
//! The envelope itself (the top-level object, its keys, `op`, `s` and `t`, and what follows the
//! object) is checked strictly. The *contents* of `d` and of unknown keys' values are not
//! validated: they are skipped by finding their end, tracking strings, escapes and bracket depth,
//! and forwarded as they are. A frame whose `d` is malformed JSON may therefore be accepted with
//! an unspecified range (or refused). No input, however malformed, makes the reader panic, read
//! out of bounds or return a range outside the frame; a frame cut short anywhere before the final
//! `}` is always refused.
//!
//! # How it is fast
//!
//! Discord writes every frame as `{"t":…,"s":…,"op":…,"d":…}`, so that exact shape is read first
//! with no key dispatch and no whitespace handling (any other shape falls back to a general
//! parser, with the same answers). `t` is delimited with one 32-byte SIMD compare, `op` and `s`
//! are parsed eight digits at a time in a `u64`.
//!
//! Skipping `d` is most of the work, and it cannot be avoided: `d`'s end is only known by
//! walking it (a frame may carry more keys after `d`), so every byte of `d` is looked at. That is
//! done 64 bytes at a time: SIMD compares (SSE2 on x86_64, NEON on aarch64, through `wide`, so
//! this crate stays free of `unsafe`) turn a block into bit masks of quotes, backslashes,
//! opening and closing brackets; escaped bytes are found with carry arithmetic, the inside of
//! strings with a prefix XOR of the unescaped quotes, and only the brackets outside strings are
//! walked, a bit at a time, to find where the depth returns to zero. Brackets are counted
//! together (`{` with `[`, `}` with `]`), which finds the right end in valid JSON; the closing
//! bracket is then checked to match the opening one. Building with a newer x86-64 level (for
//! example `-C target-cpu=x86-64-v4`) lets `wide` use AVX2 or AVX-512 for the same code.

use std::ops::Range;

use thiserror::Error;

/// What [`read_envelope`] found in a gateway frame.
///
/// `event_type` borrows from the frame; `data` is a range into it, so the raw `d` is
/// `&frame[envelope.data.unwrap()]`, or [`Envelope::data_bytes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// `op`: the gateway opcode, see [`crate::OpCode::from_u8`].
    pub op: u8,
    /// `s`: the sequence number of a dispatch; `None` when absent or `null`.
    pub seq: Option<u64>,
    /// `t`: the event name of a dispatch (`MESSAGE_CREATE`); `None` when absent or `null`.
    pub event_type: Option<&'a str>,
    /// `d`: the byte range of the raw value in the frame, without surrounding whitespace. `None`
    /// only when there is no `d`; `"d":null` gives the range of `null`.
    pub data: Option<Range<usize>>,
}

impl Envelope<'_> {
    /// The raw bytes of `d` in `frame`, which must be the frame this envelope was read from.
    ///
    /// `None` when the frame has no `d` (or when `frame` is too short to be that frame).
    #[must_use]
    pub fn data_bytes<'f>(&self, frame: &'f [u8]) -> Option<&'f [u8]> {
        frame.get(self.data.clone()?)
    }
}

/// Why a frame is not a readable gateway envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The frame ends before the envelope does (a cut frame, or an unclosed string or bracket).
    #[error("the frame ends before the envelope is complete")]
    Truncated,
    /// The frame is not a JSON object.
    #[error("the frame is not a JSON object (found {found:?} at offset {offset})")]
    NotAnObject {
        /// Where the object should have started.
        offset: usize,
        /// The byte found there, as a character (a byte above 0x7f as U+0080 to U+00FF).
        found: char,
    },
    /// A byte that JSON does not allow where it is.
    #[error("unexpected {found:?} at offset {offset} of the frame")]
    Unexpected {
        /// Where the byte is.
        offset: usize,
        /// The byte, as a character.
        found: char,
    },
    /// There is no `op`.
    #[error("the frame has no `op`")]
    MissingOp,
    /// `op` is not an integer from 0 to 255.
    #[error("`op` at offset {offset} is not an integer from 0 to 255")]
    InvalidOp {
        /// Where the value of `op` starts.
        offset: usize,
    },
    /// `s` is neither `null` nor an integer from 0 to `u64::MAX`.
    #[error("`s` at offset {offset} is neither null nor an integer from 0 to 2^64-1")]
    InvalidSequence {
        /// Where the value of `s` starts.
        offset: usize,
    },
    /// `t` is neither `null` nor a string of valid UTF-8 without control characters.
    #[error("`t` at offset {offset} is neither null nor a string")]
    InvalidEventType {
        /// Where the value of `t` starts.
        offset: usize,
    },
    /// `t` is a string with an escape sequence, which cannot be borrowed from the frame.
    #[error("`t` at offset {offset} contains an escape sequence, which Discord never sends")]
    EscapedEventType {
        /// Where the value of `t` starts.
        offset: usize,
    },
    /// A key of the envelope has a `\uXXXX` escape of half a UTF-16 surrogate pair without the
    /// other half, which is not a character (serde_json refuses such a key too).
    #[error("a key has an unpaired UTF-16 surrogate escape at offset {offset}")]
    UnpairedSurrogate {
        /// Where the escape starts.
        offset: usize,
    },
    /// One of `op`, `s`, `t`, `d` appears twice.
    #[error("the key `{key}` appears twice")]
    DuplicateKey {
        /// The repeated key.
        key: &'static str,
    },
    /// Something other than whitespace follows the envelope.
    #[error("unexpected {found:?} at offset {offset} after the end of the envelope")]
    TrailingBytes {
        /// Where the first extra byte is.
        offset: usize,
        /// The byte, as a character.
        found: char,
    },
}

/// Reads the envelope of a gateway frame: `op`, `s`, `t` and where `d` is.
///
/// See the [module documentation](self) for exactly what is accepted and checked.
///
/// # Errors
///
/// [`EnvelopeError`] when the frame is not a JSON object, is cut short, has no valid `op`, has an
/// invalid `s` or `t`, repeats one of the four keys, or has anything but whitespace after the
/// object.
///
/// # Examples
///
/// ```
/// use shardyard_protocol::read_envelope;
///
/// let frame = br#"{"t":"MESSAGE_CREATE","s":42,"op":0,"d":{"content":"hi"}}"#;
/// let envelope = read_envelope(frame)?;
/// assert_eq!(envelope.op, 0);
/// assert_eq!(envelope.seq, Some(42));
/// assert_eq!(envelope.event_type, Some("MESSAGE_CREATE"));
/// assert_eq!(envelope.data_bytes(frame), Some(&br#"{"content":"hi"}"#[..]));
/// # Ok::<(), shardyard_protocol::EnvelopeError>(())
/// ```
pub fn read_envelope(frame: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    let mut fields = Fields::default();
    if let Some(d) = read_discord_prefix(frame, &mut fields) {
        let end = skip_value(frame, d)?;
        fields.data = Some(d..end);
        return read_rest(frame, end, fields);
    }

    // Any other order, whitespace or spelling: the general parser, from the start.
    let mut fields = Fields::default();
    let mut i = skip_ws(frame, 0);
    match frame.get(i) {
        Some(b'{') => i = skip_ws(frame, i + 1),
        Some(&b) => {
            return Err(EnvelopeError::NotAnObject {
                offset: i,
                found: char::from(b),
            });
        }
        None => return Err(EnvelopeError::Truncated),
    }
    if frame.get(i) == Some(&b'}') {
        // `{}`: a valid object, but without `op`.
        return finish(frame, i + 1).and(Err(EnvelopeError::MissingOp));
    }
    let end = read_member(frame, i, &mut fields)?;
    read_rest(frame, end, fields)
}

/// The envelope's members found so far: `None` for a key not seen yet.
#[derive(Default)]
struct Fields<'a> {
    op: Option<u8>,
    seq: Option<Option<u64>>,
    event_type: Option<Option<&'a str>>,
    data: Option<Range<usize>>,
}

/// Reads the start of a frame written the way Discord writes every frame,
/// `{"t":…,"s":…,"op":…,"d":`, into `fields`; returns where the value of `d` starts.
///
/// `None`, with `fields` in any state, for anything else, which the general parser reads (or
/// refuses) from the start.
#[inline]
fn read_discord_prefix<'a>(frame: &'a [u8], fields: &mut Fields<'a>) -> Option<usize> {
    let has = |i: usize, literal: &[u8]| frame.get(i..).is_some_and(|r| r.starts_with(literal));
    if !has(0, b"{\"t\":") {
        return None;
    }
    let mut i = 5;
    if has(i, b"null") {
        fields.event_type = Some(None);
        i += 4;
    } else {
        let (t, end) = read_event_type(frame, i).ok()?;
        fields.event_type = Some(Some(t));
        i = end;
    }
    if !has(i, b",\"s\":") {
        return None;
    }
    i += 5;
    if has(i, b"null") {
        fields.seq = Some(None);
        i += 4;
    } else {
        let (s, end) = read_uint(frame, i).ok()??;
        fields.seq = Some(Some(s));
        i = end;
    }
    if !has(i, b",\"op\":") {
        return None;
    }
    let (op, end) = read_uint(frame, i + 6).ok()??;
    fields.op = Some(u8::try_from(op).ok()?);
    i = end;
    if !has(i, b",\"d\":") {
        return None;
    }
    // JSON allows whitespace before a value; `d`'s range must start at the value itself.
    Some(skip_ws(frame, i + 5))
}

/// Reads the members that follow the one whose value ends just before `i`, up to the end of
/// the object and the frame.
fn read_rest<'a>(
    frame: &'a [u8],
    mut i: usize,
    mut fields: Fields<'a>,
) -> Result<Envelope<'a>, EnvelopeError> {
    loop {
        i = skip_ws(frame, i);
        match frame.get(i) {
            Some(b',') => i = skip_ws(frame, i + 1),
            Some(b'}') => {
                finish(frame, i + 1)?;
                return Ok(Envelope {
                    op: fields.op.ok_or(EnvelopeError::MissingOp)?,
                    seq: fields.seq.flatten(),
                    event_type: fields.event_type.flatten(),
                    data: fields.data,
                });
            }
            Some(&b) => return Err(unexpected(i, b)),
            None => return Err(EnvelopeError::Truncated),
        }
        i = read_member(frame, i, &mut fields)?;
    }
}

/// Reads the member `"key": value` that starts at `i`; returns the index just after the value.
fn read_member<'a>(
    frame: &'a [u8],
    i: usize,
    fields: &mut Fields<'a>,
) -> Result<usize, EnvelopeError> {
    match frame.get(i) {
        Some(b'"') => {}
        Some(&b) => return Err(unexpected(i, b)),
        None => return Err(EnvelopeError::Truncated),
    }
    let (key, after_key) = read_key(frame, i + 1)?;
    let i = skip_ws(frame, after_key);
    match frame.get(i) {
        Some(b':') => {}
        Some(&b) => return Err(unexpected(i, b)),
        None => return Err(EnvelopeError::Truncated),
    }
    let i = skip_ws(frame, i + 1);
    Ok(match key {
        Key::Op => {
            if fields.op.is_some() {
                return Err(EnvelopeError::DuplicateKey { key: "op" });
            }
            let (op, end) = read_uint(frame, i)?
                .and_then(|(op, end)| Some((u8::try_from(op).ok()?, end)))
                .ok_or(EnvelopeError::InvalidOp { offset: i })?;
            fields.op = Some(op);
            end
        }
        Key::S => {
            if fields.seq.is_some() {
                return Err(EnvelopeError::DuplicateKey { key: "s" });
            }
            if frame.get(i) == Some(&b'n') {
                fields.seq = Some(None);
                read_literal(frame, i, b"null")?
            } else {
                let (seq, end) =
                    read_uint(frame, i)?.ok_or(EnvelopeError::InvalidSequence { offset: i })?;
                fields.seq = Some(Some(seq));
                end
            }
        }
        Key::T => {
            if fields.event_type.is_some() {
                return Err(EnvelopeError::DuplicateKey { key: "t" });
            }
            if frame.get(i) == Some(&b'n') {
                fields.event_type = Some(None);
                read_literal(frame, i, b"null")?
            } else {
                let (event_type, end) = read_event_type(frame, i)?;
                fields.event_type = Some(Some(event_type));
                end
            }
        }
        Key::D => {
            if fields.data.is_some() {
                return Err(EnvelopeError::DuplicateKey { key: "d" });
            }
            let end = skip_value(frame, i)?;
            fields.data = Some(i..end);
            end
        }
        Key::Other => skip_value(frame, i)?,
    })
}

/// Checks that only whitespace follows the envelope, which ended just before `i`.
fn finish(frame: &[u8], i: usize) -> Result<(), EnvelopeError> {
    let i = skip_ws(frame, i);
    match frame.get(i) {
        None => Ok(()),
        Some(&b) => Err(EnvelopeError::TrailingBytes {
            offset: i,
            found: char::from(b),
        }),
    }
}

fn unexpected(offset: usize, byte: u8) -> EnvelopeError {
    EnvelopeError::Unexpected {
        offset,
        found: char::from(byte),
    }
}

/// The first index at or after `i` that is not JSON whitespace.
#[inline]
fn skip_ws(frame: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = frame.get(i) {
        i += 1;
    }
    i
}

/// A key of the envelope object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Op,
    S,
    T,
    D,
    Other,
}

impl Key {
    fn from_bytes(key: &[u8]) -> Self {
        match key {
            b"op" => Self::Op,
            b"s" => Self::S,
            b"t" => Self::T,
            b"d" => Self::D,
            _ => Self::Other,
        }
    }
}

/// Reads a key whose opening quote is just before `i`; returns it and the index after its
/// closing quote.
#[inline]
fn read_key(frame: &[u8], i: usize) -> Result<(Key, usize), EnvelopeError> {
    // The keys Discord sends, without a search.
    match frame.get(i..i + 3) {
        Some([b'"', ..]) => return Ok((Key::Other, i + 1)),
        Some([b'o', b'p', b'"']) => return Ok((Key::Op, i + 3)),
        Some([b, b'"', _]) if *b != b'\\' => return Ok((Key::from_bytes(&[*b]), i + 2)),
        _ => {}
    }
    let end = string_end(frame, i)?;
    let raw = &frame[i..end];
    let key = if memchr::memchr(b'\\', raw).is_some() {
        decode_key(raw, i)?
    } else {
        Key::from_bytes(raw)
    };
    Ok((key, end + 1))
}

/// Decodes a key written with escapes, as far as needed to know whether it is one of ours.
/// `offset` is where `raw` starts in the frame, for errors.
///
/// The whole key is read, not just its first bytes: serde_json reads a key as a string and
/// refuses a bad escape or an unpaired UTF-16 surrogate anywhere in it, so the reader does too.
fn decode_key(raw: &[u8], offset: usize) -> Result<Key, EnvelopeError> {
    let unpaired = |at: usize| EnvelopeError::UnpairedSurrogate {
        offset: offset + at,
    };
    // Our keys are at most two bytes long: a third decoded byte makes the key `Other`.
    let mut decoded = [0u8; 3];
    let mut len = 0;
    // Where a high surrogate (`\uD800` to `\uDBFF`) waiting for its low half starts.
    let mut high_surrogate_at = None;
    let mut j = 0;
    while j < raw.len() {
        let at = j;
        let (byte, code) = if raw[j] == b'\\' {
            let (byte, code, end) = decode_escape(raw, j + 1, offset)?;
            j = end;
            (byte, code)
        } else {
            j += 1;
            (raw[at], None)
        };
        let is_low_surrogate = matches!(code, Some(0xDC00..=0xDFFF));
        if let Some(high) = high_surrogate_at.take() {
            if !is_low_surrogate {
                return Err(unpaired(high));
            }
        } else if is_low_surrogate {
            return Err(unpaired(at));
        } else if matches!(code, Some(0xD800..=0xDBFF)) {
            high_surrogate_at = Some(at);
        }
        if len < decoded.len() {
            decoded[len] = byte;
            len += 1;
        }
    }
    if let Some(high) = high_surrogate_at {
        return Err(unpaired(high));
    }
    Ok(Key::from_bytes(&decoded[..len]))
}

/// Decodes the escape whose letter is at `raw[j]` (just after the backslash): the byte it
/// stands for as far as our keys go, the code unit of a `\uXXXX`, and the index after it.
fn decode_escape(
    raw: &[u8],
    j: usize,
    offset: usize,
) -> Result<(u8, Option<u32>, usize), EnvelopeError> {
    let escape = *raw.get(j).ok_or(EnvelopeError::Truncated)?;
    match escape {
        b'"' | b'\\' | b'/' => Ok((escape, None, j + 1)),
        b'b' | b'f' | b'n' | b'r' | b't' => Ok((0x01, None, j + 1)), // in none of our keys
        b'u' => {
            let hex = raw.get(j + 1..j + 5).ok_or(EnvelopeError::Truncated)?;
            let mut code: u32 = 0;
            for (k, &h) in hex.iter().enumerate() {
                let digit = char::from(h)
                    .to_digit(16)
                    .ok_or_else(|| unexpected(offset + j + 1 + k, h))?;
                code = code * 16 + digit;
            }
            // Non-ASCII characters, surrogates included, are in none of our keys.
            let byte = u8::try_from(code).ok().filter(u8::is_ascii).unwrap_or(0x01);
            Ok((byte, Some(code), j + 5))
        }
        other => Err(unexpected(offset + j, other)),
    }
}

/// The index of the closing quote of a string whose opening quote is just before `i`.
fn string_end(frame: &[u8], mut i: usize) -> Result<usize, EnvelopeError> {
    loop {
        let rest = frame.get(i..).ok_or(EnvelopeError::Truncated)?;
        let found = memchr::memchr2(b'"', b'\\', rest).ok_or(EnvelopeError::Truncated)?;
        if rest[found] == b'"' {
            return Ok(i + found);
        }
        // A backslash escapes exactly the next byte (`\uXXXX` continues with hex digits,
        // which need no special care).
        i += found + 2;
    }
}

/// Reads the literal `lit` at `i`; returns the index after it.
fn read_literal(frame: &[u8], i: usize, lit: &[u8]) -> Result<usize, EnvelopeError> {
    let rest = frame.get(i..).unwrap_or_default();
    if rest.starts_with(lit) {
        Ok(i + lit.len())
    } else if lit.starts_with(rest) {
        Err(EnvelopeError::Truncated)
    } else {
        let k = rest
            .iter()
            .zip(lit)
            .position(|(a, b)| a != b)
            .unwrap_or_default();
        Err(unexpected(i + k, rest[k]))
    }
}

/// Reads a JSON number at `i` that must be a non-negative integer fitting a `u64`.
///
/// `Ok(None)` when the value is anything else: negative, fractional, with an exponent, too
/// large, not a number, or with a leading zero (which JSON forbids).
#[inline]
fn read_uint(frame: &[u8], i: usize) -> Result<Option<(u64, usize)>, EnvelopeError> {
    // Up to seven digits followed by something else, without a loop: `op` always, `s` for the
    // first ten million events of a session.
    if let Some(word) = frame.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let w = u64::from_le_bytes(*word);
        let digits = ascii_digits(w);
        if digits < 8 {
            if digits == 0
                || (digits > 1 && word[0] == b'0')
                || matches!(word[digits], b'.' | b'e' | b'E')
            {
                return Ok(None);
            }
            // Digit values in the top `digits` bytes, zeros (leading zeros) below.
            let values = w.wrapping_sub(0x3030_3030_3030_3030) << (8 * (8 - digits));
            return Ok(Some((parse_eight_digits(values), i + digits)));
        }
    }
    read_uint_slow(frame, i)
}

/// How many of the bytes of `w`, from the lowest, are ASCII digits before the first that is not
/// (8 when all are).
#[inline]
fn ascii_digits(w: u64) -> usize {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    // Non-zero exactly in the bytes that are not `0x30..=0x39`, without carries between bytes:
    // the high nibble must be 3 and the low nibble plus 6 must stay below 16.
    let high = (w & 0xf0f0_f0f0_f0f0_f0f0) ^ 0x3030_3030_3030_3030;
    let low = ((w & 0x0f0f_0f0f_0f0f_0f0f) + 0x0606_0606_0606_0606) & 0x1010_1010_1010_1010;
    let not_digit = high | low;
    // The top bit of each non-zero byte.
    let flags = (((not_digit & LOW7) + LOW7) | not_digit) & !LOW7;
    (flags.trailing_zeros() / 8) as usize
}

/// The number written by eight digit values (0 to 9), the most significant in the lowest byte.
#[inline]
fn parse_eight_digits(values: u64) -> u64 {
    const MASK: u64 = 0x0000_00ff_0000_00ff;
    // Pairs of digits, then quadruples, then all eight.
    let pairs = values.wrapping_mul(10).wrapping_add(values >> 8);
    let high = (pairs & MASK).wrapping_mul(100 + (1_000_000 << 32));
    let low = ((pairs >> 16) & MASK).wrapping_mul(1 + (10_000 << 32));
    high.wrapping_add(low) >> 32
}

/// [`read_uint`], a digit at a time, for long numbers and the end of the frame.
fn read_uint_slow(frame: &[u8], i: usize) -> Result<Option<(u64, usize)>, EnvelopeError> {
    let mut value: u64 = 0;
    let mut j = i;
    loop {
        match frame.get(j) {
            Some(&b @ b'0'..=b'9') => {
                if j > i && value == 0 {
                    return Ok(None); // a leading zero
                }
                let Some(next) = value
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(u64::from(b - b'0')))
                else {
                    return Ok(None);
                };
                value = next;
                j += 1;
            }
            Some(b'.' | b'e' | b'E') => return Ok(None),
            None if j == frame.len() => return Err(EnvelopeError::Truncated),
            _ if j == i => return Ok(None),
            _ => return Ok(Some((value, j))),
        }
    }
}

/// Reads `t` as a string at `i`; returns it and the index after its closing quote.
#[inline]
fn read_event_type(frame: &[u8], i: usize) -> Result<(&str, usize), EnvelopeError> {
    match frame.get(i) {
        Some(b'"') => {}
        Some(_) => return Err(EnvelopeError::InvalidEventType { offset: i }),
        None => return Err(EnvelopeError::Truncated),
    }
    let start = i + 1;
    // Event names are shorter than 32 bytes but for a few: find the closing quote and check
    // what is before it with a few SIMD compares instead of a loop.
    if let Some(chunk) = frame.get(start..).and_then(<[u8]>::first_chunk::<32>) {
        let bytes = wide::u8x32::new(*chunk);
        let quote = bytes.simd_eq(wide::u8x32::splat(b'"')).to_bitmask();
        let len = quote.trailing_zeros();
        if len < 32 {
            let escape = bytes.simd_eq(wide::u8x32::splat(b'\\')).to_bitmask();
            let control = (bytes & wide::u8x32::splat(0xe0))
                .simd_eq(wide::u8x32::splat(0))
                .to_bitmask();
            let bad = (escape | control) & ((1 << len) - 1);
            if bad != 0 {
                return Err(if escape >> bad.trailing_zeros() & 1 == 1 {
                    EnvelopeError::EscapedEventType { offset: i }
                } else {
                    EnvelopeError::InvalidEventType { offset: i }
                });
            }
            let len = len as usize;
            return std::str::from_utf8(&chunk[..len])
                .map(|t| (t, start + len + 1))
                .map_err(|_| EnvelopeError::InvalidEventType { offset: i });
        }
    }
    read_event_type_slow(frame, i)
}

/// [`read_event_type`], a byte at a time.
fn read_event_type_slow(frame: &[u8], i: usize) -> Result<(&str, usize), EnvelopeError> {
    let start = i + 1;
    let rest = frame.get(start..).unwrap_or_default();
    for (k, &b) in rest.iter().enumerate() {
        match b {
            b'"' => {
                return std::str::from_utf8(&rest[..k])
                    .map(|t| (t, start + k + 1))
                    .map_err(|_| EnvelopeError::InvalidEventType { offset: i });
            }
            b'\\' => return Err(EnvelopeError::EscapedEventType { offset: i }),
            0..0x20 => return Err(EnvelopeError::InvalidEventType { offset: i }),
            _ => {}
        }
    }
    Err(EnvelopeError::Truncated)
}

/// Skips the JSON value that starts at `i` (whitespace already skipped); returns the index just
/// after it. Strings and containers are not validated, only delimited.
fn skip_value(frame: &[u8], i: usize) -> Result<usize, EnvelopeError> {
    match frame.get(i) {
        None => Err(EnvelopeError::Truncated),
        Some(b'{' | b'[') => skip_container(frame, i),
        Some(b'"') => string_end(frame, i + 1).map(|end| end + 1),
        Some(b't') => read_literal(frame, i, b"true"),
        Some(b'f') => read_literal(frame, i, b"false"),
        Some(b'n') => read_literal(frame, i, b"null"),
        Some(b'-' | b'0'..=b'9') => {
            let len = frame[i + 1..]
                .iter()
                .position(|b| !matches!(b, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-'))
                .ok_or(EnvelopeError::Truncated)?;
            Ok(i + 1 + len)
        }
        Some(&b) => Err(unexpected(i, b)),
    }
}

/// Skips the object or array whose opening bracket is at `start`; returns the index just after
/// its closing bracket.
fn skip_container(frame: &[u8], start: usize) -> Result<usize, EnvelopeError> {
    let opener = frame[start];
    let (blocks, tail) = frame[start..].as_chunks::<BLOCK>();
    let mut scanner = Scanner::default();
    let mut base = start;
    for block in blocks {
        if let Some(end) = scanner.block(block) {
            return close(frame, opener, base + end);
        }
        base += BLOCK;
    }
    if tail.is_empty() {
        return Err(EnvelopeError::Truncated);
    }
    // The last, partial block: the frame's last 64 bytes with the bytes already scanned shifted
    // out, or, in a frame shorter than that, the rest padded with spaces (never structural).
    let masks = match frame.last_chunk::<BLOCK>() {
        Some(last) => Masks::of(last).shifted_out(BLOCK - tail.len()),
        None => {
            let mut last = [b' '; BLOCK];
            last[..tail.len()].copy_from_slice(tail);
            Masks::of(&last)
        }
    };
    match scanner.scan(&masks) {
        Some(end) if end <= tail.len() => close(frame, opener, base + end),
        _ => Err(EnvelopeError::Truncated),
    }
}

/// Checks that the bracket just before `end` closes `opener`.
fn close(frame: &[u8], opener: u8, end: usize) -> Result<usize, EnvelopeError> {
    let closer = frame[end - 1];
    if closer == opener + 2 {
        Ok(end)
    } else {
        Err(unexpected(end - 1, closer))
    }
}

/// Bytes per block of [`Scanner`].
const BLOCK: usize = 64;

/// Finds the end of a container, one 64-byte block at a time, carrying what it must between
/// blocks.
#[derive(Default)]
struct Scanner {
    /// Bracket depth, outside strings, at the start of the next block.
    depth: u64,
    /// All ones when the next block starts inside a string.
    in_string: u64,
    /// 1 when the first byte of the next block is escaped by a backslash.
    escaped_carry: u64,
}

impl Scanner {
    /// Scans the next block; returns the index in the block just after the bracket that brings
    /// the depth back to zero, if it is in this block.
    #[inline]
    fn block(&mut self, block: &[u8; BLOCK]) -> Option<usize> {
        self.scan(&Masks::of(block))
    }

    /// [`Scanner::block`], given the block's masks.
    #[inline]
    fn scan(&mut self, masks: &Masks) -> Option<usize> {
        let escaped = self.escaped(masks.backslash);
        let quotes = masks.quote & !escaped;
        let in_string = prefix_xor(quotes) ^ self.in_string;
        // Spread the last bit to all 64: arithmetic shift of the sign bit.
        self.in_string = ((in_string as i64) >> 63) as u64;
        let opens = masks.open & !in_string;
        let closes = masks.close & !in_string;
        let mut brackets = opens | closes;
        while brackets != 0 {
            let at = brackets.trailing_zeros();
            // +1 for an opening bracket, -1 for a closing one, without a branch.
            let open = (opens >> at) & 1;
            self.depth = self.depth.wrapping_add(2 * open).wrapping_sub(1);
            if self.depth == 0 {
                return Some(at as usize + 1);
            }
            brackets &= brackets - 1;
        }
        None
    }

    /// The bits of bytes escaped by a backslash, given the bits of backslashes. A backslash
    /// escapes exactly the next byte, so in a run of backslashes every other one is escaped.
    /// (The carry arithmetic is simdjson's.)
    #[inline]
    fn escaped(&mut self, backslash: u64) -> u64 {
        const ODD: u64 = 0xAAAA_AAAA_AAAA_AAAA;
        if backslash == 0 {
            return std::mem::take(&mut self.escaped_carry);
        }
        let carry = self.escaped_carry;
        // A backslash that is itself escaped starts nothing.
        let potential_escape = backslash & !carry;
        let maybe_escaped = potential_escape << 1;
        // Subtracting the backslashes turns runs starting on even bits into odd-bit patterns…
        let even_runs_and_odd = (maybe_escaped | ODD).wrapping_sub(potential_escape);
        let escape_and_terminal = even_runs_and_odd ^ ODD;
        let escaped = escape_and_terminal ^ (backslash | carry);
        let escape = escape_and_terminal & backslash;
        self.escaped_carry = escape >> 63;
        escaped
    }
}

/// Each bit `i` is the XOR of bits `0..=i` of `x`: ones from an opening quote up to, not
/// including, its closing quote.
#[inline]
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// Bit masks of the structural bytes of a block: bit `i` is byte `i`.
struct Masks {
    quote: u64,
    backslash: u64,
    /// `{` and `[`.
    open: u64,
    /// `}` and `]`.
    close: u64,
}

impl Masks {
    /// Drops the first `n` bytes (`n < 64`): byte `n` becomes byte 0, and the last `n` bytes are
    /// not structural.
    #[inline]
    fn shifted_out(&self, n: usize) -> Self {
        Self {
            quote: self.quote >> n,
            backslash: self.backslash >> n,
            open: self.open >> n,
            close: self.close >> n,
        }
    }

    /// With SIMD compares (SSE2 on x86_64, NEON on aarch64), through `wide`.
    #[inline]
    fn of(block: &[u8; BLOCK]) -> Self {
        let bytes = wide::u8x64::new(*block);
        // `[` is 0x5b, `{` 0x7b, `]` 0x5d, `}` 0x7d: setting bit 5 folds brackets onto braces.
        let folded = bytes | wide::u8x64::splat(0x20);
        Self {
            quote: bytes.simd_eq(wide::u8x64::splat(b'"')).to_bitmask(),
            backslash: bytes.simd_eq(wide::u8x64::splat(b'\\')).to_bitmask(),
            open: folded.simd_eq(wide::u8x64::splat(b'{')).to_bitmask(),
            close: folded.simd_eq(wide::u8x64::splat(b'}')).to_bitmask(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read(frame: &str) -> Result<Envelope<'_>, EnvelopeError> {
        read_envelope(frame.as_bytes())
    }

    fn data(frame: &str) -> Option<&str> {
        let envelope = read(frame).unwrap();
        envelope
            .data_bytes(frame.as_bytes())
            .map(|d| std::str::from_utf8(d).unwrap())
    }

    #[test]
    fn discord_frames() {
        let hello = r#"{"t":null,"s":null,"op":10,"d":{"heartbeat_interval":41250,"_trace":["[\"gateway-prd-us-east1-b-0568\",{\"micros\":0.0}]"]}}"#;
        assert_eq!(
            read(hello).unwrap(),
            Envelope {
                op: 10,
                seq: None,
                event_type: None,
                data: Some(31..hello.len() - 1),
            }
        );

        let ack = r#"{"t":null,"s":null,"op":11,"d":null}"#;
        let envelope = read(ack).unwrap();
        assert_eq!(
            (envelope.op, envelope.seq, envelope.event_type),
            (11, None, None)
        );
        assert_eq!(data(ack), Some("null"));

        let invalid_session = r#"{"t":null,"s":null,"op":9,"d":false}"#;
        assert_eq!(read(invalid_session).unwrap().op, 9);
        assert_eq!(data(invalid_session), Some("false"));

        let heartbeat = r#"{"op":1,"d":251}"#;
        assert_eq!(read(heartbeat).unwrap().op, 1);
        assert_eq!(data(heartbeat), Some("251"));

        let reconnect = r#"{"t":null,"s":null,"op":7,"d":null}"#;
        assert_eq!(read(reconnect).unwrap().op, 7);

        let ready = r#"{"t":"READY","s":1,"op":0,"d":{"v":10,"user_settings":{},"user":{"verified":true,"username":"shardyard","mfa_enabled":false,"id":"1100000000000000000","global_name":null,"flags":0,"email":null,"discriminator":"0000","bot":true,"avatar":null},"session_type":"normal","session_id":"0123456789abcdef0123456789abcdef","resume_gateway_url":"wss://gateway-us-east1-b.discord.gg","relationships":[],"private_channels":[],"presences":[],"guilds":[{"unavailable":true,"id":"81384788765712384"},{"unavailable":true,"id":"613425648685547541"}],"guild_join_requests":[],"geo_ordered_rtc_regions":["newark","us-east","us-central","atlanta","us-south"],"application":{"id":"1100000000000000000","flags":8953856},"_trace":["[\"gateway-prd-us-east1-b-0568\",{\"micros\":107436}]"]}}"#;
        let envelope = read(ready).unwrap();
        assert_eq!(
            (envelope.op, envelope.seq, envelope.event_type),
            (0, Some(1), Some("READY"))
        );
        let d = ready.find(r#""d":"#).unwrap() + 4;
        assert_eq!(data(ready), Some(&ready[d..ready.len() - 1]));

        let message = r#"{"t":"MESSAGE_CREATE","s":42,"op":0,"d":{"type":0,"tts":false,"timestamp":"2024-05-01T12:00:00.000000+00:00","pinned":false,"mentions":[],"mention_roles":[],"mention_everyone":false,"member":{"roles":["613425648685547541"],"premium_since":null,"pending":false,"nick":null,"mute":false,"joined_at":"2019-09-01T00:00:00.000000+00:00","flags":0,"deaf":false,"communication_disabled_until":null,"avatar":null},"id":"1235000000000000000","flags":0,"embeds":[],"edited_timestamp":null,"content":"he said \"}\" and left {\\","components":[],"channel_id":"613425648685547543","author":{"username":"someone","public_flags":0,"id":"80351110224678912","global_name":"Some One","discriminator":"0","avatar":"a_0123456789abcdef"},"attachments":[],"guild_id":"613425648685547541"}}"#;
        let envelope = read(message).unwrap();
        assert_eq!(
            (envelope.op, envelope.seq, envelope.event_type),
            (0, Some(42), Some("MESSAGE_CREATE"))
        );
        let d = message.find(r#""d":"#).unwrap() + 4;
        assert_eq!(data(message), Some(&message[d..message.len() - 1]));
    }

    #[test]
    fn key_order_whitespace_and_extra_keys() {
        let frame = " \n{ \"d\" :\t[1, {\"op\": 5, \"t\": \"X\"}, \"]\\\"\" ] ,\r\"x\": {\"a\": [[]], \"b\": \"}\"}, \"op\" : 7 , \"s\":3,\"t\" :\"E\" , \"y\":-1.5e+3, \"z\": true }\n ";
        let envelope = read(frame).unwrap();
        assert_eq!(
            (envelope.op, envelope.seq, envelope.event_type),
            (7, Some(3), Some("E"))
        );
        assert_eq!(
            data(frame),
            Some("[1, {\"op\": 5, \"t\": \"X\"}, \"]\\\"\" ]")
        );
    }

    #[test]
    fn data_of_every_type_and_absent() {
        for (frame, d) in [
            (r#"{"op":0,"d":"a\"b\\"}"#, Some(r#""a\"b\\""#)),
            (r#"{"op":0,"d":-12.5e-3}"#, Some("-12.5e-3")),
            (r#"{"op":0,"d":true }"#, Some("true")),
            (r#"{"op":0,"d":[]}"#, Some("[]")),
            (r#"{"op":0,"d":{}}"#, Some("{}")),
            (r#"{"op":0,"d":null}"#, Some("null")),
            (
                "{\"t\":null,\"s\":0,\"op\":0,\"d\":\tnull\r} ",
                Some("null"),
            ),
            (
                "{\"t\":\"A\",\"s\":1,\"op\":0,\"d\": \n{\"a\":1} }",
                Some("{\"a\":1}"),
            ),
            (r#"{"op":0}"#, None),
            (
                r#"{"d":{"a":"\\\\\\\""},"op":0}"#,
                Some(r#"{"a":"\\\\\\\""}"#),
            ),
        ] {
            assert_eq!(data(frame), d, "{frame}");
        }
    }

    #[test]
    fn escaped_keys_are_decoded() {
        let frame = r#"{"\u006fp":3,"\u0073":9,"\u0074":"T","\u0064":1,"o\u0070x":5}"#;
        let envelope = read(frame).unwrap();
        assert_eq!(
            (envelope.op, envelope.seq, envelope.event_type),
            (3, Some(9), Some("T"))
        );
        assert_eq!(data(frame), Some("1"));
        assert_eq!(read(r#"{"op":1,"\/":2,"\"":3,"\\":4}"#).unwrap().op, 1);
        assert_eq!(
            read(r#"{"o\p":1}"#),
            Err(EnvelopeError::Unexpected {
                offset: 4,
                found: 'p'
            })
        );
    }

    #[test]
    fn keys_with_unpaired_surrogates_are_refused_anywhere_in_the_key() {
        // A pair is one character, in any key, however long.
        assert_eq!(read(r#"{"op":1,"x\uD83D\uDE00yz":2}"#).unwrap().op, 1);
        for (frame, offset) in [
            (r#"{"op":1,"\uD83Du":2}"#, 9),
            (r#"{"op":1,"abc\uD83D":2}"#, 12),
            (r#"{"op":1,"abc\uD83D\n":2}"#, 12),
            (r#"{"op":1,"abc\uD83D\uD83D\uDE00":2}"#, 12),
            (r#"{"op":1,"abcdef\uDE00":2}"#, 15),
            (r#"{"\uDE00op":1}"#, 2),
        ] {
            assert_eq!(
                read(frame),
                Err(EnvelopeError::UnpairedSurrogate { offset }),
                "{frame}"
            );
        }
    }

    #[test]
    fn escaped_event_type_is_refused() {
        assert_eq!(
            read(r#"{"op":0,"t":"MESSAGE\u005fCREATE"}"#),
            Err(EnvelopeError::EscapedEventType { offset: 12 })
        );
    }

    #[test]
    fn invalid_envelopes() {
        use EnvelopeError::*;
        for (frame, error) in [
            ("", Truncated),
            ("   ", Truncated),
            (
                "[0]",
                NotAnObject {
                    offset: 0,
                    found: '[',
                },
            ),
            (
                "null",
                NotAnObject {
                    offset: 0,
                    found: 'n',
                },
            ),
            ("{}", MissingOp),
            (r#"{"s":1,"d":{}}"#, MissingOp),
            (r#"{"op":256}"#, InvalidOp { offset: 6 }),
            (r#"{"op":-1}"#, InvalidOp { offset: 6 }),
            (r#"{"op":1.0}"#, InvalidOp { offset: 6 }),
            (r#"{"op":1e0}"#, InvalidOp { offset: 6 }),
            (r#"{"op":01}"#, InvalidOp { offset: 6 }),
            (r#"{"op":"1"}"#, InvalidOp { offset: 6 }),
            (r#"{"op":null}"#, InvalidOp { offset: 6 }),
            (r#"{"op":1,"s":-0}"#, InvalidSequence { offset: 12 }),
            (
                r#"{"op":1,"s":18446744073709551616}"#,
                InvalidSequence { offset: 12 },
            ),
            (r#"{"op":1,"s":"1"}"#, InvalidSequence { offset: 12 }),
            (r#"{"op":1,"t":1}"#, InvalidEventType { offset: 12 }),
            (r#"{"op":1,"t":"a\u0001"}"#, EscapedEventType { offset: 12 }),
            (
                "{\"op\":1,\"t\":\"a\u{1}\"}",
                InvalidEventType { offset: 12 },
            ),
            (r#"{"op":1,"op":1}"#, DuplicateKey { key: "op" }),
            (r#"{"op":1,"d":1,"d":1}"#, DuplicateKey { key: "d" }),
            (r#"{"op":1,"s":null,"s":null}"#, DuplicateKey { key: "s" }),
            (r#"{"op":1,"t":null,"t":null}"#, DuplicateKey { key: "t" }),
            (
                r#"{"op":1} x"#,
                TrailingBytes {
                    offset: 9,
                    found: 'x',
                },
            ),
            (
                r#"{"op":1}}"#,
                TrailingBytes {
                    offset: 8,
                    found: '}',
                },
            ),
            (
                r#"{"op":1,}"#,
                Unexpected {
                    offset: 8,
                    found: '}',
                },
            ),
            (
                r#"{"op":1 "s":1}"#,
                Unexpected {
                    offset: 8,
                    found: '"',
                },
            ),
            (
                r#"{"op" 1}"#,
                Unexpected {
                    offset: 6,
                    found: '1',
                },
            ),
            (
                r#"{op:1}"#,
                Unexpected {
                    offset: 1,
                    found: 'o',
                },
            ),
            (
                r#"{"op":1,"d":nul}"#,
                Unexpected {
                    offset: 15,
                    found: '}',
                },
            ),
            (
                r#"{"op":1,"d":{"a":1]}"#,
                Unexpected {
                    offset: 18,
                    found: ']',
                },
            ),
            (
                r#"{"op":1,"d":[}"#,
                Unexpected {
                    offset: 13,
                    found: '}',
                },
            ),
            (r#"{"op":1,"d":[{}"#, Truncated),
            (r#"{"op":1,"d":{"a":"}"}"#, Truncated),
            (r#"{"op":1,"d":"\"}"#, Truncated),
            (r#"{"op":1"#, Truncated),
            (r#"{"op":"#, Truncated),
            (r#"{"op"#, Truncated),
            (r#"{"op":1,"d":{"#, Truncated),
        ] {
            assert_eq!(read(frame), Err(error), "{frame}");
        }
    }

    #[test]
    fn containers_across_blocks() {
        // Strings, escapes and brackets straddling the 64-byte block boundaries.
        for pad in 0..140 {
            let filler = "x".repeat(pad);
            let d = format!(
                r#"{{"a":"{filler}\\\\","b":"\"{{[{filler}\\\"]}}","c":[{{}},[[{filler}]]],"e":"\\\\\\"}}"#
            );
            let frame = format!(r#"{{"op":0,"d":{d},"z":"}}"}}"#);
            assert_eq!(data(&frame), Some(d.as_str()), "{pad}");
        }
    }

    #[test]
    fn error_messages_are_readable() {
        assert_eq!(
            EnvelopeError::InvalidOp { offset: 6 }.to_string(),
            "`op` at offset 6 is not an integer from 0 to 255"
        );
        assert_eq!(
            EnvelopeError::DuplicateKey { key: "d" }.to_string(),
            "the key `d` appears twice"
        );
    }

    #[test]
    fn long_event_types_and_sequences() {
        let t = "APPLICATION_COMMAND_PERMISSIONS_UPDATE_AND_THEN_SOME_MORE_TO_PASS_64";
        for s in [0, 7, 99_999_999, 100_000_000, 12_345_678_901, u64::MAX] {
            let frame = format!(r#"{{"t":"{t}","s":{s},"op":0,"d":{{}}}}"#);
            let envelope = read(&frame).unwrap();
            assert_eq!((envelope.event_type, envelope.seq), (Some(t), Some(s)));
        }
        assert_eq!(
            read(&format!(r#"{{"t":"{t}\n","op":0}}"#)),
            Err(EnvelopeError::EscapedEventType { offset: 5 })
        );
        assert_eq!(
            read("{\"t\":\"A\u{1}\\\"\",\"op\":0}"),
            Err(EnvelopeError::InvalidEventType { offset: 5 })
        );
        assert_eq!(
            read("{\"t\":\"A\\\"\u{1}\",\"op\":0,\"d\":1}"),
            Err(EnvelopeError::EscapedEventType { offset: 5 })
        );
    }

    /// Which bytes a backslash escapes, one byte at a time.
    fn escaped_reference(backslash: u64, mut carry: bool) -> (u64, bool) {
        let mut escaped = 0;
        for i in 0..64 {
            if carry {
                escaped |= 1 << i;
                carry = false;
            } else if backslash >> i & 1 == 1 {
                carry = true;
            }
        }
        (escaped, carry)
    }

    proptest! {
        #[test]
        fn escaped_matches_reference(
            backslash in prop_oneof![any::<u64>(), any::<u64>().prop_map(|x| x | x << 1 | x << 2)],
            carry: bool,
        ) {
            let mut scanner = Scanner { escaped_carry: u64::from(carry), ..Scanner::default() };
            let (expected, expected_carry) = escaped_reference(backslash, carry);
            prop_assert_eq!(scanner.escaped(backslash), expected);
            prop_assert_eq!(scanner.escaped_carry, u64::from(expected_carry));
        }

        #[test]
        fn masks_match_reference(block in prop::collection::vec(
            prop_oneof![any::<u8>(), prop::sample::select(&b"\"\\{}[]{}[]\"\"\\"[..])],
            BLOCK,
        )) {
            let block: [u8; BLOCK] = block.try_into().unwrap();
            let masks = Masks::of(&block);
            let bits = |f: &dyn Fn(u8) -> bool| {
                block.iter().enumerate().fold(0u64, |m, (i, &b)| m | u64::from(f(b)) << i)
            };
            prop_assert_eq!(masks.quote, bits(&|b| b == b'"'));
            prop_assert_eq!(masks.backslash, bits(&|b| b == b'\\'));
            prop_assert_eq!(masks.open, bits(&|b| b == b'{' || b == b'['));
            prop_assert_eq!(masks.close, bits(&|b| b == b'}' || b == b']'));
        }

        #[test]
        fn read_uint_matches_slow_path(
            digits in "(0|[1-9][0-9]{0,21})|[0-9.eE+-]{0,10}",
            after in prop::sample::select(&[",", "}", " ", ".5", "e3", "E3", "", "0", "x"][..]),
            pad in 0usize..10,
        ) {
            let text = format!("{digits}{after}{}", " ".repeat(pad));
            let frame = text.as_bytes();
            prop_assert_eq!(read_uint(frame, 0), read_uint_slow(frame, 0), "{:?}", text);
        }

        #[test]
        fn read_event_type_matches_slow_path(
            t in prop::collection::vec(prop_oneof![
                8 => prop::char::range('A', 'Z'),
                1 => prop::sample::select(&['"', '\\', '\u{1}', '\u{1f}', ' ', 'é', '_'][..]),
            ], 0..40),
            pad in 0usize..40,
        ) {
            let t: String = t.into_iter().collect();
            let text = format!("\"{t}\",{}", " ".repeat(pad));
            let frame = text.as_bytes();
            prop_assert_eq!(read_event_type(frame, 0), read_event_type_slow(frame, 0), "{:?}", text);
        }

        #[test]
        fn prefix_xor_matches_reference(x: u64) {
            let expected = (0..64).fold(0u64, |acc, i| {
                let below = if i == 63 { x } else { x & ((1 << (i + 1)) - 1) };
                acc | u64::from(below.count_ones() % 2) << i
            });
            prop_assert_eq!(prefix_xor(x), expected);
        }
    }
}
