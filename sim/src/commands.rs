//! Application commands a bot registered: global ones and per guild, as the bulk overwrite routes
//! (`PUT /applications/{id}/commands`, `PUT /applications/{id}/guilds/{id}/commands`) leave them.
//!
//! A bulk overwrite replaces the whole list of its scope. A command that already existed with the
//! same type and name (or whose `id` the client named) keeps its id; its `version` changes only
//! when something about it changed, as Discord's "autoincrementing version identifier updated
//! during substantial record changes" does. Validation happens before (`rest/commands.rs`): what
//! reaches [`CommandRegistry::overwrite`] is valid.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::snowflake::{SnowflakeGenerator, as_string, opt_string};

/// Application command types.
pub mod command_kind {
    /// A slash command.
    pub const CHAT_INPUT: u8 = 1;
    /// A user's context menu command.
    pub const USER: u8 = 2;
    /// A message's context menu command.
    pub const MESSAGE: u8 = 3;
}

/// What a client asked for one command, validated and with Discord's defaults filled in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandSpec {
    /// Permission bits a member needs, as a decimal string; `None` is `null` (everyone).
    pub default_member_permissions: Option<String>,
    /// [`command_kind`].
    #[serde(rename = "type")]
    pub kind: u8,
    /// Its name.
    pub name: String,
    /// Localized names, as sent (`null` when none).
    pub name_localizations: Option<Value>,
    /// Its description; empty for `USER` and `MESSAGE` commands.
    pub description: String,
    /// Localized descriptions, as sent (`null` when none).
    pub description_localizations: Option<Value>,
    /// Global commands only (deprecated by Discord for `contexts`, still answered): default `true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dm_permission: Option<bool>,
    /// Global commands only: the interaction contexts as sent, `null` when not given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contexts: Option<Value>,
    /// Global commands only: installation contexts, `[0]` (guild install) by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integration_types: Option<Value>,
    /// `CHAT_INPUT` options, as sent; absent from the answer when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<Value>,
    /// Age-restricted.
    pub nsfw: bool,
}

/// A registered command, in Discord's application command object shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApplicationCommand {
    /// Snowflake, stable for as long as a command of its type and name exists.
    #[serde(with = "as_string")]
    pub id: u64,
    /// The application it belongs to.
    #[serde(with = "as_string")]
    pub application_id: u64,
    /// Changes whenever the command changes.
    #[serde(with = "as_string")]
    pub version: u64,
    /// Everything the client chose.
    #[serde(flatten)]
    pub spec: CommandSpec,
    /// The guild of a guild command; absent for global ones.
    #[serde(with = "opt_string", skip_serializing_if = "Option::is_none")]
    pub guild_id: Option<u64>,
}

impl ApplicationCommand {
    /// The JSON answer: with `localizations` false the `*_localizations` dictionaries are left
    /// out, as `GET` answers them without `with_localizations=true`.
    #[must_use]
    pub fn to_json(&self, localizations: bool) -> Value {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        if !localizations && let Some(obj) = value.as_object_mut() {
            obj.remove("name_localizations");
            obj.remove("description_localizations");
        }
        value
    }
}

/// One command of a bulk overwrite: the id the client named, if any, and what it wants.
#[derive(Debug, Clone, PartialEq)]
pub struct WantedCommand {
    /// `id` in the body: "ID of the command, if known" (keeps the id across a rename).
    pub id: Option<u64>,
    /// The command.
    pub spec: CommandSpec,
}

/// The commands of one application.
#[derive(Debug, Default)]
pub struct CommandRegistry {
    global: Vec<ApplicationCommand>,
    guilds: BTreeMap<u64, Vec<ApplicationCommand>>,
    overwrites: u64,
}

impl CommandRegistry {
    /// The global commands, in the order of the last overwrite.
    #[must_use]
    pub fn global(&self) -> &[ApplicationCommand] {
        &self.global
    }

    /// The commands of `guild`.
    #[must_use]
    pub fn guild(&self, guild: u64) -> &[ApplicationCommand] {
        self.guilds.get(&guild).map_or(&[], Vec::as_slice)
    }

    /// Every guild's commands, by guild id (guilds without any are left out).
    pub fn guilds(&self) -> impl Iterator<Item = (u64, &[ApplicationCommand])> {
        self.guilds
            .iter()
            .filter(|(_, list)| !list.is_empty())
            .map(|(id, list)| (*id, list.as_slice()))
    }

    /// Successful bulk overwrites so far, global and guild.
    #[must_use]
    pub fn overwrites(&self) -> u64 {
        self.overwrites
    }

    /// The command a user of `guild` runs by `name`: the guild's own command first, then the
    /// global one (Discord lets both exist).
    #[must_use]
    pub fn find(&self, guild: Option<u64>, kind: u8, name: &str) -> Option<&ApplicationCommand> {
        let matches = |c: &&ApplicationCommand| c.spec.kind == kind && c.spec.name == name;
        guild
            .and_then(|g| self.guild(g).iter().find(matches))
            .or_else(|| self.global.iter().find(matches))
    }

