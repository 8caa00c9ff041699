//! Route classification: from an HTTP method and a path, the route's template (a bounded label),
//! its top-level resource ("major parameter") and how Discord authenticates and limits it.
//!
//! Pure: no clock, no state. Every input either parses or yields a [`RouteError`]; nothing here
//! can panic, and no error or `Debug` print repeats a path segment (a webhook or interaction
//! token is a secret).

use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};

/// The longest path accepted, in bytes (query string excluded).
const MAX_PATH_LEN: usize = 2048;
/// The most segments a path may have; Discord's deepest route has 7.
const MAX_SEGMENTS: usize = 12;
/// Interaction tokens are base64 of `interaction:<id>:<secret>`, so they start with this. Discord
/// does not document it; it is how a follow-up through `/webhooks/{application_id}/{token}` is
/// told apart from a webhook executed with its own token.
const INTERACTION_TOKEN_PREFIX: &str = "aW50ZXJhY3Rpb246";

/// Every literal path segment of Discord's REST API v10 (and a few older ones). A segment that is
/// neither one of these nor an id is kept in the route's bucket key but shows as `{unknown}` in
/// its template, so templates stay a bounded set of metric labels whatever a client sends.
const LITERALS: &[&str] = &[
    "@me",
    "@original",
    "active",
    "activity-instances",
    "answers",
    "applications",
    "archived",
    "attachments",
    "audit-logs",
    "auto-moderation",
    "bans",
    "bot",
    "bulk-ban",
    "bulk-delete",
    "callback",
    "channels",
    "commands",
    "connections",
    "consume",
    "crosspost",
    "emojis",
    "entitlements",
    "expire",
    "followers",
    "gateway",
    "github",
    "guilds",
    "incident-actions",
    "integrations",
    "interactions",
    "invites",
    "lobbies",
    "member",
    "members",
    "messages",
    "metadata",
    "mfa",
    "nick",
    "oauth2",
    "onboarding",
    "permissions",
    "pins",
    "polls",
    "preview",
    "private",
    "prune",
    "public",
    "reactions",
    "recipients",
    "regions",
    "role-connection",
    "role-connections",
    "roles",
    "rules",
    "scheduled-events",
    "search",
    "send-soundboard-sound",
    "skus",
    "slack",
    "soundboard-default-sounds",
    "soundboard-sounds",
    "stage-instances",
    "sticker-packs",
    "stickers",
    "subscriptions",
    "templates",
    "thread-members",
    "threads",
    "typing",
    "users",
    "vanity-url",
    "voice",
    "voice-states",
    "webhooks",
    "welcome-screen",
    "widget",
    "widget.json",
    "widget.png",
];

/// The placeholder of an id that follows `collection` (`channels` → `{channel_id}`).
fn id_placeholder(collection: Option<&str>) -> &'static str {
    match collection {
        Some("channels" | "stage-instances") => "{channel_id}",
        Some("guilds") => "{guild_id}",
        Some("messages" | "pins" | "polls") => "{message_id}",
        Some("webhooks") => "{webhook_id}",
        Some("users" | "members" | "bans" | "thread-members" | "recipients" | "voice-states") => {
            "{user_id}"
        }
        Some("roles") => "{role_id}",
        Some("emojis") => "{emoji_id}",
        Some("stickers") => "{sticker_id}",
        Some("sticker-packs") => "{pack_id}",
        Some("applications") => "{application_id}",
        Some("commands") => "{command_id}",
        Some("interactions") => "{interaction_id}",
        Some("integrations") => "{integration_id}",
        Some("threads") => "{thread_id}",
        Some("permissions") => "{overwrite_id}",
        Some("scheduled-events") => "{event_id}",
        Some("rules") => "{rule_id}",
        Some("entitlements") => "{entitlement_id}",
        Some("skus") => "{sku_id}",
        Some("subscriptions") => "{subscription_id}",
        Some("answers") => "{answer_id}",
        Some("soundboard-sounds") => "{sound_id}",
        Some("lobbies") => "{lobby_id}",
        _ => "{id}",
    }
}

/// An HTTP method Discord's REST API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
}

impl Method {
    /// Parses an upper-case method name.
    ///
    /// # Errors
    /// [`RouteError::Method`] for anything but `GET`, `POST`, `PUT`, `PATCH` and `DELETE`.
    pub fn parse(method: &str) -> Result<Self, RouteError> {
        match method {
            "GET" => Ok(Self::Get),
            "POST" => Ok(Self::Post),
            "PUT" => Ok(Self::Put),
            "PATCH" => Ok(Self::Patch),
            "DELETE" => Ok(Self::Delete),
            _ => Err(RouteError::Method),
        }
    }

