//! Housekeeping, a service of the [`Root`](super::root::Root): the periodic maintenance
//! that is nobody's hot path (pruning claim history older than [`CLAIM_HISTORY`]), every
//! `locks.hygiene_interval`. Lock hygiene runs in the lease keeper
//! ([`crate::lock::keeper`]), which owns the leases.
//!
//! Options: `locks.hygiene_interval`. Emits: `info` for pruned claim history.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::info;

use crate::actors::services::ServiceSpec;
use crate::domain::chaos::Chaos;
use crate::store::LedgerStore;

/// How long claim history (`ledger_claims`) is kept.
pub const CLAIM_HISTORY: Duration = Duration::from_secs(30 * 24 * 3600);

pub struct Housekeeping;

#[derive(Clone)]
pub struct HousekeepingArgs {
    /// The engine holding the hour ledger (its claim history is pruned).
    pub ledger: Arc<dyn LedgerStore>,
    pub every: Duration,
    /// Crash drills (`[chaos] service = "housekeeping"`).
    pub chaos: Option<Arc<Chaos>>,
}

/// Housekeeping as a restartable service of the root.
pub fn service(args: HousekeepingArgs) -> ServiceSpec {
    ServiceSpec {
        name: "housekeeping",
        start: Arc::new(move |root: ractor::ActorCell| {
            let args = args.clone();
            Box::pin(async move {
                let (actor, _) = Actor::spawn_linked(None, Housekeeping, args, root).await?;
                Ok(actor.get_cell())
            })
        }),
    }
}

#[derive(Debug)]
pub enum HousekeepingMsg {
    Tick,
}

impl Actor for Housekeeping {
    type Msg = HousekeepingMsg;
    type State = HousekeepingArgs;
    type Arguments = HousekeepingArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // The daemon ran the first hygiene pass before starting any account.
        let _ = myself.cast(HousekeepingMsg::Tick);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            HousekeepingMsg::Tick => {
                if let Some(chaos) = &state.chaos {
                    chaos.on_service_step("housekeeping");
                }
                let ledger = Arc::clone(&state.ledger);
                let before = crate::domain::now_ts() - CLAIM_HISTORY.as_secs() as i64;
                let pruned = crate::store::blocking(move || ledger.prune_claims(before)).await;
                match pruned {
                    Ok(Ok(0)) => {}
                    Ok(Ok(rows)) => info!(rows, "pruned claim history older than 30 days"),
                    Ok(Err(err)) => {
                        tracing::warn!(error = %err, "cannot prune claim history; retrying next pass")
                    }
                    Err(err) => tracing::warn!(error = %err, "claim history pruning task failed"),
                }
                // Scheduled after the work, so ticks never pile up.
                myself.send_after(state.every, || HousekeepingMsg::Tick);
            }
        }
        Ok(())
    }
}
