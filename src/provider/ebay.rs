//! eBay REST client: the OAuth token exchange (refresh-token grant for the seller APIs,
//! client-credentials for public ones, and the authorization-code exchange that
//! `marketsync auth ebay` makes once), the scopes each stream needs ([`STREAM_SCOPES`]),
//! and size-capped GETs of the paged APIs the cursor streams read (Fulfillment
//! getOrders, Finances getTransactions, Post-Order return search). Wire formats:
//! `docs/ebay-wire.md`.
//!
//! The access token is cached and refreshed 60 seconds before it expires; a 401 or 403
//! drops it, fetches a fresh one and retries the call once. Errors are
//! [`ProviderError`]s: 429 is [`ProviderError::QuotaExceeded`] (with `Retry-After` when
//! sent), 401/403 after the retry and refused grants are [`ProviderError::Auth`], other
//! statuses [`ProviderError::Http`]. A success body is streamed and refused once it grows
//! past the caller's byte limit, so a huge page fails its window instead of the process.
//!
//! Neither the credentials nor the access token ever appear in errors or logs.

use std::time::Duration;

use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION};
use reqwest::StatusCode;
use serde::Deserialize;
use tracing::debug;

use super::{
    clip, invalid, read_capped, read_error_body, transport_error, CachedToken, ProviderError,
    TokenCache, MAX_ERROR_BODY,
};

/// Operation name of the token call (for errors).
pub const OP_TOKEN: &str = "ebayToken";
/// Used when the token response has no `expires_in`.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(7200);
/// What a page over the byte limit tells the operator to change.
const TOO_BIG_ADVICE: &str =
    "; nothing from it was applied (raise max_response_bytes or lower page_limit)";
/// The base scope: the client-credentials grant's only one, and the first of every consent.
pub const PUBLIC_SCOPE: &str = "https://api.ebay.com/oauth/api_scope";
/// The longest `refresh_token_expires_in` believed (eBay: 47,304,000 s, about 18 months).
const MAX_REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(5 * 365 * 86_400);

/// Which token a stream's calls carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// A seller's user token (refresh-token grant): the seller consents to its scope.
    User,
    /// The application's own token (client-credentials grant, the base scope): no seller
    /// and no consent.
    Application,
}

/// What one eBay stream needs of its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamScope {
    /// The stream name (`[accounts.streams.NAME]`).
    pub stream: &'static str,
    /// The token its calls carry.
    pub grant: Grant,
    /// Every operation its calls are paced and reported under (each in
    /// [`OPERATION_SCOPES`]).
    pub operations: &'static [&'static str],
}

/// What one eBay operation needs of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperationScope {
    /// The operation name calls are paced and reported under (`ProviderError`s carry it).
    pub operation: &'static str,
    /// The scope `marketsync auth ebay` asks consent for.
    pub consent: &'static str,
    /// Any one of these lets the operation through (a read-write scope covers the
    /// read-only one).
    pub accepted: &'static [&'static str],
}

const FULFILLMENT: &str = "https://api.ebay.com/oauth/api_scope/sell.fulfillment";
const FULFILLMENT_READONLY: &str = "https://api.ebay.com/oauth/api_scope/sell.fulfillment.readonly";
const FINANCES: &str = "https://api.ebay.com/oauth/api_scope/sell.finances";
const INVENTORY: &str = "https://api.ebay.com/oauth/api_scope/sell.inventory";
const INVENTORY_READONLY: &str = "https://api.ebay.com/oauth/api_scope/sell.inventory.readonly";
const MESSAGE: &str = "https://api.ebay.com/oauth/api_scope/commerce.message";

