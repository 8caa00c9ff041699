//! Simulator configuration: one or more bots, each with its own token, application id, guilds
//! and limits, plus the knobs that make Discord's timing testable.

use serde::Deserialize;
use shardyard_protocol::{Intents, Token};

/// The whole simulator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// The bots (tokens) the simulator knows.
    pub bots: Vec<BotConfig>,
    /// HELLO's heartbeat interval, in milliseconds (Discord: 41,250).
    pub heartbeat_interval_ms: u64,
    /// How long a disconnected session stays resumable, in seconds.
    pub resume_window_secs: u64,
    /// How many dispatches a session keeps for replay; older ones cannot be resumed past.
    pub replay_buffer: usize,
    /// How many bytes of payload a session keeps for replay (the tighter of the two applies).
    pub replay_buffer_bytes: usize,
    /// Invalid REST requests (401, 403, non-shared 429) per IP per 10 minutes before the
    /// Cloudflare-style ban (Discord: 10,000).
    pub invalid_request_limit: u32,
    /// How long a banned IP stays banned, in seconds.
    pub ban_secs: u64,
    /// Seed for the generated world and traffic.
    pub seed: u64,
    /// The base URL clients reach the simulator at (`http://shardyard-sim.default.svc:8450`),
    /// when it is not the address it listens on: in a cluster, a pod cannot reach the bind
    /// address. `/gateway` and `/gateway/bot` hand out its `ws://…/gateway`, READY its
    /// `ws://…/resume`.
    pub advertise_url: Option<String>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            bots: vec![BotConfig::default()],
            heartbeat_interval_ms: 41_250,
            resume_window_secs: 180,
            replay_buffer: 200_000,
            replay_buffer_bytes: 32 << 20,
            invalid_request_limit: 10_000,
            ban_secs: 3600,
            seed: 1,
            advertise_url: None,
        }
    }
}

/// One bot (one token).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BotConfig {
    /// A name for logs and `/_sim/` calls (`?bot=NAME`).
    pub name: String,
    /// The bot token clients must present.
    #[serde(deserialize_with = "token")]
    pub token: Token,
    /// The application (and bot user) id; derived from the bot's position when 0.
    pub application_id: u64,
    /// Guilds the bot is in.
    pub guilds: u32,
    /// Average members per guild.
    pub members_per_guild: u32,
    /// `session_start_limit.max_concurrency`.
    pub max_concurrency: u32,
    /// `session_start_limit.total` per day.
    pub session_start_total: u32,
    /// Privileged intents this application is approved for (names or bits).
    #[serde(deserialize_with = "intents")]
    pub privileged_intents: Intents,
    /// Background dispatches per second across the bot's guilds (0: none).
    pub events_per_second: f64,
    /// REST requests per second per token before the global 429 (Discord: 50).
    pub global_rate_limit: u32,
}

impl std::fmt::Debug for BotConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotConfig")
            .field("name", &self.name)
            .field("token", &self.token)
            .field("application_id", &self.application_id)
            .field("guilds", &self.guilds)
            .field("max_concurrency", &self.max_concurrency)
            .field("events_per_second", &self.events_per_second)
            .finish_non_exhaustive()
    }
}

impl Default for BotConfig {
    fn default() -> Self {
        Self {
            name: "bot".into(),
            token: Token::new("sim-token"),
            application_id: 0,
            guilds: 10,
            members_per_guild: 20,
            max_concurrency: 1,
            session_start_total: 1000,
            privileged_intents: Intents::PRIVILEGED,
            events_per_second: 0.0,
            global_rate_limit: 50,
        }
    }
}

fn token<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Token, D::Error> {
    let raw = String::deserialize(d)?;
    Ok(Token::new(&raw))
}

fn intents<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Intents, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bits(u64),
        Names(String),
    }
    match Raw::deserialize(d)? {
        Raw::Bits(bits) => Ok(Intents::from_bits_retain(bits)),
        Raw::Names(names) => names.parse().map_err(serde::de::Error::custom),
    }
}

impl SimConfig {
    /// Reads a JSON config file's text.
    ///
    /// # Errors
    /// When the text is not valid JSON of this shape, or names a bot twice.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let mut config: Self = serde_json::from_str(text).map_err(ConfigError::Parse)?;
        config.fill_defaults()?;
        Ok(config)
    }

    /// Gives each bot without one an application id and checks names and tokens are unique.
    ///
    /// # Errors
    /// [`ConfigError::Duplicate`] when two bots share a name or a token; [`ConfigError::NoBots`]
    /// when there are none.
    pub fn fill_defaults(&mut self) -> Result<(), ConfigError> {
        if self.bots.is_empty() {
            return Err(ConfigError::NoBots);
        }
        for (i, bot) in self.bots.iter_mut().enumerate() {
            if bot.application_id == 0 {
                bot.application_id = 1_100_000_000_000_000_000 + i as u64 * 1_000_003;
            }
            bot.max_concurrency = bot.max_concurrency.max(1);
        }
        for (i, a) in self.bots.iter().enumerate() {
            for b in &self.bots[i + 1..] {
                if a.name == b.name {
                    return Err(ConfigError::Duplicate(format!("bot name {:?}", a.name)));
                }
                if a.token == b.token {
                    return Err(ConfigError::Duplicate(format!(
                        "token of bots {:?} and {:?}",
                        a.name, b.name
                    )));
                }
            }
        }
        Ok(())
    }
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is not valid.
    #[error("invalid simulator config")]
    Parse(#[source] serde_json::Error),
    /// Two bots share something that must be unique.
    #[error("two bots share a {0}")]
    Duplicate(String),
    /// No bot at all.
    #[error("the simulator needs at least one bot")]
    NoBots,
}

#[cfg(test)]
mod tests {
    use super::SimConfig;

    #[test]
    fn config_file_with_several_bots() {
        let config = SimConfig::from_json(
            r#"{"bots":[{"name":"a","token":"ta","guilds":3},{"name":"b","token":"tb","max_concurrency":4,"privileged_intents":"GUILD_MEMBERS"}]}"#,
        )
        .unwrap();
        assert_eq!(config.bots.len(), 2);
        assert_ne!(config.bots[0].application_id, config.bots[1].application_id);
        assert_eq!(config.bots[1].max_concurrency, 4);
        assert_eq!(config.bots[1].privileged_intents.bits(), 2);
        assert!(
            !format!("{config:?}").contains("ta\""),
            "token leaked into Debug"
        );
    }

    #[test]
    fn duplicate_tokens_are_refused() {
        let err =
            SimConfig::from_json(r#"{"bots":[{"name":"a","token":"t"},{"name":"b","token":"t"}]}"#)
                .unwrap_err();
        assert!(err.to_string().contains("token"));
        assert!(!err.to_string().contains("\"t\""));
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(SimConfig::from_json(r#"{"bots":[{"nme":"a"}]}"#).is_err());
    }
}
