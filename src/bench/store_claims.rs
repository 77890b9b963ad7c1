//! `marketsync bench store-claims`: how many claims per second the hour ledger sustains
//! when several daemons share it (issue 17: "claims/s the PostgreSQL store sustains with
//! 3 daemons").
//!
//! Each simulated daemon is its own [`PgLedger`] (its own connection pool) with its own
//! worker threads; the scopes are split between the daemons as the cluster's ownership
//! splits accounts (one claimer per scope, as under leases). Every claim goes through a
//! report's whole life in the ledger: claim (MISSING → REQUESTED), `set_report_id`,
//! `mark_downloaded` (→ DOWNLOADED), `apply_sales` with an empty document (→ APPLIED),
//! each its own fenced transaction, as a daemon makes them. The same work on one SQLite
//! file, in the same run, is the baseline the ratios are against.
//!
//! The PostgreSQL database is a fresh `ms_bench_<pid>` made on the server of `--url`
//! (default the local one) and dropped afterwards.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::ClaimOrder;
use crate::domain::{HourWindow, HOUR};
use crate::store::postgres::{redact_url, PgLedger, PgSettings};
use crate::store::{LedgerStore, SqliteLedger, WriteFence};

const STREAM: &str = "vendor_rt_sales";

#[derive(Debug, clap::Args)]
pub struct BenchStoreClaimsArgs {
    /// A PostgreSQL server (the bench makes and drops its own database there).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub url: String,
    /// Daemons sharing the PostgreSQL ledger, each with its own pool.
    #[arg(long, default_value_t = 3)]
    pub daemons: usize,
    /// Worker threads per daemon (a daemon's concurrent ledger writers).
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Scopes (account/stream) in the ledger.
    #[arg(long, default_value_t = 300)]
    pub scopes: usize,
    /// Hours per scope.
    #[arg(long, default_value_t = 168)]
    pub hours: i64,
    /// Hours per claim (the chunk size).
    #[arg(long, default_value_t = 6)]
    pub chunk: i64,
}

/// What one configuration did.
struct Outcome {
    claims: usize,
    secs: f64,
}

impl Outcome {
    fn rate(&self) -> f64 {
        super::ratio(self.claims as f64, self.secs)
    }
}

pub fn run(args: BenchStoreClaimsArgs) -> anyhow::Result<i32> {
    let daemons = args.daemons.clamp(1, 64);
    let threads = args.threads.clamp(1, 64);
    let scopes = args.scopes.clamp(1, 100_000);
    let hours = args.hours.clamp(1, 24 * 366);
    let chunk = args.chunk.clamp(1, 24 * 7);
    let end = 1_700_000_000 / HOUR * HOUR;
    let window = HourWindow::new(end - hours * HOUR, end);
    let expected_claims =
        scopes.saturating_mul(usize::try_from((hours + chunk - 1) / chunk).unwrap_or(usize::MAX));
    println!(
        "{scopes} scopes x {hours} hours in claims of {chunk}: {expected_claims} claims per run, each claim -> report id -> downloaded -> applied"
    );
    println!("load average (1/5/15 min): {}", load_average());

    // Baseline: one daemon on one SQLite file, the same threads.
    let dir = tempfile::tempdir().context("temp dir")?;
    let sqlite = Arc::new(SqliteLedger::open(&dir.path().join("bench.db"))?);
    seed(sqlite.as_ref(), scopes, window, end)?;
    let sqlite_stores: Vec<Arc<dyn LedgerStore>> = vec![sqlite];
    let baseline = drive(&sqlite_stores, threads, scopes, chunk, end)?;
    report("sqlite, 1 daemon", &baseline, threads, None);

    let database = BenchDatabase::create(&args.url)?;
    let settings = PgSettings {
        pool_size: u32::try_from(threads).unwrap_or(8),
        ..PgSettings::default()
    };
    for count in [1, daemons] {
        database.reset()?;
        let stores: Vec<Arc<dyn LedgerStore>> = (0..count)
            .map(|_| PgLedger::open(&database.url, &settings).map(|ledger| Arc::new(ledger) as _))
            .collect::<Result<_, _>>()?;
        seed(stores[0].as_ref(), scopes, window, end)?;
        let outcome = drive(&stores, threads, scopes, chunk, end)?;
        if outcome.claims != expected_claims {
            anyhow::bail!(
                "postgresql with {count} daemon(s) made {} claims, expected {expected_claims}: a run was claimed twice or lost",
                outcome.claims
            );
        }
        report(
            &format!("postgresql, {count} daemon(s)"),
            &outcome,
            threads * count,
            Some(&baseline),
        );
        if count == daemons {
            break;
        }
    }
    println!("load average (1/5/15 min): {}", load_average());
    Ok(0)
}

