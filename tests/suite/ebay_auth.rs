//! eBay user tokens end to end: the simulator refuses application tokens and tokens
//! without the API's scope with eBay's 403 (errorId 1100); `marketsync auth ebay`, run as
//! the real binary, walks the authorization-code grant against the simulator; and
//! check-config refuses an eBay account without refresh_token_env.

use std::process::Stdio;
use std::time::Duration;

use marketsync::provider::ebay::{EbayApi, EbayClient, EbayCredentials, EbayEndpoints};
use marketsync::provider::ProviderError;
use marketsync::sim::ebay::{EbayRequest, EbaySimConfig, ACCESS_DENIED_BODY};
use marketsync::sim::SimConfig;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::common::{ebay_token_answer, TestSim};

const CLIENT_ID: &str = "auth-client";
const CLIENT_SECRET: &str = "auth-secret";
const RU_NAME: &str = "Acme_Inc-AcmeSync-PRD-1a2b3c4d5-6e7f8a9b";
const SELLER: &str = "consenting-shop";
const STEP: Duration = Duration::from_secs(30);

async fn start_sim() -> TestSim {
    TestSim::start(SimConfig {
        seed: 42,
        processing_latency: Duration::ZERO,
        ebay: EbaySimConfig::default(),
        ..SimConfig::default()
    })
    .await
}

fn client(base: &str, refresh_token: Option<&str>) -> EbayClient {
    EbayClient::new(
        reqwest::Client::new(),
        EbayEndpoints::new(base, &format!("{base}/identity/v1/oauth2/token")),
        EbayCredentials {
            client_id: CLIENT_ID.to_string(),
            client_secret: CLIENT_SECRET.to_string(),
            refresh_token: refresh_token.map(str::to_string),
        },
        "EBAY_US",
    )
}

async fn get_orders(client: &EbayClient) -> Result<serde_json::Value, ProviderError> {
    let body = client
        .get_capped(
            "getOrders",
            EbayApi::Fulfillment,
            "/sell/fulfillment/v1/order",
            &[("limit".to_string(), "1".to_string())],
            1 << 20,
        )
        .await?;
    Ok(serde_json::from_slice(&body).expect("json"))
}

/// An open-ended range's start: 30 days ago at midnight (the range then reaches now,
/// eBay's open end being at most 90 days past its start).
fn recent_start() -> String {
    let now = chrono::Utc::now().timestamp();
    marketsync::domain::format_millis((now - now.rem_euclid(86_400) - 30 * 86_400) * 1000)
}

async fn get_transactions(
    client: &EbayClient,
    limit: u32,
) -> Result<serde_json::Value, ProviderError> {
    let body = client
        .get_capped(
            "getTransactions",
            EbayApi::Finances,
            "/sell/finances/v1/transaction",
            &[
                (
                    "filter".to_string(),
                    format!("transactionDate:[{}..]", recent_start()),
                ),
                ("limit".to_string(), limit.to_string()),
            ],
            16 << 20,
        )
        .await?;
    Ok(serde_json::from_slice(&body).expect("json"))
}

async fn requests(base: &str) -> Vec<EbayRequest> {
    reqwest::get(format!("{base}/_sim/ebay/requests"))
        .await
        .expect("requests")
        .json()
        .await
        .expect("json")
}

/// A code from the simulator's consent step for `seller` and `scopes`.
async fn consent(base: &str, scopes: &[&str]) -> String {
    let answer: serde_json::Value = reqwest::Client::new()
        .get(format!("{base}/oauth2/authorize"))
        .query(&[
            ("client_id", CLIENT_ID),
            ("redirect_uri", RU_NAME),
            ("response_type", "code"),
            ("scope", &scopes.join(" ")),
            ("seller", SELLER),
        ])
        .send()
        .await
        .expect("authorize")
        .json()
        .await
        .expect("json");
    answer["code"].as_str().expect("code").to_string()
}

