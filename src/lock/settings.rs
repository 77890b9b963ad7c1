//! `[redis]` and `[locks]`: where leases live and how long they last.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://` or `rediss://`, possibly with user and password (then read from the
    /// environment variable named by `url_env`, never from the file).
    pub url: RedisUrl,
    /// Prefix of every key marketsync writes, e.g. `marketsync:`.
    pub prefix: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisUrl {
    Inline(String),
    /// The name of an environment variable holding the URL.
    Env(String),
}

impl RedisUrl {
    /// The URL itself; an unset variable is an error naming it.
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            RedisUrl::Inline(url) => Ok(url.clone()),
            RedisUrl::Env(name) => match std::env::var(name) {
                Ok(url) if !url.is_empty() => Ok(url),
                _ => Err(format!(
                    "redis.url_env: environment variable {name} is not set; export it with the redis url"
                )),
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct LockSettings {
    /// Lease TTL; `None` means max(15m, 2 x the stream's interval). Never above [`super::MAX_TTL`].
    pub ttl: Option<Duration>,
    /// How often the lock keys are scanned and repaired (the zombie-lock cure).
    pub hygiene_interval: Duration,
}

impl LockSettings {
    /// The TTL of the lease of a stream run every `interval`: configured, or
    /// max(15m, 2 x interval), capped.
    pub fn ttl_for(&self, interval: Duration) -> Duration {
        self.ttl
            .unwrap_or_else(|| Duration::from_secs(15 * 60).max(interval.saturating_mul(2)))
            .min(super::MAX_TTL)
    }
}
