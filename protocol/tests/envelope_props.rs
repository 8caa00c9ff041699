//! Property tests of `read_envelope` against serde_json's answer.
//!
//! Frames are generated with `op`, `s`, `t`, `d` and unknown keys in any order, values of every
//! JSON type nested and escaped every way JSON allows (short escapes, `\uXXXX`, surrogate pairs,
//! escaped keys), and whitespace between any two tokens. On every frame serde_json accepts, the
//! reader must give the same `op`, `s`, `t` and exactly the bytes of `d`'s `RawValue`; on every
//! valid JSON object serde_json refuses, the reader must refuse too; on anything else it must not
//! panic.

use proptest::prelude::*;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use shardyard_protocol::{Envelope, EnvelopeError, read_envelope};

/// What serde_json says the envelope is.
#[derive(Debug, Deserialize)]
struct Oracle<'a> {
    op: u8,
    #[serde(default)]
    s: Option<u64>,
    #[serde(borrow, default)]
    t: Option<&'a str>,
    #[serde(borrow, default, deserialize_with = "raw")]
    d: Option<&'a RawValue>,
}

/// `d` as raw JSON, `null` included: `None` only when absent.
fn raw<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// Checks `read_envelope` on any input against serde_json, as far as serde_json has an answer.
fn check(frame: &[u8]) -> Result<(), TestCaseError> {
    let ours = read_envelope(frame);
    if let Ok(envelope) = &ours {
        // Whatever the input, a range is inside the frame.
        if let Some(range) = &envelope.data {
            prop_assert!(range.start <= range.end && range.end <= frame.len());
        }
    }
    let Ok(text) = std::str::from_utf8(frame) else {
        return Ok(());
    };
    let is_json = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
    let is_object = text
        .trim_start_matches([' ', '\n', '\r', '\t'])
        .starts_with('{');
    if !is_object {
        // serde_json would read a struct from an array too; a frame must be an object.
        prop_assert!(ours.is_err(), "accepted a non-object: {text:?}");
        return Ok(());
    }
    match serde_json::from_str::<Oracle<'_>>(text) {
        Ok(oracle) => {
            let envelope = ours.map_err(|e| {
                TestCaseError::fail(format!("refused ({e}) what serde_json reads: {text:?}"))
            })?;
            prop_assert_eq!(envelope.op, oracle.op, "op of {:?}", text);
            prop_assert_eq!(envelope.seq, oracle.s, "s of {:?}", text);
            prop_assert_eq!(envelope.event_type, oracle.t, "t of {:?}", text);
            prop_assert_eq!(
                envelope.data_bytes(frame),
                oracle.d.map(|d| d.get().as_bytes()),
                "d of {:?}",
                text
            );
        }
        Err(error) if is_json => {
            prop_assert!(
                ours.is_err(),
                "accepted ({:?}) what serde_json refuses ({}): {:?}",
                ours,
                error,
                text
            );
        }
        Err(_) => {}
    }
    Ok(())
}

/// A JSON value to write.
#[derive(Clone, Debug)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A number written in exponent form.
    Exp(i32, i16),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

/// Characters that stress a scanner: JSON's structural ones, escapes, non-ASCII.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => any::<char>(),
        4 => prop::sample::select(&[
            '"', '\\', '{', '}', '[', ']', ':', ',', '/', '\n', '\t', '\u{0}', '\u{1f}', 'é',
            '\u{7f}', '\u{2028}', '😀', ' ', 'u',
        ][..]),
        4 => prop::char::range('a', 'z'),
    ]
}

fn tricky_string() -> impl Strategy<Value = String> {
    prop::collection::vec(tricky_char(), 0..16).prop_map(|chars| chars.into_iter().collect())
}

fn json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::Int),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Json::Float),
        (any::<i32>(), -300i16..300).prop_map(|(m, e)| Json::Exp(m, e)),
        tricky_string().prop_map(Json::Str),
    ];
    leaf.prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Json::Arr),
            prop::collection::vec((tricky_string(), inner), 0..8).prop_map(Json::Obj),
        ]
    })
}

/// Chooses whitespace and escapes while writing: a small deterministic generator.
struct Style(u64);

