//! Rendezvous (highest-random-weight) hashing: a key belongs to the member with the highest
//! `weight(member, key)`. Every replica that sees the same members picks the same owner, and
//! a membership change moves only the keys of the member that came or went. Pure and stable
//! across processes and builds (no `std` hasher, whose algorithm may change between releases).

/// FNV-1a over `bytes`, from `state`.
fn fnv1a(mut state: u64, bytes: &[u8]) -> u64 {
    for byte in bytes {
        state ^= u64::from(*byte);
        state = state.wrapping_mul(0x0100_0000_01b3);
    }
    state
}

/// SplitMix64's finalizer: spreads FNV's weak low bits over the whole word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// A stable 64-bit hash of `bytes` (the same in every process and build).
#[must_use]
pub fn stable_hash(bytes: &[u8]) -> u64 {
    mix(fnv1a(FNV_OFFSET, bytes))
}

/// The weight of `member` for `key`.
#[must_use]
pub fn weight(member: &str, key: u64) -> u64 {
    mix(fnv1a(
        fnv1a(FNV_OFFSET, member.as_bytes()),
        &key.to_le_bytes(),
    ))
}

/// The member owning `key`: the highest weight, ties broken by the larger id. `None` without
/// members.
#[must_use]
pub fn owner<M: AsRef<str>>(members: &[M], key: u64) -> Option<&M> {
    members.iter().max_by(|a, b| {
        let (a, b) = (a.as_ref(), b.as_ref());
        (weight(a, key), a).cmp(&(weight(b, key), b))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn members(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("replica-{i}")).collect()
    }

    #[test]
    fn the_owner_does_not_depend_on_the_order_of_members() {
        let mut list = members(5);
        let before: Vec<String> = (0..1000u64)
            .map(|key| owner(&list, key).unwrap().clone())
            .collect();
        list.reverse();
        list.swap(0, 2);
        for (key, expected) in (0..1000u64).zip(&before) {
            assert_eq!(owner(&list, key).unwrap(), expected);
        }
        assert_eq!(owner::<String>(&[], 1), None);
    }

    #[test]
    fn hashes_are_stable_across_builds() {
        // Pinned: replicas of different builds must agree during a rolling deploy.
        assert_eq!(stable_hash(b""), mix(FNV_OFFSET));
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(weight("a", 1), weight("a", 1));
        assert_ne!(weight("a", 1), weight("b", 1));
        assert_ne!(stable_hash(b"token-a"), stable_hash(b"token-b"));
    }

    #[test]
    fn keys_spread_evenly_over_members() {
        let list = members(3);
        let mut counts: HashMap<&String, usize> = HashMap::new();
        for key in 0..30_000u64 {
            *counts
                .entry(owner(&list, stable_hash(&key.to_le_bytes())).unwrap())
                .or_default() += 1;
        }
        assert_eq!(counts.len(), 3);
        for (member, count) in counts {
            assert!(
                (9_000..=11_000).contains(&count),
                "{member} owns {count} of 30000 keys"
            );
        }
    }

    #[test]
    fn a_member_leaving_moves_only_its_own_keys() {
        let all = members(4);
        let without: Vec<String> = all.iter().filter(|m| *m != "replica-2").cloned().collect();
        let mut moved = 0;
        for key in 0..10_000u64 {
            let before = owner(&all, key).unwrap();
            let after = owner(&without, key).unwrap();
            if before == "replica-2" {
                moved += 1;
                assert_ne!(after, "replica-2");
            } else {
                assert_eq!(before, after, "key {key} moved without its owner leaving");
            }
        }
        assert!(
            moved > 2_000 && moved < 3_000,
            "{moved} keys had the leaver"
        );
    }

    #[test]
    fn a_member_joining_takes_keys_only_for_itself() {
        let before_list = members(3);
        let mut after_list = before_list.clone();
        after_list.push("replica-new".to_owned());
        let mut taken = 0;
        for key in 0..10_000u64 {
            let before = owner(&before_list, key).unwrap();
            let after = owner(&after_list, key).unwrap();
            if after == "replica-new" {
                taken += 1;
            } else {
                assert_eq!(before, after, "key {key} moved between old members");
            }
        }
        assert!(
            taken > 2_000 && taken < 3_000,
            "the newcomer took {taken} keys"
        );
    }
}
