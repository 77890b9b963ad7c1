//! `marketsync auth ebay ACCOUNT`: eBay's authorization-code grant, once per seller.
//!
//! 1. Prints the consent URL of the account's application: eBay's authorize endpoint
//!    (`auth.ebay.com`, or `auth.sandbox.ebay.com` for a sandbox account) with
//!    `client_id`, `redirect_uri` (the account's `ru_name`), `response_type=code` and
//!    the space-separated scopes of the operations its enabled streams call
//!    ([`crate::provider::ebay::STREAM_SCOPES`], [`crate::provider::ebay::OPERATION_SCOPES`]).
//!    It loads the configuration with [`crate::config::Purpose::EbayConsent`]: the
//!    account may lack `refresh_token_env`, since this is how it gets the token.
//! 2. Takes the URL eBay redirected the browser to (or the bare code), from `--code` or
//!    one line of stdin.
//! 3. Exchanges the code at the token endpoint (`grant_type=authorization_code`,
//!    `redirect_uri` = the RuName, HTTP Basic with the client id and secret).
//! 4. Prints the refresh token, its expiry and the variable to put it in. marketsync
//!    never writes the token anywhere: it goes to stdout only, and into no log.

use std::io::{BufRead, Read};
use std::time::Duration;

use anyhow::{bail, Context};

use super::{load_config_for, runtime, Cli};
use crate::config::{Endpoints, Provider, Purpose};
use crate::provider::ebay::{consent_scopes, exchange_code, needs_user_token};

/// The total deadline of the code exchange.
const EXCHANGE_DEADLINE: Duration = Duration::from_secs(60);
/// The longest line read from stdin (a redirect URL with its code is well under 4 KiB).
const MAX_INPUT: usize = 16 * 1024;
/// The longest code believed.
const MAX_CODE: usize = 4096;

