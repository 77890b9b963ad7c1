//! Rendezvous (highest-random-weight) hashing: which live member runs an account.
//!
//! Every member scores every (account, member) pair with the same fixed hash and the
//! account goes to the member with the highest score (ties, which need a 64-bit
//! collision, go to the smaller member id). Every daemon that sees the same live members
//! computes the same owner with no coordination; when a member joins it takes only the
//! accounts it now scores highest on (about 1/n of them), and when one leaves only its
//! own accounts move, each to its second-best member.
//!
//! The hash is FNV-1a over `account`, a 0 byte and `member`, finished with the
//! splitmix64 mixer: written out here rather than taken from `std` because
//! `DefaultHasher` may change between Rust releases, and two daemons built by different
//! compilers must still agree.
//!
//! Options: none. Emits: nothing (pure).

/// The score of `member` for `account`.
pub fn weight(account: &str, member: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in account.bytes().chain([0u8]).chain(member.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    // splitmix64's finaliser: FNV alone spreads the last bytes poorly.
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// The member that runs `account` among `members`; `None` when there is none.
pub fn owner<'a, I>(account: &str, members: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    members
        .into_iter()
        .map(|member| (weight(account, member), member))
        // Highest weight wins; on a tie the smaller id (so the order of `members` never matters).
        .max_by(|(left_weight, left), (right_weight, right)| {
            left_weight.cmp(right_weight).then_with(|| right.cmp(left))
        })
        .map(|(_, member)| member)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn accounts(count: usize) -> Vec<String> {
        (0..count)
            .map(|index| format!("amazon-{index:05}"))
            .collect()
    }

    fn assignment<'a>(accounts: &'a [String], members: &[&'a str]) -> BTreeMap<&'a str, &'a str> {
        accounts
            .iter()
            .map(|account| {
                (
                    account.as_str(),
                    owner(account, members.iter().copied()).expect("a member"),
                )
            })
            .collect()
    }

    #[test]
    fn the_hash_is_fixed_across_builds() {
        // Pinned values: a change here means daemons of two versions disagree on owners.
        assert_eq!(weight("", ""), 0x25fc_6dd3_6ce0_4b20);
        assert_eq!(weight("acct", "m1"), 0x98d1_fc04_3edb_4daf);
        assert_ne!(weight("acct", "m1"), weight("acct", "m2"));
        assert_ne!(
            weight("ab", "c"),
            weight("a", "bc"),
            "the separator keeps pairs apart"
        );
    }

    #[test]
    fn the_owner_does_not_depend_on_the_order_of_members() {
        let ids = accounts(200);
        let forward = assignment(&ids, &["a", "b", "c"]);
        let backward = assignment(&ids, &["c", "b", "a"]);
        assert_eq!(forward, backward);
        assert_eq!(owner("x", std::iter::empty()), None);
        assert_eq!(owner("x", ["only"]), Some("only"));
    }

    #[test]
    fn accounts_spread_evenly_over_members() {
        let ids = accounts(3000);
        let members = ["host-a#1", "host-b#2", "host-c#3"];
        let owners = assignment(&ids, &members);
        for member in members {
            let share = owners.values().filter(|owner| **owner == member).count();
            assert!(
                (800..=1200).contains(&share),
                "{member} owns {share} of 3000 accounts; expected about 1000"
            );
        }
    }

    #[test]
    fn a_joining_member_takes_about_one_nth_and_nothing_else_moves() {
        let ids = accounts(3000);
        let before = assignment(&ids, &["a", "b", "c"]);
        let after = assignment(&ids, &["a", "b", "c", "d"]);
        let mut moved = 0;
        for (account, owner_now) in &after {
            if before[account] != *owner_now {
                assert_eq!(*owner_now, "d", "{account} moved between two old members");
                moved += 1;
            }
        }
        // 1/4 of 3000 = 750.
        assert!(
            (600..=900).contains(&moved),
            "{moved} of 3000 accounts moved; expected about 750"
        );
    }

    #[test]
    fn a_leaving_member_hands_over_only_its_own_accounts() {
        let ids = accounts(3000);
        let before = assignment(&ids, &["a", "b", "c"]);
        let after = assignment(&ids, &["a", "c"]);
        for (account, owner_before) in &before {
            if *owner_before != "b" {
                assert_eq!(after[account], *owner_before, "{account} moved needlessly");
            } else {
                assert_ne!(after[account], "b");
            }
        }
    }
}
