//! `marketsync bench quota`: how close the TokenManager drives a provider bucket to its
//! limit, and how many 429s that costs (issue 5, section 6). Not a test.
//!
//! A backlog of `calls` createReport calls is drained by `workers` concurrent callers per
//! TokenManager against the bundled simulator, whose createReport bucket is `rate`/s with
//! `burst`, over real HTTP, exactly as the sync runner paces them: acquire one token at
//! background priority, call, then report `x-amzn-RateLimit-Limit` or the 429. The figure
//! is wall time (first acquire to last success) over the theoretical minimum
//! `(calls - burst) / rate`. Scenarios:
//! - limits configured right (`[quota.amazon.createReport]` = the simulator's);
//! - rate unknown (Amazon's documented default 0.0167/s, burst 15), learned from the
//!   first response's header;
//! - rate unknown and the simulator's burst two thirds of the default (the header says
//!   nothing about bursts: the 429s this costs are what the learned case can cost);
//! - two TokenManagers (two daemons) sharing a private redis-server, limits right.
//!
//! After a 429 the simulator sends `Retry-After: 1` and the bench's TokenManagers use no
//! cooldown of their own (the daemon's is `quota_cooldown`, 30 min): a bench must not
//! sleep half an hour. Then grants/s of the actor itself ([`crate::quota::bench_grants`]), in
//! process and against Redis.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::domain::{floor_hour, now_ts, HourWindow, HOUR};
use crate::provider::amazon::{
    LwaCredentials, SpApiClient, SpApiEndpoints, VENDOR_RT_SALES_REPORT,
};
use crate::provider::ProviderError;
use crate::quota::{
    bench_grants, Observation, Pacer, Priority, QuotaBackend, QuotaConfig, QuotaError, QuotaHandle,
    TokenManager, DEFAULT_RATE_MARGIN,
};
use crate::sim::{RateSpec, SimConfig, SimFaults, Simulator};

const OPERATION: &str = "createReport";

/// One scenario's result.
#[derive(Debug, Clone, Copy)]
pub struct DrainResult {
    pub wall: Duration,
    pub minimum: Duration,
    pub throttled: u64,
}

