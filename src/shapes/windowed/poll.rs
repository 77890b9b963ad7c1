//! The daemon's one poll schedule for reports in flight, and the report latencies it
//! learns.
//!
//! Why one schedule: a stream keeps up to `max_in_flight` reports in flight and a daemon
//! runs thousands of streams. Instead of a timer per report, a unit waiting for its next
//! getReport registers its due time here and awaits a one-shot wake; one driver task
//! (a root service, restarted by the supervisor like every other) sleeps until the
//! earliest due time and wakes every unit whose poll is due. The entries live in the
//! shared [`PollSchedule`], not in the driver, so a restarted driver serves them all. The
//! getReport call itself still goes through the TokenManager (the woken unit asks it).
//!
//! Latencies are learned per (account, report type); a kind with fewer than
//! [`STUCK_MIN_SAMPLES`] of its own goes by its report type's latest over every account
//! (a restarted daemon, or a steady state of one report an hour per account, would
//! otherwise wait hours for history).
//!
//! When to poll ([`PollSchedule::next_pause`]): a report of a kind never seen is first
//! polled after `poll_min`; one whose type and account have history after
//! [`FIRST_POLL_SHARE`] of the learned median latency. After that the pause grows with the
//! report's age ([`AGE_SHARE`] of it, within `poll_min`..`poll_max`), so a report is seen
//! DONE at most ~15 % after it finished, and a slow one is not polled every few seconds
//! for ten minutes; while a report is younger than its kind's median, no pause goes past
//! the median, so one that takes the usual time is seen as it finishes. The pause is
//! planned again at every poll with what is learned by then, and at once for every
//! waiting report when its type's latency first becomes known
//! ([`PollSchedule::relearned`]).
//!
//! Probes ([`PollSchedule::probe`]): while no report of a type has been seen finished,
//! only [`PROBES_PER_TYPE`] of its reports poll on the age-spaced schedule; every other
//! one polls once per `poll_max` and is woken when the first report of its type finishes
//! (the type's quickest latency is then what it goes by until five are known). A first
//! pass of a thousand accounts requests a thousand reports of one type within a second:
//! polled each on its own, from `poll_min`, they made 12,900–14,100 getReport calls for
//! 1,000 reports (`bench reports --scenario head-of-line-1000`), and 2,400–2,700 with
//! the probes learning for all.
//!
//! Stuck reports ([`PollSchedule::stuck_after`]): a report still IN_QUEUE after
//! [`STUCK_FACTOR`] times the median latency of its kind is cancelled and its window
//! requested again, long before `poll_timeout` (Amazon's stuck reports sit queued for
//! tens of minutes, then end CANCELLED or FATAL); after [`IDLE_STUCK_FACTOR`] times it
//! when the stream has nothing else to request. A queued report's wait for its next poll
//! ends at its limit when that comes first, and when its stream goes idle (the unit's
//! `PollWaiter` in `windowed/mod.rs`), so the age-spaced pause does not delay the find.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The first poll of a report with history comes after this share of the median.
pub const FIRST_POLL_SHARE: f64 = 0.8;
/// Later pauses are this share of the report's age.
pub const AGE_SHARE: f64 = 0.15;
/// A report IN_QUEUE for this many times its kind's median latency is stuck.
pub const STUCK_FACTOR: f64 = 10.0;
/// The same once its stream has nothing left to request (every window of the run is
/// requested or in flight): the createReport token a new request costs would otherwise
/// go unused, and a queued report has produced nothing yet, so cancelling one that was
/// merely slow loses only the time it queued. It shortens the tail a stuck report adds
/// to the end of a backfill and to a steady-state hour.
pub const IDLE_STUCK_FACTOR: f64 = 3.0;
/// Latencies known before a report can be taken for stuck.
pub const STUCK_MIN_SAMPLES: usize = 5;
/// Reports of a type never seen finished that poll on the age-spaced schedule at once
/// ([`PollSchedule::probe`]).
pub const PROBES_PER_TYPE: usize = 3;
/// Latencies remembered per (account, report type).
const LATENCY_SAMPLES: usize = 16;
/// Latencies remembered per report type over every account.
const TYPE_SAMPLES: usize = 64;
/// Report types remembered over every account (beyond: new types are not learned).
const MAX_TYPES: usize = 64;
/// Kinds (account, report type) whose latencies are remembered; the oldest-learned kind
/// is forgotten first beyond this (10,000 accounts with one report type each fit).
const MAX_KINDS: usize = 20_000;

