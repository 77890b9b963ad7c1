//! The windowed-stream runner: seed the lookback window, resume units in flight, then
//! claim → createReport → poll getReport → getReportDocument → download → apply, one
//! unit at a time per stream.
//!
//! Failure policy (seeds 000 and 001):
//! - a `QuotaExceeded` to a paced call is first a model correction (issue 12): the
//!   TokenManager empties the bucket and lowers its burst, and the call is made again
//!   through its gate (at most [`CORRECTION_RETRIES`] times), which waits one token
//!   interval or the `Retry-After`: the stream goes on requesting;
//! - a `QuotaExceeded` the TokenManager escalated (429s repeating despite the
//!   correction), or to an unpaced call, is a hard stop: a cooldown is persisted, the
//!   rest of the run is abandoned and no attempt is consumed (a unit with a report id
//!   stays in flight and resumes polling after the cooldown; one without goes back to
//!   MISSING);
//! - any other error fails only its unit (backoff with jitter, capped) and the run goes on;
//! - a document that does not validate fails its unit and nothing from it is applied.
//!
//! Pacing (issue 5): when the client carries a [`crate::quota::Pacer`] (the daemon's
//! clients do), every createReport, getReport and getReportDocument first acquires one
//! token of its bucket `("amazon", operation, selling partner)` from the TokenManager, at
//! the claim's priority (manual fill-day hours as `Manual`, fresh and audit hours as
//! `Background`) with a deadline of `min(poll_timeout, 5m)`; nothing here sleeps to pace
//! calls (the getReport poll pause is a minimum, the bucket decides when the call goes).
//! After each response the TokenManager hears `x-amzn-RateLimit-Limit` (rate learning) or
//! the 429 (`Retry-After`; it drains the bucket and starts the shared cooldown). What the
//! TokenManager answers instead of a grant:
//! - `CoolingDown`: no call is made; the run stops like a quota stop (no attempt consumed);
//! - `DeadlineExceeded`, `Unavailable` (Redis down), `Stopped`: the unit goes back
//!   unharmed (without a report id to MISSING, with one it stays in flight) and the run
//!   ends [`RunOutcome::Deferred`]; the runner tries again shortly;
//! - `CostExceedsBurst`, `UnknownBucket`, `InvalidCost`: a configuration error, reported as
//!   the unit's failure.

pub mod poll;
mod settings;
pub use poll::PollSchedule;
pub use settings::WindowedSettings;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::context::{
    blocking, retry_delay, CallError, QuotaStop, RunOutcome, ShapeRunner, StreamContext, SyncError,
    CORRECTION_RETRIES, DEFERRED_RETRY,
};
use crate::domain::{floor_hour, format_ts, now_ts, HourWindow, HOUR};
use crate::provider::amazon::{ProcessingStatus, SpApiClient, VENDOR_RT_SALES_REPORT};
use crate::provider::ProviderError;
use crate::quota::Pacer;
use crate::report::{
    read_error_document, read_staged_rows, stage_vendor_sales_document, staging_path,
    DocumentLimits, ReportError,
};
use crate::shapes::spec::StreamConfig;
use crate::store::{Claim, Cooldown, HourState, LedgerError, Priority};

/// How one unit ended.
enum UnitEnd {
    Applied(i64),
    Failed,
    /// A cooldown stops the run; `record`: write it to the ledger under the account's
    /// scope (a 429 here, or a copy of the TokenManager's cooldown for `status`).
    Quota {
        cooldown: Cooldown,
        record: bool,
    },
    /// The quota gave no grant (deadline, backend down); the unit went back unharmed.
    Deferred {
        reason: String,
        infrastructure: bool,
    },
    Cancelled,
    /// The run had stopped requesting (a quota stop); the window went back unharmed.
    Stopped,
    /// The report is finished but its document could not be had (transient failures
    /// past the retries): the unit stays in flight with its report id for the next run.
    Postponed,
}

/// One lane per SP-API operation for the units of one run: a unit holds its lane from
/// asking the quota for a grant until the provider's answer is in. Why: with many units
/// in flight, a bucket whose burst is smaller than the quota model thinks would otherwise
/// see several calls at once and answer each with a 429; in a lane the first 429 corrects
/// the model (and stops the run's requests) before the next call is granted. Calls take
/// milliseconds; a lane costs nothing a bucket would not impose anyway.
#[derive(Default)]
struct Lanes {
    create: tokio::sync::Mutex<()>,
    poll: tokio::sync::Mutex<()>,
    document: tokio::sync::Mutex<()>,
    /// Cancelled by the unit that met a quota stop (or deferral): the units behind it
    /// give their windows back instead of requesting them.
    stopped: CancellationToken,
    /// Nothing is left to claim: every window of the run is requested or in flight, so
    /// a stuck report is taken for stuck sooner ([`poll::IDLE_STUCK_FACTOR`]).
    idle: std::sync::atomic::AtomicBool,
    /// Woken when `idle` turns true: a queued report waiting for its next poll (up to
    /// 15 % of its age away) is looked at then, if it is past the idle limit already.
    went_idle: tokio::sync::Notify,
}

impl Lanes {
    fn is_idle(&self) -> bool {
        self.idle.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set_idle(&self, idle: bool) {
        let was = self.idle.swap(idle, std::sync::atomic::Ordering::Relaxed);
        if idle && !was {
            self.went_idle.notify_waiters();
        }
    }
}

/// What the units of one run came to.
#[derive(Default)]
struct Tally {
    applied: i64,
    failed: i64,
    postponed: i64,
    cancelled: bool,
    /// The first cooldown a unit met, and whether to record it.
    cooldown: Option<(Cooldown, bool)>,
    /// The first deferral (reason, infrastructure).
    deferred: Option<(String, bool)>,
}

impl Tally {
    /// Counts a unit's end; false when the run must stop claiming (a cooldown, a
    /// deferral, shutdown).
    fn record(&mut self, end: UnitEnd) -> bool {
        match end {
            UnitEnd::Applied(hours) => self.applied += hours,
            UnitEnd::Failed => self.failed += 1,
            UnitEnd::Postponed => self.postponed += 1,
            UnitEnd::Stopped => return false,
            UnitEnd::Cancelled => {
                self.cancelled = true;
                return false;
            }
            UnitEnd::Quota { cooldown, record } => {
                self.cooldown.get_or_insert((cooldown, record));
                return false;
            }
            UnitEnd::Deferred {
                reason,
                infrastructure,
            } => {
                self.deferred.get_or_insert((reason, infrastructure));
                return false;
            }
        }
        true
    }
}

/// Whether a failure to get a finished report's document is one to retry (the document
/// is still there): a 5xx or transport failure, or a download url that expired or was
/// refused (403 from the download host: a new getReportDocument gives a new url).
fn document_retryable(err: &ProviderError) -> bool {
    err.is_transient()
        || matches!(
            err,
            ProviderError::Auth {
                operation: "downloadDocument",
                ..
            } | ProviderError::Http {
                operation: "downloadDocument",
                status: 403,
                ..
            }
        )
}

/// Attempts at a finished report's document within one unit; the pause between them
/// doubles from the stream's `poll_min` up to [`DOCUMENT_RETRY_MAX`].
const DOCUMENT_ATTEMPTS: u32 = 5;
const DOCUMENT_RETRY_MAX: Duration = Duration::from_secs(30);
/// A window's stuck reports requested again at once, before it backs off like any
/// failure. Two, not one: a queued report taken for stuck once its stream is idle
/// ([`poll::IDLE_STUCK_FACTOR`] × the median) is more often merely slow than stuck under a
/// production-shaped latency (`sim::profile`: of the reports still IN_QUEUE at three
/// medians, about 3 in 5 end DONE), so a second such guess in a row is no evidence yet
/// that the window is what fails, and a backoff there only lengthens a backfill's tail.
/// A third one in a row is; each request is paced by the quota either way.
const STUCK_AT_ONCE: i64 = 2;
/// getReports pages read looking for interrupted requests (100 reports each).
const ORPHAN_PAGES: usize = 5;
/// Seconds before a claim's time that getReports looks from (clock skew).
const ORPHAN_SKEW: i64 = 120;

const OP_GET_REPORTS: &str = "getReports";

const OP_CANCEL_REPORT: &str = "cancelReport";

const OP_CREATE_REPORT: &str = "createReport";

const OP_GET_REPORT: &str = "getReport";

const OP_GET_REPORT_DOCUMENT: &str = "getReportDocument";

/// The lookback window of complete hours at `now`: `[end - lookback, end)` where `end`
/// is the start of the newest hour that is complete plus the safety lag.
pub fn lookback_window(stream: &StreamConfig, now: i64) -> HourWindow {
    let end = floor_hour(now - stream.safety_lag.as_secs() as i64);
    HourWindow::new(end - stream.windowed().lookback.as_secs() as i64, end)
}

enum Poll {
    Finished(crate::provider::amazon::ReportStatus),
    Error(ProviderError),
    /// The quota gave no grant (see [`StreamContext::refused`]).
    Refused(CallError),
    TimedOut(Duration),
    /// Still IN_QUEUE far longer than its kind's usual latency (see
    /// [`PollSchedule::stuck_after`]): its age, and how many median latencies made it
    /// stuck.
    Stuck(Duration, f64),
    Cancelled,
}

fn describe_document_error(err: &ReportError) -> String {
    format!("document rejected, nothing applied: {err}")
}

fn remove_document(path: &Path) {
    crate::report::remove_file_if_present(path, "applied document");
}

fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The windowed shape: report streams over the hour ledger, calling SP-API.
pub struct WindowedRunner {
    client: Arc<SpApiClient>,
}

impl WindowedRunner {
    pub fn new(client: Arc<SpApiClient>) -> WindowedRunner {
        WindowedRunner { client }
    }
}

impl ShapeRunner for WindowedRunner {
    fn pacer(&self) -> Option<&Pacer> {
        self.client.pacer()
    }

