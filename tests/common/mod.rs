//! Shared test fixtures: a simulator over real HTTP, a real SQLite file in a temp dir,
//! and stream contexts wired to both; [`netns`] runs daemons as hosts in network
//! namespaces.

pub mod netns;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use marketsync::config::Config;
use marketsync::provider::amazon::{LwaCredentials, SpApiClient, SpApiEndpoints};
use marketsync::shapes::StreamContext;
use marketsync::sim::{SimConfig, SimStats, Simulator};
use marketsync::store::{LedgerStore, SqliteLedger};
use tokio_util::sync::CancellationToken;

/// A simulator listening on a free loopback port; stopped when dropped.
pub struct TestSim {
    pub addr: SocketAddr,
    pub sim: Arc<Simulator>,
    stop: CancellationToken,
}

impl TestSim {
    pub async fn start(config: SimConfig) -> TestSim {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let sim = Simulator::new(config);
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let served = Arc::clone(&sim);
        tokio::spawn(async move {
            let _ =
                marketsync::sim::serve(listener, served, async move { stopped.cancelled().await })
                    .await;
        });
        TestSim { addr, sim, stop }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> SimStats {
        self.sim.stats()
    }
}

impl Drop for TestSim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The client id and secret the eBay tests send (the simulator takes any).
pub const EBAY_TEST_CLIENT: (&str, &str) = ("test-client", "test-secret");

/// The eBay simulator's token call, `POST {base}/identity/v1/oauth2/token` with HTTP Basic
/// `client` (id, secret) and `grant` as the form: its JSON answer (`access_token`,
/// `token_type`, ...). Every eBay test mints its tokens here.
pub async fn ebay_token_answer(
    base: &str,
    client: (&str, &str),
    grant: &[(&str, &str)],
) -> serde_json::Value {
    reqwest::Client::new()
        .post(format!("{base}/identity/v1/oauth2/token"))
        .basic_auth(client.0, Some(client.1))
        .form(grant)
        .send()
        .await
        .expect("token call")
        .json()
        .await
        .expect("token json")
}

/// The access token of [`ebay_token_answer`].
pub async fn ebay_token(base: &str, client: (&str, &str), grant: &[(&str, &str)]) -> String {
    let answer = ebay_token_answer(base, client, grant).await;
    answer["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token in {answer}"))
        .to_string()
}

/// A seller's user access token: the refresh-token grant with `seller` as the refresh
/// token (the simulator's convention: a token it did not issue is the seller's name, with
/// every scope), narrowed to `scope` when one is given.
pub async fn ebay_user_token(base: &str, seller: &str, scope: Option<&str>) -> String {
    let mut grant = vec![("grant_type", "refresh_token"), ("refresh_token", seller)];
    if let Some(scope) = scope {
        grant.push(("scope", scope));
    }
    ebay_token(base, EBAY_TEST_CLIENT, &grant).await
}

/// A simulator config whose reports finish immediately.
pub fn fast_sim() -> SimConfig {
    SimConfig {
        processing_latency: Duration::ZERO,
        ..SimConfig::default()
    }
}

/// A data directory plus the configuration text pointing one account at `sim`.
pub struct Fixture {
    /// Held so the directory lives as long as the fixture.
    _dir: tempfile::TempDir,
    pub config: Config,
    /// The configuration written to disk, for tests that run the binary.
    pub config_path: PathBuf,
}

impl Fixture {
    /// One amazon account `acct` on marketplace ATVPDKIKX0DER with `stream_extra` lines
    /// appended to its vendor_rt_sales table.
    pub fn new(sim: &TestSim, stream_extra: &str) -> Fixture {
        Fixture::with_globals(sim, "", stream_extra)
    }