impl Style {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }

    fn ws(&mut self, out: &mut String) {
        while self.one_in(4) {
            out.push([' ', '\n', '\r', '\t'][(self.next() % 4) as usize]);
        }
    }

    fn string(&mut self, s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            let short = match c {
                '"' => Some("\\\""),
                '\\' => Some("\\\\"),
                '\n' => Some("\\n"),
                '\r' => Some("\\r"),
                '\t' => Some("\\t"),
                '\u{8}' => Some("\\b"),
                '\u{c}' => Some("\\f"),
                '/' if self.one_in(2) => Some("\\/"),
                _ => None,
            };
            let must_escape = c < ' ' || c == '"' || c == '\\';
            if let (Some(short), true) = (short, must_escape || self.one_in(2)) {
                out.push_str(short);
            } else if must_escape || self.one_in(8) {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    if self.one_in(2) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    } else {
                        out.push_str(&format!("\\u{unit:04X}"));
                    }
                }
            } else {
                out.push(c);
            }
        }
        out.push('"');
    }

    fn json(&mut self, value: &Json, out: &mut String) {
        match value {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(i) => out.push_str(&i.to_string()),
            Json::Float(f) => out.push_str(&serde_json::to_string(f).unwrap()),
            Json::Exp(m, e) => {
                let e_char = if self.one_in(2) { 'e' } else { 'E' };
                let sign = if *e >= 0 && self.one_in(2) { "+" } else { "" };
                out.push_str(&format!("{m}.5{e_char}{sign}{e}"));
            }
            Json::Str(s) => self.string(s, out),
            Json::Arr(items) => {
                out.push('[');
                for (k, item) in items.iter().enumerate() {
                    if k > 0 {
                        out.push(',');
                    }
                    self.ws(out);
                    self.json(item, out);
                    self.ws(out);
                }
                out.push(']');
            }
            Json::Obj(members) => {
                out.push('{');
                for (k, (key, item)) in members.iter().enumerate() {
                    if k > 0 {
                        out.push(',');
                    }
                    self.ws(out);
                    self.string(key, out);
                    self.ws(out);
                    out.push(':');
                    self.ws(out);
                    self.json(item, out);
                    self.ws(out);
                }
                out.push('}');
            }
        }
    }
}

/// The value of a member of a generated frame.
#[derive(Clone, Debug)]
enum Member {
    /// Written as it is: numbers in valid and invalid forms, `null`, and so on.
    Raw(&'static str),
    /// A `u64`, written in decimal.
    Number(u64),
    Json(Json),
}

fn op() -> impl Strategy<Value = Option<Member>> {
    prop_oneof![
        16 => (0u64..=255).prop_map(|op| Some(Member::Number(op))),
        1 => Just(None),
        1 => prop::sample::select(&["256", "-1", "1.0", "1e0", "\"0\"", "null", "-0", "[0]"][..])
            .prop_map(|raw| Some(Member::Raw(raw))),
    ]
}

fn seq() -> impl Strategy<Value = Option<Member>> {
    prop_oneof![
        8 => any::<u64>().prop_map(|s| Some(Member::Number(s))),
        4 => Just(Some(Member::Raw("null"))),
        4 => Just(None),
        1 => prop::sample::select(&[
            "18446744073709551615", "18446744073709551616", "-1", "0.5", "\"1\"", "true",
        ][..])
            .prop_map(|raw| Some(Member::Raw(raw))),
    ]
}

fn event_type() -> impl Strategy<Value = Option<Member>> {
    prop_oneof![
        8 => "[A-Z_]{1,30}".prop_map(|t| Some(Member::Json(Json::Str(t)))),
        2 => tricky_string().prop_map(|t| Some(Member::Json(Json::Str(t)))),
        4 => Just(Some(Member::Raw("null"))),
        4 => Just(None),
        1 => prop::sample::select(&["1", "true", "{}", "[\"T\"]"][..])
            .prop_map(|raw| Some(Member::Raw(raw))),
    ]
}

fn data() -> impl Strategy<Value = Option<Member>> {
    prop_oneof![
        8 => json().prop_map(|d| Some(Member::Json(d))),
        1 => Just(None),
    ]
}

/// Unknown keys: anything but the four of the envelope.
fn extra_key() -> impl Strategy<Value = String> {
    prop_oneof![
        tricky_string(),
        prop::sample::select(&["o", "p", "ops", "S", "T", "D", "dd", "op ", " d", ""][..])
            .prop_map(str::to_owned),
    ]
    .prop_filter("not an envelope key", |k| {
        !["op", "s", "t", "d"].contains(&k.as_str())
    })
}

prop_compose! {
    /// A frame, and whether it was generated with a duplicate key.
    fn frame()(
        op in op(),
        s in seq(),
        t in event_type(),
        d in data(),
        extras in prop::collection::vec((extra_key(), json()), 0..4),
        duplicate in prop::option::weighted(0.03, any::<prop::sample::Index>()),
        style in any::<u64>(),
    )(
        members in {
            let mut members: Vec<(String, Member)> = [("op", op), ("s", s), ("t", t), ("d", d)]
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_owned(), v?)))
                .chain(extras.into_iter().map(|(k, v)| (k, Member::Json(v))))
                .collect();
            if let (Some(index), false) = (duplicate, members.is_empty()) {
                let copy = members[index.index(members.len())].clone();
                members.push(copy);
            }
            Just(members).prop_shuffle()
        },
        style in Just(style),
    ) -> String {
        write_frame(&members, style)
    }
}

fn write_frame(members: &[(String, Member)], style: u64) -> String {
    let mut style = Style(style | 1);
    let mut out = String::new();
    style.ws(&mut out);
    out.push('{');
    for (k, (key, value)) in members.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        style.ws(&mut out);
        style.string(key, &mut out);
        style.ws(&mut out);
        out.push(':');
        style.ws(&mut out);
        match value {
            Member::Raw(raw) => out.push_str(raw),
            Member::Number(n) => out.push_str(&n.to_string()),
            Member::Json(json) => style.json(json, &mut out),
        }
        style.ws(&mut out);
    }
    out.push('}');
    style.ws(&mut out);
    out
}

