//! Credentials: read from the environment variables the configuration names, never from
//! the file, and never logged.

/// The value of a credential variable named in the configuration (validated present
/// for the provider at load). Errors name the variable, never a value.
pub fn read_env(account: &str, name: Option<&str>) -> anyhow::Result<String> {
    let Some(name) = name else {
        anyhow::bail!(
            "account {account}: a credential variable is not configured; see [accounts.credentials] in config/example.toml"
        );
    };
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Ok(value),
        _ => anyhow::bail!(
            "account {account}: environment variable {name} is not set; export it before starting the daemon"
        ),
    }
}
