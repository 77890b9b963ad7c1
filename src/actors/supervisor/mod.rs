//! The AccountsSupervisor: one child actor per account, restarted with backoff when it
//! crashes, quarantined alone when it crash-loops, so a poison-pill account crashes only
//! itself and never stalls its siblings (seed 003: a scheduler loop that died on one
//! account left every account after it stale).
//!
//! Purpose: ractor has no restart strategy (a child's panic or `Err` arrives as
//! `SupervisionEvent::ActorFailed` and the default handler stops the supervisor). This
//! actor overrides `handle_supervisor_evt` and applies [`policy::RestartPolicy`]:
//! - a crash (panic, returned error, unexpected stop, failed spawn, or a kill by stuck
//!   detection) restarts the child after an exponential backoff with jitter
//!   (`send_after`, never a sleep in a handler);
//! - more than `max_crashes` crashes within `crash_window` quarantine that child until
//!   `probe_after`, then it is probed (restarted once; a probe that crashes early goes
//!   straight back to quarantine);
//! - `mass_failure_threshold` different children crashing within `mass_failure_window`
//!   halt restarts for `mass_failure_pause` (state `halted`) instead of cycling them all;
//! - the heartbeat (every `heartbeat`) kills a child that is busy and whose
//!   [`ChildProgress`] counter did not move for `stuck_after`, probes quarantines whose
//!   time has come, ends halts, picks up resume requests from the store and persists the
//!   states.
//!
//! Children are made by a [`ChildFactory`] (the daemon's Account actor) and addressed by
//! a stable id; a restart creates a new actor for the same id. Messages: [`SupervisorMsg`].
//!
//! Options: [`SupervisorArgs`] (the policy, the factory, the ledger whose SQLite file
//! holds `account_supervision`, see [`store`]).
//!
//! Emits:
//! - logs (tracing, structured): `warn` "account actor crashed; restarting after backoff"
//!   (`account`, `restarts`, `consecutive_crashes`, `backoff_ms`, `reason`), `error`
//!   "account quarantined" (`account`, `until`, `reason`, `crashes_in_window`), `error`
//!   "restarts halted after a mass failure" (`failed_accounts`, `until`, `reason`), `warn`
//!   "account actor is stuck; killing it", `info` for probes, resumes and halts ending;
//! - rows of `account_supervision` (one per account) after every change that matters
//!   (quarantine, halt, resume, start, shutdown) and on every heartbeat;
//! - [`ChildStatus`] values through [`SupervisorMsg::Status`].

pub mod policy;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::future::BoxFuture;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RactorErr, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};
use tokio::time::Instant;
use tracing::{error, info, warn};

pub use crate::domain::supervision::{
    BusyGuard, ChildProgress, ChildState, ChildStatus, CrashInfo,
};
use crate::store::sqlite::SqliteLedger;
use crate::store::supervision::{rfc3339, StoredChild};
use policy::{instant_after, CrashHistory, CrashVerdict, MassFailureDetector, RestartPolicy};

/// How long [`SupervisorMsg::Shutdown`] waits for each child to stop before killing it.
/// Callers of `Shutdown` should use a `call_t!` timeout above this.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long a [`ChildFactory::spawn_child`] may take (a child's `pre_start` must be
/// trivial); past it the attempt counts as a crash.
pub const SPAWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes the supervisor's children; implemented by the daemon (Account actors) and by tests.
pub trait ChildFactory: Send + Sync + 'static {
    /// Spawns the actor for `id`, linked to `supervisor` (`Actor::spawn_linked(..,
    /// supervisor)`), handing it `progress`. Called for the first start and for every
    /// restart. Keep the child's `pre_start` trivial: a panic there never reaches the
    /// supervisor (it comes back here as `Err`, which counts as a crash).
    fn spawn_child(
        &self,
        id: String,
        supervisor: ActorCell,
        progress: Arc<ChildProgress>,
    ) -> BoxFuture<'static, Result<ActorCell, SpawnErr>>;
}

/// The supervisor's messages.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// Run these children (ids not known yet are added; known ones are left alone). A
    /// child still quarantined in the store waits for its probe time.
    Start(Vec<String>),
    /// A backoff ended (self-sent with `send_after`).
    Restart(String),
    /// The periodic tick (self-scheduled every `heartbeat`).
    Heartbeat,
    /// Clear the child's quarantine and crash history and run it now.
    Resume(String),
    /// Every child's status, ordered by id.
    Status(RpcReplyPort<Vec<ChildStatus>>),
    /// Stop every child (stop, not kill; killed after [`SHUTDOWN_GRACE`]), stop
    /// restarting, persist, then reply. The supervisor stays up to answer `Status`.
    Shutdown(RpcReplyPort<()>),
}

/// What the supervisor is started with.
pub struct SupervisorArgs {
    pub policy: RestartPolicy,
    pub factory: Arc<dyn ChildFactory>,
    /// The ledger whose SQLite file holds `account_supervision`.
    pub ledger: Arc<SqliteLedger>,
}

