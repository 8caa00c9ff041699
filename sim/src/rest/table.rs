//! Every route the simulated API serves, with its bucket and the rules the gate applies to it.
//! The module doc of [`crate::rest`] shows the same table.

use std::time::Duration;

use super::ratelimit::BucketGroup;

/// How the gate treats one route.
#[derive(Debug)]
pub(crate) struct RouteSpec {
    /// HTTP method.
    pub(crate) method: &'static str,
    /// The path template under `/api/v10`, with axum's `{param}` captures.
    pub(crate) template: &'static str,
    /// Its bucket, if it is rate limited.
    pub(crate) bucket: Option<&'static BucketGroup>,
    /// The path parameter naming the top-level resource the bucket is counted per.
    pub(crate) major: Option<&'static str>,
    /// The top-level resource is a token rather than a snowflake: counted per its XXH3-64
    /// digest (so neither counters nor headers carry the token).
    pub(crate) major_is_token: bool,
    /// Needs `Authorization: Bot <token>`. A bucketed route without it is counted per resource
    /// alone, whoever asks (as Discord counts its webhook routes).
    pub(crate) auth: bool,
    /// Counts toward the per-token global limit.
    pub(crate) global: bool,
    /// A real route (not the 404/405 fallbacks).
    pub(crate) known: bool,
}

impl RouteSpec {
    /// `"GET /channels/{channel_id}"`.
    pub(crate) fn key(&self) -> String {
        format!("{} {}", self.method, self.template)
    }
}

const fn group(name: &'static str, limit: u32, window_ms: u64) -> BucketGroup {
    BucketGroup {
        name,
        limit,
        window: Duration::from_millis(window_ms),
    }
}

pub(crate) static GATEWAY_BOT_BUCKET: BucketGroup = group("gateway_bot", 5, 5_000);
pub(crate) static CURRENT_USER_BUCKET: BucketGroup = group("current_user", 5, 1_000);
pub(crate) static CURRENT_USER_GUILDS_BUCKET: BucketGroup = group("current_user_guilds", 1, 1_000);
pub(crate) static CHANNEL_BUCKET: BucketGroup = group("channel", 5, 1_000);
pub(crate) static MESSAGES_READ_BUCKET: BucketGroup = group("messages_read", 5, 1_000);
pub(crate) static MESSAGE_CREATE_BUCKET: BucketGroup = group("message_create", 5, 5_000);
pub(crate) static MESSAGE_MODIFY_BUCKET: BucketGroup = group("message_modify", 5, 5_000);
pub(crate) static REACTIONS_BUCKET: BucketGroup = group("reactions", 1, 250);
pub(crate) static GUILD_BUCKET: BucketGroup = group("guild", 5, 1_000);
pub(crate) static GUILD_ROLES_BUCKET: BucketGroup = group("guild_roles", 5, 1_000);
pub(crate) static MEMBERS_LIST_BUCKET: BucketGroup = group("members_list", 10, 10_000);
pub(crate) static MEMBER_BUCKET: BucketGroup = group("member", 5, 1_000);
pub(crate) static CURRENT_APPLICATION_BUCKET: BucketGroup = group("current_application", 5, 1_000);
pub(crate) static OAUTH2_APPLICATION_BUCKET: BucketGroup = group("oauth2_application", 5, 1_000);
pub(crate) static COMMANDS_READ_BUCKET: BucketGroup = group("commands_read", 5, 1_000);
pub(crate) static COMMANDS_OVERWRITE_BUCKET: BucketGroup = group("commands_overwrite", 5, 20_000);
pub(crate) static CURRENT_APPLICATION_EDIT_BUCKET: BucketGroup =
    group("current_application_edit", 5, 5_000);
pub(crate) static INTERACTION_WEBHOOK_BUCKET: BucketGroup = group("interaction_webhook", 5, 2_000);

const fn route(
    method: &'static str,
    template: &'static str,
    bucket: &'static BucketGroup,
    major: Option<&'static str>,
) -> RouteSpec {
    RouteSpec {
        method,
        template,
        bucket: Some(bucket),
        major,
        major_is_token: false,
        auth: true,
        global: true,
        known: true,
    }
}

const CHANNEL: Option<&str> = Some("channel_id");
const GUILD: Option<&str> = Some("guild_id");

pub(crate) static GET_GATEWAY: RouteSpec = RouteSpec {
    method: "GET",
    template: "/gateway",
    bucket: None,
    major: None,
    major_is_token: false,
    auth: false,
    global: false,
    known: true,
};
pub(crate) static GET_GATEWAY_BOT: RouteSpec =
    route("GET", "/gateway/bot", &GATEWAY_BOT_BUCKET, None);
pub(crate) static GET_CURRENT_USER: RouteSpec =
    route("GET", "/users/@me", &CURRENT_USER_BUCKET, None);
pub(crate) static GET_CURRENT_USER_GUILDS: RouteSpec = route(
    "GET",
    "/users/@me/guilds",
    &CURRENT_USER_GUILDS_BUCKET,
    None,
);
pub(crate) static GET_CHANNEL: RouteSpec =
    route("GET", "/channels/{channel_id}", &CHANNEL_BUCKET, CHANNEL);
