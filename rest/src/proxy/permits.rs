//! Permits between replicas: a replica that does not keep a token's limits asks the token's
//! owner for a permit, sends the request upstream itself, and reports the answer back.
//!
//! A request waiting for a permit has gone nowhere, so an owner that dies while it holds
//! permit requests costs each of them one more permit request, to the next owner: never the
//! request itself. Only an owner's own clients lose what they had out with it, as with any dead
//! pod. The price is a second message per request through a non-owner (the report, which the
//! client does not wait for), and the owner's queue holds small permit requests instead of
//! whole bodies.
//!
//! - `POST /_shardyard/permits`, JSON `{"method", "path"}`, with the client's `Authorization`
//!   (if it sent one), `X-Shardyard-Max-Wait` and `X-Shardyard-Forwarded: <replica id>`:
//!   waits for the permit and answers `200 {"permit": ID}`, or a refusal as the proxy answers
//!   its own clients, or `503 replica_moved`.
//! - `POST /_shardyard/permits/ID`: the answer upstream gave: `X-Shardyard-Status`, the
//!   rate-limit headers, `Date` and `Retry-After` as upstream sent them, and an error answer's
//!   body. The owner completes the permit with it, as with its own requests.
//! - `DELETE /_shardyard/permits/ID`: no answer came (a connection error, a timeout); the
//!   permit is dropped.
//!
//! The owner drops a permit nobody reported on after the upstream timeout and a margin, when
//! its holder leaves the view, or when the token moves to another replica.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use shardyard_protocol::error_chain;
use tokio::time::Instant;

use super::answer::Local;
use super::upstream::{self, HttpClient};
use super::{Proxy, headers, max_wait, unix_now};
use crate::cluster::{Cluster, Member, Owner};
use crate::ratelimit::{Permit, ResponseMeta, Route, header as rl, lock};

/// Where permits are asked for, reported on and dropped.
pub(super) const PATH: &str = shardyard_protocol::names::REST_PERMITS_PATH;
/// The status upstream answered, on a report.
const STATUS: &str = headers::STATUS;
/// The largest permit request or report body taken.
const MAX_BODY: usize = 64 * 1024;
/// How long after a permit's upstream timeout the owner still waits for its report.
const REPORT_MARGIN: Duration = Duration::from_secs(10);
/// The upstream headers a report carries: what [`ResponseMeta::from_parts`] reads.
const REPORTED: [&str; 9] = [
    rl::BUCKET,
    rl::LIMIT,
    rl::REMAINING,
    rl::RESET_AFTER,
    rl::RESET,
    rl::GLOBAL,
    rl::SCOPE,
    rl::RETRY_AFTER,
    rl::DATE,
];

#[derive(Serialize, Deserialize)]
struct Ask {
    method: String,
    path: String,
}

#[derive(Serialize, Deserialize)]
struct Granted {
    permit: u64,
}

/// Permits this replica granted to other replicas, waiting for their reports.
pub(super) struct Lent {
    next: AtomicU64,
    permits: Mutex<HashMap<u64, Loan>>,
}

impl Default for Lent {
    /// Ids start at random: a late report meant for an earlier process at the same address
    /// (a restarted pod) then finds no permit, instead of completing someone else's.
    fn default() -> Self {
        use std::hash::{BuildHasher as _, Hasher as _};
        Self {
            next: AtomicU64::new(std::hash::RandomState::new().build_hasher().finish()),
            permits: Mutex::new(HashMap::new()),
        }
    }
}

struct Loan {
    permit: Permit,
    /// The replica holding it.
    holder: String,
    token_key: u64,
    expires: Instant,
}

impl Lent {
    fn lend(&self, permit: Permit, holder: String, token_key: u64, expires: Instant) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.permits).insert(
            id,
            Loan {
                permit,
                holder,
                token_key,
                expires,
            },
        );
        id
    }

    fn take(&self, id: u64) -> Option<Permit> {
        lock(&self.permits).remove(&id).map(|loan| loan.permit)
    }

    /// Permits out now.
    pub(super) fn len(&self) -> usize {
        lock(&self.permits).len()
    }

    /// Drops the permits whose report will not come: expired, held by a replica no longer in
    /// the view, or of a token that is no longer this replica's.
    pub(super) fn sweep(&self, cluster: &Cluster, now: Instant) {
        let members: Vec<String> = cluster.members().into_iter().map(|m| m.id).collect();
        let mut permits = lock(&self.permits);
        let before = permits.len();
        permits.retain(|_, loan| {
            loan.expires > now
                && members.contains(&loan.holder)
                && cluster.owner(loan.token_key) == Owner::Me
        });
        let dropped = before - permits.len();
        if dropped > 0 {
            tracing::warn!(dropped, "dropped permits whose holders never reported");
        }
    }
}

/// A permit another replica lent this one: report the answer (or its absence) to it.
pub(super) struct Borrowed {
    owner: Member,
    id: u64,
}

