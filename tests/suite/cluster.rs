//! Accounts spread over live daemons (issue 17, point 2): two real daemons (separate data
//! dirs, the same six Amazon accounts, one redis-server of the test's own) split the
//! accounts by rendezvous hashing; each talks to its own simulator, so every provider
//! call can be traced to the daemon that made it. SIGKILL of one hands its accounts to
//! the survivor within member_ttl + heartbeat + lease TTL; its restart takes its share
//! back, and the member that let them go makes no call for them after stopping them.
//! Also the member registry on a real Redis.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use marketsync::bench::redis_server::RedisServer;
use marketsync::cluster::{Membership, Registry};
use serde_json::Value;

use marketsync::sim::SimConfig;

use crate::common::{fast_sim, status_json, DaemonProcess, TestSim};

const ACCOUNTS: usize = 6;
const HEARTBEAT: Duration = Duration::from_secs(1);
const MEMBER_TTL: Duration = Duration::from_secs(3);
const LEASE_TTL: Duration = Duration::from_secs(3);

/// Rendezvous over {alpha, beta} (pinned by `rendezvous`'s fixed hash): three each.
fn expected_owner(account: &str) -> &'static str {
    match account {
        "vendor-1" | "vendor-2" | "vendor-5" => "alpha",
        _ => "beta",
    }
}

fn account_ids() -> Vec<String> {
    (0..ACCOUNTS)
        .map(|index| format!("vendor-{index}"))
        .collect()
}

