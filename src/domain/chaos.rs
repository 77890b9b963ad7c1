//! Crash drills (`[chaos]` in the configuration): make one named account's actor panic,
//! or freeze without progress, when it handles its Nth unit (or every unit), so operators
//! and tests can prove on the real binary that one poison account only takes itself down;
//! or make one infrastructure service (`housekeeping`, `cooldown-watch`, `token-manager`)
//! panic on its Nth step (or every step), to prove the root restarts it and escalates only when its restart
//! budget is spent.
//!
//! Off unless the configuration says `enabled = true`; counts are per process, shared
//! by every incarnation of the account's actor.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the drill does to the account's actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChaosAction {
    Panic,
    /// Blocks the unit forever without bumping progress: stuck detection's business.
    Freeze,
}

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

    /// Called as `account` starts a unit; panics or freezes when the drill says so.
    pub async fn on_unit(&self, account: &str) {
        if self.target != ChaosTarget::Account || account != self.account {
            return;
        }
        let unit = self.units.fetch_add(1, Ordering::Relaxed) + 1;
        let triggered = match self.when {
            ChaosWhen::EveryUnit => true,
            ChaosWhen::NthUnit(nth) => unit == nth,
        };
        if !triggered {
            return;
        }
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
        }
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
