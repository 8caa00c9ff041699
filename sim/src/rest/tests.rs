//! HTTP-level tests of the REST API, through the router as the server mounts it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::routing::get;
use serde_json::{Value, json};
use shardyard_protocol::Intents;
use tower::ServiceExt;

use super::table::ROUTES;
use super::{channel_messages, control_router, router};
use crate::config::{BotConfig, SimConfig};
use crate::session::Session;
use crate::state::SimState;
use crate::stats::ShardStats;

const AUTH: &str = "Bot sim-token";

struct Harness {
    state: Arc<SimState>,
    app: Router,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .to_str()
            .unwrap()
    }
}

fn harness(config: SimConfig) -> Harness {
    let state = Arc::new(SimState::new(config, "127.0.0.1:0".parse().unwrap()));
    let app = Router::new()
        .nest("/api/v10", router())
        .nest("/_sim/rest", control_router())
        .route("/_sim/channels/{id}/messages", get(channel_messages))
        // As the server mounts the rest of `/_sim/`: the routes above must coexist with it.
        .nest("/_sim", crate::control::router())
        .with_state(state.clone());
    Harness { state, app }
}

fn default_harness() -> Harness {
    harness(SimConfig::default())
}

impl Harness {
    async fn send(&self, req: Request<Body>) -> Reply {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.send(req.body(body).unwrap()).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, Some(AUTH), None).await
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(AUTH), Some(body)).await
    }

    async fn faults(&self, body: Value) -> Value {
        let reply = self
            .call(Method::POST, "/_sim/rest/faults", None, Some(body))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        reply.json()
    }

    fn text_channels(&self) -> Vec<u64> {
        let world = self.state.bots[0].world();
        world
            .guilds
            .values()
            .flat_map(|g| g.text_channels().map(|c| c.id))
            .collect()
    }

    fn first_guild(&self) -> u64 {
        self.state.bots[0].world().guild_ids()[0]
    }

    fn violations(&self, kind: &str) -> usize {
        self.state
            .violations
            .all()
            .iter()
            .filter(|v| v.kind == kind)
            .count()
    }
}

fn with_ip(mut req: Request<Body>, ip: [u8; 4]) -> Request<Body> {
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((ip, 40_000))));
    req
}

fn unauthorized_from(ip: [u8; 4]) -> Request<Body> {
    with_ip(
        Request::get("/api/v10/users/@me")
            .body(Body::empty())
            .unwrap(),
        ip,
    )
}

#[tokio::test]
async fn auth_needs_a_bot_token() {
    let h = default_harness();
    for auth in [
        None,
        Some("sim-token"),
        Some("Bearer sim-token"),
        Some("Bot nope"),
    ] {
        let reply = h.call(Method::GET, "/api/v10/users/@me", auth, None).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(
            reply.json(),
            json!({"message": "401: Unauthorized", "code": 0})
        );
        assert!(reply.headers.get("x-ratelimit-bucket").is_none());
    }
    let me = h.get("/api/v10/users/@me").await;
    assert_eq!(me.status, StatusCode::OK);
    let me = me.json();
    assert_eq!(me["bot"], true);
    assert_eq!(me["verified"], true);
    assert_eq!(me["mfa_enabled"], false);
    assert_eq!(me["flags"], 0);
    assert!(me["id"].is_string());

    // GET /gateway needs no token.
    let gateway = h.call(Method::GET, "/api/v10/gateway", None, None).await;
    assert_eq!(gateway.status, StatusCode::OK);
    assert_eq!(gateway.json()["url"], "ws://127.0.0.1:0/gateway");
    let bot = h.get("/api/v10/gateway/bot").await.json();
    assert_eq!(bot["shards"], 1);
    assert_eq!(bot["session_start_limit"]["max_concurrency"], 1);
    assert_eq!(bot["session_start_limit"]["total"], 1000);
}

#[tokio::test]
async fn an_advertised_url_is_the_gateway_url_handed_out() {
    let h = harness(SimConfig {
        advertise_url: Some("http://shardyard-sim.default.svc:8450/".into()),
        ..SimConfig::default()
    });
    let gateway = h.call(Method::GET, "/api/v10/gateway", None, None).await;
    assert_eq!(
        gateway.json()["url"],
        "ws://shardyard-sim.default.svc:8450/gateway"
    );
    let bot = h.get("/api/v10/gateway/bot").await.json();
    assert_eq!(bot["url"], "ws://shardyard-sim.default.svc:8450/gateway");
    let secure = harness(SimConfig {
        advertise_url: Some("https://discord.example".into()),
        ..SimConfig::default()
    });
    let bot = secure.get("/api/v10/gateway/bot").await.json();
    assert_eq!(bot["url"], "wss://discord.example/gateway");
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let h = default_harness();
    let reply = h.get("/api/v10/nothing/here").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(
        reply.json(),
        json!({"message": "404: Not Found", "code": 0})
    );
    let reply = h.post("/api/v10/users/@me", json!({})).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.json()["code"], 0);
    let reply = h.get("/api/v10/channels/not-a-snowflake").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["code"], 50035);
    assert_eq!(
        reply.json()["errors"]["channel_id"]["_errors"][0]["code"],
        "NUMBER_TYPE_COERCE"
    );
    let reply = h.get("/api/v10/channels/123").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(
        reply.json(),
        json!({"message": "Unknown Channel", "code": 10003})
    );
    assert!(
        reply.headers.get("x-ratelimit-bucket").is_some(),
        "errors carry the bucket headers too"
    );
    let reply = h.get("/api/v10/guilds/123").await;
    assert_eq!(reply.json()["code"], 10004);
}

#[tokio::test]
async fn every_route_is_served_with_its_bucket_headers() {
    let h = default_harness();
    let channel = h.text_channels()[0];
    let guild = h.first_guild();
    let created = h
        .post(
            &format!("/api/v10/channels/{channel}/messages"),
            json!({"content": "x"}),
        )
        .await
        .json();
    let message: u64 = created["id"].as_str().unwrap().parse().unwrap();
    let bot_id = h.state.bots[0].world().bot_user.id;
    let application_id = h.state.bots[0].world().application_id;
    // Interaction 1 with token "t": the callback acknowledges it, so its original response
    // can be read and edited after.
    h.state.rest.register_interaction(1, "t");
    for spec in ROUTES {
        let path = spec
            .template
            .replace("{application_id}", &application_id.to_string())
            .replace("{channel_id}", &channel.to_string())
            .replace("{message_id}", &message.to_string())
            .replace("{emoji}", "%F0%9F%91%8D")
            .replace("{guild_id}", &guild.to_string())
            .replace("{user_id}", &bot_id.to_string())
            .replace("{interaction_id}", "1")
            .replace("{interaction_token}", "t");
        let body = match spec.method {
            "POST" if spec.template.contains("interactions") => Some(json!({"type": 5})),
            "POST" | "PATCH" => Some(json!({"content": "y"})),
            "PUT" if spec.template.ends_with("/commands") => Some(json!([])),
            _ => None,
        };
        if spec.template.contains("/reactions/") {
            // Reactions: 1 per 250 ms, shared by PUT and DELETE.
            tokio::time::sleep(Duration::from_millis(260)).await;
        }
        let method = Method::from_bytes(spec.method.as_bytes()).unwrap();
        let reply = h
            .call(method, &format!("/api/v10{path}"), Some(AUTH), body)
            .await;
        assert!(
            reply.status.is_success(),
            "{} answered {}: {:?}",
            spec.key(),
            reply.status,
            reply.body
        );
        assert_eq!(
            reply.headers.get("x-ratelimit-bucket").is_some(),
            spec.bucket.is_some(),
            "{}",
            spec.key()
        );
    }
    let stats = h.state.rest.stats_json();
    assert_eq!(
        stats["requests_by_route"]["GET /channels/{channel_id}"], 1,
        "{stats}"
    );
    assert_eq!(stats["requests"], ROUTES.len() + 1);
}

