//! Tracked keys and scheduler passes (migration 0010): `tracked_items` and seed 002's
//! `market_job_runs`. The freshness scheduler ([`crate::shapes::jobs::scheduler`]) reads
//! each provider's keys with their last results here, queues what it selects through the
//! job queue's tables in one transaction, and records one pass row per provider.
//!
//! A key is the job queue's dedupe key (`provider|sku|size`, `keepa|ASIN`); keys are
//! normalised by [`crate::store::jobs::validate`], so a tracked key and the jobs of its
//! lookups always agree. Freshness is read from `jobs`: the last `succeeded` job of the
//! key (its `finished_at`), and the last ended one (`succeeded`, `not_found`, `failed`)
//! for "when was it last looked at".
//!
//! Storage is behind [`TrackedStore`] (SQLite file or PostgreSQL, the engine of the job
//! queue). Every function is synchronous: async callers go through
//! [`crate::store::blocking`].

use std::io::Read;

use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use crate::store::jobs::{dedupe_key, sql_limit, validate, JobError, JobPriority, NewJob};
use crate::store::SqliteLedger;

/// The largest `track import` file read (bytes); a larger one is refused before parsing.
pub const MAX_IMPORT_BYTES: u64 = 8 * 1024 * 1024;
/// The most rows one import (file or `POST /api/tracked`) may hold.
pub const MAX_IMPORT_ROWS: usize = 100_000;
/// The most keys tracked in total: the scheduler reads every key of a provider per pass.
pub const MAX_TRACKED: i64 = 1_000_000;

/// One tracked key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrackedItem {
    pub provider: String,
    pub sku: String,
    /// `None` when the key has no size (Keepa).
    pub size: Option<String>,
    pub dedupe_key: String,
    pub added_at: i64,
    pub source: String,
    /// The `finished_at` of the key's last succeeded job.
    pub last_success: Option<i64>,
}

/// What [`track_many`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TrackOutcome {
    /// Keys newly tracked.
    pub added: usize,
    /// Keys that were tracked already (left as they were).
    pub already: usize,
}

/// A tracked key as one scheduler pass sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyState {
    pub sku: String,
    pub size: Option<String>,
    pub dedupe_key: String,
    pub added_at: i64,
    /// `finished_at` of the last succeeded job: the key's freshness.
    pub last_success: Option<i64>,
    /// `finished_at` of the last ended job (succeeded, not_found or failed): when the key
    /// was last looked at. `None`: never (a new key, queued hot).
    pub last_end: Option<i64>,
    /// A pending or running job exists for the key.
    pub live: bool,
}

/// One provider's part of a scheduler pass (a `market_job_runs` row).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PassRecord {
    pub id: i64,
    pub provider: String,
    pub started_at: i64,
    pub finished_at: i64,
    pub tracked: i64,
    pub fresh: i64,
    /// Seconds.
    pub stale_after: i64,
    pub live: i64,
    pub selected: i64,
    pub hot: i64,
    pub background: i64,
    pub merged: i64,
    pub deferred: i64,
    /// Jobs the provider's buckets could serve before the next pass (reserve excluded,
    /// live jobs subtracted), as the pass computed it.
    pub budget_left: f64,
    /// `ok`, `no_budget`, `no_accounts` or `error`.
    pub outcome: String,
}

impl PassRecord {
    /// The share of tracked keys that were fresh (1 when nothing is tracked).
    pub fn fresh_share(&self) -> f64 {
        if self.tracked <= 0 {
            1.0
        } else {
            (self.fresh.max(0) as f64 / self.tracked as f64).min(1.0)
        }
    }
}

/// Normalises a key to track: the job queue's rules (known provider, sane key, a size
/// where the provider needs one).
fn normalise(provider: &str, sku: &str, size: Option<&str>) -> Result<NewJob, JobError> {
    validate(&NewJob {
        provider: provider.to_string(),
        sku: sku.to_string(),
        size: size.map(str::to_string),
        priority: JobPriority::Background,
        source: "track".to_string(),
    })
}

