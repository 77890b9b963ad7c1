//! Tests of the SP-API side of the simulator over real HTTP: the create/poll/download flow,
//! throttling, tokens, input validation, report phases, scheduled and probabilistic faults,
//! document URL expiry, and the serde round trip of the settings.

use std::io::Read;

use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::state::Outcome;
use super::*;
use crate::domain::{parse_ts, SalesRow};

const MARKETPLACE: &str = "ATVPDKIKX0DER";
const START: &str = "2025-12-09T00:00:00Z";
const END: &str = "2025-12-09T06:00:00Z";
const QUOTA_BODY: &str = r#"{"errors":[{"code":"QuotaExceeded","message":"You exceeded your quota for the requested resource.","details":""}]}"#;

/// A simulator serving on an ephemeral port.
struct Running {
    sim: Arc<Simulator>,
    base: String,
    client: reqwest::Client,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

fn instant_config() -> SimConfig {
    SimConfig {
        processing_latency: Duration::ZERO,
        asins_per_marketplace: 8,
        ..SimConfig::default()
    }
}

async fn start(config: SimConfig) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    let sim = Simulator::new(config);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, Arc::clone(&sim), async move {
        let _ = stopped.await;
    }));
    Running {
        sim,
        base,
        client: reqwest::Client::new(),
        stop,
        task,
    }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("server task")
            .expect("server result");
    }

    async fn token(&self, seller: &str) -> String {
        let response = self
            .client
            .post(format!("{}/auth/o2/token", self.base))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", seller),
                ("client_id", "client"),
                ("client_secret", "secret"),
            ])
            .send()
            .await
            .expect("token request");
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("token json");
        assert_eq!(body["token_type"], "bearer");
        assert_eq!(body["refresh_token"], seller);
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    async fn create(&self, token: &str, body: Value) -> reqwest::Response {
        self.client
            .post(format!("{}/reports/2021-06-30/reports", self.base))
            .header("x-amz-access-token", token)
            .json(&body)
            .send()
            .await
            .expect("createReport request")
    }

    async fn create_ok(&self, token: &str, start: &str, end: &str) -> String {
        let response = self.create(token, report_request(start, end)).await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.expect("createReport json");
        body["reportId"].as_str().expect("reportId").to_string()
    }

    async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .header("x-amz-access-token", token)
            .send()
            .await
            .expect("get request")
    }

    async fn report(&self, token: &str, report_id: &str) -> Value {
        let response = self
            .get(token, &format!("/reports/2021-06-30/reports/{report_id}"))
            .await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("getReport json")
    }

    /// getReportDocument then the download; returns the raw (gzip) bytes.
    async fn download(&self, token: &str, document_id: &str) -> Vec<u8> {
        let response = self
            .get(
                token,
                &format!("/reports/2021-06-30/documents/{document_id}"),
            )
            .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("getReportDocument json");
        assert_eq!(body["compressionAlgorithm"], "GZIP");
        let url = body["url"].as_str().expect("url");
        let response = self.client.get(url).send().await.expect("download");
        assert_eq!(response.status(), 200);
        response.bytes().await.expect("document bytes").to_vec()
    }
}

fn report_request(start: &str, end: &str) -> Value {
    json!({
        "reportType": "GET_VENDOR_REAL_TIME_SALES_REPORT",
        "marketplaceIds": [MARKETPLACE],
        "dataStartTime": start,
        "dataEndTime": end,
    })
}

fn gunzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out)?;
    Ok(out)
}

fn document_rows(document: &Value) -> Vec<SalesRow> {
    document["reportData"]
        .as_array()
        .expect("reportData")
        .iter()
        .map(|row| {
            let start = parse_ts(row["startTime"].as_str().expect("startTime")).expect("ts");
            let end = parse_ts(row["endTime"].as_str().expect("endTime")).expect("ts");
            assert_eq!(end - start, HOUR);
            SalesRow {
                hour_utc: start,
                asin: row["asin"].as_str().expect("asin").to_string(),
                ordered_units: row["orderedUnits"].as_i64().expect("orderedUnits"),
                ordered_revenue: row["orderedRevenue"].as_f64().expect("orderedRevenue"),
            }
        })
        .collect()
}

