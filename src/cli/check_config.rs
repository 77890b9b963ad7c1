//! `marketsync check-config`: validates the configuration.

use super::{load_config, Cli};

pub(super) fn command(cli: &Cli) -> anyhow::Result<i32> {
    let config = load_config(&cli.config, &cli.data_dir)?;
    let streams: usize = config
        .accounts
        .iter()
        .map(|account| account.streams.len())
        .sum();
    println!(
        "{}: ok ({} accounts, {} streams, data in {})",
        config.source_name,
        config.accounts.len(),
        streams,
        config.data_dir.display()
    );
    Ok(0)
}