#[tokio::test]
async fn messages_are_stored_dispatched_and_read_back() {
    let h = default_harness();
    let channel = h.text_channels()[0];
    let bot = h.state.bots[0].clone();
    let session = Arc::new(Session::new(
        "s1".into(),
        0,
        1,
        Intents::GUILD_MESSAGES,
        50,
        Arc::new(ShardStats::new("bot", 0, 1)),
        crate::session::ReplayLimits {
            events: 100,
            bytes: usize::MAX,
        },
    ));
    bot.add_session(session.clone());

    let reply = h
        .post(
            &format!("/api/v10/channels/{channel}/messages"),
            json!({"content": "hello", "nonce": "n1", "embeds": [{"title": "t"}]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let msg = reply.json();
    assert_eq!(msg["content"], "hello");
    assert_eq!(msg["nonce"], "n1");
    assert_eq!(msg["channel_id"], channel.to_string());
    assert_eq!(msg["author"]["id"], bot.world().bot_user.id.to_string());
    assert_eq!(msg["author"]["bot"], true);
    assert_eq!(msg["embeds"][0]["title"], "t");
    assert!(msg["edited_timestamp"].is_null());
    assert!(
        msg.get("guild_id").is_none(),
        "REST messages carry no guild_id"
    );
    let id = msg["id"].as_str().unwrap().to_owned();

    {
        let log = session.log();
        let event = log.events.back().expect("MESSAGE_CREATE dispatched");
        assert_eq!(event.kind, "MESSAGE_CREATE");
        let data: Value = serde_json::from_slice(&event.data).unwrap();
        assert_eq!(data["id"], id);
        assert_eq!(data["content"], "hello", "own messages keep their content");
        assert!(data["guild_id"].is_string());
        assert!(data["member"].is_object());
    }

    let second = h
        .post(
            &format!("/api/v10/channels/{channel}/messages"),
            json!({"content": "second"}),
        )
        .await
        .json();

    let sim = h
        .call(
            Method::GET,
            &format!("/_sim/channels/{channel}/messages"),
            None,
            None,
        )
        .await
        .json();
    let sim = sim.as_array().unwrap();
    assert_eq!(sim.len(), 2);
    assert_eq!(sim[0]["id"], id, "oldest first");
    assert_eq!(sim[0]["content"], "hello");
    assert_eq!(sim[0]["edited"], false);
    assert_eq!(sim[0]["author_id"], msg["author"]["id"]);
    assert!(sim[0]["created_at_ms"].as_u64().unwrap() > 0);
    let by_name = h
        .call(
            Method::GET,
            &format!("/_sim/channels/{channel}/messages?bot=bot"),
            None,
            None,
        )
        .await;
    assert_eq!(by_name.json().as_array().unwrap().len(), 2);
    let unknown_bot = h
        .call(
            Method::GET,
            &format!("/_sim/channels/{channel}/messages?bot=nobody"),
            None,
            None,
        )
        .await;
    assert_eq!(unknown_bot.status, StatusCode::NOT_FOUND);

    let list = h
        .get(&format!("/api/v10/channels/{channel}/messages"))
        .await
        .json();
    assert_eq!(list[0]["id"], second["id"], "newest first");
    assert_eq!(list[1]["id"], id);
    let limited = h
        .get(&format!("/api/v10/channels/{channel}/messages?limit=1"))
        .await
        .json();
    assert_eq!(limited.as_array().unwrap().len(), 1);
    let before = h
        .get(&format!(
            "/api/v10/channels/{channel}/messages?before={}",
            second["id"].as_str().unwrap()
        ))
        .await
        .json();
    assert_eq!(before.as_array().unwrap().len(), 1);
    assert_eq!(before[0]["id"], id);

    let edited = h
        .call(
            Method::PATCH,
            &format!("/api/v10/channels/{channel}/messages/{id}"),
            Some(AUTH),
            Some(json!({"content": "edited"})),
        )
        .await;
    assert_eq!(edited.status, StatusCode::OK);
    assert_eq!(edited.json()["content"], "edited");
    assert!(edited.json()["edited_timestamp"].is_string());
    assert_eq!(session.log().events.back().unwrap().kind, "MESSAGE_UPDATE");
    let got = h
        .get(&format!("/api/v10/channels/{channel}/messages/{id}"))
        .await
        .json();
    assert_eq!(got["content"], "edited");
    assert_eq!(got["edited_timestamp"], edited.json()["edited_timestamp"]);

    let deleted = h
        .call(
            Method::DELETE,
            &format!("/api/v10/channels/{channel}/messages/{id}"),
            Some(AUTH),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(session.log().events.back().unwrap().kind, "MESSAGE_DELETE");
    let gone = h
        .get(&format!("/api/v10/channels/{channel}/messages/{id}"))
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.json()["code"], 10008);

    let reacted = h
        .call(
            Method::PUT,
            &format!(
                "/api/v10/channels/{channel}/messages/{}/reactions/%F0%9F%91%8D/@me",
                second["id"].as_str().unwrap()
            ),
            Some(AUTH),
            None,
        )
        .await;
    assert_eq!(reacted.status, StatusCode::NO_CONTENT);
    let too_fast = h
        .call(
            Method::PUT,
            &format!(
                "/api/v10/channels/{channel}/messages/{}/reactions/%F0%9F%91%8D/@me",
                second["id"].as_str().unwrap()
            ),
            Some(AUTH),
            None,
        )
        .await;
    assert_eq!(
        too_fast.status,
        StatusCode::TOO_MANY_REQUESTS,
        "reactions: 1 per 250 ms"
    );
}

#[tokio::test]
async fn message_bodies_are_validated() {
    let h = default_harness();
    let channels = h.text_channels();
    let path = |i: usize| format!("/api/v10/channels/{}/messages", channels[i]);

    let req = Request::post(path(0))
        .header("authorization", AUTH)
        .header("content-type", "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let reply = h.send(req).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.json(),
        json!({"message": "The request body contains invalid JSON.", "code": 50109})
    );

    let reply = h.post(&path(0), json!({"content": ""})).await;
    assert_eq!(
        reply.json(),
        json!({"message": "Cannot send an empty message", "code": 50006})
    );

    let reply = h.post(&path(0), json!({"content": "x".repeat(2001)})).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let body = reply.json();
    assert_eq!(body["code"], 50035);
    assert_eq!(body["message"], "Invalid Form Body");
    assert_eq!(
        body["errors"]["content"]["_errors"][0]["code"],
        "BASE_TYPE_MAX_LENGTH"
    );
    // Exactly 2000 characters (not bytes) is fine.
    let reply = h.post(&path(0), json!({"content": "é".repeat(2000)})).await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = h.post(&path(0), json!({"content": "fifth"})).await;
    assert_eq!(reply.status, StatusCode::OK);
    // Five requests used up the channel's bucket (errors count too).
    let reply = h.post(&path(0), json!({"content": "x"})).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);

    let reply = h
        .post(&path(1), json!({"embeds": [{"title": "only an embed"}]}))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = h
        .post(
            &path(1),
            json!({"content": "x", "embeds": vec![json!({}); 11]}),
        )
        .await;
    assert_eq!(
        reply.json()["errors"]["embeds"]["_errors"][0]["code"],
        "BASE_TYPE_MAX_LENGTH"
    );
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let h = default_harness();
    let channel = h.text_channels()[0];
    let path = format!("/api/v10/channels/{channel}/messages");
    let req = Request::post(&path)
        .header("authorization", AUTH)
        .header("content-type", "application/json")
        .body(Body::from(vec![b' '; 25 * 1024 * 1024 + 1]))
        .unwrap();
    let reply = h.send(req).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        reply.json(),
        json!({"message": "Request entity too large", "code": 40005})
    );
    let req = Request::post(&path)
        .header("authorization", AUTH)
        .header("content-length", "999999999")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn multipart_messages_acknowledge_their_files() {
    let h = default_harness();
    let channel = h.text_channels()[0];
    let boundary = "XyZbOuNdArY";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"payload_json\"\r\nContent-Type: application/json\r\n\r\n{{\"content\":\"with file\",\"attachments\":[{{\"id\":0}}]}}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"files[0]\"; filename=\"hello.txt\"\r\nContent-Type: text/plain\r\n\r\nhello world\r\n\
         --{boundary}--\r\n"
    );
    let req = Request::post(format!("/api/v10/channels/{channel}/messages"))
        .header("authorization", AUTH)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(body))
        .unwrap();
    let reply = h.send(req).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let msg = reply.json();
    assert_eq!(msg["content"], "with file");
    assert_eq!(msg["attachments"][0]["filename"], "hello.txt");
    assert_eq!(msg["attachments"][0]["size"], 11);

    // A file alone is not an empty message.
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"files[0]\"; filename=\"a.bin\"\r\n\r\nab\r\n--{boundary}--\r\n"
    );
    let req = Request::post(format!("/api/v10/channels/{channel}/messages"))
        .header("authorization", AUTH)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(body))
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::OK);
}

