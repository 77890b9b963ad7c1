//! Repairs an operator asks for through the CLI or the HTTP API alike, validated in one
//! place: which hours `fill-day` resets. Only report (windowed) streams, only a day in
//! the strict form `YYYY-MM-DD`, and only the part of that day inside the stream's
//! lookback window (what the daemon keeps seeded); a day before it is refused, naming
//! the earliest day allowed.

use chrono::{Datelike, NaiveDate};

use super::Deployment;
use crate::domain::{now_ts, HourWindow, HOUR};
use crate::shapes::spec::ShapeSettings;

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
    if !matches!(stream_config.shape, ShapeSettings::Windowed(_)) {
        anyhow::bail!(
            "{account}/{stream} is a {} stream; fill-day resets hours of report (windowed) streams only (a cursor stream re-reads from its cursor, a job queue takes `marketsync enqueue`)",
            match account_config.provider.shape() {
                crate::domain::Shape::Cursor => "cursor",
                crate::domain::Shape::Jobs => "job queue",
                crate::domain::Shape::Windowed => "windowed",
            }
        );
    }
    let day = parse_day(date)?;
    let day_start = day
        .and_hms_opt(0, 0, 0)
        .map(|dt| dt.and_utc().timestamp())
        .ok_or_else(|| anyhow::anyhow!("invalid date {date:?}; use the form YYYY-MM-DD"))?;
    let day_end = day_start.saturating_add(24 * HOUR);
    let lookback = crate::shapes::windowed::lookback_window(stream_config, now_ts());
    if day_end <= lookback.start {
        let earliest = chrono::DateTime::from_timestamp(lookback.start, 0)
            .map(|at| at.format("%Y-%m-%d").to_string())
            .unwrap_or_default();
        anyhow::bail!(
            "{date} is before the lookback of {account}/{stream} ({}; the earliest day is {earliest}); fill a later day, or raise the stream's lookback (at most 90d) to reach further back",
            humantime::format_duration(stream_config.windowed().lookback)
        );
    }
    let start = day_start.max(lookback.start);
    let end = day_end.min(lookback.end);
    if end <= start {
        anyhow::bail!("{date} has no complete hours yet; an hour is fetched once it is over plus the safety lag");
    }
    Ok(HourWindow::new(start, end))
}

/// A UTC day in exactly the form `YYYY-MM-DD` (four-digit year from 1970): chrono alone
/// also takes `0000-01-01`, `-2025-01-01` or `+12025-01-01`.
fn parse_day(date: &str) -> anyhow::Result<NaiveDate> {
    let invalid = || {
        anyhow::anyhow!(
            "invalid date {:?}; use the form YYYY-MM-DD, e.g. 2025-12-09",
            date.chars().take(40).collect::<String>()
        )
    };
    let bytes = date.as_bytes();
    let shaped = bytes.len() == 10
        && bytes.iter().enumerate().all(|(index, byte)| match index {
            4 | 7 => *byte == b'-',
            _ => byte.is_ascii_digit(),
        });
    if !shaped {
        return Err(invalid());
    }
    let day = NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| invalid())?;
    if day.year() < 1970 {
        return Err(invalid());
    }
    Ok(day)
}
