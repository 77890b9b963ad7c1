//! The ledger: every unit of API work is a row with the state machine of seed 000.
//!
//! ```text
//! MISSING ──claim──▶ REQUESTED ──report done──▶ DOWNLOADED ──apply──▶ APPLIED
//!    ▲                  │                            │
//!    └──── retry_at ── FAILED ◀──────── error ───────┘
//! ```
//!
//! The allowed transitions live in [`HourState::can_become`] and nowhere else; the store
//! refuses (and rolls back) any write that would make an illegal one. Storage is behind
//! the [`LedgerStore`] trait so a server database is a new implementation, not a rewrite;
//! [`sqlite::SqliteLedger`] is the one-host implementation.

pub mod sqlite;

use std::fmt;

use crate::config::ClaimOrder;
use crate::model::{HourWindow, SalesRow};
use crate::report::{ReportError, ReportSummary};

pub use sqlite::SqliteLedger;

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

/// Why a ledger operation failed. Callers branch on `Document` (the unit fails) versus
/// the rest (infrastructure: retry later, do not blame the unit).
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("illegal ledger transition for {account}/{stream} claim {claim_id}: {detail}")]
    IllegalTransition {
        account: String,
        stream: String,
        claim_id: i64,
        detail: String,
    },
    /// A write under a lease whose fence is older than the newest seen for the scope:
    /// the lease was taken over, and this owner must stop working the scope.
    #[error("stale fence for {account}/{stream}: write carries fence {fence}, newest is {newest}; the lease was taken over")]
    StaleFence {
        account: String,
        stream: String,
        fence: u64,
        newest: u64,
    },
    #[error("document rejected: {0}")]
    Document(#[from] ReportError),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database migration failed: {0}")]
    Migration(String),
    #[error("cannot open the database at {path}: {message}")]
    Open { path: String, message: String },
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

/// A claimed, contiguous run of hours handled by one report request.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub claim_id: i64,
    pub account: String,
    pub stream: String,
    pub window: HourWindow,
    /// REQUESTED or DOWNLOADED.
    pub state: HourState,
    pub report_id: Option<String>,
    pub report_document_id: Option<String>,
    pub document_path: Option<String>,
    /// The highest attempt count among the hours (attempts already consumed).
    pub attempts: i64,
    /// The fence of the lease the claim is worked under; writes carrying it are refused
    /// once a newer fence was seen for the scope. `None`: no lease (tools, tests).
    pub fence: Option<u64>,
    /// The highest priority among the hours (manual fill-day 200, fresh 100, audit 50):
    /// the priority its provider calls ask the quota for.
    pub priority: Priority,
}

/// What happened to a claim that was applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub hours: i64,
    pub summary: ReportSummary,
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

/// Counts and markers for one (account, stream), the raw material of `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamSnapshot {
    pub account: String,
    pub stream: String,
    /// Indexed like [`HourState::ALL`].
    pub counts: [u64; 5],
    pub last_applied_hour: Option<i64>,
    pub next_claimable_hour: Option<i64>,
    /// The earliest time a FAILED hour becomes claimable again, when all are waiting.
    pub next_retry_at: Option<i64>,
    pub last_error: Option<String>,
}

/// Feeds parsed rows into a sink; returns the document summary. The sink's errors abort.
pub type RowFeed<'a> = &'a mut dyn FnMut(
    &mut dyn FnMut(SalesRow) -> Result<(), ReportError>,
) -> Result<ReportSummary, ReportError>;

/// Storage for the ledger. Methods are blocking: async callers run them on the blocking
/// pool (see [`crate::sync`]), never on the async worker threads.
pub trait LedgerStore: Send + Sync + 'static {
    /// Inserts MISSING rows for every hour of `window` that has no row yet; returns how many.
    fn seed(
        &self,
        account: &str,
        stream: &str,
        window: HourWindow,
        now: i64,
    ) -> Result<u64, LedgerError>;

    /// Atomically claims the next contiguous run of claimable hours (at most `max_hours`),
    /// moving them to REQUESTED. Claimable: MISSING, or FAILED whose retry time passed.
    /// `fence` is the caller's lease fence (see [`Claim::fence`]).
    #[allow(clippy::too_many_arguments)]
    fn claim(
        &self,
        account: &str,
        stream: &str,
        max_hours: i64,
        order: ClaimOrder,
        owner: &str,
        fence: Option<u64>,
        now: i64,
    ) -> Result<Option<Claim>, LedgerError>;

    /// Claims that were in flight (REQUESTED or DOWNLOADED) when the last owner stopped.
    /// Their `fence` is `None`: the caller stamps its own before working them.
    fn in_flight(&self, account: &str, stream: &str) -> Result<Vec<Claim>, LedgerError>;

    /// Records the remote report id as soon as it is known.
    fn set_report_id(&self, claim: &Claim, report_id: &str, now: i64) -> Result<(), LedgerError>;

    /// Records the document id and the downloaded file; the hours become DOWNLOADED.
    fn mark_downloaded(
        &self,
        claim: &Claim,
        report_document_id: &str,
        document_path: &str,
        now: i64,
    ) -> Result<(), LedgerError>;

    /// In one transaction: replaces the account's sales rows for the claim's window with
    /// what `feed` yields and marks the hours APPLIED. If `feed` fails nothing is written.
    fn apply_sales(
        &self,
        claim: &Claim,
        feed: RowFeed<'_>,
        now: i64,
    ) -> Result<Applied, LedgerError>;

    /// Fails the claim: attempts + 1, `last_error`, claimable again at `next_retry_at`.
    fn fail(
        &self,
        claim: &Claim,
        error: &str,
        next_retry_at: i64,
        now: i64,
    ) -> Result<(), LedgerError>;

    /// Returns the claim's hours to MISSING without consuming an attempt and forgets its
    /// remote handles. Used when createReport hit the quota (no report exists).
    fn release(&self, claim: &Claim, reason: &str, now: i64) -> Result<(), LedgerError>;

    /// Resets the hours of `window` to MISSING at `priority` (fill-day, audits); hours in
    /// flight are left alone. Returns how many were reset.
    fn reset_window(
        &self,
        account: &str,
        stream: &str,
        window: HourWindow,
        priority: Priority,
        now: i64,
    ) -> Result<u64, LedgerError>;

    /// Deletes rows older than `before` that are APPLIED (the rolling window moved on).
    fn prune(&self, account: &str, stream: &str, before: i64) -> Result<u64, LedgerError>;

    fn set_cooldown(&self, cooldown: &Cooldown) -> Result<(), LedgerError>;
    /// The cooldown of `scope` if it is still running at `now`.
    fn active_cooldown(&self, scope: &str, now: i64) -> Result<Option<Cooldown>, LedgerError>;
    fn clear_cooldown(&self, scope: &str) -> Result<bool, LedgerError>;

    fn last_audit(
        &self,
        account: &str,
        stream: &str,
        kind: &str,
    ) -> Result<Option<i64>, LedgerError>;
    fn record_audit(
        &self,
        account: &str,
        stream: &str,
        kind: &str,
        at: i64,
    ) -> Result<(), LedgerError>;

    fn snapshot(
        &self,
        account: &str,
        stream: &str,
        now: i64,
    ) -> Result<StreamSnapshot, LedgerError>;
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
