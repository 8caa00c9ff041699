//! The HTTP proxy in front of Discord's REST API (`shardyard rest`): every request is classified
//! into a [`Route`], waits for the [`RateLimiter`]'s permit, goes upstream with the bot token,
//! and the answer teaches the engine before it goes back to the client. 429s are retried
//! transparently; upstream failures are retried for idempotent methods. See the crate's README
//! for the interface and the status codes of local answers.

mod answer;
pub mod headers;
mod metrics;
mod permits;
mod serve;
mod upstream;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use shardyard_protocol::{Token, error_chain};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, ClusterConfig, ClusterError, Owner};
use crate::ratelimit::{
    self, Completion, Method, RateLimiter, ResponseMeta, Route, RouteKind, TokenFingerprint, lock,
};
use answer::Local;
use metrics::Metrics;
use permits::{Asked, Borrowed, Lent};
pub use upstream::BaseError;
use upstream::{HttpClient, UpstreamBase};

/// Discord's API, where requests go by default.
pub const DEFAULT_UPSTREAM: &str = "https://discord.com/api";

/// The proxy's settings.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Discord's API base without the version (`https://discord.com/api`): a request for
    /// `/api/v10/x` goes to `{upstream}/v10/x`.
    pub upstream: String,
    /// The bot token injected into requests that carry no `Authorization`. Without one, such
    /// requests to bot routes are refused (401, `no_token`).
    pub token: Option<Token>,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub admin_addr: Option<SocketAddr>,
    /// The rate-limit engine's settings (global limit, invalid-request line, default wait
    /// budget).
    pub limits: ratelimit::Config,
    /// How long an upstream request may take until its whole answer is in.
    pub upstream_timeout: Duration,
    /// Retries of an idempotent request (GET, PUT, DELETE) after a connection error or a 5xx.
    pub upstream_retries: u32,
    /// The largest `multipart/form-data` body (file uploads).
    pub max_upload_bytes: usize,
    /// The largest body of any other type (JSON).
    pub max_json_bytes: usize,
    /// Distinct client tokens (`Authorization` headers) the proxy keeps limits for.
    pub max_tokens: usize,
    /// Share limits with the other replicas of the bot through NATS (`--nats`); `None`: this
    /// replica limits on its own.
    pub cluster: Option<ClusterConfig>,
    /// The longest a refusal that says "retry after" is held before it is answered (never
    /// longer than that retry-after, nor than the request's wait budget). A client that
    /// re-sends a refused request at once, as twilight-http does without its own rate limiter,
    /// then sends at most one request per hold instead of as many as the proxy can answer.
    pub refusal_hold: Duration,
}

impl ProxyConfig {
    /// Defaults for everything but where to listen.
    #[must_use]
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            upstream: DEFAULT_UPSTREAM.to_owned(),
            token: None,
            admin_addr: None,
            limits: ratelimit::Config {
                sequential_buckets: true,
                ..ratelimit::Config::default()
            },
            upstream_timeout: Duration::from_secs(30),
            upstream_retries: 2,
            max_upload_bytes: 25 * 1024 * 1024,
            max_json_bytes: 10 * 1024 * 1024,
            max_tokens: 1024,
            cluster: None,
            refusal_hold: Duration::from_secs(1),
        }
    }
}

