//! Commands a bot sends on an identified connection: presence update, request guild members,
//! voice state update, request soundboard sounds.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use shardyard_protocol::{CloseCode, Intents, OpCode, shard_for_guild};
use tokio::time::Instant;

use super::connection::{Connection, Flow};
use crate::bot::Dispatch;
use crate::model::Member;
use crate::payload::VoiceState;
use crate::session::Event;
use crate::snowflake::as_string;

/// Members per GUILD_MEMBERS_CHUNK.
const CHUNK_SIZE: usize = 1000;
/// How often one session may ask for a whole guild's member list.
const ALL_MEMBERS_INTERVAL: Duration = Duration::from_secs(30);

const STATUSES: &[&str] = &["online", "dnd", "idle", "invisible", "offline"];

#[derive(Deserialize)]
struct PresenceUpdate {
    since: Option<u64>,
    activities: Vec<serde_json::Value>,
    status: String,
    afk: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(#[serde(with = "as_string")] u64),
    Many(Vec<IdStr>),
}

#[derive(Deserialize)]
struct IdStr(#[serde(with = "as_string")] u64);

#[derive(Deserialize)]
struct RequestGuildMembers {
    #[serde(with = "as_string")]
    guild_id: u64,
    query: Option<String>,
    limit: Option<u64>,
    #[serde(default)]
    presences: bool,
    user_ids: Option<OneOrMany>,
    nonce: Option<String>,
}

#[derive(Deserialize)]
struct VoiceStateUpdate {
    #[serde(with = "as_string")]
    guild_id: u64,
    channel_id: Option<IdStr>,
    self_mute: bool,
    self_deaf: bool,
}

#[derive(Deserialize)]
struct RequestSoundboardSounds {
    guild_ids: Vec<IdStr>,
}

#[derive(Serialize)]
struct MembersChunk<'a> {
    #[serde(with = "as_string")]
    guild_id: u64,
    members: Vec<&'a Member>,
    chunk_index: usize,
    chunk_count: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    not_found: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presences: Option<[(); 0]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
}

#[derive(Serialize)]
struct RateLimited<'a> {
    opcode: u8,
    retry_after: f64,
    meta: RateLimitedMeta<'a>,
}

#[derive(Serialize)]
struct RateLimitedMeta<'a> {
    #[serde(with = "as_string")]
    guild_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
}

#[derive(Serialize)]
struct VoiceServerUpdate {
    token: String,
    #[serde(with = "as_string")]
    guild_id: u64,
    endpoint: String,
}

#[derive(Serialize)]
struct SoundboardSounds {
    soundboard_sounds: [(); 0],
    #[serde(with = "as_string")]
    guild_id: u64,
}

impl Connection {
    pub(super) async fn on_command(&mut self, op: OpCode, data: &str) -> Flow {
        let handled = match op {
            OpCode::PresenceUpdate => self.presence_update(data),
            OpCode::RequestGuildMembers => self.request_guild_members(data),
            OpCode::VoiceStateUpdate => self.voice_state_update(data),
            OpCode::RequestSoundboardSounds => self.request_soundboard_sounds(data),
            _ => Err("Unknown opcode"),
        };
        match handled {
            Ok(()) => self.flush_events().await,
            Err(reason) => {
                let code = if reason == "Unknown opcode" {
                    CloseCode::UnknownOpcode
                } else {
                    CloseCode::DecodeError
                };
                self.close(code.code(), reason).await;
                Flow::Stop
            }
        }
    }

