//! Tests of the [`AccountsSupervisor`] with a `FailingActor` child (the quickwit-actors
//! template): one test per failure kind (panic, returned error, freeze), quarantine with
//! persistence and resume, mass failure, and sibling isolation.
//!
//! Options: each test builds its own [`RestartPolicy`] with short real durations (tokio's
//! `test-util` feature, needed for paused time, is not enabled in this crate). Waits are
//! condition polls with deadlines, never sleeps standing in for synchronisation.
//!
//! Emits: panics of the failing children on stderr (expected).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::future::BoxFuture;
use ractor::{call_t, Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr};
use tokio::time::Instant;

use super::policy::RestartPolicy;
use super::{
    AccountsSupervisor, ChildFactory, ChildProgress, ChildState, ChildStatus, SupervisorArgs,
    SupervisorMsg,
};
use crate::store::sqlite::SqliteLedger;
use crate::store::supervision as store;

/// How long a test waits for a condition before failing.
const DEADLINE: Duration = Duration::from_secs(10);
/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(5);
/// `call_t!` timeout (ms) for test calls.
const CALL_MS: u64 = 1_000;

enum FailingMsg {
    Panic,
    ReturnError,
    /// Marks itself busy and awaits forever without bumping its progress.
    Freeze,
    /// Bumps progress; replies with this incarnation's count.
    Increment(RpcReplyPort<u64>),
}

struct FailingActor;

struct FailingArgs {
    id: String,
    progress: Arc<ChildProgress>,
    /// A poison account: panics in `post_start`, so it crash-loops on its own.
    panic_on_start: bool,
}

struct FailingState {
    id: String,
    progress: Arc<ChildProgress>,
    panic_on_start: bool,
    count: u64,
}

impl Actor for FailingActor {
    type Msg = FailingMsg;
    type State = FailingState;
    type Arguments = FailingArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<FailingMsg>,
        args: FailingArgs,
    ) -> Result<FailingState, ActorProcessingErr> {
        Ok(FailingState {
            id: args.id,
            progress: args.progress,
            panic_on_start: args.panic_on_start,
            count: 0,
        })
    }

    async fn post_start(
        &self,
        _myself: ActorRef<FailingMsg>,
        state: &mut FailingState,
    ) -> Result<(), ActorProcessingErr> {
        // Here, not in pre_start: a panic in pre_start never reaches a supervisor.
        if state.panic_on_start {
            panic!(
                "poison account {}: inventory document exhausted memory",
                state.id
            );
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<FailingMsg>,
        message: FailingMsg,
        state: &mut FailingState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            FailingMsg::Panic => panic!("account {}: failing actor panicked", state.id),
            FailingMsg::ReturnError => {
                Err(format!("account {}: document failed validation", state.id).into())
            }
            FailingMsg::Freeze => {
                state.progress.set_busy(true);
                futures_util::future::pending::<()>().await;
                Ok(())
            }
            FailingMsg::Increment(reply) => {
                state.progress.bump();
                state.count += 1;
                let _ = reply.send(state.count);
                Ok(())
            }
        }
    }
}

#[derive(Default)]
struct FactoryInner {
    /// Incarnations spawned per id.
    generations: HashMap<String, u64>,
    /// The latest incarnation per id.
    current: HashMap<String, ActorRef<FailingMsg>>,
    poison: HashSet<String>,
}

/// Spawns `FailingActor`s and remembers the latest incarnation of each id.
#[derive(Clone, Default)]
struct TestFactory {
    inner: Arc<Mutex<FactoryInner>>,
}

impl TestFactory {
    fn with_poison(ids: &[&str]) -> TestFactory {
        let factory = TestFactory::default();
        factory.lock().poison = ids.iter().map(|id| id.to_string()).collect();
        factory
    }

