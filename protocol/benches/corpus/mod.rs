//! A Discord-shaped corpus, built in code so every run reads the same bytes: the everyday mix
//! of MESSAGE_CREATE, TYPING_START, MESSAGE_REACTION_ADD, PRESENCE_UPDATE and
//! GUILD_MEMBER_UPDATE frames, and one large GUILD_CREATE.

use std::fmt::Write;

/// A small deterministic generator, so every run benchmarks the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn snowflake(&mut self) -> String {
        (80_000_000_000_000_000 + self.below(1_200_000_000_000_000_000)).to_string()
    }

    fn name(&mut self) -> String {
        const SYLLABLES: [&str; 12] = [
            "ka", "ri", "to", "mo", "zen", "lu", "pix", "ar", "o", "ne", "shi", "van",
        ];
        (0..2 + self.below(3))
            .map(|_| SYLLABLES[self.below(12) as usize])
            .collect()
    }

    fn hash(&mut self) -> String {
        format!("{:016x}{:016x}", self.next(), self.next())
    }

    fn timestamp(&mut self) -> String {
        format!(
            "2024-0{}-{:02}T{:02}:{:02}:{:02}.{:06}+00:00",
            1 + self.below(9),
            1 + self.below(28),
            self.below(24),
            self.below(60),
            self.below(60),
            self.below(1_000_000)
        )
    }

    /// Chat text: words, sometimes a newline, a quote or an emoji, escaped as Discord does.
    fn content(&mut self, max_words: u64) -> String {
        const WORDS: [&str; 16] = [
            "the",
            "deploy",
            "is",
            "green",
            "again",
            "lol",
            "who",
            "broke",
            "prod",
            "{json}",
            "ok",
            "gg",
            "\\n",
            "\\\"quoted\\\"",
            "\u{1f680}",
            "caf\u{e9}",
        ];
        let words: Vec<&str> = (0..1 + self.below(max_words))
            .map(|_| WORDS[self.below(16) as usize])
            .collect();
        words.join(" ")
    }

    fn roles(&mut self, max: u64) -> String {
        let roles: Vec<String> = (0..self.below(max + 1))
            .map(|_| format!("\"{}\"", self.snowflake()))
            .collect();
        format!("[{}]", roles.join(","))
    }

    fn user(&mut self) -> String {
        let name = self.name();
        format!(
            r#"{{"username":"{name}","public_flags":{},"primary_guild":null,"id":"{}","global_name":"{}","display_name_styles":null,"discriminator":"0","collectibles":null,"clan":null,"avatar_decoration_data":null,"avatar":"{}"}}"#,
            self.below(2) * 64,
            self.snowflake(),
            name.to_uppercase(),
            self.hash()
        )
    }

    fn member(&mut self, with_user: bool) -> String {
        let user = if with_user {
            format!(r#""user":{},"#, self.user())
        } else {
            String::new()
        };
        format!(
            r#"{{{user}"roles":{},"premium_since":null,"pending":false,"nick":null,"mute":false,"joined_at":"{}","flags":0,"deaf":false,"communication_disabled_until":null,"unusual_dm_activity_until":null,"banner":null,"avatar":null}}"#,
            self.roles(3),
            self.timestamp()
        )
    }
}

