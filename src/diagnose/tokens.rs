//! eBay token warnings shared by status and doctor: a refresh token near its known
//! expiry (the account's `refresh_token_expires`, as `marketsync auth ebay` printed it),
//! and the fix for eBay's access-denied answer (errorId 1100: an application token, or a
//! user token without the scope a stream needs).

use crate::domain::{format_ts, Provider};
use crate::shapes::spec::AccountConfig;

/// How long before a refresh token's expiry status and doctor start warning.
pub const REFRESH_TOKEN_WARNING_SECS: i64 = 14 * 86_400;

/// The warning for `account`'s refresh token at `now`, when it expires within
/// [`REFRESH_TOKEN_WARNING_SECS`] (or has expired); `None` when its expiry is unknown
/// or further off.
pub fn refresh_token_warning(account: &AccountConfig, now: i64) -> Option<String> {
    let expiry = refresh_token_expiry(account, now)?;
    Some(format!("{expiry}; {}", reauthorize_hint(account)))
}

/// [`refresh_token_warning`] without the fix: "eBay refresh token expires at ... (in
/// ...)" or "... expired at ...", within [`REFRESH_TOKEN_WARNING_SECS`] of the expiry.
pub fn refresh_token_expiry(account: &AccountConfig, now: i64) -> Option<String> {
    if account.provider != Provider::Ebay {
        return None;
    }
    let expires = account.refresh_token_expires?;
    let left = expires.saturating_sub(now);
    if left > REFRESH_TOKEN_WARNING_SECS {
        return None;
    }
    let when = if left <= 0 {
        format!("expired at {}", format_ts(expires))
    } else {
        let days = left / 86_400;
        let hours = (left % 86_400) / 3_600;
        format!("expires at {} (in {days}d {hours}h)", format_ts(expires))
    };
    Some(format!("eBay refresh token {when}"))
}

/// How to get a new refresh token for `account`.
pub fn reauthorize_hint(account: &AccountConfig) -> String {
    let variable = account
        .credentials
        .as_ref()
        .and_then(|names| names.refresh_token_env.as_deref())
        .unwrap_or("the account's refresh_token_env variable");
    format!(
        "run `marketsync auth ebay {}`, put the new token in {variable}, set refresh_token_expires to the expiry it prints, and restart the daemon",
        account.id
    )
}

/// Whether an error text is eBay's access denied (errorId 1100), as the eBay client words it.
pub fn is_access_denied(text: &str) -> bool {
    text.contains("errorId 1100")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(expires: Option<i64>) -> AccountConfig {
        let text =
            "[simulator]\nenabled = true\n[[accounts]]\nid = \"shop\"\nprovider = \"ebay\"\n";
        let mut account = crate::config::Config::parse(text, "t.toml")
            .expect("valid")
            .accounts
            .remove(0);
        account.refresh_token_expires = expires;
        account
    }

    #[test]
    fn warns_from_fourteen_days_before_expiry() {
        let now = 1_800_000_000;
        assert_eq!(refresh_token_warning(&account(None), now), None);
        assert_eq!(
            refresh_token_warning(&account(Some(now + REFRESH_TOKEN_WARNING_SECS + 1)), now),
            None
        );
        let soon = refresh_token_warning(&account(Some(now + 3 * 86_400)), now).expect("warns");
        assert!(soon.contains("(in 3d 0h)"), "{soon}");
        assert!(soon.contains("marketsync auth ebay shop"), "{soon}");
        let gone = refresh_token_warning(&account(Some(now - 1)), now).expect("warns");
        assert!(gone.contains("expired at"), "{gone}");
    }
}
