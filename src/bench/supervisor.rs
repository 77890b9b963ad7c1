//! Restart-overhead benchmark (`marketsync bench restart`): the time from a child's
//! panic to its next incarnation running, minus the backoff the policy asked for.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr};
use tokio::sync::mpsc;

use crate::actors::supervisor::policy::RestartPolicy;
use crate::actors::supervisor::{
    AccountsSupervisor, ChildFactory, ChildProgress, SupervisorArgs, SupervisorMsg,
};
use crate::store::SqliteLedger;

/// A child that reports itself running and panics on any message.
struct CrashingChild;

impl Actor for CrashingChild {
    type Msg = ();
    type State = mpsc::UnboundedSender<(Instant, ActorRef<()>)>;
    type Arguments = mpsc::UnboundedSender<(Instant, ActorRef<()>)>;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        running: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(running)
    }

    async fn post_start(
        &self,
        myself: ActorRef<()>,
        running: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _ = running.send((Instant::now(), myself));
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<()>,
        _message: (),
        _running: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        panic!("bench: crash on purpose");
    }
}

struct CrashingFactory {
    running: mpsc::UnboundedSender<(Instant, ActorRef<()>)>,
}

impl ChildFactory for CrashingFactory {
    fn spawn_child(
        &self,
        _id: String,
        supervisor: ActorCell,
        _progress: Arc<ChildProgress>,
    ) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> {
        let running = self.running.clone();
        async move {
            let (actor, _) = Actor::spawn_linked(None, CrashingChild, running, supervisor).await?;
            Ok(actor.get_cell())
        }
        .boxed()
    }
}

/// Crashes one child `crashes` times; prints the median and p99 restart overhead.
pub async fn bench_restart_overhead(dir: &Path, crashes: usize) -> anyhow::Result<i32> {
    let backoff = Duration::from_millis(1);
    let policy = RestartPolicy {
        min_backoff: backoff,
        max_backoff: backoff,
        random_factor: 0.0,
        max_crashes: u32::MAX,
        ..RestartPolicy::default()
    };
    let ledger = Arc::new(SqliteLedger::open(&dir.join("restart.db"))?);
    let (running_tx, mut running) = mpsc::unbounded_channel();
    let (supervisor, _task) = Actor::spawn(
        None,
        AccountsSupervisor,
        SupervisorArgs {
            policy,
            factory: Arc::new(CrashingFactory {
                running: running_tx,
            }),
            ledger,
            ownership: None,
        },
    )
    .await?;
    supervisor.cast(SupervisorMsg::Start(vec!["bench".to_string()]))?;
    let Some((_, mut child)) = running.recv().await else {
        anyhow::bail!("the child never started");
    };
    let mut overheads = Vec::with_capacity(crashes);
    for _ in 0..crashes {
        let crashed_at = Instant::now();
        child.cast(())?;
        let Some((started_at, next)) =
            tokio::time::timeout(Duration::from_secs(10), running.recv()).await?
        else {
            anyhow::bail!("the child was not restarted");
        };
        let total = started_at.duration_since(crashed_at);
        overheads.push(total.saturating_sub(backoff).as_secs_f64() * 1000.0);
        child = next;
    }
    supervisor.stop(None);
    overheads.sort_by(f64::total_cmp);
    let median = overheads[overheads.len() / 2];
    let p99 = overheads[(overheads.len() * 99 / 100).min(overheads.len() - 1)];
    println!(
        "{crashes} panics: restart overhead (panic to the new incarnation running, minus the {} backoff) median {median:.3} ms, p99 {p99:.3} ms (target <= 10 ms) {}",
        humantime::format_duration(backoff),
        if p99 <= 10.0 { "ok" } else { "ABOVE TARGET" }
    );
    Ok(0)
}
