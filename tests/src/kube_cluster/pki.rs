//! The test cluster's certificates and keys, generated at start as a real cluster's installer
//! would: a cluster CA (it signs the API server's serving certificate, every client certificate,
//! and later the certificates the controller-manager signs for kubelets), a front-proxy CA (the
//! aggregation layer's client certificate), and the service-account signing key pair.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The first address of the service CIDR: the `kubernetes` Service's ClusterIP.
pub(crate) const API_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// A CA that signs certificates.
struct Authority {
    cert: Certificate,
    key: KeyPair,
}

impl Authority {
    fn new(name: &str) -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self { cert, key })
    }

    /// A leaf certificate for `common_name` in `groups` (the subject's organizations), valid for
    /// `names` (DNS names and IP addresses) and `usages`.
    fn issue(
        &self,
        common_name: &str,
        groups: &[&str],
        names: &[String],
        usages: &[ExtendedKeyUsagePurpose],
    ) -> anyhow::Result<(Certificate, KeyPair)> {
        let mut params = CertificateParams::new(names.to_vec())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        for group in groups {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *group);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = usages.to_vec();
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok((cert, key))
    }
}

/// A serving certificate and the CA that signed it, as PEM: what an aggregated API server
/// (an `APIService`'s `caBundle` names the CA) or any other TLS server of a test serves with.
#[derive(Debug, Clone)]
pub struct ServingCertificate {
    /// The CA (an `APIService`'s `caBundle`, once base64-encoded).
    pub ca_pem: String,
    /// The certificate.
    pub cert_pem: String,
    /// Its key.
    pub key_pem: String,
}

impl ServingCertificate {
    /// A new CA and a certificate from it for `names` (DNS names and IP addresses).
    ///
    /// # Errors
    /// When rcgen refuses a name.
    pub fn new(names: &[String]) -> anyhow::Result<Self> {
        let ca = Authority::new("shardyard test serving CA")?;
        let (cert, key) = ca.issue(
            names.first().map_or("server", String::as_str),
            &[],
            names,
            &[ExtendedKeyUsagePurpose::ServerAuth],
        )?;
        Ok(Self {
            ca_pem: ca.cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A client identity: a certificate and its key, as PEM.
#[derive(Debug, Clone)]
pub(crate) struct ClientIdentity {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

/// Every file the control plane's components are started with, in `dir`.
#[derive(Debug, Clone)]
pub(crate) struct ClusterPki {
    pub(crate) ca_cert: PathBuf,
    pub(crate) ca_key: PathBuf,
    pub(crate) ca_pem: String,
    pub(crate) serving_cert: PathBuf,
    pub(crate) serving_key: PathBuf,
    pub(crate) front_proxy_ca: PathBuf,
    pub(crate) front_proxy_client_cert: PathBuf,
    pub(crate) front_proxy_client_key: PathBuf,
    pub(crate) service_account_key: PathBuf,
    pub(crate) service_account_pub: PathBuf,
    /// `system:masters`: what tests, kubectl and helm use.
    pub(crate) admin: ClientIdentity,
    /// `system:kube-controller-manager`, bound to its role by the bootstrap RBAC policy.
    pub(crate) controller_manager: ClientIdentity,
    /// `system:kube-scheduler`, likewise.
    pub(crate) scheduler: ClientIdentity,
    /// The node's kubelet, `system:node:<name>` in `system:nodes`: the Node authorizer and the
    /// NodeRestriction admission plugin treat it as a real node.
    pub(crate) node: ClientIdentity,
    /// kube-proxy, `system:kube-proxy` (the bootstrap policy binds it to `system:node-proxier`).
    pub(crate) kube_proxy: ClientIdentity,
    /// The API server's identity toward kubelets (logs, exec, port-forward, stats): kubelets
    /// authorize it with a SubjectAccessReview, which `system:masters` passes.
    pub(crate) kubelet_client_cert: PathBuf,
    /// Its key.
    pub(crate) kubelet_client_key: PathBuf,
}

/// The name the aggregation layer's client certificate carries (`--requestheader-allowed-names`).
pub const FRONT_PROXY_CLIENT: &str = "front-proxy-client";

impl ClusterPki {
    /// Generates everything and writes the files into `dir`; the API server's certificate is
    /// valid for `address` too; the node's identity is `node_name`'s.
    pub(crate) fn generate(dir: &Path, address: Ipv4Addr, node_name: &str) -> anyhow::Result<Self> {
        let write = |name: &str, pem: &str| -> anyhow::Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?;
            Ok(path)
        };
        let ca = Authority::new("shardyard test cluster CA")?;
        let front_proxy = Authority::new("shardyard test front-proxy CA")?;

        let serving_names: Vec<String> = [
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([API_SERVICE_IP.to_string(), address.to_string()])
        .collect();
        let (serving, serving_key) = ca.issue(
            "kube-apiserver",
            &[],
            &serving_names,
            &[ExtendedKeyUsagePurpose::ServerAuth],
        )?;
        let client = |name: &str, groups: &[&str]| -> anyhow::Result<ClientIdentity> {
            let (cert, key) =
                ca.issue(name, groups, &[], &[ExtendedKeyUsagePurpose::ClientAuth])?;
            Ok(ClientIdentity {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            })
        };
        let (proxy_client, proxy_client_key) = front_proxy.issue(
            FRONT_PROXY_CLIENT,
            &[],
            &[],
            &[ExtendedKeyUsagePurpose::ClientAuth],
        )?;
        let service_account = KeyPair::generate()?;
        let (kubelet_client, kubelet_client_key) = ca.issue(
            "kube-apiserver-kubelet-client",
            &["system:masters"],
            &[],
            &[ExtendedKeyUsagePurpose::ClientAuth],
        )?;

        Ok(Self {
            ca_cert: write("ca.crt", &ca.cert.pem())?,
            ca_key: write("ca.key", &ca.key.serialize_pem())?,
            ca_pem: ca.cert.pem(),
            serving_cert: write("apiserver.crt", &serving.pem())?,
            serving_key: write("apiserver.key", &serving_key.serialize_pem())?,
            front_proxy_ca: write("front-proxy-ca.crt", &front_proxy.cert.pem())?,
            front_proxy_client_cert: write("front-proxy-client.crt", &proxy_client.pem())?,
            front_proxy_client_key: write(
                "front-proxy-client.key",
                &proxy_client_key.serialize_pem(),
            )?,
            service_account_key: write("sa.key", &service_account.serialize_pem())?,
            service_account_pub: write("sa.pub", &service_account.public_key_pem())?,
            admin: client("shardyard-test-admin", &["system:masters"])?,
            controller_manager: client("system:kube-controller-manager", &[])?,
            scheduler: client("system:kube-scheduler", &[])?,
            node: client(&format!("system:node:{node_name}"), &["system:nodes"])?,
            kube_proxy: client("system:kube-proxy", &[])?,
            kubelet_client_cert: write("apiserver-kubelet-client.crt", &kubelet_client.pem())?,
            kubelet_client_key: write(
                "apiserver-kubelet-client.key",
                &kubelet_client_key.serialize_pem(),
            )?,
        })
    }
}
