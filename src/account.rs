//! The Account actor: one per configured account, a child of the
//! [`AccountsSupervisor`](crate::supervisor::AccountsSupervisor).
//!
//! It owns its streams' runner tasks (one per stream, so streams run concurrently and a
//! slow stream never delays another) and turns a runner's panic into its own failure, so
//! the supervisor restarts it with backoff or quarantines it. The actor's state aborts
//! the runners when dropped: a killed or crashed incarnation leaves nothing running, and
//! its units stay in the ledger (with their report ids) for the next incarnation.
//!
//! Infrastructure failures (Redis down, SQLite busy, provider 5xx) never reach the
//! actor: the runners retry them (see [`crate::daemon::run_stream`]).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::lock::LockService;
use crate::supervisor::{ChildFactory, ChildProgress};
use crate::sync::{AbortOnDrop, StreamContext};

/// Everything an account's runners need; cloned into every incarnation.
#[derive(Clone)]
pub struct AccountSpec {
    /// One context per enabled stream, with its lease TTL.
    pub streams: Vec<(StreamContext, Duration)>,
}

/// Builds Account actors for the supervisor.
pub struct AccountFactory {
    /// By account id.
    pub accounts: std::collections::HashMap<String, AccountSpec>,
    pub locks: LockService,
    /// Bounds stream runs in flight across all accounts (`daemon.max_concurrent_runs`).
    pub permits: Arc<Semaphore>,
    /// The daemon waits on it at shutdown so units in flight can finish.
    pub tracker: TaskTracker,
}

pub struct AccountActor;

pub struct AccountArgs {
    id: String,
    spec: AccountSpec,
    locks: LockService,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
    progress: Arc<ChildProgress>,
}

#[derive(Debug)]
pub enum AccountMsg {
    /// A stream runner ended; `panic` carries its panic message.
    StreamEnded {
        stream: String,
        panic: Option<String>,
    },
}

pub struct AccountState {
    args: AccountArgs,
    /// Why a guard: aborts the runners when the state drops, panic or not.
    runners: Vec<AbortOnDrop>,
}

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
            args,
            runners: Vec::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for (context, ttl) in &state.args.spec.streams {
            let mut context = context.clone();
            context.progress = Some(Arc::clone(&state.args.progress));
            let stream = context.stream.name.clone();
            let runner = state.args.tracker.spawn(crate::daemon::run_stream(
                context,
                state.args.locks.clone(),
                *ttl,
                Arc::clone(&state.args.permits),
            ));
            state.runners.push(AbortOnDrop(runner.abort_handle()));
            let me = myself.clone();
            tokio::spawn(async move {
                let panic = match runner.await {
                    Err(err) if err.is_panic() => Some(panic_message(err.into_panic())),
                    _ => None,
                };
                let _ = me.cast(AccountMsg::StreamEnded { stream, panic });
            });
        }
        debug!(account = %state.args.id, streams = state.runners.len(), "account actor running");
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AccountMsg::StreamEnded {
                stream,
                panic: Some(panic),
            } => Err(format!("stream {stream} panicked: {panic}").into()),
            // Runners end by themselves only at shutdown. The actor stays up until the
            // supervisor stops it: stopping itself here would look like a crash.
            AccountMsg::StreamEnded { panic: None, .. } => Ok(()),
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        return text.to_string();
    }
    if let Some(text) = payload.downcast_ref::<String>() {
        return text.clone();
    }
    "panic with a non-text payload".to_string()
}

impl ChildFactory for AccountFactory {
    fn spawn_child(
        &self,
        id: String,
        supervisor: ActorCell,
        progress: Arc<ChildProgress>,
    ) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> {
        let Some(spec) = self.accounts.get(&id).cloned() else {
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
            locks: self.locks.clone(),
            permits: Arc::clone(&self.permits),
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
