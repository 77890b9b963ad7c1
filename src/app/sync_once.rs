//! `marketsync sync --once`: start the daemon, wait until every stream caught up (or
//! stopped for a reason status can name), shut down.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::Config;
use crate::store::LedgerStore;

use crate::domain::{format_ts, now_ts};
use crate::shapes::blocking;

use super::{Daemon, DEFAULT_GRACE};

/// How often `sync --once` looks at the ledger when no run ended meanwhile.
const LOOK_EVERY: Duration = Duration::from_millis(250);
/// The soonest it looks again after a run ended.
const LOOK_SOONEST: Duration = Duration::from_millis(50);
/// Streams above which the per-stream look is not taken at every tick.
const FULL_LOOK_STREAMS: usize = 20;
/// How often the per-stream look is taken with more streams than that.
const FULL_LOOK_MANY: Duration = Duration::from_secs(2);

/// `marketsync sync --once`: starts the daemon, waits until every stream has caught up
/// (or stopped for a reason status can name), then shuts down. Shows a progress bar of
/// APPLIED hours with rate and ETA when stderr is a terminal. Returns the exit code: 0
/// when everything is applied, 1 when some stream stopped early.
///
/// With more than [`FULL_LOOK_STREAMS`] streams the per-stream look is taken every
/// [`FULL_LOOK_MANY`] (or as soon as every hour is applied).
///
/// The reserve rule (see [`without_unused_reserve`]): with no `[http]` and no `[redis]`
/// nobody can enqueue manual work into this process or share its buckets, so its
/// background work may spend the whole burst.
pub async fn sync_once(config: Config, timeout: Duration) -> anyhow::Result<i32> {
    use std::io::IsTerminal;
    let config = without_unused_reserve(config);
    let daemon = Daemon::start(&config).await?;
    // The hour ledger's engine (SQLite or PostgreSQL; the job queue lives there too),
    // and the SQLite file for the cursor streams' tables.
    let ledger: Arc<dyn LedgerStore> = Arc::clone(&daemon.hours);
    // (account, stream, account cooldown scope, lookback hours; 0 for other shapes)
    let streams: Vec<(String, String, String, u64)> = config
        .accounts
        .iter()
        .flat_map(|account| {
            let windowed = account.provider.shape() == crate::domain::Shape::Windowed;
            account.streams.iter().map(move |stream| {
                (
                    account.id.clone(),
                    stream.name.clone(),
                    crate::store::account_scope(account.provider.as_str(), &account.id),
                    if windowed {
                        stream.windowed().lookback.as_secs() / 3600
                    } else {
                        0
                    },
                )
            })
        })
        .collect();
    let total: u64 = streams.iter().map(|stream| stream.3).sum();
    // Cursor and job streams: caught up when the cursor is within an interval of now
    // (minus the safety lag) and no job is due.
    let others: Vec<(crate::config::AccountConfig, crate::config::StreamConfig)> = config
        .accounts
        .iter()
        .filter(|account| account.provider.shape() != crate::domain::Shape::Windowed)
        .flat_map(|account| {
            account
                .streams
                .iter()
                .map(move |stream| (account.clone(), stream.clone()))
        })
        .collect();
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} hours applied ({per_sec}, eta {eta})",
        ) {
            bar.set_style(style);
        }
        Some(bar)
    } else {
        None
    };
    let deadline = tokio::time::Instant::now() + timeout;
    // Failed hours retried before this are waited for (a stuck report cancelled and its
    // window requested again, a transient failure); later ones stop the sync.
    let deadline_unix =
        now_ts().saturating_add(i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX));
    // A look every LOOK_EVERY, and sooner when a run ended: at once when the last look
    // was at least LOOK_SOONEST ago, else when that spacing is up (a thousand runs
    // ending at once cost one look per LOOK_SOONEST, not one each). The last apply of a
    // backfill is seen as it ends, not at the next tick.
    let mut runs_ended = daemon.runs_ended.clone();
    let mut last_look: Option<tokio::time::Instant> = None;
    // The full look (five queries per stream) costs real CPU with hundreds of streams, so
    // with many it is taken every FULL_LOOK_MANY, or at once when every hour is APPLIED;
    // in between one count moves the progress bar.
    let full_every = if streams.len() > FULL_LOOK_STREAMS {
        FULL_LOOK_MANY
    } else {
        Duration::ZERO
    };
    // With many streams the first full look, too, waits FULL_LOOK_MANY (or for every hour
    // to be APPLIED): at the start nothing has run yet, and a thousand streams' queries
    // would only compete with their first claims and requests.
    let mut last_full: Option<tokio::time::Instant> =
        (!full_every.is_zero()).then(tokio::time::Instant::now);
    // Whether the daemon's run counter is gone (then only the periodic look is left).
    let mut closed = false;
    let (applied, stopped) = loop {
        if let Some(last) = last_look {
            let periodic = (last + LOOK_EVERY).min(deadline);
            let ended = tokio::select! {
                changed = runs_ended.changed(), if !closed => {
                    closed = changed.is_err();
                    !closed
                }
                _ = tokio::time::sleep_until(periodic) => false,
            };
            if ended {
                tokio::time::sleep_until(last + LOOK_SOONEST).await;
                runs_ended.borrow_and_update();
            }
        }
        last_look = Some(tokio::time::Instant::now());
        if let Some(last) = last_full {
            if last.elapsed() < full_every {
                let hours = Arc::clone(&ledger);
                let applied = tokio::task::spawn_blocking(move || hours.applied_hours_total())
                    .await
                    .context("counting applied hours")??;
                if let Some(bar) = &bar {
                    bar.set_position(applied.min(total));
                }
                if applied < total && tokio::time::Instant::now() < deadline {
                    continue;
                }
            }
        }
        last_full = Some(tokio::time::Instant::now());
        let streams = streams.clone();
        let (applied, pending, stopped) = blocking(&ledger, move |ledger| {
            let now = now_ts();
            let (mut applied, mut pending, mut stopped) = (0u64, false, Vec::new());
            for (account, stream, account_scope, lookback_hours) in &streams {
                if *lookback_hours == 0 {
                    continue;
                }
                let snapshot = ledger.snapshot(account, stream, now)?;
                let seeded: u64 = snapshot.counts.iter().sum();
                let in_flight = snapshot.counts[1] + snapshot.counts[2];
                applied += snapshot.counts[3];
                let cooling = ledger.active_cooldown(account_scope, now)?.is_some()
                    || ledger
                        .active_cooldown(&crate::shapes::lock_scope(account, stream), now)?
                        .is_some();
                if cooling {
                    stopped.push(format!(
                        "{account}/{stream}: cooling down (see marketsync status)"
                    ));
                } else if seeded < *lookback_hours
                    || in_flight > 0
                    || snapshot.next_claimable_hour.is_some()
                    || (snapshot.counts[4] > 0
                        && snapshot
                            .next_retry_at
                            .is_some_and(|retry_at| retry_at <= deadline_unix))
                {
                    pending = true;
                } else if snapshot.counts[4] > 0 {
                    stopped.push(format!(
                        "{account}/{stream}: {} failed hours wait for their retry ({})",
                        snapshot.counts[4],
                        snapshot.last_error.unwrap_or_default()
                    ));
                }
            }
            Ok((applied, pending, stopped))
        })
        .await?;
        let others = others.clone();
        let hours = Arc::clone(&ledger);
        let (others_pending, others_stopped) = tokio::task::spawn_blocking(move || {
            other_shapes_progress(hours.as_ref(), &others, now_ts())
        })
        .await
        .context("reading cursor and job streams")??;
        let pending = pending || others_pending;
        let mut stopped = stopped;
        stopped.extend(others_stopped);
        if let Some(bar) = &bar {
            bar.set_position(applied.min(total));
        }
        if !pending {
            break (applied, stopped);
        }
        if tokio::time::Instant::now() >= deadline {
            let mut stopped = stopped;
            stopped.push(format!(
                "gave up after {}",
                humantime::format_duration(timeout)
            ));
            break (applied, stopped);
        }
    };
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    daemon.shutdown(DEFAULT_GRACE).await;
    println!(
        "{applied} of {total} hours applied across {} streams",
        streams.len()
    );
    for line in &stopped {
        println!("{line}");
    }
    Ok(if stopped.is_empty() { 0 } else { 1 })
}

