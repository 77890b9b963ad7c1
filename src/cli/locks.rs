//! `marketsync locks [--json]` and `locks release ACCOUNT/STREAM [--force]`.

use anyhow::bail;

use super::LocksAction;
use crate::config::Config;

/// Leases from the configured backend, failing fast when Redis is down.
pub(super) async fn list_locks(config: &Config) -> anyhow::Result<Vec<crate::lock::LockInfo>> {
    let locks = connect_locks(config).await?;
    Ok(locks.list().await?)
}

async fn connect_locks(config: &Config) -> anyhow::Result<crate::lock::LockService> {
    match &config.redis {
        Some(redis) => {
            let url = redis
                .url
                .resolve()
                .map_err(|err| anyhow::anyhow!("{err}"))?;
            Ok(crate::lock::LockService::redis(&url, &redis.prefix).await?)
        }
        None => Ok(crate::lock::LockService::sqlite(&config.database_path()).await?),
    }
}

/// `locks release` takes `ACCOUNT/STREAM`: an account id (lowercase letters, digits,
/// '-', '_', '.') and a stream name; anything else is refused before any backend is
/// touched, so a typo never reads as "no lease".
pub(super) fn validate_lock_scope(scope: &str) -> anyhow::Result<()> {
    let shown: String = scope.chars().take(80).collect();
    let valid = scope.len() <= 200
        && scope.split_once('/').is_some_and(|(account, stream)| {
            let id_ok = !account.is_empty()
                && account.len() <= 64
                && account.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
                });
            let stream_ok = !stream.is_empty()
                && stream.len() <= 64
                && stream
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            id_ok && stream_ok
        });
    if !valid {
        bail!("invalid lock scope {shown:?}; expected ACCOUNT/STREAM, e.g. amazon-us-acme/vendor_rt_sales (`marketsync locks` lists the leases)");
    }
    Ok(())
}

pub(super) async fn locks_command(
    config: &Config,
    action: Option<&LocksAction>,
    json: bool,
) -> anyhow::Result<i32> {
    if let Some(LocksAction::Release { scope, .. }) = action {
        validate_lock_scope(scope)?;
    }
    let locks = connect_locks(config).await?;
    match action {
        None => {
            let all = locks.list().await?;
            if json {
                let mut text = serde_json::to_string_pretty(&all)?;
                text.push('\n');
                super::write_stdout(text.as_bytes())?;
                return Ok(0);
            }
            let header = [
                "SCOPE",
                "OWNER",
                "FENCE",
                "EXPIRES_AT",
                "REMAINING",
                "STALE",
            ];
            let mut rows = Vec::with_capacity(all.len());
            for info in &all {
                rows.push(vec![
                    info.scope.clone(),
                    info.owner.clone(),
                    info.fence.to_string(),
                    info.expires_at_ms
                        .map(|ms| crate::domain::format_ts(ms.div_euclid(1000)))
                        .unwrap_or_else(|| "never (no ttl)".to_string()),
                    info.remaining_ms
                        .map(|ms| {
                            humantime::format_duration(std::time::Duration::from_secs(
                                (ms.max(0) / 1000) as u64,
                            ))
                            .to_string()
                        })
                        .unwrap_or_else(|| "-".to_string()),
                    info.stale.to_string(),
                ]);
            }
            let mut out = crate::diagnose::table::render(&header, rows, &[2]);
            if all.is_empty() {
                out.push_str("(no leases held)\n");
            }
            super::write_stdout(out.as_bytes())?;
            Ok(0)
        }
        Some(LocksAction::Release { scope, force }) => {
            match locks.release_scope(scope, *force).await {
                Ok(Some(info)) => {
                    println!(
                        "released {} (owner {}, fence {}{})",
                        info.scope,
                        info.owner,
                        info.fence,
                        if info.stale { ", stale" } else { ", was live" }
                    );
                    Ok(0)
                }
                Ok(None) => {
                    println!("no lease on {scope}");
                    Ok(0)
                }
                Err(crate::lock::LockError::Busy { holder, until, .. }) => {
                    bail!("{scope} is held by a live lease of {holder} until {until}; wait for it to expire, or pass --force if that owner is gone")
                }
                Err(err) => Err(err.into()),
            }
        }
    }
}
