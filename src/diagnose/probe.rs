//! The doctor's probes, the only I/O in `diagnose`: the lease backend (TCP connect,
//! list), the providers' endpoints (TCP connect), then the report assembled from the
//! facts and printed.

use crate::domain::now_ts;
use crate::lock::{LockInfo, LockService};
use crate::shapes::spec::Endpoints;
use crate::store::SqliteLedger;
use anyhow::{bail, Context};
use std::collections::HashMap;
use std::time::Duration;

use super::*;

/// Below this much free space on the data dir's filesystem the doctor reports a full
/// disk: SQLite's WAL, the seeding and the downloaded documents need room to write.
pub const MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;

/// The error text SQLite gives for `SQLITE_FULL`.
pub const SQLITE_FULL_TEXT: &str = "database or disk is full";

/// Bytes an unprivileged writer may still use on the filesystem holding `path`
/// (`statvfs`: available blocks times the fragment size, saturating).
pub fn free_bytes(path: &std::path::Path) -> Result<u64, String> {
    let stats = rustix::fs::statvfs(path)
        .map_err(|err| format!("cannot read the free space of {}: {err}", path.display()))?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// The doctor's disk check of `data_dir`: less than `min_free` bytes left is a finding
/// that needs a person (status shows the write errors; doctor must not say all is well).
pub fn disk_findings(data_dir: &std::path::Path, min_free: u64) -> Vec<Finding> {
    if !data_dir.exists() {
        return Vec::new();
    }
    match free_bytes(data_dir) {
        Ok(free) if free < min_free => vec![Finding::new(
            Severity::Action,
            "disk",
            format!(
                "the filesystem of the data dir {} has {} free (less than {}): writes to the database fail with \"{SQLITE_FULL_TEXT}\" and syncing stops",
                data_dir.display(),
                mebibytes(free),
                mebibytes(min_free)
            ),
        )
        .fix(format!(
            "free space on the filesystem of {} (or move data_dir to a larger one); the daemon resumes by itself",
            data_dir.display()
        ))],
        Ok(_) => Vec::new(),
        Err(message) => vec![Finding::new(Severity::Info, "disk", message)],
    }
}

/// `bytes` as MiB with one decimal, for messages.
fn mebibytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A write that failed because the disk was full, as the facts recorded it (a failed
/// unit's error, an account actor's crash): `(where, error)`.
pub fn disk_full_errors(accounts: &[AccountFacts]) -> Option<(String, String)> {
    for account in accounts {
        if let Some(supervisor) = &account.supervisor {
            let crash = supervisor
                .last_crash
                .as_ref()
                .map(|crash| crash.reason.as_str());
            for text in [crash, supervisor.reason.as_deref()].into_iter().flatten() {
                if text.contains(SQLITE_FULL_TEXT) {
                    return Some((account.id.clone(), text.to_string()));
                }
            }
        }
        for stream in &account.streams {
            let error = stream
                .failed
                .as_ref()
                .and_then(|failed| failed.last_error.as_deref());
            if let Some(text) = error.filter(|text| text.contains(SQLITE_FULL_TEXT)) {
                return Some((stream.scope(), text.to_string()));
            }
        }
    }
    None
}

/// What the lease backend answered.
#[derive(Debug, Default)]
pub struct LockProbe {
    pub locks: Vec<LockInfo>,
    /// Scope -> acquired_at (epoch ms), when the backend stores it.
    pub acquired_at_ms: HashMap<String, i64>,
    pub findings: Vec<Finding>,
}

/// With `[store] url_env`: whether PostgreSQL answers within [`CONNECT_TIMEOUT`] and its
/// schema is the one this binary knows. Nothing is changed (the daemon migrates at start).
pub async fn probe_store(config: &Deployment) -> Vec<Finding> {
    let Some(store) = config.store.clone() else {
        return Vec::new();
    };
    let known = crate::store::postgres::known_schema_version();
    let url = store.url.clone();
    let probed = tokio::task::spawn_blocking(move || {
        crate::store::postgres::probe_schema(&url, CONNECT_TIMEOUT)
    })
    .await;
    let shown = store.url.to_string();
    let finding = match probed {
        Ok(Ok(version)) if version == known => Finding::new(
            Severity::Info,
            "postgresql",
            format!("{shown} reachable, schema version {version} (current)"),
        ),
        Ok(Ok(version)) if version < known => Finding::new(
            Severity::Action,
            "postgresql",
            format!(
                "{shown} has schema version {version}, this marketsync needs {known}: the hour ledger cannot be used until it is migrated"
            ),
        )
        .fix("start the daemon once (it migrates the database at start), or run `marketsync store copy` into it"),
        Ok(Ok(version)) => Finding::new(
            Severity::Action,
            "postgresql",
            format!(
                "{shown} has schema version {version}, newer than the {known} this marketsync knows"
            ),
        )
        .fix("upgrade marketsync on this host (or point [store] url_env at another database)"),
        Ok(Err(err)) => Finding::new(
            Severity::Action,
            "postgresql",
            format!("{err}"),
        )
        .fix(format!(
            "start PostgreSQL (or correct the url in {}); the daemon cannot read or write the hour ledger without it",
            store.url_env
        )),
        Err(err) => Finding::new(
            Severity::Action,
            "postgresql",
            format!("the postgresql probe failed: {err}"),
        ),
    };
    vec![finding]
}

/// Lists the leases and when they were acquired; a Redis that does not answer a TCP
/// connect within [`CONNECT_TIMEOUT`] is a finding (and the list is empty).
pub async fn probe_locks(config: &Deployment) -> LockProbe {
    let mut probe = LockProbe::default();
    match &config.redis {
        Some(redis) => {
            let url = match redis.url.resolve() {
                Ok(url) => url,
                Err(message) => {
                    probe.findings.push(
                        Finding::new(Severity::Action, "redis", message)
                            .fix("export the variable named by redis.url_env"),
                    );
                    return probe;
                }
            };
            let Some((host, port)) = host_port(&url, 6379) else {
                probe.findings.push(Finding::new(
                    Severity::Action,
                    "redis",
                    "redis.url cannot be parsed; use the form redis://HOST:PORT/",
                ));
                return probe;
            };
            let address = format!("{host}:{port}");
            if let Err(err) = tcp_probe(&host, port).await {
                probe.findings.push(
                    Finding::new(
                        Severity::Action,
                        "redis",
                        format!(
                            "redis at {address} is unreachable ({err}): no stream can take its lease, nothing syncs"
                        ),
                    )
                    .fix(format!(
                        "start redis-server on {address} (or fix redis.url); leases resume by themselves"
                    )),
                );
                return probe;
            }
            let service = tokio::time::timeout(
                Duration::from_secs(5),
                LockService::redis(&url, &redis.prefix),
            )
            .await;
            let service = match service {
                Ok(Ok(service)) => service,
                Ok(Err(err)) => {
                    probe.findings.push(Finding::new(
                        Severity::Action,
                        "redis",
                        format!("redis at {address} refused the connection: {err}"),
                    ));
                    return probe;
                }
                Err(_) => {
                    probe.findings.push(Finding::new(
                        Severity::Action,
                        "redis",
                        format!(
                            "redis at {address} accepted a connection but did not answer within 5s"
                        ),
                    ));
                    return probe;
                }
            };
            list_into(&service, &mut probe, &address).await;
        }
        None => {
            let path = config.database_path();
            if !path.exists() {
                return probe;
            }
            match LockService::sqlite(&path).await {
                Ok(service) => list_into(&service, &mut probe, "the sqlite lease table").await,
                Err(err) => probe.findings.push(Finding::new(
                    Severity::Action,
                    "database",
                    format!("cannot open the lease table in {}: {err}", path.display()),
                )),
            }
        }
    }
    probe
}

pub(crate) async fn list_into(service: &LockService, probe: &mut LockProbe, what: &str) {
    match tokio::time::timeout(Duration::from_secs(5), service.list()).await {
        Ok(Ok(locks)) => {
            probe.acquired_at_ms = crate::domain::lease::acquired_at_by_scope(&locks);
            probe.locks = locks;
        }
        Ok(Err(err)) => probe.findings.push(Finding::new(
            Severity::Action,
            service.backend(),
            format!("cannot list leases from {what}: {err}"),
        )),
        Err(_) => probe.findings.push(Finding::new(
            Severity::Action,
            service.backend(),
            format!("listing leases from {what} took longer than 5s"),
        )),
    }
}

/// `(host, port)` of a URL; `default_port` when it names none and its scheme has none.
pub fn host_port(url: &str, default_port: u16) -> Option<(String, u16)> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed.host_str()?.trim_matches(['[', ']']).to_string();
    let port = parsed.port_or_known_default().unwrap_or(default_port);
    Some((host, port))
}

/// A TCP connect to `host:port` within [`CONNECT_TIMEOUT`] (name resolution included).
pub async fn tcp_probe(host: &str, port: u16) -> Result<(), String> {
    let connect = tokio::net::TcpStream::connect((host, port));
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(CONNECT_TIMEOUT)
        )),
    }
}

