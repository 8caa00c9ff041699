//! One reconcile of a DiscordBot, as a pipeline: fetch (the token Secret, Discord's answer) →
//! plan (pure) → ensure NATS → apply the children (server-side apply) and prune the ones the
//! plan dropped → status and Events. Each step that can stop the bot stops it with a condition
//! saying why and what to do; an invalid spec waits for a change instead of retrying.
//!
//! Deleting a bot runs the finalizer: the bot's NATS streams and buckets are removed unless
//! `spec.nats.onDelete` is `Retain`; its children go by owner reference (the garbage collector).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{self, finalizer};
use kube::{Resource as _, ResourceExt as _};
use serde_json::json;
use shardyard_protocol::Token;

use super::apply::{FIELD_MANAGER, apply, prune};
use super::context::Context;
use super::nats;
use super::reshard::{ReshardInput, Step, decide};
use super::status::{Outcome, autoscaling_condition, condition, conditions, reasons, types};
use crate::discord::DiscordError;
use crate::plan::{GatewayBot, Generation, PlanError, PlanInput, plan};
use crate::resource::{DiscordBot, DiscordBotStatus, NatsDeletionPolicy, ShardCount};

/// The finalizer that removes a deleted bot's NATS resources.
pub const FINALIZER: &str = "shardyard.dev/nats-resources";

/// How soon a bot that is running is looked at again (Discord's recommendation, the counts).
const RESYNC: Duration = Duration::from_secs(300);
/// How often an autoscaled bot's `status.pending` is refreshed.
const PENDING_REFRESH: Duration = Duration::from_secs(60);
/// How soon a bot blocked on something outside it (a Secret, Discord, NATS) is tried again.
const RETRY: Duration = Duration::from_secs(15);
/// How soon a bot whose token Discord refused is tried again (the Secret may be fixed).
const INVALID_TOKEN_RETRY: Duration = Duration::from_secs(120);
/// How soon a reshard in progress is looked at again.
const RESHARD_POLL: Duration = Duration::from_secs(2);
/// How soon a reshard held back by the identify budget is looked at again.
const BUDGET_RETRY: Duration = Duration::from_secs(60);

/// Why a reconcile failed outright (the controller requeues it with backoff).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The API server did not answer.
    #[error("the Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    /// The finalizer could not be added or removed, or its cleanup failed.
    #[error("the finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<ReconcileError>>),
    /// Removing the NATS resources of a deleted bot failed.
    #[error("removing the bot's NATS resources: {0}")]
    Cleanup(#[source] nats::NatsError),
}

impl ReconcileError {
    /// A bounded label for metrics.
    #[must_use]
    pub const fn category(&self) -> &'static str {
        match self {
            Self::Kube(_) | Self::Finalizer(_) => "api_error",
            Self::Cleanup(_) => "nats_unreachable",
        }
    }
}

/// Reconciles `bot`: the entry point the controller calls.
///
/// # Errors
/// [`ReconcileError`] when the API server fails; conditions report everything else.
pub async fn reconcile(bot: Arc<DiscordBot>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let namespace = bot.namespace().unwrap_or_default();
    let name = bot.name_any();
    let api: Api<DiscordBot> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, bot, |event| async {
        match event {
            finalizer::Event::Apply(bot) => apply_bot(&bot, &ctx).await,
            finalizer::Event::Cleanup(bot) => cleanup(&bot, &ctx).await,
        }
    })
    .await
    .map_err(|e| ReconcileError::Finalizer(Box::new(e)));
    match &result {
        Ok(_) => ctx.succeeded(&format!("{namespace}/{name}")),
        Err(error) => ctx.metrics.reconciled(error.category(), started.elapsed()),
    }
    result
}

