//! Tests of the SP-API client against a fake SP-API server: token caching and refresh,
//! error mapping (quota, HTTP, auth, invalid answers, transport) and the streamed download.

use super::*;
use axum::body::{Body, Bytes};
use axum::extract::{Form, Path as UrlPath, State};
use axum::http::{HeaderMap as AxumHeaders, StatusCode as AxumStatus};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

const CLIENT_ID: &str = "amzn1.application-oa2-client.test";
const CLIENT_SECRET: &str = "super-secret-client-secret";
const REFRESH_TOKEN: &str = "Atzr|super-secret-refresh-token";
const START: i64 = 1_765_238_400; // 2025-12-09T00:00:00Z

struct Fake {
    base: String,
    token_calls: AtomicUsize,
    api_calls: AtomicUsize,
    expires_in: AtomicU64,
    last_create: StdMutex<Option<serde_json::Value>>,
}

fn api_error(code: &str, message: &str, details: &str) -> serde_json::Value {
    serde_json::json!({"errors": [{"code": code, "message": message, "details": details}]})
}

fn token_of(headers: &AxumHeaders) -> String {
    headers
        .get(ACCESS_TOKEN_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn unauthorized() -> Response {
    let body = api_error(
        "Unauthorized",
        "Access to requested resource is denied.",
        "",
    );
    (AxumStatus::FORBIDDEN, Json(body)).into_response()
}

async fn token(
    State(fake): State<Arc<Fake>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let n = fake.token_calls.fetch_add(1, Ordering::SeqCst) + 1;
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    if field("grant_type") != "refresh_token" || field("client_id") != CLIENT_ID {
        return (
            AxumStatus::UNAUTHORIZED,
            Json(serde_json::json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    if field("refresh_token") != REFRESH_TOKEN || field("client_secret") != CLIENT_SECRET {
        let body = serde_json::json!({
            "error": "invalid_grant",
            "error_description": format!("bad refresh token {}", field("refresh_token")),
        });
        return (AxumStatus::BAD_REQUEST, Json(body)).into_response();
    }
    let body = serde_json::json!({
        "access_token": format!("Atza|tok-{n}"),
        "refresh_token": REFRESH_TOKEN,
        "token_type": "bearer",
        "expires_in": fake.expires_in.load(Ordering::SeqCst),
    });
    Json(body).into_response()
}

async fn create_report(
    State(fake): State<Arc<Fake>>,
    headers: AxumHeaders,
    Json(body): Json<serde_json::Value>,
) -> Response {
    fake.api_calls.fetch_add(1, Ordering::SeqCst);
    if !token_of(&headers).starts_with("Atza|tok-") {
        return unauthorized();
    }
    *fake.last_create.lock().unwrap() = Some(body);
    (
        AxumStatus::ACCEPTED,
        [("x-amzn-RateLimit-Limit", "0.0167")],
        Json(serde_json::json!({"reportId": "50001"})),
    )
        .into_response()
}

async fn get_report(
    State(fake): State<Arc<Fake>>,
    headers: AxumHeaders,
    UrlPath(id): UrlPath<String>,
) -> Response {
    fake.api_calls.fetch_add(1, Ordering::SeqCst);
    let token = token_of(&headers);
    if !token.starts_with("Atza|tok-") {
        return unauthorized();
    }
    let report = |status: &str| {
        serde_json::json!({
            "reportId": id,
            "reportType": VENDOR_RT_SALES_REPORT,
            "dataStartTime": "2025-12-09T00:00:00Z",
            "dataEndTime": "2025-12-09T06:00:00Z",
            "marketplaceIds": ["ATVPDKIKX0DER"],
            "processingStatus": status,
            "createdTime": "2025-12-09T07:00:00Z",
            "reportDocumentId": "amzn1.spdoc.1.4.na.doc-1",
        })
    };
    match id.as_str() {
        "expire-once" if token == "Atza|tok-1" => {
            let body = api_error(
                "Unauthorized",
                "Access to requested resource is denied.",
                "The access token you provided has expired.",
            );
            (AxumStatus::FORBIDDEN, Json(body)).into_response()
        }
        "always-expired" => {
            let body = api_error(
                "Unauthorized",
                "Access to requested resource is denied.",
                "The access token you provided has expired.",
            );
            (AxumStatus::FORBIDDEN, Json(body)).into_response()
        }
        "denied" => unauthorized(),
        "quota" => {
            let body = api_error(
                "QuotaExceeded",
                "You exceeded your quota for the requested resource.",
                "",
            );
            (
                AxumStatus::TOO_MANY_REQUESTS,
                [("Retry-After", "7"), ("x-amzn-RateLimit-Limit", "2.0")],
                Json(body),
            )
                .into_response()
        }
        "boom" => {
            let body = api_error(
                "InternalFailure",
                "We encountered an internal error. Please try again.",
                "",
            );
            (AxumStatus::INTERNAL_SERVER_ERROR, Json(body)).into_response()
        }
        "weird" => Json(report("EXPLODED")).into_response(),
        "garbage" => (AxumStatus::OK, "{\"reportId\": ").into_response(),
        _ => ([("x-amzn-RateLimit-Limit", "2.0")], Json(report("DONE"))).into_response(),
    }
}

async fn get_document(
    State(fake): State<Arc<Fake>>,
    headers: AxumHeaders,
    UrlPath(id): UrlPath<String>,
) -> Response {
    fake.api_calls.fetch_add(1, Ordering::SeqCst);
    if !token_of(&headers).starts_with("Atza|tok-") {
        return unauthorized();
    }
    let mut body = serde_json::json!({
        "reportDocumentId": id,
        "url": format!("{}/download/{id}?X-Amz-Signature=secret", fake.base),
    });
    if id != "plain" {
        body["compressionAlgorithm"] = serde_json::json!("GZIP");
    }
    Json(body).into_response()
}

async fn download(headers: AxumHeaders, UrlPath(id): UrlPath<String>) -> Response {
    if headers.contains_key(ACCESS_TOKEN_HEADER) {
        return (
            AxumStatus::BAD_REQUEST,
            "access token sent to the storage host",
        )
            .into_response();
    }
    match id.as_str() {
        "expired" => (
            AxumStatus::FORBIDDEN,
            "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
        )
            .into_response(),
        "quota" => (
            AxumStatus::TOO_MANY_REQUESTS,
            [("Retry-After", "3")],
            "SlowDown",
        )
            .into_response(),
        _ => {
            // 40 chunks of 5000 bytes, without a Content-Length.
            let chunks = (0..40u8).map(|i| Ok::<_, std::io::Error>(Bytes::from(vec![i; 5000])));
            (
                [("x-amzn-RateLimit-Limit", "10")],
                Body::from_stream(futures_util::stream::iter(chunks)),
            )
                .into_response()
        }
    }
}

async fn start_fake() -> Arc<Fake> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let fake = Arc::new(Fake {
        base,
        token_calls: AtomicUsize::new(0),
        api_calls: AtomicUsize::new(0),
        expires_in: AtomicU64::new(3600),
        last_create: StdMutex::new(None),
    });
    let app = Router::new()
        .route("/auth/o2/token", post(token))
        .route("/reports/2021-06-30/reports", post(create_report))
        .route("/reports/2021-06-30/reports/{id}", get(get_report))
        .route("/reports/2021-06-30/documents/{id}", get(get_document))
        .route("/download/{id}", get(download))
        .with_state(Arc::clone(&fake));
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    fake
}

fn client_with(fake: &Fake, refresh_token: &str) -> SpApiClient {
    SpApiClient::new(
        reqwest::Client::new(),
        SpApiEndpoints {
            api_base: format!("{}/", fake.base),
            lwa_token_url: format!("{}/auth/o2/token", fake.base),
        },
        LwaCredentials {
            client_id: CLIENT_ID.to_string(),
            client_secret: CLIENT_SECRET.to_string(),
            refresh_token: refresh_token.to_string(),
        },
    )
}

fn client(fake: &Fake) -> SpApiClient {
    client_with(fake, REFRESH_TOKEN)
}

#[test]
fn client_is_send_sync_and_debug_redacts() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SpApiClient>();
    let credentials = LwaCredentials {
        client_id: CLIENT_ID.to_string(),
        client_secret: CLIENT_SECRET.to_string(),
        refresh_token: REFRESH_TOKEN.to_string(),
    };
    let text = format!("{credentials:?}");
    assert!(
        !text.contains(CLIENT_SECRET) && !text.contains(REFRESH_TOKEN) && !text.contains(CLIENT_ID),
        "{text}"
    );
    assert!(text.contains("<redacted>"));
}

#[tokio::test]
async fn token_is_cached_across_calls() {
    let fake = start_fake().await;
    let client = client(&fake);
    let window = HourWindow::new(START, START + 6 * 3600);
    let id = client
        .create_report(VENDOR_RT_SALES_REPORT, "ATVPDKIKX0DER", window)
        .await
        .unwrap();
    assert_eq!(id, "50001");
    let status = client.get_report(&id).await.unwrap();
    assert_eq!(status.processing_status, ProcessingStatus::Done);
    assert_eq!(
        status.report_document_id.as_deref(),
        Some("amzn1.spdoc.1.4.na.doc-1")
    );
    assert_eq!(status.data_start, Some(START));
    assert_eq!(status.data_end, Some(START + 6 * 3600));
    assert_eq!(
        fake.token_calls.load(Ordering::SeqCst),
        1,
        "one token exchange for two calls"
    );
    assert_eq!(fake.api_calls.load(Ordering::SeqCst), 2);
    let sent = fake.last_create.lock().unwrap().clone().unwrap();
    assert_eq!(
        sent,
        serde_json::json!({
            "reportType": "GET_VENDOR_REAL_TIME_SALES_REPORT",
            "marketplaceIds": ["ATVPDKIKX0DER"],
            "dataStartTime": "2025-12-09T00:00:00Z",
            "dataEndTime": "2025-12-09T06:00:00Z",
        })
    );
    assert_eq!(client.observed_rate_limit("createReport"), Some(0.0167));
    assert_eq!(client.observed_rate_limit("getReport"), Some(2.0));
    assert_eq!(client.observed_rate_limit("getReportDocument"), None);
}

#[tokio::test]
async fn token_within_the_refresh_margin_is_refreshed() {
    let fake = start_fake().await;
    fake.expires_in.store(30, Ordering::SeqCst); // already inside the 60 s margin
    let client = client(&fake);
    client.get_report("1").await.unwrap();
    client.get_report("2").await.unwrap();
    assert_eq!(fake.token_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn expired_token_is_refreshed_once_and_the_call_retried() {
    let fake = start_fake().await;
    let client = client(&fake);
    let status = client.get_report("expire-once").await.unwrap();
    assert_eq!(status.processing_status, ProcessingStatus::Done);
    assert_eq!(fake.token_calls.load(Ordering::SeqCst), 2);
    assert_eq!(fake.api_calls.load(Ordering::SeqCst), 2);

    // A token that stays "expired" after the refresh is an auth failure, not a loop.
    let err = client.get_report("always-expired").await.unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::Auth {
                operation: "getReport",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(fake.token_calls.load(Ordering::SeqCst), 3);
    assert_eq!(fake.api_calls.load(Ordering::SeqCst), 4);

    // Any other 403 is an auth failure without a refresh.
    let err = client.get_report("denied").await.unwrap_err();
    assert!(matches!(err, ProviderError::Auth { .. }), "{err:?}");
    assert_eq!(fake.token_calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn quota_exceeded_carries_retry_after_and_message() {
    let fake = start_fake().await;
    let client = client(&fake);
    let err = client.get_report("quota").await.unwrap_err();
    match &err {
        ProviderError::QuotaExceeded {
            operation,
            retry_after,
            rate_limit,
            message,
        } => {
            assert_eq!(*operation, "getReport");
            assert_eq!(*retry_after, Some(Duration::from_secs(7)));
            assert_eq!(*rate_limit, Some(2.0));
            assert_eq!(
                message,
                "You exceeded your quota for the requested resource."
            );
        }
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
    assert!(err.is_quota());
}

#[tokio::test]
async fn server_error_is_http() {
    let fake = start_fake().await;
    let client = client(&fake);
    let err = client.get_report("boom").await.unwrap_err();
    match &err {
        ProviderError::Http {
            operation,
            status,
            body,
        } => {
            assert_eq!(*operation, "getReport");
            assert_eq!(*status, 500);
            assert!(body.contains("InternalFailure"), "{body}");
        }
        other => panic!("expected Http, got {other:?}"),
    }
    assert!(err.is_transient());
}

#[tokio::test]
async fn bad_answers_are_invalid_responses() {
    let fake = start_fake().await;
    let client = client(&fake);
    for id in ["weird", "garbage"] {
        let err = client.get_report(id).await.unwrap_err();
        assert!(
            matches!(
                err,
                ProviderError::InvalidResponse {
                    operation: "getReport",
                    ..
                }
            ),
            "{id}: {err:?}"
        );
    }
}

#[tokio::test]
async fn refused_refresh_token_is_auth_naming_the_lwa_code() {
    let fake = start_fake().await;
    let client = client_with(&fake, "Atzr|wrong-and-secret");
    let err = client.get_report("1").await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            ProviderError::Auth {
                operation: "lwa_token",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(text.contains("invalid_grant"), "{text}");
    assert!(
        !text.contains("wrong-and-secret") && !text.contains(CLIENT_SECRET),
        "{text}"
    );
    assert_eq!(fake.api_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn unreachable_endpoint_is_transport() {
    // Bind then drop a listener: nothing listens on that port any more.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = SpApiClient::new(
        reqwest::Client::new(),
        SpApiEndpoints {
            api_base: format!("http://{addr}"),
            lwa_token_url: format!("http://{addr}/auth/o2/token"),
        },
        LwaCredentials {
            client_id: CLIENT_ID.to_string(),
            client_secret: CLIENT_SECRET.to_string(),
            refresh_token: REFRESH_TOKEN.to_string(),
        },
    );
    let err = client.get_report("1").await.unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::Transport {
                operation: "lwa_token",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn download_streams_the_body_to_a_file() {
    let fake = start_fake().await;
    let client = client(&fake);
    let dir = tempfile::tempdir().unwrap();
    let document = client
        .get_report_document("amzn1.spdoc.1.4.na.doc-1")
        .await
        .unwrap();
    assert!(document.gzip);
    assert_eq!(document.report_document_id, "amzn1.spdoc.1.4.na.doc-1");
    let plain = client.get_report_document("plain").await.unwrap();
    assert!(!plain.gzip);

    let dest = dir.path().join("doc.json.gz");
    std::fs::write(&dest, b"stale content that must be truncated away").unwrap();
    let written = client
        .download_document(&document, &dest, 1 << 20)
        .await
        .unwrap();
    assert_eq!(written, 200_000);
    let bytes = std::fs::read(&dest).unwrap();
    assert_eq!(bytes.len(), 200_000);
    assert!(bytes
        .chunks(5000)
        .enumerate()
        .all(|(i, chunk)| chunk.iter().all(|b| usize::from(*b) == i)));
    assert_eq!(client.observed_rate_limit("downloadDocument"), Some(10.0));
    assert_eq!(fake.token_calls.load(Ordering::SeqCst), 1);

    // Over the limit: InvalidResponse, and no partial file left behind.
    let capped = dir.path().join("capped.json.gz");
    let err = client
        .download_document(&document, &capped, 50_000)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::InvalidResponse {
                operation: "downloadDocument",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!capped.exists());
}

#[tokio::test]
async fn download_errors_map_to_provider_errors() {
    let fake = start_fake().await;
    let client = client(&fake);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("doc.json.gz");

    let expired = client.get_report_document("expired").await.unwrap();
    let err = client
        .download_document(&expired, &dest, 1 << 20)
        .await
        .unwrap_err();
    match &err {
        ProviderError::Auth { operation, message } => {
            assert_eq!(*operation, "downloadDocument");
            assert!(message.contains("Request has expired"), "{message}");
        }
        other => panic!("expected Auth, got {other:?}"),
    }
    assert!(!err.to_string().contains("X-Amz-Signature"), "{err}");

    let quota = client.get_report_document("quota").await.unwrap();
    let err = client
        .download_document(&quota, &dest, 1 << 20)
        .await
        .unwrap_err();
    match err {
        ProviderError::QuotaExceeded {
            operation,
            retry_after,
            message,
            ..
        } => {
            assert_eq!(operation, "downloadDocument");
            assert_eq!(retry_after, Some(Duration::from_secs(3)));
            assert_eq!(message, "SlowDown");
        }
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
    assert!(!dest.exists());
}
