//! Gateway close codes and what a client must do after each.

/// What a client must do after the gateway closed its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseAction {
    /// Reconnect and resume the session (op 6).
    Resume,
    /// Reconnect and identify a new session: the old one cannot be resumed.
    NewSession,
    /// Do not reconnect: the configuration is wrong and retrying cannot help.
    Fatal,
}

/// Discord's gateway close codes (4000–4014), plus the two standard websocket codes that end a
/// session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CloseCode {
    /// 1000: a normal close. Sent by a client it ends the session.
    Normal = 1000,
    /// 1001: going away. Sent by a client it ends the session.
    GoingAway = 1001,
    /// Something went wrong; try reconnecting.
    UnknownError = 4000,
    /// An invalid opcode or an invalid payload for an opcode was sent.
    UnknownOpcode = 4001,
    /// An invalid payload was sent (or one over 4096 bytes).
    DecodeError = 4002,
    /// A payload was sent before identifying.
    NotAuthenticated = 4003,
    /// The token in IDENTIFY was wrong.
    AuthenticationFailed = 4004,
    /// More than one IDENTIFY was sent on a connection.
    AlreadyAuthenticated = 4005,
    /// The sequence sent when resuming was invalid.
    InvalidSeq = 4007,
    /// Payloads were sent too quickly (more than 120 per 60 s).
    RateLimited = 4008,
    /// The session timed out.
    SessionTimedOut = 4009,
    /// An invalid shard was sent when identifying.
    InvalidShard = 4010,
    /// The session would have handled too many guilds: more shards are needed.
    ShardingRequired = 4011,
    /// An invalid gateway API version was requested.
    InvalidApiVersion = 4012,
    /// An invalid intent was sent.
    InvalidIntents = 4013,
    /// An intent the application is not approved for was sent.
    DisallowedIntents = 4014,
}

impl CloseCode {
    /// The close code for a raw websocket close code, or `None` for codes Discord does not define.
    #[must_use]
    pub const fn from_u16(code: u16) -> Option<Self> {
        Some(match code {
            1000 => Self::Normal,
            1001 => Self::GoingAway,
            4000 => Self::UnknownError,
            4001 => Self::UnknownOpcode,
            4002 => Self::DecodeError,
            4003 => Self::NotAuthenticated,
            4004 => Self::AuthenticationFailed,
            4005 => Self::AlreadyAuthenticated,
            4007 => Self::InvalidSeq,
            4008 => Self::RateLimited,
            4009 => Self::SessionTimedOut,
            4010 => Self::InvalidShard,
            4011 => Self::ShardingRequired,
            4012 => Self::InvalidApiVersion,
            4013 => Self::InvalidIntents,
            4014 => Self::DisallowedIntents,
            _ => return None,
        })
    }

    /// The raw websocket close code.
    #[must_use]
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// What a client must do after the gateway closed with this code.
    #[must_use]
    pub const fn action(self) -> CloseAction {
        match self {
            Self::AuthenticationFailed
            | Self::InvalidShard
            | Self::ShardingRequired
            | Self::InvalidApiVersion
            | Self::InvalidIntents
            | Self::DisallowedIntents => CloseAction::Fatal,
            Self::InvalidSeq | Self::SessionTimedOut | Self::Normal | Self::GoingAway => {
                CloseAction::NewSession
            }
            Self::UnknownError
            | Self::UnknownOpcode
            | Self::DecodeError
            | Self::NotAuthenticated
            | Self::AlreadyAuthenticated
            | Self::RateLimited => CloseAction::Resume,
        }
    }

    /// A short description for logs and metrics (a bounded set of values).
    #[must_use]
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::GoingAway => "going_away",
            Self::UnknownError => "unknown_error",
            Self::UnknownOpcode => "unknown_opcode",
            Self::DecodeError => "decode_error",
            Self::NotAuthenticated => "not_authenticated",
            Self::AuthenticationFailed => "authentication_failed",
            Self::AlreadyAuthenticated => "already_authenticated",
            Self::InvalidSeq => "invalid_seq",
            Self::RateLimited => "rate_limited",
            Self::SessionTimedOut => "session_timed_out",
            Self::InvalidShard => "invalid_shard",
            Self::ShardingRequired => "sharding_required",
            Self::InvalidApiVersion => "invalid_api_version",
            Self::InvalidIntents => "invalid_intents",
            Self::DisallowedIntents => "disallowed_intents",
        }
    }
}

/// What to do after a close with any raw code: codes Discord does not define are resumable, as
/// Discord documents for everything outside its fatal list.
#[must_use]
pub const fn action_for(code: u16) -> CloseAction {
    match CloseCode::from_u16(code) {
        Some(known) => known.action(),
        None => CloseAction::Resume,
    }
}

/// The close code a client uses when it disconnects on purpose but wants to resume later (a
/// restart, a zombie connection). 1000 and 1001 would end the session.
pub const RESUMABLE_CLIENT_CLOSE: u16 = 4000;

#[cfg(test)]
mod tests {
    use super::{CloseAction, CloseCode, RESUMABLE_CLIENT_CLOSE, action_for};

    #[test]
    fn fatal_codes_never_reconnect() {
        for code in [4004, 4010, 4011, 4012, 4013, 4014] {
            assert_eq!(action_for(code), CloseAction::Fatal, "{code}");
        }
    }

    #[test]
    fn invalid_seq_and_timeout_need_a_new_session() {
        assert_eq!(action_for(4007), CloseAction::NewSession);
        assert_eq!(action_for(4009), CloseAction::NewSession);
        assert_eq!(action_for(1000), CloseAction::NewSession);
    }

    #[test]
    fn other_codes_resume() {
        for code in [4000, 4001, 4002, 4003, 4005, 4008, 1006, 1011, 4999] {
            assert_eq!(action_for(code), CloseAction::Resume, "{code}");
        }
        assert_eq!(action_for(RESUMABLE_CLIENT_CLOSE), CloseAction::Resume);
    }

    #[test]
    fn codes_round_trip() {
        for raw in 0..=u16::MAX {
            if let Some(code) = CloseCode::from_u16(raw) {
                assert_eq!(code.code(), raw);
                assert!(!code.reason().is_empty());
            }
        }
    }
}
