//! The HTTP API's contract: an OpenAPI 3.1 document generated with `utoipa` from the
//! handlers' own request and response types and their `#[utoipa::path]` annotations,
//! served at `GET /api/openapi.json` and checked in as `docs/openapi.json`
//! (`tests/suite/openapi.rs` fails when the two differ and says how to regenerate).
//!
//! What the document says beyond the types:
//!
//! - **Security**: the `admin_token` scheme (HTTP bearer) on every operation behind
//!   `require_admin`; those answer 401 (no or wrong token) and 403 (no token configured),
//!   which [`AdminErrors`] adds to each of them.
//! - **Errors**: every error status is the JSON [`ErrorBody`]. Besides each handler's own
//!   (400, 404, 409, 429, 500, 503), [`RequestGuards`] adds to every operation what the
//!   request guards in front of the router answer: 400 (a bad `Content-Length`), 408 (a
//!   body too slow), 413 (a body above 64 KiB), 414 (a target above 8 KiB) and 421 (a
//!   `Host` not allowed).
//!
//! `scripts/api-fuzz.sh` runs schemathesis against a running daemon with this document:
//! no 5xx, every status documented, every answer matching its schema.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{api, cluster, export, history, jobs, metrics};

/// The name of the bearer-token security scheme of the mutating endpoints.
pub const ADMIN_SCHEME: &str = "admin_token";

/// `{"status":"error","error":CODE,"message":TEXT}`: every error answer
/// ([`super::ApiError`]), whichever layer made it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub status: ErrorStatus,
    /// A stable code to branch on: `bad_request`, `unauthorized`, `admin_disabled`,
    /// `not_found`, `method_not_allowed`, `lock_live`, `not_quarantined`,
    /// `too_many_exports`, `payload_too_large`, `uri_too_long`, `request_timeout`,
    /// `host_not_allowed`, `unsupported_media_type`, `lock_backend_unavailable`,
    /// `quota_unavailable`, `internal`.
    #[schema(value_type = String)]
    pub error: &'static str,
    /// What was wrong and what to do about it, for a person.
    pub message: String,
}

/// `"success"`: the action was carried out.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SuccessStatus {
    Success,
}

/// `"error"`: the request was not carried out.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ErrorStatus {
    Error,
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "marketsync operator API",
        description = "The status, admin and export API of the marketsync daemon (the dashboard's data). Read endpoints are open on the listen address (127.0.0.1 by default); every mutating endpoint and the exports need `Authorization: Bearer <admin token>`, the value of the environment variable named by `[http] admin_token_env`. Errors are JSON `{\"status\":\"error\",\"error\":CODE,\"message\":TEXT}`. Responses are never cached (`Cache-Control: no-store`).",
        license(name = "MIT"),
    ),
    paths(
        dashboard_page,
        openapi_json,
        api::status,
        api::summary,
        api::failures,
        api::locks,
        cluster::cluster,
        api::budgets,
        jobs::list,
        jobs::tracked_list,
        history::hours,
        history::buckets,
        history::cursors,
        history::queues,
        metrics::scrape,
        api::refresh,
        api::fill_day,
        api::reset_failed,
        api::clear_cooldown,
        api::resume,
        jobs::enqueue,
        jobs::track,
        jobs::reset_failed,
        export::export,
        api::release_lock,
    ),
    components(schemas(ErrorBody, export::ExportKindName, export::ExportFormatName, jobs::JobProviderName)),
    modifiers(&AdminScheme, &AdminErrors, &RequestGuards),
    tags(
        (name = "status", description = "Where every account and stream stands; read only"),
        (name = "admin", description = "Operator actions; need the admin token"),
        (name = "jobs", description = "The job queue and the tracked keys of the freshness scheduler"),
        (name = "export", description = "The synced data as CSV or JSON lines; needs the admin token"),
        (name = "surface", description = "The dashboard page, Prometheus metrics and this document"),
    ),
)]
pub struct ApiDoc;

/// The document as served: pretty JSON with a trailing newline (the form checked in).
pub fn document_json() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|err| format!("{{\"error\": \"cannot encode the document: {err}\"}}"));
    text.push('\n');
    text
}

