-- The eBay streams added for issue 14 (seed 003): their tables and indexes.

-- transactions: a live run re-reads back to the oldest stored transaction whose status
-- is not final yet (src/store/ebay_streams.rs, oldest_open); this index answers it
-- without a scan of every transaction of the account.
CREATE INDEX ebay_transactions_by_status
    ON ebay_transactions (account, transaction_status, transaction_date);
