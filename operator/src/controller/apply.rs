//! Applying a plan with server-side apply, under one field manager, and removing what the plan
//! no longer has (an old gateway generation, a cache turned off, an autoscaler of another
//! provider). An apply of unchanged fields is a no-op on the API server: no `resourceVersion`
//! moves.
//!
//! A kind whose API the cluster lacks (KEDA's ScaledObject without KEDA) is skipped and
//! reported, not an error: the rest of the bot runs.

use std::collections::BTreeSet;
use std::fmt::Debug;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::{Client, Resource, ResourceExt as _};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::plan::{BOT_LABEL, Child, MANAGED_BY, MANAGED_BY_LABEL, Plan};

/// The field manager of everything the operator applies, status included.
pub const FIELD_MANAGER: &str = "shardyard-operator";

/// The field manager that holds a worker Deployment's `replicas` for a moment while the
/// operator lets go of them (see [`hand_over_replicas`]).
pub const HANDOVER_MANAGER: &str = "shardyard-operator-handover";

/// KEDA's ScaledObject.
#[must_use]
pub fn scaled_object_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("keda.sh", "v1alpha1", "ScaledObject"),
        "scaledobjects",
    )
}

/// What an apply skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Objects whose kind the cluster does not serve (`Kind/name`): a ScaledObject without
    /// KEDA's CRD.
    pub unserved: Vec<String>,
}

/// Why applying failed.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct ApplyError {
    /// `Kind/name`.
    pub what: String,
    /// The API server's answer.
    #[source]
    pub source: kube::Error,
}

/// Applies every object of `plan` in order.
///
/// # Errors
/// [`ApplyError`] for the first object the API server refuses.
pub async fn apply(client: &Client, namespace: &str, plan: &Plan) -> Result<Applied, ApplyError> {
    let mut applied = Applied::default();
    for child in &plan.objects {
        let failed = |source| ApplyError {
            what: child.describe(),
            source,
        };
        match child {
            Child::StatefulSet(o) => apply_one(client, namespace, &**o).await,
            Child::Service(o) => apply_one(client, namespace, &**o).await,
            Child::Deployment(o) => {
                if o.spec.replicas.is_none() {
                    hand_over_replicas(client, namespace, &o.name_any())
                        .await
                        .map_err(failed)?;
                }
                apply_one(client, namespace, &**o).await
            }
            Child::PodDisruptionBudget(o) => apply_one(client, namespace, &**o).await,
            Child::NetworkPolicy(o) => apply_one(client, namespace, &**o).await,
            Child::HorizontalPodAutoscaler(o) => apply_one(client, namespace, &**o).await,
            Child::ScaledObject(o) => match apply_scaled_object(client, namespace, o).await {
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    applied.unserved.push(child.describe());
                    Ok(())
                }
                other => other,
            },
        }
        .map_err(failed)?;
    }
    Ok(applied)
}

/// Lets go of a Deployment's `replicas` without changing them. Dropping a field from a
/// server-side apply removes it when no other manager holds it, and the Deployment would fall
/// back to one replica. So while the operator still holds `replicas` (it wrote them with
/// `provider: none`), [`HANDOVER_MANAGER`] applies the same value first; the autoscaler's
/// first change then takes the field from it.
async fn hand_over_replicas(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<(), kube::Error> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let Some(existing) = api.get_opt(name).await? else {
        return Ok(());
    };
    let holds_replicas = existing.managed_fields().iter().any(|entry| {
        entry.manager.as_deref() == Some(FIELD_MANAGER)
            && entry.operation.as_deref() == Some("Apply")
            && entry
                .fields_v1
                .as_ref()
                .is_some_and(|f| f.0["f:spec"].get("f:replicas").is_some())
    });
    let Some(replicas) = existing.spec.replicas else {
        return Ok(());
    };
    if !holds_replicas {
        return Ok(());
    }
    let patch = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas},
    });
    api.patch(
        name,
        &PatchParams::apply(HANDOVER_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    tracing::info!(
        deployment = name,
        replicas,
        "replicas handed over to the autoscaler"
    );
    Ok(())
}

async fn apply_scaled_object(
    client: &Client,
    namespace: &str,
    object: &serde_json::Value,
) -> Result<(), kube::Error> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &scaled_object_resource());
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await?;
    Ok(())
}