/// `GET /api/openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "surface",
    responses(
        (status = 200, description = "This OpenAPI 3.1 document", content_type = "application/json", body = Object),
    ),
)]
pub async fn openapi_json() -> Response {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let text = DOCUMENT.get_or_init(document_json).clone();
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

// Described here, not on `dashboard::page`, so the page's file stays the dashboard's own.
/// `GET /`: the dashboard page.
#[utoipa::path(
    get,
    path = "/",
    tag = "surface",
    responses(
        (status = 200, description = "The dashboard: one self-contained HTML page (inline CSS and JavaScript, no external requests)", content_type = "text/html", body = String),
    ),
)]
#[allow(dead_code)]
fn dashboard_page() {}

/// Adds the bearer scheme that `security(("admin_token" = []))` names.
struct AdminScheme;

impl Modify for AdminScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            ADMIN_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin token: the value of the environment variable named by `[http] admin_token_env`, compared in constant time. Never logged.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every operation, as a mutable reference.
fn operations(openapi: &mut utoipa::openapi::OpenApi) -> impl Iterator<Item = &mut Operation> {
    openapi.paths.paths.values_mut().flat_map(|item| {
        [
            item.get.as_mut(),
            item.put.as_mut(),
            item.post.as_mut(),
            item.delete.as_mut(),
            item.options.as_mut(),
            item.head.as_mut(),
            item.patch.as_mut(),
            item.trace.as_mut(),
        ]
        .into_iter()
        .flatten()
    })
}

/// An error response with the [`ErrorBody`] schema.
fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                    .build(),
            )
            .build(),
    )
}

/// Adds a response for `status` unless the handler documented that status itself.
fn add_response(operation: &mut Operation, status: &str, description: &str) {
    let responses = &mut operation.responses.responses;
    if !responses.contains_key(status) {
        responses.insert(status.to_string(), error_response(description));
    }
}

/// The 401 and 403 of `require_admin` on every operation behind it.
struct AdminErrors;

impl Modify for AdminErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for operation in operations(openapi) {
            let secured = operation.security.as_ref().is_some_and(|requirements| {
                serde_json::to_value(requirements)
                    .map(|value| value.to_string().contains(ADMIN_SCHEME))
                    .unwrap_or(false)
            });
            if secured {
                add_response(
                    operation,
                    "401",
                    "No `Authorization: Bearer` header, or not the admin token (with `WWW-Authenticate: Bearer`)",
                );
                add_response(
                    operation,
                    "403",
                    "No admin token is configured: mutating endpoints are disabled (`admin_disabled`)",
                );
            }
        }
    }
}

/// What the request guards in front of the router answer on any path.
struct RequestGuards;

impl Modify for RequestGuards {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for operation in operations(openapi) {
            add_response(
                operation,
                "400",
                "Bad input: an invalid `Content-Length`, query string or body (the message names what and shows the expected shape)",
            );
            add_response(
                operation,
                "408",
                "The body did not arrive within `[http] body_read_timeout`; the connection is closed",
            );
            add_response(
                operation,
                "413",
                "The body is above 64 KiB (refused on its `Content-Length` before it is read)",
            );
            add_response(operation, "414", "The request target is above 8 KiB");
            add_response(
                operation,
                "421",
                "The `Host` header names neither the listen address, localhost, 127.0.0.1, [::1] nor an `[http] allowed_hosts` entry (DNS rebinding)",
            );
        }
    }
}

