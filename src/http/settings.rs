//! `[http]`: where the operator surface listens and who may use its admin actions.

use std::net::SocketAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    /// The NAME of the environment variable holding the admin bearer token.
    pub admin_token_env: Option<String>,
}

impl HttpSettings {
    /// The admin token from the environment; `None` when unset or empty. Never logged.
    pub fn admin_token(&self) -> Option<String> {
        let name = self.admin_token_env.as_ref()?;
        std::env::var(name).ok().filter(|token| !token.is_empty())
    }
}
