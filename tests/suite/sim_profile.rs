//! The simulator's realistic profile and the Reports API 2021-06-30 operations added for
//! issue 12 point 1, over real HTTP against a `sim::serve`d simulator: the latency
//! distribution and status progression at a high `time_scale`, getReports filters and
//! paging, cancelReport, the future-window 400, `x-amzn-RequestId` on every answer,
//! document urls on the simulator's own address, and the `[simulator]` keys.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use marketsync::sim::{FaultKind, RateSpec, ScheduledFault, SimConfig, SimProfile};
use serde_json::{json, Value};

use crate::common::TestSim;

const REPORT_TYPE: &str = "GET_VENDOR_REAL_TIME_SALES_REPORT";
const US: &str = "ATVPDKIKX0DER";
const DE: &str = "A1PA6795UKMFR9";

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn new(sim: &TestSim, seller: &str) -> Client {
        let http = reqwest::Client::new();
        let base = sim.base_url();
        let answer: Value = http
            .post(format!("{base}/auth/o2/token"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", seller),
                ("client_id", "id"),
                ("client_secret", "secret"),
            ])
            .send()
            .await
            .expect("token call")
            .json()
            .await
            .expect("token json");
        let token = answer["access_token"]
            .as_str()
            .expect("access_token")
            .to_string();
        Client { http, base, token }
    }

    async fn create(&self, marketplace: &str, start: &str, end: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/reports/2021-06-30/reports", self.base))
            .header("x-amz-access-token", &self.token)
            .json(&json!({
                "reportType": REPORT_TYPE,
                "marketplaceIds": [marketplace],
                "dataStartTime": start,
                "dataEndTime": end,
            }))
            .send()
            .await
            .expect("createReport call")
    }

    async fn create_ok(&self, marketplace: &str, start: &str, end: &str) -> String {
        let response = self.create(marketplace, start, end).await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.expect("createReport json");
        body["reportId"].as_str().expect("reportId").to_string()
    }

    async fn get(&self, path_and_query: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path_and_query}", self.base))
            .header("x-amz-access-token", &self.token)
            .send()
            .await
            .expect("GET call")
    }

    async fn report(&self, report_id: &str) -> Value {
        let response = self
            .get(&format!("/reports/2021-06-30/reports/{report_id}"))
            .await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("getReport json")
    }

    /// getReports with `query`, then every page after it; the reports of all pages and
    /// the number of pages.
    async fn list_all(&self, query: &str) -> (Vec<Value>, usize) {
        let mut reports = Vec::new();
        let mut path = format!("/reports/2021-06-30/reports?{query}");
        for pages in 1..=100 {
            let response = self.get(&path).await;
            assert_eq!(response.status(), 200, "getReports {path}");
            let body: Value = response.json().await.expect("getReports json");
            reports.extend(body["reports"].as_array().expect("reports").iter().cloned());
            match body.get("nextToken").and_then(Value::as_str) {
                Some(token) => path = format!("/reports/2021-06-30/reports?nextToken={token}"),
                None => return (reports, pages),
            }
        }
        panic!("getReports never stopped paging");
    }

    async fn cancel(&self, report_id: &str) -> reqwest::Response {
        self.http
            .delete(format!(
                "{}/reports/2021-06-30/reports/{report_id}",
                self.base
            ))
            .header("x-amz-access-token", &self.token)
            .send()
            .await
            .expect("cancelReport call")
    }
}

/// Hour `n` of 2025-12-01 onward as RFC 3339 (always in the past).
fn hour(n: u32) -> String {
    let day = 1 + n / 24;
    format!("2025-12-{day:02}T{:02}:00:00Z", n % 24)
}

fn unlimited(operations: &[&str]) -> BTreeMap<String, RateSpec> {
    operations
        .iter()
        .map(|name| {
            (
                name.to_string(),
                RateSpec {
                    rate: 1e6,
                    burst: 1e6,
                },
            )
        })
        .collect()
}