fn expected_rows(seed: u64, asins: u32, start: &str, end: &str) -> Vec<SalesRow> {
    let start = parse_ts(start).expect("start");
    let end = parse_ts(end).expect("end");
    amazon::full_hours(start, end)
        .flat_map(|hour| amazon::vendor_sales_rows(seed, MARKETPLACE, asins, hour))
        .collect()
}

#[tokio::test]
async fn create_poll_download_serves_vendor_sales_rows() {
    let running = start(instant_config()).await;
    let token = running.token("seller-a").await;

    let response = running.create(&token, report_request(START, END)).await;
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["x-amzn-ratelimit-limit"], "0.0167");
    let body: Value = response.json().await.expect("json");
    let report_id = body["reportId"].as_str().expect("reportId").to_string();

    let response = running
        .get(&token, &format!("/reports/2021-06-30/reports/{report_id}"))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-amzn-ratelimit-limit"], "2.0");
    let report: Value = response.json().await.expect("json");
    assert_eq!(report["processingStatus"], "DONE");
    assert_eq!(report["reportId"], report_id.as_str());
    assert_eq!(report["reportType"], "GET_VENDOR_REAL_TIME_SALES_REPORT");
    assert_eq!(report["dataStartTime"], START);
    assert_eq!(report["dataEndTime"], END);
    assert_eq!(report["marketplaceIds"], json!([MARKETPLACE]));
    assert!(report["createdTime"].is_string());
    assert!(report["processingEndTime"].is_string());
    let document_id = report["reportDocumentId"]
        .as_str()
        .expect("reportDocumentId");

    let bytes = running.download(&token, document_id).await;
    let document: Value =
        serde_json::from_slice(&gunzip(&bytes).expect("gunzip")).expect("document json");
    let spec = &document["reportSpecification"];
    assert_eq!(spec["reportType"], "GET_VENDOR_REAL_TIME_SALES_REPORT");
    assert_eq!(spec["dataStartTime"], START);
    assert_eq!(spec["dataEndTime"], END);
    assert_eq!(spec["marketplaceIds"], json!([MARKETPLACE]));
    let rows = document_rows(&document);
    let expected = expected_rows(42, 8, START, END);
    assert!(!expected.is_empty());
    assert_eq!(rows, expected);

    let served = running.sim.served_rows();
    assert_eq!(
        served.iter().map(ServedRow::sales_row).collect::<Vec<_>>(),
        expected
    );
    assert!(served
        .iter()
        .all(|row| row.seller == "seller-a" && row.marketplace == MARKETPLACE));

    // The control endpoints say the same over HTTP.
    let stats: SimStats = running
        .client
        .get(format!("{}/_sim/stats", running.base))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats json");
    assert_eq!(stats, running.sim.stats());
    for operation in [
        "token",
        "createReport",
        "getReport",
        "getReportDocument",
        "downloadDocument",
    ] {
        assert_eq!(stats.calls(operation), 1, "{operation}");
        assert_eq!(stats.throttled(operation), 0, "{operation}");
    }
    let served_json: Value = running
        .client
        .get(format!("{}/_sim/served", running.base))
        .send()
        .await
        .expect("served")
        .json()
        .await
        .expect("served json");
    assert_eq!(
        served_json["rows"].as_array().map(Vec::len),
        Some(served.len())
    );
    running.stop().await;
}

