//! HTTP side of the simulator: routes, extraction, and the wire bodies of every answer.
//!
//! Handlers are thin: they pull what they need out of the request and call a synchronous
//! method of [`Simulator`], so no lock is ever held across an `.await`. Bad input of any
//! kind is answered with a 4xx JSON body, never a panic.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{FormRejection, PathRejection, QueryRejection};
use axum::extract::{Form, Path, Query, State};
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};
use tracing::{debug, error};

use super::{Reject, SimFaults, Simulator};

/// The header SP-API clients send their LWA access token in.
const ACCESS_TOKEN_HEADER: &str = "x-amz-access-token";
/// The rate-limit header on 2xx SP-API answers.
const RATE_LIMIT_HEADER: &str = "x-amzn-ratelimit-limit";
/// The request id header on every SP-API answer (`x-amzn-RequestId`).
const REQUEST_ID_HEADER: &str = "x-amzn-requestid";

pub(super) fn router(sim: Arc<Simulator>) -> Router {
    Router::new()
        .route("/auth/o2/token", post(lwa_token))
        .route(
            "/reports/2021-06-30/reports",
            post(create_report).get(get_reports),
        )
        .route(
            "/reports/2021-06-30/reports/{report_id}",
            get(get_report).delete(cancel_report),
        )
        .route(
            "/reports/2021-06-30/documents/{document_id}",
            get(get_report_document),
        )
        .route("/_documents/{document_id}", get(download_document))
        .route("/_sim/stats", get(sim_stats))
        .route("/_sim/faults", get(get_faults).put(put_faults))
        .route("/_sim/served", get(served_rows))
        .merge(super::ebay::router(Arc::clone(&sim)))
        .merge(super::stockx::router(Arc::clone(&sim)))
        .merge(super::keepa::router(Arc::clone(&sim)))
        .merge(super::alias::router(Arc::clone(&sim)))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&sim),
            super::hostile::answer,
        ))
        // Outermost, so every answer carries it: success, error, redirect, fallback.
        .layer(axum::middleware::map_response(with_request_id))
        .with_state(sim)
}

/// Adds `x-amzn-RequestId` (a fresh random id) to an answer, as SP-API does on every one.
async fn with_request_id(mut response: Response) -> Response {
    let bytes: [u8; 16] = rand::random();
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    let id = format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

fn access_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(ACCESS_TOKEN_HEADER)
        .and_then(|value| value.to_str().ok())
}

/// `x-amzn-RateLimit-Limit` the way Amazon writes it: `2.0`, `0.0167`. Rounded to six
/// decimals, so a rate scaled by `time_scale` reads `1.002`, not `1.0019999999999998`.
fn rate_header_value(rate: f64) -> String {
    let rate = (rate * 1e6).round() / 1e6;
    if rate.fract() == 0.0 {
        format!("{rate:.1}")
    } else {
        format!("{rate}")
    }
}

/// A 2xx SP-API answer with its rate-limit header.
fn sp_success(status: StatusCode, rate: f64, body: Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&rate_header_value(rate)) {
        response.headers_mut().insert(RATE_LIMIT_HEADER, value);
    }
    response
}

/// One entry of an SP-API error body; a struct so the keys keep the documented order.
#[derive(Serialize)]
struct ErrorEntry<'a> {
    code: &'a str,
    message: &'a str,
    details: &'a str,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    errors: [ErrorEntry<'a>; 1],
}

/// An SP-API error body: `{"errors":[{"code","message","details"}]}`.
fn sp_error(status: StatusCode, code: &str, message: &str, details: &str) -> Response {
    let body = ErrorBody {
        errors: [ErrorEntry {
            code,
            message,
            details,
        }],
    };
    (status, Json(body)).into_response()
}

/// An S3-style XML error, as the document host answers.
fn xml_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!("<Error><Code>{code}</Code><Message>{message}</Message></Error>");
    (status, [(CONTENT_TYPE, "application/xml")], body).into_response()
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        match self {
            Reject::Unauthorized { expired } => sp_error(
                StatusCode::FORBIDDEN,
                "Unauthorized",
                "Access to requested resource is denied.",
                if expired {
                    "The access token you provided has expired."
                } else {
                    ""
                },
            ),
            Reject::Throttled { retry_after_secs } => {
                let mut response = sp_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "QuotaExceeded",
                    "You exceeded your quota for the requested resource.",
                    "",
                );
                if let Some(seconds) = retry_after_secs {
                    response
                        .headers_mut()
                        .insert(RETRY_AFTER, HeaderValue::from(seconds));
                }
                response
            }
            Reject::ServerError => internal_failure(),
            Reject::Internal(message) => {
                error!(error = %message, "simulator failed to build an answer");
                internal_failure()
            }
            Reject::InvalidInput(message) => {
                sp_error(StatusCode::BAD_REQUEST, "InvalidInput", &message, "")
            }
            Reject::NotFound(message) => sp_error(StatusCode::NOT_FOUND, "NotFound", &message, ""),
            Reject::Lwa { error, description } => (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": error, "error_description": description })),
            )
                .into_response(),
            Reject::DocumentUnsigned => xml_error(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "Query-string authentication requires the expires parameter",
            ),
            Reject::DocumentExpired => {
                xml_error(StatusCode::FORBIDDEN, "AccessDenied", "Request has expired")
            }
            Reject::DocumentMissing => xml_error(
                StatusCode::NOT_FOUND,
                "NoSuchKey",
                "The specified key does not exist.",
            ),
        }
    }
}

fn internal_failure() -> Response {
    sp_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalFailure",
        "We encountered an internal error. Please try again.",
        "",
    )
}