async fn error_code(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("error json");
    (
        status,
        body["errors"][0]["code"].as_str().unwrap_or("").to_string(),
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realistic_profile_latency_has_a_minute_median_a_clipped_tail_and_queue_then_progress_then_done(
) {
    const REPORTS: u32 = 300;
    const TIME_SCALE: f64 = 60.0;
    let sim = TestSim::start(SimConfig {
        profile: SimProfile::Realistic,
        time_scale: TIME_SCALE,
        asins_per_marketplace: 2,
        // Only the calls the test makes in bulk are unlimited; the distribution is the
        // profile's own.
        rates: unlimited(&["createReport", "getReports"]),
        ..SimConfig::default()
    })
    .await;
    let client = Client::new(&sim, "seller-latency").await;
    let mut created: HashMap<String, Instant> = HashMap::new();
    for n in 0..REPORTS {
        let at = Instant::now();
        let id = client.create_ok(US, &hour(n), &hour(n + 1)).await;
        created.insert(id, at);
    }
    // Poll getReports (all pages) until every report is DONE or 12 real seconds (12
    // simulated minutes, past the 10-minute clip) have passed.
    let mut done_at: HashMap<String, Instant> = HashMap::new();
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(12);
    let mut last: Vec<Value> = Vec::new();
    while Instant::now() < deadline && done_at.len() < created.len() {
        let (reports, _) = client
            .list_all(&format!("reportTypes={REPORT_TYPE}&pageSize=100"))
            .await;
        let now = Instant::now();
        for report in &reports {
            let id = report["reportId"].as_str().expect("id").to_string();
            let status = report["processingStatus"]
                .as_str()
                .expect("status")
                .to_string();
            let statuses = seen.entry(id.clone()).or_default();
            if statuses.last() != Some(&status) {
                statuses.push(status.clone());
            }
            if status == "DONE" {
                done_at.entry(id).or_insert(now);
            }
        }
        last = reports;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen.len(), REPORTS as usize, "every report listed");
    let order = ["IN_QUEUE", "IN_PROGRESS", "DONE"];
    let mut all_three = 0;
    for (id, statuses) in &seen {
        let ranks: Vec<usize> = statuses
            .iter()
            .filter_map(|status| order.iter().position(|known| known == status))
            .collect();
        assert!(
            ranks.windows(2).all(|pair| pair[0] < pair[1]),
            "report {id} went {statuses:?}"
        );
        if statuses.iter().map(String::as_str).eq(order) {
            all_three += 1;
        }
    }
    assert!(
        all_three * 3 >= REPORTS,
        "only {all_three} of {REPORTS} reports were seen IN_QUEUE, then IN_PROGRESS, then DONE"
    );
    let mut simulated: Vec<f64> = done_at
        .iter()
        .map(|(id, at)| at.duration_since(created[id]).as_secs_f64() * TIME_SCALE)
        .collect();
    simulated.sort_by(f64::total_cmp);
    let median = simulated[simulated.len() / 2];
    let p90 = simulated[simulated.len() * 9 / 10];
    let max = simulated[simulated.len() - 1];
    eprintln!(
        "realistic profile at time_scale {TIME_SCALE}: {} of {REPORTS} DONE, simulated median {median:.0} s, p90 {p90:.0} s, max {max:.0} s; {all_three} seen IN_QUEUE, IN_PROGRESS, DONE",
        simulated.len()
    );
    // Observed times include up to one poll round (~0.1-0.3 s real, 6-18 simulated s).
    assert!((40.0..=90.0).contains(&median), "median {median:.0} s");
    assert!((120.0..=360.0).contains(&p90), "p90 {p90:.0} s");
    assert!(
        max <= 600.0 + 30.0,
        "max {max:.0} s, past the 10-minute clip"
    );
    // The ~1 % stuck reports (seeded: the same ones every run) are still IN_QUEUE.
    let not_done: Vec<&Value> = last
        .iter()
        .filter(|report| report["processingStatus"] != "DONE")
        .collect();
    assert!(
        not_done.len() <= REPORTS as usize / 20,
        "{} reports not DONE after 12 simulated minutes",
        not_done.len()
    );
    for report in not_done {
        assert_eq!(report["processingStatus"], "IN_QUEUE", "stuck: {report}");
    }
}

#[tokio::test]
async fn time_scale_speeds_up_the_documented_create_report_refill() {
    // createReport's documented plan (0.0167/s, burst 15) at 3600×: a token every ~17 ms.
    let sim = TestSim::start(SimConfig {
        processing_latency: Duration::ZERO,
        time_scale: 3600.0,
        ..SimConfig::default()
    })
    .await;
    let client = Client::new(&sim, "seller-scale").await;
    let mut statuses = Vec::new();
    for n in 0..16 {
        statuses.push(client.create(US, &hour(n), &hour(n + 1)).await.status());
    }
    // 15 in a burst always pass; the 16th passes once a token refilled.
    assert!(statuses[..15].iter().all(|status| *status == 202));
    let started = Instant::now();
    loop {
        let status = client.create(US, &hour(20), &hour(21)).await.status();
        if status == 202 {
            break;
        }
        assert_eq!(status, 429);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "no createReport token in 2 s at time_scale 3600 (60 s per token unscaled)"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn get_reports_filters_by_type_status_marketplace_and_creation_time_and_pages_with_next_token(
) {
    let mut config = SimConfig {
        processing_latency: Duration::ZERO,
        rates: unlimited(&["createReport", "getReports"]),
        ..SimConfig::default()
    };
    config.faults.schedule = (1..=5)
        .map(|nth| ScheduledFault {
            operation: "createReport".to_string(),
            nth,
            fault: FaultKind::Fatal,
        })
        .collect();
    let sim = TestSim::start(config).await;
    let client = Client::new(&sim, "seller-list").await;
    let other = Client::new(&sim, "seller-other").await;
    let mut ids = Vec::new();
    for n in 0..25 {
        let marketplace = if n % 5 == 4 { DE } else { US };
        ids.push(client.create_ok(marketplace, &hour(n), &hour(n + 1)).await);
    }
    other.create_ok(US, &hour(0), &hour(1)).await;

    // Every report, 10 a page, newest first, each once.
    let (all, pages) = client
        .list_all(&format!("reportTypes={REPORT_TYPE}&pageSize=10"))
        .await;
    assert_eq!(pages, 3);
    let listed: Vec<&str> = all
        .iter()
        .map(|report| report["reportId"].as_str().expect("id"))
        .collect();
    assert_eq!(listed.iter().collect::<HashSet<_>>().len(), 25);
    assert_eq!(
        listed.iter().copied().collect::<HashSet<_>>(),
        ids.iter().map(String::as_str).collect()
    );
    let created: Vec<&str> = all
        .iter()
        .map(|report| report["createdTime"].as_str().expect("createdTime"))
        .collect();
    assert!(
        created.windows(2).all(|pair| pair[0] >= pair[1]),
        "newest first"
    );

    // The default pageSize is 10.
    let first: Value = client
        .get(&format!(
            "/reports/2021-06-30/reports?reportTypes={REPORT_TYPE}"
        ))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(first["reports"].as_array().map(Vec::len), Some(10));
    assert!(first["nextToken"].is_string());

    let count = |query: String| {
        let client = &client;
        async move { client.list_all(&query).await.0.len() }
    };
    assert_eq!(
        count(format!(
            "reportTypes={REPORT_TYPE}&processingStatuses=FATAL&pageSize=100"
        ))
        .await,
        5
    );
    assert_eq!(
        count(format!(
            "reportTypes={REPORT_TYPE}&processingStatuses=DONE,FATAL&pageSize=100"
        ))
        .await,
        25
    );
    assert_eq!(
        count(format!(
            "reportTypes={REPORT_TYPE}&processingStatuses=IN_QUEUE"
        ))
        .await,
        0
    );
    assert_eq!(
        count(format!(
            "reportTypes={REPORT_TYPE}&marketplaceIds={DE}&pageSize=100"
        ))
        .await,
        5
    );
    assert_eq!(
        count("reportTypes=GET_FLAT_FILE_OPEN_LISTINGS_DATA".to_string()).await,
        0
    );
    assert_eq!(
        count(format!(
            "reportTypes={REPORT_TYPE}&createdSince=2019-01-01T00:00:00Z&createdUntil=2020-01-01T00:00:00Z"
        ))
        .await,
        0
    );
    assert_eq!(
        count(format!(
            "reportTypes={REPORT_TYPE}&createdSince=2020-01-01T00:00:00Z&pageSize=100"
        ))
        .await,
        25
    );

    // The model's rules: reportTypes or nextToken is required; nextToken comes alone; a
    // token is the asking seller's.
    let token = first["nextToken"].as_str().expect("nextToken");
    for (path, needle) in [
        ("/reports/2021-06-30/reports".to_string(), "reportTypes or nextToken"),
        (
            format!("/reports/2021-06-30/reports?nextToken={token}&pageSize=10"),
            "only parameter",
        ),
        (
            format!("/reports/2021-06-30/reports?reportTypes={REPORT_TYPE}&pageSize=101"),
            "pageSize",
        ),
        (
            format!("/reports/2021-06-30/reports?reportTypes={REPORT_TYPE}&processingStatuses=BAD_VALUE"),
            "BAD_VALUE",
        ),
    ] {
        let (status, code, message) = error_code(client.get(&path).await).await;
        assert_eq!((status, code.as_str()), (400, "InvalidInput"), "{path}");
        assert!(message.contains(needle), "{path}: {message}");
    }
    let (status, _, message) = error_code(
        other
            .get(&format!("/reports/2021-06-30/reports?nextToken={token}"))
            .await,
    )
    .await;
    assert_eq!(status, 400, "{message}");
    let (others, _) = other.list_all(&format!("reportTypes={REPORT_TYPE}")).await;
    assert_eq!(others.len(), 1, "another seller sees only its own report");
}

#[tokio::test]
async fn cancel_report_cancels_an_in_queue_report_and_refuses_a_done_one() {
    let queued_sim = TestSim::start(SimConfig {
        processing_latency: Duration::from_secs(3600),
        ..SimConfig::default()
    })
    .await;
    let client = Client::new(&queued_sim, "seller-cancel").await;
    let id = client.create_ok(US, &hour(0), &hour(6)).await;
    assert_eq!(client.report(&id).await["processingStatus"], "IN_QUEUE");
    let response = client.cancel(&id).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-amzn-ratelimit-limit"));
    let report = client.report(&id).await;
    assert_eq!(report["processingStatus"], "CANCELLED");
    assert!(report.get("reportDocumentId").is_none());
    assert!(report.get("processingStartTime").is_none());
    let (cancelled, _) = client
        .list_all(&format!(
            "reportTypes={REPORT_TYPE}&processingStatuses=CANCELLED"
        ))
        .await;
    assert_eq!(cancelled.len(), 1);
    // Cancelled is final: a second cancel is refused like any non-IN_QUEUE report.
    let (status, code, _) = error_code(client.cancel(&id).await).await;
    assert_eq!((status, code.as_str()), (400, "InvalidInput"));
    let (status, code, _) = error_code(client.cancel("no-such-report").await).await;
    assert_eq!((status, code.as_str()), (404, "NotFound"));
    assert_eq!(queued_sim.stats().calls.get("cancelReport"), 3);

    let done_sim = TestSim::start(SimConfig {
        processing_latency: Duration::ZERO,
        ..SimConfig::default()
    })
    .await;
    let client = Client::new(&done_sim, "seller-cancel").await;
    let id = client.create_ok(US, &hour(0), &hour(6)).await;
    assert_eq!(client.report(&id).await["processingStatus"], "DONE");
    let (status, code, message) = error_code(client.cancel(&id).await).await;
    assert_eq!((status, code.as_str()), (400, "InvalidInput"));
    assert!(
        message.contains("DONE") && message.contains("IN_QUEUE"),
        "{message}"
    );
    assert_eq!(client.report(&id).await["processingStatus"], "DONE");
}

#[tokio::test]
async fn create_report_with_a_window_in_the_future_is_refused_with_invalid_input() {
    let sim = TestSim::start(SimConfig::default()).await;
    let client = Client::new(&sim, "seller-future").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let ts = |unix: i64| marketsync::domain::format_ts(unix - unix.rem_euclid(3600));
    let (status, code, message) = error_code(
        client
            .create(US, &ts(now - 3600), &ts(now + 2 * 3600))
            .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "InvalidInput"));
    assert!(
        message.contains("dataEndTime") && message.contains("future"),
        "{message}"
    );
    let (status, _, message) = error_code(
        client
            .create(US, &ts(now + 3600), &ts(now + 2 * 3600))
            .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(message.contains("dataStartTime"), "{message}");
    // A window that ended is accepted.
    client
        .create_ok(US, &ts(now - 2 * 3600), &ts(now - 3600))
        .await;
}

/// Regression: createReport answered 400 "missing" to a body without `dataStartTime` or
/// `dataEndTime`, which reports_2021-06-30's `CreateReportSpecification` makes optional:
/// "The default is now." Each left out is the simulator's now; a start equal to the end
/// (both left out) is a window without a full hour, served DONE with no `reportData`; a
/// start after the (defaulted) end is still refused.
#[tokio::test]
async fn create_report_defaults_data_start_and_end_time_to_now() {
    let sim = TestSim::start(SimConfig {
        processing_latency: Duration::ZERO,
        ..SimConfig::default()
    })
    .await;
    let client = Client::new(&sim, "seller-defaults").await;
    let unix_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64
    };
    let parse = |value: &Value| {
        marketsync::domain::parse_ts(value.as_str().expect("timestamp")).expect("RFC 3339")
    };
    let create = |body: Value| {
        let request = client
            .http
            .post(format!("{}/reports/2021-06-30/reports", client.base))
            .header("x-amz-access-token", &client.token)
            .json(&body);
        async move { request.send().await.expect("createReport call") }
    };
    let an_hour_back = marketsync::domain::format_ts(unix_now() - 3600);

    // Neither: both are now, one and the same instant.
    let before = unix_now();
    let response = create(json!({"reportType": REPORT_TYPE, "marketplaceIds": [US]})).await;
    let after = unix_now();
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.expect("json")["reportId"]
        .as_str()
        .expect("reportId")
        .to_string();
    let report = client.report(&id).await;
    let (start, end) = (
        parse(&report["dataStartTime"]),
        parse(&report["dataEndTime"]),
    );
    assert_eq!(start, end, "{report}");
    assert!((before..=after).contains(&start), "{report}");
    assert_eq!(report["processingStatus"], "DONE", "{report}");
    let document_id = report["reportDocumentId"].as_str().expect("document");
    let response = client
        .get(&format!("/reports/2021-06-30/documents/{document_id}"))
        .await;
    let url = response.json::<Value>().await.expect("json")["url"]
        .as_str()
        .expect("url")
        .to_string();
    let gzipped = client
        .http
        .get(url)
        .send()
        .await
        .expect("download")
        .bytes()
        .await
        .expect("bytes");
    let mut text = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gzipped[..]), &mut text)
        .expect("gzip");
    let document: Value = serde_json::from_slice(&text).expect("document json");
    assert_eq!(document["reportData"], json!([]), "{document}");

    // Only dataStartTime: the end is now.
    let before = unix_now();
    let response = create(json!({
        "reportType": REPORT_TYPE,
        "marketplaceIds": [US],
        "dataStartTime": an_hour_back,
    }))
    .await;
    let after = unix_now();
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.expect("json")["reportId"]
        .as_str()
        .expect("reportId")
        .to_string();
    let report = client.report(&id).await;
    assert_eq!(report["dataStartTime"], an_hour_back.as_str());
    assert!(
        (before..=after).contains(&parse(&report["dataEndTime"])),
        "{report}"
    );

    // Only dataEndTime, an hour back: the start (now) is after it.
    let (status, code, message) = error_code(
        create(json!({
            "reportType": REPORT_TYPE,
            "marketplaceIds": [US],
            "dataEndTime": an_hour_back,
        }))
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "InvalidInput"), "{message}");
    assert!(message.starts_with("dataStartTime"), "{message}");
}