/// Reports waiting for their next poll, and the latencies learned so far.
#[derive(Default)]
pub struct PollSchedule {
    inner: Mutex<Inner>,
    /// Wakes the driver when an entry earlier than its nap is added.
    changed: Notify,
    /// Wakes every report waiting for a poll when a report type's latency becomes known
    /// ([`PollSchedule::relearned`]).
    relearned: Notify,
}

#[derive(Default)]
struct Inner {
    due: BTreeMap<(Instant, u64), oneshot::Sender<()>>,
    sequence: u64,
    latencies: HashMap<(String, String), VecDeque<f64>>,
    learned_order: VecDeque<(String, String)>,
    /// The latest latencies of each report type over every account: what a kind with
    /// too little history of its own goes by (a restarted daemon, an account that
    /// requests one report an hour).
    by_type: HashMap<String, VecDeque<f64>>,
    /// Probes polling now, per report type ([`PollSchedule::probe`]).
    probing: HashMap<String, usize>,
}

/// A report's place among the [`PROBES_PER_TYPE`] probes of its type; the place is given
/// back when the report stops polling (dropped).
pub struct Probe {
    schedule: Arc<PollSchedule>,
    /// `None`: a probe beyond the types counted ([`MAX_TYPES`]), which gives back nothing.
    report_type: Option<String>,
}

impl Drop for Probe {
    fn drop(&mut self) {
        let Some(report_type) = &self.report_type else {
            return;
        };
        let mut inner = self.schedule.lock();
        if let Some(count) = inner.probing.get_mut(report_type) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                inner.probing.remove(report_type);
            }
        }
    }
}

impl PollSchedule {
    pub fn new() -> PollSchedule {
        PollSchedule::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until the schedule wakes this caller at `at` (or later). Returns at once
    /// when `at` has passed. Dropping the future withdraws nothing (the entry is skipped
    /// when due), so it is cancel-safe.
    pub async fn wait_until(&self, at: Instant) {
        if at <= Instant::now() {
            return;
        }
        let (wake, woken) = oneshot::channel();
        let earliest = {
            let mut inner = self.lock();
            inner.sequence = inner.sequence.wrapping_add(1);
            let key = (at, inner.sequence);
            inner.due.insert(key, wake);
            inner.due.keys().next() == Some(&key)
        };
        if earliest {
            self.changed.notify_one();
        }
        // The sender is dropped only by the driver after sending, or with the schedule.
        let _ = woken.await;
    }

    /// Reports waiting for a poll.
    pub fn waiting(&self) -> usize {
        self.lock().due.len()
    }

    /// Wakes every entry that is due and answers when the next one is.
    fn wake_due(&self, now: Instant) -> Option<Instant> {
        let mut inner = self.lock();
        loop {
            let entry = inner.due.first_entry()?;
            if entry.key().0 > now {
                return Some(entry.key().0);
            }
            // A waiter that went away (its run ended) is just skipped.
            let _ = entry.remove().send(());
        }
    }

    /// The driver: wakes due entries until `stop`. One task per daemon runs this (a root
    /// service), so the schedule costs one timer whatever the number of reports.
    pub async fn drive(&self, stop: CancellationToken) {
        loop {
            let next = self.wake_due(Instant::now());
            let nap = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.changed.notified() => {}
                _ = nap => {}
            }
        }
    }

