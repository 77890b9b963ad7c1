//! The `wal-checkpoint` root service: copies the SQLite file's WAL back into the database
//! every [`CHECKPOINT_EVERY`], on a connection of its own, so the one writer's commits no
//! longer stop for checkpoints (`store::sqlite::checkpoint` says why and how).
//!
//! The service first moves the writer's own checkpoint threshold to the backstop
//! ([`crate::store::sqlite::BACKSTOP_WAL_PAGES`]); a failed checkpoint (the file gone,
//! the disk full) fails the service, which the root logs, counts in
//! `marketsync_service_restarts_total{service="wal-checkpoint"}` and starts again after
//! its backoff. Meanwhile the writer checkpoints by itself past the backstop, so the WAL
//! stays bounded whatever happens to this task.

use std::sync::Arc;

use anyhow::Context;
use tracing::trace;

use crate::actors::services::ServiceSpec;
use crate::domain::chaos::Chaos;
use crate::store::sqlite::CHECKPOINT_EVERY;
use crate::store::SqliteLedger;

/// The service spec: one task per incarnation, restarted by the root. A `[chaos]` drill
/// on `service = "wal-checkpoint"` fails its steps.
pub(super) fn service(ledger: Arc<SqliteLedger>, chaos: Option<Arc<Chaos>>) -> ServiceSpec {
    ServiceSpec::task(
        "wal-checkpoint",
        Arc::new(move || Box::pin(checkpoints(Arc::clone(&ledger), chaos.clone()))),
    )
}

/// Checkpoints until the root stops the service; returns only on an error.
async fn checkpoints(ledger: Arc<SqliteLedger>, chaos: Option<Arc<Chaos>>) -> anyhow::Result<()> {
    let writer = Arc::clone(&ledger);
    tokio::task::spawn_blocking(move || writer.defer_checkpoints())
        .await
        .context("deferring the writer's checkpoints")?
        .context("deferring the writer's checkpoints")?;
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Some(chaos) = &chaos {
            chaos.on_service_step("wal-checkpoint");
        }
        let ledger = Arc::clone(&ledger);
        let done = tokio::task::spawn_blocking(move || ledger.checkpoint())
            .await
            .context("wal checkpoint")?
            .context("wal checkpoint")?;
        if done.wal_pages > 0 {
            trace!(
                wal_pages = done.wal_pages,
                checkpointed = done.checkpointed,
                "wal checkpoint"
            );
        }
    }
}
