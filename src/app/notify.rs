//! systemd integration (`Type=notify`, see `contrib/systemd/marketsync.service`): the
//! sd_notify protocol through the `sd-notify` crate.
//!
//! - `READY=1` (with a first `STATUS=`) once [`Daemon::start`](super::Daemon::start)
//!   returned: the ledger is open, the supervision tree is up and every account actor has
//!   been asked to start.
//! - `WATCHDOG=1` from the root's heartbeat, every `WATCHDOG_USEC / 2`, and only while
//!   the tree is healthy ([`TreeHealth::healthy`]): a root or accounts supervisor that
//!   stopped answering stops feeding the watchdog, and systemd restarts the process after
//!   `WatchdogSec`.
//! - `STATUS=` a one-line summary on every heartbeat (`systemctl status` shows it):
//!   accounts running / backing off / quarantined / halted, services up.
//! - `STOPPING=1` when the shutdown starts (a signal, or the root giving up).
//!
//! Without `NOTIFY_SOCKET` (not started by systemd as `Type=notify`) nothing is sent and
//! the root has no heartbeat. `WATCHDOG_USEC` comes from outside: the interval is
//! bounded to [`MIN_BEAT`]..[`MAX_BEAT`]; with no watchdog the status line is refreshed
//! every [`STATUS_EVERY`]. A failed send is logged (once per kind of failure, then at
//! debug) and never stops the daemon: the datagram is best effort, as in libsystemd.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sd_notify::NotifyState;
use tracing::{debug, info, warn};

use crate::actors::root::{RootHeartbeat, TreeHealth};

/// How often the status line is refreshed when systemd set no watchdog.
pub const STATUS_EVERY: Duration = Duration::from_secs(30);
/// The shortest heartbeat, whatever `WATCHDOG_USEC` says.
pub const MIN_BEAT: Duration = Duration::from_millis(100);
/// The longest heartbeat, whatever `WATCHDOG_USEC` says.
pub const MAX_BEAT: Duration = Duration::from_secs(3600);

/// Talks to the service manager; `None` from [`Notifier::from_env`] when there is none.
#[derive(Debug, Clone)]
pub struct Notifier {
    /// `WATCHDOG_USEC` when it is meant for this process.
    watchdog: Option<Duration>,
    /// Whether a failed send was logged at warn already.
    warned: Arc<AtomicBool>,
    /// Where the service is; held while a message is sent, so heartbeats (sent only while
    /// running) never put `WATCHDOG=1` before `READY=1` or after `STOPPING=1`. Why a std
    /// mutex: held for one datagram send, never across an await.
    phase: Arc<Mutex<Phase>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Starting,
    Running,
    Stopping,
}

impl Notifier {
    /// The notifier of a process started by systemd with `Type=notify` (`NOTIFY_SOCKET`
    /// set), else `None`.
    pub fn from_env() -> Option<Notifier> {
        std::env::var_os("NOTIFY_SOCKET")?;
        let mut usec = 0u64;
        // systemd sets WATCHDOG_USEC with WATCHDOG_PID naming the main process; a
        // watchdog meant for another process (a parent that exec'd elsewhere) is ignored.
        let watchdog = (sd_notify::watchdog_enabled(false, &mut usec) && usec > 0)
            .then(|| Duration::from_micros(usec));
        info!(
            watchdog = ?watchdog,
            "systemd notification socket found; sending READY, WATCHDOG, STATUS and STOPPING"
        );
        Some(Notifier {
            watchdog,
            warned: Arc::new(AtomicBool::new(false)),
            phase: Arc::new(Mutex::new(Phase::Starting)),
        })
    }

    /// The service is up.
    pub fn ready(&self) {
        let mut phase = self.lock_phase();
        *phase = Phase::Running;
        self.send(
            "ready",
            &[
                NotifyState::Ready,
                NotifyState::Status("started; accounts starting"),
            ],
        );
    }

    /// The shutdown started; `why` goes to the status line.
    pub fn stopping(&self, why: &str) {
        let mut phase = self.lock_phase();
        *phase = Phase::Stopping;
        let status = format!("stopping: {why}");
        self.send(
            "stopping",
            &[NotifyState::Stopping, NotifyState::Status(&status)],
        );
    }

    /// How often the root reports: half the watchdog interval, else [`STATUS_EVERY`].
    pub fn beat_every(&self) -> Duration {
        match self.watchdog {
            Some(watchdog) => {
                let beat = (watchdog / 2).clamp(MIN_BEAT, MAX_BEAT);
                if beat >= watchdog {
                    warn!(
                        watchdog = ?watchdog,
                        beat = ?beat,
                        "WatchdogSec is shorter than the daemon's shortest heartbeat; raise WatchdogSec"
                    );
                }
                beat
            }
            None => STATUS_EVERY,
        }
    }

    /// The root's heartbeat: `WATCHDOG=1` and the status line while healthy, only the
    /// status line otherwise.
    pub fn heartbeat(&self) -> RootHeartbeat {
        let notifier = self.clone();
        RootHeartbeat {
            every: self.beat_every(),
            report: Arc::new(move |health: &TreeHealth| notifier.report(health)),
        }
    }

    fn report(&self, health: &TreeHealth) {
        let phase = self.lock_phase();
        if *phase != Phase::Running {
            return;
        }
        let summary = health.summary();
        if health.healthy() {
            if self.watchdog.is_some() {
                self.send(
                    "watchdog",
                    &[NotifyState::Watchdog, NotifyState::Status(&summary)],
                );
            } else {
                self.send("status", &[NotifyState::Status(&summary)]);
            }
        } else {
            warn!(status = %summary, "supervision tree unhealthy; not feeding the systemd watchdog");
            self.send("status", &[NotifyState::Status(&summary)]);
        }
    }

    fn lock_phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn send(&self, what: &'static str, states: &[NotifyState<'_>]) {
        match sd_notify::notify(false, states) {
            Ok(()) => debug!(what, "systemd notified"),
            Err(err) if !self.warned.swap(true, Ordering::Relaxed) => {
                warn!(what, error = %err, "cannot notify systemd (NOTIFY_SOCKET); continuing without")
            }
            Err(err) => debug!(what, error = %err, "cannot notify systemd"),
        }
    }
}
