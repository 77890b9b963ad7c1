//! The lease keeper: one actor owns every lease this daemon holds.
//!
//! Purpose: a runner takes its stream's lease through the keeper ([`KeeperHandle::acquire`])
//! and gives it back through it ([`KeeperHandle::release`]); in between, the keeper renews
//! every held lease on one schedule (each lease every `ttl/3`, due leases renewed together:
//! one pipelined round trip to Redis) instead of a renewer task per run, runs the hygiene
//! scan ([`super::lock_hygiene`]) every `locks.hygiene_interval`, and tells a holder whose
//! lease is lost by cancelling the token it handed out, so the holder stops writing.
//!
//! A keeper that crashes drops its state, and with it every holder's guard: each holder's
//! token is cancelled, its run stops, and the next run takes a new lease from the restarted
//! keeper (the root restarts it like any service; [`KeeperHandle`] follows the restart).
//!
//! Options: `locks.hygiene_interval`. Emits: `error` for every lost lease (scope, reason),
//! `warn` for renewals retried while the backend is unreachable, the hygiene pass's lines.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, error, warn};

use super::{lock_hygiene, Lease, LockError, LockService};

/// How long a release waits for the keeper's answer before the holder moves on (the
/// lease then expires by itself).
const RELEASE_WAIT: Duration = Duration::from_secs(5);
/// The shortest pause between two renewal passes.
const MIN_TICK: Duration = Duration::from_millis(50);

/// A cheap, cloneable handle on the keeper; every clone follows a restarted keeper.
#[derive(Clone)]
pub struct KeeperHandle {
    /// The lease backend, for the acquisition itself (run in the caller's task, so 10,000
    /// accounts starting together do not queue behind one actor).
    locks: LockService,
    /// Why a std lock: held only to clone or swap the reference, never across an await.
    current: Arc<RwLock<ActorRef<KeeperMsg>>>,
}

/// A lease the keeper holds for a runner: `lost` is cancelled when it can no longer be
/// renewed (or the keeper died).
#[derive(Debug)]
pub struct HeldLease {
    pub lease: Lease,
    /// The owner of the expired lease this acquisition took over, if any.
    pub taken_from: Option<String>,
    /// Until when the lease is known to be ours by this process's clock.
    pub deadline: LeaseDeadline,
}

/// Until when a held lease is known to be ours by this process's monotonic clock: the
/// instant just before the acquisition or renewal the backend last accepted, plus the TTL
/// less a margin (the backend started its TTL later than that instant, so this ends
/// first). The keeper extends it on every renewal; the holder checks it synchronously
/// before every provider call ([`LeaseDeadline::passed`]). A process frozen past its lease
/// (SIGSTOP, a paused VM) thus makes no call after it resumes, even before the keeper's
/// overdue renewal is refused and cancels the holder.
#[derive(Debug, Clone)]
pub struct LeaseDeadline(Arc<std::sync::Mutex<Instant>>);

impl LeaseDeadline {
    /// A lease whose TTL `ttl` started no earlier than `at`.
    pub fn starting(at: Instant, ttl: Duration) -> LeaseDeadline {
        LeaseDeadline(Arc::new(std::sync::Mutex::new(at + Self::valid_for(ttl))))
    }

    /// A renewal sent at `at` was accepted: the lease is ours until `at` + the TTL's share.
    fn extend(&self, at: Instant, ttl: Duration) {
        let mut until = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *until = (*until).max(at + Self::valid_for(ttl));
    }