/// The seller the simulator records for an account: its refresh token.
fn seller(account: &str) -> String {
    format!("seller-{account}")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

struct Member {
    name: &'static str,
    sim: Arc<TestSim>,
    config_path: PathBuf,
    http_port: u16,
    _dir: Option<tempfile::TempDir>,
}

impl Member {
    /// A member with its own data dir and its own simulator.
    async fn new(name: &'static str, redis_url: &str) -> Member {
        Member::with_extra(name, redis_url, "").await
    }

    /// [`Member::new`] with the tables of `extra` appended to its configuration.
    async fn with_extra(name: &'static str, redis_url: &str, extra: &str) -> Member {
        let sim = Arc::new(TestSim::start(fast_sim()).await);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut member = Member::sharing(name, redis_url, sim, dir.path());
        let text = std::fs::read_to_string(&member.config_path).expect("config");
        std::fs::write(&member.config_path, format!("{text}\n{extra}")).expect("config");
        member._dir = Some(dir);
        member
    }

    /// A member whose data dir (its SQLite ledger) and simulator are `data_dir` and `sim`,
    /// possibly shared with other members.
    fn sharing(name: &'static str, redis_url: &str, sim: Arc<TestSim>, data_dir: &Path) -> Member {
        let http_port = free_port();
        let mut text = format!(
            r#"
data_dir = "{data}"
[redis]
url = "{redis_url}"
[locks]
ttl = "{lease}s"
[cluster]
enabled = true
member_id = "{name}"
heartbeat = "{heartbeat}s"
member_ttl = "{ttl}s"
[supervisor]
heartbeat = "1s"
[http]
listen = "127.0.0.1:{http_port}"
"#,
            data = data_dir.display(),
            lease = LEASE_TTL.as_secs(),
            heartbeat = HEARTBEAT.as_secs(),
            ttl = MEMBER_TTL.as_secs(),
        );
        for account in account_ids() {
            text.push_str(&format!(
                r#"
[[accounts]]
id = "{account}"
provider = "amazon"
marketplace = "ATVPDKIKX0DER"
endpoint = "{base}"
token_url = "{base}/auth/o2/token"
[accounts.credentials]
client_id_env = "TEST_CLIENT_ID"
client_secret_env = "TEST_CLIENT_SECRET"
refresh_token_env = "REFRESH_{env}"
[accounts.streams.vendor_rt_sales]
lookback = "6h"
chunk = "1h"
interval = "2s"
poll_min = "10ms"
poll_max = "50ms"
safety_lag = "0s"
daily_audit = false
"#,
                base = sim.base_url(),
                env = account.replace('-', "_").to_uppercase(),
            ));
        }
        let config_path = data_dir.join(format!("{name}.toml"));
        std::fs::write(&config_path, text).expect("write config");
        Member {
            name,
            sim,
            config_path,
            http_port,
            _dir: None,
        }
    }

    fn spawn(&self) -> DaemonProcess {
        let env: Vec<(String, String)> = account_ids()
            .iter()
            .map(|account| {
                (
                    format!("REFRESH_{}", account.replace('-', "_").to_uppercase()),
                    seller(account),
                )
            })
            .collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        DaemonProcess::spawn_with_env(&self.config_path, &env)
    }

    /// Reports created at this member's simulator, per seller.
    fn reports_by_seller(&self) -> BTreeMap<String, usize> {
        reports_by_seller(&self.sim)
    }

    fn sellers_seen(&self) -> BTreeSet<String> {
        self.reports_by_seller().into_keys().collect()
    }

    async fn get(&self, client: &reqwest::Client, path: &str) -> Option<Value> {
        let response = client
            .get(format!("http://127.0.0.1:{}{path}", self.http_port))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    /// `GET /api/cluster`: member id -> accounts owned, and the unowned accounts.
    async fn cluster(&self, client: &reqwest::Client) -> Option<(BTreeMap<String, u64>, usize)> {
        let report = self.get(client, "/api/cluster").await?;
        let members = report["members"]
            .as_array()?
            .iter()
            .filter_map(|member| {
                Some((
                    member["id"].as_str()?.to_string(),
                    member["accounts_owned"].as_u64()?,
                ))
            })
            .collect();
        Some((members, report["unowned"].as_array()?.len()))
    }

    /// `GET /api/status`: account -> (owner, supervisor state, supervisor reason).
    async fn accounts(
        &self,
        client: &reqwest::Client,
    ) -> Option<BTreeMap<String, (String, String, String)>> {
        let status = self.get(client, "/api/status").await?;
        Some(
            status["accounts"]
                .as_array()?
                .iter()
                .filter_map(|account| {
                    Some((
                        account["id"].as_str()?.to_string(),
                        (
                            account["owner"].as_str()?.to_string(),
                            account["supervisor"]["state"]
                                .as_str()
                                .unwrap_or("-")
                                .to_string(),
                            account["supervisor"]["reason"]
                                .as_str()
                                .unwrap_or("")
                                .to_string(),
                        ),
                    ))
                })
                .collect(),
        )
    }
}

/// Reports created at `sim`, per seller.
fn reports_by_seller(sim: &TestSim) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for report in sim.sim.report_timeline() {
        *counts.entry(report.seller).or_insert(0) += 1;
    }
    counts
}

fn owned_by(name: &str) -> BTreeSet<String> {
    account_ids()
        .into_iter()
        .filter(|account| expected_owner(account) == name)
        .collect()
}

fn sellers_of(accounts: &BTreeSet<String>) -> BTreeSet<String> {
    accounts.iter().map(|account| seller(account)).collect()
}

/// Registers alpha and beta a moment before either daemon starts (as if each had started
/// just before the other), so each one's first view already splits the accounts: a
/// daemon alone runs every account, and would call for the other's until it joined. Each
/// daemon's own heartbeats replace these registrations' 30 s expiry with its own.
async fn register_both(redis_url: &str) -> Registry {
    let registry = Registry::connect(redis_url, "marketsync:").await.unwrap();
    for name in ["alpha", "beta"] {
        registry
            .heartbeat(name, Duration::from_secs(30))
            .await
            .unwrap();
    }
    registry
}

/// Polls the async `check` every 50 ms until it holds or `deadline` passes.
async fn eventually<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_split_the_accounts_and_the_survivor_takes_over_a_killed_ones() {
    let redis = RedisServer::start().expect("redis-server");
    let alpha = Member::new("alpha", &redis.url()).await;
    let beta = Member::new("beta", &redis.url()).await;
    let client = reqwest::Client::new();
    let registry = register_both(&redis.url()).await;
    let mut alpha_daemon = alpha.spawn();
    let mut beta_daemon = beta.spawn();
    let (alpha_share, beta_share) = (owned_by("alpha"), owned_by("beta"));
    assert_eq!((alpha_share.len(), beta_share.len()), (3, 3));

    // Both members live, three accounts each, each member's simulator called by its own
    // accounts (all of them) and no other.
    let split = eventually(Duration::from_secs(60), || async {
        let both = [alpha.cluster(&client).await, beta.cluster(&client).await];
        let three_each = both.iter().all(|seen| {
            seen.as_ref().is_some_and(|(members, unowned)| {
                *unowned == 0 && members.get("alpha") == Some(&3) && members.get("beta") == Some(&3)
            })
        });
        three_each
            && alpha.sellers_seen() == sellers_of(&alpha_share)
            && beta.sellers_seen() == sellers_of(&beta_share)
    })
    .await;
    assert!(
        split,
        "no 3/3 split: alpha {:?} calls {:?}, beta {:?} calls {:?}\nalpha log:\n{}\nbeta log:\n{}",
        alpha.cluster(&client).await,
        alpha.sellers_seen(),
        beta.cluster(&client).await,
        beta.sellers_seen(),
        alpha_daemon.logs(),
        beta_daemon.logs()
    );
    // `status --json` (the CLI, reading Redis itself) names the same owners.
    for member in [&alpha, &beta] {
        let status = status_json(&member.config_path).expect("status --json");
        for account in status["accounts"].as_array().expect("accounts") {
            let id = account["id"].as_str().expect("id");
            assert_eq!(
                account["owner"].as_str(),
                Some(expected_owner(id)),
                "{} says {id} is run by {:?}",
                member.name,
                account["owner"]
            );
        }
    }
    // `doctor` reads the members from Redis and reports this member's share.
    let doctor = crate::common::marketsync()
        .arg("--config")
        .arg(&alpha.config_path)
        .arg("doctor")
        .output()
        .expect("doctor");
    let doctor = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        doctor
            .contains("2 live member(s) share 6 account(s): alpha (3 accounts), beta (3 accounts)")
            && doctor.contains("this member (alpha) runs 3 of 6 account(s)"),
        "{doctor}"
    );
    let metrics = client
        .get(format!("http://127.0.0.1:{}/metrics", alpha.http_port))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.contains("marketsync_member_info{member=\"alpha\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("marketsync_accounts_owned{member=")
                && line.ends_with(" 3")),
        "{metrics}"
    );

    // SIGKILL beta: no leave, its registration and leases lapse by themselves.
    beta_daemon.signal("KILL");
    let killed_at = Instant::now();
    let budget = MEMBER_TTL + HEARTBEAT * 2 + LEASE_TTL + Duration::from_secs(4);
    let taken_over = eventually(budget, || async {
        alpha.sellers_seen() == sellers_of(&account_ids().into_iter().collect())
    })
    .await;
    let failover = killed_at.elapsed();
    assert!(
        taken_over,
        "beta's accounts did not run on alpha within {budget:?}: alpha called by {:?}\nalpha log:\n{}",
        alpha.sellers_seen(),
        alpha_daemon.logs()
    );
    println!(
        "failover: SIGKILL to every account of the killed member calling from the survivor in {:.2}s (member_ttl {}s, heartbeat {}s, lease ttl {}s)",
        failover.as_secs_f64(),
        MEMBER_TTL.as_secs(),
        HEARTBEAT.as_secs(),
        LEASE_TTL.as_secs()
    );
    let alone = alpha.cluster(&client).await;
    assert_eq!(
        alone,
        Some((BTreeMap::from([("alpha".to_string(), 6)]), 0)),
        "alpha alone runs all six"
    );
    let _ = beta_daemon.wait_exit(Duration::from_secs(5)).await;

    // Restart beta: it takes its three back; alpha stops them (a move, not a crash).
    let mut beta_again = beta.spawn();
    let restarted_at = Instant::now();
    let moved = eventually(Duration::from_secs(30), || async {
        let Some(seen) = alpha.accounts(&client).await else {
            return false;
        };
        beta_share.iter().all(|account| {
            seen.get(account).is_some_and(|(owner, state, reason)| {
                owner == "beta" && state == "stopped" && reason == "run by another member"
            })
        }) && alpha_share.iter().all(|account| {
            seen.get(account)
                .is_some_and(|(owner, state, _)| owner == "alpha" && state == "running")
        })
    })
    .await;
    assert!(
        moved,
        "alpha did not hand beta's accounts back: {:?}\nalpha log:\n{}\nbeta log:\n{}",
        alpha.accounts(&client).await,
        alpha_daemon.logs(),
        beta_again.logs()
    );
    println!(
        "rebalance: beta restarted, alpha stopped its three accounts {:.2}s later",
        restarted_at.elapsed().as_secs_f64()
    );
    // From here on alpha must not call for beta's accounts: it stopped them.
    let alpha_calls_at_handover = alpha.reports_by_seller();
    let rebalanced = eventually(Duration::from_secs(30), || async {
        let Some(seen) = beta.accounts(&client).await else {
            return false;
        };
        let beta_runs_its_share = beta_share.iter().all(|account| {
            seen.get(account)
                .is_some_and(|(owner, state, _)| owner == "beta" && state == "running")
        });
        beta_runs_its_share
            && beta
                .cluster(&client)
                .await
                .is_some_and(|(members, unowned)| {
                    unowned == 0
                        && members.get("alpha") == Some(&3)
                        && members.get("beta") == Some(&3)
                })
    })
    .await;
    assert!(
        rebalanced,
        "beta did not take its share back: {:?} {:?}\nbeta log:\n{}",
        beta.accounts(&client).await,
        beta.cluster(&client).await,
        beta_again.logs()
    );
    // Several run intervals (2 s) later, alpha still made no call for beta's accounts.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let alpha_calls_now = alpha.reports_by_seller();
    for account in &beta_share {
        let seller = seller(account);
        assert_eq!(
            alpha_calls_now.get(&seller),
            alpha_calls_at_handover.get(&seller),
            "alpha created reports for {account} after handing it to beta"
        );
    }
    let log = alpha_daemon.logs();
    assert!(
        !log.contains("account actor crashed"),
        "a move counted as a crash:\n{log}"
    );

    // A clean stop leaves the cluster at once: alpha sees beta gone without waiting for
    // its registration to lapse.
    let stopping_at = Instant::now();
    beta_again.signal("TERM");
    assert_eq!(
        beta_again.wait_exit_code(Duration::from_secs(30)).await,
        Some(0)
    );
    let members: Vec<String> = registry
        .read()
        .await
        .unwrap()
        .members
        .into_iter()
        .map(|member| member.id)
        .collect();
    assert_eq!(members, ["alpha"], "beta left on shutdown");
    println!(
        "clean stop: beta exited and left the member set {:.2}s after SIGTERM",
        stopping_at.elapsed().as_secs_f64()
    );
    alpha_daemon.signal("TERM");
    assert_eq!(
        alpha_daemon.wait_exit_code(Duration::from_secs(30)).await,
        Some(0)
    );
    drop(redis);
}

