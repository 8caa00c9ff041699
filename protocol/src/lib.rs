//! The shared contract of shardyard: Discord's gateway rules (opcodes, close codes, intents,
//! shard math, the dispatch envelope) and every NATS name (subjects, headers, streams,
//! consumers, buckets, keys). No I/O: every other crate depends on this one.
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod close_code;
pub mod command_reply;
pub mod envelope;
mod error_chain;
pub mod intents;
pub mod interaction_reply;
pub mod names;
pub mod opcode;
pub mod shard;
pub mod token;

pub use close_code::{CloseAction, CloseCode, RESUMABLE_CLIENT_CLOSE};
pub use command_reply::CommandReply;
pub use envelope::{Envelope, EnvelopeError, read_envelope};
pub use error_chain::error_chain;
pub use intents::{Intents, UnknownIntent};
pub use interaction_reply::InteractionReply;
pub use names::{BotKey, InvalidBotKey};
pub use opcode::OpCode;
pub use shard::{
    identify_bucket, pod_count, pod_shard_range, round_up_to_concurrency, shard_for_guild,
};
pub use token::Token;

/// The Discord API version shardyard speaks, on the gateway and over REST.
pub const API_VERSION: u8 = 10;

/// The largest payload a client may send on the gateway.
pub const MAX_SEND_PAYLOAD_BYTES: usize = 4096;

/// Gateway sends allowed per connection per [`SEND_LIMIT_WINDOW_SECS`], heartbeats included.
pub const SEND_LIMIT_PER_WINDOW: u32 = 120;

/// The window of the gateway send limit, in seconds.
pub const SEND_LIMIT_WINDOW_SECS: u64 = 60;

/// The window of the identify limit: `max_concurrency` identifies per this many seconds.
pub const IDENTIFY_WINDOW_SECS: u64 = 5;

/// The suffix that ends every complete message of a zlib-stream connection.
pub const ZLIB_SUFFIX: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