    fn lock(&self) -> MutexGuard<'_, FactoryInner> {
        self.inner.lock().unwrap()
    }

    fn generation(&self, id: &str) -> u64 {
        self.lock().generations.get(id).copied().unwrap_or(0)
    }

    fn current(&self, id: &str) -> ActorRef<FailingMsg> {
        self.lock().current.get(id).cloned().unwrap()
    }

    fn cure(&self, id: &str) {
        self.lock().poison.remove(id);
    }

    async fn increment(&self, id: &str) -> u64 {
        let actor = self.current(id);
        call_t!(actor, FailingMsg::Increment, CALL_MS).unwrap()
    }
}

impl ChildFactory for TestFactory {
    fn spawn_child(
        &self,
        id: String,
        supervisor: ActorCell,
        progress: Arc<ChildProgress>,
    ) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let panic_on_start = inner.lock().unwrap().poison.contains(&id);
            let args = FailingArgs {
                id: id.clone(),
                progress,
                panic_on_start,
            };
            let (actor, _join) = Actor::spawn_linked(None, FailingActor, args, supervisor).await?;
            let mut guard = inner.lock().unwrap();
            *guard.generations.entry(id.clone()).or_insert(0) += 1;
            guard.current.insert(id, actor.clone());
            Ok(actor.get_cell())
        })
    }
}

/// Short real durations; tests override what they exercise.
fn fast_policy() -> RestartPolicy {
    RestartPolicy {
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        random_factor: 0.2,
        reset_after: Duration::from_secs(600),
        max_crashes: 100,
        crash_window: Duration::from_secs(600),
        probe_after: Duration::from_secs(3600),
        stuck_after: Duration::from_secs(600),
        heartbeat: Duration::from_millis(20),
        mass_failure_children: 3,
        mass_failure_window: Duration::from_secs(60),
        mass_failure_pause: Duration::from_secs(300),
    }
}

async fn start_supervisor(
    policy: RestartPolicy,
    factory: &TestFactory,
    ledger: Arc<SqliteLedger>,
    ids: &[&str],
) -> ActorRef<SupervisorMsg> {
    let args = SupervisorArgs {
        policy,
        factory: Arc::new(factory.clone()),
        ledger: ledger as Arc<dyn crate::store::LedgerStore>,
        ownership: None,
    };
    let (supervisor, _join) = Actor::spawn(None, AccountsSupervisor, args).await.unwrap();
    supervisor
        .cast(SupervisorMsg::Start(
            ids.iter().map(|id| id.to_string()).collect(),
        ))
        .unwrap();
    supervisor
}

async fn statuses(supervisor: &ActorRef<SupervisorMsg>) -> Vec<ChildStatus> {
    call_t!(supervisor, SupervisorMsg::Status, CALL_MS).unwrap()
}

async fn status_of(supervisor: &ActorRef<SupervisorMsg>, id: &str) -> ChildStatus {
    statuses(supervisor)
        .await
        .into_iter()
        .find(|status| status.id == id)
        .unwrap_or_else(|| panic!("no status for {id}"))
}

