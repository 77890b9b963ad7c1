//! `marketsync run`: the daemon until the first SIGINT/SIGTERM; a second one exits at once.

use tracing::warn;

use super::{load_config, runtime, Cli};
use crate::config::Config;

pub(super) fn command(cli: &Cli) -> anyhow::Result<i32> {
    let config = load_config(&cli.config, &cli.data_dir)?;
    runtime()?.block_on(run_daemon(config))?;
    Ok(0)
}

/// Runs the daemon until the first SIGINT/SIGTERM; a second one exits at once.
async fn run_daemon(config: Config) -> anyhow::Result<()> {
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = first_tx.send(());
        wait_for_signal().await;
        warn!("second signal: exiting now; the ledger resumes units in flight on the next start");
        std::process::exit(130);
    });
    crate::app::run(config, async {
        let _ = first_rx.await;
    })
    .await
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
