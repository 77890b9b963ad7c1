//! Integration test modules, one per area.

mod binary;
mod sync_amazon;