/// The storage of tracked keys and scheduler passes, one implementation per engine
/// ([`SqliteLedger`], [`crate::store::PgLedger`]); a supertrait of
/// [`crate::store::LedgerStore`]. Blocking. Keys are validated by the free functions of
/// this module, which are what callers use.
pub trait TrackedStore: Send + Sync {
    /// Tracks validated `items` in one transaction (at most [`MAX_TRACKED`] in all).
    fn insert_tracked(
        &self,
        items: &[NewJob],
        source: &str,
        now: i64,
    ) -> Result<TrackOutcome, JobError>;
    /// Stops tracking the key `dedupe_key`; true when it was tracked.
    fn delete_tracked(&self, dedupe_key: &str) -> Result<bool, JobError>;
    /// See [`list_tracked`].
    fn tracked_rows(
        &self,
        provider: Option<&str>,
        limit: i64,
    ) -> Result<Vec<TrackedItem>, JobError>;
    fn tracked_counts(&self) -> Result<Vec<(String, i64)>, JobError>;
    /// See [`key_states`]; ordered by dedupe key.
    fn tracked_key_states(&self, provider: &str) -> Result<Vec<KeyState>, JobError>;
    fn live_job_count(&self, provider: &str) -> Result<i64, JobError>;
    /// See [`enqueue_selected`].
    fn enqueue_selected_jobs(
        &self,
        provider: &str,
        selected: &[(String, Option<String>, JobPriority)],
        source: &str,
        now: i64,
    ) -> Result<(i64, i64), JobError>;
    fn insert_pass(&self, pass: &PassRecord) -> Result<i64, JobError>;
    fn pass_rows(&self, provider: Option<&str>, limit: i64) -> Result<Vec<PassRecord>, JobError>;
    fn latest_pass_rows(&self) -> Result<Vec<PassRecord>, JobError>;
    fn delete_passes_before(&self, before: i64) -> Result<usize, JobError>;
}

/// Tracks one key; `Ok(true)` when it is new.
pub fn track(
    store: &dyn TrackedStore,
    provider: &str,
    sku: &str,
    size: Option<&str>,
    source: &str,
    now: i64,
) -> Result<bool, JobError> {
    let item = normalise(provider, sku, size)?;
    Ok(track_many(store, &[item], source, now)?.added == 1)
}

/// Tracks validated keys (see [`parse_items_csv`], [`validate`]) in one transaction.
pub fn track_many(
    store: &dyn TrackedStore,
    items: &[NewJob],
    source: &str,
    now: i64,
) -> Result<TrackOutcome, JobError> {
    if items.len() > MAX_IMPORT_ROWS {
        return Err(JobError::Invalid(format!(
            "{} keys in one request; track at most {MAX_IMPORT_ROWS} at a time",
            items.len()
        )));
    }
    let source = if source.trim().is_empty() {
        "api"
    } else {
        source.trim()
    };
    store.insert_tracked(items, source, now)
}

/// The refusal when tracking more would pass [`MAX_TRACKED`].
pub(crate) fn too_many_tracked() -> JobError {
    JobError::Invalid(format!(
        "{MAX_TRACKED} keys are tracked already; remove some with `marketsync track remove` first"
    ))
}

/// Stops tracking a key; true when it was tracked. Its jobs and results stay.
pub fn untrack(
    store: &dyn TrackedStore,
    provider: &str,
    sku: &str,
    size: Option<&str>,
) -> Result<bool, JobError> {
    let item = normalise(provider, sku, size)?;
    store.delete_tracked(&dedupe_key(&item.provider, &item.sku, item.size.as_deref()))
}

/// Tracked keys (of `provider`, or all), oldest first, at most `limit`, with their last
/// success.
pub fn list_tracked(
    store: &dyn TrackedStore,
    provider: Option<&str>,
    limit: usize,
) -> Result<Vec<TrackedItem>, JobError> {
    store.tracked_rows(provider, sql_limit(limit))
}

/// Providers with tracked keys, and how many each.
pub fn tracked_providers(store: &dyn TrackedStore) -> Result<Vec<(String, i64)>, JobError> {
    store.tracked_counts()
}

/// Every tracked key of `provider` with its last success, last end and whether a job
/// of it is live.
pub fn key_states(store: &dyn TrackedStore, provider: &str) -> Result<Vec<KeyState>, JobError> {
    store.tracked_key_states(provider)
}

/// Pending or running jobs of `provider` (tracked or not): work the buckets serve first.
pub fn live_jobs(store: &dyn TrackedStore, provider: &str) -> Result<i64, JobError> {
    store.live_job_count(provider)
}

/// Queues `selected` (sku, size, priority) of `provider` in one transaction, as
/// [`crate::store::jobs::enqueue`] would one by one: a key with a live job merges into it
/// (keeping the higher priority). Returns (created, merged).
pub fn enqueue_selected(
    store: &dyn TrackedStore,
    provider: &str,
    selected: &[(String, Option<String>, JobPriority)],
    source: &str,
    now: i64,
) -> Result<(i64, i64), JobError> {
    store.enqueue_selected_jobs(provider, selected, source, now)
}

