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
//! [`super::sqlite::SqliteLedger`] is the one-host implementation and
//! [`super::postgres::PgLedger`] the one several hosts share.

use crate::domain::{HourWindow, SalesRow};
use crate::report::{ReportError, ReportSummary};

pub use crate::domain::lease::WriteFence;
pub use crate::domain::{
    account_scope, BurstCorrection, ClaimOrder, Cooldown, HourState, Priority,
};

/// Most corrections [`LedgerStore::corrections`] lists (one row per bucket; a deployment
/// has a few per seller).
pub const MAX_CORRECTIONS_LISTED: usize = 200;

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
    /// A write that carries no fence at all ([`WriteFence::Missing`]): a unit read back
    /// from the store was written before the runner stamped its lease's fence on it.
    #[error("refused an unfenced {what} for {account}/{stream}: every write must carry its lease's fence (or say explicitly that it takes no lease)")]
    Unfenced {
        account: String,
        stream: String,
        what: &'static str,
    },
    /// A fence that does not fit the store (above `i64::MAX`).
    #[error("fence {fence} for {account}/{stream} is out of range; the lease backend's fence counter is corrupt")]
    FenceOutOfRange {
        account: String,
        stream: String,
        fence: u64,
    },
    /// A cursor window whose cursor moved meanwhile (another run applied it): the window
    /// is dropped, nothing was written.
    #[error("the cursor of {account}/{stream} is no longer at {expected}: another run applied this window, so it is dropped and nothing was written")]
    CursorMoved {
        account: String,
        stream: String,
        expected: i64,
    },
    #[error("document rejected: {0}")]
    Document(#[from] ReportError),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database migration failed: {0}")]
    Migration(String),
    #[error("cannot open the database at {path}: {message}")]
    Open { path: String, message: String },
    /// A statement on PostgreSQL failed (the server answered with an error, or the
    /// connection broke mid-call).
    #[error("postgresql: {0}; check the server's log and that the database is reachable")]
    Postgres(#[from] postgres::Error),
    /// No connection to PostgreSQL within the deadline (pool checkout or connect). `url`
    /// is shown without its password.
    #[error("cannot reach postgresql at {url}: {message}; check that the server runs, the url in the [store] url_env variable is right, and max_connections leaves room for [store] pool_size")]
    PgUnavailable { url: String, message: String },
    /// The database was migrated by a newer marketsync than this one.
    #[error("the postgresql database at {url} has schema version {database}, newer than the {known} this marketsync knows; upgrade marketsync (or point [store] url_env at another database)")]
    SchemaTooNew {
        url: String,
        database: i64,
        known: i64,
    },
}

impl LedgerError {
    /// The store itself failed (SQLite or PostgreSQL, a connection, a timeout): the unit
    /// is not to blame and its downloaded document is kept for the next try.
    pub fn is_store_failure(&self) -> bool {
        matches!(
            self,
            LedgerError::Sqlite(_) | LedgerError::Postgres(_) | LedgerError::PgUnavailable { .. }
        )
    }
}

/// The fence a write is checked against, by the same rules on every engine: `None` for
/// a write that says explicitly it takes no lease ([`WriteFence::Unfenced`]: operator
/// tools and tests); an error for one that carries no fence ([`WriteFence::Missing`]) or
/// one above `i64::MAX`.
pub(crate) fn fence_to_check(
    account: &str,
    stream: &str,
    fence: WriteFence,
    what: &'static str,
) -> Result<Option<i64>, LedgerError> {
    let fence = match fence {
        WriteFence::Lease(fence) => fence,
        WriteFence::Unfenced => return Ok(None),
        WriteFence::Missing => {
            return Err(LedgerError::Unfenced {
                account: account.to_string(),
                stream: stream.to_string(),
                what,
            })
        }
    };
    i64::try_from(fence)
        .map(Some)
        .map_err(|_| LedgerError::FenceOutOfRange {
            account: account.to_string(),
            stream: stream.to_string(),
            fence,
        })
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
    /// once a newer fence was seen for the scope. [`WriteFence::Missing`] (a unit read
    /// back by [`LedgerStore::in_flight`]) is refused until the runner stamps its own.
    pub fence: WriteFence,
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
/// pool (see [`crate::shapes::windowed`]), never on the async worker threads.
pub trait LedgerStore:
    super::reads::LedgerReads
    + super::supervision::SupervisionStore
    + super::cursors::CursorStore
    + super::inventory::InventoryStore
    + super::jobs::JobStore
    + super::tracked::TrackedStore
    + Send
    + Sync
    + 'static
{
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
        fence: WriteFence,
        now: i64,
    ) -> Result<Option<Claim>, LedgerError>;

    /// Claims that were in flight (REQUESTED or DOWNLOADED) when the last owner stopped.
    /// Their `fence` is [`WriteFence::Missing`]: the caller stamps its own lease's fence
    /// before working them (the store refuses their writes otherwise).
    fn in_flight(&self, account: &str, stream: &str) -> Result<Vec<Claim>, LedgerError>;

    /// When claim `claim_id` was taken (unix seconds), if it is on record: where a
    /// restarted runner starts looking (getReports `createdSince`) for a report requested
    /// for the claim whose id was never committed.
    fn claimed_at(&self, claim_id: i64) -> Result<Option<i64>, LedgerError>;

    /// The newest lease fence the store has seen for `account`/`stream` (0 when none): a
    /// lease acquired for the scope must get a fence above it (see
    /// `LockService::acquire_above`), even when the lease backend lost its counter.
    fn newest_fence(&self, account: &str, stream: &str) -> Result<u64, LedgerError>;

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

    /// Records a bucket's correction: its burst now, one more correction counted (the
    /// first one also sets `first_at` and the configured burst).
    fn record_correction(&self, correction: &BurstCorrection) -> Result<(), LedgerError>;
    /// The recorded corrections, the latest first (at most [`MAX_CORRECTIONS_LISTED`]).
    fn corrections(&self) -> Result<Vec<BurstCorrection>, LedgerError>;

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

    /// The PostgreSQL store behind this ledger, if it is one (exports read its tables
    /// there).
    fn as_postgres(&self) -> Option<&super::PgLedger> {
        None
    }

    /// Why the store cannot be reached right now, when it is known to be down (its last
    /// connection attempt failed and none has succeeded since): callers that answer a
    /// person (status, dashboard) say so at once instead of waiting out a deadline per
    /// read. `None` for an embedded store, or when the last attempt succeeded.
    fn unavailable(&self) -> Option<StoreDown> {
        None
    }
}

/// The store is down: since when (unix seconds) and the last error (no password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreDown {
    pub since: i64,
    pub error: String,
}