/// The actor. Spawn it with `Actor::spawn_linked(Some(name), AccountsSupervisor,
/// SupervisorArgs { .. }, root)`, then send [`SupervisorMsg::Start`].
#[derive(Debug, Clone, Copy, Default)]
pub struct AccountsSupervisor;

/// A crash as kept in memory.
#[derive(Debug, Clone)]
struct CrashRecord {
    at: DateTime<Utc>,
    reason: String,
}

/// A quarantine's end, on both clocks (the monotonic one decides, the wall one is shown
/// and persisted).
#[derive(Debug, Clone, Copy)]
struct QuarantineEnd {
    at: Instant,
    at_utc: DateTime<Utc>,
}

/// What the supervisor knows about one child id (across its incarnations).
struct Child {
    id: String,
    state: ChildState,
    /// The current incarnation, while one runs.
    cell_opt: Option<ActorCell>,
    /// The current incarnation's liveness signal.
    progress: Arc<ChildProgress>,
    /// Counter value at the last heartbeat that saw it move (or saw the child idle).
    last_progress_count: u64,
    last_progress_at: Instant,
    history: CrashHistory,
    restarts: u64,
    /// Incarnations spawned by this supervisor (the first is not a restart).
    incarnations: u64,
    last_crash_opt: Option<CrashRecord>,
    backoff_until_opt: Option<Instant>,
    quarantine_opt: Option<QuarantineEnd>,
    state_reason_opt: Option<String>,
}

