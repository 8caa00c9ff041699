//! The planner from small manifests: totals, replicas, shard ranges, names, labels, owner
//! references, the injected environment, and what never appears (the token).

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Container, EnvVar};
use serde_json::json;
use shardyard_protocol::shard::pod_shard_range;

use super::*;
use crate::resource::DiscordBot;

const MINIMAL: &str = "
apiVersion: shardyard.dev/v1alpha1
kind: DiscordBot
metadata:
  name: mybot
  namespace: bots
  uid: 0b7f1c7e-5c3a-4c59-9d1e-3f1c2b7a9e11
spec:
  tokenSecret: {name: mybot-token}
  shards: 3
  nats: {url: 'nats://nats.nats.svc:4222'}
";

fn bot(yaml: &str) -> DiscordBot {
    serde_saphyr::from_str(yaml).expect("a DiscordBot")
}

/// The minimal manifest with `fields` (indented as spec's fields) before `nats`.
fn with(fields: &str) -> String {
    MINIMAL.replace("\n  nats:", &format!("\n  {fields}\n  nats:"))
}

fn defaults() -> OperatorDefaults {
    OperatorDefaults {
        api_base: DEFAULT_API_BASE.to_owned(),
        image: "ghcr.io/shardyard/shardyard:0.1.0".to_owned(),
        queue_depth_url: DEFAULT_QUEUE_DEPTH_URL.to_owned(),
    }
}

fn plan_of(
    bot: &DiscordBot,
    discord: Option<GatewayBot>,
    running: &[Generation],
) -> Result<Plan, PlanError> {
    plan(PlanInput {
        bot,
        defaults: &defaults(),
        discord,
        running,
    })
}

fn names(plan: &Plan) -> Vec<String> {
    plan.objects.iter().map(Child::describe).collect()
}

fn statefulsets(plan: &Plan) -> Vec<&StatefulSet> {
    plan.objects
        .iter()
        .filter_map(|o| match o {
            Child::StatefulSet(s) => Some(&**s),
            _ => None,
        })
        .collect()
}

fn deployment<'a>(plan: &'a Plan, name: &str) -> &'a Deployment {
    plan.objects
        .iter()
        .find_map(|o| match o {
            Child::Deployment(d) if d.metadata.name.as_deref() == Some(name) => Some(&**d),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Deployment {name}: {:?}", names(plan)))
}

fn containers(template: &k8s_openapi::api::core::v1::PodTemplateSpec) -> &[Container] {
    &template.spec.as_ref().expect("a pod spec").containers
}

fn env<'a>(container: &'a Container, name: &str) -> Option<&'a EnvVar> {
    container.env.iter().flatten().find(|e| e.name == name)
}

fn args(container: &Container) -> Vec<&str> {
    container
        .args
        .iter()
        .flatten()
        .map(String::as_str)
        .collect()
}

fn flag<'a>(container: &'a Container, flag: &str) -> Option<&'a str> {
    let args = args(container);
    args.iter()
        .position(|a| *a == flag)
        .and_then(|i| args.get(i + 1).copied())
}

#[test]
fn a_minimal_bot_gets_every_object_by_its_exact_name() {
    let plan = plan_of(&bot(MINIMAL), None, &[]).unwrap();
    assert_eq!(
        names(&plan),
        [
            "StatefulSet/mybot-gateway-g1",
            "Service/mybot-gateway-g1",
            "PodDisruptionBudget/mybot-gateway-g1",
            "Deployment/mybot-rest",
            "Service/mybot-rest",
            "PodDisruptionBudget/mybot-rest",
            "NetworkPolicy/mybot-rest",
            "Deployment/mybot-cache",
            "Service/mybot-cache",
            "Deployment/mybot-worker",
            "HorizontalPodAutoscaler/mybot-worker",
        ]
    );
    assert_eq!(plan.bot_key.as_str(), "bots_mybot");
    assert_eq!((plan.total_shards, plan.gateway_replicas), (3, 1));
    assert_eq!(
        plan.target,
        Generation {
            number: 1,
            total: 3
        }
    );
}