#[tokio::test]
async fn bucket_limit_gives_429_with_headers_and_a_violation() {
    let h = default_harness();
    let channels = h.text_channels();
    let path = |c: u64| format!("/api/v10/channels/{c}/messages");
    let mut hash = String::new();
    for i in 0..5 {
        let reply = h
            .post(&path(channels[0]), json!({"content": format!("m{i}")}))
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("x-ratelimit-limit"), "5");
        assert_eq!(reply.header("x-ratelimit-remaining"), (4 - i).to_string());
        let reset_after: f64 = reply.header("x-ratelimit-reset-after").parse().unwrap();
        assert!(reset_after > 4.0 && reset_after <= 5.0, "{reset_after}");
        let reset: f64 = reply.header("x-ratelimit-reset").parse().unwrap();
        assert!(reset > 1.7e9);
        assert_eq!(
            reply
                .header("x-ratelimit-reset")
                .split('.')
                .nth(1)
                .unwrap()
                .len(),
            3
        );
        assert_eq!(reply.header("x-ratelimit-scope"), "user");
        hash = reply.header("x-ratelimit-bucket").to_owned();
        assert_eq!(hash.len(), 32);
    }
    assert_eq!(h.violations("bucket_limit"), 0);
    let reply = h
        .post(&path(channels[0]), json!({"content": "one too many"}))
        .await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    let body = reply.json();
    assert_eq!(body["message"], "You are being rate limited.");
    assert_eq!(body["global"], false);
    assert_eq!(body["code"], 0);
    let retry_after = body["retry_after"].as_f64().unwrap();
    assert!(retry_after > 4.0 && retry_after <= 5.0, "{retry_after}");
    assert_eq!(reply.header("retry-after"), "5");
    assert_eq!(reply.header("x-ratelimit-scope"), "user");
    assert_eq!(reply.header("x-ratelimit-remaining"), "0");
    assert_eq!(reply.header("x-ratelimit-bucket"), hash);
    assert!(reply.headers.get("x-ratelimit-global").is_none());
    assert_eq!(h.violations("bucket_limit"), 1);
    let violation = h.state.violations.all().pop().unwrap();
    assert_eq!(violation.bot.as_deref(), Some("bot"));
    assert!(!violation.detail.contains("sim-token"));

    // Another channel: the same bucket hash, its own counter.
    let other = h.post(&path(channels[1]), json!({"content": "x"})).await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.header("x-ratelimit-bucket"), hash);
    assert_eq!(other.header("x-ratelimit-remaining"), "4");

    let stats = h.state.rest.stats_json();
    assert_eq!(
        stats["requests_by_bucket"][format!("{hash}:{}", channels[0])],
        6
    );
    assert_eq!(
        stats["requests_by_bucket"][format!("{hash}:{}", channels[1])],
        1
    );
    assert_eq!(stats["rate_limited"]["user"], 1);
    assert_eq!(stats["responses_by_status"]["429"], 1);
    assert_eq!(stats["responses_by_status"]["200"], 6);
    assert_eq!(stats["invalid_requests"], 1);
}