    /// True once the lease may have expired in the backend.
    pub fn passed(&self) -> bool {
        Instant::now() >= *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The TTL less a margin for clock-rate differences: 5 %, at most one second.
    fn valid_for(ttl: Duration) -> Duration {
        ttl.saturating_sub((ttl / 20).min(Duration::from_secs(1)))
    }
}

#[derive(Debug)]
pub enum KeeperMsg {
    /// Keep `lease` renewed every `ttl/3`; cancel `lost` when it is lost.
    Hold {
        lease: Lease,
        ttl: Duration,
        lost: CancellationToken,
        /// Extended on every accepted renewal.
        deadline: LeaseDeadline,
        /// Answered once the keeper holds it (so a keeper that dies afterwards takes the
        /// holder down with it).
        reply: RpcReplyPort<()>,
    },
    /// Stop renewing the scope's lease and release it in the backend.
    Release {
        lease: Lease,
        reply: RpcReplyPort<()>,
    },
    /// The holder is gone without releasing (its task was aborted: a [`ReleaseGuard`]
    /// dropped armed): stop renewing the lease and release it in the backend, so the next
    /// owner (another member, after a move) need not wait for a lease nobody works under.
    Abandon { lease: Lease },
    /// Renew what is due.
    Renew,
    /// Run the hygiene scan, and schedule the next one.
    Hygiene,
}

/// One held lease.
struct Held {
    lease: Lease,
    ttl: Duration,
    due: Instant,
    deadline: LeaseDeadline,
    /// Cancels the holder's token when dropped: when the lease is lost, or when the
    /// keeper's state goes with a crash. Disarmed on a clean release.
    guard: DropGuard,
}

pub struct LeaseKeeper;

pub struct KeeperArgs {
    pub locks: LockService,
    pub hygiene_every: Duration,
}

pub struct KeeperState {
    locks: LockService,
    hygiene_every: Duration,
    held: HashMap<String, Held>,
    /// When the next renewal pass is scheduled, if one is.
    next_pass_opt: Option<Instant>,
}

impl LeaseKeeper {
    /// Starts a keeper on its own (tools and tests); the daemon's is a service of the root.
    pub async fn spawn(
        locks: LockService,
        hygiene_every: Duration,
    ) -> Result<KeeperHandle, SpawnErr> {
        let (actor, _) = Actor::spawn(
            None,
            LeaseKeeper,
            KeeperArgs {
                locks: locks.clone(),
                hygiene_every,
            },
        )
        .await?;
        Ok(KeeperHandle::new(locks, actor))
    }

    /// Starts a keeper linked to `supervisor` and points `handle` at it.
    pub async fn spawn_linked(
        handle: &KeeperHandle,
        hygiene_every: Duration,
        supervisor: ActorCell,
    ) -> Result<ActorCell, SpawnErr> {
        let (actor, _) = Actor::spawn_linked(
            None,
            LeaseKeeper,
            KeeperArgs {
                locks: handle.locks.clone(),
                hygiene_every,
            },
            supervisor,
        )
        .await?;
        handle.replace(actor.clone());
        Ok(actor.get_cell())
    }
}

impl KeeperHandle {
    pub fn new(locks: LockService, actor: ActorRef<KeeperMsg>) -> KeeperHandle {
        KeeperHandle {
            locks,
            current: Arc::new(RwLock::new(actor)),
        }
    }

    /// The lease backend the keeper works on.
    pub fn locks(&self) -> &LockService {
        &self.locks
    }

    /// The keeper that answers now, as a cell (for linking it under a supervisor).
    pub fn cell(&self) -> ActorCell {
        self.actor().get_cell()
    }

    fn actor(&self) -> ActorRef<KeeperMsg> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Points every clone at `actor` (a restarted keeper).
    pub fn replace(&self, actor: ActorRef<KeeperMsg>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = actor;
    }

    /// Takes the scope's lease with a fence above `floor` (see
    /// [`LockService::acquire_above`]) and hands it to the keeper, which renews it until
    /// it is released; `lost` is cancelled when the lease is lost. A keeper that cannot
    /// be reached is the backend being unavailable: the lease is released again.
    pub async fn acquire(
        &self,
        scope: &str,
        owner: &str,
        ttl: Duration,
        floor: u64,
        lost: CancellationToken,
    ) -> Result<HeldLease, LockError> {
        let started = Instant::now();
        let (lease, taken_from) = self.locks.acquire_above(scope, owner, ttl, floor).await?;
        let deadline = LeaseDeadline::starting(started, ttl);
        let held = ractor::call_t!(
            self.actor(),
            |reply| KeeperMsg::Hold {
                lease: lease.clone(),
                ttl,
                lost,
                deadline: deadline.clone(),
                reply,
            },
            u64::try_from(RELEASE_WAIT.as_millis()).unwrap_or(u64::MAX)
        );
        if let Err(err) = held {
            let _ = self.locks.release(&lease).await;
            return Err(LockError::Unavailable(format!(
                "the lease keeper did not take the lease: {err}"
            )));
        }
        Ok(HeldLease {
            lease,
            taken_from,
            deadline,
        })
    }

    /// A guard that releases `lease` when dropped unless [`ReleaseGuard::release`] ran:
    /// a holder whose task is aborted (an account stopped past its grace period) must not
    /// leave the keeper renewing its lease for ever.
    pub fn release_guard(&self, lease: &Lease) -> ReleaseGuard {
        ReleaseGuard {
            keeper: self.clone(),
            lease: Some(lease.clone()),
        }
    }