/// Polls `id`'s status until `condition` holds; fails after [`DEADLINE`].
async fn wait_for_status(
    supervisor: &ActorRef<SupervisorMsg>,
    id: &str,
    what: &str,
    condition: impl Fn(&ChildStatus) -> bool,
) -> ChildStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let status = status_of(supervisor, id).await;
        if condition(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{id}: timed out waiting for {what}; last status {status:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn shut_down(supervisor: ActorRef<SupervisorMsg>) {
    call_t!(supervisor, SupervisorMsg::Shutdown, 15_000).unwrap();
    supervisor
        .stop_and_wait(None, Some(Duration::from_secs(5)))
        .await
        .unwrap();
}

fn memory_ledger() -> Arc<SqliteLedger> {
    Arc::new(SqliteLedger::open_in_memory().unwrap())
}

#[tokio::test]
async fn panicking_child_is_restarted_after_backoff() {
    let factory = TestFactory::default();
    let policy = RestartPolicy {
        min_backoff: Duration::from_millis(150),
        random_factor: 0.0,
        ..fast_policy()
    };
    let supervisor = start_supervisor(policy, &factory, memory_ledger(), &["a", "b"]).await;
    wait_for_status(&supervisor, "a", "running", |s| {
        s.state == ChildState::Running
    })
    .await;
    assert_eq!(factory.increment("a").await, 1);

    let crashed_at = Instant::now();
    factory.current("a").cast(FailingMsg::Panic).unwrap();
    let restarted = wait_for_status(&supervisor, "a", "a restart", |s| {
        s.state == ChildState::Running && s.restarts == 1
    })
    .await;
    assert!(
        crashed_at.elapsed() >= Duration::from_millis(150),
        "restarted before its backoff ended"
    );
    let crash = restarted.last_crash.unwrap();
    assert!(crash.reason.contains("failing actor panicked"), "{crash:?}");
    assert_eq!(factory.generation("a"), 2);
    assert_eq!(factory.increment("a").await, 1, "a new incarnation answers");
    assert_eq!(factory.generation("b"), 1, "the sibling was not touched");
    assert_eq!(status_of(&supervisor, "b").await.restarts, 0);
    shut_down(supervisor).await;
}

#[tokio::test]
async fn child_returning_an_error_is_restarted_after_backoff() {
    let factory = TestFactory::default();
    let policy = RestartPolicy {
        min_backoff: Duration::from_millis(100),
        random_factor: 0.0,
        ..fast_policy()
    };
    let supervisor = start_supervisor(policy, &factory, memory_ledger(), &["a"]).await;
    wait_for_status(&supervisor, "a", "running", |s| {
        s.state == ChildState::Running
    })
    .await;

    let crashed_at = Instant::now();
    factory.current("a").cast(FailingMsg::ReturnError).unwrap();
    let restarted = wait_for_status(&supervisor, "a", "a restart", |s| {
        s.state == ChildState::Running && s.restarts == 1
    })
    .await;
    assert!(crashed_at.elapsed() >= Duration::from_millis(100));
    let crash = restarted.last_crash.unwrap();
    assert_eq!(crash.reason, "account a: document failed validation");
    assert_eq!(factory.increment("a").await, 1);
    shut_down(supervisor).await;
}

#[tokio::test]
async fn frozen_child_is_killed_by_stuck_detection_and_restarted() {
    let factory = TestFactory::default();
    let policy = RestartPolicy {
        stuck_after: Duration::from_millis(150),
        ..fast_policy()
    };
    let supervisor = start_supervisor(policy, &factory, memory_ledger(), &["a", "idle"]).await;
    wait_for_status(&supervisor, "a", "running", |s| {
        s.state == ChildState::Running
    })
    .await;
    let frozen = factory.current("a");
    frozen.cast(FailingMsg::Freeze).unwrap();

    let restarted = wait_for_status(&supervisor, "a", "a restart", |s| {
        s.state == ChildState::Running && s.restarts == 1
    })
    .await;
    let crash = restarted.last_crash.unwrap();
    assert!(
        crash.reason.starts_with("stuck: no progress for"),
        "{crash:?}"
    );
    frozen.wait(Some(Duration::from_secs(5))).await.unwrap();
    assert_eq!(frozen.get_status(), ractor::ActorStatus::Stopped);
    assert_eq!(
        factory.increment("a").await,
        1,
        "the new incarnation answers"
    );
    assert_eq!(
        status_of(&supervisor, "idle").await.restarts,
        0,
        "an idle child is never stuck"
    );
    shut_down(supervisor).await;
}

#[tokio::test]
async fn crash_looping_child_is_quarantined_persisted_and_not_started_by_a_new_supervisor() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("ledger.sqlite");
    let factory = TestFactory::with_poison(&["poison"]);
    let policy = RestartPolicy {
        min_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        max_crashes: 3,
        ..fast_policy()
    };
    let ledger = Arc::new(SqliteLedger::open(&path).unwrap());
    let supervisor =
        start_supervisor(policy.clone(), &factory, ledger, &["poison", "healthy"]).await;
    let quarantined = wait_for_status(&supervisor, "poison", "quarantine", |s| {
        s.state == ChildState::Quarantined
    })
    .await;
    assert_eq!(
        factory.generation("poison"),
        4,
        "quarantined on the 4th crash"
    );
    assert_eq!(quarantined.restarts, 3);
    assert!(quarantined.quarantined_until.is_some());
    assert!(quarantined
        .last_crash
        .unwrap()
        .reason
        .contains("poison account poison: inventory document exhausted memory"));
    assert!(quarantined
        .reason
        .unwrap()
        .starts_with("crashed 4 times within"));

    // Another process (`marketsync status`) sees it.
    let reader = SqliteLedger::open(&path).unwrap();
    let stored = reader.with_conn(|conn| store::statuses(conn)).unwrap();
    let stored_poison = stored.iter().find(|s| s.id == "poison").unwrap();
    assert_eq!(stored_poison.state, ChildState::Quarantined);
    assert!(stored_poison
        .last_crash
        .as_ref()
        .unwrap()
        .reason
        .contains("poison account"));

    shut_down(supervisor).await;
    let after_shutdown = reader.with_conn(|conn| store::statuses(conn)).unwrap();
    let states: Vec<(String, ChildState)> = after_shutdown
        .iter()
        .map(|s| (s.id.clone(), s.state))
        .collect();
    assert_eq!(
        states,
        vec![
            ("healthy".to_string(), ChildState::Stopped),
            ("poison".to_string(), ChildState::Quarantined)
        ]
    );

    // A new daemon on the same file does not re-run the poison account.
    let second_factory = TestFactory::with_poison(&["poison"]);
    let ledger = Arc::new(SqliteLedger::open(&path).unwrap());
    let second = start_supervisor(policy, &second_factory, ledger, &["poison", "healthy"]).await;
    let reloaded = statuses(&second).await;
    let poison = reloaded.iter().find(|s| s.id == "poison").unwrap();
    let healthy = reloaded.iter().find(|s| s.id == "healthy").unwrap();
    assert_eq!(poison.state, ChildState::Quarantined);
    assert_eq!(poison.restarts, 3, "the restart count survives");
    assert_eq!(second_factory.generation("poison"), 0, "not started");
    assert_eq!(healthy.state, ChildState::Running);
    assert_eq!(second_factory.increment("healthy").await, 1);
    shut_down(second).await;
}

#[tokio::test]
async fn resume_request_in_the_store_restarts_a_quarantined_child() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("ledger.sqlite");
    let factory = TestFactory::with_poison(&["poison"]);
    let policy = RestartPolicy {
        min_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        max_crashes: 2,
        ..fast_policy()
    };
    let ledger = Arc::new(SqliteLedger::open(&path).unwrap());
    let supervisor = start_supervisor(policy, &factory, ledger, &["poison", "healthy"]).await;
    wait_for_status(&supervisor, "poison", "quarantine", |s| {
        s.state == ChildState::Quarantined
    })
    .await;
    let generation_in_quarantine = factory.generation("poison");

    // The CLI (`marketsync accounts resume poison`) in another process.
    let cli = SqliteLedger::open(&path).unwrap();
    wait_until_stored(&cli, "poison", ChildState::Quarantined).await;
    assert!(!cli
        .with_conn(|conn| store::request_resume(conn, "unknown"))
        .unwrap());
    assert!(!cli
        .with_conn(|conn| store::request_resume(conn, "healthy"))
        .unwrap());
    factory.cure("poison");
    assert!(cli
        .with_conn(|conn| store::request_resume(conn, "poison"))
        .unwrap());

    let resumed = wait_for_status(&supervisor, "poison", "resume", |s| {
        s.state == ChildState::Running
    })
    .await;
    assert_eq!(resumed.quarantined_until, None);
    assert_eq!(factory.generation("poison"), generation_in_quarantine + 1);
    assert_eq!(factory.increment("poison").await, 1);
    wait_until_stored(&cli, "poison", ChildState::Running).await;
    let pending = cli
        .with_conn(|conn| store::take_resume_requests(conn, &["poison".to_string()]))
        .unwrap();
    assert!(pending.is_empty(), "the supervisor cleared the request");
    shut_down(supervisor).await;
}

