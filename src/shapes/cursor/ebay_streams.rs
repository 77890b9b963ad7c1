//! The eBay cursor streams of issue 14 beyond orders, transactions and returns, as
//! adapters: `finances` (Finances getPayouts) and `messages` (Message API
//! getConversations). Wire formats and the operations followed:
//! `docs/ebay-wire.md`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::adapter::{CursorAdapter, CursorWindow, OpenSpec, Page, TableSpec};
use super::ebay::{range, typed, Money};
use crate::domain::format_millis;
use crate::provider::ebay::EbayApi;
use crate::store::ebay_streams::{
    CONVERSATIONS_TABLE, OPEN_CONVERSATIONS, OPEN_PAYOUTS, PAYOUTS_TABLE,
};

/// Finances API getPayouts (`GET /sell/finances/v1/payout`), by `payoutDate`, oldest
/// first. The date is when the payout began processing and never moves while
/// `payoutStatus` does (INITIATED → SUCCEEDED; RETRYABLE_FAILED, REVERSED retried), so a
/// live run re-reads back to the oldest payout still open, at most [`PAYOUTS_REVISIT`].
pub struct PayoutsAdapter;

/// The farthest a live `finances` run reads back for open payouts.
pub const PAYOUTS_REVISIT: Duration = Duration::from_secs(30 * 24 * 3600);

impl CursorAdapter for PayoutsAdapter {
    fn stream(&self) -> &'static str {
        "finances"
    }
    fn operation(&self) -> &'static str {
        "getPayouts"
    }
    fn api(&self) -> EbayApi {
        EbayApi::Finances
    }
    fn path(&self) -> &'static str {
        "/sell/finances/v1/payout"
    }
    fn query(&self, window: CursorWindow, offset: u64, limit: u32) -> Vec<(String, String)> {
        let (from, to) = range(window);
        vec![
            ("filter".into(), format!("payoutDate:[{from}..{to}]")),
            ("limit".into(), limit.to_string()),
            ("offset".into(), offset.to_string()),
            // Ascending: eBay's default is newest first.
            ("sort".into(), "payoutDate".into()),
        ]
    }
    fn parse(&self, body: &[u8]) -> Result<Page, String> {
        #[derive(Deserialize)]
        struct PayoutPage {
            total: Option<u64>,
            #[serde(default)]
            payouts: Vec<Value>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Payout {
            payout_id: String,
            payout_status: String,
            payout_date: String,
            amount: Option<Money>,
            transaction_count: Option<u32>,
            payout_instrument: Option<Instrument>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Instrument {
            instrument_type: Option<String>,
        }
        // "If no payouts match the input criteria, an empty payload is returned."
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Page {
                total: 0,
                items: Vec::new(),
            });
        }
        let page: PayoutPage = serde_json::from_slice(body)
            .map_err(|err| format!("getPayouts page is not the expected json: {err}"))?;
        let total = match page.total {
            Some(total) => total,
            None if page.payouts.is_empty() => 0,
            None => return Err("getPayouts page lists payouts but has no total".to_string()),
        };
        let items = typed(page.payouts, "payouts", |payout: Payout| {
            let (value, currency) = match payout.amount {
                Some(money) => (money.value, money.currency),
                None => (None, None),
            };
            (
                payout.payout_id,
                vec![
                    Some(payout.payout_date),
                    Some(payout.payout_status),
                    value,
                    currency,
                    payout.transaction_count.map(|count| count.to_string()),
                    payout
                        .payout_instrument
                        .and_then(|instrument| instrument.instrument_type),
                ],
            )
        })?;
        Ok(Page { total, items })
    }
    fn table(&self) -> &'static TableSpec {
        &PAYOUTS_TABLE
    }
    fn revisit(&self) -> Duration {
        PAYOUTS_REVISIT
    }
    fn open_resources(&self) -> Option<&'static OpenSpec> {
        Some(&OPEN_PAYOUTS)
    }
}

/// Message API getConversations (`GET /commerce/message/v1/conversation`), the buyers'
/// conversations (`conversation_type=FROM_MEMBERS`) by the time of their latest message
/// (`start_time` / `end_time`). A new message moves a conversation into a later window;
/// a read does not, so a live run re-reads back to the oldest stored conversation whose
/// latest message is unread, at most [`MESSAGES_REVISIT`].
pub struct ConversationsAdapter;

