//! Counters and gauges fed by the code that does the work: provider calls and 429s by
//! provider and operation, lock takeovers, and tokens available per quota bucket.
//!
//! One [`Metrics`] per daemon, made by the composition root and handed to whoever counts
//! (stream runners through their context, the HTTP server that exposes it); there is no
//! global. `GET /metrics` ([`crate::http::metrics`]) encodes it together with the
//! gauges read from the database at scrape time.
//!
//! ```
//! use marketsync::telemetry::Metrics;
//! let metrics = Metrics::new();
//! metrics.provider_call("amazon", "createReport");
//! metrics.provider_throttled("amazon", "createReport"); // a 429
//! metrics.lock_takeover("acct/vendor_rt_sales");
//! metrics.set_tokens_available("amazon", "createReport", 14.0);
//! assert_eq!(metrics.provider_calls("amazon", "createReport"), 1);
//! ```
//!
//! [`history`] keeps the last hour of quota buckets, cursor lag and queue depth for the
//! dashboard's pictures, in bounded rings. [`spans`] makes the spans that carry an
//! account's and a stream's names into the log lines logged inside them.
//!
//! Layer 3 of docs/architecture.md. May use: `domain`. May not be a global: one handle per
//! daemon, passed down.

pub mod history;
pub mod spans;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::domain::{now_ts, HOUR};

