-- The history's second index follows the order rows are appended in (issue 14's
-- `bench ebay-inventory --days N`): (account, stream, id) instead of
-- (account, stream, resource_id).
--
-- Each day's active-inventory snapshot appends a history row for most changed SKUs, in
-- SKU order. Under (account, stream, resource_id) every one of them went beside the same
-- SKU's earlier rows, so a day's apply rewrote pages across the whole index and grew
-- slower as the history grew (1M listings, half of them changed a day: 5.0–5.9 s on
-- the first changed day, 8.3–8.7 s on the fifth). Appended by id, a day's rows fill new
-- pages at the end of the stream's range, and the fifth day costs about what the first
-- did (4.8–6.3 s a day).
--
-- What the daemon asks of the index is unchanged: the history of a stream
-- (`WHERE account = ? AND stream = ?`, counted by status), in append order. One
-- resource's history is that range filtered by resource_id (README, "Active inventory
-- (eBay)": what that costs, and the index a user may add).
DROP INDEX IF EXISTS events_by_resource;
CREATE INDEX IF NOT EXISTS events_by_stream ON events (account, stream, id);
