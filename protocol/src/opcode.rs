//! Discord gateway opcodes (API v10).

/// A gateway opcode, the `op` field of every gateway payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    /// Receive: an event was dispatched.
    Dispatch = 0,
    /// Send/receive: keep the connection alive; received, it asks for an immediate heartbeat.
    Heartbeat = 1,
    /// Send: start a new session.
    Identify = 2,
    /// Send: update the client's presence.
    PresenceUpdate = 3,
    /// Send: join, move between or leave voice channels.
    VoiceStateUpdate = 4,
    /// Send: resume a previous session that was disconnected.
    Resume = 6,
    /// Receive: the client should reconnect and resume.
    Reconnect = 7,
    /// Send: request members of a guild.
    RequestGuildMembers = 8,
    /// Receive: the session was invalidated; `d` says whether it can be resumed.
    InvalidSession = 9,
    /// Receive: sent right after connecting, carries the heartbeat interval.
    Hello = 10,
    /// Receive: a heartbeat was received.
    HeartbeatAck = 11,
    /// Send: request soundboard sounds of guilds.
    RequestSoundboardSounds = 31,
}

impl OpCode {
    /// The opcode for a raw `op` value, or `None` for values Discord does not define.
    #[must_use]
    pub const fn from_u8(op: u8) -> Option<Self> {
        Some(match op {
            0 => Self::Dispatch,
            1 => Self::Heartbeat,
            2 => Self::Identify,
            3 => Self::PresenceUpdate,
            4 => Self::VoiceStateUpdate,
            6 => Self::Resume,
            7 => Self::Reconnect,
            8 => Self::RequestGuildMembers,
            9 => Self::InvalidSession,
            10 => Self::Hello,
            11 => Self::HeartbeatAck,
            31 => Self::RequestSoundboardSounds,
            _ => return None,
        })
    }

    /// The raw `op` value.
    #[must_use]
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// Whether a client may send this opcode to Discord.
    #[must_use]
    pub const fn is_sendable(self) -> bool {
        matches!(
            self,
            Self::Heartbeat
                | Self::Identify
                | Self::PresenceUpdate
                | Self::VoiceStateUpdate
                | Self::Resume
                | Self::RequestGuildMembers
                | Self::RequestSoundboardSounds
        )
    }
}

#[cfg(test)]
mod tests {
    use super::OpCode;

    #[test]
    fn every_defined_opcode_round_trips() {
        for raw in 0..=u8::MAX {
            if let Some(op) = OpCode::from_u8(raw) {
                assert_eq!(op.code(), raw);
            }
        }
        assert_eq!(OpCode::from_u8(5), None);
        assert_eq!(OpCode::from_u8(12), None);
    }

    #[test]
    fn only_client_opcodes_are_sendable() {
        assert!(OpCode::Identify.is_sendable());
        assert!(OpCode::Heartbeat.is_sendable());
        assert!(!OpCode::Dispatch.is_sendable());
        assert!(!OpCode::Hello.is_sendable());
        assert!(!OpCode::InvalidSession.is_sendable());
    }
}
