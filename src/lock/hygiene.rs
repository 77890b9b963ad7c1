//! Lock hygiene (seed 004's zombie-lock cure): repair lock keys with no TTL or a TTL
//! above the cap, and release the leases of dead previous incarnations of this host.
//! Run at startup and every `locks.hygiene_interval` by Housekeeping.

use tracing::{debug, warn};

use super::{owner_is_dead_local, LockService, MAX_TTL};

/// Repairs lock keys with no TTL or a TTL above the cap, and releases leases of dead
/// previous incarnations of this host. Errors are logged: the next pass retries.
pub async fn lock_hygiene(locks: &LockService) {
    match locks.repair(MAX_TTL).await {
        Ok(repairs) => {
            for repair in repairs {
                warn!(
                    scope = %repair.scope,
                    replaced_owner = %repair.replaced_owner,
                    action = repair.action.as_str(),
                    previous_ttl_ms = repair.previous_ttl_ms.unwrap_or(-1),
                    "repaired lock"
                );
            }
        }
        Err(err) => warn!(error = %err, "lock hygiene pass failed; retrying on the next pass"),
    }
    match locks.list().await {
        Ok(all) => {
            for info in all {
                if owner_is_dead_local(&info.owner) {
                    match locks.release_scope(&info.scope, true).await {
                        Ok(Some(_)) => {
                            warn!(scope = %info.scope, replaced_owner = %info.owner, "released the lease of a dead previous incarnation")
                        }
                        Ok(None) => {}
                        Err(err) => {
                            warn!(scope = %info.scope, error = %err, "cannot release a dead owner's lease")
                        }
                    }
                }
            }
        }
        Err(err) => debug!(error = %err, "cannot list locks"),
    }
}