#[tokio::test]
async fn create_report_is_throttled_once_the_burst_is_spent() {
    let mut config = instant_config();
    config.rates.insert(
        "createReport".to_string(),
        RateSpec {
            rate: 0.001,
            burst: 2.0,
        },
    );
    config.faults.retry_after_secs = Some(7);
    let running = start(config).await;
    let token = running.token("seller-a").await;
    running.create_ok(&token, START, END).await;
    running.create_ok(&token, START, END).await;

    let response = running.create(&token, report_request(START, END)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    assert!(response.headers().get("x-amzn-ratelimit-limit").is_none());
    assert_eq!(response.text().await.expect("body"), QUOTA_BODY);

    // Buckets are per seller.
    let other = running.token("seller-b").await;
    running.create_ok(&other, START, END).await;

    let stats = running.sim.stats();
    assert_eq!(stats.calls("createReport"), 4);
    assert_eq!(stats.throttled("createReport"), 1);
    assert_eq!(
        stats.max_bucket_throttles(),
        Some(("seller-a/createReport", 1))
    );
    assert_eq!(stats.bucket_throttles.len(), 1);
    running.stop().await;
}

#[tokio::test]
async fn rate_limit_header_announces_the_rate_on_the_real_clock_under_time_scale() {
    // At 60x the buckets refill 60 times faster on the real clock: a client pacing on
    // the real clock must read rate x 60 (Amazon's 0.0167/s createReport becomes 1.002/s).
    let running = start(SimConfig {
        time_scale: 60.0,
        ..instant_config()
    })
    .await;
    let token = running.token("seller-a").await;
    let response = running.create(&token, report_request(START, END)).await;
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["x-amzn-ratelimit-limit"], "1.002");
    let body: Value = response.json().await.expect("createReport json");
    let report_id = body["reportId"].as_str().expect("reportId");
    let response = running
        .get(&token, &format!("/reports/2021-06-30/reports/{report_id}"))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-amzn-ratelimit-limit"], "120.0");
    running.stop().await;

    // And the announced rate is the one the bucket keeps: 15 burst, then one token per
    // 1/1.002 s of real time (not one per minute).
    let running = start(SimConfig {
        time_scale: 60.0,
        ..instant_config()
    })
    .await;
    let token = running.token("seller-a").await;
    for _ in 0..15 {
        running.create_ok(&token, START, END).await;
    }
    let response = running.create(&token, report_request(START, END)).await;
    assert_eq!(response.status(), 429);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    running.create_ok(&token, START, END).await;
    running.stop().await;

    // At time_scale 1 the header is the documented rate, unchanged.
    let running = start(instant_config()).await;
    let token = running.token("seller-a").await;
    let response = running.create(&token, report_request(START, END)).await;
    assert_eq!(response.headers()["x-amzn-ratelimit-limit"], "0.0167");
    running.stop().await;
}

#[tokio::test]
async fn duplicate_create_reports_are_counted_unless_the_earlier_one_failed() {
    // Reports that stay IN_QUEUE: a second request for the same key is a duplicate.
    let running = start(SimConfig {
        processing_latency: Duration::from_secs(3600),
        ..instant_config()
    })
    .await;
    let token = running.token("seller-a").await;
    let first = running.create_ok(&token, START, END).await;
    assert_eq!(running.sim.stats().duplicate_reports(), 0);
    let second = running.create_ok(&token, START, END).await;
    assert_eq!(running.sim.stats().duplicate_reports(), 1);
    // Another window, and the same window of another seller, are not duplicates.
    running.create_ok(&token, END, "2025-12-09T12:00:00Z").await;
    let other = running.token("seller-b").await;
    running.create_ok(&other, START, END).await;
    assert_eq!(running.sim.stats().duplicate_reports(), 1);
    // Once every earlier report of the key is CANCELLED, asking again is not a duplicate.
    for report_id in [&first, &second] {
        let response = running
            .client
            .delete(format!(
                "{}/reports/2021-06-30/reports/{report_id}",
                running.base
            ))
            .header("x-amz-access-token", &token)
            .send()
            .await
            .expect("cancelReport request");
        assert_eq!(response.status(), 200);
    }
    running.create_ok(&token, START, END).await;
    assert_eq!(running.sim.stats().duplicate_reports(), 1);
    running.stop().await;

    // FATAL does not count either; DONE does (its document is there to download).
    let mut config = instant_config();
    config.faults.schedule = vec![ScheduledFault {
        operation: "createReport".to_string(),
        nth: 1,
        fault: FaultKind::Fatal,
    }];
    let running = start(config).await;
    let token = running.token("seller-a").await;
    let fatal = running.create_ok(&token, START, END).await;
    assert_eq!(
        running.report(&token, &fatal).await["processingStatus"],
        "FATAL"
    );
    let done = running.create_ok(&token, START, END).await;
    assert_eq!(running.sim.stats().duplicate_reports(), 0);
    assert_eq!(
        running.report(&token, &done).await["processingStatus"],
        "DONE"
    );
    running.create_ok(&token, START, END).await;
    let stats = running.sim.stats();
    assert_eq!(stats.duplicate_reports(), 1);
    assert_eq!(stats.duplicate_create_reports, 1);
    running.stop().await;
}

