//! Interactions over HTTP, the side Discord plays: checking an interactions endpoint URL before
//! it is saved, and POSTing interactions to it once it is.
//!
//! Every request is signed as Discord signs them: `X-Signature-Ed25519` holds the hex of the
//! Ed25519 signature, by the application's key (its public half is `verify_key`), of the
//! `X-Signature-Timestamp` value (unix seconds, decimal) followed by the raw body;
//! `Content-Type: application/json`, `User-Agent: Discord-Interactions/1.0 (+https://discord.com)`.
//! Each request has 3 s, no redirects are followed and no proxy is used.
//!
//! The check (`PATCH /applications/@me` with an `interactions_endpoint_url`): a correctly signed
//! PING must be answered 200 with a JSON body whose `type` is 1, then a PING signed with another
//! key must be answered 401.
//!
//! Delivery: the endpoint's answer is the interaction response: 200 with JSON
//! `{"type": N, "data": …}` within 3 s of the interaction being issued, `N` one of the types the
//! interaction's type allows. Anything else is a violation `interaction_unanswered`.

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::applications::{hex, signing_key};
use super::interactions::{
    CALLBACK_TYPES, INITIAL_RESPONSE_DEADLINE, InteractionCallback, allowed_responses, choices,
    interaction_kind,
};
use crate::payload::unix_secs;
use crate::snowflake::now_ms;
use crate::state::SimState;

/// The `User-Agent` of Discord's requests to interactions endpoints.
pub(crate) const USER_AGENT: &str = "Discord-Interactions/1.0 (+https://discord.com)";