/// Hours of every account's stream per state, from `status --json` (a shared ledger).
fn hour_counts(config_path: &Path) -> BTreeMap<String, BTreeMap<String, u64>> {
    let Some(status) = status_json(config_path) else {
        return BTreeMap::new();
    };
    status["accounts"]
        .as_array()
        .map(|accounts| {
            accounts
                .iter()
                .filter_map(|account| {
                    let counts = account["streams"][0]["counts"].as_object()?;
                    Some((
                        account["id"].as_str()?.to_string(),
                        counts
                            .iter()
                            .map(|(state, count)| (state.clone(), count.as_u64().unwrap_or(0)))
                            .collect(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// With a shared ledger (two daemons on one SQLite file, one host), the accounts of a
/// member killed while its reports were being processed are resumed by reportId on the
/// survivor: every hour ends APPLIED and the simulator saw no report requested twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_members_reports_in_flight_resume_by_report_id_on_the_survivor() {
    let redis = RedisServer::start().expect("redis-server");
    // Reports take 3 s: the kill lands while beta's are still being processed.
    let sim = Arc::new(
        TestSim::start(SimConfig {
            processing_latency: Duration::from_secs(3),
            ..SimConfig::default()
        })
        .await,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let alpha = Member::sharing("alpha", &redis.url(), Arc::clone(&sim), dir.path());
    let beta = Member::sharing("beta", &redis.url(), Arc::clone(&sim), dir.path());
    register_both(&redis.url()).await;
    let alpha_daemon = alpha.spawn();
    let beta_daemon = beta.spawn();
    let beta_sellers = sellers_of(&owned_by("beta"));
    let in_flight = eventually(Duration::from_secs(60), || async {
        beta_sellers.is_subset(&reports_by_seller(&sim).into_keys().collect())
    })
    .await;
    assert!(
        in_flight,
        "beta requested no reports for its accounts: {:?}\nbeta log:\n{}",
        reports_by_seller(&sim),
        beta_daemon.logs()
    );
    let beta_reports_before = sim
        .sim
        .report_timeline()
        .iter()
        .filter(|report| beta_sellers.contains(&report.seller))
        .count();
    beta_daemon.signal("KILL");
    let killed_at = Instant::now();

    let all_applied = eventually(Duration::from_secs(90), || async {
        let counts = hour_counts(&alpha.config_path);
        counts.len() == ACCOUNTS
            && counts.values().all(|states| {
                states.get("APPLIED").copied().unwrap_or(0) >= 6
                    && ["MISSING", "REQUESTED", "DOWNLOADED", "FAILED"]
                        .iter()
                        .all(|state| states.get(*state).copied().unwrap_or(0) == 0)
            })
    })
    .await;
    assert!(
        all_applied,
        "not every hour applied after the takeover: {:?}\nalpha log:\n{}",
        hour_counts(&alpha.config_path),
        alpha_daemon.logs()
    );
    println!(
        "shared ledger: every hour of all six accounts applied {:.2}s after SIGKILL of beta ({beta_reports_before} of beta's reports created before it)",
        killed_at.elapsed().as_secs_f64()
    );
    let stats = sim.stats();
    assert_eq!(
        stats.duplicate_create_reports, 0,
        "a report was requested again for a window already in flight"
    );
    // Every window was requested once, by whoever ran its account.
    let timeline = sim.sim.report_timeline();
    let windows: BTreeSet<(String, i64, i64)> = timeline
        .iter()
        .map(|report| (report.seller.clone(), report.start, report.end))
        .collect();
    assert_eq!(
        windows.len(),
        timeline.len(),
        "a window was requested twice"
    );
    let log = alpha_daemon.logs();
    let resumed_beta = log.lines().any(|line| {
        line.contains("resuming units in flight")
            && owned_by("beta")
                .iter()
                .any(|account| line.contains(&format!("account{{account={account}}}")))
    });
    assert!(
        resumed_beta,
        "alpha resumed none of beta's reports in flight:\n{log}"
    );
    drop(beta_daemon);
    drop(alpha_daemon);
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_keeps_members_by_redis_time_and_drops_lapsed_ones() {
    let redis = RedisServer::start().expect("redis-server");
    let registry = Registry::connect(&redis.url(), "test:").await.unwrap();
    let first = registry
        .heartbeat("a", Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(first.members.len(), 1);
    let member = &first.members[0];
    assert_eq!(member.id, "a");
    assert_eq!(member.last_heartbeat_ms, Some(first.redis_now_ms));
    assert_eq!(member.expires_at_ms, first.redis_now_ms + 2_000);

    let both = registry
        .heartbeat("b", Duration::from_secs(30))
        .await
        .unwrap();
    let ids: Vec<&str> = both.members.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);

    // `a` stops renewing: gone once its TTL passed by Redis' clock.
    let gone = wait_for(&registry, |snapshot| {
        snapshot
            .members
            .iter()
            .map(|m| m.id.as_str())
            .collect::<Vec<_>>()
            == ["b"]
    })
    .await;
    assert!(gone, "a lapsed member stays listed");
    // The next heartbeat removes it from the keys too.
    registry
        .heartbeat("b", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(registry.leave("b").await.unwrap());
    assert!(
        !registry.leave("b").await.unwrap(),
        "leaving twice is a no-op"
    );
    assert!(registry.read().await.unwrap().members.is_empty());

    // A membership publishes its view and the feed follows it.
    let membership = Membership::new(
        registry.clone(),
        marketsync::cluster::ClusterSettings {
            member_id: "solo".to_string(),
            heartbeat: Duration::from_secs(1),
            member_ttl: Duration::from_secs(3),
        },
    );
    let feed = membership.feed();
    let configured: Vec<String> = account_ids();
    assert!(feed.owned(&configured).is_empty(), "no heartbeat yet");
    assert!(
        membership.beat().await.unwrap(),
        "the first view is a change"
    );
    assert_eq!(feed.owned(&configured).len(), ACCOUNTS, "alone it runs all");
    assert!(!membership.beat().await.unwrap(), "same members: no change");
    drop(redis);
}

async fn wait_for(
    registry: &Registry,
    check: impl Fn(&marketsync::cluster::Snapshot) -> bool,
) -> bool {
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(snapshot) = registry.read().await {
            if check(&snapshot) {
                return true;
            }
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Quarantines hold across a move (issue 17, point 2): with the supervision rows in the
/// shared PostgreSQL store, an account quarantined on one member stays quarantined when
/// another member takes it over: the new owner does not start it (no call for it at its
/// simulator) while it runs the other moved accounts, and shows the old owner's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantine_holds_when_its_account_moves_to_another_member() {
    let redis = RedisServer::start().expect("redis-server");
    let db = tokio::task::spawn_blocking(marketsync::store::postgres::testing::TestDb::create)
        .await
        .expect("test database");
    let var = "MARKETSYNC_TEST_CLUSTER_DB";
    let store = format!("[store]\nurl_env = \"{var}\"\n");
    let poison = "vendor-1";
    // The poison account panics on every unit on alpha only: were beta to run it, it
    // would sync it without trouble, and its simulator would see the calls.
    let alpha = Member::with_extra(
        "alpha",
        &redis.url(),
        &format!(
            "{store}[chaos]\nenabled = true\naccount = \"{poison}\"\naction = \"panic\"\nevery_unit = true\n"
        ),
    )
    .await;
    let beta = Member::with_extra("beta", &redis.url(), &store).await;
    for member in [&alpha, &beta] {
        let text = std::fs::read_to_string(&member.config_path).expect("config");
        let text = text.replace(
            "[supervisor]\nheartbeat = \"1s\"",
            "[supervisor]\nheartbeat = \"1s\"\nmin_backoff = \"50ms\"\nmax_backoff = \"100ms\"\nmax_crashes = 2\ncrash_window = \"1m\"\nprobe_after = \"1h\"",
        );
        assert!(text.contains("max_crashes = 2"), "{text}");
        std::fs::write(&member.config_path, text).expect("config");
    }
    let client = reqwest::Client::new();
    let spawn = |member: &Member| {
        let mut env: Vec<(String, String)> = account_ids()
            .iter()
            .map(|account| {
                (
                    format!("REFRESH_{}", account.replace('-', "_").to_uppercase()),
                    seller(account),
                )
            })
            .collect();
        env.push((var.to_string(), db.url.clone()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        DaemonProcess::spawn_with_env(&member.config_path, &env)
    };

    // Alpha alone owns every account; the poison one crashes past max_crashes.
    let mut alpha_daemon = spawn(&alpha);
    let quarantined = eventually(Duration::from_secs(60), || async {
        alpha.accounts(&client).await.is_some_and(|accounts| {
            accounts
                .get(poison)
                .is_some_and(|(owner, state, _)| owner == "alpha" && state == "quarantined")
        })
    })
    .await;
    assert!(
        quarantined,
        "alpha quarantined {poison}: {:?}\n{}",
        alpha.accounts(&client).await,
        alpha_daemon.logs()
    );
    assert!(
        !alpha.sellers_seen().contains(&seller(poison)),
        "the poison account panics before its first call"
    );

    // Alpha dies; beta joins and takes every account over.
    alpha_daemon.signal("KILL");
    alpha_daemon.wait_exit(Duration::from_secs(10)).await;
    let beta_daemon = spawn(&beta);
    let others: BTreeSet<String> = account_ids()
        .into_iter()
        .filter(|account| account != poison)
        .collect();
    let taken = eventually(
        MEMBER_TTL + HEARTBEAT * 2 + LEASE_TTL + Duration::from_secs(30),
        || async {
            beta.accounts(&client).await.is_some_and(|accounts| {
                accounts.len() == ACCOUNTS
                    && accounts.values().all(|(owner, _, _)| owner == "beta")
                    && others
                        .iter()
                        .all(|account| accounts[account].1 == "running")
            })
        },
    )
    .await;
    assert!(
        taken,
        "beta runs every account: {:?}\n{}",
        beta.accounts(&client).await,
        beta_daemon.logs()
    );
    let accounts = beta.accounts(&client).await.expect("status");
    let (_, state, reason) = &accounts[poison];
    assert_eq!(state, "quarantined", "{accounts:?}");
    assert!(
        reason.contains("panic") || reason.contains("chaos"),
        "{reason}"
    );
    // Beta's share of the work goes on (a pass of every other account), and in all that
    // time it never starts the quarantined one: its simulator sees no call for it.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(6) {
        assert!(
            !beta.sellers_seen().contains(&seller(poison)),
            "beta ran the quarantined {poison}\n{}",
            beta_daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let state: String = tokio::task::spawn_blocking(move || {
        let mut client = db.client();
        let state: String = client
            .query_one(
                "SELECT state FROM account_supervision WHERE account = $1",
                &[&poison],
            )
            .expect("supervision row")
            .get(0);
        drop(client);
        drop(db);
        state
    })
    .await
    .expect("query");
    assert_eq!(state, "quarantined");
}
