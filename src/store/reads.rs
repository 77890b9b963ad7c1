//! The ledger's read surfaces as one trait, [`LedgerReads`], implemented by each engine:
//! what status, doctor, the HTTP API, the dashboard, `/metrics` and `sync --once` read
//! from the ledger-family tables (hours, claims, cooldowns, sales), and the two repairs
//! beside them (reset failed hours, prune the claim history). A surface holding an
//! `Arc<dyn LedgerStore>` reads from whichever engine holds the ledger.

use super::history::HourCell;
use super::sales::{AsinSales, HourSales, SalesTotals};
use super::{Cooldown, LedgerError, Priority};

/// A window's sales: per hour (newest first), the top ASINs by revenue, the totals.
pub type SalesSummary = (Vec<HourSales>, Vec<AsinSales>, SalesTotals);

/// Reads (and two repairs) over the ledger-family tables. Blocking, like
/// [`super::LedgerStore`].
pub trait LedgerReads: Send + Sync + 'static {
    /// The facts behind a windowed stream's verdict (see [`HourDiagnostics`]).
    fn hour_diagnostics(
        &self,
        account: &str,
        stream: &str,
        now: i64,
    ) -> Result<HourDiagnostics, LedgerError>;

    /// The `limit` most recently failed hours, newest first.
    fn recent_failures(&self, limit: i64) -> Result<Vec<FailedHour>, LedgerError>;

    /// Every FAILED hour of a stream back to MISSING at `priority` with fresh attempts;
    /// returns how many.
    fn reset_failed(
        &self,
        account: &str,
        stream: &str,
        priority: Priority,
        now: i64,
    ) -> Result<u64, LedgerError>;

    /// APPLIED hours across every account and stream.
    fn applied_hours_total(&self) -> Result<u64, LedgerError>;

    /// Deletes finished claims older than `before` from the claim history; returns how many.
    fn prune_claims(&self, before: i64) -> Result<u64, LedgerError>;

    /// The rows of (account, stream) with `from <= hour_utc < to`, oldest first, at most
    /// `limit`; error texts cut at [`super::history::MAX_CELL_ERROR_CHARS`].
    fn stream_hours(
        &self,
        account: &str,
        stream: &str,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<Vec<HourCell>, LedgerError>;

    /// Sales of `account` in `[from, to)`: per hour (newest first), the `asin_limit`
    /// ASINs with the most revenue, and the totals.
    fn sales_summary(
        &self,
        account: &str,
        from: i64,
        to: i64,
        asin_limit: i64,
    ) -> Result<SalesSummary, LedgerError>;

    /// How many hours of `[from, to)` of a stream are APPLIED, and its newest APPLIED hour.
    fn applied_coverage(
        &self,
        account: &str,
        stream: &str,
        from: i64,
        to: i64,
    ) -> Result<(i64, Option<i64>), LedgerError>;

    /// Every cooldown still running at `now`, by scope.
    fn cooldowns(&self, now: i64) -> Result<Vec<Cooldown>, LedgerError>;
}

/// What `doctor` needs to know about a stream's hours beyond the state counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HourDiagnostics {
    /// Ledger rows of the stream.
    pub rows: u64,
    /// The oldest update of an hour in flight (REQUESTED or DOWNLOADED).
    pub in_flight_since: Option<i64>,
    /// The report id of the oldest hour in flight.
    pub in_flight_report: Option<String>,
    /// Hours claimable now (MISSING, or FAILED whose retry time passed).
    pub claimable_now: u64,
    /// The oldest update among them.
    pub claimable_since: Option<i64>,
    /// FAILED hours, their highest attempt count and their range.
    pub failed: u64,
    pub max_attempts: i64,
    pub oldest_failed_hour: i64,
    pub newest_failed_hour: i64,
    /// The newest FAILED hour's error when it names an authentication failure.
    pub auth_error: Option<String>,
    /// (claimed_at, claimed_by) of the stream's newest claim.
    pub last_claim: Option<(i64, String)>,
}

/// One FAILED hour, as `GET /api/failures` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedHour {
    pub account: String,
    pub stream: String,
    pub hour_utc: i64,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub next_retry_at: Option<i64>,
    /// When the hour failed (its last update).
    pub updated_at: i64,
}