    /// Stops renewing `lease` and releases it; waits at most `RELEASE_WAIT` (5 s) (the lease
    /// expires by itself otherwise).
    pub async fn release(&self, lease: &Lease) {
        let sent = ractor::call_t!(
            self.actor(),
            |reply| KeeperMsg::Release {
                lease: lease.clone(),
                reply,
            },
            u64::try_from(RELEASE_WAIT.as_millis()).unwrap_or(u64::MAX)
        );
        if let Err(err) = sent {
            debug!(scope = %lease.scope, error = %err, "keeper did not confirm the release; the lease expires by itself");
            let _ = self.locks.release(lease).await;
        }
    }
}

/// Releases its lease through the keeper when dropped armed (see
/// [`KeeperHandle::release_guard`]); [`ReleaseGuard::release`] is the clean release.
pub struct ReleaseGuard {
    keeper: KeeperHandle,
    lease: Option<Lease>,
}

impl ReleaseGuard {
    /// Releases the lease and waits for the keeper (see [`KeeperHandle::release`]).
    pub async fn release(mut self) {
        if let Some(lease) = self.lease.take() {
            self.keeper.release(&lease).await;
        }
    }
}

impl Drop for ReleaseGuard {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            // No await in a destructor: a message the keeper handles in turn.
            if let Err(err) = self.keeper.actor().cast(KeeperMsg::Abandon { lease }) {
                debug!(error = %err, "keeper gone; the abandoned lease expires by itself");
            }
        }
    }
}

impl Actor for LeaseKeeper {
    type Msg = KeeperMsg;
    type State = KeeperState;
    type Arguments = KeeperArgs;

    /// Trivial on purpose: a panic here would never reach the root as an event.
    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(KeeperState {
            locks: args.locks,
            hygiene_every: args.hygiene_every,
            held: HashMap::new(),
            next_pass_opt: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // The daemon ran the first hygiene pass before starting any account.
        myself.send_after(state.hygiene_every, || KeeperMsg::Hygiene);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            KeeperMsg::Hold {
                lease,
                ttl,
                lost,
                deadline,
                reply,
            } => {
                let due = Instant::now() + Lease::renew_every(ttl);
                let held = Held {
                    lease,
                    ttl,
                    due,
                    deadline,
                    guard: lost.drop_guard(),
                };
                if let Some(previous) = state.held.insert(held.lease.scope.clone(), held) {
                    // The same scope taken again (a new incarnation took its lease back):
                    // the old holder's lease is gone.
                    drop(previous);
                }
                schedule(&myself, state, due);
                let _ = reply.send(());
            }
            KeeperMsg::Release { lease, reply } => {
                let mine = state
                    .held
                    .get(&lease.scope)
                    .is_some_and(|held| held.lease.token == lease.token);
                if mine {
                    if let Some(held) = state.held.remove(&lease.scope) {
                        // A clean release: the holder's token stays uncancelled.
                        let _ = held.guard.disarm();
                    }
                }
                if let Err(err) = state.locks.release(&lease).await {
                    debug!(scope = %lease.scope, error = %err, "lease release failed; it expires by itself");
                }
                let _ = reply.send(());
            }
            KeeperMsg::Abandon { lease } => {
                let mine = state
                    .held
                    .get(&lease.scope)
                    .is_some_and(|held| held.lease.token == lease.token);
                if mine {
                    if let Some(held) = state.held.remove(&lease.scope) {
                        let _ = held.guard.disarm();
                    }
                    warn!(scope = %lease.scope, "lease released: its holder stopped without releasing it (aborted)");
                }
                if let Err(err) = state.locks.release(&lease).await {
                    debug!(scope = %lease.scope, error = %err, "lease release failed; it expires by itself");
                }
            }
            KeeperMsg::Renew => {
                state.next_pass_opt = None;
                renew_due(state).await;
                if let Some(due) = state.held.values().map(|held| held.due).min() {
                    schedule(&myself, state, due);
                }
            }
            KeeperMsg::Hygiene => {
                lock_hygiene(&state.locks).await;
                myself.send_after(state.hygiene_every, || KeeperMsg::Hygiene);
            }
        }
        Ok(())
    }
}

/// Arms a renewal pass at `due` unless one comes sooner.
fn schedule(myself: &ActorRef<KeeperMsg>, state: &mut KeeperState, due: Instant) {
    if state.next_pass_opt.is_some_and(|next| next <= due) {
        return;
    }
    state.next_pass_opt = Some(due);
    let wait = due.saturating_duration_since(Instant::now()).max(MIN_TICK);
    myself.send_after(wait, || KeeperMsg::Renew);
}

