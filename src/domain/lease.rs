//! Leases as data: what a lease is, what `locks` shows, how the hygiene pass reports a
//! repair, and the errors every lease backend returns (the backends are [`crate::lock`]
//! for Redis and [`crate::store::leases`] for SQLite).

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The TTL cap: 1 hour. A configured TTL above it is refused by config validation; the
/// hygiene pass ([`crate::lock::LockService::repair`]) repairs stored leases above it.
pub const MAX_TTL: Duration = Duration::from_secs(15 * 60 * 4);

/// The default Redis key prefix.
pub const DEFAULT_PREFIX: &str = "marketsync:";

/// A lease held by this process. Serialized as JSON it is also the value of the Redis
/// lock key (readable with `redis-cli GET`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub scope: String,
    pub owner: String,
    pub token: String,
    pub fence: u64,
    pub acquired_at_ms: i64,
    pub expires_at_ms: i64,
}

impl Lease {
    /// How often a holder should renew a lease taken with `ttl`: a third of it.
    pub fn renew_every(ttl: Duration) -> Duration {
        (ttl / 3).max(Duration::from_millis(1))
    }
}

/// What `list` shows about one lease (never its token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LockInfo {
    pub scope: String,
    pub owner: String,
    pub fence: u64,
    /// When the lease stops blocking others; `None` = the key never expires (a zombie).
    #[schema(required = true)]
    pub expires_at_ms: Option<i64>,
    /// `expires_at_ms - now`, never negative; `None` when there is no expiry.
    #[schema(required = true)]
    pub remaining_ms: Option<i64>,
    /// The lease's own expiry (`expires_at`) is `<= now`: its holder is gone or late, and
    /// the next `acquire` takes it over.
    pub stale: bool,
    /// When the holder acquired it (epoch ms); `None` when the stored lease is unreadable.
    #[schema(required = true)]
    pub acquired_at_ms: Option<i64>,
}

/// Scope -> acquired_at (epoch ms) of every listed lease that says when it was taken.
pub fn acquired_at_by_scope(locks: &[LockInfo]) -> std::collections::HashMap<String, i64> {
    locks
        .iter()
        .filter_map(|info| Some((info.scope.clone(), info.acquired_at_ms?)))
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("scope {scope} is held by {holder} until {until}")]
    Busy {
        scope: String,
        holder: String,
        until: String,
    },
    #[error("lease on {scope} was lost: {reason}")]
    Lost { scope: String, reason: String },
    #[error("lock backend unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Invalid(String),
}

/// What the hygiene pass did to one lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RepairAction {
    /// The expiry was brought down to the cap; the lease stays with its owner.
    ExpirySetToCap,
    /// The owner is provably dead on this host: the lease was deleted.
    Deleted,
}

impl RepairAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RepairAction::ExpirySetToCap => "expiry_set_to_cap",
            RepairAction::Deleted => "deleted",
        }
    }
}

impl std::fmt::Display for RepairAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One lease repaired by [`crate::lock::LockService::repair`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Repair {
    pub scope: String,
    /// The owner named in the repaired lease.
    pub replaced_owner: String,
    pub action: RepairAction,
    /// The remaining TTL before the repair; `None` = the key had no expiry at all.
    pub previous_ttl_ms: Option<i64>,
}

/// A fresh random 128-bit token, as 32 hex digits.
pub fn new_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Milliseconds since the epoch by the local clock.
pub fn local_now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// An epoch-milliseconds instant as RFC 3339 (UTC), for messages.
pub fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| format!("{ms}ms"))
}

/// A TTL (or cap) in whole milliseconds, refusing zero and values above `MAX_TTL` when
/// `capped` (a lease TTL above the cap is a configuration error).
pub fn ttl_ms(ttl: Duration, capped: bool) -> Result<i64, LockError> {
    if capped && ttl > MAX_TTL {
        return Err(LockError::Invalid(format!(
            "lease ttl {} is above the cap of {}",
            humantime::format_duration(ttl),
            humantime::format_duration(MAX_TTL)
        )));
    }
    let ms = i64::try_from(ttl.as_millis())
        .map_err(|_| LockError::Invalid("lease ttl is out of range".to_string()))?;
    if ms < 1 {
        return Err(LockError::Invalid(
            "lease ttl must be at least 1ms".to_string(),
        ));
    }
    Ok(ms)
}