/// The farthest a live `messages` run reads back for unread conversations.
pub const MESSAGES_REVISIT: Duration = Duration::from_secs(30 * 24 * 3600);

impl CursorAdapter for ConversationsAdapter {
    fn stream(&self) -> &'static str {
        "messages"
    }
    fn operation(&self) -> &'static str {
        "getConversations"
    }
    fn api(&self) -> EbayApi {
        EbayApi::Message
    }
    fn path(&self) -> &'static str {
        "/commerce/message/v1/conversation"
    }
    fn query(&self, window: CursorWindow, offset: u64, limit: u32) -> Vec<(String, String)> {
        // "Only messages sent after start_time" / "before end_time": both exclusive, so
        // [start − 1 ms, end] covers [start, end) exactly.
        let start = window.start.saturating_mul(1000).saturating_sub(1);
        let end = window.end.saturating_mul(1000);
        vec![
            ("conversation_type".into(), "FROM_MEMBERS".into()),
            ("start_time".into(), format_millis(start)),
            ("end_time".into(), format_millis(end)),
            ("limit".into(), limit.to_string()),
            ("offset".into(), offset.to_string()),
        ]
    }
    fn parse(&self, body: &[u8]) -> Result<Page, String> {
        #[derive(Deserialize)]
        struct ConversationPage {
            total: Option<u64>,
            #[serde(default)]
            conversations: Vec<Value>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Conversation {
            conversation_id: String,
            conversation_status: Option<String>,
            conversation_type: Option<String>,
            created_date: Option<String>,
            unread_count: Option<u32>,
            latest_message: Option<Message>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Message {
            message_id: Option<String>,
            created_date: Option<String>,
            read_status: Option<bool>,
            sender_username: Option<String>,
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Page {
                total: 0,
                items: Vec::new(),
            });
        }
        let page: ConversationPage = serde_json::from_slice(body)
            .map_err(|err| format!("getConversations page is not the expected json: {err}"))?;
        let total = match page.total {
            Some(total) => total,
            None if page.conversations.is_empty() => 0,
            None => return Err("getConversations page lists conversations but has no total".into()),
        };
        let items = typed(
            page.conversations,
            "conversations",
            |conversation: Conversation| {
                let latest = conversation.latest_message;
                let (message_id, message_date, read, sender) = match latest {
                    Some(message) => (
                        message.message_id,
                        message.created_date,
                        message.read_status.map(|read| read.to_string()),
                        message.sender_username,
                    ),
                    None => (None, None, None, None),
                };
                (
                    conversation.conversation_id,
                    vec![
                        conversation.conversation_type,
                        conversation.conversation_status,
                        conversation.created_date,
                        message_id,
                        message_date,
                        read,
                        conversation.unread_count.map(|count| count.to_string()),
                        sender,
                    ],
                )
            },
        )?;
        Ok(Page { total, items })
    }
    fn table(&self) -> &'static TableSpec {
        &CONVERSATIONS_TABLE
    }
    fn revisit(&self) -> Duration {
        MESSAGES_REVISIT
    }
    fn open_resources(&self) -> Option<&'static OpenSpec> {
        Some(&OPEN_CONVERSATIONS)
    }
    fn max_page_limit(&self) -> u32 {
        // getConversations: "Maximum: 50".
        50
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payouts_parse_an_empty_payload_and_refuse_items_without_a_total() {
        let empty = PayoutsAdapter.parse(b"").expect("empty");
        assert_eq!((empty.total, empty.items.len()), (0, 0));
        let no_payouts = PayoutsAdapter
            .parse(br#"{"href":"x","limit":20,"offset":0}"#)
            .expect("no payouts");
        assert_eq!(no_payouts.total, 0);
        let item = r#"{"payoutId":"7","payoutStatus":"INITIATED","payoutDate":"2026-01-01T10:00:00.000Z","amount":{"value":"1.00","currency":"USD"},"transactionCount":3}"#;
        let page = PayoutsAdapter
            .parse(format!(r#"{{"total":1,"payouts":[{item}]}}"#).as_bytes())
            .expect("page");
        assert_eq!(
            page.items[0].value(&PAYOUTS_TABLE, "payout_status"),
            Some("INITIATED")
        );
        assert_eq!(
            page.items[0].value(&PAYOUTS_TABLE, "transaction_count"),
            Some("3")
        );
        assert!(PayoutsAdapter
            .parse(format!(r#"{{"payouts":[{item}]}}"#).as_bytes())
            .is_err());
    }
}
