//! The Keepa simulator, mounted beside SP-API in the same server.

use std::sync::Arc;

use axum::Router;
use serde::{Deserialize, Serialize};

use super::Simulator;

/// Operation names for fault schedules (`[simulator.faults]`, `/_sim/faults`).
pub const OPERATIONS: &[&str] = &[];

/// Keepa simulator settings; every field has a default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepaSimConfig {}

/// The Keepa routes.
pub(super) fn router(_sim: Arc<Simulator>) -> Router<Arc<Simulator>> {
    Router::new()
}
