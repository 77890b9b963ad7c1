//! Integration test modules, one per area.

mod binary;
mod doctor;
mod http;
mod locks;
mod quota;
mod supervision;
mod sync_amazon;
