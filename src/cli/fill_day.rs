//! `marketsync fill-day ACCOUNT STREAM YYYY-MM-DD`: resets a UTC day's hours to MISSING.

use super::{load_config, open_stores, Cli};
use crate::domain::now_ts;
use crate::store::Priority;

pub(super) fn command(cli: &Cli, account: &str, stream: &str, date: &str) -> anyhow::Result<i32> {
    let config = load_config(&cli.config, &cli.data_dir)?;
    let window =
        crate::diagnose::repair::fill_day_window(&config.deployment(), account, stream, date)?;
    let (_local, ledger) = open_stores(&config)?;
    let reset = ledger.reset_window(account, stream, window, Priority::Manual, now_ts())?;
    println!(
        "{account}/{stream}: {reset} hours of {date} reset to MISSING; the daemon fetches them on its next run"
    );
    Ok(0)
}