impl Child {
    fn new(id: String, now: Instant) -> Child {
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

    fn status(&self) -> ChildStatus {
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

    fn stored(&self) -> StoredChild {
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
enum SpawnKind {
    /// First start, a restart after backoff or halt, or a resume.
    Normal,
    /// Out of quarantine: an early crash quarantines again.
    Probe,
}

/// The supervisor's state (opaque; read it through [`SupervisorMsg::Status`]).
pub struct SupervisorState {
    policy: RestartPolicy,
    factory: Arc<dyn ChildFactory>,
    ledger: Arc<SqliteLedger>,
    /// Ordered so status output and persistence are stable.
    children: BTreeMap<String, Child>,
    /// Current incarnations only: an event for any other cell is ignored.
    cell_to_child: HashMap<ActorId, String>,
    mass_failure: MassFailureDetector,
    halt_reason_opt: Option<String>,
    /// Rows loaded from the store at start, consumed as `Start` names their accounts.
    persisted: HashMap<String, StoredChild>,
    /// Children whose row must be written.
    dirty: BTreeSet<String>,
    shutting_down: bool,
    /// When the next scheduled heartbeat is due; a heartbeat arriving well before it came
    /// from elsewhere and does not schedule another (one chain only).
    next_heartbeat_at: Instant,
}

impl Actor for AccountsSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        args.policy.validate()?;
        Ok(SupervisorState {
            policy: args.policy,
            factory: args.factory,
            ledger: args.ledger,
            children: BTreeMap::new(),
            cell_to_child: HashMap::new(),
            mass_failure: MassFailureDetector::default(),
            halt_reason_opt: None,
            persisted: HashMap::new(),
            dirty: BTreeSet::new(),
            shutting_down: false,
            next_heartbeat_at: Instant::now(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let ledger = state.ledger.clone();
        match tokio::task::spawn_blocking(move || {
            ledger.with_conn(|conn| crate::store::supervision::load(conn))
        })
        .await
        {
            Ok(Ok(rows)) => {
                state.persisted = rows
                    .into_iter()
                    .map(|row| (row.account.clone(), row))
                    .collect();
            }
            Ok(Err(err)) => {
                warn!(error = %err, "cannot load supervision state; quarantines from before this start are forgotten");
            }
            Err(err) => {
                warn!(error = %err, "loading supervision state failed; quarantines from before this start are forgotten");
            }
        }
        state.schedule_heartbeat(&myself);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        if !state.shutting_down {
            state.shutdown_children().await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Start(ids) => state.start(&myself, ids).await,
            SupervisorMsg::Restart(id) => state.restart_after_backoff(&myself, &id).await,
            SupervisorMsg::Heartbeat => state.heartbeat(&myself).await,
            SupervisorMsg::Resume(id) => {
                state.resume(&myself, &id).await;
                state.flush(false).await;
            }
            SupervisorMsg::Status(reply) => {
                // The caller may have given up waiting; nothing to do then.
                let _ = reply.send(state.statuses());
            }
            SupervisorMsg::Shutdown(reply) => {
                state.shutdown_children().await;
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                state
                    .child_exited(&myself, cell.get_id(), err.to_string())
                    .await;
            }
            SupervisionEvent::ActorTerminated(cell, _, exit_reason_opt) => {
                let reason = format!(
                    "terminated unexpectedly ({})",
                    exit_reason_opt.as_deref().unwrap_or("no reason given")
                );
                state.child_exited(&myself, cell.get_id(), reason).await;
            }
            _ => {}
        }
        Ok(())
    }
}

impl SupervisorState {
    fn statuses(&self) -> Vec<ChildStatus> {
        self.children.values().map(Child::status).collect()
    }

    fn schedule_heartbeat(&mut self, myself: &ActorRef<SupervisorMsg>) {
        self.next_heartbeat_at = instant_after(Instant::now(), self.policy.heartbeat);
        // Dropping the handle detaches the timer task; if the supervisor is gone by then
        // the send just fails.
        drop(myself.send_after(self.policy.heartbeat, || SupervisorMsg::Heartbeat));
    }

    async fn start(&mut self, myself: &ActorRef<SupervisorMsg>, ids: Vec<String>) {
        if self.shutting_down {
            warn!(
                accounts = ids.len(),
                "start ignored: the accounts supervisor is shut down"
            );
            return;
        }
        let now = Instant::now();
        let now_unix = Utc::now().timestamp();
        for id in ids {
            if self.children.contains_key(&id) {
                continue;
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
                            let wait = Duration::from_secs(
                                u64::try_from(until_unix - now_unix).unwrap_or(0),
                            );
                            let at_utc = DateTime::<Utc>::from_timestamp(until_unix, 0)
                                .unwrap_or_else(Utc::now);
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
        self.flush(false).await;
    }

    /// Spawns a new incarnation of `id`. A failed spawn counts as a crash; returns true
    /// when that crash must be persisted at once.
    async fn spawn_child(
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
    async fn child_exited(
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
    fn record_crash(&mut self, myself: &ActorRef<SupervisorMsg>, id: &str, reason: String) -> bool {
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

    async fn restart_after_backoff(&mut self, myself: &ActorRef<SupervisorMsg>, id: &str) {
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

    async fn heartbeat(&mut self, myself: &ActorRef<SupervisorMsg>) {
        if self.shutting_down {
            return;
        }
        let scheduled = Instant::now() + self.policy.heartbeat / 2 >= self.next_heartbeat_at;
        let now = Instant::now();

        if self.mass_failure.end_expired_halt(now) {
            let halted: Vec<String> = self
                .children
                .values()
                .filter(|child| child.state == ChildState::Halted)
                .map(|child| child.id.clone())
                .collect();
            info!(
                accounts = halted.len(),
                "mass-failure pause over; restarts resume"
            );
            self.halt_reason_opt = None;
            for id in halted {
                self.spawn_child(myself, &id, SpawnKind::Normal).await;
            }
        }

        self.kill_stuck_children(myself, now);

        if !self.mass_failure.is_halted(now) {
            let due: Vec<String> = self
                .children
                .values()
                .filter(|child| {
                    child.state == ChildState::Quarantined
                        && child.quarantine_opt.is_some_and(|end| now >= end.at)
                })
                .map(|child| child.id.clone())
                .collect();
            for id in due {
                info!(account = %id, "probing quarantined account");
                self.spawn_child(myself, &id, SpawnKind::Probe).await;
            }
        }

        let resumes = self.flush(true).await;
        for id in &resumes {
            self.resume(myself, id).await;
        }
        if !resumes.is_empty() {
            self.flush(false).await;
        }
        if scheduled {
            self.schedule_heartbeat(myself);
        }
    }

    /// Kills every busy child whose progress counter did not move for `stuck_after`, and
    /// counts it as a crash.
    fn kill_stuck_children(&mut self, myself: &ActorRef<SupervisorMsg>, now: Instant) {
        let mut stuck = Vec::new();
        for child in self.children.values_mut() {
            if child.state != ChildState::Running {
                continue;
            }
            let count = child.progress.count();
            if count != child.last_progress_count || !child.progress.is_busy() {
                child.last_progress_count = count;
                child.last_progress_at = now;
                continue;
            }
            let idle = now.saturating_duration_since(child.last_progress_at);
            if idle >= self.policy.stuck_after {
                stuck.push((child.id.clone(), idle, child.cell_opt.take()));
            }
        }
        for (id, idle, cell_opt) in stuck {
            let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
            warn!(account = %id, idle_ms, "account actor is stuck; killing it");
            if let Some(cell) = cell_opt {
                // Forget the cell first: its termination event is then ignored.
                self.cell_to_child.remove(&cell.get_id());
                cell.kill();
            }
            let reason = format!(
                "stuck: no progress for {}",
                humantime::format_duration(Duration::from_millis(idle_ms))
            );
            self.record_crash(myself, &id, reason);
        }
    }

    /// Clears `id`'s quarantine and crash history and runs it now (unless it runs).
    async fn resume(&mut self, myself: &ActorRef<SupervisorMsg>, id: &str) {
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
    async fn flush(&mut self, fetch_resumes: bool) -> Vec<String> {
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
            ledger.with_conn(|conn| -> Result<Vec<String>, rusqlite::Error> {
                if !rows.is_empty() {
                    crate::store::supervision::save(conn, &rows, now_unix)?;
                }
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                crate::store::supervision::take_resume_requests(conn, &ids)
            })
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
    async fn shutdown_children(&mut self) {
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