#[test]
fn totals_follow_discord_or_the_spec_rounded_up_to_max_concurrency() {
    let auto = bot(&MINIMAL.replace("shards: 3", "shards: auto"));
    let answer = |shards, max_concurrency| {
        Some(GatewayBot {
            shards,
            max_concurrency,
        })
    };
    let total = |bot: &DiscordBot, discord| plan_of(bot, discord, &[]).map(|p| p.total_shards);
    assert_eq!(total(&auto, answer(1, 1)), Ok(1));
    assert_eq!(total(&auto, answer(9, 1)), Ok(9));
    assert_eq!(total(&auto, answer(9, 16)), Ok(16));
    assert_eq!(total(&auto, answer(16, 16)), Ok(16));
    assert_eq!(total(&auto, answer(17, 16)), Ok(32));
    assert_eq!(total(&auto, answer(0, 0)), Ok(1), "never zero shards");
    assert_eq!(total(&auto, None), Err(PlanError::NeedsDiscord));

    let fixed = bot(&MINIMAL.replace("shards: 3", "shards: 20"));
    assert_eq!(total(&fixed, None), Ok(20), "a fixed count needs no API");
    assert_eq!(total(&fixed, answer(2, 16)), Ok(32));
    assert_eq!(total(&fixed, answer(2, 4)), Ok(20));
    // The default is auto.
    let unset = bot(&MINIMAL.replace("  shards: 3\n", ""));
    assert_eq!(unset.spec.shards, ShardCount::Auto);
    assert_eq!(total(&unset, answer(5, 1)), Ok(5));
}

#[test]
fn gateway_replicas_and_pod_ranges_cover_every_shard_exactly_once() {
    for total in [1u32, 2, 15, 16, 17, 100, 160, 1000, 2501] {
        for per_pod in [1u32, 3, 16, 100, 2500] {
            let manifest = MINIMAL.replace(
                "shards: 3",
                &format!("shards: {total}\n  shardsPerPod: {per_pod}"),
            );
            let plan = plan_of(&bot(&manifest), None, &[]).unwrap();
            assert_eq!(plan.gateway_replicas, total.div_ceil(per_pod));
            let set = statefulsets(&plan)[0];
            let replicas = set.spec.replicas.unwrap();
            assert_eq!(u32::try_from(replicas).unwrap(), plan.gateway_replicas);
            let mut covered = vec![0u8; total as usize];
            for ordinal in 0..plan.gateway_replicas {
                let range = pod_shard_range(ordinal, per_pod, total);
                assert!(
                    !range.is_empty(),
                    "pod {ordinal} of {total}/{per_pod} holds nothing"
                );
                for shard in range {
                    covered[shard as usize] += 1;
                }
            }
            assert!(
                covered.iter().all(|&n| n == 1),
                "{total}/{per_pod}: {covered:?}"
            );
        }
    }
}

#[test]
fn the_gateway_pod_gets_its_ordinal_generation_and_discord_settings() {
    let manifest = with(
        "intents: [GUILDS, GUILD_MESSAGES, MESSAGE_CONTENT]\n  gateway:\n    compression: none\n    \
         presence: {status: idle}\n    largeThreshold: 100\n  discord: {apiBase: 'http://sim.test:8450/api/v10'}",
    );
    let plan = plan_of(&bot(&manifest), None, &[]).unwrap();
    let set = statefulsets(&plan)[0];
    let spec = &set.spec;
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(spec.service_name.as_deref(), Some("mybot-gateway-g1"));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.termination_grace_period_seconds, Some(30));
    let gateway = &pod.containers[0];
    assert_eq!(args(gateway)[0], "gateway");
    // The gateway asks Discord through the bot's REST proxy, in the version the bot names, and
    // Discord itself when the proxy cannot be reached.
    assert_eq!(
        flag(gateway, "--api-base"),
        Some("http://mybot-rest.bots.svc:8080/api/v10")
    );
    assert_eq!(
        flag(gateway, "--api-fallback"),
        Some("http://sim.test:8450/api/v10")
    );
    assert_eq!(flag(gateway, "--total"), Some("3"));
    assert_eq!(flag(gateway, "--shards-per-pod"), Some("16"));
    assert_eq!(flag(gateway, "--generation"), Some("1"));
    assert_eq!(
        flag(gateway, "--intents"),
        Some("GUILDS,GUILD_MESSAGES,MESSAGE_CONTENT")
    );
    assert_eq!(flag(gateway, "--compression"), Some("none"));
    assert_eq!(flag(gateway, "--presence"), Some(r#"{"status":"idle"}"#));
    assert_eq!(flag(gateway, "--large-threshold"), Some("100"));
    assert_eq!(flag(gateway, "--stream-max-age"), Some("24h"));
    assert_eq!(flag(gateway, "--stream-max-bytes"), Some("0"));
    let ordinal = env(gateway, "SHARDYARD_ORDINAL").unwrap();
    let field = ordinal
        .value_from
        .as_ref()
        .unwrap()
        .field_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        field.field_path,
        "metadata.labels['apps.kubernetes.io/pod-index']"
    );
    let token = env(gateway, "SHARDYARD_TOKEN").unwrap();
    assert_eq!(token.value, None, "never the token itself");
    let secret = token
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (secret.name.as_str(), secret.key.as_str()),
        ("mybot-token", "token")
    );
    assert_eq!(
        env(gateway, "SHARDYARD_BOT").unwrap().value.as_deref(),
        Some("bots_mybot")
    );
    let probe = gateway
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(probe.path.as_deref(), Some("/readyz"));
    // The REST proxy gets the unversioned API base.
    let rest = &containers(&deployment(&plan, "mybot-rest").spec.template)[0];
    assert_eq!(flag(rest, "--upstream"), Some("http://sim.test:8450/api"));
    assert!(env(rest, "SHARDYARD_TOKEN").is_some());
}