async fn apply_one<K>(client: &Client, namespace: &str, object: &K) -> Result<(), kube::Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    // Forced: these fields are the operator's; a user's edit of one is put back (their own
    // labels and fields stay, under their own manager).
    api.patch(
        &object.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await?;
    Ok(())
}

/// Deletes the bot's objects (labelled for it, managed by the operator, owned by `owner_uid`)
/// that the plan no longer has. Returns what was deleted.
///
/// # Errors
/// [`ApplyError`] when listing or deleting fails.
pub async fn prune(
    client: &Client,
    namespace: &str,
    bot: &str,
    owner_uid: &str,
    plan: &Plan,
) -> Result<Vec<String>, ApplyError> {
    let planned: BTreeSet<String> = plan.objects.iter().map(Child::describe).collect();
    let selector = format!("{BOT_LABEL}={bot},{MANAGED_BY_LABEL}={MANAGED_BY}");
    let pruning = Pruning {
        selector: &selector,
        owner_uid,
        planned: &planned,
    };
    let mut deleted = Vec::new();
    deleted.extend(
        pruning
            .kind(typed::<StatefulSet>(client, namespace), "StatefulSet")
            .await?,
    );
    deleted.extend(
        pruning
            .kind(typed::<Service>(client, namespace), "Service")
            .await?,
    );
    deleted.extend(
        pruning
            .kind(typed::<Deployment>(client, namespace), "Deployment")
            .await?,
    );
    deleted.extend(
        pruning
            .kind(
                typed::<PodDisruptionBudget>(client, namespace),
                "PodDisruptionBudget",
            )
            .await?,
    );
    deleted.extend(
        pruning
            .kind(
                typed::<HorizontalPodAutoscaler>(client, namespace),
                "HorizontalPodAutoscaler",
            )
            .await?,
    );
    let scaled_objects = Api::namespaced_with(client.clone(), namespace, &scaled_object_resource());
    deleted.extend(
        pruning
            .kind::<DynamicObject>(scaled_objects, "ScaledObject")
            .await?,
    );
    deleted.extend(
        pruning
            .kind(typed::<NetworkPolicy>(client, namespace), "NetworkPolicy")
            .await?,
    );
    Ok(deleted)
}

fn typed<K>(client: &Client, namespace: &str) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    Api::namespaced(client.clone(), namespace)
}

/// What one prune looks for: the bot's objects that the plan no longer has.
struct Pruning<'a> {
    selector: &'a str,
    owner_uid: &'a str,
    planned: &'a BTreeSet<String>,
}

impl Pruning<'_> {
    /// Deletes the objects of one kind. A kind the cluster does not serve (KEDA's, without
    /// KEDA) has none.
    async fn kind<K>(&self, api: Api<K>, kind: &str) -> Result<Vec<String>, ApplyError>
    where
        K: Resource + DeserializeOwned + Clone + Debug,
    {
        let failed = |what: String| move |source| ApplyError { what, source };
        let listed = match api.list(&ListParams::default().labels(self.selector)).await {
            Ok(listed) => listed,
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(Vec::new()),
            Err(source) => return Err(failed(format!("listing {kind}s"))(source)),
        };
        let mut deleted = Vec::new();
        for object in listed {
            let described = format!("{kind}/{}", object.name_any());
            let owned = object
                .owner_references()
                .iter()
                .any(|o| o.uid == self.owner_uid);
            if !owned || self.planned.contains(&described) {
                continue;
            }
            api.delete(&object.name_any(), &DeleteParams::background())
                .await
                .map_err(failed(format!("deleting {described}")))?;
            deleted.push(described);
        }
        Ok(deleted)
    }
}