pub fn check_scope(scope: &str) -> Result<(), LockError> {
    if scope.is_empty() {
        return Err(LockError::Invalid(
            "lock scope must not be empty".to_string(),
        ));
    }
    Ok(())
}

pub fn check_owner(owner: &str) -> Result<(), LockError> {
    if owner.is_empty() {
        return Err(LockError::Invalid(
            "lock owner must not be empty".to_string(),
        ));
    }
    Ok(())
}

/// The `Busy` error for a live `holder`.
pub fn busy(scope: &str, holder: &str, expires_at_ms: Option<i64>) -> LockError {
    LockError::Busy {
        scope: scope.to_string(),
        holder: holder.to_string(),
        until: match expires_at_ms {
            Some(ms) => format_ms(ms),
            None => "no expiry".to_string(),
        },
    }
}

/// The owner string for `task` in this process: `task:pid@host#instance` (see
/// [`instance_id`]), e.g. `auto-sync:4242@web1#3f9a2c-5e1f03a2`.
pub fn local_owner(task: &str) -> String {
    let host = local_hostname().unwrap_or_else(|| "unknown-host".to_string());
    format!("{task}:{}@{host}#{}", std::process::id(), instance_id())
}

/// This process start's instance id: six random hex digits, then (when `/proc` says) a
/// dash and the eight hex digits of [`namespace_tag`]. Unique per process start, so two
/// daemons that are both PID 1 on the same hostname (containers) never share an owner.
pub fn instance_id() -> &'static str {
    static INSTANCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    INSTANCE.get_or_init(|| {
        let random = format!("{:06x}", rand::random::<u32>() & 0x00ff_ffff);
        match namespace_tag() {
            Some(tag) => format!("{random}-{tag}"),
            None => random,
        }
    })
}

/// Where a pid means something: a hash (FNV-1a, 32 bits, as 8 hex digits) of the kernel's
/// boot id and this process's PID namespace (`/proc/self/ns/pid`). Two processes with the
/// same tag see the same `/proc`, so one can prove the other gone; a different tag (another
/// container, another boot) proves nothing. `None` without procfs.
pub fn namespace_tag() -> Option<&'static str> {
    static TAG: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let namespace = std::fs::read_link("/proc/self/ns/pid").ok()?;
        let mut hash: u32 = 0x811c_9dc5;
        for byte in boot
            .trim()
            .bytes()
            .chain(std::iter::once(b'/'))
            .chain(namespace.to_string_lossy().bytes())
        {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        Some(format!("{hash:08x}"))
    })
    .as_deref()
}

/// This host's name: `HOSTNAME` from the environment, else `/proc/sys/kernel/hostname`.
pub fn local_hostname() -> Option<String> {
    if let Ok(name) = std::env::var("HOSTNAME") {
        let name = name.trim();
        if !name.is_empty() {
            return Some(name.to_string());
        }
    }
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// An owner string taken apart: `task:pid@host` (written before instance ids existed) or
/// `task:pid@host#instance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerId<'a> {
    pub task: &'a str,
    pub pid: u32,
    pub host: &'a str,
    /// `None` for an owner of the old form.
    pub instance: Option<&'a str>,
}

impl<'a> OwnerId<'a> {
    /// Parses `task:pid@host[#instance]`; `None` when malformed.
    pub fn parse(owner: &'a str) -> Option<OwnerId<'a>> {
        let (task_pid, host_instance) = owner.rsplit_once('@')?;
        let (task, pid) = task_pid.rsplit_once(':')?;
        let pid = pid.parse::<u32>().ok()?;
        let (host, instance) = match host_instance.split_once('#') {
            Some((host, instance)) if !instance.is_empty() => (host, Some(instance)),
            Some(_) => return None,
            None => (host_instance, None),
        };
        if host.is_empty() {
            return None;
        }
        Some(OwnerId {
            task,
            pid,
            host,
            instance,
        })
    }

    /// The namespace tag of the instance (`3f9a2c-5e1f03a2` -> `5e1f03a2`).
    pub fn namespace_tag(&self) -> Option<&'a str> {
        let (_, tag) = self.instance?.split_once('-')?;
        (!tag.is_empty()).then_some(tag)
    }
}

/// Splits `task:pid@host` (or `task:pid@host#instance`) into `(task, pid, host)`.
pub fn parse_owner(owner: &str) -> Option<(&str, u32, &str)> {
    let id = OwnerId::parse(owner)?;
    Some((id.task, id.pid, id.host))
}

