//! The root's infrastructure services and the one actor that supervises a plain task.
//!
//! A service is something the daemon needs beside the accounts: Housekeeping, the
//! cooldown watch, the HTTP server, the embedded simulator. Each is a child of the
//! [`Root`](super::root::Root) described by a [`ServiceSpec`] (a name and a way to start
//! it), so the root can start it again after it fails, with backoff, until its restart
//! budget is spent.
//!
//! A service that is a future rather than an actor (a server's accept loop, a polling
//! loop) runs inside a [`TaskService`]: the actor owns the task, and turns the task's
//! end (an error, a panic, or returning at all) into its own failure, which the root
//! sees as a supervision event. No task is left outside the tree: stopping the actor
//! aborts its task.
//!
//! Options: none of its own (the root applies the `[supervisor]` backoff and budget).
//! Emits: the root logs each restart and counts it in `service_restarts_total`.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr};
use tokio::task::AbortHandle;
use tracing::debug;

/// Starts one incarnation of a service, linked to the root cell it is given.
pub type ServiceStart =
    Arc<dyn Fn(ActorCell) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> + Send + Sync>;

/// A restartable child of the root.
#[derive(Clone)]
pub struct ServiceSpec {
    /// Logged and used as the metrics label: `housekeeping`, `cooldown-watch`, `http`,
    /// `simulator`.
    pub name: &'static str,
    pub start: ServiceStart,
}

impl std::fmt::Debug for ServiceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceSpec")
            .field("name", &self.name)
            .finish()
    }
}

/// Makes the future a [`TaskService`] runs; called once per incarnation.
pub type TaskFactory = Arc<dyn Fn() -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

impl ServiceSpec {
    /// A service whose work is the future `task` makes, run by a [`TaskService`].
    pub fn task(name: &'static str, task: TaskFactory) -> ServiceSpec {
        ServiceSpec {
            name,
            start: Arc::new(move |root: ActorCell| {
                let task = Arc::clone(&task);
                Box::pin(async move {
                    let (actor, _) = Actor::spawn_linked(
                        None,
                        TaskService,
                        TaskServiceArgs { name, task },
                        root,
                    )
                    .await?;
                    Ok(actor.get_cell())
                })
            }),
        }
    }
}

/// Runs one future and fails when it ends.
pub struct TaskService;

pub struct TaskServiceArgs {
    pub name: &'static str,
    pub task: TaskFactory,
}

pub struct TaskServiceState {
    name: &'static str,
    task: TaskFactory,
    /// The running future and the watcher that reports its end.
    handles: Vec<AbortHandle>,
}

#[derive(Debug)]
pub enum TaskServiceMsg {
    /// The task ended; why, in words.
    Ended(String),
}

impl Actor for TaskService {
    type Msg = TaskServiceMsg;
    type State = TaskServiceState;
    type Arguments = TaskServiceArgs;

    /// Trivial on purpose: a panic here would never reach the root as an event.
    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(TaskServiceState {
            name: args.name,
            task: args.task,
            handles: Vec::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let work = tokio::spawn((state.task)());
        let work_abort = work.abort_handle();
        let watcher = tokio::spawn(async move {
            let reason = match work.await {
                Ok(Ok(())) => "ended although nothing asked it to".to_string(),
                Ok(Err(err)) => format!("failed: {err:#}"),
                Err(join) if join.is_panic() => {
                    format!("panicked: {}", panic_message(join.into_panic()))
                }
                Err(join) => format!("was cancelled: {join}"),
            };
            let _ = myself.cast(TaskServiceMsg::Ended(reason));
        });
        state.handles = vec![work_abort, watcher.abort_handle()];
        debug!(service = state.name, "service task started");
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TaskServiceMsg::Ended(reason) => Err(format!("{} {reason}", state.name).into()),
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for handle in state.handles.drain(..) {
            handle.abort();
        }
        Ok(())
    }
}

/// The text of a panic payload.
pub fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        return text.to_string();
    }
    if let Some(text) = payload.downcast_ref::<String>() {
        return text.clone();
    }
    "panic with a non-text payload".to_string()
}

#[cfg(test)]
mod tests {
    //! One test per way a task ends, quickwit's FailingActor style: each ending is a
    //! failure of the [`TaskService`] that its supervisor sees.
    use std::time::Duration;

    use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
    use tokio::sync::mpsc;

    use super::*;

    /// Forwards every supervision event's text to a channel.
    struct Probe;

    impl Actor for Probe {
        type Msg = ();
        type State = mpsc::UnboundedSender<String>;
        type Arguments = mpsc::UnboundedSender<String>;

        async fn pre_start(
            &self,
            _myself: ActorRef<()>,
            events: Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(events)
        }

        async fn handle_supervisor_evt(
            &self,
            _myself: ActorRef<()>,
            event: SupervisionEvent,
            events: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            let text = match event {
                SupervisionEvent::ActorFailed(_, err) => format!("failed: {err}"),
                SupervisionEvent::ActorTerminated(_, _, reason) => {
                    format!("terminated: {reason:?}")
                }
                _ => return Ok(()),
            };
            let _ = events.send(text);
            Ok(())
        }
    }

    async fn ending_of(task: TaskFactory) -> String {
        let (events, mut received) = mpsc::unbounded_channel();
        let (probe, _) = Actor::spawn(None, Probe, events).await.unwrap();
        let spec = ServiceSpec::task("demo", task);
        (spec.start)(probe.get_cell()).await.unwrap();
        let text = tokio::time::timeout(Duration::from_secs(10), received.recv())
            .await
            .expect("the supervisor hears of the ending")
            .expect("an event");
        probe.stop(None);
        text
    }

    #[tokio::test]
    async fn a_task_error_is_a_failure() {
        let text = ending_of(Arc::new(|| {
            Box::pin(async { Err(anyhow::anyhow!("listener gone")) })
        }))
        .await;
        assert!(
            text.contains("failed: demo failed: listener gone"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_task_panic_is_a_failure_naming_the_panic() {
        let text = ending_of(Arc::new(|| {
            Box::pin(async {
                if Duration::from_secs(1) > Duration::ZERO {
                    panic!("boom in the accept loop");
                }
                Ok(())
            })
        }))
        .await;
        assert!(
            text.contains("demo panicked: boom in the accept loop"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_task_that_returns_is_a_failure_too() {
        let text = ending_of(Arc::new(|| Box::pin(async { Ok(()) }))).await;
        assert!(
            text.contains("demo ended although nothing asked it to"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn stopping_the_service_aborts_its_task() {
        let (events, _received) = mpsc::unbounded_channel();
        let (probe, _) = Actor::spawn(None, Probe, events).await.unwrap();
        let (alive_tx, alive_rx) = tokio::sync::oneshot::channel::<()>();
        let alive_tx = Arc::new(std::sync::Mutex::new(Some(alive_tx)));
        let spec = ServiceSpec::task(
            "demo",
            Arc::new(move || {
                // Held by the task; dropped (closing the channel) when it is aborted.
                let held = alive_tx.lock().unwrap().take();
                Box::pin(async move {
                    let _held = held;
                    std::future::pending::<()>().await;
                    Ok(())
                })
            }),
        );
        let cell = (spec.start)(probe.get_cell()).await.unwrap();
        cell.stop(None);
        let closed = tokio::time::timeout(Duration::from_secs(10), alive_rx).await;
        assert!(
            matches!(closed, Ok(Err(_))),
            "the task was aborted and dropped its sender"
        );
        probe.stop(None);
    }
}
