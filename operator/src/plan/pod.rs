//! What every pod of a bot shares: the image, the environment that connects it to NATS (with the
//! credentials and CA from Secrets, never written into the pod spec), the token from its
//! Secret, a restricted security context, and the admin port's probes.

use serde_json::{Value, json};

use super::PlanError;
use super::names::Context;
use crate::resource::{DiscordBotSpec, SecretRef};

/// The REST proxy's port, in its pod and its Service.
pub(crate) const REST_PORT: u16 = 8080;
/// The cache's read-only HTTP API.
pub(super) const CACHE_PORT: u16 = 8470;
/// Where the Interactions Endpoint takes Discord's requests (its Service answers on 80).
pub(super) const INTERACTIONS_PORT: u16 = 8090;
/// Every service's `/healthz`, `/readyz` and `/metrics`.
pub(super) const ADMIN_PORT: u16 = 9090;
/// Where a NATS CA Secret is mounted.
const NATS_CA_DIR: &str = "/etc/shardyard/nats-ca";

/// What the pods of one bot share.
#[derive(Debug, Clone)]
pub(super) struct Common {
    /// The operator's image, for components that do not name one.
    pub(super) image: String,
    /// Discord's API base with its version.
    pub(super) api_base: String,
    /// `SHARDYARD_BOT`, `SHARDYARD_NATS_URL` (and what it needs), `SSL_CERT_FILE`.
    pub(super) env: Vec<Value>,
    /// The CA volume, when there is one.
    pub(super) volumes: Vec<Value>,
    /// Its mount.
    pub(super) mounts: Vec<Value>,
    /// `SHARDYARD_TOKEN` from the token Secret.
    pub(super) token_env: Value,
}

impl Common {
    pub(super) fn new(
        context: &Context,
        spec: &DiscordBotSpec,
        defaults: &super::OperatorDefaults,
    ) -> Result<Self, PlanError> {
        let api_base = spec
            .discord
            .as_ref()
            .and_then(|d| d.api_base.clone())
            .unwrap_or_else(|| defaults.api_base.clone());
        let mut env = vec![json!({"name": "SHARDYARD_BOT", "value": context.key.as_str()})];
        match &spec.nats.credentials_secret {
            None => env.push(json!({"name": "SHARDYARD_NATS_URL", "value": spec.nats.url})),
            Some(secret) => {
                // Kubernetes expands `$(VAR)` from variables defined before it: the secret
                // reaches the URL inside the container only.
                env.push(secret_env("SHARDYARD_NATS_CREDENTIALS", secret));
                env.push(json!({
                    "name": "SHARDYARD_NATS_URL",
                    "value": with_credentials(&spec.nats.url, "$(SHARDYARD_NATS_CREDENTIALS)"),
                }));
            }
        }
        let (mut volumes, mut mounts) = (Vec::new(), Vec::new());
        if let Some(ca) = &spec.nats.ca_secret {
            volumes.push(json!({
                "name": "nats-ca",
                "secret": {"secretName": ca.name, "items": [{"key": ca.key, "path": "ca.crt"}]},
            }));
            mounts.push(json!({"name": "nats-ca", "mountPath": NATS_CA_DIR, "readOnly": true}));
            env.push(json!({"name": "SSL_CERT_FILE", "value": format!("{NATS_CA_DIR}/ca.crt")}));
        }
        let token_env = secret_env(
            "SHARDYARD_TOKEN",
            &SecretRef {
                name: spec.token_secret.name.clone(),
                key: spec.token_secret.key.clone(),
            },
        );
        if defaults.image.is_empty() {
            return Err(PlanError::Invalid {
                field: "--image",
                reason: "the operator has no default image".to_owned(),
            });
        }
        Ok(Self {
            image: defaults.image.clone(),
            api_base,
            env,
            volumes,
            mounts,
            token_env,
        })
    }

    /// A container running `shardyard <args>` with the shared environment plus `env`, the admin
    /// port with its probes, and `resources`.
    pub(super) fn container(
        &self,
        name: &str,
        image: Option<&str>,
        args: Vec<String>,
        env: Vec<Value>,
        ports: &[(&str, u16)],
        resources: Option<Value>,
    ) -> Value {
        let mut all_env = self.env.clone();
        all_env.extend(env);
        all_env.push(
            json!({"name": "SHARDYARD_ADMIN_ADDR", "value": format!("0.0.0.0:{ADMIN_PORT}")}),
        );
        let mut container_ports = vec![json!({"name": "admin", "containerPort": ADMIN_PORT})];
        container_ports.extend(
            ports
                .iter()
                .map(|(name, port)| json!({"name": name, "containerPort": port})),
        );
        let mut container = json!({
            "name": name,
            "image": image.unwrap_or(&self.image),
            "args": args,
            "env": all_env,
            "ports": container_ports,
            "livenessProbe": probe("/healthz", 10),
            "readinessProbe": probe("/readyz", 5),
            "securityContext": container_security(),
        });
        if !self.mounts.is_empty() {
            container["volumeMounts"] = json!(self.mounts);
        }
        if let Some(resources) = resources {
            container["resources"] = resources;
        }
        container
    }

    /// A pod spec around `container`, non-root, with the CA volume.
    pub(super) fn pod_spec(&self, container: Value, grace_seconds: i64) -> Value {
        let mut spec = json!({
            "containers": [container],
            "securityContext": pod_security(),
            "terminationGracePeriodSeconds": grace_seconds,
            "enableServiceLinks": false,
        });
        if !self.volumes.is_empty() {
            spec["volumes"] = json!(self.volumes);
        }
        spec
    }
}

/// An environment variable from a Secret key.
pub(super) fn secret_env(name: &str, secret: &SecretRef) -> Value {
    json!({
        "name": name,
        "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key}},
    })
}

/// `nats://host` → `nats://<credentials>@host`, for each comma-separated URL.
pub(super) fn with_credentials(urls: &str, credentials: &str) -> String {
    urls.split(',')
        .map(|url| {
            let url = url.trim();
            match url.split_once("://") {
                Some((scheme, rest)) => format!("{scheme}://{credentials}@{rest}"),
                None => format!("{credentials}@{url}"),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Discord's API base without its version, as the REST proxy's `--upstream` wants it.
pub(super) fn unversioned(api_base: &str) -> String {
    split_version(api_base).0.to_owned()
}

/// The version segment of Discord's API base (`v10`), or `v10` when it names none.
pub(super) fn api_version(api_base: &str) -> &str {
    split_version(api_base).1.unwrap_or("v10")
}

fn split_version(api_base: &str) -> (&str, Option<&str>) {
    let trimmed = api_base.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some((base, version))
            if version.len() > 1
                && version.starts_with('v')
                && version[1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            (base, Some(version))
        }
        _ => (trimmed, None),
    }
}

fn probe(path: &str, period: u32) -> Value {
    json!({
        "httpGet": {"path": path, "port": "admin"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": 3,
    })
}

fn pod_security() -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

fn container_security() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "capabilities": {"drop": ["ALL"]},
    })
}
