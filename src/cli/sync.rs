//! `marketsync sync --once`: catch every stream up once and exit.

use anyhow::bail;

use super::{load_config, runtime, Cli};

pub(super) fn command(cli: &Cli, once: bool, timeout: humantime::Duration) -> anyhow::Result<i32> {
    if !once {
        bail!("sync needs --once; to keep syncing, run the daemon: marketsync run");
    }
    let config = load_config(&cli.config, &cli.data_dir)?;
    runtime()?.block_on(crate::app::sync_once(config, timeout.into()))
}
