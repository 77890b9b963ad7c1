//! Several daemons sharing one Redis split the accounts: membership and ownership.
//!
//! Purpose: with `[cluster] enabled = true` (which needs `[redis]`) every daemon registers
//! as a member in Redis ([`registry`]) and renews its registration every `heartbeat`
//! from a supervised service ([`run_heartbeats`], the `membership` service of the root);
//! a member whose registration is older than `member_ttl` by Redis' clock is dead. Each
//! account is run by exactly one live member, chosen by rendezvous hashing of
//! (account id, member id) over the live members ([`rendezvous`]): every daemon computes
//! the same owner from the same member list, with no coordination, and a join or a leave
//! moves only the accounts that must move. While two daemons briefly disagree (one saw a
//! change the other has not yet), the per-scope leases with fencing ([`crate::lock`])
//! still let only one of them write.
//!
//! What a daemon does with the view: the accounts supervisor runs only the accounts the
//! view gives this member ([`ClusterView::owns`]) and stops (gracefully, no crash counted)
//! the ones it lost; a view older than `member_ttl` (Redis unreachable) owns nothing, since
//! the other members will have taken the accounts by then.
//!
//! Options ([`ClusterSettings`], the `[cluster]` table): `enabled` (default false),
//! `member_id` (default `pid@host#instance`, see [`default_member_id`]), `heartbeat`
//! (default 5 s), `member_ttl` (default 15 s, at least twice the heartbeat).
//!
//! Emits: `info` "cluster membership changed" (`members`, `owned`, `configured`) when
//! the live members change, `warn` "cluster heartbeat failed" (`error`) once per
//! failure streak, the view on a `watch` channel for the supervisor, the HTTP surfaces
//! (`GET /api/cluster`, owners in `/api/status`) and `/metrics`.
//!
//! Layer 6 of docs/architecture.md (above `lock`, below `quota`). May use: `domain`,
//! `lock`. May not touch: ledger rows; it never starts or stops an account itself.

pub mod registry;
pub mod rendezvous;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

pub use registry::{Registry, Snapshot};

/// `[cluster]` defaults and bounds.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
pub const DEFAULT_MEMBER_TTL: Duration = Duration::from_secs(15);
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(100);
pub const MAX_HEARTBEAT: Duration = Duration::from_secs(60);
pub const MAX_MEMBER_TTL: Duration = Duration::from_secs(600);

/// The validated `[cluster]` table (present only when `enabled = true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// This daemon's name among the members; unique per running daemon.
    pub member_id: String,
    /// How often the registration is renewed and the member list read.
    pub heartbeat: Duration,
    /// How long a registration lives without renewal: the failure-detection time.
    pub member_ttl: Duration,
}

/// What can go wrong with the registry.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster registry unavailable: {0}")]
    Unavailable(String),
    #[error("cluster registry answered something malformed: {0}")]
    Malformed(String),
    #[error("{0}")]
    Invalid(String),
}

/// One live member as Redis records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Member {
    pub id: String,
    /// When its registration lapses unless renewed (epoch ms, Redis' clock).
    pub expires_at_ms: i64,
    /// Its last heartbeat (epoch ms, Redis' clock); `None` when the registry lost it.
    pub last_heartbeat_ms: Option<i64>,
}

/// The default member id: `pid@host#instance`, the lease owner's identity without its
/// task name (see [`crate::lock::local_owner`]); unique per process start.
pub fn default_member_id() -> String {
    let owner = crate::lock::local_owner("member");
    owner
        .strip_prefix("member:")
        .map(str::to_string)
        .unwrap_or(owner)
}

/// A member id the registry accepts: 1 to 200 printable characters, no spaces.
pub fn check_member_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > registry::MAX_MEMBER_ID {
        return Err(format!(
            "must be 1 to {} characters long",
            registry::MAX_MEMBER_ID
        ));
    }
    if id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain spaces or control characters".to_string());
    }
    Ok(())
}

