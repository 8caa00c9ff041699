//! IDENTIFY and RESUME, checked in the order Discord checks them.

use std::sync::Arc;

use rand::Rng;
use serde::{Deserialize, Serialize};
use shardyard_protocol::{CloseCode, Intents, OpCode, shard_for_guild};

use super::connection::{Connection, Flow};
use crate::bot::IdentifyRefusal;
use crate::model::User;
use crate::session::{Event, ReplayLimits, Session};
use crate::snowflake::as_string;
use crate::world::MAX_GUILDS_PER_SHARD;

#[derive(Deserialize)]
struct Identify {
    token: String,
    #[allow(dead_code)] // required by Discord; its content does not matter here
    properties: serde_json::Value,
    #[serde(default)]
    large_threshold: Option<u64>,
    #[serde(default)]
    shard: Option<[u64; 2]>,
    #[serde(default)]
    intents: Option<u64>,
}

#[derive(Deserialize)]
struct Resume {
    token: String,
    session_id: String,
    seq: Option<u64>,
}

#[derive(Serialize)]
struct Ready<'a> {
    v: u8,
    user: ReadyUser<'a>,
    guilds: Vec<UnavailableGuild>,
    session_id: &'a str,
    session_type: &'static str,
    resume_gateway_url: String,
    shard: [u32; 2],
    application: ReadyApplication,
    private_channels: [(); 0],
    relationships: [(); 0],
    presences: [(); 0],
    guild_join_requests: [(); 0],
    user_settings: serde_json::Map<String, serde_json::Value>,
    geo_ordered_rtc_regions: [&'static str; 2],
    _trace: [&'static str; 1],
}

#[derive(Serialize)]
struct ReadyUser<'a> {
    #[serde(flatten)]
    user: &'a User,
    verified: bool,
    mfa_enabled: bool,
    flags: u64,
    email: Option<()>,
    locale: &'static str,
}

#[derive(Serialize)]
struct UnavailableGuild {
    #[serde(with = "as_string")]
    id: u64,
    unavailable: bool,
}

#[derive(Serialize)]
struct ReadyApplication {
    #[serde(with = "as_string")]
    id: u64,
    flags: u64,
}

#[derive(Serialize)]
struct Resumed {
    _trace: [&'static str; 1],
}

fn new_session_id() -> String {
    format!("{:032x}", rand::rng().random::<u128>())
}

impl Connection {
    /// Parses an IDENTIFY or RESUME and finds the bot its token belongs to, closing with 4002
    /// (unreadable) or 4004 (unknown token) otherwise.
    async fn authenticate<T: serde::de::DeserializeOwned>(
        &mut self,
        data: &str,
        token: impl Fn(&T) -> &str,
    ) -> Option<(T, Arc<crate::bot::BotState>)> {
        let Ok(payload) = serde_json::from_str::<T>(data) else {
            self.close(
                CloseCode::DecodeError.code(),
                "Error while decoding payload",
            )
            .await;
            return None;
        };
        let Some(bot) = self.state.bot_by_token(token(&payload)).cloned() else {
            self.close(
                CloseCode::AuthenticationFailed.code(),
                "Authentication failed.",
            )
            .await;
            return None;
        };
        self.bot = Some(bot.clone());
        Some((payload, bot))
    }

