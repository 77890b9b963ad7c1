//! The clock a TokenManager runs on: tokio time, or a manual clock that tests advance by hand.

#[cfg(any(test, feature = "testing"))]
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::concurrency::JoinHandle;
use ractor::ActorRef;
use tokio::time::Instant;

use super::manager::QuotaMsg;

/// The time the manager runs on.
#[derive(Clone, Default)]
pub enum Clock {
    /// Tokio time (and `send_after` timers); wall time from the system.
    #[default]
    Tokio,
    /// Time moves only when a test says so; see `ManualClock` (test builds only: the
    /// `testing` feature).
    #[cfg(any(test, feature = "testing"))]
    Manual(ManualClock),
}

impl Clock {
    pub fn now(&self) -> Instant {
        match self {
            Clock::Tokio => Instant::now(),
            #[cfg(any(test, feature = "testing"))]
            Clock::Manual(clock) => clock.now(),
        }
    }

    pub fn wall_now(&self) -> DateTime<Utc> {
        match self {
            Clock::Tokio => Utc::now(),
            #[cfg(any(test, feature = "testing"))]
            Clock::Manual(clock) => clock.wall_now(),
        }
    }

    pub(super) fn schedule(
        &self,
        actor: &ActorRef<QuotaMsg>,
        after: Duration,
        generation: u64,
    ) -> Timer {
        match self {
            Clock::Tokio => {
                Timer::Tokio(actor.send_after(after, move || QuotaMsg::Wake { generation }))
            }
            #[cfg(any(test, feature = "testing"))]
            Clock::Manual(clock) => {
                Timer::Manual(clock.clone(), clock.add(actor, after, generation))
            }
        }
    }
}

#[cfg(any(test, feature = "testing"))]
/// A clock for tests: [`ManualClock::advance`] moves time and delivers the wake-ups that
/// fell due, so wake-ups can be counted exactly (the crate's tokio has no `test-util`,
/// so `start_paused` is not available).
#[derive(Clone)]
pub struct ManualClock {
    inner: Arc<Mutex<ManualInner>>,
}

#[cfg(any(test, feature = "testing"))]
struct ManualInner {
    origin: Instant,
    wall_origin: DateTime<Utc>,
    offset: Duration,
    next_id: u64,
    timers: Vec<ManualTimer>,
}

#[cfg(any(test, feature = "testing"))]
struct ManualTimer {
    id: u64,
    at: Duration,
    generation: u64,
    actor: ActorRef<QuotaMsg>,
}

#[cfg(any(test, feature = "testing"))]
impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

#[cfg(any(test, feature = "testing"))]
impl ManualClock {
    pub fn new() -> ManualClock {
        ManualClock {
            inner: Arc::new(Mutex::new(ManualInner {
                origin: Instant::now(),
                wall_origin: Utc::now(),
                offset: Duration::ZERO,
                next_id: 0,
                timers: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ManualInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn now(&self) -> Instant {
        let inner = self.lock();
        inner.origin + inner.offset
    }

    pub fn wall_now(&self) -> DateTime<Utc> {
        let inner = self.lock();
        inner.wall_origin
            + chrono::Duration::from_std(inner.offset).unwrap_or(chrono::Duration::zero())
    }

    /// How far time moved since the clock was made.
    pub fn elapsed(&self) -> Duration {
        self.lock().offset
    }

    /// Timers scheduled and not yet delivered or cancelled.
    pub fn pending_timers(&self) -> usize {
        self.lock().timers.len()
    }

    /// Moves time forward by `by` and delivers every timer due by then, earliest first.
    pub fn advance(&self, by: Duration) {
        let due = {
            let mut inner = self.lock();
            inner.offset += by;
            let offset = inner.offset;
            let (mut due, keep): (Vec<ManualTimer>, Vec<ManualTimer>) =
                inner.timers.drain(..).partition(|timer| timer.at <= offset);
            inner.timers = keep;
            due.sort_by_key(|timer| (timer.at, timer.id));
            due
        };
        for timer in due {
            let _ = timer.actor.send_message(QuotaMsg::Wake {
                generation: timer.generation,
            });
        }
    }

    fn add(&self, actor: &ActorRef<QuotaMsg>, after: Duration, generation: u64) -> u64 {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        let at = inner.offset.saturating_add(after);
        inner.timers.push(ManualTimer {
            id,
            at,
            generation,
            actor: actor.clone(),
        });
        id
    }

    fn cancel(&self, id: u64) {
        self.lock().timers.retain(|timer| timer.id != id);
    }
}

pub(super) enum Timer {
    Tokio(JoinHandle<Result<(), ractor::MessagingErr<QuotaMsg>>>),
    #[cfg(any(test, feature = "testing"))]
    Manual(ManualClock, u64),
}

impl Timer {
    pub(super) fn cancel(self) {
        match self {
            Timer::Tokio(handle) => handle.abort(),
            #[cfg(any(test, feature = "testing"))]
            Timer::Manual(clock, id) => clock.cancel(id),
        }
    }
}
