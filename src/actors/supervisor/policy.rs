//! The restart policy of the [`AccountsSupervisor`](super::AccountsSupervisor): pure
//! decisions with the time passed in, so every rule is unit- and property-tested without
//! an actor or a clock.
//!
//! Purpose: decide, for one crash, whether a child is restarted after a backoff or
//! quarantined, and whether the whole fleet is failing at once (then restarts halt for a
//! while instead of cycling every account).
//!
//! Options ([`RestartPolicy`], the `[supervisor]` table of the configuration; durations
//! in humantime form such as `30s` or `10m`; unknown keys are errors):
//! - backoff, Akka style: `min(max_backoff, min_backoff·2^n)·(1 + rand·random_factor)`
//!   where `n` is the number of consecutive crashes before this one (the first crash waits
//!   about `min_backoff`). `n` goes back to 0 once an incarnation ran `reset_after` without
//!   crashing.
//! - quarantine: more than `max_crashes` crashes within `crash_window` quarantine that
//!   child (and only that child) until `probe_after` from now; a probe incarnation that
//!   crashes before it ran `reset_after` is quarantined again straight away.
//! - stuck detection: a child that is busy and whose progress counter did not move for
//!   `stuck_after` is killed (checked every `heartbeat`).
//! - mass failure: [`RestartPolicy::mass_failure_threshold`] *different* children crashing
//!   within `mass_failure_window` halt restarts for `mass_failure_pause`.
//!
//! Emits: nothing. No I/O, no logging; the supervisor logs the verdicts.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

/// How the supervisor restarts, quarantines and halts. `Default` is the production policy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestartPolicy {
    /// Backoff after the first crash (before jitter).
    #[serde(with = "humantime_serde")]
    pub min_backoff: Duration,
    /// Upper bound of the exponential part of the backoff (jitter may add `random_factor` on top).
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Jitter: the backoff is multiplied by `1 + rand·random_factor`, rand in [0, 1).
    /// Spreads restarts of children that crashed together.
    pub random_factor: f64,
    /// An incarnation that ran this long without crashing resets the backoff exponent.
    #[serde(with = "humantime_serde")]
    pub reset_after: Duration,
    /// More than this many crashes within `crash_window` quarantine the child.
    pub max_crashes: u32,
    #[serde(with = "humantime_serde")]
    pub crash_window: Duration,
    /// How long a quarantined child waits before it is probed (restarted once).
    #[serde(with = "humantime_serde")]
    pub probe_after: Duration,
    /// A busy child whose progress counter did not move for this long is killed.
    #[serde(with = "humantime_serde")]
    pub stuck_after: Duration,
    /// Period of the supervisor's own tick: stuck detection, probes, resume requests,
    /// persistence.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Configured number of different children whose crashes within `mass_failure_window`
    /// count as a mass failure; the effective number depends on the child count, see
    /// [`RestartPolicy::mass_failure_threshold`].
    pub mass_failure_children: usize,
    #[serde(with = "humantime_serde")]
    pub mass_failure_window: Duration,
    /// How long restarts halt after a mass failure.
    #[serde(with = "humantime_serde")]
    pub mass_failure_pause: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5 * 60),
            random_factor: 0.2,
            reset_after: Duration::from_secs(10 * 60),
            max_crashes: 5,
            crash_window: Duration::from_secs(10 * 60),
            probe_after: Duration::from_secs(60 * 60),
            stuck_after: Duration::from_secs(15 * 60),
            heartbeat: Duration::from_secs(30),
            mass_failure_children: 3,
            mass_failure_window: Duration::from_secs(60),
            mass_failure_pause: Duration::from_secs(5 * 60),
        }
    }
}

/// A policy that cannot work, naming the key and the fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error("supervisor.{key}: must be greater than zero; use a form like 30s")]
    Zero { key: &'static str },
    #[error(
        "supervisor.min_backoff ({min}) is larger than supervisor.max_backoff ({max}); lower min_backoff or raise max_backoff"
    )]
    BackoffOrder { min: String, max: String },
    #[error("supervisor.random_factor: {value} is not a number between 0 and 1; use e.g. 0.2")]
    RandomFactor { value: f64 },
}

