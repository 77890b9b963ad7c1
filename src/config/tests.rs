//! Tests of configuration parsing and validation: the shipped files are valid, and
//! every error names the key and the fix.

use super::validate::hours;
use super::*;

#[test]
fn embedded_demo_is_valid() {
    let config = Config::embedded_demo().unwrap();
    assert!(config.simulator.is_some());
    assert!(!config.accounts.is_empty());
}

#[test]
fn example_documents_every_key_and_is_valid() {
    let text = include_str!("../../config/example.toml");
    let config = Config::parse(text, "config/example.toml").unwrap();
    let stream = config.accounts[0].stream("vendor_rt_sales").unwrap();
    assert_eq!(stream.windowed().lookback, hours(72));
    assert_eq!(stream.windowed().chunk, hours(6));
}

#[test]
fn example_configures_every_shape() {
    let text = include_str!("../../config/example.toml");
    let config = Config::parse(text, "config/example.toml").unwrap();
    let ebay = config.account("ebay-store-17").unwrap();
    assert_eq!(ebay.provider.shape(), Shape::Cursor);
    let orders = ebay.stream("orders").unwrap();
    assert_eq!(orders.cursor().max_window, hours(24));
    assert_eq!(orders.cursor().start, hours(90 * 24));
    assert_eq!(orders.cursor().page_limit, 200);
    // Tables left empty take the defaults.
    assert_eq!(
        ebay.stream("returns").unwrap().interval,
        Duration::from_secs(300)
    );
    assert_eq!(
        ebay.credentials
            .as_ref()
            .unwrap()
            .refresh_token_env
            .as_deref(),
        Some("STORE17_EBAY_REFRESH_TOKEN")
    );
    let keepa = config.account("keepa-main").unwrap();
    assert_eq!(keepa.stream("products").unwrap().jobs().batch, 100);
    assert_eq!(
        config
            .account("stockx-main")
            .unwrap()
            .stream("market_data")
            .unwrap()
            .jobs()
            .batch,
        1
    );
}

#[test]
fn keys_of_another_shape_and_missing_credentials_are_errors() {
    let cases = [
        (
            "[[accounts]]\nid = \"e\"\nprovider = \"ebay\"\n[accounts.streams.orders]\nchunk = \"6h\"\n",
            "c.toml: accounts[0].streams.orders.chunk: does not apply to cursor streams; remove it",
        ),
        (
            "[[accounts]]\nid = \"a\"\nprovider = \"amazon\"\nmarketplace = \"X\"\n[accounts.streams.vendor_rt_sales]\nmax_window = \"24h\"\n",
            "c.toml: accounts[0].streams.vendor_rt_sales.max_window: does not apply to report (windowed) streams",
        ),
        (
            "[[accounts]]\nid = \"k\"\nprovider = \"keepa\"\n[accounts.streams.products]\nbatch = 101\n",
            "c.toml: accounts[0].streams.products.batch: 101 is out of range; this provider takes 1 to 100",
        ),
        (
            "[[accounts]]\nid = \"e\"\nprovider = \"ebay\"\n[accounts.streams.orders]\npage_limit = 500\n",
            "c.toml: accounts[0].streams.orders.page_limit: 500 is out of range",
        ),
        (
            "[[accounts]]\nid = \"e\"\nprovider = \"ebay\"\n[accounts.streams.bids]\n",
            "c.toml: accounts[0].streams.bids: unknown stream \"bids\" for provider ebay",
        ),
        (
            "[[accounts]]\nid = \"k\"\nprovider = \"keepa\"\n[accounts.credentials]\nclient_id_env = \"K_ID\"\n",
            "c.toml: accounts[0].credentials.api_key_env: missing; keepa accounts need api_key_env",
        ),
        (
            "[[accounts]]\nid = \"k\"\nprovider = \"keepa\"\n[accounts.credentials]\napi_key_env = \"K_KEY\"\nclient_id_env = \"K_ID\"\n",
            "c.toml: accounts[0].credentials.client_id_env: keepa accounts do not use it; remove it",
        ),
        (
            "[[accounts]]\nid = \"s\"\nprovider = \"stockx\"\nregion = \"eu\"\n",
            "c.toml: accounts[0].region: only amazon accounts have a region",
        ),
    ];
    for (text, expected) in cases {
        let text = format!("[simulator]\nenabled = true\n{text}");
        let err = Config::parse(&text, "c.toml").unwrap_err().to_string();
        assert!(err.starts_with(expected), "{err}");
    }
    let text = "[[accounts]]\nid = \"e\"\nprovider = \"ebay\"\n[accounts.streams.orders]\n";
    let err = Config::parse(text, "c.toml").unwrap_err().to_string();
    assert!(
        err.starts_with("c.toml: accounts[0].credentials: missing; add [accounts.credentials] with client_id_env, client_secret_env"),
        "{err}"
    );
}