/// An eBay account on `base` with `ru_name` and credentials; `streams` enabled.
fn write_config(
    dir: &std::path::Path,
    base: &str,
    streams: &[&str],
    refresh: bool,
) -> std::path::PathBuf {
    let mut text = format!(
        r#"
data_dir = "{data}"

[[accounts]]
id = "shop"
provider = "ebay"
endpoint = "{base}"
token_url = "{base}/identity/v1/oauth2/token"
ru_name = "{RU_NAME}"

[accounts.credentials]
client_id_env = "AUTH_EBAY_CLIENT_ID"
client_secret_env = "AUTH_EBAY_CLIENT_SECRET"
"#,
        data = dir.display()
    );
    if refresh {
        text.push_str("refresh_token_env = \"AUTH_EBAY_REFRESH_TOKEN\"\n");
    }
    for stream in streams {
        text.push_str(&format!("\n[accounts.streams.{stream}]\n"));
    }
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn cli(config: &std::path::Path) -> std::process::Command {
    let mut command = crate::common::marketsync();
    command
        .env("AUTH_EBAY_CLIENT_ID", CLIENT_ID)
        .env("AUTH_EBAY_CLIENT_SECRET", CLIENT_SECRET)
        .arg("--config")
        .arg(config);
    command
}

/// Regression (issue 14): the simulator served seller data to an application token.
#[tokio::test]
async fn ebay_application_token_is_refused_on_seller_apis_with_access_denied() {
    let sim = start_sim().await;
    let base = sim.base_url();
    let app_only = client(&base, None);
    match get_orders(&app_only).await {
        Err(ProviderError::Auth { message, .. }) => {
            assert!(message.contains("errorId 1100"), "{message}");
            assert!(message.contains("sell.fulfillment"), "{message}");
        }
        other => panic!("expected an auth error, got {other:?}"),
    }
    // The client refreshed once and retried: two refusals, both 403, no data served.
    let seen = requests(&base).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|request| request.status == 403), "{seen:?}");
    // The answer is eBay's, byte for byte.
    let token = ebay_token_answer(
        &base,
        (CLIENT_ID, CLIENT_SECRET),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "https://api.ebay.com/oauth/api_scope"),
        ],
    )
    .await;
    assert_eq!(token["token_type"], "Application Access Token");
    let raw = reqwest::Client::new()
        .get(format!("{base}/sell/finances/v1/transaction"))
        .bearer_auth(token["access_token"].as_str().expect("token"))
        .send()
        .await
        .expect("call");
    assert_eq!(raw.status(), 403);
    assert_eq!(raw.text().await.expect("body"), ACCESS_DENIED_BODY);
}

#[tokio::test]
async fn ebay_user_token_without_the_scope_is_refused_and_the_scope_named() {
    let sim = start_sim().await;
    let base = sim.base_url();
    let code = consent(
        &base,
        &[
            "https://api.ebay.com/oauth/api_scope",
            "https://api.ebay.com/oauth/api_scope/sell.fulfillment.readonly",
        ],
    )
    .await;
    let grant = marketsync::provider::ebay::exchange_code(
        &reqwest::Client::new(),
        &format!("{base}/identity/v1/oauth2/token"),
        CLIENT_ID,
        CLIENT_SECRET,
        &code,
        RU_NAME,
    )
    .await
    .expect("exchange");
    let seller = client(&base, Some(&grant.refresh_token));
    let page = get_orders(&seller).await.expect("orders are consented");
    // Without a filter getOrders answers (eBay: the last 90 days), with absolute links.
    assert!(
        page["href"]
            .as_str()
            .is_some_and(|href| href.starts_with(&format!("{base}/sell/fulfillment/v1/order?"))),
        "{page}"
    );
    match get_transactions(&seller, 20).await {
        Err(ProviderError::Auth { message, .. }) => {
            assert!(message.contains("errorId 1100"), "{message}");
            assert!(
                message.contains("https://api.ebay.com/oauth/api_scope/sell.finances"),
                "{message}"
            );
        }
        other => panic!("expected an auth error, got {other:?}"),
    }
    // A code is good once.
    let again = marketsync::provider::ebay::exchange_code(
        &reqwest::Client::new(),
        &format!("{base}/identity/v1/oauth2/token"),
        CLIENT_ID,
        CLIENT_SECRET,
        &code,
        RU_NAME,
    )
    .await;
    assert!(
        matches!(again, Err(ProviderError::Auth { .. })),
        "{again:?}"
    );
}

#[tokio::test]
async fn ebay_transactions_take_a_page_of_1000_and_links_are_encoded() {
    let sim = start_sim().await;
    let base = sim.base_url();
    let seller = client(&base, Some(SELLER));
    let page = get_transactions(&seller, 1000)
        .await
        .expect("limit 1000 is eBay's maximum");
    assert_eq!(page["limit"], 1000);
    let href = page["href"].as_str().expect("href");
    assert!(
        href.starts_with(&format!(
            "{base}/sell/finances/v1/transaction?filter=transactionDate:%5B"
        )) && href.contains(".000Z..%5D&limit=1000"),
        "{href}"
    );
    match get_transactions(&seller, 1001).await {
        Err(ProviderError::Http { .. }) => {}
        other => panic!("expected a 400, got {other:?}"),
    }
}

