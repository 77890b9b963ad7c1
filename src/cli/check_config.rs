//! `marketsync check-config`: validates the configuration.

use super::{load_config, Cli};

pub(super) fn command(cli: &Cli) -> anyhow::Result<i32> {
    let config = load_config(&cli.config, &cli.data_dir)?;
    // What `run` refuses, check-config refuses too: an exposed admin API without a token.
    if let Some(refusal) = config.http.as_ref().and_then(|http| http.exposure_error()) {
        anyhow::bail!("{}: {refusal}", config.source_name);
    }
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