#[tokio::test]
async fn unknown_and_expired_tokens_are_refused() {
    let running = start(SimConfig {
        token_lifetime: Duration::ZERO,
        ..instant_config()
    })
    .await;
    let response = running
        .create("not-a-token", report_request(START, END))
        .await;
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.text().await.expect("body"),
        r#"{"errors":[{"code":"Unauthorized","message":"Access to requested resource is denied.","details":""}]}"#
    );

    let expired = running.token("seller-a").await;
    let response = running.get(&expired, "/reports/2021-06-30/reports/1").await;
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.text().await.expect("body"),
        r#"{"errors":[{"code":"Unauthorized","message":"Access to requested resource is denied.","details":"The access token you provided has expired."}]}"#
    );

    let response = running
        .client
        .post(format!("{}/auth/o2/token", running.base))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "c"),
            ("client_secret", "s"),
        ])
        .send()
        .await
        .expect("token");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], "invalid_request");

    let response = running
        .client
        .post(format!("{}/auth/o2/token", running.base))
        .body("not a form")
        .send()
        .await
        .expect("token");
    assert_eq!(response.status(), 400);
    assert_eq!(running.sim.stats().calls("token"), 3);
    running.stop().await;
}

#[tokio::test]
async fn create_report_validates_its_input() {
    let running = start(instant_config()).await;
    let token = running.token("seller-a").await;
    let cases = [
        (
            json!({"reportType": "GET_FLAT_FILE_OPEN_LISTINGS_DATA", "marketplaceIds": [MARKETPLACE], "dataStartTime": START, "dataEndTime": END}),
            "reportType",
        ),
        (
            json!({"reportType": "GET_VENDOR_REAL_TIME_SALES_REPORT", "marketplaceIds": [MARKETPLACE, "A2EUQ1WTGCTBG2"], "dataStartTime": START, "dataEndTime": END}),
            "marketplaceIds",
        ),
        (
            json!({"reportType": "GET_VENDOR_REAL_TIME_SALES_REPORT", "marketplaceIds": [MARKETPLACE], "dataStartTime": "yesterday", "dataEndTime": END}),
            "dataStartTime",
        ),
        // dataEndTime defaults to now (reports_2021-06-30, CreateReportSpecification), so
        // a dataStartTime after it is refused, as is a start after the end.
        (
            json!({"reportType": "GET_VENDOR_REAL_TIME_SALES_REPORT", "marketplaceIds": [MARKETPLACE], "dataEndTime": START, "dataStartTime": "2099-01-01T00:00:00Z"}),
            "dataStartTime",
        ),
        (
            json!({"reportType": "GET_VENDOR_REAL_TIME_SALES_REPORT", "marketplaceIds": [MARKETPLACE], "dataStartTime": 17}),
            "dataStartTime",
        ),
        (report_request(END, START), "dataStartTime"),
        (report_request(START, "2026-01-09T00:00:00Z"), "dataEndTime"),
        (json!([1, 2]), "body"),
    ];
    for (body, field) in cases {
        let response = running.create(&token, body.clone()).await;
        assert_eq!(response.status(), 400, "{body}");
        let answer: Value = response.json().await.expect("json");
        assert_eq!(answer["errors"][0]["code"], "InvalidInput");
        let message = answer["errors"][0]["message"].as_str().expect("message");
        assert!(message.starts_with(field), "{message} should name {field}");
    }
    let response = running
        .client
        .post(format!("{}/reports/2021-06-30/reports", running.base))
        .header("x-amz-access-token", &token)
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 400);
    let response = running
        .get(&token, "/reports/2021-06-30/nothing-here")
        .await;
    assert_eq!(response.status(), 404);
    running.stop().await;
}

