//! eBay Trading API (XML over HTTP POST) for the one call marketsync makes through it:
//! `GetOrders` with `OrderRole=Buyer`, the seller's own purchase history (stream
//! `purchases`). Wire format and why Trading: `docs/ebay-wire.md`, "Purchases".
//!
//! A call is `POST {api_base}/ws/api.dll` with the headers `X-EBAY-API-CALL-NAME`,
//! `X-EBAY-API-SITEID` (from the account's marketplace), `X-EBAY-API-COMPATIBILITY-LEVEL`
//! and the OAuth user access token in `X-EBAY-API-IAF-TOKEN`; the body is the call's
//! `...Request` document. Trading answers a refused call with HTTP 200 and `<Ack>Failure</Ack>`
//! plus `<Errors>`: an invalid token (931, 932, 21916984) drops the cached token and
//! retries once, then is [`ProviderError::Auth`]; 518 (call usage limit) is
//! [`ProviderError::QuotaExceeded`]; any other failure is an invalid response naming the
//! error code. The body is read capped like every other page.
//!
//! [`XmlFields`] is the bounded pull reader both this module and the purchases adapter
//! use: at most [`MAX_DEPTH`] levels, [`MAX_FIELD_BYTES`] of text per element, no
//! DOCTYPE, only the predefined entities and character references.

use std::sync::Mutex;

use quick_xml::events::Event;

use super::ebay::EbayClient;
use super::{clip, read_capped, ProviderError};

/// The Trading API's path on the API host.
pub const TRADING_PATH: &str = "/ws/api.dll";
/// `X-EBAY-API-COMPATIBILITY-LEVEL`: the Trading schema version the requests follow.
pub const COMPATIBILITY_LEVEL: &str = "1423";
/// Deepest element nesting accepted in a Trading answer.
pub const MAX_DEPTH: usize = 32;
/// Longest text of one element accepted in a Trading answer.
pub const MAX_FIELD_BYTES: usize = 1024;
/// What a page over the byte limit tells the operator to change.
const TOO_BIG_ADVICE: &str =
    "; nothing from it was applied (raise max_response_bytes or lower page_limit)";

/// Trading error codes that mean the token is not accepted: 931 "Auth token is invalid",
/// 932 "Auth token is hard expired", 21916984 "Invalid IAF token".
pub const TOKEN_ERROR_CODES: &[u64] = &[931, 932, 21_916_984];
/// Trading error code 518: the call usage limit was reached.
pub const USAGE_LIMIT_ERROR_CODE: u64 = 518;

/// `X-EBAY-API-SITEID` of a marketplace (eBay's SiteCodeType numbers); the US site (0)
/// for one not listed.
pub fn site_id(marketplace: &str) -> &'static str {
    match marketplace {
        "EBAY_CA" => "2",
        "EBAY_GB" => "3",
        "EBAY_AU" => "15",
        "EBAY_AT" => "16",
        "EBAY_FR" => "71",
        "EBAY_DE" => "77",
        "EBAY_IT" => "101",
        "EBAY_NL" => "146",
        "EBAY_ES" => "186",
        "EBAY_IE" => "205",
        "EBAY_PL" => "212",
        _ => "0",
    }
}

/// One `<Errors>` entry of a Trading answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TradingError {
    pub code: Option<u64>,
    pub short_message: String,
    pub long_message: String,
    pub severity: String,
}

/// The envelope of a Trading answer: its `Ack` and the errors it lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TradingAck {
    pub ack: String,
    pub errors: Vec<TradingError>,
}

impl TradingAck {
    /// `Failure` or `PartialFailure`: the call did not do what was asked.
    pub fn failed(&self) -> bool {
        matches!(self.ack.as_str(), "Failure" | "PartialFailure")
    }

    fn has_code(&self, codes: &[u64]) -> bool {
        self.errors
            .iter()
            .any(|error| error.code.is_some_and(|code| codes.contains(&code)))
    }

    /// The first error as `ErrorCode N: message`, for logs and errors.
    pub fn describe(&self) -> String {
        match self.errors.first() {
            Some(error) => {
                let message = if error.long_message.is_empty() {
                    &error.short_message
                } else {
                    &error.long_message
                };
                let code = error
                    .code
                    .map_or_else(|| "?".to_string(), |code| code.to_string());
                clip(&format!("ErrorCode {code}: {}", message.trim()))
            }
            None => "no <Errors> given".to_string(),
        }
    }
}

/// A bounded pull reader over a Trading XML document: yields each element's text with the
/// path of local names leading to it.
pub struct XmlFields<'a> {
    reader: quick_xml::Reader<&'a [u8]>,
    path: Vec<String>,
    text: String,
    /// Attributes of the innermost open element (name, value).
    attributes: Vec<(String, String)>,
    /// The last step closed an element: pop it before reading on.
    pop_pending: bool,
}

