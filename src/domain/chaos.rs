//! Crash drills (`[chaos]` in the configuration): make one named account's actor panic,
//! or freeze without progress, when it handles its Nth unit (or every unit), so operators
//! and tests can prove on the real binary that one poison account only takes itself down;
//! or make it pause before its Nth apply (a stall between a downloaded document and its
//! write, as a long GC pause or a frozen host makes), to prove that a write whose lease
//! was taken over meanwhile is refused by the store's fence;
//! or make one infrastructure service (`housekeeping`, `cooldown-watch`, `token-manager`)
//! panic on its Nth step (or every step), to prove the root restarts it and escalates only when its restart
//! budget is spent.
//!
//! Off unless the configuration says `enabled = true`; counts are per process, shared
//! by every incarnation of the account's actor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What the drill does to the account's actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChaosAction {
    Panic,
    /// Blocks the unit forever without bumping progress: stuck detection's business.
    Freeze,
    /// Pauses for this long right before the Nth apply (counted in applies, not units),
    /// deaf to cancellation like a stalled thread, then writes with the fence it had.
    PauseBeforeApply(Duration),
}

/// The longest `pause` a `pause_before_apply` drill may ask for.
pub const PAUSE_MAX: Duration = Duration::from_secs(600);

/// Which units trigger the drill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChaosWhen {
    EveryUnit,
    /// The Nth unit the account handles in this process (1-based).
    NthUnit(u64),
}

/// What the drill's name names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChaosTarget {
    /// An account's actor (its stream units).
    Account,
    /// An infrastructure service of the root (its periodic steps); see [`SERVICES`].
    Service,
}

/// The infrastructure services a drill may target.
pub const SERVICES: &[&str] = &[
    "housekeeping",
    "cooldown-watch",
    "token-manager",
    "freshness",
    "wal-checkpoint",
];

#[derive(Debug)]
pub struct Chaos {
    /// The account id, or the service name (see `target`).
    pub account: String,
    pub target: ChaosTarget,
    pub action: ChaosAction,
    pub when: ChaosWhen,
    /// Units handled so far by the account in this process.
    units: AtomicU64,
}

impl Chaos {
    pub fn new(account: String, action: ChaosAction, when: ChaosWhen) -> Chaos {
        Chaos::targeting(ChaosTarget::Account, account, action, when)
    }

    /// A drill against an account or a service.
    pub fn targeting(
        target: ChaosTarget,
        name: String,
        action: ChaosAction,
        when: ChaosWhen,
    ) -> Chaos {
        Chaos {
            account: name,
            target,
            action,
            when,
            units: AtomicU64::new(0),
        }
    }

    /// Counts one event of `account` and says whether it is the one the drill names.
    fn count(&self, account: &str) -> Option<u64> {
        if self.target != ChaosTarget::Account || account != self.account {
            return None;
        }
        let unit = self.units.fetch_add(1, Ordering::Relaxed) + 1;
        let triggered = match self.when {
            ChaosWhen::EveryUnit => true,
            ChaosWhen::NthUnit(nth) => unit == nth,
        };
        triggered.then_some(unit)
    }

    /// Called as `account` starts a unit; panics or freezes when the drill says so.
    pub async fn on_unit(&self, account: &str) {
        if matches!(self.action, ChaosAction::PauseBeforeApply(_)) {
            return;
        }
        let Some(unit) = self.count(account) else {
            return;
        };
        match self.action {
            // Called inside the stream's span, which names the account.
            ChaosAction::Panic => {
                tracing::warn!(unit, "chaos drill: panicking");
                panic!("chaos drill: account {account} panics on unit {unit}");
            }
            ChaosAction::Freeze => {
                tracing::warn!(unit, "chaos drill: freezing without progress");
                std::future::pending::<()>().await;
            }
            ChaosAction::PauseBeforeApply(_) => {}
        }
    }

    /// Called as `account` is about to apply a downloaded document (after its last lease
    /// check); pauses when the drill says so. The pause ignores cancellation: the write
    /// that follows carries the fence of the lease the unit started under.
    pub async fn before_apply(&self, account: &str) {
        let ChaosAction::PauseBeforeApply(pause) = self.action else {
            return;
        };
        let Some(apply) = self.count(account) else {
            return;
        };
        tracing::warn!(
            apply,
            pause_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
            "chaos drill: pausing before apply"
        );
        tokio::time::sleep(pause).await;
        tracing::warn!(apply, "chaos drill: pause over; applying");
    }
}

impl Chaos {
    /// Called as the infrastructure service `service` starts a step (a housekeeping pass,
    /// a cooldown-watch read); panics when the drill says so. Services only panic: a
    /// frozen service is nobody's business to detect yet.
    pub fn on_service_step(&self, service: &str) {
        if self.target != ChaosTarget::Service || service != self.account {
            return;
        }
        let step = self.units.fetch_add(1, Ordering::Relaxed) + 1;
        let triggered = match self.when {
            ChaosWhen::EveryUnit => true,
            ChaosWhen::NthUnit(nth) => step == nth,
        };
        if triggered {
            tracing::warn!(service, step, "chaos drill: panicking");
            panic!("chaos drill: service {service} panics on step {step}");
        }
    }
}

/// `[chaos]`: one crash drill, for proving isolation on the real binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChaosSettings {
    /// The account id, or the service name when `target` is a service.
    pub account: String,
    pub target: ChaosTarget,
    pub action: ChaosAction,
    pub when: ChaosWhen,
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[tokio::test]
    async fn a_pause_before_apply_waits_on_the_nth_apply_only_and_never_on_a_unit() {
        let pause = Duration::from_secs(3600);
        let chaos = Chaos::new(
            "a".to_string(),
            ChaosAction::PauseBeforeApply(pause),
            ChaosWhen::NthUnit(2),
        );
        // Units are not what this drill counts: they never pause and never count.
        assert!(chaos.on_unit("a").now_or_never().is_some());
        assert!(chaos.on_unit("a").now_or_never().is_some());
        assert!(
            chaos.before_apply("b").now_or_never().is_some(),
            "another account"
        );
        assert!(
            chaos.before_apply("a").now_or_never().is_some(),
            "the first apply"
        );
        assert!(
            chaos.before_apply("a").now_or_never().is_none(),
            "the second apply waits the pause"
        );
        assert!(
            chaos.before_apply("a").now_or_never().is_some(),
            "the third"
        );
    }
}