/// What the controller does after a failed reconcile: try again with backoff (5 s, doubling, at
/// most five minutes; it starts over once the bot reconciles).
pub fn error_policy(bot: Arc<DiscordBot>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    let key = format!("{}/{}", bot.namespace().unwrap_or_default(), bot.name_any());
    let wait = ctx.failed(&key);
    tracing::warn!(bot = %key, %error, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}

async fn apply_bot(bot: &DiscordBot, ctx: &Context) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let namespace = bot.namespace().unwrap_or_default();
    let spec = &bot.spec;
    let previous = bot.status.clone().unwrap_or_default();
    let mut status = DiscordBotStatus {
        conditions: Vec::new(),
        observed_generation: bot.metadata.generation,
        ..previous.clone()
    };

    // 1. Fetch: the token, then Discord.
    let token = match read_token(ctx, &namespace, bot).await? {
        Ok(token) => token,
        Err(message) => {
            return blocked(
                ctx,
                bot,
                status,
                reasons::TOKEN_SECRET_MISSING,
                message,
                Some(RETRY),
                started,
            )
            .await;
        }
    };
    let api_base = spec
        .discord
        .as_ref()
        .and_then(|d| d.api_base.clone())
        .unwrap_or_else(|| ctx.defaults.api_base.clone());
    let mut discord_remaining = None;
    let discord = match ctx.gateway_bot(&api_base, &token).await {
        Ok(answer) => {
            status.recommended_shards = Some(answer.gateway.shards);
            status.max_concurrency = Some(answer.gateway.max_concurrency);
            status.session_starts_remaining = Some(answer.session_start_remaining);
            discord_remaining = Some(answer.session_start_remaining);
            Some(answer.gateway)
        }
        Err(DiscordError::InvalidToken) => {
            let message = format!(
                "Discord refused the token in Secret {}/{} (key {}): put the bot's token there",
                namespace, spec.token_secret.name, spec.token_secret.key
            );
            return blocked(
                ctx,
                bot,
                status,
                reasons::INVALID_TOKEN,
                message,
                Some(INVALID_TOKEN_RETRY),
                started,
            )
            .await;
        }
        Err(error) => match (spec.shards, previous.max_concurrency) {
            // A fixed count is planned with the max_concurrency seen last.
            (ShardCount::Fixed(_), Some(max_concurrency)) => Some(GatewayBot {
                shards: previous.recommended_shards.unwrap_or(1),
                max_concurrency,
            }),
            (ShardCount::Fixed(_), None) => None,
            (ShardCount::Auto, _) => {
                return blocked(
                    ctx,
                    bot,
                    status,
                    reasons::DISCORD_UNREACHABLE,
                    error.to_string(),
                    Some(RETRY),
                    started,
                )
                .await;
            }
        },
    };

    // 2. Plan what is wanted now.
    let wanted = match plan(PlanInput {
        bot,
        defaults: &ctx.defaults,
        discord,
        running: &[],
    }) {
        Ok(planned) => planned,
        Err(error) => {
            let (reason, retry) = plan_refusal(&error);
            return blocked(ctx, bot, status, reason, error.to_string(), retry, started).await;
        }
    };

    // 3. NATS: where the reshard stands (the budget, the new generation's ready shards).
    let key = wanted.bot_key.clone();
    let nats = match nats::bot_url(&ctx.client, &namespace, bot).await {
        Ok(url) => nats::connect(&url)
            .await
            .map_err(|e| shardyard_protocol::error_chain(&e)),
        Err(message) => Err(message),
    };
    let client = match nats {
        Ok(client) => client,
        Err(message) => {
            return blocked(
                ctx,
                bot,
                status,
                reasons::NATS_UNREACHABLE,
                message,
                Some(RETRY),
                started,
            )
            .await;
        }
    };
    let js = async_nats::jetstream::new(client.clone());
    let result = reconcile_with_nats(
        ctx,
        bot,
        &js,
        &key,
        discord_remaining,
        wanted.total_shards,
        status,
        &previous,
        started,
    )
    .await;
    let _ = client.drain().await;
    result
}