/// What `marketsync auth ebay shop` printed after the consent.
struct AuthRun {
    /// stdout after the consent URL.
    stdout: String,
    stderr: String,
}

impl AuthRun {
    fn field(&self, name: &str) -> String {
        self.stdout
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("{name} in {}", self.stdout))
            .to_string()
    }
}

/// Runs `marketsync auth ebay shop` on `config` as the real binary: it prints the consent
/// URL (whose scopes must end with `scopes`), the test plays the seller (the simulator's
/// consent step) and pastes the redirected URL on stdin; the command must succeed.
async fn run_auth(base: &str, config: &std::path::Path, scopes: &str) -> AuthRun {
    let mut command = tokio::process::Command::from(cli(config));
    command
        .args(["auth", "ebay", "shop"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("spawn");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut stderr = child.stderr.take().expect("stderr");
    let mut consent_url = String::new();
    let read = tokio::time::timeout(STEP, stdout.read_line(&mut consent_url))
        .await
        .expect("the consent url in time")
        .expect("read");
    if read == 0 {
        let mut errors = String::new();
        let _ = stderr.read_to_string(&mut errors).await;
        panic!("auth ebay printed no consent url: {errors}");
    }
    let consent_url = consent_url.trim().to_string();
    assert!(
        consent_url.starts_with(&format!("{base}/oauth2/authorize?client_id={CLIENT_ID}&redirect_uri={RU_NAME}&response_type=code&scope=")),
        "{consent_url}"
    );
    assert!(
        consent_url.ends_with(&format!("scope={scopes}")),
        "{consent_url}"
    );
    // The seller agrees (the simulator's stand-in for eBay's sign-in page).
    let answer: serde_json::Value = reqwest::get(format!("{consent_url}&seller={SELLER}&state=s1"))
        .await
        .expect("consent")
        .json()
        .await
        .expect("json");
    let code = answer["code"].as_str().expect("code");
    let encoded: String = code
        .bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect();
    let redirected =
        format!("https://shop.example/accepted?state=s1&code={encoded}&expires_in=299\n");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(redirected.as_bytes()).await.expect("paste");
    drop(stdin);
    let mut rest = String::new();
    let mut errors = String::new();
    // Both at once: a child blocked on a full stderr pipe would never close stdout.
    let (out, err) = tokio::time::timeout(STEP, async {
        tokio::join!(
            stdout.read_to_string(&mut rest),
            stderr.read_to_string(&mut errors)
        )
    })
    .await
    .expect("output in time");
    out.expect("read stdout");
    err.expect("read stderr");
    let status = tokio::time::timeout(STEP, child.wait())
        .await
        .expect("exit in time")
        .expect("wait");
    assert!(status.success(), "{rest}\n{errors}");
    AuthRun {
        stdout: rest,
        stderr: errors,
    }
}

/// The consent scopes of an account with `orders` and `transactions`, percent-encoded.
const ORDERS_AND_TRANSACTIONS_SCOPES: &str = "https%3A%2F%2Fapi.ebay.com%2Foauth%2Fapi_scope%20https%3A%2F%2Fapi.ebay.com%2Foauth%2Fapi_scope%2Fsell.fulfillment.readonly%20https%3A%2F%2Fapi.ebay.com%2Foauth%2Fapi_scope%2Fsell.finances";

/// `marketsync auth ebay` as the real binary: it prints the consent URL, the test plays
/// the seller (the simulator's consent step), pastes the redirected URL on stdin, and the
/// refresh token it prints reads the seller's orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebay_auth_command_walks_the_authorization_code_grant() {
    let sim = start_sim().await;
    let base = sim.base_url();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &base, &["orders", "transactions"], true);
    let run = run_auth(&base, &config, ORDERS_AND_TRANSACTIONS_SCOPES).await;
    let refresh_token = run.field("refresh_token");
    assert_eq!(run.field("variable"), "AUTH_EBAY_REFRESH_TOKEN");
    let expires = run.field("refresh_token_expires");
    let at = expires.split_whitespace().next().expect("expiry");
    let at = chrono::DateTime::parse_from_rfc3339(at)
        .expect("rfc 3339")
        .timestamp();
    let lifetime = at - chrono::Utc::now().timestamp();
    // 47,304,000 s (about 18 months), give or take the test's own time.
    assert!(
        (47_304_000 - 60..=47_304_000).contains(&lifetime),
        "{lifetime}"
    );
    // The printed expiry is a valid refresh_token_expires.
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replace(
        &format!("ru_name = \"{RU_NAME}\""),
        &format!(
            "ru_name = \"{RU_NAME}\"\nrefresh_token_expires = \"{}\"",
            at_text(at)
        ),
    );
    marketsync::config::Config::parse(&text, "t.toml").expect("the printed expiry validates");
    // The token reads the consenting seller's data.
    get_orders(&client(&base, Some(&refresh_token)))
        .await
        .expect("orders with the new token");
    let seen = requests(&base).await;
    assert!(
        seen.iter()
            .any(|request| request.seller == SELLER && request.status == 200),
        "{seen:?}"
    );
}

