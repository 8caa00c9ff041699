//! Applying a plan with server-side apply, under one field manager, and removing what the plan
//! no longer has (an old gateway generation, a cache turned off). An apply of unchanged fields
//! is a no-op on the API server: no `resourceVersion` moves.

use std::collections::BTreeSet;
use std::fmt::Debug;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt as _};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::plan::{BOT_LABEL, Child, MANAGED_BY, MANAGED_BY_LABEL, Plan};

/// The field manager of everything the operator applies, status included.
pub const FIELD_MANAGER: &str = "shardyard-operator";

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
pub async fn apply(client: &Client, namespace: &str, plan: &Plan) -> Result<(), ApplyError> {
    for child in &plan.objects {
        let result = match child {
            Child::StatefulSet(o) => apply_one(client, namespace, &**o).await,
            Child::Service(o) => apply_one(client, namespace, &**o).await,
            Child::Deployment(o) => apply_one(client, namespace, &**o).await,
            Child::PodDisruptionBudget(o) => apply_one(client, namespace, &**o).await,
            Child::NetworkPolicy(o) => apply_one(client, namespace, &**o).await,
        };
        result.map_err(|source| ApplyError {
            what: child.describe(),
            source,
        })?;
    }
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
    let mut deleted = Vec::new();
    deleted.extend(
        prune_kind::<StatefulSet>(
            client,
            namespace,
            &selector,
            owner_uid,
            &planned,
            "StatefulSet",
        )
        .await?,
    );
    deleted.extend(
        prune_kind::<Service>(client, namespace, &selector, owner_uid, &planned, "Service").await?,
    );
    deleted.extend(
        prune_kind::<Deployment>(
            client,
            namespace,
            &selector,
            owner_uid,
            &planned,
            "Deployment",
        )
        .await?,
    );
    deleted.extend(
        prune_kind::<PodDisruptionBudget>(
            client,
            namespace,
            &selector,
            owner_uid,
            &planned,
            "PodDisruptionBudget",
        )
        .await?,
    );
    deleted.extend(
        prune_kind::<NetworkPolicy>(
            client,
            namespace,
            &selector,
            owner_uid,
            &planned,
            "NetworkPolicy",
        )
        .await?,
    );
    Ok(deleted)
}

async fn prune_kind<K>(
    client: &Client,
    namespace: &str,
    selector: &str,
    owner_uid: &str,
    planned: &BTreeSet<String>,
    kind: &str,
) -> Result<Vec<String>, ApplyError>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + DeserializeOwned + Clone + Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let failed = |what: String| move |source| ApplyError { what, source };
    let listed = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(failed(format!("listing {kind}s")))?;
    let mut deleted = Vec::new();
    for object in listed {
        let described = format!("{kind}/{}", object.name_any());
        let owned = object.owner_references().iter().any(|o| o.uid == owner_uid);
        if !owned || planned.contains(&described) {
            continue;
        }
        api.delete(&object.name_any(), &DeleteParams::background())
            .await
            .map_err(failed(format!("deleting {described}")))?;
        deleted.push(described);
    }
    Ok(deleted)
}
