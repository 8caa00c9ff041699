//! The simulator plays Discord's side of the Interactions Endpoint over real HTTP: it checks an
//! endpoint URL with signed PINGs before saving it, then POSTs interactions, signed, to it
//! instead of the gateway and takes the HTTP answer as the interaction response.
//!
//! The endpoint here is a tiny axum server on 127.0.0.1:0 that verifies signatures with
//! ed25519-dalek against `verify_key` from `GET /applications/@me`, as a real app does.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::{Client, TOKEN, config, start};
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::{Value, json};
use shardyard_sim::Simulator;
use tokio::net::TcpListener;

/// How the test endpoint answers interactions (PINGs are always answered honestly, bad
/// signatures refused, unless `accepts_bad_signatures`).
#[derive(Clone, Debug)]
struct Behaviour {
    /// Answers every request as if its signature were good.
    accepts_bad_signatures: bool,
    /// Waits this long before answering an interaction.
    delay: Duration,
    /// The response it answers an interaction with.
    response: Value,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            accepts_bad_signatures: false,
            delay: Duration::ZERO,
            response: json!({"type": 4, "data": {"content": "pong"}}),
        }
    }
}

/// A request the endpoint received.
#[derive(Clone, Debug)]
struct Received {
    headers: HeaderMap,
    body: Value,
    signature_ok: bool,
}

#[derive(Clone)]
struct Endpoint {
    key: VerifyingKey,
    behaviour: Arc<Mutex<Behaviour>>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Endpoint {
    fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    /// The interactions (not PINGs) received so far.
    fn interactions(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.body["type"] != 1)
            .cloned()
            .collect()
    }

    fn pings(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.body["type"] == 1)
            .cloned()
            .collect()
    }
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// Discord's check, as an app does it: the signature of timestamp + body by `key`.
fn signature_ok(key: &VerifyingKey, headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(signature), Some(timestamp)) = (
        header("x-signature-ed25519"),
        header("x-signature-timestamp"),
    ) else {
        return false;
    };
    let Some(signature) = from_hex(signature).and_then(|s| <[u8; 64]>::try_from(s).ok()) else {
        return false;
    };
    let mut message = timestamp.as_bytes().to_vec();
    message.extend_from_slice(body);
    key.verify_strict(&message, &Signature::from_bytes(&signature))
        .is_ok()
}

async fn handle(State(endpoint): State<Endpoint>, headers: HeaderMap, body: Bytes) -> Response {
    let behaviour = endpoint.behaviour.lock().unwrap().clone();
    let ok = signature_ok(&endpoint.key, &headers, &body);
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    endpoint.received.lock().unwrap().push(Received {
        headers: headers.clone(),
        body: value.clone(),
        signature_ok: ok,
    });
    if !ok && !behaviour.accepts_bad_signatures {
        return (StatusCode::UNAUTHORIZED, "invalid request signature").into_response();
    }
    if value["type"] == 1 {
        return axum::Json(json!({"type": 1})).into_response();
    }
    tokio::time::sleep(behaviour.delay).await;
    axum::Json(behaviour.response).into_response()
}

