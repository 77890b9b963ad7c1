//! What the supervisor knows and how it changes: one `Child` record per account id
//! (across incarnations), the [`SupervisorState`], and its transitions — start, spawn,
//! crash (backoff, quarantine, mass-failure halt), restart, resume, persistence of
//! `account_supervision` rows and shutdown. The heartbeat lives in `heartbeat`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use ractor::{ActorCell, ActorId, ActorRef, RactorErr};
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::policy::{
    instant_after, CrashHistory, CrashVerdict, MassFailureDetector, RestartPolicy,
};
use super::{
    ChildFactory, ChildProgress, ChildState, ChildStatus, CrashInfo, SupervisorMsg, SHUTDOWN_GRACE,
    SPAWN_TIMEOUT,
};
use crate::store::supervision::{rfc3339, StoredChild};

/// A crash as kept in memory.
#[derive(Debug, Clone)]
pub(super) struct CrashRecord {
    pub(super) at: DateTime<Utc>,
    pub(super) reason: String,
}

/// A quarantine's end, on both clocks (the monotonic one decides, the wall one is shown
/// and persisted).
#[derive(Debug, Clone, Copy)]
pub(super) struct QuarantineEnd {
    pub(super) at: Instant,
    pub(super) at_utc: DateTime<Utc>,
}

/// What the supervisor knows about one child id (across its incarnations).
pub(super) struct Child {
    pub(super) id: String,
    pub(super) state: ChildState,
    /// The current incarnation, while one runs.
    pub(super) cell_opt: Option<ActorCell>,
    /// The current incarnation's liveness signal.
    pub(super) progress: Arc<ChildProgress>,
    /// Counter value at the last heartbeat that saw it move (or saw the child idle).
    pub(super) last_progress_count: u64,
    pub(super) last_progress_at: Instant,
    pub(super) history: CrashHistory,
    pub(super) restarts: u64,
    /// Incarnations spawned by this supervisor (the first is not a restart).
    pub(super) incarnations: u64,
    pub(super) last_crash_opt: Option<CrashRecord>,
    pub(super) backoff_until_opt: Option<Instant>,
    pub(super) quarantine_opt: Option<QuarantineEnd>,
    pub(super) state_reason_opt: Option<String>,
}

impl Child {
    pub(super) fn new(id: String, now: Instant) -> Child {
        Child {
            id,
            state: ChildState::Stopped,
            cell_opt: None,
            progress: Arc::new(ChildProgress::default()),
            last_progress_count: 0,
            last_progress_at: now,
            history: CrashHistory::default(),
            restarts: 0,
            incarnations: 0,
            last_crash_opt: None,
            backoff_until_opt: None,
            quarantine_opt: None,
            state_reason_opt: None,
        }
    }

    pub(super) fn status(&self) -> ChildStatus {
        ChildStatus {
            id: self.id.clone(),
            state: self.state,
            restarts: self.restarts,
            last_crash: self.last_crash_opt.as_ref().map(|crash| CrashInfo {
                at_utc: rfc3339(crash.at),
                reason: crash.reason.clone(),
            }),
            quarantined_until: self.quarantine_opt.map(|end| rfc3339(end.at_utc)),
            reason: self.state_reason_opt.clone(),
        }
    }

    pub(super) fn stored(&self) -> StoredChild {
        StoredChild {
            account: self.id.clone(),
            state: self.state,
            restarts: self.restarts,
            last_crash_at: self
                .last_crash_opt
                .as_ref()
                .map(|crash| crash.at.timestamp()),
            last_crash_reason: self
                .last_crash_opt
                .as_ref()
                .map(|crash| crash.reason.clone()),
            // Rounded up: a quarantine never ends earlier in the store than in memory.
            quarantined_until: self.quarantine_opt.map(|end| {
                end.at_utc.timestamp() + i64::from(end.at_utc.timestamp_subsec_nanos() > 0)
            }),
            state_reason: self.state_reason_opt.clone(),
            resume_requested: false,
            updated_at: 0,
        }
    }
}

/// How a spawn relates to the child's history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum SpawnKind {
    /// First start, a restart after backoff or halt, or a resume.
    Normal,
    /// Out of quarantine: an early crash quarantines again.
    Probe,
}

