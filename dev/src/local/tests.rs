use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use shardyard_operator::manifest::read_bots;
use shardyard_operator::plan::{OperatorDefaults, PlanInput, plan};
use shardyard_protocol::Token;

use super::*;

const MANIFEST: &str = "apiVersion: shardyard.dev/v1alpha1\nkind: DiscordBot\n\
    metadata: {name: mybot}\n\
    spec:\n  tokenSecret: {name: mybot-token}\n  shards: 3\n  shardsPerPod: 2\n\
      \x20 intents: [GUILDS, GUILD_MESSAGES, MESSAGE_CONTENT]\n\
      \x20 nats: {url: 'nats://127.0.0.1:4222'}\n\
      \x20 discord: {apiBase: 'http://127.0.0.1:8450/api/v10'}\n";

fn planned(manifest: &str) -> LocalPlan {
    let bot = read_bots(manifest, "default").unwrap().remove(0);
    let defaults = OperatorDefaults {
        api_base: "https://discord.com/api/v10".into(),
        image: shardyard_operator::plan::DEFAULT_IMAGE.into(),
        queue_depth_url: String::new(),
    };
    local_plan(
        &plan(PlanInput {
            bot: &bot,
            defaults: &defaults,
            discord: None,
            running: &[],
        })
        .unwrap(),
    )
    .unwrap()
}

/// Ports from 40000 up, in order of asking.
fn book() -> PortBook {
    let mut next = 40_000;
    PortBook::with(move || {
        next += 1;
        Ok(next)
    })
}

fn env<'a>(spec: &'a ProcessSpec, name: &str) -> Option<&'a str> {
    spec.env
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.expose())
}

fn services() -> BTreeMap<(String, u16), SocketAddr> {
    BTreeMap::from([
        (
            ("mybot-rest".to_owned(), 8080),
            "127.0.0.1:30001".parse().unwrap(),
        ),
        (
            ("mybot-cache".to_owned(), 8470),
            "127.0.0.1:30002".parse().unwrap(),
        ),
    ])
}

