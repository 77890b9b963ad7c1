//! Crash drills (`[chaos]` in the configuration): make one named account's actor panic,
//! or freeze without progress, when it handles its Nth unit (or every unit), so operators
//! and tests can prove on the real binary that one poison account only takes itself down.
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

#[derive(Debug)]
pub struct Chaos {
    pub account: String,
    pub action: ChaosAction,
    pub when: ChaosWhen,
    /// Units handled so far by the account in this process.
    units: AtomicU64,
}

impl Chaos {
    pub fn new(account: String, action: ChaosAction, when: ChaosWhen) -> Chaos {
        Chaos {
            account,
            action,
            when,
            units: AtomicU64::new(0),
        }
    }

    /// Called as `account` starts a unit; panics or freezes when the drill says so.
    pub async fn on_unit(&self, account: &str) {
        if account != self.account {
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
            ChaosAction::Panic => {
                tracing::warn!(account, unit, "chaos drill: panicking");
                panic!("chaos drill: account {account} panics on unit {unit}");
            }
            ChaosAction::Freeze => {
                tracing::warn!(account, unit, "chaos drill: freezing without progress");
                std::future::pending::<()>().await;
            }
        }
    }
}

/// `[chaos]`: one crash drill, for proving isolation on the real binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChaosSettings {
    pub account: String,
    pub action: ChaosAction,
    pub when: ChaosWhen,
}
