//! The root of the supervision tree.
//!
//! ```text
//! Root                 escalates only when a service's restart budget is spent, or the
//! │                    accounts supervisor fails (exit non-zero)
//! ├── TokenManager         the quota: every provider call asks it first (spawned by the
//! │                        daemon before the tree, linked here, restarted like a
//! │                        service: callers hold a handle that follows the restart)
//! ├── LeaseKeeper          every lease this daemon holds, one renewal schedule, hygiene
//! │                        (started before the tree like the TokenManager, restarted
//! │                        like a service)
//! ├── AccountsSupervisor   one Account actor per account, restart policy, quarantine
//! └── services             restarted with backoff (the `[supervisor]` policy):
//!     ├── Housekeeping     claim-history pruning, every locks.hygiene_interval
//!     ├── cooldown-watch   notices cooldowns cleared early
//!     ├── wal-checkpoint   the SQLite file's WAL checkpoints, off the writer's commits
//!     ├── http             the operator API, dashboard and metrics (when configured)
//!     └── simulator        the embedded simulator (when enabled)
//! ```
//!
//! Account failures never reach the root: the AccountsSupervisor absorbs them. A service
//! that fails (an error, a panic, a task that ended) is logged, counted in
//! `service_restarts_total` and started again after a backoff; more than
//! `supervisor.max_crashes` failures within `supervisor.crash_window` spend its budget,
//! and that, or a failure of the accounts supervisor, is an infrastructure failure: the root reports it on `failed` and stops, and the daemon
//! shuts down with an error.
//!
//! Heartbeat (when [`RootArgs::heartbeat`] is set, i.e. under systemd): every `every`
//! the root asks the accounts supervisor for its children's states (with a deadline of
//! `every`, at most 5 s) and hands a [`TreeHealth`] to the `report` callback, which sends
//! `WATCHDOG=1` only when the tree is healthy (see `crate::app::notify`): the root's own
//! mailbox is moving (this message was handled) and the supervisor answered. A service
//! waiting for its restart, quarantined or halted accounts make the one-line summary, not
//! an unhealthy tree: the root is handling them, and restarting the process would not
//! help. Once the root gives up it stops, and the heartbeat with it.
//!
//! Housekeeping itself lives in [`crate::actors::housekeeping`]; its types are re-exported
//! here for the daemon that builds [`RootArgs`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{error, info, warn};

pub use crate::actors::housekeeping::{
    Housekeeping, HousekeepingArgs, HousekeepingMsg, CLAIM_HISTORY,
};
use crate::actors::services::ServiceSpec;
use crate::actors::supervisor::policy::{CrashHistory, CrashVerdict, RestartPolicy};
use crate::actors::supervisor::{AccountsSupervisor, ChildState, SupervisorArgs, SupervisorMsg};
use crate::telemetry::Metrics;

pub struct Root;

pub struct RootArgs {
    pub supervisor: SupervisorArgs,
    /// Housekeeping, the cooldown watch, the HTTP server, the embedded simulator: started
    /// in this order, restarted on failure.
    pub services: Vec<ServiceSpec>,
    /// Services whose first incarnation the daemon started before the tree, because
    /// the accounts hold their handles (the TokenManager, the lease keeper): linked
    /// here, restarted like the other services (their start swaps the new actor into
    /// the shared handle).
    pub adopted: Vec<(ServiceSpec, ractor::ActorCell)>,
    /// Backoff and budget of the services' restarts.
    pub policy: RestartPolicy,
    /// Where restarts are counted.
    pub metrics: Arc<Metrics>,
    /// Set to the failure's description when an infrastructure actor fails.
    pub failed: watch::Sender<Option<String>>,
    /// The periodic health report (systemd's watchdog and status line); `None`: none.
    pub heartbeat: Option<RootHeartbeat>,
}

/// Called with the tree's health on every root heartbeat.
pub type HealthReport = Arc<dyn Fn(&TreeHealth) + Send + Sync>;

/// How often the root reports its health, and to whom.
#[derive(Clone)]
pub struct RootHeartbeat {
    pub every: Duration,
    pub report: HealthReport,
}

impl std::fmt::Debug for RootHeartbeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootHeartbeat")
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

/// The tree as one root heartbeat saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeHealth {
    /// The accounts supervisor answered its status request within the deadline.
    pub supervisor_answered: bool,
    /// Account actors per state (when the supervisor answered).
    pub accounts_running: usize,
    pub accounts_backing_off: usize,
    pub accounts_quarantined: usize,
    pub accounts_halted: usize,
    pub accounts_total: usize,
    /// Services running now, and all of them.
    pub services_up: usize,
    pub services_total: usize,
    /// Services waiting for their restart, by name.
    pub services_restarting: Vec<&'static str>,
}