    fn run<'a>(
        &'a self,
        context: &'a StreamContext,
        fence: crate::store::WriteFence,
    ) -> BoxFuture<'a, Result<RunOutcome, SyncError>> {
        Box::pin(context.run_reports(&self.client, fence))
    }

    fn observed_rate_limit(&self, operation: &str) -> Option<f64> {
        self.client.observed_rate_limit(operation)
    }

    /// Report runs mostly wait (reports in flight): permits are taken per download.
    fn works_throughout(&self) -> bool {
        false
    }
}

impl StreamContext {
    /// One run of a report stream: seed, audits, resume the units in flight (finding by
    /// getReports the reports of units whose id was never committed), then keep up to
    /// `max_in_flight` windows in flight until nothing is left to claim. Each unit is its
    /// own future (create → wait in the poll schedule → download and apply under a work
    /// permit); windows are applied in whatever order their reports finish, each in its
    /// own transaction.
    ///
    /// A quota stop, a deferral or shutdown stops claiming; the units in flight are
    /// driven to their end first (a unit waiting for a grant gives its window back, one
    /// with a report keeps it in flight for the next run).
    async fn run_reports(
        &self,
        client: &SpApiClient,
        fence: crate::store::WriteFence,
    ) -> Result<RunOutcome, SyncError> {
        let now = now_ts();
        if let Some(cooling) = self.cooling_down().await? {
            return Ok(cooling);
        }
        self.seed_and_audit(now).await?;

        let (account, stream) = (self.account.id.clone(), self.stream.name.clone());
        let resumable = blocking(&self.ledger, move |ledger| {
            ledger.in_flight(&account, &stream)
        })
        .await?;
        // Units in flight come back unfenced (`WriteFence::Missing`, refused by the store):
        // they are worked under this run's lease, so they carry its fence.
        let resumable: Vec<Claim> = resumable
            .into_iter()
            .map(|claim| Claim { fence, ..claim })
            .collect();
        if !resumable.is_empty() {
            info!(units = resumable.len(), "resuming units in flight");
        }
        let mut queue: std::collections::VecDeque<Claim> =
            self.recover_orphans(client, resumable).await?.into();

        let max_in_flight = self.stream.windowed().max_in_flight.max(1) as usize;
        let lanes = Lanes::default();
        let mut units = FuturesUnordered::new();
        // `claiming`: false for good once the run must stop requesting (a quota stop,
        // shutdown). When nothing is claimable, the ledger is asked again whenever a unit
        // ends (a failed window may have become due meanwhile: a stuck report's window is
        // requested again while the rest are still in flight).
        let mut claiming = true;
        // The ledger had nothing claimable at its last answer; asked again when a unit
        // ends.
        let mut exhausted = false;
        // The claim on its way from the ledger. Why not awaited in turn: the units in
        // flight are driven only while this loop waits on them, so a stream that claimed
        // its `max_in_flight` windows one by one before its first createReport started
        // that report after every one of those transactions (200 accounts at once: 1.5 s
        // of queueing on SQLite's one writer, the bucket's burst idle meanwhile). A claim
        // in progress is never dropped: its window would stay claimed by nobody's unit.
        let mut pending: Option<BoxFuture<'_, Result<Option<Claim>, SyncError>>> = None;
        let mut tally = Tally::default();
        loop {
            while claiming && !exhausted && pending.is_none() && units.len() < max_in_flight {
                if self.cancel.is_cancelled() || self.abort.is_cancelled() {
                    claiming = false;
                    break;
                }
                match queue.pop_front() {
                    Some(claim) => {
                        lanes.set_idle(false);
                        units.push(self.process(client, &lanes, claim));
                    }
                    None => pending = Some(Box::pin(self.claim_next(fence))),
                }
            }
            if pending.is_none() && units.is_empty() {
                break;
            }
            tokio::select! {
                claimed = async {
                    match pending.as_mut() {
                        Some(claim) => claim.await,
                        None => std::future::pending().await,
                    }
                }, if pending.is_some() => {
                    pending = None;
                    match claimed? {
                        Some(claim) if claiming => {
                            lanes.set_idle(false);
                            units.push(self.process(client, &lanes, claim));
                        }
                        // The run stopped requesting while the claim was on its way.
                        // A lost lease leaves the window in flight for the scope's next
                        // owner (which resumes it); otherwise it goes back unharmed.
                        Some(_) if self.abort.is_cancelled() => {}
                        Some(claim) => {
                            let reason = if self.cancel.is_cancelled() { "shutdown" } else { "quota" };
                            self.give_back(&claim, reason).await?;
                        }
                        None => {
                            exhausted = true;
                            lanes.set_idle(true);
                        }
                    }
                }
                end = units.next(), if !units.is_empty() => {
                    let Some(end) = end else { continue };
                    exhausted = false;
                    if !tally.record(end?) {
                        claiming = false;
                    }
                }
            }
        }
        if self.abort.is_cancelled() || tally.cancelled {
            return Ok(RunOutcome::Cancelled);
        }
        if let Some((cooldown, record)) = tally.cooldown {
            return self
                .cool_down(
                    cooldown,
                    record,
                    "aborting the remaining chunks of this run and cooling down",
                )
                .await;
        }
        if let Some((reason, infrastructure)) = tally.deferred {
            warn!(
                reason = %reason,
                infrastructure,
                "no quota grant; the unit went back without consuming an attempt and the run ends"
            );
            return Ok(RunOutcome::Deferred {
                reason,
                retry_in: DEFERRED_RETRY,
                infrastructure,
            });
        }
        if tally.applied > 0 || tally.failed > 0 || tally.postponed > 0 {
            info!(
                applied_hours = tally.applied,
                failed_units = tally.failed,
                postponed_units = tally.postponed,
                "run complete"
            );
        }
        Ok(RunOutcome::Finished {
            applied: tally.applied,
            failed: tally.failed,
        })
    }

