//! The short history the dashboard's pictures draw: per quota bucket its tokens and calls,
//! per cursor stream its lag, per provider its job-queue depth, each sampled into a
//! bounded ring covering the last hour.
//!
//! Bounds (memory never grows past them, whatever the number of accounts):
//! - a series keeps at most [`SeriesLimits::max_samples`] samples, and none older than
//!   [`SeriesLimits::window_secs`] before its newest one;
//! - a family keeps at most [`SeriesLimits::max_series`] series; a new series beyond that
//!   evicts the one updated least recently.
//!
//! With the defaults ([`DEFAULT_MAX_SAMPLES`] = 240 samples, one every 15 s, and
//! [`DEFAULT_MAX_SERIES`] = 10,000 series per family) a family holds at most 2.4 million
//! samples of 16 bytes (about 37 MiB plus the keys) — reached only with 10,000 buckets or
//! cursor streams; the demo's few dozen series take a few hundred KiB.
//!
//! The history lives in memory only: a restart starts it empty. The sampler that feeds it
//! is a root service (`history`, see `crate::http::history`); the HTTP handlers read it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// How long a series reaches back by default: one hour.
pub const DEFAULT_WINDOW_SECS: i64 = 3600;
/// Samples per series by default: one hour at one sample every 15 s.
pub const DEFAULT_MAX_SAMPLES: usize = 240;
/// Series per family by default (buckets, cursor streams, providers).
pub const DEFAULT_MAX_SERIES: usize = 10_000;

/// The bounds of one family of series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesLimits {
    pub max_samples: usize,
    pub max_series: usize,
    /// Samples older than this before a series' newest sample are dropped.
    pub window_secs: i64,
}

impl Default for SeriesLimits {
    fn default() -> Self {
        SeriesLimits {
            max_samples: DEFAULT_MAX_SAMPLES,
            max_series: DEFAULT_MAX_SERIES,
            window_secs: DEFAULT_WINDOW_SECS,
        }
    }
}

/// A sample of a quota bucket: the tokens it held and the calls granted since the sample
/// before (16 bytes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketSample {
    pub at: i64,
    pub tokens: f32,
    pub calls: u32,
}

/// A sample of a cursor stream: how many seconds its cursor was behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LagSample {
    pub at: i64,
    pub lag_secs: i64,
}

/// A sample of a provider's job queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSample {
    pub at: i64,
    pub pending: u32,
    pub running: u32,
}

/// Anything with a time, in unix seconds.
pub trait Timed {
    fn at(&self) -> i64;
}

impl Timed for BucketSample {
    fn at(&self) -> i64 {
        self.at
    }
}

impl Timed for LagSample {
    fn at(&self) -> i64 {
        self.at
    }
}

impl Timed for QueueSample {
    fn at(&self) -> i64 {
        self.at
    }
}

/// One ring of samples, oldest first.
#[derive(Debug, Clone)]
struct Series<S> {
    samples: VecDeque<S>,
    /// When a sample was last pushed (the eviction order of [`Family`]).
    touched: u64,
}

/// A bounded family of series keyed by `K`; see the module docs for the bounds.
#[derive(Debug)]
pub struct Family<K, S> {
    limits: SeriesLimits,
    series: HashMap<K, Series<S>>,
    /// A counter, not a clock: every push takes the next value.
    ticks: u64,
}

impl<K: std::hash::Hash + Eq + Clone + Ord, S: Timed + Copy> Family<K, S> {
    pub fn new(limits: SeriesLimits) -> Family<K, S> {
        Family {
            limits: SeriesLimits {
                max_samples: limits.max_samples.max(1),
                max_series: limits.max_series.max(1),
                window_secs: limits.window_secs.max(1),
            },
            series: HashMap::new(),
            ticks: 0,
        }
    }