#[test]
fn the_operators_api_base_applies_when_the_bot_sets_none() {
    let plan = plan_of(&bot(MINIMAL), None, &[]).unwrap();
    let gateway = &containers(&statefulsets(&plan)[0].spec.template)[0];
    assert_eq!(
        flag(gateway, "--api-base"),
        Some("http://mybot-rest.bots.svc:8080/api/v10")
    );
    let rest = &containers(&deployment(&plan, "mybot-rest").spec.template)[0];
    assert_eq!(flag(rest, "--upstream"), Some("https://discord.com/api"));
}

#[test]
fn workers_get_the_bot_nats_and_proxy_but_never_the_token() {
    let plan = plan_of(&bot(MINIMAL), None, &[]).unwrap();
    let worker = deployment(&plan, "mybot-worker");
    let template = &worker.spec.template;
    let container = &containers(template)[0];
    assert_eq!(args(container), ["worker"]);
    let value = |name| env(container, name).and_then(|e| e.value.as_deref());
    assert_eq!(value("SHARDYARD_BOT"), Some("bots_mybot"));
    assert_eq!(
        value("SHARDYARD_NATS_URL"),
        Some("nats://nats.nats.svc:4222")
    );
    assert_eq!(
        value("SHARDYARD_REST_URL"),
        Some("http://mybot-rest.bots.svc:8080")
    );
    assert_eq!(value("SHARDYARD_SHARDS"), Some("3"));
    assert!(env(container, "SHARDYARD_TOKEN").is_none());
    let cache = &containers(&deployment(&plan, "mybot-cache").spec.template)[0];
    assert!(env(cache, "SHARDYARD_TOKEN").is_none());
    // The HPA's, not the operator's.
    assert_eq!(worker.spec.replicas, None);
}

#[test]
fn a_users_worker_template_keeps_its_own_and_gets_the_bots_environment() {
    let manifest = with(
        "workers:\n    minReplicas: 2\n    template:\n      metadata: {labels: {team: mods}}\n      spec:\n        \
         containers:\n          - name: bot\n            image: example.com/mybot:7\n            env:\n              \
         - {name: LOG, value: debug}\n              - {name: SHARDYARD_REST_URL, value: 'http://elsewhere'}\n          \
         - name: sidecar\n            image: example.com/sidecar:1",
    );
    let plan = plan_of(&bot(&manifest), None, &[]).unwrap();
    let worker = deployment(&plan, "mybot-worker");
    let spec = &worker.spec;
    assert_eq!(spec.replicas, None);
    let labels = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert_eq!(labels.get("team").map(String::as_str), Some("mods"));
    assert_eq!(labels.get(BOT_LABEL).map(String::as_str), Some("mybot"));
    for (k, v) in &spec.selector.match_labels.clone().unwrap() {
        assert_eq!(labels.get(k), Some(v), "the selector matches the pods");
    }
    for container in containers(&spec.template) {
        let value = |name| env(container, name).and_then(|e| e.value.as_deref());
        assert_eq!(
            value("SHARDYARD_REST_URL"),
            Some("http://mybot-rest.bots.svc:8080")
        );
        assert_eq!(value("SHARDYARD_BOT"), Some("bots_mybot"));
        assert!(env(container, "SHARDYARD_TOKEN").is_none());
    }
    let bot_container = &containers(&spec.template)[0];
    assert_eq!(bot_container.image.as_deref(), Some("example.com/mybot:7"));
    assert_eq!(
        env(bot_container, "LOG").and_then(|e| e.value.as_deref()),
        Some("debug")
    );
    let count = bot_container
        .env
        .iter()
        .flatten()
        .filter(|e| e.name == "SHARDYARD_REST_URL")
        .count();
    assert_eq!(count, 1, "the user's copy is replaced, not doubled");

    let broken = with("workers:\n    template: {spec: {containers: []}}");
    let error = plan_of(&bot(&broken), None, &[]).unwrap_err();
    assert!(
        matches!(
            error,
            PlanError::Invalid {
                field: "spec.workers.template",
                ..
            }
        ),
        "{error}"
    );
    let not_a_template = with("workers:\n    template: {spec: {containers: 3}}");
    let error = plan_of(&bot(&not_a_template), None, &[]).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("spec.workers.template: not a pod template"),
        "{error}"
    );
}