/// Polls the store (as another process would) until `account` has `state`.
async fn wait_until_stored(ledger: &SqliteLedger, account: &str, state: ChildState) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let rows = ledger.with_conn(|conn| store::load(conn)).unwrap();
        if rows
            .iter()
            .any(|row| row.account == account && row.state == state)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{account}: never stored as {state}; rows {rows:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn mass_failure_halts_restarts_instead_of_cycling() {
    let factory = TestFactory::default();
    let pause = Duration::from_millis(600);
    let policy = RestartPolicy {
        // Long enough that the first crashed children still back off when the third crashes.
        min_backoff: Duration::from_millis(300),
        max_backoff: Duration::from_secs(1),
        random_factor: 0.0,
        mass_failure_pause: pause,
        ..fast_policy()
    };
    let ids = ["a", "b", "c", "d"];
    let supervisor = start_supervisor(policy, &factory, memory_ledger(), &ids).await;
    for id in ids {
        wait_for_status(&supervisor, id, "running", |s| {
            s.state == ChildState::Running
        })
        .await;
    }
    let crashed_at = Instant::now();
    for id in ["a", "b", "c"] {
        factory.current(id).cast(FailingMsg::Panic).unwrap();
    }
    for id in ["a", "b", "c"] {
        let halted =
            wait_for_status(&supervisor, id, "halt", |s| s.state == ChildState::Halted).await;
        assert!(
            halted
                .reason
                .as_deref()
                .unwrap_or("")
                .contains("3 accounts crashed"),
            "{halted:?}"
        );
    }
    assert_eq!(status_of(&supervisor, "d").await.state, ChildState::Running);
    assert_eq!(
        factory.increment("d").await,
        1,
        "the healthy child keeps running"
    );

    for id in ["a", "b", "c"] {
        let resumed = wait_for_status(&supervisor, id, "restart after the pause", |s| {
            s.state == ChildState::Running
        })
        .await;
        assert_eq!(resumed.restarts, 1, "restarted once, not cycled");
        assert_eq!(factory.generation(id), 2);
    }
    assert!(
        crashed_at.elapsed() >= pause,
        "restarts resumed before the pause ended"
    );
    shut_down(supervisor).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_child_never_stops_or_delays_its_siblings() {
    let factory = TestFactory::with_poison(&["poison"]);
    let policy = RestartPolicy {
        min_backoff: Duration::from_millis(2),
        max_backoff: Duration::from_millis(10),
        max_crashes: 10_000,
        ..fast_policy()
    };
    let siblings = ["s1", "s2", "s3"];
    let supervisor = start_supervisor(
        policy,
        &factory,
        memory_ledger(),
        &["poison", "s1", "s2", "s3"],
    )
    .await;
    for id in siblings {
        wait_for_status(&supervisor, id, "running", |s| {
            s.state == ChildState::Running
        })
        .await;
    }
    let deadline = Instant::now() + DEADLINE;
    let mut answers = 0u64;
    let mut slowest = Duration::ZERO;
    while status_of(&supervisor, "poison").await.restarts < 30 {
        assert!(
            Instant::now() < deadline,
            "the poison account stopped crash-looping"
        );
        for id in siblings {
            let asked_at = Instant::now();
            let count = tokio::time::timeout(Duration::from_millis(500), factory.increment(id))
                .await
                .unwrap_or_else(|_| panic!("{id} did not answer while poison crash-looped"));
            slowest = slowest.max(asked_at.elapsed());
            assert!(count >= 1);
            answers += 1;
        }
    }
    assert!(answers >= 3);
    assert!(
        slowest < Duration::from_millis(500),
        "slowest sibling answer {slowest:?}"
    );
    for id in siblings {
        assert_eq!(factory.generation(id), 1, "{id} was restarted");
        let status = status_of(&supervisor, id).await;
        assert_eq!((status.state, status.restarts), (ChildState::Running, 0));
    }
    let poison = status_of(&supervisor, "poison").await;
    assert_ne!(
        poison.state,
        ChildState::Halted,
        "one account is not a mass failure"
    );
    shut_down(supervisor).await;
}

#[tokio::test]
async fn shutdown_stops_children_and_stops_restarting() {
    let factory = TestFactory::default();
    let supervisor = start_supervisor(fast_policy(), &factory, memory_ledger(), &["a", "b"]).await;
    wait_for_status(&supervisor, "b", "running", |s| {
        s.state == ChildState::Running
    })
    .await;
    let children = [factory.current("a"), factory.current("b")];
    call_t!(supervisor, SupervisorMsg::Shutdown, 15_000).unwrap();
    for child in &children {
        assert_eq!(child.get_status(), ractor::ActorStatus::Stopped);
    }
    let after = statuses(&supervisor).await;
    assert!(
        after.iter().all(|s| s.state == ChildState::Stopped),
        "{after:?}"
    );
    assert!(
        after.iter().all(|s| s.last_crash.is_none()),
        "a requested stop is not a crash"
    );
    supervisor
        .cast(SupervisorMsg::Resume("a".to_string()))
        .unwrap();
    assert_eq!(status_of(&supervisor, "a").await.state, ChildState::Stopped);
    assert_eq!(factory.generation("a"), 1);
    supervisor
        .stop_and_wait(None, Some(Duration::from_secs(5)))
        .await
        .unwrap();
}

#[tokio::test]
async fn invalid_policy_fails_the_spawn_with_the_key_named() {
    let args = SupervisorArgs {
        policy: RestartPolicy {
            heartbeat: Duration::ZERO,
            ..fast_policy()
        },
        factory: Arc::new(TestFactory::default()),
        ledger: memory_ledger(),
        ownership: None,
    };
    let error = Actor::spawn(None, AccountsSupervisor, args)
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("supervisor.heartbeat"),
        "{error}"
    );
}

#[tokio::test]
async fn events_from_unknown_cells_are_ignored() {
    let factory = TestFactory::default();
    let supervisor = start_supervisor(fast_policy(), &factory, memory_ledger(), &["a"]).await;
    wait_for_status(&supervisor, "a", "running", |s| {
        s.state == ChildState::Running
    })
    .await;
    let args = FailingArgs {
        id: "stranger".to_string(),
        progress: Arc::new(ChildProgress::default()),
        panic_on_start: false,
    };
    let (stranger, _join) = Actor::spawn_linked(None, FailingActor, args, supervisor.get_cell())
        .await
        .unwrap();
    stranger.cast(FailingMsg::Panic).unwrap();
    stranger.wait(Some(Duration::from_secs(5))).await.unwrap();
    // Supervision events are handled before messages, so this Status comes after it.
    let after = statuses(&supervisor).await;
    assert_eq!(after.len(), 1);
    assert_eq!(
        (after[0].state, after[0].restarts),
        (ChildState::Running, 0)
    );
    assert_eq!(factory.increment("a").await, 1);
    shut_down(supervisor).await;
}

/// A cluster view in which `me` and `others` are live, taken now.
fn cluster_view(me: &str, members: &[&str]) -> Option<crate::cluster::ClusterView> {
    Some(crate::cluster::ClusterView {
        me: me.to_string(),
        members: members
            .iter()
            .map(|id| crate::cluster::Member {
                id: (*id).to_string(),
                expires_at_ms: 2,
                last_heartbeat_ms: Some(1),
            })
            .collect(),
        redis_now_ms: 1,
        sent_at: Instant::now(),
    })
}

/// Ids of the children the supervisor runs (has a record of), in order.
async fn supervised_ids(supervisor: &ActorRef<SupervisorMsg>) -> Vec<String> {
    statuses(supervisor)
        .await
        .into_iter()
        .map(|s| s.id)
        .collect()
}

/// `[cluster]`: the supervisor runs only the accounts the view gives this member, hands
/// the others over when a member joins (stopped, persisted as moved, no restart or
/// crash counted), and takes them back when it leaves; a stale view runs nothing.
#[tokio::test]
async fn ownership_runs_only_owned_accounts_and_a_move_is_not_a_crash() {
    let ids: Vec<String> = (0..12).map(|index| format!("acct-{index}")).collect();
    let (view_tx, view_rx) = tokio::sync::watch::channel(cluster_view("me", &["me"]));
    let factory = TestFactory::default();
    let ledger = memory_ledger();
    let args = SupervisorArgs {
        policy: fast_policy(),
        factory: Arc::new(factory.clone()),
        ledger: Arc::clone(&ledger) as Arc<dyn crate::store::LedgerStore>,
        ownership: Some(crate::cluster::OwnershipFeed {
            view: view_rx,
            every: Duration::from_millis(20),
            member_ttl: Duration::from_secs(3600),
        }),
    };
    let (supervisor, _join) = Actor::spawn(None, AccountsSupervisor, args).await.unwrap();
    supervisor.cast(SupervisorMsg::Start(ids.clone())).unwrap();
    let wait_for_ids = |expected: Vec<String>| {
        let supervisor = supervisor.clone();
        async move {
            let deadline = Instant::now() + DEADLINE;
            loop {
                let seen = supervised_ids(&supervisor).await;
                let running = statuses(&supervisor)
                    .await
                    .iter()
                    .all(|s| s.state == ChildState::Running);
                if seen == expected && running {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "supervises {seen:?}, expected {expected:?}"
                );
                tokio::time::sleep(POLL).await;
            }
        }
    };
    // Alone: every account.
    let mut sorted = ids.clone();
    sorted.sort();
    wait_for_ids(sorted.clone()).await;

    // Another member joins: keep exactly our rendezvous share.
    view_tx.send_replace(cluster_view("me", &["me", "other"]));
    let view = cluster_view("me", &["me", "other"]).unwrap();
    let mine: Vec<String> = sorted.iter().filter(|id| view.owns(id)).cloned().collect();
    let theirs: Vec<String> = sorted.iter().filter(|id| !view.owns(id)).cloned().collect();
    assert!(
        !mine.is_empty() && !theirs.is_empty(),
        "12 accounts split over 2"
    );
    wait_for_ids(mine.clone()).await;
    for id in &theirs {
        // Stopped for the move: one incarnation so far, no crash recorded.
        assert_eq!(factory.generation(id), 1, "{id} was restarted");
    }
    let rows = ledger.with_conn(|conn| store::load(conn)).unwrap();
    for id in &theirs {
        let row = rows
            .iter()
            .find(|row| &row.account == id)
            .expect("row kept");
        assert_eq!(row.state, ChildState::Stopped, "{id}");
        assert_eq!(row.state_reason.as_deref(), Some(super::MOVED_REASON));
        assert_eq!(row.restarts, 0, "{id}: a move is not a restart");
        assert_eq!(row.last_crash_at, None, "{id}: a move is not a crash");
    }
    for id in &mine {
        assert_eq!(status_of(&supervisor, id).await.restarts, 0);
    }

    // The other member leaves: ours again.
    view_tx.send_replace(cluster_view("me", &["me"]));
    wait_for_ids(sorted.clone()).await;

    // No view that speaks for this member (it lapsed: see `cluster`'s own test): nothing.
    view_tx.send_replace(None);
    wait_for_ids(Vec::new()).await;
    shut_down(supervisor).await;
}