/// How many children run or may run, below which the mass-failure threshold follows the
/// fleet size instead of the configured count.
const SMALL_FLEET: usize = 6;

impl RestartPolicy {
    /// Checks what the supervisor relies on (a zero heartbeat would panic the interval timer).
    pub fn validate(&self) -> Result<(), PolicyError> {
        let must_be_positive = [
            ("min_backoff", self.min_backoff),
            ("max_backoff", self.max_backoff),
            ("crash_window", self.crash_window),
            ("probe_after", self.probe_after),
            ("stuck_after", self.stuck_after),
            ("heartbeat", self.heartbeat),
            ("mass_failure_window", self.mass_failure_window),
        ];
        if let Some((key, _)) = must_be_positive.iter().find(|(_, value)| value.is_zero()) {
            return Err(PolicyError::Zero { key });
        }
        if self.min_backoff > self.max_backoff {
            return Err(PolicyError::BackoffOrder {
                min: humantime::format_duration(self.min_backoff).to_string(),
                max: humantime::format_duration(self.max_backoff).to_string(),
            });
        }
        if !(0.0..=1.0).contains(&self.random_factor) {
            return Err(PolicyError::RandomFactor {
                value: self.random_factor,
            });
        }
        Ok(())
    }

    /// The backoff before the next restart: `min(max, min·2^n)·(1 + unit_random·random_factor)`.
    ///
    /// `previous_consecutive_crashes` is `n`, the crashes in a row before this one (0 for
    /// the first crash); `unit_random` is a number in [0, 1) (clamped). Never overflows.
    pub fn backoff(&self, previous_consecutive_crashes: u32, unit_random: f64) -> Duration {
        let exponential = match 1u32.checked_shl(previous_consecutive_crashes) {
            Some(factor) => self.min_backoff.saturating_mul(factor),
            None => self.max_backoff,
        };
        let capped = exponential.min(self.max_backoff);
        let jitter = unit_random.clamp(0.0, 1.0) * self.random_factor;
        if jitter.is_nan() || jitter <= 0.0 {
            return capped;
        }
        Duration::try_from_secs_f64(capped.as_secs_f64() * (1.0 + jitter))
            .map_or(capped, |jittered| jittered.max(capped))
    }

    /// How many *different* children must crash within `mass_failure_window` for a mass
    /// failure, given how many children the supervisor has.
    ///
    /// The configured `mass_failure_children`, raised to at least half of the children
    /// (rounded up) when there are fewer than 6, never more than the number of children,
    /// and never less than 2 (one child crash-looping is a poison account, which
    /// quarantine handles). So with the default 3: 2 children → 2, 3..=5 → 3, 6+ → 3;
    /// a single child never triggers it.
    pub fn mass_failure_threshold(&self, child_count: usize) -> usize {
        let mut threshold = self.mass_failure_children;
        if child_count < SMALL_FLEET {
            threshold = threshold.max(child_count.div_ceil(2));
        }
        threshold.min(child_count).max(2)
    }
}

/// What happens after one crash of one child.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CrashVerdict {
    /// Restart after `backoff`; `consecutive_crashes` counts this crash.
    Restart {
        backoff: Duration,
        consecutive_crashes: u32,
    },
    /// Do not restart; probe again at `probe_at`.
    Quarantine {
        probe_at: Instant,
        /// Crashes counted within `crash_window`, this one included.
        crashes_in_window: usize,
        /// The crash was a probe incarnation failing again.
        probe_failed: bool,
    },
}

/// One child's crash history: the input of its [`CrashVerdict`]s.
#[derive(Debug, Clone, Default)]
pub struct CrashHistory {
    consecutive_crashes: u32,
    /// Crash times within the last `crash_window`, oldest first.
    recent_crashes: VecDeque<Instant>,
    /// When the current incarnation started, if one runs.
    running_since_opt: Option<Instant>,
    /// The current incarnation is a probe out of quarantine.
    probing: bool,
}

impl CrashHistory {
    /// A new incarnation started at `now`.
    pub fn started(&mut self, now: Instant) {
        self.running_since_opt = Some(now);
    }

