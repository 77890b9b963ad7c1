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
use tracing::{debug, info, warn};

use super::context::{
    blocking, retry_delay, CallError, QuotaStop, RunOutcome, ShapeRunner, StreamContext, SyncError,
    DEFERRED_RETRY,
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
}

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
}

impl StreamContext {
    /// One run of a report stream: seed, audits, resume in-flight units, then claim until
    /// nothing is left.
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

        let mut applied = 0i64;
        let mut failed = 0i64;
        let (account, stream) = (self.account.id.clone(), self.stream.name.clone());
        let resumable = blocking(&self.ledger, move |ledger| {
            ledger.in_flight(&account, &stream)
        })
        .await?;
        // Units in flight come back unfenced (`WriteFence::Missing`, refused by the store):
        // they are worked under this run's lease, so they carry its fence.
        let mut queue: std::collections::VecDeque<Claim> = resumable
            .into_iter()
            .map(|claim| Claim { fence, ..claim })
            .collect();
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
            match self.process(client, claim).await? {
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

    /// Applies a DOWNLOADED claim from its file, in two passes so that no parsing happens
    /// while the store is held:
    /// 1. validate: the document is streamed, gunzipped and validated whole under the
    ///    stream's [`DocumentLimits`] (decompressed size, field sizes) with no database
    ///    lock held, and its rows are staged to `<document>.staged`;
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
        let staged = staging_path(&path);
        let gzip = path_text.ends_with(".gz");
        let window = claim.window;
        let limits = DocumentLimits::new(self.stream.windowed().max_document_bytes);
        let (document, staging) = (path.clone(), staged.clone());
        let validated = crate::store::blocking(move || {
            let started = std::time::Instant::now();
            let summary = stage_vendor_sales_document(&document, gzip, window, limits, &staging);
            (summary, started.elapsed())
        })
        .await
        .map_err(|err| SyncError::Join(err.0))?;
        let summary = match validated {
            (Ok(summary), elapsed) => {
                debug!(account = %self.account.id, stream = %self.stream.name, window = %window, rows = summary.rows, validate_ms = elapsed.as_millis() as u64, "document validated and staged");
                summary
            }
            (Err(err), _) => {
                // The unit fails and is requested again; the document is of no more use.
                remove_document(&path);
                if let ReportError::TooLarge(exceeded) = &err {
                    warn!(account = %self.account.id, stream = %self.stream.name, window = %window, cap = %exceeded, "document rejected by a size cap");
                }
                return self.fail(&claim, &describe_document_error(&err)).await;
            }
        };
        let applied_claim = claim.clone();
        let ledger = Arc::clone(&self.ledger);
        let staging = staged.clone();
        let result = crate::store::blocking(move || {
            let started = std::time::Instant::now();
            let outcome = ledger.apply_sales(
                &applied_claim,
                &mut |sink| {
                    let rows = read_staged_rows(&staging, sink)?;
                    Ok(crate::report::ReportSummary {
                        rows,
                        ..summary.clone()
                    })
                },
                now_ts(),
            );
            if !matches!(outcome, Err(LedgerError::Sqlite(_))) {
                remove_document(&path);
                remove_document(&staging);
            }
            (outcome, started.elapsed())
        })
        .await
        .map_err(|err| SyncError::Join(err.0))?;
        match result {
            (Ok(applied), elapsed) => {
                info!(
                    account = %self.account.id,
                    stream = %self.stream.name,
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