/// Why the proxy could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// `--upstream` cannot be used, or TLS could not be set up.
    #[error(transparent)]
    Upstream(#[from] BaseError),
    /// An address could not be bound.
    #[error("binding {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The replicas could not be joined through NATS.
    #[error("joining the other REST replicas")]
    Cluster(#[source] ClusterError),
}

/// Backoff before the first retry of an upstream failure; doubles each time.
const RETRY_BACKOFF: Duration = Duration::from_millis(250);
/// 429s retried for one request before upstream's 429 goes to the client.
const MAX_RATE_LIMIT_RETRIES: u32 = 8;
/// The longest `X-Shardyard-Max-Wait` taken into account.
const MAX_WAIT_CAP: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a replica that becomes a token's owner holds the token's requests, so that the
/// previous owner's last requests have left Discord's sliding second (the global limit) and
/// their answers are in (a bucket's counters) before it sends.
const TAKEOVER_PAUSE: Duration = Duration::from_millis(1_500);
/// Owners tried for one request (unreachable replicas, views that disagree for a moment).
const MAX_RELAY_HOPS: u32 = 6;
/// Backoff before asking again after an owner said the token is not its own; doubles.
const MOVED_BACKOFF: Duration = Duration::from_millis(50);

struct Proxy {
    engine: RateLimiter,
    /// Requests upstream.
    http: HttpClient,
    upstream: UpstreamBase,
    token: Option<Token>,
    default_fingerprint: Option<TokenFingerprint>,
    client_tokens: Mutex<HashSet<TokenFingerprint>>,
    config: ProxyConfig,
    metrics: Metrics,
    ready: AtomicBool,
    /// The other replicas (`--nats`).
    cluster: Option<Arc<Cluster>>,
    /// The client for permits asked of their token's owner.
    relay: HttpClient,
    /// Permits lent to other replicas, waiting for their reports.
    lent: Lent,
}

/// Leave to send one request upstream: from this replica's engine, or lent by the token's
/// owner.
enum Grant {
    Own(ratelimit::Permit),
    Borrowed(Borrowed),
}

/// Runs the proxy until `shutdown` is cancelled, then lets in-flight requests finish.
///
/// # Errors
/// A bad upstream URL, an address that cannot be bound, or replicas that cannot be joined.
pub async fn run(config: ProxyConfig, shutdown: CancellationToken) -> Result<(), ProxyError> {
    let upstream = UpstreamBase::parse(&config.upstream)?;
    let http = HttpClient::new(Duration::from_secs(10))?;
    let relay = HttpClient::new(Duration::from_secs(2))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ProxyError::Bind {
            addr: config.listen,
            source,
        })?;
    let cluster = match config.cluster.clone() {
        Some(cluster) => Some(
            Cluster::join(cluster, shutdown.clone())
                .await
                .map_err(ProxyError::Cluster)?,
        ),
        None => None,
    };
    let engine = RateLimiter::new(config.limits.clone());
    let default_fingerprint = config.token.as_ref().map(|t| engine.fingerprint(t));
    let proxy = Arc::new(Proxy {
        engine,
        http,
        upstream,
        token: config.token.clone(),
        default_fingerprint,
        client_tokens: Mutex::new(HashSet::new()),
        config: config.clone(),
        metrics: Metrics::default(),
        ready: AtomicBool::new(false),
        cluster,
        relay,
        lent: Lent::default(),
    });

    if let Some(addr) = config.admin_addr {
        shardyard_admin::spawn(addr, Arc::clone(&proxy) as _, shutdown.clone())
            .await
            .map_err(|source| ProxyError::Bind { addr, source })?;
    }
    tokio::spawn(every_second(Arc::clone(&proxy), shutdown.clone()));
    proxy.ready.store(true, Ordering::Relaxed);
    tracing::info!(
        listen = %config.listen,
        admin = ?config.admin_addr,
        default_token = proxy.token.is_some(),
        "REST proxy listening"
    );
    let stop = shutdown.clone();
    let ready = Arc::clone(&proxy);
    tokio::spawn(async move {
        stop.cancelled().await;
        ready.ready.store(false, Ordering::Relaxed);
    });
    serve::serve(listener, shutdown, move |request| {
        handle(Arc::clone(&proxy), request)
    })
    .await;
    Ok(())
}

/// Keeps a timer due within a second, always, and sweeps the permits lent to other replicas
/// at each tick ([`permits::Lent`]). Every request arms timers (the upstream timeout,
/// the body's), and tokio wakes its driver through an eventfd write and one more `epoll_wait`
/// whenever a new timer is due before the driver's next planned wake-up, which after a
/// moment of quiet is the connection pool's 90 s idle timer: that was two syscalls on almost
/// every request at 1,000/s. With this timer the driver never plans further than a second
/// ahead, so a request's timers (seconds long) are never the earliest.
async fn every_second(proxy: Arc<Proxy>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Some(cluster) = &proxy.cluster {
            proxy.lent.sweep(cluster, Instant::now());
        }
    }
}