#[tokio::test]
async fn every_answer_carries_a_distinct_x_amzn_request_id() {
    let sim = TestSim::start(SimConfig {
        processing_latency: Duration::ZERO,
        rates: [(
            "getReport".to_string(),
            RateSpec {
                rate: 0.0001,
                burst: 1.0,
            },
        )]
        .into_iter()
        .collect(),
        ..SimConfig::default()
    })
    .await;
    let client = Client::new(&sim, "seller-ids").await;
    let mut ids = HashSet::new();
    let mut check = |response: &reqwest::Response, expected: u16| {
        assert_eq!(response.status().as_u16(), expected);
        let id = response
            .headers()
            .get("x-amzn-RequestId")
            .and_then(|value| value.to_str().ok())
            .expect("x-amzn-RequestId")
            .to_string();
        assert!(!id.is_empty());
        assert!(ids.insert(id), "request ids repeat");
    };
    let created = client.create(US, &hour(0), &hour(1)).await;
    check(&created, 202);
    let id = created.json::<Value>().await.expect("json")["reportId"]
        .as_str()
        .expect("reportId")
        .to_string();
    let path = format!("/reports/2021-06-30/reports/{id}");
    check(&client.get(&path).await, 200);
    check(&client.get(&path).await, 429);
    check(&client.create(US, &hour(1), &hour(0)).await, 400);
    check(&client.get("/reports/2021-06-30/documents/nope").await, 404);
    check(&client.cancel(&id).await, 400);
    check(
        &reqwest::Client::new()
            .get(format!("{}{path}", sim.base_url()))
            .send()
            .await
            .expect("unauthorized call"),
        403,
    );
    check(
        &client
            .get(&format!(
                "/reports/2021-06-30/reports?reportTypes={REPORT_TYPE}"
            ))
            .await,
        200,
    );
}