#[test]
fn errors_name_the_key_and_the_fix() {
    let text = "[[accounts]]\nid = \"a\"\nprovider = \"ebya\"\nmarketplace = \"X\"\n";
    let err = Config::parse(text, "c.toml").unwrap_err().to_string();
    assert_eq!(
        err,
        "c.toml: accounts[0].provider: unknown provider \"ebya\"; expected one of amazon, ebay, stockx, keepa, alias"
    );
    let text = "[simulator]\nenabled = true\n[[accounts]]\nid = \"a\"\nprovider = \"amazon\"\nmarketplace = \"X\"\n[accounts.streams.vendor_rt_sales]\nlookback = \"3 hourz\"\n";
    let err = Config::parse(text, "c.toml").unwrap_err().to_string();
    assert_eq!(
        err,
        "c.toml: accounts[0].streams.vendor_rt_sales.lookback: invalid duration \"3 hourz\"; use a form like 72h, 15m or 30s"
    );
    let err = Config::parse("data_dri = \"x\"\n", "c.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("c.toml: data_dri: unknown field `data_dri`, expected one of `data_dir`"),
        "{err}"
    );
}

const ACCOUNT: &str = "[simulator]\nenabled = true\n[[accounts]]\nid = \"a\"\nprovider = \"amazon\"\nmarketplace = \"X\"\n";

#[test]
fn quota_section_parses_overrides_and_defaults() {
    let config = Config::parse(ACCOUNT, "c.toml").unwrap();
    assert_eq!(config.quota, QuotaSettings::default());
    assert_eq!(config.accounts[0].quota_scope(), "a");
    let text = format!(
        "[quota]\nreserve_share = 0.3\nrate_margin = 0\n[quota.amazon.createReport]\nrate = 0.5\nburst = 2\n{ACCOUNT}selling_partner_id = \"A3SELLER\"\n"
    );
    let config = Config::parse(&text, "c.toml").unwrap();
    assert_eq!(config.quota.reserve_share, 0.3);
    assert_eq!(config.quota.rate_margin, 0.0);
    assert_eq!(
        config.quota.amazon.get("createReport"),
        Some(&crate::quota::BucketSpec::new(0.5, 2.0))
    );
    assert_eq!(config.accounts[0].quota_scope(), "A3SELLER");
    let text = format!("[quota.ebay.getTransactions]\nrate = 0.05\nburst = 500\n{ACCOUNT}");
    let config = Config::parse(&text, "c.toml").unwrap();
    assert_eq!(
        config.quota.providers["ebay"].get("getTransactions"),
        Some(&crate::quota::BucketSpec::new(0.05, 500.0))
    );
    // An hourly budget reached whole: a cap of 100 in any hour beside the bucket.
    let text = format!(
        "[quota.stockx.marketData]\nrate = 0.027778\nburst = 1.25\nper_hour = 100\n{ACCOUNT}"
    );
    let config = Config::parse(&text, "c.toml").unwrap();
    assert_eq!(
        config.quota.providers["stockx"]["marketData"].window,
        Some(crate::quota::WindowCap {
            limit: 100.0,
            length: std::time::Duration::from_secs(3600)
        })
    );
    let text =
        format!("[quota.stockx.marketData]\nrate = 0.027778\nburst = 10\nper_hour = 5\n{ACCOUNT}");
    let err = Config::parse(&text, "c.toml").unwrap_err().to_string();
    assert!(
        err.contains("quota.stockx.marketData.per_hour: 5 is out of range"),
        "{err}"
    );
    let text = format!("[quota.keepa.products]\nrate = 1\nburst = 5\n{ACCOUNT}");
    let err = Config::parse(&text, "c.toml").unwrap_err().to_string();
    assert!(
        err.starts_with(
            "c.toml: quota.keepa.products: unknown operation \"products\"; expected one of product"
        ),
        "{err}"
    );
}

