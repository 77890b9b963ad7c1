//! eBay's OAuth on the simulator: the token endpoint's three grants, the consent step
//! (a simulator convenience), and the user-token and scope checks of the seller APIs.
//!
//! - `POST /identity/v1/oauth2/token` (HTTP Basic `client_id:client_secret`):
//!   `client_credentials` mints an *Application* access token (base scope only);
//!   `authorization_code` exchanges a code this simulator issued (for the same client and
//!   `redirect_uri`, the RuName, within 299 s, once) for a *User* access token and a
//!   refresh token valid 47,304,000 s (about 18 months); `refresh_token` mints a User
//!   access token with the scopes the refresh token was granted (an optional `scope` may
//!   only narrow them).
//! - `GET /oauth2/authorize` (the path of eBay's `auth.ebay.com/oauth2/authorize`): eBay
//!   shows its sign-in and consent pages there and redirects to the RuName's accept URL
//!   with `code`. The simulator has no pages: the extra query parameter `seller` names the
//!   seller who "signs in", and the answer is JSON `{code, expires_in, state}`.
//! - Seller APIs refuse an application token, and a user token without the scope the API
//!   needs, with eBay's 403 `errorId` 1100 "Access denied".
//!
//! A refresh token the simulator did not issue is, by the simulator's convention, the
//! seller's name and carries every scope (so tests and the demo need no consent step);
//! one that looks like an eBay token (`v^1.1#...`) but was not issued, or that starts with
//! `revoked`, is refused with `invalid_grant`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::extract::{Form, Query, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use super::data::seller_key;
use super::{decode_base64, ebay_error, injected, Ebay, OP_TOKEN};
use crate::sim::Simulator;

/// The base scope: public data, and the one scope an application token may carry.
pub const SCOPE_BASE: &str = "https://api.ebay.com/oauth/api_scope";
/// Fulfillment API, read and write.
pub const SCOPE_FULFILLMENT: &str = "https://api.ebay.com/oauth/api_scope/sell.fulfillment";
/// Fulfillment API, read only (enough for getOrders).
pub const SCOPE_FULFILLMENT_READONLY: &str =
    "https://api.ebay.com/oauth/api_scope/sell.fulfillment.readonly";
/// Finances API (getTransactions, getPayouts).
pub const SCOPE_FINANCES: &str = "https://api.ebay.com/oauth/api_scope/sell.finances";
/// Inventory API and the Sell Feed inventory tasks, read and write.
pub const SCOPE_INVENTORY: &str = "https://api.ebay.com/oauth/api_scope/sell.inventory";
/// Inventory API and the Sell Feed inventory tasks, read only.
pub const SCOPE_INVENTORY_READONLY: &str =
    "https://api.ebay.com/oauth/api_scope/sell.inventory.readonly";

/// Message API (getConversations).
pub const SCOPE_MESSAGE: &str = "https://api.ebay.com/oauth/api_scope/commerce.message";

/// Scopes the simulator knows; a consent asking for another is refused (`invalid_scope`).
const KNOWN_SCOPES: &[&str] = &[
    SCOPE_MESSAGE,
    SCOPE_BASE,
    SCOPE_FULFILLMENT,
    SCOPE_FULFILLMENT_READONLY,
    SCOPE_FINANCES,
    SCOPE_INVENTORY,
    SCOPE_INVENTORY_READONLY,
    "https://api.ebay.com/oauth/api_scope/sell.account",
    "https://api.ebay.com/oauth/api_scope/sell.account.readonly",
    "https://api.ebay.com/oauth/api_scope/sell.marketing",
    "https://api.ebay.com/oauth/api_scope/sell.marketing.readonly",
    "https://api.ebay.com/oauth/api_scope/sell.analytics.readonly",
    "https://api.ebay.com/oauth/api_scope/sell.payment.dispute",
    "https://api.ebay.com/oauth/api_scope/commerce.identity.readonly",
    "https://api.ebay.com/oauth/api_scope/commerce.notification.subscription",
    "https://api.ebay.com/oauth/api_scope/commerce.notification.subscription.readonly",
];

/// An authorization code lives 299 seconds (eBay's `expires_in` on the redirect).
pub const CODE_LIFETIME_SECS: i64 = 299;
/// A refresh token from the authorization-code grant: 47,304,000 s (about 18 months).
pub const REFRESH_TOKEN_LIFETIME_SECS: i64 = 47_304_000;
/// Issued codes and refresh tokens kept at most (oldest expired ones dropped first).
const GRANTS_CAP: usize = 10_000;