impl TreeHealth {
    /// Whether the watchdog may be fed: the root handled its heartbeat (or this value
    /// would not exist) and the accounts supervisor answered.
    pub fn healthy(&self) -> bool {
        self.supervisor_answered
    }

    /// One line for systemd's `STATUS=` (shown by `systemctl status`).
    pub fn summary(&self) -> String {
        if !self.supervisor_answered {
            return format!(
                "unhealthy: the accounts supervisor did not answer; services {}/{} up",
                self.services_up, self.services_total
            );
        }
        let mut line = format!(
            "accounts {}/{} running",
            self.accounts_running, self.accounts_total
        );
        for (count, what) in [
            (self.accounts_backing_off, "backing off"),
            (self.accounts_quarantined, "quarantined"),
            (self.accounts_halted, "halted"),
        ] {
            if count > 0 {
                line.push_str(&format!(", {count} {what}"));
            }
        }
        line.push_str(&format!(
            "; services {}/{} up",
            self.services_up, self.services_total
        ));
        if !self.services_restarting.is_empty() {
            line.push_str(&format!(
                " (restarting: {})",
                self.services_restarting.join(", ")
            ));
        }
        line
    }
}

/// One service: how to start it, its crash history, its current incarnation.
struct Service {
    spec: ServiceSpec,
    history: CrashHistory,
    current_opt: Option<ActorId>,
}

pub struct RootState {
    args: Option<RootArgs>,
    failed: watch::Sender<Option<String>>,
    pub supervisor: Option<ActorRef<SupervisorMsg>>,
    services: HashMap<&'static str, Service>,
    policy: RestartPolicy,
    metrics: Arc<Metrics>,
    heartbeat: Option<RootHeartbeat>,
}