/// Issue 12: `max_in_flight` defaults to what the createReport burst allows: the
/// documented 15, or `[quota.amazon.createReport] burst` when configured; a stream's own
/// setting wins.
#[test]
fn max_in_flight_defaults_to_the_configured_create_report_burst() {
    let in_flight = |text: &str| {
        let config = Config::parse(text, "c.toml").unwrap();
        config.accounts[0]
            .stream("vendor_rt_sales")
            .expect("the stream")
            .windowed()
            .max_in_flight
    };
    let stream = "[accounts.streams.vendor_rt_sales]\nlookback = \"24h\"\n";
    assert_eq!(in_flight(&format!("{ACCOUNT}{stream}")), 15);
    let quota = "[quota.amazon.createReport]\nrate = 0.0167\nburst = 5.5\n";
    assert_eq!(in_flight(&format!("{quota}{ACCOUNT}{stream}")), 5);
    assert_eq!(
        in_flight(&format!("{quota}{ACCOUNT}{stream}max_in_flight = 20\n")),
        20
    );
}

#[test]
fn quota_errors_name_the_key_and_the_fix() {
    let cases = [
        (
            "[quota]\nreserve_shar = 0.2\n",
            "c.toml: quota.reserve_shar: unknown field `reserve_shar`",
        ),
        (
            "[quota]\nreserve_share = 1.5\n",
            "c.toml: quota.reserve_share: 1.5 is not a share",
        ),
        (
            "[quota.amazon.createReprot]\nrate = 1.0\nburst = 2\n",
            "c.toml: quota.amazon.createReprot: unknown operation \"createReprot\"",
        ),
        (
            "[quota.amazon.getReport]\nrate = 0\nburst = 2\n",
            "c.toml: quota.amazon.getReport.rate: 0 is not a rate",
        ),
        (
            "[quota.amazon.getReport]\nrate = 1.0\n",
            "c.toml: quota.amazon.getReport: missing field `burst`",
        ),
        (
            "[quota.amazon.getReport]\nrate = 1.0\nburst = 2\ncost = 1\n",
            "c.toml: quota.amazon.getReport.cost: unknown field `cost`",
        ),
    ];
    for (quota, expected) in cases {
        let text = format!("{quota}{ACCOUNT}");
        let err = Config::parse(&text, "c.toml").unwrap_err().to_string();
        assert!(err.starts_with(expected), "{err}");
    }
    let text = format!("{ACCOUNT}selling_partner_id = \"a:b\"\n");
    let err = Config::parse(&text, "c.toml").unwrap_err().to_string();
    assert!(
        err.starts_with(
            "c.toml: accounts[0].selling_partner_id: \"a:b\" is not a selling partner id"
        ),
        "{err}"
    );
}

#[test]
fn ebay_oauth_keys_are_validated() {
    let account = |extra: &str| {
        format!(
            "[[accounts]]\nid = \"e\"\nprovider = \"ebay\"\n{extra}\n[accounts.credentials]\nclient_id_env = \"E_ID\"\nclient_secret_env = \"E_SECRET\"\nrefresh_token_env = \"E_REFRESH\"\n"
        )
    };
    let config = Config::parse(
        &account("ru_name = \"Acme_Inc-AcmeSync-PRD-1a2b3c4d5-6e7f8a9b\"\nrefresh_token_expires = \"2028-05-26T09:00:00Z\""),
        "c.toml",
    )
    .expect("valid");
    let ebay = &config.accounts[0];
    assert_eq!(
        ebay.ru_name.as_deref(),
        Some("Acme_Inc-AcmeSync-PRD-1a2b3c4d5-6e7f8a9b")
    );
    assert_eq!(ebay.refresh_token_expires, Some(1_842_944_400));
    let cases = [
        (
            account("ru_name = \"https://example.com/accept\""),
            "c.toml: accounts[0].ru_name: \"https://example.com/accept\" is not an eBay RuName",
        ),
        (
            account("refresh_token_expires = \"in 18 months\""),
            "c.toml: accounts[0].refresh_token_expires: \"in 18 months\" is not an RFC 3339 time",
        ),
        (
            "[[accounts]]\nid = \"k\"\nprovider = \"keepa\"\nru_name = \"X\"\n[accounts.credentials]\napi_key_env = \"K\"\n".to_string(),
            "c.toml: accounts[0].ru_name: only ebay accounts have it",
        ),
        (
            "[[accounts]]\nid = \"e\"\nprovider = \"ebay\"\n[accounts.credentials]\nclient_id_env = \"E_ID\"\nclient_secret_env = \"E_SECRET\"\n".to_string(),
            "c.toml: accounts[0].credentials.refresh_token_env: missing; eBay's seller APIs",
        ),
    ];
    for (text, expected) in cases {
        let err = Config::parse(&text, "c.toml").unwrap_err().to_string();
        assert!(err.starts_with(expected), "{err}");
    }
}