    /// The next claimable window of the stream, if any.
    async fn claim_next(
        &self,
        fence: crate::store::WriteFence,
    ) -> Result<Option<Claim>, SyncError> {
        let (account, stream, owner) = (
            self.account.id.clone(),
            self.stream.name.clone(),
            self.owner.clone(),
        );
        let max_hours = (self.stream.windowed().chunk.as_secs() as i64 / HOUR).max(1);
        let order = self.stream.windowed().order;
        blocking(&self.ledger, move |ledger| {
            ledger.claim(&account, &stream, max_hours, order, &owner, fence, now_ts())
        })
        .await
    }

    /// Units in flight whose createReport may have been answered but whose report id was
    /// never committed (the process died in between) get their report back from
    /// getReports: a report of the stream's type for exactly the unit's window and
    /// marketplace, created since the claim, that is not FATAL or CANCELLED. Such a unit
    /// resumes polling it instead of requesting the window again. Returns every unit,
    /// the recovered ones with their report ids; when getReports cannot be asked (quota,
    /// an error) the units are requested as usual.
    async fn recover_orphans(
        &self,
        client: &SpApiClient,
        mut claims: Vec<Claim>,
    ) -> Result<Vec<Claim>, SyncError> {
        let orphans: Vec<usize> = claims
            .iter()
            .enumerate()
            .filter(|(_, claim)| claim.state == HourState::Requested && claim.report_id.is_none())
            .map(|(index, _)| index)
            .collect();
        let Some(first) = orphans.first().and_then(|index| claims.get(*index)) else {
            return Ok(claims);
        };
        let ids: Vec<i64> = orphans
            .iter()
            .filter_map(|index| claims.get(*index).map(|claim| claim.claim_id))
            .collect();
        let claimed = blocking(&self.ledger, move |ledger| {
            let mut oldest: Option<i64> = None;
            for id in ids {
                if let Some(at) = ledger.claimed_at(id)? {
                    oldest = Some(oldest.map_or(at, |oldest: i64| oldest.min(at)));
                }
            }
            Ok(oldest)
        })
        .await?;
        // A margin for clock skew between this host and Amazon.
        let since = claimed.unwrap_or_else(now_ts).saturating_sub(ORPHAN_SKEW);
        let priority = first.clone();
        let mut found: Vec<crate::provider::amazon::ListedReport> = Vec::new();
        let mut next: Option<String> = None;
        for _ in 0..ORPHAN_PAGES {
            if let Err(refused) = self.gate(OP_GET_REPORTS, &priority, true).await {
                debug!(error = ?refused, "getReports not granted; units in flight are requested again");
                return Ok(claims);
            }
            let result = client
                .get_reports(VENDOR_RT_SALES_REPORT, since, next.as_deref())
                .await;
            self.observe(OP_GET_REPORTS, &result);
            match result {
                Ok(page) => {
                    found.extend(page.reports);
                    next = page.next_token;
                    if next.is_none() {
                        break;
                    }
                }
                Err(err) => {
                    warn!(error = %err, "getReports failed; units in flight whose report id was not saved are requested again");
                    return Ok(claims);
                }
            }
        }
        for index in orphans {
            let Some(claim) = claims.get_mut(index) else {
                continue;
            };
            let matching = found.iter().find(|listed| {
                listed.status.data_start == Some(claim.window.start)
                    && listed.status.data_end == Some(claim.window.end)
                    && (listed.marketplace_ids.is_empty()
                        || listed
                            .marketplace_ids
                            .iter()
                            .any(|id| *id == self.account.marketplace))
                    && !matches!(
                        listed.status.processing_status,
                        ProcessingStatus::Fatal | ProcessingStatus::Cancelled
                    )
            });
            let Some(listed) = matching else {
                continue;
            };
            let (stored, id) = (claim.clone(), listed.status.report_id.clone());
            blocking(&self.ledger, move |ledger| {
                ledger.set_report_id(&stored, &id, now_ts())
            })
            .await?;
            info!(window = %claim.window, report_id = %listed.status.report_id, "report of an interrupted request found by getReports; resuming it instead of requesting the window again");
            claim.report_id = Some(listed.status.report_id.clone());
        }
        Ok(claims)
    }

    /// Keeps the lookback window seeded and schedules due audits (lower priority than
    /// fresh hours). The first audit of a stream is due one period after it first ran.
    async fn seed_and_audit(&self, now: i64) -> Result<(), SyncError> {
        let window = lookback_window(&self.stream, now);
        let (account, stream) = (self.account.id.clone(), self.stream.name.clone());
        let audits = [
            ("daily", self.stream.windowed().daily_audit, 24 * HOUR),
            ("weekly", self.stream.windowed().weekly_audit, 7 * 24 * HOUR),
        ];
        let (seeded, audited) = blocking(&self.ledger, move |ledger| {
            let seeded = ledger.seed(&account, &stream, window, now)?;
            let mut audited = Vec::new();
            for (kind, enabled, period) in audits {
                if !enabled {
                    continue;
                }
                match ledger.last_audit(&account, &stream, kind)? {
                    None => ledger.record_audit(&account, &stream, kind, now)?,
                    Some(last) if now - last >= period => {
                        let audit_window =
                            HourWindow::new((window.end - period).max(window.start), window.end);
                        let reset = ledger.reset_window(
                            &account,
                            &stream,
                            audit_window,
                            Priority::Audit,
                            now,
                        )?;
                        ledger.record_audit(&account, &stream, kind, now)?;
                        audited.push((kind, reset));
                    }
                    Some(_) => {}
                }
            }
            // Rows older than the window and a week of audits serve nobody.
            ledger.prune(&account, &stream, window.start - 8 * 24 * HOUR)?;
            Ok((seeded, audited))
        })
        .await?;
        if seeded > 0 {
            debug!(hours = seeded, window = %window, "seeded missing hours");
        }
        for (kind, hours) in audited {
            info!(
                kind,
                hours, "audit scheduled; hours will be re-requested at audit priority"
            );
        }
        Ok(())
    }