#[tokio::test]
async fn reports_and_documents_belong_to_their_seller() {
    let running = start(instant_config()).await;
    let token_a = running.token("seller-a").await;
    let token_b = running.token("seller-b").await;
    let report_id = running.create_ok(&token_a, START, END).await;
    let report = running.report(&token_a, &report_id).await;
    let document_id = report["reportDocumentId"].as_str().expect("document id");

    let response = running
        .get(
            &token_b,
            &format!("/reports/2021-06-30/reports/{report_id}"),
        )
        .await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["errors"][0]["code"], "NotFound");
    let response = running
        .get(
            &token_b,
            &format!("/reports/2021-06-30/documents/{document_id}"),
        )
        .await;
    assert_eq!(response.status(), 404);
    running.stop().await;
}

#[tokio::test]
async fn reports_wait_in_queue_for_the_processing_latency() {
    let running = start(SimConfig {
        processing_latency: Duration::from_secs(3600),
        ..instant_config()
    })
    .await;
    let token = running.token("seller-a").await;
    let report_id = running.create_ok(&token, START, END).await;
    let report = running.report(&token, &report_id).await;
    assert_eq!(report["processingStatus"], "IN_QUEUE");
    assert!(report.get("reportDocumentId").is_none());
    assert!(report.get("processingStartTime").is_none());
    running.stop().await;
}

#[test]
fn phases_follow_elapsed_time() {
    let sim = Simulator::new(SimConfig {
        processing_latency: Duration::from_secs(10),
        ..SimConfig::default()
    });
    let report = Report {
        seller: "s".into(),
        marketplace: MARKETPLACE.into(),
        start: 0,
        end: HOUR,
        created_at: 100.0,
        queued_for: 5.0,
        ends_after: 10.0,
        cancelled_by_request: false,
        outcome: Outcome::Done(None),
        document_id: None,
    };
    assert_eq!(sim.phase(&report, 100.0), Phase::InQueue);
    assert_eq!(sim.phase(&report, 104.9), Phase::InQueue);
    assert_eq!(sim.phase(&report, 105.0), Phase::InProgress);
    assert_eq!(sim.phase(&report, 109.9), Phase::InProgress);
    assert_eq!(sim.phase(&report, 110.0), Phase::Ended);
}