/// The supervisor's state (opaque; read it through [`SupervisorMsg::Status`]).
pub struct SupervisorState {
    pub(super) policy: RestartPolicy,
    pub(super) factory: Arc<dyn ChildFactory>,
    pub(super) ledger: Arc<dyn crate::store::LedgerStore>,
    /// Ordered so status output and persistence are stable.
    pub(super) children: BTreeMap<String, Child>,
    /// Current incarnations only: an event for any other cell is ignored.
    pub(super) cell_to_child: HashMap<ActorId, String>,
    pub(super) mass_failure: MassFailureDetector,
    pub(super) halt_reason_opt: Option<String>,
    /// Rows loaded from the store at start, consumed as `Start` names their accounts.
    pub(super) persisted: HashMap<String, StoredChild>,
    /// Children whose row must be written.
    pub(super) dirty: BTreeSet<String>,
    pub(super) shutting_down: bool,
    /// When the next scheduled heartbeat is due; a heartbeat arriving well before it came
    /// from elsewhere and does not schedule another (one chain only).
    pub(super) next_heartbeat_at: Instant,
    /// Which accounts this member runs (`[cluster]`); `None`: all it is started with.
    pub(super) ownership_opt: Option<crate::cluster::OwnershipFeed>,
    /// With ownership: every account `Start` named (a child exists only for those this
    /// member owns).
    pub(super) configured: BTreeSet<String>,
}

impl SupervisorState {
    pub(super) fn statuses(&self) -> Vec<ChildStatus> {
        self.children.values().map(Child::status).collect()
    }

    pub(super) async fn start(&mut self, myself: &ActorRef<SupervisorMsg>, ids: Vec<String>) {
        if self.shutting_down {
            warn!(
                accounts = ids.len(),
                "start ignored: the accounts supervisor is shut down"
            );
            return;
        }
        if self.ownership_opt.is_some() {
            self.configured.extend(ids);
            self.reconcile_ownership(myself).await;
            return;
        }
        for id in ids {
            self.add_child(myself, id).await;
        }
        self.flush(false).await;
    }

    /// Adds the child `id` (unless known) with its persisted history, and starts it unless
    /// it is still quarantined in the store.
    pub(super) async fn add_child(&mut self, myself: &ActorRef<SupervisorMsg>, id: String) {
        let now = Instant::now();
        let now_unix = Utc::now().timestamp();
        if self.children.contains_key(&id) {
            return;
        }
        let mut child = Child::new(id.clone(), now);
        let mut kind_opt = Some(SpawnKind::Normal);
        if let Some(row) = self.persisted.remove(&id) {
            child.restarts = row.restarts;
            child.last_crash_opt = row
                .last_crash_at
                .and_then(|at| DateTime::<Utc>::from_timestamp(at, 0))
                .map(|at| CrashRecord {
                    at,
                    reason: row.last_crash_reason.clone().unwrap_or_default(),
                });
            if row.state == ChildState::Quarantined || row.quarantined_until.is_some() {
                match row.quarantined_until {
                    Some(until_unix) if until_unix > now_unix => {
                        let wait =
                            Duration::from_secs(u64::try_from(until_unix - now_unix).unwrap_or(0));
                        let at_utc =
                            DateTime::<Utc>::from_timestamp(until_unix, 0).unwrap_or_else(Utc::now);
                        child.state = ChildState::Quarantined;
                        child.quarantine_opt = Some(QuarantineEnd {
                            at: instant_after(now, wait),
                            at_utc,
                        });
                        child.state_reason_opt = row.state_reason.clone();
                        info!(account = %id, until = %rfc3339(at_utc), "account still quarantined; not starting it before its probe time");
                        kind_opt = None;
                    }
                    _ => kind_opt = Some(SpawnKind::Probe),
                }
            }
        }
        self.children.insert(id.clone(), child);
        self.dirty.insert(id.clone());
        if let Some(kind) = kind_opt {
            self.spawn_child(myself, &id, kind).await;
        }
    }

    /// Spawns a new incarnation of `id`. A failed spawn counts as a crash; returns true
    /// when that crash must be persisted at once.
    pub(super) async fn spawn_child(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: &str,
        kind: SpawnKind,
    ) -> bool {
        let Some(child) = self.children.get_mut(id) else {
            return false;
        };
        if let Some(old_cell) = child.cell_opt.take() {
            // Never two incarnations at once (a resume of a running child does not get here).
            self.cell_to_child.remove(&old_cell.get_id());
            old_cell.kill();
        }
        if child.incarnations > 0 {
            child.restarts = child.restarts.saturating_add(1);
        }
        child.incarnations = child.incarnations.saturating_add(1);
        let progress = Arc::new(ChildProgress::default());
        let spawn = self
            .factory
            .spawn_child(id.to_string(), myself.get_cell(), progress.clone());
        let result = tokio::time::timeout(SPAWN_TIMEOUT, spawn).await;
        let now = Instant::now();
        let Some(child) = self.children.get_mut(id) else {
            return false;
        };
        match kind {
            SpawnKind::Probe => child.history.probe_started(now),
            SpawnKind::Normal => child.history.started(now),
        }
        self.dirty.insert(id.to_string());
        let reason = match result {
            Ok(Ok(cell)) => {
                self.cell_to_child.insert(cell.get_id(), id.to_string());
                child.cell_opt = Some(cell);
                child.state = ChildState::Running;
                child.progress = progress;
                child.last_progress_count = 0;
                child.last_progress_at = now;
                child.backoff_until_opt = None;
                child.quarantine_opt = None;
                child.state_reason_opt = None;
                return false;
            }
            Ok(Err(err)) => format!("spawn failed: {err}"),
            Err(_elapsed) => format!(
                "spawn failed: not started within {}",
                humantime::format_duration(SPAWN_TIMEOUT)
            ),
        };
        self.record_crash(myself, id, reason)
    }

