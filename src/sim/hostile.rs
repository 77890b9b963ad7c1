//! The simulator's hostile provider answers: opt-in fault settings of [`super::SimFaults`]
//! (all off by default) applied to the answers of every provider by one middleware, so
//! each provider's normal behaviour stays exactly as documented in docs/*-wire.md.
//!
//! - `retry_after_text`: sent verbatim as `Retry-After` on every 429;
//! - `token_expires_in`: the `expires_in` of every token answer (LWA, eBay, StockX);
//! - `keepa_tokens_left`, `keepa_refill_in`, `keepa_refill_rate`: the balance every Keepa
//!   answer carries;
//! - `document_url`: the base (scheme, host, port) of getReportDocument's `url`;
//! - `redirect_to`: every API call (not a token request, not `/_sim`, not a document
//!   download) answers 307 to this base with the same path and query;
//! - `slow_drip_ms`: every API answer's body is sent one byte per that many milliseconds.
//!
//! eBay's growing `total` (`ebay_total_grows`) is paging, so it lives in `ebay::sell`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_LENGTH, LOCATION, RETRY_AFTER};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::{SimFaults, Simulator};

/// The largest answer the rewriting modes buffer (token, Keepa and document answers are
/// far smaller); a larger one is passed on untouched.
const MAX_REWRITE: usize = 4 * 1024 * 1024;

/// Whether any hostile answer mode is on.
fn any(faults: &SimFaults) -> bool {
    faults.retry_after_text.is_some()
        || faults.token_expires_in.is_some()
        || faults.keepa_tokens_left.is_some()
        || faults.keepa_refill_in.is_some()
        || faults.keepa_refill_rate.is_some()
        || faults.document_url.is_some()
        || faults.redirect_to.is_some()
        || faults.slow_drip_ms.is_some()
}

fn is_token_request(method: &Method, path: &str) -> bool {
    method == Method::POST && path.ends_with("/token")
}

/// The middleware: the answer of `next`, made hostile as the faults say.
pub(super) async fn answer(
    State(sim): State<Arc<Simulator>>,
    request: Request,
    next: Next,
) -> Response {
    let faults = sim.faults();
    let path = request.uri().path().to_string();
    if path.starts_with("/_sim") || !any(&faults) {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let token_request = is_token_request(&method, &path);
    if let Some(base) = &faults.redirect_to {
        if !token_request && !path.starts_with("/_documents") {
            let target = match request.uri().query() {
                Some(query) => format!("{}{path}?{query}", base.trim_end_matches('/')),
                None => format!("{}{path}", base.trim_end_matches('/')),
            };
            let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
            if let Ok(value) = HeaderValue::from_str(&target) {
                response.headers_mut().insert(LOCATION, value);
            }
            return response;
        }
    }
    let mut response = next.run(request).await;
    if response.status() == StatusCode::TOO_MANY_REQUESTS {
        if let Some(text) = &faults.retry_after_text {
            if let Ok(value) = HeaderValue::from_str(text) {
                response.headers_mut().insert(RETRY_AFTER, value);
            }
        }
    }
    let rewrites = (token_request && faults.token_expires_in.is_some())
        || faults.keepa_tokens_left.is_some()
        || faults.keepa_refill_in.is_some()
        || faults.keepa_refill_rate.is_some()
        || (faults.document_url.is_some() && path.starts_with("/reports/2021-06-30/documents/"));
    if rewrites {
        response = rewrite_json(response, &faults, token_request).await;
    }
    match faults.slow_drip_ms {
        Some(every) => drip(response, Duration::from_millis(every.max(1))).await,
        _ => response,
    }
}

/// Rewrites the fields the faults name in a JSON object answer.
async fn rewrite_json(response: Response, faults: &SimFaults, token_request: bool) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_REWRITE).await else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "answer too large to rewrite",
        )
            .into_response();
    };
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    if token_request {
        if let Some(expires_in) = faults.token_expires_in {
            if object.contains_key("expires_in") {
                object.insert("expires_in".into(), expires_in.into());
            }
        }
    }
    if object.contains_key("refillIn") {
        if let Some(tokens) = faults.keepa_tokens_left {
            object.insert("tokensLeft".into(), tokens.into());
        }
        if let Some(refill_in) = faults.keepa_refill_in {
            object.insert("refillIn".into(), refill_in.into());
        }
        if let Some(rate) = faults.keepa_refill_rate {
            object.insert("refillRate".into(), rate.into());
        }
    }
    if let (Some(base), Some(Value::String(url))) = (&faults.document_url, object.get("url")) {
        // http://host:port/_documents/... → {base}/_documents/...
        let rest = url
            .split_once("://")
            .and_then(|(_, after)| after.find('/').map(|slash| after[slash..].to_string()))
            .unwrap_or_default();
        object.insert(
            "url".into(),
            format!("{}{rest}", base.trim_end_matches('/')).into(),
        );
    }
    let text = Value::Object(object).to_string();
    parts.headers.remove(CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(text))
}

/// The answer's body, one byte per `every`.
async fn drip(response: Response, every: Duration) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_REWRITE).await else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "answer too large to drip",
        )
            .into_response();
    };
    parts.headers.remove(CONTENT_LENGTH);
    let stream = futures_util::stream::unfold((bytes, 0usize), move |(bytes, at)| async move {
        if at >= bytes.len() {
            return None;
        }
        if at > 0 {
            tokio::time::sleep(every).await;
        }
        let byte = bytes.slice(at..at + 1);
        Some((Ok::<Bytes, std::io::Error>(byte), (bytes, at + 1)))
    });
    Response::from_parts(parts, Body::from_stream(stream))
}
