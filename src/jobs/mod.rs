//! The keyed job queue (seeds 002, 004): on-demand lookups (`provider|sku|size`, Keepa
//! ASINs) with dedupe, priorities 200 manual / 150 hot / 100 background, leases that
//! rescue jobs whose worker died, and per-run metrics.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::AccountConfig;
use crate::ledger::SqliteLedger;
use crate::quota::Pacer;
use crate::sync::StreamWork;

/// The sync shape of a StockX or Keepa account: its client (paced by `pacer`) and the
/// queue drainer. `ledger`: the SQLite store its tables live in. `simulator`: the embedded simulator's address, for accounts served by it.
pub fn stream_work(
    account: &AccountConfig,
    _http: &reqwest::Client,
    _simulator: Option<SocketAddr>,
    _pacer: Pacer,
    _ledger: Arc<SqliteLedger>,
) -> anyhow::Result<StreamWork> {
    anyhow::bail!(
        "accounts.{}: {} job queues are not built yet",
        account.id,
        account.provider
    )
}
