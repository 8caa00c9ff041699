//! `shardyard operator` as a process on the real control plane of the test bed, with the
//! simulator standing in for Discord and a real nats-server (issue 14): a DiscordBot becomes
//! every planned object, its NATS streams and buckets, and a status that says Ready; a second
//! reconcile changes nothing; a missing Secret and a bad token are reported and recover; a
//! user's edit is put back and their labels kept; deleting the bot runs the finalizer and the
//! garbage collector; two operators elect one leader, and killing it hands over.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Resource, ResourceExt as _};
use shardyard_operator::plan::{
    DEFAULT_IMAGE, DEFAULT_QUEUE_DEPTH_URL, GatewayBot, OperatorDefaults, PlanInput, plan,
};
use shardyard_protocol::BotKey;
use shardyard_tests::eventually;
use shardyard_tests::kube_cluster::succeeded;
use shardyard_tests::operator::{OperatorBed as Bed, OperatorProcess};

async fn listed<K>(client: &kube::Client, selector: &str) -> anyhow::Result<Vec<K>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), "default");
    Ok(api
        .list(&ListParams::default().labels(selector))
        .await?
        .items)
}

/// Every object of the bot, `Kind/name` sorted, with its resourceVersion.
async fn children(client: &kube::Client, bot: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let selector = format!("shardyard.dev/bot={bot}");
    let mut all = BTreeMap::new();
    macro_rules! collect {
        ($kind:ty, $name:expr) => {
            for object in listed::<$kind>(client, &selector).await? {
                all.insert(
                    format!("{}/{}", $name, object.name_any()),
                    object.resource_version().unwrap_or_default(),
                );
            }
        };
    }
    collect!(StatefulSet, "StatefulSet");
    collect!(Service, "Service");
    collect!(Deployment, "Deployment");
    collect!(PodDisruptionBudget, "PodDisruptionBudget");
    collect!(NetworkPolicy, "NetworkPolicy");
    // The HPA controller writes its status on its own schedule: the generation says whether
    // the operator changed the HPA.
    for object in listed::<HorizontalPodAutoscaler>(client, &selector).await? {
        all.insert(
            format!("HorizontalPodAutoscaler/{}", object.name_any()),
            format!("generation {:?}", object.metadata.generation),
        );
    }
    Ok(all)
}