#[tokio::test]
async fn scheduled_faults_hit_the_nth_call() {
    let schedule = |operation: &str, nth: u64, fault: FaultKind| ScheduledFault {
        operation: operation.to_string(),
        nth,
        fault,
    };
    let mut config = instant_config();
    config.faults.schedule = vec![
        schedule("createReport", 1, FaultKind::Fatal),
        schedule("createReport", 2, FaultKind::Cancelled),
        schedule("createReport", 3, FaultKind::Truncated),
        schedule("createReport", 4, FaultKind::Malformed),
        schedule("createReport", 5, FaultKind::WrongWindow),
        schedule("createReport", 6, FaultKind::ServerError),
        schedule("getReport", 1, FaultKind::Throttle),
        schedule("downloadDocument", 5, FaultKind::Truncated),
    ];
    let running = start(config).await;
    let token = running.token("seller-a").await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(running.create_ok(&token, START, END).await);
    }
    let response = running.create(&token, report_request(START, END)).await;
    assert_eq!(response.status(), 500);
    assert_eq!(
        response.text().await.expect("body"),
        r#"{"errors":[{"code":"InternalFailure","message":"We encountered an internal error. Please try again.","details":""}]}"#
    );

    // getReport #1 is throttled, whatever the report.
    let response = running
        .get(&token, &format!("/reports/2021-06-30/reports/{}", ids[0]))
        .await;
    assert_eq!(response.status(), 429);

    // FATAL: the document is an error document.
    let fatal = running.report(&token, &ids[0]).await;
    assert_eq!(fatal["processingStatus"], "FATAL");
    let bytes = running
        .download(&token, fatal["reportDocumentId"].as_str().expect("id"))
        .await;
    let error: Value = serde_json::from_slice(&gunzip(&bytes).expect("gunzip")).expect("json");
    assert!(error["errorDetails"].is_string());

    // CANCELLED: no document.
    let cancelled = running.report(&token, &ids[1]).await;
    assert_eq!(cancelled["processingStatus"], "CANCELLED");
    assert!(cancelled.get("reportDocumentId").is_none());

    // Truncated: every download of it is cut.
    let truncated = running.report(&token, &ids[2]).await;
    assert_eq!(truncated["processingStatus"], "DONE");
    let bytes = running
        .download(&token, truncated["reportDocumentId"].as_str().expect("id"))
        .await;
    assert!(gunzip(&bytes).is_err());

    // Malformed: gunzips, but is not JSON.
    let malformed = running.report(&token, &ids[3]).await;
    let bytes = running
        .download(&token, malformed["reportDocumentId"].as_str().expect("id"))
        .await;
    let text = gunzip(&bytes).expect("gunzip");
    assert!(serde_json::from_slice::<Value>(&text).is_err());

    // Wrong window: shifted by one hour, rows included.
    let wrong = running.report(&token, &ids[4]).await;
    let wrong_document_id = wrong["reportDocumentId"].as_str().expect("id").to_string();
    let bytes = running.download(&token, &wrong_document_id).await;
    let document: Value = serde_json::from_slice(&gunzip(&bytes).expect("gunzip")).expect("json");
    assert_eq!(
        document["reportSpecification"]["dataStartTime"],
        "2025-12-09T01:00:00Z"
    );
    assert_eq!(
        document["reportSpecification"]["dataEndTime"],
        "2025-12-09T07:00:00Z"
    );
    assert_eq!(
        document_rows(&document),
        expected_rows(42, 8, "2025-12-09T01:00:00Z", "2025-12-09T07:00:00Z")
    );
    assert!(
        running.sim.served_rows().is_empty(),
        "spoiled documents are not served rows"
    );

    // A fresh, intact report; its first download is download #5, scheduled truncated.
    let good_id = running.create_ok(&token, START, END).await;
    let good = running.report(&token, &good_id).await;
    let good_document_id = good["reportDocumentId"].as_str().expect("id");
    assert!(gunzip(&running.download(&token, good_document_id).await).is_err());
    let bytes = running.download(&token, good_document_id).await;
    let document: Value = serde_json::from_slice(&gunzip(&bytes).expect("gunzip")).expect("json");
    assert_eq!(document_rows(&document), expected_rows(42, 8, START, END));
    assert_eq!(
        running.sim.served_rows().len(),
        document_rows(&document).len()
    );

    let stats = running.sim.stats();
    assert_eq!(stats.server_errors("createReport"), 1);
    assert_eq!(stats.throttled("getReport"), 1);
    assert_eq!(stats.calls("createReport"), 7);
    running.stop().await;
}