    /// The method's name, upper case.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fingerprint of a secret path segment (a webhook or interaction token): equal for equal
/// tokens, and not the token.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretFingerprint(u64);

impl SecretFingerprint {
    fn of(secret: &str) -> Self {
        let mut hasher = DefaultHasher::new();
        "shardyard-rest/secret".hash(&mut hasher);
        secret.hash(&mut hasher);
        Self(hasher.finish())
    }
}

impl fmt::Debug for SecretFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretFingerprint({:016x})", self.0)
    }
}

/// The top-level resource a bucket is counted per ("major parameter"): two channels never share
/// a bucket's counter even where their routes share a bucket hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Major {
    /// No top-level resource: the bucket is per token.
    None,
    /// `/channels/{channel_id}/…`
    Channel(u64),
    /// `/guilds/{guild_id}/…`
    Guild(u64),
    /// `/webhooks/{webhook_id}` and, with its token, `/webhooks/{webhook_id}/{webhook_token}/…`
    /// (also interaction follow-ups, whose "webhook id" is the application id).
    Webhook {
        /// The webhook (or application) id.
        id: u64,
        /// The token's fingerprint, when the path carries one.
        token: Option<SecretFingerprint>,
    },
    /// `/interactions/{interaction_id}/{interaction_token}/…`
    Interaction(u64),
}

/// How Discord authenticates a route, which decides what its 401s and 404s mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// Authenticated with the bot token: counts toward the global limit; a 401 means the bot
    /// token is bad.
    Bot,
    /// A webhook addressed with its own token (`/webhooks/{id}/{token}/…`): a 401 is about the
    /// webhook, not the bot; a 404 means the webhook is gone.
    Webhook,
    /// An interaction endpoint (`/interactions/{id}/{token}/callback` or a follow-up through
    /// `/webhooks/{application_id}/{interaction_token}/…`): exempt from the global limit.
    Interaction,
}

/// Why a method and path are not a route this engine can limit. The messages never repeat the
/// path, which may hold a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Not one of the methods Discord's API uses.
    #[error("the method is not one of GET, POST, PUT, PATCH, DELETE")]
    Method,
    /// An empty path, or one that does not start with `/`.
    #[error("the path is empty or does not start with `/`")]
    NotAbsolute,
    /// Longer than 2048 bytes.
    #[error("the path is longer than 2048 bytes")]
    TooLong,
    /// More than 12 segments.
    #[error("the path has more than 12 segments")]
    TooManySegments,
    /// `//` in the path, or nothing after `/api/v{N}`.
    #[error("the path has an empty segment")]
    EmptySegment,
    /// A top-level resource id (after `channels`, `guilds`, `webhooks` or `interactions`) that is
    /// not a snowflake.
    #[error("the id of the top-level resource (segment {segment}) is not a snowflake")]
    BadMajor {
        /// Its position, counting from 1 after `/api/v{N}`.
        segment: usize,
    },
    /// `/webhooks/{id}/{token}` or `/interactions/{id}/{token}` with an empty or oversized token.
    #[error("the token in segment {segment} is empty or longer than 512 bytes")]
    BadToken {
        /// Its position, counting from 1 after `/api/v{N}`.
        segment: usize,
    },
}

/// A classified request: what the rate-limit engine keys and labels it by.
///
/// `Debug` and `Display` show the template, never a path segment as sent: tokens in the path are
/// fingerprinted, and unknown segments (kept verbatim in [`Route::bucket_key`]) are not printed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Route {
    method: Method,
    template: String,
    key: String,
    major: Major,
    kind: RouteKind,
}

fn is_snowflake(segment: &str) -> bool {
    !segment.is_empty()
        && segment.len() <= 20
        && segment.bytes().all(|b| b.is_ascii_digit())
        && segment.parse::<u64>().is_ok()
}

fn snowflake(segments: &[&str], index: usize) -> Result<u64, RouteError> {
    segments
        .get(index)
        .and_then(|s| s.parse::<u64>().ok().filter(|_| is_snowflake(s)))
        .ok_or(RouteError::BadMajor { segment: index + 1 })
}

/// `@me` and `@original`, also when percent-encoded.
fn at_literal(segment: &str) -> Option<&'static str> {
    match segment {
        "@me" | "%40me" => Some("@me"),
        "@original" | "%40original" => Some("@original"),
        _ => None,
    }
}