pub type Labels = Vec<(&'static str, String)>;

/// Counters and gauges fed by the code that does the work; see the module docs.
pub struct Metrics {
    registry: Registry,
    provider_calls: Family<Labels, Counter>,
    provider_throttled: Family<Labels, Counter>,
    lock_takeovers: Family<Labels, Counter>,
    service_restarts: Family<Labels, Counter>,
    tokens_available: Family<Labels, Gauge<f64, AtomicU64>>,
    /// Calls per (provider, operation) in the current UTC hour: the budgets page's
    /// "used this hour" (seed 002's market_budgets). A std Mutex: held for a map update.
    calls_this_hour: std::sync::Mutex<HashMap<(String, String), (i64, u64)>>,
    stream_runs: Counter,
    /// Bumped with `stream_runs`: what an in-process observer (`sync --once`) waits on
    /// to look at the ledger as soon as a run ended, instead of on a timer only.
    runs_ended: tokio::sync::watch::Sender<u64>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("marketsync");
        let provider_calls = Family::<Labels, Counter>::default();
        registry.register(
            "provider_calls",
            "Provider API calls made, by provider and operation",
            provider_calls.clone(),
        );
        let provider_throttled = Family::<Labels, Counter>::default();
        registry.register(
            "provider_throttled",
            "Provider calls answered 429 (quota exceeded), by provider and operation",
            provider_throttled.clone(),
        );
        let service_restarts = Family::<Labels, Counter>::default();
        registry.register(
            "service_restarts",
            "Failures (errors, panics, unexpected stops) of an infrastructure service, each followed by a restart or, once its budget is spent, the daemon's exit; by service",
            service_restarts.clone(),
        );
        let lock_takeovers = Family::<Labels, Counter>::default();
        registry.register(
            "lock_takeovers",
            "Expired leases taken over from another owner, by scope",
            lock_takeovers.clone(),
        );
        let tokens_available = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "quota_tokens_available",
            "Tokens available in each quota bucket",
            tokens_available.clone(),
        );
        let stream_runs = Counter::default();
        registry.register(
            "stream_runs",
            "Stream runs ended (a pass over a stream's due work under its lease, whatever its outcome)",
            stream_runs.clone(),
        );
        Metrics {
            registry,
            stream_runs,
            runs_ended: tokio::sync::watch::Sender::new(0),
            provider_calls,
            provider_throttled,
            lock_takeovers,
            service_restarts,
            tokens_available,
            calls_this_hour: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// A stream's run ended (the runner's pass, whatever its outcome).
    pub fn run_ended(&self) {
        self.stream_runs.inc();
        self.runs_ended
            .send_modify(|runs| *runs = runs.wrapping_add(1));
    }

    /// Changes each time a run ends ([`Metrics::run_ended`]).
    pub fn watch_runs(&self) -> tokio::sync::watch::Receiver<u64> {
        self.runs_ended.subscribe()
    }

    /// One provider API call was made (count every attempt, whatever its outcome).
    pub fn provider_call(&self, provider: &str, operation: &str) {
        self.provider_calls
            .get_or_create(&provider_labels(provider, operation))
            .inc();
        // Its 429 counter exists from the first call on, at 0: `rate()` and the Grafana
        // panels see the series before the first 429.
        drop(
            self.provider_throttled
                .get_or_create(&provider_labels(provider, operation)),
        );
        let hour = now_ts().div_euclid(HOUR) * HOUR;
        let mut hourly = self
            .calls_this_hour
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = hourly
            .entry((provider.to_string(), operation.to_string()))
            .or_insert((hour, 0));
        if entry.0 != hour {
            *entry = (hour, 0);
        }
        entry.1 += 1;
    }

    /// Calls of `provider`/`operation` made by this process in the UTC hour starting at
    /// `hour` (0 for other hours).
    pub fn calls_in_hour(&self, provider: &str, operation: &str, hour: i64) -> u64 {
        let hourly = self
            .calls_this_hour
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match hourly.get(&(provider.to_string(), operation.to_string())) {
            Some((at, count)) if *at == hour => *count,
            _ => 0,
        }
    }

    /// A provider call was answered 429.
    pub fn provider_throttled(&self, provider: &str, operation: &str) {
        self.provider_throttled
            .get_or_create(&provider_labels(provider, operation))
            .inc();
    }

    /// An expired lease on `scope` was taken over.
    pub fn lock_takeover(&self, scope: &str) {
        self.lock_takeovers
            .get_or_create(&vec![("scope", scope.to_string())])
            .inc();
    }

    /// A lease on `scope` is held: its takeover counter exists from now on, at 0.
    pub fn lease_held(&self, scope: &str) {
        drop(
            self.lock_takeovers
                .get_or_create(&vec![("scope", scope.to_string())]),
        );
    }

    /// An infrastructure service started: its restart counter exists from now on, at 0.
    pub fn service_started(&self, service: &str) {
        drop(
            self.service_restarts
                .get_or_create(&vec![("service", service.to_string())]),
        );
    }

    /// An infrastructure service failed (and is restarted, or ends the daemon).
    pub fn service_restart(&self, service: &str) {
        self.service_restarts
            .get_or_create(&vec![("service", service.to_string())])
            .inc();
    }

    /// The current value of `service_restarts_total` for `service`.
    pub fn service_restarts(&self, service: &str) -> u64 {
        self.service_restarts
            .get_or_create(&vec![("service", service.to_string())])
            .get()
    }

    /// The current value of `lock_takeovers_total` for `scope`.
    pub fn lock_takeovers(&self, scope: &str) -> u64 {
        self.lock_takeovers
            .get_or_create(&vec![("scope", scope.to_string())])
            .get()
    }

    /// The tokens a quota bucket holds now.
    pub fn set_tokens_available(&self, provider: &str, bucket: &str, tokens: f64) {
        self.tokens_available
            .get_or_create(&vec![
                ("provider", provider.to_string()),
                ("bucket", bucket.to_string()),
            ])
            .set(tokens);
    }

    /// The registry the in-process families are registered in (encoded by `/metrics`).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The current value of `provider_calls_total` (tests and the dashboard).
    pub fn provider_calls(&self, provider: &str, operation: &str) -> u64 {
        self.provider_calls
            .get_or_create(&provider_labels(provider, operation))
            .get()
    }
}

fn provider_labels(provider: &str, operation: &str) -> Labels {
    vec![
        ("provider", provider.to_string()),
        ("operation", operation.to_string()),
    ]
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