/// The rest of a reconcile once NATS is reached: the reshard step, NATS resources, the
/// children, the status.
#[allow(clippy::too_many_arguments)]
async fn reconcile_with_nats(
    ctx: &Context,
    bot: &DiscordBot,
    js: &async_nats::jetstream::Context,
    key: &shardyard_protocol::BotKey,
    discord_remaining: Option<u32>,
    wanted: u32,
    mut status: DiscordBotStatus,
    previous: &DiscordBotStatus,
    started: Instant,
) -> Result<Action, ReconcileError> {
    let namespace = bot.namespace().unwrap_or_default();
    let name = bot.name_any();
    let spec = &bot.spec;
    let now = Timestamp::now();
    let now_ms = u64::try_from(now.as_millisecond()).unwrap_or(0);
    let active = match (previous.gateway_generation, previous.shards) {
        (Some(number), Some(total)) => Some(Generation { number, total }),
        _ => None,
    };
    let new_ready = match &previous.reshard {
        Some(r) => nats::ready_shards(js, key, r.generation, r.shards, Some(now_ms))
            .await
            .unwrap_or(0),
        None => 0,
    };
    let budget = nats::identify_budget(js, key).await.or(discord_remaining);
    if budget.is_some() {
        status.session_starts_remaining = budget;
    }
    let step = decide(&ReshardInput {
        active,
        wanted,
        reshard: previous.reshard.clone(),
        budget_remaining: budget,
        new_ready,
        now,
    });

    // The plan of this step: while the budget holds a reshard back, the running total.
    let held;
    let planned_bot = if let Step::BudgetLow { active, .. } = &step {
        let mut copy = bot.clone();
        copy.spec.shards = ShardCount::Fixed(active.total);
        held = copy;
        &held
    } else {
        bot
    };
    let running = step.running();
    let planned = match plan(PlanInput {
        bot: planned_bot,
        defaults: &ctx.defaults,
        discord: status.max_concurrency.map(|max_concurrency| GatewayBot {
            shards: status.recommended_shards.unwrap_or(wanted),
            max_concurrency,
        }),
        running: &running,
    }) {
        Ok(planned) => planned,
        Err(error) => {
            let (reason, retry) = plan_refusal(&error);
            return blocked(ctx, bot, status, reason, error.to_string(), retry, started).await;
        }
    };

    // 4. NATS resources, and which generations publish.
    if let Err(error) = nats::ensure(js, key, spec, &step.publishing()).await {
        return blocked(
            ctx,
            bot,
            status,
            reasons::NATS_UNREACHABLE,
            error.to_string(),
            Some(RETRY),
            started,
        )
        .await;
    }

    // 5. Apply, and prune what the plan dropped (an old generation after its hand-over).
    let uid = bot.metadata.uid.clone().unwrap_or_default();
    let applied = match apply(&ctx.client, &namespace, &planned).await {
        Ok(applied) => prune(&ctx.client, &namespace, &name, &uid, &planned)
            .await
            .map(|deleted| (applied, deleted)),
        Err(error) => Err(error),
    };
    let applied = match applied {
        Ok((applied, deleted)) => {
            if !deleted.is_empty() {
                tracing::info!(bot = %name, ?deleted, "removed what the plan no longer has");
            }
            applied
        }
        Err(error) => {
            return blocked(
                ctx,
                bot,
                status,
                reasons::APPLY_FAILED,
                error.to_string(),
                Some(RETRY),
                started,
            )
            .await;
        }
    };
    if let Step::Done { old, .. } = &step {
        nats::forget_ready(js, key, old.number, old.total).await;
        tracing::info!(bot = %name, old = old.number, "the reshard is done");
    }

    // 6. Status: counts from the children, conditions, Events on a change.
    let active = step.active();
    status.gateway_generation = Some(active.number);
    status.shards = Some(active.total);
    status.reshard = step.reshard_status();
    let workers = worker_replicas(ctx, &namespace, &name).await?;
    // The shards that report READY in the control bucket (their pods' readiness probes say the
    // same per pod, in coarser steps).
    status.ready_shards = nats::ready_shards(js, key, active.number, active.total, None)
        .await
        .ok();
    status.workers = Some(workers);
    let depth = crate::queue_depth::read(js, key, None).await;
    status.pending = depth.as_ref().ok().map(|d| d.pending());
    ctx.metrics.set_pending(&namespace, &name, status.pending);
    let resharding = match &step {
        Step::Starting { new, ready, .. } => Some((
            reasons::STARTING_GENERATION,
            format!(
                "generation {} ({} shards) starts beside generation {} ({} shards): {ready} of \
                 its shards are READY",
                new.number, new.total, active.number, active.total
            ),
        )),
        Step::HandingOver { new, .. } => Some((
            reasons::HANDING_OVER,
            format!(
                "generation {} publishes beside generation {} until the old one stops",
                new.number, active.number
            ),
        )),
        Step::BudgetLow {
            needed, remaining, ..
        } => Some((
            reasons::IDENTIFY_BUDGET_LOW,
            format!(
                "resharding to {wanted} shards needs {needed} session starts and {remaining} \
                 are left today: it waits until Discord's daily allowance resets"
            ),
        )),
        _ => None,
    };
    status.conditions = conditions(
        &Outcome::Applied,
        resharding,
        bot.metadata.generation,
        &previous.conditions,
        now,
    );
    let (scaling, reason, message) = autoscaling_condition(spec, &applied.unserved, &depth);
    status.conditions.push(condition(
        types::AUTOSCALING,
        scaling,
        reason,
        message,
        bot.metadata.generation,
        &previous.conditions,
        now,
    ));
    write_status(ctx, bot, previous, &status).await?;
    ctx.metrics.reconciled("applied", started.elapsed());
    Ok(Action::requeue(match step {
        _ if step.in_progress() => RESHARD_POLL,
        Step::BudgetLow { .. } => BUDGET_RETRY,
        // The status's queue depth stays fresh for people (autoscalers ask the operator
        // directly).
        _ if crate::plan::autoscaling::autoscaled(spec) => PENDING_REFRESH,
        _ => RESYNC,
    }))
}