    /// Drives one claim to APPLIED or FAILED, or stops it for quota or shutdown.
    async fn process(
        &self,
        client: &SpApiClient,
        lanes: &Lanes,
        mut claim: Claim,
    ) -> Result<UnitEnd, SyncError> {
        self.bump();
        if let Some(chaos) = &self.chaos {
            chaos.on_unit(&self.account.id).await;
        }
        if claim.state == HourState::Downloaded {
            let Some(_permit) = self.work_permit().await else {
                return Ok(UnitEnd::Cancelled);
            };
            return self.apply(claim).await;
        }
        // Known when the report is requested in this run: the age the poll schedule and
        // the latency learning go by.
        let mut requested_at: Option<tokio::time::Instant> = None;
        if claim.report_id.is_none() {
            // One createReport of the stream at a time (see [`Lanes`]), and none after
            // the run met a quota stop.
            let _lane = lanes.create.lock().await;
            if lanes.stopped.is_cancelled() {
                self.give_back(&claim, "quota").await?;
                return Ok(UnitEnd::Stopped);
            }
            // The access token first (see [`SpApiClient::warm_token`]); its failure is
            // the call's.
            // A 429 read as a model correction is requested again through the gate, which
            // waits for the corrected bucket: the stream goes on requesting (issue 12).
            let mut corrections: u32 = 0;
            let created = loop {
                let attempt = match client.warm_token().await {
                    Err(err) => Err(err),
                    Ok(()) => match self.gate(OP_CREATE_REPORT, &claim, true).await {
                        Ok(()) => {
                            let result = client
                                .create_report(
                                    VENDOR_RT_SALES_REPORT,
                                    &self.account.marketplace,
                                    claim.window,
                                )
                                .await;
                            self.observe(OP_CREATE_REPORT, &result);
                            result
                        }
                        Err(CallError::Provider(err)) => Err(err),
                        Err(refused) => {
                            let end = self.refused(&claim, refused).await?;
                            if matches!(end, UnitEnd::Quota { .. } | UnitEnd::Deferred { .. }) {
                                lanes.stopped.cancel();
                            }
                            return Ok(end);
                        }
                    },
                };
                match attempt {
                    Err(err)
                        if corrections < CORRECTION_RETRIES
                            && self.may_retry_corrected(&err).await? =>
                    {
                        corrections += 1;
                        info!(window = %claim.window, attempt = corrections, error = %err, "createReport throttled; the bucket was corrected and the report is requested again when it allows");
                    }
                    other => break other,
                }
            };
            match created {
                Ok(report_id) => {
                    let (stored, id) = (claim.clone(), report_id.clone());
                    blocking(&self.ledger, move |ledger| {
                        ledger.set_report_id(&stored, &id, now_ts())
                    })
                    .await?;
                    info!(window = %claim.window, report_id = %report_id, "report requested");
                    claim.report_id = Some(report_id);
                    requested_at = Some(tokio::time::Instant::now());
                }
                Err(err) if err.stops_account() => {
                    lanes.stopped.cancel();
                    let cooldown = self.refusal_cooldown(&err);
                    let released = claim.clone();
                    let reason = cooldown.reason.clone();
                    blocking(&self.ledger, move |ledger| {
                        ledger.release(&released, &reason, now_ts())
                    })
                    .await?;
                    return Ok(UnitEnd::Quota {
                        cooldown,
                        record: true,
                    });
                }
                Err(err) => return self.fail(&claim, &err.to_string()).await,
            }
        }
        let Some(report_id) = claim.report_id.clone() else {
            return self.fail(&claim, "internal: claim has no report id").await;
        };
        // A stuck report that could not be cancelled (it left IN_QUEUE meanwhile, or the
        // cancel was refused) is still working: it is polled on, with only
        // `poll_timeout` left to end it, instead of requesting its window twice.
        let mut detect_stuck = true;
        let polled = loop {
            match self
                .poll(
                    client,
                    lanes,
                    &claim,
                    &report_id,
                    requested_at,
                    detect_stuck,
                )
                .await
            {
                Poll::Stuck(elapsed, factor) => {
                    let (cancelled, how) = self.cancel_stuck(client, &claim, &report_id).await;
                    if cancelled {
                        let message = format!(
                            "report {report_id} still IN_QUEUE after {}, {factor}x its usual latency ({how}); the window is requested again",
                            shown(elapsed),
                        );
                        return self.fail_stuck(&claim, &message).await;
                    }
                    info!(window = %claim.window, report_id = %report_id, outcome = %how, "a report taken for stuck was not cancelled; polling it on");
                    detect_stuck = false;
                }
                other => break other,
            }
        };
        let status = match polled {
            Poll::Finished(status) => status,
            Poll::Error(err) if err.stops_account() => {
                return Ok(UnitEnd::Quota {
                    cooldown: self.refusal_cooldown(&err),
                    record: true,
                })
            }
            Poll::Error(err) => return self.fail(&claim, &err.to_string()).await,
            Poll::Refused(refused) => return self.refused(&claim, refused).await,
            Poll::TimedOut(elapsed) => {
                let (cancelled, how) = self.cancel_stuck(client, &claim, &report_id).await;
                // cancelReport is refused once a report has left IN_QUEUE: it may have
                // finished meanwhile, and a finished report is never thrown away.
                let finished = if cancelled {
                    None
                } else {
                    self.finished_meanwhile(client, &claim, &report_id).await
                };
                match finished {
                    Some(status) => {
                        info!(window = %claim.window, report_id = %report_id, "a report past its poll timeout finished meanwhile; it is applied");
                        status
                    }
                    None => {
                        let message = format!(
                            "report {report_id} not finished after {} ({how}); the window is requested again",
                            shown(elapsed)
                        );
                        return self.fail_stuck(&claim, &message).await;
                    }
                }
            }
            Poll::Stuck(..) => {
                return self
                    .fail(&claim, "internal: poll returned a stuck report twice")
                    .await
            }
            Poll::Cancelled => return Ok(UnitEnd::Cancelled),
        };
        match status.processing_status {
            ProcessingStatus::Cancelled => {
                info!(window = %claim.window, report_id = %report_id, "report cancelled: no data for the window; applying zero rows");
                let applied_claim = claim.clone();
                let applied = blocking(&self.ledger, move |ledger| {
                    ledger.apply_sales(
                        &applied_claim,
                        &mut |_sink| Ok(crate::report::ReportSummary::default()),
                        now_ts(),
                    )
                })
                .await?;
                Ok(UnitEnd::Applied(applied.hours))
            }
            ProcessingStatus::Fatal => {
                let detail = match &status.report_document_id {
                    Some(document_id) => {
                        match self.download(client, lanes, &claim, document_id).await {
                            Ok((path, gzip)) => {
                                let text = crate::store::blocking(move || {
                                    let text = read_error_document(&path, gzip);
                                    let _ = std::fs::remove_file(&path);
                                    text
                                })
                                .await
                                .map_err(|err| SyncError::Join(err.0))?;
                                match text {
                                    Ok(text) => text,
                                    Err(err) => format!("unreadable error document: {err}"),
                                }
                            }
                            Err(CallError::Provider(err)) if err.stops_account() => {
                                return Ok(UnitEnd::Quota {
                                    cooldown: self.refusal_cooldown(&err),
                                    record: true,
                                })
                            }
                            Err(CallError::Provider(err)) => {
                                format!("error document unavailable: {err}")
                            }
                            Err(refused) => return self.refused(&claim, refused).await,
                        }
                    }
                    None => "no error document".to_string(),
                };
                self.fail(&claim, &format!("report {report_id} FATAL: {detail}"))
                    .await
            }
            ProcessingStatus::Done => {
                let Some(document_id) = status.report_document_id.clone() else {
                    return self
                        .fail(
                            &claim,
                            &format!("report {report_id} DONE without a reportDocumentId"),
                        )
                        .await;
                };
                // Downloading and applying cost CPU, memory and database time: they take
                // a work permit (`daemon.max_concurrent_runs`); waiting did not, and the
                // getReportDocument call (and its quota wait) does not either.
                match self
                    .download_retrying(client, lanes, &claim, &document_id)
                    .await
                {
                    Ok((path, _gzip, _permit)) => {
                        let path_text = path.display().to_string();
                        let stored = claim.clone();
                        let document = document_id.clone();
                        blocking(&self.ledger, move |ledger| {
                            ledger.mark_downloaded(&stored, &document, &path_text, now_ts())
                        })
                        .await?;
                        claim.state = HourState::Downloaded;
                        claim.report_document_id = Some(document_id);
                        claim.document_path = Some(path.display().to_string());
                        self.apply(claim).await
                    }
                    Err(CallError::Provider(err)) if err.stops_account() => Ok(UnitEnd::Quota {
                        cooldown: self.refusal_cooldown(&err),
                        record: true,
                    }),
                    Err(CallError::Provider(err)) if document_retryable(&err) => {
                        // The report is finished and its document still there: keep
                        // the report id; the next run asks for the document again
                        // instead of requesting the window again.
                        warn!(window = %claim.window, report_id = %report_id, error = %err, "report document still unavailable after retries; kept in flight for the next run");
                        Ok(UnitEnd::Postponed)
                    }
                    Err(CallError::Provider(err)) => self.fail(&claim, &err.to_string()).await,
                    Err(refused) => self.refused(&claim, refused).await,
                }
            }
            ProcessingStatus::InQueue | ProcessingStatus::InProgress => {
                self.fail(&claim, "internal: poll returned an unfinished report")
                    .await
            }
        }
    }