/// The cluster as one heartbeat saw it.
#[derive(Debug, Clone)]
pub struct ClusterView {
    /// This daemon's member id.
    pub me: String,
    /// Live members, sorted by id (this member among them after a successful heartbeat).
    pub members: Vec<Member>,
    /// Redis' clock at the heartbeat (epoch ms).
    pub redis_now_ms: i64,
    /// When the heartbeat that produced this view was sent (local monotonic clock): the
    /// registration it renewed lapses no earlier than `sent_at + member_ttl`.
    pub sent_at: Instant,
}

impl ClusterView {
    /// The member that runs `account`; `None` when no member is live.
    pub fn owner_of(&self, account: &str) -> Option<&str> {
        rendezvous::owner(
            account,
            self.members.iter().map(|member| member.id.as_str()),
        )
    }

    /// Whether this member runs `account`.
    pub fn owns(&self, account: &str) -> bool {
        self.owner_of(account) == Some(self.me.as_str())
    }

    /// Whether this view still speaks for this member at `now`: its own registration
    /// (renewed when the view was taken) has not lapsed.
    pub fn current(&self, now: Instant, member_ttl: Duration) -> bool {
        now.saturating_duration_since(self.sent_at) < member_ttl
    }

    /// Member ids, in order.
    pub fn member_ids(&self) -> Vec<&str> {
        self.members
            .iter()
            .map(|member| member.id.as_str())
            .collect()
    }
}

impl ClusterView {
    /// A view from a registry answer read at `sent_at`.
    pub fn from_snapshot(me: String, snapshot: Snapshot, sent_at: Instant) -> ClusterView {
        ClusterView {
            me,
            members: snapshot.members,
            redis_now_ms: snapshot.redis_now_ms,
            sent_at,
        }
    }
}

/// Reads the live members once (the CLI's `status` and `doctor`): connects, reads and
/// returns the view as `me` would see it, within the registry's call bounds.
pub async fn read_view(url: &str, prefix: &str, me: &str) -> Result<ClusterView, ClusterError> {
    let sent_at = Instant::now();
    let registry = Registry::connect(url, prefix).await?;
    let snapshot = registry.read().await?;
    Ok(ClusterView::from_snapshot(
        me.to_string(),
        snapshot,
        sent_at,
    ))
}

/// What the accounts supervisor follows: the latest view and how to judge it.
#[derive(Debug, Clone)]
pub struct OwnershipFeed {
    pub view: watch::Receiver<Option<ClusterView>>,
    /// How often the supervisor looks at the view (the heartbeat).
    pub every: Duration,
    /// A view older than this owns nothing.
    pub member_ttl: Duration,
}

impl OwnershipFeed {
    /// The accounts among `configured` this member runs now: every one of them when the
    /// view is current, none before the first heartbeat or once the view lapsed.
    pub fn owned<'a>(&self, configured: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
        let view = self.view.borrow();
        match view.as_ref() {
            Some(view) if view.current(Instant::now(), self.member_ttl) => configured
                .into_iter()
                .filter(|account| view.owns(account))
                .cloned()
                .collect(),
            _ => BTreeSet::new(),
        }
    }
}

