//! The waiting room of the TokenManager: per-bucket priority queues with injected time.
//!
//! Every request that cannot be granted at once waits here. The order is one global
//! order, `(priority descending, arrival ascending)`, and every bucket's queue is that
//! order restricted to the requests naming the bucket. A request is tried only when it
//! is at the head of the queue of every bucket it names; a request that has to wait
//! blocks its buckets for everyone behind it (strict FIFO within a priority, so a
//! multi-key request is never starved by single-key ones). Because the order is global,
//! heads never wait on each other in a cycle.
//!
//! [`Queue::serve`] runs one pass at `now` over a [`Payer`] (local buckets, or the Redis
//! script) and returns what was decided plus the earliest time anything can change: the
//! earliest time a blocked head can be paid or a deadline runs out. The actor schedules
//! exactly one wake-up for that time. A head that was told to wait is not asked again
//! before its wait is over (`not_before`) unless [`Queue::invalidate_waits`] says the
//! buckets changed, so a pass costs no provider or Redis calls for requests that cannot
//! move. Emits nothing (the actor logs).

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::time::Duration;

use super::{BucketKey, Priority, QuotaError};

/// The smallest wait the queue schedules: a wake-up is never "now" again (no spinning).
pub(crate) const MIN_WAIT: Duration = Duration::from_millis(1);

/// Pays for requests: all buckets of a request or none.
pub(crate) trait Payer {
    /// Takes `cost` from every bucket in `keys` when all can pay at `now` (`reserved`:
    /// non-manual work, which must leave the reserve). Otherwise `Ok(Err((wait, index)))`:
    /// the longest wait and the index in `keys` of the bucket that needs it.
    fn try_pay(
        &mut self,
        keys: &[BucketKey],
        cost: f64,
        reserved: bool,
        now: Duration,
    ) -> impl Future<Output = Result<Result<(), (Duration, usize)>, QuotaError>> + Send;
}

/// A request waiting for tokens.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub id: u64,
    pub keys: Vec<BucketKey>,
    pub cost: f64,
    pub priority: Priority,
    pub deadline: Duration,
    pub enqueued_at: Duration,
    /// Not worth asking the payer before this.
    not_before: Duration,
    /// The bucket that made it wait last (for `DeadlineExceeded`).
    limiting: usize,
}

/// What a pass decided for one request.
#[derive(Debug)]
pub(crate) enum Outcome {
    Granted { waited: Duration },
    Expired { key: BucketKey, waited: Duration },
    Failed(QuotaError),
}

/// The result of one pass.
#[derive(Debug, Default)]
pub(crate) struct Served {
    pub outcomes: Vec<(u64, Pending, Outcome)>,
    /// When the next pass is due; `None` when nothing waits.
    pub next_wake: Option<Duration>,
}

type Order = (Reverse<u16>, u64);

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    waiting: BTreeMap<Order, Pending>,
    next_id: u64,
}

impl Queue {
    pub fn new() -> Queue {
        Queue::default()
    }

    /// Adds a request; returns its id (ids grow with arrival).
    pub fn push(
        &mut self,
        keys: Vec<BucketKey>,
        cost: f64,
        priority: Priority,
        deadline: Duration,
        now: Duration,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let pending = Pending {
            id,
            keys,
            cost,
            priority,
            deadline,
            enqueued_at: now,
            not_before: Duration::ZERO,
            limiting: 0,
        };
        self.waiting
            .insert((Reverse(priority.value()), id), pending);
        id
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Bucket state changed outside the queue (an observation): ask again at the next pass.
    pub fn invalidate_waits(&mut self) {
        for pending in self.waiting.values_mut() {
            pending.not_before = Duration::ZERO;
        }
    }

    /// Removes and returns every request for which `drop` says so.
    pub fn remove_where(&mut self, mut drop: impl FnMut(&Pending) -> bool) -> Vec<Pending> {
        let doomed: Vec<Order> = self
            .waiting
            .iter()
            .filter(|(_, pending)| drop(pending))
            .map(|(order, _)| *order)
            .collect();
        doomed
            .into_iter()
            .filter_map(|order| self.waiting.remove(&order))
            .collect()
    }

    /// One pass at `now`; see the module docs.
    pub async fn serve<P: Payer>(&mut self, payer: &mut P, now: Duration) -> Served {
        let mut served = Served::default();
        let mut blocked: HashSet<BucketKey> = HashSet::new();
        let mut wake: Option<Duration> = None;
        let mut note = |at: Duration| {
            let at = at.max(now + MIN_WAIT);
            wake = Some(wake.map_or(at, |current: Duration| current.min(at)));
        };
        let mut done: Vec<(Order, Outcome)> = Vec::new();
        for (order, pending) in self.waiting.iter_mut() {
            let behind = pending.keys.iter().any(|key| blocked.contains(key));
            let mut outcome = None;
            if behind || now < pending.not_before {
                if pending.deadline <= now {
                    outcome = Some(expired(pending, now));
                } else {
                    note(pending.deadline);
                    if !behind {
                        note(pending.not_before);
                    }
                }
            } else {
                let reserved = pending.priority != Priority::Manual;
                match payer
                    .try_pay(&pending.keys, pending.cost, reserved, now)
                    .await
                {
                    Ok(Ok(())) => {
                        outcome = Some(Outcome::Granted {
                            waited: now.saturating_sub(pending.enqueued_at),
                        })
                    }
                    Ok(Err((wait, index))) => {
                        pending.limiting = index.min(pending.keys.len().saturating_sub(1));
                        if pending.deadline <= now {
                            outcome = Some(expired(pending, now));
                        } else {
                            pending.not_before = now.saturating_add(wait.max(MIN_WAIT));
                            note(pending.not_before.min(pending.deadline));
                        }
                    }
                    Err(err) => outcome = Some(Outcome::Failed(err)),
                }
            }
            match outcome {
                Some(outcome) => done.push((*order, outcome)),
                // Still waiting: everyone behind it on its buckets waits too.
                None => blocked.extend(pending.keys.iter().cloned()),
            }
        }
        for (order, outcome) in done {
            if let Some(pending) = self.waiting.remove(&order) {
                served.outcomes.push((pending.id, pending, outcome));
            }
        }
        served.next_wake = if self.waiting.is_empty() { None } else { wake };
        served
    }
}

fn expired(pending: &Pending, now: Duration) -> Outcome {
    let key = pending
        .keys
        .get(pending.limiting)
        .cloned()
        .unwrap_or_else(|| BucketKey::new("", "", ""));
    Outcome::Expired {
        key,
        waited: now.saturating_sub(pending.enqueued_at),
    }
}
