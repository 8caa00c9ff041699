//! Which headers cross the proxy: hop-by-hop headers stop at each hop (RFC 9110 §7.6.1), and a
//! few are the proxy's own business. Pure functions over header maps.

use axum::http::{HeaderMap, HeaderName, header};

pub use shardyard_protocol::names::proxy_headers::{ERROR, FORWARDED, MAX_WAIT, REFUSED, STATUS};

/// The proxy's own request headers (`X-Shardyard-…`), never forwarded.
pub(crate) const OWN_PREFIX: &str = shardyard_protocol::names::proxy_headers::PREFIX;

/// Hop-by-hop headers every proxy removes.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers: the fixed list, `Proxy-*`, and every header the `Connection`
/// header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
}

/// The headers of a client's request as they go upstream: hop-by-hop headers, `Host` (the
/// client library sets it from the URL), `Content-Length` (set from the body), `Expect` (the
/// proxy already has the whole body: `100-continue` was this hop's business),
/// `Accept-Encoding` (the proxy reads error bodies, so it asks for them uncompressed),
/// `Authorization` (set by the caller) and the proxy's own `X-Shardyard-…` removed; everything
/// else (`Content-Type` with its multipart boundary, `X-Audit-Log-Reason`, `User-Agent`, …)
/// passes untouched.
pub(crate) fn upstream_request(mut headers: HeaderMap) -> HeaderMap {
    strip_hop_by_hop(&mut headers);
    for name in [
        header::HOST,
        header::CONTENT_LENGTH,
        header::EXPECT,
        header::ACCEPT_ENCODING,
        header::AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    let own: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(OWN_PREFIX))
        .cloned()
        .collect();
    for name in own {
        headers.remove(name);
    }
    headers
}

/// The headers of upstream's answer as they go to the client: hop-by-hop headers and
/// `Content-Length` (set again from the body) removed.
pub(crate) fn client_response(mut headers: HeaderMap) -> HeaderMap {
    strip_hop_by_hop(&mut headers);
    headers.remove(header::CONTENT_LENGTH);
    headers
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_stripped() {
        let headers = upstream_request(map(&[
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("Connection", "x-other-hop"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Authorization", "Basic abc"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Trailer", "Expires"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "websocket"),
            ("X-Secret-Hop", "1"),
            ("X-Other-Hop", "1"),
            ("Host", "proxy.internal:8080"),
            ("Content-Length", "12"),
            ("Expect", "100-continue"),
            ("Accept-Encoding", "gzip"),
            ("Authorization", "Bot abc"),
            ("X-Shardyard-Max-Wait", "3"),
            ("Content-Type", "multipart/form-data; boundary=xyz"),
            ("X-Audit-Log-Reason", "spam%20cleanup"),
            ("User-Agent", "DiscordBot (x, 1)"),
        ]));
        let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-type", "user-agent", "x-audit-log-reason"]);
        assert_eq!(headers["content-type"], "multipart/form-data; boundary=xyz");
        assert_eq!(headers["x-audit-log-reason"], "spam%20cleanup");
    }

    #[test]
    fn responses_keep_rate_limit_headers() {
        let headers = client_response(map(&[
            ("Connection", "close"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Length", "3"),
            ("X-RateLimit-Bucket", "abc"),
            ("X-RateLimit-Remaining", "4"),
            ("Content-Type", "application/json"),
        ]));
        let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "content-type",
                "x-ratelimit-bucket",
                "x-ratelimit-remaining"
            ]
        );
    }
}
