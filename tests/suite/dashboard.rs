//! The dashboard's pictures against the running daemon and its embedded simulator, driven
//! by headless Chromium over WebDriver: the ledger heatmap shows a cell per hour of the
//! lookback in the state `GET /api/accounts/{id}/streams/{stream}/hours` gives, a failed
//! hour's cell shows its error when clicked, and the quota, cursor-lag and queue charts
//! have drawn points. A second report stream backfills a week one hour at a time, so the
//! heatmap screenshot also shows hours still missing and in flight. Screenshots land in docs/dashboard-heatmap.png and
//! docs/dashboard-charts.png.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::suite::http::{chromium, logged_address, Browser, TOKEN};

const ACCOUNT: &str = "acme-live";
const STREAM: &str = "vendor_rt_sales";

fn config(data_dir: &std::path::Path) -> String {
    format!(
        r#"data_dir = "{}"
[http]
listen = "127.0.0.1:0"
admin_token_env = "TEST_ADMIN_TOKEN"
history_interval = "1s"
[simulator]
enabled = true
listen = "127.0.0.1:0"
processing_latency = "0s"
[quota.ebay.getTransactions]
rate = 20
burst = 50
[quota.ebay.searchReturns]
rate = 20
burst = 50
[quota.stockx.marketData]
rate = 2
burst = 3
[[accounts]]
id = "{ACCOUNT}"
provider = "amazon"
marketplace = "ATVPDKIKX0DER"
[accounts.streams.{STREAM}]
lookback = "48h"
chunk = "6h"
interval = "2s"
safety_lag = "0s"
poll_min = "50ms"
poll_max = "200ms"
retry_base = "30m"
retry_max = "1h"
[[accounts]]
id = "acme-eu"
provider = "amazon"
marketplace = "A1PA6795UKMFR9"
[accounts.streams.{STREAM}]
lookback = "168h"
chunk = "1h"
max_in_flight = 1
interval = "2s"
safety_lag = "0s"
poll_min = "1500ms"
poll_max = "3s"
[[accounts]]
id = "ebay-live"
provider = "ebay"
[accounts.streams.orders]
start = "30days"
interval = "2s"
[accounts.streams.transactions]
start = "10days"
interval = "2s"
[[accounts]]
id = "stockx-live"
provider = "stockx"
[accounts.streams.market_data]
interval = "1s"
[[accounts]]
id = "keepa-live"
provider = "keepa"
[accounts.streams.products]
interval = "1s"
"#,
        data_dir.display()
    )
}

