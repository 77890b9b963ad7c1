//! `marketsync status`: per account and stream, counts per state, last applied hour,
//! next claimable hour and the cooldown, read straight from the ledger (the daemon need
//! not be running). Rendered as an aligned table or as one JSON object.

use serde::Serialize;

use super::Deployment;
use crate::domain::format_ts;
use crate::domain::Shape;
use crate::lock::LockInfo;
use crate::shapes::lock_scope;
use crate::store::{account_scope, HourState, LedgerError, LedgerStore};

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub accounts: Vec<AccountStatus>,
}

#[derive(Debug, Serialize)]
pub struct AccountStatus {
    pub id: String,
    pub provider: crate::domain::Provider,
    /// With `[cluster]`: the member that runs the account (a member id), or `unowned`
    /// when no member is live; absent when the cluster is off (this daemon runs it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The account actor as its supervisor last recorded it; `None` before the daemon
    /// first ran the account.
    pub supervisor: Option<SupervisorStatus>,
    pub streams: Vec<StreamStatus>,
    /// Things to act on before they stop the account (an eBay refresh token within 14
    /// days of its known expiry).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SupervisorStatus {
    /// `running`, `backing_off`, `quarantined`, `halted` or `stopped`.
    pub state: String,
    pub restarts: u64,
    #[schema(required = true)]
    pub last_crash: Option<crate::actors::supervisor::CrashInfo>,
    #[schema(required = true)]
    pub quarantined_until: Option<String>,
    /// Why the actor is in this state (the crash reason, or the mass failure).
    #[schema(required = true)]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct StreamStatus {
    pub name: String,
    /// The sync shape: `windowed` (the hour ledger: `counts` and the hour fields),
    /// `cursor` (see `cursor`) or `jobs` (see `queue`).
    pub shape: &'static str,
    /// Cursor streams: where the cursor stands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<CursorStatus>,
    /// Job streams: jobs of the account's provider by state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<std::collections::BTreeMap<String, i64>>,
    /// Keys are the state names: MISSING, REQUESTED, DOWNLOADED, APPLIED, FAILED.
    pub counts: std::collections::BTreeMap<&'static str, u64>,
    pub last_applied_hour: Option<String>,
    pub next_claimable_hour: Option<String>,
    /// When the earliest FAILED hour may be retried.
    pub next_retry_at: Option<String>,
    pub last_error: Option<String>,
    pub cooldown: CooldownStatus,
    /// The stream's lease, when one is held (or left behind).
    pub lock: Option<LockStatus>,
}

/// A cursor stream's position.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CursorStatus {
    /// Everything modified before this is applied.
    pub position: String,
    /// How far the cursor is behind the newest time a window may end at (now minus the
    /// safety lag), in seconds.
    pub behind_seconds: i64,
    #[schema(required = true)]
    pub last_run_at: Option<String>,
    /// Consecutive failed windows (the cursor stays until one applies).
    pub failures: i64,
    #[schema(required = true)]
    pub retry_at: Option<String>,
    /// Resources stored and change-history rows recorded for the stream.
    pub resources: i64,
    pub events: i64,
}

