//! The cooldown watch: notices a cooldown cleared before its end (`marketsync cooldowns
//! clear`, the HTTP clear-cooldown) and tells the TokenManager and the waiting runners.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info};

use crate::actors::services::ServiceSpec;
use crate::domain::chaos::Chaos;
use crate::quota::QuotaHandle;
use crate::store::LedgerStore;
use std::collections::HashMap;

use crate::domain::now_ts;
use tokio::sync::watch;

/// How often the cooldown watch reads the ledger's cooldowns.
const COOLDOWN_WATCH_EVERY: Duration = Duration::from_secs(1);

/// Reads the ledger's cooldowns every [`COOLDOWN_WATCH_EVERY`]; a quota cooldown that
/// vanished or got shorter before its end was cleared by an operator: the TokenManager
/// forgets what it remembered about the scope, and `cleared` wakes the waiting runners.
/// Runs as the root's `cooldown-watch` service (see [`service`]); it never returns.
pub(super) async fn cooldown_watch(
    ledger: Arc<dyn LedgerStore>,
    quota: QuotaHandle,
    cleared: Arc<watch::Sender<u64>>,
    chaos: Option<Arc<Chaos>>,
) -> anyhow::Result<()> {
    {
        let mut known: HashMap<String, i64> = HashMap::new();
        let mut tick = tokio::time::interval(COOLDOWN_WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Some(chaos) = &chaos {
                chaos.on_service_step("cooldown-watch");
            }
            let now = now_ts();
            let reader = Arc::clone(&ledger);
            let current = match crate::store::blocking(move || reader.cooldowns(now)).await {
                Ok(Ok(current)) => current,
                Ok(Err(err)) => {
                    debug!(error = %err, "cooldown watch cannot read the ledger; retrying");
                    continue;
                }
                Err(err) => {
                    debug!(error = %err, "cooldown watch task failed; retrying");
                    continue;
                }
            };
            // Lease conditions (`lock:...`) come and go with every lease; not quota.
            let current: HashMap<String, i64> = current
                .into_iter()
                .filter(|cooldown| !cooldown.scope.starts_with("lock:"))
                .map(|cooldown| (cooldown.scope, cooldown.until_at))
                .collect();
            let mut ended_early = false;
            for (scope, until) in &known {
                let shortened = current.get(scope).is_none_or(|now_until| now_until < until);
                if *until > now + 1 && shortened {
                    info!(scope = %scope, "cooldown ended early; resuming calls in its scope");
                    quota.forget(scope);
                    ended_early = true;
                }
            }
            known = current;
            if ended_early {
                cleared.send_modify(|generation| *generation += 1);
            }
        }
    }
}

/// The cooldown watch as a restartable service of the root.
pub(super) fn service(
    ledger: Arc<dyn LedgerStore>,
    quota: QuotaHandle,
    cleared: Arc<watch::Sender<u64>>,
    chaos: Option<Arc<Chaos>>,
) -> ServiceSpec {
    ServiceSpec::task(
        "cooldown-watch",
        Arc::new(move || {
            Box::pin(cooldown_watch(
                Arc::clone(&ledger),
                quota.clone(),
                Arc::clone(&cleared),
                chaos.clone(),
            ))
        }),
    )
}