fn token_segment<'a>(segments: &[&'a str], index: usize) -> Result<&'a str, RouteError> {
    match segments.get(index) {
        Some(token) if !token.is_empty() && token.len() <= 512 => Ok(token),
        _ => Err(RouteError::BadToken { segment: index + 1 }),
    }
}

/// Strips a query string or fragment, and `/api` plus an optional `/v{N}`.
fn api_relative(path: &str) -> &str {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    let path = &path[..end];
    let Some(rest) = path.strip_prefix("/api") else {
        return path;
    };
    if rest.is_empty() {
        return rest;
    }
    if !rest.starts_with('/') {
        // `/apis/...` is not `/api/...`.
        return path;
    }
    let after_slash = &rest[1..];
    let segment_end = after_slash.find('/').unwrap_or(after_slash.len());
    let segment = &after_slash[..segment_end];
    let is_version = segment
        .strip_prefix('v')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if is_version {
        &after_slash[segment_end..]
    } else {
        rest
    }
}

impl Route {
    /// Classifies a request from its method and path. The path is what follows `/api/v{N}`
    /// (a leading `/api` or `/api/v{N}` is stripped too), with or without a query string.
    ///
    /// # Errors
    /// A [`RouteError`] when the method is not Discord's or the path is malformed: not absolute,
    /// too long, with empty segments, or with a top-level resource id that is not a snowflake.
    pub fn parse(method: &str, path: &str) -> Result<Self, RouteError> {
        let method = Method::parse(method)?;
        if path.len() > MAX_PATH_LEN {
            return Err(RouteError::TooLong);
        }
        let relative = api_relative(path);
        let Some(body) = relative.strip_prefix('/') else {
            return if relative.is_empty() && !path.is_empty() && path.starts_with("/api") {
                Err(RouteError::EmptySegment)
            } else {
                Err(RouteError::NotAbsolute)
            };
        };
        // One trailing slash is tolerated, as Discord does.
        let body = body.strip_suffix('/').unwrap_or(body);
        if body.is_empty() {
            return Err(RouteError::EmptySegment);
        }
        let segments: Vec<&str> = body.split('/').collect();
        if segments.len() > MAX_SEGMENTS {
            return Err(RouteError::TooManySegments);
        }
        if segments.iter().any(|s| s.is_empty()) {
            return Err(RouteError::EmptySegment);
        }

        let (major, kind) = classify(&segments)?;

        let mut template = String::with_capacity(body.len() + 16);
        let mut key = String::with_capacity(body.len() + 16);
        for (index, segment) in segments.iter().enumerate() {
            let previous = index.checked_sub(1).and_then(|i| segments.get(i)).copied();
            let (shown, kept): (&str, &str) = match placeholder(&segments, index, kind, previous) {
                Some(placeholder) => (placeholder, placeholder),
                None => match at_literal(segment) {
                    Some(literal) => (literal, literal),
                    None if LITERALS.contains(segment) => (segment, segment),
                    None => ("{unknown}", segment),
                },
            };
            template.push('/');
            template.push_str(shown);
            key.push('/');
            key.push_str(kept);
        }

        Ok(Self {
            method,
            template,
            key,
            major,
            kind,
        })
    }

    /// The HTTP method.
    #[must_use]
    pub fn method(&self) -> Method {
        self.method
    }

    /// The path with ids and tokens replaced by placeholders, e.g.
    /// `/channels/{channel_id}/messages/{message_id}`: a bounded set, fit for a metric label.
    /// Segments that are neither a known literal nor an id show as `{unknown}`.
    #[must_use]
    pub fn template(&self) -> &str {
        &self.template
    }

    /// What the engine keys a route's bucket by until Discord names it: the method and the
    /// template, with unknown literal segments kept as they are so that two different unknown
    /// routes never share a bucket. Not a metric label (it is unbounded).
    #[must_use]
    pub fn bucket_key(&self) -> String {
        format!("{} {}", self.method, self.key)
    }

    /// The top-level resource.
    #[must_use]
    pub fn major(&self) -> Major {
        self.major
    }

    /// How Discord authenticates the route.
    #[must_use]
    pub fn kind(&self) -> RouteKind {
        self.kind
    }

    /// Whether this is an interaction endpoint, exempt from the global limit.
    #[must_use]
    pub fn is_interaction(&self) -> bool {
        self.kind == RouteKind::Interaction
    }