/// Ready while serving (not yet while starting, no longer while draining).
impl shardyard_admin::Status for Proxy {
    fn readiness(&self) -> Result<(), String> {
        if self.ready.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("starting or draining".into())
        }
    }

    fn render_metrics(&self, out: &mut String) {
        out.push_str(
            &self
                .metrics
                .render(&self.engine.snapshot(), self.default_fingerprint),
        );
        if let Some(cluster) = &self.cluster {
            out.push_str(&cluster.render_metrics());
            out.push_str(&format!(
                "# HELP shardyard_rest_cluster_permits_lent Permits this replica lent to others and has no report of yet.\n\
                 # TYPE shardyard_rest_cluster_permits_lent gauge\n\
                 shardyard_rest_cluster_permits_lent {}\n",
                self.lent.len()
            ));
        }
    }
}

/// Counts a request in flight, and counts its answer once it has one; dropped without one (hyper
/// drops a request's future when its client goes away), it is counted as status 499.
struct Tally<'a> {
    metrics: &'a Metrics,
    method: &'static str,
    /// The route's template, once the request got that far.
    route: Option<String>,
    answered: bool,
}

/// nginx's "client closed request": the client left before its answer, so none was sent.
const CLIENT_GONE: u16 = 499;

impl<'a> Tally<'a> {
    fn new(metrics: &'a Metrics, method: &'static str) -> Self {
        metrics.in_flight.add(1);
        Self {
            metrics,
            method,
            route: None,
            answered: false,
        }
    }

    fn route(&self) -> &str {
        self.route.as_deref().unwrap_or("invalid")
    }

    fn answered(&mut self, status: u16) {
        self.answered = true;
        self.metrics.request(self.method, self.route(), status);
        tracing::debug!(
            method = self.method,
            route = self.route(),
            status,
            "answered"
        );
    }
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        self.metrics.in_flight.add(-1);
        if !self.answered {
            self.metrics.request(self.method, self.route(), CLIENT_GONE);
            tracing::debug!(
                method = self.method,
                route = self.route(),
                "the client left before its answer"
            );
        }
    }
}

async fn handle(proxy: Arc<Proxy>, request: Request<Incoming>) -> Response {
    let (parts, body) = request.into_parts();
    let method_label = Method::parse(parts.method.as_str()).map_or("other", Method::as_str);
    let mut tally = Tally::new(&proxy.metrics, method_label);
    let answer = if parts.uri.path().starts_with(permits::PATH) {
        tally.route = Some("permits".to_owned());
        proxy.serve_permits(parts, body).await
    } else {
        proxy.forward(parts, body, &mut tally.route).await
    };
    let response = match answer {
        Ok(response) => response,
        Err(local) => {
            proxy.metrics.local(local.kind);
            local.into_response()
        }
    };
    tally.answered(response.status().as_u16());
    response
}

/// What an upstream answer becomes.
enum Upstream {
    /// Send it to the client.
    Answer(Response),
    /// Try again, after `backoff` (a 429's wait is the engine's business).
    Retry { backoff: Option<Duration> },
}