pub(crate) static LIST_MESSAGES: RouteSpec = route(
    "GET",
    "/channels/{channel_id}/messages",
    &MESSAGES_READ_BUCKET,
    CHANNEL,
);
pub(crate) static CREATE_MESSAGE: RouteSpec = route(
    "POST",
    "/channels/{channel_id}/messages",
    &MESSAGE_CREATE_BUCKET,
    CHANNEL,
);
pub(crate) static GET_MESSAGE: RouteSpec = route(
    "GET",
    "/channels/{channel_id}/messages/{message_id}",
    &MESSAGES_READ_BUCKET,
    CHANNEL,
);
pub(crate) static EDIT_MESSAGE: RouteSpec = route(
    "PATCH",
    "/channels/{channel_id}/messages/{message_id}",
    &MESSAGE_MODIFY_BUCKET,
    CHANNEL,
);
pub(crate) static DELETE_MESSAGE: RouteSpec = route(
    "DELETE",
    "/channels/{channel_id}/messages/{message_id}",
    &MESSAGE_MODIFY_BUCKET,
    CHANNEL,
);
pub(crate) static ADD_REACTION: RouteSpec = route(
    "PUT",
    "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
    &REACTIONS_BUCKET,
    CHANNEL,
);
pub(crate) static REMOVE_REACTION: RouteSpec = route(
    "DELETE",
    "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
    &REACTIONS_BUCKET,
    CHANNEL,
);
pub(crate) static GET_GUILD: RouteSpec = route("GET", "/guilds/{guild_id}", &GUILD_BUCKET, GUILD);
pub(crate) static GET_GUILD_CHANNELS: RouteSpec =
    route("GET", "/guilds/{guild_id}/channels", &GUILD_BUCKET, GUILD);
pub(crate) static LIST_MEMBERS: RouteSpec = route(
    "GET",
    "/guilds/{guild_id}/members",
    &MEMBERS_LIST_BUCKET,
    GUILD,
);
pub(crate) static GET_MEMBER: RouteSpec = route(
    "GET",
    "/guilds/{guild_id}/members/{user_id}",
    &MEMBER_BUCKET,
    GUILD,
);
pub(crate) static GET_GUILD_ROLES: RouteSpec = route(
    "GET",
    "/guilds/{guild_id}/roles",
    &GUILD_ROLES_BUCKET,
    GUILD,
);
pub(crate) static GET_CURRENT_APPLICATION: RouteSpec = route(
    "GET",
    "/applications/@me",
    &CURRENT_APPLICATION_BUCKET,
    None,
);
pub(crate) static EDIT_CURRENT_APPLICATION: RouteSpec = route(
    "PATCH",
    "/applications/@me",
    &CURRENT_APPLICATION_EDIT_BUCKET,
    None,
);
pub(crate) static GET_OAUTH2_APPLICATION: RouteSpec = route(
    "GET",
    "/oauth2/applications/@me",
    &OAUTH2_APPLICATION_BUCKET,
    None,
);
pub(crate) static GET_GLOBAL_COMMANDS: RouteSpec = route(
    "GET",
    "/applications/{application_id}/commands",
    &COMMANDS_READ_BUCKET,
    None,
);
pub(crate) static SET_GLOBAL_COMMANDS: RouteSpec = route(
    "PUT",
    "/applications/{application_id}/commands",
    &COMMANDS_OVERWRITE_BUCKET,
    None,
);
pub(crate) static GET_GUILD_COMMANDS: RouteSpec = route(
    "GET",
    "/applications/{application_id}/guilds/{guild_id}/commands",
    &COMMANDS_READ_BUCKET,
    GUILD,
);
pub(crate) static SET_GUILD_COMMANDS: RouteSpec = route(
    "PUT",
    "/applications/{application_id}/guilds/{guild_id}/commands",
    &COMMANDS_OVERWRITE_BUCKET,
    GUILD,
);
pub(crate) static INTERACTION_CALLBACK: RouteSpec = RouteSpec {
    method: "POST",
    template: "/interactions/{interaction_id}/{interaction_token}/callback",
    bucket: None,
    major: None,
    major_is_token: false,
    auth: false,
    global: false,
    known: true,
};
/// An interaction webhook route: no Authorization (the token in the path authenticates), not
/// under the global limit, a bucket per interaction token.
const fn interaction_webhook(method: &'static str) -> RouteSpec {
    RouteSpec {
        method,
        template: "/webhooks/{application_id}/{interaction_token}/messages/@original",
        bucket: Some(&INTERACTION_WEBHOOK_BUCKET),
        major: Some("interaction_token"),
        major_is_token: true,
        auth: false,
        global: false,
        known: true,
    }
}
pub(crate) static GET_ORIGINAL_RESPONSE: RouteSpec = interaction_webhook("GET");
pub(crate) static EDIT_ORIGINAL_RESPONSE: RouteSpec = interaction_webhook("PATCH");
pub(crate) static NOT_FOUND: RouteSpec = RouteSpec {
    method: "*",
    template: "*",
    bucket: None,
    major: None,
    major_is_token: false,
    auth: false,
    global: false,
    known: false,
};

/// Every real route.
#[cfg(test)]
pub(crate) static ROUTES: &[&RouteSpec] = &[
    &GET_GATEWAY,
    &GET_GATEWAY_BOT,
    &GET_CURRENT_USER,
    &GET_CURRENT_USER_GUILDS,
    &GET_CHANNEL,
    &LIST_MESSAGES,
    &CREATE_MESSAGE,
    &GET_MESSAGE,
    &EDIT_MESSAGE,
    &DELETE_MESSAGE,
    &ADD_REACTION,
    &REMOVE_REACTION,
    &GET_GUILD,
    &GET_GUILD_CHANNELS,
    &LIST_MEMBERS,
    &GET_MEMBER,
    &GET_GUILD_ROLES,
    &GET_CURRENT_APPLICATION,
    &EDIT_CURRENT_APPLICATION,
    &GET_OAUTH2_APPLICATION,
    &GET_GLOBAL_COMMANDS,
    &SET_GLOBAL_COMMANDS,
    &GET_GUILD_COMMANDS,
    &SET_GUILD_COMMANDS,
    &INTERACTION_CALLBACK,
    &GET_ORIGINAL_RESPONSE,
    &EDIT_ORIGINAL_RESPONSE,
];
