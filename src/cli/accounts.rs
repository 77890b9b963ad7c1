//! `marketsync accounts resume ID`: lifts a quarantine.

use anyhow::bail;

use super::{load_config, open_stores, AccountsAction, Cli};

pub(super) fn command(cli: &Cli, action: &AccountsAction) -> anyhow::Result<i32> {
    let AccountsAction::Resume { id } = action;
    let config = load_config(&cli.config, &cli.data_dir)?;
    if config.account(id).is_none() {
        let known: Vec<&str> = config.accounts.iter().map(|a| a.id.as_str()).collect();
        bail!(
            "unknown account {id:?}; configured accounts: {}",
            known.join(", ")
        );
    }
    // The supervision rows live with the hour ledger (PostgreSQL under `[store]`).
    let (_ledger, hours) = open_stores(&config)?;
    let requested = hours.request_resume(id)?;
    if requested {
        println!("{id}: resume requested; the daemon restarts it within one supervisor heartbeat");
        Ok(0)
    } else {
        println!("{id}: not quarantined; nothing to resume");
        Ok(0)
    }
}