#[tokio::test]
async fn document_url_is_built_on_the_simulator_address_not_the_host_header() {
    let sim = TestSim::start(SimConfig {
        processing_latency: Duration::ZERO,
        ..SimConfig::default()
    })
    .await;
    let client = Client::new(&sim, "seller-host").await;
    let id = client.create_ok(US, &hour(0), &hour(6)).await;
    let document_id = client.report(&id).await["reportDocumentId"]
        .as_str()
        .expect("reportDocumentId")
        .to_string();
    let response = client
        .http
        .get(format!(
            "{}/reports/2021-06-30/documents/{document_id}",
            client.base
        ))
        .header("x-amz-access-token", &client.token)
        .header("host", "attacker.example:9999")
        .send()
        .await
        .expect("getReportDocument");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let url = body["url"].as_str().expect("url");
    assert!(
        url.starts_with(&format!("http://{}/_documents/", sim.addr)),
        "url {url} is not on the simulator's address {}",
        sim.addr
    );
    let download = reqwest::get(url).await.expect("download");
    assert_eq!(download.status(), 200);
}

#[test]
fn simulator_profile_and_time_scale_keys_are_validated_naming_the_key() {
    let parse = |table: &str| {
        marketsync::config::Config::parse(
            &format!("[simulator]\nenabled = true\n{table}\n"),
            "test.toml",
        )
    };
    let config = parse("profile = \"realistic\"\ntime_scale = 60").expect("valid");
    let settings = config.simulator.expect("simulator");
    assert_eq!(
        settings.profile,
        marketsync::config::SimulatorProfile::Realistic
    );
    assert_eq!(settings.time_scale, 60.0);
    let defaults = parse("").expect("valid").simulator.expect("simulator");
    assert_eq!(defaults.profile, marketsync::config::SimulatorProfile::Fast);
    assert_eq!(defaults.time_scale, 1.0);
    for (table, needle) in [
        ("profile = \"slow\"", "simulator.profile"),
        ("time_scale = 0", "simulator.time_scale"),
        ("time_scale = 1e9", "simulator.time_scale"),
        ("time_scale = nan", "simulator.time_scale"),
    ] {
        let err = parse(table).expect_err(table).to_string();
        assert!(err.contains(needle), "{table}: {err}");
    }
}