    /// Remembers that a report of `report_type` for `account` took `took` from its
    /// request to being seen finished.
    pub fn learn(&self, account: &str, report_type: &str, took: Duration) {
        let seconds = took.as_secs_f64();
        if !seconds.is_finite() || seconds <= 0.0 {
            return;
        }
        let key = (account.to_string(), report_type.to_string());
        let mut inner = self.lock();
        if !inner.latencies.contains_key(&key) {
            if inner.learned_order.len() >= MAX_KINDS {
                if let Some(oldest) = inner.learned_order.pop_front() {
                    inner.latencies.remove(&oldest);
                }
            }
            inner.learned_order.push_back(key.clone());
        }
        let samples = inner.latencies.entry(key).or_default();
        if samples.len() >= LATENCY_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(seconds);
        let mut known_now = false;
        if inner.by_type.len() < MAX_TYPES || inner.by_type.contains_key(report_type) {
            let samples = inner.by_type.entry(report_type.to_string()).or_default();
            if samples.len() >= TYPE_SAMPLES {
                samples.pop_front();
            }
            samples.push_back(seconds);
            // The type's first latency (what its followers wait for) and its fifth (a
            // median, and stuck limits).
            known_now = samples.len() == 1 || samples.len() == STUCK_MIN_SAMPLES;
        }
        drop(inner);
        if known_now {
            self.relearned.notify_waiters();
        }
    }

    /// Completes when a report type's latency becomes known over every account: when its
    /// first report finished (its followers stop waiting, see [`Self::probe`]) and its
    /// [`STUCK_MIN_SAMPLES`]-th (a median). A report waiting for its next poll then plans
    /// that poll again by what is learned ([`Self::next_pause`]). Without it,
    /// reports requested before any of their type finished (a daemon's first pass: a
    /// thousand accounts at once) would keep their age-spaced pauses, and each would be
    /// seen up to 15 % of its age late. Register (`enable`) before reading the schedule.
    pub fn relearned(&self) -> tokio::sync::futures::Notified<'_> {
        self.relearned.notified()
    }

    /// The latencies a kind goes by: its own once it has [`STUCK_MIN_SAMPLES`], else
    /// its report type's over every account when that has as many, else its own (or
    /// none).
    fn samples<'a>(
        inner: &'a Inner,
        account: &str,
        report_type: &str,
    ) -> Option<&'a VecDeque<f64>> {
        let own = inner
            .latencies
            .get(&(account.to_string(), report_type.to_string()));
        if own.is_some_and(|own| own.len() >= STUCK_MIN_SAMPLES) {
            return own;
        }
        match inner.by_type.get(report_type) {
            Some(shared) if shared.len() >= STUCK_MIN_SAMPLES => Some(shared),
            _ => own,
        }
    }

    /// The median latency learned for `report_type` of `account` (or, while that kind
    /// has fewer than [`STUCK_MIN_SAMPLES`], of the report type over every account), if
    /// any. A kind with no history of its own whose type has fewer than
    /// [`STUCK_MIN_SAMPLES`] goes by the quickest of the type's: no report is then polled
    /// later than the quickest of its type finished, even if that one was a tail.
    pub fn expected(&self, account: &str, report_type: &str) -> Option<Duration> {
        let inner = self.lock();
        let latency = match Self::samples(&inner, account, report_type) {
            Some(samples) => median(samples),
            None => inner
                .by_type
                .get(report_type)
                .and_then(|samples| samples.iter().copied().reduce(f64::min)),
        };
        latency.and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
    }

    /// A place among the probes of `report_type`, while fewer than [`PROBES_PER_TYPE`]
    /// of its reports hold one (`None`: poll as a follower, see the module doc). Only
    /// asked for a report whose type has no latency learned yet.
    pub fn probe(self: &Arc<Self>, report_type: &str) -> Option<Probe> {
        let mut inner = self.lock();
        if !inner.probing.contains_key(report_type) && inner.probing.len() >= MAX_TYPES {
            // Beyond the types counted: every report polls as a probe, uncounted.
            return Some(Probe {
                schedule: Arc::clone(self),
                report_type: None,
            });
        }
        let count = inner.probing.entry(report_type.to_string()).or_default();
        if *count >= PROBES_PER_TYPE {
            return None;
        }
        *count += 1;
        drop(inner);
        Some(Probe {
            schedule: Arc::clone(self),
            report_type: Some(report_type.to_string()),
        })
    }

    /// How long a report of `report_type` for `account` may stay IN_QUEUE before it is
    /// taken for stuck: [`STUCK_FACTOR`] × the learned median, once at least
    /// [`STUCK_MIN_SAMPLES`] latencies are known (`None` before: only `poll_timeout`
    /// applies). Why IN_QUEUE only: a report that started processing is working, and
    /// Amazon cancels only queued reports.
    pub fn stuck_after(&self, account: &str, report_type: &str) -> Option<Duration> {
        self.stuck_after_times(account, report_type, STUCK_FACTOR)
    }

    /// [`Self::stuck_after`] with `factor` times the median instead of [`STUCK_FACTOR`]
    /// (e.g. [`IDLE_STUCK_FACTOR`]); a factor that is not a positive number takes none
    /// for stuck.
    pub fn stuck_after_times(
        &self,
        account: &str,
        report_type: &str,
        factor: f64,
    ) -> Option<Duration> {
        if !(factor.is_finite() && factor > 0.0) {
            return None;
        }
        let inner = self.lock();
        let samples = Self::samples(&inner, account, report_type)?;
        if samples.len() < STUCK_MIN_SAMPLES {
            return None;
        }
        median(samples).and_then(|median| Duration::try_from_secs_f64(median * factor).ok())
    }

    /// The pause before the next poll of a report that is `age` old (since its
    /// createReport answer; `None` when unknown, after a restart) and has been polled
    /// `polls` times, within `poll_min..=poll_max`.
    pub fn next_pause(
        expected: Option<Duration>,
        age: Option<Duration>,
        polls: u32,
        poll_min: Duration,
        poll_max: Duration,
    ) -> Duration {
        let pause = match (expected, age) {
            (Some(expected), Some(age)) => {
                let first = expected.mul_f64(FIRST_POLL_SHARE);
                if age < first {
                    // Not yet near the median: the first poll comes at its share.
                    first - age
                } else if age < expected {
                    // Near it: the age-spaced pause, but no later than the median itself,
                    // so a report that takes as long as its kind usually does is seen then.
                    age.mul_f64(AGE_SHARE).min(expected - age)
                } else {
                    age.mul_f64(AGE_SHARE)
                }
            }
            (None, Some(age)) => age.mul_f64(AGE_SHARE),
            // Age unknown (resumed after a restart): grow from poll_min.
            (_, None) => poll_min.saturating_mul(1u32 << polls.min(10)),
        };
        pause.clamp(poll_min, poll_max.max(poll_min))
    }
}

