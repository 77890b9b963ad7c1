//! The Account actor: one per configured account, a child of the
//! [`AccountsSupervisor`](crate::actors::supervisor::AccountsSupervisor).
//!
//! It owns its streams' runner tasks (one per stream, so streams run concurrently and a
//! slow stream never delays another) and turns a runner's panic into its own failure, so
//! the supervisor restarts it with backoff or quarantines it. The actor's state aborts
//! the runners when dropped: a killed or crashed incarnation leaves nothing running, and
//! its units stay in the ledger (with their report ids) for the next incarnation.
//!
//! Memory: a daemon runs 10,000 of these (issue 3: RSS target), so an account costs as
//! little as an idle actor can: one task per stream (the runner catches its own panic;
//! no second task waits on it); the factory keeps only each account's own part of its
//! stream contexts ([`AccountSpec`]; the rest is [`StreamShared`], once per daemon) and
//! an incarnation builds its contexts when it starts.
//!
//! Infrastructure failures (Redis down, SQLite busy, provider 5xx) never reach the
//! actor: the runners retry them (see [`crate::shapes::runner::run_stream`]).

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::actors::services::panic_message;
use crate::actors::supervisor::{ChildFactory, ChildProgress};
use crate::domain::chaos::Chaos;
use crate::lock::keeper::KeeperHandle;
use crate::lock::settings::LockSettings;
use crate::shapes::spec::AccountConfig;
use crate::shapes::{AbortOnDrop, StreamContext, StreamWork};
use crate::store::LedgerStore;

/// What every stream of every account shares: one copy per daemon, not per stream.
pub struct StreamShared {
    pub ledger: Arc<dyn LedgerStore>,
    /// Where downloaded documents wait between DOWNLOADED and APPLIED.
    pub documents_dir: PathBuf,
    /// `task:pid@host`, written to `claimed_by`.
    pub owner: String,
    /// Stop claiming (shutdown requested).
    pub cancel: CancellationToken,
    /// Stop units in flight (grace period over).
    pub abort: CancellationToken,
    /// Crash drills (`[chaos]`); the drill itself names its account.
    pub chaos: Option<Arc<Chaos>>,
    /// Lease TTLs per stream ([`LockSettings::ttl_for`]).
    pub lock_settings: LockSettings,
    /// The daemon's in-process counters.
    pub metrics: Arc<crate::telemetry::Metrics>,
    /// Work permits across all accounts (`daemon.max_concurrent_runs`).
    pub permits: crate::shapes::RunPermits,
    /// The daemon's poll schedule for reports in flight.
    pub polls: Option<Arc<crate::shapes::windowed::PollSchedule>>,
}

/// One account's own part of its streams' contexts. Why not whole [`StreamContext`]s:
/// 10,000 accounts keep their specs for the daemon's life, and a context repeats what
/// [`StreamShared`] holds once; an incarnation builds its contexts when it starts.
pub struct AccountSpec {
    /// Its streams are `account.streams`, each run by one runner.
    pub account: Arc<AccountConfig>,
    /// The sync shape and client every stream of the account calls.
    pub work: StreamWork,
}

impl AccountSpec {
    /// The context and lease TTL of `account.streams[index]` for an incarnation
    /// reporting to `progress`.
    fn context(
        &self,
        shared: &StreamShared,
        index: usize,
        progress: &Arc<ChildProgress>,
        cancel: &CancellationToken,
    ) -> Option<(StreamContext, Duration)> {
        let stream = self.account.streams.get(index)?;
        let context = StreamContext {
            account: Arc::clone(&self.account),
            stream: stream.clone(),
            ledger: Arc::clone(&shared.ledger),
            work: self.work.clone(),
            documents_dir: shared.documents_dir.clone(),
            owner: shared.owner.clone(),
            cancel: cancel.clone(),
            abort: shared.abort.clone(),
            progress: Some(Arc::clone(progress)),
            chaos: shared.chaos.clone(),
            metrics: Arc::clone(&shared.metrics),
            permits: shared.permits.clone(),
            polls: shared.polls.clone(),
            lease_deadline: None,
        };
        Some((context, shared.lock_settings.ttl_for(stream.interval)))
    }
}