#[test]
fn nats_credentials_and_ca_come_from_secrets_into_every_pod() {
    let manifest = MINIMAL.replace(
        "  nats: {url: 'nats://nats.nats.svc:4222'}",
        "  nats:\n    url: 'nats://a:4222,tls://b:4222'\n    credentialsSecret: {name: nats-user, key: creds}\n    \
         caSecret: {name: nats-ca, key: ca.crt}",
    );
    let plan = plan_of(&bot(&manifest), None, &[]).unwrap();
    let rendered = serde_json::to_string(&plan.objects).unwrap();
    for template in plan.objects.iter().filter_map(|o| match o {
        Child::StatefulSet(s) => Some(s.spec.template.clone()),
        Child::Deployment(d) => Some(d.spec.template.clone()),
        _ => None,
    }) {
        let pod = template.spec.as_ref().unwrap();
        assert!(pod.volumes.iter().flatten().any(|v| v.name == "nats-ca"));
        for container in &pod.containers {
            let url = env(container, "SHARDYARD_NATS_URL").and_then(|e| e.value.as_deref());
            assert_eq!(
                url,
                Some(
                    "nats://$(SHARDYARD_NATS_CREDENTIALS)@a:4222,tls://$(SHARDYARD_NATS_CREDENTIALS)@b:4222"
                )
            );
            let names: Vec<&str> = container
                .env
                .iter()
                .flatten()
                .map(|e| e.name.as_str())
                .collect();
            let credentials = names
                .iter()
                .position(|n| *n == "SHARDYARD_NATS_CREDENTIALS")
                .unwrap();
            let url = names
                .iter()
                .position(|n| *n == "SHARDYARD_NATS_URL")
                .unwrap();
            assert!(
                credentials < url,
                "defined before the URL refers to it: {names:?}"
            );
            assert_eq!(
                env(container, "SSL_CERT_FILE").and_then(|e| e.value.as_deref()),
                Some("/etc/shardyard/nats-ca/ca.crt")
            );
        }
    }
    assert!(
        !rendered.contains("\"creds\":"),
        "only references to the Secret"
    );
}

#[test]
fn every_object_is_owned_by_the_bot_and_labelled_for_it() {
    let plan = plan_of(&bot(MINIMAL), None, &[]).unwrap();
    for object in &plan.objects {
        let value = serde_json::to_value(object).unwrap();
        let meta = &value["metadata"];
        assert_eq!(meta["namespace"], "bots", "{}", object.describe());
        assert_eq!(
            meta["ownerReferences"],
            json!([{
                "apiVersion": "shardyard.dev/v1alpha1",
                "kind": "DiscordBot",
                "name": "mybot",
                "uid": "0b7f1c7e-5c3a-4c59-9d1e-3f1c2b7a9e11",
                "controller": true,
                "blockOwnerDeletion": true,
            }]),
            "{}",
            object.describe()
        );
        assert_eq!(meta["labels"][BOT_LABEL], "mybot");
        assert_eq!(meta["labels"][MANAGED_BY_LABEL], MANAGED_BY);
        let pod_labels = &value["spec"]["template"]["metadata"]["labels"];
        if let (Some(selector), false) = (
            value["spec"]["selector"]["matchLabels"].as_object(),
            pod_labels.is_null(),
        ) {
            for (k, v) in selector {
                assert_eq!(&pod_labels[k], v, "{}: selector {k}", object.describe());
            }
        }
    }
}

