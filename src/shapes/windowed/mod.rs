//! The windowed-stream runner: seed the lookback window, resume units in flight, then
//! claim → createReport → poll getReport → getReportDocument → download → apply, one
//! unit at a time per stream.
//!
//! Failure policy (seeds 000 and 001):
//! - a `QuotaExceeded` from any call is a hard stop: a cooldown is persisted, the rest of
//!   the run is abandoned and no attempt is consumed (a unit with a report id stays in
//!   flight and resumes polling after the cooldown; one without goes back to MISSING);
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

mod settings;
pub use settings::WindowedSettings;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::domain::{floor_hour, format_ts, now_ts, HourWindow, HOUR};
use crate::provider::amazon::{ProcessingStatus, SpApiClient, VENDOR_RT_SALES_REPORT};
use crate::provider::ProviderError;
use crate::quota::{Observation, Pacer, QuotaError};
use crate::report::{read_error_document, read_vendor_sales_document, ReportError};
use crate::shapes::spec::{AccountConfig, StreamConfig};
use crate::store::{account_scope, Claim, Cooldown, HourState, LedgerError, LedgerStore, Priority};

/// Everything one stream runner needs.
#[derive(Clone)]
pub struct StreamContext {
    pub account: Arc<AccountConfig>,
    pub stream: StreamConfig,
    pub ledger: Arc<dyn LedgerStore>,
    /// The stream's sync shape and the client it calls.
    pub work: StreamWork,
    /// Where downloaded documents wait between DOWNLOADED and APPLIED.
    pub documents_dir: PathBuf,
    /// `task:pid@host`, written to `claimed_by`.
    pub owner: String,
    /// Stop claiming: shutdown was requested. Units in flight still finish.
    pub cancel: CancellationToken,
    /// Stop now: the shutdown grace period is over, or the lease was lost. Units in
    /// flight stop at their next await and keep their report ids for the next owner.
    pub abort: CancellationToken,
    /// Bumped per unit step and poll, read by the supervisor's stuck detection.
    pub progress: Option<Arc<crate::domain::supervision::ChildProgress>>,
    /// Crash drills (`[chaos]`), for this account only.
    pub chaos: Option<Arc<crate::domain::chaos::Chaos>>,
    /// The daemon's in-process counters (calls, 429s, lock takeovers).
    pub metrics: Arc<crate::telemetry::Metrics>,
}

/// What a stream's runs do: its sync shape and the provider client it calls.
#[derive(Clone)]
pub enum StreamWork {
    /// The windowed hour ledger over SP-API reports (seeds 000, 001): this module.
    Reports(Arc<SpApiClient>),
    /// Another sync shape (cursor streams, keyed job queues), see [`ShapeRunner`].
    Shape(Arc<dyn ShapeRunner>),
}

/// A sync shape other than the windowed one. The runner loop, leases, fencing,
/// cooldown waits and supervision stay the same for every shape: a shape only says
/// what one leased run does and how its calls are paced.
pub trait ShapeRunner: Send + Sync + 'static {
    /// The pacer every provider call of the stream asks first (`None`: unpaced).
    fn pacer(&self) -> Option<&Pacer>;
    /// One run under `fence` (every ledger write carries it): work until nothing is left,
    /// a cooldown stops it, or `context.cancel`/`context.abort` fire. The contract of
    /// [`StreamContext::run_fenced`].
    fn run<'a>(
        &'a self,
        context: &'a StreamContext,
        fence: Option<u64>,
    ) -> BoxFuture<'a, Result<RunOutcome, SyncError>>;
}

impl StreamWork {
    /// The pacer of the stream's client.
    pub fn pacer(&self) -> Option<&Pacer> {
        match self {
            StreamWork::Reports(client) => client.pacer(),
            StreamWork::Shape(runner) => runner.pacer(),
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// Nothing left to claim; `applied` hours were applied and `failed` units failed.
    Finished { applied: i64, failed: i64 },
    /// A cooldown is running (found at the start, or started by a 429 in this run).
    CoolingDown { until: i64, reason: String },
    /// The quota could not grant a call in time (`infrastructure`: its backend, Redis,
    /// could not be reached). The unit went back without consuming an attempt; try again
    /// after `retry_in`.
    Deferred {
        reason: String,
        retry_in: Duration,
        infrastructure: bool,
    },
    /// Shutdown was requested; units in flight keep their report ids.
    Cancelled,
}

/// The longest a unit waits for a quota grant before it goes back (without consuming an
/// attempt) and the run ends: well under the supervisor's stuck detection (15m).
pub const QUOTA_WAIT_MAX: Duration = Duration::from_secs(5 * 60);
/// How soon a run deferred for a quota deadline tries again (every shape).
pub const DEFERRED_RETRY: Duration = Duration::from_secs(1);

/// Errors that end a run: infrastructure, not the unit's fault.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("blocking ledger task failed: {0}")]
    Join(String),
}

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
}