/// Builds Account actors for the supervisor.
pub struct AccountFactory {
    /// By account id. Why an `Arc`: every incarnation reads the same spec; a restart
    /// clones a pointer.
    pub accounts: std::collections::HashMap<String, Arc<AccountSpec>>,
    pub shared: Arc<StreamShared>,
    pub locks: KeeperHandle,
    /// The daemon waits on it at shutdown so units in flight can finish.
    pub tracker: TaskTracker,
}

pub struct AccountActor;

pub struct AccountArgs {
    id: String,
    spec: Arc<AccountSpec>,
    shared: Arc<StreamShared>,
    locks: KeeperHandle,
    tracker: TaskTracker,
    progress: Arc<ChildProgress>,
}

#[derive(Debug)]
pub enum AccountMsg {
    /// A stream runner panicked. `stream` indexes the account's streams; `panic` is
    /// the panic message. A runner that ends by itself (only at shutdown) sends nothing:
    /// the actor stays up until the supervisor stops it, since stopping itself would
    /// look like a crash.
    StreamPanicked { stream: usize, panic: String },
}

pub struct AccountState {
    args: AccountArgs,
    /// Why a guard: aborts the runners when the state drops, panic or not.
    runners: Vec<AbortOnDrop>,
    /// The runners, awaited when the account is stopped (not killed): see `post_stop`.
    joins: Vec<tokio::task::JoinHandle<()>>,
    /// This incarnation's "stop claiming": a child of the daemon's, cancelled on its own
    /// when the supervisor stops just this account (it moved to another member).
    cancel: CancellationToken,
}

/// How long a stopped account waits for its runners to finish their unit and release
/// their leases before they are aborted; below the supervisor's
/// [`SHUTDOWN_GRACE`](crate::actors::supervisor::SHUTDOWN_GRACE), after which it kills.
pub const STOP_GRACE: Duration = Duration::from_secs(8);

impl Actor for AccountActor {
    type Msg = AccountMsg;
    type State = AccountState;
    type Arguments = AccountArgs;

    /// Trivial on purpose: a panic here would never reach the supervisor.
    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(AccountState {
            runners: Vec::with_capacity(args.spec.account.streams.len()),
            joins: Vec::with_capacity(args.spec.account.streams.len()),
            cancel: args.shared.cancel.child_token(),
            args,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for index in 0..state.args.spec.account.streams.len() {
            let Some((context, ttl)) = state.args.spec.context(
                &state.args.shared,
                index,
                &state.args.progress,
                &state.cancel,
            ) else {
                continue;
            };
            let runner =
                crate::shapes::runner::run_stream(Arc::new(context), state.args.locks.clone(), ttl);
            let me = myself.clone();
            // The runner reports its own panic: one task per stream, none waiting on it.
            // It makes its stream's span for each pass (`StreamContext::span`): the task
            // itself logs nothing, and an idle stream keeps no span alive.
            let runner = state.args.tracker.spawn(async move {
                if let Err(payload) = AssertUnwindSafe(runner).catch_unwind().await {
                    let _ = me.cast(AccountMsg::StreamPanicked {
                        stream: index,
                        panic: panic_message(payload),
                    });
                }
            });
            state.runners.push(AbortOnDrop(runner.abort_handle()));
            state.joins.push(runner);
        }
        crate::telemetry::spans::account_span(&state.args.id).in_scope(|| {
            debug!(streams = state.runners.len(), "account actor running");
        });
        Ok(())
    }

    /// A stop of this account alone (not a kill, not a crash: ractor runs this only after
    /// a requested stop), i.e. it moved to another member: the runners stop claiming,
    /// finish the unit in hand and release their leases, as at a daemon shutdown, within
    /// [`STOP_GRACE`]; then the state drops and aborts what is left. Units in flight keep
    /// their report ids in the ledger for whoever runs the account next.
    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if state.args.shared.cancel.is_cancelled() {
            // A daemon shutdown: the daemon waits for the runners itself (its grace), and
            // what is left when it stops the accounts is aborted as the state drops.
            return Ok(());
        }
        state.cancel.cancel();
        let joins = futures_util::future::join_all(state.joins.iter_mut());
        if tokio::time::timeout(STOP_GRACE, joins).await.is_err() {
            tracing::warn!(account = %state.args.id, grace = %humantime::format_duration(STOP_GRACE), "account runners did not stop within the grace period; aborting them");
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AccountMsg::StreamPanicked { stream, panic } => {
                let name = state
                    .args
                    .spec
                    .account
                    .streams
                    .get(stream)
                    .map_or("?", |config| config.name.as_str());
                Err(format!("stream {name} panicked: {panic}").into())
            }
        }
    }
}

