//! What an account and its streams are, as validated from the configuration: the
//! settings common to every stream, and one settings type per sync shape
//! ([`ShapeSettings`]), so that a key of another shape cannot be represented.

use std::time::Duration;

use crate::domain::Provider;

pub use super::cursor::CursorSettings;
pub use super::jobs::JobsSettings;
pub use super::windowed::WindowedSettings;

#[derive(Debug, Clone)]
pub struct AccountConfig {
    pub id: String,
    pub provider: Provider,
    pub marketplace: String,
    pub endpoints: Endpoints,
    /// `None` only for accounts served by the embedded simulator.
    pub credentials: Option<CredentialEnv>,
    /// The selling partner the account's credentials belong to: accounts of one seller
    /// share its SP-API buckets and cooldowns. `None`: the account is its own seller.
    pub selling_partner_id: Option<String>,
    /// eBay: the application's RuName (eBay redirect URL name), the `redirect_uri` of
    /// the consent and code exchange that `marketsync auth ebay` makes.
    pub ru_name: Option<String>,
    /// eBay: when the refresh token expires (unix seconds), as `auth ebay` printed it;
    /// status and doctor warn 14 days before.
    pub refresh_token_expires: Option<i64>,
    pub streams: Vec<StreamConfig>,
}

impl AccountConfig {
    pub fn stream(&self, name: &str) -> Option<&StreamConfig> {
        self.streams.iter().find(|stream| stream.name == name)
    }

    /// The scope of the account's quota buckets: its selling partner, or its own id.
    pub fn quota_scope(&self) -> &str {
        self.selling_partner_id.as_deref().unwrap_or(&self.id)
    }
}

/// Where an account's API calls go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoints {
    /// The embedded simulator; its address is known only once it listens.
    EmbeddedSimulator,
    Explicit {
        api_base: String,
        token_url: String,
    },
}

/// Names of the environment variables holding an account's credentials. Which ones a
/// provider needs is checked once, at load: amazon the three OAuth names; ebay a client
/// id and secret, plus a refresh token for the user grant (without it the application's
/// client-credentials grant is used); stockx the three plus `api_key_env`; keepa only
/// `api_key_env`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CredentialEnv {
    pub client_id_env: Option<String>,
    pub client_secret_env: Option<String>,
    pub refresh_token_env: Option<String>,
    pub api_key_env: Option<String>,
}

impl CredentialEnv {
    /// The configured variable names, in a fixed order (for hints; never values).
    pub fn names(&self) -> Vec<&str> {
        [
            &self.client_id_env,
            &self.client_secret_env,
            &self.refresh_token_env,
            &self.api_key_env,
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect()
    }
}

/// One stream of an account: what every shape shares, and its shape's own settings.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub name: String,
    /// Time between runs of the stream.
    pub interval: Duration,
    /// Windowed streams: an hour is seeded only once it is complete plus this lag;
    /// cursor streams: a window never ends later than now minus this lag.
    pub safety_lag: Duration,
    /// Cooldown after a 429 when the provider gave no longer `Retry-After`.
    pub quota_cooldown: Duration,
    /// Failure backoff: `min(retry_max, retry_base * 2^(attempts-1)) * (1 + jitter)`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// The settings of the stream's sync shape.
    pub shape: ShapeSettings,
}

/// The settings only one sync shape has.
#[derive(Debug, Clone)]
pub enum ShapeSettings {
    Windowed(WindowedSettings),
    Cursor(CursorSettings),
    Jobs(JobsSettings),
}

impl StreamConfig {
    /// The windowed settings. A stream of another shape reads the defaults: a shape's
    /// runner is only ever built for streams of its shape.
    pub fn windowed(&self) -> &WindowedSettings {
        match &self.shape {
            ShapeSettings::Windowed(settings) => settings,
            _ => &WindowedSettings::DEFAULT,
        }
    }

    /// The cursor settings (the defaults for a stream of another shape).
    pub fn cursor(&self) -> &CursorSettings {
        match &self.shape {
            ShapeSettings::Cursor(settings) => settings,
            _ => &CursorSettings::DEFAULT,
        }
    }

    /// The job-queue settings (the defaults for a stream of another shape).
    pub fn jobs(&self) -> &JobsSettings {
        match &self.shape {
            ShapeSettings::Jobs(settings) => settings,
            _ => &JobsSettings::DEFAULT,
        }
    }
}