/// Records one provider's part of a pass; returns its id.
pub fn record_pass(store: &dyn TrackedStore, pass: &PassRecord) -> Result<i64, JobError> {
    store.insert_pass(pass)
}

/// The newest pass rows (of `provider`, or all), newest first, at most `limit`.
pub fn recent_passes(
    store: &dyn TrackedStore,
    provider: Option<&str>,
    limit: usize,
) -> Result<Vec<PassRecord>, JobError> {
    store.pass_rows(provider, sql_limit(limit))
}

/// The newest pass row of every provider (the fresh share as of the last pass).
pub fn latest_passes(store: &dyn TrackedStore) -> Result<Vec<PassRecord>, JobError> {
    store.latest_pass_rows()
}

/// Deletes pass rows older than `before` (unix s); returns how many.
pub fn prune_passes(store: &dyn TrackedStore, before: i64) -> Result<usize, JobError> {
    store.delete_passes_before(before)
}

/// The columns of a `market_job_runs` row, in [`PassRecord`]'s order.
pub(crate) const PASS_COLUMNS: &str =
    "id, provider, started_at, finished_at, tracked, fresh, stale_after, live, \
     selected, hot, background, merged, deferred, budget_left, outcome";

/// A pass's `budget_left` as stored: 0 when it is not finite.
pub(crate) fn stored_budget(pass: &PassRecord) -> f64 {
    if pass.budget_left.is_finite() {
        pass.budget_left
    } else {
        0.0
    }
}

fn pass_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PassRecord> {
    Ok(PassRecord {
        id: row.get(0)?,
        provider: row.get(1)?,
        started_at: row.get(2)?,
        finished_at: row.get(3)?,
        tracked: row.get(4)?,
        fresh: row.get(5)?,
        stale_after: row.get(6)?,
        live: row.get(7)?,
        selected: row.get(8)?,
        hot: row.get(9)?,
        background: row.get(10)?,
        merged: row.get(11)?,
        deferred: row.get(12)?,
        budget_left: row.get(13)?,
        outcome: row.get(14)?,
    })
}

