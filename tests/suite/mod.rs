//! Integration test modules, one per area.

mod binary;
mod locks;
mod sync_amazon;
