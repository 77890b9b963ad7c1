//! What the TokenManager learned from 429s: each bucket's corrected burst and the
//! recent 429s that decide when a correction escalates to the hard stop.

use super::*;

/// Per bucket: the recent 429s (the escalation rule), how many there were, and the
/// burst before the first correction. Bounded: one entry per bucket the manager uses,
/// at most [`crate::quota::THROTTLE_ESCALATE_AFTER`] instants each.
#[derive(Default)]
pub(super) struct Corrections {
    buckets: HashMap<BucketKey, CorrectionLog>,
}

pub(super) struct CorrectionLog {
    recent: std::collections::VecDeque<Instant>,
    total: u64,
    configured_burst: f64,
    burst: f64,
}

impl Corrections {
    pub(super) fn entry(&mut self, key: &BucketKey, burst: f64) -> &mut CorrectionLog {
        self.buckets
            .entry(key.clone())
            .or_insert_with(|| CorrectionLog {
                recent: std::collections::VecDeque::new(),
                total: 0,
                configured_burst: burst,
                burst,
            })
    }

    /// Records the burst a correction left (`before` is the configured one the first time).
    pub(super) fn note_burst(&mut self, key: &BucketKey, before: f64, after: f64) {
        self.entry(key, before).burst = after;
    }

    /// Records a 429 at `now`; returns how many fell within the escalation window.
    pub(super) fn throttled(
        &mut self,
        key: &BucketKey,
        configured_burst: f64,
        now: Instant,
    ) -> usize {
        let log = self.entry(key, configured_burst);
        log.total = log.total.saturating_add(1);
        log.recent.push_back(now);
        while log.recent.len() > crate::quota::THROTTLE_ESCALATE_AFTER
            || log.recent.front().is_some_and(|first| {
                now.saturating_duration_since(*first) > crate::quota::THROTTLE_ESCALATE_WINDOW
            })
        {
            log.recent.pop_front();
        }
        let recent = log.recent.len();
        if recent >= crate::quota::THROTTLE_ESCALATE_AFTER {
            // The hard stop starts: the next 429 after it counts from one again.
            log.recent.clear();
        }
        recent
    }

    /// The burst before the first correction (0 for a bucket never corrected).
    pub(super) fn configured_burst_of(&self, key: &BucketKey) -> f64 {
        self.buckets
            .get(key)
            .map_or(0.0, |log| log.configured_burst)
    }

    pub(super) fn burst_of(&self, key: &BucketKey) -> f64 {
        self.buckets.get(key).map_or(0.0, |log| log.burst)
    }

    /// `view` with the configured burst and the count of corrections filled in.
    pub(super) fn annotate(&self, key: &BucketKey, mut view: BucketView) -> BucketView {
        match self.buckets.get(key) {
            Some(log) => {
                view.configured_burst = log.configured_burst;
                view.corrections = log.total;
            }
            None => {
                view.configured_burst = view.burst;
                view.corrections = 0;
            }
        }
        view
    }
}