/// The token from its Secret: `Ok(Err(message))` when the Secret or key is missing.
async fn read_token(
    ctx: &Context,
    namespace: &str,
    bot: &DiscordBot,
) -> Result<Result<Token, String>, ReconcileError> {
    let reference = &bot.spec.token_secret;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(secret) = secrets
        .get_opt(&reference.name)
        .await
        .map_err(ReconcileError::Kube)?
    else {
        return Ok(Err(format!(
            "Secret {namespace}/{} does not exist: create it with the bot token under key {} \
             (kubectl create secret generic {} --from-literal={}=…)",
            reference.name, reference.key, reference.name, reference.key
        )));
    };
    let token = secret
        .data
        .as_ref()
        .and_then(|data| data.get(&reference.key))
        .and_then(|bytes| std::str::from_utf8(&bytes.0).ok())
        .map(Token::new)
        .filter(|t| !t.is_empty());
    Ok(token.ok_or_else(|| {
        format!(
            "Secret {namespace}/{} has no key {} (or it is empty): put the bot token there",
            reference.name, reference.key
        )
    }))
}

/// The reason and retry of a bot that cannot be planned: without Discord's answer it is tried
/// again; an invalid spec waits for a change (retrying cannot help).
fn plan_refusal(error: &PlanError) -> (&'static str, Option<Duration>) {
    match error {
        PlanError::NeedsDiscord => (reasons::DISCORD_UNREACHABLE, Some(RETRY)),
        _ => (reasons::INVALID_SPEC, None),
    }
}

/// Worker replicas.
async fn worker_replicas(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<i32, ReconcileError> {
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(deployments
        .get_opt(&format!("{name}-worker"))
        .await
        .map_err(ReconcileError::Kube)?
        .and_then(|d| d.status)
        .and_then(|s| s.replicas)
        .unwrap_or(0))
}

/// Records a stop: conditions saying why, an Event when it is new, and when to look again
/// (`None`: when the bot changes).
async fn blocked(
    ctx: &Context,
    bot: &DiscordBot,
    mut status: DiscordBotStatus,
    reason: &'static str,
    message: String,
    retry: Option<Duration>,
    started: Instant,
) -> Result<Action, ReconcileError> {
    let previous = bot.status.clone().unwrap_or_default();
    status.conditions = conditions(
        &Outcome::Blocked {
            reason,
            message: message.clone(),
        },
        None,
        bot.metadata.generation,
        &previous.conditions,
        Timestamp::now(),
    );
    // What the autoscaler last knew stays until a reconcile gets that far again.
    status.conditions.extend(
        previous
            .conditions
            .iter()
            .filter(|c| c.type_ == types::AUTOSCALING)
            .cloned(),
    );
    tracing::info!(bot = %bot.name_any(), reason, %message, "blocked");
    write_status(ctx, bot, &previous, &status).await?;
    ctx.metrics
        .reconciled(outcome_label(reason), started.elapsed());
    Ok(retry.map_or_else(Action::await_change, Action::requeue))
}

fn outcome_label(reason: &str) -> &'static str {
    match reason {
        reasons::TOKEN_SECRET_MISSING => "token_secret_missing",
        reasons::INVALID_TOKEN => "invalid_token",
        reasons::DISCORD_UNREACHABLE => "discord_unreachable",
        reasons::NATS_UNREACHABLE => "nats_unreachable",
        reasons::INVALID_SPEC => "invalid_spec",
        _ => "apply_failed",
    }
}