/// `auth ebay` loads the account check-config refuses for want of a refresh token (it is
/// the command that gets one); everything else about the account is still checked.
#[test]
fn ebay_consent_loads_an_account_without_a_refresh_token() {
    let without = |extra: &str| {
        format!(
            "[[accounts]]\nid = \"e\"\nprovider = \"ebay\"\nendpoint = \"https://api.ebay.com\"\nru_name = \"Acme_Inc-AcmeSync-PRD-1a2b3c4d5-6e7f8a9b\"\n[accounts.credentials]\nclient_id_env = \"E_ID\"\nclient_secret_env = \"E_SECRET\"\n{extra}[accounts.streams.orders]\n"
        )
    };
    let text = without("");
    let err = Config::parse(&text, "c.toml").unwrap_err().to_string();
    assert!(
        err.contains("refresh_token_env: missing") && err.contains("marketsync auth ebay e"),
        "{err}"
    );
    let config =
        Config::parse_for(&text, "c.toml", Purpose::EbayConsent).expect("consent loads it");
    let names = config.accounts[0]
        .credentials
        .as_ref()
        .expect("credentials");
    assert_eq!(names.refresh_token_env, None);
    // Only the refresh token is let off: a bad variable name is still refused.
    let err = Config::parse_for(
        &without("api_key_env = \"E_KEY\"\n"),
        "c.toml",
        Purpose::EbayConsent,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("credentials.api_key_env"), "{err}");
}

#[test]
fn cluster_defaults_bounds_and_its_need_for_redis() {
    let base = r#"
[redis]
url = "redis://127.0.0.1:6379"
"#;
    let config = Config::parse(&format!("{base}[cluster]\nenabled = true\n"), "c.toml").unwrap();
    assert!(config.deployment().cluster.is_some());
    let cluster = config.cluster.expect("enabled");
    assert_eq!(cluster.heartbeat, Duration::from_secs(5));
    assert_eq!(cluster.member_ttl, Duration::from_secs(15));
    assert_eq!(cluster.member_id, crate::cluster::default_member_id());

    let off = Config::parse(
        &format!("{base}[cluster]\nmember_id = \"web1\"\n"),
        "c.toml",
    )
    .unwrap();
    assert!(off.cluster.is_none(), "enabled defaults to false");
    assert!(Config::parse("", "c.toml").unwrap().cluster.is_none());

    let named = Config::parse(
        &format!("{base}[cluster]\nenabled = true\nmember_id = \"web1\"\nheartbeat = \"1s\"\nmember_ttl = \"3s\"\n"),
        "c.toml",
    )
    .unwrap()
    .cluster
    .unwrap();
    assert_eq!(named.member_id, "web1");
    assert_eq!(named.member_ttl, Duration::from_secs(3));

    let error = |text: &str| Config::parse(text, "c.toml").unwrap_err().to_string();
    let without_redis = error("[cluster]\nenabled = true\n");
    assert!(
        without_redis.contains("cluster.enabled")
            && without_redis.contains("needs a [redis] section"),
        "{without_redis}"
    );
    let short_ttl = error(&format!(
        "{base}[cluster]\nenabled = true\nheartbeat = \"5s\"\nmember_ttl = \"6s\"\n"
    ));
    assert!(
        short_ttl.contains("at least twice cluster.heartbeat"),
        "{short_ttl}"
    );
    let long_heartbeat = error(&format!("{base}[cluster]\nheartbeat = \"2h\"\n"));
    assert!(
        long_heartbeat.contains("cluster.heartbeat"),
        "{long_heartbeat}"
    );
    let spaced = error(&format!("{base}[cluster]\nmember_id = \"web 1\"\n"));
    assert!(spaced.contains("cluster.member_id"), "{spaced}");
    let unknown = error(&format!("{base}[cluster]\nmembers = 3\n"));
    assert!(unknown.contains("members"), "{unknown}");
}