/// eBay's answer to a token without the permission the call needs (an application token
/// on a seller API, or a user token lacking the API's scope), byte for byte.
pub const ACCESS_DENIED_BODY: &str = r#"{"errors":[{"errorId":1100,"domain":"ACCESS","category":"REQUEST","message":"Access denied","longMessage":"Insufficient permissions to fulfill the request."}]}"#;

/// Which grant minted an access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TokenKind {
    /// Client-credentials grant: the application's own token, no seller behind it.
    Application,
    /// Authorization-code or refresh-token grant: a seller's token.
    User,
}

/// An access token the simulator issued.
#[derive(Debug, Clone)]
pub(super) struct IssuedToken {
    /// The seller whose data it reads (the client id for an application token).
    pub(super) seller: String,
    /// Unix seconds.
    pub(super) expires: f64,
    pub(super) kind: TokenKind,
    /// `None`: every scope (a conventional refresh token, see the module doc).
    pub(super) scopes: Option<BTreeSet<String>>,
}

/// A code or refresh token the simulator issued: whose, for what, until when.
#[derive(Debug, Clone)]
pub(super) struct Grant {
    client_id: String,
    seller: String,
    scopes: BTreeSet<String>,
    /// The RuName the code was issued for (codes only).
    redirect_uri: String,
    /// Unix seconds.
    expires: i64,
}

/// The simulator's OAuth state, inside [`super::EbayState`].
#[derive(Debug, Default)]
pub(super) struct OAuthState {
    codes: HashMap<String, Grant>,
    refresh_tokens: HashMap<String, Grant>,
    next: u64,
}

impl OAuthState {
    fn next_id(&mut self) -> u64 {
        self.next = self.next.wrapping_add(1);
        self.next
    }

    fn insert(map: &mut HashMap<String, Grant>, key: String, grant: Grant, now: i64) {
        if map.len() >= GRANTS_CAP {
            map.retain(|_, kept| kept.expires > now);
        }
        if map.len() < GRANTS_CAP {
            map.insert(key, grant);
        }
    }
}

/// The scopes of which a token needs one for `api` (`[]`: any user token will do).
pub(super) fn required_scopes(api: &str) -> &'static [&'static str] {
    match api {
        "fulfillment" => &[SCOPE_FULFILLMENT, SCOPE_FULFILLMENT_READONLY],
        "finances" => &[SCOPE_FINANCES],
        // Post-Order's reference names no OAuth scope; every consent carries the base one.
        "postOrder" => &[SCOPE_BASE],
        // Sell Feed inventory tasks (createInventoryTask, getInventoryTask and their
        // result file): `sell.inventory` only, as sell_feed_v1_oas3's security says.
        "feed" => &[SCOPE_INVENTORY],
        // Sell Inventory getInventoryItems and getOffers: either inventory scope.
        "inventory" => &[SCOPE_INVENTORY, SCOPE_INVENTORY_READONLY],
        "message" => &[SCOPE_MESSAGE],
        _ => &[],
    }
}

/// Whether `token` may call the seller API `api`: a user token with one of its scopes.
pub(super) fn permits(token: &IssuedToken, api: &str) -> bool {
    if token.kind != TokenKind::User {
        return false;
    }
    let required = required_scopes(api);
    match &token.scopes {
        None => true,
        Some(_) if required.is_empty() => true,
        Some(scopes) => required.iter().any(|scope| scopes.contains(*scope)),
    }
}

/// eBay's 403 for a token without the permission (see [`ACCESS_DENIED_BODY`]).
pub(super) fn access_denied() -> Response {
    (
        StatusCode::FORBIDDEN,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        ACCESS_DENIED_BODY,
    )
        .into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

fn invalid_scope() -> Response {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "invalid_scope",
        "The requested scope is invalid, unknown, malformed, or exceeds the scope granted to the client",
    )
}

/// Space-separated scopes, each known; `None` when one is not.
fn parse_scopes(text: &str) -> Option<BTreeSet<String>> {
    let scopes: BTreeSet<String> = text.split_whitespace().map(str::to_string).collect();
    scopes
        .iter()
        .all(|scope| KNOWN_SCOPES.contains(&scope.as_str()))
        .then_some(scopes)
}