/// Stream → the token it carries and every operation it calls (docs/ebay-wire.md,
/// "Scopes"). A stream missing here cannot be consented to: `auth ebay` names it.
pub const STREAM_SCOPES: &[StreamScope] = &[
    StreamScope {
        stream: "orders",
        grant: Grant::User,
        operations: &["getOrders"],
    },
    // The status re-read of recent transactions is getTransactions too.
    StreamScope {
        stream: "transactions",
        grant: Grant::User,
        operations: &["getTransactions"],
    },
    StreamScope {
        stream: "returns",
        grant: Grant::User,
        operations: &["searchReturns"],
    },
    StreamScope {
        stream: "active_inventory",
        grant: Grant::User,
        operations: &[
            super::ebay_feed::OP_CREATE_INVENTORY_TASK,
            super::ebay_feed::OP_GET_INVENTORY_TASK,
            super::ebay_feed::OP_GET_RESULT_FILE,
        ],
    },
    // A snapshot: the SKUs from getInventoryItems, then getOffers per SKU.
    StreamScope {
        stream: "offers",
        grant: Grant::User,
        operations: &["getInventoryItems", "getOffers"],
    },
    StreamScope {
        stream: "finances",
        grant: Grant::User,
        operations: &["getPayouts"],
    },
    StreamScope {
        stream: "messages",
        grant: Grant::User,
        operations: &["getConversations"],
    },
    StreamScope {
        stream: "cases",
        grant: Grant::User,
        operations: &["searchCases"],
    },
    StreamScope {
        stream: "inquiries",
        grant: Grant::User,
        operations: &["searchInquiries"],
    },
    StreamScope {
        stream: "purchases",
        grant: Grant::User,
        operations: &["tradingGetOrders"],
    },
    // Browse API item_summary/search (`provider::ebay_browse`): the application's own
    // token, whose only scope is the base one (client-credentials grant). A seller's
    // consent adds nothing for it.
    StreamScope {
        stream: "market_prices",
        grant: Grant::Application,
        operations: &[super::ebay_browse::OP_SEARCH],
    },
];

/// The operations `stream` calls ([`STREAM_SCOPES`]; none for a stream not there).
pub fn stream_operations(stream: &str) -> &'static [&'static str] {
    STREAM_SCOPES
        .iter()
        .find(|entry| entry.stream == stream)
        .map_or(&[], |entry| entry.operations)
}

/// Operation → OAuth scope, the one table: from the `security` of each operation in
/// eBay's OpenAPI definitions (the "OAuth scope" of its API reference). An
/// access-denied answer (403 errorId 1100) names the scope of the operation refused.
pub const OPERATION_SCOPES: &[OperationScope] = &[
    // sell_fulfillment_v1_oas3 getOrders: sell.fulfillment or sell.fulfillment.readonly.
    OperationScope {
        operation: "getOrders",
        consent: FULFILLMENT_READONLY,
        accepted: &[FULFILLMENT, FULFILLMENT_READONLY],
    },
    // sell_finances_v1_oas3 getTransactions, getPayouts: sell.finances.
    OperationScope {
        operation: "getTransactions",
        consent: FINANCES,
        accepted: &[FINANCES],
    },
    OperationScope {
        operation: "getPayouts",
        consent: FINANCES,
        accepted: &[FINANCES],
    },
    // The Sell Feed API's inventory tasks take the read-write scope only: the security
    // of createInventoryTask, getInventoryTask and getInventoryTasks in eBay's
    // sell_feed_v1_oas3 is `sell.inventory` (no `.readonly`), and getResultFile's scope
    // "depends on the feed type" (sell.inventory for the LMS inventory feeds).
    OperationScope {
        operation: super::ebay_feed::OP_CREATE_INVENTORY_TASK,
        consent: INVENTORY,
        accepted: &[INVENTORY],
    },
    OperationScope {
        operation: super::ebay_feed::OP_GET_INVENTORY_TASK,
        consent: INVENTORY,
        accepted: &[INVENTORY],
    },
    OperationScope {
        operation: super::ebay_feed::OP_GET_RESULT_FILE,
        consent: INVENTORY,
        accepted: &[INVENTORY],
    },
    // sell_inventory_v1_oas3 getInventoryItems, getOffers: sell.inventory.readonly or
    // sell.inventory.
    OperationScope {
        operation: "getInventoryItems",
        consent: INVENTORY_READONLY,
        accepted: &[INVENTORY, INVENTORY_READONLY],
    },
    OperationScope {
        operation: "getOffers",
        consent: INVENTORY_READONLY,
        accepted: &[INVENTORY, INVENTORY_READONLY],
    },
    OperationScope {
        operation: "getConversations",
        consent: MESSAGE,
        accepted: &[MESSAGE],
    },
    // Post-Order's reference names no OAuth scope (return, case and inquiry search): a
    // user token with the base scope.
    OperationScope {
        operation: "searchReturns",
        consent: PUBLIC_SCOPE,
        accepted: &[PUBLIC_SCOPE],
    },
    OperationScope {
        operation: "searchCases",
        consent: PUBLIC_SCOPE,
        accepted: &[PUBLIC_SCOPE],
    },
    OperationScope {
        operation: "searchInquiries",
        consent: PUBLIC_SCOPE,
        accepted: &[PUBLIC_SCOPE],
    },
    // Trading GetOrders (OrderRole=Buyer): Trading takes any user access token of the
    // seller; its reference names no OAuth scope, so the base scope.
    OperationScope {
        operation: "tradingGetOrders",
        consent: PUBLIC_SCOPE,
        accepted: &[PUBLIC_SCOPE],
    },
    // Browse item_summary/search: the base scope, on the application's token.
    OperationScope {
        operation: super::ebay_browse::OP_SEARCH,
        consent: PUBLIC_SCOPE,
        accepted: &[PUBLIC_SCOPE],
    },
];

