//! `marketsync status [--json]`: where every account and stream stands.

use super::locks::list_locks;
use super::{load_config, open_stores, runtime, Cli};
use crate::domain::now_ts;

pub(super) fn command(cli: &Cli, json: bool) -> anyhow::Result<i32> {
    let config = load_config(&cli.config, &cli.data_dir)?;
    let (_, hours) = open_stores(&config)?;
    let locks = runtime()?.block_on(list_locks(&config));
    let lock_list = match &locks {
        Ok(list) => list.as_slice(),
        Err(err) => {
            eprintln!("marketsync: cannot read leases: {err:#}; lock fields are empty");
            &[]
        }
    };
    let supervision = hours.supervision_statuses()?;
    let deployment = config.deployment();
    let mut report = crate::diagnose::status::collect(
        &deployment,
        hours.as_ref(),
        lock_list,
        &supervision,
        now_ts(),
    )?;
    if deployment.cluster.is_some() {
        let (view, error) = runtime()?.block_on(crate::diagnose::probe::read_cluster(&deployment));
        if let Some(error) = error {
            eprintln!(
                "marketsync: cannot read the cluster members: {error}; owners show as unowned"
            );
        }
        report.assign_owners(true, view.as_ref());
    }
    let text = if json {
        let mut text = serde_json::to_string_pretty(&report)?;
        text.push('\n');
        text
    } else {
        crate::diagnose::status::render_table(&report)
    };
    super::write_stdout(text.as_bytes())?;
    Ok(0)
}
