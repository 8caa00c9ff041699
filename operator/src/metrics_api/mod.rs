//! The operator's external metrics API (`external.metrics.k8s.io/v1beta1`), which the workers'
//! HPAs read their bot's queue depth from through the API server's aggregation layer (an
//! `APIService` registers it; the chart installs one with `metricsAdapter.enabled`). It serves
//! one metric, [`PENDING_METRIC`], per DiscordBot and worker group:
//!
//! | path | answer |
//! |---|---|
//! | `/apis`, `/apis/external.metrics.k8s.io` | the group and its version |
//! | `/apis/external.metrics.k8s.io/v1beta1` | the metric, namespaced |
//! | `…/v1beta1/namespaces/<ns>/shardyard_pending_events?labelSelector=bot=<name>,group=default` | one value per bot the selector matches |
//!
//! An unknown metric or a selector matching no bot is `404 NotFound`; a bad selector `400`; a
//! depth that cannot be read (no consumer yet, NATS away) `503`, so the HPA keeps its replicas.
//! Only the aggregator may ask ([`auth`]). Every replica serves it, leader or not.
//!
//! KEDA's `metrics-api` trigger reads the same number as JSON from the admin address
//! ([`queue_depth_routes`]).

pub mod auth;
pub mod depths;
pub mod responses;
pub mod selector;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt as _;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::controller::metrics::Metrics;
use crate::plan::autoscaling::{
    BOT_METRIC_LABEL, DEFAULT_GROUP, GROUP_METRIC_LABEL, PENDING_METRIC, QUEUE_DEPTH_FIELD,
    QUEUE_DEPTH_PATH,
};
use auth::{Authorizer, FrontProxy, Identity};
use depths::QueueDepths;
use responses::{GROUP, Item, Refusal, VERSION};
use selector::Selector;

/// Where and with what certificate the metrics API serves.
#[derive(Debug, Clone)]
pub struct MetricsApiConfig {
    /// Its address (the `APIService`'s Service points here).
    pub addr: SocketAddr,
    /// The serving certificate chain (PEM), signed by the `APIService`'s `caBundle`.
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
}

/// Why the metrics API could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsApiError {
    /// The certificate, the key or the front proxy's settings.
    #[error("the metrics API's TLS: {0}")]
    Tls(String),
    /// The address could not be bound.
    #[error("binding the metrics API to {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What every request shares.
#[derive(Debug, Clone)]
struct Served {
    proxy: Arc<FrontProxy>,
    authorizer: Authorizer,
    depths: QueueDepths,
    metrics: Arc<Metrics>,
}