/// The scopes a consent for `streams` asks for: the base scope, then the scope of each
/// operation of each user-token stream, once, unless one already asked for covers it (a
/// stream on the application's token, `market_prices`, adds none). Err names a stream
/// with no known scope.
pub fn consent_scopes<'a>(
    streams: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<&'static str>, String> {
    let mut scopes = vec![PUBLIC_SCOPE];
    for stream in streams {
        let Some(entry) = STREAM_SCOPES.iter().find(|entry| entry.stream == stream) else {
            return Err(format!(
                "no eBay OAuth scope is known for stream {stream:?}; add it to provider::ebay::STREAM_SCOPES"
            ));
        };
        if entry.grant != Grant::User {
            continue;
        }
        for operation in entry.operations {
            let Some(needs) = scope_of_operation(operation) else {
                return Err(format!(
                    "no eBay OAuth scope is known for operation {operation} of stream {stream:?}; add it to provider::ebay::OPERATION_SCOPES"
                ));
            };
            if !scopes.iter().any(|scope| needs.accepted.contains(scope)) {
                scopes.push(needs.consent);
            }
        }
    }
    Ok(scopes)
}

/// Whether any of `streams` calls eBay with a seller's token (an unknown stream counts,
/// so [`consent_scopes`] names it).
pub fn needs_user_token<'a>(streams: impl IntoIterator<Item = &'a str>) -> bool {
    streams.into_iter().any(|stream| {
        STREAM_SCOPES
            .iter()
            .find(|entry| entry.stream == stream)
            .is_none_or(|entry| entry.grant == Grant::User)
    })
}

/// The scope entry of an operation, for naming what an access-denied answer lacks.
pub fn scope_of_operation(operation: &str) -> Option<&'static OperationScope> {
    OPERATION_SCOPES
        .iter()
        .find(|entry| entry.operation == operation)
}

/// What an access-denied text says is missing, between [`LACKS`] and
/// [`OR_APPLICATION_TOKEN`]: clauses `the scope OPERATION needs (SCOPES)`, joined by
/// [`AND`].
/// How a provider error tells the fix of a seller's consent; the account is named where
/// the error meets its account ([`name_the_account`]).
pub const AUTH_EBAY_ACCOUNT: &str = "marketsync auth ebay ACCOUNT";

/// `message` with [`AUTH_EBAY_ACCOUNT`] naming `account`.
pub fn name_the_account(message: &str, account: &str) -> String {
    message.replace(
        AUTH_EBAY_ACCOUNT,
        &format!("marketsync auth ebay {account}"),
    )
}

const LACKS: &str = "the account's token lacks ";
const OR_APPLICATION_TOKEN: &str = ", or it is an application token";
const AND: &str = " and ";
/// The most missing-scope clauses one merged text keeps (there are fewer operations).
const MAX_MISSING_CLAUSES: usize = 16;
/// The longest clause believed from a stored text.
const MAX_CLAUSE: usize = 300;

/// The missing-scope clauses of an access-denied text (as [`error_for_status`] words
/// it) and where they sit in it; `None` for any other text.
fn missing_clauses(text: &str) -> Option<(usize, usize, Vec<&str>)> {
    let start = text.find(LACKS)? + LACKS.len();
    let end = start + text.get(start..)?.find(OR_APPLICATION_TOKEN)?;
    let clauses: Vec<&str> = text.get(start..end)?.split(AND).collect();
    clauses
        .iter()
        .all(|clause| clause.starts_with("the scope ") && clause.len() <= MAX_CLAUSE)
        .then_some((start, end, clauses))
}