#[derive(Debug)]
pub enum RootMsg {
    /// The accounts supervisor, once started.
    Supervisor(ractor::RpcReplyPort<Option<ActorRef<SupervisorMsg>>>),
    /// Start the named service again (its backoff is over).
    Restart(&'static str),
    /// Report the tree's health (self-sent every `heartbeat.every`).
    Heartbeat,
}

impl Actor for Root {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = RootArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(RootState {
            failed: args.failed.clone(),
            policy: args.policy.clone(),
            metrics: Arc::clone(&args.metrics),
            heartbeat: args.heartbeat.clone(),
            args: Some(args),
            supervisor: None,
            services: HashMap::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some(args) = state.args.take() else {
            return Ok(());
        };
        for (spec, cell) in args.adopted {
            state.metrics.service_started(spec.name);
            cell.link(myself.get_cell());
            let mut history = CrashHistory::default();
            history.started(Instant::now());
            state.services.insert(
                spec.name,
                Service {
                    spec,
                    history,
                    current_opt: Some(cell.get_id()),
                },
            );
        }
        let (supervisor, _) =
            Actor::spawn_linked(None, AccountsSupervisor, args.supervisor, myself.get_cell())
                .await?;
        state.supervisor = Some(supervisor);
        for spec in args.services {
            let name = spec.name;
            state.metrics.service_started(name);
            let cell = (spec.start)(myself.get_cell()).await?;
            let mut history = CrashHistory::default();
            history.started(Instant::now());
            state.services.insert(
                name,
                Service {
                    spec,
                    history,
                    current_opt: Some(cell.get_id()),
                },
            );
        }
        if let Some(heartbeat) = &state.heartbeat {
            drop(myself.send_after(heartbeat.every, || RootMsg::Heartbeat));
            tracing::debug!(every = ?heartbeat.every, "root heartbeat armed");
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RootMsg::Supervisor(reply) => {
                let _ = reply.send(state.supervisor.clone());
            }
            RootMsg::Restart(name) => {
                let Some(service) = state.services.get_mut(name) else {
                    return Ok(());
                };
                if service.current_opt.is_some() || state.failed.borrow().is_some() {
                    return Ok(());
                }
                match (service.spec.start)(myself.get_cell()).await {
                    Ok(cell) => {
                        service.history.started(Instant::now());
                        service.current_opt = Some(cell.get_id());
                        info!(service = name, "service restarted");
                    }
                    Err(err) => {
                        let reason = format!("start failed: {err}");
                        service_failed(&myself, state, name, &reason);
                    }
                }
            }
            RootMsg::Heartbeat => {
                let Some(heartbeat) = state.heartbeat.clone() else {
                    return Ok(());
                };
                if state.failed.borrow().is_some() {
                    return Ok(());
                }
                let health = tree_health(state, heartbeat.every).await;
                (heartbeat.report)(&health);
                drop(myself.send_after(heartbeat.every, || RootMsg::Heartbeat));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("failed: {err}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                // Children stop only when the root stops them; anything else is a failure.
                if myself.get_status() != ractor::ActorStatus::Running
                    || state.failed.borrow().is_some()
                {
                    return Ok(());
                }
                let reason = format!(
                    "stopped unexpectedly: {}",
                    reason.unwrap_or_else(|| "no reason".to_string())
                );
                (cell, reason)
            }
            _ => return Ok(()),
        };
        let service_opt = state
            .services
            .iter()
            .find(|(_, service)| service.current_opt == Some(cell.get_id()))
            .map(|(name, _)| *name);
        match service_opt {
            Some(name) => service_failed(&myself, state, name, &reason),
            None => escalate(&myself, state, format!("actor {} {reason}", cell.get_id())),
        }
        Ok(())
    }
}

/// The tree's health now: the supervisor's answer (within `every`, at most 5 s) and the
/// services' states.
async fn tree_health(state: &RootState, every: Duration) -> TreeHealth {
    let mut health = TreeHealth {
        services_total: state.services.len(),
        ..TreeHealth::default()
    };
    let mut restarting: Vec<&'static str> = state
        .services
        .iter()
        .filter(|(_, service)| service.current_opt.is_none())
        .map(|(name, _)| *name)
        .collect();
    restarting.sort_unstable();
    health.services_up = health.services_total.saturating_sub(restarting.len());
    health.services_restarting = restarting;
    let Some(supervisor) = &state.supervisor else {
        return health;
    };
    let deadline_ms = u64::try_from(every.min(Duration::from_secs(5)).as_millis())
        .unwrap_or(5_000)
        .max(1);
    if let Ok(children) = ractor::call_t!(supervisor, SupervisorMsg::Status, deadline_ms) {
        health.supervisor_answered = true;
        health.accounts_total = children.len();
        for child in &children {
            match child.state {
                ChildState::Running => health.accounts_running += 1,
                ChildState::BackingOff => health.accounts_backing_off += 1,
                ChildState::Quarantined => health.accounts_quarantined += 1,
                ChildState::Halted => health.accounts_halted += 1,
                ChildState::Stopped => {}
            }
        }
    }
    health
}

/// A service failed: restart it after its backoff, or escalate once its budget is spent.
fn service_failed(
    myself: &ActorRef<RootMsg>,
    state: &mut RootState,
    name: &'static str,
    reason: &str,
) {
    let Some(service) = state.services.get_mut(name) else {
        return;
    };
    service.current_opt = None;
    state.metrics.service_restart(name);
    let verdict = service
        .history
        .on_crash(&state.policy, Instant::now(), rand::random::<f64>());
    match verdict {
        CrashVerdict::Restart {
            backoff,
            consecutive_crashes,
        } => {
            error!(
                service = name,
                reason = %reason,
                consecutive_crashes,
                retry_in = %humantime::format_duration(backoff),
                "service failed; restarting it after a backoff"
            );
            myself.send_after(backoff, move || RootMsg::Restart(name));
        }
        CrashVerdict::Quarantine {
            crashes_in_window, ..
        } => {
            let failure = format!(
                "service {name} failed {crashes_in_window} times within {}: its restart budget is spent (last: {reason})",
                humantime::format_duration(state.policy.crash_window)
            );
            escalate(myself, state, failure);
        }
    }
}

/// An infrastructure failure the root cannot absorb: report it and stop the tree.
fn escalate(myself: &ActorRef<RootMsg>, state: &mut RootState, failure: String) {
    if state.failed.borrow().is_some() {
        return;
    }
    error!(failure = %failure, "infrastructure failure; stopping the daemon");
    let _ = state.failed.send(Some(failure));
    warn!("stopping the supervision tree");
    myself.stop(Some("infrastructure failure".to_string()));
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures_util::future::BoxFuture;
    use ractor::{ActorCell, SpawnErr};
    use tokio::sync::Semaphore;

    use super::*;
    use crate::actors::supervisor::{ChildFactory, ChildProgress};
    use crate::store::SqliteLedger;

    /// A child that does nothing.
    struct Idle;

    impl Actor for Idle {
        type Msg = ();
        type State = ();
        type Arguments = ();

        async fn pre_start(
            &self,
            _myself: ActorRef<()>,
            _args: (),
        ) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
    }

    /// Spawns idle children, each only once `gate` hands out a permit: while it is
    /// closed the supervisor sits inside its Start handler and answers nobody.
    struct GatedFactory {
        gate: Arc<Semaphore>,
    }

    impl ChildFactory for GatedFactory {
        fn spawn_child(
            &self,
            _id: String,
            supervisor: ActorCell,
            _progress: Arc<ChildProgress>,
        ) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> {
            let gate = Arc::clone(&self.gate);
            Box::pin(async move {
                let permit = gate.acquire().await;
                drop(permit);
                let (actor, _) = Actor::spawn_linked(None, Idle, (), supervisor).await?;
                Ok(actor.get_cell())
            })
        }
    }

    async fn wait_for_report(
        reports: &Mutex<Vec<TreeHealth>>,
        check: impl Fn(&TreeHealth) -> bool,
    ) -> Vec<TreeHealth> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = reports.lock().unwrap().clone();
            if seen.iter().any(&check) || Instant::now() >= deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn heartbeat_is_healthy_only_while_the_accounts_supervisor_answers() {
        let reports = Arc::new(Mutex::new(Vec::<TreeHealth>::new()));
        let gate = Arc::new(Semaphore::new(0));
        let (failed, _failed_rx) = watch::channel(None);
        let sink = Arc::clone(&reports);
        let (root, root_task) = Actor::spawn(
            None,
            Root,
            RootArgs {
                supervisor: SupervisorArgs {
                    policy: RestartPolicy::default(),
                    factory: Arc::new(GatedFactory {
                        gate: Arc::clone(&gate),
                    }),
                    ledger: Arc::new(SqliteLedger::open_in_memory().unwrap()),
                    ownership: None,
                },
                services: Vec::new(),
                adopted: Vec::new(),
                policy: RestartPolicy::default(),
                metrics: Arc::new(Metrics::new()),
                failed,
                heartbeat: Some(RootHeartbeat {
                    every: Duration::from_millis(50),
                    report: Arc::new(move |health: &TreeHealth| {
                        sink.lock().unwrap().push(health.clone())
                    }),
                }),
            },
        )
        .await
        .unwrap();
        let seen = wait_for_report(&reports, TreeHealth::healthy).await;
        assert!(
            seen.iter().any(TreeHealth::healthy),
            "a tree with an idle supervisor is healthy: {seen:?}"
        );

        // The supervisor is stuck starting an account: the heartbeat keeps coming (the
        // root is alive) but says unhealthy, so the watchdog goes unfed.
        let supervisor = ractor::call_t!(root, RootMsg::Supervisor, 1_000)
            .unwrap()
            .unwrap();
        supervisor
            .cast(SupervisorMsg::Start(vec!["a".to_string()]))
            .unwrap();
        let stuck_from = reports.lock().unwrap().len();
        let seen = wait_for_report(&reports, |health| !health.healthy()).await;
        let unhealthy = seen[stuck_from..]
            .iter()
            .find(|health| !health.healthy())
            .unwrap_or_else(|| panic!("no unhealthy report: {seen:?}"));
        assert!(
            unhealthy
                .summary()
                .starts_with("unhealthy: the accounts supervisor did not answer"),
            "{}",
            unhealthy.summary()
        );

        // Unstuck: healthy again, with the account running in the summary.
        gate.add_permits(1);
        let seen = wait_for_report(&reports, |health| {
            health.healthy() && health.accounts_running == 1
        })
        .await;
        let last = seen
            .iter()
            .rev()
            .find(|health| health.healthy() && health.accounts_running == 1)
            .unwrap_or_else(|| panic!("never healthy again: {seen:?}"));
        assert_eq!(last.summary(), "accounts 1/1 running; services 0/0 up");

        root.stop(None);
        let _ = tokio::time::timeout(Duration::from_secs(5), root_task).await;
    }

    #[test]
    fn summary_names_degraded_accounts_and_restarting_services() {
        let health = TreeHealth {
            supervisor_answered: true,
            accounts_running: 8,
            accounts_backing_off: 1,
            accounts_quarantined: 1,
            accounts_total: 10,
            services_up: 5,
            services_total: 6,
            services_restarting: vec!["http"],
            ..TreeHealth::default()
        };
        assert!(health.healthy());
        assert_eq!(
            health.summary(),
            "accounts 8/10 running, 1 backing off, 1 quarantined; services 5/6 up (restarting: http)"
        );
    }
}