/// What asking the owner for a permit came to.
pub(super) enum Asked {
    /// Send the request upstream, then report.
    Granted(Borrowed),
    /// The owner's answer for the client (a refusal).
    Answer(Response),
    /// Ask who owns the token again (after `backoff`) and ask there.
    Again { backoff: Option<Duration> },
}

impl Proxy {
    /// `/_shardyard/permits…` from another replica.
    pub(super) async fn serve_permits(
        &self,
        parts: Parts,
        body: Incoming,
    ) -> Result<Response, Local> {
        let Some(cluster) = &self.cluster else {
            return Err(Local::new(
                StatusCode::NOT_FOUND,
                "not_clustered",
                "shardyard: this proxy runs without --nats and lends no permits",
            ));
        };
        let path = parts.uri.path();
        if path == PATH && parts.method == Method::POST {
            return self.lend(cluster, &parts, body).await;
        }
        let id = path
            .strip_prefix(PATH)
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(|id| id.parse::<u64>().ok())
            .ok_or_else(|| Local::bad_request("bad_path", "shardyard: no such permit path"))?;
        let permit = self.lent.take(id);
        match (parts.method, permit) {
            (Method::DELETE, permit) => drop(permit),
            (Method::POST, Some(permit)) => {
                let status = parts
                    .headers
                    .get(STATUS)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u16>().ok())
                    .ok_or_else(|| {
                        Local::bad_request("bad_report", "shardyard: a report without a status")
                    })?;
                let body = read_small(body).await?;
                let meta = ResponseMeta::from_parts(
                    status,
                    |name| parts.headers.get(name).and_then(|v| v.to_str().ok()),
                    &body,
                    unix_now(),
                );
                // What to do about a 429 is the holder's business: it decides from the same
                // answer. The engine learns here.
                let _ = permit.complete(&meta);
            }
            // Dropped already (expired, or its holder was taken out): nothing to learn into.
            (Method::POST, None) => {}
            _ => {
                return Err(Local::bad_request(
                    "bad_method",
                    "shardyard: permits are reported with POST or dropped with DELETE",
                ));
            }
        }
        Ok(Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Body::empty())
            .unwrap_or_default())
    }

    /// Waits for a permit for another replica's request and lends it.
    async fn lend(
        &self,
        cluster: &Cluster,
        parts: &Parts,
        body: Incoming,
    ) -> Result<Response, Local> {
        let arrived = Instant::now();
        let ask: Ask = serde_json::from_slice(&read_small(body).await?).map_err(|_| {
            Local::bad_request(
                "bad_body",
                "shardyard: a permit request must be JSON {method, path}",
            )
        })?;
        let route = Route::parse(&ask.method, &ask.path)
            .map_err(|error| Local::bad_request("bad_path", format!("shardyard: {error}")))?;
        let max_wait = max_wait(&parts.headers)?;
        let holder = parts
            .headers
            .get(headers::FORWARDED)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let (key, _) = self.credentials(&parts.headers, &route)?;
        let token_key = Cluster::token_key(&key);
        if cluster.owner(token_key) != Owner::Me {
            return Err(Local::moved());
        }
        self.claim(cluster, &key, token_key);
        let acquired = tokio::select! {
            acquired = self.engine.acquire(&key, &route, max_wait) => acquired,
            () = cluster.moved_away(token_key) => return Err(Local::moved()),
        };
        let permit = match acquired {
            Ok(permit) => permit,
            Err(refusal) => {
                return Err(self
                    .held(Local::from_refusal(&refusal), arrived, max_wait)
                    .await);
            }
        };
        let expires = Instant::now() + self.config.upstream_timeout + REPORT_MARGIN;
        let id = self.lent.lend(permit, holder, token_key, expires);
        self.metrics.permit("lent");
        let body = serde_json::to_vec(&Granted { permit: id }).unwrap_or_default();
        Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap_or_default())
    }

    /// Asks `owner` for a permit for a request of `route`. The exchange runs on its own, so
    /// that a permit granted after the client left is given back rather than held until it
    /// expires.
    pub(super) async fn ask_permit(
        &self,
        cluster: &Cluster,
        owner: &Member,
        route: &Route,
        raw_path: &str,
        authorization: Option<&HeaderValue>,
        max_wait: Option<std::time::Duration>,
    ) -> Result<Asked, Local> {
        let mut headers = HeaderMap::new();
        if let Ok(me) = HeaderValue::from_str(&cluster.me().id) {
            headers.insert(headers::FORWARDED, me);
        }
        if let Some(authorization) = authorization {
            headers.insert(header::AUTHORIZATION, authorization.clone());
        }
        if let Some(wait) = max_wait
            && let Ok(value) = HeaderValue::from_str(&format!("{:.3}", wait.as_secs_f64()))
        {
            headers.insert(headers::MAX_WAIT, value);
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let body = serde_json::to_vec(&Ask {
            method: route.method().as_str().to_owned(),
            path: raw_path.to_owned(),
        })
        .unwrap_or_default();
        // The owner may hold the request for its whole wait budget: a deadline only against
        // an owner that never answers.
        let deadline = max_wait
            .or(self.config.limits.default_max_wait)
            .map(|budget| budget + Duration::from_secs(10));
        let uri = format!("{}{PATH}", owner.url).parse::<Uri>();
        let relay = self.relay.clone();
        let (tell, told) = tokio::sync::oneshot::channel();
        let lender = owner.clone();
        tokio::spawn(async move {
            let exchange = async {
                let uri = uri.map_err(|e| -> upstream::SendError { Box::new(e) })?;
                let (head, body) = relay
                    .send(Method::POST, uri, headers, Bytes::from(body))
                    .await?
                    .into_parts();
                let bytes = upstream::read_body(body).await?;
                Ok::<_, upstream::SendError>((head.status, head.headers, bytes))
            };
            let outcome = match deadline {
                Some(deadline) => tokio::time::timeout(deadline, exchange).await.ok(),
                None => Some(exchange.await),
            };
            if let Err(Some(Ok((StatusCode::OK, _, bytes)))) = tell.send(outcome)
                && let Ok(granted) = serde_json::from_slice::<Granted>(&bytes)
            {
                // The client left while the permit was on its way: give it back.
                give_back(&relay, &lender, granted.permit).await;
            }
        });
        let outcome = told.await.map_err(|_| {
            Local::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "permit_lost",
                "shardyard: the permit request ended without an outcome",
            )
        })?;
        match outcome {
            None => Err(Local::new(
                StatusCode::GATEWAY_TIMEOUT,
                "replica_timeout",
                "shardyard: the replica keeping this token's limits did not answer in time",
            )),
            Some(Err(error)) => {
                // Nothing was sent upstream for this request: whatever happened to the owner,
                // the request goes to the next one.
                tracing::warn!(
                    replica = %owner.id,
                    error = %error_chain(&*error),
                    "asking a REST replica for a permit failed"
                );
                self.metrics.permit("owner_lost");
                cluster.unreachable(owner).await;
                Ok(Asked::Again { backoff: None })
            }
            Some(Ok((status, headers, bytes))) => {
                if headers
                    .get(headers::ERROR)
                    .is_some_and(|kind| kind == Local::MOVED)
                {
                    self.metrics.permit("moved");
                    return Ok(Asked::Again {
                        backoff: Some(super::MOVED_BACKOFF),
                    });
                }
                if status == StatusCode::OK
                    && let Ok(granted) = serde_json::from_slice::<Granted>(&bytes)
                {
                    self.metrics.permit("borrowed");
                    return Ok(Asked::Granted(Borrowed {
                        owner: owner.clone(),
                        id: granted.permit,
                    }));
                }
                self.metrics.permit("refused");
                let mut response = Response::new(Body::from(bytes));
                *response.status_mut() = status;
                *response.headers_mut() = headers::client_response(headers);
                Ok(Asked::Answer(response))
            }
        }
    }

    /// Reports upstream's answer to a borrowed permit's owner, without waiting.
    pub(super) fn report(
        &self,
        borrowed: Borrowed,
        status: StatusCode,
        answer: &HeaderMap,
        body: &Bytes,
    ) {
        let mut headers = HeaderMap::new();
        for name in REPORTED {
            if let Some(value) = answer.get(name) {
                headers.insert(HeaderName::from_static(name), value.clone());
            }
        }
        headers.insert(
            HeaderName::from_static(STATUS),
            HeaderValue::from(status.as_u16()),
        );
        let body = if status.as_u16() >= 400 && body.len() <= MAX_BODY {
            body.clone()
        } else {
            Bytes::new()
        };
        let relay = self.relay.clone();
        tokio::spawn(async move {
            let uri = format!("{}{PATH}/{}", borrowed.owner.url, borrowed.id).parse::<Uri>();
            if let Ok(uri) = uri
                && let Err(error) = relay.send(Method::POST, uri, headers, body).await
            {
                tracing::debug!(replica = %borrowed.owner.id, error = %error_chain(&*error), "a permit's report did not arrive");
            }
        });
    }

    /// Tells a borrowed permit's owner that no answer came, without waiting.
    pub(super) fn give_back(&self, borrowed: Borrowed) {
        let relay = self.relay.clone();
        tokio::spawn(async move { give_back(&relay, &borrowed.owner, borrowed.id).await });
    }
}

async fn give_back(relay: &HttpClient, owner: &Member, id: u64) {
    if let Ok(uri) = format!("{}{PATH}/{id}", owner.url).parse::<Uri>()
        && let Err(error) = relay
            .send(Method::DELETE, uri, HeaderMap::new(), Bytes::new())
            .await
    {
        tracing::debug!(replica = %owner.id, error = %error_chain(&*error), "a permit could not be given back");
    }
}

/// A body of at most [`MAX_BODY`] bytes.
async fn read_small(body: Incoming) -> Result<Bytes, Local> {
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    limited
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .map_err(|_| {
            Local::bad_request(
                "bad_body",
                "shardyard: a permit body that could not be read",
            )
        })
}