/// An eBay-looking token: `v^1.1#i^1#...#t^<tag>`.
fn ebay_token(kind: &str, id: u64, seller: &str) -> String {
    format!(
        "v^1.1#i^1#{kind}^1#I^3#f^0#p^3#t^sim-{id}-{}",
        seller_key(seller) % 1_000_000
    )
}

#[derive(Deserialize)]
pub(super) struct TokenForm {
    grant_type: Option<String>,
    refresh_token: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
}

pub(super) async fn token(
    State(sim): State<Arc<Simulator>>,
    Extension(ebay): Extension<Arc<Ebay>>,
    headers: HeaderMap,
    form: Result<Form<TokenForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    Ebay::bump(&mut ebay.lock().stats.calls, OP_TOKEN);
    if let Some(response) = injected(&sim, &ebay, OP_TOKEN) {
        return response;
    }
    let client_id = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| decode_base64(encoded.trim()))
        .and_then(|decoded| String::from_utf8(decoded).ok())
        .and_then(|pair| {
            pair.split_once(':')
                .map(|(id, secret)| (id.to_string(), secret.to_string()))
        })
        .filter(|(id, secret)| !id.is_empty() && !secret.is_empty())
        .map(|(id, _)| id);
    let Some(client_id) = client_id else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    };
    let Ok(Form(form)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "request body is not a form",
        );
    };
    let now = ebay.now(&sim);
    let lifetime = sim.config().ebay.token_lifetime.as_secs();
    match form.grant_type.as_deref() {
        Some("client_credentials") => {
            let requested = form.scope.as_deref().unwrap_or(SCOPE_BASE);
            // An application token carries public scopes only; seller scopes need consent.
            if parse_scopes(requested)
                .is_none_or(|scopes| scopes.iter().any(|scope| scope != SCOPE_BASE))
            {
                return invalid_scope();
            }
            let access = mint(
                &ebay,
                &client_id,
                TokenKind::Application,
                None,
                now,
                lifetime,
            );
            Json(json!({"access_token": access, "expires_in": lifetime, "token_type": "Application Access Token"}))
                .into_response()
        }
        Some("authorization_code") => {
            let (Some(code), Some(redirect_uri)) = (form.code, form.redirect_uri) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "request is missing a required parameter: code and redirect_uri",
                );
            };
            let grant = {
                let mut state = ebay.lock();
                let found = state.oauth.codes.remove(&code);
                found.filter(|grant| {
                    grant.client_id == client_id
                        && grant.redirect_uri == redirect_uri
                        && grant.expires > now
                })
            };
            let Some(grant) = grant else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "the provided authorization grant code is invalid or was issued to another client",
                );
            };
            let refresh = {
                let mut state = ebay.lock();
                let id = state.oauth.next_id();
                let refresh = ebay_token("r", id, &grant.seller);
                let kept = Grant {
                    expires: now.saturating_add(REFRESH_TOKEN_LIFETIME_SECS),
                    ..grant.clone()
                };
                OAuthState::insert(&mut state.oauth.refresh_tokens, refresh.clone(), kept, now);
                refresh
            };
            let access = mint(
                &ebay,
                &grant.seller,
                TokenKind::User,
                Some(grant.scopes),
                now,
                lifetime,
            );
            Json(json!({
                "access_token": access,
                "expires_in": lifetime,
                "refresh_token": refresh,
                "refresh_token_expires_in": REFRESH_TOKEN_LIFETIME_SECS,
                "token_type": "User Access Token",
            }))
            .into_response()
        }
        Some("refresh_token") => {
            let refused = || {
                oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "the provided authorization refresh token is invalid or was issued to another client",
                )
            };
            let Some(refresh) = form.refresh_token.filter(|token| !token.is_empty()) else {
                return refused();
            };
            let issued = ebay.lock().oauth.refresh_tokens.get(&refresh).cloned();
            let (seller, granted) = match issued {
                Some(grant) if grant.client_id == client_id && grant.expires > now => {
                    (grant.seller, Some(grant.scopes))
                }
                Some(_) => return refused(),
                None if refresh.starts_with("revoked") || refresh.starts_with("v^1.1#") => {
                    return refused()
                }
                // The convention: an unissued refresh token is the seller, every scope.
                None => (refresh, None),
            };
            let scopes = match form.scope.as_deref() {
                None => granted,
                Some(text) => {
                    let Some(asked) = parse_scopes(text) else {
                        return invalid_scope();
                    };
                    if let Some(granted) = &granted {
                        if !asked.is_subset(granted) {
                            return invalid_scope();
                        }
                    }
                    Some(asked)
                }
            };
            let access = mint(&ebay, &seller, TokenKind::User, scopes, now, lifetime);
            Json(json!({"access_token": access, "expires_in": lifetime, "token_type": "User Access Token"}))
                .into_response()
        }
        _ => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant type in request is not supported by the authorization server",
        ),
    }
}

