//! The root of the supervision tree.
//!
//! ```text
//! Root                 escalates only on infrastructure failure (the daemon exits non-zero)
//! ├── TokenManager         the quota: every provider call asks it first (spawned by the
//! │                        daemon before the tree, linked here)
//! ├── AccountsSupervisor   one Account actor per account, restart policy, quarantine
//! └── Housekeeping         lock hygiene and claim-history pruning, every locks.hygiene_interval
//! ```
//!
//! Account failures never reach the root: the AccountsSupervisor absorbs them. A failure
//! of the TokenManager, the supervisor or Housekeeping is an infrastructure failure: the root reports it
//! on `failed` and stops, and the daemon shuts down with an error.
//!
//! Housekeeping itself lives in [`crate::actors::housekeeping`]; its types are re-exported
//! here for the daemon that builds [`RootArgs`].

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::watch;
use tracing::error;

pub use crate::actors::housekeeping::{
    Housekeeping, HousekeepingArgs, HousekeepingMsg, CLAIM_HISTORY,
};
use crate::actors::supervisor::{AccountsSupervisor, SupervisorArgs, SupervisorMsg};

pub struct Root;

pub struct RootArgs {
    pub supervisor: SupervisorArgs,
    pub housekeeping: HousekeepingArgs,
    /// The TokenManager, started before the tree (the accounts' clients hold its
    /// handle); linked here so its failure is an infrastructure failure and it stops
    /// with the root.
    pub quota: Option<ractor::ActorCell>,
    /// Set to the failure's description when an infrastructure actor fails.
    pub failed: watch::Sender<Option<String>>,
}

pub struct RootState {
    args: Option<RootArgs>,
    failed: watch::Sender<Option<String>>,
    pub supervisor: Option<ActorRef<SupervisorMsg>>,
}

#[derive(Debug)]
pub enum RootMsg {
    /// The accounts supervisor, once started.
    Supervisor(ractor::RpcReplyPort<Option<ActorRef<SupervisorMsg>>>),
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
            args: Some(args),
            supervisor: None,
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
        if let Some(quota) = &args.quota {
            quota.link(myself.get_cell());
        }
        let (supervisor, _) =
            Actor::spawn_linked(None, AccountsSupervisor, args.supervisor, myself.get_cell())
                .await?;
        Actor::spawn_linked(None, Housekeeping, args.housekeeping, myself.get_cell()).await?;
        state.supervisor = Some(supervisor);
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RootMsg::Supervisor(reply) => {
                let _ = reply.send(state.supervisor.clone());
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
        let failure = match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                Some(format!("actor {} failed: {err}", cell.get_id()))
            }
            SupervisionEvent::ActorTerminated(cell, _, reason)
                if state.failed.borrow().is_none() =>
            {
                // Children stop only when the root stops them; anything else is a failure.
                if myself.get_status() == ractor::ActorStatus::Running {
                    Some(format!(
                        "actor {} stopped unexpectedly: {}",
                        cell.get_id(),
                        reason.unwrap_or_else(|| "no reason".to_string())
                    ))
                } else {
                    None
                }
            }
            _ => None,
        };
        if let Some(failure) = failure {
            error!(failure = %failure, "infrastructure actor failed; stopping the daemon");
            let _ = state.failed.send(Some(failure));
            myself.stop(Some("infrastructure failure".to_string()));
        }
        Ok(())
    }
}
