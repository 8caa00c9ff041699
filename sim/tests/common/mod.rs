//! A minimal raw gateway client for the simulator's own tests: it speaks the protocol by hand so
//! the tests see every frame, close code and sequence number.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use flate2::{Decompress, FlushDecompress};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use shardyard_sim::{BotConfig, SimConfig, Simulator};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const TOKEN: &str = "test-token";

pub fn config(guilds: u32) -> SimConfig {
    let mut config = SimConfig {
        bots: vec![BotConfig {
            name: "bot".into(),
            token: shardyard_protocol::Token::new(TOKEN),
            guilds,
            members_per_guild: 5,
            max_concurrency: 16,
            ..BotConfig::default()
        }],
        ..SimConfig::default()
    };
    config.fill_defaults().unwrap();
    config
}

pub async fn start(config: SimConfig) -> Simulator {
    Simulator::bind("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap()
}

pub enum Frame {
    Payload(Value),
    Closed(Option<u16>),
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    inflate: Option<Decompress>,
    pub seq: u64,
}

impl Client {
    pub async fn connect(url: &str, zlib: bool) -> Self {
        let query = if zlib {
            "?v=10&encoding=json&compress=zlib-stream"
        } else {
            "?v=10&encoding=json"
        };
        let (ws, _) = tokio_tungstenite::connect_async(format!("{url}{query}"))
            .await
            .unwrap();
        Self {
            ws,
            inflate: zlib.then(|| Decompress::new(true)),
            seq: 0,
        }
    }

    pub async fn connect_raw(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Self {
            ws,
            inflate: None,
            seq: 0,
        }
    }

    /// The next frame, or `None` after `wait` of silence.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Frame> {
        loop {
            let msg = match tokio::time::timeout(wait, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) | Ok(Some(Err(_))) => return Some(Frame::Closed(None)),
                Ok(Some(Ok(msg))) => msg,
            };
            let text = match msg {
                Message::Text(t) => t.as_str().as_bytes().to_vec(),
                Message::Binary(b) => {
                    let inflate = self
                        .inflate
                        .as_mut()
                        .expect("binary frame on an uncompressed connection");
                    match inflate_all(inflate, &b) {
                        Ok(out) => out,
                        Err(_) => return Some(Frame::Closed(Some(0))),
                    }
                }
                Message::Close(frame) => {
                    return Some(Frame::Closed(frame.map(|f| u16::from(f.code))));
                }
                _ => continue,
            };
            let value: Value = serde_json::from_slice(&text).expect("simulator sent invalid JSON");
            if let Some(s) = value["s"].as_u64() {
                self.seq = s;
            }
            return Some(Frame::Payload(value));
        }
    }

    pub async fn next(&mut self) -> Value {
        match self.next_within(Duration::from_secs(5)).await {
            Some(Frame::Payload(v)) => v,
            Some(Frame::Closed(code)) => {
                panic!("connection closed ({code:?}) while waiting for a payload")
            }
            None => panic!("no payload within 5 s"),
        }
    }

    /// Reads until a dispatch of type `t`, returning it and everything skipped.
    pub async fn until_dispatch(&mut self, t: &str) -> (Value, Vec<Value>) {
        let mut skipped = Vec::new();
        loop {
            let v = self.next().await;
            if v["op"] == 0 && v["t"] == t {
                return (v, skipped);
            }
            skipped.push(v);
        }
    }

    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            match self.next_within(Duration::from_secs(5)).await {
                Some(Frame::Closed(code)) => return code,
                Some(Frame::Payload(_)) => continue,
                None => panic!("connection not closed within 5 s"),
            }
        }
    }

    pub async fn send(&mut self, value: Value) {
        self.ws
            .send(Message::Text(value.to_string().into()))
            .await
            .unwrap();
    }

    pub async fn send_text(&mut self, text: String) {
        self.ws.send(Message::Text(text.into())).await.unwrap();
    }

    pub async fn identify(&mut self, shard: [u32; 2], intents: u64) {
        self.send(json!({"op": 2, "d": {"token": TOKEN, "intents": intents, "shard": shard, "properties": {"os": "linux", "browser": "test", "device": "test"}}})).await;
    }

    pub async fn resume(&mut self, session_id: &str, seq: u64) {
        self.send(json!({"op": 6, "d": {"token": TOKEN, "session_id": session_id, "seq": seq}}))
            .await;
    }

    pub async fn close(mut self, code: u16) {
        let _ = self
            .ws
            .close(Some(CloseFrame {
                code: code.into(),
                reason: "".into(),
            }))
            .await;
        // Read until the server's close arrives.
        while let Ok(Some(Ok(_))) =
            tokio::time::timeout(Duration::from_secs(2), self.ws.next()).await
        {}
    }

    /// Drops the TCP connection without a close frame.
    pub fn drop_tcp(self) {
        drop(self.ws);
    }
}

pub fn inflate_all(d: &mut Decompress, input: &[u8]) -> Result<Vec<u8>, flate2::DecompressError> {
    let mut out = Vec::with_capacity(input.len() * 4 + 64);
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

pub async fn http_get(base: &str, path: &str) -> Value {
    http("GET", base, path, None).await
}

pub async fn http_post(base: &str, path: &str, body: Value) -> Value {
    http("POST", base, path, Some(body)).await
}

/// A tiny HTTP/1.1 client so these tests need no HTTP client crate. It authenticates as the
/// test bot (`/_sim/` ignores the header).
pub async fn http(method: &str, base: &str, path: &str, body: Option<Value>) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAuthorization: Bot {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut value: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    if let Value::Object(map) = &mut value {
        map.insert("_status".into(), json!(status));
    }
    value
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    loop {
        let Some((size, tail)) = rest.split_once("\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.push_str(&tail[..size]);
        rest = &tail[size + 2..];
    }
}