    /// Appends `sample` to `key`'s series, dropping what falls out of its bounds; a new
    /// key beyond `max_series` evicts the series pushed to least recently.
    pub fn push(&mut self, key: &K, sample: S) {
        self.ticks = self.ticks.wrapping_add(1);
        let touched = self.ticks;
        if !self.series.contains_key(key) && self.series.len() >= self.limits.max_series {
            let oldest = self
                .series
                .iter()
                .min_by_key(|(_, series)| series.touched)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                self.series.remove(&oldest);
            }
        }
        let limits = self.limits;
        let series = self.series.entry(key.clone()).or_insert_with(|| Series {
            samples: VecDeque::new(),
            touched,
        });
        series.touched = touched;
        // A sample older than the newest (a clock step back) starts the series again,
        // so the samples stay in time order.
        if series
            .samples
            .back()
            .is_some_and(|newest| newest.at() > sample.at())
        {
            series.samples.clear();
        }
        series.samples.push_back(sample);
        let newest = sample.at();
        while series.samples.len() > limits.max_samples
            || series
                .samples
                .front()
                .is_some_and(|oldest| newest.saturating_sub(oldest.at()) > limits.window_secs)
        {
            series.samples.pop_front();
        }
    }

    /// Drops every series whose newest sample is older than `window_secs` before `now`
    /// (a bucket or stream that went away).
    pub fn forget_older_than(&mut self, now: i64) {
        let window = self.limits.window_secs;
        self.series.retain(|_, series| {
            series
                .samples
                .back()
                .is_some_and(|newest| now.saturating_sub(newest.at()) <= window)
        });
    }

    /// How many series there are.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Samples in every series together.
    pub fn samples(&self) -> usize {
        self.series
            .values()
            .map(|series| series.samples.len())
            .sum()
    }

    /// The series whose key passes `keep`, sorted by key, at most `limit`, each with its
    /// samples (oldest first); and how many passed `keep` in all.
    pub fn snapshot(&self, keep: impl Fn(&K) -> bool, limit: usize) -> (Vec<(K, Vec<S>)>, usize) {
        let mut keys: Vec<&K> = self.series.keys().filter(|key| keep(key)).collect();
        let total = keys.len();
        keys.sort();
        let chosen = keys
            .into_iter()
            .take(limit)
            .filter_map(|key| {
                self.series
                    .get(key)
                    .map(|series| (key.clone(), series.samples.iter().copied().collect()))
            })
            .collect();
        (chosen, total)
    }
}

/// A quota bucket's key: provider, operation, scope.
pub type BucketId = (String, String, String);
/// A cursor stream's key: account, stream.
pub type StreamId = (String, String);

/// The daemon's short history; one per daemon, shared by the sampler and the HTTP
/// handlers. A std Mutex per family: held for a push or a copy, never across an await.
#[derive(Debug)]
pub struct History {
    /// Seconds between samples, as the sampler was configured (the page shows it).
    pub interval_secs: u64,
    /// The bounds of every family.
    pub limits: SeriesLimits,
    pub buckets: Mutex<Family<BucketId, BucketSample>>,
    pub cursors: Mutex<Family<StreamId, LagSample>>,
    pub queues: Mutex<Family<String, QueueSample>>,
}

impl History {
    /// An empty history sampled every `interval_secs`, keeping one hour per series.
    pub fn new(interval_secs: u64) -> History {
        History::with_limits(interval_secs, SeriesLimits::default())
    }

    /// An empty history with explicit bounds (tests, small daemons).
    pub fn with_limits(interval_secs: u64, limits: SeriesLimits) -> History {
        History {
            interval_secs,
            limits,
            buckets: Mutex::new(Family::new(limits)),
            cursors: Mutex::new(Family::new(limits)),
            queues: Mutex::new(Family::new(limits)),
        }
    }
}

impl History {
    /// How far back a series reaches at most: its window, or fewer seconds when its
    /// sample cap fills first (a short interval).
    pub fn kept_secs(&self) -> u64 {
        let by_samples = self
            .interval_secs
            .saturating_mul(u64::try_from(self.limits.max_samples).unwrap_or(u64::MAX));
        by_samples.min(u64::try_from(self.limits.window_secs).unwrap_or(0))
    }
}

impl Default for History {
    fn default() -> Self {
        History::new(15)
    }
}

