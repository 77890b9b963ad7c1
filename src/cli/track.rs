//! `marketsync track ...`: the keys the freshness scheduler keeps fresh. They open the
//! configuration's SQLite file directly (the daemon need not run: its next pass picks
//! the keys up).
//!
//! - `track add PROVIDER SKU [--size S]`
//! - `track import items.csv` (header `provider,sku,size`; every error names the line)
//! - `track list [--provider P] [--json] [--limit N]`
//! - `track remove PROVIDER SKU [--size S]`

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use crate::config::Config;
use crate::domain::{format_ts, now_ts};
use crate::store::tracked;

/// `marketsync track ...` actions.
#[derive(Debug, Subcommand)]
pub enum TrackAction {
    /// Track one key: StockX style id with --size, or a Keepa ASIN.
    Add {
        provider: String,
        sku: String,
        #[arg(long)]
        size: Option<String>,
    },
    /// Track every key of a CSV file with the header `provider,sku,size` (size may be
    /// empty or missing for Keepa); at most 100,000 rows and 8 MiB.
    Import { file: PathBuf },
    /// Tracked keys with their last success, oldest tracked first.
    List {
        #[arg(long)]
        provider: Option<String>,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Stop tracking a key (its jobs and prices stay).
    Remove {
        provider: String,
        sku: String,
        #[arg(long)]
        size: Option<String>,
    },
}

/// The engine holding the job queue: PostgreSQL with `[store] url_env`, else the file.
fn open(config: &Config) -> anyhow::Result<std::sync::Arc<dyn crate::store::LedgerStore>> {
    Ok(super::open_stores(config)?.1)
}

/// Runs `action`; returns the exit code.
pub fn command(config: &Config, action: &TrackAction) -> anyhow::Result<i32> {
    let ledger = open(config)?;
    match action {
        TrackAction::Add {
            provider,
            sku,
            size,
        } => {
            let added = tracked::track(&*ledger, provider, sku, size.as_deref(), "cli", now_ts())?;
            let what = format!(
                "{} {sku}{}",
                provider.trim().to_ascii_lowercase(),
                size.as_deref()
                    .map(|size| format!(" size {size}"))
                    .unwrap_or_default()
            );
            if added {
                println!("tracking {what}; the next freshness pass queues it at hot priority");
            } else {
                println!("{what} is tracked already");
            }
            note_unserved(config, provider);
            Ok(0)
        }
        TrackAction::Import { file } => {
            let name = file.display().to_string();
            let metadata = std::fs::metadata(file)
                .with_context(|| format!("{name}: cannot read it; check the path"))?;
            if metadata.len() > tracked::MAX_IMPORT_BYTES {
                anyhow::bail!(
                    "{name}: {} bytes is larger than {} bytes; split it into smaller files",
                    metadata.len(),
                    tracked::MAX_IMPORT_BYTES
                );
            }
            let reader = std::fs::File::open(file)
                .with_context(|| format!("{name}: cannot open it; check the path"))?;
            let items = tracked::parse_items_csv(reader, &name)?;
            let outcome = tracked::track_many(&*ledger, &items, "import", now_ts())?;
            println!(
                "{name}: {} key{} newly tracked, {} tracked already",
                outcome.added,
                if outcome.added == 1 { "" } else { "s" },
                outcome.already
            );
            Ok(0)
        }
        TrackAction::List {
            provider,
            json,
            limit,
        } => {
            let items = tracked::list_tracked(&*ledger, provider.as_deref(), *limit)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&items)?);
                return Ok(0);
            }
            let mut rows = vec![
                ["PROVIDER", "SKU", "SIZE", "ADDED", "LAST_SUCCESS", "SOURCE"].map(str::to_string),
            ];
            for item in &items {
                rows.push([
                    item.provider.clone(),
                    item.sku.clone(),
                    item.size.clone().unwrap_or_else(|| "-".to_string()),
                    format_ts(item.added_at),
                    item.last_success
                        .map(format_ts)
                        .unwrap_or_else(|| "never".to_string()),
                    item.source.clone(),
                ]);
            }
            print!("{}", super::jobs::aligned(&rows));
            if items.is_empty() {
                println!(
                    "(nothing tracked; add keys with `marketsync track add` or `track import`)"
                );
            }
            Ok(0)
        }
        TrackAction::Remove {
            provider,
            sku,
            size,
        } => {
            if tracked::untrack(&*ledger, provider, sku, size.as_deref())? {
                println!("no longer tracking {provider} {sku}");
                Ok(0)
            } else {
                eprintln!("marketsync: {provider} {sku} is not tracked; `marketsync track list` shows what is");
                Ok(1)
            }
        }
    }
}

fn note_unserved(config: &Config, provider: &str) {
    let provider = provider.trim().to_ascii_lowercase();
    if !config
        .accounts
        .iter()
        .any(|account| account.provider.as_str() == provider)
    {
        eprintln!(
            "marketsync: note: no {provider} account is configured in {}; the key waits until one is",
            config.source_name
        );
    }
}
