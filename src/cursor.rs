//! Cursor streams (seed 003): a cursor per (account, stream); each run covers at most
//! `max_window` from the cursor, and the cursor moves only in the transaction that
//! applies that window's data. eBay's streams are the first users.

/// The eBay streams built end to end.
pub const EBAY_STREAMS: &[&str] = &["orders", "transactions", "returns"];

use std::net::SocketAddr;

use crate::config::AccountConfig;
use crate::quota::Pacer;
use crate::sync::StreamWork;

/// The sync shape of an eBay account's streams: its client (paced by `pacer`) and the
/// cursor runner. `simulator`: the embedded simulator's address, for accounts served by it.
pub fn stream_work(
    account: &AccountConfig,
    _http: &reqwest::Client,
    _simulator: Option<SocketAddr>,
    _pacer: Pacer,
) -> anyhow::Result<StreamWork> {
    anyhow::bail!("accounts.{}: ebay streams are not built yet", account.id)
}