#[tokio::test]
async fn a_bot_becomes_every_planned_object_its_nats_resources_and_a_ready_status()
-> anyhow::Result<()> {
    let bed = Bed::start().await?;
    let operator = bed.operator("op-a").await?;
    bed.secret("mybot", bed.sim.token()).await?;
    bed.apply(&bed.manifest("mybot", "")).await?;
    let bot = bed
        .condition("mybot", "Ready", "True", "Applied", &operator)
        .await?;

    // Every object the planner decides for this bot, and nothing else, exists.
    let planned = plan(PlanInput {
        bot: &bot,
        defaults: &OperatorDefaults {
            api_base: bed.sim.api_base(),
            image: DEFAULT_IMAGE.to_owned(),
            queue_depth_url: DEFAULT_QUEUE_DEPTH_URL.to_owned(),
        },
        discord: Some(GatewayBot {
            shards: 3,
            max_concurrency: 1,
        }),
        running: &[],
    })?;
    let wanted: Vec<String> = {
        let mut names: Vec<String> = planned.objects.iter().map(|o| o.describe()).collect();
        names.sort();
        names
    };
    let found: Vec<String> = children(&bed.client, "mybot").await?.into_keys().collect();
    assert_eq!(found, wanted);
    let gateway: Api<StatefulSet> = Api::namespaced(bed.client.clone(), "default");
    let set = gateway.get("mybot-gateway-g1").await?;
    assert_eq!(set.spec.replicas, Some(1));
    assert_eq!(
        set.owner_references()[0].uid,
        bot.uid().unwrap_or_default(),
        "owned by the bot"
    );
    let status = bot.status.clone().context("a status")?;
    assert_eq!(status.shards, Some(3));
    assert_eq!(status.recommended_shards, Some(3));
    assert_eq!(status.max_concurrency, Some(1));
    assert_eq!(status.gateway_generation, Some(1));
    assert_eq!(status.observed_generation, bot.metadata.generation);
    assert!(
        bot.finalizers()
            .contains(&"shardyard.dev/nats-resources".to_owned())
    );

    // NATS: the streams with the spec's limits, the buckets, generation 1 active.
    let key = BotKey::namespaced("default", "mybot")?;
    let js = bed.nats.jetstream().await?;
    let mut events = js.get_stream(key.stream()).await?;
    let config = events.info().await?.config.clone();
    assert_eq!(config.max_age, Duration::from_secs(24 * 3600));
    assert_eq!(config.duplicate_window, Duration::from_secs(300));
    js.get_stream(key.dead_letter_stream()).await?;
    for bucket in [
        key.sessions_bucket(),
        key.identify_bucket(),
        key.cache_bucket(),
    ] {
        js.get_key_value(&bucket)
            .await
            .with_context(|| bucket.clone())?;
    }
    let control = js.get_key_value(key.control_bucket()).await?;
    let active = control
        .get("active_generation")
        .await?
        .context("active_generation")?;
    assert_eq!(&active[..], b"1");

    // A second reconcile of the unchanged bot changes nothing.
    let before = children(&bed.client, "mybot").await?;
    let bot_version = bed.bots().get("mybot").await?.resource_version();
    let reconciles = operator
        .metric("shardyard_operator_reconciles_total{outcome=\"applied\"}")
        .await?;
    // An annotation is no spec change, but it wakes the controller.
    bed.poke("mybot", 1).await?;
    eventually(Duration::from_secs(30), "another reconcile", || async {
        let now = operator
            .metric("shardyard_operator_reconciles_total{outcome=\"applied\"}")
            .await?;
        anyhow::ensure!(now > reconciles, "{now} reconciles");
        Ok(())
    })
    .await?;
    let after = children(&bed.client, "mybot").await?;
    assert_eq!(before, after, "no child's resourceVersion moved");
    let poked = bed.bots().get("mybot").await?;
    assert_ne!(
        poked.resource_version(),
        bot_version,
        "the poke itself is a change"
    );
    assert_eq!(poked.status, bot.status, "the status was not rewritten");
    // Discord was asked once, not on every reconcile.
    assert_eq!(
        operator
            .metric("shardyard_operator_discord_requests_total")
            .await?,
        1.0
    );

    // Pending: what waits for the workers' consumer, once a worker made it.
    js.create_consumer_on_stream(
        async_nats::jetstream::consumer::pull::Config {
            durable_name: Some(shardyard_protocol::names::worker_consumer(None)),
            ..Default::default()
        },
        key.stream(),
    )
    .await?;
    for n in 0..3 {
        js.publish(
            key.event_subject(0, "MESSAGE_CREATE"),
            format!("{{\"n\":{n}}}").into(),
        )
        .await?
        .await?;
    }
    bed.poke("mybot", 2).await?;
    eventually(
        Duration::from_secs(30),
        "the status counts what is pending",
        || async {
            let status = bed.bots().get("mybot").await?.status.context("status")?;
            anyhow::ensure!(status.pending == Some(3), "{:?}", status.pending);
            Ok(())
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_missing_secret_and_a_bad_token_are_reported_and_recover() -> anyhow::Result<()> {
    let bed = Bed::start().await?;
    let operator = bed.operator("op-a").await?;
    bed.apply(&bed.manifest("nosecret", "")).await?;
    let bot = bed
        .condition(
            "nosecret",
            "Ready",
            "False",
            "TokenSecretMissing",
            &operator,
        )
        .await?;
    let degraded = bot.status.context("status")?.conditions;
    let degraded = degraded
        .iter()
        .find(|c| c.type_ == "Degraded")
        .context("Degraded")?;
    assert_eq!(degraded.status, "True");
    assert!(
        degraded.message.contains("nosecret-token"),
        "{}",
        degraded.message
    );
    let events = succeeded(
        &bed.cluster
            .kubectl(
                &[
                    "get",
                    "events",
                    "--field-selector",
                    "involvedObject.name=nosecret",
                    "-o",
                    "json",
                ],
                None,
            )
            .await?,
    )?;
    assert!(events.contains("TokenSecretMissing"), "{events}");
    assert!(
        children(&bed.client, "nosecret").await?.is_empty(),
        "nothing applied yet"
    );

    bed.secret("nosecret", bed.sim.token()).await?;
    bed.condition("nosecret", "Ready", "True", "Applied", &operator)
        .await?;

    bed.secret("badtoken", "not-the-token").await?;
    bed.apply(&bed.manifest("badtoken", "")).await?;
    let bot = bed
        .condition("badtoken", "Ready", "False", "InvalidToken", &operator)
        .await?;
    let message = bot.status.context("status")?.conditions[0].message.clone();
    assert!(
        !message.contains("not-the-token"),
        "the token never shows: {message}"
    );
    assert!(!operator.log().contains(bed.sim.token()));
    assert!(!operator.log().contains("not-the-token"));
    Ok(())
}

#[tokio::test]
async fn a_users_edit_is_put_back_and_their_label_kept() -> anyhow::Result<()> {
    let bed = Bed::start().await?;
    let operator = bed.operator("op-a").await?;
    bed.secret("mybot", bed.sim.token()).await?;
    bed.apply(&bed.manifest("mybot", "")).await?;
    bed.condition("mybot", "Ready", "True", "Applied", &operator)
        .await?;
    succeeded(
        &bed.cluster
            .kubectl(&["scale", "deployment/mybot-rest", "--replicas=5"], None)
            .await?,
    )?;
    succeeded(
        &bed.cluster
            .kubectl(&["label", "deployment/mybot-rest", "team=platform"], None)
            .await?,
    )?;
    let deployments: Api<Deployment> = Api::namespaced(bed.client.clone(), "default");
    eventually(
        Duration::from_secs(30),
        "the operator puts replicas back",
        || async {
            let rest = deployments.get("mybot-rest").await?;
            anyhow::ensure!(
                rest.spec.replicas == Some(2),
                "{:?} replicas",
                rest.spec.replicas
            );
            anyhow::ensure!(
                rest.labels().get("team").map(String::as_str) == Some("platform"),
                "label: {:?}",
                rest.labels()
            );
            Ok(())
        },
    )
    .await
    .with_context(|| operator.log_report())?;
    Ok(())
}

#[tokio::test]
async fn an_edited_limit_is_applied_and_an_unplannable_spec_waits_for_a_fix() -> anyhow::Result<()>
{
    let bed = Bed::start().await?;
    let operator = bed.operator("op-a").await?;
    bed.secret("mybot", bed.sim.token()).await?;
    bed.apply(&bed.manifest("mybot", "")).await?;
    bed.condition("mybot", "Ready", "True", "Applied", &operator)
        .await?;
    let key = BotKey::namespaced("default", "mybot")?;
    let js = bed.nats.jetstream().await?;

    // The operator owns the stream's configuration: an edited limit reaches it.
    bed.apply(&bed.manifest("mybot", "  stream: {maxAge: 2h, maxBytes: 64Mi}\n"))
        .await?;
    eventually(
        Duration::from_secs(30),
        "the stream takes the new limits",
        || async {
            let mut stream = js.get_stream(key.stream()).await?;
            let config = stream.info().await?.config.clone();
            anyhow::ensure!(
                config.max_age == Duration::from_secs(7200) && config.max_bytes == 64 << 20,
                "{:?} {}",
                config.max_age,
                config.max_bytes
            );
            Ok(())
        },
    )
    .await
    .with_context(|| operator.log_report())?;

    // A pod template the schema lets through but no Deployment could use: the bot says why and
    // waits for the spec to change instead of retrying.
    let broken = "  workers:\n    template: {spec: {containers: []}}\n";
    bed.apply(&bed.manifest("mybot", broken)).await?;
    let bot = bed
        .condition("mybot", "Ready", "False", "InvalidSpec", &operator)
        .await?;
    let message = bot.status.context("status")?.conditions[0].message.clone();
    assert!(message.contains("spec.workers.template"), "{message}");
    // Nothing retries it. Changes still wake it (its children's statuses change whenever the
    // controller-manager gets to them, which is why a count of quiet seconds is no proof), so
    // the proof is why each reconcile ran, as the controller logs it: a retry would come within
    // 15 s, as "reconciler requested retry".
    let series = "shardyard_operator_reconciles_total{outcome=\"invalid_spec\"}";
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(operator.metric(series).await? >= 1.0);
    let log = operator.log();
    let since_blocked = &log[log.find("InvalidSpec").context("the blocked line")?..];
    for retry in ["reconciler requested retry", "error policy requested retry"] {
        assert!(
            !since_blocked.contains(retry),
            "no retries while nothing changed, but: {retry}\n{}",
            operator.log_report()
        );
    }
    // The check can fail: the same log shows why the reconciles ran.
    assert!(
        since_blocked.contains("object updated"),
        "{}",
        operator.log_report()
    );
    bed.apply(&bed.manifest("mybot", "")).await?;
    bed.condition("mybot", "Ready", "True", "Applied", &operator)
        .await?;
    Ok(())
}

#[tokio::test]
async fn deleting_a_bot_removes_its_nats_resources_and_the_gc_its_children() -> anyhow::Result<()> {
    let bed = Bed::start().await?;
    let operator = bed.operator("op-a").await?;
    bed.secret("mybot", bed.sim.token()).await?;
    bed.secret("keeper", bed.sim.token()).await?;
    bed.apply(&bed.manifest("mybot", "")).await?;
    bed.apply(
        &bed.manifest("keeper", "")
            .replace("nats: {url:", "nats: {onDelete: Retain, url:"),
    )
    .await?;
    bed.condition("mybot", "Ready", "True", "Applied", &operator)
        .await?;
    bed.condition("keeper", "Ready", "True", "Applied", &operator)
        .await?;
    let js = bed.nats.jetstream().await?;
    let mybot = BotKey::namespaced("default", "mybot")?;
    let keeper = BotKey::namespaced("default", "keeper")?;
    js.get_stream(mybot.stream()).await?;

    bed.bots()
        .delete("mybot", &DeleteParams::background())
        .await?;
    bed.bots()
        .delete("keeper", &DeleteParams::background())
        .await?;
    eventually(
        Duration::from_secs(60),
        "the bots and their children are gone",
        || async {
            anyhow::ensure!(bed.bots().get_opt("mybot").await?.is_none(), "mybot");
            anyhow::ensure!(bed.bots().get_opt("keeper").await?.is_none(), "keeper");
            let left = children(&bed.client, "mybot").await?;
            anyhow::ensure!(left.is_empty(), "left: {left:?}");
            Ok(())
        },
    )
    .await
    .with_context(|| format!("{}\n{}", operator.log_report(), bed.cluster.log_report()))?;
    assert!(
        js.get_stream(mybot.stream()).await.is_err(),
        "the stream went with the bot"
    );
    assert!(js.get_key_value(mybot.control_bucket()).await.is_err());
    js.get_stream(keeper.stream())
        .await
        .context("a retained bot keeps its stream")?;
    js.get_key_value(keeper.sessions_bucket()).await?;
    Ok(())
}

/// An operator that cannot reach the API server is alive but not ready.
#[tokio::test]
async fn an_operator_without_an_api_server_is_not_ready() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("nowhere.kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:9', \
         insecure-skip-tls-verify: true}\nusers:\n- name: u\n  user: {token: x}\ncontexts:\n- name: c\n  \
         context: {cluster: c, user: u}\ncurrent-context: c\n",
    )?;
    let operator = OperatorProcess::start_with_kubeconfig(
        &kubeconfig,
        "op-x",
        "http://127.0.0.1:9/api/v10",
        &[],
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let readiness = operator.admin_get("/readyz").await;
    assert!(
        readiness.is_err(),
        "ready without an API server: {readiness:?}"
    );
    operator.admin_get("/healthz").await?;
    Ok(())
}

#[tokio::test]
async fn two_operators_elect_one_leader_and_killing_it_hands_over() -> anyhow::Result<()> {
    let bed = Bed::start().await?;
    let first = bed.operator("op-a").await?;
    let second = bed.operator("op-b").await?;
    eventually(Duration::from_secs(30), "one leader", || async {
        let (a, b) = (first.leads().await?, second.leads().await?);
        anyhow::ensure!(a != b, "op-a leads: {a}, op-b leads: {b}");
        Ok(())
    })
    .await?;
    let (mut leader, follower) = if first.leads().await? {
        (first, second)
    } else {
        (second, first)
    };
    // Both are ready: the follower takes over when the leader goes. (The follower is ready
    // once the API server has answered its first look at the Lease, which can come just
    // after the leader took it.)
    leader.admin_get("/readyz").await?;
    eventually(Duration::from_secs(10), "the follower is ready", || {
        follower.admin_get("/readyz")
    })
    .await?;
    bed.secret("mybot", bed.sim.token()).await?;
    bed.apply(&bed.manifest("mybot", "")).await?;
    bed.condition("mybot", "Ready", "True", "Applied", &leader)
        .await?;
    assert_eq!(
        follower
            .metric("shardyard_operator_reconciles_total{outcome=\"applied\"}")
            .await?,
        0.0,
        "the follower does not reconcile"
    );

    leader.process().kill_9()?;
    eventually(
        Duration::from_secs(40),
        "the follower takes over",
        || async {
            anyhow::ensure!(follower.leads().await?, "not yet");
            Ok(())
        },
    )
    .await
    .with_context(|| follower.log_report())?;
    bed.secret("second", bed.sim.token()).await?;
    bed.apply(&bed.manifest("second", "")).await?;
    bed.condition("second", "Ready", "True", "Applied", &follower)
        .await?;
    let lease = succeeded(
        &bed.cluster
            .kubectl(
                &[
                    "get",
                    "lease",
                    "shardyard-operator",
                    "-o",
                    "jsonpath={.spec.holderIdentity}",
                ],
                None,
            )
            .await?,
    )?;
    assert_eq!(lease, follower.identity());
    drop(leader);
    Ok(())
}

/// `spec.interactions` on the real control plane: the endpoint's Deployment (its public key
/// from the named Secret), its Service of the chosen type on port 80 and its budget appear; a
/// spec without it has them pruned.
#[tokio::test]
async fn spec_interactions_adds_the_endpoint_and_removing_it_prunes_it() -> anyhow::Result<()> {
    let bed = Bed::start().await?;
    let operator = bed.operator("op-a").await?;
    bed.secret("ixbot", bed.sim.token()).await?;
    bed.apply(&bed.manifest(
        "ixbot",
        "  interactions: {publicKeySecret: {name: ixbot-app, key: publicKey}, serviceType: NodePort}\n",
    ))
    .await?;
    bed.condition("ixbot", "Ready", "True", "Applied", &operator)
        .await?;
    let found = children(&bed.client, "ixbot").await?;
    for object in [
        "Deployment/ixbot-interactions",
        "Service/ixbot-interactions",
        "PodDisruptionBudget/ixbot-interactions",
    ] {
        assert!(found.contains_key(object), "{object} in {found:?}");
    }
    let services: Api<Service> = Api::namespaced(bed.client.clone(), "default");
    let service = services.get("ixbot-interactions").await?;
    let spec = service.spec.context("a Service spec")?;
    assert_eq!(spec.type_.as_deref(), Some("NodePort"));
    let port = &spec.ports.context("ports")?[0];
    assert_eq!(port.port, 80);
    assert!(
        port.node_port.is_some(),
        "the API server gave it a node port"
    );
    let deployments: Api<Deployment> = Api::namespaced(bed.client.clone(), "default");
    let endpoint = deployments.get("ixbot-interactions").await?;
    let container = &endpoint
        .spec
        .template
        .spec
        .context("a pod spec")?
        .containers[0];
    let key = container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "SHARDYARD_PUBLIC_KEY")
        .and_then(|e| e.value_from.as_ref()?.secret_key_ref.clone())
        .context("the public key from its Secret")?;
    assert_eq!(
        (key.name.as_str(), key.key.as_str()),
        ("ixbot-app", "publicKey")
    );

    // Without spec.interactions, the operator prunes what it had applied for it.
    bed.apply(&bed.manifest("ixbot", "")).await?;
    eventually(Duration::from_secs(60), "the endpoint pruned", || async {
        let found = children(&bed.client, "ixbot").await?;
        anyhow::ensure!(
            !found.keys().any(|k| k.ends_with("/ixbot-interactions")),
            "still there: {found:?}"
        );
        Ok(())
    })
    .await
    .with_context(|| operator.log_report())?;
    Ok(())
}
