//! The `active_inventory` stream: a periodic snapshot run of the cursor engine (seed 003's
//! open problem: a huge active-inventory XML parsed in memory ran the process out of
//! memory).
//!
//! The stream is not a time window: eBay's Sell Feed API reports the seller's active
//! listings as they are now. Each run (every `interval`):
//! 1. createInventoryTask (`LMS_ACTIVE_INVENTORY_REPORT`), paced by the TokenManager;
//! 2. getInventoryTask until the task has a file: the pause starts at `poll_min` and
//!    doubles up to `poll_max`, holding no work permit; a task not done within
//!    `poll_timeout` (or FAILED / PARTIALLY_PROCESSED) fails the run;
//! 3. getResultFile, streamed to `documents_dir` with a byte cap (`max_document_bytes`)
//!    and a total deadline;
//! 4. the file is parsed as a stream ([`crate::provider::ebay_feed::InventoryReader`]) and
//!    applied in one transaction of the hour ledger's engine
//!    ([`crate::store::inventory::InventoryStore::apply_inventory_snapshot`]: the SQLite
//!    file, or PostgreSQL with `[store] url_env`): per-SKU quantity and price upserted,
//!    changes and ended SKUs appended to the history. A malformed, truncated or oversized
//!    file fails the run and applies nothing.
//!
//! The task is recorded (`ebay_feed_tasks`) until its file is applied: a run interrupted
//! while polling or downloading (shutdown, a 5xx, a lost lease) resumes the same task
//! within `poll_timeout` of its creation instead of spending another of eBay's 25 tasks a
//! day; a task that can give no usable file (FAILED, too old, unknown, a malformed file)
//! is given up and the next run creates a new one. The snapshot's time is the task's
//! creation.
//!
//! Failures, 429s and refused credentials follow the cursor engine's policy (the
//! stream's `cursors` row records `last_error`, `failures`, `retry_at`; a 429 or an auth
//! refusal is a cooldown, not a failure). The file is removed after the apply, whatever
//! its outcome.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::CursorRunner;
use crate::domain::format_ts;
use crate::provider::ebay_feed::{
    self, OP_CREATE_INVENTORY_TASK, OP_GET_INVENTORY_TASK, OP_GET_RESULT_FILE,
};
use crate::provider::ProviderError;
use crate::quota::Priority;
use crate::shapes::{retry_delay, CallError, RunOutcome, StreamContext, SyncError, QUOTA_WAIT_MAX};
use crate::store::ebay_inventory::{PendingTask, SnapshotApplied, SnapshotError};
use crate::store::inventory::{RowSource, SnapshotTarget};
use crate::store::WriteFence;

/// The stream's name in the configuration.
pub const STREAM: &str = "active_inventory";

/// The earliest retry of a failed snapshot that needs a new task: eBay allows 25
/// LMS_ACTIVE_INVENTORY_REPORT tasks per seller in 24 hours (one every 57.6 minutes).
pub const NEW_TASK_RETRY_MIN: Duration = Duration::from_secs(3600);

/// Why a snapshot run stopped early.
enum Stop {
    Call(CallError),
    /// The task can give no file (FAILED, too old): `message`; the task is given up.
    Failed(String),
    Cancelled,
    /// The store failed (infrastructure, not the task's fault).
    Sync(SyncError),
}

impl From<CallError> for Stop {
    fn from(err: CallError) -> Stop {
        Stop::Call(err)
    }
}

/// One paced call: the TokenManager's grant, then `call`, observed for the metrics.
async fn paced_call<T, F, Fut>(
    context: &StreamContext,
    operation: &'static str,
    call: F,
) -> Result<T, CallError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    context
        .paced(operation, 1.0, Priority::Background, QUOTA_WAIT_MAX, true)
        .await?;
    let result = call().await;
    context.observe(operation, &result);
    result.map_err(CallError::Provider)
}

