//! Integration test modules, one per area.

mod binary;
mod doctor;
mod ebay;
mod ebay_auth;
mod ebay_cases;
mod ebay_inventory;
mod ebay_streams;
mod fencing;
mod hostile;
mod hostile_documents;
mod http;
mod jobs;
mod locks;
mod ops;
mod pipeline;
mod quota;
mod quota_correction;
mod sim_profile;
mod supervision;
mod surface;
mod sync_amazon;
