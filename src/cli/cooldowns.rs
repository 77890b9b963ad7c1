//! `marketsync cooldowns [--json]` and `cooldowns clear SCOPE`.

use anyhow::Context;
use clap::Subcommand;

use crate::diagnose::cooldowns::{clear, corrections, list, CooldownRow, CorrectionRow};
use crate::diagnose::Deployment;

#[derive(Debug, Subcommand)]
pub enum CooldownsAction {
    /// End the cooldown of SCOPE early (e.g. amazon:acme). For an account or selling
    /// partner scope, every account of that seller is cleared too.
    Clear { scope: String },
}

/// The scope forms `cooldowns clear` accepts: `PROVIDER`, `PROVIDER:ACCOUNT` (or the
/// selling partner id) and `lock:ACCOUNT/STREAM`. Anything else (an empty string, spaces,
/// a missing part) is refused before the database is opened, so a typo never looks like
/// "nothing to clear".
pub fn validate_scope(scope: &str) -> anyhow::Result<()> {
    const FORMS: &str = "expected PROVIDER (e.g. amazon), PROVIDER:ACCOUNT (e.g. amazon:acme, or the selling partner id) or lock:ACCOUNT/STREAM; `marketsync cooldowns` lists the running ones";
    let shown: String = scope.chars().take(80).collect();
    if scope.len() > 200 {
        anyhow::bail!("invalid scope ({} bytes): too long; {FORMS}", scope.len());
    }
    let (kind, rest) = match scope.split_once(':') {
        Some((kind, rest)) => (kind, Some(rest)),
        None => (scope, None),
    };
    let kind_ok = !kind.is_empty() && kind.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = rest.is_none_or(|rest| {
        let part_ok = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if kind == "lock" {
            rest.split_once('/')
                .is_some_and(|(account, stream)| part_ok(account) && part_ok(stream))
        } else {
            part_ok(rest)
        }
    });
    if !(kind_ok && rest_ok) || (kind == "lock" && rest.is_none()) {
        anyhow::bail!("invalid scope {shown:?}; {FORMS}");
    }
    Ok(())
}

/// `marketsync cooldowns [--json]` and `marketsync cooldowns clear SCOPE`.
pub fn command(
    config: &Deployment,
    action: Option<&CooldownsAction>,
    json: bool,
) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        match action {
            None => {
                let (rows, warning) = list(config).await?;
                if let Some(warning) = &warning {
                    eprintln!("marketsync: cannot read cooldowns from redis: {warning}; showing sqlite only");
                }
                let corrections = corrections(config).await?;
                let text = if json {
                    let mut text = serde_json::to_string_pretty(
                        &serde_json::json!({ "cooldowns": rows, "corrections": corrections }),
                    )?;
                    text.push('\n');
                    text
                } else {
                    let mut text = render_table(&rows);
                    text.push_str(&render_corrections(&corrections));
                    text
                };
                super::write_stdout(text.as_bytes())?;
                Ok(0)
            }
            Some(CooldownsAction::Clear { scope }) => {
                validate_scope(scope)?;
                let cleared = clear(config, scope).await?;
                if cleared.is_empty() {
                    println!("no running cooldown on {scope}; nothing to clear");
                } else {
                    for (scope, store) in &cleared {
                        println!("cleared {scope} ({store})");
                    }
                    println!("calls in these scopes may be made again; a running daemon resumes within seconds");
                }
                Ok(0)
            }
        }
    })
}

/// The burst corrections under their own heading; nothing when there are none.
pub fn render_corrections(rows: &[CorrectionRow]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let header = [
        "BUCKET",
        "CONFIGURED BURST",
        "LEARNED BURST",
        "CORRECTIONS",
        "LAST",
        "DETAIL",
    ];
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            vec![
                row.bucket.clone(),
                format!("{}", row.configured_burst),
                format!("{}", row.burst),
                row.corrections.to_string(),
                row.last_utc.clone(),
                row.detail.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut out = String::from(
        "\nburst corrections (a 429 to a paced call emptied the bucket and lowered its burst; no stop):\n",
    );
    out.push_str(&crate::diagnose::table::render(&header, table, &[]));
    out
}

/// An aligned table; `(no running cooldowns)` when empty.
pub fn render_table(rows: &[CooldownRow]) -> String {
    let header = [
        "SCOPE",
        "REASON",
        "STARTED",
        "UNTIL",
        "REMAINING",
        "STORE",
        "DETAIL",
    ];
    let mut table = Vec::with_capacity(rows.len());
    for row in rows {
        table.push(vec![
            row.scope.clone(),
            row.reason.clone(),
            row.started_utc.clone(),
            row.until_utc.clone(),
            humantime::format_duration(std::time::Duration::from_secs(
                row.remaining_secs.max(0) as u64
            ))
            .to_string(),
            row.store.to_string(),
            row.detail.clone().unwrap_or_default(),
        ]);
    }
    let mut out = crate::diagnose::table::render(&header, table, &[]);
    if rows.is_empty() {
        out.push_str("(no running cooldowns)\n");
    }
    out
}