/// One snapshot of the account's active inventory (see the module doc).
pub(super) async fn run_snapshot(
    runner: &CursorRunner,
    context: &StreamContext,
    fence: WriteFence,
) -> Result<RunOutcome, SyncError> {
    let account = context.account.id.clone();
    let (cursor, now) = match runner.snapshot_start(context, STREAM).await? {
        Ok(started) => started,
        Err(stop) => return Ok(stop),
    };
    let file = match fetch_file(runner, context, fence, now).await {
        Ok(file) => file,
        Err(Stop::Cancelled) => return Ok(RunOutcome::Cancelled),
        Err(Stop::Sync(err)) => return Err(err),
        Err(Stop::Call(CallError::Provider(err))) if err.stops_account() => {
            return runner.stop_account(context, &err).await;
        }
        Err(Stop::Call(CallError::Provider(err))) => {
            // A 5xx or a transport error leaves the task to the next run; anything else
            // (an unknown task, an invalid answer, a file over the cap) gives it up.
            let new_task = !err.is_transient();
            if new_task {
                forget(runner, context, fence).await?;
            }
            let message = err.to_string();
            return fail(runner, context, fence, cursor.failures, &message, new_task).await;
        }
        Err(Stop::Call(refused)) => return runner.refused(context, refused).await,
        Err(Stop::Failed(message)) => {
            forget(runner, context, fence).await?;
            return fail(runner, context, fence, cursor.failures, &message, true).await;
        }
    };
    let (path, task, bytes) = file;
    let task_id = task.task_id.clone();
    let taken_at = task.created_at;
    let settings = context.stream.cursor().feed.clone();
    let (account_db, stream_db, path_db) = (account.clone(), STREAM.to_string(), path.clone());
    let progress = context.progress.clone();
    let applied = runner
        .on_cursors(move |store| {
            let mut open = || {
                ebay_feed::open_result_file(&path_db, settings.max_xml_bytes)
                    .map(|rows| {
                        Box::new(rows.map(|row| row.map_err(|err| err.to_string()))) as RowSource
                    })
                    .map_err(|err| err.to_string())
            };
            let bump = move || {
                if let Some(progress) = &progress {
                    progress.bump();
                }
            };
            let target = SnapshotTarget {
                account: &account_db,
                stream: &stream_db,
                fence,
                taken_at,
                now: crate::domain::now_ts(),
            };
            match store.apply_inventory_snapshot(target, &mut open, &bump) {
                Ok(applied) => Ok(Ok(applied)),
                Err(SnapshotError::Ledger(err)) => Err(err),
                Err(source @ SnapshotError::Source(_)) => Ok(Err(source.to_string())),
            }
        })
        .await;
    if let Err(err) = tokio::fs::remove_file(&path).await {
        warn!(path = %path.display(), error = %err, "cannot remove the result file");
    }
    let applied: SnapshotApplied = match applied? {
        Ok(applied) => applied,
        Err(message) => {
            // The same file would fail the same way: the next run asks for a new one.
            forget(runner, context, fence).await?;
            let message = format!("result file of task {task_id}: {message}");
            return fail(runner, context, fence, cursor.failures, &message, true).await;
        }
    };
    info!(
        task_id = %task_id,
        bytes,
        rows = applied.rows,
        inserted = applied.inserted,
        updated = applied.updated,
        unchanged = applied.unchanged,
        ended = applied.ended,
        duplicates = applied.duplicates,
        events = applied.events,
        "inventory snapshot applied"
    );
    Ok(RunOutcome::Finished {
        applied: 1,
        failed: 0,
    })
}