/// True only when `owner` is provably dead, so its lease may be released although it has
/// not expired. Anything that cannot be checked counts as alive: another host, no procfs,
/// a malformed owner, an unreadable `/proc` entry.
///
/// - `task:pid@host#instance` (this version): the instance is not ours, `host` is this
///   host, the instance's namespace tag equals ours (same boot, same PID namespace: its pid
///   means the same process here), and that pid is ours (we replaced it) or `/proc/<pid>`
///   is gone or runs another program. An instance from another container with the same
///   hostname and pid has another tag, so it is never taken for dead.
/// - `task:pid@host` (old owners, written before instance ids): `host` is this host and
///   `/proc/<pid>` does not exist or runs another program.
pub fn owner_is_dead_local(owner: &str) -> bool {
    let Some(id) = OwnerId::parse(owner) else {
        return false;
    };
    if id.pid == 0 {
        return false;
    }
    match local_hostname() {
        Some(local) if local.eq_ignore_ascii_case(id.host) => {}
        _ => return false,
    }
    if !Path::new("/proc/self").exists() {
        return false;
    }
    match id.instance {
        Some(instance) => {
            if instance == instance_id() {
                return false;
            }
            match (id.namespace_tag(), namespace_tag()) {
                (Some(theirs), Some(ours)) if theirs == ours => {}
                _ => return false,
            }
            if id.pid == std::process::id() {
                // Same namespace, our pid, another instance: its process was replaced by us.
                return true;
            }
        }
        None => {
            if id.pid == std::process::id() {
                return false;
            }
        }
    }
    let proc_dir = Path::new("/proc").join(id.pid.to_string());
    match std::fs::metadata(&proc_dir) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return true,
        Err(_) => return false,
        Ok(_) => {}
    }
    !is_this_program(&proc_dir)
}

/// Whether the live process at `proc_dir` runs this program: the same executable, or the
/// same program name in `argv[0]`. An empty command line (a zombie process or a kernel
/// thread) is not this program; an unreadable one is assumed to be.
fn is_this_program(proc_dir: &Path) -> bool {
    if let (Ok(theirs), Ok(ours)) = (
        std::fs::read_link(proc_dir.join("exe")),
        std::fs::read_link("/proc/self/exe"),
    ) {
        if theirs == ours {
            return true;
        }
    }
    let cmdline = match std::fs::read(proc_dir.join("cmdline")) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return false,
        Err(_) => return true,
    };
    let Some(theirs) = program_name(&cmdline) else {
        return false;
    };
    let ours = std::fs::read("/proc/self/cmdline")
        .ok()
        .and_then(|bytes| program_name(&bytes));
    match ours {
        Some(ours) => ours == theirs,
        None => true,
    }
}

/// The file name of `argv[0]` in a NUL-separated `/proc/<pid>/cmdline`.
fn program_name(cmdline: &[u8]) -> Option<String> {
    let argv0 = cmdline.split(|byte| *byte == 0).next()?;
    let argv0 = String::from_utf8_lossy(argv0);
    let name = argv0.rsplit('/').next()?.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// What a ledger, cursor or job write carries so the store can refuse a writer whose lease
/// was taken over. There is no "no check" by default: a write with [`WriteFence::Missing`]
/// is refused, and writing without a lease is said out loud with [`WriteFence::Unfenced`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteFence {
    /// Written under a lease with this fence: refused once a newer fence was seen for the
    /// scope; a newer one is recorded as the scope's newest.
    Lease(u64),
    /// Written by an operator tool or a single-process test that takes no lease
    /// (`fill-day`, `run_once`). Never used by the runner, which always holds a lease.
    Unfenced,
    /// Not stamped yet: a unit read back from the store (in flight when its last owner
    /// stopped). The store refuses any write carrying it; the runner stamps its own
    /// lease's fence first.
    Missing,
}

impl WriteFence {
    /// The fence of `lease`.
    pub fn of(lease: &Lease) -> WriteFence {
        WriteFence::Lease(lease.fence)
    }

    /// The lease fence, when there is one.
    pub fn value(self) -> Option<u64> {
        match self {
            WriteFence::Lease(fence) => Some(fence),
            WriteFence::Unfenced | WriteFence::Missing => None,
        }
    }
}

impl std::fmt::Display for WriteFence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteFence::Lease(fence) => write!(f, "fence {fence}"),
            WriteFence::Unfenced => f.write_str("unfenced (no lease)"),
            WriteFence::Missing => f.write_str("no fence"),
        }
    }
}
