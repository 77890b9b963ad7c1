//! Settings of a TokenManager ([`QuotaConfig`]): backend, bucket specs, reserve share, rate
//! margin, throttle cooldowns and the cooldown store; and `[quota]` as the configuration
//! gives it ([`QuotaSettings`]), which the composition root turns into a `QuotaConfig`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::bucket::DEFAULT_RESERVE_SHARE;
use super::clock::Clock;
use super::cooldown::CooldownStore;
use super::{
    default_spec, BucketKey, BucketSpec, QuotaBackend, AMAZON_THROTTLE_COOLDOWN,
    DEFAULT_COOLDOWN_RECHECK, DEFAULT_THROTTLE_COOLDOWN,
};
use crate::store::LedgerStore;

/// Settings of a TokenManager.
#[derive(Clone)]
pub struct QuotaConfig {
    pub backend: QuotaBackend,
    /// Overrides of [`default_spec`], by (provider, operation); operation `*` matches any.
    pub specs: HashMap<(String, String), BucketSpec>,
    /// The share of each bucket's burst kept for manual work.
    pub reserve_share: f64,
    /// Cooldown after a 429 per provider (default: amazon 30 min).
    pub throttle_cooldowns: HashMap<String, Duration>,
    /// Cooldown after a 429 for providers not in `throttle_cooldowns`.
    pub default_throttle_cooldown: Duration,
    /// Where cooldowns persist. `None`: in memory for `InProcess`, the same Redis for
    /// `Redis`.
    pub cooldown_store: Option<Arc<dyn CooldownStore>>,
    /// How long a "no cooldown" answer of the store is trusted.
    pub cooldown_recheck: Duration,
    /// The share of every rate left unused, in `[0, 0.5)`: a configured or default spec
    /// and a rate learned from `x-amzn-RateLimit-Limit` are used as `rate * (1 - margin)`.
    /// Keepa balances are taken as reported. Default 0 here; the daemon sets
    /// [`super::DEFAULT_RATE_MARGIN`] unless configured.
    pub rate_margin: f64,
    pub clock: Clock,
    /// Crash drills (`[chaos] service = "token-manager"`): panics on the Nth acquire.
    pub chaos: Option<Arc<crate::domain::chaos::Chaos>>,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig::new(QuotaBackend::InProcess)
    }
}

impl QuotaConfig {
    pub fn new(backend: QuotaBackend) -> QuotaConfig {
        QuotaConfig {
            backend,
            specs: HashMap::new(),
            reserve_share: DEFAULT_RESERVE_SHARE,
            throttle_cooldowns: HashMap::from([("amazon".to_string(), AMAZON_THROTTLE_COOLDOWN)]),
            default_throttle_cooldown: DEFAULT_THROTTLE_COOLDOWN,
            cooldown_store: None,
            cooldown_recheck: DEFAULT_COOLDOWN_RECHECK,
            rate_margin: 0.0,
            clock: Clock::Tokio,
            chaos: None,
        }
    }

    /// Leaves `margin` of every rate unused (see [`QuotaConfig::rate_margin`]).
    pub fn with_rate_margin(mut self, margin: f64) -> QuotaConfig {
        self.rate_margin = if margin.is_finite() {
            margin.clamp(0.0, 0.5)
        } else {
            0.0
        };
        self
    }

    /// `rate` with the margin taken off.
    pub fn margined(&self, rate: f64) -> f64 {
        rate * (1.0 - self.rate_margin)
    }

    /// [`QuotaConfig::spec_for`] with the margin taken off the rate: what a new bucket
    /// is created with. A spec with a window cap (an hourly budget) keeps its rate: the
    /// rate only paces, the cap is the provider's budget and carries its own guard.
    pub fn effective_spec(&self, key: &BucketKey) -> Option<BucketSpec> {
        self.spec_for(key).map(|spec| match spec.window {
            Some(_) => spec,
            None => BucketSpec::new(self.margined(spec.rate), spec.burst),
        })
    }

    /// Sets the spec of (provider, operation); `*` as operation covers the provider.
    pub fn with_spec(mut self, provider: &str, operation: &str, spec: BucketSpec) -> QuotaConfig {
        self.specs
            .insert((provider.to_string(), operation.to_string()), spec);
        self
    }

    /// Persists cooldowns in the ledger (SQLite).
    pub fn with_ledger(mut self, ledger: Arc<dyn LedgerStore>) -> QuotaConfig {
        self.cooldown_store = Some(Arc::new(ledger));
        self
    }

    pub fn with_clock(mut self, clock: Clock) -> QuotaConfig {
        self.clock = clock;
        self
    }

    /// The spec for `key`: configured, configured for the provider (`*`), or default.
    pub fn spec_for(&self, key: &BucketKey) -> Option<BucketSpec> {
        self.specs
            .get(&(key.provider.clone(), key.operation.clone()))
            .or_else(|| self.specs.get(&(key.provider.clone(), "*".to_string())))
            .copied()
            .or_else(|| default_spec(&key.provider, &key.operation))
    }

    pub fn throttle_cooldown(&self, provider: &str) -> Duration {
        self.throttle_cooldowns
            .get(provider)
            .copied()
            .unwrap_or(self.default_throttle_cooldown)
    }
}

/// `[quota]`: how the TokenManager paces provider calls.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaSettings {
    /// The share of each bucket's burst background work leaves for manual work.
    pub reserve_share: f64,
    /// The share of every rate (configured, default or learned) left unused, so that
    /// network jitter never makes a call arrive before the provider's token.
    pub rate_margin: f64,
    /// Bucket overrides by SP-API operation (`[quota.amazon.createReport]`), per selling
    /// partner (the account-application pair).
    pub amazon: BTreeMap<String, super::BucketSpec>,
    /// Application-level limits by operation (`[quota.amazon_application.createReport]`),
    /// shared by every account of one LWA application; none by default.
    pub amazon_application: BTreeMap<String, super::BucketSpec>,
    /// Overrides of the other providers' buckets by provider then operation
    /// (`[quota.ebay.getOrders]`, `[quota.stockx.marketData]`, `[quota.keepa.product]`).
    pub providers: BTreeMap<String, BTreeMap<String, super::BucketSpec>>,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        QuotaSettings {
            reserve_share: super::DEFAULT_RESERVE_SHARE,
            rate_margin: super::DEFAULT_RATE_MARGIN,
            amazon: BTreeMap::new(),
            amazon_application: BTreeMap::new(),
            providers: BTreeMap::new(),
        }
    }
}
