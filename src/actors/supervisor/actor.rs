//! The [`AccountsSupervisor`]'s `Actor` impl: builds the state, loads the persisted
//! supervision rows, and routes messages and supervision events (a child's failure or
//! termination) to the [`SupervisorState`] methods that act on them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::time::Instant;
use tracing::warn;

use super::policy::MassFailureDetector;
use super::{AccountsSupervisor, SupervisorArgs, SupervisorMsg, SupervisorState};

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
            ownership_opt: args.ownership,
            configured: BTreeSet::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let ledger = state.ledger.clone();
        match tokio::task::spawn_blocking(move || ledger.load_children()).await {
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
        state.schedule_ownership(&myself);
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
            SupervisorMsg::Ownership => {
                state.reconcile_ownership(&myself).await;
                state.schedule_ownership(&myself);
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