#[test]
fn a_bot_from_a_file_without_a_uid_owns_nothing_yet() {
    let from_file = bot(&MINIMAL.replace("  uid: 0b7f1c7e-5c3a-4c59-9d1e-3f1c2b7a9e11\n", ""));
    let plan = plan_of(&from_file, None, &[]).unwrap();
    for object in &plan.objects {
        let value = serde_json::to_value(object).unwrap();
        assert!(
            value["metadata"]["ownerReferences"].is_null(),
            "{}",
            object.describe()
        );
    }
}

#[test]
fn a_reshard_runs_the_old_generation_beside_the_new_one() {
    let grown = bot(&MINIMAL.replace("shards: 3", "shards: 32"));
    let old = Generation {
        number: 1,
        total: 16,
    };
    let plan = plan_of(&grown, None, &[old]).unwrap();
    assert_eq!(
        plan.target,
        Generation {
            number: 2,
            total: 32
        }
    );
    let sets: Vec<_> = statefulsets(&plan)
        .iter()
        .map(|s| {
            let spec = &s.spec;
            let container = &spec.template.spec.as_ref().unwrap().containers[0];
            (
                s.metadata.name.clone().unwrap(),
                spec.replicas.unwrap(),
                flag(container, "--total").unwrap().to_owned(),
                flag(container, "--generation").unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        sets,
        [
            (
                "mybot-gateway-g1".to_owned(),
                1,
                "16".to_owned(),
                "1".to_owned()
            ),
            (
                "mybot-gateway-g2".to_owned(),
                2,
                "32".to_owned(),
                "2".to_owned()
            ),
        ]
    );
    // The workers' shard total is the new one; their commands find shards by it.
    let worker = deployment(&plan, "mybot-worker");
    let container = &containers(&worker.spec.template)[0];
    assert_eq!(
        env(container, "SHARDYARD_SHARDS").and_then(|e| e.value.as_deref()),
        Some("32")
    );

    // Both running, the new one found again rather than a third started.
    let new = Generation {
        number: 2,
        total: 32,
    };
    let again = plan_of(&grown, None, &[old, new]).unwrap();
    assert_eq!(again.target, new);
    assert_eq!(statefulsets(&again).len(), 2);
    // After the flip only the new one runs: g1 is no longer planned.
    let after = plan_of(&grown, None, &[new]).unwrap();
    assert_eq!(names(&after)[0], "StatefulSet/mybot-gateway-g2");
    assert_eq!(statefulsets(&after).len(), 1);
}

#[test]
fn the_cache_can_be_left_out_and_stream_limits_reach_the_gateway() {
    let manifest = with("cache: {enabled: false}\n  stream: {maxAge: 6h, maxBytes: 2Gi}");
    let plan = plan_of(&bot(&manifest), None, &[]).unwrap();
    assert!(
        !names(&plan).iter().any(|n| n.contains("cache")),
        "{:?}",
        names(&plan)
    );
    let gateway = &containers(&statefulsets(&plan)[0].spec.template)[0];
    assert_eq!(flag(gateway, "--stream-max-age"), Some("6h"));
    assert_eq!(flag(gateway, "--stream-max-bytes"), Some("2147483648"));
}

#[test]
fn interactions_over_http_get_an_endpoint_deployment_service_and_budget() {
    let without = plan_of(&bot(MINIMAL), None, &[]).unwrap();
    assert!(
        !names(&without).iter().any(|n| n.contains("interactions")),
        "none unless asked for: {:?}",
        names(&without)
    );
    let manifest = with(
        "interactions: {publicKeySecret: {name: app, key: publicKey}, replicas: 3, \
         answerWithinMs: 2000, serviceType: LoadBalancer}",
    );
    let plan = plan_of(&bot(&manifest), None, &[]).unwrap();
    let all = names(&plan);
    for object in [
        "Deployment/mybot-interactions",
        "Service/mybot-interactions",
        "PodDisruptionBudget/mybot-interactions",
    ] {
        assert!(all.iter().any(|n| n == object), "{object} in {all:?}");
    }
    let endpoint_deployment = deployment(&plan, "mybot-interactions");
    assert_eq!(endpoint_deployment.spec.replicas, Some(3));
    let endpoint = &containers(&endpoint_deployment.spec.template)[0];
    assert_eq!(args(endpoint)[0], "interactions");
    assert_eq!(flag(endpoint, "--listen"), Some("0.0.0.0:8090"));
    assert_eq!(flag(endpoint, "--answer-within-ms"), Some("2000"));
    // The public key from its Secret; the bot and NATS as every pod has them; never the token.
    let key = env(endpoint, "SHARDYARD_PUBLIC_KEY").unwrap();
    let from = key
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (from.name.as_str(), from.key.as_str()),
        ("app", "publicKey")
    );
    assert!(env(endpoint, "SHARDYARD_BOT").is_some());
    assert!(env(endpoint, "SHARDYARD_NATS_URL").is_some());
    assert!(env(endpoint, "SHARDYARD_TOKEN").is_none());
    let service = plan
        .objects
        .iter()
        .find_map(|o| match o {
            Child::Service(s) if s.metadata.name.as_deref() == Some("mybot-interactions") => {
                Some(&**s)
            }
            _ => None,
        })
        .unwrap();
    let spec = service.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    let port = &spec.ports.as_ref().unwrap()[0];
    assert_eq!(port.port, 80);
    // Defaults: two replicas behind a ClusterIP, 2.5 s.
    let defaults = with("interactions: {publicKeySecret: {name: app, key: publicKey}}");
    let plan = plan_of(&bot(&defaults), None, &[]).unwrap();
    let endpoint_deployment = deployment(&plan, "mybot-interactions");
    assert_eq!(endpoint_deployment.spec.replicas, Some(2));
    let endpoint = &containers(&endpoint_deployment.spec.template)[0];
    assert_eq!(flag(endpoint, "--answer-within-ms"), Some("2500"));
}

#[test]
fn what_the_schema_cannot_see_is_refused_with_its_field() {
    let no_namespace = bot(&MINIMAL.replace("  namespace: bots\n", ""));
    assert_eq!(
        plan_of(&no_namespace, None, &[]).unwrap_err(),
        PlanError::Unnamed("namespace")
    );
    let bad_intent = bot(&with("intents: [GUILDS, TELEPATHY]"));
    let error = plan_of(&bad_intent, None, &[]).unwrap_err();
    assert!(
        matches!(
            error,
            PlanError::Invalid {
                field: "spec.intents",
                ..
            }
        ),
        "{error}"
    );
    let bad_size = bot(&with("stream: {maxBytes: 1GB}"));
    let error = plan_of(&bad_size, None, &[]).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("spec.stream.maxBytes: \"1GB\""),
        "{error}"
    );
}