/// One step of [`XmlFields`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmlStep {
    /// An element opened; `path` ends with it.
    Open,
    /// An element closed with `text` (trimmed) and its attributes; `path` still ends with it.
    Close {
        text: String,
        attributes: Vec<(String, String)>,
    },
    End,
}

impl<'a> XmlFields<'a> {
    pub fn new(body: &'a [u8]) -> XmlFields<'a> {
        let mut reader = quick_xml::Reader::from_reader(body);
        let config = reader.config_mut();
        config.trim_text(false);
        config.check_end_names = true;
        config.expand_empty_elements = true;
        XmlFields {
            reader,
            path: Vec::new(),
            text: String::new(),
            attributes: Vec::new(),
            pop_pending: false,
        }
    }

    /// The local names from the root to the element at hand.
    pub fn path(&self) -> &[String] {
        &self.path
    }

    /// Whether the path ends with `suffix`.
    pub fn at(&self, suffix: &[&str]) -> bool {
        self.path.len() >= suffix.len()
            && self.path[self.path.len() - suffix.len()..]
                .iter()
                .zip(suffix)
                .all(|(have, want)| have == want)
    }

    fn push_text(&mut self, text: &str) -> Result<(), String> {
        if self.text.len().saturating_add(text.len()) > MAX_FIELD_BYTES {
            return Err(format!(
                "element {} holds more than {MAX_FIELD_BYTES} bytes of text",
                self.path.join("/")
            ));
        }
        self.text.push_str(text);
        Ok(())
    }

    /// The next step. After [`XmlStep::Close`] the caller reads `path()`; the element is
    /// popped on the following call.
    pub fn next_step(&mut self) -> Result<XmlStep, String> {
        if self.pop_pending {
            self.path.pop();
            self.pop_pending = false;
        }
        loop {
            let event = self
                .reader
                .read_event()
                .map_err(|err| format!("not well-formed xml: {err}"))?;
            match event {
                Event::Start(start) => {
                    if self.path.len() >= MAX_DEPTH {
                        return Err(format!("elements nested deeper than {MAX_DEPTH}"));
                    }
                    let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                    let mut attributes = Vec::new();
                    for attribute in start.attributes() {
                        let attribute = attribute.map_err(|err| format!("bad attribute: {err}"))?;
                        let key = String::from_utf8_lossy(attribute.key.local_name().as_ref())
                            .into_owned();
                        let value = attribute
                            .unescape_value()
                            .map_err(|err| format!("bad attribute value: {err}"))?;
                        if value.len() > MAX_FIELD_BYTES {
                            return Err(format!("attribute {key} longer than {MAX_FIELD_BYTES}"));
                        }
                        attributes.push((key, value.into_owned()));
                    }
                    self.path.push(name);
                    self.text.clear();
                    self.attributes = attributes;
                    return Ok(XmlStep::Open);
                }
                Event::End(_) => {
                    self.pop_pending = true;
                    return Ok(XmlStep::Close {
                        text: std::mem::take(&mut self.text).trim().to_string(),
                        attributes: std::mem::take(&mut self.attributes),
                    });
                }
                Event::Text(text) => {
                    let decoded = text
                        .decode()
                        .map_err(|err| format!("bad text encoding: {err}"))?;
                    self.push_text(&decoded)?;
                }
                Event::CData(data) => {
                    let bytes = data.into_inner();
                    let decoded =
                        std::str::from_utf8(&bytes).map_err(|err| format!("bad cdata: {err}"))?;
                    let decoded = decoded.to_string();
                    self.push_text(&decoded)?;
                }
                Event::GeneralRef(reference) => {
                    let resolved = match reference
                        .resolve_char_ref()
                        .map_err(|err| format!("bad character reference: {err}"))?
                    {
                        Some(ch) => ch.to_string(),
                        None => {
                            let name = reference
                                .decode()
                                .map_err(|err| format!("bad entity: {err}"))?;
                            quick_xml::escape::resolve_predefined_entity(&name)
                                .ok_or_else(|| format!("unknown entity &{name};"))?
                                .to_string()
                        }
                    };
                    self.push_text(&resolved)?;
                }
                Event::DocType(_) => return Err("a DOCTYPE (eBay sends none)".to_string()),
                Event::Eof => {
                    if !self.path.is_empty() {
                        return Err(format!("document ends inside {}", self.path.join("/")));
                    }
                    return Ok(XmlStep::End);
                }
                _ => {}
            }
        }
    }
}

/// The `Ack` and `Errors` of a Trading answer (children of its root element).
pub fn read_ack(body: &[u8]) -> Result<TradingAck, String> {
    let mut fields = XmlFields::new(body);
    let mut ack = TradingAck::default();
    loop {
        match fields.next_step()? {
            XmlStep::End => return Ok(ack),
            XmlStep::Open => {
                if fields.path().len() == 2 && fields.at(&["Errors"]) {
                    if ack.errors.len() >= 100 {
                        return Err("more than 100 <Errors> entries".to_string());
                    }
                    ack.errors.push(TradingError::default());
                }
            }
            XmlStep::Close { text, .. } => {
                let depth = fields.path().len();
                if depth == 2 && fields.at(&["Ack"]) {
                    ack.ack = text;
                } else if depth == 3 {
                    if let Some(error) = ack
                        .errors
                        .last_mut()
                        .filter(|_| fields.path()[1] == "Errors")
                    {
                        match fields.path()[2].as_str() {
                            "ErrorCode" => error.code = text.parse().ok(),
                            "ShortMessage" => error.short_message = text,
                            "LongMessage" => error.long_message = text,
                            "SeverityCode" => error.severity = text,
                            _ => {}
                        }
                    }
                }
            }
        }
    }
}

/// POSTs the Trading call `call_name` with `body` and returns the answer of a call that
/// did not fail (`Ack` Success or Warning), read capped at `max_bytes`.
pub async fn trading_call(
    client: &EbayClient,
    operation: &'static str,
    call_name: &'static str,
    body: &str,
    max_bytes: u64,
) -> Result<Vec<u8>, ProviderError> {
    let site = site_id(client.marketplace());
    let mut refreshed = false;
    loop {
        let used = Mutex::new(String::new());
        let response = client
            .send_authorized(operation, |http, base, token| {
                if let Ok(mut slot) = used.lock() {
                    token.clone_into(&mut slot);
                }
                http.post(format!("{base}{TRADING_PATH}"))
                    .header("X-EBAY-API-CALL-NAME", call_name)
                    .header("X-EBAY-API-SITEID", site)
                    .header("X-EBAY-API-COMPATIBILITY-LEVEL", COMPATIBILITY_LEVEL)
                    .header("X-EBAY-API-IAF-TOKEN", token)
                    .header(reqwest::header::CONTENT_TYPE, "text/xml")
                    .body(body.to_string())
            })
            .await?;
        let bytes = read_capped(response, operation, max_bytes, TOO_BIG_ADVICE).await?;
        let ack = read_ack(&bytes).map_err(|message| ProviderError::InvalidResponse {
            operation,
            message: format!("{call_name} answer is not the expected xml: {message}"),
        })?;
        if !ack.failed() {
            return Ok(bytes);
        }
        if ack.has_code(TOKEN_ERROR_CODES) {
            if !refreshed {
                let token = used
                    .into_inner()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                client.forget_token(&token).await;
                refreshed = true;
                continue;
            }
            return Err(ProviderError::Auth {
                operation,
                message: format!(
                    "eBay's Trading API refused the access token ({}): it takes a user token of the seller; run `{}` and put the refresh token in the account's refresh_token_env",
                    ack.describe(),
                    super::ebay::AUTH_EBAY_ACCOUNT
                ),
            });
        }
        if ack.has_code(&[USAGE_LIMIT_ERROR_CODE]) {
            return Err(ProviderError::QuotaExceeded {
                operation,
                retry_after: None,
                rate_limit: None,
                message: ack.describe(),
            });
        }
        return Err(ProviderError::InvalidResponse {
            operation,
            message: format!("{call_name} answered Ack {}: {}", ack.ack, ack.describe()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_and_errors_come_from_the_root_children_only() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<GetOrdersResponse xmlns="urn:ebay:apis:eBLBaseComponents"><Timestamp>2026-01-01T00:00:00.000Z</Timestamp><Ack>Failure</Ack><Errors><ShortMessage>Invalid IAF token.</ShortMessage><LongMessage>IAF token supplied is invalid.</LongMessage><ErrorCode>21916984</ErrorCode><SeverityCode>Error</SeverityCode><ErrorClassification>RequestError</ErrorClassification></Errors><Version>1423</Version></GetOrdersResponse>"#;
        let ack = read_ack(body).expect("parse");
        assert!(ack.failed());
        assert!(ack.has_code(TOKEN_ERROR_CODES));
        assert_eq!(
            ack.describe(),
            "ErrorCode 21916984: IAF token supplied is invalid."
        );
        let ok = read_ack(b"<R><Ack>Warning</Ack><X><Ack>Failure</Ack></X></R>").expect("parse");
        assert!(!ok.failed());
    }

    #[test]
    fn hostile_documents_are_refused() {
        assert!(read_ack(b"<!DOCTYPE x [<!ENTITY a 'b'>]><R><Ack>&a;</Ack></R>").is_err());
        assert!(read_ack(b"<R><Ack>&zz;</Ack></R>").is_err());
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert!(read_ack(deep.as_bytes()).is_err());
        let long = format!("<R><Ack>{}</Ack></R>", "x".repeat(MAX_FIELD_BYTES + 1));
        assert!(read_ack(long.as_bytes()).is_err());
        assert!(read_ack(b"<R><Ack>Success</Ack>").is_err());
        assert_eq!(site_id("EBAY_DE"), "77");
        assert_eq!(site_id("EBAY_XX"), "0");
    }
}
