//! Who may ask the metrics API: the API server's aggregation layer, and through it only users
//! RBAC lets read the metric. As every aggregated API server does it:
//!
//! - **Authentication** is the front proxy's client certificate. The API server publishes the
//!   CA that signs it, the names it may carry, and the headers that name the user it speaks for
//!   in the ConfigMap `kube-system/extension-apiserver-authentication` (readable through the
//!   `extension-apiserver-authentication-reader` Role). TLS refuses any other client; a
//!   certificate with another common name gets 401.
//! - **Authorization** is delegated: a SubjectAccessReview per user, groups, namespace and
//!   metric (the `system:auth-delegator` ClusterRole allows creating them), remembered for
//!   [`DECISION_TTL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use super::responses::{GROUP, VERSION};

/// The ConfigMap the API server publishes its front-proxy settings in.
pub const AUTHENTICATION_CONFIG_MAP: (&str, &str) =
    ("kube-system", "extension-apiserver-authentication");

/// How long an authorization decision is reused.
pub const DECISION_TTL: Duration = Duration::from_secs(10);

/// The front proxy's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontProxy {
    /// The CA of its client certificate (PEM).
    pub client_ca: String,
    /// The common names its certificate may carry; empty: any the CA signed.
    pub allowed_names: Vec<String>,
    /// Headers naming the user (the first present wins).
    pub username_headers: Vec<String>,
    /// Headers naming the user's groups (every value of each).
    pub group_headers: Vec<String>,
}

impl FrontProxy {
    /// Reads the API server's ConfigMap.
    ///
    /// # Errors
    /// When it cannot be read or has no front-proxy CA (the API server runs without
    /// `--requestheader-client-ca-file`: no aggregation layer to serve).
    pub async fn load(client: &kube::Client) -> Result<Self, String> {
        let (namespace, name) = AUTHENTICATION_CONFIG_MAP;
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let map = maps
            .get(name)
            .await
            .map_err(|e| format!("reading ConfigMap {namespace}/{name}: {e}"))?;
        Self::from_config_map(&map).map_err(|e| format!("ConfigMap {namespace}/{name}: {e}"))
    }

    /// From the ConfigMap's data.
    ///
    /// # Errors
    /// When the CA is missing or a list is not a JSON list of strings.
    pub fn from_config_map(map: &ConfigMap) -> Result<Self, String> {
        let data = map.data.clone().unwrap_or_default();
        let list = |key: &str, default: &[&str]| -> Result<Vec<String>, String> {
            data.get(key).map_or_else(
                || Ok(default.iter().map(|s| (*s).to_owned()).collect()),
                |text| {
                    serde_json::from_str(text)
                        .map_err(|e| format!("{key} is not a JSON list of strings: {e}"))
                },
            )
        };
        let client_ca = data
            .get("requestheader-client-ca-file")
            .cloned()
            .ok_or("no requestheader-client-ca-file: the API server has no aggregation layer")?;
        Ok(Self {
            client_ca,
            allowed_names: list("requestheader-allowed-names", &[])?,
            username_headers: list("requestheader-username-headers", &["X-Remote-User"])?,
            group_headers: list("requestheader-group-headers", &["X-Remote-Group"])?,
        })
    }

    /// The TLS settings: `cert` and `key` (PEM) as the server's, and only clients whose
    /// certificate the front-proxy CA signed.
    ///
    /// # Errors
    /// When a PEM cannot be read.
    pub fn server_tls(&self, cert: &[u8], key: &[u8]) -> Result<rustls::ServerConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(self.client_ca.as_bytes()) {
            let ca = ca.map_err(|e| format!("the front-proxy CA: {e}"))?;
            roots
                .add(ca)
                .map_err(|e| format!("the front-proxy CA: {e}"))?;
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .build()
                .map_err(|e| format!("the client verifier: {e}"))?;
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the serving certificate: {e}"))?;
        let key =
            PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("the serving key: {e}"))?;
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| format!("the serving certificate and key: {e}"))
    }

    /// Whether the verified client certificate `der` carries an allowed common name.
    ///
    /// # Errors
    /// Why not.
    pub fn check_name(&self, der: &[u8]) -> Result<(), String> {
        if self.allowed_names.is_empty() {
            return Ok(());
        }
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("unreadable client certificate: {e}"))?;
        let names: Vec<&str> = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .collect();
        if names
            .iter()
            .any(|n| self.allowed_names.iter().any(|a| a == n))
        {
            Ok(())
        } else {
            Err(format!(
                "client certificate {names:?} is not one of the front proxy's names {:?}",
                self.allowed_names
            ))
        }
    }

    /// The user and groups the front proxy speaks for: the first username header present, and
    /// every value of the group headers.
    #[must_use]
    pub fn identity(&self, headers: &hyper::HeaderMap) -> Option<Identity> {
        let user = self
            .username_headers
            .iter()
            .find_map(|h| headers.get(h.as_str()))
            .and_then(|v| v.to_str().ok())
            .filter(|u| !u.is_empty())?
            .to_owned();
        let mut groups: Vec<String> = self
            .group_headers
            .iter()
            .flat_map(|h| headers.get_all(h.as_str()))
            .filter_map(|v| v.to_str().ok())
            .map(ToOwned::to_owned)
            .collect();
        groups.sort();
        Some(Identity { user, groups })
    }
}

