//! What every `/api/v10` request goes through before and after its handler: the Cloudflare ban,
//! injected latency, the body size limit, authentication, injected faults, the global limit, the
//! route's bucket, rate-limit headers, counters and invalid-request accounting.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::time::Instant;

use super::error::{ApiError, FormErrors};
use super::faults::{InjectedRateLimit, Scope};
use super::ratelimit::{BucketGroup, BucketOutcome};
use super::table::RouteSpec;
use crate::bot::BotState;
use crate::snowflake::now_ms;
use crate::state::SimState;
use crate::stats::payload_digest;

/// The largest request body accepted (Discord's upload limit for bots without boosts is 25 MiB);
/// larger bodies get 413 with code 40005.
pub(crate) const BODY_LIMIT: usize = 25 * 1024 * 1024;

const X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
const X_RESET_AFTER: HeaderName = HeaderName::from_static("x-ratelimit-reset-after");
const X_BUCKET: HeaderName = HeaderName::from_static("x-ratelimit-bucket");
const X_SCOPE: HeaderName = HeaderName::from_static("x-ratelimit-scope");
const X_GLOBAL: HeaderName = HeaderName::from_static("x-ratelimit-global");

/// The rate limiter's owner of requests to bucketed routes that take no token.
const ANONYMOUS: usize = usize::MAX;

/// What a handler gets: the authenticated bot, path parameters, the query and the whole body.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) state: Arc<SimState>,
    pub(crate) bot: Option<Arc<BotState>>,
    pub(crate) params: HashMap<String, String>,
    pub(crate) query: HashMap<String, String>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Ctx {
    /// The bot whose token authenticated the request.
    pub(crate) fn bot(&self) -> Result<&Arc<BotState>, ApiError> {
        self.bot.as_ref().ok_or_else(ApiError::unauthorized)
    }

    /// A path parameter (empty when absent).
    pub(crate) fn param(&self, name: &str) -> &str {
        self.params.get(name).map_or("", String::as_str)
    }

    /// A path parameter that must be a snowflake; 50035 otherwise, as Discord answers.
    pub(crate) fn snowflake(&self, name: &str) -> Result<u64, ApiError> {
        parse_snowflake(name, self.param(name))
    }

    /// A query parameter.
    pub(crate) fn query(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }
}

/// Parses a snowflake field; a 50035 naming `field` when it is not one.
pub(crate) fn parse_snowflake(field: &str, raw: &str) -> Result<u64, ApiError> {
    raw.parse::<u64>().map_err(|_| {
        FormErrors::single(
            &[field],
            "NUMBER_TYPE_COERCE",
            &format!("Value \"{raw}\" is not snowflake."),
        )
    })
}

fn client_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |c| c.0.ip())
}

/// The index of the bot whose token the `Authorization: Bot <token>` header carries.
fn authenticate(state: &SimState, headers: &HeaderMap) -> Option<usize> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let token = value.strip_prefix("Bot ")?.trim();
    if token.is_empty() {
        return None;
    }
    state
        .bots
        .iter()
        .position(|b| b.config.token.expose() == token)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Seconds with three decimals, as Discord's headers carry them.
fn secs3(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

fn header(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

fn bucket_headers(headers: &mut HeaderMap, group: &BucketGroup, out: &BucketOutcome) {
    let reset_after = millis(out.reset_after);
    headers.insert(X_LIMIT, header(&out.limit.to_string()));
    headers.insert(X_REMAINING, header(&out.remaining.to_string()));
    headers.insert(X_RESET, header(&secs3(now_ms() + reset_after)));
    headers.insert(X_RESET_AFTER, header(&secs3(reset_after)));
    headers.insert(X_BUCKET, header(&group.hash()));
}

/// A 429 as Discord sends it.
fn too_many(
    scope: Scope,
    retry_after: Duration,
    bucket: Option<(&BucketGroup, BucketOutcome)>,
) -> Response {
    let ms = millis(retry_after);
    let retry_secs = ms as f64 / 1000.0;
    let global = scope == Scope::Global;
    let mut resp = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({
            "message": "You are being rate limited.",
            "retry_after": retry_secs,
            "global": global,
            "code": 0,
        })),
    )
        .into_response();
    let headers = resp.headers_mut();
    headers.insert(RETRY_AFTER, header(&ms.div_ceil(1000).to_string()));
    if global {
        headers.insert(X_GLOBAL, HeaderValue::from_static("true"));
    } else if let Some((group, out)) = bucket {
        bucket_headers(headers, group, &out);
    }
    headers.insert(X_SCOPE, HeaderValue::from_static(scope.as_str()));
    resp
}

