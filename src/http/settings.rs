//! `[http]`: where the operator surface listens, who may use its admin actions, which
//! `Host` names it answers to and how long it waits for a slow client.

use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    /// The NAME of the environment variable holding the admin bearer token.
    pub admin_token_env: Option<String>,
    /// Extra `Host` header values answered besides the listen address and the loopback
    /// names (lowercase; `name` matches any port, `name:port` that port only).
    pub allowed_hosts: Vec<String>,
    /// Lets a non-loopback `listen` start without an admin token (an open admin API).
    pub allow_unauthenticated: bool,
    /// A client that has not sent a complete request head by then is disconnected.
    pub header_read_timeout: Duration,
    /// A request body not complete by then is answered 408 and the connection closed.
    pub body_read_timeout: Duration,
    /// How often the `history` service samples quota buckets, cursor lag and queue
    /// depth for the dashboard's pictures.
    pub history_interval: Duration,
}

impl HttpSettings {
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DEFAULT_HISTORY_INTERVAL: Duration = Duration::from_secs(15);

    /// Settings for `listen` with every other key at its default.
    pub fn new(listen: SocketAddr) -> HttpSettings {
        HttpSettings {
            listen,
            admin_token_env: None,
            allowed_hosts: Vec::new(),
            allow_unauthenticated: false,
            header_read_timeout: Self::DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: Self::DEFAULT_BODY_READ_TIMEOUT,
            history_interval: Self::DEFAULT_HISTORY_INTERVAL,
        }
    }

    /// The admin token from the environment; `None` when unset or empty. Never logged.
    pub fn admin_token(&self) -> Option<String> {
        let name = self.admin_token_env.as_ref()?;
        std::env::var(name).ok().filter(|token| !token.is_empty())
    }

    /// Why this surface must not start as configured: a listen address other hosts can
    /// reach with no admin token in the environment, unless `allow_unauthenticated`.
    /// `check-config` and `run` both refuse it.
    pub fn exposure_error(&self) -> Option<String> {
        if self.listen.ip().is_loopback() || self.allow_unauthenticated {
            return None;
        }
        if self.admin_token().is_some() {
            return None;
        }
        Some(match &self.admin_token_env {
            Some(name) => format!(
                "http.listen: {} is reachable from other hosts but the admin token variable {name} is unset or empty; export {name} (a long random secret) before starting, listen on 127.0.0.1, or set [http] allow_unauthenticated = true",
                self.listen
            ),
            None => format!(
                "http.listen: {} is reachable from other hosts but no admin token is configured; set [http] admin_token_env and export that variable, listen on 127.0.0.1, or set [http] allow_unauthenticated = true",
                self.listen
            ),
        })
    }
}

/// An `allowed_hosts` entry as the Host check compares it: lowercase `name` or
/// `name:port` (IPv6 in brackets). `None` when it cannot be a Host header value.
pub fn normalize_allowed_host(entry: &str) -> Option<String> {
    let entry = entry.trim().to_ascii_lowercase();
    let (name, port) = split_host(&entry)?;
    if let Some(port) = port {
        port.parse::<u16>().ok()?;
    }
    valid_host_name(name).then_some(entry)
}

/// Splits a Host value into its name (IPv6 keeps its brackets) and optional port text.
pub(crate) fn split_host(value: &str) -> Option<(&str, Option<&str>)> {
    if value.is_empty() || value.len() > 260 {
        return None;
    }
    if value.starts_with('[') {
        let close = value.find(']')?;
        let (name, rest) = value.split_at(close + 1);
        return match rest.strip_prefix(':') {
            Some(port) => Some((name, Some(port))),
            None if rest.is_empty() => Some((name, None)),
            None => None,
        };
    }
    match value.rsplit_once(':') {
        Some((name, port)) => Some((name, Some(port))),
        None => Some((value, None)),
    }
}

fn valid_host_name(name: &str) -> bool {
    if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
}