/// `later`, an access-denied text, also naming what `earlier` said was missing: two
/// streams of an account refused for different scopes share one auth cooldown, and its
/// text should name both. `None` when either text is not an access-denied one (the
/// caller keeps `later`). At most [`MAX_MISSING_CLAUSES`] clauses, each once.
pub fn merge_access_denied(earlier: &str, later: &str) -> Option<String> {
    let (_, _, old) = missing_clauses(earlier)?;
    let (start, end, new) = missing_clauses(later)?;
    let mut clauses: Vec<&str> = Vec::with_capacity(old.len() + new.len());
    for clause in new.into_iter().chain(old) {
        if !clauses.contains(&clause) && clauses.len() < MAX_MISSING_CLAUSES {
            clauses.push(clause);
        }
    }
    Some(format!(
        "{}{}{}",
        &later[..start],
        clauses.join(AND),
        &later[end..]
    ))
}

/// OAuth credentials of an eBay application (and seller, with a refresh token).
/// `Debug` redacts every field.
#[derive(Clone)]
pub struct EbayCredentials {
    pub client_id: String,
    pub client_secret: String,
    /// The user's refresh token: refresh-token grant (what every seller API needs).
    /// `None`: the application's client-credentials grant, which eBay's seller APIs
    /// refuse (403, errorId 1100); kept for public APIs only.
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for EbayCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbayCredentials")
            .field("client_id", &"<redacted>")
            .field("client_secret", &"<redacted>")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Where eBay's APIs and token endpoint live.
#[derive(Debug, Clone)]
pub struct EbayEndpoints {
    /// Fulfillment and Post-Order, e.g. `https://api.ebay.com` or the simulator.
    pub api_base: String,
    /// Finances: `https://apiz.ebay.com` in production, else `api_base`.
    pub finances_base: String,
    /// e.g. `https://api.ebay.com/identity/v1/oauth2/token`.
    pub token_url: String,
}

impl EbayEndpoints {
    /// Endpoints from the configured api base and token url; the Finances API moves to
    /// `apiz.` when the base is eBay's production or sandbox host.
    pub fn new(api_base: &str, token_url: &str) -> EbayEndpoints {
        let api_base = api_base.trim_end_matches('/').to_string();
        let finances_base = if api_base.ends_with("://api.ebay.com") {
            api_base.replace("://api.ebay.com", "://apiz.ebay.com")
        } else if api_base.ends_with("://api.sandbox.ebay.com") {
            api_base.replace("://api.sandbox.ebay.com", "://apiz.sandbox.ebay.com")
        } else {
            api_base.clone()
        };
        EbayEndpoints {
            api_base,
            finances_base,
            token_url: token_url.to_string(),
        }
    }
}

/// Which eBay API a call goes to: picks the host and the authorization scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EbayApi {
    Fulfillment,
    Finances,
    /// Post-Order v2 takes the OAuth token as `Authorization: IAF <token>`.
    PostOrder,
    /// Sell Inventory (getInventoryItems, getOffers), on the API host.
    Inventory,
    /// Commerce Message (getConversations), on the API host.
    Message,
    /// The Trading API (XML, `POST /ws/api.dll`, the token in `X-EBAY-API-IAF-TOKEN`):
    /// GetOrders as buyer, through [`super::ebay_trading`].
    Trading,
}

/// An eBay client for one account. Share it via `Arc`; it is `Send + Sync`.
pub struct EbayClient {
    http: reqwest::Client,
    endpoints: EbayEndpoints,
    credentials: EbayCredentials,
    /// Sent as `X-EBAY-C-MARKETPLACE-ID`, e.g. `EBAY_US`.
    marketplace: String,
    /// Held across the token request so concurrent callers refresh only once.
    token: TokenCache,
}

impl std::fmt::Debug for EbayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbayClient")
            .field("endpoints", &self.endpoints)
            .field("credentials", &self.credentials)
            .field("marketplace", &self.marketplace)
            .finish_non_exhaustive()
    }
}

impl EbayClient {
    pub fn new(
        http: reqwest::Client,
        endpoints: EbayEndpoints,
        credentials: EbayCredentials,
        marketplace: &str,
    ) -> EbayClient {
        EbayClient {
            http,
            endpoints,
            credentials,
            marketplace: marketplace.to_string(),
            token: TokenCache::default(),
        }
    }