/// What Cloudflare answers a banned IP: HTML, no JSON, no rate-limit headers.
fn cloudflare_ban(left: Duration) -> Response {
    let body = "<!DOCTYPE html>\n<html><head><title>Access denied | discord.com used Cloudflare to restrict access</title></head>\n<body><h1>Error 1015</h1><h2>You are being rate limited</h2>\n<p>The owner of this website (discord.com) has banned you temporarily from accessing this website.</p>\n<p>error code: 1015</p></body></html>\n";
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, body).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    headers.insert(
        RETRY_AFTER,
        header(&millis(left).div_ceil(1000).max(1).to_string()),
    );
    resp
}

/// Runs a request of route `spec` through the gate and `handler`.
pub(crate) async fn gated<F, Fut>(
    state: Arc<SimState>,
    req: Request,
    spec: &'static RouteSpec,
    handler: F,
) -> Response
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = Result<Response, ApiError>>,
{
    let ip = client_ip(&req);
    let rest = &state.rest;
    rest.counters().request(spec);
    let banned = rest.invalid().ban_remaining(ip, Instant::now());
    if let Some(left) = banned {
        let mut counters = rest.counters();
        counters.cloudflare_banned += 1;
        counters.status(StatusCode::TOO_MANY_REQUESTS);
        return cloudflare_ban(left);
    }
    let latency = rest.faults().latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let (mut parts, body) = req.into_parts();
    let mut bot = None;
    let resp = match admit(&state, &mut parts, body, spec, &mut bot).await {
        Admission::Pass(ctx, bucket) => {
            let mut resp = handler(ctx)
                .await
                .unwrap_or_else(IntoResponse::into_response);
            if let Some((group, out)) = bucket {
                let headers = resp.headers_mut();
                bucket_headers(headers, group, &out);
                // Discord sends the scope on every bucketed answer, and clients (twilight) only
                // learn a bucket from answers that carry it.
                headers.insert(X_SCOPE, HeaderValue::from_static(Scope::User.as_str()));
            }
            resp
        }
        Admission::Reject(resp) => resp,
    };
    finish(&state, ip, bot.as_deref(), resp)
}

/// Whether a request reaches its handler.
enum Admission {
    /// It does, with this context and the state of its bucket.
    Pass(Ctx, Option<(&'static BucketGroup, BucketOutcome)>),
    /// It is answered with this.
    Reject(Response),
}

/// Everything before the handler; sets `name` to the bot's name once authenticated.
async fn admit(
    state: &Arc<SimState>,
    parts: &mut Parts,
    body: Body,
    spec: &'static RouteSpec,
    name: &mut Option<String>,
) -> Admission {
    use Admission::Reject;
    let rest = &state.rest;
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > BODY_LIMIT as u64) {
        return Reject(ApiError::too_large().into_response());
    }
    let Ok(body) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        return Reject(ApiError::too_large().into_response());
    };

    let bot = if spec.auth {
        match authenticate(state, &parts.headers) {
            Some(i) => Some(i),
            None => return Reject(ApiError::unauthorized().into_response()),
        }
    } else {
        None
    };
    *name = bot.map(|i| state.bots[i].config.name.clone());

    let now = Instant::now();
    if let Some(i) = bot
        && spec.global
    {
        rest.limiter().note(i, now);
    }