/// What the TokenManager's refusal of a grant means for a run, the same for every shape
/// (see [`StreamContext::quota_stop`]).
#[derive(Debug)]
pub enum QuotaStop {
    /// A cooldown runs: its copy under the account's scope; `record`: write it to the
    /// ledger (see [`StreamContext::quota_cooldown_copy`]). The run stops.
    Cooldown { cooldown: Cooldown, record: bool },
    /// No grant in time, or shutdown stopped the wait (`infrastructure`: the quota
    /// backend could not be reached): the work goes back unharmed and the run ends.
    Deferred {
        reason: String,
        infrastructure: bool,
    },
    /// The call can never be granted (a cost over the burst, an unknown bucket): a
    /// configuration error, the work fails with the fix.
    Misconfigured(QuotaError),
}

/// Why a provider call was not made or failed.
#[derive(Debug)]
pub enum CallError {
    Provider(crate::provider::ProviderError),
    Quota(QuotaError),
    /// Shutdown before the call was made.
    Cancelled,
}

impl From<ProviderError> for CallError {
    fn from(err: ProviderError) -> CallError {
        CallError::Provider(err)
    }
}

const OP_CREATE_REPORT: &str = "createReport";
const OP_GET_REPORT: &str = "getReport";
const OP_GET_REPORT_DOCUMENT: &str = "getReportDocument";

/// Runs `work` against the ledger on the blocking pool, off the async worker threads.
pub async fn blocking<T, F>(ledger: &Arc<dyn LedgerStore>, work: F) -> Result<T, SyncError>
where
    T: Send + 'static,
    F: FnOnce(&dyn LedgerStore) -> Result<T, LedgerError> + Send + 'static,
{
    let ledger = Arc::clone(ledger);
    tokio::task::spawn_blocking(move || work(ledger.as_ref()))
        .await
        .map_err(|err| SyncError::Join(err.to_string()))?
        .map_err(SyncError::from)
}

/// The lookback window of complete hours at `now`: `[end - lookback, end)` where `end`
/// is the start of the newest hour that is complete plus the safety lag.
pub fn lookback_window(stream: &StreamConfig, now: i64) -> HourWindow {
    let end = floor_hour(now - stream.safety_lag.as_secs() as i64);
    HourWindow::new(end - stream.windowed().lookback.as_secs() as i64, end)
}

/// `min(max, base·2^n)·(1 + rand·0.2)` seconds after a unit's `n`-th failure.
pub fn retry_delay(stream: &StreamConfig, attempts_before: i64) -> Duration {
    let exponent = attempts_before.clamp(0, 30) as u32;
    let base = stream.retry_base.as_secs_f64() * 2f64.powi(exponent as i32);
    let capped = base.min(stream.retry_max.as_secs_f64());
    let jitter = 1.0 + rand::thread_rng().gen_range(0.0..0.2);
    Duration::from_secs_f64(capped * jitter)
}

impl StreamContext {
    /// The account's cooldown scope in the ledger (`{provider}:{account}`).
    pub fn scope(&self) -> String {
        account_scope(self.account.provider.as_str(), &self.account.id)
    }

    /// One run without a lease (single-process tools and tests). See [`Self::run_leased`].
    pub async fn run_once(&self) -> Result<RunOutcome, SyncError> {
        self.run_fenced(None).await
    }

