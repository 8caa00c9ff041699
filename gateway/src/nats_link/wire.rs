//! The part of NATS' client protocol the publish connection speaks, without I/O: framing `HPUB`
//! with pre-built headers, and parsing what the server sends (`INFO`, `MSG`, `HMSG`, `PING`,
//! `PONG`, `+OK`, `-ERR`). Pure, so every malformed input is a unit test away.

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};

/// The longest control line accepted from the server. nats-server's own limit for clients is
/// 4 KiB; `INFO` can be longer (connect URLs of a big cluster), so this is generous.
pub const MAX_CONTROL_LINE: usize = 64 * 1024;

/// The largest message accepted from the server. Only acknowledgements arrive here (a few dozen
/// bytes); anything near this is a protocol error, not something to buffer.
pub const MAX_INBOUND_MESSAGE: usize = 8 * 1024 * 1024;

/// One operation from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOp {
    /// `INFO {json}`.
    Info(Bytes),
    /// `MSG` or `HMSG`: a message on a subscription.
    Msg {
        /// Its subject.
        subject: Bytes,
        /// The status of a header block's first line (`NATS/1.0 503`), if any.
        status: Option<u16>,
        /// The payload (without headers).
        payload: Bytes,
    },
    /// `PING`: answer `PONG`.
    Ping,
    /// `PONG`.
    Pong,
    /// `+OK`.
    Ok,
    /// `-ERR 'why'`.
    Err(String),
}

/// The server sent something that is not NATS' protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// No line end within [`MAX_CONTROL_LINE`] bytes.
    #[error("a control line longer than {MAX_CONTROL_LINE} bytes")]
    LineTooLong,
    /// An operation this client does not know.
    #[error("unknown protocol operation {0:?}")]
    UnknownOp(String),
    /// A `MSG`/`HMSG` line whose fields do not parse.
    #[error("malformed {op} line {line:?}")]
    Malformed {
        /// `MSG` or `HMSG`.
        op: &'static str,
        /// The line, lossily.
        line: String,
    },
    /// A message larger than [`MAX_INBOUND_MESSAGE`].
    #[error("a message of {0} bytes")]
    TooLarge(usize),
    /// The payload was not followed by a line end.
    #[error("a message without its closing line end")]
    MissingTerminator,
}

/// Parses the next complete operation out of `buf`, consuming it. `Ok(None)`: more bytes are
/// needed (nothing is consumed).
///
/// # Errors
/// [`WireError`] when the bytes cannot be NATS' protocol; the connection should be dropped.
pub fn parse(buf: &mut BytesMut) -> Result<Option<ServerOp>, WireError> {
    let Some(line_len) = memchr::memmem::find(buf, b"\r\n") else {
        return if buf.len() > MAX_CONTROL_LINE {
            Err(WireError::LineTooLong)
        } else {
            Ok(None)
        };
    };
    if line_len > MAX_CONTROL_LINE {
        return Err(WireError::LineTooLong);
    }
    let line = &buf[..line_len];
    let op_len = line
        .iter()
        .position(|b| *b == b' ' || *b == b'\t')
        .unwrap_or(line_len);
    let (op, rest) = (&line[..op_len], &line[(op_len + 1).min(line_len)..]);
    if op.eq_ignore_ascii_case(b"MSG") {
        return parse_message(buf, line_len, op_len, false);
    }
    if op.eq_ignore_ascii_case(b"HMSG") {
        return parse_message(buf, line_len, op_len, true);
    }
    let simple = if op.eq_ignore_ascii_case(b"PING") {
        ServerOp::Ping
    } else if op.eq_ignore_ascii_case(b"PONG") {
        ServerOp::Pong
    } else if op.eq_ignore_ascii_case(b"+OK") {
        ServerOp::Ok
    } else if op.eq_ignore_ascii_case(b"-ERR") {
        let text = String::from_utf8_lossy(rest.trim_ascii());
        ServerOp::Err(text.trim_matches('\'').to_owned())
    } else if op.eq_ignore_ascii_case(b"INFO") {
        let start = line_len - rest.len();
        let mut info = buf.split_to(line_len + 2);
        info.truncate(line_len);
        info.advance(start);
        return Ok(Some(ServerOp::Info(info.freeze())));
    } else {
        let shown: String = String::from_utf8_lossy(op).chars().take(32).collect();
        return Err(WireError::UnknownOp(shown));
    };
    buf.advance(line_len + 2);
    Ok(Some(simple))
}