    pub(super) async fn on_identify(&mut self, data: &str) -> Flow {
        let Some((identify, bot)) = self.authenticate::<Identify>(data, |i| &i.token).await else {
            return Flow::Stop;
        };
        let [shard, total] = identify.shard.unwrap_or([0, 1]);
        let (Ok(shard), Ok(total)) = (u32::try_from(shard), u32::try_from(total)) else {
            self.close(CloseCode::InvalidShard.code(), "Invalid shard")
                .await;
            return Flow::Stop;
        };
        if total == 0 || shard >= total {
            self.close(CloseCode::InvalidShard.code(), "Invalid shard")
                .await;
            return Flow::Stop;
        }
        let intents = match identify.intents.map(Intents::from_bits_retain) {
            Some(intents) if intents.unknown_bits() == 0 => intents,
            _ => {
                self.close(CloseCode::InvalidIntents.code(), "Invalid intent(s).")
                    .await;
                return Flow::Stop;
            }
        };
        if !bot.config.privileged_intents.contains(intents.privileged()) {
            self.close(CloseCode::DisallowedIntents.code(), "Disallowed intent(s).")
                .await;
            return Flow::Stop;
        }
        let guild_ids: Vec<u64> = bot
            .world()
            .guild_ids()
            .iter()
            .copied()
            .filter(|g| shard_for_guild(*g, total) == shard)
            .collect();
        if guild_ids.len() > MAX_GUILDS_PER_SHARD {
            self.close(CloseCode::ShardingRequired.code(), "Sharding required.")
                .await;
            return Flow::Stop;
        }
        match bot.book_identify(shard) {
            Ok(()) => {}
            Err(refusal) => {
                let (kind, detail) = match refusal {
                    IdentifyRefusal::TooFast => (
                        "identify_too_fast",
                        format!(
                            "identify of shard {shard} less than 5 s after another in bucket {} (max_concurrency {})",
                            shardyard_protocol::identify_bucket(shard, bot.config.max_concurrency),
                            bot.config.max_concurrency
                        ),
                    ),
                    IdentifyRefusal::BudgetExhausted => (
                        "session_start_limit_exhausted",
                        format!("identify of shard {shard} with no session starts remaining"),
                    ),
                };
                self.state
                    .violations
                    .record(kind, Some(&bot.config.name), Some(shard), detail);
                return self.send_op(OpCode::InvalidSession, "false").await;
            }
        }

        let large_threshold =
            usize::try_from(identify.large_threshold.unwrap_or(50).clamp(50, 250)).unwrap_or(50);
        let stats = bot.shard_stats(shard, total);
        let session = Arc::new(Session::new(
            new_session_id(),
            shard,
            total,
            intents,
            large_threshold,
            stats.clone(),
            ReplayLimits {
                events: self.state.config.replay_buffer,
                bytes: self.state.config.replay_buffer_bytes,
            },
        ));
        session.link().conn = Some((self.id, self.ctl_tx.clone()));
        stats.update(|c| {
            c.identifies += 1;
            c.sessions += 1;
        });

        // READY, then a GUILD_CREATE per guild, pushed before the session is visible to the
        // traffic generator so nothing can come between them.
        let (ready, creates) = {
            let world = bot.world();
            let ready = Event::json(
                "READY",
                &Ready {
                    v: 10,
                    user: ReadyUser {
                        user: &world.bot_user,
                        verified: true,
                        mfa_enabled: false,
                        flags: 0,
                        email: None,
                        locale: "en-US",
                    },
                    guilds: guild_ids
                        .iter()
                        .map(|id| UnavailableGuild {
                            id: *id,
                            unavailable: true,
                        })
                        .collect(),
                    session_id: &session.id,
                    session_type: "normal",
                    resume_gateway_url: self.state.resume_url(),
                    shard: [shard, total],
                    application: ReadyApplication {
                        id: world.application_id,
                        flags: 0,
                    },
                    private_channels: [],
                    relationships: [],
                    presences: [],
                    guild_join_requests: [],
                    user_settings: serde_json::Map::new(),
                    geo_ordered_rtc_regions: ["us-east", "us-central"],
                    _trace: ["[\"shardyard-sim\"]"],
                },
            );
            let creates: Vec<_> = if intents.contains(Intents::GUILDS) {
                guild_ids
                    .iter()
                    .filter_map(|id| world.guilds.get(id))
                    .map(|g| {
                        Event::json(
                            "GUILD_CREATE",
                            &g.create_payload(large_threshold, world.bot_user.id),
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            };
            (ready, creates)
        };
        session.push(ready);
        for create in creates {
            session.push(create);
        }
        bot.add_session(session.clone());
        self.session = Some(session);
        self.cursor = 0;
        self.replay_until = 0;
        tracing::debug!(conn = self.id, bot = %bot.config.name, shard, total, "identified");
        self.flush_events().await
    }

    pub(super) async fn on_resume(&mut self, data: &str) -> Flow {
        let Some((resume, bot)) = self.authenticate::<Resume>(data, |r| &r.token).await else {
            return Flow::Stop;
        };
        let Some(session) = bot.session(&resume.session_id) else {
            return self.send_op(OpCode::InvalidSession, "false").await;
        };
        if !session.is_alive(self.state.resume_window()) {
            bot.remove_session(&session.id);
            return self.send_op(OpCode::InvalidSession, "false").await;
        }
        let seq = resume.seq.unwrap_or(0);
        let (resumable, beyond) = {
            let log = session.log();
            (log.can_resume_from(seq), seq > log.max_sent)
        };
        if beyond {
            self.session = Some(session);
            self.close(CloseCode::InvalidSeq.code(), "Invalid seq")
                .await;
            return Flow::Stop;
        }
        if !resumable {
            bot.remove_session(&session.id);
            return self.send_op(OpCode::InvalidSession, "false").await;
        }
        if !self.setup.on_resume_url {
            self.state.violations.record(
                "resume_not_on_resume_gateway_url",
                Some(&bot.config.name),
                Some(session.shard),
                "RESUME sent to the gateway url instead of READY's resume_gateway_url".into(),
            );
        }
        // Take the session over; an older connection still holding it is dropped.
        {
            let mut link = session.link();
            if let Some((_, old)) = link.conn.take() {
                let _ = old.send(crate::session::ConnControl::Drop);
            }
            link.conn = Some((self.id, self.ctl_tx.clone()));
            link.detached_at = None;
        }
        session.stats.update(|c| c.resumes += 1);
        self.replay_until = session.log().last_seq();
        session.push(Event::json(
            "RESUMED",
            &Resumed {
                _trace: ["[\"shardyard-sim\"]"],
            },
        ));
        self.cursor = seq;
        self.session = Some(session);
        tracing::debug!(conn = self.id, bot = %bot.config.name, seq, "resumed");
        self.flush_events().await
    }
}
