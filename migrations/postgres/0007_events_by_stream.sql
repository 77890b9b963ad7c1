-- The history's second index follows the order rows are appended in, as
-- migrations/0016_events_by_stream.sql: (account, stream, id) instead of
-- (account, stream, resource_id), so a day's inventory history is appended at the end
-- of the stream's range instead of beside each SKU's earlier rows across the whole index.
DROP INDEX IF EXISTS events_by_resource;
CREATE INDEX IF NOT EXISTS events_by_stream ON events (account, stream, id);
