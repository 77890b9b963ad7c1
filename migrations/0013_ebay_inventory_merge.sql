-- eBay active inventory, applied as a merge (src/store/ebay_inventory.rs, issue 14's
-- `bench ebay-inventory`): the snapshot counter moves to a table of its own, and the
-- (account, state, snapshot) index goes.
--
-- The index was rewritten on every row of every snapshot (each row's `snapshot` moved);
-- the SKUs a snapshot did not list are now found by the merge itself (a sorted report
-- meets the table in primary-key order) or, for an unsorted report, by one scan of the
-- account's primary-key range. `ebay_inventory.snapshot` is now the snapshot that last
-- wrote the row (a merge leaves an unchanged row alone).
DROP INDEX IF EXISTS ebay_inventory_by_snapshot;

-- The last snapshot applied per account (counting up from 1).
CREATE TABLE ebay_inventory_snapshots (
    account  TEXT NOT NULL PRIMARY KEY,
    snapshot INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO ebay_inventory_snapshots (account, snapshot)
    SELECT account, MAX(snapshot) FROM ebay_inventory GROUP BY account;