/// Logs one answered request at debug.
fn log_answer(operation: &'static str, id: &str, response: &Response) {
    debug!(
        operation,
        id,
        status = response.status().as_u16(),
        "request answered"
    );
}

fn path_or_reject(path: Result<Path<String>, PathRejection>) -> Result<String, Reject> {
    path.map(|Path(value)| value)
        .map_err(|rejection| Reject::InvalidInput(format!("path: {rejection}")))
}

async fn lwa_token(
    State(sim): State<Arc<Simulator>>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let form = form.ok().map(|Form(fields)| fields);
    let response = match sim.grant_token(form) {
        Ok(grant) => (
            StatusCode::OK,
            Json(json!({
                "access_token": grant.access_token,
                "refresh_token": grant.refresh_token,
                "token_type": "bearer",
                "expires_in": grant.expires_in,
            })),
        )
            .into_response(),
        Err(reject) => reject.into_response(),
    };
    log_answer("token", "", &response);
    response
}

async fn create_report(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = match sim.create_report(access_token(&headers), &body) {
        Ok((report_id, rate)) => {
            sp_success(StatusCode::ACCEPTED, rate, json!({ "reportId": report_id }))
        }
        Err(reject) => reject.into_response(),
    };
    log_answer("createReport", "", &response);
    response
}

async fn get_report(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let report_id = path_or_reject(path);
    let response = match report_id
        .as_deref()
        .map_err(Clone::clone)
        .and_then(|id| sim.get_report(access_token(&headers), id))
    {
        Ok((body, rate)) => sp_success(StatusCode::OK, rate, body),
        Err(reject) => reject.into_response(),
    };
    log_answer("getReport", report_id.as_deref().unwrap_or(""), &response);
    response
}

async fn get_report_document(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let document_id = path_or_reject(path);
    let response = match document_id
        .as_deref()
        .map_err(Clone::clone)
        .and_then(|id| sim.get_report_document(access_token(&headers), id))
    {
        Ok((body, rate)) => sp_success(StatusCode::OK, rate, body),
        Err(reject) => reject.into_response(),
    };
    log_answer(
        "getReportDocument",
        document_id.as_deref().unwrap_or(""),
        &response,
    );
    response
}

async fn get_reports(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let response = match query {
        Ok(Query(pairs)) => match sim.get_reports(access_token(&headers), &pairs) {
            Ok((body, rate)) => sp_success(StatusCode::OK, rate, body),
            Err(reject) => reject.into_response(),
        },
        Err(rejection) => Reject::InvalidInput(format!("query: {rejection}")).into_response(),
    };
    log_answer("getReports", "", &response);
    response
}

async fn cancel_report(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let report_id = path_or_reject(path);
    let response = match report_id
        .as_deref()
        .map_err(Clone::clone)
        .and_then(|id| sim.cancel_report(access_token(&headers), id))
    {
        Ok(rate) => {
            let mut response = StatusCode::OK.into_response();
            if let Ok(value) = HeaderValue::from_str(&rate_header_value(rate)) {
                response.headers_mut().insert(RATE_LIMIT_HEADER, value);
            }
            response
        }
        Err(reject) => reject.into_response(),
    };
    log_answer(
        "cancelReport",
        report_id.as_deref().unwrap_or(""),
        &response,
    );
    response
}

async fn download_document(
    State(sim): State<Arc<Simulator>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let query = query.map(|Query(fields)| fields).unwrap_or_default();
    let expires = query.get("expires").cloned();
    let document_id = path_or_reject(path);
    // Building a document (gzip of up to millions of rows) is CPU work: off the async
    // workers, so the simulator's other answers, and anything else on its runtime (a
    // test's own client), do not wait for it.
    let built = match document_id.clone() {
        Ok(id) => {
            let sim = Arc::clone(&sim);
            tokio::task::spawn_blocking(move || sim.download_document(&id, expires.as_deref()))
                .await
                .unwrap_or_else(|err| {
                    Err(Reject::Internal(format!(
                        "building the document failed: {err}"
                    )))
                })
        }
        Err(reject) => Err(reject),
    };
    let response = match built {
        Ok(bytes) => (
            StatusCode::OK,
            [(CONTENT_TYPE, "application/octet-stream")],
            bytes,
        )
            .into_response(),
        Err(reject) => reject.into_response(),
    };
    log_answer(
        "downloadDocument",
        document_id.as_deref().unwrap_or(""),
        &response,
    );
    response
}

async fn sim_stats(State(sim): State<Arc<Simulator>>) -> Response {
    Json(sim.stats()).into_response()
}

async fn get_faults(State(sim): State<Arc<Simulator>>) -> Response {
    Json(sim.faults()).into_response()
}

async fn put_faults(State(sim): State<Arc<Simulator>>, body: Bytes) -> Response {
    let faults: SimFaults = match serde_json::from_slice(&body) {
        Ok(faults) => faults,
        Err(err) => return Reject::InvalidInput(format!("faults: {err}")).into_response(),
    };
    if let Err(message) = faults.validate() {
        return Reject::InvalidInput(format!("faults.{message}")).into_response();
    }
    debug!(faults = ?faults, "faults replaced");
    sim.set_faults(faults.clone());
    Json(faults).into_response()
}

async fn served_rows(State(sim): State<Arc<Simulator>>) -> Response {
    Json(json!({ "rows": sim.served_rows() })).into_response()
}

async fn unknown_route(method: Method, uri: Uri) -> Response {
    debug!(method = %method, path = %uri.path(), "unknown route");
    Reject::NotFound(format!("no resource at {method} {}", uri.path())).into_response()
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    sp_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "InvalidInput",
        &format!("{method} is not allowed on {}", uri.path()),
        "",
    )
}