/// The largest endpoint answer read; a longer one is not a valid response.
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// The HTTP client for interactions endpoints.
///
/// # Errors
/// When reqwest cannot build a client.
pub(crate) fn build_client() -> Result<reqwest::Client, String> {
    // reqwest is built without a crypto provider; the `shardyard` binary installs ring at start,
    // anything else embedding the simulator gets ring here (a no-op when one is installed).
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    reqwest::Client::builder()
        .timeout(INITIAL_RESPONSE_DEADLINE)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(USER_AGENT)
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

/// A POST of `body` to `url`, signed with `key` as Discord signs.
fn signed_post(
    client: &reqwest::Client,
    url: &str,
    key: &SigningKey,
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    let timestamp = unix_secs().to_string();
    let mut message = Vec::with_capacity(timestamp.len() + body.len());
    message.extend_from_slice(timestamp.as_bytes());
    message.extend_from_slice(&body);
    let signature = key.sign(&message);
    client
        .post(url)
        .header("X-Signature-Ed25519", hex(&signature.to_bytes()))
        .header("X-Signature-Timestamp", timestamp)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .body(body)
}

/// What an endpoint answered: its status and body.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

/// Sends `request` and reads the answer by `deadline`.
async fn exchange(request: reqwest::RequestBuilder, deadline: Instant) -> Result<Answer, String> {
    let exchange = async {
        let mut response = request.send().await.map_err(describe)?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(describe)? {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(format!("the answer is longer than {MAX_ANSWER} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer { status, body })
    };
    match tokio::time::timeout_at(deadline, exchange).await {
        Ok(answer) => answer,
        Err(_) => Err(format!(
            "no answer within {}s",
            INITIAL_RESPONSE_DEADLINE.as_secs()
        )),
    }
}

/// A reqwest error for a human, without the URL (it is named elsewhere).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    if e.is_timeout() {
        format!("no answer within {}s", INITIAL_RESPONSE_DEADLINE.as_secs())
    } else if e.is_connect() {
        format!("cannot connect: {}", source_chain(&e))
    } else {
        source_chain(&e)
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// The `type` of a JSON answer body, and its `data`.
fn response_of(body: &[u8]) -> Option<(u64, Value)> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let kind = value.get("type")?.as_u64()?;
    let data = value.get("data").cloned().unwrap_or(Value::Null);
    Some((kind, data))
}

/// Discord's check of an interactions endpoint URL: a signed PING answered 200 `{"type": 1}`,
/// then a PING with a bad signature answered 401, each within 3 s. `Err` says why it failed.
pub(crate) async fn verify(
    state: &SimState,
    application_id: u64,
    ping_id: u64,
    url: &str,
) -> Result<(), String> {
    let client = state.rest.endpoint_client()?;
    let token = format!("aW50ZXJhY3Rpb24{:032x}", rand::random::<u128>());
    let ping = json!({
        "id": ping_id.to_string(),
        "application_id": application_id.to_string(),
        "type": interaction_kind::PING,
        "token": token,
        "version": 1,
    });
    let body = serde_json::to_vec(&ping).map_err(|e| e.to_string())?;

    let key = signing_key(application_id);
    let deadline = Instant::now() + INITIAL_RESPONSE_DEADLINE;
    let answer = exchange(signed_post(&client, url, &key, body.clone()), deadline)
        .await
        .map_err(|why| format!("the signed PING: {why}"))?;
    if answer.status != 200 {
        return Err(format!(
            "the signed PING was answered {} (200 expected)",
            answer.status
        ));
    }
    match response_of(&answer.body) {
        Some((1, _)) => {}
        _ => {
            return Err(format!(
                "the signed PING was answered {:?} (a JSON object with \"type\": 1 expected)",
                String::from_utf8_lossy(&answer.body[..answer.body.len().min(200)])
            ));
        }
    }

    // The same PING signed by someone else: an endpoint that checks signatures refuses it.
    let impostor = signing_key(!application_id);
    let deadline = Instant::now() + INITIAL_RESPONSE_DEADLINE;
    let answer = exchange(signed_post(&client, url, &impostor, body), deadline)
        .await
        .map_err(|why| format!("the PING with a bad signature: {why}"))?;
    if answer.status != 401 {
        return Err(format!(
            "the PING with a bad signature was answered {} (401 expected)",
            answer.status
        ));
    }
    Ok(())
}

/// An interaction on its way to an interactions endpoint.
#[derive(Debug)]
pub(crate) struct Delivery {
    /// The bot's name, for violations.
    pub(crate) bot: String,
    pub(crate) application_id: u64,
    pub(crate) interaction_id: u64,
    /// Its type (2 application command, …).
    pub(crate) kind: u8,
    pub(crate) url: String,
    /// The INTERACTION_CREATE `d` bytes.
    pub(crate) body: Vec<u8>,
    /// When the simulator issued it.
    pub(crate) issued_at: Instant,
}

/// POSTs an interaction to its endpoint and takes the answer as the interaction response:
/// listed in `GET /_sim/rest/interactions` with `via: "endpoint"`, a violation
/// `interaction_unanswered` unless it is a valid response in time.
pub(crate) async fn deliver(state: Arc<SimState>, delivery: Delivery) {
    let deadline = delivery.issued_at + INITIAL_RESPONSE_DEADLINE;
    let outcome = match state.rest.endpoint_client() {
        Ok(client) => {
            let key = signing_key(delivery.application_id);
            let request = signed_post(&client, &delivery.url, &key, delivery.body.clone());
            exchange(request, deadline).await
        }
        Err(why) => Err(why),
    };
    let received_at_ms = now_ms();
    let elapsed = Instant::now().saturating_duration_since(delivery.issued_at);
    let (status, response, problem) = match outcome {
        Err(why) => (0, None, Some(why)),
        Ok(answer) => {
            let response = response_of(&answer.body);
            let problem = judge(&delivery, answer.status, &answer.body, response.as_ref());
            (answer.status, response, problem)
        }
    };
    let (kind, data) = match response {
        Some((kind, data)) => (Some(kind), data),
        None => (None, Value::Null),
    };
    {
        let mut interactions = state.rest.interactions();
        match (&problem, kind) {
            (None, Some(kind)) => {
                interactions.acknowledge_endpoint(delivery.interaction_id, kind, &data);
            }
            _ => interactions.endpoint_missed(),
        }
        interactions.push(InteractionCallback {
            id: delivery.interaction_id.to_string(),
            kind,
            data,
            received_at_ms,
            response_ms: (status != 0).then(|| millis(elapsed)),
            status,
            via: "endpoint",
        });
    }
    if let Some(why) = problem {
        state.violations.record(
            "interaction_unanswered",
            Some(&delivery.bot),
            None,
            format!(
                "interaction {} (type {}) POSTed to the interactions endpoint {}: {why}",
                delivery.interaction_id, delivery.kind, delivery.url
            ),
        );
    }
}

/// What is wrong with an endpoint's answer, if anything.
fn judge(
    delivery: &Delivery,
    status: u16,
    body: &[u8],
    response: Option<&(u64, Value)>,
) -> Option<String> {
    if status != 200 {
        return Some(format!("the endpoint answered {status} (200 expected)"));
    }
    let Some((kind, _)) = response else {
        return Some(format!(
            "the answer {:?} is not a JSON object with a numeric \"type\"",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ));
    };
    if !CALLBACK_TYPES.contains(kind) {
        return Some(format!(
            "response type {kind} is not an interaction callback type"
        ));
    }
    let allowed = allowed_responses(delivery.kind);
    if !allowed.contains(kind) {
        return Some(format!(
            "response type {kind} is not allowed for an interaction of type {} (one of {})",
            delivery.kind,
            choices(allowed)
        ));
    }
    None
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
