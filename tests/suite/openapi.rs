//! The HTTP API's OpenAPI contract (`src/http/openapi.rs`) against the real server over
//! real HTTP: the document served at `/api/openapi.json` is the checked-in
//! `docs/openapi.json`; every route `src/http/mod.rs` mounts is documented and every
//! documented operation is routed; each operation, called, answers a status it documents
//! with a documented content type; and the operations behind the admin token say so and
//! answer 401 without it. The property-based test of the same document (schemathesis
//! against a running daemon) is `scripts/api-fuzz.sh`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

use crate::common::{fast_sim, Fixture, TestSim};
use crate::suite::http::{Server, TOKEN};

const REGENERATE: &str = "regenerate it with `MARKETSYNC_UPDATE_OPENAPI=1 cargo nextest run --features testing -E 'test(openapi)'` (or `curl -s http://127.0.0.1:8080/api/openapi.json > docs/openapi.json` from a running daemon) and commit it";

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

async fn served_document(server: &Server) -> (String, String) {
    let response = server
        .client
        .get(server.url("/api/openapi.json"))
        .send()
        .await
        .expect("get /api/openapi.json");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (content_type, response.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_served_is_the_checked_in_docs_openapi_json() {
    let sim = TestSim::start(fast_sim()).await;
    let fixture = Fixture::new(&sim, "");
    let server = Server::start(&fixture.config, fixture.open_ledger(), Some(TOKEN)).await;
    let (content_type, served) = served_document(&server).await;
    assert_eq!(content_type, "application/json");
    let document: Value = serde_json::from_str(&served).expect("the document is JSON");
    assert_eq!(document["openapi"], "3.1.0", "an OpenAPI 3.1 document");

    let path = repo_file("docs/openapi.json");
    if std::env::var_os("MARKETSYNC_UPDATE_OPENAPI").is_some_and(|value| value == "1") {
        std::fs::write(&path, &served).expect("write docs/openapi.json");
        return;
    }
    let checked_in = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read docs/openapi.json ({err}); {REGENERATE}"));
    if checked_in != served {
        let first_difference = checked_in
            .lines()
            .zip(served.lines())
            .position(|(old, new)| old != new)
            .map_or_else(
                || "one is a prefix of the other".to_string(),
                |index| {
                    format!(
                        "line {}: checked in {:?}, served {:?}",
                        index + 1,
                        checked_in.lines().nth(index).unwrap_or_default(),
                        served.lines().nth(index).unwrap_or_default()
                    )
                },
            );
        panic!("docs/openapi.json is not the document the server serves ({first_difference}); {REGENERATE}");
    }
}

/// `(METHOD, path)` of every `.route("path", method(...))` in `src/http/mod.rs`.
fn mounted_routes() -> BTreeSet<(String, String)> {
    let source = std::fs::read_to_string(repo_file("src/http/mod.rs")).expect("read mod.rs");
    let mut routes = BTreeSet::new();
    let mut rest = source.as_str();
    while let Some(start) = rest.find(".route(") {
        rest = &rest[start + ".route(".len()..];
        let Some(open) = rest.find('"') else { break };
        let Some(close) = rest[open + 1..].find('"') else {
            break;
        };
        let path = &rest[open + 1..open + 1 + close];
        let after = rest[open + 1 + close + 1..].trim_start_matches([',', ' ', '\n', '\r']);
        let method: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        assert!(
            ["get", "post", "put", "delete", "patch"].contains(&method.as_str()),
            "cannot read the method of route {path:?} in src/http/mod.rs (got {method:?})"
        );
        routes.insert((method.to_ascii_uppercase(), path.to_string()));
    }
    routes
}

/// `(METHOD, path)` of every operation in the document.
fn documented_operations(document: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            operations.insert((method.to_ascii_uppercase(), path.clone()));
        }
    }
    operations
}

/// A concrete request target for `path`: the fixture's account and stream, `sales` as
/// the export kind.
fn concrete(path: &str) -> String {
    path.replace("{id}", "acct")
        .replace("{account}", "acct")
        .replace("{stream}", "vendor_rt_sales")
        .replace("{kind}", "sales")
}

fn is_secured(operation: &Value) -> bool {
    operation["security"]
        .as_array()
        .is_some_and(|requirements| requirements.iter().any(|r| r.get("admin_token").is_some()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_every_route_is_documented_and_answers_as_documented() {
    let sim = TestSim::start(fast_sim()).await;
    let fixture = Fixture::new(&sim, "");
    let server = Server::start(&fixture.config, fixture.open_ledger(), Some(TOKEN)).await;
    let (_, served) = served_document(&server).await;
    let document: Value = serde_json::from_str(&served).expect("JSON");

    let mounted = mounted_routes();
    let documented = documented_operations(&document);
    assert!(mounted.len() >= 20, "routes read from mod.rs: {mounted:?}");
    let undocumented: Vec<_> = mounted.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes mounted in src/http/mod.rs but missing from the OpenAPI document: {undocumented:?}; annotate the handler with #[utoipa::path(...)] and list it in ApiDoc's paths (src/http/openapi.rs)"
    );
    let unrouted: Vec<_> = documented.difference(&mounted).collect();
    assert!(
        unrouted.is_empty(),
        "operations documented but not routed: {unrouted:?}"
    );

    let bodies = [
        ("/api/accounts/{id}/refresh", r#"{"window":"last_3h"}"#),
        ("/api/accounts/{id}/fill-day", r#"{"date":"1999-01-01"}"#),
        ("/api/jobs", r#"{"provider":"stockx","sku":"DD1391-100"}"#),
        ("/api/tracked", r#"{"provider":"keepa","sku":"B07FZ8S74R"}"#),
    ];
    for (method, path) in &documented {
        let operation = &document["paths"][path][method.to_ascii_lowercase()];
        let target = server.url(&concrete(path));
        let body = bodies
            .iter()
            .find(|(body_path, _)| body_path == path)
            .map_or("", |(_, body)| *body);
        let request = |token: Option<&str>| {
            let mut request = match method.as_str() {
                "GET" => server.client.get(&target),
                "POST" => server.client.post(&target).body(body.to_string()),
                other => panic!("unexpected method {other}"),
            };
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            request
        };
        let response = request(Some(TOKEN)).send().await.expect("request");
        let status = response.status().as_u16().to_string();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = response.text().await.unwrap_or_default();
        let documented_response = &operation["responses"][&status];
        assert!(
            documented_response.is_object(),
            "{method} {path} answered {status}, which the document does not list: {text}"
        );
        assert!(
            !text.contains("no endpoint"),
            "{method} {path} is not routed: {text}"
        );
        let media = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let documented_media: Vec<&String> = documented_response["content"]
            .as_object()
            .map(|content| content.keys().collect())
            .unwrap_or_default();
        assert!(
            documented_media.iter().any(|known| **known == media),
            "{method} {path} answered {status} as {content_type:?}; documented: {documented_media:?}"
        );

        // The admin scheme in the document is the router's require_admin.
        let without_token = request(None).send().await.expect("request");
        if is_secured(operation) {
            assert_eq!(
                without_token.status().as_u16(),
                401,
                "{method} {path} is documented as needing the admin token"
            );
        } else {
            assert_ne!(
                without_token.status().as_u16(),
                401,
                "{method} {path} answers 401 without a token but documents no security"
            );
        }
    }
}
