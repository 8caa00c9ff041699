//! Gateway intents: which events a session receives.

use std::fmt;
use std::str::FromStr;

/// A set of gateway intents, as sent in IDENTIFY.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Intents(u64);

macro_rules! intents {
    ($($(#[$doc:meta])* $name:ident = $bit:expr;)*) => {
        impl Intents {
            $($(#[$doc])* pub const $name: Self = Self(1 << $bit);)*

            /// Every intent Discord defines, with its name.
            pub const NAMED: &'static [(&'static str, Intents)] = &[$((stringify!($name), Self::$name)),*];
        }
    };
}

intents! {
    /// Guild, channel, role and thread lifecycle events.
    GUILDS = 0;
    /// Member add, update and remove (privileged).
    GUILD_MEMBERS = 1;
    /// Audit log entries and bans.
    GUILD_MODERATION = 2;
    /// Emoji and sticker updates.
    GUILD_EXPRESSIONS = 3;
    /// Integration updates.
    GUILD_INTEGRATIONS = 4;
    /// Webhook updates.
    GUILD_WEBHOOKS = 5;
    /// Invite create and delete.
    GUILD_INVITES = 6;
    /// Voice state updates.
    GUILD_VOICE_STATES = 7;
    /// Presence updates (privileged).
    GUILD_PRESENCES = 8;
    /// Messages in guilds.
    GUILD_MESSAGES = 9;
    /// Reactions in guilds.
    GUILD_MESSAGE_REACTIONS = 10;
    /// Typing in guilds.
    GUILD_MESSAGE_TYPING = 11;
    /// Direct messages.
    DIRECT_MESSAGES = 12;
    /// Reactions in direct messages.
    DIRECT_MESSAGE_REACTIONS = 13;
    /// Typing in direct messages.
    DIRECT_MESSAGE_TYPING = 14;
    /// Message content, embeds, attachments and components (privileged).
    MESSAGE_CONTENT = 15;
    /// Scheduled events.
    GUILD_SCHEDULED_EVENTS = 16;
    /// Auto moderation configuration.
    AUTO_MODERATION_CONFIGURATION = 20;
    /// Auto moderation actions.
    AUTO_MODERATION_EXECUTION = 21;
    /// Poll votes in guilds.
    GUILD_MESSAGE_POLLS = 24;
    /// Poll votes in direct messages.
    DIRECT_MESSAGE_POLLS = 25;
}

/// An intent string that is neither a known name nor a number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown intent {0:?}: use a name such as GUILD_MESSAGES or a number")]
pub struct UnknownIntent(pub String);

impl Intents {
    /// No intents.
    pub const EMPTY: Self = Self(0);

    /// The intents Discord requires approval for.
    pub const PRIVILEGED: Self =
        Self(Self::GUILD_MEMBERS.0 | Self::GUILD_PRESENCES.0 | Self::MESSAGE_CONTENT.0);

    /// Every intent Discord defines.
    #[must_use]
    pub const fn all() -> Self {
        let mut bits = 0;
        let mut i = 0;
        while i < Self::NAMED.len() {
            bits |= Self::NAMED[i].1.0;
            i += 1;
        }
        Self(bits)
    }

    /// The intents for raw bits, keeping bits Discord does not define (so they can be refused).
    #[must_use]
    pub const fn from_bits_retain(bits: u64) -> Self {
        Self(bits)
    }

    /// The raw bits, as sent in IDENTIFY.
    #[must_use]
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether every intent of `other` is in `self`.
    #[must_use]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether `self` and `other` share an intent.
    #[must_use]
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// Bits Discord does not define.
    #[must_use]
    pub const fn unknown_bits(self) -> u64 {
        self.0 & !Self::all().0
    }

    /// The privileged intents in this set.
    #[must_use]
    pub const fn privileged(self) -> Self {
        Self(self.0 & Self::PRIVILEGED.0)
    }
}

impl std::ops::BitOr for Intents {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for Intents {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for Intents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Intents({self})")
    }
}

/// Names joined by `|`, with unknown bits as a trailing number.
impl fmt::Display for Intents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (name, intent) in Self::NAMED {
            if self.contains(*intent) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        let unknown = self.unknown_bits();
        if unknown != 0 || first {
            if !first {
                f.write_str("|")?;
            }
            write!(f, "{unknown}")?;
        }
        Ok(())
    }
}

/// Parses `GUILDS,GUILD_MESSAGES`, `GUILDS|MESSAGE_CONTENT`, `33281`, or a mix. Names are
/// case-insensitive; `ALL`, `NON_PRIVILEGED` and `PRIVILEGED` name the usual sets.
impl FromStr for Intents {
    type Err = UnknownIntent;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut intents = Self::EMPTY;
        for part in s
            .split([',', '|', ' '])
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            if let Ok(bits) = part.parse::<u64>() {
                intents |= Self(bits);
                continue;
            }
            let upper = part.to_ascii_uppercase();
            intents |= match upper.as_str() {
                "ALL" => Self::all(),
                "PRIVILEGED" => Self::PRIVILEGED,
                "NON_PRIVILEGED" => Self(Self::all().0 & !Self::PRIVILEGED.0),
                name => Self::NAMED
                    .iter()
                    .find(|(known, _)| *known == name)
                    .map(|(_, intent)| *intent)
                    .ok_or_else(|| UnknownIntent(part.to_owned()))?,
            };
        }
        Ok(intents)
    }
}

#[cfg(test)]
mod tests {
    use super::Intents;

    #[test]
    fn parses_names_numbers_and_mixes() {
        let parsed: Intents = "GUILDS,guild_messages|MESSAGE_CONTENT".parse().unwrap();
        assert_eq!(parsed.bits(), 1 | (1 << 9) | (1 << 15));
        assert_eq!("33281".parse::<Intents>().unwrap().bits(), 33281);
        assert_eq!("GUILDS, 512".parse::<Intents>().unwrap().bits(), 513);
        assert!("GUILD_MESAGES".parse::<Intents>().is_err());
    }

    #[test]
    fn privileged_set_is_members_presences_and_content() {
        let parsed: Intents = "ALL".parse().unwrap();
        assert_eq!(
            parsed.privileged(),
            Intents::GUILD_MEMBERS | Intents::GUILD_PRESENCES | Intents::MESSAGE_CONTENT
        );
        let open: Intents = "NON_PRIVILEGED".parse().unwrap();
        assert_eq!(open.privileged(), Intents::EMPTY);
    }

    #[test]
    fn unknown_bits_are_kept_and_reported() {
        let intents = Intents::from_bits_retain((1 << 9) | (1 << 40));
        assert_eq!(intents.unknown_bits(), 1 << 40);
        assert_eq!(
            intents.to_string(),
            format!("GUILD_MESSAGES|{}", 1u64 << 40)
        );
    }

    #[test]
    fn display_round_trips() {
        let intents = Intents::GUILDS | Intents::GUILD_VOICE_STATES;
        assert_eq!(intents.to_string().parse::<Intents>().unwrap(), intents);
        assert_eq!(Intents::EMPTY.to_string(), "0");
    }
}