/// Connects once to every distinct endpoint of the selected accounts (and the embedded
/// simulator when it listens on a fixed port).
pub async fn probe_endpoints(
    config: &Deployment,
    only_account: Option<&str>,
    options: &DoctorOptions,
) -> Vec<Finding> {
    let cmd = command_prefix(config, options);
    let mut targets: Vec<(String, u16, Vec<String>, bool)> = Vec::new();
    let mut add = |host: String, port: u16, account: &str, embedded: bool| match targets
        .iter_mut()
        .find(|(h, p, _, _)| *h == host && *p == port)
    {
        Some((_, _, accounts, _)) => {
            if !accounts.iter().any(|known| known == account) {
                accounts.push(account.to_string());
            }
        }
        None => targets.push((host, port, vec![account.to_string()], embedded)),
    };
    let mut findings = Vec::new();
    for account in &config.accounts {
        if only_account.is_some_and(|only| only != account.id) {
            continue;
        }
        match &account.endpoints {
            Endpoints::Explicit {
                api_base,
                token_url,
            } => {
                for url in [api_base, token_url] {
                    if let Some((host, port)) = host_port(url, 443) {
                        add(host, port, &account.id, false);
                    }
                }
            }
            Endpoints::EmbeddedSimulator => match &config.simulator_listen {
                Some(listen) if listen.port() != 0 => {
                    add(listen.ip().to_string(), listen.port(), &account.id, true)
                }
                _ => findings.push(Finding::new(
                    Severity::Info,
                    account.id.clone(),
                    "uses the embedded simulator on a random port: not checked",
                )),
            },
        }
    }
    let probes = targets
        .iter()
        .map(|(host, port, _, _)| tcp_probe(host, *port));
    let results = futures_util::future::join_all(probes).await;
    for ((host, port, accounts, embedded), result) in targets.into_iter().zip(results) {
        let address = format!("{host}:{port}");
        let who = if accounts.len() > 3 {
            format!(
                "{} and {} more accounts",
                accounts[..3].join(", "),
                accounts.len() - 3
            )
        } else {
            accounts.join(", ")
        };
        match result {
            Ok(()) => findings.push(Finding::new(
                Severity::Ok,
                address,
                format!("reachable (used by {who})"),
            )),
            Err(err) if embedded => findings.push(
                Finding::new(
                    Severity::Action,
                    address,
                    format!(
                        "the embedded simulator does not answer ({err}): the daemon is not running (used by {who})"
                    ),
                )
                .fix(format!("{cmd} run")),
            ),
            Err(err) => findings.push(
                Finding::new(
                    Severity::Action,
                    address,
                    format!("endpoint unreachable ({err}); used by {who}"),
                )
                .fix("check the network and the accounts' endpoint/token_url (or region) in the configuration"),
            ),
        }
    }
    findings
}

