//! Repairs an operator asks for through the CLI or the HTTP API alike, validated in one
//! place: which hours `fill-day` resets.

use chrono::NaiveDate;

use super::Deployment;
use crate::domain::{now_ts, HourWindow, HOUR};

/// Validates fill-day's arguments into the hours to reset (only complete hours).
pub fn fill_day_window(
    config: &Deployment,
    account: &str,
    stream: &str,
    date: &str,
) -> anyhow::Result<HourWindow> {
    let Some(account_config) = config.account(account) else {
        let known: Vec<&str> = config.accounts.iter().map(|a| a.id.as_str()).collect();
        anyhow::bail!(
            "unknown account {account:?}; configured accounts: {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
    };
    let Some(stream_config) = account_config.stream(stream) else {
        let known: Vec<&str> = account_config
            .streams
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        anyhow::bail!(
            "account {account} has no enabled stream {stream:?}; enabled streams: {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
    };
    let day = NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| {
        anyhow::anyhow!("invalid date {date:?}; use the form YYYY-MM-DD, e.g. 2025-12-09")
    })?;
    let start = day
        .and_hms_opt(0, 0, 0)
        .map(|dt| dt.and_utc().timestamp())
        .ok_or_else(|| anyhow::anyhow!("invalid date {date:?}"))?;
    let complete_end = crate::shapes::windowed::lookback_window(stream_config, now_ts()).end;
    let end = (start + 24 * HOUR).min(complete_end);
    if end <= start {
        anyhow::bail!("{date} has no complete hours yet; an hour is fetched once it is over plus the safety lag");
    }
    Ok(HourWindow::new(start, end))
}