fn frame(t: &str, s: u64, d: &str) -> String {
    format!(r#"{{"t":"{t}","s":{s},"op":0,"d":{d}}}"#)
}

fn message_create(rng: &mut Rng, s: u64) -> String {
    let d = format!(
        r#"{{"type":0,"tts":false,"timestamp":"{}","pinned":false,"nonce":"{}","mentions":[],"mention_roles":[],"mention_everyone":false,"member":{},"id":"{}","flags":0,"embeds":[],"edited_timestamp":null,"content":"{}","components":[],"channel_type":0,"channel_id":"{}","author":{},"attachments":[],"guild_id":"{}"}}"#,
        rng.timestamp(),
        rng.snowflake(),
        rng.member(false),
        rng.snowflake(),
        rng.content(24),
        rng.snowflake(),
        rng.user(),
        rng.snowflake()
    );
    frame("MESSAGE_CREATE", s, &d)
}

fn typing_start(rng: &mut Rng, s: u64) -> String {
    let d = format!(
        r#"{{"user_id":"{}","timestamp":{},"member":{},"channel_id":"{}","guild_id":"{}"}}"#,
        rng.snowflake(),
        1_714_560_000 + rng.below(10_000_000),
        rng.member(true),
        rng.snowflake(),
        rng.snowflake()
    );
    frame("TYPING_START", s, &d)
}

fn reaction_add(rng: &mut Rng, s: u64) -> String {
    let emoji = if rng.below(2) == 0 {
        r#"{"name":"👍","id":null}"#.to_owned()
    } else {
        format!(r#"{{"name":"{}","id":"{}"}}"#, rng.name(), rng.snowflake())
    };
    let d = format!(
        r#"{{"user_id":"{}","type":0,"message_id":"{}","message_author_id":"{}","member":{},"emoji":{emoji},"channel_id":"{}","burst":false,"guild_id":"{}"}}"#,
        rng.snowflake(),
        rng.snowflake(),
        rng.snowflake(),
        rng.member(true),
        rng.snowflake(),
        rng.snowflake()
    );
    frame("MESSAGE_REACTION_ADD", s, &d)
}

fn presence_update(rng: &mut Rng, s: u64) -> String {
    let activities = match rng.below(3) {
        0 => String::from("[]"),
        1 => format!(
            r#"[{{"type":4,"state":"{}","name":"Custom Status","id":"custom","emoji":null,"created_at":{}}}]"#,
            rng.content(8),
            1_714_000_000_000 + rng.below(1_000_000_000)
        ),
        _ => format!(
            r#"[{{"type":0,"timestamps":{{"start":{}}},"name":"{}","id":"{}","created_at":{},"application_id":"{}","assets":{{"large_text":"{}","large_image":"{}"}},"details":"{}"}}]"#,
            1_714_000_000_000 + rng.below(1_000_000_000),
            rng.name(),
            rng.hash(),
            1_714_000_000_000 + rng.below(1_000_000_000),
            rng.snowflake(),
            rng.content(4),
            rng.snowflake(),
            rng.content(6)
        ),
    };
    let d = format!(
        r#"{{"user":{{"id":"{}"}},"status":"online","guild_id":"{}","client_status":{{"desktop":"online","mobile":"idle"}},"activities":{activities}}}"#,
        rng.snowflake(),
        rng.snowflake()
    );
    frame("PRESENCE_UPDATE", s, &d)
}

fn member_update(rng: &mut Rng, s: u64) -> String {
    let d = format!(
        r#"{{"user":{},"roles":{},"premium_since":null,"pending":false,"nick":"{}","mute":false,"joined_at":"{}","guild_id":"{}","flags":0,"deaf":false,"communication_disabled_until":null,"banner":null,"avatar":null}}"#,
        rng.user(),
        rng.roles(6),
        rng.name(),
        rng.timestamp(),
        rng.snowflake()
    );
    frame("GUILD_MEMBER_UPDATE", s, &d)
}

/// The everyday mix: mostly messages, typing and presences.
pub(crate) fn everyday_frames() -> Vec<String> {
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    (1..=1000)
        .map(|s| match rng.below(20) {
            0..=6 => message_create(&mut rng, s),
            7..=10 => typing_start(&mut rng, s),
            11..=13 => reaction_add(&mut rng, s),
            14..=17 => presence_update(&mut rng, s),
            _ => member_update(&mut rng, s),
        })
        .collect()
}

/// A large guild as it arrives after READY: channels, roles, members, presences, emojis.
pub(crate) fn guild_create() -> String {
    let mut rng = Rng(0x0dd_ba11);
    let guild_id = rng.snowflake();
    let mut d = format!(
        r#"{{"id":"{guild_id}","name":"shardyard lounge","icon":"{}","description":"a \"big\" guild {{ with braces }} and \\ slashes","owner_id":"{}","region":"deprecated","afk_channel_id":null,"afk_timeout":300,"verification_level":1,"default_message_notifications":1,"explicit_content_filter":2,"features":["COMMUNITY","NEWS","INVITE_SPLASH","VANITY_URL","ANIMATED_ICON"],"mfa_level":1,"premium_tier":3,"premium_subscription_count":42,"preferred_locale":"en-US","nsfw_level":0,"large":true,"unavailable":false,"member_count":250000,"joined_at":"{}","#,
        rng.hash(),
        rng.snowflake(),
        rng.timestamp()
    );
    d.push_str(r#""channels":["#);
    for k in 0..300 {
        if k > 0 {
            d.push(',');
        }
        let _ = write!(
            d,
            r#"{{"version":{},"type":{},"topic":"{}","rate_limit_per_user":0,"position":{k},"permission_overwrites":[{{"type":0,"id":"{}","deny":"1024","allow":"0"}},{{"type":1,"id":"{}","deny":"0","allow":"3072"}}],"parent_id":"{}","nsfw":false,"name":"{}","last_message_id":"{}","id":"{}","flags":0}}"#,
            1_700_000_000_000 + rng.below(1_000_000_000),
            rng.below(3) * 2,
            rng.content(10),
            rng.snowflake(),
            rng.snowflake(),
            rng.snowflake(),
            rng.name(),
            rng.snowflake(),
            rng.snowflake()
        );
    }
    d.push_str(r#"],"roles":["#);
    for k in 0..150 {
        if k > 0 {
            d.push(',');
        }
        let _ = write!(
            d,
            r#"{{"version":{},"unicode_emoji":null,"tags":{{}},"position":{k},"permissions":"{}","name":"{}","mentionable":false,"managed":false,"id":"{}","icon":null,"hoist":{},"flags":0,"colors":{{"tertiary_color":null,"secondary_color":null,"primary_color":{}}},"color":{}}}"#,
            1_700_000_000_000 + rng.below(1_000_000_000),
            rng.below(1 << 40),
            rng.name(),
            rng.snowflake(),
            rng.below(2) == 0,
            rng.below(1 << 24),
            rng.below(1 << 24)
        );
    }
    d.push_str(r#"],"members":["#);
    for k in 0..600 {
        if k > 0 {
            d.push(',');
        }
        d.push_str(&rng.member(true));
    }
    d.push_str(r#"],"presences":["#);
    for k in 0..300 {
        if k > 0 {
            d.push(',');
        }
        let _ = write!(
            d,
            r#"{{"user":{{"id":"{}"}},"status":"online","client_status":{{"web":"online"}},"activities":[{{"type":4,"state":"{}","name":"Custom Status","id":"custom","created_at":{}}}]}}"#,
            rng.snowflake(),
            rng.content(6),
            1_714_000_000_000 + rng.below(1_000_000_000)
        );
    }
    d.push_str(r#"],"emojis":["#);
    for k in 0..100 {
        if k > 0 {
            d.push(',');
        }
        let _ = write!(
            d,
            r#"{{"roles":[],"require_colons":true,"name":"{}","managed":false,"id":"{}","available":true,"animated":false}}"#,
            rng.name(),
            rng.snowflake()
        );
    }
    d.push_str(r#"],"threads":[],"voice_states":[],"stickers":[],"stage_instances":[],"guild_scheduled_events":[],"soundboard_sounds":[]}"#);
    frame("GUILD_CREATE", 2, &d)
}
