//! NATS server addresses as the gateway is given them (`--nats`), with their credentials kept
//! out of every log and `Debug` print.

use std::fmt;

/// One NATS server, from `nats://` or `tls://[user:pass@|token@]host[:port]`.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerAddr {
    /// Host name or IP.
    pub host: String,
    /// Port (4222 when not given).
    pub port: u16,
    /// `tls://`: the connection must be TLS (with `nats://` it is TLS when the server
    /// requires it).
    pub tls: bool,
    auth: Auth,
}

#[derive(Clone, PartialEq, Eq)]
enum Auth {
    None,
    UserPassword { user: String, password: String },
    Token(String),
}

/// A `--nats` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Nothing was given.
    #[error("no NATS server given")]
    Empty,
    /// Not a URL.
    #[error("{0:?} is not a NATS URL")]
    Invalid(String),
    /// A scheme other than `nats://` and `tls://` (websockets).
    #[error(
        "{scheme}:// is not supported for publishing (the gateway's publishing connection speaks nats:// and tls://)"
    )]
    Scheme {
        /// The scheme.
        scheme: String,
    },
}

impl fmt::Display for ServerAddr {
    /// `host:port`, never the credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Debug for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match self.auth {
            Auth::None => "none",
            Auth::UserPassword { .. } => "user and password",
            Auth::Token(_) => "token",
        };
        f.debug_struct("ServerAddr")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("auth", &auth)
            .finish()
    }
}

impl ServerAddr {
    /// The CONNECT options for this server: no echo, no verbose `+OK`s, headers and
    /// no-responders (a publish to a subject no stream listens on is answered 503 at once);
    /// `tls` says whether the connection is TLS.
    #[must_use]
    pub fn connect_json(&self, name: &str, tls: bool) -> Vec<u8> {
        let mut options = serde_json::json!({
            "verbose": false,
            "pedantic": false,
            "tls_required": tls,
            "name": name,
            "lang": "rust-shardyard",
            "version": env!("CARGO_PKG_VERSION"),
            "protocol": 1,
            "headers": true,
            "no_responders": true,
            "echo": false,
        });
        match &self.auth {
            Auth::None => {}
            Auth::UserPassword { user, password } => {
                options["user"] = user.as_str().into();
                options["pass"] = password.as_str().into();
            }
            Auth::Token(token) => options["auth_token"] = token.as_str().into(),
        }
        options.to_string().into_bytes()
    }
}

/// Parses `--nats`: one URL or several separated by commas, each `nats://` (the default when no
/// scheme is given, as async-nats does).
///
/// # Errors
/// [`AddressError`] for an empty list, a URL that does not parse, or another scheme.
pub fn parse_list(urls: &str) -> Result<Vec<ServerAddr>, AddressError> {
    let addrs = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(parse_one)
        .collect::<Result<Vec<_>, _>>()?;
    if addrs.is_empty() {
        return Err(AddressError::Empty);
    }
    Ok(addrs)
}

fn parse_one(raw: &str) -> Result<ServerAddr, AddressError> {
    let with_scheme = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("nats://{raw}")
    };
    // Shown without what may be a password.
    let shown = || match with_scheme.rsplit_once('@') {
        Some((_, host)) => format!("nats://…@{host}"),
        None => with_scheme.clone(),
    };
    let url = url::Url::parse(&with_scheme).map_err(|_| AddressError::Invalid(shown()))?;
    let tls = match url.scheme() {
        "nats" => false,
        "tls" => true,
        other => {
            return Err(AddressError::Scheme {
                scheme: other.to_owned(),
            });
        }
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| AddressError::Invalid(shown()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let decode = |s: &str| percent_decode(s).ok_or_else(|| AddressError::Invalid(shown()));
    let auth = match (url.username(), url.password()) {
        ("", None) => Auth::None,
        (user, Some(password)) => Auth::UserPassword {
            user: decode(user)?,
            password: decode(password)?,
        },
        (token, None) => Auth::Token(decode(token)?),
    };
    Ok(ServerAddr {
        host,
        port: url.port().unwrap_or(4222),
        tls,
        auth,
    })
}

/// `%XX` escapes of a URL's user part back into text.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::{AddressError, parse_list};

    #[test]
    fn urls_with_and_without_credentials() {
        let addrs =
            parse_list("nats://127.0.0.1:4333, localhost,nats://al%40ice:p%3Ass@h:1,tok@h2")
                .expect("valid");
        assert_eq!(addrs.len(), 4);
        assert_eq!(addrs[0].to_string(), "127.0.0.1:4333");
        assert_eq!(addrs[1].to_string(), "localhost:4222");
        let json: serde_json::Value =
            serde_json::from_slice(&addrs[2].connect_json("n", false)).expect("json");
        assert_eq!(json["user"], "al@ice");
        assert_eq!(json["pass"], "p:ss");
        assert_eq!(json["headers"], true);
        assert_eq!(json["no_responders"], true);
        let json: serde_json::Value =
            serde_json::from_slice(&addrs[3].connect_json("n", true)).expect("json");
        assert_eq!(json["auth_token"], "tok");
        assert!(json.get("user").is_none());
        assert_eq!(json["tls_required"], true);
        assert!(addrs.iter().all(|a| !a.tls));
        let tls = &parse_list("tls://nats.svc:4443").expect("valid")[0];
        assert!(tls.tls);
        assert_eq!(tls.to_string(), "nats.svc:4443");
    }

    #[test]
    fn credentials_never_show() {
        let addr = &parse_list("nats://admin:s3cret@nats:4222").expect("valid")[0];
        assert_eq!(addr.to_string(), "nats:4222");
        let debug = format!("{addr:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("admin"),
            "{debug}"
        );
        let token = &parse_list("nats://t0ken@nats").expect("valid")[0];
        assert!(!format!("{token:?}{token}").contains("t0ken"));
        let err = parse_list("nats://user:s3cret@[bad").expect_err("invalid");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn unusable_lists_are_refused() {
        assert_eq!(parse_list(" , "), Err(AddressError::Empty));
        assert!(matches!(
            parse_list("ws://nats:4222"),
            Err(AddressError::Scheme { scheme }) if scheme == "ws"
        ));
        assert!(matches!(
            parse_list("nats://"),
            Err(AddressError::Invalid(_))
        ));
    }
}
