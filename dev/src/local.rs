//! Pods as local processes: the planner's StatefulSets and Deployments become [`ProcessSpec`]s
//! with the command, arguments and environment each pod would get, resolved as the kubelet
//! resolves them (`valueFrom`, `$(VAR)` expansion), and with cluster addresses mapped to local
//! ones:
//!
//! - a container port (`0.0.0.0:8080`, `$(POD_IP):8080`) becomes a port of 127.0.0.1 of its own,
//!   kept across restarts of the process;
//! - a Service's address (`<svc>.<ns>.svc:8080`, with or without `.cluster.local`, or the short
//!   forms) becomes the local Service's address ([`crate::service`]).
//!
//! The image is mapped to the running `shardyard` binary when it is shardyard's own; a worker
//! image of the author's runs as `--worker-command`. Pure, apart from the port book's
//! allocator.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Container, EnvVar, PodTemplateSpec, Service};
use serde::Serialize;
use shardyard_operator::plan::{COMPONENT_LABEL, Child, DEFAULT_IMAGE, GENERATION_LABEL, Plan};
use shardyard_protocol::Token;

/// The image name every component runs by default, without its tag.
const SHARDYARD_IMAGE: &str = match DEFAULT_IMAGE.split_at_checked(27) {
    Some((name, _)) => name,
    None => DEFAULT_IMAGE,
};

/// The kind of pod a process stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    /// A gateway generation's pod (StatefulSet).
    Gateway,
    /// The REST proxy.
    Rest,
    /// The cache.
    Cache,
    /// A worker.
    Worker,
    /// The Interactions Endpoint (`spec.interactions`).
    Interactions,
}

impl Component {
    /// Its `app.kubernetes.io/component` label.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Rest => "rest",
            Self::Cache => "cache",
            Self::Worker => "worker",
            Self::Interactions => "interactions",
        }
    }

    fn from_label(label: &str) -> Option<Self> {
        [
            Self::Gateway,
            Self::Rest,
            Self::Cache,
            Self::Worker,
            Self::Interactions,
        ]
        .into_iter()
        .find(|c| c.label() == label)
    }
}

/// A StatefulSet or Deployment of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Its name: each process is `<name>-<ordinal>`.
    pub name: String,
    /// What its pods are.
    pub component: Component,
    /// A gateway generation's number.
    pub generation: Option<u64>,
    /// Its replicas; `None` when an autoscaler owns them.
    pub replicas: Option<u32>,
    /// Its pods' template.
    pub template: PodTemplateSpec,
}

/// A Service of the plan that something reaches (headless ones are left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Its name.
    pub name: String,
    /// The component its selector picks.
    pub component: Component,
    /// Its ports: (port, the target port's name).
    pub ports: Vec<(u16, String)>,
}

/// The workloads and Services of a plan, in the plan's order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LocalPlan {
    /// StatefulSets, then Deployments.
    pub workloads: Vec<Workload>,
    /// The Services with a cluster address.
    pub services: Vec<ServiceSpec>,
}

/// Why a plan cannot run as local processes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalError {
    /// The worker template runs an image that is not shardyard's, and no `--worker-command`
    /// says what to run in its place.
    #[error(
        "spec.workers.template runs the image {image:?}, which cannot run here: pass \
         --worker-command with the command that runs your worker (for example \
         --worker-command 'cargo run --release -p mybot')"
    )]
    ForeignImage {
        /// The image.
        image: String,
    },
    /// A planned object is not shaped as the planner makes them (a bug).
    #[error("the planned {0} cannot run locally: {1}")]
    Unplannable(String, String),
    /// No free port.
    #[error("no free port on 127.0.0.1: {0}")]
    Ports(String),
}

/// An environment variable's value; a secret one never reaches a `Debug` print.
#[derive(Clone, PartialEq, Eq)]
pub enum EnvValue {
    /// Anything else.
    Plain(String),
    /// From a Secret (the token), or expanded from one.
    Secret(String),
}