    /// One run: seed, audits, resume in-flight units, then claim until nothing is left.
    /// Every ledger write carries `fence`, so a run whose lease was taken over cannot
    /// overwrite the new owner's work.
    pub async fn run_fenced(&self, fence: Option<u64>) -> Result<RunOutcome, SyncError> {
        let client = match &self.work {
            StreamWork::Reports(client) => Arc::clone(client),
            StreamWork::Shape(runner) => return runner.run(self, fence).await,
        };
        let now = now_ts();
        if let Some(cooling) = self.cooling_down().await? {
            return Ok(cooling);
        }
        self.seed_and_audit(now).await?;

        let mut applied = 0i64;
        let mut failed = 0i64;
        let (account, stream) = (self.account.id.clone(), self.stream.name.clone());
        let resumable = blocking(&self.ledger, move |ledger| {
            ledger.in_flight(&account, &stream)
        })
        .await?;
        let mut queue: std::collections::VecDeque<Claim> = resumable.into();
        if !queue.is_empty() {
            info!(account = %self.account.id, stream = %self.stream.name, units = queue.len(), "resuming units in flight");
        }
        loop {
            if self.cancel.is_cancelled() || self.abort.is_cancelled() {
                return Ok(RunOutcome::Cancelled);
            }
            let claim = match queue.pop_front() {
                Some(claim) => claim,
                None => {
                    let (account, stream, owner) = (
                        self.account.id.clone(),
                        self.stream.name.clone(),
                        self.owner.clone(),
                    );
                    let max_hours = (self.stream.windowed().chunk.as_secs() as i64 / HOUR).max(1);
                    let order = self.stream.windowed().order;
                    let claimed = blocking(&self.ledger, move |ledger| {
                        ledger.claim(&account, &stream, max_hours, order, &owner, fence, now_ts())
                    })
                    .await?;
                    match claimed {
                        Some(claim) => claim,
                        None => break,
                    }
                }
            };
            match self.process(&client, claim).await? {
                UnitEnd::Applied(hours) => applied += hours,
                UnitEnd::Failed => failed += 1,
                UnitEnd::Cancelled => return Ok(RunOutcome::Cancelled),
                UnitEnd::Quota { cooldown, record } => {
                    return self
                        .cool_down(
                            cooldown,
                            record,
                            "aborting the remaining chunks of this run and cooling down",
                        )
                        .await;
                }
                UnitEnd::Deferred {
                    reason,
                    infrastructure,
                } => {
                    warn!(
                        account = %self.account.id,
                        stream = %self.stream.name,
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
            }
        }
        if applied > 0 || failed > 0 {
            info!(account = %self.account.id, stream = %self.stream.name, applied_hours = applied, failed_units = failed, "run complete");
        }
        Ok(RunOutcome::Finished { applied, failed })
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
            debug!(account = %self.account.id, stream = %self.stream.name, hours = seeded, window = %window, "seeded missing hours");
        }
        for (kind, hours) in audited {
            info!(account = %self.account.id, stream = %self.stream.name, kind, hours, "audit scheduled; hours will be re-requested at audit priority");
        }
        Ok(())
    }

    /// Tells the supervisor's stuck detection that the stream made progress.
    pub fn bump(&self) {
        if let Some(progress) = &self.progress {
            progress.bump();
        }
    }

    /// Drives one claim to APPLIED or FAILED, or stops it for quota or shutdown.
    async fn process(&self, client: &SpApiClient, mut claim: Claim) -> Result<UnitEnd, SyncError> {
        self.bump();
        if let Some(chaos) = &self.chaos {
            chaos.on_unit(&self.account.id).await;
        }
        if claim.state == HourState::Downloaded {
            return self.apply(claim).await;
        }
        if claim.report_id.is_none() {
            let created = match self.gate(OP_CREATE_REPORT, &claim, true).await {
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
                Err(refused) => return self.refused(&claim, refused).await,
            };
            match created {
                Ok(report_id) => {
                    let (stored, id) = (claim.clone(), report_id.clone());
                    blocking(&self.ledger, move |ledger| {
                        ledger.set_report_id(&stored, &id, now_ts())
                    })
                    .await?;
                    info!(account = %self.account.id, stream = %self.stream.name, window = %claim.window, report_id = %report_id, "report requested");
                    claim.report_id = Some(report_id);
                }
                Err(err) if err.stops_account() => {
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
        let status = match self.poll(client, &claim, &report_id).await {
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
                let message = format!(
                    "report {report_id} not finished after {}",
                    humantime::format_duration(elapsed)
                );
                return self.fail(&claim, &message).await;
            }
            Poll::Cancelled => return Ok(UnitEnd::Cancelled),
        };
        match status.processing_status {
            ProcessingStatus::Cancelled => {
                info!(account = %self.account.id, stream = %self.stream.name, window = %claim.window, report_id = %report_id, "report cancelled: no data for the window; applying zero rows");
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
                    Some(document_id) => match self.download(client, &claim, document_id).await {
                        Ok((path, gzip)) => {
                            let text = tokio::task::spawn_blocking(move || {
                                let text = read_error_document(&path, gzip);
                                let _ = std::fs::remove_file(&path);
                                text
                            })
                            .await
                            .map_err(|err| SyncError::Join(err.to_string()))?;
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
                    },
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
                match self.download(client, &claim, &document_id).await {
                    Ok((path, _gzip)) => {
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

    /// Polls getReport with growing pauses until the report finishes, times out or
    /// shutdown is requested. Transient errors are retried within the same deadline.
    async fn poll(&self, client: &SpApiClient, claim: &Claim, report_id: &str) -> Poll {
        let started = tokio::time::Instant::now();
        let mut pause = self.stream.windowed().poll_min;
        loop {
            self.bump();
            if let Err(refused) = self.gate(OP_GET_REPORT, claim, false).await {
                return match refused {
                    CallError::Cancelled => Poll::Cancelled,
                    CallError::Provider(err) => Poll::Error(err),
                    refused => Poll::Refused(refused),
                };
            }
            let result = client.get_report(report_id).await;
            self.observe(OP_GET_REPORT, &result);
            match result {
                Ok(status)
                    if !matches!(
                        status.processing_status,
                        ProcessingStatus::InQueue | ProcessingStatus::InProgress
                    ) =>
                {
                    return Poll::Finished(status)
                }
                Ok(status) => {
                    debug!(account = %self.account.id, report_id, status = ?status.processing_status, "report still in progress")
                }
                Err(err) if err.is_transient() => {
                    warn!(account = %self.account.id, report_id, error = %err, "getReport failed; polling again")
                }
                Err(err) => return Poll::Error(err),
            }
            if started.elapsed() + pause > self.stream.windowed().poll_timeout {
                return Poll::TimedOut(started.elapsed());
            }
            // A minimum pause between polls; the getReport bucket decides when the
            // next call may actually go.
            tokio::select! {
                _ = self.abort.cancelled() => return Poll::Cancelled,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(self.stream.windowed().poll_max);
        }
    }

    /// getReportDocument then stream the body to a file. Returns the path and whether
    /// it is gzip-compressed.
    async fn download(
        &self,
        client: &SpApiClient,
        claim: &Claim,
        document_id: &str,
    ) -> Result<(PathBuf, bool), CallError> {
        self.gate(OP_GET_REPORT_DOCUMENT, claim, false).await?;
        let result = client.get_report_document(document_id).await;
        self.observe(OP_GET_REPORT_DOCUMENT, &result);
        let document = result?;
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
            .download_document(&document, &path, self.stream.windowed().max_document_bytes)
            .await?;
        debug!(account = %self.account.id, document_id, bytes, "document downloaded");
        Ok((path, document.gzip))
    }

    /// Applies a DOWNLOADED claim from its file in one transaction; a document that does
    /// not validate fails the claim and nothing from it is written.
    async fn apply(&self, claim: Claim) -> Result<UnitEnd, SyncError> {
        let Some(path_text) = claim.document_path.clone() else {
            return self
                .fail(&claim, "downloaded claim has no document file")
                .await;
        };
        let path = PathBuf::from(&path_text);
        let gzip = path_text.ends_with(".gz");
        let window = claim.window;
        let applied_claim = claim.clone();
        let ledger = Arc::clone(&self.ledger);
        let result = tokio::task::spawn_blocking(move || {
            let outcome = ledger.apply_sales(
                &applied_claim,
                &mut |sink| read_vendor_sales_document(&path, gzip, window, sink),
                now_ts(),
            );
            if !matches!(outcome, Err(LedgerError::Sqlite(_))) {
                remove_document(&path);
            }
            outcome
        })
        .await
        .map_err(|err| SyncError::Join(err.to_string()))?;
        match result {
            Ok(applied) => {
                info!(
                    account = %self.account.id,
                    stream = %self.stream.name,
                    window = %claim.window,
                    rows = applied.summary.rows,
                    skipped_partial = applied.summary.skipped_partial,
                    "hours applied"
                );
                Ok(UnitEnd::Applied(applied.hours))
            }
            Err(LedgerError::Document(err)) => {
                self.fail(&claim, &describe_document_error(&err)).await
            }
            Err(other) => Err(other.into()),
        }
    }

    async fn fail(&self, claim: &Claim, message: &str) -> Result<UnitEnd, SyncError> {
        let delay = retry_delay(&self.stream, claim.attempts);
        let now = now_ts();
        let retry_at = now + delay.as_secs().max(1) as i64;
        warn!(
            account = %self.account.id,
            stream = %self.stream.name,
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

    /// The running cooldown that stops this account's calls: the TokenManager's view
    /// (the provider, the selling partner, the account) when the client is paced, else
    /// the ledger's cooldown of the account scope. A cooldown the TokenManager keeps
    /// elsewhere (Redis, or the seller's scope) is copied under the account's scope in
    /// the ledger, so `status` shows it.
    pub async fn active_cooldown(&self) -> Result<Option<Cooldown>, SyncError> {
        let now = now_ts();
        let Some(pacer) = self.work.pacer() else {
            let scope = self.scope();
            return blocking(&self.ledger, move |ledger| {
                ledger.active_cooldown(&scope, now)
            })
            .await;
        };
        let Some(cooldown) = pacer.cooldown(&self.account.id).await else {
            return Ok(None);
        };
        let (copy, record) =
            self.quota_cooldown_copy(&cooldown.scope, &cooldown.reason, cooldown.until_at);
        if record {
            blocking(&self.ledger, move |ledger| {
                match ledger.active_cooldown(&copy.scope, now)? {
                    Some(existing) if existing.until_at >= copy.until_at => Ok(()),
                    _ => ledger.set_cooldown(&copy),
                }
            })
            .await?;
        }
        Ok(Some(cooldown))
    }

    /// A cooldown under this account's scope standing for the TokenManager's cooldown of
    /// `scope` (a copy for `status`), and whether to write it to the ledger: when the
    /// pacer mirrors its cooldowns there, or `scope` is another account's whose quota
    /// this one shares. Every shape that meets the TokenManager's cooldown uses this.
    pub fn quota_cooldown_copy(&self, scope: &str, reason: &str, until: i64) -> (Cooldown, bool) {
        let own = self.scope();
        let record = scope != own
            || self
                .work
                .pacer()
                .is_some_and(|pacer| pacer.mirror_to_ledger);
        let copy = Cooldown {
            scope: own.clone(),
            reason: reason.to_string(),
            started_at: now_ts(),
            until_at: until,
            detail: Some(if scope == own {
                format!("{scope} cooling down (shared quota store)")
            } else {
                format!("{scope} cooling down (this account shares its quota)")
            }),
        };
        (copy, record)
    }

    /// Waits for the TokenManager's grant of one `operation` call for `claim` (a no-op
    /// for an unpaced client). `stop_on_cancel`: shutdown stops the wait too (nothing
    /// was asked of the provider yet); otherwise only `abort` does.
    async fn gate(
        &self,
        operation: &'static str,
        claim: &Claim,
        stop_on_cancel: bool,
    ) -> Result<(), CallError> {
        let wait = self.stream.windowed().poll_timeout.min(QUOTA_WAIT_MAX);
        self.paced(
            operation,
            1.0,
            crate::quota::Priority::from(claim.priority),
            wait,
            stop_on_cancel,
        )
        .await
    }

    /// Waits up to `wait` for the TokenManager's grant of one `operation` call costing
    /// `cost` tokens at `priority` (a no-op for an unpaced client), bumping the progress
    /// counter meanwhile. `stop_on_cancel`: shutdown stops the wait too (nothing was
    /// asked of the provider yet); otherwise only `abort` does. Every shape paces its
    /// calls through this.
    pub async fn paced(
        &self,
        operation: &str,
        cost: f64,
        priority: crate::quota::Priority,
        wait: Duration,
        stop_on_cancel: bool,
    ) -> Result<(), CallError> {
        let Some(pacer) = self.work.pacer() else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + wait;
        let acquire = pacer
            .handle
            .acquire(pacer.keys(operation), cost, priority, deadline);
        tokio::pin!(acquire);
        // Waiting for a grant is progress, not a freeze: keep the stuck detection quiet.
        let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.abort.cancelled() => return Err(CallError::Cancelled),
                _ = self.cancel.cancelled(), if stop_on_cancel => return Err(CallError::Cancelled),
                _ = heartbeat.tick() => self.bump(),
                answer = &mut acquire => {
                    return match answer {
                        Ok(grant) => {
                            if grant.waited >= Duration::from_secs(1) {
                                debug!(account = %self.account.id, operation, priority = %priority, waited_ms = grant.waited.as_millis() as u64, "quota granted after waiting");
                            }
                            Ok(())
                        }
                        Err(err) => Err(CallError::Quota(err)),
                    };
                }
            }
        }
    }

    /// Counts the call (and a 429) for `/metrics`, and tells the TokenManager what the
    /// response said: the rate from `x-amzn-RateLimit-Limit` after a 2xx, the 429 and its
    /// `Retry-After` otherwise.
    pub fn observe<T>(&self, operation: &'static str, result: &Result<T, ProviderError>) {
        let metrics = &self.metrics;
        metrics.provider_call(self.account.provider.as_str(), operation);
        if let Err(ProviderError::QuotaExceeded { .. }) = result {
            metrics.provider_throttled(self.account.provider.as_str(), operation);
        }
        let Some(pacer) = self.work.pacer() else {
            return;
        };
        match result {
            Ok(_) => {
                let rate = match &self.work {
                    StreamWork::Reports(client) => client.observed_rate_limit(operation),
                    StreamWork::Shape(_) => None,
                };
                if let Some(rate) = rate {
                    pacer
                        .handle
                        .observe(pacer.key(operation), Observation::RateLimitHeader(rate));
                }
            }
            Err(ProviderError::QuotaExceeded { retry_after, .. }) => pacer.handle.observe(
                pacer.key(operation),
                Observation::Throttled {
                    retry_after: *retry_after,
                },
            ),
            Err(_) => {}
        }
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

    /// The cooldown a provider refusal starts under this account's scope: `quota` (the
    /// configured cooldown, or longer if the provider's Retry-After says so) or `auth`
    /// ([`AUTH_COOLDOWN`]: credentials do not heal by retrying every chunk; an operator
    /// fixes them and clears the cooldown). Every shape stops an account through this.
    pub fn refusal_cooldown(&self, err: &ProviderError) -> Cooldown {
        let now = now_ts();
        let (reason, length) = match err {
            ProviderError::QuotaExceeded { retry_after, .. } => (
                "quota",
                self.stream
                    .quota_cooldown
                    .max(retry_after.unwrap_or_default()),
            ),
            ProviderError::Auth { .. } => ("auth", AUTH_COOLDOWN),
            _ => ("quota", self.stream.quota_cooldown),
        };
        Cooldown {
            scope: self.scope(),
            reason: reason.to_string(),
            started_at: now,
            until_at: now + length.as_secs().max(1) as i64,
            detail: Some(err.to_string()),
        }
    }
}

impl StreamContext {
    /// [`RunOutcome::CoolingDown`] when a cooldown stops this account's calls now (see
    /// [`StreamContext::active_cooldown`]): every shape checks this before its first call.
    pub async fn cooling_down(&self) -> Result<Option<RunOutcome>, SyncError> {
        let Some(cooldown) = self.active_cooldown().await? else {
            return Ok(None);
        };
        debug!(
            account = %self.account.id,
            stream = %self.stream.name,
            until = %format_ts(cooldown.until_at),
            reason = %cooldown.reason,
            "in cooldown; skipping provider calls this run"
        );
        Ok(Some(RunOutcome::CoolingDown {
            until: cooldown.until_at,
            reason: cooldown.reason,
        }))
    }

    /// Sorts the TokenManager's refusal of a grant (see [`QuotaStop`]); every shape's
    /// handling of a refused call starts here.
    pub fn quota_stop(&self, err: QuotaError) -> QuotaStop {
        match err {
            QuotaError::CoolingDown {
                scope,
                reason,
                until_utc,
            } => {
                debug!(account = %self.account.id, scope = %scope, until = %until_utc.to_rfc3339(), "cooling down; no call made");
                let (cooldown, record) =
                    self.quota_cooldown_copy(&scope, &reason, until_utc.timestamp());
                QuotaStop::Cooldown { cooldown, record }
            }
            QuotaError::DeadlineExceeded { .. } | QuotaError::Stopped => QuotaStop::Deferred {
                reason: err.to_string(),
                infrastructure: false,
            },
            QuotaError::Unavailable(_) => QuotaStop::Deferred {
                reason: err.to_string(),
                infrastructure: true,
            },
            QuotaError::CostExceedsBurst { .. }
            | QuotaError::UnknownBucket { .. }
            | QuotaError::InvalidCost(_) => QuotaStop::Misconfigured(err),
        }
    }

    /// Ends a run in `cooldown`: logs it (`consequence`: what became of the shape's work),
    /// writes it to the ledger when `record` (a provider refusal, or a copy of the
    /// TokenManager's cooldown from [`StreamContext::quota_cooldown_copy`]) and returns
    /// [`RunOutcome::CoolingDown`]. Every shape ends a refused run through this.
    pub async fn cool_down(
        &self,
        cooldown: Cooldown,
        record: bool,
        consequence: &'static str,
    ) -> Result<RunOutcome, SyncError> {
        error!(
            account = %self.account.id,
            provider = %self.account.provider,
            stream = %self.stream.name,
            until = %format_ts(cooldown.until_at),
            detail = cooldown.detail.as_deref().unwrap_or(""),
            reason = %cooldown.reason,
            "provider refused the account; {consequence}"
        );
        let (until, reason) = (cooldown.until_at, cooldown.reason.clone());
        if record {
            blocking(&self.ledger, move |ledger| ledger.set_cooldown(&cooldown)).await?;
        }
        Ok(RunOutcome::CoolingDown { until, reason })
    }
}

/// How long an account rests after the provider refused its credentials.
pub const AUTH_COOLDOWN: Duration = Duration::from_secs(3600);

/// How a leased run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeasedOutcome {
    Ran(RunOutcome),
    /// Another owner holds the scope's lease until `until_ms`.
    Busy {
        holder: String,
        until_ms: i64,
    },
    /// The lock backend cannot be reached; work waits for it.
    Unavailable(String),
    /// The lease was lost mid-run (not renewed in time, or taken over); work stopped.
    Lost(String),
}

/// Cooldown scope under which lock conditions of a stream are recorded for `status`.
pub fn lock_scope(account: &str, stream: &str) -> String {
    format!("lock:{account}/{stream}")
}

impl StreamContext {
    /// The lease scope of this stream.
    pub fn lease_scope(&self) -> String {
        format!("{}/{}", self.account.id, self.stream.name)
    }

    /// Takes the stream's lease, runs under its fence while a renewer extends it every
    /// ttl/3, and releases it. Busy and unreachable lock backends are recorded (cooldown
    /// reasons `lock_busy`, `lock_unavailable`) so `status` can say why nothing moves.
    pub async fn run_leased(
        &self,
        locks: &crate::lock::LockService,
        ttl: Duration,
    ) -> Result<LeasedOutcome, SyncError> {
        use crate::lock::LockError;
        let scope = self.lease_scope();
        let status_scope = lock_scope(&self.account.id, &self.stream.name);
        let mut acquired = locks.acquire_reporting(&scope, &self.owner, ttl).await;
        if let Err(LockError::Busy { holder, .. }) = &acquired {
            if *holder == self.owner {
                // Our own previous incarnation (an account actor that crashed or was
                // killed) left it; it cannot release in a destructor. Take it back: the
                // new fence shuts out anything the old incarnation might still write.
                info!(scope = %scope, owner = %self.owner, "taking back the lease of a previous incarnation of this account");
                let _ = locks.release_scope(&scope, true).await;
                acquired = locks.acquire_reporting(&scope, &self.owner, ttl).await;
            }
        }
        let lease = match acquired {
            Ok((lease, taken_from)) => {
                if taken_from.is_some() {
                    // An expired lease of another owner: seed 000's "steal", counted.
                    self.metrics.lock_takeover(&scope);
                }
                lease
            }
            Err(LockError::Busy { holder, .. }) => {
                let until_ms = locks
                    .list()
                    .await
                    .ok()
                    .and_then(|all| all.into_iter().find(|info| info.scope == scope))
                    .and_then(|info| info.expires_at_ms)
                    .unwrap_or_else(|| (now_ts() + ttl.as_secs() as i64) * 1000);
                let until = (until_ms / 1000).max(now_ts() + 1);
                self.record_lock_condition(
                    &status_scope,
                    "lock_busy",
                    until,
                    &format!("held by {holder}"),
                )
                .await?;
                debug!(scope = %scope, holder = %holder, "lease busy; another owner works this scope");
                return Ok(LeasedOutcome::Busy { holder, until_ms });
            }
            Err(err) => {
                let message = err.to_string();
                self.record_lock_condition(
                    &status_scope,
                    "lock_unavailable",
                    now_ts() + 30,
                    &message,
                )
                .await?;
                warn!(scope = %scope, error = %message, "lock backend unavailable; work on this scope waits");
                return Ok(LeasedOutcome::Unavailable(message));
            }
        };
        let cleared = status_scope.clone();
        blocking(&self.ledger, move |ledger| {
            ledger.clear_cooldown(&cleared).map(|_| ())
        })
        .await?;

        let lost = self.abort.child_token();
        let renewer = tokio::spawn(renew_until_lost(
            locks.clone(),
            lease.clone(),
            ttl,
            lost.clone(),
        ));
        let mut leased = self.clone();
        leased.abort = lost.clone();
        let outcome = leased.run_fenced(Some(lease.fence)).await;
        // Abort, not drop: dropping a JoinHandle detaches the task, which would wake after
        // ttl/3, fail to renew the released lease and report it lost.
        renewer.abort();
        if let Err(err) = locks.release(&lease).await {
            debug!(scope = %scope, error = %err, "lease release failed; it expires by itself");
        }
        match outcome {
            Err(SyncError::Ledger(LedgerError::StaleFence { .. })) => {
                warn!(scope = %scope, fence = lease.fence, "lease taken over; stopped before writing");
                Ok(LeasedOutcome::Lost("a newer fence was seen".to_string()))
            }
            Ok(RunOutcome::Cancelled) if lost.is_cancelled() && !self.abort.is_cancelled() => {
                Ok(LeasedOutcome::Lost("lease not renewed in time".to_string()))
            }
            Ok(outcome) => Ok(LeasedOutcome::Ran(outcome)),
            Err(err) => Err(err),
        }
    }

    async fn record_lock_condition(
        &self,
        scope: &str,
        reason: &str,
        until: i64,
        detail: &str,
    ) -> Result<(), SyncError> {
        let cooldown = Cooldown {
            scope: scope.to_string(),
            reason: reason.to_string(),
            started_at: now_ts(),
            until_at: until,
            detail: Some(detail.to_string()),
        };
        blocking(&self.ledger, move |ledger| {
            ledger.clear_cooldown(&cooldown.scope)?;
            ledger.set_cooldown(&cooldown)
        })
        .await
    }
}

/// Aborts a spawned task when dropped.
pub struct AbortOnDrop(pub tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Renews `lease` every ttl/3; cancels `lost` when it is taken over, or when the backend
/// stays unreachable until the lease would have expired.
async fn renew_until_lost(
    locks: crate::lock::LockService,
    lease: crate::lock::Lease,
    ttl: Duration,
    lost: CancellationToken,
) {
    let every = crate::lock::Lease::renew_every(ttl);
    let mut expires_at_ms = lease.expires_at_ms;
    loop {
        tokio::select! {
            _ = lost.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match locks.renew(&lease, ttl).await {
            Ok(renewed) => expires_at_ms = renewed.expires_at_ms,
            Err(crate::lock::LockError::Unavailable(message))
                if chrono::Utc::now().timestamp_millis() + (every.as_millis() as i64)
                    < expires_at_ms =>
            {
                warn!(scope = %lease.scope, error = %message, "lease renewal failed; retrying before it expires");
            }
            Err(err) => {
                error!(scope = %lease.scope, error = %err, "lease lost; stopping work on this scope");
                lost.cancel();
                return;
            }
        }
    }
}

enum Poll {
    Finished(crate::provider::amazon::ReportStatus),
    Error(ProviderError),
    /// The quota gave no grant (see [`StreamContext::refused`]).
    Refused(CallError),
    TimedOut(Duration),
    Cancelled,
}

fn describe_document_error(err: &ReportError) -> String {
    format!("document rejected, nothing applied: {err}")
}

fn remove_document(path: &Path) {
    if let Err(err) = std::fs::remove_file(path) {
        if err.kind() != std::io::ErrorKind::NotFound {
            warn!(path = %path.display(), error = %err, "cannot remove applied document");
        }
    }
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
