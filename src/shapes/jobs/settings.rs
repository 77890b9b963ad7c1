//! A job queue's own settings (`[accounts.streams.NAME]` keys of job streams).

use std::time::Duration;

/// The settings only job-queue streams have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobsSettings {
    /// Attempts before a job is `failed` (5xx, timeouts; 429s do not count).
    pub max_attempts: u32,
    /// A running job whose worker died is rescued after this long.
    pub job_lease: Duration,
    /// Keys per provider request (Keepa: up to 100 ASINs; StockX: 1).
    pub batch: u32,
}

impl JobsSettings {
    /// The defaults `config/example.toml` documents (`batch`: StockX's 1; Keepa's
    /// `products` stream defaults to 100 at validation).
    pub const DEFAULT: JobsSettings = JobsSettings {
        max_attempts: 5,
        job_lease: Duration::from_secs(10 * 60),
        batch: 1,
    };
}