impl EnvValue {
    /// The value.
    #[must_use]
    pub fn expose(&self) -> &str {
        match self {
            Self::Plain(v) | Self::Secret(v) => v,
        }
    }
}

impl std::fmt::Debug for EnvValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plain(v) => write!(f, "{v:?}"),
            Self::Secret(_) => f.write_str("<redacted>"),
        }
    }
}

/// A Secret or ConfigMap key a container's variable comes from that dev has no value for.
/// The kubelet does not start such a container (`CreateContainerConfigError`); neither does
/// dev, and it says which variable to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingValue {
    /// The container's variable (and dev's own variable that stands for the key).
    pub variable: String,
    /// `Secret` or `ConfigMap`.
    pub kind: &'static str,
    /// The Secret's or ConfigMap's name.
    pub name: String,
    /// Its key.
    pub key: String,
}

impl std::fmt::Display for MissingValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (from {} {}, key {})",
            self.variable, self.kind, self.name, self.key
        )
    }
}

/// A pod as a local process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// The pod's name: `<workload>-<ordinal>`.
    pub name: String,
    /// What it is.
    pub component: Component,
    /// The StatefulSet or Deployment it belongs to.
    pub workload: String,
    /// A gateway's generation.
    pub generation: Option<u64>,
    /// Its ordinal in the workload.
    pub ordinal: u32,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// The container's environment, resolved and mapped.
    pub env: Vec<(String, EnvValue)>,
    /// Where its `/healthz`, `/readyz` and `/metrics` are (the container port named `admin`).
    pub admin: Option<SocketAddr>,
    /// Its container ports by name, as local addresses.
    pub ports: BTreeMap<String, SocketAddr>,
    /// How long it has after SIGTERM (`terminationGracePeriodSeconds`).
    pub grace: Duration,
    /// Values it cannot start without that dev has none for: it is held back until it has.
    pub missing: Vec<MissingValue>,
}

/// Local ports for container ports, kept for as long as the process name lives: a restarted
/// process listens where it listened before.
pub struct PortBook {
    assigned: HashMap<(String, u16), u16>,
    allocate: Box<dyn FnMut() -> std::io::Result<u16> + Send>,
}

impl std::fmt::Debug for PortBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortBook")
            .field("assigned", &self.assigned.len())
            .finish_non_exhaustive()
    }
}

impl PortBook {
    /// A book of free ports of 127.0.0.1 that no outgoing connection takes while a process is
    /// down between restarts ([`crate::ports::unclaimed_port`]).
    #[must_use]
    pub fn free_ports() -> Self {
        Self::with(crate::ports::unclaimed_port)
    }

    /// A book with its own allocator (tests).
    pub fn with(allocate: impl FnMut() -> std::io::Result<u16> + Send + 'static) -> Self {
        Self {
            assigned: HashMap::new(),
            allocate: Box::new(allocate),
        }
    }

    /// The local port of `process`'s container port `port`.
    ///
    /// # Errors
    /// [`LocalError::Ports`] when none is free.
    pub fn port(&mut self, process: &str, port: u16) -> Result<u16, LocalError> {
        if let Some(local) = self.assigned.get(&(process.to_owned(), port)) {
            return Ok(*local);
        }
        let local = (self.allocate)().map_err(|e| LocalError::Ports(e.to_string()))?;
        self.assigned.insert((process.to_owned(), port), local);
        Ok(local)
    }

    /// Forgets the ports of processes that no longer exist.
    pub fn retain(&mut self, live: impl Fn(&str) -> bool) {
        self.assigned.retain(|(process, _), _| live(process));
    }
}

