//! Cursor streams (seed 003): a cursor per (account, stream); each run covers at most
//! `max_window` from the cursor, and the cursor moves only in the transaction that
//! applies that window's data. eBay's streams are the first users.

/// The eBay streams built end to end.
pub const EBAY_STREAMS: &[&str] = &["orders", "transactions", "returns"];

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::AccountConfig;
use crate::ledger::SqliteLedger;
use crate::quota::Pacer;
use crate::sync::StreamWork;

/// The sync shape of an eBay account's streams: its client (paced by `pacer`) and the
/// cursor runner. `ledger`: the SQLite store its tables live in. `simulator`: the embedded simulator's address, for accounts served by it.
pub fn stream_work(
    account: &AccountConfig,
    _http: &reqwest::Client,
    _simulator: Option<SocketAddr>,
    _pacer: Pacer,
    _ledger: Arc<SqliteLedger>,
) -> anyhow::Result<StreamWork> {
    anyhow::bail!("accounts.{}: ebay streams are not built yet", account.id)
}