impl DrainResult {
    pub fn ratio(&self) -> f64 {
        self.wall.as_secs_f64() / self.minimum.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

struct BenchSim {
    base: String,
    sim: Arc<Simulator>,
    stop: CancellationToken,
}

impl BenchSim {
    async fn start(rate: f64, burst: f64) -> anyhow::Result<BenchSim> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the simulator")?;
        let addr = listener.local_addr()?;
        let spec = RateSpec { rate, burst };
        let sim = Simulator::new(SimConfig {
            processing_latency: Duration::ZERO,
            rates: BTreeMap::from([(OPERATION.to_string(), spec)]),
            faults: SimFaults {
                retry_after_secs: Some(1),
                ..SimFaults::default()
            },
            ..SimConfig::default()
        });
        let stop = CancellationToken::new();
        let (served, stopped) = (Arc::clone(&sim), stop.clone());
        tokio::spawn(async move {
            let _ =
                crate::sim::serve(listener, served, async move { stopped.cancelled().await }).await;
        });
        Ok(BenchSim {
            base: format!("http://{addr}"),
            sim,
            stop,
        })
    }

    fn throttled(&self) -> u64 {
        self.sim.stats().throttled(OPERATION)
    }

    /// A paced client of `seller` (a fresh seller is a fresh simulator bucket).
    fn client(&self, http: &reqwest::Client, seller: &str, quota: &QuotaHandle) -> SpApiClient {
        SpApiClient::new(
            http.clone(),
            SpApiEndpoints {
                api_base: self.base.clone(),
                lwa_token_url: format!("{}/auth/o2/token", self.base),
            },
            LwaCredentials {
                client_id: "bench-client".to_string(),
                client_secret: "bench-secret".to_string(),
                refresh_token: format!("bench-refresh-{seller}"),
            },
        )
        .with_pacer(Pacer::new(quota.clone(), "amazon", seller))
    }
}

impl Drop for BenchSim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A TokenManager as the daemon builds one (rate margin included), with `spec` as the
/// createReport bucket (`None`: the documented default) and no cooldown of its own.
async fn manager(
    backend: QuotaBackend,
    spec: Option<RateSpec>,
) -> anyhow::Result<(QuotaHandle, ractor::concurrency::JoinHandle<()>)> {
    let mut config = QuotaConfig::new(backend).with_rate_margin(DEFAULT_RATE_MARGIN);
    if let Some(spec) = spec {
        config = config.with_spec(
            "amazon",
            OPERATION,
            crate::quota::BucketSpec::new(spec.rate, spec.burst),
        );
    }
    config
        .throttle_cooldowns
        .insert("amazon".to_string(), Duration::ZERO);
    let (actor, join) = TokenManager::spawn(config).await?;
    Ok((QuotaHandle::new(actor), join))
}

/// One paced createReport, retried after a 429 (the 429 is counted by the simulator).
async fn paced_call(client: &SpApiClient, window: HourWindow) -> anyhow::Result<()> {
    let pacer = client.pacer().context("bench clients are paced")?.clone();
    let key = pacer.key(OPERATION);
    loop {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        match pacer
            .handle
            .acquire(vec![key.clone()], 1.0, Priority::Background, deadline)
            .await
        {
            Ok(_) => {}
            Err(QuotaError::CoolingDown { until_utc, .. }) => {
                // What the runner does: wait for the cooldown's end, then go again.
                let wait = (until_utc - chrono::Utc::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO);
                tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
                continue;
            }
            Err(err) => return Err(err.into()),
        }
        let result = client
            .create_report(VENDOR_RT_SALES_REPORT, "ATVPDKIKX0DER", window)
            .await;
        match result {
            Ok(_) => {
                if let Some(rate) = client.observed_rate_limit(OPERATION) {
                    pacer
                        .handle
                        .observe(key.clone(), Observation::RateLimitHeader(rate));
                }
                return Ok(());
            }
            Err(ProviderError::QuotaExceeded { retry_after, .. }) => {
                pacer
                    .handle
                    .observe(key.clone(), Observation::Throttled { retry_after });
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// Drains `calls` calls over `clients` (`workers` callers each); returns the wall time.
async fn drain(
    clients: &[Arc<SpApiClient>],
    calls: usize,
    workers: usize,
) -> anyhow::Result<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let end = floor_hour(now_ts()) - HOUR;
    let window = HourWindow::new(end - HOUR, end);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in clients {
        for _ in 0..workers.max(1) {
            let (client, next) = (Arc::clone(client), Arc::clone(&next));
            tasks.push(tokio::spawn(async move {
                while next.fetch_add(1, Ordering::SeqCst) < calls {
                    paced_call(&client, window).await?;
                }
                anyhow::Ok(())
            }));
        }
    }
    for task in tasks {
        task.await.context("bench worker")??;
    }
    Ok(started.elapsed())
}

/// Runs one scenario on `sim` with fresh seller `seller`.
async fn scenario(
    sim: &BenchSim,
    managers: &[QuotaHandle],
    seller: &str,
    calls: usize,
    workers: usize,
    rate: f64,
    burst: f64,
) -> anyhow::Result<DrainResult> {
    let http = reqwest::Client::new();
    let clients: Vec<Arc<SpApiClient>> = managers
        .iter()
        .map(|quota| Arc::new(sim.client(&http, seller, quota)))
        .collect();
    let before = sim.throttled();
    let wall = drain(&clients, calls, workers).await?;
    Ok(DrainResult {
        wall,
        // --rate is checked finite and above 0, but a tiny one would overflow a Duration.
        minimum: Duration::try_from_secs_f64(((calls as f64 - burst).max(0.0)) / rate)
            .unwrap_or(Duration::MAX),
        throttled: sim.throttled() - before,
    })
}

fn print_row(name: &str, result: &DrainResult, target: &str, ok: Option<bool>) {
    println!(
        "{name:<44} {:>8.2}s {:>8.2}s {:>7.3} {:>5}   {target}{}",
        result.wall.as_secs_f64(),
        result.minimum.as_secs_f64(),
        result.ratio(),
        result.throttled,
        match ok {
            Some(true) => "  ok",
            Some(false) => "  BELOW TARGET",
            None => "",
        }
    );
}

/// `marketsync bench quota`.
pub async fn bench_quota(
    calls: usize,
    rate: f64,
    burst: f64,
    workers: usize,
    grants: usize,
) -> anyhow::Result<i32> {
    anyhow::ensure!(
        rate.is_finite() && rate > 0.0 && burst >= 1.0 && calls as f64 > burst,
        "--rate must be above 0, --burst at least 1 and --calls above the burst"
    );
    let redis = crate::bench::redis_server::RedisServer::start()
        .context("starting a private redis-server (is redis-server installed?)")?;
    let prefix = format!("marketsync-bench-{}:", std::process::id());
    let spec = RateSpec { rate, burst };
    println!(
        "quota efficiency: {calls} createReport calls, simulator bucket {rate}/s burst {burst}, {workers} callers per TokenManager, background priority (reserve 20%), rate margin {}%",
        DEFAULT_RATE_MARGIN * 100.0
    );
    println!(
        "{:<44} {:>9} {:>9} {:>7} {:>5}   target",
        "scenario", "wall", "minimum", "ratio", "429s"
    );
    let sim = BenchSim::start(rate, burst).await?;
    let mut all_ok = true;

    let (quota, join) = manager(QuotaBackend::InProcess, Some(spec)).await?;
    let configured = scenario(
        &sim,
        std::slice::from_ref(&quota),
        "configured",
        calls,
        workers,
        rate,
        burst,
    )
    .await?;
    quota.stop();
    let _ = join.await;
    let ok = configured.ratio() <= 1.05 && configured.throttled == 0;
    all_ok &= ok;
    print_row(
        "limits configured right",
        &configured,
        "ratio <= 1.05, 0 429s",
        Some(ok),
    );

    let (quota, join) = manager(QuotaBackend::InProcess, None).await?;
    let learned = scenario(
        &sim,
        std::slice::from_ref(&quota),
        "learned",
        calls,
        workers,
        rate,
        burst,
    )
    .await?;
    quota.stop();
    let _ = join.await;
    let ok = learned.throttled <= 1;
    all_ok &= ok;
    print_row(
        "rate unknown, learned from headers",
        &learned,
        "<= 1 429 per bucket",
        Some(ok),
    );

    let small_burst = (burst * 2.0 / 3.0).round().max(1.0);
    let small = BenchSim::start(rate, small_burst).await?;
    let (quota, join) = manager(QuotaBackend::InProcess, None).await?;
    let wrong_burst = scenario(
        &small,
        std::slice::from_ref(&quota),
        "learned-small-burst",
        calls,
        workers,
        rate,
        small_burst,
    )
    .await?;
    quota.stop();
    let _ = join.await;
    drop(small);
    print_row(
        &format!("rate unknown, simulator burst {small_burst} (default 15)"),
        &wrong_burst,
        "(reported: the header carries no burst)",
        None,
    );

    let backend = QuotaBackend::Redis {
        url: redis.url(),
        prefix: prefix.clone(),
    };
    let (first, first_join) = manager(backend.clone(), Some(spec)).await?;
    let (second, second_join) = manager(backend, Some(spec)).await?;
    let shared = scenario(
        &sim,
        &[first.clone(), second.clone()],
        "shared",
        calls,
        workers,
        rate,
        burst,
    )
    .await?;
    first.stop();
    second.stop();
    let _ = first_join.await;
    let _ = second_join.await;
    let ok = shared.ratio() <= 1.05 && shared.throttled == 0;
    all_ok &= ok;
    print_row(
        "two TokenManagers sharing redis, right limits",
        &shared,
        "ratio <= 1.05, 0 429s",
        Some(ok),
    );

    let in_process = bench_grants(QuotaBackend::InProcess, grants).await?;
    let redis_grants = bench_grants(
        QuotaBackend::Redis {
            url: redis.url(),
            prefix,
        },
        (grants / 10).max(1),
    )
    .await?;
    println!(
        "token manager grants/s (32 concurrent callers, one bucket): in process {in_process:.0}/s ({grants} grants), redis {redis_grants:.0}/s ({} grants)",
        (grants / 10).max(1)
    );
    Ok(if all_ok { 0 } else { 1 })
}
