//! The cluster as the surfaces show it (`GET /api/cluster`, `doctor`, the owners in
//! `status`): the live members, how many of the configured accounts each runs, and the
//! accounts no live member runs. Pure: the caller brings the view (the daemon's latest
//! heartbeat, or one registry read by the CLI).

use serde::Serialize;

use super::Deployment;
use crate::cluster::ClusterView;
use crate::domain::lease::format_ms;

/// The owner shown for an account no live member runs.
pub const UNOWNED: &str = "unowned";

/// `GET /api/cluster`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ClusterReport {
    /// `[cluster] enabled`: false means this daemon runs every configured account alone.
    pub enabled: bool,
    /// This daemon's member id (its lease owner identity when the cluster is off).
    pub me: String,
    /// Redis' clock when the view was taken (RFC 3339); absent without a view.
    pub as_of: Option<String>,
    /// Live members, by id.
    pub members: Vec<MemberReport>,
    /// Configured accounts no live member runs (no member is live, or no view yet).
    pub unowned: Vec<String>,
    /// Why there is no view (the registry could not be read), when there is none.
    pub error: Option<String>,
}

/// One live member of [`ClusterReport`].
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MemberReport {
    pub id: String,
    /// Its last heartbeat by Redis' clock (RFC 3339); absent when the registry lost it.
    pub last_heartbeat: Option<String>,
    /// When it counts as dead unless it renews (RFC 3339, Redis' clock).
    pub expires_at: String,
    /// Configured accounts it runs (rendezvous hashing over the live members).
    pub accounts_owned: usize,
    /// This daemon.
    pub this_member: bool,
}

/// The owner of `account` to show: a member id, [`UNOWNED`], or `None` when the cluster
/// is off (the daemon runs every account).
pub fn owner_label(enabled: bool, view: Option<&ClusterView>, account: &str) -> Option<String> {
    if !enabled {
        return None;
    }
    Some(
        view.and_then(|view| view.owner_of(account))
            .unwrap_or(UNOWNED)
            .to_string(),
    )
}

/// The report for `config` from `view` (or `error` when none could be read).
pub fn report(
    config: &Deployment,
    me: &str,
    view: Option<&ClusterView>,
    error: Option<String>,
) -> ClusterReport {
    let enabled = config.cluster.is_some();
    let Some(view) = view.filter(|_| enabled) else {
        return ClusterReport {
            enabled,
            me: me.to_string(),
            as_of: None,
            members: Vec::new(),
            unowned: if enabled {
                config.accounts.iter().map(|a| a.id.clone()).collect()
            } else {
                Vec::new()
            },
            error: if enabled { error } else { None },
        };
    };
    let mut owned = vec![0usize; view.members.len()];
    let mut unowned = Vec::new();
    for account in &config.accounts {
        match view
            .owner_of(&account.id)
            .and_then(|owner| view.members.iter().position(|member| member.id == owner))
        {
            Some(index) => {
                if let Some(count) = owned.get_mut(index) {
                    *count = count.saturating_add(1);
                }
            }
            None => unowned.push(account.id.clone()),
        }
    }
    ClusterReport {
        enabled,
        me: me.to_string(),
        as_of: Some(format_ms(view.redis_now_ms)),
        members: view
            .members
            .iter()
            .zip(owned)
            .map(|(member, accounts_owned)| MemberReport {
                id: member.id.clone(),
                last_heartbeat: member.last_heartbeat_ms.map(format_ms),
                expires_at: format_ms(member.expires_at_ms),
                accounts_owned,
                this_member: member.id == me,
            })
            .collect(),
        unowned,
        error,
    }
}

/// The doctor's lines about the cluster: members and this member's share (info), unowned
/// accounts or this daemon missing from the members (action), an unreadable registry.
pub fn findings(report: &ClusterReport) -> Vec<super::findings::Finding> {
    use super::findings::{Finding, Severity};
    if !report.enabled {
        return Vec::new();
    }
    let mut found = Vec::new();
    if let Some(error) = &report.error {
        found.push(
            Finding::new(
                Severity::Action,
                "cluster",
                format!("cannot read the cluster members: {error}"),
            )
            .fix("check that redis (the [redis] url) is reachable from this host"),
        );
        return found;
    }
    let total: usize = report
        .members
        .iter()
        .map(|m| m.accounts_owned)
        .sum::<usize>()
        + report.unowned.len();
    let members: Vec<String> = report
        .members
        .iter()
        .map(|member| format!("{} ({} accounts)", member.id, member.accounts_owned))
        .collect();
    found.push(Finding::new(
        Severity::Info,
        "cluster",
        format!(
            "{} live member(s) share {total} account(s): {}",
            report.members.len(),
            if members.is_empty() {
                "none".to_string()
            } else {
                members.join(", ")
            }
        ),
    ));
    match report.members.iter().find(|member| member.this_member) {
        Some(me) => found.push(Finding::new(
            Severity::Info,
            "cluster",
            format!("this member ({}) runs {} of {total} account(s)", me.id, me.accounts_owned),
        )),
        None => found.push(Finding::new(
            Severity::Info,
            "cluster",
            format!(
                "{} is not a live member (no daemon with this member id runs, or it uses the default per-start id)",
                report.me
            ),
        )),
    }
    if !report.unowned.is_empty() {
        found.push(
            Finding::new(
                Severity::Action,
                "cluster",
                format!(
                    "{} account(s) have no live member to run them: {}",
                    report.unowned.len(),
                    report.unowned.join(", ")
                ),
            )
            .fix("start a daemon with [cluster] enabled = true and the same [redis]"),
        );
    }
    found
}