    /// Polls getReport until the report finishes, times out or shutdown is requested.
    /// A report requested in this run waits in the poll schedule before its first poll
    /// (the learned latency of its kind, or `poll_min`); a resumed one is asked at once.
    /// Pauses grow with the report's age ([`PollSchedule::next_pause`]); transient
    /// errors are retried within the same deadline. Waiting holds no permit.
    async fn poll(
        &self,
        client: &SpApiClient,
        lanes: &Lanes,
        claim: &Claim,
        report_id: &str,
        requested_at: Option<tokio::time::Instant>,
        detect_stuck: bool,
    ) -> Poll {
        let started = tokio::time::Instant::now();
        let settings = self.stream.windowed();
        let mut polls: u32 = 0;
        let mut corrections: u32 = 0;
        // Whether the last answer said IN_QUEUE: only such a report can be taken for
        // stuck, so only its wait is cut short at its stuck limit.
        let mut queued = false;
        // This report's place among its type's probes, while the type has no latency
        // learned ([`PollSchedule::probe`]).
        let mut probe: Option<poll::Probe> = None;
        if requested_at.is_some() {
            let pause = self.next_pause(requested_at, started, 0, &mut probe);
            let planned = Planned {
                requested_at,
                at: started,
                polls: 0,
                probe: &mut probe,
            };
            if !self
                .wait_planned(lanes, started + pause, started, false, planned)
                .await
            {
                return Poll::Cancelled;
            }
            polls = 1;
        }
        loop {
            self.bump();
            let lane = lanes.poll.lock().await;
            if let Err(refused) = self.gate(OP_GET_REPORT, claim, false).await {
                return match refused {
                    CallError::Cancelled => Poll::Cancelled,
                    CallError::Provider(err) => Poll::Error(err),
                    refused => Poll::Refused(refused),
                };
            }
            let result = client.get_report(report_id).await;
            self.observe(OP_GET_REPORT, &result);
            drop(lane);
            match result {
                Ok(status)
                    if !matches!(
                        status.processing_status,
                        ProcessingStatus::InQueue | ProcessingStatus::InProgress
                    ) =>
                {
                    if let (Some(requested), Some(schedule)) = (requested_at, &self.polls) {
                        schedule.learn(
                            &self.account.id,
                            VENDOR_RT_SALES_REPORT,
                            requested.elapsed(),
                        );
                    }
                    return Poll::Finished(status);
                }
                Ok(status) => {
                    // A resumed report is at least as old as this run's polling of it.
                    let age = requested_at.unwrap_or(started).elapsed();
                    // Asked at every poll: the kind's history may have grown meanwhile
                    // (a backfill's first reports are still in flight when it starts).
                    let (factor, stuck_after) = self.poll_waiter().stuck_limit(lanes);
                    queued = status.processing_status == ProcessingStatus::InQueue;
                    if detect_stuck && queued && stuck_after.is_some_and(|limit| age > limit) {
                        return Poll::Stuck(age, factor);
                    }
                    debug!(report_id, status = ?status.processing_status, "report still in progress")
                }
                Err(err) if err.is_transient() => {
                    warn!(report_id, error = %err, "getReport failed; polling again")
                }
                Err(err) if corrections < CORRECTION_RETRIES && self.corrected(&err).await => {
                    corrections += 1;
                    info!(report_id, attempt = corrections, error = %err, "getReport throttled; the bucket was corrected and the report is polled again when it allows");
                }
                Err(err) => return Poll::Error(err),
            }
            let planned_at = tokio::time::Instant::now();
            let pause = self.next_pause(requested_at, planned_at, polls, &mut probe);
            polls = polls.saturating_add(1);
            // The last poll comes at the deadline, not one pause before it.
            let left = settings.poll_timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Poll::TimedOut(started.elapsed());
            }
            let pause = pause.min(left);
            let since = requested_at.unwrap_or(started);
            let planned = Planned {
                requested_at,
                at: planned_at,
                polls,
                probe: &mut probe,
            };
            if !self
                .wait_planned(
                    lanes,
                    planned_at + pause,
                    since,
                    detect_stuck && queued,
                    planned,
                )
                .await
            {
                return Poll::Cancelled;
            }
        }
    }

    /// The pause, from `at`, before the next poll of a report requested at
    /// `requested_at` (`None`: resumed, age unknown) and polled `polls` times, by what
    /// the schedule has learned so far ([`PollSchedule::next_pause`]). While nothing is
    /// learned of its type, a report without a place among the type's probes (taken
    /// into `probe` when one is free) waits `poll_max`, or until the first of its type
    /// finishes ([`PollSchedule::probe`]).
    fn next_pause(
        &self,
        requested_at: Option<tokio::time::Instant>,
        at: tokio::time::Instant,
        polls: u32,
        probe: &mut Option<poll::Probe>,
    ) -> Duration {
        let settings = self.stream.windowed();
        let expected = self
            .polls
            .as_ref()
            .and_then(|schedule| schedule.expected(&self.account.id, VENDOR_RT_SALES_REPORT));
        if let (None, Some(_), Some(schedule)) = (expected, requested_at, &self.polls) {
            if probe.is_none() {
                *probe = schedule.probe(VENDOR_RT_SALES_REPORT);
            }
            if probe.is_none() {
                return settings.poll_max.max(settings.poll_min);
            }
        }
        PollSchedule::next_pause(
            expected,
            requested_at.map(|requested| at.saturating_duration_since(requested)),
            polls,
            settings.poll_min,
            settings.poll_max,
        )
    }

    /// Waits for the next poll at `target` ([`PollWaiter::next_poll`]), and plans it
    /// again, never later, when the report type's latency becomes known meanwhile
    /// ([`PollSchedule::relearned`]): from when it was planned, with what is known now,
    /// so a report already older than its type's first latency is polled at once, and a
    /// younger one at the age it would have been given had that latency been known.
    /// False when the run was aborted.
    async fn wait_planned(
        &self,
        lanes: &Lanes,
        mut target: tokio::time::Instant,
        since: tokio::time::Instant,
        queued: bool,
        planned: Planned<'_>,
    ) -> bool {
        let waiter = self.poll_waiter();
        let Some(schedule) = self.polls.as_deref() else {
            return waiter.next_poll(lanes, target, since, queued).await;
        };
        loop {
            let relearned = schedule.relearned();
            tokio::pin!(relearned);
            // Registered before the wait starts, so a type learned in between is seen.
            relearned.as_mut().enable();
            tokio::select! {
                woke = waiter.next_poll(lanes, target, since, queued) => return woke,
                _ = &mut relearned => {
                    let pause = self.next_pause(
                        planned.requested_at,
                        planned.at,
                        planned.polls,
                        planned.probe,
                    );
                    // In the past: the wait ends at once.
                    target = target.min(planned.at + pause);
                }
            }
        }
    }

    /// [`StreamContext::may_retry_corrected`] where the caller cannot end the run with a
    /// ledger error: a failure to read the cooldowns is logged and read as no retry (the
    /// 429 then stops the run, which meets the ledger's error itself).
    async fn corrected(&self, err: &ProviderError) -> bool {
        match self.may_retry_corrected(err).await {
            Ok(retry) => retry,
            Err(failure) => {
                warn!(error = %failure, "cannot read the cooldowns; the 429 stops the run");
                false
            }
        }
    }

    /// What this unit's polls wait with: the daemon's poll schedule, the run's abort.
    fn poll_waiter(&self) -> PollWaiter<'_> {
        PollWaiter {
            schedule: self.polls.as_deref(),
            abort: &self.abort,
            account: &self.account.id,
        }
    }

    /// A work permit for a download and apply; `None` when the run was aborted while
    /// waiting for one.
    async fn work_permit(&self) -> Option<Option<tokio::sync::OwnedSemaphorePermit>> {
        tokio::select! {
            _ = self.abort.cancelled() => None,
            permit = self.waiting(self.permits.acquire()) => Some(permit),
        }
    }

    /// Asks Amazon to cancel a stuck report (only an IN_QUEUE report can be): whether it
    /// was cancelled, and what became of the request, for the unit's error.
    async fn cancel_stuck(
        &self,
        client: &SpApiClient,
        claim: &Claim,
        report_id: &str,
    ) -> (bool, String) {
        if let Err(refused) = self.gate(OP_CANCEL_REPORT, claim, false).await {
            return (
                false,
                format!("not cancelled: no quota grant ({refused:?})"),
            );
        }
        let result = client.cancel_report(report_id).await;
        self.observe(OP_CANCEL_REPORT, &result);
        match result {
            Ok(()) => {
                info!(window = %claim.window, report_id, "stuck report cancelled");
                (true, "cancelled with cancelReport".to_string())
            }
            Err(err) => {
                debug!(report_id, error = %err, "cancelReport refused");
                (false, format!("cancelReport refused: {err}"))
            }
        }
    }

    /// One more getReport of a report past its poll timeout that could not be cancelled:
    /// its status when it has finished meanwhile (DONE, FATAL or CANCELLED).
    async fn finished_meanwhile(
        &self,
        client: &SpApiClient,
        claim: &Claim,
        report_id: &str,
    ) -> Option<crate::provider::amazon::ReportStatus> {
        self.gate(OP_GET_REPORT, claim, false).await.ok()?;
        let result = client.get_report(report_id).await;
        self.observe(OP_GET_REPORT, &result);
        result.ok().filter(|status| {
            !matches!(
                status.processing_status,
                ProcessingStatus::InQueue | ProcessingStatus::InProgress
            )
        })
    }

    /// getReportDocument then the download, retried with backoff while the failure is
    /// one a finished report's document recovers from (a 5xx or transport failure of
    /// getReportDocument or of the download, an expired download url): a new
    /// getReportDocument each time, never a new createReport. Gives up after
    /// [`DOCUMENT_ATTEMPTS`] with the last error.
    ///
    /// getReportDocument (and its quota wait) holds no work permit; the download takes
    /// one, returned with the file so the apply runs under it.
    async fn download_retrying(
        &self,
        client: &SpApiClient,
        lanes: &Lanes,
        claim: &Claim,
        document_id: &str,
    ) -> Result<(PathBuf, bool, Option<tokio::sync::OwnedSemaphorePermit>), CallError> {
        let mut attempt: u32 = 0;
        let mut corrections: u32 = 0;
        loop {
            let attempted = async {
                let document = self
                    .report_document(client, lanes, document_id, claim)
                    .await?;
                let Some(permit) = self.work_permit().await else {
                    return Err(CallError::Cancelled);
                };
                let (path, gzip) = self
                    .fetch_document(client, claim, document_id, &document)
                    .await?;
                Ok((path, gzip, permit))
            }
            .await;
            match attempted {
                // The gate waits for the corrected bucket: asked again without a pause.
                Err(CallError::Provider(err))
                    if corrections < CORRECTION_RETRIES && self.corrected(&err).await =>
                {
                    corrections += 1;
                    info!(window = %claim.window, document_id, attempt = corrections, error = %err, "report document throttled; the bucket was corrected and it is asked for again when it allows");
                }
                Err(CallError::Provider(err))
                    if document_retryable(&err) && attempt + 1 < DOCUMENT_ATTEMPTS =>
                {
                    let pause = self
                        .stream
                        .windowed()
                        .poll_min
                        .saturating_mul(1u32 << attempt.min(8))
                        .min(DOCUMENT_RETRY_MAX);
                    warn!(window = %claim.window, document_id, attempt = attempt + 1, retry_in_ms = pause.as_millis() as u64, error = %err, "report document unavailable; asking for it again");
                    tokio::select! {
                        _ = self.abort.cancelled() => return Err(CallError::Cancelled),
                        _ = tokio::time::sleep(pause) => {}
                    }
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// getReportDocument then stream the body to a file (an error document of a FATAL
    /// report: small, no work permit). Returns the path and whether it is
    /// gzip-compressed.
    async fn download(
        &self,
        client: &SpApiClient,
        lanes: &Lanes,
        claim: &Claim,
        document_id: &str,
    ) -> Result<(PathBuf, bool), CallError> {
        let document = self
            .report_document(client, lanes, document_id, claim)
            .await?;
        self.fetch_document(client, claim, document_id, &document)
            .await
    }

    /// getReportDocument, one at a time per run (see [`Lanes`]), paced.
    async fn report_document(
        &self,
        client: &SpApiClient,
        lanes: &Lanes,
        document_id: &str,
        claim: &Claim,
    ) -> Result<crate::provider::amazon::ReportDocument, CallError> {
        let lane = lanes.document.lock().await;
        self.gate(OP_GET_REPORT_DOCUMENT, claim, false).await?;
        let result = client.get_report_document(document_id).await;
        self.observe(OP_GET_REPORT_DOCUMENT, &result);
        drop(lane);
        Ok(result?)
    }

    /// Streams a document's body to a file under the stream's documents directory, named
    /// by the id the report gave (not the one in the answer).
    async fn fetch_document(
        &self,
        client: &SpApiClient,
        claim: &Claim,
        document_id: &str,
        document: &crate::provider::amazon::ReportDocument,
    ) -> Result<(PathBuf, bool), CallError> {
        let file_name = format!(
            "{}-{}-{}{}",
            self.account.id,
            claim.claim_id,
            sanitize(document_id),
            if document.gzip { ".json.gz" } else { ".json" }
        );
        let path = self.documents_dir.join(file_name);
        if let Err(err) = tokio::fs::create_dir_all(&self.documents_dir).await {
            return Err(CallError::Provider(ProviderError::InvalidResponse {
                operation: "downloadDocument",
                message: format!("cannot create {}: {err}", self.documents_dir.display()),
            }));
        }
        let bytes = client
            .download_document(document, &path, self.stream.windowed().max_document_bytes)
            .await?;
        debug!(document_id, bytes, "document downloaded");
        Ok((path, document.gzip))
    }

    /// Applies a DOWNLOADED claim from its file, in two passes so that no parsing happens
    /// while the store is held:
    /// 1. validate: the document is streamed, gunzipped and validated whole under the
    ///    stream's [`DocumentLimits`] (decompressed size, field sizes) with no database
    ///    lock held, and its rows are staged (in memory, or in `<document>.staged` for a
    ///    large document: `report::staging`);
    /// 2. apply: one transaction replaces the window's rows with the staged ones (no JSON
    ///    or gzip work inside it) and marks the hours APPLIED.
    ///
    /// A document that does not validate fails the claim and nothing from it is written; a
    /// crash between the passes leaves the hours DOWNLOADED (nothing visible), and the next
    /// run starts again from the document.
    async fn apply(&self, claim: Claim) -> Result<UnitEnd, SyncError> {
        let Some(path_text) = claim.document_path.clone() else {
            return self
                .fail(&claim, "downloaded claim has no document file")
                .await;
        };
        let path = PathBuf::from(&path_text);
        let gzip = path_text.ends_with(".gz");
        let window = claim.window;
        let limits = DocumentLimits::new(self.stream.windowed().max_document_bytes);
        let (document, staging) = (path.clone(), staging_path(&path));
        let validated = crate::store::blocking(move || {
            let started = std::time::Instant::now();
            let summary = stage_vendor_sales_document(&document, gzip, window, limits, &staging);
            (summary, started.elapsed())
        })
        .await
        .map_err(|err| SyncError::Join(err.0))?;
        let (summary, staged) = match validated {
            (Ok((summary, staged)), elapsed) => {
                debug!(window = %window, rows = summary.rows, validate_ms = elapsed.as_millis() as u64, staging_file = staged.file().is_some(), "document validated and staged");
                (summary, staged)
            }
            (Err(err), _) => {
                // The unit fails and is requested again; the document is of no more use.
                remove_document(&path);
                if let ReportError::TooLarge(exceeded) = &err {
                    warn!(window = %window, cap = %exceeded, "document rejected by a size cap");
                }
                return self.fail(&claim, &describe_document_error(&err)).await;
            }
        };
        if let Some(chaos) = &self.chaos {
            chaos.before_apply(&self.account.id).await;
        }
        let applied_claim = claim.clone();
        let ledger = Arc::clone(&self.ledger);
        let result = crate::store::blocking(move || {
            let started = std::time::Instant::now();
            let outcome = ledger.apply_sales(
                &applied_claim,
                &mut |sink| {
                    let rows = read_staged_rows(&staged, sink)?;
                    Ok(crate::report::ReportSummary {
                        rows,
                        ..summary.clone()
                    })
                },
                now_ts(),
            );
            // The staged rows go with `staged` here whatever happened (a retry stages
            // again); the document stays when the store failed, for the retry.
            drop(staged);
            if !matches!(&outcome, Err(err) if err.is_store_failure()) {
                remove_document(&path);
            }
            (outcome, started.elapsed())
        })
        .await
        .map_err(|err| SyncError::Join(err.0))?;
        match result {
            (Ok(applied), elapsed) => {
                info!(
                    window = %claim.window,
                    rows = applied.summary.rows,
                    skipped_partial = applied.summary.skipped_partial,
                    apply_ms = elapsed.as_millis() as u64,
                    "hours applied"
                );
                Ok(UnitEnd::Applied(applied.hours))
            }
            (Err(LedgerError::Document(err)), _) => {
                self.fail(&claim, &describe_document_error(&err)).await
            }
            (Err(other), _) => Err(other.into()),
        }
    }

    async fn fail(&self, claim: &Claim, message: &str) -> Result<UnitEnd, SyncError> {
        let delay = retry_delay(&self.stream, claim.attempts);
        let now = now_ts();
        self.fail_at(claim, message, now + delay.as_secs().max(1) as i64, now)
            .await
    }

    /// A unit whose report was stuck (cancelled, or past `poll_timeout`): the report
    /// failed, not the window, so the window's first [`STUCK_AT_ONCE`] stuck reports
    /// have it requested again at once, with no backoff; a window whose reports keep
    /// getting stuck backs off like any failure.
    async fn fail_stuck(&self, claim: &Claim, message: &str) -> Result<UnitEnd, SyncError> {
        if claim.attempts >= STUCK_AT_ONCE {
            return self.fail(claim, message).await;
        }
        let now = now_ts();
        self.fail_at(claim, message, now, now).await
    }

    async fn fail_at(
        &self,
        claim: &Claim,
        message: &str,
        retry_at: i64,
        now: i64,
    ) -> Result<UnitEnd, SyncError> {
        warn!(
            window = %claim.window,
            attempt = claim.attempts + 1,
            retry_at = %format_ts(retry_at),
            error = message,
            "unit failed; continuing with the next chunk"
        );
        let (failed, text) = (claim.clone(), message.to_string());
        blocking(&self.ledger, move |ledger| {
            ledger.fail(&failed, &text, retry_at, now)
        })
        .await?;
        Ok(UnitEnd::Failed)
    }

    /// A call the quota did not let go (or shutdown stopped before it was made). The
    /// unit goes back without consuming an attempt (to MISSING when it has no report id;
    /// with one it stays in flight and resumes polling), except for configuration errors
    /// (a cost the bucket can never hold), which fail it.
    async fn refused(&self, claim: &Claim, refused: CallError) -> Result<UnitEnd, SyncError> {
        let err = match refused {
            CallError::Provider(err) => return self.fail(claim, &err.to_string()).await,
            CallError::Cancelled => {
                self.give_back(claim, "shutdown").await?;
                return Ok(UnitEnd::Cancelled);
            }
            CallError::Quota(err) => err,
        };
        match self.quota_stop(err) {
            QuotaStop::Cooldown { cooldown, record } => {
                self.give_back(claim, "quota").await?;
                Ok(UnitEnd::Quota { cooldown, record })
            }
            QuotaStop::Deferred {
                reason,
                infrastructure,
            } => {
                let back = if infrastructure {
                    "quota unavailable"
                } else {
                    "quota wait"
                };
                self.give_back(claim, back).await?;
                Ok(UnitEnd::Deferred {
                    reason,
                    infrastructure,
                })
            }
            QuotaStop::Misconfigured(err) => {
                let message = format!(
                    "quota refused the call: {err}; fix [quota.amazon] in the configuration"
                );
                self.fail(claim, &message).await
            }
        }
    }

    /// Returns a unit without a report id to MISSING (no attempt consumed); one with a
    /// report id stays in flight for the next run.
    async fn give_back(&self, claim: &Claim, reason: &'static str) -> Result<(), SyncError> {
        if claim.report_id.is_some() || claim.state != HourState::Requested {
            return Ok(());
        }
        let released = claim.clone();
        blocking(&self.ledger, move |ledger| {
            ledger.release(&released, reason, now_ts())
        })
        .await
    }
}

/// What a unit waits for its next poll with.
struct PollWaiter<'a> {
    schedule: Option<&'a PollSchedule>,
    abort: &'a CancellationToken,
    account: &'a str,
}

impl PollWaiter<'_> {
    /// Waits in the schedule (or, without one, on a timer) until `at`. False when the run
    /// was aborted meanwhile.
    async fn wait(&self, at: tokio::time::Instant) -> bool {
        let wait = async {
            match self.schedule {
                Some(schedule) => schedule.wait_until(at).await,
                None => tokio::time::sleep_until(at).await,
            }
        };
        tokio::select! {
            _ = self.abort.cancelled() => false,
            _ = wait => true,
        }
    }

    /// The factor of the kind's median latency after which a queued report is taken for
    /// stuck (lower once the stream is idle), and that limit if enough is learned.
    fn stuck_limit(&self, lanes: &Lanes) -> (f64, Option<Duration>) {
        let factor = if lanes.is_idle() {
            poll::IDLE_STUCK_FACTOR
        } else {
            poll::STUCK_FACTOR
        };
        let limit = self.schedule.and_then(|schedule| {
            schedule.stuck_after_times(self.account, VENDOR_RT_SALES_REPORT, factor)
        });
        (factor, limit)
    }

    /// Waits for the next poll at `at`. A report last seen IN_QUEUE (`queued`, aged
    /// from `since`) is polled sooner when its stuck limit comes first, and looked at
    /// again when its stream goes idle meanwhile (the limit drops to
    /// [`poll::IDLE_STUCK_FACTOR`]): the pause grows with the age (15 % of it), so a
    /// stuck report at the end of a backfill would otherwise be found up to that much
    /// later, and its window requested again that much later. False when the run was
    /// aborted meanwhile.
    async fn next_poll(
        &self,
        lanes: &Lanes,
        at: tokio::time::Instant,
        since: tokio::time::Instant,
        queued: bool,
    ) -> bool {
        if !queued {
            return self.wait(at).await;
        }
        loop {
            let went_idle = lanes.went_idle.notified();
            tokio::pin!(went_idle);
            // Registered before the flag is read, so a turn to idle in between is seen.
            went_idle.as_mut().enable();
            let idle = lanes.is_idle();
            let (_, limit) = self.stuck_limit(lanes);
            // Just past the limit: the poll then finds the report older than it.
            let stuck_at = limit
                .and_then(|limit| limit.checked_add(Duration::from_millis(1)))
                .and_then(|limit| since.checked_add(limit));
            let target = match stuck_at {
                Some(stuck_at) => at.min(stuck_at),
                None => at,
            };
            tokio::select! {
                woke = self.wait(target) => return woke,
                _ = &mut went_idle, if !idle => {}
            }
        }
    }
}

/// When a report's next poll was planned and what that plan went by: what
/// [`StreamContext::wait_planned`] plans again with when its type's latency becomes known.
struct Planned<'p> {
    requested_at: Option<tokio::time::Instant>,
    at: tokio::time::Instant,
    polls: u32,
    probe: &'p mut Option<poll::Probe>,
}

