//! `marketsync doctor [ACCOUNT [STREAM]] [--json]`: why an account is not syncing.

use super::{load_config, Cli};

pub(super) fn command(
    cli: &Cli,
    account: &Option<String>,
    stream: &Option<String>,
    json: bool,
) -> anyhow::Result<i32> {
    let config = load_config(&cli.config, &cli.data_dir)?;
    crate::diagnose::run(
        &config.deployment(),
        account.as_deref(),
        stream.as_deref(),
        json,
        &crate::diagnose::DoctorOptions {
            command: Some(crate::diagnose::command_line(
                cli.config.as_deref(),
                cli.data_dir.as_deref(),
            )),
            admin_url: config
                .http
                .as_ref()
                .map(|http| format!("http://{}", http.listen)),
            admin_token_env: config
                .http
                .as_ref()
                .and_then(|http| http.admin_token_env.clone())
                .unwrap_or_else(|| "MARKETSYNC_ADMIN_TOKEN".to_string()),
        },
    )
}
