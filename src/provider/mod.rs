//! Provider clients: one module per marketplace API, all returning [`ProviderError`].
//!
//! The error enum is what callers branch on: [`ProviderError::QuotaExceeded`] means
//! "stop calling this provider for this account" (seed 001's hard stop), everything
//! else fails only the unit at hand.

pub mod amazon;
pub mod ebay;
pub mod keepa;
pub mod stockx;

use std::time::Duration;

/// Why a provider call failed. Callers branch on the variant.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// HTTP 429 from any call. Quota is not failure: the unit goes back to claimable
    /// when the cooldown ends, without consuming an attempt.
    #[error("quota exceeded on {operation}: {message}")]
    QuotaExceeded {
        operation: &'static str,
        /// From the `Retry-After` header, when the provider sent one.
        retry_after: Option<Duration>,
        /// From `x-amzn-RateLimit-Limit` (requests per second), when present.
        rate_limit: Option<f64>,
        message: String,
    },
    /// Credentials were refused (401/403 that a token refresh did not cure).
    #[error("authentication failed on {operation}: {message}")]
    Auth {
        operation: &'static str,
        message: String,
    },
    /// HTTP 404: the key (a SKU, a product) does not exist at the provider. Terminal for
    /// the unit at hand; retrying cannot help.
    #[error("{operation}: not found: {message}")]
    NotFound {
        operation: &'static str,
        message: String,
    },
    /// Any other non-success HTTP status.
    #[error("{operation} returned http {status}: {body}")]
    Http {
        operation: &'static str,
        status: u16,
        body: String,
    },
    /// Connection refused, timeout, reset: the request may not have reached the provider.
    #[error("{operation} failed to reach the provider: {message}")]
    Transport {
        operation: &'static str,
        message: String,
    },
    /// The provider answered 2xx with something we cannot use.
    #[error("{operation} returned an invalid response: {message}")]
    InvalidResponse {
        operation: &'static str,
        message: String,
    },
}

impl ProviderError {
    pub fn is_quota(&self) -> bool {
        matches!(self, ProviderError::QuotaExceeded { .. })
    }

    /// The provider refuses this account as a whole (quota or credentials): stop calling
    /// it for a cooldown instead of failing unit after unit.
    pub fn stops_account(&self) -> bool {
        matches!(
            self,
            ProviderError::QuotaExceeded { .. } | ProviderError::Auth { .. }
        )
    }

    /// Worth retrying soon without blaming the unit: 5xx and transport errors.
    pub fn is_transient(&self) -> bool {
        match self {
            ProviderError::Http { status, .. } => *status >= 500,
            ProviderError::Transport { .. } => true,
            _ => false,
        }
    }
}