/// What the local world gives every process.
#[derive(Clone, Copy)]
pub struct Locals<'a> {
    /// The bot's namespace (Service names are qualified with it).
    pub namespace: &'a str,
    /// The `shardyard` binary that stands for shardyard's image.
    pub binary: &'a Path,
    /// The bot token, for the token Secret's key.
    pub token: &'a Token,
    /// The token Secret: (name, key).
    pub token_secret: (&'a str, &'a str),
    /// Other Secret keys dev stands in for, (name, key) → value: with the simulator, the
    /// interactions public key Secret is the simulated application's `verify_key`.
    pub secrets: &'a BTreeMap<(String, String), String>,
    /// `--worker-command`: runs in place of the worker container.
    pub worker_command: Option<&'a str>,
    /// Every Service port's local address: (service, port) → address.
    pub services: &'a BTreeMap<(String, u16), SocketAddr>,
    /// Values for Secret and ConfigMap keys that are not the token: dev's own environment
    /// variable of the same name as the container's, if set.
    pub environment: &'a dyn Fn(&str) -> Option<String>,
}

impl std::fmt::Debug for Locals<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locals")
            .field("namespace", &self.namespace)
            .field("binary", &self.binary)
            .field("worker_command", &self.worker_command)
            .finish_non_exhaustive()
    }
}

/// The workloads and Services of `plan`.
///
/// # Errors
/// [`LocalError::Unplannable`] for an object without the planner's labels.
pub fn local_plan(plan: &Plan) -> Result<LocalPlan, LocalError> {
    let mut local = LocalPlan::default();
    for child in &plan.objects {
        match child {
            Child::StatefulSet(set) => local.workloads.push(stateful_set(set)?),
            Child::Deployment(deployment) => local.workloads.push(deployment_workload(deployment)?),
            Child::Service(service) => {
                if let Some(service) = service_spec(service)? {
                    local.services.push(service);
                }
            }
            _ => {}
        }
    }
    Ok(local)
}

fn labels_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    what: &str,
) -> Result<(Component, Option<u64>), LocalError> {
    let labels = meta.labels.clone().unwrap_or_default();
    let component = labels
        .get(COMPONENT_LABEL)
        .and_then(|c| Component::from_label(c))
        .ok_or_else(|| LocalError::Unplannable(what.to_owned(), "no component label".into()))?;
    let generation = labels.get(GENERATION_LABEL).and_then(|g| g.parse().ok());
    Ok((component, generation))
}

fn stateful_set(set: &StatefulSet) -> Result<Workload, LocalError> {
    let name = set.metadata.name.clone().unwrap_or_default();
    let what = format!("StatefulSet/{name}");
    let (component, generation) = labels_of(&set.metadata, &what)?;
    let spec = &set.spec;
    Ok(Workload {
        name,
        component,
        generation,
        replicas: Some(spec.replicas.map_or(1, |r| u32::try_from(r).unwrap_or(0))),
        template: spec.template.clone(),
    })
}

fn deployment_workload(deployment: &Deployment) -> Result<Workload, LocalError> {
    let name = deployment.metadata.name.clone().unwrap_or_default();
    let what = format!("Deployment/{name}");
    let (component, generation) = labels_of(&deployment.metadata, &what)?;
    let spec = &deployment.spec;
    Ok(Workload {
        name,
        component,
        generation,
        replicas: spec.replicas.map(|r| u32::try_from(r).unwrap_or(0)),
        template: spec.template.clone(),
    })
}

fn service_spec(service: &Service) -> Result<Option<ServiceSpec>, LocalError> {
    let name = service.metadata.name.clone().unwrap_or_default();
    let (component, _) = labels_of(&service.metadata, &format!("Service/{name}"))?;
    let Some(spec) = &service.spec else {
        return Ok(None);
    };
    if spec.cluster_ip.as_deref() == Some("None") {
        return Ok(None);
    }
    let ports = spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let target = match &p.target_port {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s)) => {
                    s.clone()
                }
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => {
                    n.to_string()
                }
                None => p.port.to_string(),
            };
            (u16::try_from(p.port).unwrap_or(0), target)
        })
        .collect();
    Ok(Some(ServiceSpec {
        name,
        component,
        ports,
    }))
}