    /// A child's actor failed or terminated on its own.
    pub(super) async fn child_exited(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        actor_id: ActorId,
        reason: String,
    ) {
        let Some(id) = self.cell_to_child.remove(&actor_id) else {
            return;
        };
        if self.shutting_down {
            return;
        }
        if let Some(child) = self.children.get_mut(&id) {
            child.cell_opt = None;
        }
        if self.record_crash(myself, &id, reason) {
            self.flush(false).await;
        }
    }

    /// Applies the policy to one crash of `id` (its incarnation is already gone or
    /// killed). Returns true when the outcome (quarantine, halt) must be persisted at once.
    pub(super) fn record_crash(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: &str,
        reason: String,
    ) -> bool {
        let now = Instant::now();
        let now_utc = Utc::now();
        let child_count = self.children.len();
        let halt_opt = self
            .mass_failure
            .record_crash(&self.policy, child_count, id, now);
        if let Some(child) = self.children.get_mut(id) {
            child.cell_opt = None;
            child.backoff_until_opt = None;
            child.last_crash_opt = Some(CrashRecord {
                at: now_utc,
                reason: reason.clone(),
            });
        } else {
            return false;
        }
        self.dirty.insert(id.to_string());

        if let Some(halt) = halt_opt {
            let halt_reason = format!(
                "mass failure: {} accounts crashed within {}; restarts paused for {}",
                halt.failed_children,
                humantime::format_duration(self.policy.mass_failure_window),
                humantime::format_duration(self.policy.mass_failure_pause)
            );
            error!(
                failed_accounts = halt.failed_children,
                until = %rfc3339(utc_after(now_utc, self.policy.mass_failure_pause)),
                reason = %halt_reason,
                last_reason = %reason,
                "restarts halted after a mass failure"
            );
            for child in self.children.values_mut() {
                if child.id == id || child.state == ChildState::BackingOff {
                    child.state = ChildState::Halted;
                    child.backoff_until_opt = None;
                    child.state_reason_opt = Some(halt_reason.clone());
                    self.dirty.insert(child.id.clone());
                }
            }
            self.halt_reason_opt = Some(halt_reason);
            return true;
        }

        let halted = self.mass_failure.is_halted(now);
        let policy = &self.policy;
        let Some(child) = self.children.get_mut(id) else {
            return false;
        };
        if halted {
            child.state = ChildState::Halted;
            child.state_reason_opt = self.halt_reason_opt.clone();
            warn!(account = %id, reason = %reason, "account actor crashed while restarts are halted");
            return false;
        }
        match child.history.on_crash(policy, now, rand::random::<f64>()) {
            CrashVerdict::Restart {
                backoff,
                consecutive_crashes,
            } => {
                child.state = ChildState::BackingOff;
                child.backoff_until_opt = Some(instant_after(now, backoff));
                child.state_reason_opt = Some(reason.clone());
                let backoff_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX);
                warn!(
                    account = %id,
                    restarts = child.restarts,
                    consecutive_crashes,
                    backoff_ms,
                    reason = %reason,
                    "account actor crashed; restarting after backoff"
                );
                let restart_id = id.to_string();
                // Dropping the handle detaches the timer task.
                drop(myself.send_after(backoff, move || SupervisorMsg::Restart(restart_id)));
                false
            }
            CrashVerdict::Quarantine {
                probe_at,
                crashes_in_window,
                probe_failed,
            } => {
                let until_utc = utc_after(now_utc, policy.probe_after);
                child.state = ChildState::Quarantined;
                child.quarantine_opt = Some(QuarantineEnd {
                    at: probe_at,
                    at_utc: until_utc,
                });
                child.state_reason_opt = Some(if probe_failed {
                    format!("probe crashed: {reason}")
                } else {
                    format!(
                        "crashed {crashes_in_window} times within {}: {reason}",
                        humantime::format_duration(policy.crash_window)
                    )
                });
                error!(
                    account = %id,
                    until = %rfc3339(until_utc),
                    reason = %reason,
                    crashes_in_window,
                    probe_failed,
                    "account quarantined"
                );
                true
            }
        }
    }

    pub(super) async fn restart_after_backoff(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: &str,
    ) {
        if self.shutting_down {
            return;
        }
        let now = Instant::now();
        let Some(child) = self.children.get_mut(id) else {
            return;
        };
        // A stale timer (the child was resumed, or crashed again with a later backoff).
        if child.state != ChildState::BackingOff
            || child.backoff_until_opt.is_some_and(|until| now < until)
        {
            return;
        }
        if self.mass_failure.is_halted(now) {
            child.state = ChildState::Halted;
            child.backoff_until_opt = None;
            child.state_reason_opt = self.halt_reason_opt.clone();
            self.dirty.insert(id.to_string());
            return;
        }
        if self.spawn_child(myself, id, SpawnKind::Normal).await {
            self.flush(false).await;
        }
    }

    /// Clears `id`'s quarantine and crash history and runs it now (unless it runs).
    pub(super) async fn resume(&mut self, myself: &ActorRef<SupervisorMsg>, id: &str) {
        if self.shutting_down {
            return;
        }
        let Some(child) = self.children.get_mut(id) else {
            warn!(account = %id, "resume ignored: no such account under supervision");
            return;
        };
        let previous_state = child.state;
        child.history.clear();
        child.quarantine_opt = None;
        child.backoff_until_opt = None;
        child.state_reason_opt = None;
        self.dirty.insert(id.to_string());
        info!(account = %id, previous_state = %previous_state, "account resumed; crash history cleared");
        if previous_state != ChildState::Running {
            self.spawn_child(myself, id, SpawnKind::Normal).await;
        }
    }

    /// Writes the dirty rows; with `fetch_resumes`, also takes the pending resume
    /// requests for our children (returned). Failures are logged and retried next time.
    pub(super) async fn flush(&mut self, fetch_resumes: bool) -> Vec<String> {
        let dirty = std::mem::take(&mut self.dirty);
        let rows: Vec<StoredChild> = dirty
            .iter()
            .filter_map(|id| self.children.get(id))
            .map(Child::stored)
            .collect();
        if rows.is_empty() && !fetch_resumes {
            return Vec::new();
        }
        let ids: Vec<String> = if fetch_resumes {
            self.children.keys().cloned().collect()
        } else {
            Vec::new()
        };
        let ledger = self.ledger.clone();
        let now_unix = Utc::now().timestamp();
        let outcome = tokio::task::spawn_blocking(move || {
            if !rows.is_empty() {
                ledger.save_children(&rows, now_unix)?;
            }
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            ledger.take_resume_requests(&ids)
        })
        .await;
        match outcome {
            Ok(Ok(resumes)) => resumes,
            Ok(Err(err)) => {
                warn!(error = %err, "cannot persist supervision state; retrying on the next heartbeat");
                self.dirty.extend(dirty);
                Vec::new()
            }
            Err(err) => {
                warn!(error = %err, "persisting supervision state failed; retrying on the next heartbeat");
                self.dirty.extend(dirty);
                Vec::new()
            }
        }
    }

    /// Stops every child (gracefully, killing after [`SHUTDOWN_GRACE`]), stops
    /// restarting and persists the final states.
    pub(super) async fn shutdown_children(&mut self) {
        self.shutting_down = true;
        self.cell_to_child.clear();
        let running: Vec<(String, ActorCell)> = self
            .children
            .values_mut()
            .filter_map(|child| child.cell_opt.take().map(|cell| (child.id.clone(), cell)))
            .collect();
        let stops = running.iter().map(|(id, cell)| async move {
            let stopped = cell
                .stop_and_wait(Some("supervisor shutdown".to_string()), Some(SHUTDOWN_GRACE))
                .await;
            if let Err(RactorErr::Timeout) = stopped {
                warn!(account = %id, "account actor did not stop within the grace period; killing it");
                cell.kill();
            }
        });
        futures_util::future::join_all(stops).await;
        for child in self.children.values_mut() {
            if child.state != ChildState::Quarantined {
                child.state = ChildState::Stopped;
                child.backoff_until_opt = None;
                child.state_reason_opt = None;
            }
            self.dirty.insert(child.id.clone());
        }
        self.flush(false).await;
        info!(
            accounts = self.children.len(),
            stopped = running.len(),
            "accounts supervisor shut down"
        );
    }
}

/// `now_utc + duration`, saturating.
fn utc_after(now_utc: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(duration)
        .ok()
        .and_then(|delta| now_utc.checked_add_signed(delta))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}