/// A time a report waited, as a message shows it: to the tenth of a second.
fn shown(elapsed: Duration) -> String {
    let tenths = u64::try_from(elapsed.as_millis() / 100).unwrap_or(u64::MAX / 100);
    humantime::format_duration(Duration::from_millis(tenths.saturating_mul(100))).to_string()
}

#[cfg(test)]
mod tests {
    //! Real time, short durations (this crate's tokio has no `test-util`, so no paused
    //! clock): each wake is asserted inside a window at least a second wide around where
    //! it must fall, and apart from where it would fall without the rule under test.
    use super::*;

    /// The median these tests teach: a queued report is stuck after 2 s, or 600 ms once
    /// its stream is idle.
    const MEDIAN: Duration = Duration::from_millis(200);

    fn learned() -> Arc<PollSchedule> {
        let schedule = Arc::new(PollSchedule::new());
        for _ in 0..poll::STUCK_MIN_SAMPLES {
            schedule.learn("acct", VENDOR_RT_SALES_REPORT, MEDIAN);
        }
        schedule
    }

    /// Runs `next_poll` on a spawned task (the schedule's driver beside it) while
    /// `meanwhile` runs; answers how long after the start it returned, and what.
    async fn wait_next_poll(
        schedule: &Arc<PollSchedule>,
        lanes: &Arc<Lanes>,
        at: Duration,
        queued: bool,
        meanwhile: impl std::future::Future<Output = ()>,
    ) -> (Duration, bool) {
        let stop = CancellationToken::new();
        let driver = {
            let (schedule, stop) = (Arc::clone(schedule), stop.clone());
            tokio::spawn(async move { schedule.drive(stop).await })
        };
        let start = tokio::time::Instant::now();
        let waiter = {
            let (schedule, lanes) = (Arc::clone(schedule), Arc::clone(lanes));
            tokio::spawn(async move {
                let abort = CancellationToken::new();
                let waiter = PollWaiter {
                    schedule: Some(&schedule),
                    abort: &abort,
                    account: "acct",
                };
                let woke = waiter.next_poll(&lanes, start + at, start, queued).await;
                (start.elapsed(), woke)
            })
        };
        meanwhile.await;
        let answer = waiter.await.expect("the waiter");
        stop.cancel();
        driver.await.expect("the driver");
        answer
    }

