//! A few hand-written JSON writers for the payloads the traffic generator makes most (messages
//! with their author and member): serde_json scans every string for escapes through a generic
//! path, and at 100k events/s that was the generator's largest cost. Output is checked against
//! the serde shape in tests.

/// Writes `s` as a JSON string, escaping only when needed.
pub(crate) fn str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Rare: let serde_json do the escaping. Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// Writes `s` or `null`.
pub(crate) fn opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// Writes a snowflake as Discord does: a decimal string.
pub(crate) fn id(out: &mut Vec<u8>, id: u64) {
    out.push(b'"');
    out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
    out.push(b'"');
}

/// Writes a number.
pub(crate) fn num(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Writes a boolean.
pub(crate) fn boolean(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

/// Writes `"key":`, preceded by a comma unless it opens the object.
pub(crate) fn key(out: &mut Vec<u8>, key: &str) {
    if !matches!(out.last(), Some(b'{')) {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}
