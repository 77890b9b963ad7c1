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
//! holds `account_supervision`, see [`crate::store::supervision`], and with `[cluster]`
//! the ownership feed).
//!
//! Ownership (`[cluster]`, see [`crate::cluster`]): `Start` then names the configured
//! accounts, and only those the cluster view gives this member get a child. Every
//! cluster heartbeat ([`SupervisorMsg::Ownership`]) the supervisor compares: an account
//! it gained starts (its stored quarantine, if any, still holds); an account it lost is
//! stopped like at shutdown (its runners finish their unit and release their leases),
//! recorded as `stopped` with the reason "run by another member", and forgotten. A move
//! is not a crash: no restart is counted, no backoff, no quarantine.
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
//!
//! Layout: this file holds the public types (messages, arguments, the factory trait);
//! `actor` the `Actor` impl, `state` the per-child records and transitions, `heartbeat`
//! the periodic tick and stuck detection, `policy` the pure restart decisions.

mod actor;
mod heartbeat;
mod ownership;
pub mod policy;
mod state;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use ractor::{ActorCell, RpcReplyPort, SpawnErr};

pub use crate::domain::supervision::{
    BusyGuard, ChildProgress, ChildState, ChildStatus, CrashInfo,
};
pub use ownership::MOVED_REASON;
use policy::RestartPolicy;
pub use state::SupervisorState;

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
    /// Look at the cluster view again (self-sent every heartbeat of `[cluster]` when
    /// [`SupervisorArgs::ownership`] is set): start the accounts this member gained, stop
    /// the ones it lost.
    Ownership,
}

/// What the supervisor is started with.
pub struct SupervisorArgs {
    pub policy: RestartPolicy,
    pub factory: Arc<dyn ChildFactory>,
    /// The store that holds `account_supervision`: the hour ledger's engine (the SQLite
    /// file, or PostgreSQL shared by the members).
    pub ledger: Arc<dyn crate::store::LedgerStore>,
    /// Which accounts this daemon runs when several share them (`[cluster]`); `None`:
    /// every account it is started with (one daemon).
    pub ownership: Option<crate::cluster::OwnershipFeed>,
}

/// The actor. Spawn it with `Actor::spawn_linked(Some(name), AccountsSupervisor,
/// SupervisorArgs { .. }, root)`, then send [`SupervisorMsg::Start`].
#[derive(Debug, Clone, Copy, Default)]
pub struct AccountsSupervisor;