#[tokio::test]
async fn probabilistic_faults_and_put_faults() {
    let running = start(instant_config()).await;
    let token = running.token("seller-a").await;
    let put = |body: Value| {
        running
            .client
            .put(format!("{}/_sim/faults", running.base))
            .json(&body)
            .send()
    };
    let response = put(json!({"throttle": 1.0, "retry_after_secs": 3}))
        .await
        .expect("put");
    assert_eq!(response.status(), 200);
    let response = running.create(&token, report_request(START, END)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "3");

    let response = put(json!({"server_error": 1.0})).await.expect("put");
    assert_eq!(response.status(), 200);
    let response = running.get(&token, "/reports/2021-06-30/reports/1").await;
    assert_eq!(response.status(), 500);

    let response = put(json!({"fatal": 1.0})).await.expect("put");
    assert_eq!(response.status(), 200);
    let report_id = running.create_ok(&token, START, END).await;
    assert_eq!(
        running.report(&token, &report_id).await["processingStatus"],
        "FATAL"
    );

    for bad in [
        json!({"throttle": 1.5}),
        json!({"bogus": 1}),
        json!({"schedule": [{"operation": "nope", "nth": 1, "fault": "throttle"}]}),
        json!({"schedule": [{"operation": "getReport", "nth": 1, "fault": "explode"}]}),
    ] {
        let response = put(bad.clone()).await.expect("put");
        assert_eq!(response.status(), 400, "{bad}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["errors"][0]["code"], "InvalidInput");
    }
    assert_eq!(
        running.sim.faults().fatal,
        1.0,
        "a refused PUT leaves the faults alone"
    );

    let stats = running.sim.stats();
    assert_eq!(stats.throttled("createReport"), 1);
    assert_eq!(stats.server_errors("getReport"), 1);
    running.stop().await;
}

#[tokio::test]
async fn document_urls_expire() {
    let running = start(SimConfig {
        document_url_lifetime: Duration::ZERO,
        ..instant_config()
    })
    .await;
    let token = running.token("seller-a").await;
    let report_id = running.create_ok(&token, START, END).await;
    let report = running.report(&token, &report_id).await;
    let document_id = report["reportDocumentId"].as_str().expect("id");
    let response = running
        .get(
            &token,
            &format!("/reports/2021-06-30/documents/{document_id}"),
        )
        .await;
    let body: Value = response.json().await.expect("json");
    let url = body["url"].as_str().expect("url");
    assert!(url.starts_with(&format!(
        "{}/_documents/{document_id}?expires=",
        running.base
    )));
    let response = running.client.get(url).send().await.expect("download");
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.text().await.expect("body"),
        "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
    );
    let response = running
        .client
        .get(format!("{}/_documents/{document_id}", running.base))
        .send()
        .await
        .expect("download");
    assert_eq!(response.status(), 403);
    assert!(running.sim.served_rows().is_empty());
    running.stop().await;
}

