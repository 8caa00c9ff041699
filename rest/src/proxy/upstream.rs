//! The proxy's HTTP client ([`HttpClient`]: hyper's pooled HTTP/1.1 client over TCP or rustls),
//! for requests upstream (Discord's API, or the simulator in tests) and to the other replicas,
//! and the upstream's base URL ([`UpstreamBase`]). The base's scheme, host and path are parsed
//! once, at start; a request's URI is that base with the client's path and query appended,
//! which were already checked when the client's request was parsed. Nothing is parsed as a URL
//! per request (that, with its IDNA pass and the string round trip into hyper's `Uri`, was the
//! largest single item in the proxy's profile under reqwest).

use std::sync::Arc;
use std::time::Duration;

use axum::http::uri::{Authority, PathAndQuery, Scheme};
use axum::http::{HeaderMap, Method, Request, Response, Uri};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// Why an upstream base URL cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    /// Not `http(s)://host[:port][/path]`.
    #[error(
        "the upstream {0:?} is not an http:// or https:// URL with a host and no query, \
         user or password"
    )]
    Invalid(String),
    /// rustls could not be set up.
    #[error("setting up TLS")]
    Tls(#[source] rustls::Error),
}

/// A connection error, a broken answer or a body that could not be read; its sources name the
/// cause (never the URL, which may hold a webhook token).
pub(crate) type SendError = Box<dyn std::error::Error + Send + Sync>;

/// Sends requests over a pool of keep-alive connections per host. Clones share the pool.
#[derive(Clone)]
pub(crate) struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpClient {
    /// A client whose connections time out after `connect_timeout`; idle ones are closed after
    /// 90 s.
    pub(crate) fn new(connect_timeout: Duration) -> Result<Self, BaseError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        // Requests are small and answered at once: Nagle's delay would be pure latency.
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(30)));
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(BaseError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Ok(Self { client })
    }

    /// Sends one request to `uri` (absolute); the answer's head, its body still to be read
    /// ([`read_body`]).
    pub(crate) async fn send(
        &self,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response<Incoming>, SendError> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok(self.client.request(request).await?)
    }
}

/// Where requests go upstream: `http(s)://host[:port][/path]`.
pub(crate) struct UpstreamBase {
    scheme: Scheme,
    authority: Authority,
    /// The base URL's path without its trailing `/` (`/api`), or empty.
    base_path: String,
}

impl UpstreamBase {
    /// `base` (`https://discord.com/api`), checked.
    pub(crate) fn parse(base: &str) -> Result<Self, BaseError> {
        let invalid = || BaseError::Invalid(without_userinfo(base));
        let uri: Uri = base.parse().map_err(|_| invalid())?;
        let scheme = uri
            .scheme()
            .filter(|s| **s == Scheme::HTTP || **s == Scheme::HTTPS)
            .ok_or_else(invalid)?
            .clone();
        let authority = uri
            .authority()
            .filter(|a| !a.as_str().contains('@') && !a.host().is_empty())
            .ok_or_else(invalid)?
            .clone();
        if uri.query().is_some() {
            return Err(invalid());
        }
        Ok(Self {
            scheme,
            authority,
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The upstream URI of a client's request: `versioned` is its path after `/api`
    /// (`/v10/channels/1`) and `query` its query, both taken from an already parsed URI.
    pub(crate) fn uri(&self, versioned: &str, query: Option<&str>) -> Option<Uri> {
        let mut path = String::with_capacity(
            self.base_path.len() + versioned.len() + query.map_or(0, |q| q.len() + 1),
        );
        path.push_str(&self.base_path);
        path.push_str(versioned);
        if let Some(query) = query {
            path.push('?');
            path.push_str(query);
        }
        let mut parts = axum::http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(PathAndQuery::from_maybe_shared(Bytes::from(path)).ok()?);
        Uri::from_parts(parts).ok()
    }
}

/// The whole body of an answer.
pub(crate) async fn read_body(body: Incoming) -> Result<Bytes, SendError> {
    use http_body_util::BodyExt as _;
    Ok(body.collect().await?.to_bytes())
}

/// `base` with a `user:password@` replaced by `…@`, for the error that refuses it.
fn without_userinfo(base: &str) -> String {
    let start = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[start..].find('/').map_or(base.len(), |i| start + i);
    match base[start..host_end].rfind('@') {
        Some(at) => format!("{}…{}", &base[..start], &base[start + at..]),
        None => base.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(base: &str) -> UpstreamBase {
        UpstreamBase::parse(base).unwrap()
    }

    #[test]
    fn a_request_uri_is_the_base_with_the_path_and_query() {
        let discord = base("https://discord.com/api");
        assert_eq!(
            discord.uri("/v10/channels/1/messages", Some("limit=5&before=9")),
            Some(
                "https://discord.com/api/v10/channels/1/messages?limit=5&before=9"
                    .parse()
                    .unwrap()
            )
        );
        let sim = base("http://127.0.0.1:8450/api/");
        assert_eq!(
            sim.uri("/v10/users/@me", None).unwrap().to_string(),
            "http://127.0.0.1:8450/api/v10/users/@me"
        );
        let root = base("http://upstream:80");
        assert_eq!(
            root.uri("/v9/gateway", None).unwrap().to_string(),
            "http://upstream:80/v9/gateway"
        );
    }

    #[test]
    fn bases_that_cannot_be_used_are_refused() {
        for bad in [
            "ftp://discord.com/api",
            "discord.com/api",
            "/api",
            "",
            "https://user:secret@discord.com/api",
            "https://discord.com/api?x=1",
            "https://dïscord.com/api",
            "not a url",
        ] {
            let error = UpstreamBase::parse(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad} was accepted"));
            assert!(matches!(error, BaseError::Invalid(_)), "{bad}: {error}");
            assert!(!error.to_string().contains("secret"), "{error}");
            assert!(!format!("{error:?}").contains("secret"), "{error:?}");
        }
    }
}