#[tokio::test]
async fn routes_share_bucket_hashes_but_not_counters() {
    let h = default_harness();
    let channel = h.text_channels()[0];
    let guild = h.first_guild();
    let msg = h
        .post(
            &format!("/api/v10/channels/{channel}/messages"),
            json!({"content": "x"}),
        )
        .await
        .json();
    let id = msg["id"].as_str().unwrap();
    let list = h
        .get(&format!("/api/v10/channels/{channel}/messages"))
        .await;
    let one = h
        .get(&format!("/api/v10/channels/{channel}/messages/{id}"))
        .await;
    assert_eq!(
        list.header("x-ratelimit-bucket"),
        one.header("x-ratelimit-bucket")
    );
    assert_eq!(
        one.header("x-ratelimit-remaining"),
        "3",
        "one shared counter"
    );
    let edit = h
        .call(
            Method::PATCH,
            &format!("/api/v10/channels/{channel}/messages/{id}"),
            Some(AUTH),
            Some(json!({"content": "y"})),
        )
        .await;
    let delete = h
        .call(
            Method::DELETE,
            &format!("/api/v10/channels/{channel}/messages/{id}"),
            Some(AUTH),
            None,
        )
        .await;
    assert_eq!(
        edit.header("x-ratelimit-bucket"),
        delete.header("x-ratelimit-bucket")
    );
    assert_ne!(
        edit.header("x-ratelimit-bucket"),
        list.header("x-ratelimit-bucket")
    );
    let g = h.get(&format!("/api/v10/guilds/{guild}")).await;
    let gc = h.get(&format!("/api/v10/guilds/{guild}/channels")).await;
    assert_eq!(
        g.header("x-ratelimit-bucket"),
        gc.header("x-ratelimit-bucket")
    );
    assert_eq!(gc.header("x-ratelimit-remaining"), "3");
}

#[tokio::test]
async fn global_limit_at_the_51st_request_in_a_second() {
    let h = default_harness();
    let channels = h.text_channels();
    assert!(channels.len() >= 10);
    let started = Instant::now();
    for i in 0..50 {
        let reply = h
            .get(&format!("/api/v10/channels/{}", channels[i / 5]))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "request {i}");
    }
    let reply = h.get(&format!("/api/v10/channels/{}", channels[10])).await;
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "the machine is too slow for this test"
    );
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.header("x-ratelimit-global"), "true");
    assert_eq!(reply.header("x-ratelimit-scope"), "global");
    assert!(reply.headers.get("x-ratelimit-bucket").is_none());
    assert_eq!(reply.header("retry-after"), "1");
    let body = reply.json();
    assert_eq!(body["global"], true);
    let retry = body["retry_after"].as_f64().unwrap();
    assert!(retry > 0.0 && retry <= 1.0, "{retry}");
    assert_eq!(h.violations("global_limit"), 1);

    // Interaction callbacks are exempt.
    let callback = h
        .call(
            Method::POST,
            "/api/v10/interactions/1/tok/callback",
            Some(AUTH),
            Some(json!({"type": 5})),
        )
        .await;
    assert_eq!(callback.status, StatusCode::NO_CONTENT);
    let stats = h.state.rest.stats_json();
    assert_eq!(stats["max_requests_in_any_second"], 51);
    assert_eq!(stats["max_requests_in_any_second_by_bot"]["bot"], 51);
    assert_eq!(stats["rate_limited"]["global"], 1);
}

#[tokio::test]
async fn injected_rate_limits_of_each_scope() {
    let h = default_harness();
    let state = h
        .faults(json!({"rate_limit": {"scope": "user", "retry_after": 2.5, "count": 1, "route": "/users"}}))
        .await;
    assert_eq!(state["rate_limit"][0]["remaining"], 1);
    let reply = h.get("/api/v10/users/@me").await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.header("x-ratelimit-scope"), "user");
    assert_eq!(reply.header("retry-after"), "3");
    assert_eq!(reply.header("x-ratelimit-reset-after"), "2.500");
    assert_eq!(reply.header("x-ratelimit-remaining"), "0");
    assert_eq!(reply.json()["retry_after"], 2.5);
    assert_eq!(reply.json()["global"], false);
    assert_eq!(h.get("/api/v10/users/@me").await.status, StatusCode::OK);

    h.faults(json!({"rate_limit": {"scope": "global", "retry_after": 0.5}}))
        .await;
    let reply = h.get("/api/v10/users/@me").await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.header("x-ratelimit-global"), "true");
    assert_eq!(reply.header("x-ratelimit-scope"), "global");
    assert_eq!(reply.json()["global"], true);

    h.faults(json!({"rate_limit": {"scope": "shared", "retry_after": 1}}))
        .await;
    let reply = h.get("/api/v10/users/@me").await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.header("x-ratelimit-scope"), "shared");

    assert!(
        h.state.violations.all().is_empty(),
        "injected 429s are not violations"
    );
    let stats = h.state.rest.stats_json();
    assert_eq!(
        stats["rate_limited"],
        json!({"user": 1, "global": 1, "shared": 1})
    );
    assert_eq!(stats["injected"]["rate_limit"], 3);
    assert_eq!(stats["invalid_requests"], 2, "shared 429s are not invalid");
    let faults = h
        .call(Method::GET, "/_sim/rest/faults", None, None)
        .await
        .json();
    assert_eq!(
        faults,
        json!({"latency_ms": 0, "status": [], "rate_limit": []})
    );
}

#[tokio::test]
async fn injected_server_errors_count_down() {
    let h = default_harness();
    let channel = h.text_channels()[0];
    h.faults(json!({"status": 503, "count": 2, "route": "/channels"}))
        .await;
    let path = format!("/api/v10/channels/{channel}");
    let reply = h.get(&path).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        reply.json(),
        json!({"message": "503: Service Unavailable", "code": 0})
    );
    assert_eq!(
        h.get("/api/v10/users/@me").await.status,
        StatusCode::OK,
        "other routes are unaffected"
    );
    assert_eq!(h.get(&path).await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h.get(&path).await.status, StatusCode::OK);
    assert_eq!(h.state.rest.stats_json()["injected"]["status"], 2);

    let bad = h
        .call(
            Method::POST,
            "/_sim/rest/faults",
            None,
            Some(json!({"status": 418})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.json()["error"].is_string());
}

#[tokio::test]
async fn injected_latency_delays_answers() {
    let h = default_harness();
    let state = h.faults(json!({"latency_ms": 60})).await;
    assert_eq!(state["latency_ms"], 60);
    let started = Instant::now();
    assert_eq!(h.get("/api/v10/users/@me").await.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(60));
    h.faults(json!({"clear": true})).await;
    let started = Instant::now();
    h.get("/api/v10/gateway").await;
    assert!(started.elapsed() < Duration::from_millis(60));
}

#[tokio::test]
async fn invalid_requests_get_an_ip_banned() {
    let config = SimConfig {
        invalid_request_limit: 20,
        ban_secs: 60,
        ..SimConfig::default()
    };
    let h = harness(config);
    let a = [10, 0, 0, 1];
    for i in 0..21 {
        let reply = h.send(unauthorized_from(a)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "request {i}");
    }
    assert_eq!(h.violations("cloudflare_ban"), 1);
    // Banned: even a valid request gets Cloudflare's answer.
    let req = Request::get("/api/v10/users/@me")
        .header("authorization", AUTH)
        .body(Body::empty())
        .unwrap();
    for _ in 0..3 {
        let reply = h.send(with_ip(req_clone(&req), a)).await;
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(reply.header("content-type").starts_with("text/html"));
        assert!(serde_json::from_slice::<Value>(&reply.body).is_err());
        assert!(String::from_utf8_lossy(&reply.body).contains("1015"));
        let retry: u64 = reply.header("retry-after").parse().unwrap();
        assert!(retry > 0 && retry <= 60);
        assert!(
            reply
                .headers
                .keys()
                .all(|k| !k.as_str().starts_with("x-ratelimit"))
        );
    }
    assert_eq!(h.violations("cloudflare_ban"), 1, "once per ban");
    // Another IP is fine.
    let reply = h.send(with_ip(req_clone(&req), [10, 0, 0, 2])).await;
    assert_eq!(reply.status, StatusCode::OK);
    let stats = h.state.rest.stats_json();
    assert_eq!(stats["banned_ips"], json!(["10.0.0.1"]));
    assert_eq!(stats["invalid_requests"], 21);
    assert_eq!(stats["cloudflare_banned"], 3);
}

