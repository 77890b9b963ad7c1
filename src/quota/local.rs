//! Buckets kept in the actor: the [`Payer`] of the in-process mode.

use std::collections::HashMap;
use std::time::Duration;

use super::bucket::Bucket;
use super::queue::Payer;
use super::{BucketKey, BucketSpec, QuotaError};

/// Buckets in the actor; the [`Payer`] of the in-process mode.
pub(crate) struct LocalBuckets {
    pub(super) buckets: HashMap<BucketKey, Bucket>,
    reserve_share: f64,
}

impl LocalBuckets {
    pub(crate) fn new(reserve_share: f64) -> LocalBuckets {
        LocalBuckets {
            buckets: HashMap::new(),
            reserve_share,
        }
    }

    /// The bucket of `key`, made full from `spec` at `now` if new.
    pub(crate) fn ensure(
        &mut self,
        key: &BucketKey,
        spec: BucketSpec,
        now: Duration,
    ) -> &mut Bucket {
        let share = self.reserve_share;
        self.buckets.entry(key.clone()).or_insert_with(|| {
            Bucket::new(spec.rate, spec.burst, now)
                .with_reserve_share(share)
                .with_window(spec.window)
        })
    }

    pub(crate) fn get(&self, key: &BucketKey) -> Option<&Bucket> {
        self.buckets.get(key)
    }
}

impl Payer for LocalBuckets {
    async fn try_pay(
        &mut self,
        keys: &[BucketKey],
        cost: f64,
        reserved: bool,
        now: Duration,
    ) -> Result<Result<(), (Duration, usize)>, QuotaError> {
        let mut worst = (Duration::ZERO, 0);
        for (index, key) in keys.iter().enumerate() {
            let bucket = self
                .buckets
                .get(key)
                .ok_or_else(|| QuotaError::UnknownBucket { key: key.clone() })?;
            let wait = bucket.wait(cost, reserved, now);
            if wait > worst.0 {
                worst = (wait, index);
            }
        }
        if worst.0 > Duration::ZERO {
            return Ok(Err(worst));
        }
        for key in keys {
            if let Some(bucket) = self.buckets.get_mut(key) {
                bucket.take(cost, now);
            }
        }
        Ok(Ok(()))
    }
}