impl Proxy {
    /// Sends a client's request upstream (or to its token's owner) and brings back the
    /// answer; writes the route's template into `template` as soon as it is known.
    async fn forward(
        &self,
        parts: Parts,
        body: Incoming,
        template: &mut Option<String>,
    ) -> Result<Response, Local> {
        let arrived = Instant::now();
        let raw_path = parts.uri.path();
        let Some(versioned) = versioned_path(raw_path) else {
            return Err(Local::bad_request(
                "bad_path",
                "shardyard: the path must start with /api/v{N}/ (e.g. /api/v10/users/@me)",
            ));
        };
        let route = Route::parse(parts.method.as_str(), raw_path).map_err(|error| {
            let kind = if matches!(error, ratelimit::RouteError::Method) {
                "bad_method"
            } else {
                "bad_path"
            };
            Local::bad_request(kind, format!("shardyard: {error}"))
        })?;
        *template = Some(route.template().to_owned());

        let max_wait = max_wait(&parts.headers)?;
        let (key, authorization) = self.credentials(&parts.headers, &route)?;

        let limit = if is_multipart(&parts.headers) {
            self.config.max_upload_bytes
        } else {
            self.config.max_json_bytes
        };
        let body = if hyper::body::Body::is_end_stream(&body) {
            // No body (a GET): nothing to wait for, no timer to arm.
            Bytes::new()
        } else {
            tokio::time::timeout(BODY_TIME, read_body(&parts.headers, body, limit))
                .await
                .unwrap_or_else(|_elapsed| {
                    Err(Local::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "body_timeout",
                        format!(
                            "shardyard: the request body did not arrive within {} s",
                            BODY_TIME.as_secs()
                        ),
                    ))
                })?
        };

        // Sent by a replica of an earlier version, which forwarded whole requests to the
        // token's owner: this replica sends it as the owner, or says the token moved.
        let forwarded = parts.headers.contains_key(headers::FORWARDED);
        // The client's own token, which the owner limits the request under; without one the
        // owner uses the token it was configured with, as this replica would.
        let client_authorization = parts.headers.get(header::AUTHORIZATION).cloned();
        let token_key = Cluster::token_key(&key);

        // The path and query were parsed as a URI already: joined to the base they are one.
        let uri = self
            .upstream
            .uri(versioned, parts.uri.query())
            .ok_or_else(|| {
                Local::bad_request("bad_path", "shardyard: the path cannot be sent upstream")
            })?;
        let method = parts.method.clone();
        let mut headers = headers::upstream_request(parts.headers);
        if let Some(authorization) = authorization {
            headers.insert(header::AUTHORIZATION, authorization);
        }