#[test]
fn config_and_faults_round_trip_through_serde() {
    let config: SimConfig = serde_json::from_value(json!({
        "processing_latency": "500ms",
        "rates": {"getReport": {"rate": 0.5, "burst": 3}},
        "faults": {"truncated": 0.1, "schedule": [{"operation": "token", "nth": 2, "fault": "server_error"}]}
    }))
    .expect("config");
    assert_eq!(config.seed, 42);
    assert_eq!(config.processing_latency, Duration::from_millis(500));
    assert_eq!(config.token_lifetime, Duration::from_secs(3600));
    assert_eq!(
        config.rate_for("getReport"),
        Some(RateSpec {
            rate: 0.5,
            burst: 3.0
        })
    );
    assert_eq!(
        config.rate_for("createReport"),
        Some(RateSpec {
            rate: 0.0167,
            burst: 15.0
        })
    );
    assert_eq!(config.rate_for("downloadDocument"), None);
    // `sim --unlimited` lifts every limited operation: the list is the limited ones.
    for operation in SimConfig::RATE_LIMITED {
        assert!(config.rate_for(operation).is_some(), "{operation}");
    }
    assert_eq!(config.faults.schedule[0].fault, FaultKind::ServerError);
    assert!(config.faults.validate().is_ok());
    assert!(serde_json::from_value::<SimConfig>(json!({"sed": 1})).is_err());
    let realistic: SimConfig =
        serde_json::from_value(json!({"profile": "realistic", "time_scale": 60.0}))
            .expect("profile config");
    assert_eq!(realistic.profile, super::SimProfile::Realistic);
    assert_eq!(realistic.time_scale(), 60.0);
    assert_eq!(SimConfig::default().profile, super::SimProfile::Fast);
    assert!(serde_json::from_value::<SimConfig>(json!({"profile": "slow"})).is_err());
    let absurd = SimConfig {
        time_scale: f64::INFINITY,
        ..SimConfig::default()
    };
    assert_eq!(absurd.time_scale(), 1.0);

    let stats = serde_json::to_value(SimStats::default()).expect("stats");
    let keys = json!({"token": 0, "createReport": 0, "getReport": 0, "getReportDocument": 0, "downloadDocument": 0, "getReports": 0, "cancelReport": 0});
    assert_eq!(
        stats,
        json!({
            "calls": keys,
            "throttled": keys,
            "server_errors": keys,
            "duplicate_create_reports": 0,
            "bucket_throttles": {},
        })
    );
}

#[tokio::test]
async fn hostile_answer_modes_are_off_by_default_and_do_what_they_say() {
    assert!(
        SimFaults::default().retry_after_text.is_none()
            && SimFaults::default().redirect_to.is_none()
            && !SimFaults::default().ebay_total_grows
    );
    let running = start(instant_config()).await;
    let token = running.token("seller-a").await;
    running.sim.set_faults(SimFaults {
        throttle: 1.0,
        retry_after_text: Some("18446744073709551615".to_string()),
        token_expires_in: Some(u64::MAX),
        ..SimFaults::default()
    });
    let response = running.create(&token, report_request(START, END)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "18446744073709551615");
    let granted: Value = running
        .client
        .post(format!("{}/auth/o2/token", running.base))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "seller-a"),
            ("client_id", "client"),
            ("client_secret", "secret"),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    assert_eq!(granted["expires_in"], json!(u64::MAX));

    running.sim.set_faults(SimFaults {
        redirect_to: Some("http://127.0.0.1:9".to_string()),
        ..SimFaults::default()
    });
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let response = no_follow
        .get(format!("{}/reports/2021-06-30/reports/1?x=1", running.base))
        .header("x-amz-access-token", &token)
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 307);
    assert_eq!(
        response.headers()["location"],
        "http://127.0.0.1:9/reports/2021-06-30/reports/1?x=1"
    );

    running.sim.set_faults(SimFaults {
        slow_drip_ms: Some(1),
        keepa_refill_in: Some(u64::MAX),
        keepa_refill_rate: Some(-3.0),
        ..SimFaults::default()
    });
    let balance: Value = running
        .client
        .get(format!("{}/token?key=k", running.base))
        .send()
        .await
        .expect("keepa token")
        .json()
        .await
        .expect("dripped json arrives whole");
    assert_eq!(balance["refillIn"], json!(u64::MAX));
    assert_eq!(balance["refillRate"], json!(-3.0));

    let mut bad = SimFaults {
        redirect_to: Some("127.0.0.1:9".to_string()),
        ..SimFaults::default()
    };
    assert!(bad
        .validate()
        .expect_err("not a url")
        .starts_with("redirect_to:"));
    bad.redirect_to = None;
    bad.keepa_refill_rate = Some(f64::INFINITY);
    assert!(bad.validate().is_err());
    running.stop().await;
}