/// Regression (issue 14 audit): check-config refuses an eBay account without
/// refresh_token_env and says to run `marketsync auth ebay`, which used to load the
/// configuration through the same check and refuse too. `auth ebay` now walks the grant
/// on exactly that configuration, names a variable to add, and with it added the
/// configuration passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebay_auth_command_runs_on_the_account_check_config_refuses_for_want_of_a_token() {
    let sim = start_sim().await;
    let base = sim.base_url();
    let dir = tempfile::tempdir().expect("tempdir");
    // A production-shaped account (explicit endpoints, no [simulator]) on the simulator.
    let config = write_config(dir.path(), &base, &["orders", "transactions"], false);
    let refused = cli(&config).arg("check-config").output().expect("run");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("refresh_token_env: missing")
            && stderr.contains("marketsync auth ebay shop"),
        "{stderr}"
    );
    let run = run_auth(&base, &config, ORDERS_AND_TRANSACTIONS_SCOPES).await;
    let refresh_token = run.field("refresh_token");
    // No variable is configured: the command names one to add, after the client id's.
    assert_eq!(run.field("variable"), "AUTH_EBAY_REFRESH_TOKEN");
    assert!(
        run.stderr
            .contains("add refresh_token_env = \"AUTH_EBAY_REFRESH_TOKEN\""),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(&refresh_token), "{}", run.stderr);
    // With the variable added as told, check-config accepts the account.
    let text = std::fs::read_to_string(&config).expect("config").replace(
        "client_secret_env = \"AUTH_EBAY_CLIENT_SECRET\"\n",
        "client_secret_env = \"AUTH_EBAY_CLIENT_SECRET\"\nrefresh_token_env = \"AUTH_EBAY_REFRESH_TOKEN\"\n",
    );
    std::fs::write(&config, text).expect("write");
    let accepted = cli(&config)
        .env("AUTH_EBAY_REFRESH_TOKEN", &refresh_token)
        .arg("check-config")
        .output()
        .expect("run");
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    // And the token reads the consenting seller's orders.
    get_orders(&client(&base, Some(&refresh_token)))
        .await
        .expect("orders with the new token");
}

/// Regression (issue 14 audit): `auth ebay` refused an account with a `market_prices`
/// stream ("no eBay OAuth scope is known for stream market_prices"). That stream reads
/// the Browse API with the application's own token: consent asks nothing for it, and an
/// account with nothing else is told it needs no consent at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebay_auth_command_takes_an_account_with_market_prices() {
    let sim = start_sim().await;
    let base = sim.base_url();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &base, &["orders", "market_prices"], true);
    // The base scope and the orders' scope only.
    let run = run_auth(
        &base,
        &config,
        "https%3A%2F%2Fapi.ebay.com%2Foauth%2Fapi_scope%20https%3A%2F%2Fapi.ebay.com%2Foauth%2Fapi_scope%2Fsell.fulfillment.readonly",
    )
    .await;
    get_orders(&client(&base, Some(&run.field("refresh_token"))))
        .await
        .expect("orders with the new token");

    let browse_only = tempfile::tempdir().expect("tempdir");
    let config = write_config(browse_only.path(), &base, &["market_prices"], false);
    let output = cli(&config)
        .args(["auth", "ebay", "shop"])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("market_prices") && stderr.contains("needs no seller consent"),
        "{stderr}"
    );
    // Nothing was printed to open: no consent URL.
    assert!(output.stdout.is_empty(), "{:?}", output.stdout);
    // Such an account needs no RuName either: it is told so, not asked for one.
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace(&format!("ru_name = \"{RU_NAME}\""), "");
    std::fs::write(&config, text).expect("write");
    let output = cli(&config)
        .args(["auth", "ebay", "shop"])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("needs no seller consent") && !stderr.contains("ru_name"),
        "{stderr}"
    );
}

fn at_text(at: i64) -> String {
    chrono::DateTime::from_timestamp(at, 0)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::test]