/// The median of learned latencies (seconds, each finite and positive: see `learn`).
fn median(samples: &VecDeque<f64>) -> Option<f64> {
    let mut sorted: Vec<f64> = samples.iter().copied().collect();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(2);
    const MAX: Duration = Duration::from_secs(60);

    #[test]
    fn a_report_without_history_is_polled_often_enough_to_be_seen_within_a_fifth_of_its_latency() {
        // Walk the schedule of a 20 s report: the poll that sees it DONE comes within
        // 20 % of its latency.
        let latency = Duration::from_secs(20);
        let mut at = Duration::ZERO;
        let mut polls = 0;
        while at < latency {
            at += PollSchedule::next_pause(None, Some(at), polls, MIN, MAX);
            polls += 1;
        }
        assert!(at <= latency.mul_f64(1.2), "seen at {at:?}");
        assert!(polls <= 12, "{polls} polls");
    }

    #[test]
    fn a_learned_latency_moves_the_first_poll_near_it() {
        let schedule = PollSchedule::new();
        for seconds in [50, 60, 70] {
            schedule.learn("acct", "T", Duration::from_secs(seconds));
        }
        let expected = schedule.expected("acct", "T");
        assert_eq!(expected, Some(Duration::from_secs(60)));
        let first = PollSchedule::next_pause(expected, Some(Duration::ZERO), 0, MIN, MAX);
        assert_eq!(first, Duration::from_secs(48));
        assert_eq!(schedule.expected("acct", "other"), None);
    }

    #[test]
    fn a_report_is_taken_for_stuck_only_with_enough_history() {
        let schedule = PollSchedule::new();
        for _ in 0..STUCK_MIN_SAMPLES - 1 {
            schedule.learn("acct", "T", Duration::from_secs(60));
            assert_eq!(schedule.stuck_after("acct", "T"), None);
        }
        schedule.learn("acct", "T", Duration::from_secs(60));
        assert_eq!(
            schedule.stuck_after("acct", "T"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            schedule.stuck_after_times("acct", "T", IDLE_STUCK_FACTOR),
            Some(Duration::from_secs(180))
        );
        assert_eq!(schedule.stuck_after_times("acct", "T", f64::NAN), None);
        assert_eq!(schedule.stuck_after_times("acct", "T", 0.0), None);
    }

    #[test]
    fn a_kind_without_history_goes_by_its_report_type_over_every_account() {
        let schedule = PollSchedule::new();
        for account in ["a", "b", "c", "d", "e"] {
            schedule.learn(account, "T", Duration::from_secs(60));
        }
        // "new" has no report of its own, "a" only one: both go by the type's five.
        assert_eq!(schedule.expected("new", "T"), Some(Duration::from_secs(60)));
        assert_eq!(
            schedule.stuck_after("new", "T"),
            Some(Duration::from_secs(600))
        );
        // Enough history of its own wins over the type's.
        for _ in 0..STUCK_MIN_SAMPLES {
            schedule.learn("own", "T", Duration::from_secs(10));
        }
        assert_eq!(schedule.expected("own", "T"), Some(Duration::from_secs(10)));
        // Another type knows nothing.
        assert_eq!(schedule.expected("new", "U"), None);
        assert_eq!(schedule.stuck_after("new", "U"), None);
    }

    #[test]
    fn pauses_stay_within_bounds() {
        let long = PollSchedule::next_pause(None, Some(Duration::from_secs(3600)), 5, MIN, MAX);
        assert_eq!(long, MAX);
        let unknown = PollSchedule::next_pause(None, None, 40, MIN, MAX);
        assert_eq!(unknown, MAX);
        assert_eq!(PollSchedule::next_pause(None, None, 0, MIN, MAX), MIN);
    }

    // Real time (the crate has no paused clock): short due times, asserted in order and
    // never early.
    #[tokio::test]
    async fn one_driver_wakes_every_waiter_in_due_order_never_early() {
        let schedule = std::sync::Arc::new(PollSchedule::new());
        let stop = CancellationToken::new();
        let driver = {
            let schedule = std::sync::Arc::clone(&schedule);
            let stop = stop.clone();
            tokio::spawn(async move { schedule.drive(stop).await })
        };
        let start = Instant::now();
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for millis in [300u64, 100, 200] {
            let schedule = std::sync::Arc::clone(&schedule);
            let order = std::sync::Arc::clone(&order);
            waiters.push(tokio::spawn(async move {
                let due = start + Duration::from_millis(millis);
                schedule.wait_until(due).await;
                assert!(Instant::now() >= due, "woken before its due time");
                order.lock().unwrap().push(millis);
            }));
        }
        for waiter in waiters {
            tokio::time::timeout(Duration::from_secs(10), waiter)
                .await
                .expect("every waiter is woken")
                .unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![100, 200, 300]);
        assert_eq!(schedule.waiting(), 0);
        stop.cancel();
        driver.await.unwrap();
    }

    #[test]
    fn latencies_are_bounded_per_kind_and_in_kinds() {
        let schedule = PollSchedule::new();
        for n in 0..(LATENCY_SAMPLES as u64 * 2) {
            schedule.learn("a", "T", Duration::from_secs(n + 1));
        }
        let inner = schedule.lock();
        assert_eq!(
            inner.latencies[&("a".to_string(), "T".to_string())].len(),
            LATENCY_SAMPLES
        );
    }

    #[test]
    fn no_pause_goes_past_the_median_of_a_report_younger_than_it() {
        let expected = Some(Duration::from_secs(60));
        // At 55 s, 15 % of the age (8.25 s) would pass the median: the poll comes at 60 s.
        let near = PollSchedule::next_pause(expected, Some(Duration::from_secs(55)), 3, MIN, MAX);
        assert_eq!(near, Duration::from_secs(5));
        // Past the median, 15 % of the age again.
        let past = PollSchedule::next_pause(expected, Some(Duration::from_secs(80)), 4, MIN, MAX);
        assert_eq!(past, Duration::from_secs(12));
        // Long before 80 % of it, even after polls (planned again once learned): at 48 s.
        let early = PollSchedule::next_pause(expected, Some(Duration::from_secs(10)), 5, MIN, MAX);
        assert_eq!(early, Duration::from_secs(38));
        // Never below poll_min, however close the median.
        let close =
            PollSchedule::next_pause(expected, Some(Duration::from_millis(59_900)), 6, MIN, MAX);
        assert_eq!(close, MIN);
    }

    /// Whether `notified` completes within 50 ms.
    async fn heard(notified: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>) -> bool {
        tokio::time::timeout(Duration::from_millis(50), notified)
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn waiting_reports_hear_when_their_type_becomes_known() {
        let schedule = PollSchedule::new();
        // The type's first latency wakes (its followers stop waiting for poll_max).
        let first = schedule.relearned();
        tokio::pin!(first);
        first.as_mut().enable();
        schedule.learn("a", "T", Duration::from_secs(60));
        assert!(heard(first).await, "not woken by the type's first latency");
        // The second to fourth do not; the fifth (a median, stuck limits) does.
        let fifth = schedule.relearned();
        tokio::pin!(fifth);
        fifth.as_mut().enable();
        for _ in 1..STUCK_MIN_SAMPLES - 1 {
            schedule.learn("a", "T", Duration::from_secs(60));
        }
        assert!(
            !heard(fifth.as_mut()).await,
            "woken before the fifth latency"
        );
        schedule.learn("b", "T", Duration::from_secs(60));
        assert!(heard(fifth).await, "not woken by the fifth latency");
        // Later latencies of a known type do not wake.
        let later = schedule.relearned();
        tokio::pin!(later);
        later.as_mut().enable();
        schedule.learn("c", "T", Duration::from_secs(60));
        assert!(!heard(later).await);
    }

    #[test]
    fn only_a_few_reports_of_a_new_type_probe_and_a_finished_one_gives_its_place_back() {
        let schedule = Arc::new(PollSchedule::new());
        let mut probes: Vec<Probe> = (0..PROBES_PER_TYPE)
            .map(|_| schedule.probe("T").expect("a place"))
            .collect();
        assert!(schedule.probe("T").is_none(), "a probe beyond the limit");
        // Another type has places of its own.
        let other = schedule.probe("U").expect("another type's place");
        drop(probes.pop());
        let again = schedule.probe("T").expect("the place given back");
        assert!(schedule.probe("T").is_none());
        drop((other, again));
        assert_eq!(schedule.lock().probing.get("U"), None);
    }

    #[test]
    fn a_type_with_fewer_than_five_latencies_is_expected_at_its_quickest() {
        let schedule = PollSchedule::new();
        assert_eq!(schedule.expected("new", "T"), None);
        for (account, seconds) in [("a", 300), ("b", 45), ("c", 90)] {
            schedule.learn(account, "T", Duration::from_secs(seconds));
        }
        // No history of its own: the type's quickest, not a median of three.
        assert_eq!(schedule.expected("new", "T"), Some(Duration::from_secs(45)));
        // A kind with history of its own goes by it.
        assert_eq!(schedule.expected("a", "T"), Some(Duration::from_secs(300)));
        // Five of the type: their median.
        for account in ["d", "e"] {
            schedule.learn(account, "T", Duration::from_secs(60));
        }
        assert_eq!(schedule.expected("new", "T"), Some(Duration::from_secs(60)));
    }
}
