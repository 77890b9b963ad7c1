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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ClusterView, Member};
    use crate::diagnose::findings::Severity;

    fn deployment(cluster: bool) -> Deployment {
        let mut text = String::from("data_dir = \"/nonexistent\"\n[simulator]\nenabled = true\n");
        if cluster {
            text.push_str("[redis]\nurl = \"redis://127.0.0.1:1\"\n[cluster]\nenabled = true\nmember_id = \"a\"\n");
        }
        for index in 0..20 {
            text.push_str(&format!(
                "[[accounts]]\nid = \"acct-{index}\"\nprovider = \"amazon\"\nmarketplace = \"ATVPDKIKX0DER\"\n"
            ));
        }
        crate::config::Config::parse(&text, "t.toml")
            .unwrap()
            .deployment()
    }

    fn view(members: &[&str]) -> ClusterView {
        ClusterView {
            me: "a".to_string(),
            members: members
                .iter()
                .map(|id| Member {
                    id: (*id).to_string(),
                    expires_at_ms: 1_700_000_003_000,
                    last_heartbeat_ms: Some(1_700_000_000_000),
                })
                .collect(),
            redis_now_ms: 1_700_000_000_500,
            sent_at: tokio::time::Instant::now(),
        }
    }

    #[test]
    fn the_report_counts_each_members_share_and_names_unowned_accounts() {
        let config = deployment(true);
        let seen = view(&["a", "b"]);
        let report = report(&config, "a", Some(&seen), None);
        assert!(report.enabled);
        assert_eq!(report.members.len(), 2);
        let shares: usize = report.members.iter().map(|m| m.accounts_owned).sum();
        assert_eq!(shares, 20, "every account has exactly one owner");
        assert!(report.members.iter().all(|m| m.accounts_owned > 0));
        assert!(report.members[0].this_member && !report.members[1].this_member);
        assert_eq!(
            report.members[0].last_heartbeat.as_deref(),
            Some("2023-11-14T22:13:20.000Z")
        );
        assert!(report.unowned.is_empty());
        let lines: Vec<String> = findings(&report).iter().map(|f| f.line()).collect();
        assert!(
            lines[0].contains("2 live member(s) share 20 account(s)"),
            "{lines:?}"
        );
        assert!(lines[1].contains("this member (a) runs"), "{lines:?}");

        // No live member: every account unowned, an action for a person.
        let empty = report_of(&config, Some(&view(&[])), None);
        assert_eq!(empty.unowned.len(), 20);
        let found = findings(&empty);
        assert!(found.iter().any(|f| f.severity == Severity::Action
            && f.message.contains("20 account(s) have no live member")));
        assert_eq!(
            owner_label(true, Some(&view(&[])), "acct-1").as_deref(),
            Some(UNOWNED)
        );

        // An unreadable registry is said, not hidden.
        let unread = report_of(&config, None, Some("redis: refused".to_string()));
        assert!(findings(&unread)[0].message.contains("redis: refused"));
    }

    fn report_of(
        config: &Deployment,
        seen: Option<&ClusterView>,
        error: Option<String>,
    ) -> ClusterReport {
        report(config, "a", seen, error)
    }

    #[test]
    fn with_the_cluster_off_there_is_no_owner_and_nothing_to_report() {
        let config = deployment(false);
        let report = report(&config, "pid@host#x", None, None);
        assert!(!report.enabled);
        assert!(report.members.is_empty() && report.unowned.is_empty());
        assert!(findings(&report).is_empty());
        assert_eq!(owner_label(false, None, "acct-1"), None);
    }
}
