//! The ledger's vocabulary: hour states and the one place their transitions are written
//! down, claim priorities, cooldowns and the scopes they apply to.

use std::fmt;

/// The state of one ledger hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HourState {
    Missing,
    Requested,
    Downloaded,
    Applied,
    Failed,
}

impl HourState {
    pub const ALL: [HourState; 5] = [
        HourState::Missing,
        HourState::Requested,
        HourState::Downloaded,
        HourState::Applied,
        HourState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HourState::Missing => "MISSING",
            HourState::Requested => "REQUESTED",
            HourState::Downloaded => "DOWNLOADED",
            HourState::Applied => "APPLIED",
            HourState::Failed => "FAILED",
        }
    }

    pub fn parse(text: &str) -> Option<HourState> {
        HourState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
    }

    /// The one place the state machine is written down.
    pub fn can_become(self, to: HourState) -> bool {
        use HourState::*;
        matches!(
            (self, to),
            // claim
            (Missing, Requested) | (Failed, Requested)
            // the report finished and its document is on disk
            | (Requested, Downloaded)
            // CANCELLED: the provider has no data for the window, applied as zero rows
            | (Requested, Applied)
            | (Downloaded, Applied)
            // errors
            | (Requested, Failed) | (Downloaded, Failed)
            // quota or shutdown returns a claim without consuming an attempt;
            // repairs (fill-day, audits) reset finished hours
            | (Requested, Missing) | (Downloaded, Missing)
            | (Applied, Missing) | (Failed, Missing)
        )
    }

    /// Every state that may move to `to`.
    pub fn sources_of(to: HourState) -> Vec<HourState> {
        HourState::ALL
            .into_iter()
            .filter(|from| from.can_become(to))
            .collect()
    }
}

impl fmt::Display for HourState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which work a claim is for; recorded in the owner string and claim history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Audit = 50,
    Background = 100,
    Hot = 150,
    Manual = 200,
}

impl Priority {
    /// The priority a stored value stands for: the highest level it reaches (values
    /// between levels round down; below 100 is audit).
    pub fn from_value(value: i64) -> Priority {
        match value {
            v if v >= Priority::Manual as i64 => Priority::Manual,
            v if v >= Priority::Hot as i64 => Priority::Hot,
            v if v >= Priority::Background as i64 => Priority::Background,
            _ => Priority::Audit,
        }
    }
}

/// A cooldown: no provider calls in `scope` until `until_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cooldown {
    pub scope: String,
    /// `quota`, `lock_busy`, `auth`.
    pub reason: String,
    pub started_at: i64,
    pub until_at: i64,
    pub detail: Option<String>,
}

/// The last correction of one quota bucket (issue 12 point 4): a 429 to a paced call
/// emptied it and lowered its learned burst instead of stopping for long. Recorded for
/// `marketsync cooldowns`; the live burst is the TokenManager's.
#[derive(Debug, Clone, PartialEq)]
pub struct BurstCorrection {
    /// `provider/operation/scope`, as `/api/budgets` names the bucket.
    pub bucket: String,
    /// Configured or documented, before any correction.
    pub configured_burst: f64,
    /// What the last correction left.
    pub burst: f64,
    /// 429s read as corrections of this bucket, counted over restarts.
    pub corrections: u64,
    pub first_at: i64,
    pub last_at: i64,
    pub detail: Option<String>,
}

/// Which end of the lookback window claims start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOrder {
    NewestFirst,
    OldestFirst,
}

/// The cooldown scope of a provider account: every call for the account stops.
pub fn account_scope(provider: &str, account: &str) -> String {
    format!("{provider}:{account}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_follow_the_diagram() {
        use HourState::*;
        assert!(Missing.can_become(Requested));
        assert!(Failed.can_become(Requested));
        assert!(Downloaded.can_become(Applied));
        assert!(!Missing.can_become(Applied));
        assert!(!Applied.can_become(Requested));
        assert!(!Missing.can_become(Downloaded));
        assert_eq!(sources(Requested), vec![Missing, Failed]);
    }

    fn sources(to: HourState) -> Vec<HourState> {
        HourState::sources_of(to)
    }
}