    /// Like [`Fixture::new`], with `globals` (e.g. `[redis]` and `[locks]` tables) before
    /// the account.
    pub fn with_globals(sim: &TestSim, globals: &str, stream_extra: &str) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!(
            r#"
data_dir = "{data}"
{globals}

[[accounts]]
id = "acct"
provider = "amazon"
marketplace = "ATVPDKIKX0DER"
endpoint = "{base}"
token_url = "{base}/auth/o2/token"

[accounts.credentials]
client_id_env = "TEST_CLIENT_ID"
client_secret_env = "TEST_CLIENT_SECRET"
refresh_token_env = "TEST_REFRESH_TOKEN"

[accounts.streams.vendor_rt_sales]
{defaults}
{stream_extra}
"#,
            data = dir.path().display(),
            base = sim.base_url(),
            defaults = [
                ("poll_min", "\"10ms\""),
                ("poll_max", "\"50ms\""),
                ("safety_lag", "\"0s\"")
            ]
            .iter()
            .filter(|(key, _)| !stream_extra.contains(&format!("{key} =")))
            .map(|(key, value)| format!("{key} = {value}\n"))
            .collect::<String>(),
        );
        let config = Config::parse(&text, "test.toml").expect("valid test config");
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, &text).expect("write config");
        Fixture {
            _dir: dir,
            config,
            config_path,
        }
    }

    pub fn database_path(&self) -> PathBuf {
        self.config.database_path()
    }

    /// Opens the ledger, as a (re)started daemon would.
    pub fn open_ledger(&self) -> Arc<SqliteLedger> {
        Arc::new(SqliteLedger::open(&self.database_path()).expect("open ledger"))
    }

    /// A stream context for the fixture's only stream, as a (re)started daemon builds it.
    pub fn context(&self, ledger: &Arc<SqliteLedger>, cancel: CancellationToken) -> StreamContext {
        let account = self.config.accounts[0].clone();
        let stream = account.streams[0].clone();
        let marketsync::config::Endpoints::Explicit {
            api_base,
            token_url,
        } = account.endpoints.clone()
        else {
            panic!("test accounts use explicit endpoints");
        };
        let client = SpApiClient::new(
            reqwest::Client::new(),
            SpApiEndpoints {
                api_base,
                lwa_token_url: token_url,
            },
            LwaCredentials {
                client_id: "test-client".to_string(),
                client_secret: "test-secret".to_string(),
                refresh_token: "test-refresh-acct".to_string(),
            },
        );
        let dyn_ledger: Arc<dyn LedgerStore> = ledger.clone();
        StreamContext {
            account: Arc::new(account),
            stream,
            ledger: dyn_ledger,
            work: marketsync::shapes::StreamWork::reports(Arc::new(client)),
            documents_dir: self.config.data_dir.join("documents"),
            owner: "test:1@localhost".to_string(),
            // Tests stop a context as a crash would: at once, mid-unit.
            abort: cancel.clone(),
            cancel,
            progress: None,
            chaos: None,
            metrics: Default::default(),
            permits: Default::default(),
            polls: None,
            lease_deadline: None,
        }
    }
}