        let idempotent = matches!(route.method(), Method::Get | Method::Put | Method::Delete);
        let mut hops = 0u32;
        'owner: loop {
            // Who keeps the token's limits: `None` for this replica (or no replicas at all).
            let owner = match &self.cluster {
                Some(cluster) => match cluster.owner(token_key) {
                    Owner::Me => {
                        self.claim(cluster, &key, token_key);
                        None
                    }
                    // The sender's view differs from this one for a moment: it asks again.
                    Owner::Peer(_) if forwarded => return Err(Local::moved()),
                    Owner::Peer(peer) => Some((cluster, peer)),
                },
                None => None,
            };
            let mut failures = 0u32;
            let mut rate_limited = 0u32;
            loop {
                let grant = match &owner {
                    Some((cluster, peer)) => {
                        if hops >= MAX_RELAY_HOPS {
                            return Err(Local::unsettled());
                        }
                        let asked = self
                            .ask_permit(
                                cluster,
                                peer,
                                &route,
                                raw_path,
                                client_authorization.as_ref(),
                                // What is left of the budget: an earlier owner, a moved token
                                // or a 429 may have spent some.
                                max_wait
                                    .or(self.config.limits.default_max_wait)
                                    .map(|budget| budget.saturating_sub(arrived.elapsed())),
                            )
                            .await?;
                        match asked {
                            Asked::Granted(borrowed) => Grant::Borrowed(borrowed),
                            Asked::Answer(response) => return Ok(response),
                            Asked::Again { backoff } => {
                                hops += 1;
                                if let Some(backoff) = backoff {
                                    let doubling = 2u32.saturating_pow(hops.saturating_sub(1));
                                    tokio::time::sleep(backoff * doubling).await;
                                }
                                continue 'owner;
                            }
                        }
                    }
                    None => {
                        let acquire = self.engine.acquire(&key, &route, max_wait);
                        let acquired = match &self.cluster {
                            // The token may move to another replica while its requests wait
                            // here: they follow it (a forwarded one goes back to its sender,
                            // which asks again).
                            Some(cluster) => tokio::select! {
                                acquired = acquire => acquired,
                                () = cluster.moved_away(token_key) => {
                                    if forwarded {
                                        return Err(Local::moved());
                                    }
                                    continue 'owner;
                                }
                            },
                            None => acquire.await,
                        };
                        match acquired {
                            Ok(permit) => Grant::Own(permit),
                            Err(refusal) => {
                                return Err(self
                                    .held(Local::from_refusal(&refusal), arrived, max_wait)
                                    .await);
                            }
                        }
                    }
                };

                let sent = Instant::now();
                let request =
                    self.http
                        .send(method.clone(), uri.clone(), headers.clone(), body.clone());
                let outcome = tokio::time::timeout(self.config.upstream_timeout, async {
                    let (head, body) = request.await?.into_parts();
                    self.metrics
                        .upstream(route.method().as_str(), sent.elapsed());
                    let bytes = upstream::read_body(body).await?;
                    Ok::<_, upstream::SendError>((head.status, head.headers, bytes))
                })
                .await;
                let (status, upstream_headers, bytes) = match outcome {
                    Err(_elapsed) => {
                        self.unanswered(grant);
                        self.metrics.upstream_error("timeout");
                        tracing::warn!(route = %route, "upstream timed out");
                        return Err(Local::new(
                            StatusCode::GATEWAY_TIMEOUT,
                            "upstream_timeout",
                            format!(
                                "shardyard: upstream did not answer within {:.3} s",
                                self.config.upstream_timeout.as_secs_f64()
                            ),
                        ));
                    }
                    Ok(Err(error)) => {
                        self.unanswered(grant);
                        self.metrics.upstream_error("connect");
                        // hyper-util's errors name no URL, which may hold a webhook token.
                        let cause = error_chain(&*error);
                        tracing::warn!(route = %route, error = %cause, "upstream request failed");
                        if idempotent && failures < self.config.upstream_retries {
                            self.metrics.retry("connect");
                            tokio::time::sleep(RETRY_BACKOFF * 2u32.saturating_pow(failures)).await;
                            failures += 1;
                            continue;
                        }
                        return Err(Local::new(
                            StatusCode::BAD_GATEWAY,
                            "upstream_unreachable",
                            format!(
                                "shardyard: the request to upstream failed ({}): {cause}",
                                attempts(failures, idempotent)
                            ),
                        ));
                    }
                    Ok(Ok(parts)) => parts,
                };
                let meta = ResponseMeta::from_parts(
                    status.as_u16(),
                    |name| upstream_headers.get(name).and_then(|v| v.to_str().ok()),
                    &bytes,
                    unix_now(),
                );
                if let Some(cluster) = &self.cluster {
                    cluster.report_window(token_key, &route, &meta);
                }
                let completion = match grant {
                    Grant::Own(permit) => permit.complete(&meta),
                    Grant::Borrowed(borrowed) => {
                        self.report(borrowed, status, &upstream_headers, &bytes);
                        ratelimit::completion_of(&meta, self.config.limits.fallback_retry_after)
                    }
                };
                match self.upstream_answer(
                    completion,
                    status,
                    upstream_headers,
                    bytes,
                    idempotent,
                    &mut failures,
                    &mut rate_limited,
                ) {
                    Ok(Upstream::Answer(response)) => return Ok(response),
                    Ok(Upstream::Retry { backoff: None }) => {}
                    Ok(Upstream::Retry {
                        backoff: Some(backoff),
                    }) => tokio::time::sleep(backoff).await,
                    Err(local) => return Err(local),
                }
            }
        }
    }

    /// Starts keeping `key`'s limits if this replica did not until now, with what the
    /// replicas heard of its buckets' windows.
    fn claim(&self, cluster: &Cluster, key: &Token, token_key: u64) {
        if cluster.claim(token_key) {
            let known = cluster.known_windows(token_key);
            self.engine.take_over_with(key, TAKEOVER_PAUSE, &known);
            tracing::info!(
                token = %self.engine.fingerprint(key),
                windows = known.len(),
                "this replica keeps a token's limits from now on"
            );
        }
    }

    /// A request sent under `grant` got no answer: the slot is freed (not refunded: the
    /// request may have reached Discord).
    fn unanswered(&self, grant: Grant) {
        match grant {
            Grant::Own(permit) => drop(permit),
            Grant::Borrowed(borrowed) => self.give_back(borrowed),
        }
    }

    /// A refusal that says when to retry, answered no sooner than [`refusal_hold`] allows, with
    /// its retry-after shortened by the time it was held. A client that ignores retry-after and
    /// re-sends at once (twilight-http without a rate limiter of its own) is paced by the hold
    /// instead of making the proxy answer as fast as it can; a client that waits loses
    /// nothing, since it could not have been served before the retry-after.
    async fn held(&self, mut local: Local, arrived: Instant, max_wait: Option<Duration>) -> Local {
        let Some(retry_after) = local.retry_after else {
            return local;
        };
        let budget = max_wait.or(self.config.limits.default_max_wait);
        let hold = refusal_hold(
            retry_after,
            budget,
            self.config.refusal_hold,
            arrived.elapsed(),
        );
        if !hold.is_zero() {
            self.metrics.held_refusal();
            tokio::time::sleep(hold).await;
            local.retry_after = Some(retry_after.saturating_sub(hold));
        }
        local
    }

    /// Decides what an upstream answer becomes: a retry (429s; 5xx of idempotent methods),
    /// a 502 (other 5xx), or the answer itself.
    #[allow(clippy::too_many_arguments)]
    fn upstream_answer(
        &self,
        completion: Completion,
        status: StatusCode,
        headers: HeaderMap,
        bytes: Bytes,
        idempotent: bool,
        failures: &mut u32,
        rate_limited: &mut u32,
    ) -> Result<Upstream, Local> {
        if let Completion::RetryAfter { after, scope } = completion {
            if *rate_limited < MAX_RATE_LIMIT_RETRIES {
                *rate_limited += 1;
                self.metrics.retry("rate_limited");
                tracing::debug!(
                    scope = scope.as_str(),
                    after = after.as_secs_f64(),
                    "retrying a 429"
                );
                return Ok(Upstream::Retry { backoff: None });
            }
        } else if status.is_server_error() {
            self.metrics.upstream_error("status_5xx");
            if idempotent && *failures < self.config.upstream_retries {
                let backoff = RETRY_BACKOFF * 2u32.saturating_pow(*failures);
                *failures += 1;
                self.metrics.retry("upstream_5xx");
                return Ok(Upstream::Retry {
                    backoff: Some(backoff),
                });
            }
            let mut local = Local::new(
                StatusCode::BAD_GATEWAY,
                "upstream_5xx",
                format!(
                    "shardyard: upstream answered {status} ({})",
                    attempts(*failures, idempotent)
                ),
            );
            local.upstream_status = Some(status.as_u16());
            return Err(local);
        }
        let mut response = Response::new(Body::from(bytes));
        *response.status_mut() = status;
        *response.headers_mut() = headers::client_response(headers);
        Ok(Upstream::Answer(response))
    }

    /// The token the request is limited under, and the `Authorization` to send upstream.
    fn credentials(
        &self,
        headers: &HeaderMap,
        route: &Route,
    ) -> Result<(Token, Option<HeaderValue>), Local> {
        let mut given = headers.get_all(header::AUTHORIZATION).iter();
        let (first, second) = (given.next(), given.next());
        if second.is_some() {
            return Err(Local::bad_request(
                "bad_authorization",
                "shardyard: more than one Authorization header",
            ));
        }
        if let Some(value) = first {
            let text = value
                .to_str()
                .ok()
                .filter(|t| !t.trim().is_empty())
                .ok_or_else(|| {
                    Local::bad_request(
                        "bad_authorization",
                        "shardyard: the Authorization header is empty or not visible ASCII",
                    )
                })?;
            let token = Token::new(text);
            let fingerprint = self.engine.fingerprint(&token);
            if Some(fingerprint) != self.default_fingerprint {
                let mut known = lock(&self.client_tokens);
                if !known.contains(&fingerprint) {
                    if known.len() >= self.config.max_tokens {
                        return Err(Local::refusal(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "too_many_tokens",
                            format!(
                                "shardyard: this proxy already keeps limits for {} client tokens",
                                self.config.max_tokens
                            ),
                        ));
                    }
                    known.insert(fingerprint);
                }
            }
            let mut value = value.clone();
            value.set_sensitive(true);
            return Ok((token, Some(value)));
        }
        match (&self.token, route.kind()) {
            (Some(token), RouteKind::Bot) => {
                let mut value = HeaderValue::from_str(&token.authorization()).map_err(|_| {
                    Local::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "bad_configured_token",
                        "shardyard: the configured bot token is not a valid header value",
                    )
                })?;
                value.set_sensitive(true);
                Ok((token.clone(), Some(value)))
            }
            // Webhooks and interactions are authenticated by the token in their path: the bot
            // token is not sent, but their limits are kept with the bot's.
            (Some(token), _) => Ok((token.clone(), None)),
            (None, RouteKind::Bot) => Err(Local::refusal(
                StatusCode::UNAUTHORIZED,
                "no_token",
                "shardyard: the request has no Authorization and the proxy has no bot token",
            )),
            (None, _) => Ok((Token::new(""), None)),
        }
    }
}