    fn presence_update(&mut self, data: &str) -> Result<(), &'static str> {
        let presence: PresenceUpdate =
            serde_json::from_str(data).map_err(|_| "Invalid presence update payload")?;
        if !STATUSES.contains(&presence.status.as_str()) {
            return Err("Invalid presence status");
        }
        let _ = (presence.since, presence.afk, presence.activities.len());
        self.count_command("presence_update");
        if let Some(session) = &self.session {
            session
                .stats
                .update(|c| c.last_presence_status = Some(presence.status));
        }
        Ok(())
    }

    fn request_guild_members(&mut self, data: &str) -> Result<(), &'static str> {
        let request: RequestGuildMembers =
            serde_json::from_str(data).map_err(|_| "Invalid request guild members payload")?;
        let (Some(bot), Some(session)) = (self.bot.clone(), self.session.clone()) else {
            return Ok(());
        };
        if request.query.is_none() && request.user_ids.is_none() {
            return Err("request guild members needs query or user_ids");
        }
        self.count_command("request_guild_members");
        // Discord answers only for guilds of this shard.
        if shard_for_guild(request.guild_id, session.total) != session.shard {
            return Ok(());
        }
        let all_members = request.user_ids.is_none()
            && request.query.as_deref() == Some("")
            && request.limit.unwrap_or(0) == 0;
        if all_members && !session.intents.contains(Intents::GUILD_MEMBERS) {
            return Err("requesting all members needs the GUILD_MEMBERS intent");
        }
        if all_members {
            let now = Instant::now();
            if let Some(last) = self.member_requests.get(&request.guild_id)
                && now.duration_since(*last) < ALL_MEMBERS_INTERVAL
            {
                let retry_after = (ALL_MEMBERS_INTERVAL - now.duration_since(*last)).as_secs_f64();
                session.push(Event::json(
                    "RATE_LIMITED",
                    &RateLimited {
                        opcode: OpCode::RequestGuildMembers.code(),
                        retry_after: (retry_after * 1000.0).round() / 1000.0,
                        meta: RateLimitedMeta {
                            guild_id: request.guild_id,
                            nonce: request.nonce.as_deref(),
                        },
                    },
                ));
                return Ok(());
            }
            self.member_requests.insert(request.guild_id, now);
        }
        let world = bot.world();
        let Some(guild) = world.guilds.get(&request.guild_id) else {
            return Ok(());
        };
        let mut not_found = Vec::new();
        let members: Vec<&Member> = match &request.user_ids {
            Some(ids) => {
                let ids: Vec<u64> = match ids {
                    OneOrMany::One(id) => vec![*id],
                    OneOrMany::Many(ids) => ids.iter().take(100).map(|i| i.0).collect(),
                };
                ids.into_iter()
                    .filter_map(|id| {
                        let found = guild.members.get(&id);
                        if found.is_none() {
                            not_found.push(id.to_string());
                        }
                        found
                    })
                    .collect()
            }
            None => {
                let query = request.query.as_deref().unwrap_or("").to_lowercase();
                let limit = match request.limit.unwrap_or(0) {
                    0 if query.is_empty() => usize::MAX,
                    0 => 100,
                    n => usize::try_from(n.min(100)).unwrap_or(100),
                };
                guild
                    .members
                    .values()
                    .filter(|m| {
                        m.user.username.to_lowercase().starts_with(&query)
                            || m.nick
                                .as_deref()
                                .is_some_and(|n| n.to_lowercase().starts_with(&query))
                    })
                    .take(limit)
                    .collect()
            }
        };
        let chunks: Vec<&[&Member]> = if members.is_empty() {
            vec![&[]]
        } else {
            members.chunks(CHUNK_SIZE).collect()
        };
        let count = chunks.len();
        let events: Vec<_> = chunks
            .into_iter()
            .enumerate()
            .map(|(index, chunk)| {
                Event::json(
                    "GUILD_MEMBERS_CHUNK",
                    &MembersChunk {
                        guild_id: guild.id,
                        members: chunk.to_vec(),
                        chunk_index: index,
                        chunk_count: count,
                        not_found: if index == 0 {
                            std::mem::take(&mut not_found)
                        } else {
                            Vec::new()
                        },
                        presences: request.presences.then_some([]),
                        nonce: request.nonce.as_deref(),
                    },
                )
            })
            .collect();
        drop(world);
        for event in events {
            session.push(event);
        }
        Ok(())
    }

    fn voice_state_update(&mut self, data: &str) -> Result<(), &'static str> {
        let update: VoiceStateUpdate =
            serde_json::from_str(data).map_err(|_| "Invalid voice state update payload")?;
        let (Some(bot), Some(session)) = (self.bot.clone(), self.session.clone()) else {
            return Ok(());
        };
        self.count_command("voice_state_update");
        let channel = update.channel_id.map(|c| c.0);
        let dispatch = {
            let mut world = bot.world();
            let bot_id = world.bot_user.id;
            let Some(guild) = world.guilds.get_mut(&update.guild_id) else {
                return Ok(());
            };
            match channel {
                Some(channel) if guild.channels.contains_key(&channel) => {
                    guild.voice_states.insert(bot_id, channel);
                }
                Some(_) => return Ok(()),
                None => {
                    guild.voice_states.remove(&bot_id);
                }
            }
            let Some(member) = guild.members.get(&bot_id) else {
                return Ok(());
            };
            Dispatch {
                guild: Some(update.guild_id),
                intents: Intents::GUILD_VOICE_STATES,
                event: Event::json(
                    "VOICE_STATE_UPDATE",
                    &VoiceState {
                        session_id: session.id.clone(),
                        self_deaf: update.self_deaf,
                        self_mute: update.self_mute,
                        ..VoiceState::new(bot_id, channel).in_guild(update.guild_id, member)
                    },
                ),
                without_content: None,
            }
        };
        bot.dispatch(&dispatch);
        if channel.is_some() {
            session.push(Event::json(
                "VOICE_SERVER_UPDATE",
                &VoiceServerUpdate {
                    token: format!("{:016x}", rand::random::<u64>()),
                    guild_id: update.guild_id,
                    endpoint: "voice.sim.invalid:443".into(),
                },
            ));
        }
        Ok(())
    }

    fn request_soundboard_sounds(&mut self, data: &str) -> Result<(), &'static str> {
        let request: RequestSoundboardSounds =
            serde_json::from_str(data).map_err(|_| "Invalid request soundboard sounds payload")?;
        let Some(session) = self.session.clone() else {
            return Ok(());
        };
        self.count_command("request_soundboard_sounds");
        for guild in request.guild_ids {
            session.push(Event::json(
                "SOUNDBOARD_SOUNDS",
                &SoundboardSounds {
                    soundboard_sounds: [],
                    guild_id: guild.0,
                },
            ));
        }
        Ok(())
    }
}