impl ChildFactory for AccountFactory {
    fn spawn_child(
        &self,
        id: String,
        supervisor: ActorCell,
        progress: Arc<ChildProgress>,
    ) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> {
        let Some(spec) = self.accounts.get(&id).map(Arc::clone) else {
            return async move {
                Err(SpawnErr::StartupFailed(
                    format!("unknown account {id}").into(),
                ))
            }
            .boxed();
        };
        let args = AccountArgs {
            id: id.clone(),
            spec,
            shared: Arc::clone(&self.shared),
            locks: self.locks.clone(),
            tracker: self.tracker.clone(),
            progress,
        };
        async move {
            // Unnamed: a restart must not collide with the name of a dying incarnation;
            // the supervisor addresses children by account id.
            let (actor, _) = Actor::spawn_linked(None, AccountActor, args, supervisor).await?;
            Ok(actor.get_cell())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::Arc;
    use std::time::Duration;

    use crate::lock::keeper::KeeperHandle;
    use crate::shapes::StreamContext;

    /// The size of the future `runner` returns, without calling it.
    fn future_size<R, F>(_runner: R) -> usize
    where
        R: FnOnce(Arc<StreamContext>, KeeperHandle, Duration) -> F,
        F: Future<Output = ()>,
    {
        std::mem::size_of::<F>()
    }

    /// Collects a subscriber's output (the daemon's log lines) for assertions.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log buffer").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;

        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    /// Regression (issue 3, RSS with 10,000 accounts): a finished run left its lease
    /// renewer task behind, resident until the next renewal time, when it failed to
    /// renew the released lease and logged "lease lost" for a healthy stream. Each run
    /// now has its own cancellation scope, closed when the run ends.
    #[tokio::test]
    async fn a_finished_run_leaves_no_lease_renewer_behind() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .finish();
        // The test's runtime is single-threaded: every runner task logs through this.
        let _guard = tracing::subscriber::set_default(subscriber);
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!(
            r#"
data_dir = "{}"
[simulator]
enabled = true
listen = "127.0.0.1:0"
processing_latency = "0s"
asins_per_marketplace = 3
[locks]
ttl = "3s"

[[accounts]]
id = "acct"
provider = "amazon"
marketplace = "ATVPDKIKX0DER"
[accounts.streams.vendor_rt_sales]
lookback = "2h"
chunk = "2h"
poll_min = "10ms"
poll_max = "50ms"
safety_lag = "0s"
daily_audit = false
"#,
            dir.path().display()
        );
        let config = crate::config::Config::parse(&text, "test.toml").expect("valid config");
        let daemon = crate::app::Daemon::start(&config)
            .await
            .expect("daemon starts");
        let applied = || {
            daemon.ledger.with_conn(|conn| {
                conn.query_row(
                    "SELECT COUNT(*) FROM ledger_hours WHERE state = 'APPLIED'",
                    [],
                    |row| row.get::<_, i64>(0),
                )
                .unwrap_or(0)
            })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while applied() < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the account did not catch up within 30s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Renewals are due every ttl/3 = 1s: a renewer left behind by the run would
        // fail on the released lease within this window.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        daemon.shutdown(Duration::from_secs(5)).await;
        let logs = String::from_utf8_lossy(&captured.0.lock().expect("log buffer")).to_string();
        assert!(
            !logs.contains("lease lost"),
            "a finished run's lease renewer outlived it:\n{logs}"
        );
    }

    /// Every idle stream of every account keeps its runner's future resident (10,000
    /// accounts: issue 3's RSS target). Guards against an inline await (a run, a ledger
    /// call) making every idle runner carry its state: box it instead.
    #[test]
    fn an_idle_runner_future_stays_small() {
        let size = future_size(crate::shapes::runner::run_stream);
        assert!(
            size <= 512,
            "run_stream's future is {size} bytes; box the await that grew it"
        );
    }
}