/// An endpoint verifying with the app's `verify_key`, and its URL.
async fn endpoint(sim: &Simulator, behaviour: Behaviour) -> (Endpoint, String) {
    let app = api(sim, reqwest::Method::GET, "/applications/@me", None).await;
    assert_eq!(app.0, 200);
    let key = from_hex(app.1["verify_key"].as_str().unwrap()).unwrap();
    let key = VerifyingKey::from_bytes(&key.try_into().unwrap()).unwrap();
    let endpoint = Endpoint {
        key,
        behaviour: Arc::new(Mutex::new(behaviour)),
        received: Arc::default(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/interactions", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/interactions", post(handle))
        .with_state(endpoint.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (endpoint, url)
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A request to the simulator: `/api/v10{path}` with the bot's token, or a `/_sim` path as is.
async fn api(
    sim: &Simulator,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = if path.starts_with("/_sim") {
        format!("http://{}{path}", sim.addr())
    } else {
        format!("http://{}/api/v10{path}", sim.addr())
    };
    let mut request = http()
        .request(method, url)
        .header("Authorization", format!("Bot {TOKEN}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn set_url(sim: &Simulator, url: Value) -> (u16, Value) {
    api(
        sim,
        reqwest::Method::PATCH,
        "/applications/@me",
        Some(json!({ "interactions_endpoint_url": url })),
    )
    .await
}

async fn interact(sim: &Simulator, body: Value) -> Value {
    let (status, answer) = api(sim, reqwest::Method::POST, "/_sim/interactions", Some(body)).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// The entries of `GET /_sim/rest/interactions` for interaction `id`.
async fn entries(sim: &Simulator, id: &Value) -> Vec<Value> {
    let (_, list) = api(sim, reqwest::Method::GET, "/_sim/rest/interactions", None).await;
    list.as_array()
        .unwrap()
        .iter()
        .filter(|e| &e["id"] == id)
        .cloned()
        .collect()
}

/// The entry of interaction `id` that came `via`, once there is one (within `wait`).
async fn entry(sim: &Simulator, id: &Value, via: &str, wait: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(e) = entries(sim, id).await.into_iter().find(|e| e["via"] == via) {
            return e;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {via} entry for {id} within {wait:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn violations(sim: &Simulator, kind: &str) -> Vec<String> {
    sim.state()
        .violations
        .all()
        .into_iter()
        .filter(|v| v.kind == kind)
        .map(|v| {
            assert_eq!(v.bot.as_deref(), Some("bot"));
            v.detail
        })
        .collect()
}

const INVALID_URL_BODY: &str = r#"{"message": "Invalid Form Body", "code": 50035, "errors": {"interactions_endpoint_url": {"_errors": [{"code": "APPLICATION_INTERACTIONS_ENDPOINT_URL_INVALID", "message": "The specified interactions endpoint url could not be verified."}]}}}"#;

#[tokio::test]
async fn the_endpoint_url_check_passes_and_stores_the_url() {
    let sim = start(config(2)).await;
    let (endpoint, url) = endpoint(&sim, Behaviour::default()).await;
    let (status, app) = set_url(&sim, json!(url)).await;
    assert_eq!(status, 200, "{app}");
    assert_eq!(app["interactions_endpoint_url"], url.as_str());
    let (_, app) = api(&sim, reqwest::Method::GET, "/applications/@me", None).await;
    assert_eq!(app["interactions_endpoint_url"], url.as_str());

    // Two PINGs: the first correctly signed, the second not (and refused).
    let pings = endpoint.pings();
    assert_eq!(pings.len(), 2);
    assert!(pings[0].signature_ok);
    assert!(!pings[1].signature_ok);
    let ping = &pings[0];
    assert_eq!(ping.body["type"], 1);
    assert_eq!(ping.body["version"], 1);
    assert_eq!(ping.body["application_id"], app["id"]);
    assert!(ping.body["id"].as_str().unwrap().parse::<u64>().is_ok());
    assert!(ping.body["token"].is_string());
    assert_eq!(ping.headers["content-type"], "application/json");
    assert_eq!(
        ping.headers["user-agent"],
        "Discord-Interactions/1.0 (+https://discord.com)"
    );
    let timestamp: u64 = ping.headers["x-signature-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(timestamp.abs_diff(now) <= 2, "unix seconds");
    let signature = ping.headers["x-signature-ed25519"].to_str().unwrap();
    assert_eq!(signature.len(), 128);
    assert_eq!(signature, signature.to_ascii_lowercase());

    // Not http(s): the same 50035 shape, the URL unchanged.
    let (status, body) = set_url(&sim, json!("ftp://example.com/interactions")).await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], 50035);
    assert_eq!(
        body["errors"]["interactions_endpoint_url"]["_errors"][0]["code"],
        "URL_TYPE_INVALID_SCHEME"
    );
    let (_, app) = api(&sim, reqwest::Method::GET, "/applications/@me", None).await;
    assert_eq!(app["interactions_endpoint_url"], url.as_str());

    // null clears it.
    let (status, app) = set_url(&sim, Value::Null).await;
    assert_eq!(status, 200);
    assert!(app["interactions_endpoint_url"].is_null());
    sim.shutdown().await;
}

#[tokio::test]
async fn an_endpoint_that_accepts_bad_signatures_fails_the_check() {
    let sim = start(config(2)).await;
    let (endpoint, url) = endpoint(
        &sim,
        Behaviour {
            accepts_bad_signatures: true,
            ..Behaviour::default()
        },
    )
    .await;
    let (status, body) = set_url(&sim, json!(url)).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        serde_json::from_str::<Value>(INVALID_URL_BODY).unwrap()
    );
    assert_eq!(endpoint.pings().len(), 2);
    let (_, app) = api(&sim, reqwest::Method::GET, "/applications/@me", None).await;
    assert!(app["interactions_endpoint_url"].is_null());

    // Nobody listening: the same answer.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = format!("http://{}/", listener.local_addr().unwrap());
    drop(listener);
    let (status, body) = set_url(&sim, json!(closed)).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        serde_json::from_str::<Value>(INVALID_URL_BODY).unwrap()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn with_a_url_interactions_reach_the_endpoint_not_the_gateway() {
    let sim = start(config(2)).await;
    let mut client = Client::connect(&format!("ws://{}/gateway", sim.addr()), false).await;
    client.next().await;
    client.identify([0, 1], 1).await;
    client.until_dispatch("READY").await;
    let (endpoint, url) = endpoint(&sim, Behaviour::default()).await;
    assert_eq!(set_url(&sim, json!(url)).await.0, 200);

    let issued = interact(&sim, json!({"name": "ping"})).await;
    assert_eq!(issued["via"], "http");
    assert!(issued.get("sessions").is_none());
    for key in ["id", "token", "channel_id", "guild_id"] {
        assert!(issued[key].is_string(), "{key}: {issued}");
    }
    let answer = entry(&sim, &issued["id"], "endpoint", Duration::from_secs(5)).await;
    assert_eq!(answer["status"], 200);
    assert_eq!(answer["type"], 4);
    assert_eq!(answer["data"]["content"], "pong");
    assert!(answer["response_ms"].as_u64().unwrap() < 3000, "{answer}");
    assert!(answer["received_at_ms"].as_u64().unwrap() > 0);

    // What the endpoint got is INTERACTION_CREATE's `d`, signed.
    let received = endpoint.interactions();
    assert_eq!(received.len(), 1);
    let body = &received[0].body;
    assert!(received[0].signature_ok);
    assert_eq!(body["id"], issued["id"]);
    assert_eq!(body["token"], issued["token"]);
    assert_eq!(body["type"], 2);
    assert_eq!(body["data"]["name"], "ping");
    assert_eq!(body["channel_id"], issued["channel_id"]);
    assert!(body["member"]["user"]["id"].is_string());

    // Answered: a callback now is a second response.
    let path = format!(
        "/interactions/{}/{}/callback",
        issued["id"].as_str().unwrap(),
        issued["token"].as_str().unwrap()
    );
    let (status, body) = api(
        &sim,
        reqwest::Method::POST,
        &path,
        Some(json!({"type": 4, "data": {"content": "again"}})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"message": "Interaction has already been acknowledged.", "code": 40060})
    );
    assert!(violations(&sim, "interaction_unanswered").is_empty());

    // Nothing went over the gateway; without the URL the next one does.
    let (_, stats) = api(&sim, reqwest::Method::GET, "/_sim/stats", None).await;
    assert!(
        stats["shards"][0]["by_type"]["INTERACTION_CREATE"].is_null(),
        "{stats}"
    );
    let interactions = &stats["rest"]["interactions"];
    assert_eq!(interactions["issued"]["http"], 1);
    assert_eq!(interactions["answered"]["endpoint"], 1);
    assert_eq!(set_url(&sim, json!("")).await.0, 200);
    let issued = interact(&sim, json!({"name": "ping"})).await;
    assert_eq!(issued["via"], "gateway");
    assert_eq!(issued["sessions"], 1);
    let (dispatch, _) = client.until_dispatch("INTERACTION_CREATE").await;
    assert_eq!(dispatch["d"]["id"], issued["id"]);
    assert_eq!(endpoint.interactions().len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn an_endpoint_slower_than_3s_leaves_the_interaction_unanswered() {
    let sim = start(config(2)).await;
    let (_endpoint, url) = endpoint(
        &sim,
        Behaviour {
            delay: Duration::from_millis(3500),
            ..Behaviour::default()
        },
    )
    .await;
    assert_eq!(set_url(&sim, json!(url)).await.0, 200);
    let issued = interact(&sim, json!({"name": "ping"})).await;
    let missed = entry(&sim, &issued["id"], "endpoint", Duration::from_secs(5)).await;
    assert_eq!(missed["status"], 0);
    assert!(missed["type"].is_null());
    assert!(missed["response_ms"].is_null());
    let details = violations(&sim, "interaction_unanswered");
    assert_eq!(details.len(), 1);
    assert!(details[0].contains("no answer within 3s"), "{details:?}");
    // Not acknowledged, and too late for a callback as well.
    let path = format!(
        "/interactions/{}/{}/callback",
        issued["id"].as_str().unwrap(),
        issued["token"].as_str().unwrap()
    );
    let (status, body) = api(&sim, reqwest::Method::POST, &path, Some(json!({"type": 4}))).await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], 10062);
    sim.shutdown().await;
}

#[tokio::test]
async fn an_autocomplete_answered_with_a_deferral_is_a_violation() {
    let sim = start(config(2)).await;
    let (endpoint, url) = endpoint(
        &sim,
        Behaviour {
            response: json!({"type": 5}),
            ..Behaviour::default()
        },
    )
    .await;
    assert_eq!(set_url(&sim, json!(url)).await.0, 200);
    let issued = interact(
        &sim,
        json!({"name": "search", "type": 4, "options": [
            {"name": "query", "type": 3, "value": "ab"},
            {"name": "limit", "type": 4, "value": 5},
        ]}),
    )
    .await;
    let answer = entry(&sim, &issued["id"], "endpoint", Duration::from_secs(5)).await;
    assert_eq!(answer["status"], 200);
    assert_eq!(answer["type"], 5);
    let details = violations(&sim, "interaction_unanswered");
    assert_eq!(details.len(), 1);
    assert!(
        details[0].contains("response type 5 is not allowed for an interaction of type 4"),
        "{details:?}"
    );
    let body = &endpoint.interactions()[0].body;
    assert_eq!(body["type"], 4);
    assert_eq!(body["data"]["name"], "search");
    assert_eq!(body["data"]["options"][0]["focused"], true);
    assert!(body["data"]["options"][1].get("focused").is_none());

    // The right answer is not a violation.
    endpoint.set(Behaviour {
        response: json!({"type": 8, "data": {"choices": [{"name": "abc", "value": "abc"}]}}),
        ..Behaviour::default()
    });
    let issued = interact(&sim, json!({"name": "search", "type": 4})).await;
    let answer = entry(&sim, &issued["id"], "endpoint", Duration::from_secs(5)).await;
    assert_eq!(answer["type"], 8);
    assert_eq!(violations(&sim, "interaction_unanswered").len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn components_and_modals_reach_the_endpoint_in_their_shapes() {
    let sim = start(config(2)).await;
    let (endpoint, url) = endpoint(
        &sim,
        Behaviour {
            response: json!({"type": 7, "data": {"content": "updated"}}),
            ..Behaviour::default()
        },
    )
    .await;
    assert_eq!(set_url(&sim, json!(url)).await.0, 200);
    let clicked = interact(&sim, json!({"type": 3, "custom_id": "vote:yes"})).await;
    entry(&sim, &clicked["id"], "endpoint", Duration::from_secs(5)).await;
    endpoint.set(Behaviour {
        response: json!({"type": 9, "data": {"custom_id": "m", "title": "t", "components": []}}),
        ..Behaviour::default()
    });
    let submitted = interact(&sim, json!({"type": 5})).await;
    let answer = entry(&sim, &submitted["id"], "endpoint", Duration::from_secs(5)).await;
    assert_eq!(answer["type"], 9);

    let received = endpoint.interactions();
    let component = &received[0].body;
    assert_eq!(component["type"], 3);
    assert_eq!(
        component["data"],
        json!({"custom_id": "vote:yes", "component_type": 2})
    );
    let message = &component["message"];
    assert!(message["id"].is_string());
    assert_eq!(message["channel_id"], clicked["channel_id"]);
    assert_eq!(message["author"]["bot"], true);
    assert_eq!(message["components"], json!([]));
    let modal = &received[1].body;
    assert_eq!(modal["type"], 5);
    assert_eq!(
        modal["data"],
        json!({"custom_id": "modal", "components": []})
    );
    assert!(modal.get("message").is_none());

    // A component may be updated (7); a modal may not answer with another modal (9).
    let details = violations(&sim, "interaction_unanswered");
    assert_eq!(details.len(), 1, "{details:?}");
    assert!(details[0].contains("response type 9"), "{details:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_deferred_answer_is_edited_through_the_original_response() {
    let sim = start(config(2)).await;
    let (_endpoint, url) = endpoint(
        &sim,
        Behaviour {
            delay: Duration::from_millis(300),
            response: json!({"type": 5}),
            ..Behaviour::default()
        },
    )
    .await;
    assert_eq!(set_url(&sim, json!(url)).await.0, 200);
    let application_id = sim.state().bots[0].world().application_id;
    let issued = interact(&sim, json!({"name": "slow"})).await;
    let original = format!(
        "/webhooks/{application_id}/{}/messages/@original",
        issued["token"].as_str().unwrap()
    );
    let edit = json!({"content": "done", "embeds": [{"title": "result"}]});

    // Before the endpoint answered: no message yet.
    let (status, body) = api(&sim, reqwest::Method::PATCH, &original, Some(edit.clone())).await;
    assert_eq!(status, 404);
    assert_eq!(body, json!({"message": "Unknown Message", "code": 10008}));

    let deferred = entry(&sim, &issued["id"], "endpoint", Duration::from_secs(5)).await;
    assert_eq!(deferred["type"], 5);
    assert_eq!(deferred["status"], 200);
    let (status, message) = api(&sim, reqwest::Method::PATCH, &original, Some(edit.clone())).await;
    assert_eq!(status, 200, "{message}");
    assert_eq!(message["content"], "done");
    assert_eq!(message["embeds"][0]["title"], "result");
    assert_eq!(message["channel_id"], issued["channel_id"]);
    assert_eq!(message["webhook_id"], application_id.to_string());
    assert_eq!(message["author"]["id"], application_id.to_string());
    assert_eq!(message["interaction_metadata"]["id"], issued["id"]);
    let (status, read) = api(&sim, reqwest::Method::GET, &original, None).await;
    assert_eq!(status, 200);
    assert_eq!(read["content"], "done");
    assert_eq!(read["id"], message["id"]);

    let edits: Vec<Value> = entries(&sim, &issued["id"])
        .await
        .into_iter()
        .filter(|e| e["via"] == "edit_original")
        .collect();
    assert_eq!(edits.len(), 2, "{edits:?}");
    assert_eq!(edits[0]["status"], 404);
    let edited = &edits[1];
    assert_eq!(edited["status"], 200);
    assert!(edited["type"].is_null());
    assert_eq!(edited["data"], edit);
    assert!(edited["response_ms"].as_u64().unwrap() >= 300);

    // An unknown token, or another application's id: Unknown Webhook.
    let (status, body) = api(
        &sim,
        reqwest::Method::PATCH,
        &format!("/webhooks/{application_id}/not-a-token/messages/@original"),
        Some(edit.clone()),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body, json!({"message": "Unknown Webhook", "code": 10015}));
    let (status, _) = api(
        &sim,
        reqwest::Method::PATCH,
        &original.replace(&application_id.to_string(), "1"),
        Some(edit),
    )
    .await;
    assert_eq!(status, 404);
    assert!(violations(&sim, "interaction_unanswered").is_empty());
    sim.shutdown().await;
}
