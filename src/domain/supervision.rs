//! What the supervision tree says about a child, as `status` shows it and the store keeps it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Where a child is in its life, as shown by `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildState {
    Running,
    /// Crashed; restarts when its backoff ends.
    BackingOff,
    /// Crash-looped; waits for its probe time or an operator's resume.
    Quarantined,
    /// Crashed during a mass failure; restarts when the pause ends.
    Halted,
    /// Stopped by a shutdown (or not started yet).
    Stopped,
}

impl ChildState {
    pub fn as_str(self) -> &'static str {
        match self {
            ChildState::Running => "running",
            ChildState::BackingOff => "backing_off",
            ChildState::Quarantined => "quarantined",
            ChildState::Halted => "halted",
            ChildState::Stopped => "stopped",
        }
    }

    pub fn parse(text: &str) -> Option<ChildState> {
        [
            ChildState::Running,
            ChildState::BackingOff,
            ChildState::Quarantined,
            ChildState::Halted,
            ChildState::Stopped,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }
}

impl std::fmt::Display for ChildState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The last crash of a child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CrashInfo {
    /// RFC 3339, UTC, whole seconds.
    pub at_utc: String,
    /// The panic message, the returned error's text, or what the supervisor saw
    /// (`stuck: no progress for …`, `terminated unexpectedly (…)`, `spawn failed: …`).
    pub reason: String,
}

/// One child's supervision status (`status --json` prints a list of these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildStatus {
    pub id: String,
    pub state: ChildState,
    /// Restarts so far (kept across daemon restarts).
    pub restarts: u64,
    pub last_crash: Option<CrashInfo>,
    /// RFC 3339 probe time while quarantined.
    pub quarantined_until: Option<String>,
    /// Why the child is in its state: the crash that quarantined it or that it backs off
    /// from, or the mass failure that halted restarts.
    pub reason: Option<String>,
}

/// A child's liveness signal, shared between the child (writer) and the supervisor's
/// heartbeat (reader). A fresh one is made for every incarnation.
///
/// The child calls [`ChildProgress::bump`] per unit step (and around long awaits) and
/// marks itself busy while it works ([`ChildProgress::set_busy`] or
/// [`ChildProgress::busy_scope`]). A busy child whose counter does not move for
/// `stuck_after` is killed and restarted. An idle child is never stuck.
#[derive(Debug, Default)]
pub struct ChildProgress {
    /// Why atomics: written by the child's task, read by the supervisor's, no lock needed.
    counter: AtomicU64,
    busy: AtomicBool,
}

impl ChildProgress {
    /// One unit of progress.
    pub fn bump(&self) {
        self.counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_busy(&self, busy: bool) {
        self.busy.store(busy, Ordering::Relaxed);
    }

    /// Marks the child busy until the returned guard drops.
    pub fn busy_scope(&self) -> BusyGuard<'_> {
        self.set_busy(true);
        BusyGuard { progress: self }
    }

    pub fn count(&self) -> u64 {
        self.counter.load(Ordering::Relaxed)
    }

    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed)
    }
}

/// Clears the busy flag of a [`ChildProgress`] when dropped.
#[derive(Debug)]
pub struct BusyGuard<'a> {
    progress: &'a ChildProgress,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.progress.set_busy(false);
    }
}
