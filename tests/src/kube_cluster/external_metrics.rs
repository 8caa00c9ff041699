//! A throwaway server of the Kubernetes external metrics API (`external.metrics.k8s.io/v1beta1`)
//! for the test bed's own proof: an `APIService` registers it with the aggregation layer, the API
//! server proxies to it, and the real HPA controller reads a metric from it. It serves one value
//! per metric name, which the test changes, over TLS with a CA of its own (the `APIService`'s
//! `caBundle`), and records who asked (the front proxy's `X-Remote-User`).
//!
//! The operator's real adapter is issue 15's; this one proves the route.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The API group and version it serves.
pub const GROUP: &str = "external.metrics.k8s.io";
/// The version.
pub const VERSION: &str = "v1beta1";

/// One request the server answered: who (as the API server's front proxy said) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsRequest {
    /// `X-Remote-User`.
    pub user: String,
    /// The path and query.
    pub path: String,
}

#[derive(Debug, Default)]
struct State {
    values: HashMap<String, i64>,
    requests: Vec<MetricsRequest>,
}

/// The running server; it stops when dropped.
#[derive(Debug)]
pub struct ExternalMetricsServer {
    addr: SocketAddr,
    ca_pem: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl ExternalMetricsServer {
    /// Serves on a free port of `ip` with a certificate valid for `service_names` (the
    /// aggregator checks `<service>.<namespace>.svc`) and `ip`.
    ///
    /// # Errors
    /// When the certificate or the listener cannot be made.
    pub async fn start(ip: std::net::IpAddr, service_names: &[&str]) -> anyhow::Result<Self> {
        crate::install_crypto_provider();
        let mut names: Vec<String> = service_names.iter().map(|s| (*s).to_owned()).collect();
        names.push(ip.to_string());
        let certificate = super::ServingCertificate::new(&names)?;
        let tls = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                CertificateDer::pem_slice_iter(certificate.cert_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()?,
                PrivateKeyDer::from_pem_slice(certificate.key_pem.as_bytes())?,
            )
            .context("the metrics server's TLS configuration")?;
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind((ip, 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let served = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let state = Arc::clone(&served);
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(answer(&state, &request)) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            ca_pem: certificate.ca_pem,
            state,
            task,
        })
    }

    /// Where it listens.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its CA (PEM): an `APIService`'s `caBundle`, base64-encoded.
    #[must_use]
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Serves `value` for the metric `name` from now on.
    pub fn set(&self, name: &str, value: i64) {
        lock(&self.state).values.insert(name.to_owned(), value);
    }

    /// Every request answered so far.
    #[must_use]
    pub fn requests(&self) -> Vec<MetricsRequest> {
        lock(&self.state).requests.clone()
    }
}

impl Drop for ExternalMetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn answer(state: &Mutex<State>, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let user = request
        .headers()
        .get("x-remote-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut state = lock(state);
    state.requests.push(MetricsRequest {
        user,
        path: request
            .uri()
            .path_and_query()
            .map_or(path, |pq| pq.as_str())
            .to_owned(),
    });
    let base = format!("/apis/{GROUP}/{VERSION}");
    let body = if path == "/apis" {
        json!({
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [{
                "name": GROUP,
                "versions": [{"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION}],
                "preferredVersion": {"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION},
            }],
        })
    } else if path == base || path == format!("{base}/") {
        let resources: Vec<Value> = state
            .values
            .keys()
            .map(|name| {
                json!({"name": name, "singularName": "", "namespaced": true,
                       "kind": "ExternalMetricValueList", "verbs": ["get"]})
            })
            .collect();
        json!({"kind": "APIResourceList", "apiVersion": "v1",
               "groupVersion": format!("{GROUP}/{VERSION}"), "resources": resources})
    } else if let Some(metric) = path
        .strip_prefix(&format!("{base}/namespaces/"))
        .and_then(|rest| rest.split_once('/'))
        .map(|(_, metric)| metric)
    {
        let Some(value) = state.values.get(metric) else {
            return respond(
                StatusCode::NOT_FOUND,
                &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "message": format!("no metric {metric}"), "reason": "NotFound", "code": 404}),
            );
        };
        json!({
            "kind": "ExternalMetricValueList",
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "metadata": {},
            "items": [{
                "metricName": metric,
                "metricLabels": {},
                "timestamp": k8s_openapi::jiff::Timestamp::now().round(k8s_openapi::jiff::Unit::Second).map(|t| t.to_string()).unwrap_or_default(),
                "value": value.to_string(),
            }],
        })
    } else {
        return respond(
            StatusCode::NOT_FOUND,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": "not found", "reason": "NotFound", "code": 404}),
        );
    };
    respond(StatusCode::OK, &body)
}

fn respond(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