fn attempts(failures: u32, idempotent: bool) -> String {
    if idempotent {
        format!("{} attempts", failures + 1)
    } else {
        "not retried: the method is not idempotent".to_owned()
    }
}

/// How long to hold a refusal that says `retry_after`, for a request that may wait `budget`
/// (`None`: as long as needed) and has waited `waited` already: up to `hold`, but never
/// past the retry-after (the client may send again then) nor past the budget (the client
/// asked for an answer within it).
fn refusal_hold(
    retry_after: Duration,
    budget: Option<Duration>,
    hold: Duration,
    waited: Duration,
) -> Duration {
    let limit = budget.map_or(hold, |budget| budget.min(hold));
    retry_after.min(limit).saturating_sub(waited)
}

/// The path after `/api`, when it is `/api/v{N}/…` without dot segments or backslashes (which
/// URL resolution would turn into a path outside `/api/v{N}` upstream, with the bot token).
fn versioned_path(path: &str) -> Option<&str> {
    if path.contains('\\') || path.split('/').any(is_dot_segment) {
        return None;
    }
    let rest = path.strip_prefix("/api/v")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    (digits > 0 && digits <= 3 && rest[digits..].starts_with('/') && rest.len() > digits + 1)
        .then(|| &path[4..])
}

/// `.` or `..`, also percent-encoded (`%2e`), as the URL standard reads them.
fn is_dot_segment(segment: &str) -> bool {
    [".", "%2e", "..", ".%2e", "%2e.", "%2e%2e"]
        .iter()
        .any(|dots| segment.eq_ignore_ascii_case(dots))
}

