//! The report latency profiles of the SP-API simulator and its time scale.
//!
//! - `fast` (the default): every report takes `processing_latency`, half IN_QUEUE then half
//!   IN_PROGRESS, then DONE (or the outcome the faults drew).
//! - `realistic`: each report's processing time is drawn from a seeded RNG, shaped like
//!   production: log-normal with a median of [`REALISTIC_MEDIAN_SECS`], clipped to
//!   [`REALISTIC_MIN_SECS`, `REALISTIC_MAX_SECS`]; [`REALISTIC_STUCK`] of reports are stuck:
//!   they end CANCELLED or FATAL after 1–1.5× [`REALISTIC_STUCK_SECS`], IN_QUEUE for the
//!   first 90 % of it (so cancelReport applies to them).
//!
//! Durations here are simulated seconds; the simulator divides them by its `time_scale`
//! (as it multiplies its bucket refills), so a 60× run keeps every ratio of production.

use std::str::FromStr;

use rand::rngs::StdRng;
use rand::RngExt;
use serde::{Deserialize, Serialize};

/// Median processing time of a realistic report (simulated seconds).
pub const REALISTIC_MEDIAN_SECS: f64 = 60.0;
/// Spread of the log-normal: with 0.9 the 90th percentile is about 3.2× the median
/// (~190 s) and the 99th about 8× (~8 min).
pub const REALISTIC_SIGMA: f64 = 0.9;
/// The shortest realistic report (simulated seconds).
pub const REALISTIC_MIN_SECS: f64 = 5.0;
/// The longest realistic report that ends DONE: the long tail is clipped at 10 minutes.
pub const REALISTIC_MAX_SECS: f64 = 600.0;
/// Share of realistic reports that are stuck.
pub const REALISTIC_STUCK: f64 = 0.01;
/// A stuck report sits this long (up to 1.5× this) before it ends CANCELLED or FATAL.
pub const REALISTIC_STUCK_SECS: f64 = 45.0 * 60.0;

/// Bounds of `time_scale`: 1 (real time) to 3600 (one simulated hour per real second).
pub const TIME_SCALE_MIN: f64 = 1.0;
pub const TIME_SCALE_MAX: f64 = 3600.0;

/// How long reports take to process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimProfile {
    /// Every report takes `processing_latency` (the demo and the tests).
    #[default]
    Fast,
    /// Production-shaped processing times (see the module documentation).
    Realistic,
}

impl SimProfile {
    pub fn name(self) -> &'static str {
        match self {
            SimProfile::Fast => "fast",
            SimProfile::Realistic => "realistic",
        }
    }
}

impl FromStr for SimProfile {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "fast" => Ok(SimProfile::Fast),
            "realistic" => Ok(SimProfile::Realistic),
            other => Err(format!(
                "profile: {other:?} is not a simulator profile; use fast or realistic"
            )),
        }
    }
}

impl std::fmt::Display for SimProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a stuck report ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StuckEnd {
    Cancelled,
    Fatal,
}

/// A report's processing time, in simulated seconds from its creation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Timing {
    /// Leaves IN_QUEUE (starts IN_PROGRESS) at this time.
    pub(super) queued: f64,
    /// Ends (DONE, FATAL or CANCELLED) at this time; `queued <= total`.
    pub(super) total: f64,
    /// Set when the report is stuck: how it ends, whatever the faults drew.
    pub(super) stuck: Option<StuckEnd>,
}

impl Timing {
    /// The fast profile: `latency`, half queued.
    pub(super) fn fixed(latency: f64) -> Timing {
        let total = if latency.is_finite() {
            latency.max(0.0)
        } else {
            0.0
        };
        Timing {
            queued: total / 2.0,
            total,
            stuck: None,
        }
    }

    /// One draw of the realistic profile.
    pub(super) fn realistic(rng: &mut StdRng) -> Timing {
        if rng.random::<f64>() < REALISTIC_STUCK {
            let total = REALISTIC_STUCK_SECS * (1.0 + 0.5 * rng.random::<f64>());
            let end = if rng.random::<bool>() {
                StuckEnd::Cancelled
            } else {
                StuckEnd::Fatal
            };
            return Timing {
                queued: total * 0.9,
                total,
                stuck: Some(end),
            };
        }
        let total = (REALISTIC_MEDIAN_SECS * (REALISTIC_SIGMA * standard_normal(rng)).exp())
            .clamp(REALISTIC_MIN_SECS, REALISTIC_MAX_SECS);
        // IN_QUEUE for 20–60 % of the time, the rest IN_PROGRESS.
        let queued = total * (0.2 + 0.4 * rng.random::<f64>());
        Timing {
            queued,
            total,
            stuck: None,
        }
    }

    /// The same timing on the real clock of a simulator running `time_scale` times faster.
    pub(super) fn scaled(self, time_scale: f64) -> Timing {
        Timing {
            queued: self.queued / time_scale,
            total: self.total / time_scale,
            stuck: self.stuck,
        }
    }
}

/// A standard normal draw (Box–Muller); finite for every RNG output.
fn standard_normal(rng: &mut StdRng) -> f64 {
    // `1 - gen()` is in (0, 1], so the logarithm is finite.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn realistic_draws_have_a_median_near_a_minute_and_a_tail_clipped_at_ten_minutes() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut done: Vec<f64> = Vec::new();
        let mut stuck = 0;
        for _ in 0..20_000 {
            let timing = Timing::realistic(&mut rng);
            assert!(timing.queued <= timing.total);
            match timing.stuck {
                Some(_) => {
                    stuck += 1;
                    assert!(timing.total >= REALISTIC_STUCK_SECS);
                }
                None => done.push(timing.total),
            }
        }
        done.sort_by(f64::total_cmp);
        let median = done[done.len() / 2];
        let p99 = done[done.len() * 99 / 100];
        assert!((50.0..=70.0).contains(&median), "median {median}");
        assert!((300.0..=600.0).contains(&p99), "p99 {p99}");
        assert!(done.iter().all(|secs| (5.0..=600.0).contains(secs)));
        assert!((100..=320).contains(&stuck), "stuck {stuck} of 20000");
    }

    #[test]
    fn realistic_draws_repeat_for_the_same_seed() {
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..50)
                .map(|_| Timing::realistic(&mut rng).total)
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn profile_names_parse_and_unknown_ones_name_the_choices() {
        assert_eq!("realistic".parse::<SimProfile>(), Ok(SimProfile::Realistic));
        assert_eq!("fast".parse::<SimProfile>(), Ok(SimProfile::Fast));
        let err = "slow".parse::<SimProfile>().unwrap_err();
        assert!(err.contains("fast or realistic"), "{err}");
    }
}