    let params = if spec.template.contains('{') {
        Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|p| p.0)
            .unwrap_or_default()
    } else {
        HashMap::new()
    };
    let resource = spec.major.and_then(|m| params.get(m)).and_then(|v| {
        if spec.major_is_token {
            Some(payload_digest(v.as_bytes()))
        } else {
            v.parse::<u64>().ok()
        }
    });

    if spec.known {
        let path = parts.uri.path();
        let injected_status = rest.faults().take_status(path);
        if let Some(status) = injected_status {
            rest.counters().injected_status += 1;
            return Reject(ApiError::server(status).into_response());
        }
        let injected_rate_limit = rest.faults().take_rate_limit(path);
        if let Some(InjectedRateLimit { scope, retry_after }) = injected_rate_limit {
            let mut counters = rest.counters();
            counters.injected_rate_limit += 1;
            counters.rate_limited(scope);
            drop(counters);
            let bucket = spec.bucket.map(|group| {
                (
                    group,
                    BucketOutcome {
                        allowed: false,
                        limit: group.limit,
                        remaining: 0,
                        reset_after: retry_after,
                    },
                )
            });
            return Reject(too_many(scope, retry_after, bucket));
        }
    }

    if let Some(i) = bot
        && spec.global
    {
        let limit = state.bots[i].config.global_rate_limit;
        let refused = rest.limiter().global(i, limit, now);
        if let Err(retry) = refused {
            rest.counters().rate_limited(Scope::Global);
            state.violations.record(
                "global_limit",
                name.as_deref(),
                None,
                format!(
                    "{} exceeded the global limit of {limit} requests per second; retry after {}s",
                    spec.key(),
                    secs3(millis(retry)),
                ),
            );
            return Reject(too_many(Scope::Global, retry, None));
        }
    }

    let mut bucket = None;
    // A bucketed route without Authorization (interaction webhooks) is counted per resource
    // alone, whoever asks.
    let owner = if spec.auth { bot } else { Some(ANONYMOUS) };
    if let Some(i) = owner
        && let Some(group) = spec.bucket
    {
        let hash = group.hash();
        let major = resource.map_or_else(|| "none".to_owned(), |r| r.to_string());
        *rest
            .counters()
            .by_bucket
            .entry(format!("{hash}:{major}"))
            .or_default() += 1;
        let out = rest.limiter().acquire(i, group, resource.unwrap_or(0), now);
        if !out.allowed {
            rest.counters().rate_limited(Scope::User);
            state.violations.record(
                "bucket_limit",
                name.as_deref(),
                None,
                format!(
                    "{} exceeded bucket {hash} ({} per {}s) of resource {major}; retry after {}s",
                    spec.key(),
                    group.limit,
                    secs3(millis(group.window)),
                    secs3(millis(out.reset_after)),
                ),
            );
            return Reject(too_many(Scope::User, out.reset_after, Some((group, out))));
        }
        bucket = Some((group, out));
    }

    let query = Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let ctx = Ctx {
        state: state.clone(),
        bot: bot.map(|i| state.bots[i].clone()),
        params,
        query,
        headers: std::mem::take(&mut parts.headers),
        body,
    };
    Admission::Pass(ctx, bucket)
}

/// Counts the answer and does the invalid-request accounting of `ip`.
fn finish(state: &SimState, ip: IpAddr, bot: Option<&str>, resp: Response) -> Response {
    let rest = &state.rest;
    let status = resp.status();
    rest.counters().status(status);
    let shared = resp
        .headers()
        .get(X_SCOPE)
        .is_some_and(|v| v == Scope::Shared.as_str());
    let invalid = status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN
        || (status == StatusCode::TOO_MANY_REQUESTS && !shared);
    if invalid && rest.invalid().record(ip, Instant::now()) {
        state.violations.record(
            "cloudflare_ban",
            bot,
            None,
            format!(
                "{ip} made more than {} invalid requests (401, 403, 429) within 10 minutes: banned for {}s",
                state.config.invalid_request_limit, state.config.ban_secs
            ),
        );
    }
    resp
}
