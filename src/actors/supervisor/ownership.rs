//! Ownership across daemons (`[cluster]`): every cluster heartbeat the supervisor starts
//! the accounts this member gained and stops the ones it lost. A move is not a crash: the
//! child is stopped like at shutdown (its runners finish their unit, release their
//! leases), its row says `stopped` with the reason [`MOVED_REASON`] (unless the rows are
//! shared with the other members, on PostgreSQL: then the new owner writes it), and the
//! record is forgotten; no restart, backoff or quarantine is counted. A gained account reads its
//! stored row again first, so a quarantine recorded in a shared store still holds.

use std::collections::BTreeSet;

use ractor::{ActorCell, ActorRef, RactorErr};
use tracing::{info, warn};

use super::{ChildState, SupervisorMsg, SupervisorState, SHUTDOWN_GRACE};

/// The reason stored for an account stopped because another member runs it now.
pub const MOVED_REASON: &str = "run by another member";

impl SupervisorState {
    /// Schedules the next [`SupervisorMsg::Ownership`] (when the cluster is on).
    pub(super) fn schedule_ownership(&self, myself: &ActorRef<SupervisorMsg>) {
        if self.shutting_down {
            return;
        }
        if let Some(feed) = &self.ownership_opt {
            // Dropping the handle detaches the timer; a send to a stopped supervisor fails.
            drop(myself.send_after(feed.every, || SupervisorMsg::Ownership));
        }
    }

    /// Brings the children in line with the cluster view: start the gained accounts,
    /// stop the lost ones.
    pub(super) async fn reconcile_ownership(&mut self, myself: &ActorRef<SupervisorMsg>) {
        if self.shutting_down {
            return;
        }
        let Some(feed) = &self.ownership_opt else {
            return;
        };
        let owned = feed.owned(&self.configured);
        let lost: Vec<String> = self
            .children
            .keys()
            .filter(|id| !owned.contains(*id))
            .cloned()
            .collect();
        let gained: Vec<String> = owned
            .iter()
            .filter(|id| !self.children.contains_key(*id))
            .cloned()
            .collect();
        if lost.is_empty() && gained.is_empty() {
            return;
        }
        info!(
            gained = gained.len(),
            lost = lost.len(),
            owned = owned.len(),
            configured = self.configured.len(),
            "account ownership changed; moving accounts"
        );
        if !lost.is_empty() {
            self.release_children(&lost).await;
        }
        if !gained.is_empty() {
            self.reload_persisted(&gained).await;
            for id in gained {
                self.add_child(myself, id).await;
            }
        }
        self.flush(false).await;
    }

    /// Stops the children `ids` (gracefully, killing after [`SHUTDOWN_GRACE`]), records
    /// them as stopped for the move, and forgets them.
    async fn release_children(&mut self, ids: &[String]) {
        let mut running: Vec<(String, ActorCell)> = Vec::new();
        for id in ids {
            let Some(child) = self.children.get_mut(id) else {
                continue;
            };
            if let Some(cell) = child.cell_opt.take() {
                // Forgotten first: its termination event is then not a crash.
                self.cell_to_child.remove(&cell.get_id());
                running.push((id.clone(), cell));
            }
        }
        let stops = running.iter().map(|(id, cell)| async move {
            let stopped = cell
                .stop_and_wait(Some("account moved to another member".to_string()), Some(SHUTDOWN_GRACE))
                .await;
            if let Err(RactorErr::Timeout) = stopped {
                warn!(account = %id, "account actor did not stop within the grace period; killing it");
                cell.kill();
            }
        });
        futures_util::future::join_all(stops).await;
        let shared = self.ledger.supervision_is_shared();
        for id in ids {
            let Some(child) = self.children.get_mut(id) else {
                continue;
            };
            if shared && child.state != ChildState::Quarantined {
                // The members share the rows: the new owner writes this one (a `stopped`
                // written now could land after its `running`).
                self.dirty.remove(id);
                continue;
            }
            // A quarantine stays on record for whoever runs the account next.
            if child.state != ChildState::Quarantined {
                child.state = ChildState::Stopped;
                child.backoff_until_opt = None;
                child.state_reason_opt = Some(MOVED_REASON.to_string());
            }
            self.dirty.insert(id.clone());
        }
        // Written while the records still exist; then forgotten.
        self.flush(false).await;
        for id in ids {
            self.children.remove(id);
            self.dirty.remove(id);
        }
        info!(
            accounts = ids.len(),
            stopped = running.len(),
            "accounts handed over to other members"
        );
    }

    /// Reads the stored rows of `ids` again (another member, or this one earlier, may
    /// have written them since this supervisor started).
    async fn reload_persisted(&mut self, ids: &[String]) {
        let wanted: BTreeSet<String> = ids.iter().cloned().collect();
        let ledger = self.ledger.clone();
        let loaded = tokio::task::spawn_blocking(move || ledger.load_children()).await;
        match loaded {
            Ok(Ok(rows)) => {
                for row in rows {
                    if wanted.contains(&row.account) {
                        self.persisted.insert(row.account.clone(), row);
                    }
                }
            }
            Ok(Err(err)) => {
                warn!(error = %err, "cannot load the supervision rows of gained accounts; they start without their history");
            }
            Err(err) => {
                warn!(error = %err, "loading the supervision rows of gained accounts failed; they start without their history");
            }
        }
    }
}
