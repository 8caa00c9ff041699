//! `POST /interactions`: Discord's request, verified, published to the bot's stream, and held
//! open until a worker answers or the deadline makes it a deferral.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use shardyard_protocol::names::{headers, interaction_msg_id};

use crate::pending::Pending;
use crate::status::EndpointStatus;
use crate::verify::{SIGNATURE_HEADER, TIMESTAMP_HEADER, Verifier};

/// The event type interactions are published as, as the gateway publishes them.
pub const INTERACTION_CREATE: &str = "INTERACTION_CREATE";

/// How long storing an interaction may take before Discord is told it failed (503): nothing is
/// answered 200 before the interaction is in the stream, and Discord gives up at 3 s.
const PUBLISH_WITHIN: Duration = Duration::from_millis(2_700);

/// Everything a request needs.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) verifier: Verifier,
    pub(crate) js: jetstream::Context,
    /// `shardyard.<bot>.events.http.INTERACTION_CREATE`.
    pub(crate) subject: String,
    /// This process's reply subjects are `<prefix>.<interaction id>`.
    pub(crate) reply_prefix: String,
    /// How long Discord's request is held for a worker's answer before it is deferred.
    pub(crate) answer_within: Duration,
    pub(crate) pending: Arc<Pending>,
    pub(crate) status: Arc<EndpointStatus>,
}

/// The routes: `POST /interactions`, bodies up to `max_body_bytes`.
pub(crate) fn router(endpoint: Arc<Endpoint>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/interactions", post(interaction))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(endpoint)
}

/// The fields read before publishing; the rest travels byte for byte.
#[derive(Deserialize)]
struct Head {
    id: String,
    #[serde(rename = "type")]
    kind: u8,
}

/// The metric label of an interaction type.
fn type_label(kind: u8) -> &'static str {
    match kind {
        1 => "ping",
        2 => "command",
        3 => "component",
        4 => "autocomplete",
        5 => "modal_submit",
        _ => "other",
    }
}

/// What Discord allows as the answer when nothing else came in time: a deferred message for
/// commands and modal submits (the "thinking…" state), a deferred update for components, and
/// no choices for autocomplete, which cannot be deferred.
fn deferral(kind: u8) -> (u8, &'static str) {
    match kind {
        3 => (6, r#"{"type":6}"#),
        4 => (8, r#"{"type":8,"data":{"choices":[]}}"#),
        _ => (5, r#"{"type":5}"#),
    }
}

fn json(body: impl Into<axum::body::Body>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.into(),
    )
        .into_response()
}

fn refuse(status: &EndpointStatus, code: StatusCode, reason: &'static str, why: &str) -> Response {
    status.refused.inc(reason);
    tracing::debug!(reason, "refused an interactions request: {why}");
    (code, format!("{why}\n")).into_response()
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

async fn interaction(
    State(endpoint): State<Arc<Endpoint>>,
    request_headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let arrived = Instant::now();
    let received_at_us = now_us();
    let status = &endpoint.status;
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let code = rejection.status();
            let reason = if code == StatusCode::PAYLOAD_TOO_LARGE {
                "too_large"
            } else {
                "malformed"
            };
            return refuse(status, code, reason, &rejection.body_text());
        }
    };
    // The signature first: nothing about an unsigned body is read.
    if let Err(refusal) = endpoint.verifier.verify(
        request_headers
            .get(SIGNATURE_HEADER)
            .map(HeaderValue::as_bytes),
        request_headers
            .get(TIMESTAMP_HEADER)
            .map(HeaderValue::as_bytes),
        &body,
        SystemTime::now(),
    ) {
        return refuse(
            status,
            StatusCode::UNAUTHORIZED,
            refusal.label(),
            &refusal.to_string(),
        );
    }
    let head: Head = match serde_json::from_slice(&body) {
        Ok(head) => head,
        Err(_) => {
            return refuse(
                status,
                StatusCode::BAD_REQUEST,
                "malformed",
                "the body is not an interaction",
            );
        }
    };
    // The id becomes a subject token: a snowflake is digits only.
    if head.id.is_empty() || !head.id.bytes().all(|b| b.is_ascii_digit()) {
        return refuse(
            status,
            StatusCode::BAD_REQUEST,
            "malformed",
            "the interaction id is not a snowflake",
        );
    }
    status.requests.inc(type_label(head.kind));
    if head.kind == 1 {
        return json(r#"{"type":1}"#);
    }

    let Some(mut answer) = endpoint.pending.wait(&head.id) else {
        return refuse(
            status,
            StatusCode::UNAUTHORIZED,
            "replayed",
            "this interaction was received already",
        );
    };
    let mut message_headers = async_nats::HeaderMap::new();
    message_headers.insert(headers::MSG_ID, interaction_msg_id(&head.id));
    message_headers.insert(headers::EVENT, INTERACTION_CREATE);
    message_headers.insert(headers::RECEIVED_AT, received_at_us.to_string());
    message_headers.insert(
        headers::REPLY_TO,
        format!("{}.{}", endpoint.reply_prefix, head.id),
    );
    let published = tokio::time::timeout_at((arrived + PUBLISH_WITHIN).into(), async {
        endpoint
            .js
            .publish_with_headers(endpoint.subject.clone(), message_headers, body)
            .await?
            .await
    })
    .await;
    match published {
        Ok(Ok(ack)) if ack.duplicate => {
            endpoint.pending.abandon(&head.id);
            return refuse(
                status,
                StatusCode::UNAUTHORIZED,
                "replayed",
                "this interaction is in the stream already",
            );
        }
        Ok(Ok(_)) => status.publish_latency.observe(arrived.elapsed()),
        Ok(Err(error)) => {
            endpoint.pending.abandon(&head.id);
            tracing::warn!(%error, "publishing an interaction failed");
            return refuse(
                status,
                StatusCode::SERVICE_UNAVAILABLE,
                "nats_unavailable",
                "the interaction could not be stored",
            );
        }
        Err(_) => {
            endpoint.pending.abandon(&head.id);
            tracing::warn!("publishing an interaction was not acknowledged in time");
            return refuse(
                status,
                StatusCode::SERVICE_UNAVAILABLE,
                "nats_unavailable",
                "the interaction could not be stored in time",
            );
        }
    }

    // Stored: wait for the worker until the deadline (already past if storing was slow: then
    // the deferral goes at once).
    let deadline = arrived + endpoint.answer_within;
    let response = tokio::select! {
        biased;
        answered = &mut answer => answered.ok(),
        () = tokio::time::sleep_until(deadline.into()) => {
            let (with, body) = deferral(head.kind);
            if endpoint.pending.defer(&head.id, with) {
                status.deferred.inc(type_label(head.kind));
                status.answer_latency.observe(arrived.elapsed());
                return json(body);
            }
            // The worker's answer got in just before the deadline.
            answer.await.ok()
        }
    };
    status.answer_latency.observe(arrived.elapsed());
    match response {
        Some(response) => json(response),
        // The sender went without answering: only when the process is going away.
        None => refuse(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the endpoint is shutting down",
        ),
    }
}