    /// GETs `path` with `query` from `api` and returns the success body, read as a stream
    /// and refused past `max_bytes` (nothing beyond the limit is buffered). A 401/403
    /// refreshes the token and retries once.
    pub async fn get_capped(
        &self,
        operation: &'static str,
        api: EbayApi,
        path: &str,
        query: &[(String, String)],
        max_bytes: u64,
    ) -> Result<Vec<u8>, ProviderError> {
        let base = match api {
            EbayApi::Finances => &self.endpoints.finances_base,
            EbayApi::Fulfillment
            | EbayApi::PostOrder
            | EbayApi::Inventory
            | EbayApi::Message
            | EbayApi::Trading => &self.endpoints.api_base,
        };
        let url = format!("{base}{path}");
        let mut refreshed = false;
        loop {
            let token = self.access_token().await?;
            let scheme = match api {
                EbayApi::PostOrder | EbayApi::Trading => "IAF",
                EbayApi::Fulfillment
                | EbayApi::Finances
                | EbayApi::Inventory
                | EbayApi::Message => "Bearer",
            };
            let response = self
                .http
                .get(&url)
                .query(query)
                .header(AUTHORIZATION, format!("{scheme} {token}"))
                .header(ACCEPT, "application/json")
                .header("X-EBAY-C-MARKETPLACE-ID", self.marketplace.as_str())
                .send()
                .await
                .map_err(|err| transport_error(operation, err))?;
            let status = response.status();
            if status.is_success() {
                return read_capped(response, operation, max_bytes, TOO_BIG_ADVICE).await;
            }
            let headers = response.headers().clone();
            let body = read_error_body(response).await;
            if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) && !refreshed {
                debug!(
                    operation,
                    status = status.as_u16(),
                    "access token refused; refreshing it and retrying once"
                );
                self.token.forget(&token).await;
                refreshed = true;
                continue;
            }
            return Err(error_for_status(operation, status, &headers, &body));
        }
    }

    /// Sends the request `build` makes (from the http client, the API base and the
    /// access token) with the marketplace header, refreshing the token and retrying once
    /// on 401/403; returns a 2xx response unread (the caller caps what it reads) or the
    /// error its status maps to. Used by the Feed API client (`ebay_feed`).
    pub(crate) async fn send_authorized<F>(
        &self,
        operation: &'static str,
        build: F,
    ) -> Result<reqwest::Response, ProviderError>
    where
        F: Fn(&reqwest::Client, &str, &str) -> reqwest::RequestBuilder,
    {
        let mut refreshed = false;
        loop {
            let token = self.access_token().await?;
            let response = build(&self.http, &self.endpoints.api_base, &token)
                .header("X-EBAY-C-MARKETPLACE-ID", self.marketplace.as_str())
                .send()
                .await
                .map_err(|err| transport_error(operation, err))?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            let headers = response.headers().clone();
            let body = read_error_body(response).await;
            if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) && !refreshed {
                debug!(
                    operation,
                    status = status.as_u16(),
                    "access token refused; refreshing it and retrying once"
                );
                self.token.forget(&token).await;
                refreshed = true;
                continue;
            }
            return Err(error_for_status(operation, status, &headers, &body));
        }
    }

    /// The marketplace the client was made for (`EBAY_US`).
    pub(crate) fn marketplace(&self) -> &str {
        &self.marketplace
    }

    /// Drops the cached access token `token` (an API refused it), so the next call
    /// fetches a fresh one. Used by the Trading client, which learns of a refused token
    /// from the answer's body, not its status.
    pub(crate) async fn forget_token(&self, token: &str) {
        self.token.forget(token).await;
    }

    /// The cached access token, refreshed when it is within 60 s of expiry.
    async fn access_token(&self) -> Result<String, ProviderError> {
        self.token.get(|| self.fetch_token()).await
    }

    async fn fetch_token(&self) -> Result<CachedToken, ProviderError> {
        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: String,
            expires_in: Option<u64>,
        }
        let form: Vec<(&str, &str)> = match &self.credentials.refresh_token {
            Some(refresh_token) => vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.as_str()),
            ],
            None => vec![
                ("grant_type", "client_credentials"),
                ("scope", PUBLIC_SCOPE),
            ],
        };
        let response = self
            .http
            .post(&self.endpoints.token_url)
            .basic_auth(
                &self.credentials.client_id,
                Some(&self.credentials.client_secret),
            )
            .header(ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|err| transport_error(OP_TOKEN, err))?;
        let status = response.status();
        if status.is_success() {
            let bytes = read_capped(response, OP_TOKEN, MAX_ERROR_BODY as u64, "").await?;
            let token: TokenResponse = serde_json::from_slice(&bytes).map_err(|err| {
                invalid(
                    OP_TOKEN,
                    &format!("token response is not the expected json: {err}"),
                )
            })?;
            if token.access_token.is_empty() {
                return Err(invalid(OP_TOKEN, "empty access_token"));
            }
            let lifetime = token
                .expires_in
                .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
            debug!(
                operation = OP_TOKEN,
                expires_in_s = lifetime.as_secs(),
                "access token issued"
            );
            return Ok(CachedToken::new(token.access_token, lifetime));
        }
        let headers = response.headers().clone();
        let body = read_error_body(response).await;
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(error_for_status(OP_TOKEN, status, &headers, &body));
        }
        // Refused grant or client: the OAuth error code only (its description is eBay's
        // text, never our secret).
        let reason = oauth_reason(&body, status);
        Err(ProviderError::Auth {
            operation: OP_TOKEN,
            message: format!(
                "eBay refused the credentials ({reason}); check the client id/secret and refresh token variables of this account"
            ),
        })
    }
}