/// Process `ordinal` of `workload`.
///
/// # Errors
/// [`LocalError`] when its image cannot run here or no port is free.
pub fn process(
    workload: &Workload,
    ordinal: u32,
    locals: &Locals<'_>,
    ports: &mut PortBook,
) -> Result<ProcessSpec, LocalError> {
    let name = format!("{}-{ordinal}", workload.name);
    let what = format!("pod {name}");
    let pod = workload
        .template
        .spec
        .as_ref()
        .ok_or_else(|| LocalError::Unplannable(what.clone(), "no pod spec".into()))?;
    let container = pod
        .containers
        .first()
        .ok_or_else(|| LocalError::Unplannable(what.clone(), "no container".into()))?;

    // Container ports → local addresses, and the substitutions that map them.
    let mut port_addrs = BTreeMap::new();
    let mut rewrites: Vec<(String, String)> = Vec::new();
    for port in container.ports.iter().flatten() {
        let container_port = u16::try_from(port.container_port).unwrap_or(0);
        let local = SocketAddr::from((Ipv4Addr::LOCALHOST, ports.port(&name, container_port)?));
        if let Some(port_name) = &port.name {
            port_addrs.insert(port_name.clone(), local);
        }
        for host in ["0.0.0.0", "127.0.0.1", "[::]"] {
            rewrites.push((format!("{host}:{container_port}"), local.to_string()));
        }
    }
    for ((service, port), local) in locals.services {
        let ns = locals.namespace;
        for host in [
            format!("{service}.{ns}.svc.cluster.local"),
            format!("{service}.{ns}.svc"),
            format!("{service}.{ns}"),
            service.clone(),
        ] {
            rewrites.push((format!("{host}:{port}"), local.to_string()));
        }
    }

    let (env, missing) = environment(container, &name, ordinal, locals, &rewrites);
    let lookup: HashMap<&str, &EnvValue> = env.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let expand_all = |items: &[String]| -> Vec<String> {
        items
            .iter()
            .map(|a| map_addresses(&expand(a, &lookup).0, &rewrites))
            .collect()
    };
    let args = container.args.clone().unwrap_or_default();
    let command = container.command.clone().unwrap_or_default();
    let image = container.image.clone().unwrap_or_default();
    let (program, args) = if workload.component == Component::Worker
        && let Some(worker_command) = locals.worker_command
    {
        // The author's command stands for the whole container (its image's entrypoint and
        // arguments); `exec` so that signals reach it.
        (
            PathBuf::from("/bin/sh"),
            vec!["-c".to_owned(), format!("exec {worker_command}")],
        )
    } else if is_shardyard_image(&image) || workload.component != Component::Worker {
        // Components always run shardyard, whatever image they name (a user's own build of
        // it): the local binary is that build.
        let mut all = expand_all(&command);
        // An entrypoint override naming the binary itself is dropped: it is `program`.
        if all
            .first()
            .is_some_and(|c| Path::new(c).file_name().is_some_and(|f| f == "shardyard"))
        {
            all.remove(0);
        }
        all.extend(expand_all(&args));
        (locals.binary.to_path_buf(), all)
    } else {
        return Err(LocalError::ForeignImage { image });
    };
    let grace = Duration::from_secs(
        pod.termination_grace_period_seconds
            .map_or(30, |s| u64::try_from(s).unwrap_or(30)),
    );
    Ok(ProcessSpec {
        admin: port_addrs.get("admin").copied(),
        name,
        component: workload.component,
        workload: workload.name.clone(),
        generation: workload.generation,
        ordinal,
        program,
        args,
        env,
        ports: port_addrs,
        grace,
        missing,
    })
}

fn is_shardyard_image(image: &str) -> bool {
    image.is_empty() || image.starts_with(SHARDYARD_IMAGE)
}