pub(super) fn ebay(cli: &Cli, account_id: &str, code_opt: Option<&str>) -> anyhow::Result<i32> {
    // The account need not name refresh_token_env yet: this command is how it gets the
    // token (check-config and run still refuse it without one).
    let config = load_config_for(&cli.config, &cli.data_dir, Purpose::EbayConsent)?;
    let Some(account) = config.account(account_id) else {
        bail!(
            "{}: no account {account_id:?}; expected one of {}",
            config.source_name,
            config
                .accounts
                .iter()
                .map(|account| account.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    if account.provider != Provider::Ebay {
        bail!(
            "account {account_id} is a {} account; `auth ebay` is for ebay accounts",
            account.provider.as_str()
        );
    }
    let (api_base, token_url) = match &account.endpoints {
        Endpoints::Explicit {
            api_base,
            token_url,
        } => (api_base.as_str(), token_url.as_str()),
        Endpoints::EmbeddedSimulator => bail!(
            "account {account_id} uses the embedded simulator, which needs no consent (its refresh token is the seller's name); give the account an endpoint to authorize it elsewhere"
        ),
    };
    // Whether consent is needed at all comes before what consent needs.
    let streams = || account.streams.iter().map(|stream| stream.name.as_str());
    if !account.streams.is_empty() && !needs_user_token(streams()) {
        bail!(
            "account {account_id}: its streams ({}) call eBay with the application's own token (client-credentials grant), which needs no seller consent and no refresh_token_env",
            streams().collect::<Vec<_>>().join(", ")
        );
    }
    let Some(ru_name) = account.ru_name.as_deref() else {
        bail!(
            "{}: account {account_id} has no ru_name; add the application's RuName (eBay developer portal, User Tokens, \"RuName (eBay Redirect URL name)\") as ru_name = \"...\" to the account",
            config.source_name
        );
    };
    let Some(names) = &account.credentials else {
        bail!("account {account_id} has no [accounts.credentials]");
    };
    let client_id = crate::provider::read_env(account_id, names.client_id_env.as_deref())?;
    let client_secret = crate::provider::read_env(account_id, names.client_secret_env.as_deref())?;
    let scopes = consent_scopes(streams())
        .map_err(|message| anyhow::anyhow!("account {account_id}: {message}"))?;
    let authorize = authorize_endpoint(api_base);
    let consent_url = format!(
        "{authorize}?client_id={}&redirect_uri={}&response_type=code&scope={}",
        percent_encode(&client_id),
        percent_encode(ru_name),
        percent_encode(&scopes.join(" "))
    );
    eprintln!("Open this URL, sign in as the seller of account {account_id} and agree:");
    // The URL on a line of its own on stdout, so a script can pick it up.
    println!("{consent_url}");
    if !authorize.starts_with("https://auth.") {
        eprintln!(
            "(a simulator: append &seller=NAME to the URL; it answers the code as JSON instead of redirecting)"
        );
    }
    let input = match code_opt {
        Some(code) => code.to_string(),
        None => {
            eprintln!(
                "Then paste the URL the browser was sent to (or just its code) and press Enter:"
            );
            read_line_capped(&mut std::io::stdin().lock())?
        }
    };
    let code = code_from(&input)?;
    let http = reqwest::Client::builder()
        .timeout(EXCHANGE_DEADLINE)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("building the http client")?;
    let grant = runtime()?.block_on(exchange_code(
        &http,
        token_url,
        &client_id,
        &client_secret,
        &code,
        ru_name,
    ))?;
    let lifetime = chrono::Duration::from_std(grant.refresh_token_lifetime)
        .context("refresh token lifetime out of range")?;
    let expires = chrono::Utc::now()
        .checked_add_signed(lifetime)
        .context("refresh token expiry out of range")?
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (variable, named) = match names.refresh_token_env.as_deref() {
        Some(variable) => (variable.to_string(), true),
        None => (
            suggested_variable(account_id, names.client_id_env.as_deref()),
            false,
        ),
    };
    println!("refresh_token: {}", grant.refresh_token);
    println!(
        "refresh_token_expires: {expires} (in {} days)",
        grant.refresh_token_lifetime.as_secs() / 86_400
    );
    println!("variable: {variable}");
    if !named {
        eprintln!(
            "Account {account_id} names no variable for the token yet: add refresh_token_env = \"{variable}\" to its [accounts.credentials] (check-config and run refuse the account until then)."
        );
    }
    eprintln!(
        "Put the refresh token in the environment variable {variable} of the daemon (marketsync never stores it), add refresh_token_expires = \"{expires}\" to account {account_id} so status and doctor warn 14 days before it runs out, and restart the daemon."
    );
    Ok(0)
}

/// A name for the refresh token's variable when the account has none: the client id's
/// variable with `CLIENT_ID` replaced (`ACME_EBAY_CLIENT_ID` → `ACME_EBAY_REFRESH_TOKEN`),
/// else one made from the account id (`shop-1` → `SHOP_1_EBAY_REFRESH_TOKEN`).
fn suggested_variable(account_id: &str, client_id_env: Option<&str>) -> String {
    if let Some(prefix) = client_id_env.and_then(|name| name.strip_suffix("CLIENT_ID")) {
        return format!("{prefix}REFRESH_TOKEN");
    }
    let stem: String = account_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{stem}_EBAY_REFRESH_TOKEN")
}

/// eBay's authorize endpoint for an API base: production and sandbox by host, anything
/// else (a simulator) on the base itself.
fn authorize_endpoint(api_base: &str) -> String {
    let base = api_base.trim_end_matches('/');
    if base == "https://api.ebay.com" {
        "https://auth.ebay.com/oauth2/authorize".to_string()
    } else if base == "https://api.sandbox.ebay.com" {
        "https://auth.sandbox.ebay.com/oauth2/authorize".to_string()
    } else {
        format!("{base}/oauth2/authorize")
    }
}

/// One line of `reader`, at most [`MAX_INPUT`] bytes.
fn read_line_capped(reader: &mut impl BufRead) -> anyhow::Result<String> {
    let mut line = Vec::new();
    let read = reader
        .by_ref()
        .take(MAX_INPUT as u64 + 1)
        .read_until(b'\n', &mut line)
        .context("reading the code from stdin")?;
    if read == 0 {
        bail!("no code given on stdin; paste the redirected URL or its code, or pass --code");
    }
    if line.len() > MAX_INPUT {
        bail!(
            "the pasted line is over {MAX_INPUT} bytes; paste only the redirected URL or its code"
        );
    }
    String::from_utf8(line).context("the pasted line is not UTF-8")
}

/// The authorization code in a pasted redirect URL (`...?code=...&expires_in=299`) or
/// a bare code, percent-decoded.
fn code_from(input: &str) -> anyhow::Result<String> {
    let input = input.trim();
    let raw = match input.split_once('?') {
        Some((_, query)) => query
            .split('&')
            .find_map(|pair| pair.strip_prefix("code="))
            .context("the pasted URL has no code= parameter; did the seller decline consent?")?,
        None => input,
    };
    let code = percent_decode(raw).context("the code is not valid percent-encoding")?;
    if code.is_empty() || code.len() > MAX_CODE || code.chars().any(char::is_whitespace) {
        bail!("that does not look like an eBay authorization code; paste the whole redirected URL");
    }
    Ok(code)
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Decodes `%XX` (and `+` as a space, as form encoding has it); `None` on a bad escape.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        match byte {
            b'%' => {
                let hex = bytes.get(index + 1..index + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                index += 3;
            }
            b'+' => {
                out.push(b' ');
                index += 1;
            }
            _ => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_comes_from_a_redirect_url_or_bare() {
        let url =
            "https://example.com/accepted?state=x&code=v%5E1.1%23i%5E1%23c%5E1&expires_in=299";
        assert_eq!(code_from(url).unwrap(), "v^1.1#i^1#c^1");
        assert_eq!(code_from(" v^1.1#i^1#c^1\n").unwrap(), "v^1.1#i^1#c^1");
        assert!(code_from("https://example.com/declined?state=x").is_err());
        assert!(code_from("%zz").is_err());
    }

    #[test]
    fn consent_goes_to_ebays_auth_host() {
        assert_eq!(
            authorize_endpoint("https://api.ebay.com"),
            "https://auth.ebay.com/oauth2/authorize"
        );
        assert_eq!(
            authorize_endpoint("https://api.sandbox.ebay.com/"),
            "https://auth.sandbox.ebay.com/oauth2/authorize"
        );
        assert_eq!(
            authorize_endpoint("http://127.0.0.1:4000"),
            "http://127.0.0.1:4000/oauth2/authorize"
        );
        assert_eq!(percent_encode("a b:/"), "a%20b%3A%2F");
    }

    #[test]
    fn a_missing_token_variable_gets_a_name_to_use() {
        assert_eq!(
            suggested_variable("shop", Some("ACME_EBAY_CLIENT_ID")),
            "ACME_EBAY_REFRESH_TOKEN"
        );
        assert_eq!(
            suggested_variable("shop-1.eu", Some("ACME_ID")),
            "SHOP_1_EU_EBAY_REFRESH_TOKEN"
        );
        assert_eq!(suggested_variable("shop", None), "SHOP_EBAY_REFRESH_TOKEN");
    }
}