/// Whom a request is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The user.
    pub user: String,
    /// Their groups, sorted.
    pub groups: Vec<String>,
}

type DecisionKey = (Identity, String, String);

/// Delegated authorization with a short memory.
#[derive(Clone)]
pub struct Authorizer {
    client: kube::Client,
    decisions: Arc<Mutex<HashMap<DecisionKey, (Instant, bool)>>>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer").finish_non_exhaustive()
    }
}

impl Authorizer {
    /// Asking `client`'s API server.
    #[must_use]
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            decisions: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Whether `who` may list `metric` in `namespace` (the verb the API server's request info
    /// gives a collection path).
    ///
    /// # Errors
    /// When the SubjectAccessReview cannot be made.
    pub async fn allows(
        &self,
        who: &Identity,
        namespace: &str,
        metric: &str,
    ) -> Result<bool, kube::Error> {
        let key = (who.clone(), namespace.to_owned(), metric.to_owned());
        if let Some((at, allowed)) = self.lock().get(&key).copied()
            && at.elapsed() < DECISION_TTL
        {
            return Ok(allowed);
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(who.user.clone()),
                groups: Some(who.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(GROUP.to_owned()),
                    version: Some(VERSION.to_owned()),
                    resource: Some(metric.to_owned()),
                    namespace: Some(namespace.to_owned()),
                    verb: Some("list".to_owned()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await?;
        let allowed = answer.status.is_some_and(|s| s.allowed);
        let mut decisions = self.lock();
        if decisions.len() > 10_000 {
            decisions.retain(|_, (at, _)| at.elapsed() < DECISION_TTL);
        }
        decisions.insert(key, (Instant::now(), allowed));
        Ok(allowed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DecisionKey, (Instant, bool)>> {
        self.decisions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn the_api_servers_config_map_is_read_with_kubernetes_defaults() {
        let map = ConfigMap {
            data: Some(BTreeMap::from([
                ("requestheader-client-ca-file".to_owned(), "PEM".to_owned()),
                (
                    "requestheader-allowed-names".to_owned(),
                    r#"["front-proxy-client"]"#.to_owned(),
                ),
            ])),
            ..ConfigMap::default()
        };
        let proxy = FrontProxy::from_config_map(&map).unwrap();
        assert_eq!(proxy.allowed_names, ["front-proxy-client"]);
        assert_eq!(proxy.username_headers, ["X-Remote-User"]);
        assert_eq!(proxy.group_headers, ["X-Remote-Group"]);

        let mut headers = hyper::HeaderMap::new();
        headers.insert(
            "x-remote-user",
            "system:serviceaccount:kube-system:hpa".parse().unwrap(),
        );
        headers.append("x-remote-group", "system:serviceaccounts".parse().unwrap());
        headers.append("x-remote-group", "system:authenticated".parse().unwrap());
        let who = proxy.identity(&headers).unwrap();
        assert_eq!(who.user, "system:serviceaccount:kube-system:hpa");
        assert_eq!(
            who.groups,
            ["system:authenticated", "system:serviceaccounts"]
        );
        assert_eq!(proxy.identity(&hyper::HeaderMap::new()), None);

        assert!(FrontProxy::from_config_map(&ConfigMap::default()).is_err());
    }

    #[test]
    fn only_an_allowed_common_name_passes() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "front-proxy-client");
        let cert = params.self_signed(&key).unwrap();
        let mut proxy = FrontProxy {
            client_ca: String::new(),
            allowed_names: vec!["front-proxy-client".to_owned()],
            username_headers: vec![],
            group_headers: vec![],
        };
        assert_eq!(proxy.check_name(cert.der()), Ok(()));
        proxy.allowed_names = vec!["someone-else".to_owned()];
        assert!(proxy.check_name(cert.der()).is_err());
        proxy.allowed_names.clear();
        assert_eq!(proxy.check_name(cert.der()), Ok(()));
    }
}