/// The handle the daemon keeps: the registry, the settings and the view channel.
#[derive(Clone)]
pub struct Membership {
    pub registry: Registry,
    pub settings: ClusterSettings,
    pub view: Arc<watch::Sender<Option<ClusterView>>>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Membership {
    pub fn new(registry: Registry, settings: ClusterSettings) -> Membership {
        let (view, _) = watch::channel(None);
        Membership {
            registry,
            settings,
            view: Arc::new(view),
        }
    }

    /// The feed the accounts supervisor follows.
    pub fn feed(&self) -> OwnershipFeed {
        OwnershipFeed {
            view: self.view.subscribe(),
            every: self.settings.heartbeat,
            member_ttl: self.settings.member_ttl,
        }
    }

    /// One heartbeat: renew, read the members, publish the view. Returns whether the live
    /// members changed.
    pub async fn beat(&self) -> Result<bool, ClusterError> {
        let sent_at = Instant::now();
        let snapshot = self
            .registry
            .heartbeat(&self.settings.member_id, self.settings.member_ttl)
            .await?;
        let view = ClusterView::from_snapshot(self.settings.member_id.clone(), snapshot, sent_at);
        let changed =
            self.view.borrow().as_ref().map(ClusterView::member_ids) != Some(view.member_ids());
        self.view.send_replace(Some(view));
        Ok(changed)
    }

    /// Leaves the cluster (clean shutdown), within the registry's call bound.
    pub async fn leave(&self) {
        match self.registry.leave(&self.settings.member_id).await {
            Ok(_) => info!(member = %self.settings.member_id, "left the cluster"),
            Err(err) => {
                warn!(member = %self.settings.member_id, error = %err, "cannot leave the cluster; the registration lapses by itself")
            }
        }
    }
}

/// The `membership` service: a heartbeat every `heartbeat`, forever (the root restarts it
/// if it ever fails). `configured` is only for the log line.
pub async fn run_heartbeats(
    membership: Membership,
    configured: Arc<Vec<String>>,
) -> anyhow::Result<()> {
    let mut failing = false;
    let mut ticker = tokio::time::interval(membership.settings.heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match membership.beat().await {
            Ok(changed) => {
                if failing {
                    info!(member = %membership.settings.member_id, "cluster heartbeat works again");
                    failing = false;
                }
                if changed {
                    let view = membership.view.borrow().clone();
                    if let Some(view) = view {
                        let owned = configured.iter().filter(|id| view.owns(id)).count();
                        info!(
                            member = %view.me,
                            members = ?view.member_ids(),
                            owned,
                            configured = configured.len(),
                            "cluster membership changed"
                        );
                    }
                }
            }
            Err(err) => {
                if !failing {
                    warn!(member = %membership.settings.member_id, error = %err, "cluster heartbeat failed; accounts stop once the registration lapses");
                    failing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(me: &str, members: &[&str], sent_at: Instant) -> ClusterView {
        ClusterView {
            me: me.to_string(),
            members: members
                .iter()
                .map(|id| Member {
                    id: (*id).to_string(),
                    expires_at_ms: 2,
                    last_heartbeat_ms: Some(1),
                })
                .collect(),
            redis_now_ms: 1,
            sent_at,
        }
    }

    #[test]
    fn the_default_member_id_is_the_owner_identity_without_a_task() {
        let id = default_member_id();
        assert!(id.starts_with(&format!("{}@", std::process::id())), "{id}");
        assert!(id.contains('#'), "{id}");
        assert_eq!(check_member_id(&id), Ok(()));
        assert!(check_member_id("").is_err());
        assert!(check_member_id("a b").is_err());
        assert!(check_member_id(&"x".repeat(201)).is_err());
    }

    #[tokio::test]
    async fn a_feed_owns_its_share_while_current_and_nothing_after() {
        let configured: Vec<String> = (0..60).map(|index| format!("acct-{index}")).collect();
        let (sender, receiver) = watch::channel(None);
        let mut feed = OwnershipFeed {
            view: receiver,
            every: Duration::from_secs(1),
            member_ttl: Duration::from_secs(3600),
        };
        assert!(
            feed.owned(&configured).is_empty(),
            "no view yet: nothing owned"
        );
        sender.send_replace(Some(view("a", &["a", "b"], Instant::now())));
        let mine = feed.owned(&configured);
        sender.send_replace(Some(view("b", &["a", "b"], Instant::now())));
        let theirs = feed.owned(&configured);
        assert!(!mine.is_empty() && !theirs.is_empty());
        assert!(mine.is_disjoint(&theirs));
        assert_eq!(mine.len() + theirs.len(), configured.len());

        // Its registration lapses member_ttl after the heartbeat was sent.
        feed.member_ttl = Duration::from_millis(30);
        let sent_at = Instant::now();
        sender.send_replace(Some(view("a", &["a"], sent_at)));
        let deadline = sent_at + Duration::from_secs(5);
        while !feed.owned(&configured).is_empty() {
            assert!(Instant::now() < deadline, "the view never lapsed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            Instant::now() >= sent_at + feed.member_ttl,
            "a view counts until member_ttl has passed"
        );
    }
}