fn req_clone(req: &Request<Body>) -> Request<Body> {
    let mut out = Request::builder().method(req.method()).uri(req.uri());
    for (k, v) in req.headers() {
        out = out.header(k, v);
    }
    out.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn other_bots_resources_are_forbidden() {
    let config = SimConfig {
        bots: vec![
            BotConfig {
                name: "a".into(),
                token: shardyard_protocol::Token::new("token-a"),
                guilds: 2,
                ..BotConfig::default()
            },
            BotConfig {
                name: "b".into(),
                token: shardyard_protocol::Token::new("token-b"),
                guilds: 2,
                privileged_intents: Intents::EMPTY,
                ..BotConfig::default()
            },
        ],
        ..SimConfig::default()
    };
    let h = harness(config);
    let (b_channel, b_guild) = {
        let world = h.state.bots[1].world();
        let guild = world.guild_ids()[0];
        let channel = world.guilds[&guild].text_channels().next().unwrap().id;
        (channel, guild)
    };
    let reply = h
        .call(
            Method::GET,
            &format!("/api/v10/channels/{b_channel}"),
            Some("Bot token-a"),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.json(),
        json!({"message": "Missing Access", "code": 50001})
    );
    let reply = h
        .call(
            Method::GET,
            &format!("/api/v10/guilds/{b_guild}"),
            Some("Bot token-a"),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = h
        .call(
            Method::GET,
            &format!("/api/v10/channels/{b_channel}"),
            Some("Bot token-b"),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    // Bot b lacks the GUILD_MEMBERS intent: listing members is refused.
    let reply = h
        .call(
            Method::GET,
            &format!("/api/v10/guilds/{b_guild}/members"),
            Some("Bot token-b"),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(h.state.rest.stats_json()["invalid_requests"], 3);
}

#[tokio::test]
async fn guild_and_user_routes() {
    let h = default_harness();
    let guild = h.first_guild();
    let bot_id = h.state.bots[0].world().bot_user.id;
    let g = h
        .get(&format!("/api/v10/guilds/{guild}?with_counts=true"))
        .await
        .json();
    assert_eq!(g["id"], guild.to_string());
    assert!(g["approximate_member_count"].as_u64().unwrap() > 0);
    assert!(g["approximate_presence_count"].is_u64());
    let plain = h.get(&format!("/api/v10/guilds/{guild}")).await.json();
    assert!(plain.get("approximate_member_count").is_none());

    let members = h
        .get(&format!("/api/v10/guilds/{guild}/members?limit=5"))
        .await
        .json();
    let members = members.as_array().unwrap();
    assert_eq!(members.len(), 5);
    let ids: Vec<u64> = members
        .iter()
        .map(|m| m["user"]["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let after = h
        .get(&format!(
            "/api/v10/guilds/{guild}/members?limit=2&after={}",
            ids[2]
        ))
        .await
        .json();
    assert_eq!(after[0]["user"]["id"], ids[3].to_string());
    let one = h
        .get(&format!("/api/v10/guilds/{guild}/members"))
        .await
        .json();
    assert_eq!(one.as_array().unwrap().len(), 1, "limit defaults to 1");
    let bad = h
        .get(&format!("/api/v10/guilds/{guild}/members?limit=1001"))
        .await;
    assert_eq!(bad.json()["code"], 50035);
    let me = h
        .get(&format!("/api/v10/guilds/{guild}/members/{bot_id}"))
        .await;
    assert_eq!(me.json()["user"]["id"], bot_id.to_string());
    let nobody = h.get(&format!("/api/v10/guilds/{guild}/members/42")).await;
    assert_eq!(
        nobody.json(),
        json!({"message": "Unknown Member", "code": 10007})
    );
    let roles = h
        .get(&format!("/api/v10/guilds/{guild}/roles"))
        .await
        .json();
    assert!(
        roles
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "@everyone")
    );
    let channels = h
        .get(&format!("/api/v10/guilds/{guild}/channels"))
        .await
        .json();
    assert!(channels.as_array().unwrap().len() >= 3);

    let guilds = h.get("/api/v10/users/@me/guilds?limit=3").await;
    assert_eq!(guilds.header("x-ratelimit-limit"), "1");
    let guilds = guilds.json();
    assert_eq!(guilds.as_array().unwrap().len(), 3);
    assert_eq!(guilds[0]["owner"], false);
    assert!(
        guilds[0]["permissions"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );
    let again = h.get("/api/v10/users/@me/guilds").await;
    assert_eq!(again.status, StatusCode::TOO_MANY_REQUESTS, "1 per second");
}

#[tokio::test]
async fn interaction_callbacks_against_the_registry() {
    let h = default_harness();
    // Nothing registered yet: any id/token pair is accepted.
    let reply = h
        .call(
            Method::POST,
            "/api/v10/interactions/5/anything/callback?with_response=true",
            None,
            Some(json!({"type": 4, "data": {"content": "hi"}})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["resource"]["type"], 4);
    let reply = h
        .call(
            Method::POST,
            "/api/v10/interactions/5/anything/callback",
            None,
            Some(json!({"type": 99})),
        )
        .await;
    assert_eq!(reply.json()["code"], 50035);

    h.state.rest.register_interaction(7, "good");
    let path = |token: &str| format!("/api/v10/interactions/7/{token}/callback");
    let wrong = h
        .call(Method::POST, &path("bad"), None, Some(json!({"type": 5})))
        .await;
    assert_eq!(
        wrong.json(),
        json!({"message": "Unknown interaction", "code": 10062})
    );
    let ok = h
        .call(Method::POST, &path("good"), None, Some(json!({"type": 5})))
        .await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT);
    let again = h
        .call(Method::POST, &path("good"), None, Some(json!({"type": 5})))
        .await;
    assert_eq!(again.json()["code"], 40060);

    let list = h
        .call(Method::GET, "/_sim/rest/interactions", None, None)
        .await
        .json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 5);
    assert_eq!(list[0]["id"], "5");
    assert_eq!(list[0]["type"], 4);
    assert_eq!(list[0]["data"]["content"], "hi");
    assert_eq!(list[0]["status"], 200);
    assert!(list[0]["response_ms"].is_null());
    assert_eq!(list[3]["status"], 204);
    assert!(list.iter().all(|c| c["via"] == "callback"));
    assert!(list[3]["response_ms"].as_u64().unwrap() < 3000);
    assert!(list[3]["received_at_ms"].as_u64().unwrap() > 0);
    assert_eq!(h.state.rest.stats_json()["interaction_callbacks"], 5);
}

#[tokio::test]
async fn stats_have_the_documented_shape() {
    let h = default_harness();
    h.get("/api/v10/users/@me").await;
    let stats = h.state.rest.stats_json();
    for key in [
        "requests",
        "requests_by_bucket",
        "requests_by_route",
        "responses_by_status",
        "rate_limited",
        "invalid_requests",
        "banned_ips",
        "max_requests_in_any_second",
    ] {
        assert!(stats.get(key).is_some(), "{key} missing from {stats}");
    }
    assert_eq!(stats["requests"], 1);
    assert_eq!(stats["requests_by_route"]["GET /users/@me"], 1);
    assert_eq!(stats["responses_by_status"]["200"], 1);
    assert_eq!(stats["max_requests_in_any_second"], 1);
    let bucket_keys: Vec<&String> = stats["requests_by_bucket"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(bucket_keys.len(), 1);
    assert!(bucket_keys[0].ends_with(":none"));
}

/// A configuration as `shardyard sim` builds it: application ids filled in.
fn filled(mut config: SimConfig) -> SimConfig {
    config.fill_defaults().unwrap();
    config
}

fn two_bots() -> SimConfig {
    filled(SimConfig {
        bots: vec![
            BotConfig {
                name: "a".into(),
                token: shardyard_protocol::Token::new("token-a"),
                guilds: 2,
                ..BotConfig::default()
            },
            BotConfig {
                name: "b".into(),
                token: shardyard_protocol::Token::new("token-b"),
                guilds: 2,
                privileged_intents: Intents::EMPTY,
                ..BotConfig::default()
            },
        ],
        ..SimConfig::default()
    })
}

impl Harness {
    async fn put(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, Some(AUTH), Some(body)).await
    }

    fn application_id(&self) -> u64 {
        self.state.bots[0].world().application_id
    }
}

#[tokio::test]
async fn the_current_application_is_the_tokens() {
    let h = harness(filled(SimConfig::default()));
    let app = h.application_id();
    for path in [
        "/api/v10/applications/@me",
        "/api/v10/oauth2/applications/@me",
    ] {
        let reply = h.call(Method::GET, path, None, None).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path}");
        let reply = h.get(path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert!(reply.headers.get("x-ratelimit-bucket").is_some(), "{path}");
        let body = reply.json();
        assert_eq!(body["id"], app.to_string());
        assert_eq!(body["name"], "bot-bot");
        assert!(body["icon"].is_null());
        assert_eq!(body["description"], "");
        assert_eq!(body["bot_public"], true);
        assert_eq!(body["bot_require_code_grant"], false);
        let key = body["verify_key"].as_str().unwrap();
        assert_eq!(key.len(), 64);
        assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(body["bot"]["id"], app.to_string(), "the bot user's id");
        assert_eq!(body["bot"]["bot"], true);
        assert!(body["owner"]["id"].is_string());
        assert!(body["team"].is_null());
        assert_eq!(body["approximate_guild_count"], 10);
        // Approved for every privileged intent, under 100 guilds: the _LIMITED flags.
        assert_eq!(body["flags"], (1 << 13) | (1 << 15) | (1 << 19));
    }
    let a = h.get("/api/v10/applications/@me").await;
    let b = h.get("/api/v10/applications/@me").await;
    assert_eq!(a.json()["verify_key"], b.json()["verify_key"], "stable");
    let stats = h.state.rest.stats_json();
    // Refused requests are counted too.
    assert_eq!(stats["requests_by_route"]["GET /applications/@me"], 4);
    assert_eq!(
        stats["requests_by_route"]["GET /oauth2/applications/@me"],
        2
    );
}

#[tokio::test]
async fn global_commands_are_overwritten_and_keep_their_ids() {
    let h = harness(filled(SimConfig::default()));
    let app = h.application_id();
    let path = format!("/api/v10/applications/{app}/commands");
    let empty = h.get(&path).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(empty.json(), json!([]));
    assert!(empty.headers.get("x-ratelimit-bucket").is_some());

    let ping = json!({"name": "ping", "description": "Replies with pong", "version": "1"});
    let first = h.put(&path, json!([ping])).await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    let first = first.json();
    let command = &first[0];
    assert_eq!(command["application_id"], app.to_string());
    assert_eq!(command["type"], 1);
    assert_eq!(command["name"], "ping");
    assert_eq!(command["description"], "Replies with pong");
    assert!(command["default_member_permissions"].is_null());
    assert_eq!(command["dm_permission"], true);
    assert!(command["contexts"].is_null());
    assert_eq!(command["integration_types"], json!([0]));
    assert_eq!(command["nsfw"], false);
    assert!(command["name_localizations"].is_null());
    assert!(command.get("guild_id").is_none());
    assert!(command.get("options").is_none(), "no options, no key");
    let id = command["id"].as_str().unwrap().to_owned();
    let version = command["version"].as_str().unwrap().to_owned();
    assert!(id.parse::<u64>().is_ok() && version.parse::<u64>().is_ok());

    // GET: what is stored, without the localization dictionaries.
    let listed = h.get(&path).await.json();
    assert_eq!(listed[0]["id"], id.as_str());
    assert!(listed[0].get("name_localizations").is_none());
    let with = h
        .get(&format!("{path}?with_localizations=true"))
        .await
        .json();
    assert!(with[0].get("name_localizations").is_some());

    // Every replica PUTs the same list at start-up: nothing changes.
    let again = h.put(&path, json!([ping])).await.json();
    assert_eq!(again, first, "same id, same version");
    let changed = h
        .put(
            &path,
            json!([
                {"name": "ping", "description": "Replies with pong, faster"},
                {"name": "Inspect", "type": 2},
            ]),
        )
        .await
        .json();
    assert_eq!(
        changed[0]["id"],
        id.as_str(),
        "kept for the same type and name"
    );
    assert_ne!(changed[0]["version"], version.as_str(), "a new version");
    assert_eq!(changed[1]["type"], 2);
    assert_eq!(changed[1]["description"], "");
    assert_ne!(changed[1]["id"], id.as_str());

    // The ground truth.
    let truth = h.call(Method::GET, "/_sim/commands", None, None).await;
    assert_eq!(truth.status, StatusCode::OK);
    let truth = truth.json();
    assert_eq!(truth["application_id"], app.to_string());
    assert_eq!(truth["overwrites"], 3);
    assert_eq!(truth["global"], changed);
    assert_eq!(truth["guilds"], json!({}));
    // The app now shows the command badge.
    let flags = h.get("/api/v10/applications/@me").await.json()["flags"]
        .as_u64()
        .unwrap();
    assert_ne!(flags & (1 << 23), 0);

    let cleared = h.put(&path, json!([])).await;
    assert_eq!(cleared.json(), json!([]));
    assert_eq!(h.get(&path).await.json(), json!([]));
    let stats = h.state.rest.stats_json();
    assert_eq!(
        stats["requests_by_route"]["PUT /applications/{application_id}/commands"],
        4
    );
    assert_eq!(
        stats["requests_by_route"]["GET /applications/{application_id}/commands"],
        4
    );
}

#[tokio::test]
async fn command_bodies_are_validated_as_discord_does() {
    let h = harness(filled(SimConfig::default()));
    let path = format!("/api/v10/applications/{}/commands", h.application_id());
    h.put(&path, json!([{"name": "ping", "description": "p"}]))
        .await;
    let reply = h
        .put(
            &path,
            json!([
                {"name": "Ping", "description": "p"},
                {"name": "help"},
                {"name": "ok", "description": "fine"},
                {"name": "ok", "description": "again"},
            ]),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let body = reply.json();
    assert_eq!(body["code"], 50035);
    assert_eq!(body["message"], "Invalid Form Body");
    assert_eq!(
        body["errors"]["0"]["name"]["_errors"][0]["code"],
        "APPLICATION_COMMAND_INVALID_NAME"
    );
    assert_eq!(
        body["errors"]["1"]["description"]["_errors"][0],
        json!({"code": "BASE_TYPE_REQUIRED", "message": "This field is required"})
    );
    assert!(body["errors"].get("2").is_none(), "{body}");
    assert_eq!(
        body["errors"]["3"]["_errors"][0]["code"],
        "APPLICATION_COMMANDS_DUPLICATE_NAME"
    );
    let too_many: Vec<Value> = (0..101)
        .map(|i| json!({"name": format!("c{i}"), "description": "d"}))
        .collect();
    let reply = h.put(&path, Value::Array(too_many)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["code"], 30032);
    let garbage = h
        .send(
            Request::put(&path)
                .header("authorization", AUTH)
                .header("content-type", "application/json")
                .body(Body::from("[{"))
                .unwrap(),
        )
        .await;
    assert_eq!(garbage.json()["code"], 50109);
    // Nothing of a refused overwrite is kept.
    let listed = h.get(&path).await.json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["name"], "ping");
    let truth = h
        .call(Method::GET, "/_sim/commands", None, None)
        .await
        .json();
    assert_eq!(truth["overwrites"], 1);
}

#[tokio::test]
async fn another_applications_commands_are_forbidden() {
    let h = harness(two_bots());
    let (a, b) = (
        h.state.bots[0].world().application_id,
        h.state.bots[1].world().application_id,
    );
    let as_a = |method: Method, path: String, body: Option<Value>| {
        let h = &h;
        async move { h.call(method, &path, Some("Bot token-a"), body).await }
    };
    let reply = as_a(
        Method::PUT,
        format!("/api/v10/applications/{b}/commands"),
        Some(json!([])),
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.json(),
        json!({"message": "You are not authorized to perform this action on this application", "code": 20012})
    );
    let reply = as_a(
        Method::GET,
        format!("/api/v10/applications/{b}/commands"),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = as_a(
        Method::GET,
        "/api/v10/applications/nope/commands".to_owned(),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.json()["errors"]["application_id"]["_errors"][0]["code"],
        "NUMBER_TYPE_COERCE"
    );
    let reply = h
        .call(
            Method::PUT,
            &format!("/api/v10/applications/{a}/commands"),
            None,
            Some(json!([])),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = as_a(
        Method::PUT,
        format!("/api/v10/applications/{a}/commands"),
        Some(json!([{"name": "ping", "description": "p"}])),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    // Each application has its own commands.
    let b_list = h
        .call(
            Method::GET,
            &format!("/api/v10/applications/{b}/commands"),
            Some("Bot token-b"),
            None,
        )
        .await;
    assert_eq!(b_list.json(), json!([]));
    let truth = h
        .call(Method::GET, "/_sim/commands?bot=b", None, None)
        .await
        .json();
    assert_eq!(truth["global"], json!([]));
    let nobody = h
        .call(Method::GET, "/_sim/commands?bot=nobody", None, None)
        .await;
    assert_eq!(nobody.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn guild_commands_live_in_their_guild() {
    let h = harness(two_bots());
    let a = h.state.bots[0].world().application_id;
    let guild = h.state.bots[0].world().guild_ids()[0];
    let b_guild = h.state.bots[1].world().guild_ids()[0];
    let path = |g: u64| format!("/api/v10/applications/{a}/guilds/{g}/commands");
    let call = |method: Method, path: String, body: Option<Value>| {
        let h = &h;
        async move { h.call(method, &path, Some("Bot token-a"), body).await }
    };
    let ping = json!([{"name": "ping", "description": "p"}]);

    let unknown = call(Method::PUT, path(123), Some(ping.clone())).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(
        unknown.json(),
        json!({"message": "Unknown Guild", "code": 10004})
    );
    let unknown = call(Method::GET, path(123), None).await;
    assert_eq!(unknown.json()["code"], 10004);
    let foreign = call(Method::PUT, path(b_guild), Some(ping.clone())).await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    assert_eq!(foreign.json()["code"], 50001);

    assert_eq!(call(Method::GET, path(guild), None).await.json(), json!([]));
    let put = call(Method::PUT, path(guild), Some(ping.clone())).await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    let put = put.json();
    assert_eq!(put[0]["guild_id"], guild.to_string());
    assert!(
        put[0].get("dm_permission").is_none() && put[0].get("contexts").is_none(),
        "global-only fields are left out: {put}"
    );
    let again = call(Method::PUT, path(guild), Some(ping.clone()))
        .await
        .json();
    assert_eq!(again, put, "stable across a re-PUT");
    let listed = call(Method::GET, path(guild), None).await.json();
    assert_eq!(listed[0]["id"], put[0]["id"]);
    let global = call(
        Method::PUT,
        format!("/api/v10/applications/{a}/commands"),
        Some(ping.clone()),
    )
    .await
    .json();
    assert_ne!(
        global[0]["id"], put[0]["id"],
        "the global ping is another command"
    );
    let other_guild = h.state.bots[0].world().guild_ids()[1];
    assert_eq!(
        call(Method::GET, path(other_guild), None).await.json(),
        json!([])
    );
    let truth = h
        .call(Method::GET, "/_sim/commands?bot=a", None, None)
        .await
        .json();
    assert_eq!(truth["guilds"][guild.to_string()], put);
    assert_eq!(truth["global"], global);
    assert_eq!(truth["overwrites"], 3);
    let stats = h.state.rest.stats_json();
    let bucket_keys: Vec<&String> = stats["requests_by_bucket"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert!(
        bucket_keys
            .iter()
            .any(|k| k.ends_with(&format!(":{guild}"))),
        "guild commands are counted per guild: {bucket_keys:?}"
    );
}

impl Harness {
    async fn sim_post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, None, Some(body)).await
    }

    /// The callback of an interaction `/_sim/interactions` issued.
    async fn answer(&self, issued: &Value, body: Value) -> Reply {
        let path = format!(
            "/api/v10/interactions/{}/{}/callback",
            issued["id"].as_str().unwrap(),
            issued["token"].as_str().unwrap()
        );
        self.call(Method::POST, &path, None, Some(body)).await
    }
}

#[tokio::test]
async fn callbacks_must_use_a_type_the_interaction_allows() {
    let h = harness(filled(SimConfig::default()));
    let mut issued = Vec::new();
    for body in [
        json!({"name": "search", "type": 4, "options": [{"name": "q", "type": 3, "value": "a"}]}),
        json!({"name": "ping"}),
        json!({"type": 3, "custom_id": "vote"}),
        json!({"type": 5}),
    ] {
        let reply = h.sim_post("/_sim/interactions", body.clone()).await;
        assert_eq!(reply.status, StatusCode::OK, "{body}: {:?}", reply.body);
        let answer = reply.json();
        assert_eq!(answer["via"], "gateway");
        assert_eq!(answer["sessions"], 0);
        assert_eq!(
            answer["type"],
            body.get("type").cloned().unwrap_or(json!(2))
        );
        issued.push(answer);
    }
    let callback = |i: usize, body: Value| h.answer(&issued[i], body);
    let choices = |reply: &Reply| {
        let body = reply.json();
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["code"], 50035);
        assert_eq!(
            body["errors"]["type"]["_errors"][0]["code"],
            "BASE_TYPE_CHOICES"
        );
        body["errors"]["type"]["_errors"][0]["message"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // An autocomplete takes only 8; a refused type leaves it unacknowledged.
    let reply = callback(0, json!({"type": 4, "data": {"content": "no"}})).await;
    assert_eq!(choices(&reply), "Value must be one of {8}.");
    let reply = callback(0, json!({"type": 8, "data": {"choices": []}})).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let reply = callback(1, json!({"type": 6})).await;
    assert_eq!(choices(&reply), "Value must be one of {4, 5, 9, 12}.");
    let reply = callback(2, json!({"type": 7, "data": {"content": "updated"}})).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let reply = callback(3, json!({"type": 9, "data": {}})).await;
    assert_eq!(choices(&reply), "Value must be one of {4, 5, 6, 7}.");
    let reply = callback(3, json!({"type": 6})).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);

    // The command answered with a message: its original response.
    let reply = callback(1, json!({"type": 4, "data": {"content": "hi"}})).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);

    // The original response of the command is its type-4 message; the autocomplete has none.
    let app = h.application_id();
    let original = |i: usize| {
        format!(
            "/api/v10/webhooks/{app}/{}/messages/@original",
            issued[i]["token"].as_str().unwrap()
        )
    };
    let reply = h.call(Method::GET, &original(1), None, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.json()["content"], "hi");
    assert_eq!(reply.json()["type"], 20);
    assert!(reply.headers.get("x-ratelimit-bucket").is_some());
    let reply = h.call(Method::GET, &original(0), None, None).await;
    assert_eq!(reply.json()["code"], 10008);
    let reply = h
        .call(
            Method::PATCH,
            &original(1),
            None,
            Some(json!({"content": "x".repeat(2001)})),
        )
        .await;
    assert_eq!(reply.json()["code"], 50035);

    let stats = h.state.rest.stats_json();
    assert_eq!(stats["interactions"]["issued"]["gateway"], 4, "{stats}");
    assert_eq!(stats["interactions"]["answered"]["callback"], 4, "{stats}");
    let list = h
        .call(Method::GET, "/_sim/rest/interactions", None, None)
        .await
        .json();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|e| e["via"] == "callback")
    );
}

#[tokio::test]
async fn sim_interactions_check_their_type_and_name() {
    let h = default_harness();
    let reply = h.sim_post("/_sim/interactions", json!({"type": 6})).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = h.sim_post("/_sim/interactions", json!({"type": 2})).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = h.sim_post("/_sim/interactions", json!({"type": 4})).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn interaction_webhooks_are_limited_per_token_without_authorization() {
    let h = harness(filled(SimConfig::default()));
    let app = h.application_id();
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let issued = h
            .sim_post("/_sim/interactions", json!({"name": "ping"}))
            .await
            .json();
        let reply = h.answer(&issued, json!({"type": 5})).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        tokens.push(issued["token"].as_str().unwrap().to_owned());
    }
    let original = |token: &str| format!("/api/v10/webhooks/{app}/{token}/messages/@original");
    for i in 0..5 {
        let reply = h
            .call(
                Method::PATCH,
                &original(&tokens[0]),
                None,
                Some(json!({"content": format!("{i}")})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(reply.header("x-ratelimit-limit"), "5");
    }
    let reply = h
        .call(
            Method::PATCH,
            &original(&tokens[0]),
            None,
            Some(json!({"content": "6"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h.violations("bucket_limit"), 1);
    // Another token has its own bucket; no token leaks into the counters.
    let reply = h
        .call(
            Method::PATCH,
            &original(&tokens[1]),
            None,
            Some(json!({"content": "x"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let stats = h.state.rest.stats_json().to_string();
    assert!(
        !tokens.iter().any(|t| stats.contains(t.as_str())),
        "{stats}"
    );
    // Not under the global limit and no Authorization needed: nothing counted for the bot.
    assert_eq!(h.state.rest.stats_json()["max_requests_in_any_second"], 0);
}

#[tokio::test]
async fn the_endpoint_url_field_is_validated() {
    let h = harness(filled(SimConfig::default()));
    let patch =
        |body: Option<Value>| h.call(Method::PATCH, "/api/v10/applications/@me", Some(AUTH), body);
    let field_error = |reply: &Reply| {
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.body);
        let body = reply.json();
        assert_eq!(body["code"], 50035);
        body["errors"]["interactions_endpoint_url"]["_errors"][0]["code"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let reply = patch(Some(json!({"interactions_endpoint_url": 5}))).await;
    assert_eq!(field_error(&reply), "BASE_TYPE_STRING");
    let reply = patch(Some(json!({"interactions_endpoint_url": "not a url"}))).await;
    assert_eq!(field_error(&reply), "URL_TYPE_INVALID_URL");
    let reply = patch(Some(json!({"interactions_endpoint_url": "mailto:a@b.c"}))).await;
    assert_eq!(field_error(&reply), "URL_TYPE_INVALID_SCHEME");
    // Other fields are ignored: the application as it is.
    let reply = patch(Some(json!({"description": "ignored"}))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.json()["interactions_endpoint_url"].is_null());
    assert_eq!(reply.json()["id"], h.application_id().to_string());
    // Its own bucket: 5 per 5 s.
    let reply = patch(Some(json!({}))).await;
    assert_eq!(reply.header("x-ratelimit-remaining"), "0");
    let reply = patch(Some(json!({}))).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    let reply = h
        .call(
            Method::PATCH,
            "/api/v10/applications/@me",
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}