/// Polls `check` every 20 ms until it returns true or `deadline` passes.
pub async fn wait_until(deadline: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every (hour, asin, units, revenue) row in vendor_realtime_sales for `account`.
pub fn sales_rows(ledger: &SqliteLedger, account: &str) -> Vec<(i64, String, i64, f64)> {
    ledger.with_conn(|conn| {
        let mut statement = conn
            .prepare(
                "SELECT hour_utc, asin, ordered_units, ordered_revenue FROM vendor_realtime_sales
                 WHERE account = ?1 ORDER BY hour_utc, asin",
            )
            .expect("prepare");
        statement
            .query_map([account], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .expect("query")
            .collect::<Result<Vec<_>, _>>()
            .expect("rows")
    })
}

/// Count of ledger hours per state for the fixture's stream, in HourState::ALL order.
pub fn counts(ledger: &SqliteLedger) -> [u64; 5] {
    ledger
        .snapshot("acct", "vendor_rt_sales", marketsync::domain::now_ts())
        .expect("snapshot")
        .counts
}

/// The real binary with the test credentials in its environment (never in the file).
pub fn marketsync() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_marketsync"));
    with_test_env(&mut command);
    command
}

/// The environment [`marketsync`] gives the binary, for commands that run it through a
/// wrapper (`ip netns exec NAME marketsync ...`).
pub fn with_test_env(command: &mut std::process::Command) {
    command
        .env_remove("MARKETSYNC_CONFIG")
        .env("RUST_LOG", "marketsync=info")
        .env("TEST_CLIENT_ID", "test-client")
        .env("TEST_CLIENT_SECRET", "test-secret-value")
        .env("TEST_REFRESH_TOKEN", "test-refresh-acct");
}

/// A daemon process (`marketsync run`) whose log goes to a file, read with [`Daemon::logs`].
pub struct DaemonProcess {
    pub child: std::process::Child,
    log_path: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl DaemonProcess {
    pub fn spawn(config_path: &std::path::Path) -> DaemonProcess {
        DaemonProcess::spawn_with_env(config_path, &[])
    }

    /// Like [`DaemonProcess::spawn`], with extra environment variables (credentials).
    pub fn spawn_with_env(config_path: &std::path::Path, env: &[(&str, &str)]) -> DaemonProcess {
        DaemonProcess::spawn_with(config_path, env, &[])
    }

    /// Like [`DaemonProcess::spawn_with_env`], with extra global options before `run`
    /// (`--log-format json`).
    pub fn spawn_with(
        config_path: &std::path::Path,
        env: &[(&str, &str)],
        global_args: &[&str],
    ) -> DaemonProcess {
        let mut command = marketsync();
        command
            .envs(env.iter().copied())
            .arg("--config")
            .arg(config_path)
            .args(global_args)
            .arg("run");
        DaemonProcess::spawn_command(command)
    }

    /// Spawns `command` (a `marketsync run`, possibly behind a wrapper that execs it, so
    /// the child's pid is the daemon's) with its stderr going to the log.
    pub fn spawn_command(mut command: std::process::Command) -> DaemonProcess {
        let log_dir = tempfile::tempdir().expect("tempdir");
        let log_path = log_dir.path().join("daemon.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = command
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn marketsync run");
        DaemonProcess {
            child,
            log_path,
            _log_dir: log_dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits up to `deadline` for the process to exit; returns how it ended.
    pub async fn wait_exit(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let child = &mut self.child;
        let mut ended = None;
        wait_until(deadline, || match child.try_wait() {
            Ok(Some(status)) => {
                ended = Some(status);
                true
            }
            _ => false,
        })
        .await;
        ended
    }

    /// Waits up to `deadline`; the exit code, `None` if still running or killed by a signal.
    pub async fn wait_exit_code(&mut self, deadline: Duration) -> Option<i32> {
        self.wait_exit(deadline)
            .await
            .and_then(|status| status.code())
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `marketsync status --json` for a configuration file.
pub fn status_json(config_path: &std::path::Path) -> Option<serde_json::Value> {
    let output = marketsync()
        .arg("--config")
        .arg(config_path)
        .args(["status", "--json"])
        .output()
        .ok()?;
    serde_json::from_slice(&output.stdout).ok()
}

/// APPLIED hours of the first stream of the first account, per `status --json`.
pub fn applied_hours(config_path: &std::path::Path) -> u64 {
    status_json(config_path)
        .and_then(|value| value["accounts"][0]["streams"][0]["counts"]["APPLIED"].as_u64())
        .unwrap_or(0)
}

/// Simulator faults: the `nth` call of `operation` gets `fault`.
pub fn schedule(
    operation: &str,
    nth: u64,
    fault: marketsync::sim::FaultKind,
) -> marketsync::sim::SimFaults {
    marketsync::sim::SimFaults {
        schedule: vec![marketsync::sim::ScheduledFault {
            operation: operation.to_string(),
            nth,
            fault,
        }],
        ..marketsync::sim::SimFaults::default()
    }
}