    async fn idle_after(lanes: Arc<Lanes>, after: Duration) {
        tokio::time::sleep(after).await;
        lanes.set_idle(true);
    }

    #[tokio::test]
    async fn a_queued_report_is_polled_at_its_stuck_limit_when_that_comes_before_its_pause() {
        let (schedule, lanes) = (learned(), Arc::new(Lanes::default()));
        let (after, woke) =
            wait_next_poll(&schedule, &lanes, Duration::from_secs(60), true, async {}).await;
        assert!(woke);
        assert!(
            (Duration::from_secs(2)..Duration::from_secs(20)).contains(&after),
            "woke after {after:?}: 10 x the 200 ms median is 2 s, the pause 60 s"
        );
    }

    #[tokio::test]
    async fn a_report_in_progress_waits_for_its_pause() {
        let (schedule, lanes) = (learned(), Arc::new(Lanes::default()));
        let (after, woke) =
            wait_next_poll(&schedule, &lanes, Duration::from_secs(3), false, async {}).await;
        assert!(woke);
        assert!(
            after >= Duration::from_secs(3),
            "woke after {after:?}, before its 3 s pause (the 2 s stuck limit is for queued reports)"
        );
    }

    #[tokio::test]
    async fn a_queued_report_past_the_idle_limit_is_polled_when_its_stream_goes_idle() {
        let (schedule, lanes) = (learned(), Arc::new(Lanes::default()));
        let meanwhile = idle_after(Arc::clone(&lanes), Duration::from_secs(1));
        let (after, woke) =
            wait_next_poll(&schedule, &lanes, Duration::from_secs(60), true, meanwhile).await;
        assert!(woke);
        assert!(
            (Duration::from_secs(1)..Duration::from_secs(2)).contains(&after),
            "woke after {after:?}: idle at 1 s, past 3 x the median (600 ms); the busy limit is 2 s"
        );
    }

    #[tokio::test]
    async fn a_queued_report_under_the_idle_limit_waits_for_it_when_its_stream_goes_idle() {
        let (schedule, lanes) = (learned(), Arc::new(Lanes::default()));
        let meanwhile = idle_after(Arc::clone(&lanes), Duration::from_millis(100));
        let (after, _) =
            wait_next_poll(&schedule, &lanes, Duration::from_secs(60), true, meanwhile).await;
        assert!(
            (Duration::from_millis(600)..Duration::from_secs(2)).contains(&after),
            "woke after {after:?}: idle at 100 ms, so at 3 x the median (600 ms)"
        );
    }

    #[tokio::test]
    async fn without_a_learned_latency_a_queued_report_waits_for_its_pause() {
        let (schedule, lanes) = (Arc::new(PollSchedule::new()), Arc::new(Lanes::default()));
        lanes.set_idle(true);
        let (after, _) =
            wait_next_poll(&schedule, &lanes, Duration::from_millis(700), true, async {
            })
            .await;
        assert!(
            (Duration::from_millis(700)..Duration::from_secs(20)).contains(&after),
            "woke after {after:?}"
        );
    }
}