/// A string schema whose values are `names` (an enum listed from the code's own
/// `ALL` constants, so the document cannot drift from them).
pub(crate) fn string_enum<'a>(
    description: &str,
    names: impl IntoIterator<Item = &'a str>,
) -> RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .description(Some(description))
        .enum_values(Some(names))
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_the_admin_scheme() {
        let value: serde_json::Value = serde_json::from_str(&document_json()).unwrap();
        assert_eq!(value["openapi"], "3.1.0");
        assert_eq!(
            value["components"]["securitySchemes"][ADMIN_SCHEME]["scheme"],
            "bearer"
        );
        let refresh = &value["paths"]["/api/accounts/{id}/refresh"]["post"];
        assert_eq!(refresh["security"][0][ADMIN_SCHEME], serde_json::json!([]));
        for status in ["200", "400", "401", "403", "404", "413", "421"] {
            assert!(
                refresh["responses"][status].is_object(),
                "refresh documents {status}: {refresh}"
            );
        }
        let status = &value["paths"]["/api/status"]["get"];
        assert!(
            status["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
                .as_str()
                .is_some_and(|reference| reference.ends_with("/StatusDocument"))
        );
        assert!(status["security"].is_null(), "reads are open: {status}");
        assert!(status["responses"]["401"].is_null(), "{status}");
    }

    /// The bounds the document gives for a query parameter.
    fn bounds(document: &serde_json::Value, path: &str, name: &str) -> (i64, i64) {
        let parameters = document["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{path} has parameters"));
        let parameter = parameters
            .iter()
            .find(|parameter| parameter["name"] == name && parameter["in"] == "query")
            .unwrap_or_else(|| panic!("{path} documents ?{name}"));
        let schema = &parameter["schema"];
        (
            schema["minimum"]
                .as_i64()
                .unwrap_or_else(|| panic!("{path} ?{name} minimum: {schema}")),
            schema["maximum"]
                .as_i64()
                .unwrap_or_else(|| panic!("{path} ?{name} maximum: {schema}")),
        )
    }

    #[test]
    fn documented_query_bounds_are_the_handlers_bounds() {
        let document: serde_json::Value = serde_json::from_str(&document_json()).unwrap();
        let summary = "/api/accounts/{id}/summary";
        assert_eq!(
            bounds(&document, summary, "hours"),
            (1, api::MAX_SUMMARY_HOURS)
        );
        assert_eq!(
            bounds(&document, summary, "asins"),
            (1, api::MAX_SUMMARY_ASINS)
        );
        assert_eq!(
            bounds(&document, "/api/failures", "limit"),
            (1, api::MAX_FAILURES)
        );
        assert_eq!(bounds(&document, "/api/jobs", "limit"), (1, jobs::MAX_LIST));
        assert_eq!(
            bounds(&document, "/api/tracked", "limit"),
            (1, jobs::MAX_LIST)
        );
        let track_items = &document["components"]["schemas"]["TrackBody"]["properties"]["items"];
        assert_eq!(
            track_items["maxItems"].as_u64(),
            Some(jobs::MAX_TRACK_ITEMS as u64),
            "{track_items}"
        );
        let kinds = &document["components"]["schemas"]["ExportKind"]["enum"];
        let expected: Vec<&str> = crate::store::export::ExportKind::ALL
            .iter()
            .map(|kind| kind.as_str())
            .collect();
        assert_eq!(kinds, &serde_json::json!(expected));
    }

    /// The key pattern and length the job bodies document are what the store accepts
    /// (it trims, then takes 1 to 64 of those characters).
    #[test]
    fn documented_job_key_rules_are_the_stores() {
        let document: serde_json::Value = serde_json::from_str(&document_json()).unwrap();
        let sku = &document["components"]["schemas"]["EnqueueBody"]["properties"]["sku"];
        let max = sku["maxLength"].as_u64().expect("maxLength") as usize;
        let pattern = sku["pattern"].as_str().expect("pattern");
        assert_eq!(pattern, "^[A-Za-z0-9._:/-][A-Za-z0-9._:/ -]*$");
        let job = |sku: String| crate::store::jobs::NewJob {
            provider: "stockx".to_string(),
            sku,
            size: Some("10".to_string()),
            priority: crate::store::jobs::JobPriority::Manual,
            source: "api".to_string(),
        };
        assert!(crate::store::jobs::validate(&job("A".repeat(max))).is_ok());
        assert!(crate::store::jobs::validate(&job("A".repeat(max + 1))).is_err());
        assert!(crate::store::jobs::validate(&job("aZ09._:/- x".to_string())).is_ok());
        assert!(crate::store::jobs::validate(&job("a#b".to_string())).is_err());
        let providers = &document["components"]["schemas"]["JobProvider"]["enum"];
        assert_eq!(
            providers,
            &serde_json::json!(crate::store::jobs::JOB_PROVIDERS)
        );
    }
}
