//! `marketsync store copy --from sqlite:PATH --to URL`: moves a stopped installation's
//! hour ledger from its SQLite file into PostgreSQL, verified per table by row count and
//! checksum (see `store::postgres::copy`). Prints `table  rows  checksum  ok`; exits 1
//! on any mismatch (then nothing was committed).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;

use super::{load_config, Cli};
use crate::store::postgres::copy::copy_sqlite_to_postgres;
use crate::store::postgres::DatabaseUrl;

#[derive(Debug, Subcommand)]
pub enum StoreAction {
    /// Copy the hour ledger's tables (hours, claims, cooldowns, audits, sales, scope
    /// fences) from the SQLite file into PostgreSQL, in one transaction, then verify
    /// them; the daemon must be stopped.
    Copy {
        /// The source: sqlite:PATH. Default: the configuration's data_dir/marketsync.db.
        #[arg(long, value_name = "sqlite:PATH")]
        from: Option<String>,
        /// The target: a postgres:// URL, or env:VAR to read it from a variable (keeps
        /// the password out of the shell history).
        #[arg(
            long,
            value_name = "URL",
            default_value = "env:MARKETSYNC_DATABASE_URL"
        )]
        to: String,
        /// Replace the target's ledger tables when they already hold rows.
        #[arg(long)]
        force: bool,
    },
}

pub(super) fn command(cli: &Cli, action: &StoreAction) -> anyhow::Result<i32> {
    let StoreAction::Copy { from, to, force } = action;
    let source = match from {
        Some(from) => match from.strip_prefix("sqlite:") {
            Some(path) if !path.is_empty() => PathBuf::from(path),
            _ => bail!("--from: {from:?} is not a sqlite source; use --from sqlite:PATH"),
        },
        None => load_config(&cli.config, &cli.data_dir)?.database_path(),
    };
    let target = target_url(to)?;
    eprintln!(
        "copying the hour ledger from {} to {target}",
        source.display()
    );
    let interactive = std::io::stderr().is_terminal();
    let mut last_table = String::new();
    let mut progress = |table: &str, rows: u64| {
        if interactive || table != last_table {
            eprintln!("  {table}: {rows} rows");
        }
        last_table = table.to_string();
    };
    let checks = copy_sqlite_to_postgres(&source, &target, *force, &mut progress)
        .with_context(|| format!("store copy from {}", source.display()))?;
    let mut rows_out = Vec::with_capacity(checks.len());
    for check in &checks {
        let rows = if check.source_rows == check.target_rows {
            check.source_rows.to_string()
        } else {
            format!("{} -> {}", check.source_rows, check.target_rows)
        };
        let checksum = if check.source_checksum == check.target_checksum {
            check.source_checksum.chars().take(16).collect::<String>()
        } else {
            format!(
                "{} != {}",
                check.source_checksum.chars().take(16).collect::<String>(),
                check.target_checksum.chars().take(16).collect::<String>()
            )
        };
        rows_out.push(vec![
            check.table.to_string(),
            rows,
            checksum,
            if check.ok() { "ok" } else { "MISMATCH" }.to_string(),
        ]);
    }
    let text = crate::diagnose::table::render(&["table", "rows", "checksum", "ok"], rows_out, &[1]);
    super::write_stdout(text.as_bytes())?;
    if checks.iter().all(|check| check.ok()) {
        eprintln!(
            "copied and verified; set [store] url_env in the configuration and start the daemon"
        );
        Ok(0)
    } else {
        eprintln!("marketsync: verification failed; nothing was committed to {target}");
        Ok(1)
    }
}

/// `env:VAR` (the variable must be set) or a literal URL; either must be PostgreSQL's.
fn target_url(to: &str) -> anyhow::Result<DatabaseUrl> {
    let (url, origin) = match to.strip_prefix("env:") {
        Some(name) => match std::env::var(name) {
            Ok(url) if !url.trim().is_empty() => (url, format!("--to env:{name}")),
            _ => bail!(
                "--to env:{name}: environment variable {name} is not set or empty; export it with the postgresql url (postgres://user:password@host:5432/marketsync)"
            ),
        },
        None => (to.to_string(), "--to".to_string()),
    };
    DatabaseUrl::new(&url).map_err(|message| anyhow::anyhow!("{origin}: {message}"))
}