    /// Whether this is a webhook addressed with its own token (not an interaction follow-up).
    #[must_use]
    pub fn is_webhook_with_token(&self) -> bool {
        self.kind == RouteKind::Webhook
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("method", &self.method)
            .field("template", &self.template)
            .field("major", &self.major)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.template)
    }
}

fn classify(segments: &[&str]) -> Result<(Major, RouteKind), RouteError> {
    let first = segments.first().copied().unwrap_or_default();
    match first {
        "channels" if segments.len() > 1 => {
            Ok((Major::Channel(snowflake(segments, 1)?), RouteKind::Bot))
        }
        "guilds" if segments.len() > 1 => match segments.get(1) {
            // `/guilds/templates/{template_code}`: no guild yet.
            Some(&"templates") => Ok((Major::None, RouteKind::Bot)),
            _ => Ok((Major::Guild(snowflake(segments, 1)?), RouteKind::Bot)),
        },
        "webhooks" if segments.len() > 1 => {
            let id = snowflake(segments, 1)?;
            if segments.len() == 2 {
                return Ok((Major::Webhook { id, token: None }, RouteKind::Bot));
            }
            let token = token_segment(segments, 2)?;
            let kind = if token.starts_with(INTERACTION_TOKEN_PREFIX) {
                RouteKind::Interaction
            } else {
                RouteKind::Webhook
            };
            let token = Some(SecretFingerprint::of(token));
            Ok((Major::Webhook { id, token }, kind))
        }
        "interactions" if segments.len() > 1 => {
            let id = snowflake(segments, 1)?;
            token_segment(segments, 2)?;
            Ok((Major::Interaction(id), RouteKind::Interaction))
        }
        _ => Ok((Major::None, RouteKind::Bot)),
    }
}