fn report(label: &str, outcome: &Outcome, writers: usize, baseline: Option<&Outcome>) {
    let ratio = baseline
        .map(|base| {
            format!(
                " ({:.2}x sqlite)",
                super::ratio(outcome.rate(), base.rate())
            )
        })
        .unwrap_or_default();
    println!(
        "{label:<26} {writers:>3} writers: {} claims in {:.2}s = {:.0} claims/s{ratio}",
        outcome.claims,
        outcome.secs,
        outcome.rate(),
    );
}

/// `/proc/loadavg`'s first three fields (the machine is shared: figures carry it).
pub(super) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_string())
}

fn seed(
    store: &dyn LedgerStore,
    scopes: usize,
    window: HourWindow,
    now: i64,
) -> anyhow::Result<()> {
    for scope in 0..scopes {
        store.seed(&format!("acct-{scope}"), STREAM, window, now)?;
    }
    Ok(())
}

/// Runs every scope's claims to the end: scope `n` belongs to daemon `n % daemons`, and
/// each daemon's threads take its scopes one at a time.
fn drive(
    stores: &[Arc<dyn LedgerStore>],
    threads: usize,
    scopes: usize,
    chunk: i64,
    now: i64,
) -> anyhow::Result<Outcome> {
    let daemons = stores.len().max(1);
    let started = Instant::now();
    let claims = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for (index, store) in stores.iter().enumerate() {
        let owned: Arc<Vec<usize>> = Arc::new((index..scopes).step_by(daemons).collect());
        let next = Arc::new(AtomicUsize::new(0));
        for worker in 0..threads {
            let (store, owned, next, claims) = (
                Arc::clone(store),
                Arc::clone(&owned),
                Arc::clone(&next),
                Arc::clone(&claims),
            );
            let owner = format!("bench:{index}-{worker}@local");
            workers.push(std::thread::spawn(move || -> anyhow::Result<()> {
                loop {
                    let slot = next.fetch_add(1, Ordering::Relaxed);
                    let Some(scope) = owned.get(slot) else {
                        return Ok(());
                    };
                    let account = format!("acct-{scope}");
                    while let Some(claim) = store.claim(
                        &account,
                        STREAM,
                        chunk,
                        ClaimOrder::NewestFirst,
                        &owner,
                        WriteFence::Lease(1),
                        now,
                    )? {
                        store.set_report_id(&claim, "report", now)?;
                        store.mark_downloaded(&claim, "document", "/dev/null", now)?;
                        store.apply_sales(&claim, &mut |_sink| Ok(Default::default()), now)?;
                        claims.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    for worker in workers {
        worker
            .join()
            .map_err(|_| anyhow::anyhow!("a bench worker panicked"))??;
    }
    Ok(Outcome {
        claims: claims.load(Ordering::Relaxed),
        secs: started.elapsed().as_secs_f64(),
    })
}

/// The bench's own database on the server of `url`, dropped on drop.
pub(super) struct BenchDatabase {
    admin_url: String,
    name: String,
    pub(super) url: String,
}

impl BenchDatabase {
    pub(super) fn create(admin_url: &str) -> anyhow::Result<BenchDatabase> {
        let name = format!("ms_bench_{}", std::process::id());
        let database = BenchDatabase {
            admin_url: admin_url.to_string(),
            url: crate::store::postgres::with_database(admin_url, &name),
            name,
        };
        database.admin(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            database.name
        ))?;
        database.admin(&format!("CREATE DATABASE {}", database.name))?;
        Ok(database)
    }

    /// An empty database again (the previous configuration's pools are gone by now).
    fn reset(&self) -> anyhow::Result<()> {
        self.admin(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))?;
        self.admin(&format!("CREATE DATABASE {}", self.name))
    }

    fn admin(&self, sql: &str) -> anyhow::Result<()> {
        let mut config: postgres::Config = self
            .admin_url
            .parse()
            .with_context(|| format!("--url {}", redact_url(&self.admin_url)))?;
        config.connect_timeout(Duration::from_secs(10));
        let mut client = config
            .connect(postgres::NoTls)
            .with_context(|| format!("connecting to {}", redact_url(&self.admin_url)))?;
        client
            .batch_execute(sql)
            .with_context(|| format!("{sql} on {}", redact_url(&self.admin_url)))?;
        Ok(())
    }
}

impl BenchDatabase {
    /// The first column of the first row of `sql` (a count) on the bench's database.
    pub(super) fn count(&self, sql: &str) -> anyhow::Result<i64> {
        let mut config: postgres::Config = self.url.parse().context("the bench database url")?;
        config.connect_timeout(Duration::from_secs(10));
        let mut client = config
            .connect(postgres::NoTls)
            .with_context(|| format!("connecting to {}", redact_url(&self.url)))?;
        Ok(client.query_one(sql, &[])?.get(0))
    }
}

impl Drop for BenchDatabase {
    fn drop(&mut self) {
        let _ = self.admin(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}
