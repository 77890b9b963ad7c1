//! Doctor findings: one line per thing a person should know, each with the command
//! that fixes it, as a pure function of the facts.

use crate::actors::supervisor::ChildState;
use crate::domain::format_ts;
use crate::shapes::spec::CredentialEnv;
use serde::Serialize;
use std::collections::BTreeSet;
use std::time::Duration;

use super::*;

/// How much a finding needs a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// All is well.
    Ok,
    /// Worth knowing; nothing to do.
    Info,
    /// Resolves by itself at a known time; nothing to do but wait.
    Wait,
    /// Needs a person: run the fix.
    Action,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Info => "info",
            Severity::Wait => "wait",
            Severity::Action => "action",
        }
    }
}

/// One line of the doctor's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// `ACCOUNT/STREAM`, `ACCOUNT`, `redis`, `database`, or an endpoint `host:port`.
    pub scope: String,
    pub message: String,
    /// The command that fixes it, when there is one.
    pub fix: Option<String>,
}

impl Finding {
    pub(crate) fn new(
        severity: Severity,
        scope: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Finding {
            severity,
            scope: scope.into(),
            message: message.into(),
            fix: None,
        }
    }

    pub(crate) fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    /// `[action] acct/vendor_rt_sales: message; fix: command`.
    pub fn line(&self) -> String {
        let mut line = format!(
            "[{}] {}: {}",
            self.severity.as_str(),
            self.scope,
            self.message
        );
        if let Some(fix) = &self.fix {
            line.push_str("; fix: ");
            line.push_str(fix);
        }
        line
    }
}

/// The doctor's whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Findings with [`Severity::Action`].
    pub needs_attention: usize,
}

impl Report {
    pub(crate) fn new(mut findings: Vec<Finding>) -> Report {
        // Worst first, stable within a severity (config order).
        findings.sort_by_key(|finding| std::cmp::Reverse(finding.severity));
        let needs_attention = findings
            .iter()
            .filter(|finding| finding.severity == Severity::Action)
            .count();
        Report {
            findings,
            needs_attention,
        }
    }

    /// 1 when something needs a person, else 0.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.needs_attention > 0)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for finding in &self.findings {
            out.push_str(&finding.line());
            out.push('\n');
        }
        if self.needs_attention == 0 {
            out.push_str("all is well: nothing needs a person\n");
        } else {
            out.push_str(&format!(
                "{} finding(s) need a person\n",
                self.needs_attention
            ));
        }
        out
    }
}

/// `marketsync` with the `--config` this configuration came from (or the options' own).
pub(crate) fn command_prefix(config: &Deployment, options: &DoctorOptions) -> String {
    if let Some(command) = &options.command {
        return command.clone();
    }
    if config.source_name.starts_with('<') {
        "marketsync".to_string()
    } else {
        format!("marketsync --config {}", shell_word(&config.source_name))
    }
}

/// `marketsync` with the global options given on this command line, for fix commands.
pub fn command_line(
    config: Option<&std::path::Path>,
    data_dir: Option<&std::path::Path>,
) -> String {
    let mut command = "marketsync".to_string();
    if let Some(path) = config {
        command.push_str(&format!(
            " --config {}",
            shell_word(&path.display().to_string())
        ));
    }
    if let Some(dir) = data_dir {
        command.push_str(&format!(
            " --data-dir {}",
            shell_word(&dir.display().to_string())
        ));
    }
    command
}