/// eBay's errorId for a token without the permission a call needs (an application token
/// on a seller API, or a user token lacking the API's scope): 403 "Access denied".
pub const ACCESS_DENIED_ERROR_ID: u64 = 1100;

/// A non-2xx answer as a [`ProviderError`], worded from eBay's error list. A 403 with
/// errorId 1100 names the scope the operation needs and how to consent to it.
fn error_for_status(
    operation: &'static str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
) -> ProviderError {
    if status == StatusCode::FORBIDDEN && first_error_id(body) == Some(ACCESS_DENIED_ERROR_ID) {
        let needs = match scope_of_operation(operation) {
            Some(entry) => format!(
                "{LACKS}the scope {operation} needs ({}){OR_APPLICATION_TOKEN}",
                entry.accepted.join(" or ")
            ),
            None => format!("{LACKS}the scope {operation} needs{OR_APPLICATION_TOKEN}"),
        };
        return ProviderError::Auth {
            operation,
            message: format!(
                "eBay denied access (errorId 1100, insufficient permissions): {needs}; run `{AUTH_EBAY_ACCOUNT}` to consent again and put the new refresh token in the account's refresh_token_env"
            ),
        };
    }
    super::error_for_status(
        operation,
        status,
        headers,
        error_message(body),
        "the token was refreshed once; check the account's eBay credentials and scopes",
    )
}

/// `errors[0].errorId` of an eBay error body.
fn first_error_id(body: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ErrorEntry {
        error_id: Option<u64>,
    }
    serde_json::from_str::<Errors>(body)
        .ok()?
        .errors
        .first()?
        .error_id
}

/// The answer of the authorization-code grant. `Debug` redacts the token.
#[derive(Clone)]
pub struct UserGrant {
    pub refresh_token: String,
    /// `refresh_token_expires_in`, bounded to five years.
    pub refresh_token_lifetime: Duration,
}

impl std::fmt::Debug for UserGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserGrant")
            .field("refresh_token", &"<redacted>")
            .field("refresh_token_lifetime", &self.refresh_token_lifetime)
            .finish()
    }
}

/// Exchanges an authorization code for a refresh token: eBay's authorization-code grant
/// (`grant_type=authorization_code`, `code`, `redirect_uri` = the RuName, HTTP Basic).
/// `http` carries the call's total deadline.
pub async fn exchange_code(
    http: &reqwest::Client,
    token_url: &str,
    client_id: &str,
    client_secret: &str,
    code: &str,
    ru_name: &str,
) -> Result<UserGrant, ProviderError> {
    #[derive(Deserialize)]
    struct GrantResponse {
        refresh_token: Option<String>,
        refresh_token_expires_in: Option<u64>,
    }
    let response = http
        .post(token_url)
        .basic_auth(client_id, Some(client_secret))
        .header(ACCEPT, "application/json")
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", ru_name),
        ])
        .send()
        .await
        .map_err(|err| transport_error(OP_TOKEN, err))?;
    let status = response.status();
    if !status.is_success() {
        let headers = response.headers().clone();
        let body = read_error_body(response).await;
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(error_for_status(OP_TOKEN, status, &headers, &body));
        }
        return Err(ProviderError::Auth {
            operation: OP_TOKEN,
            message: format!(
                "eBay refused the authorization code ({}); a code is valid for 299 seconds and once: consent again and paste the new code",
                oauth_reason(&body, status)
            ),
        });
    }
    let bytes = read_capped(response, OP_TOKEN, MAX_ERROR_BODY as u64, "").await?;
    let grant: GrantResponse = serde_json::from_slice(&bytes).map_err(|err| {
        invalid(
            OP_TOKEN,
            &format!("token response is not the expected json: {err}"),
        )
    })?;
    let refresh_token = grant
        .refresh_token
        .filter(|token| !token.is_empty() && token.len() <= 4096)
        .ok_or_else(|| {
            invalid(
                OP_TOKEN,
                "no refresh_token (or an oversized one) in the answer",
            )
        })?;
    let lifetime = grant
        .refresh_token_expires_in
        .filter(|secs| *secs > 0)
        .map(Duration::from_secs)
        .ok_or_else(|| invalid(OP_TOKEN, "no refresh_token_expires_in in the answer"))?;
    if lifetime > MAX_REFRESH_TOKEN_LIFETIME {
        return Err(invalid(
            OP_TOKEN,
            &format!(
                "refresh_token_expires_in {} s is beyond five years; refusing to believe it",
                lifetime.as_secs()
            ),
        ));
    }
    Ok(UserGrant {
        refresh_token,
        refresh_token_lifetime: lifetime,
    })
}