#[test]
fn the_api_base_loses_only_its_version_for_the_proxy() {
    use super::pod::unversioned;
    assert_eq!(
        unversioned("https://discord.com/api/v10"),
        "https://discord.com/api"
    );
    assert_eq!(
        unversioned("https://discord.com/api/v10/"),
        "https://discord.com/api"
    );
    assert_eq!(
        unversioned("http://127.0.0.1:8450/api/v9"),
        "http://127.0.0.1:8450/api"
    );
    assert_eq!(unversioned("http://sim/api"), "http://sim/api");
    assert_eq!(unversioned("http://sim/api/v"), "http://sim/api/v");
}

#[test]
fn the_gateway_asks_through_the_proxy_in_the_bots_api_version() {
    let manifest = with("discord: {apiBase: 'http://sim.test:8450/api/v9/'}");
    let plan = plan_of(&bot(&manifest), None, &[]).unwrap();
    let gateway = &containers(&statefulsets(&plan)[0].spec.template)[0];
    assert_eq!(
        flag(gateway, "--api-base"),
        Some("http://mybot-rest.bots.svc:8080/api/v9")
    );
    let unversioned_base = with("discord: {apiBase: 'http://sim.test:8450/api'}");
    let plan = plan_of(&bot(&unversioned_base), None, &[]).unwrap();
    let gateway = &containers(&statefulsets(&plan)[0].spec.template)[0];
    assert_eq!(
        flag(gateway, "--api-base"),
        Some("http://mybot-rest.bots.svc:8080/api/v10")
    );
}

fn autoscaler(plan: &Plan) -> Option<serde_json::Value> {
    plan.objects.iter().find_map(|o| match o {
        Child::HorizontalPodAutoscaler(_) | Child::ScaledObject(_) => {
            Some(serde_json::to_value(o).unwrap())
        }
        _ => None,
    })
}

