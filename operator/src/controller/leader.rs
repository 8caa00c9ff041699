//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go's does it: a Lease held by
//! another replica is taken only once it expired, and every write carries the `resourceVersion`
//! read, so two candidates can never both win. The leader renews well within the lease's
//! duration; a leader that cannot renew in time stops leading (the process exits, and restarts
//! as a candidate) rather than risk two operators writing at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;

/// How long a Lease is valid after its last renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews, and a candidate tries.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// One candidate for one Lease.
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
}

impl std::fmt::Debug for LeaseLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseLock")
            .field("name", &self.name)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl LeaseLock {
    /// `identity` competing for the Lease `name` through `api` (its namespace).
    #[must_use]
    pub fn new(api: Api<Lease>, name: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            api,
            name: name.into(),
            identity: identity.into(),
        }
    }

    /// This candidate's identity.
    #[must_use]
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Takes the Lease if it is free or expired, or renews it if this candidate holds it.
    /// `Ok(true)` when this candidate holds it afterwards.
    ///
    /// # Errors
    /// When the API server cannot be asked (a conflict is not an error: someone else won).
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let duration = i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(15);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return conflict_is_lost(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let expired = spec.renew_time.as_ref().is_none_or(|renewed| {
            let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(duration));
            renewed.0.as_second().saturating_add(seconds) < now.0.as_second()
        });
        if !mine && !expired {
            return Ok(false);
        }
        if !mine {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.lease_duration_seconds = Some(duration);
        spec.renew_time = Some(now);
        conflict_is_lost(
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await,
        )
    }

    /// Waits until this candidate holds the Lease; `answered` is called each time the API server
    /// answers (held or not).
    pub async fn acquire(&self, answered: impl Fn()) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    answered();
                    return;
                }
                Ok(false) => answered(),
                Err(error) => tracing::warn!(%error, "trying to take the leader Lease"),
            }
            tokio::time::sleep(RETRY_PERIOD).await;
        }
    }

    /// Renews the Lease every [`RETRY_PERIOD`]; returns when it could not be renewed within
    /// two thirds of [`LEASE_DURATION`], or someone else holds it: leading is over.
    pub async fn keep(&self) {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RETRY_PERIOD).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!(identity = %self.identity, "another replica holds the leader Lease");
                    return;
                }
                Err(error) => tracing::warn!(%error, "renewing the leader Lease"),
            }
            if last_renewal.elapsed() > LEASE_DURATION * 2 / 3 {
                tracing::error!("the leader Lease could not be renewed in time");
                return;
            }
        }
    }
}

fn conflict_is_lost(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
