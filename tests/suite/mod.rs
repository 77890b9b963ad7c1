//! Integration test modules, one per area.

mod binary;
mod locks;
mod supervision;
mod sync_amazon;
