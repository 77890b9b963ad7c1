//! `marketsync accounts resume ID`: lifts a quarantine.

use anyhow::bail;

use super::{load_config, open_ledger, AccountsAction, Cli};

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
    let ledger = open_ledger(&config)?;
    let requested = ledger.with_conn(|conn| crate::store::supervision::request_resume(conn, id))?;
    if requested {
        println!("{id}: resume requested; the daemon restarts it within one supervisor heartbeat");
        Ok(0)
    } else {
        println!("{id}: not quarantined; nothing to resume");
        Ok(0)
    }
}
