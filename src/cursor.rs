//! Cursor streams (seed 003): a cursor per (account, stream); each run covers at most
//! `max_window` from the cursor, and the cursor moves only in the transaction that
//! applies that window's data. eBay's streams are the first users.

/// The eBay streams built end to end.
pub const EBAY_STREAMS: &[&str] = &["orders", "transactions", "returns"];