/// Writes the status when it changed (server-side apply on the status subresource), and an
/// Event when the Ready or Resharding condition changed.
async fn write_status(
    ctx: &Context,
    bot: &DiscordBot,
    previous: &DiscordBotStatus,
    status: &DiscordBotStatus,
) -> Result<(), ReconcileError> {
    if previous == status {
        return Ok(());
    }
    let namespace = bot.namespace().unwrap_or_default();
    let api: Api<DiscordBot> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = json!({
        "apiVersion": DiscordBot::api_version(&()),
        "kind": DiscordBot::kind(&()),
        "status": status,
    });
    api.patch_status(
        &bot.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(ReconcileError::Kube)?;
    // An Event when Ready or Resharding changes its status or reason.
    let condition = |s: &DiscordBotStatus, type_: &str| {
        s.conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    for type_ in [types::READY, types::RESHARDING] {
        let Some((state, reason, message)) = condition(status, type_) else {
            continue;
        };
        let before = condition(previous, type_).map(|(s, r, _)| (s, r));
        if before == Some((state.clone(), reason.clone())) {
            continue;
        }
        // A first Resharding=False (Stable) says nothing a user must see.
        if type_ == types::RESHARDING && before.is_none() && state == "False" {
            continue;
        }
        let warning =
            (type_ == types::READY && state == "False") || reason == reasons::IDENTIFY_BUDGET_LOW;
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason,
            note: Some(message.chars().take(1000).collect()),
            action: if type_ == types::READY {
                "Reconcile".to_owned()
            } else {
                "Reshard".to_owned()
            },
            secondary: None,
        };
        if let Err(error) = ctx.recorder.publish(&event, &bot.object_ref(&())).await {
            tracing::warn!(%error, "publishing an Event");
        }
    }
    Ok(())
}

/// A deleted bot: its NATS resources go, unless retained.
async fn cleanup(bot: &DiscordBot, ctx: &Context) -> Result<Action, ReconcileError> {
    ctx.metrics
        .set_pending(&bot.namespace().unwrap_or_default(), &bot.name_any(), None);
    if bot.spec.nats.on_delete == NatsDeletionPolicy::Retain {
        tracing::info!(bot = %bot.name_any(), "deleted; its NATS resources are retained");
        return Ok(Action::await_change());
    }
    let namespace = bot.namespace().unwrap_or_default();
    let key = shardyard_protocol::BotKey::namespaced(&namespace, &bot.name_any()).map_err(|e| {
        ReconcileError::Cleanup(nats::NatsError::Limit {
            field: "metadata.name",
            reason: e.to_string(),
        })
    })?;
    let url = nats::bot_url(&ctx.client, &namespace, bot)
        .await
        .unwrap_or_else(|_| bot.spec.nats.url.clone());
    let client = nats::connect(&url).await.map_err(ReconcileError::Cleanup)?;
    let js = async_nats::jetstream::new(client.clone());
    nats::remove(&js, &key)
        .await
        .map_err(ReconcileError::Cleanup)?;
    let _ = client.drain().await;
    tracing::info!(bot = %bot.name_any(), "deleted; its NATS streams and buckets are removed");
    Ok(Action::await_change())
}