#[test]
fn by_default_an_hpa_scales_the_workers_on_their_pending_events() {
    let manifest = with(
        "workers: {minReplicas: 2, maxReplicas: 12, targetPendingPerReplica: 50}\n  \
         autoscaling: {scaleDownStabilizationSeconds: 30}",
    );
    let plan = plan_of(&bot(&manifest), None, &[]).unwrap();
    let hpa = autoscaler(&plan).expect("an HPA");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["metadata"]["name"], "mybot-worker");
    assert_eq!(hpa["metadata"]["ownerReferences"][0]["name"], "mybot");
    let spec = &hpa["spec"];
    assert_eq!(
        spec["scaleTargetRef"],
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "mybot-worker"})
    );
    assert_eq!(
        (&spec["minReplicas"], &spec["maxReplicas"]),
        (&json!(2), &json!(12))
    );
    let external = &spec["metrics"][0]["external"];
    assert_eq!(external["metric"]["name"], "shardyard_pending_events");
    assert_eq!(
        external["metric"]["selector"]["matchLabels"],
        json!({"bot": "mybot", "group": "default"})
    );
    assert_eq!(
        external["target"],
        json!({"type": "AverageValue", "averageValue": "50"})
    );
    // A burst is met at once (one step may add every replica); a lull waits the window.
    let behavior = &spec["behavior"];
    assert_eq!(behavior["scaleUp"]["stabilizationWindowSeconds"], 0);
    assert_eq!(behavior["scaleUp"]["policies"][0]["value"], 12);
    assert_eq!(behavior["scaleDown"]["stabilizationWindowSeconds"], 30);
    assert_eq!(deployment(&plan, "mybot-worker").spec.replicas, None);
}

#[test]
fn without_an_autoscaler_the_workers_have_min_replicas() {
    let manifest = with("workers: {minReplicas: 3}\n  autoscaling: {provider: none}");
    let plan = plan_of(&bot(&manifest), None, &[]).unwrap();
    assert_eq!(autoscaler(&plan), None);
    assert_eq!(deployment(&plan, "mybot-worker").spec.replicas, Some(3));
}

#[test]
fn keda_asks_the_operator_or_nats_for_the_same_number() {
    let manifest = with(
        "workers: {minReplicas: 0, maxReplicas: 8, targetPendingPerReplica: 40}\n  \
         autoscaling: {provider: keda}",
    );
    let plan = plan_of(&bot(&manifest), None, &[]).unwrap();
    let scaled = autoscaler(&plan).expect("a ScaledObject");
    assert_eq!(names(&plan).last().unwrap(), "ScaledObject/mybot-worker");
    assert_eq!(scaled["apiVersion"], "keda.sh/v1alpha1");
    let spec = &scaled["spec"];
    assert_eq!(spec["scaleTargetRef"]["name"], "mybot-worker");
    // KEDA may scale to zero, and back.
    assert_eq!(
        (&spec["minReplicaCount"], &spec["maxReplicaCount"]),
        (&json!(0), &json!(8))
    );
    let trigger = &spec["triggers"][0];
    assert_eq!(trigger["type"], "metrics-api");
    assert_eq!(
        trigger["metadata"],
        json!({
            "url": "http://shardyard-metrics.shardyard.svc:9090/queue-depth/bots/mybot",
            "format": "json",
            "valueLocation": "pending",
            "targetValue": "40",
        })
    );
    assert_eq!(deployment(&plan, "mybot-worker").spec.replicas, None);

    let nats = with(
        "autoscaling:\n    provider: keda\n    keda: {trigger: nats-jetstream, \
         natsMonitoringEndpoint: 'nats.nats.svc:8222'}",
    );
    let plan = plan_of(&bot(&nats), None, &[]).unwrap();
    let trigger = &autoscaler(&plan).unwrap()["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "nats-jetstream");
    assert_eq!(
        trigger["metadata"],
        json!({
            "natsServerMonitoringEndpoint": "nats.nats.svc:8222",
            "account": "$G",
            "stream": "SHARDYARD_BOTS_MYBOT",
            "consumer": "workers",
            "lagThreshold": "100",
        })
    );
    let missing = with("autoscaling:\n    provider: keda\n    keda: {trigger: nats-jetstream}");
    assert!(matches!(
        plan_of(&bot(&missing), None, &[]),
        Err(PlanError::Invalid {
            field: "spec.autoscaling.keda.natsMonitoringEndpoint",
            ..
        })
    ));
}