fn with_locals<T>(worker_command: Option<&str>, f: impl FnOnce(&Locals<'_>) -> T) -> T {
    let token = Token::new("secret-token-value");
    let services = services();
    let secrets = BTreeMap::from([(
        ("mybot-public-key".to_owned(), "key".to_owned()),
        "ab".repeat(32),
    )]);
    let environment = |name: &str| (name == "MY_API_KEY").then(|| "from-dev-env".to_owned());
    let locals = Locals {
        namespace: "default",
        binary: Path::new("/bin/shardyard"),
        token: &token,
        token_secret: ("mybot-token", "token"),
        secrets: &secrets,
        worker_command,
        services: &services,
        environment: &environment,
    };
    f(&locals)
}

#[test]
fn the_plan_becomes_workloads_and_the_services_that_have_an_address() {
    let local = planned(MANIFEST);
    let workloads: Vec<_> = local
        .workloads
        .iter()
        .map(|w| (w.name.as_str(), w.component, w.generation, w.replicas))
        .collect();
    assert_eq!(
        workloads,
        [
            ("mybot-gateway-g1", Component::Gateway, Some(1), Some(2)),
            ("mybot-rest", Component::Rest, None, Some(2)),
            ("mybot-cache", Component::Cache, None, Some(1)),
            // Autoscaled (provider hpa by default): the autoscaler's.
            ("mybot-worker", Component::Worker, None, None),
        ]
    );
    let services: Vec<_> = local
        .services
        .iter()
        .map(|s| (s.name.as_str(), s.component, s.ports.clone()))
        .collect();
    // The gateway's headless Service has no address to map.
    assert_eq!(
        services,
        [
            (
                "mybot-rest",
                Component::Rest,
                vec![(8080, "http".to_owned())]
            ),
            (
                "mybot-cache",
                Component::Cache,
                vec![(8470, "http".to_owned())]
            ),
        ]
    );
}

#[test]
fn a_gateway_pod_gets_its_ordinal_the_token_and_a_local_admin_port() {
    let local = planned(MANIFEST);
    let mut ports = book();
    let spec = with_locals(None, |locals| {
        process(&local.workloads[0], 1, locals, &mut ports)
    })
    .unwrap();
    assert_eq!(spec.name, "mybot-gateway-g1-1");
    assert_eq!(spec.program, Path::new("/bin/shardyard"));
    assert_eq!(spec.args[0], "gateway");
    assert!(
        spec.args.windows(2).any(|w| w == ["--total", "3"]),
        "{:?}",
        spec.args
    );
    assert_eq!(env(&spec, "SHARDYARD_ORDINAL"), Some("1"));
    assert_eq!(env(&spec, "SHARDYARD_TOKEN"), Some("secret-token-value"));
    assert_eq!(env(&spec, "SHARDYARD_BOT"), Some("default_mybot"));
    assert_eq!(env(&spec, "SHARDYARD_ADMIN_ADDR"), Some("127.0.0.1:40001"));
    assert_eq!(spec.admin, Some("127.0.0.1:40001".parse().unwrap()));
    // The token never reaches a Debug print.
    let debug = format!("{spec:?}");
    assert!(!debug.contains("secret-token-value"), "{debug}");
    assert!(debug.contains("<redacted>"));
    // The same process asked again (a restart) keeps its port; another gets its own.
    let again = with_locals(None, |locals| {
        process(&local.workloads[0], 1, locals, &mut ports)
    })
    .unwrap();
    assert_eq!(again.admin, spec.admin);
    let other = with_locals(None, |locals| {
        process(&local.workloads[0], 0, locals, &mut ports)
    })
    .unwrap();
    assert_ne!(other.admin, spec.admin);
}

#[test]
fn the_rest_proxy_listens_and_advertises_its_own_local_port() {
    let local = planned(MANIFEST);
    let mut ports = book();
    let spec = with_locals(None, |locals| {
        process(&local.workloads[1], 0, locals, &mut ports)
    })
    .unwrap();
    let http = spec.ports["http"].to_string();
    let at = |flag: &str| {
        spec.args
            .iter()
            .position(|a| a == flag)
            .map(|i| spec.args[i + 1].clone())
    };
    assert_eq!(at("--listen"), Some(http.clone()));
    // `http://$(POD_IP):8080`: the pod's address and port, both local.
    assert_eq!(at("--advertise"), Some(format!("http://{http}")));
    assert_eq!(
        at("--upstream"),
        Some("http://127.0.0.1:8450/api".to_owned())
    );
}

#[test]
fn a_worker_reaches_the_rest_service_at_its_local_address_and_never_gets_the_token() {
    let local = planned(MANIFEST);
    let mut ports = book();
    let spec = with_locals(None, |locals| {
        process(&local.workloads[3], 0, locals, &mut ports)
    })
    .unwrap();
    assert_eq!(spec.args, ["worker"]);
    assert_eq!(
        env(&spec, "SHARDYARD_REST_URL"),
        Some("http://127.0.0.1:30001")
    );
    assert_eq!(env(&spec, "SHARDYARD_SHARDS"), Some("3"));
    assert_eq!(env(&spec, "SHARDYARD_TOKEN"), None);
}

#[test]
fn an_authors_worker_image_runs_as_the_worker_command_with_the_pods_environment() {
    let manifest = format!(
        "{MANIFEST}  workers:\n    template:\n      spec:\n        containers:\n          - name: bot\n            \
         image: registry.example.com/mybot:1.0.0\n            env:\n              - {{name: GREETING, value: 'hi from $(SHARDYARD_BOT)'}}\n              \
         - {{name: POD, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}\n              \
         - {{name: MY_API_KEY, valueFrom: {{secretKeyRef: {{name: keys, key: api}}}}}}\n"
    );
    let local = planned(&manifest);
    let mut ports = book();
    let error = with_locals(None, |locals| {
        process(&local.workloads[3], 0, locals, &mut ports)
    })
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("registry.example.com/mybot:1.0.0")
            && error.to_string().contains("--worker-command"),
        "{error}"
    );
    let spec = with_locals(Some("./target/debug/mybot --verbose"), |locals| {
        process(&local.workloads[3], 2, locals, &mut ports)
    })
    .unwrap();
    assert_eq!(spec.program, Path::new("/bin/sh"));
    assert_eq!(spec.args, ["-c", "exec ./target/debug/mybot --verbose"]);
    assert_eq!(env(&spec, "GREETING"), Some("hi from default_mybot"));
    assert_eq!(env(&spec, "POD"), Some("mybot-worker-2"));
    assert_eq!(
        env(&spec, "SHARDYARD_REST_URL"),
        Some("http://127.0.0.1:30001")
    );
    // A Secret other than the token's comes from dev's own environment, and stays redacted.
    assert_eq!(env(&spec, "MY_API_KEY"), Some("from-dev-env"));
    assert!(!format!("{spec:?}").contains("from-dev-env"));
}

#[test]
fn variables_expand_as_the_kubelet_expands_them() {
    let secret = EnvValue::Secret("s3cret".into());
    let plain = EnvValue::Plain("x".into());
    let vars = HashMap::from([("A", &plain), ("S", &secret)]);
    assert_eq!(
        expand("$(A)-$(B)-$$(A)", &vars),
        ("x-$(B)-$(A)".to_owned(), false)
    );
    assert_eq!(
        expand("nats://$(S)@host", &vars),
        ("nats://s3cret@host".to_owned(), true)
    );
    assert_eq!(
        expand("cost $5 $(", &vars),
        ("cost $5 $(".to_owned(), false)
    );
}

