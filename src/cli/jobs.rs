//! The queue's command-line side: `marketsync enqueue`, `marketsync jobs [--state S]
//! [--json]` and `marketsync jobs reset-failed [PROVIDER]`. `src/cli.rs` parses the
//! arguments and calls these; they open the configuration's SQLite file directly (the
//! daemon need not run: it drains what is queued on its next run).

use clap::Subcommand;

use crate::config::Config;
use crate::domain::format_ts;
use crate::store::jobs::{self as store, JobPriority, JobState, NewJob};

/// `marketsync jobs ...` actions.
#[derive(Debug, Subcommand)]
pub enum JobsAction {
    /// Move failed jobs (of PROVIDER, or all) back to pending with their attempts reset.
    ResetFailed { provider: Option<String> },
    /// Freshness scheduler passes (newest first): per provider the tracked keys, the
    /// share fresh, what the pass queued (hot, background), deferred and budget left.
    Runs {
        #[arg(long)]
        provider: Option<String>,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

/// `marketsync jobs runs [--provider P] [--json] [--limit N]`.
pub fn runs_command(
    config: &Config,
    provider: Option<&str>,
    json: bool,
    limit: usize,
) -> anyhow::Result<i32> {
    let ledger = open(config)?;
    let passes = crate::store::tracked::recent_passes(&*ledger, provider, limit.clamp(1, 10_000))?;
    if json {
        let rows: Vec<serde_json::Value> = passes
            .iter()
            .map(|pass| {
                let mut value = serde_json::to_value(pass).unwrap_or_default();
                value["fresh_share"] = serde_json::json!(pass.fresh_share());
                value
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    print!("{}", render_runs(&passes));
    Ok(0)
}

/// The aligned table of `marketsync jobs runs`.
pub fn render_runs(passes: &[crate::store::tracked::PassRecord]) -> String {
    let mut rows = vec![[
        "STARTED",
        "PROVIDER",
        "TRACKED",
        "FRESH",
        "SELECTED",
        "HOT",
        "BACKGROUND",
        "MERGED",
        "LIVE",
        "DEFERRED",
        "BUDGET_LEFT",
        "OUTCOME",
    ]
    .map(str::to_string)];
    for pass in passes {
        rows.push([
            format_ts(pass.started_at),
            pass.provider.clone(),
            pass.tracked.to_string(),
            format!("{} ({:.1}%)", pass.fresh, pass.fresh_share() * 100.0),
            pass.selected.to_string(),
            pass.hot.to_string(),
            pass.background.to_string(),
            pass.merged.to_string(),
            pass.live.to_string(),
            pass.deferred.to_string(),
            format!("{:.1}", pass.budget_left),
            pass.outcome.clone(),
        ]);
    }
    let mut out = aligned(&rows);
    if passes.is_empty() {
        out.push_str("(no scheduler passes yet; the daemon runs one every [freshness] interval when keys are tracked)\n");
    }
    out
}

/// Rows as left-aligned columns two spaces apart.
pub fn aligned<const N: usize>(rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The engine holding the job queue: PostgreSQL with `[store] url_env`, else the file.
fn open(config: &Config) -> anyhow::Result<std::sync::Arc<dyn crate::store::LedgerStore>> {
    Ok(super::open_stores(config)?.1)
}

/// `marketsync enqueue PROVIDER SKU [--size S] [--priority P]`.
pub fn enqueue_command(
    config: &Config,
    provider: &str,
    sku: &str,
    size: Option<&str>,
    priority: &str,
) -> anyhow::Result<i32> {
    let priority: JobPriority = priority
        .parse()
        .map_err(|err: String| anyhow::anyhow!("--priority: {err}"))?;
    let ledger = open(config)?;
    let job = NewJob {
        provider: provider.to_string(),
        sku: sku.to_string(),
        size: size.map(str::to_string),
        priority,
        source: "cli".to_string(),
    };
    let served = config
        .accounts
        .iter()
        .any(|account| account.provider.as_str() == provider.trim().to_ascii_lowercase());
    match store::enqueue(&*ledger, &job)? {
        store::EnqueueOutcome::Created { id } => {
            println!(
                "job {id} queued ({provider} {sku}{}, {priority})",
                size.map(|s| format!(" size {s}")).unwrap_or_default()
            )
        }
        store::EnqueueOutcome::Merged { id, priority } => {
            println!("merged into pending job {id} (priority now {priority})")
        }
    }
    if !served {
        eprintln!("marketsync: note: no {provider} account is configured in {}; the job waits until one is", config.source_name);
    }
    Ok(0)
}

/// `marketsync jobs [--state S] [--json] [--limit N]`: jobs, newest first, as an aligned
/// table or a JSON array.
pub fn list_command(
    config: &Config,
    state: Option<&str>,
    json: bool,
    limit: usize,
) -> anyhow::Result<i32> {
    let state = state
        .map(|text| text.parse::<JobState>())
        .transpose()
        .map_err(|err| anyhow::anyhow!("--state: {err}"))?;
    let ledger = open(config)?;
    let jobs = store::list_jobs(&*ledger, state, limit)?;
    if json {
        let mut text = serde_json::to_string_pretty(&jobs)?;
        text.push('\n');
        super::write_stdout(text.as_bytes())?;
        return Ok(0);
    }
    super::write_stdout(render_table(&jobs).as_bytes())?;
    Ok(0)
}

/// The aligned table of `marketsync jobs`.
pub fn render_table(jobs: &[store::Job]) -> String {
    let header = [
        "ID",
        "PROVIDER",
        "SKU",
        "SIZE",
        "PRIORITY",
        "STATE",
        "ATTEMPTS",
        "NOT_BEFORE",
        "UPDATED",
        "ERROR",
    ];
    let mut rows = Vec::with_capacity(jobs.len());
    for job in jobs {
        rows.push(vec![
            job.id.to_string(),
            job.provider.clone(),
            job.sku.clone(),
            job.size.clone().unwrap_or_else(|| "-".to_string()),
            format!("{} ({})", job.level(), job.priority),
            job.state.to_string(),
            job.attempts.to_string(),
            if job.state == JobState::Pending {
                format_ts(job.not_before)
            } else {
                "-".to_string()
            },
            format_ts(job.updated_at),
            job.error
                .clone()
                .unwrap_or_default()
                .chars()
                .take(80)
                .collect(),
        ]);
    }
    let mut out = crate::diagnose::table::render(&header, rows, &[0, 6]);
    if jobs.is_empty() {
        out.push_str("(no jobs)\n");
    }
    out
}

/// `marketsync jobs reset-failed [PROVIDER]`.
pub fn reset_failed_command(config: &Config, provider: Option<&str>) -> anyhow::Result<i32> {
    let ledger = open(config)?;
    let reset = store::reset_failed(&*ledger, provider)?;
    println!(
        "{reset} failed job{} moved back to pending; the daemon drains them on its next run",
        if reset == 1 { "" } else { "s" }
    );
    Ok(0)
}