#[derive(Debug, Serialize)]
pub struct LockStatus {
    pub owner: String,
    pub fence: u64,
    /// `None`: the key has no expiry at all (a zombie the hygiene pass will repair).
    pub expires_at: Option<String>,
    /// The lease's expiry has passed: its owner most likely died mid-flight.
    pub stale: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CooldownStatus {
    /// `quota`, `lock_busy`, `lock_unavailable`, `auth` or `none`.
    pub reason: String,
    #[schema(required = true)]
    pub until_utc: Option<String>,
    /// What started the cooldown, when recorded: for `auth`, the provider's refusal
    /// (eBay's access denied names every scope the account's token was found to lack),
    /// the text doctor shows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The scope cooling down when it is narrower than the account: one API
    /// (`{provider}:{account}:{api}`, an eBay API's spent quota), so only the streams
    /// calling that API wait. Absent for an account-wide cooldown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// Reads the status of every configured account and stream; `locks` is the lease
/// backend's list, when it could be read.
pub fn collect(
    config: &Deployment,
    hours: &dyn LedgerStore,
    locks: &[LockInfo],
    supervision: &[crate::actors::supervisor::ChildStatus],
    now: i64,
) -> Result<StatusReport, LedgerError> {
    let mut accounts = Vec::with_capacity(config.accounts.len());
    for account in &config.accounts {
        let supervisor = supervision
            .iter()
            .find(|child| child.id == account.id)
            .map(|child| SupervisorStatus {
                state: child.state.as_str().to_string(),
                restarts: child.restarts,
                last_crash: child.last_crash.clone(),
                quarantined_until: child.quarantined_until.clone(),
                reason: child.reason.clone(),
            });
        let cooldown =
            hours.active_cooldown(&account_scope(account.provider.as_str(), &account.id), now)?;
        let mut streams = Vec::with_capacity(account.streams.len());
        for stream in &account.streams {
            let snapshot = hours.snapshot(&account.id, &stream.name, now)?;
            // The account's cooldown, else one of an API the stream calls, else a
            // lock condition: what stops this stream first.
            let lock_cooldown = match &cooldown {
                Some(_) => None,
                None => match super::facts::api_cooldown(hours, account, &stream.name, now)? {
                    Some(api) => Some(api),
                    None => hours.active_cooldown(&lock_scope(&account.id, &stream.name), now)?,
                },
            };
            let scope = format!("{}/{}", account.id, stream.name);
            let lock = locks
                .iter()
                .find(|info| info.scope == scope)
                .map(|info| LockStatus {
                    owner: info.owner.clone(),
                    fence: info.fence,
                    expires_at: info.expires_at_ms.map(|ms| format_ts(ms.div_euclid(1000))),
                    stale: info.stale,
                });
            let counts = HourState::ALL
                .iter()
                .zip(snapshot.counts)
                .map(|(state, count)| (state.as_str(), count))
                .collect();
            let shape = account.provider.stream_shape(&stream.name);
            let (mut cursor, mut queue, mut last_error, mut next_retry_at) =
                (None, None, snapshot.last_error, snapshot.next_retry_at);
            match shape {
                Shape::Windowed => {}
                Shape::Cursor => {
                    if let Some(found) = hours.cursor_snapshot(&account.id, &stream.name)? {
                        last_error = found.last_error.clone();
                        next_retry_at = found.retry_at;
                        cursor = Some(CursorStatus {
                            position: if found.before_first_snapshot() {
                                "no snapshot yet".to_string()
                            } else {
                                format_ts(found.cursor_ts)
                            },
                            behind_seconds: found.behind(stream.safety_lag, now),
                            last_run_at: found.last_run_at.map(format_ts),
                            failures: found.failures,
                            retry_at: found.retry_at.map(format_ts),
                            resources: found.resources,
                            events: found.events,
                        });
                    }
                }
                Shape::Jobs => {
                    let found =
                        crate::store::jobs::provider_queue(hours, account.provider.as_str(), now)?;
                    // Every state, zeros included (README shows all five keys).
                    let mut depth = found.depth;
                    for state in crate::store::jobs::JobState::ALL {
                        depth.entry(state.as_str().to_string()).or_insert(0);
                    }
                    queue = Some(depth);
                }
            }
            streams.push(StreamStatus {
                name: stream.name.clone(),
                shape: match shape {
                    Shape::Windowed => "windowed",
                    Shape::Cursor => "cursor",
                    Shape::Jobs => "jobs",
                },
                cursor,
                queue,
                counts,
                last_applied_hour: snapshot.last_applied_hour.map(format_ts),
                next_claimable_hour: snapshot.next_claimable_hour.map(format_ts),
                next_retry_at: next_retry_at.map(format_ts),
                last_error,
                lock,
                cooldown: match cooldown.as_ref().or(lock_cooldown.as_ref()) {
                    Some(cooldown) => CooldownStatus {
                        reason: cooldown.reason.clone(),
                        until_utc: Some(format_ts(cooldown.until_at)),
                        detail: cooldown.detail.clone(),
                        scope: crate::provider::is_api_scope_of(
                            &cooldown.scope,
                            &account_scope(account.provider.as_str(), &account.id),
                        )
                        .then(|| cooldown.scope.clone()),
                    },
                    None => CooldownStatus {
                        reason: "none".to_string(),
                        until_utc: None,
                        detail: None,
                        scope: None,
                    },
                },
            });
        }
        accounts.push(AccountStatus {
            id: account.id.clone(),
            provider: account.provider,
            owner: None,
            supervisor,
            streams,
            warnings: super::tokens::refresh_token_warning(account, now)
                .into_iter()
                .collect(),
        });
    }
    Ok(StatusReport { accounts })
}

impl StatusReport {
    /// Fills each account's `owner` from the cluster view (`[cluster]` on; see
    /// [`super::cluster::owner_label`]).
    pub fn assign_owners(&mut self, enabled: bool, view: Option<&crate::cluster::ClusterView>) {
        for account in &mut self.accounts {
            account.owner = super::cluster::owner_label(enabled, view, &account.id);
        }
    }
}

/// An aligned, human-readable table.
pub fn render_table(report: &StatusReport) -> String {
    let header = [
        "ACCOUNT",
        "STREAM",
        "MISSING",
        "REQUESTED",
        "DOWNLOADED",
        "APPLIED",
        "FAILED",
        "LAST APPLIED",
        "NEXT CLAIMABLE",
        "COOLDOWN",
        "ACTOR",
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    for account in &report.accounts {
        if account.streams.is_empty() {
            let mut row = vec![account.id.clone(), "(no streams enabled)".to_string()];
            row.resize(header.len(), String::new());
            rows.push(row);
        }
        for stream in &account.streams {
            let mut row = vec![account.id.clone(), stream.name.clone()];
            let windowed = stream.shape == "windowed";
            for state in HourState::ALL {
                row.push(if windowed {
                    stream
                        .counts
                        .get(state.as_str())
                        .copied()
                        .unwrap_or(0)
                        .to_string()
                } else {
                    "-".to_string()
                });
            }
            row.push(match (&stream.cursor, &stream.queue) {
                (Some(cursor), _) => format!("cursor {}", cursor.position),
                (_, Some(queue)) => format!(
                    "jobs: {} pending, {} running, {} failed",
                    queue.get("pending").copied().unwrap_or(0),
                    queue.get("running").copied().unwrap_or(0),
                    queue.get("failed").copied().unwrap_or(0)
                ),
                _ if !windowed => "not run yet".to_string(),
                _ => stream
                    .last_applied_hour
                    .clone()
                    .unwrap_or_else(|| "-".to_string()),
            });
            row.push(
                stream
                    .next_claimable_hour
                    .clone()
                    .unwrap_or_else(|| "-".to_string()),
            );
            row.push(match &stream.cooldown.until_utc {
                Some(until) => format!("{} until {until}", stream.cooldown.reason),
                None => "none".to_string(),
            });
            row.push(match &account.supervisor {
                Some(supervisor) if supervisor.restarts > 0 => {
                    format!("{} ({} restarts)", supervisor.state, supervisor.restarts)
                }
                Some(supervisor) => supervisor.state.clone(),
                None => "-".to_string(),
            });
            rows.push(row);
        }
    }
    // With `[cluster]`: which member runs each account, as the last column.
    let with_owner = report
        .accounts
        .iter()
        .any(|account| account.owner.is_some());
    let mut header = header.to_vec();
    if with_owner {
        header.push("OWNER");
        let owners = report.accounts.iter().flat_map(|account| {
            let owner = account.owner.clone().unwrap_or_else(|| "-".to_string());
            std::iter::repeat_n(owner, account.streams.len().max(1))
        });
        for (row, owner) in rows.iter_mut().zip(owners) {
            row.push(owner);
        }
    }
    let mut out = super::table::render(&header, rows, &[2, 3, 4, 5, 6]);
    let errors: Vec<String> = report
        .accounts
        .iter()
        .flat_map(|account| {
            account.streams.iter().filter_map(move |stream| {
                stream.last_error.as_ref().map(|error| {
                    format!(
                        "{}/{}: last error: {error} (retry at {})",
                        account.id,
                        stream.name,
                        stream.next_retry_at.as_deref().unwrap_or("-")
                    )
                })
            })
        })
        .collect();
    let mut errors = errors;
    for account in &report.accounts {
        for warning in &account.warnings {
            errors.push(format!("{}: warning: {warning}", account.id));
        }
        // A cooldown's text once per account and text (an account-wide cooldown shows
        // on every stream's row): for `auth`, what was refused and which scope is missing.
        let mut shown: Vec<&str> = Vec::new();
        for stream in &account.streams {
            let cooldown = &stream.cooldown;
            let (Some(detail), Some(until)) = (&cooldown.detail, &cooldown.until_utc) else {
                continue;
            };
            if let Some(scope) = &cooldown.scope {
                // One API: this stream's line, naming it.
                let api = crate::quota::api_of_scope(scope);
                errors.push(format!(
                    "{}/{}: {} cooldown of the {api} API until {until} (the account's other streams go on): {detail}",
                    account.id, stream.name, cooldown.reason
                ));
            } else if !shown.contains(&detail.as_str()) {
                shown.push(detail);
                errors.push(format!(
                    "{}: {} cooldown until {until}: {detail}",
                    account.id, cooldown.reason
                ));
            }
        }
        if let Some(supervisor) = &account.supervisor {
            if supervisor.state == "quarantined" || supervisor.state == "halted" {
                errors.push(format!(
                    "{}: actor {}{}: {} (resume with: marketsync accounts resume {})",
                    account.id,
                    supervisor.state,
                    supervisor
                        .quarantined_until
                        .as_ref()
                        .map(|until| format!(" until {until}"))
                        .unwrap_or_default(),
                    supervisor.reason.as_deref().unwrap_or("no reason recorded"),
                    account.id
                ));
            }
        }
    }
    if !errors.is_empty() {
        out.push('\n');
        for line in errors {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 11): `status --json` left zero counts out of `queue`; README
    /// shows all five keys.
    #[test]
    fn job_queue_status_names_every_state_even_at_zero() {
        let config = crate::config::Config::parse(
            r#"
data_dir = "/nonexistent"
[simulator]
enabled = true
[[accounts]]
id = "market"
provider = "stockx"
[accounts.streams.market_data]
"#,
            "t.toml",
        )
        .unwrap()
        .deployment();
        let ledger = crate::store::SqliteLedger::open_in_memory().unwrap();
        let report = collect(&config, &ledger, &[], &[], 1_764_756_000).unwrap();
        let queue = report.accounts[0].streams[0].queue.clone().unwrap();
        let keys: Vec<&str> = queue.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            vec!["failed", "not_found", "pending", "running", "succeeded"]
        );
        assert!(queue.values().all(|count| *count == 0), "{queue:?}");
    }

    #[test]
    fn table_has_a_column_for_every_cell_including_the_actor() {
        let report = StatusReport {
            accounts: vec![AccountStatus {
                id: "acme".to_string(),
                provider: crate::domain::Provider::Amazon,
                owner: None,
                supervisor: Some(SupervisorStatus {
                    state: "running".to_string(),
                    restarts: 2,
                    last_crash: None,
                    quarantined_until: None,
                    reason: None,
                }),
                streams: vec![StreamStatus {
                    name: "vendor_rt_sales".to_string(),
                    shape: "windowed",
                    cursor: None,
                    queue: None,
                    counts: HourState::ALL
                        .iter()
                        .map(|state| (state.as_str(), 1))
                        .collect(),
                    last_applied_hour: None,
                    next_claimable_hour: None,
                    next_retry_at: None,
                    last_error: None,
                    cooldown: CooldownStatus {
                        reason: "none".to_string(),
                        until_utc: None,
                        detail: None,
                        scope: None,
                    },
                    lock: None,
                }],
                warnings: Vec::new(),
            }],
        };
        let table = render_table(&report);
        let mut lines = table.lines();
        let header = lines.next().unwrap();
        assert!(header.ends_with("ACTOR"), "{header}");
        let row = lines.next().unwrap();
        assert!(row.ends_with("running (2 restarts)"), "{row}");

        // With `[cluster]`: the member that runs the account, as the last column.
        let mut clustered = report;
        clustered.accounts[0].owner = Some("web1".to_string());
        let table = render_table(&clustered);
        let mut lines = table.lines();
        let header = lines.next().unwrap();
        assert!(
            header.ends_with("ACTOR | OWNER") || header.ends_with("OWNER"),
            "{header}"
        );
        let row = lines.next().unwrap();
        assert!(row.ends_with("web1"), "{row}");
    }
}