#[test]
fn addresses_are_mapped_only_where_they_are_whole() {
    let rewrites = vec![
        (
            "mybot-rest.default.svc:8080".to_owned(),
            "127.0.0.1:1".to_owned(),
        ),
        ("mybot-rest:8080".to_owned(), "127.0.0.1:1".to_owned()),
        ("0.0.0.0:9090".to_owned(), "127.0.0.1:2".to_owned()),
        ("127.0.0.1:2".to_owned(), "127.0.0.1:3".to_owned()),
    ];
    assert_eq!(
        map_addresses("http://mybot-rest.default.svc:8080/api", &rewrites),
        "http://127.0.0.1:1/api"
    );
    assert_eq!(
        map_addresses("http://mybot-rest:8080", &rewrites),
        "http://127.0.0.1:1"
    );
    // Not another host that ends the same, nor a longer port; a replacement is final.
    assert_eq!(
        map_addresses(
            "http://notmybot-rest:8080 0.0.0.0:90901 0.0.0.0:9090",
            &rewrites
        ),
        "http://notmybot-rest:8080 0.0.0.0:90901 127.0.0.1:2"
    );
}

const INTERACTIONS: &str =
    "  interactions: {publicKeySecret: {name: mybot-public-key, key: key}, replicas: 1}\n";

#[test]
fn the_interactions_endpoint_gets_the_public_key_dev_stands_in_for_and_a_local_listen_port() {
    let local = planned(&format!("{MANIFEST}{INTERACTIONS}"));
    let workload = local
        .workloads
        .iter()
        .find(|w| w.component == Component::Interactions)
        .expect("the endpoint's Deployment");
    assert_eq!(
        (workload.name.as_str(), workload.replicas),
        ("mybot-interactions", Some(1))
    );
    let service = local
        .services
        .iter()
        .find(|s| s.component == Component::Interactions)
        .expect("the endpoint's Service");
    assert_eq!(service.name, "mybot-interactions");
    assert_eq!(service.ports, [(80, "http".to_owned())]);

    let mut ports = book();
    let spec = with_locals(None, |locals| process(workload, 0, locals, &mut ports)).unwrap();
    assert_eq!(
        env(&spec, "SHARDYARD_PUBLIC_KEY"),
        Some("ab".repeat(32).as_str())
    );
    assert!(spec.missing.is_empty(), "{:?}", spec.missing);
    let at = |flag: &str| {
        spec.args
            .iter()
            .position(|a| a == flag)
            .map(|i| spec.args[i + 1].clone())
    };
    assert_eq!(at("--listen"), Some(spec.ports["http"].to_string()));
}

#[test]
fn a_secret_without_a_value_here_is_reported_missing_unless_optional() {
    let manifest = format!(
        "{MANIFEST}{INTERACTIONS}  workers:\n    template:\n      spec:\n        containers:\n          - name: bot\n            \
         env:\n              - {{name: MAYBE, valueFrom: {{secretKeyRef: {{name: keys, key: maybe, optional: true}}}}}}\n              \
         - {{name: SETTING, valueFrom: {{configMapKeyRef: {{name: settings, key: one}}}}}}\n"
    );
    let local = planned(&manifest);
    let token = Token::new("secret-token-value");
    let services = services();
    let no_secrets = BTreeMap::new();
    let environment = |_: &str| None;
    let locals = Locals {
        namespace: "default",
        binary: Path::new("/bin/shardyard"),
        token: &token,
        token_secret: ("mybot-token", "token"),
        secrets: &no_secrets,
        worker_command: None,
        services: &services,
        environment: &environment,
    };
    let mut ports = book();
    let of = |component| {
        local
            .workloads
            .iter()
            .find(|w| w.component == component)
            .unwrap()
    };
    let endpoint = process(of(Component::Interactions), 0, &locals, &mut ports).unwrap();
    assert_eq!(
        endpoint.missing,
        [MissingValue {
            variable: "SHARDYARD_PUBLIC_KEY".to_owned(),
            kind: "Secret",
            name: "mybot-public-key".to_owned(),
            key: "key".to_owned(),
        }]
    );
    assert_eq!(
        endpoint.missing[0].to_string(),
        "SHARDYARD_PUBLIC_KEY (from Secret mybot-public-key, key key)"
    );
    assert_eq!(env(&endpoint, "SHARDYARD_PUBLIC_KEY"), None);
    // The token's Secret is never missing; an optional key is left out, as the kubelet does.
    let worker = process(of(Component::Worker), 0, &locals, &mut ports).unwrap();
    let missing: Vec<_> = worker
        .missing
        .iter()
        .map(|m| (m.variable.as_str(), m.kind))
        .collect();
    assert_eq!(missing, [("SETTING", "ConfigMap")]);
    assert_eq!(env(&worker, "MAYBE"), None);
}
