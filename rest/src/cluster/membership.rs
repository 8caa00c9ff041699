//! Who the replicas are: announcements heard on the members subject, and the view every
//! replica computes from them. Pure: time comes in as an argument.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// What a replica publishes on the members subject: a heartbeat (`gone: false`), or that a
/// replica is gone (itself on shutdown, or a peer that could not reach it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The replica's id, random per process.
    pub id: String,
    /// Where the replica lends permits (`http://ip:port`); empty on a `gone`.
    #[serde(default)]
    pub url: String,
    /// The replica is gone.
    #[serde(default)]
    pub gone: bool,
}

/// A replica of the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its id.
    pub id: String,
    /// Where it lends permits (`http://host:port` of its listener).
    pub url: String,
}

impl AsRef<str> for Member {
    fn as_ref(&self) -> &str {
        &self.id
    }
}

#[derive(Debug, Clone)]
struct Peer {
    url: String,
    last_heard: Instant,
}

/// This replica and the peers heard within the time-to-live.
#[derive(Debug, Clone)]
pub struct Members {
    me: Member,
    peers: BTreeMap<String, Peer>,
    ttl: Duration,
}

impl Members {
    /// Only this replica, forgetting peers not heard for `ttl`.
    #[must_use]
    pub fn new(me: Member, ttl: Duration) -> Self {
        Self {
            me,
            peers: BTreeMap::new(),
            ttl,
        }
    }

    /// This replica.
    #[must_use]
    pub fn me(&self) -> &Member {
        &self.me
    }

    /// An announcement heard at `now`; whether the view changed. Announcements about this
    /// replica are not taken here (see [`Announcement`]'s handling in the cluster).
    pub fn hear(&mut self, announcement: &Announcement, now: Instant) -> bool {
        if announcement.id == self.me.id {
            return false;
        }
        if announcement.gone {
            return self.peers.remove(&announcement.id).is_some();
        }
        match self.peers.get_mut(&announcement.id) {
            Some(peer) => {
                peer.last_heard = peer.last_heard.max(now);
                if peer.url == announcement.url {
                    false
                } else {
                    peer.url.clone_from(&announcement.url);
                    true
                }
            }
            None => {
                self.peers.insert(
                    announcement.id.clone(),
                    Peer {
                        url: announcement.url.clone(),
                        last_heard: now,
                    },
                );
                true
            }
        }
    }

    /// Forgets `id` (it could not be reached); whether it was a member.
    pub fn remove(&mut self, id: &str) -> bool {
        self.peers.remove(id).is_some()
    }

    /// Forgets peers not heard since `now - ttl`; whether any was. The cluster passes the
    /// time it last heard itself as `now`, so that NATS going away expires nobody.
    pub fn expire(&mut self, now: Instant) -> bool {
        let before = self.peers.len();
        let ttl = self.ttl;
        self.peers
            .retain(|_, peer| now.saturating_duration_since(peer.last_heard) < ttl);
        self.peers.len() != before
    }

    /// Every member, this replica included, ordered by id.
    #[must_use]
    pub fn list(&self) -> Vec<Member> {
        let mut list: Vec<Member> = self
            .peers
            .iter()
            .map(|(id, peer)| Member {
                id: id.clone(),
                url: peer.url.clone(),
            })
            .chain(std::iter::once(self.me.clone()))
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str) -> Member {
        Member {
            id: id.to_owned(),
            url: format!("http://{id}"),
        }
    }

    fn beat(id: &str) -> Announcement {
        Announcement {
            id: id.to_owned(),
            url: format!("http://{id}"),
            gone: false,
        }
    }

    fn ids(members: &Members) -> Vec<String> {
        members.list().into_iter().map(|m| m.id).collect()
    }

    #[test]
    fn peers_join_on_their_first_heartbeat_and_leave_after_the_ttl() {
        let t0 = Instant::now();
        let mut members = Members::new(member("b"), Duration::from_secs(3));
        assert_eq!(ids(&members), ["b"]);
        assert!(members.hear(&beat("a"), t0));
        assert!(!members.hear(&beat("a"), t0 + Duration::from_secs(1)));
        assert!(members.hear(&beat("c"), t0 + Duration::from_secs(1)));
        assert_eq!(ids(&members), ["a", "b", "c"]);
        assert!(!members.expire(t0 + Duration::from_millis(3_900)));
        assert!(!members.hear(&beat("c"), t0 + Duration::from_secs(3)));
        assert!(members.expire(t0 + Duration::from_millis(4_100)));
        assert_eq!(ids(&members), ["b", "c"]);
        assert!(members.expire(t0 + Duration::from_secs(7)));
        assert_eq!(ids(&members), ["b"]);
    }

    #[test]
    fn gone_and_unreachable_peers_leave_at_once_and_come_back_on_a_heartbeat() {
        let t0 = Instant::now();
        let mut members = Members::new(member("b"), Duration::from_secs(3));
        members.hear(&beat("a"), t0);
        members.hear(&beat("c"), t0);
        let gone = Announcement {
            id: "a".to_owned(),
            url: String::new(),
            gone: true,
        };
        assert!(members.hear(&gone, t0));
        assert!(!members.hear(&gone, t0));
        assert!(members.remove("c"));
        assert!(!members.remove("c"));
        assert_eq!(ids(&members), ["b"]);
        assert!(members.hear(&beat("c"), t0));
        assert_eq!(ids(&members), ["b", "c"]);
    }

    #[test]
    fn announcements_about_this_replica_do_not_change_the_view() {
        let mut members = Members::new(member("b"), Duration::from_secs(3));
        let gone = Announcement {
            id: "b".to_owned(),
            url: String::new(),
            gone: true,
        };
        assert!(!members.hear(&gone, Instant::now()));
        assert!(!members.hear(&beat("b"), Instant::now()));
        assert_eq!(ids(&members), ["b"]);
    }

    #[test]
    fn a_new_address_changes_the_view() {
        let t0 = Instant::now();
        let mut members = Members::new(member("b"), Duration::from_secs(3));
        members.hear(&beat("a"), t0);
        let moved = Announcement {
            url: "http://elsewhere".to_owned(),
            ..beat("a")
        };
        assert!(members.hear(&moved, t0));
        assert_eq!(members.list()[0].url, "http://elsewhere");
    }

    #[test]
    fn announcements_round_trip_as_json() {
        let text = serde_json::to_string(&beat("a")).unwrap();
        assert_eq!(
            serde_json::from_str::<Announcement>(&text).unwrap(),
            beat("a")
        );
        let gone: Announcement = serde_json::from_str(r#"{"id":"x","gone":true}"#).unwrap();
        assert!(gone.gone && gone.url.is_empty());
    }
}
