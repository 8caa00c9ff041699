//! Shard math: which shard a guild lives on, and which shards a gateway pod owns.

use std::ops::Range;

/// The shard that receives a guild's events: `(guild_id >> 22) % num_shards`. Direct messages
/// (no guild) arrive on shard 0.
///
/// # Panics
/// Never: a `num_shards` of 0 is treated as 1.
#[must_use]
pub const fn shard_for_guild(guild_id: u64, num_shards: u32) -> u32 {
    let shards = if num_shards == 0 {
        1
    } else {
        num_shards as u64
    };
    #[allow(clippy::cast_possible_truncation)] // the remainder is below num_shards, a u32
    {
        ((guild_id >> 22) % shards) as u32
    }
}

/// The shards a gateway pod owns: `[ordinal × per_pod, min(total, (ordinal + 1) × per_pod))`.
/// Empty when the ordinal is past the last pod.
#[must_use]
pub fn pod_shard_range(ordinal: u32, shards_per_pod: u32, total: u32) -> Range<u32> {
    let per_pod = shards_per_pod.max(1);
    let start = ordinal.saturating_mul(per_pod).min(total);
    let end = ordinal.saturating_add(1).saturating_mul(per_pod).min(total);
    start..end
}

/// How many gateway pods hold `total` shards at `shards_per_pod` each.
#[must_use]
pub const fn pod_count(total: u32, shards_per_pod: u32) -> u32 {
    let per_pod = if shards_per_pod == 0 {
        1
    } else {
        shards_per_pod
    };
    total.div_ceil(per_pod)
}

/// A shard count rounded up to a multiple of `max_concurrency`, as Discord requires for large
/// bots (so every concurrency bucket holds the same number of shards).
#[must_use]
pub const fn round_up_to_concurrency(shards: u32, max_concurrency: u32) -> u32 {
    let k = if max_concurrency == 0 {
        1
    } else {
        max_concurrency
    };
    let shards = if shards == 0 { 1 } else { shards };
    shards.div_ceil(k) * k
}

/// The identify rate-limit bucket of a shard: `shard_id % max_concurrency`.
#[must_use]
pub const fn identify_bucket(shard_id: u32, max_concurrency: u32) -> u32 {
    let k = if max_concurrency == 0 {
        1
    } else {
        max_concurrency
    };
    shard_id % k
}

#[cfg(test)]
mod tests {
    use super::{
        identify_bucket, pod_count, pod_shard_range, round_up_to_concurrency, shard_for_guild,
    };

    #[test]
    fn guild_shard_follows_discords_formula() {
        // Discord's documented example: guild 197038439483310086 on 2 shards... shifted by 22.
        let guild = 197_038_439_483_310_086_u64;
        assert_eq!(shard_for_guild(guild, 1), 0);
        assert_eq!(u64::from(shard_for_guild(guild, 16)), (guild >> 22) % 16);
        assert_eq!(shard_for_guild(guild, 0), 0);
    }

    #[test]
    fn pods_cover_every_shard_exactly_once() {
        for total in 1..40 {
            for per_pod in 1..9 {
                let pods = pod_count(total, per_pod);
                let mut seen = Vec::new();
                for ordinal in 0..pods {
                    let range = pod_shard_range(ordinal, per_pod, total);
                    assert!(!range.is_empty(), "pod {ordinal} of {pods} owns nothing");
                    seen.extend(range);
                }
                assert_eq!(seen, (0..total).collect::<Vec<_>>());
                assert!(pod_shard_range(pods, per_pod, total).is_empty());
            }
        }
    }

    #[test]
    fn counts_round_up_to_max_concurrency() {
        assert_eq!(round_up_to_concurrency(17, 16), 32);
        assert_eq!(round_up_to_concurrency(16, 16), 16);
        assert_eq!(round_up_to_concurrency(3, 1), 3);
        assert_eq!(round_up_to_concurrency(0, 4), 4);
        assert_eq!(identify_bucket(13, 4), 1);
    }
}