/// Renews every lease that is due, together; a lease that cannot be renewed is lost
/// (its holder's token cancelled), unless the backend is only unreachable and the lease
/// still has time left (then the next pass retries).
async fn renew_due(state: &mut KeeperState) {
    let now = Instant::now();
    let due: Vec<(Lease, Duration)> = state
        .held
        .values()
        .filter(|held| held.due <= now)
        .map(|held| (held.lease.clone(), held.ttl))
        .collect();
    if due.is_empty() {
        return;
    }
    let sent = Instant::now();
    let results = state.locks.renew_many(&due).await;
    let wall_now_ms = chrono::Utc::now().timestamp_millis();
    for ((lease, ttl), result) in due.into_iter().zip(results) {
        let every = Lease::renew_every(ttl);
        let every_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
        match result {
            Ok(renewed) => {
                if let Some(held) = state.held.get_mut(&lease.scope) {
                    held.lease = renewed;
                    held.due = Instant::now() + every;
                    held.deadline.extend(sent, ttl);
                }
            }
            Err(LockError::Unavailable(message))
                if wall_now_ms.saturating_add(every_ms) < lease.expires_at_ms =>
            {
                warn!(scope = %lease.scope, error = %message, "lease renewal failed; retrying before it expires");
                if let Some(held) = state.held.get_mut(&lease.scope) {
                    held.due = Instant::now() + every.min(Duration::from_secs(1));
                }
            }
            Err(err) => {
                error!(scope = %lease.scope, error = %err, "lease lost; stopping work on this scope");
                // Dropping the entry drops its guard: the holder's token is cancelled.
                state.held.remove(&lease.scope);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sqlite_locks() -> (tempfile::TempDir, LockService) {
        let dir = tempfile::tempdir().unwrap();
        let locks = LockService::sqlite(&dir.path().join("locks.db"))
            .await
            .unwrap();
        (dir, locks)
    }

    /// Waits for `check` with a deadline (no sleep standing in for synchronisation).
    async fn eventually(mut check: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if check() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        check()
    }

    #[tokio::test]
    async fn a_held_lease_is_renewed_past_its_ttl_by_the_keeper_alone() {
        let (_dir, locks) = sqlite_locks().await;
        let keeper = LeaseKeeper::spawn(locks.clone(), Duration::from_secs(3600))
            .await
            .unwrap();
        let lost = CancellationToken::new();
        let ttl = Duration::from_millis(300);
        let held = keeper
            .acquire("acct/s", "auto-sync:1@here#a", ttl, 0, lost.clone())
            .await
            .unwrap();
        let first_expiry = held.lease.expires_at_ms;
        // Three TTLs later the lease is still ours, with a later expiry.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let all = locks.list().await.unwrap();
            let expiry = all
                .iter()
                .find(|info| info.scope == "acct/s")
                .and_then(|info| info.expires_at_ms)
                .unwrap_or(0);
            if expiry > first_expiry + 900 {
                break;
            }
            assert!(Instant::now() < deadline, "not renewed: {all:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!lost.is_cancelled());
        keeper.release(&held.lease).await;
        assert!(locks.list().await.unwrap().is_empty(), "released");
        assert!(!lost.is_cancelled(), "a clean release is not a loss");
    }

    #[tokio::test]
    async fn a_holder_aborted_before_its_release_leaves_no_lease_renewed_for_ever() {
        let (_dir, locks) = sqlite_locks().await;
        let keeper = LeaseKeeper::spawn(locks.clone(), Duration::from_secs(3600))
            .await
            .unwrap();
        let ttl = Duration::from_secs(600);
        let held = keeper
            .acquire(
                "acct/s",
                "auto-sync:1@here#a",
                ttl,
                0,
                CancellationToken::new(),
            )
            .await
            .unwrap();
        // A holder task that holds the guard and never gets to release: aborted.
        let guard = keeper.release_guard(&held.lease);
        let holder = tokio::spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        tokio::task::yield_now().await;
        assert_eq!(
            locks.list().await.unwrap().len(),
            1,
            "held while the holder runs"
        );
        holder.abort();
        let _ = holder.await;
        // The keeper releases it (not after the 10-minute TTL): another owner gets it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !locks.list().await.unwrap().is_empty() {
            assert!(Instant::now() < deadline, "{:?}", locks.list().await);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let other = keeper
            .acquire(
                "acct/s",
                "auto-sync:2@there#b",
                ttl,
                0,
                CancellationToken::new(),
            )
            .await;
        assert!(other.is_ok(), "{other:?}");
        // A clean release through the guard releases at once and sends nothing later.
        let other = other.unwrap();
        keeper.release_guard(&other.lease).release().await;
        assert!(locks.list().await.unwrap().is_empty());
    }

    #[test]
    fn a_lease_deadline_ends_a_margin_before_the_ttl_and_renewals_extend_it() {
        let ttl = Duration::from_secs(10);
        let ago = |millis: u64| {
            Instant::now()
                .checked_sub(Duration::from_millis(millis))
                .expect("the clock is past this")
        };
        let young = LeaseDeadline::starting(ago(9_000), ttl);
        assert!(!young.passed(), "9 s into a 10 s lease (margin 0.5 s)");
        let old = LeaseDeadline::starting(ago(9_600), ttl);
        assert!(old.passed(), "9.6 s into a 10 s lease");
        old.extend(Instant::now(), ttl);
        assert!(!old.passed(), "a renewal accepted now extends it");
        // An older renewal's answer never shortens it.
        old.extend(ago(20_000), ttl);
        assert!(!old.passed());
    }

    #[tokio::test]
    async fn the_keeper_extends_a_held_leases_deadline_on_every_renewal() {
        let (_dir, locks) = sqlite_locks().await;
        let keeper = LeaseKeeper::spawn(locks.clone(), Duration::from_secs(3600))
            .await
            .unwrap();
        let ttl = Duration::from_millis(300);
        let held = keeper
            .acquire(
                "acct/s",
                "auto-sync:1@here#a",
                ttl,
                0,
                CancellationToken::new(),
            )
            .await
            .unwrap();
        let started = Instant::now();
        // Three TTLs on, the renewals kept the deadline ahead.
        while started.elapsed() < ttl * 3 {
            assert!(
                !held.deadline.passed(),
                "passed {:?} after the acquisition",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        keeper.release(&held.lease).await;
    }

    #[tokio::test]
    async fn a_lease_taken_over_is_reported_lost_to_its_holder() {
        let (_dir, locks) = sqlite_locks().await;
        let keeper = LeaseKeeper::spawn(locks.clone(), Duration::from_secs(3600))
            .await
            .unwrap();
        let lost = CancellationToken::new();
        keeper
            .acquire(
                "acct/s",
                "auto-sync:1@here#a",
                Duration::from_millis(300),
                0,
                lost.clone(),
            )
            .await
            .unwrap();
        // An operator force-releases it and another owner takes the scope.
        locks.release_scope("acct/s", true).await.unwrap();
        locks
            .acquire("acct/s", "fill-day:2@there#b", Duration::from_secs(60))
            .await
            .unwrap();
        assert!(
            eventually(|| lost.is_cancelled()).await,
            "the holder is told at the next renewal"
        );
    }

    #[tokio::test]
    async fn a_dead_keeper_stops_every_holder() {
        let (_dir, locks) = sqlite_locks().await;
        let keeper = LeaseKeeper::spawn(locks.clone(), Duration::from_secs(3600))
            .await
            .unwrap();
        let lost = CancellationToken::new();
        keeper
            .acquire(
                "acct/s",
                "auto-sync:1@here#a",
                Duration::from_secs(60),
                0,
                lost.clone(),
            )
            .await
            .unwrap();
        keeper.cell().stop(None);
        assert!(
            eventually(|| lost.is_cancelled()).await,
            "nobody renews the lease any more: its holder must stop"
        );
    }

    #[tokio::test]
    async fn renewals_of_many_leases_go_to_redis_in_one_pass() {
        let redis = crate::bench::redis_server::RedisServer::start().expect("redis-server");
        let locks = LockService::redis(&redis.url(), "keeper-test:")
            .await
            .unwrap();
        let ttl = Duration::from_secs(2);
        let mut due = Vec::new();
        for index in 0..20 {
            let lease = locks
                .acquire(&format!("acct-{index}/s"), "auto-sync:1@here#a", ttl)
                .await
                .unwrap();
            due.push((lease, ttl));
        }
        let mut foreign = due[3].0.clone();
        foreign.token = "not-the-token".to_string();
        due.push((foreign, ttl));
        let answers = locks.renew_many(&due).await;
        assert_eq!(answers.len(), 21);
        for (index, answer) in answers.iter().take(20).enumerate() {
            let renewed = answer
                .as_ref()
                .unwrap_or_else(|err| panic!("{index}: {err}"));
            assert!(renewed.expires_at_ms >= due[index].0.expires_at_ms);
        }
        assert!(
            matches!(answers[20], Err(LockError::Lost { .. })),
            "a wrong token is not renewed: {:?}",
            answers[20]
        );
    }
}