/// One read of the cluster members from the configured Redis (`[cluster]` on): the
/// view, or why there is none. Bounded by the registry's call timeouts.
pub async fn read_cluster(
    config: &Deployment,
) -> (Option<crate::cluster::ClusterView>, Option<String>) {
    let (Some(cluster), Some(redis)) = (&config.cluster, &config.redis) else {
        return (None, None);
    };
    let url = match redis.url.resolve() {
        Ok(url) => url,
        Err(err) => return (None, Some(err)),
    };
    match crate::cluster::read_view(&url, &redis.prefix, &cluster.member_id).await {
        Ok(view) => (Some(view), None),
        Err(err) => (None, Some(err.to_string())),
    }
}

/// Everything `marketsync doctor` checks, as a report (async: probes run concurrently).
pub async fn diagnose(
    config: &Deployment,
    only_account: Option<&str>,
    only_stream: Option<&str>,
    options: &DoctorOptions,
) -> anyhow::Result<Report> {
    if let Some(id) = only_account {
        let Some(account) = config.account(id) else {
            let known: Vec<&str> = config.accounts.iter().map(|a| a.id.as_str()).collect();
            bail!(
                "unknown account {id:?}; configured accounts: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        };
        if let Some(name) = only_stream {
            if account.stream(name).is_none() {
                let known: Vec<&str> = account.streams.iter().map(|s| s.name.as_str()).collect();
                bail!(
                    "account {id} has no enabled stream {name:?}; enabled streams: {}",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                );
            }
        }
    }
    let (probe, endpoint_findings, store_findings) = tokio::join!(
        probe_locks(config),
        probe_endpoints(config, only_account, options),
        probe_store(config)
    );
    let mut all = probe.findings;
    all.extend(endpoint_findings);
    if config.cluster.is_some() {
        let (view, error) = read_cluster(config).await;
        let me = config
            .cluster
            .as_ref()
            .map(|cluster| cluster.member_id.clone())
            .unwrap_or_default();
        all.extend(super::cluster::findings(&super::cluster::report(
            config,
            &me,
            view.as_ref(),
            error,
        )));
    }
    let store_down = store_findings
        .iter()
        .any(|finding| finding.severity == Severity::Action);
    all.extend(store_findings);
    if store_down {
        // The hour ledger cannot be read: the streams' facts would be guesses.
        return Ok(Report::new(all));
    }
    let disk = disk_findings(&config.data_dir, MIN_FREE_BYTES);
    let disk_reported = disk
        .iter()
        .any(|finding| finding.severity == Severity::Action);
    all.extend(disk);
    let database = config.database_path();
    if !database.exists() {
        all.push(
            Finding::new(
                Severity::Action,
                "database",
                format!(
                    "no database at {}: the daemon never ran with this data_dir",
                    database.display()
                ),
            )
            .fix(format!("{} run", command_prefix(config, options))),
        );
        return Ok(Report::new(all));
    }
    let config_owned = config.clone();
    let only_account = only_account.map(str::to_string);
    let only_stream = only_stream.map(str::to_string);
    let options = options.clone();
    let locks = probe.locks;
    let acquired = probe.acquired_at_ms;
    let stream_findings = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Finding>> {
        let ledger = std::sync::Arc::new(
            SqliteLedger::open(&config_owned.database_path())
                .with_context(|| "opening the database")?,
        );
        let hours = crate::store::hour_ledger(config_owned.store.as_ref(), &ledger)
            .with_context(|| "opening the hour ledger")?;
        let supervision = hours.supervision_statuses()?;
        let now = now_ts();
        let facts = gather(
            &config_owned,
            hours.as_ref(),
            &locks,
            &acquired,
            &supervision,
            only_account.as_deref(),
            only_stream.as_deref(),
            now,
        )?;
        let mut found = findings(&config_owned, &facts, &options, now);
        if let Some((scope, error)) = disk_full_errors(&facts).filter(|_| !disk_reported) {
            found.push(
                Finding::new(
                    Severity::Action,
                    "disk",
                    format!("the last write of {scope} failed because the disk was full: {error}"),
                )
                .fix(format!(
                    "free space on the filesystem of {} (or move data_dir to a larger one); the daemon resumes by itself",
                    config_owned.data_dir.display()
                )),
            );
        }
        Ok(found)
    })
    .await
    .context("the doctor's database task failed")??;
    all.extend(stream_findings);
    Ok(Report::new(all))
}

/// `marketsync doctor`: prints one line per finding (or JSON) and returns the exit code.
pub fn run(
    config: &Deployment,
    only_account: Option<&str>,
    only_stream: Option<&str>,
    json: bool,
    options: &DoctorOptions,
) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(diagnose(config, only_account, only_stream, options))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(report.exit_code())
}