async fn get_json(client: &reqwest::Client, url: &str) -> Option<Value> {
    let response = client.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

/// Waits up to `deadline` for `check` to give a value, polling every 100 ms.
async fn eventually<T, F, Fut>(deadline: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The smallest number of samples in the series of a history answer (`None` when there
/// is no series).
fn fewest_samples(answer: &Value, group: &str) -> Option<usize> {
    answer[group]
        .as_array()
        .filter(|series| !series.is_empty())
        .map(|series| {
            series
                .iter()
                .map(|one| one["at"].as_array().map_or(0, Vec::len))
                .min()
                .unwrap_or(0)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_pictures_in_headless_chromium_match_the_api() {
    // Fail (never skip) without a browser.
    let _ = chromium();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("marketsync.toml");
    std::fs::write(&config_path, config(&dir.path().join("data"))).unwrap();
    let daemon =
        crate::common::DaemonProcess::spawn_with_env(&config_path, &[("TEST_ADMIN_TOKEN", TOKEN)]);
    let mut http_addr = None;
    let mut sim_addr = None;
    crate::common::wait_until(Duration::from_secs(30), || {
        let logs = daemon.logs();
        http_addr = logged_address(&logs, "http api, dashboard and metrics listening");
        sim_addr = logged_address(&logs, "embedded simulator listening");
        http_addr.is_some() && sim_addr.is_some()
    })
    .await;
    let http_addr = http_addr.unwrap_or_else(|| panic!("daemon logs:\n{}", daemon.logs()));
    let sim_addr = sim_addr.expect("simulator address");
    let api = |path: &str| format!("http://{http_addr}{path}");
    let client = reqwest::Client::new();

    // Lookups for the job queues: a StockX queue paced at 2 calls a second stays
    // visibly deep for a while.
    for i in 0..12 {
        let answer = client
            .post(api("/api/jobs"))
            .bearer_auth(TOKEN)
            .json(&json!({"provider": "stockx", "sku": format!("DD1391-{i:03}"), "size": "10"}))
            .send()
            .await
            .expect("enqueue");
        assert_eq!(answer.status().as_u16(), 200);
    }
    for i in 0..4 {
        let answer = client
            .post(api("/api/jobs"))
            .bearer_auth(TOKEN)
            .json(&json!({"provider": "keepa", "sku": format!("B00000000{i}")}))
            .send()
            .await
            .expect("enqueue");
        assert_eq!(answer.status().as_u16(), 200);
    }

    // The report stream catches up first: every hour of the 48 h lookback APPLIED.
    let applied = eventually(Duration::from_secs(90), || {
        let client = client.clone();
        let url = api(&format!("/api/accounts/{ACCOUNT}/streams/{STREAM}/hours"));
        async move {
            let hours = get_json(&client, &url).await?;
            (hours["counts"]["APPLIED"].as_u64() == Some(48)).then_some(hours)
        }
    })
    .await;
    assert!(
        applied.is_some(),
        "48 hours applied; logs:\n{}",
        daemon.logs()
    );

    // Then the simulator fails every new report (FATAL), and the last 3 hours are asked
    // for again: their report fails, the hours are FAILED with the report's error and
    // retried only after retry_base (30 min), long after this test.
    let put_faults = |faults: Value| {
        let client = client.clone();
        let url = format!("http://{sim_addr}/_sim/faults");
        async move {
            let answer = client.put(url).json(&faults).send().await.expect("faults");
            assert!(answer.status().is_success(), "faults accepted");
        }
    };
    put_faults(json!({"fatal": 1.0})).await;
    let refresh = client
        .post(api(&format!("/api/accounts/{ACCOUNT}/refresh")))
        .bearer_auth(TOKEN)
        .json(&json!({"window": "last_3h"}))
        .send()
        .await
        .expect("refresh");
    assert_eq!(refresh.status().as_u16(), 200);
    let failed = eventually(Duration::from_secs(60), || {
        let client = client.clone();
        let url = api(&format!("/api/accounts/{ACCOUNT}/streams/{STREAM}/hours"));
        async move {
            let hours = get_json(&client, &url).await?;
            let failed = hours["counts"]["FAILED"].as_u64().unwrap_or(0);
            let in_flight = ["MISSING", "REQUESTED", "DOWNLOADED"]
                .iter()
                .map(|state| hours["counts"][state].as_u64().unwrap_or(0))
                .sum::<u64>();
            (failed >= 1 && in_flight == 0).then_some(hours)
        }
    })
    .await
    .unwrap_or_else(|| panic!("a FAILED hour; logs:\n{}", daemon.logs()));
    put_faults(json!({})).await;
    let failed_hour = failed["hours"]
        .as_array()
        .unwrap()
        .iter()
        .find(|hour| hour["state"] == "FAILED")
        .cloned()
        .unwrap();
    let error = failed_hour["last_error"].as_str().unwrap().to_string();
    assert!(error.contains("FATAL"), "the report's failure: {error}");

    // The sampler has drawn a bucket, a cursor and a queue long enough for a picture
    // (one sample a second here): at least 20 samples in every series.
    let history = eventually(Duration::from_secs(120), || {
        let client = client.clone();
        let urls = [
            api("/api/history/buckets"),
            api("/api/history/cursors"),
            api("/api/history/queues"),
        ];
        async move {
            let buckets = get_json(&client, &urls[0]).await?;
            let cursors = get_json(&client, &urls[1]).await?;
            let queues = get_json(&client, &urls[2]).await?;
            let enough = fewest_samples(&buckets, "buckets")? >= 20
                && fewest_samples(&cursors, "cursors")? >= 20
                && fewest_samples(&queues, "queues")? >= 20;
            enough.then_some((buckets, cursors, queues))
        }
    })
    .await
    .unwrap_or_else(|| panic!("history samples; logs:\n{}", daemon.logs()));
    let (buckets, cursors, queues) = history;
    assert!(
        buckets["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["provider"] == "amazon" && b["operation"] == "createReport"),
        "the createReport bucket is sampled: {buckets}"
    );
    let calls: u64 = buckets["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["calls"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c.as_u64())
        .sum();
    assert!(calls > 0, "calls were counted between samples: {buckets}");
    assert!(
        cursors["cursors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["account"] == "ebay-live" && c["stream"] == "orders"),
        "{cursors}"
    );
    let providers: Vec<&str> = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|q| q["provider"].as_str())
        .collect();
    assert_eq!(providers, ["keepa", "stockx"], "{queues}");

    // The page: the heatmap's cells are the API's hours, in the API's states.
    let browser = Browser::start().await;
    browser
        .command("/window/rect", json!({"width": 1400, "height": 1600}))
        .await;
    let heatmap = format!("[data-heatmap=\"{ACCOUNT}/{STREAM}\"]");
    let cells_script = format!(
        "return Array.from(document.querySelectorAll('{heatmap} rect.cell')).map((c) => [c.dataset.hour, c.dataset.state])"
    );
    let mut matched = false;
    let mut last_difference = String::new();
    for _attempt in 0..3 {
        browser.open(&api("/")).await;
        let shown = browser
            .wait_for(&format!(
                "const cells = {}; return cells.length ? cells : null",
                cells_script.trim_start_matches("return ")
            ))
            .await;
        let expected = get_json(
            &client,
            &api(&format!("/api/accounts/{ACCOUNT}/streams/{STREAM}/hours")),
        )
        .await
        .expect("hours");
        let expected: Vec<Value> = expected["hours"]
            .as_array()
            .unwrap()
            .iter()
            .map(|hour| json!([hour["hour_utc"], hour["state"]]))
            .collect();
        assert_eq!(expected.len(), 48, "a cell per hour of the 48 h lookback");
        // An hour boundary between the page's read and ours moves the window: read again.
        if shown.as_array() == Some(&expected) {
            matched = true;
            break;
        }
        last_difference = format!("page {shown}\napi {}", Value::from(expected));
    }
    assert!(matched, "heatmap cells = API hours:\n{last_difference}");

    // A failed hour's cell: it is marked, and a click shows its error.
    let failed_cell = format!(
        "{heatmap} rect.cell[data-hour=\"{}\"]",
        failed_hour["hour_utc"].as_str().unwrap()
    );
    let state = browser
        .script(&format!(
            "return document.querySelector('{failed_cell}').dataset.state"
        ))
        .await;
    assert_eq!(state, json!("FAILED"));
    let marks = browser
        .script(&format!(
            "return document.querySelectorAll('{heatmap} path.mark').length"
        ))
        .await;
    assert_eq!(
        marks.as_u64(),
        failed["counts"]["FAILED"].as_u64(),
        "one × per failed hour"
    );
    browser.click(&failed_cell).await;
    let shown_error = browser
        .wait_for(&format!(
            "const e = document.querySelector('{heatmap} .cell-detail .err'); return e ? e.textContent : null"
        ))
        .await;
    assert_eq!(shown_error, json!(error), "the clicked hour's error");

    // The charts have drawn points: a bucket's tokens, a cursor's lag, a queue's depth.
    for (kind, line) in [
        ("bucket", "tokens"),
        ("cursor", "lag"),
        ("queue", "pending"),
    ] {
        let drawn = browser
            .wait_for(&format!(
                "const charts = Array.from(document.querySelectorAll('[data-chart^=\"{kind}:\"] svg'));
                 const drawn = charts.filter((s) => Number(s.dataset.points) >= 2 && s.querySelector('path.{line}'));
                 return drawn.length ? drawn.length : null"
            ))
            .await;
        assert!(drawn.as_u64().unwrap_or(0) >= 1, "{kind} chart drawn");
    }
    let bucket_chart = browser
        .script("return document.querySelector('[data-chart=\"bucket:amazon/createReport/acme-live\"] svg') !== null")
        .await;
    assert_eq!(bucket_chart, json!(true), "the createReport bucket's chart");

    // Screenshots for README (the failed hour's error is open on the heatmap).
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs");
    for (css, file) in [
        ("#hours-panel", "dashboard-heatmap.png"),
        ("#charts-panel", "dashboard-charts.png"),
    ] {
        let png = browser.screenshot_element(css, &docs.join(file)).await;
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{file} is a PNG");
        assert!(
            png.len() > 5_000,
            "{file} has content ({} bytes)",
            png.len()
        );
    }
}