/// Records a new access token and returns it.
fn mint(
    ebay: &Ebay,
    seller: &str,
    kind: TokenKind,
    scopes: Option<BTreeSet<String>>,
    now: i64,
    lifetime: u64,
) -> String {
    let lifetime = i64::try_from(lifetime).unwrap_or(i64::MAX);
    let expires = now.saturating_add(lifetime) as f64;
    let mut state = ebay.lock();
    state.next_token = state.next_token.wrapping_add(1);
    let token = ebay_token("a", state.next_token, seller);
    if state.tokens.len() >= 10_000 {
        // Expired tokens are never valid again: keep the map small on long runs.
        state.tokens.retain(|_, issued| issued.expires > now as f64);
    }
    state.tokens.insert(
        token.clone(),
        IssuedToken {
            seller: seller.to_string(),
            expires,
            kind,
            scopes,
        },
    );
    token
}

/// `GET /oauth2/authorize`: eBay's consent step, with `seller` standing in for the
/// sign-in (see the module doc).
pub(super) async fn authorize(
    State(sim): State<Arc<Simulator>>,
    Extension(ebay): Extension<Arc<Ebay>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let get = |key: &str| query.get(key).filter(|value| !value.is_empty());
    let (Some(client_id), Some(redirect_uri), Some(seller)) =
        (get("client_id"), get("redirect_uri"), get("seller"))
    else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_id, redirect_uri and (simulator only) seller are required",
        );
    };
    if get("response_type").map(String::as_str) != Some("code") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_response_type",
            "response_type must be code",
        );
    }
    let Some(scopes) = get("scope").and_then(|text| parse_scopes(text)) else {
        return invalid_scope();
    };
    if scopes.is_empty() {
        return invalid_scope();
    }
    let now = ebay.now(&sim);
    let code = {
        let mut state = ebay.lock();
        let id = state.oauth.next_id();
        let code = ebay_token("c", id, seller);
        let grant = Grant {
            client_id: client_id.clone(),
            seller: seller.clone(),
            scopes,
            redirect_uri: redirect_uri.clone(),
            expires: now.saturating_add(CODE_LIFETIME_SECS),
        };
        OAuthState::insert(&mut state.oauth.codes, code.clone(), grant, now);
        code
    };
    Json(json!({"code": code, "expires_in": CODE_LIFETIME_SECS, "state": query.get("state")}))
        .into_response()
}

/// The 401 of a missing, unknown or expired access token.
pub(super) fn invalid_token() -> Response {
    ebay_error(
        StatusCode::UNAUTHORIZED,
        1001,
        "OAuth",
        "REQUEST",
        "Invalid access token. Check the value of the Authorization HTTP request header.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(kind: TokenKind, scopes: Option<&[&str]>) -> IssuedToken {
        IssuedToken {
            seller: "s".into(),
            expires: 0.0,
            kind,
            scopes: scopes.map(|list| list.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn seller_apis_need_a_user_token_with_their_scope() {
        assert!(!permits(
            &token(TokenKind::Application, None),
            "fulfillment"
        ));
        assert!(permits(&token(TokenKind::User, None), "finances"));
        let orders_only = token(TokenKind::User, Some(&[SCOPE_FULFILLMENT_READONLY]));
        assert!(permits(&orders_only, "fulfillment"));
        assert!(!permits(&orders_only, "finances"));
    }

    #[test]
    fn unknown_scopes_are_refused() {
        assert!(parse_scopes(&format!("{SCOPE_BASE} {SCOPE_FINANCES}")).is_some());
        assert!(parse_scopes("https://api.ebay.com/oauth/api_scope/sell.everything").is_none());
    }
}