    /// Replaces the commands of a scope (`guild`, or global for `None`) with `wanted`; answers
    /// the new list. Ids come from `ids`.
    pub fn overwrite(
        &mut self,
        application_id: u64,
        guild: Option<u64>,
        wanted: Vec<WantedCommand>,
        ids: &SnowflakeGenerator,
    ) -> &[ApplicationCommand] {
        let old = match guild {
            Some(g) => self.guilds.remove(&g).unwrap_or_default(),
            None => std::mem::take(&mut self.global),
        };
        let mut taken = vec![false; old.len()];
        let mut new = Vec::with_capacity(wanted.len());
        for WantedCommand { id, spec } in wanted {
            let free = |i: &usize| !taken[*i];
            let previous = id
                .and_then(|id| (0..old.len()).filter(free).find(|i| old[*i].id == id))
                .or_else(|| {
                    (0..old.len())
                        .filter(free)
                        .find(|i| old[*i].spec.kind == spec.kind && old[*i].spec.name == spec.name)
                });
            let command = match previous {
                Some(i) => {
                    taken[i] = true;
                    let was = &old[i];
                    ApplicationCommand {
                        id: was.id,
                        application_id,
                        version: if was.spec == spec {
                            was.version
                        } else {
                            ids.next()
                        },
                        spec,
                        guild_id: guild,
                    }
                }
                None => ApplicationCommand {
                    id: ids.next(),
                    application_id,
                    version: ids.next(),
                    spec,
                    guild_id: guild,
                },
            };
            new.push(command);
        }
        self.overwrites += 1;
        match guild {
            Some(g) => self.guilds.entry(g).or_insert(new),
            None => {
                self.global = new;
                &mut self.global
            }
        }
    }

    /// Forgets a guild's commands (the application left it).
    pub fn remove_guild(&mut self, guild: u64) {
        self.guilds.remove(&guild);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(kind: u8, name: &str, description: &str) -> CommandSpec {
        CommandSpec {
            default_member_permissions: None,
            kind,
            name: name.to_owned(),
            name_localizations: None,
            description: description.to_owned(),
            description_localizations: None,
            dm_permission: Some(true),
            contexts: Some(Value::Null),
            integration_types: Some(json!([0])),
            options: Vec::new(),
            nsfw: false,
        }
    }

    fn wanted(kind: u8, name: &str, description: &str) -> WantedCommand {
        WantedCommand {
            id: None,
            spec: spec(kind, name, description),
        }
    }

    #[test]
    fn ids_are_kept_per_type_and_name_and_versions_follow_changes() {
        let ids = SnowflakeGenerator::new(1);
        let mut registry = CommandRegistry::default();
        let first = registry
            .overwrite(
                7,
                None,
                vec![
                    wanted(command_kind::CHAT_INPUT, "ping", "Replies with pong"),
                    wanted(command_kind::USER, "ping", ""),
                ],
                &ids,
            )
            .to_vec();
        assert_ne!(first[0].id, first[1].id, "one id per type");
        let second = registry
            .overwrite(
                7,
                None,
                vec![
                    wanted(command_kind::USER, "ping", ""),
                    wanted(command_kind::CHAT_INPUT, "ping", "Now different"),
                    wanted(command_kind::CHAT_INPUT, "new", "A new one"),
                ],
                &ids,
            )
            .to_vec();
        assert_eq!(second[0], first[1], "unchanged: same id and version");
        assert_eq!(second[1].id, first[0].id);
        assert_ne!(second[1].version, first[0].version, "changed: new version");
        assert!(second[2].id != first[0].id && second[2].id != first[1].id);
        assert_eq!(registry.overwrites(), 2);
        let gone = registry.overwrite(7, None, Vec::new(), &ids);
        assert!(gone.is_empty());
    }

    #[test]
    fn a_named_id_survives_a_rename_and_guilds_are_their_own_scope() {
        let ids = SnowflakeGenerator::new(1);
        let mut registry = CommandRegistry::default();
        let global = registry.overwrite(7, None, vec![wanted(1, "ping", "p")], &ids)[0].clone();
        let guild = registry.overwrite(7, Some(42), vec![wanted(1, "ping", "p")], &ids)[0].clone();
        assert_ne!(global.id, guild.id, "a guild's ping is another command");
        assert_eq!(guild.guild_id, Some(42));
        assert_eq!(
            registry.find(Some(42), 1, "ping").map(|c| c.id),
            Some(guild.id)
        );
        assert_eq!(
            registry.find(Some(43), 1, "ping").map(|c| c.id),
            Some(global.id)
        );
        let renamed = registry.overwrite(
            7,
            None,
            vec![WantedCommand {
                id: Some(global.id),
                spec: spec(1, "pong", "p"),
            }],
            &ids,
        );
        assert_eq!(renamed[0].id, global.id);
        assert_eq!(registry.guild(42).len(), 1, "the global overwrite left it");
        registry.remove_guild(42);
        assert!(registry.guild(42).is_empty());
    }

    #[test]
    fn get_answers_leave_the_localizations_out() {
        let command = ApplicationCommand {
            id: 1,
            application_id: 2,
            version: 3,
            spec: spec(1, "ping", "p"),
            guild_id: None,
        };
        let full = command.to_json(true);
        assert_eq!(full["id"], "1");
        assert_eq!(full["application_id"], "2");
        assert_eq!(full["type"], 1);
        assert!(full["name_localizations"].is_null());
        assert!(full.get("name_localizations").is_some());
        assert!(full.get("guild_id").is_none());
        assert!(full.get("options").is_none());
        assert_eq!(full["dm_permission"], true);
        assert!(command.to_json(false).get("name_localizations").is_none());
    }
}