/// `error: error_description` of an OAuth error body (eBay's words, never our secret).
fn oauth_reason(body: &str, status: StatusCode) -> String {
    #[derive(Deserialize)]
    struct TokenError {
        error: Option<String>,
        error_description: Option<String>,
    }
    serde_json::from_str::<TokenError>(body)
        .ok()
        .map(|error| {
            format!(
                "{}: {}",
                error.error.unwrap_or_default(),
                clip(&error.error_description.unwrap_or_default())
            )
        })
        .unwrap_or_else(|| format!("http {}", status.as_u16()))
}

/// eBay's `errors[0].message` (with its errorId), else the body, shortened.
fn error_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ErrorEntry {
        error_id: Option<u64>,
        message: Option<String>,
    }
    match serde_json::from_str::<Errors>(body) {
        Ok(errors) if !errors.errors.is_empty() => {
            let first = &errors.errors[0];
            format!(
                "errorId {}: {}",
                first.error_id.unwrap_or(0),
                clip(first.message.as_deref().unwrap_or(""))
            )
        }
        _ => clip(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finances_moves_to_apiz_in_production_only() {
        let production = EbayEndpoints::new(
            "https://api.ebay.com/",
            "https://api.ebay.com/identity/v1/oauth2/token",
        );
        assert_eq!(production.finances_base, "https://apiz.ebay.com");
        assert_eq!(production.api_base, "https://api.ebay.com");
        let sim = EbayEndpoints::new("http://127.0.0.1:4000", "http://127.0.0.1:4000/t");
        assert_eq!(sim.finances_base, "http://127.0.0.1:4000");
    }

    #[test]
    fn quota_body_becomes_quota_exceeded() {
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, "7".parse().expect("header"));
        let err = error_for_status(
            "getOrders",
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            crate::sim::ebay::QUOTA_BODY,
        );
        match err {
            ProviderError::QuotaExceeded {
                retry_after,
                message,
                ..
            } => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)));
                assert!(message.starts_with("errorId 2001"), "{message}");
            }
            other => panic!("expected quota, got {other:?}"),
        }
    }

    #[test]
    fn access_denied_names_the_missing_scope() {
        let err = error_for_status(
            "getTransactions",
            StatusCode::FORBIDDEN,
            &HeaderMap::new(),
            crate::sim::ebay::ACCESS_DENIED_BODY,
        );
        match err {
            ProviderError::Auth { message, .. } => {
                assert!(message.contains("sell.finances"), "{message}");
                assert!(message.contains("marketsync auth ebay"), "{message}");
            }
            other => panic!("expected auth, got {other:?}"),
        }
    }

    #[test]
    fn consent_asks_the_base_scope_and_each_stream_once() {
        let scopes = consent_scopes(["orders", "transactions", "finances"]).expect("known");
        assert_eq!(scopes, vec![PUBLIC_SCOPE, FULFILLMENT_READONLY, FINANCES]);
        // The Feed API's inventory task needs the read-write scope; getOffers takes the
        // read-only one, which the read-write scope covers: one scope for both.
        let scopes = consent_scopes(["active_inventory", "offers"]).expect("known");
        assert_eq!(scopes, vec![PUBLIC_SCOPE, INVENTORY]);
        let scopes = consent_scopes(["offers"]).expect("known");
        assert_eq!(scopes, vec![PUBLIC_SCOPE, INVENTORY_READONLY]);
        assert!(consent_scopes(["telepathy"]).is_err());
        // market_prices reads the Browse API with the application's token: nothing to
        // consent to beyond the base scope, and no error (auth ebay used to refuse it).
        let scopes = consent_scopes(["orders", "market_prices"]).expect("known");
        assert_eq!(scopes, vec![PUBLIC_SCOPE, FULFILLMENT_READONLY]);
        assert_eq!(
            consent_scopes(["market_prices"]).expect("known"),
            vec![PUBLIC_SCOPE]
        );
        assert!(!needs_user_token(["market_prices"]));
        assert!(needs_user_token(["market_prices", "returns"]));
    }

    /// Regression (issue 14 audit): the table was keyed by one operation per stream, so
    /// a refusal of getInventoryItems (offers), getInventoryTask or getResultFile named
    /// no scope. Every operation a stream calls, and every eBay operation with a quota
    /// bucket, has its scope.
    #[test]
    fn every_operation_of_every_stream_has_a_scope() {
        let streams = crate::shapes::cursor::EBAY_STREAMS
            .iter()
            .copied()
            .chain([crate::domain::provider::EBAY_MARKET_PRICES_STREAM]);
        for stream in streams {
            let entry = STREAM_SCOPES
                .iter()
                .find(|entry| entry.stream == stream)
                .unwrap_or_else(|| panic!("{stream} has no StreamScope"));
            for operation in entry.operations {
                assert!(scope_of_operation(operation).is_some(), "{operation}");
            }
        }
        let operations = crate::config::quota_operations("ebay").iter().chain([
            &super::super::ebay_feed::OP_CREATE_INVENTORY_TASK,
            &super::super::ebay_feed::OP_GET_INVENTORY_TASK,
            &super::super::ebay_feed::OP_GET_RESULT_FILE,
        ]);
        for operation in operations {
            let entry = scope_of_operation(operation)
                .unwrap_or_else(|| panic!("{operation} has no OperationScope"));
            assert!(entry.accepted.contains(&entry.consent), "{operation}");
        }
        for (operation, scope) in [
            ("getInventoryItems", INVENTORY_READONLY),
            ("getInventoryTask", INVENTORY),
            ("getResultFile", INVENTORY),
        ] {
            let err = error_for_status(
                operation,
                StatusCode::FORBIDDEN,
                &HeaderMap::new(),
                crate::sim::ebay::ACCESS_DENIED_BODY,
            );
            let text = err.to_string();
            assert!(text.contains(&format!("{operation} needs (")), "{text}");
            assert!(text.contains(scope), "{text}");
        }
    }

    #[test]
    fn access_denied_texts_merge_every_missing_scope_once() {
        let denied = |operation: &'static str| {
            error_for_status(
                operation,
                StatusCode::FORBIDDEN,
                &HeaderMap::new(),
                crate::sim::ebay::ACCESS_DENIED_BODY,
            )
            .to_string()
        };
        let finances = denied("getTransactions");
        let inventory = denied("getInventoryItems");
        let merged = merge_access_denied(&finances, &inventory).expect("both are access denied");
        assert!(merged.contains("the scope getInventoryItems needs (https://api.ebay.com/oauth/api_scope/sell.inventory or https://api.ebay.com/oauth/api_scope/sell.inventory.readonly) and the scope getTransactions needs (https://api.ebay.com/oauth/api_scope/sell.finances), or it is an application token"), "{merged}");
        assert!(merged.contains("errorId 1100"), "{merged}");
        // Merging again adds nothing; the clauses stay bounded.
        let again = merge_access_denied(&merged, &finances).expect("merges");
        assert_eq!(again.matches("getTransactions needs").count(), 1, "{again}");
        assert_eq!(
            again.matches("getInventoryItems needs").count(),
            1,
            "{again}"
        );
        let mut text = finances.clone();
        for operation in OPERATION_SCOPES
            .iter()
            .map(|entry| entry.operation)
            .cycle()
            .take(40)
        {
            text = merge_access_denied(&text, &denied(operation)).expect("merges");
        }
        assert_eq!(
            text.matches(" needs (").count(),
            OPERATION_SCOPES.len().min(MAX_MISSING_CLAUSES)
        );
        // Anything else is left to the caller.
        assert_eq!(merge_access_denied("quota exceeded", &finances), None);
        assert_eq!(merge_access_denied(&finances, "invalid_grant"), None);
    }

    #[test]
    fn credentials_debug_is_redacted() {
        let credentials = EbayCredentials {
            client_id: "id-value".into(),
            client_secret: "secret-value".into(),
            refresh_token: Some("refresh-value".into()),
        };
        let text = format!("{credentials:?}");
        assert!(!text.contains("value"), "{text}");
    }
}