    /// A probe incarnation (out of quarantine) started at `now`.
    pub fn probe_started(&mut self, now: Instant) {
        self.probing = true;
        self.running_since_opt = Some(now);
    }

    /// Forgets every crash (an operator resumed the child).
    pub fn clear(&mut self) {
        *self = CrashHistory::default();
    }

    pub fn consecutive_crashes(&self) -> u32 {
        self.consecutive_crashes
    }

    pub fn is_probing(&self) -> bool {
        self.probing
    }

    /// Crashes counted within the window as of the last crash.
    pub fn crashes_in_window(&self) -> usize {
        self.recent_crashes.len()
    }

    /// Records a crash at `now` and decides what follows. `unit_random` in [0, 1) feeds
    /// the jitter.
    pub fn on_crash(
        &mut self,
        policy: &RestartPolicy,
        now: Instant,
        unit_random: f64,
    ) -> CrashVerdict {
        let ran_healthy = self
            .running_since_opt
            .take()
            .is_some_and(|since| now.saturating_duration_since(since) >= policy.reset_after);
        if ran_healthy {
            self.consecutive_crashes = 0;
            self.probing = false;
        }
        self.recent_crashes.push_back(now);
        while let Some(oldest) = self.recent_crashes.front() {
            if now.saturating_duration_since(*oldest) < policy.crash_window {
                break;
            }
            self.recent_crashes.pop_front();
        }
        let previous_consecutive = self.consecutive_crashes;
        self.consecutive_crashes = self.consecutive_crashes.saturating_add(1);
        let crashes_in_window = self.recent_crashes.len();
        let too_many =
            u64::try_from(crashes_in_window).unwrap_or(u64::MAX) > u64::from(policy.max_crashes);
        if self.probing || too_many {
            return CrashVerdict::Quarantine {
                probe_at: instant_after(now, policy.probe_after),
                crashes_in_window,
                probe_failed: self.probing,
            };
        }
        CrashVerdict::Restart {
            backoff: policy.backoff(previous_consecutive, unit_random),
            consecutive_crashes: self.consecutive_crashes,
        }
    }
}

/// Restarts halt until `until` because `failed_children` different children crashed
/// within the mass-failure window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Halt {
    pub until: Instant,
    pub failed_children: usize,
}

/// Watches crashes across all children for a mass failure (typically infrastructure:
/// every account failing at once must not push every account into quarantine).
#[derive(Debug, Clone, Default)]
pub struct MassFailureDetector {
    /// (crash time, child id) within the last `mass_failure_window`, oldest first.
    recent: VecDeque<(Instant, String)>,
    halted_until_opt: Option<Instant>,
}

impl MassFailureDetector {
    /// Records a crash of `child_id` at `now`; returns the halt it starts, if any. Crashes
    /// while already halted are not recorded (they are part of the same failure).
    pub fn record_crash(
        &mut self,
        policy: &RestartPolicy,
        child_count: usize,
        child_id: &str,
        now: Instant,
    ) -> Option<Halt> {
        if self.is_halted(now) {
            return None;
        }
        self.recent.push_back((now, child_id.to_string()));
        while let Some((oldest, _)) = self.recent.front() {
            if now.saturating_duration_since(*oldest) < policy.mass_failure_window {
                break;
            }
            self.recent.pop_front();
        }
        let failed_children = self
            .recent
            .iter()
            .map(|(_, id)| id.as_str())
            .collect::<HashSet<_>>()
            .len();
        if failed_children < policy.mass_failure_threshold(child_count) {
            return None;
        }
        let until = instant_after(now, policy.mass_failure_pause);
        self.halted_until_opt = Some(until);
        self.recent.clear();
        Some(Halt {
            until,
            failed_children,
        })
    }

    /// Restarts are halted at `now`.
    pub fn is_halted(&self, now: Instant) -> bool {
        self.halted_until_opt.is_some_and(|until| now < until)
    }

    pub fn halted_until(&self) -> Option<Instant> {
        self.halted_until_opt
    }