/// Quotes `text` for a POSIX shell when it holds anything but safe characters.
pub(crate) fn shell_word(text: &str) -> String {
    let safe = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+".contains(c));
    if safe && !text.is_empty() {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// The call to the daemon's HTTP API that does `method_path`, when it serves one.
pub(crate) fn admin_call(options: &DoctorOptions, method_path: &str) -> Option<String> {
    let url = options.admin_url.as_deref()?;
    Some(format!(
        "curl -X POST -H \"Authorization: Bearer ${}\" {}{method_path}",
        options.admin_token_env,
        url.trim_end_matches('/')
    ))
}

pub(crate) fn day_of(hour: i64) -> String {
    format_ts(hour).chars().take(10).collect()
}

/// The findings about accounts and streams (not the dependencies: see [`run`]).
pub fn findings(
    config: &Deployment,
    accounts: &[AccountFacts],
    options: &DoctorOptions,
    now: i64,
) -> Vec<Finding> {
    let cmd = command_prefix(config, options);
    let mut out = Vec::new();
    for account in accounts {
        let id = &account.id;
        let mut account_problem = false;
        let account_config = config.account(id);
        if let Some((found, expiry)) = account_config.and_then(|found| {
            super::tokens::refresh_token_expiry(found, now).map(|expiry| (found, expiry))
        }) {
            out.push(
                Finding::new(Severity::Action, id.clone(), expiry)
                    .fix(super::tokens::reauthorize_hint(found)),
            );
        }
        if let Some(supervisor) = &account.supervisor {
            let reason = supervisor
                .last_crash
                .as_ref()
                .map(|crash| format!("{} (at {})", crash.reason, crash.at_utc))
                .or_else(|| supervisor.reason.clone())
                .unwrap_or_else(|| "no crash recorded".to_string());
            match supervisor.state {
                ChildState::Quarantined => {
                    account_problem = true;
                    let until = supervisor
                        .quarantined_until
                        .as_ref()
                        .map(|until| format!(" until {until} (then one probe restart)"))
                        .unwrap_or_default();
                    out.push(
                        Finding::new(
                            Severity::Action,
                            id.clone(),
                            format!(
                                "account actor quarantined{until} after {} restarts; crash reason: {reason}",
                                supervisor.restarts
                            ),
                        )
                        .fix(format!("fix the cause, then {cmd} accounts resume {id}")),
                    );
                }
                ChildState::Halted => {
                    account_problem = true;
                    out.push(Finding::new(
                        Severity::Wait,
                        id.clone(),
                        format!(
                            "restarts paused after a mass failure: {}; they resume when the pause ends",
                            supervisor.reason.as_deref().unwrap_or("no reason recorded")
                        ),
                    ));
                }
                ChildState::BackingOff => {
                    account_problem = true;
                    out.push(Finding::new(
                        Severity::Wait,
                        id.clone(),
                        format!(
                            "account actor crashed ({reason}); it restarts after its backoff ({} restarts so far)",
                            supervisor.restarts
                        ),
                    ));
                }
                ChildState::Running | ChildState::Stopped => {}
            }
        }
        if let Some(cooldown) = &account.cooldown {
            account_problem = true;
            let detail = cooldown
                .detail
                .as_ref()
                .map(|detail| format!(" ({detail})"))
                .unwrap_or_default();
            let until = format_ts(cooldown.until_at);
            match cooldown.reason.as_str() {
                "quota" => out.push(Finding::new(
                    Severity::Wait,
                    id.clone(),
                    format!(
                        "quota cooldown until {until}{detail}: no provider calls until then; avoid triggering more (manual refreshes answer QuotaExceeded)"
                    ),
                )),
                "auth" => {
                    // Through the daemon's HTTP API when it serves one; otherwise in
                    // the store, where the daemon's cooldown watch sees it within a
                    // second.
                    let clear =
                        admin_call(options, &format!("/api/accounts/{id}/clear-cooldown"))
                            .unwrap_or_else(|| {
                                format!("{cmd} cooldowns clear {}", shell_word(&cooldown.scope))
                            });
                    // eBay's access denied: the token lacks a scope (the detail names it).
                    let fix = match account_config.filter(|_| {
                        cooldown
                            .detail
                            .as_deref()
                            .is_some_and(super::tokens::is_access_denied)
                    }) {
                        Some(found) => format!(
                            "{}, then {clear}",
                            super::tokens::reauthorize_hint(found)
                        ),
                        None => {
                            format!("fix the credentials, restart the daemon, then {clear}")
                        }
                    };
                    out.push(
                        Finding::new(
                            Severity::Action,
                            id.clone(),
                            format!(
                                "authentication failed: cooldown until {until}{detail}{}",
                                credential_hint(account.credentials.as_ref())
                            ),
                        )
                        .fix(fix),
                    )
                }
                other => out.push(Finding::new(
                    Severity::Wait,
                    id.clone(),
                    format!("cooldown ({other}) until {until}{detail}"),
                )),
            }
        }
        for stream in &account.streams {
            let before = out.len();
            stream_findings(account, stream, &cmd, now, &mut out);
            if out.len() == before && !account_problem {
                let (verdict, explanation) = verdict(account, stream, now);
                let severity = match verdict {
                    Verdict::CaughtUp | Verdict::Syncing => Severity::Ok,
                    _ => Severity::Info,
                };
                out.push(Finding::new(
                    severity,
                    stream.scope(),
                    format!("{}: {explanation}", verdict.as_str()),
                ));
            }
        }
    }
    out
}

pub(crate) fn credential_hint(credentials: Option<&CredentialEnv>) -> String {
    match credentials {
        Some(names) => format!(
            "; check the environment variables {} of the daemon",
            names.names().join(", ")
        ),
        None => String::new(),
    }
}

/// Findings of a cursor or job stream: its verdict when it needs a look, with the
/// command that helps.
pub(crate) fn shape_findings(
    account: &AccountFacts,
    stream: &StreamFacts,
    cmd: &str,
    now: i64,
    out: &mut Vec<Finding>,
) {
    let Some((verdict, explanation)) = shape_verdict(stream, now) else {
        return;
    };
    let scope = stream.scope();
    let finding = match verdict {
        Verdict::CaughtUp | Verdict::Syncing => return,
        Verdict::Failing => match &stream.shape {
            ShapeFacts::Jobs(_) => Finding::new(Severity::Action, scope, explanation).fix(format!(
                "fix the cause, then {cmd} jobs reset-failed {}",
                account.provider
            )),
            _ => {
                let auth = explanation.to_lowercase().contains("authentication");
                let hint = if auth {
                    credential_hint(account.credentials.as_ref())
                } else {
                    String::new()
                };
                Finding::new(
                    Severity::Wait,
                    scope,
                    format!("{explanation} (retried automatically with backoff){hint}"),
                )
            }
        },
        _ => match live_holder_elsewhere(stream) {
            // A daemon holds the stream's lease: it is running; starting another would
            // only wait for the lease.
            Some(holder) => Finding::new(
                Severity::Wait,
                scope,
                format!("{explanation}; {holder} holds the lease and works the stream"),
            ),
            None => Finding::new(Severity::Action, scope, explanation).fix(format!("{cmd} run")),
        },
    };
    out.push(finding);
}

pub(crate) fn stream_findings(
    account: &AccountFacts,
    stream: &StreamFacts,
    cmd: &str,
    now: i64,
    out: &mut Vec<Finding>,
) {
    let scope = stream.scope();
    let id = &account.id;
    let name = &stream.stream.name;
    // 0. One API's budget spent (eBay): this stream waits for its reset.
    if let Some(cooldown) = &stream.api_cooldown {
        out.push(
            Finding::new(
                Severity::Wait,
                scope.clone(),
                format!(
                    "{}; the account's other streams go on",
                    super::verdict::api_cooldown_line(cooldown)
                ),
            )
            .fix(format!(
                "wait for the provider's quota reset; if the quota was raised, {cmd} cooldowns clear {}",
                shell_word(&cooldown.scope)
            )),
        );
    }
    // 1. Lock busy.
    if let (Some(lock), Some(line)) = (&stream.lock, stream.lock_line()) {
        let owner_dead = crate::lock::owner_is_dead_local(&lock.owner);
        if lock.expires_at_ms.is_none() {
            out.push(
                Finding::new(
                    Severity::Action,
                    scope.clone(),
                    format!("{line}: a zombie lease that blocks the stream forever"),
                )
                .fix(format!("{cmd} locks release {scope} --force (a running daemon's hygiene pass also caps it)")),
            );
        } else if lock.stale {
            out.push(
                Finding::new(
                    Severity::Action,
                    scope.clone(),
                    format!("{line}: stale, its holder most likely died mid-flight"),
                )
                .fix(format!("{cmd} locks release {scope}")),
            );
        } else if owner_dead {
            out.push(
                Finding::new(
                    Severity::Action,
                    scope.clone(),
                    format!("{line}, but its owner process is gone from this host"),
                )
                .fix(format!("{cmd} locks release {scope} --force")),
            );
        } else if let Some(host) = other_host(&lock.owner) {
            // A live lease of a process on another host: this host cannot tell whether it
            // is alive, so no force-release is offered (it would let two daemons work
            // the stream); the daemon there is the one to look at.
            let held_for = stream
                .lock_acquired_at_ms
                .map(|ms| now.saturating_sub(ms.div_euclid(1000)))
                .unwrap_or(0);
            let owner_claimed_recently = stream.last_claim.as_ref().is_some_and(|(at, owner)| {
                *owner == lock.owner && now.saturating_sub(*at) <= stream.stall_after()
            });
            let hold_limit = stream.stall_after().max(15 * 60);
            if held_for > hold_limit && !owner_claimed_recently && stream.pending() > 0 {
                out.push(
                    Finding::new(
                        Severity::Action,
                        scope.clone(),
                        format!(
                            "{line}: a live process on host {host} holds it for {} with work pending and no claim in this database lately (does that daemon use another database?)",
                            humantime::format_duration(Duration::from_secs(held_for.max(0) as u64))
                        ),
                    )
                    .fix(format!(
                        "check the daemon on {host} (its logs and its data_dir, or doctor there); this host cannot tell whether it is dead, so do not force-release its lease from here"
                    )),
                );
            } else {
                out.push(Finding::new(
                    Severity::Info,
                    scope.clone(),
                    format!(
                        "{line}: held by a live process on another host ({host}); it works this stream, nothing to do here"
                    ),
                ));
            }
        } else {
            let held_for = stream
                .lock_acquired_at_ms
                .map(|ms| now - ms.div_euclid(1000))
                .unwrap_or(0);
            let owner_claimed_recently = stream.last_claim.as_ref().is_some_and(|(at, owner)| {
                *owner == lock.owner && now - at <= stream.stall_after()
            });
            // Seed 000: a lock stuck for more than 15 minutes deserves a look; with no
            // claim by its owner and work pending it is stuck, not busy.
            let hold_limit = stream.stall_after().max(15 * 60);
            if held_for > hold_limit && !owner_claimed_recently && stream.pending() > 0 {
                out.push(
                    Finding::new(
                        Severity::Action,
                        scope.clone(),
                        format!(
                            "{line}: held for {} with work pending and no claim by its owner lately; confirm the owner is stuck before forcing",
                            humantime::format_duration(Duration::from_secs(held_for.max(0) as u64))
                        ),
                    )
                    .fix(format!("{cmd} locks release {scope} --force")),
                );
            } else {
                let severity = if stream
                    .lock_cooldown
                    .as_ref()
                    .is_some_and(|cooldown| cooldown.reason == "lock_busy")
                {
                    Severity::Wait
                } else {
                    Severity::Info
                };
                out.push(Finding::new(
                    severity,
                    scope.clone(),
                    format!("{line}: live; other runners wait for it (lock busy)"),
                ));
            }
        }
    } else if let Some(cooldown) = &stream.lock_cooldown {
        if cooldown.reason == "lock_busy" {
            out.push(Finding::new(
                Severity::Wait,
                scope.clone(),
                format!(
                    "lock busy: {} until {}",
                    cooldown
                        .detail
                        .as_deref()
                        .unwrap_or("held by another owner"),
                    format_ts(cooldown.until_at)
                ),
            ));
        } else if cooldown.reason == "lock_unavailable" {
            out.push(
                Finding::new(
                    Severity::Action,
                    scope.clone(),
                    format!(
                        "the lock backend was unreachable when the daemon last tried: {}",
                        cooldown.detail.as_deref().unwrap_or("no detail")
                    ),
                )
                .fix("start redis (or fix redis.url); leases resume by themselves"),
            );
        }
    }
    // 1b. Writes refused as stale, again and again.
    if let Some(condition) = stream
        .lock_cooldown
        .as_ref()
        .filter(|condition| condition.reason == crate::shapes::FENCE_REFUSED)
    {
        out.push(fence_refusal_finding(&scope, condition, cmd));
    }
    if !matches!(stream.shape, ShapeFacts::Windowed) {
        shape_findings(account, stream, cmd, now, out);
        return;
    }
    // 2. Never ran (here: a live lease of another process says a daemon runs elsewhere).
    if stream.rows == 0 {
        if let Some(holder) = live_holder_elsewhere(stream) {
            out.push(Finding::new(
                Severity::Info,
                scope.clone(),
                format!("no ledger rows in this database yet; {holder} holds the lease and works the stream (with this data_dir, rows appear as it claims)"),
            ));
            return;
        }
        out.push(
            Finding::new(
                Severity::Action,
                scope.clone(),
                "no ledger rows: the daemon has not run this stream yet",
            )
            .fix(format!("{cmd} run")),
        );
        return;
    }
    // 3. Applied never advances: FAILED hours.
    if let Some(failed) = &stream.failed {
        let retry = match failed.next_retry_at {
            Some(at) if at <= now => "retry due now".to_string(),
            Some(at) => format!("next retry at {}", format_ts(at)),
            None => "no retry scheduled".to_string(),
        };
        let days: BTreeSet<String> = [failed.oldest_hour, failed.newest_hour]
            .into_iter()
            .map(day_of)
            .collect();
        let fill_days = days
            .iter()
            .map(|day| format!("{cmd} fill-day {id} {name} {day}"))
            .collect::<Vec<_>>()
            .join(" && ");
        if let Some(error) = &failed.auth_error {
            out.push(
                Finding::new(
                    Severity::Action,
                    scope.clone(),
                    format!(
                        "authentication failures: {error}{}",
                        credential_hint(account.credentials.as_ref())
                    ),
                )
                .fix(format!(
                    "fix the credentials, restart the daemon, then {fill_days}"
                )),
            );
        }
        let repeated = failed.max_attempts >= 3;
        let message = format!(
            "applied not advancing: {} hour(s) FAILED between {} and {} (attempts up to {}); last error: {}; {retry}",
            failed.hours,
            format_ts(failed.oldest_hour),
            format_ts(failed.newest_hour),
            failed.max_attempts,
            failed.last_error.as_deref().unwrap_or("none recorded")
        );
        if repeated {
            out.push(
                Finding::new(Severity::Action, scope.clone(), message)
                    .fix(format!("fix the cause of the error, then {fill_days}")),
            );
        } else {
            out.push(Finding::new(
                Severity::Wait,
                scope.clone(),
                format!("{message} (retried automatically with backoff)"),
            ));
        }
    }
    // 4. Missing hours never drop.
    if stream.claims_stalled(now) {
        let why = if account
            .supervisor
            .as_ref()
            .is_some_and(|s| s.state == ChildState::Quarantined)
        {
            "the account actor is quarantined".to_string()
        } else if let Some(cooldown) = &account.cooldown {
            format!(
                "a {} cooldown runs until {}",
                cooldown.reason,
                format_ts(cooldown.until_at)
            )
        } else if let Some(lock) = stream.lock.as_ref().filter(|lock| !lock.stale) {
            format!("the lease is held by {}", lock.owner)
        } else {
            "no lease is held and no cooldown runs: no daemon is claiming (is it running?)"
                .to_string()
        };
        // A cooldown, a live lease or a quarantine explains it (and has its own finding);
        // otherwise nothing is claiming at all and a person must start the daemon.
        let explained = stream.lock.as_ref().is_some_and(|lock| !lock.stale)
            || account.cooldown.is_some()
            || account
                .supervisor
                .as_ref()
                .is_some_and(|s| s.state == ChildState::Quarantined);
        let (severity, fix) = if explained {
            (
                Severity::Wait,
                "see the other findings of this account".to_string(),
            )
        } else {
            (Severity::Action, format!("start the daemon: {cmd} run"))
        };
        out.push(
            Finding::new(
                severity,
                scope.clone(),
                format!(
                    "missing hours not dropping: {} hour(s) claimable since {} (next claimable {}) but nothing claimed them{}; why: {why}",
                    stream.claimable_now,
                    format_ts(stream.claimable_since.unwrap_or(now)),
                    stream.next_claimable_hour.map(format_ts).unwrap_or_else(|| "-".to_string()),
                    stream
                        .last_claim
                        .as_ref()
                        .map(|(at, owner)| format!(" (last claim {} by {owner})", format_ts(*at)))
                        .unwrap_or_else(|| " (never claimed)".to_string())
                ),
            )
            .fix(fix),
        );
    }
    // 5. Units stuck in flight.
    if stream.in_flight_stuck(now) {
        out.push(
            Finding::new(
                Severity::Action,
                scope.clone(),
                format!(
                    "{} hour(s) in flight since {} (report {}), longer than poll_timeout plus two intervals: the worker looks stuck",
                    stream.in_flight(),
                    format_ts(stream.in_flight_since.unwrap_or(now)),
                    stream.in_flight_report.as_deref().unwrap_or("not yet requested")
                ),
            )
            .fix(format!("restart the daemon ({cmd} run); it resumes polling the same report")),
        );
    }
    // 6. Data stale with nothing pending: the daemon stopped seeding.
    if stream.pending() == 0 && stream.failed.is_none() {
        if let Some(behind) = stream.behind_secs(now) {
            if behind > stream.lag_allowed() && live_holder_elsewhere(stream).is_some() {
                let holder = live_holder_elsewhere(stream).unwrap_or_default();
                out.push(Finding::new(
                    Severity::Action,
                    scope.clone(),
                    format!(
                        "newest applied hour {} is {} behind, yet {holder} holds the lease: that daemon is running but does not write to this database",
                        format_ts(stream.last_applied_hour.unwrap_or(0)),
                        humantime::format_duration(Duration::from_secs(behind as u64))
                    ),
                )
                .fix(format!("point the daemon of {holder} at this data_dir (or run doctor with its configuration)")));
            } else if behind > stream.lag_allowed() {
                out.push(
                    Finding::new(
                        Severity::Action,
                        scope.clone(),
                        format!(
                            "newest applied hour {} is {} behind and no newer hour was seeded: no daemon is running this stream",
                            format_ts(stream.last_applied_hour.unwrap_or(0)),
                            humantime::format_duration(Duration::from_secs(behind as u64))
                        ),
                    )
                    .fix(format!("start the daemon: {cmd} run")),
                );
            }
        }
    }
}

/// The host of `owner` when it is not this host (a holder this host cannot check).
pub(crate) fn other_host(owner: &str) -> Option<String> {
    let id = crate::lock::OwnerId::parse(owner)?;
    let local = crate::lock::local_hostname()?;
    (!local.eq_ignore_ascii_case(id.host)).then(|| id.host.to_string())
}

/// The owner of a live (not stale, not provably dead) lease on the stream, when it is
/// another process than this one: a daemon is running the stream.
pub(crate) fn live_holder_elsewhere(stream: &StreamFacts) -> Option<String> {
    let lock = stream.lock.as_ref()?;
    let live = !lock.stale
        && lock.expires_at_ms.is_some()
        && !crate::lock::owner_is_dead_local(&lock.owner);
    live.then(|| lock.owner.clone())
}

/// The finding of a `fence_refused` lock condition: one refusal is a takeover the
/// runner handled; several in a row are a loop a person must break.
pub(crate) fn fence_refusal_finding(
    scope: &str,
    condition: &crate::store::Cooldown,
    cmd: &str,
) -> Finding {
    let detail = condition.detail.as_deref().unwrap_or("no detail recorded");
    let refusals = crate::shapes::fence_refusals_in(detail);
    if refusals < FENCE_REFUSAL_LOOP {
        return Finding::new(
            Severity::Info,
            scope,
            format!(
                "a write was refused as stale at {} ({detail}): another owner took the lease over; the runner stopped and takes it again",
                format_ts(condition.started_at)
            ),
        );
    }
    Finding::new(
        Severity::Action,
        scope,
        format!(
            "fence refusal loop since {}: {detail}; every lease this daemon takes is older than what the database has seen, so nothing is written (two daemons share this database but not one lease backend, or a lease backend hands out old fences)",
            format_ts(condition.started_at)
        ),
    )
    .fix(format!(
        "{cmd} locks (see who holds it), make every daemon using this data_dir use the same [redis] url and prefix, or stop the extra one"
    ))
}

/// Refusals in a row from which a `fence_refused` condition is a loop, not a takeover.
pub const FENCE_REFUSAL_LOOP: u32 = 3;