/// `sync --once`'s reserve rule: the `[quota] reserve_share` of every burst is kept for
/// manual work (an operator's fill-day or refresh through the HTTP API) that background
/// work must not starve. A `sync --once` without `[http]` has no API to enqueue such
/// work, and without `[redis]` its buckets are its own (no daemon beside it shares them
/// and keeps a reserve in them), so a reserve there would serve nobody: it only delays
/// every window past the burst by the reserve's tokens. Such a run uses a share of 0.
/// With `[http]` (manual work can arrive) or `[redis]` (the buckets are shared with
/// other processes that keep their reserve) the configured share stays.
pub fn without_unused_reserve(mut config: Config) -> Config {
    if config.http.is_none() && config.redis.is_none() && config.quota.reserve_share > 0.0 {
        tracing::info!(
            configured = config.quota.reserve_share,
            "sync --once: no [http] and no [redis], so no manual work can use the quota reserve; background work may spend every token"
        );
        config.quota.reserve_share = 0.0;
    }
    config
}

/// Whether cursor and job streams still have work (`sync --once`), and the ones that
/// stopped for a reason a person should read.
fn other_shapes_progress(
    hours: &dyn LedgerStore,
    streams: &[(crate::config::AccountConfig, crate::config::StreamConfig)],
    now: i64,
) -> anyhow::Result<(bool, Vec<String>)> {
    let (mut pending, mut stopped) = (false, Vec::new());
    for (account, stream) in streams {
        let scope = crate::store::account_scope(account.provider.as_str(), &account.id);
        if let Some(cooldown) = hours.active_cooldown(&scope, now)? {
            stopped.push(format!(
                "{}/{}: {} cooldown until {} (see marketsync status)",
                account.id,
                stream.name,
                cooldown.reason,
                format_ts(cooldown.until_at)
            ));
            continue;
        }
        match account.provider.stream_shape(&stream.name) {
            crate::domain::Shape::Cursor => {
                match hours.cursor_snapshot(&account.id, &stream.name)? {
                    None => pending = true,
                    Some(cursor) if cursor.failures > 0 => stopped.push(format!(
                        "{}/{}: window from {} failed: {}",
                        account.id,
                        stream.name,
                        format_ts(cursor.cursor_ts),
                        cursor.last_error.unwrap_or_default()
                    )),
                    Some(cursor) => {
                        if cursor.behind(stream.safety_lag, now)
                            > stream.interval.as_secs() as i64 + 60
                        {
                            pending = true;
                        }
                    }
                }
            }
            crate::domain::Shape::Jobs => {
                let due =
                    crate::store::jobs::provider_queue(hours, account.provider.as_str(), now)?
                        .due_now;
                if due > 0 {
                    pending = true;
                }
            }
            crate::domain::Shape::Windowed => {}
        }
    }
    Ok((pending, stopped))
}