/// The placeholder replacing `segments[index]`, if it is an id, a token or another variable.
fn placeholder(
    segments: &[&str],
    index: usize,
    kind: RouteKind,
    previous: Option<&str>,
) -> Option<&'static str> {
    let first = segments.first().copied();
    let segment = segments.get(index).copied().unwrap_or_default();
    match (first, index) {
        (Some("webhooks"), 1) if kind == RouteKind::Interaction => {
            return Some("{application_id}");
        }
        (Some("webhooks"), 2) => {
            return Some(if kind == RouteKind::Interaction {
                "{interaction_token}"
            } else {
                "{webhook_token}"
            });
        }
        (Some("interactions"), 2) => return Some("{interaction_token}"),
        _ => {}
    }
    match previous {
        // Emoji are `name:id` or a percent-encoded unicode character.
        Some("reactions") => return Some("{emoji}"),
        Some("invites") => return Some("{invite_code}"),
        Some("templates") if first == Some("guilds") && !is_snowflake(segment) => {
            return Some("{template_code}");
        }
        _ => {}
    }
    // `/reactions/{emoji}/{user_id}`
    let after_emoji = index
        .checked_sub(2)
        .and_then(|i| segments.get(i))
        .is_some_and(|s| *s == "reactions");
    if after_emoji && is_snowflake(segment) {
        return Some("{user_id}");
    }
    is_snowflake(segment).then(|| id_placeholder(previous))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{Major, Method, Route, RouteError, RouteKind};

    const INTERACTION_TOKEN: &str = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5MDEyMzQ1Njc4OmFiY2RlZg";

    fn template(method: &str, path: &str) -> String {
        let route = Route::parse(method, path).unwrap();
        format!("{} {}", route.method(), route.template())
    }

    #[test]
    fn templates_replace_ids_and_tokens() {
        let cases = [
            ("GET", "/channels/123", "GET /channels/{channel_id}"),
            (
                "POST",
                "/channels/123/messages",
                "POST /channels/{channel_id}/messages",
            ),
            (
                "PATCH",
                "/channels/123/messages/456",
                "PATCH /channels/{channel_id}/messages/{message_id}",
            ),
            (
                "DELETE",
                "/channels/123/messages/456",
                "DELETE /channels/{channel_id}/messages/{message_id}",
            ),
            (
                "PUT",
                "/channels/123/messages/456/reactions/%F0%9F%91%8D/@me",
                "PUT /channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
            ),
            (
                "DELETE",
                "/channels/123/messages/456/reactions/name:789/999",
                "DELETE /channels/{channel_id}/messages/{message_id}/reactions/{emoji}/{user_id}",
            ),
            (
                "DELETE",
                "/channels/123/messages/456/reactions/1234",
                "DELETE /channels/{channel_id}/messages/{message_id}/reactions/{emoji}",
            ),
            (
                "GET",
                "/guilds/1/members/2",
                "GET /guilds/{guild_id}/members/{user_id}",
            ),
            (
                "PUT",
                "/guilds/1/members/2/roles/3",
                "PUT /guilds/{guild_id}/members/{user_id}/roles/{role_id}",
            ),
            (
                "PATCH",
                "/guilds/1/members/%40me",
                "PATCH /guilds/{guild_id}/members/@me",
            ),
            ("GET", "/users/@me", "GET /users/@me"),
            ("GET", "/users/@me/guilds", "GET /users/@me/guilds"),
            ("GET", "/gateway/bot", "GET /gateway/bot"),
            ("GET", "/invites/discord-api", "GET /invites/{invite_code}"),
            (
                "POST",
                "/guilds/templates/hgM48av5Q69A",
                "POST /guilds/templates/{template_code}",
            ),
            (
                "PUT",
                "/applications/1/guilds/2/commands/3/permissions",
                "PUT /applications/{application_id}/guilds/{guild_id}/commands/{command_id}/permissions",
            ),
            (
                "POST",
                "/webhooks/1/secret-webhook-token",
                "POST /webhooks/{webhook_id}/{webhook_token}",
            ),
            (
                "PATCH",
                "/webhooks/1/secret-webhook-token/messages/2",
                "PATCH /webhooks/{webhook_id}/{webhook_token}/messages/{message_id}",
            ),
            ("GET", "/webhooks/1", "GET /webhooks/{webhook_id}"),
            (
                "POST",
                "/interactions/1/tok/callback",
                "POST /interactions/{interaction_id}/{interaction_token}/callback",
            ),
            (
                "GET",
                "/channels/1/frobnicate/2",
                "GET /channels/{channel_id}/{unknown}/{id}",
            ),
        ];
        for (method, path, expected) in cases {
            assert_eq!(template(method, path), expected, "{method} {path}");
        }
        let followup = format!("/webhooks/1/{INTERACTION_TOKEN}/messages/@original");
        assert_eq!(
            template("PATCH", &followup),
            "PATCH /webhooks/{application_id}/{interaction_token}/messages/@original"
        );
    }

    #[test]
    fn api_prefix_query_and_trailing_slash_are_ignored() {
        for path in [
            "/api/v10/channels/5/messages?limit=10",
            "/api/channels/5/messages",
            "/api/v9/channels/5/messages/",
            "/channels/5/messages#x",
        ] {
            let route = Route::parse("GET", path).unwrap();
            assert_eq!(
                route.template(),
                "/channels/{channel_id}/messages",
                "{path}"
            );
            assert_eq!(route.major(), Major::Channel(5), "{path}");
        }
    }

    #[test]
    fn majors_and_kinds() {
        let channel = Route::parse("POST", "/channels/42/messages").unwrap();
        assert_eq!(channel.major(), Major::Channel(42));
        assert_eq!(channel.kind(), RouteKind::Bot);
        assert_eq!(
            Route::parse("GET", "/guilds/7/roles").unwrap().major(),
            Major::Guild(7)
        );
        assert_eq!(
            Route::parse("GET", "/users/@me").unwrap().major(),
            Major::None
        );

        let hook = Route::parse("POST", "/webhooks/9/abc").unwrap();
        assert!(hook.is_webhook_with_token());
        assert!(!hook.is_interaction());
        let other_token = Route::parse("POST", "/webhooks/9/abd").unwrap();
        assert_ne!(
            hook.major(),
            other_token.major(),
            "the token is part of the major"
        );
        let Major::Webhook {
            id: 9,
            token: Some(_),
        } = hook.major()
        else {
            panic!("webhook major expected: {:?}", hook.major());
        };

        let callback = Route::parse("POST", "/interactions/3/tok/callback").unwrap();
        assert!(callback.is_interaction());
        assert_eq!(callback.major(), Major::Interaction(3));

        let followup = Route::parse("POST", &format!("/webhooks/5/{INTERACTION_TOKEN}")).unwrap();
        assert!(followup.is_interaction());
        assert!(!followup.is_webhook_with_token());

        let managed = Route::parse("PATCH", "/webhooks/5").unwrap();
        assert_eq!(managed.kind(), RouteKind::Bot);
        assert_eq!(managed.major(), Major::Webhook { id: 5, token: None });
    }

    #[test]
    fn message_delete_has_its_own_key() {
        let path = "/channels/1/messages/2";
        let delete = Route::parse("DELETE", path).unwrap();
        let edit = Route::parse("PATCH", path).unwrap();
        let get = Route::parse("GET", path).unwrap();
        assert_ne!(delete.bucket_key(), edit.bucket_key());
        assert_ne!(delete.bucket_key(), get.bucket_key());
        assert_eq!(delete.major(), edit.major());
    }

    #[test]
    fn unknown_literals_keep_keys_apart_but_share_the_label() {
        let a = Route::parse("GET", "/channels/1/aaa").unwrap();
        let b = Route::parse("GET", "/channels/1/bbb").unwrap();
        assert_eq!(a.template(), b.template());
        assert_ne!(a.bucket_key(), b.bucket_key());
    }

    #[test]
    fn malformed_paths_are_errors() {
        let cases = [
            ("GET", "", RouteError::NotAbsolute),
            ("GET", "channels/1", RouteError::NotAbsolute),
            ("GET", "/", RouteError::EmptySegment),
            ("GET", "/api/v10", RouteError::EmptySegment),
            ("GET", "/channels//messages", RouteError::EmptySegment),
            ("GET", "/channels/abc", RouteError::BadMajor { segment: 2 }),
            (
                "GET",
                "/channels/99999999999999999999",
                RouteError::BadMajor { segment: 2 },
            ),
            ("GET", "/guilds/-1", RouteError::BadMajor { segment: 2 }),
            (
                "GET",
                "/interactions/1",
                RouteError::BadToken { segment: 3 },
            ),
            ("get", "/users/@me", RouteError::Method),
            ("TRACE", "/users/@me", RouteError::Method),
            (
                "GET",
                "/a/b/c/d/e/f/g/h/i/j/k/l/m",
                RouteError::TooManySegments,
            ),
        ];
        for (method, path, expected) in cases {
            assert_eq!(
                Route::parse(method, path),
                Err(expected),
                "{method} {path:?}"
            );
        }
        let long = format!("/channels/1/{}", "x".repeat(3000));
        assert_eq!(Route::parse("GET", &long), Err(RouteError::TooLong));
    }

    #[test]
    fn secrets_never_show() {
        let route = Route::parse("POST", "/webhooks/1/super-secret-token/messages/2").unwrap();
        let printed = format!("{route:?} {route}");
        assert!(!printed.contains("super-secret"), "{printed}");
        // Even a token where no token belongs (an unknown segment) is not printed.
        let odd = Route::parse("GET", "/x/super-secret-token").unwrap();
        let printed = format!("{odd:?} {odd}");
        assert!(!printed.contains("super-secret"), "{printed}");
        assert!(!route.bucket_key().contains("super-secret"));
        let err = Route::parse("POST", "/webhooks/x/super-secret-token").unwrap_err();
        assert!(!err.to_string().contains("super-secret"));
    }

    #[test]
    fn methods_round_trip() {
        for m in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            assert_eq!(Method::parse(m).unwrap().as_str(), m);
        }
    }

    proptest! {
        #[test]
        fn any_input_parses_or_errs(method in ".{0,8}", path in ".{0,300}") {
            let _ = Route::parse(&method, &path);
        }

        #[test]
        fn path_shaped_input_parses_or_errs(
            method in prop::sample::select(vec!["GET", "POST", "PUT", "PATCH", "DELETE"]),
            segments in prop::collection::vec(
                prop_oneof![
                    Just("channels".to_owned()),
                    Just("guilds".to_owned()),
                    Just("webhooks".to_owned()),
                    Just("interactions".to_owned()),
                    Just("reactions".to_owned()),
                    Just("@me".to_owned()),
                    Just(String::new()),
                    "[0-9]{1,22}",
                    "[a-zA-Z0-9%:_.-]{1,12}",
                    "aW50ZXJhY3Rpb246[a-z]{0,4}",
                ],
                0..15,
            ),
            prefix in prop::sample::select(vec!["", "/api", "/api/v10"]),
        ) {
            let path = format!("{prefix}/{}", segments.join("/"));
            if let Ok(route) = Route::parse(method, &path) {
                // Templates only hold known literals and placeholders.
                for part in route.template().split('/').skip(1) {
                    prop_assert!(
                        part.starts_with('{') || super::LITERALS.contains(&part)
                            || part == "@me" || part == "@original",
                        "unexpected template part {part:?}"
                    );
                }
            }
        }
    }
}