/// `[store] url_env`: absent is SQLite; a named variable that is unset, empty or not a
/// PostgreSQL URL is an error naming the variable; the password never shows.
#[test]
fn store_url_env_is_read_checked_and_never_shown() {
    let base = r#"
data_dir = "/tmp/x"
"#;
    assert!(Config::parse(base, "t.toml").unwrap().store.is_none());
    let without_url = format!("{base}\n[store]\npool_size = 4\n");
    assert!(Config::parse(&without_url, "t.toml")
        .unwrap()
        .store
        .is_none());

    let var = "MARKETSYNC_TEST_STORE_URL_UNSET_3F1A";
    let text = format!("{base}\n[store]\nurl_env = \"{var}\"\n");
    let err = Config::parse(&text, "t.toml").unwrap_err().to_string();
    assert!(err.contains(var) && err.contains("not set"), "{err}");

    let var = "MARKETSYNC_TEST_STORE_URL_MYSQL_3F1A";
    std::env::set_var(var, "mysql://ms:hunter2@db/ms");
    let text = format!("{base}\n[store]\nurl_env = \"{var}\"\n");
    let err = Config::parse(&text, "t.toml").unwrap_err().to_string();
    assert!(
        err.contains(var) && err.contains("not a postgresql url"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");

    let var = "MARKETSYNC_TEST_STORE_URL_OK_3F1A";
    std::env::set_var(var, "postgres://ms:hunter2@db.example:5432/ms");
    let text = format!(
        "{base}\n[store]\nurl_env = \"{var}\"\npool_size = 3\nstatement_timeout = \"5s\"\n"
    );
    let config = Config::parse(&text, "t.toml").unwrap();
    let store = config.store.as_ref().unwrap();
    assert_eq!(store.url_env, var);
    assert_eq!(store.pg.pool_size, 3);
    assert_eq!(store.pg.statement_timeout, Duration::from_secs(5));
    assert_eq!(
        store.url.expose(),
        "postgres://ms:hunter2@db.example:5432/ms"
    );
    let shown = format!("{config:?} {}", store.url);
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("ms:***@db.example"), "{shown}");

    let text = format!("{base}\n[store]\nurl_env = \"{var}\"\npool_size = 0\n");
    let err = Config::parse(&text, "t.toml").unwrap_err().to_string();
    assert!(err.contains("store.pool_size"), "{err}");
}

#[test]
fn chaos_pause_before_apply_needs_a_bounded_pause_and_only_that_action_takes_one() {
    use crate::domain::chaos::{ChaosAction, ChaosWhen};
    let drill = |rest: &str| {
        format!("{ACCOUNT}[chaos]\nenabled = true\naccount = \"a\"\nnth_unit = 2\n{rest}")
    };
    let config = Config::parse(
        &drill("action = \"pause_before_apply\"\npause = \"15s\"\n"),
        "c.toml",
    )
    .unwrap();
    let chaos = config.chaos.expect("the drill");
    assert_eq!(
        chaos.action,
        ChaosAction::PauseBeforeApply(Duration::from_secs(15))
    );
    assert_eq!(chaos.when, ChaosWhen::NthUnit(2));
    for (rest, expected) in [
        (
            "action = \"pause_before_apply\"\n",
            "c.toml: chaos.pause: missing; pause_before_apply needs pause = \"DURATION\" (e.g. \"15s\")",
        ),
        (
            "action = \"freeze\"\npause = \"15s\"\n",
            "c.toml: chaos.pause: only action = \"pause_before_apply\" takes a pause; remove it",
        ),
        (
            "action = \"pause_before_apply\"\npause = \"11m\"\n",
            "c.toml: chaos.pause: 11m is above the maximum of 10m; use a pause of at most 10m (allowed: 1ms to 10m)",
        ),
        (
            "action = \"pause_before_apply\"\npause = \"soon\"\n",
            "c.toml: chaos.pause: invalid duration \"soon\"; use a form like 72h, 15m or 30s",
        ),
        (
            "action = \"stall\"\n",
            "c.toml: chaos.action: unknown action \"stall\"; expected panic, freeze or pause_before_apply",
        ),
    ] {
        let err = Config::parse(&drill(rest), "c.toml").unwrap_err().to_string();
        assert_eq!(err, expected);
    }
    let disarmed = format!("{ACCOUNT}[chaos]\npause = \"15s\"\n");
    let err = Config::parse(&disarmed, "c.toml").unwrap_err().to_string();
    assert!(
        err.contains("crash drills are refused unless enabled = true"),
        "{err}"
    );
}