async fn ebay_check_config_refuses_an_account_without_a_refresh_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "https://api.ebay.com", &["orders"], false);
    let output = cli(&config).arg("check-config").output().expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("accounts[0].credentials.refresh_token_env: missing")
            && stderr.contains("marketsync auth ebay shop"),
        "{stderr}"
    );
    // `run` reads the same validation and refuses too.
    let output = cli(&config).arg("run").output().expect("run");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("marketsync auth ebay shop"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn ebay_status_and_doctor_warn_before_the_refresh_token_expires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "http://127.0.0.1:9", &["orders"], true);
    let soon = at_text(chrono::Utc::now().timestamp() + 5 * 86_400);
    let text = std::fs::read_to_string(&config).expect("config").replace(
        &format!("ru_name = \"{RU_NAME}\""),
        &format!("ru_name = \"{RU_NAME}\"\nrefresh_token_expires = \"{soon}\""),
    );
    std::fs::write(&config, text).expect("write");
    let status = cli(&config)
        .args(["status", "--json"])
        .output()
        .expect("status");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let body: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    let warning = body["accounts"][0]["warnings"][0]
        .as_str()
        .expect("a warning");
    assert!(warning.contains("expires at"), "{warning}");
    assert!(warning.contains("marketsync auth ebay shop"), "{warning}");
    let doctor = cli(&config)
        .args(["doctor", "shop"])
        .output()
        .expect("doctor");
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert_eq!(doctor.status.code(), Some(1), "{text}");
    assert!(text.contains("eBay refresh token expires at"), "{text}");
    // The finding carries its fix as every action finding does.
    let doctor = cli(&config)
        .args(["doctor", "shop", "--json"])
        .output()
        .expect("doctor --json");
    let report: serde_json::Value = serde_json::from_slice(&doctor.stdout).expect("json");
    let finding = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|finding| {
            finding["message"]
                .as_str()
                .is_some_and(|message| message.contains("refresh token expires at"))
        })
        .unwrap_or_else(|| panic!("an expiry finding in {report}"));
    assert_eq!(finding["severity"], "action", "{finding}");
    assert!(
        finding["fix"]
            .as_str()
            .is_some_and(|fix| fix.contains("marketsync auth ebay shop")),
        "{finding}"
    );
}

/// A seller consented to orders only: the transactions stream stops on eBay's access
/// denied, and doctor names the missing scope and `auth ebay` as the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebay_doctor_names_the_missing_scope_after_access_denied() {
    let sim = start_sim().await;
    let base = sim.base_url();
    let code = consent(
        &base,
        &[
            "https://api.ebay.com/oauth/api_scope",
            "https://api.ebay.com/oauth/api_scope/sell.fulfillment.readonly",
        ],
    )
    .await;
    let grant = marketsync::provider::ebay::exchange_code(
        &reqwest::Client::new(),
        &format!("{base}/identity/v1/oauth2/token"),
        CLIENT_ID,
        CLIENT_SECRET,
        &code,
        RU_NAME,
    )
    .await
    .expect("exchange");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &base, &["transactions"], true);
    let sync = tokio::process::Command::from({
        let mut command = cli(&config);
        command
            .env("AUTH_EBAY_REFRESH_TOKEN", &grant.refresh_token)
            .args(["sync", "--once", "--timeout", "60s"]);
        command
    })
    .kill_on_drop(true)
    .output();
    let sync = tokio::time::timeout(Duration::from_secs(90), sync)
        .await
        .expect("sync ends")
        .expect("run sync");
    assert_eq!(
        sync.status.code(),
        Some(1),
        "stopped early on the auth cooldown: {}",
        String::from_utf8_lossy(&sync.stderr)
    );
    let doctor = cli(&config)
        .env("AUTH_EBAY_REFRESH_TOKEN", &grant.refresh_token)
        .args(["doctor", "shop"])
        .output()
        .expect("doctor");
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert_eq!(doctor.status.code(), Some(1), "{text}");
    assert!(
        text.contains("errorId 1100")
            && text.contains("https://api.ebay.com/oauth/api_scope/sell.finances"),
        "{text}"
    );
    assert!(text.contains("run `marketsync auth ebay shop`"), "{text}");
    // The cooldown's own text names the account too.
    assert!(!text.contains("auth ebay ACCOUNT"), "{text}");
    // No `[http]` here: the cooldown is cleared through the CLI, not a curl to an API
    // nothing serves.
    assert!(
        text.contains("cooldowns clear ebay:shop") && !text.contains("curl"),
        "{text}"
    );
    // The token itself never reaches the doctor's output.
    assert!(!text.contains(&grant.refresh_token), "{text}");
}
