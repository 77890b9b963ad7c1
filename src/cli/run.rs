//! `marketsync run`: the daemon until the first SIGINT/SIGTERM; a second one exits at once.
//!
//! The signals are watched on a thread of their own (with a one-thread runtime), not on
//! the daemon's workers: a second signal must exit even when every worker is busy. The
//! same thread is the shutdown's backstop: a daemon still running `shutdown_grace` plus
//! 2 s after the first signal exits anyway (code 1). After the daemon returns, the
//! runtime waits at most 1 s for blocking work (a SQLite transaction) before the process
//! exits; the ledger resumes anything cut off.

use std::time::Duration;

use anyhow::Context;
use tracing::{debug, error, warn};

use super::{load_config, runtime, Cli};

pub(super) fn command(cli: &Cli) -> anyhow::Result<i32> {
    let config = load_config(&cli.config, &cli.data_dir)?;
    let grace = config.shutdown_grace;
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("signals".to_string())
        .spawn(move || watch_signals(first_tx, grace))
        .context("starting the signal thread")?;
    let runtime = runtime()?;
    let result = runtime.block_on(crate::app::run(config, async {
        let _ = first_rx.await;
    }));
    runtime.shutdown_timeout(Duration::from_secs(1));
    result?;
    Ok(0)
}

/// A repeat of the first signal this soon after it is the same request delivered twice
/// (GNU `timeout` signals the daemon and then its process group, two system calls
/// apart), not a person or a supervisor asking a second time: it is ignored.
const DUPLICATE_SIGNAL_WINDOW: Duration = Duration::from_millis(50);

/// First signal: tell the daemon. Second signal: exit 130 at once (the first one's kind
/// again within [`DUPLICATE_SIGNAL_WINDOW`] is not a second signal). No exit within
/// `grace` + 2 s of the first: exit 1.
fn watch_signals(first_tx: tokio::sync::oneshot::Sender<()>, grace: Duration) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            error!(error = %err, "cannot watch for signals; stop the daemon with SIGKILL");
            return;
        }
    };
    runtime.block_on(async move {
        // Registered once, before the first signal: a second signal arriving at any
        // moment after the first is seen.
        let mut signals = Signals::new();
        let first = signals.next().await;
        let first_at = tokio::time::Instant::now();
        let _ = first_tx.send(());
        let backstop = tokio::time::sleep(grace.saturating_add(Duration::from_secs(2)));
        tokio::pin!(backstop);
        loop {
            tokio::select! {
                kind = signals.next() => {
                    if is_duplicate(first, kind, first_at.elapsed()) {
                        debug!(signal = ?kind, "the first signal delivered again; ignored");
                        continue;
                    }
                    warn!("second signal: exiting now; the ledger resumes units in flight on the next start");
                    std::process::exit(130);
                }
                () = &mut backstop => {
                    error!(grace = %humantime::format_duration(grace), "shutdown did not finish within the grace period; exiting now (the ledger resumes units in flight on the next start)");
                    std::process::exit(1);
                }
            }
        }
    });
}

/// Whether `kind`, `after` the `first` signal, is that one delivered again.
fn is_duplicate(first: StopSignal, kind: StopSignal, after: Duration) -> bool {
    kind == first && after < DUPLICATE_SIGNAL_WINDOW
}

/// Which stop signal came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopSignal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

/// SIGINT and SIGTERM (Ctrl-C elsewhere).
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let streams = match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(interrupt), Ok(terminate)) => Some((interrupt, terminate)),
                _ => {
                    warn!("cannot listen for SIGTERM; only Ctrl-C stops the daemon gracefully");
                    None
                }
            };
            Signals { streams }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The next signal, and which one it was.
    async fn next(&mut self) -> StopSignal {
        #[cfg(unix)]
        if let Some((interrupt, terminate)) = &mut self.streams {
            return tokio::select! {
                _ = interrupt.recv() => StopSignal::Interrupt,
                _ = terminate.recv() => StopSignal::Terminate,
            };
        }
        let _ = tokio::signal::ctrl_c().await;
        StopSignal::Interrupt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_signal_at_once_is_a_duplicate() {
        let (term, int) = (StopSignal::Terminate, StopSignal::Interrupt);
        assert!(is_duplicate(term, term, Duration::from_millis(1)));
        assert!(!is_duplicate(term, term, DUPLICATE_SIGNAL_WINDOW));
        assert!(!is_duplicate(term, term, Duration::from_secs(1)));
        assert!(!is_duplicate(int, term, Duration::ZERO));
        assert!(!is_duplicate(term, int, Duration::ZERO));
    }
}
