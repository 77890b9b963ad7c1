//! Arbitrary bytes into every eBay stream's page parser (getOrders, getTransactions,
//! the Post-Order return search): each must answer a page or an error, never panic, and
//! never report more items on the page than the body could hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use marketsync::shapes::cursor::adapter::CursorAdapter;

fuzz_target!(|data: &[u8]| {
    for adapter in marketsync::shapes::cursor::ebay::adapters() {
        if let Ok(page) = adapter.parse(data) {
            // Every item came out of the body: at most one per two bytes (`{}`).
            assert!(page.items.len() <= data.len() / 2 + 1);
            let table = adapter.table();
            for item in &page.items {
                assert_eq!(item.values.len(), table.columns.len());
            }
        }
    }
});