/// Starts serving; returns the bound address.
///
/// # Errors
/// [`MetricsApiError`].
pub async fn serve(
    config: &MetricsApiConfig,
    client: kube::Client,
    depths: QueueDepths,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<SocketAddr, MetricsApiError> {
    let proxy = FrontProxy::load(&client)
        .await
        .map_err(MetricsApiError::Tls)?;
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|e| MetricsApiError::Tls(format!("{}: {e}", path.display())))
    };
    let tls = proxy
        .server_tls(&read(&config.cert)?, &read(&config.key)?)
        .map_err(MetricsApiError::Tls)?;
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let listener =
        TcpListener::bind(config.addr)
            .await
            .map_err(|source| MetricsApiError::Bind {
                addr: config.addr,
                source,
            })?;
    let bound = listener
        .local_addr()
        .map_err(|source| MetricsApiError::Bind {
            addr: config.addr,
            source,
        })?;
    let served = Served {
        proxy: Arc::new(proxy),
        authorizer: Authorizer::new(client),
        depths,
        metrics,
    };
    tracing::info!(addr = %bound, "serving the external metrics API");
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, _)) = accepted else { continue };
            let acceptor = acceptor.clone();
            let served = served.clone();
            tokio::spawn(async move {
                let stream = match acceptor.accept(stream).await {
                    Ok(stream) => stream,
                    Err(error) => {
                        tracing::debug!(%error, "a metrics API client failed TLS");
                        return;
                    }
                };
                let peer = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| served.proxy.check_name(c))
                    .unwrap_or_else(|| Err("no client certificate".to_owned()));
                let peer = Arc::new(peer);
                let service = service_fn(move |request| {
                    let served = served.clone();
                    let peer = Arc::clone(&peer);
                    async move { Ok::<_, Infallible>(served.answer(&peer, &request).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

impl Served {
    async fn answer(
        &self,
        peer: &Result<(), String>,
        request: &Request<Incoming>,
    ) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let result = self.route(peer, request).await;
        let (code, body) = match result {
            Ok(body) => (200, body),
            Err(refusal) => (refusal.code, refusal.status()),
        };
        self.metrics.answered(code, started.elapsed());
        json_response(code, &body)
    }

    async fn route(
        &self,
        peer: &Result<(), String>,
        request: &Request<Incoming>,
    ) -> Result<Value, Refusal> {
        peer.as_ref()
            .map_err(|reason| Refusal::unauthorized(reason.clone()))?;
        let who = self
            .proxy
            .identity(request.headers())
            .ok_or_else(|| Refusal::unauthorized("the front proxy named no user".to_owned()))?;
        if request.method() != hyper::Method::GET {
            return Err(Refusal {
                code: 405,
                reason: "MethodNotAllowed",
                message: "the external metrics API is read only".to_owned(),
            });
        }
        let path = request.uri().path().trim_end_matches('/');
        let base = format!("/apis/{GROUP}/{VERSION}");
        if path == "/apis" {
            return Ok(json!({"kind": "APIGroupList", "apiVersion": "v1",
                             "groups": [responses::api_group()]}));
        }
        if path == format!("/apis/{GROUP}") {
            return Ok(responses::api_group());
        }
        if path == base {
            return Ok(responses::resource_list());
        }
        let Some((namespace, metric)) = path
            .strip_prefix(&format!("{base}/namespaces/"))
            .and_then(|rest| rest.split_once('/'))
        else {
            return Err(Refusal::not_found(format!("no such path: {path}")));
        };
        let selector = label_selector(request.uri().query().unwrap_or(""));
        self.values(&who, namespace, metric, &selector).await
    }

    async fn values(
        &self,
        who: &Identity,
        namespace: &str,
        metric: &str,
        selector: &str,
    ) -> Result<Value, Refusal> {
        let allowed = self
            .authorizer
            .allows(who, namespace, metric)
            .await
            .map_err(|e| Refusal::unavailable(format!("authorization could not be asked: {e}")))?;
        if !allowed {
            return Err(Refusal::forbidden(format!(
                "{} may not list {metric} of {GROUP} in namespace {namespace}",
                who.user
            )));
        }
        if metric != PENDING_METRIC {
            return Err(Refusal::not_found(format!(
                "the server could not find the metric {metric}: the shardyard operator serves \
                 {PENDING_METRIC}"
            )));
        }
        let parsed = Selector::parse(selector).map_err(Refusal::bad_request)?;
        let bots: Vec<_> = self
            .depths
            .bots_in(namespace)
            .into_iter()
            .filter(|bot| {
                let name = bot.name_any();
                parsed.matches(&BTreeMap::from([
                    (BOT_METRIC_LABEL, name.as_str()),
                    (GROUP_METRIC_LABEL, DEFAULT_GROUP),
                ]))
            })
            .collect();
        if bots.is_empty() {
            return Err(Refusal::not_found(format!(
                "no DiscordBot in namespace {namespace} matches the labels {selector:?} of \
                 {PENDING_METRIC}"
            )));
        }
        let mut items = Vec::with_capacity(bots.len());
        for bot in bots {
            let name = bot.name_any();
            // One unknown depth fails the answer: a partial sum would scale too few workers.
            let depth = self
                .depths
                .of(&bot, None)
                .await
                .map_err(|e| Refusal::unavailable(format!("{namespace}/{name}: {e}")))?;
            items.push(Item {
                bot: name,
                group: DEFAULT_GROUP.to_owned(),
                pending: depth.pending(),
            });
        }
        Ok(responses::values(&items, Timestamp::now()))
    }
}

/// `GET <QUEUE_DEPTH_PATH>/<namespace>/<name>` on the admin address, for KEDA's `metrics-api`
/// trigger: `{"pending": N, "numPending": …, "numAckPending": …}`, or a `404`/`503` with
/// `{"error": …}`, which KEDA treats as a failed read (it keeps the replicas).
pub fn queue_depth_routes(depths: QueueDepths, metrics: Arc<Metrics>) -> axum::Router {
    use axum::extract::{Path, State};
    use axum::routing::get;
    async fn depth(
        State((depths, metrics)): State<(QueueDepths, Arc<Metrics>)>,
        Path((namespace, name)): Path<(String, String)>,
    ) -> (StatusCode, axum::Json<Value>) {
        let started = Instant::now();
        let (code, body) = match depths.bot(&namespace, &name) {
            None => (
                StatusCode::NOT_FOUND,
                json!({"error": format!("no DiscordBot {namespace}/{name}")}),
            ),
            Some(bot) => match depths.of(&bot, None).await {
                Ok(depth) => {
                    let mut body = json!(depth);
                    body[QUEUE_DEPTH_FIELD] = json!(depth.pending());
                    (StatusCode::OK, body)
                }
                Err(error) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": format!("{namespace}/{name}: {error}")}),
                ),
            },
        };
        metrics.answered(code.as_u16(), started.elapsed());
        (code, axum::Json(body))
    }
    axum::Router::new()
        .route(
            &format!("{QUEUE_DEPTH_PATH}/{{namespace}}/{{name}}"),
            get(depth),
        )
        .with_state((depths, metrics))
}

fn json_response(code: u16, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() =
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// The `labelSelector` of a query, decoded (its `=`, `,`, `!`, spaces and parentheses arrive
/// encoded).
fn label_selector(query: &str) -> String {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "labelSelector")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::label_selector;

    #[test]
    fn the_selector_is_found_and_decoded_in_the_query() {
        assert_eq!(
            label_selector("labelSelector=bot%3Dmybot%2Cgroup%3Ddefault"),
            "bot=mybot,group=default"
        );
        assert_eq!(
            label_selector("limit=5&labelSelector=bot+in+%28a%2Cb%29"),
            "bot in (a,b)"
        );
        assert_eq!(label_selector("limit=5"), "");
    }
}
