//! `GET /api/cluster`: the live members of the cluster (`[cluster]`), each with its last
//! heartbeat and how many accounts it runs, and the accounts no live member runs. Read
//! from the daemon's latest heartbeat: no Redis call per request.

use axum::extract::State;
use axum::Json;

use super::{ApiError, HttpState};
use crate::diagnose::cluster::{report, ClusterReport};

/// `GET /api/cluster`: the live members and the accounts each runs.
#[utoipa::path(
    get,
    path = "/api/cluster",
    tag = "status",
    responses(
        (status = 200, description = "The live members (id, last heartbeat, accounts owned) and the unowned accounts; `enabled: false` when the cluster is off", body = ClusterReport),
    ),
)]
pub async fn cluster(State(state): State<HttpState>) -> Result<Json<ClusterReport>, ApiError> {
    let view = state.cluster_view();
    let error = (state.config.cluster.is_some() && view.is_none()).then(|| {
        if state.cluster.is_some() {
            "no successful heartbeat yet".to_string()
        } else {
            "this server runs without the membership service; the cluster is served by `marketsync run`".to_string()
        }
    });
    Ok(Json(report(
        &state.config,
        &state.member_id,
        view.as_ref(),
        error,
    )))
}