/// `X-Shardyard-Max-Wait` in seconds, if given.
fn max_wait(headers: &HeaderMap) -> Result<Option<Duration>, Local> {
    let Some(value) = headers.get(headers::MAX_WAIT) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| Some(Duration::try_from_secs_f64(v).map_or(MAX_WAIT_CAP, |d| d.min(MAX_WAIT_CAP))))
        .ok_or_else(|| {
            Local::bad_request(
                "bad_max_wait",
                "shardyard: X-Shardyard-Max-Wait must be a number of seconds, 0 or more",
            )
        })
}

fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/")
        })
}

/// Bytes of a refused body read and thrown away, so that the client (still sending) reads the
/// 413 instead of a reset connection.
const DRAIN_CAP: usize = 64 * 1024 * 1024;
/// How long a client may take to send its body.
const BODY_TIME: Duration = Duration::from_secs(60);
/// How long draining a refused body may take.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Reads the whole body, refusing one over `limit` (413) from its `Content-Length` or as it
/// streams in.
async fn read_body(headers: &HeaderMap, mut body: Incoming, limit: usize) -> Result<Bytes, Local> {
    let too_large = || {
        Local::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("shardyard: the body is larger than {limit} bytes, more than Discord accepts"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut buffer = BytesMut::new();
    let mut refused = declared.is_some_and(|n| n > limit as u64);
    if !refused {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| {
                Local::bad_request("bad_body", "shardyard: the request body could not be read")
            })?;
            let Ok(chunk) = frame.into_data() else {
                continue; // trailers
            };
            if buffer.len() + chunk.len() > limit {
                refused = true;
                break;
            }
            buffer.extend_from_slice(&chunk);
        }
    }
    if !refused {
        return Ok(buffer.freeze());
    }
    let drain = async {
        let mut drained = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            drained += frame.data_ref().map_or(0, Bytes::len);
            if drained > DRAIN_CAP {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
    Err(too_large())
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_paths() {
        assert_eq!(versioned_path("/api/v10/users/@me"), Some("/v10/users/@me"));
        assert_eq!(versioned_path("/api/v9/x"), Some("/v9/x"));
        assert_eq!(versioned_path("/api/v10/"), None);
        assert_eq!(versioned_path("/api/v10"), None);
        assert_eq!(versioned_path("/api/users/@me"), None);
        assert_eq!(versioned_path("/api/vx/users"), None);
        assert_eq!(versioned_path("/v10/users"), None);
        assert_eq!(versioned_path(""), None);
        for climbing in [
            "/api/v10/channels/../../oauth2",
            "/api/v10/./users",
            "/api/v10/users/%2E%2e/x",
            "/api/v10/users/.%2e",
            "/api/v10/users/%2e",
            "/api/v10/channels\\..\\x",
        ] {
            assert_eq!(versioned_path(climbing), None, "{climbing}");
        }
        assert_eq!(
            versioned_path("/api/v10/users/.../x"),
            Some("/v10/users/.../x")
        );
    }

    #[test]
    fn a_refusal_is_held_up_to_the_hold_but_never_past_its_retry_after_or_the_budget() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let hold = s(1);
        // A twilight-style client: default budget (30 s), wait far longer.
        assert_eq!(refusal_hold(s(45), Some(s(30)), hold, ms(2)), ms(998));
        // Nothing to hold when retrying would already be allowed, or nearly.
        assert_eq!(
            refusal_hold(ms(300), Some(s(30)), hold, Duration::ZERO),
            ms(300)
        );
        // A client that asked for an answer within 0.2 s, or at once, gets it then.
        assert_eq!(refusal_hold(s(5), Some(ms(200)), hold, ms(50)), ms(150));
        assert_eq!(
            refusal_hold(s(5), Some(Duration::ZERO), hold, Duration::ZERO),
            Duration::ZERO
        );
        // No budget at all: the hold alone.
        assert_eq!(refusal_hold(s(600), None, hold, Duration::ZERO), hold);
        // A request that already waited as long is answered at once; a zero hold is off.
        assert_eq!(refusal_hold(s(45), Some(s(30)), hold, s(2)), Duration::ZERO);
        assert_eq!(
            refusal_hold(s(45), Some(s(30)), Duration::ZERO, Duration::ZERO),
            Duration::ZERO
        );
    }

    #[test]
    fn max_wait_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(max_wait(&headers), Ok(None));
        headers.insert(headers::MAX_WAIT, HeaderValue::from_static("1.5"));
        assert_eq!(max_wait(&headers), Ok(Some(Duration::from_millis(1500))));
        headers.insert(headers::MAX_WAIT, HeaderValue::from_static("1e300"));
        assert_eq!(max_wait(&headers), Ok(Some(MAX_WAIT_CAP)));
        for bad in ["-1", "NaN", "inf", "soon", ""] {
            headers.insert(headers::MAX_WAIT, HeaderValue::from_static(bad));
            assert_eq!(
                max_wait(&headers).unwrap_err().kind,
                "bad_max_wait",
                "{bad}"
            );
        }
    }
}