/// The container's environment as the kubelet resolves it, in order: each `$(VAR)` refers to a
/// variable defined before it; then addresses mapped. Also the Secret and ConfigMap keys it
/// refers to (not `optional`) that have no value here.
fn environment(
    container: &Container,
    pod_name: &str,
    ordinal: u32,
    locals: &Locals<'_>,
    rewrites: &[(String, String)],
) -> (Vec<(String, EnvValue)>, Vec<MissingValue>) {
    let mut resolved: Vec<(String, EnvValue)> = Vec::new();
    let mut missing = Vec::new();
    for EnvVar {
        name,
        value,
        value_from,
    } in container.env.iter().flatten()
    {
        let value = if let Some(value) = value {
            let lookup: HashMap<&str, &EnvValue> =
                resolved.iter().map(|(k, v)| (k.as_str(), v)).collect();
            let (text, secret) = expand(value, &lookup);
            let text = map_addresses(&text, rewrites);
            Some(if secret {
                EnvValue::Secret(text)
            } else {
                EnvValue::Plain(text)
            })
        } else if let Some(from) = value_from {
            let mut unresolved = |kind: &'static str, from: &str, key: &str, optional| {
                if optional != Some(true) {
                    missing.push(MissingValue {
                        variable: name.clone(),
                        kind,
                        name: from.to_owned(),
                        key: key.to_owned(),
                    });
                }
                None
            };
            if let Some(secret) = &from.secret_key_ref {
                let reference = (secret.name.clone(), secret.key.clone());
                if (secret.name.as_str(), secret.key.as_str()) == locals.token_secret {
                    Some(EnvValue::Secret(locals.token.expose().to_owned()))
                } else if let Some(value) = locals.secrets.get(&reference) {
                    Some(EnvValue::Secret(value.clone()))
                } else if let Some(value) = (locals.environment)(name) {
                    Some(EnvValue::Secret(value))
                } else {
                    unresolved("Secret", &secret.name, &secret.key, secret.optional)
                }
            } else if let Some(map) = &from.config_map_key_ref {
                match (locals.environment)(name) {
                    Some(value) => Some(EnvValue::Plain(value)),
                    None => unresolved("ConfigMap", &map.name, &map.key, map.optional),
                }
            } else if let Some(field) = &from.field_ref {
                field_value(&field.field_path, pod_name, ordinal, locals).map(EnvValue::Plain)
            } else {
                None
            }
        } else {
            Some(EnvValue::Plain(String::new()))
        };
        if let Some(value) = value {
            resolved.retain(|(n, _)| n != name);
            resolved.push((name.clone(), value));
        }
    }
    (resolved, missing)
}

/// A `fieldRef` of the downward API, as it reads for a local process.
fn field_value(path: &str, pod_name: &str, ordinal: u32, locals: &Locals<'_>) -> Option<String> {
    match path {
        "metadata.name" => Some(pod_name.to_owned()),
        "metadata.namespace" => Some(locals.namespace.to_owned()),
        "metadata.labels['apps.kubernetes.io/pod-index']"
        | "metadata.labels['statefulset.kubernetes.io/pod-index']" => Some(ordinal.to_string()),
        "status.podIP" | "status.hostIP" | "status.podIPs" | "status.hostIPs" => {
            Some(Ipv4Addr::LOCALHOST.to_string())
        }
        "spec.nodeName" => Some("localhost".to_owned()),
        _ => None,
    }
}

/// `$(VAR)` → the variable's value when it is defined, else left as written; `$$` → `$`, as the
/// kubelet expands. Also says whether a secret value went into it.
fn expand(text: &str, vars: &HashMap<&str, &EnvValue>) -> (String, bool) {
    let mut out = String::with_capacity(text.len());
    let mut secret = false;
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match vars.get(name) {
                Some(value) => {
                    secret |= matches!(value, EnvValue::Secret(_));
                    out.push_str(value.expose());
                }
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    (out, secret)
}

/// Every `host:port` of `rewrites` in `text` replaced by its local address, in one pass (a
/// replacement is never rewritten again), where the match is the whole address: not the tail of
/// a longer host name, nor the head of a longer port.
fn map_addresses(text: &str, rewrites: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    'scan: while at < text.len() {
        let before = text[..at].chars().next_back();
        let host_starts =
            !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if host_starts {
            for (from, to) in rewrites {
                if text[at..].starts_with(from.as_str())
                    && !text[at + from.len()..]
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_digit())
                {
                    out.push_str(to);
                    at += from.len();
                    continue 'scan;
                }
            }
        }
        let c = text[at..].chars().next().unwrap_or_default();
        out.push(c);
        at += c.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests;