/// `MSG <subject> <sid> [reply] <size>` or `HMSG <subject> <sid> [reply] <header size> <size>`;
/// `fields_at` is where the fields start in `buf`.
fn parse_message(
    buf: &mut BytesMut,
    line_len: usize,
    fields_at: usize,
    headers: bool,
) -> Result<Option<ServerOp>, WireError> {
    let op = if headers { "HMSG" } else { "MSG" };
    let malformed = |buf: &BytesMut| WireError::Malformed {
        op,
        line: String::from_utf8_lossy(&buf[..line_len.min(200)]).into_owned(),
    };
    // The fields as ranges of `buf`: subject and sid, an optional reply, one or two sizes.
    let mut tokens = [(0, 0); 5];
    let mut count = 0;
    let mut at = fields_at;
    while at < line_len {
        if matches!(buf[at], b' ' | b'\t') {
            at += 1;
            continue;
        }
        let start = at;
        while at < line_len && !matches!(buf[at], b' ' | b'\t') {
            at += 1;
        }
        if count == tokens.len() {
            return Err(malformed(buf));
        }
        tokens[count] = (start, at);
        count += 1;
    }
    let sizes = if headers { 2 } else { 1 };
    if count != 2 + sizes && count != 3 + sizes {
        return Err(malformed(buf));
    }
    let number = |(start, end): (usize, usize)| -> Option<usize> {
        std::str::from_utf8(&buf[start..end]).ok()?.parse().ok()
    };
    let total = number(tokens[count - 1]).ok_or_else(|| malformed(buf))?;
    let header_len = if headers {
        number(tokens[count - 2]).ok_or_else(|| malformed(buf))?
    } else {
        0
    };
    if header_len > total {
        return Err(malformed(buf));
    }
    if total > MAX_INBOUND_MESSAGE {
        return Err(WireError::TooLarge(total));
    }
    let needed = line_len + 2 + total + 2;
    if buf.len() < needed {
        buf.reserve(needed - buf.len());
        return Ok(None);
    }
    if &buf[needed - 2..needed] != b"\r\n" {
        return Err(WireError::MissingTerminator);
    }
    let (subject_start, subject_end) = tokens[0];
    let mut frame = buf.split_to(needed).freeze();
    let subject = frame.slice(subject_start..subject_end);
    frame.advance(line_len + 2);
    frame.truncate(total);
    let status = if headers {
        status_of(&frame[..header_len])
    } else {
        None
    };
    frame.advance(header_len);
    Ok(Some(ServerOp::Msg {
        subject,
        status,
        payload: frame,
    }))
}