/// Create (or resume) → poll → download: the result file on disk, its task and its size.
async fn fetch_file(
    runner: &CursorRunner,
    context: &StreamContext,
    fence: WriteFence,
    now: i64,
) -> Result<(PathBuf, PendingTask, u64), Stop> {
    let settings = context.stream.cursor().feed.clone();
    let client = &runner.client;
    let account = &context.account.id;
    let timeout_secs = i64::try_from(settings.poll_timeout.as_secs()).unwrap_or(i64::MAX);
    let (account_db, stream_db) = (account.clone(), STREAM.to_string());
    let pending = runner
        .on_cursors(move |store| store.pending_task(&account_db, &stream_db))
        .await
        .map_err(Stop::Sync)?
        .filter(|task| now.saturating_sub(task.created_at) < timeout_secs);
    let task = match pending {
        Some(task) => {
            info!(task_id = %task.task_id, created = %format_ts(task.created_at), "resuming the inventory task of an interrupted run");
            task
        }
        None => {
            let task_id = paced_call(context, OP_CREATE_INVENTORY_TASK, || {
                ebay_feed::create_inventory_task(client)
            })
            .await?;
            let task = PendingTask {
                task_id,
                created_at: now,
            };
            let (account_db, stream_db, record) =
                (account.clone(), STREAM.to_string(), task.clone());
            runner
                .on_cursors(move |store| {
                    store.record_task(
                        &account_db,
                        &stream_db,
                        fence,
                        &record,
                        crate::domain::now_ts(),
                    )
                })
                .await
                .map_err(Stop::Sync)?;
            task
        }
    };
    let task_id = task.task_id.clone();
    context.bump();
    // The task's total deadline counts from its creation (a resumed task has less left).
    let age = Duration::from_secs(u64::try_from(now.saturating_sub(task.created_at)).unwrap_or(0));
    let left = settings.poll_timeout.saturating_sub(age);
    let started = Instant::now();
    let mut pause = settings.poll_min.max(Duration::from_millis(1));
    loop {
        let status = paced_call(context, OP_GET_INVENTORY_TASK, || {
            ebay_feed::get_inventory_task(client, &task_id)
        })
        .await?;
        context.bump();
        if status.status.has_file() {
            break;
        }
        if !status.status.is_pending() {
            return Err(Stop::Failed(format!(
                "inventory task {task_id} ended {} without a result file",
                status.status.as_str()
            )));
        }
        if started.elapsed().saturating_add(pause) > left {
            return Err(Stop::Failed(format!(
                "inventory task {task_id} still {} {} after its creation (poll_timeout)",
                status.status.as_str(),
                humantime::format_duration(Duration::from_secs(
                    age.saturating_add(started.elapsed()).as_secs()
                ))
            )));
        }
        // Waiting holds nothing: the run's permit goes back for the pause.
        let held = context.permits.let_go();
        tokio::select! {
            _ = context.abort.cancelled() => return Err(Stop::Cancelled),
            _ = context.cancel.cancelled() => return Err(Stop::Cancelled),
            _ = tokio::time::sleep(pause) => {}
        }
        if held {
            tokio::select! {
                _ = context.abort.cancelled() => return Err(Stop::Cancelled),
                _ = context.permits.hold() => {}
            }
        }
        pause = pause.saturating_mul(2).min(settings.poll_max);
    }
    tokio::fs::create_dir_all(&context.documents_dir)
        .await
        .map_err(|err| {
            Stop::Failed(format!(
                "cannot create {}: {err}",
                context.documents_dir.display()
            ))
        })?;
    let path = context
        .documents_dir
        .join(format!("ebay-inventory-{account}-{task_id}.download"));
    let deadline =
        crate::provider::call_deadline().saturating_mul(crate::provider::DOWNLOAD_DEADLINE_FACTOR);
    let bytes = paced_call(context, OP_GET_RESULT_FILE, || {
        ebay_feed::download_result_file(client, &task_id, &path, settings.max_file_bytes, deadline)
    })
    .await?;
    context.bump();
    Ok((path, task, bytes))
}

/// Gives up the stream's task: the next run creates a new one.
async fn forget(
    runner: &CursorRunner,
    context: &StreamContext,
    fence: WriteFence,
) -> Result<(), SyncError> {
    let account = context.account.id.clone();
    runner
        .on_cursors(move |store| {
            store.forget_task(&account, STREAM, fence, crate::domain::now_ts())
        })
        .await
}

/// The snapshot failed: failures, error and retry time are recorded; nothing applied.
/// `new_task`: the retry must create a task (at least [`NEW_TASK_RETRY_MIN`] away).
async fn fail(
    runner: &CursorRunner,
    context: &StreamContext,
    fence: WriteFence,
    failures_before: i64,
    message: &str,
    new_task: bool,
) -> Result<RunOutcome, SyncError> {
    let backoff = retry_delay(&context.stream, failures_before);
    // A retry that must create a task spends one of the seller's 25 a day: not sooner
    // than eBay's pace allows.
    let delay = if new_task {
        backoff.max(NEW_TASK_RETRY_MIN)
    } else {
        backoff
    };
    let now = runner.clock.now();
    let retry_at = now.saturating_add(i64::try_from(delay.as_secs().max(1)).unwrap_or(i64::MAX));
    warn!(
        error = %message,
        retry_at = %format_ts(retry_at),
        "inventory snapshot failed; nothing applied, retrying later"
    );
    let (account, text) = (context.account.id.clone(), message.to_string());
    runner
        .on_cursors(move |store| {
            store.record_failure(&account, STREAM, fence, &text, retry_at, now)
        })
        .await?;
    Ok(RunOutcome::Deferred {
        reason: message.to_string(),
        retry_in: Duration::from_secs(u64::try_from(retry_at - now).unwrap_or(1).max(1)),
        infrastructure: false,
    })
}