prop_compose! {
    /// A frame as Discord writes it: `t`, `s`, `op`, `d` in that order, no whitespace, no
    /// escapes outside `d`; sometimes followed by unknown keys, which Discord never sends.
    fn discord_frame()(
        op in 0u8..=255,
        s in prop::option::of(any::<u64>()),
        t in prop::option::of("[A-Z_]{1,40}"),
        d in json(),
        after in prop_oneof![
            3 => Just(Vec::new()),
            1 => prop::collection::vec((extra_key(), json()), 1..3),
        ],
        style in any::<u64>(),
    ) -> (String, u8, Option<u64>, Option<String>) {
        let mut style = Style(style | 1);
        let mut out = String::from("{\"t\":");
        match &t {
            Some(t) => out.push_str(&format!("\"{t}\"")),
            None => out.push_str("null"),
        }
        match s {
            Some(s) => out.push_str(&format!(",\"s\":{s}")),
            None => out.push_str(",\"s\":null"),
        }
        out.push_str(&format!(",\"op\":{op},\"d\":"));
        style.json(&d, &mut out);
        for (key, value) in &after {
            out.push(',');
            style.string(key, &mut out);
            out.push(':');
            style.json(value, &mut out);
        }
        out.push('}');
        (out, op, s, t)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn agrees_with_serde_json(frame in frame()) {
        check(frame.as_bytes())?;
    }

    #[test]
    fn reads_every_discord_shaped_frame((frame, op, s, t) in discord_frame()) {
        let envelope = read_envelope(frame.as_bytes()).unwrap();
        prop_assert_eq!(
            (envelope.op, envelope.seq, envelope.event_type),
            (op, s, t.as_deref())
        );
        check(frame.as_bytes())?;
    }

    #[test]
    fn discord_order_then_a_repeated_key_is_refused(
        (frame, ..) in discord_frame(),
        key in prop::sample::select(&["op", "s", "t", "d"][..]),
    ) {
        let repeated = format!("{},\"{key}\":null}}", &frame[..frame.len() - 1]);
        prop_assert_eq!(
            read_envelope(repeated.as_bytes()),
            Err(EnvelopeError::DuplicateKey { key })
        );
        check(repeated.as_bytes())?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_cut_of_a_frame_is_refused(frame in frame(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 1..32)) {
        let frame = frame.as_bytes();
        // Everything before the closing brace of the envelope.
        let Some(end) = frame.iter().rposition(|&b| b == b'}') else { return Ok(()) };
        for cut in cuts {
            let cut = &frame[..cut.index(end)];
            prop_assert!(read_envelope(cut).is_err(), "accepted {:?}", String::from_utf8_lossy(cut));
        }
    }

    #[test]
    fn mutated_frames_never_panic_and_agree(
        frame in frame(),
        edits in prop::collection::vec(
            (any::<prop::sample::Index>(), 0u8..3, prop_oneof![
                any::<u8>(),
                prop::sample::select(&b"{}[]\",:\\ 0n"[..]),
            ]),
            1..4,
        ),
    ) {
        let mut frame = frame.into_bytes();
        for (at, kind, byte) in edits {
            if frame.is_empty() {
                break;
            }
            let at = at.index(frame.len());
            match kind {
                0 => frame[at] = byte,
                1 => { frame.remove(at); }
                _ => frame.insert(at, byte),
            }
        }
        check(&frame)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes)?;
    }

    #[test]
    fn token_soup_never_panics_and_agrees(tokens in prop::collection::vec(
        prop::sample::select(&[
            "{", "}", "[", "]", "\"", "\\", ":", ",", " ", "1", "0", "-", "null", "true", "\"op\"",
            "\"s\"", "\"t\"", "\"d\"", "\"x\"", "\"\\\"\"", "\"}\"", "\"MESSAGE_CREATE\"",
        ][..]),
        0..48,
    )) {
        check(tokens.concat().as_bytes())?;
    }
}

#[test]
fn realistic_frames_agree_with_serde_json() {
    for frame in [
        r#"{"t":null,"s":null,"op":11,"d":null}"#,
        r#"{"t":null,"s":null,"op":9,"d":false}"#,
        r#"{"t":null,"s":null,"op":10,"d":{"heartbeat_interval":41250,"_trace":["[\"gateway-prd-us-east1-b-0568\",{\"micros\":0.0}]"]}}"#,
        r#"{"t":"TYPING_START","s":7,"op":0,"d":{"user_id":"80351110224678912","timestamp":1714560000,"channel_id":"613425648685547543"}}"#,
        r#"{"op":0,"d":{"a":1},"s":1,"t":"X","d2":{"}":"{"}}"#,
    ] {
        check(frame.as_bytes()).unwrap();
    }
    let envelope: Envelope<'_> =
        read_envelope(br#"{"op":0,"t":"X","s":1}"#).expect("a frame without d");
    assert_eq!(envelope.data, None);
    assert_eq!(
        read_envelope(br#"{"op":0,"t":"\u0058"}"#),
        Err(EnvelopeError::EscapedEventType { offset: 12 })
    );
}