impl TrackedStore for SqliteLedger {
    fn insert_tracked(
        &self,
        items: &[NewJob],
        source: &str,
        now: i64,
    ) -> Result<TrackOutcome, JobError> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let total: i64 =
                tx.query_row("SELECT COUNT(*) FROM tracked_items", [], |row| row.get(0))?;
            let room = MAX_TRACKED.saturating_sub(total);
            let mut outcome = TrackOutcome::default();
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO tracked_items (provider, sku, size, dedupe_key, added_at, source)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for item in items {
                    let key = dedupe_key(&item.provider, &item.sku, item.size.as_deref());
                    if sql_limit(outcome.added) >= room {
                        return Err(too_many_tracked());
                    }
                    let inserted = insert.execute(params![
                        item.provider,
                        item.sku,
                        item.size.as_deref().unwrap_or(""),
                        key,
                        now,
                        source
                    ])?;
                    if inserted == 1 {
                        outcome.added += 1;
                    } else {
                        outcome.already += 1;
                    }
                }
            }
            tx.commit()?;
            Ok(outcome)
        })
    }

    fn delete_tracked(&self, dedupe_key: &str) -> Result<bool, JobError> {
        self.with_conn(|conn| {
            Ok(conn
                .prepare_cached("DELETE FROM tracked_items WHERE dedupe_key = ?1")?
                .execute(params![dedupe_key])?
                == 1)
        })
    }

    fn tracked_rows(
        &self,
        provider: Option<&str>,
        limit: i64,
    ) -> Result<Vec<TrackedItem>, JobError> {
        self.with_read_conn(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT t.provider, t.sku, t.size, t.dedupe_key, t.added_at, t.source,
                        (SELECT MAX(j.finished_at) FROM jobs j
                          WHERE j.dedupe_key = t.dedupe_key AND j.state = 'succeeded')
                 FROM tracked_items t
                 WHERE ?1 IS NULL OR t.provider = ?1
                 ORDER BY t.added_at, t.provider, t.sku, t.size LIMIT ?2",
            )?;
            let rows = statement.query_map(params![provider, limit], |row| {
                let size: String = row.get(2)?;
                Ok(TrackedItem {
                    provider: row.get(0)?,
                    sku: row.get(1)?,
                    size: (!size.is_empty()).then_some(size),
                    dedupe_key: row.get(3)?,
                    added_at: row.get(4)?,
                    source: row.get(5)?,
                    last_success: row.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn tracked_counts(&self) -> Result<Vec<(String, i64)>, JobError> {
        self.with_read_conn(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT provider, COUNT(*) FROM tracked_items GROUP BY provider ORDER BY provider",
            )?;
            let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn tracked_key_states(&self, provider: &str) -> Result<Vec<KeyState>, JobError> {
        self.with_read_conn(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT t.sku, t.size, t.dedupe_key, t.added_at,
                        MAX(CASE WHEN j.state = 'succeeded' THEN j.finished_at END),
                        MAX(CASE WHEN j.state IN ('succeeded', 'not_found', 'failed') THEN j.finished_at END),
                        COALESCE(MAX(j.state IN ('pending', 'running')), 0)
                 FROM tracked_items t LEFT JOIN jobs j ON j.dedupe_key = t.dedupe_key
                 WHERE t.provider = ?1
                 GROUP BY t.dedupe_key
                 ORDER BY t.dedupe_key",
            )?;
            let rows = statement.query_map(params![provider], |row| {
                let size: String = row.get(1)?;
                Ok(KeyState {
                    sku: row.get(0)?,
                    size: (!size.is_empty()).then_some(size),
                    dedupe_key: row.get(2)?,
                    added_at: row.get(3)?,
                    last_success: row.get(4)?,
                    last_end: row.get(5)?,
                    live: row.get::<_, i64>(6)? != 0,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn live_job_count(&self, provider: &str) -> Result<i64, JobError> {
        self.with_read_conn(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT COUNT(*) FROM jobs WHERE provider = ?1 AND state IN ('pending', 'running')",
                )?
                .query_row(params![provider], |row| row.get(0))?)
        })
    }

    fn enqueue_selected_jobs(
        &self,
        provider: &str,
        selected: &[(String, Option<String>, JobPriority)],
        source: &str,
        now: i64,
    ) -> Result<(i64, i64), JobError> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let (mut created, mut merged) = (0i64, 0i64);
            {
                let mut live = tx.prepare_cached(
                    "SELECT id, priority FROM jobs WHERE dedupe_key = ?1 AND state IN ('pending', 'running')",
                )?;
                let mut raise = tx.prepare_cached(
                    "UPDATE jobs SET priority = MAX(priority, ?1), updated_at = ?2 WHERE id = ?3",
                )?;
                let mut insert = tx.prepare_cached(
                    "INSERT INTO jobs (provider, sku, size, dedupe_key, priority, state, attempts, not_before, created_at, updated_at, source)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6, ?6, ?7)",
                )?;
                for (sku, size, priority) in selected {
                    let key = dedupe_key(provider, sku, size.as_deref());
                    let existing: Option<(i64, i64)> = live
                        .query_row(params![key], |row| Ok((row.get(0)?, row.get(1)?)))
                        .optional()?;
                    match existing {
                        Some((id, _)) => {
                            raise.execute(params![priority.value(), now, id])?;
                            merged += 1;
                        }
                        None => {
                            insert.execute(params![
                                provider,
                                sku,
                                size,
                                key,
                                priority.value(),
                                now,
                                source
                            ])?;
                            created += 1;
                        }
                    }
                }
            }
            tx.commit()?;
            Ok((created, merged))
        })
    }

    fn insert_pass(&self, pass: &PassRecord) -> Result<i64, JobError> {
        self.with_conn(|conn| {
            conn.prepare_cached(
                "INSERT INTO market_job_runs (provider, started_at, finished_at, tracked, fresh, stale_after, live,
                                              selected, hot, background, merged, deferred, budget_left, outcome)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?
            .execute(params![
                pass.provider,
                pass.started_at,
                pass.finished_at,
                pass.tracked,
                pass.fresh,
                pass.stale_after,
                pass.live,
                pass.selected,
                pass.hot,
                pass.background,
                pass.merged,
                pass.deferred,
                stored_budget(pass),
                pass.outcome
            ])?;
            Ok(conn.last_insert_rowid())
        })
    }

    fn pass_rows(&self, provider: Option<&str>, limit: i64) -> Result<Vec<PassRecord>, JobError> {
        self.with_read_conn(|conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {PASS_COLUMNS} FROM market_job_runs WHERE ?1 IS NULL OR provider = ?1
                 ORDER BY started_at DESC, id DESC LIMIT ?2"
            ))?;
            let rows = statement.query_map(params![provider, limit], pass_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn latest_pass_rows(&self) -> Result<Vec<PassRecord>, JobError> {
        self.with_read_conn(|conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {PASS_COLUMNS} FROM market_job_runs
                 WHERE id IN (SELECT MAX(id) FROM market_job_runs GROUP BY provider)
                 ORDER BY provider"
            ))?;
            let rows = statement.query_map([], pass_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn delete_passes_before(&self, before: i64) -> Result<usize, JobError> {
        self.with_conn(|conn| {
            Ok(conn
                .prepare_cached("DELETE FROM market_job_runs WHERE started_at < ?1")?
                .execute(params![before])?)
        })
    }
}

/// Reads a `track import` file: a header row naming `provider`, `sku` and optionally
/// `size` (any order, any case), then one key per row. At most [`MAX_IMPORT_BYTES`]
/// bytes and [`MAX_IMPORT_ROWS`] rows; every error names the line and the fix. Empty
/// rows are skipped; a key listed twice is tracked once.
pub fn parse_items_csv(reader: impl Read, name: &str) -> Result<Vec<NewJob>, JobError> {
    let mut text = String::new();
    let read = reader
        .take(MAX_IMPORT_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|err| JobError::Invalid(format!("{name}: cannot read as UTF-8 text: {err}")))?;
    if read as u64 > MAX_IMPORT_BYTES {
        return Err(JobError::Invalid(format!(
            "{name}: larger than {MAX_IMPORT_BYTES} bytes; split it into smaller files"
        )));
    }
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = csv
        .headers()
        .map_err(|err| JobError::Invalid(format!("{name}: line 1: {err}")))?
        .clone();
    let column = |wanted: &str| {
        headers
            .iter()
            .position(|header| header.eq_ignore_ascii_case(wanted))
    };
    let (Some(provider_at), Some(sku_at)) = (column("provider"), column("sku")) else {
        return Err(JobError::Invalid(format!(
            "{name}: line 1: the header must name the columns provider, sku and optionally size (e.g. `provider,sku,size`); found {:?}",
            headers.iter().collect::<Vec<_>>()
        )));
    };
    let size_at = column("size");
    if let Some(unknown) = headers
        .iter()
        .find(|header| !["provider", "sku", "size"].contains(&header.to_ascii_lowercase().as_str()))
    {
        return Err(JobError::Invalid(format!(
            "{name}: line 1: unknown column {unknown:?}; expected provider, sku, size"
        )));
    }
    let mut items = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for record in csv.records() {
        let record = record.map_err(|err| {
            let line = err.position().map_or(0, |position| position.line());
            JobError::Invalid(format!("{name}: line {line}: {err}"))
        })?;
        let line = record.position().map_or(0, |position| position.line());
        if record.iter().all(str::is_empty) {
            continue;
        }
        if items.len() >= MAX_IMPORT_ROWS {
            return Err(JobError::Invalid(format!(
                "{name}: line {line}: more than {MAX_IMPORT_ROWS} rows; split the file"
            )));
        }
        let field = |at: usize| record.get(at).unwrap_or("");
        let size = size_at.map(field).filter(|size| !size.is_empty());
        let item = normalise(field(provider_at), field(sku_at), size)
            .map_err(|err| JobError::Invalid(format!("{name}: line {line}: {err}")))?;
        if seen.insert(dedupe_key(&item.provider, &item.sku, item.size.as_deref())) {
            items.push(item);
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_errors_name_the_line_and_the_fix() {
        let ok =
            "provider,sku,size\nstockx,DD1391-100,10\n\nkeepa,b07fz8s74r,\nstockx,DD1391-100,10\n";
        let items = parse_items_csv(ok.as_bytes(), "items.csv").expect("valid");
        assert_eq!(items.len(), 2, "blank rows skipped, duplicates once");
        assert_eq!(items[1].sku, "B07FZ8S74R");

        let missing_size = "provider,sku,size\nstockx,DD1391-100,10\nstockx,DD1391-200,\n";
        let err = parse_items_csv(missing_size.as_bytes(), "items.csv").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("items.csv: line 3:"), "{text}");
        assert!(text.contains("--size"), "{text}");

        let unknown = "provider,sku\nkeepa,A\nnope,B\n";
        let text = parse_items_csv(unknown.as_bytes(), "f.csv")
            .unwrap_err()
            .to_string();
        assert!(text.starts_with("f.csv: line 3:"), "{text}");
        assert!(text.contains("unknown job provider"), "{text}");

        let header = "prov,sku\nstockx,A\n";
        let text = parse_items_csv(header.as_bytes(), "f.csv")
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("line 1") && text.contains("provider"),
            "{text}"
        );

        let big = vec![b'a'; (MAX_IMPORT_BYTES + 10) as usize];
        let text = parse_items_csv(&big[..], "big.csv")
            .unwrap_err()
            .to_string();
        assert!(text.contains("larger than"), "{text}");
    }
}
