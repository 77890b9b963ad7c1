//! `marketsync export sales|orders|events|prices|jobs [--account ID] [--since TIME]
//! [--format csv|jsonl]`: one table family to stdout, row by row (constant memory; see
//! [`crate::store::export`] for the tables and columns). A reader that stops early
//! (`| head`) ends the export quietly with exit 0.

use std::io::Write;

use anyhow::bail;

use super::{load_config, open_ledger, Cli};
use crate::domain::now_ts;
use crate::store::export::{self as store, ExportFormat, ExportKind, ExportQuery};

/// The kinds, for clap's possible values (and the completions).
pub(super) const KINDS: [&str; 5] = ["sales", "orders", "events", "prices", "jobs"];
/// The formats, likewise.
pub(super) const FORMATS: [&str; 2] = ["csv", "jsonl"];

pub(super) fn command(
    cli: &Cli,
    kind: &str,
    account: Option<&str>,
    since: Option<&str>,
    format: &str,
) -> anyhow::Result<i32> {
    let kind: ExportKind = kind.parse()?;
    let format: ExportFormat = format.parse()?;
    let since = match since {
        Some(text) => Some(
            store::parse_since(text, now_ts()).map_err(|err| anyhow::anyhow!("--since: {err}"))?,
        ),
        None => None,
    };
    let query = ExportQuery::new(kind, account.map(str::to_string), since, format)
        .map_err(|err| anyhow::anyhow!("--account: {err}"))?;
    let config = load_config(&cli.config, &cli.data_dir)?;
    if let Some(id) = account {
        if config.account(id).is_none() {
            let known: Vec<&str> = config.accounts.iter().map(|a| a.id.as_str()).collect();
            bail!(
                "--account: unknown account {id:?}; configured accounts: {}",
                known.join(", ")
            );
        }
    }
    if let (Some(table), Some(settings)) = (kind.postgres_table(), &config.store) {
        bail!(
            "export {}: the {table} table lives in postgresql ({}) with [store] url_env, and this export reads the sqlite file only; use psql's \\copy {table} to a file meanwhile",
            kind.as_str(),
            settings.url
        );
    }
    let ledger = open_ledger(&config)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let result = ledger.with_read_conn(|conn| store::export(conn, &query, &mut out));
    match result.and_then(|rows| out.flush().map(|()| rows).map_err(Into::into)) {
        Ok(rows) => {
            tracing::info!(kind = kind.as_str(), rows, "export written");
            Ok(0)
        }
        // The reader has what it wanted (`| head`): not an error, as ripgrep does.
        Err(err) if err.is_broken_pipe() => Ok(0),
        Err(err) => Err(err.into()),
    }
}
