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
//! Housekeeping itself lives in [`crate::actors::housekeeping`]; its types are re-exported
//! here for the daemon that builds [`RootArgs`].

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{error, info, warn};

pub use crate::actors::housekeeping::{
    Housekeeping, HousekeepingArgs, HousekeepingMsg, CLAIM_HISTORY,
};
use crate::actors::services::ServiceSpec;
use crate::actors::supervisor::policy::{CrashHistory, CrashVerdict, RestartPolicy};
use crate::actors::supervisor::{AccountsSupervisor, SupervisorArgs, SupervisorMsg};
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
}

#[derive(Debug)]
pub enum RootMsg {
    /// The accounts supervisor, once started.
    Supervisor(ractor::RpcReplyPort<Option<ActorRef<SupervisorMsg>>>),
    /// Start the named service again (its backoff is over).
    Restart(&'static str),
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