/// The status code of a header block (`NATS/1.0 503 No Responders\r\n…`), if it has one.
fn status_of(block: &[u8]) -> Option<u16> {
    let first = block.split(|b| *b == b'\r').next()?;
    let rest = first.strip_prefix(b"NATS/1.0")?.trim_ascii_start();
    let code = rest.split(|b| *b == b' ').next()?;
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// A header line's value cannot hold a line break (it would end the header block).
#[must_use]
pub fn is_header_value(value: &[u8]) -> bool {
    !value.iter().any(|b| *b == b'\r' || *b == b'\n')
}

/// Starts a header block: `NATS/1.0\r\n`. Add lines with [`header`] and end it with
/// [`end_headers`].
pub fn begin_headers(block: &mut Vec<u8>) {
    block.clear();
    block.extend_from_slice(b"NATS/1.0\r\n");
}

/// One `name: value` line; the value must pass [`is_header_value`].
pub fn header(block: &mut Vec<u8>, name: &str, value: &[u8]) {
    block.extend_from_slice(name.as_bytes());
    block.extend_from_slice(b": ");
    block.extend_from_slice(value);
    block.extend_from_slice(b"\r\n");
}

/// Ends a header block.
pub fn end_headers(block: &mut Vec<u8>) {
    block.extend_from_slice(b"\r\n");
}

/// Frames `HPUB <subject> <reply> <header size> <total size>` with its header block and payload.
/// The subject is written as `subject_parts` concatenated, the reply as `reply_prefix` then
/// `reply_slot`, `.`, `reply_id`.
pub fn write_hpub(
    out: &mut BytesMut,
    subject_parts: [&str; 2],
    reply: (&str, u64, u64),
    header_block: &[u8],
    payload: &[u8],
) {
    let mut numbers = itoa::Buffer::new();
    let total = header_block.len() + payload.len();
    out.reserve(64 + subject_parts[0].len() + subject_parts[1].len() + reply.0.len() + total);
    out.put_slice(b"HPUB ");
    out.put_slice(subject_parts[0].as_bytes());
    out.put_slice(subject_parts[1].as_bytes());
    out.put_u8(b' ');
    out.put_slice(reply.0.as_bytes());
    out.put_slice(numbers.format(reply.1).as_bytes());
    out.put_u8(b'.');
    out.put_slice(numbers.format(reply.2).as_bytes());
    out.put_u8(b' ');
    out.put_slice(numbers.format(header_block.len()).as_bytes());
    out.put_u8(b' ');
    out.put_slice(numbers.format(total).as_bytes());
    out.put_slice(b"\r\n");
    out.put_slice(header_block);
    out.put_slice(payload);
    out.put_slice(b"\r\n");
}

/// A reply subject written by [`write_hpub`] back into its slot and id, when it starts with
/// `prefix`.
#[must_use]
pub fn reply_target(subject: &[u8], prefix: &str) -> Option<(u64, u64)> {
    let rest = subject.strip_prefix(prefix.as_bytes())?;
    let dot = rest.iter().position(|b| *b == b'.')?;
    let number = |t: &[u8]| std::str::from_utf8(t).ok()?.parse::<u64>().ok();
    Some((number(&rest[..dot])?, number(&rest[dot + 1..])?))
}

/// Whether a JetStream publish reply says the message is stored: `{"stream":"…","seq":N}`,
/// maybe with `"duplicate":true` (a replay JetStream already holds, which is as good). An error
/// reply has `error` instead. JetStream's usual success, exactly those fields in that order, is
/// recognized without a JSON parser (it is read once per event); anything else is parsed.
#[must_use]
pub fn is_stored(payload: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct PubAck {
        stream: Option<serde::de::IgnoredAny>,
        seq: Option<u64>,
        error: Option<serde::de::IgnoredAny>,
    }
    is_plain_stored_ack(payload)
        || serde_json::from_slice::<PubAck>(payload)
            .is_ok_and(|a| a.error.is_none() && a.stream.is_some() && a.seq.is_some())
}

/// `{"stream":"NAME","seq":DIGITS}` or `{"stream":"NAME","seq":DIGITS,"duplicate":true}`,
/// with no escape in NAME: nothing else fits, so no `error` can hide in it.
fn is_plain_stored_ack(payload: &[u8]) -> bool {
    let Some(rest) = payload.strip_prefix(b"{\"stream\":\"") else {
        return false;
    };
    let Some(name_end) = memchr::memchr2(b'"', b'\\', rest) else {
        return false;
    };
    let Some(rest) = rest[name_end..].strip_prefix(b"\",\"seq\":") else {
        return false;
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0 && matches!(&rest[digits..], b"}" | b",\"duplicate\":true}")
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::{
        MAX_CONTROL_LINE, ServerOp, WireError, begin_headers, end_headers, header, is_stored,
        parse, reply_target, write_hpub,
    };

    fn all(input: &[u8]) -> Result<Vec<ServerOp>, WireError> {
        let mut buf = BytesMut::from(input);
        let mut ops = Vec::new();
        while let Some(op) = parse(&mut buf)? {
            ops.push(op);
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        Ok(ops)
    }

    fn msg(subject: &str, status: Option<u16>, payload: &str) -> ServerOp {
        ServerOp::Msg {
            subject: subject.as_bytes().to_vec().into(),
            status,
            payload: payload.as_bytes().to_vec().into(),
        }
    }

    #[test]
    fn every_server_operation_parses() {
        let input = b"INFO {\"max_payload\":1048576}\r\nPING\r\npong\r\n+OK\r\n-ERR 'Authorization Violation'\r\n\
MSG _INBOX.x.3.7 1 26\r\n{\"stream\":\"S\",\"seq\":12345}\r\n\
HMSG _INBOX.x.3.8 1 30 30\r\nNATS/1.0 503 No Responders\r\n\r\n\r\n\
MSG with.reply 1 reply.to 2\r\nhi\r\n";
        assert_eq!(
            all(input).expect("valid"),
            vec![
                ServerOp::Info(b"{\"max_payload\":1048576}".to_vec().into()),
                ServerOp::Ping,
                ServerOp::Pong,
                ServerOp::Ok,
                ServerOp::Err("Authorization Violation".into()),
                msg("_INBOX.x.3.7", None, "{\"stream\":\"S\",\"seq\":12345}"),
                msg("_INBOX.x.3.8", Some(503), ""),
                msg("with.reply", None, "hi"),
            ]
        );
    }

    #[test]
    fn a_split_operation_waits_for_the_rest_byte_by_byte() {
        let input = b"HMSG a.b 1 12 15\r\nNATS/1.0\r\n\r\nabc\r\nPING\r\n";
        let mut buf = BytesMut::new();
        let mut ops = Vec::new();
        for byte in input {
            buf.extend_from_slice(&[*byte]);
            while let Some(op) = parse(&mut buf).expect("valid") {
                ops.push(op);
            }
        }
        assert_eq!(ops, vec![msg("a.b", None, "abc"), ServerOp::Ping]);
    }

    #[test]
    fn malformed_input_is_an_error_never_a_panic() {
        let bad: &[&[u8]] = &[
            b"HELLO\r\n",
            b"MSG\r\n",
            b"MSG a 1\r\n",
            b"MSG a 1 x\r\n",
            b"MSG a 1 b c d e\r\n",
            b"HMSG a 1 5 3\r\nabc\r\n",
            b"MSG a 1 2\r\nabcd\r\n",
            b"MSG a 1 99999999999\r\n",
            b"MSG a 1 -1\r\n",
        ];
        for input in bad {
            let mut buf = BytesMut::from(*input);
            assert!(
                parse(&mut buf).is_err(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let mut endless = BytesMut::from(&vec![b'A'; MAX_CONTROL_LINE + 1][..]);
        assert_eq!(parse(&mut endless), Err(WireError::LineTooLong));
        // Arbitrary bytes: errors or waits, never panics.
        for seed in 0u32..2_000 {
            let noise: Vec<u8> = (0..64u32)
                .map(|i| (seed.wrapping_mul(2_654_435_761).wrapping_add(i * 40_503) >> 13) as u8)
                .collect();
            for prefix in [&b"MSG "[..], b"HMSG ", b"INFO ", b""] {
                let mut buf = BytesMut::from(&[prefix, &noise[..], b"\r\n"].concat()[..]);
                while let Ok(Some(_)) = parse(&mut buf) {}
            }
        }
    }

    #[test]
    fn hpub_is_framed_with_exact_sizes() {
        let mut block = Vec::new();
        begin_headers(&mut block);
        header(&mut block, "Nats-Msg-Id", b"s:1");
        end_headers(&mut block);
        let mut out = BytesMut::new();
        write_hpub(
            &mut out,
            ["shardyard.b.events.0.", "READY"],
            ("_INBOX.x.", 2, 9),
            &block,
            b"{}",
        );
        assert_eq!(
            &out[..],
            b"HPUB shardyard.b.events.0.READY _INBOX.x.2.9 30 32\r\nNATS/1.0\r\nNats-Msg-Id: s:1\r\n\r\n{}\r\n"
        );
        assert_eq!(reply_target(b"_INBOX.x.2.9", "_INBOX.x."), Some((2, 9)));
        assert_eq!(reply_target(b"_INBOX.y.2.9", "_INBOX.x."), None);
        assert_eq!(reply_target(b"_INBOX.x.2", "_INBOX.x."), None);
        assert_eq!(reply_target(b"_INBOX.x.a.9", "_INBOX.x."), None);
    }

    #[test]
    fn acknowledgements_are_told_from_errors() {
        assert!(is_stored(br#"{"stream":"S","seq":7}"#));
        assert!(is_stored(br#"{"stream":"S","seq":7,"duplicate":true}"#));
        assert!(is_stored(br#"{"stream":"S","domain":"d","seq":7}"#));
        assert!(!is_stored(
            br#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"},"stream":"S","seq":0}"#
        ));
        assert!(!is_stored(
            br#"{"stream":"S","seq":0,"error":{"code":503}}"#
        ));
        assert!(!is_stored(br#"{"error":{"code":400}}"#));
        assert!(!is_stored(br#"{"stream":"S"}"#));
        assert!(!is_stored(b""));
        assert!(!is_stored(b"not json"));
        // The fast path's edges, each still answered right (by the parser when not plain).
        assert!(is_stored(br#"{"stream":"a\"b","seq":7}"#));
        assert!(is_stored(br#"{"stream":"S","seq":7,"duplicate":false}"#));
        assert!(!is_stored(br#"{"stream":"S","seq":}"#));
        assert!(!is_stored(br#"{"stream":"S","seq":7,"error":{"code":1}}"#));
        assert!(!is_stored(br#"{"stream":"S","seq":7"#));
        assert!(!is_stored(br#"{"stream":"S,"seq":7}"#));
    }
}