/// Locks a family; a poisoned lock (a panic while pushing) still holds valid samples.
pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lag(at: i64) -> LagSample {
        LagSample { at, lag_secs: at }
    }

    fn small(max_samples: usize, max_series: usize, window_secs: i64) -> Family<String, LagSample> {
        Family::new(SeriesLimits {
            max_samples,
            max_series,
            window_secs,
        })
    }

    #[test]
    fn a_series_never_holds_more_than_its_cap() {
        let mut family = small(5, 10, 1_000_000);
        let key = "a".to_string();
        for at in 0..1_000 {
            family.push(&key, lag(at));
            assert!(
                family.samples() <= 5,
                "{} samples at {at}",
                family.samples()
            );
        }
        let (series, total) = family.snapshot(|_| true, 10);
        assert_eq!(total, 1);
        let kept: Vec<i64> = series[0].1.iter().map(|s| s.at).collect();
        assert_eq!(
            kept,
            [995, 996, 997, 998, 999],
            "the newest five, oldest first"
        );
    }

    #[test]
    fn samples_older_than_the_window_are_dropped() {
        let mut family = small(1_000, 10, 3600);
        let key = "a".to_string();
        for at in (0..=7200).step_by(15) {
            family.push(&key, lag(at));
        }
        let (series, _) = family.snapshot(|_| true, 10);
        let samples = &series[0].1;
        assert_eq!(samples.first().map(|s| s.at), Some(3600));
        assert_eq!(samples.last().map(|s| s.at), Some(7200));
        assert_eq!(samples.len(), 241, "one hour at 15 s, both ends included");
    }

    #[test]
    fn a_new_series_beyond_the_cap_evicts_the_least_recently_updated() {
        let mut family = small(10, 3, 3600);
        for (at, key) in ["a", "b", "c"].into_iter().enumerate() {
            family.push(&key.to_string(), lag(at as i64));
        }
        // "a" is updated again, so "b" is now the least recently updated.
        family.push(&"a".to_string(), lag(10));
        family.push(&"d".to_string(), lag(11));
        assert_eq!(family.len(), 3);
        let (series, total) = family.snapshot(|_| true, 10);
        assert_eq!(total, 3);
        let keys: Vec<&str> = series.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(keys, ["a", "c", "d"]);
        for i in 0..10_000 {
            family.push(&format!("k{i}"), lag(100 + i));
            assert!(family.len() <= 3);
        }
        assert!(family.samples() <= 3 * 10);
    }

    #[test]
    fn ten_thousand_series_cap_holds_under_churn() {
        let mut family: Family<String, LagSample> = Family::new(SeriesLimits::default());
        for i in 0..12_000 {
            family.push(&format!("stream-{i:05}"), lag(i));
        }
        assert_eq!(family.len(), DEFAULT_MAX_SERIES);
        let (series, total) = family.snapshot(|_| true, 1);
        assert_eq!(total, DEFAULT_MAX_SERIES);
        assert_eq!(series[0].0, "stream-02000", "the 2,000 oldest were evicted");
    }

    #[test]
    fn a_clock_step_back_restarts_the_series_in_order() {
        let mut family = small(10, 10, 3600);
        let key = "a".to_string();
        family.push(&key, lag(100));
        family.push(&key, lag(200));
        family.push(&key, lag(150));
        let (series, _) = family.snapshot(|_| true, 10);
        let kept: Vec<i64> = series[0].1.iter().map(|s| s.at).collect();
        assert_eq!(kept, [150]);
    }

    #[test]
    fn series_not_updated_within_the_window_are_forgotten() {
        let mut family = small(10, 10, 3600);
        family.push(&"gone".to_string(), lag(0));
        family.push(&"alive".to_string(), lag(4000));
        family.forget_older_than(4000);
        let (series, _) = family.snapshot(|_| true, 10);
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].0, "alive");
    }

    #[test]
    fn snapshot_filters_sorts_and_limits() {
        let mut family = small(10, 10, 3600);
        for key in ["b", "a", "c", "ab"] {
            family.push(&key.to_string(), lag(1));
        }
        let (series, total) = family.snapshot(|key| key.starts_with('a') || key == "c", 2);
        assert_eq!(total, 3);
        let keys: Vec<&str> = series.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(keys, ["a", "ab"]);
    }

    #[test]
    fn kept_is_an_hour_at_15s_and_less_when_the_cap_fills_first() {
        assert_eq!(History::new(15).kept_secs(), 3600);
        assert_eq!(History::new(1).kept_secs(), 240);
        assert_eq!(History::new(60).kept_secs(), 3600);
    }

    #[test]
    fn a_sample_is_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<BucketSample>(), 16);
        assert_eq!(std::mem::size_of::<LagSample>(), 16);
        assert_eq!(std::mem::size_of::<QueueSample>(), 16);
    }
}
