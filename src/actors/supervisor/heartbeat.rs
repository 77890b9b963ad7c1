//! The supervisor's periodic tick: ends expired mass-failure halts, kills stuck children
//! (busy with a progress counter that did not move for `stuck_after`), probes
//! quarantines whose time has come, persists the states and picks up resume requests.

use std::time::Duration;

use ractor::ActorRef;
use tokio::time::Instant;
use tracing::{info, warn};

use super::policy::instant_after;
use super::state::SpawnKind;
use super::{ChildState, SupervisorMsg, SupervisorState};

impl SupervisorState {
    pub(super) fn schedule_heartbeat(&mut self, myself: &ActorRef<SupervisorMsg>) {
        self.next_heartbeat_at = instant_after(Instant::now(), self.policy.heartbeat);
        // Dropping the handle detaches the timer task; if the supervisor is gone by then
        // the send just fails.
        drop(myself.send_after(self.policy.heartbeat, || SupervisorMsg::Heartbeat));
    }

    pub(super) async fn heartbeat(&mut self, myself: &ActorRef<SupervisorMsg>) {
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
}