    /// Ends a halt whose pause is over; true when one ended (restarts resume now).
    pub fn end_expired_halt(&mut self, now: Instant) -> bool {
        match self.halted_until_opt {
            Some(until) if now >= until => {
                self.halted_until_opt = None;
                self.recent.clear();
                true
            }
            _ => false,
        }
    }
}

/// `now + duration`, saturating at a far-away instant instead of overflowing.
pub fn instant_after(now: Instant, duration: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(duration)
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(value: u64) -> Duration {
        Duration::from_secs(value)
    }

    #[test]
    fn default_policy_is_valid_and_matches_the_documented_values() {
        let policy = RestartPolicy::default();
        assert_eq!(policy.validate(), Ok(()));
        assert_eq!(policy.min_backoff, secs(1));
        assert_eq!(policy.max_backoff, secs(300));
        assert_eq!(policy.max_crashes, 5);
        assert_eq!(policy.probe_after, secs(3600));
        assert_eq!(policy.heartbeat, secs(30));
    }

    #[test]
    fn policy_deserializes_humantime_durations_and_refuses_unknown_keys() {
        let policy: RestartPolicy = serde_json::from_str(
            r#"{"min_backoff": "2s", "max_backoff": "10m", "mass_failure_children": 4}"#,
        )
        .unwrap();
        assert_eq!(policy.min_backoff, secs(2));
        assert_eq!(policy.max_backoff, secs(600));
        assert_eq!(policy.mass_failure_children, 4);
        assert_eq!(policy.reset_after, secs(600), "missing keys take defaults");
        let unknown = serde_json::from_str::<RestartPolicy>(r#"{"min_bakoff": "2s"}"#);
        assert!(unknown.unwrap_err().to_string().contains("min_bakoff"));
    }

    #[test]
    fn validate_names_the_bad_key() {
        let zero_heartbeat = RestartPolicy {
            heartbeat: Duration::ZERO,
            ..RestartPolicy::default()
        };
        assert_eq!(
            zero_heartbeat.validate(),
            Err(PolicyError::Zero { key: "heartbeat" })
        );
        let inverted = RestartPolicy {
            min_backoff: secs(10),
            max_backoff: secs(1),
            ..RestartPolicy::default()
        };
        assert!(inverted
            .validate()
            .unwrap_err()
            .to_string()
            .contains("min_backoff (10s)"));
        let jitter = RestartPolicy {
            random_factor: f64::NAN,
            ..RestartPolicy::default()
        };
        assert!(matches!(
            jitter.validate(),
            Err(PolicyError::RandomFactor { .. })
        ));
    }

    #[test]
    fn backoff_doubles_from_min_and_caps_at_max() {
        let policy = RestartPolicy::default();
        assert_eq!(policy.backoff(0, 0.0), secs(1));
        assert_eq!(policy.backoff(1, 0.0), secs(2));
        assert_eq!(policy.backoff(5, 0.0), secs(32));
        assert_eq!(policy.backoff(9, 0.0), secs(300));
        assert_eq!(policy.backoff(200, 0.0), secs(300));
        assert_eq!(policy.backoff(200, 1.0), secs(360));
        assert_eq!(policy.backoff(0, 0.5), Duration::from_millis(1100));
    }

    #[test]
    fn first_crash_restarts_after_min_backoff() {
        let policy = RestartPolicy::default();
        let now = Instant::now();
        let mut history = CrashHistory::default();
        history.started(now);
        let verdict = history.on_crash(&policy, now + secs(5), 0.0);
        assert_eq!(
            verdict,
            CrashVerdict::Restart {
                backoff: secs(1),
                consecutive_crashes: 1
            }
        );
    }

    #[test]
    fn backoff_resets_after_a_healthy_run() {
        let policy = RestartPolicy {
            max_crashes: 100,
            ..RestartPolicy::default()
        };
        let start = Instant::now();
        let mut history = CrashHistory::default();
        let mut now = start;
        for _ in 0..4 {
            history.started(now);
            now += secs(1);
            history.on_crash(&policy, now, 0.0);
        }
        assert_eq!(history.consecutive_crashes(), 4);
        history.started(now);
        now += policy.reset_after;
        let verdict = history.on_crash(&policy, now, 0.0);
        assert_eq!(
            verdict,
            CrashVerdict::Restart {
                backoff: secs(1),
                consecutive_crashes: 1
            }
        );
    }

    #[test]
    fn more_than_max_crashes_within_the_window_quarantines() {
        let policy = RestartPolicy::default();
        let start = Instant::now();
        let mut history = CrashHistory::default();
        for crash in 0..5u64 {
            history.started(start + secs(crash * 10));
            let verdict = history.on_crash(&policy, start + secs(crash * 10 + 1), 0.0);
            assert!(
                matches!(verdict, CrashVerdict::Restart { .. }),
                "{verdict:?}"
            );
        }
        history.started(start + secs(60));
        let verdict = history.on_crash(&policy, start + secs(61), 0.0);
        assert_eq!(
            verdict,
            CrashVerdict::Quarantine {
                probe_at: start + secs(61) + policy.probe_after,
                crashes_in_window: 6,
                probe_failed: false,
            }
        );
    }

    #[test]
    fn crashes_spread_wider_than_the_window_never_quarantine() {
        let policy = RestartPolicy::default();
        let start = Instant::now();
        let mut history = CrashHistory::default();
        for crash in 0..50u64 {
            let at = start + policy.crash_window / 5 * u32::try_from(crash).unwrap();
            history.started(at);
            let verdict = history.on_crash(&policy, at + Duration::from_millis(1), 0.0);
            assert!(
                matches!(verdict, CrashVerdict::Restart { .. }),
                "{verdict:?}"
            );
        }
    }

    #[test]
    fn a_failed_probe_quarantines_again_and_a_healthy_probe_clears_probing() {
        let policy = RestartPolicy::default();
        let start = Instant::now();
        let mut history = CrashHistory::default();
        history.probe_started(start);
        let verdict = history.on_crash(&policy, start + secs(1), 0.0);
        assert!(matches!(
            verdict,
            CrashVerdict::Quarantine {
                probe_failed: true,
                ..
            }
        ));
        history.probe_started(start + secs(3600));
        let verdict = history.on_crash(&policy, start + secs(3600) + policy.reset_after, 0.0);
        assert!(
            matches!(verdict, CrashVerdict::Restart { .. }),
            "{verdict:?}"
        );
        assert!(!history.is_probing());
    }

    #[test]
    fn mass_failure_threshold_follows_small_fleets() {
        let policy = RestartPolicy::default();
        let thresholds: Vec<usize> = (0..=8)
            .map(|count| policy.mass_failure_threshold(count))
            .collect();
        assert_eq!(thresholds, vec![2, 2, 2, 3, 3, 3, 3, 3, 3]);
        let eager = RestartPolicy {
            mass_failure_children: 1,
            ..RestartPolicy::default()
        };
        assert_eq!(eager.mass_failure_threshold(5), 3);
        assert_eq!(eager.mass_failure_threshold(100), 2);
    }

    #[test]
    fn mass_failure_needs_different_children_within_the_window() {
        let policy = RestartPolicy::default();
        let start = Instant::now();
        let mut detector = MassFailureDetector::default();
        for second in 0..10 {
            assert_eq!(
                detector.record_crash(&policy, 10, "poison", start + secs(second)),
                None
            );
        }
        assert_eq!(
            detector.record_crash(&policy, 10, "a", start + secs(10)),
            None
        );
        // "poison" at 9s and "a" at 10s are within the window; "b" at 70s is not.
        assert_eq!(
            detector.record_crash(&policy, 10, "b", start + secs(70)),
            None
        );
        assert_eq!(
            detector.record_crash(&policy, 10, "c", start + secs(71)),
            None
        );
        let halt = detector.record_crash(&policy, 10, "d", start + secs(72));
        assert_eq!(
            halt,
            Some(Halt {
                until: start + secs(72) + policy.mass_failure_pause,
                failed_children: 3
            })
        );
        assert!(detector.is_halted(start + secs(100)));
        assert_eq!(
            detector.record_crash(&policy, 10, "e", start + secs(100)),
            None
        );
        assert!(!detector.end_expired_halt(start + secs(100)));
        assert!(detector.end_expired_halt(start + secs(72) + policy.mass_failure_pause));
        assert!(!detector.is_halted(start + secs(72) + policy.mass_failure_pause));
        assert_eq!(
            detector.record_crash(&policy, 10, "f", start + secs(400)),
            None,
            "the crashes before the halt do not count again"
        );
    }

    proptest! {
        #[test]
        fn backoff_stays_within_its_bounds(
            min_ms in 1u64..10_000,
            extra_ms in 0u64..1_000_000,
            factor in 0.0f64..=1.0,
            crashes in 0u32..1_000,
            unit_random in 0.0f64..1.0,
        ) {
            let policy = RestartPolicy {
                min_backoff: Duration::from_millis(min_ms),
                max_backoff: Duration::from_millis(min_ms + extra_ms),
                random_factor: factor,
                ..RestartPolicy::default()
            };
            let exponential = if crashes >= 32 {
                policy.max_backoff
            } else {
                policy.min_backoff.saturating_mul(1 << crashes).min(policy.max_backoff)
            };
            let backoff = policy.backoff(crashes, unit_random);
            prop_assert!(backoff >= exponential);
            let upper = exponential.as_secs_f64() * (1.0 + factor) + 1e-6;
            prop_assert!(backoff.as_secs_f64() <= upper, "{backoff:?} > {upper}");
            prop_assert!(policy.backoff(crashes.saturating_add(1), unit_random) >= backoff);
        }

        #[test]
        fn quarantine_exactly_when_the_window_holds_more_than_max_crashes(
            gaps_ms in proptest::collection::vec(1u64..120_000, 1..40),
            max_crashes in 0u32..8,
            window_s in 1u64..600,
        ) {
            let policy = RestartPolicy {
                max_crashes,
                crash_window: secs(window_s),
                reset_after: secs(100_000),
                ..RestartPolicy::default()
            };
            let start = Instant::now();
            let mut history = CrashHistory::default();
            let mut now = start;
            let mut crash_times = Vec::new();
            for gap in gaps_ms {
                history.started(now);
                now += Duration::from_millis(gap);
                crash_times.push(now);
                let in_window = crash_times
                    .iter()
                    .filter(|at| now.saturating_duration_since(**at) < policy.crash_window)
                    .count();
                let verdict = history.on_crash(&policy, now, 0.5);
                let expect_quarantine = in_window > max_crashes as usize;
                match verdict {
                    CrashVerdict::Quarantine { crashes_in_window, probe_at, .. } => {
                        prop_assert!(expect_quarantine);
                        prop_assert_eq!(crashes_in_window, in_window);
                        prop_assert_eq!(probe_at, now + policy.probe_after);
                        break;
                    }
                    CrashVerdict::Restart { .. } => prop_assert!(!expect_quarantine),
                }
            }
        }

        #[test]
        fn mass_failure_threshold_is_sane(configured in 0usize..20, children in 0usize..50) {
            let policy = RestartPolicy {
                mass_failure_children: configured,
                ..RestartPolicy::default()
            };
            let threshold = policy.mass_failure_threshold(children);
            prop_assert!(threshold >= 2);
            if children >= 2 {
                prop_assert!(threshold <= children);
            }
            if (2..6).contains(&children) {
                prop_assert!(threshold >= children.div_ceil(2));
            }
            if children >= 6 && configured >= 2 {
                prop_assert_eq!(threshold, configured.min(children));
            }
        }

        #[test]
        fn one_child_alone_never_halts_the_fleet(
            crashes in proptest::collection::vec(0u64..10_000, 1..100),
            children in 1usize..20,
        ) {
            let policy = RestartPolicy::default();
            let start = Instant::now();
            let mut detector = MassFailureDetector::default();
            let mut offsets = crashes;
            offsets.sort_unstable();
            for offset in offsets {
                let halt = detector.record_crash(&policy, children, "poison", start + Duration::from_millis(offset));
                prop_assert_eq!(halt, None);
            }
        }
    }
}
