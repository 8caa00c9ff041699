//! Ordering mode: events of one guild run one at a time, in stream order, while different
//! guilds run concurrently. [`order_key`] says which lane an event belongs to; [`Lanes`] queues
//! the events of a busy lane behind the one running.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use serde::Deserialize;
use twilight_model::id::Id;
use twilight_model::id::marker::GenericMarker;

/// The lane of an event under ordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderKey {
    /// Events of one guild.
    Guild(u64),
    /// Events without a guild (DMs, a few others) of one channel.
    Channel(u64),
}

/// The top-level ids an event's payload may carry; everything else is skipped unparsed.
#[derive(Deserialize)]
struct Ids {
    #[serde(default)]
    id: Option<Id<GenericMarker>>,
    #[serde(default)]
    guild_id: Option<Id<GenericMarker>>,
    #[serde(default)]
    channel_id: Option<Id<GenericMarker>>,
}

/// The lane of an event: its guild (`guild_id`, or `id` for `GUILD_CREATE`, `GUILD_UPDATE` and
/// `GUILD_DELETE`, whose payload is the guild), else its channel, else none (it runs
/// unordered). A payload that is not a JSON object has none either; its handler will say why.
#[must_use]
pub fn order_key(event_type: &str, payload: &[u8]) -> Option<OrderKey> {
    // serde would read a struct from an array too: only an object has ids.
    if payload.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    let Ok(ids) = serde_json::from_slice::<Ids>(payload) else {
        return None;
    };
    let guild = match event_type {
        "GUILD_CREATE" | "GUILD_UPDATE" | "GUILD_DELETE" => ids.id.or(ids.guild_id),
        _ => ids.guild_id,
    };
    guild
        .map(|g| OrderKey::Guild(g.get()))
        .or_else(|| ids.channel_id.map(|c| OrderKey::Channel(c.get())))
}

/// Per-key FIFO lanes: at most one item of a key runs at a time; the others wait in arrival
/// order. Pure bookkeeping: the caller runs what it is handed.
#[derive(Debug)]
pub(crate) struct Lanes<K, T> {
    waiting: HashMap<K, VecDeque<T>>,
}

impl<K: Eq + Hash + Clone, T> Default for Lanes<K, T> {
    fn default() -> Self {
        Self {
            waiting: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash + Clone, T> Lanes<K, T> {
    /// An item arrives: handed back to run now when its lane is idle (the lane is then busy),
    /// else queued behind the lane's running and waiting items (`None`).
    pub(crate) fn push(&mut self, key: K, item: T) -> Option<T> {
        match self.waiting.get_mut(&key) {
            Some(queue) => {
                queue.push_back(item);
                None
            }
            None => {
                self.waiting.insert(key, VecDeque::new());
                Some(item)
            }
        }
    }

    /// The running item of `key` finished: the lane's next item to run, or `None` when none
    /// waits (the lane is then idle).
    pub(crate) fn next(&mut self, key: &K) -> Option<T> {
        let queue = self.waiting.get_mut(key)?;
        let next = queue.pop_front();
        if next.is_none() {
            self.waiting.remove(key);
        }
        next
    }

    /// The items waiting behind `key`'s running one.
    pub(crate) fn waiting(&self, key: &K) -> impl Iterator<Item = &T> {
        self.waiting.get(key).into_iter().flatten()
    }

    /// Busy lanes.
    #[cfg(test)]
    fn busy(&self) -> usize {
        self.waiting.len()
    }

    /// Every waiting item of every lane, taken out (on shutdown, to hand them back). Running
    /// items stay running; their lanes stay busy until they finish.
    pub(crate) fn take_waiting(&mut self) -> Vec<T> {
        self.waiting.values_mut().flat_map(std::mem::take).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_keyed_by_guild_then_channel() {
        let message =
            br#"{"id":"9","channel_id":"5","guild_id":"7","content":"hi","author":{"id":"1"}}"#;
        assert_eq!(
            order_key("MESSAGE_CREATE", message),
            Some(OrderKey::Guild(7))
        );
        let guild = br#"{"id":"7","name":"g","channels":[{"id":"3","guild_id":"8"}]}"#;
        assert_eq!(order_key("GUILD_CREATE", guild), Some(OrderKey::Guild(7)));
        assert_eq!(
            order_key("GUILD_DELETE", br#"{"id":"7","unavailable":true}"#),
            Some(OrderKey::Guild(7))
        );
        let dm = br#"{"id":"9","channel_id":"5","content":"hi"}"#;
        assert_eq!(order_key("MESSAGE_CREATE", dm), Some(OrderKey::Channel(5)));
        assert_eq!(
            order_key("USER_UPDATE", br#"{"id":"1","username":"x"}"#),
            None
        );
        assert_eq!(order_key("MESSAGE_CREATE", b"[1,2]"), None);
        assert_eq!(order_key("MESSAGE_CREATE", b"garbage"), None);
        assert_eq!(
            order_key("MESSAGE_CREATE", br#"{"guild_id":{"x":1}}"#),
            None
        );
    }

    #[test]
    fn a_busy_lane_queues_in_arrival_order_and_others_run() {
        let mut lanes = Lanes::default();
        assert_eq!(lanes.push("a", 1), Some(1));
        assert_eq!(lanes.push("a", 2), None);
        assert_eq!(lanes.push("b", 10), Some(10), "another guild runs at once");
        assert_eq!(lanes.push("a", 3), None);
        assert_eq!(lanes.waiting(&"a").copied().collect::<Vec<_>>(), [2, 3]);
        assert_eq!(lanes.busy(), 2);
        assert_eq!(lanes.next(&"a"), Some(2));
        assert_eq!(lanes.next(&"b"), None);
        assert_eq!(lanes.push("a", 4), None, "still busy with 2");
        assert_eq!(lanes.next(&"a"), Some(3));
        assert_eq!(lanes.next(&"a"), Some(4));
        assert_eq!(lanes.next(&"a"), None);
        assert_eq!(lanes.busy(), 0);
        assert_eq!(lanes.push("a", 5), Some(5), "idle again");
    }

    #[test]
    fn shutdown_takes_every_waiting_item() {
        let mut lanes = Lanes::default();
        lanes.push(1, 'a');
        lanes.push(1, 'b');
        lanes.push(2, 'c');
        lanes.push(2, 'd');
        let mut taken = lanes.take_waiting();
        taken.sort_unstable();
        assert_eq!(taken, ['b', 'd']);
        assert_eq!(lanes.next(&1), None);
        assert_eq!(lanes.next(&2), None);
    }
}
