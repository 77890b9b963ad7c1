//! Validation of `[[accounts]]` tables and their streams: `RawAccount` into
//! [`AccountConfig`] (id, provider, endpoints, credential variable names) and `RawStream`
//! into [`StreamConfig`] (the keys of its shape only).

use std::time::Duration;

use super::raw::{RawAccount, RawStream};
use super::validate::{
    bounded_duration, check_count, check_duration, duration, hours, limits, whole_hours,
};
use super::{
    streams_of, AccountConfig, ClaimOrder, CredentialEnv, CursorSettings, Endpoints, FeedSettings,
    JobsSettings, Provider, Purpose, Shape, ShapeSettings, StreamConfig, WindowedSettings,
};

impl RawAccount {
    pub(super) fn validate(
        self,
        key: &str,
        simulator_enabled: bool,
        purpose: Purpose,
    ) -> Result<AccountConfig, String> {
        if !valid_id(&self.id) {
            return Err(format!(
                "{key}.id: invalid account id {:?}; use lowercase letters, digits, '-', '_' or '.' (at most 64)",
                self.id
            ));
        }
        let Some(provider_kind) = Provider::parse(&self.provider) else {
            return Err(format!(
                "{key}.provider: unknown provider {:?}; expected one of {}",
                self.provider,
                Provider::names()
            ));
        };
        let supported = streams_of(provider_kind);
        let provider = self.provider.as_str();
        let marketplace = match (self.marketplace, provider) {
            (Some(marketplace), _) if !marketplace.trim().is_empty() => marketplace,
            (_, "ebay") => "EBAY_US".to_string(),
            (_, "stockx") => "US".to_string(),
            // Keepa's domain id: 1 is amazon.com.
            (_, "keepa") => "1".to_string(),
            // Alias's `region_id`; `global` sends none (prices across every region).
            (_, "alias") => "global".to_string(),
            _ => {
                return Err(format!(
                    "{key}.marketplace: missing; give the marketplace id, e.g. ATVPDKIKX0DER for amazon.com"
                ))
            }
        };
        if provider == "alias"
            && marketplace != "global"
            && !(marketplace.len() <= 8 && marketplace.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(format!(
                "{key}.marketplace: {marketplace:?} is not an Alias region; use global (every region) or a region id such as 1"
            ));
        }
        if provider == "alias" && self.token_url.is_some() {
            return Err(format!(
                "{key}.token_url: alias accounts authenticate with a personal access token (api_key_env), not an OAuth token url; remove it"
            ));
        }
        if self.region.is_some() && provider != "amazon" {
            return Err(format!(
                "{key}.region: only amazon accounts have a region; remove it (use endpoint to point a {provider} account elsewhere)"
            ));
        }
        let region = self.region.unwrap_or_else(|| "na".to_string());
        let Some((default_api, default_token)) = default_endpoints(provider, &region) else {
            return Err(format!(
                "{key}.region: unknown region {region:?}; expected one of na, eu, fe"
            ));
        };
        let explicit = self.endpoint.is_some() || self.token_url.is_some();
        let endpoints = if simulator_enabled && !explicit {
            Endpoints::EmbeddedSimulator
        } else {
            for (name, value) in [("endpoint", &self.endpoint), ("token_url", &self.token_url)] {
                if let Some(url) = value {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(format!(
                            "{key}.{name}: {url:?} is not an http(s) url; use a form like https://sellingpartnerapi-na.amazon.com"
                        ));
                    }
                }
            }
            Endpoints::Explicit {
                api_base: self
                    .endpoint
                    .unwrap_or_else(|| default_api.to_string())
                    .trim_end_matches('/')
                    .to_string(),
                token_url: self.token_url.unwrap_or_else(|| default_token.to_string()),
            }
        };
        let credentials = self.credentials.map(|raw| CredentialEnv {
            client_id_env: raw.client_id_env,
            client_secret_env: raw.client_secret_env,
            refresh_token_env: raw.refresh_token_env,
            api_key_env: raw.api_key_env,
        });
        // An eBay account whose only streams are `market_prices` calls the Browse API with
        // the application token (client-credentials grant): it needs no seller.
        let browse_only = provider == "ebay"
            && !self.streams.is_empty()
            && self
                .streams
                .keys()
                .all(|name| name == crate::domain::provider::EBAY_MARKET_PRICES_STREAM);
        // `auth ebay` is how an eBay account gets the refresh token: it loads the account
        // without one (the check below is for everything that syncs).
        let seller_token_optional = browse_only || purpose == Purpose::EbayConsent;
        let (required, optional): (&[&str], &[&str]) = match provider {
            "amazon" => (
                &["client_id_env", "client_secret_env", "refresh_token_env"],
                &[],
            ),
            // eBay's seller APIs take a user token only (the refresh-token grant): without
            // refresh_token_env every call would be refused (403, errorId 1100).
            "ebay" if seller_token_optional => (
                &["client_id_env", "client_secret_env"],
                &["refresh_token_env"],
            ),
            "ebay" => (
                &["client_id_env", "client_secret_env", "refresh_token_env"],
                &[],
            ),
            "stockx" => (
                &[
                    "client_id_env",
                    "client_secret_env",
                    "refresh_token_env",
                    "api_key_env",
                ],
                &[],
            ),
            _ => (&["api_key_env"], &[]),
        };
        if credentials.is_none() && endpoints != Endpoints::EmbeddedSimulator {
            let how = if provider == "ebay" {
                format!(
                    " (the seller's refresh token comes from `marketsync auth ebay {}`)",
                    self.id
                )
            } else {
                String::new()
            };
            return Err(format!(
                "{key}.credentials: missing; add [accounts.credentials] with {} naming environment variables{how}",
                required.join(", ")
            ));
        }
        if let Some(credentials) = &credentials {
            let fields = [
                ("client_id_env", &credentials.client_id_env),
                ("client_secret_env", &credentials.client_secret_env),
                ("refresh_token_env", &credentials.refresh_token_env),
                ("api_key_env", &credentials.api_key_env),
            ];
            for (name, value) in fields {
                if value.is_none()
                    && name == "refresh_token_env"
                    && provider == "ebay"
                    && !seller_token_optional
                {
                    return Err(format!(
                        "{key}.credentials.refresh_token_env: missing; eBay's seller APIs (orders, transactions, returns, ...) refuse an application token, so the account needs a seller's refresh token: run `marketsync auth ebay {}` (it needs {key}.ru_name), then name the variable holding the token here",
                        self.id
                    ));
                }
                if value.is_none() && required.contains(&name) {
                    return Err(format!(
                        "{key}.credentials.{name}: missing; {provider} accounts need {}",
                        required.join(", ")
                    ));
                }
            }
            for (name, value) in fields {
                let Some(value) = value else {
                    continue;
                };
                if !required.contains(&name) && !optional.contains(&name) {
                    return Err(format!(
                        "{key}.credentials.{name}: {provider} accounts do not use it; remove it (they need {})",
                        required.join(", ")
                    ));
                }
                let looks_like_env = !value.is_empty()
                    && value
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                if !looks_like_env {
                    return Err(format!(
                        "{key}.credentials.{name}: {:?} is not an environment variable name; give the NAME of a variable (like ACME_LWA_CLIENT_ID), never the secret itself",
                        if value.len() > 12 { "<redacted>" } else { value.as_str() }
                    ));
                }
            }
        }
        if let Some(seller) = &self.selling_partner_id {
            let valid = !seller.is_empty()
                && seller.len() <= 64
                && seller
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
            if !valid {
                return Err(format!(
                    "{key}.selling_partner_id: {seller:?} is not a selling partner id; use letters, digits, '-', '_' or '.' (at most 64), e.g. A3EXAMPLE1SELLER"
                ));
            }
        }
        if provider != "ebay" {
            for (name, present) in [
                ("ru_name", self.ru_name.is_some()),
                (
                    "refresh_token_expires",
                    self.refresh_token_expires.is_some(),
                ),
            ] {
                if present {
                    return Err(format!(
                        "{key}.{name}: only ebay accounts have it; remove it"
                    ));
                }
            }
        }
        if let Some(ru_name) = &self.ru_name {
            // eBay's RuNames: Owner-App-PRD-xxxxxxxx-xxxxxxxx style, letters, digits, '-', '_'.
            let valid = !ru_name.is_empty()
                && ru_name.len() <= 255
                && ru_name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid {
                return Err(format!(
                    "{key}.ru_name: {:?} is not an eBay RuName; copy the \"RuName (eBay Redirect URL name)\" of the application's user-token settings in the eBay developer portal, e.g. Acme_Inc-AcmeSync-PRD-1a2b3c4d5-6e7f8a9b",
                    if ru_name.len() > 64 { "<too long>" } else { ru_name.as_str() }
                ));
            }
        }
        let refresh_token_expires = match &self.refresh_token_expires {
            None => None,
            Some(text) => Some(
                chrono::DateTime::parse_from_rfc3339(text.trim())
                    .map(|at| at.timestamp())
                    .map_err(|_| {
                        format!(
                            "{key}.refresh_token_expires: {text:?} is not an RFC 3339 time; give the expiry `marketsync auth ebay` printed, e.g. 2028-05-26T09:00:00Z"
                        )
                    })?,
            ),
        };
        let mut streams = Vec::new();
        for (name, raw) in self.streams {
            let stream_key = format!("{key}.streams.{name}");
            if !supported.contains(&name.as_str()) {
                return Err(format!(
                    "{stream_key}: unknown stream {name:?} for provider {}; expected one of {}",
                    self.provider,
                    supported.join(", ")
                ));
            }
            if raw.enabled == Some(false) {
                continue;
            }
            let shape = provider_kind.stream_shape(&name);
            streams.push(raw.validate(&stream_key, name, shape)?);
        }
        // Kept for the daemon's life, 10,000 accounts of it: no spare capacity.
        streams.shrink_to_fit();
        Ok(AccountConfig {
            id: self.id,
            provider: provider_kind,
            marketplace,
            endpoints,
            credentials,
            selling_partner_id: self.selling_partner_id,
            ru_name: self.ru_name,
            refresh_token_expires,
            streams,
        })
    }
}

/// The shortest `active_inventory` interval: eBay allows 25 LMS_ACTIVE_INVENTORY_REPORT
/// tasks per seller in 24 hours (one every 57.6 minutes).
const FEED_INTERVAL_MIN: Duration = Duration::from_secs(3600);

/// The keys of the `active_inventory` stream beside the common ones.
const FEED_KEYS: &[&str] = &["poll_min", "poll_max", "poll_timeout", "max_document_bytes"];

impl RawStream {
    /// Keys that belong to one shape only, named so a misplaced key is an error.
    fn shape_keys(&self) -> [(&'static str, bool, Shape); 17] {
        use Shape::{Cursor, Jobs, Windowed};
        [
            ("lookback", self.lookback.is_some(), Windowed),
            ("chunk", self.chunk.is_some(), Windowed),
            ("order", self.order.is_some(), Windowed),
            ("poll_min", self.poll_min.is_some(), Windowed),
            ("poll_max", self.poll_max.is_some(), Windowed),
            ("poll_timeout", self.poll_timeout.is_some(), Windowed),
            (
                "max_document_bytes",
                self.max_document_bytes.is_some(),
                Windowed,
            ),
            ("max_in_flight", self.max_in_flight.is_some(), Windowed),
            ("daily_audit", self.daily_audit.is_some(), Windowed),
            ("weekly_audit", self.weekly_audit.is_some(), Windowed),
            ("start", self.start.is_some(), Cursor),
            ("max_window", self.max_window.is_some(), Cursor),
            ("page_limit", self.page_limit.is_some(), Cursor),
            (
                "max_response_bytes",
                self.max_response_bytes.is_some(),
                Cursor,
            ),
            ("max_attempts", self.max_attempts.is_some(), Jobs),
            ("job_lease", self.job_lease.is_some(), Jobs),
            ("batch", self.batch.is_some(), Jobs),
        ]
    }

    fn validate(self, key: &str, name: String, shape: Shape) -> Result<StreamConfig, String> {
        let field = |field: &str| format!("{key}.{field}");
        // The eBay Feed task stream (a snapshot, not a time window) takes the report keys
        // that say how to wait for and download its file, and none of the window keys.
        let feed_stream =
            shape == Shape::Cursor && name == crate::shapes::cursor::inventory::STREAM;
        for (key_name, present, _) in self.shape_keys() {
            let applies = FEED_KEYS.contains(&key_name);
            if feed_stream && present && !applies {
                return Err(format!(
                    "{}: does not apply to the active_inventory stream (a Feed API snapshot); its own keys are {}",
                    field(key_name),
                    FEED_KEYS.join(", ")
                ));
            }
        }
        for (name, present, belongs) in self.shape_keys() {
            if feed_stream && FEED_KEYS.contains(&name) {
                continue;
            }
            if present && belongs != shape {
                let kind = match shape {
                    Shape::Windowed => "report (windowed)",
                    Shape::Cursor => "cursor",
                    Shape::Jobs => "job queue",
                };
                return Err(format!(
                    "{}: does not apply to {kind} streams; remove it (see config/example.toml for this stream's keys)",
                    field(name)
                ));
            }
        }
        let start = bounded_duration(
            &field("start"),
            self.start.as_ref(),
            CursorSettings::DEFAULT.start,
            Duration::ZERO,
            limits::START_MAX,
        )?;
        let max_window = duration(
            &field("max_window"),
            self.max_window.as_ref(),
            CursorSettings::DEFAULT.max_window,
        )?;
        // 24h is the default and what eBay handles well.
        check_duration(
            &field("max_window"),
            max_window,
            Duration::from_secs(60),
            hours(24 * 7),
        )?;
        let page_limit = self
            .page_limit
            .unwrap_or(CursorSettings::DEFAULT.page_limit);
        if !(1..=200).contains(&page_limit) {
            return Err(format!(
                "{}: {page_limit} is out of range; marketsync asks eBay for 1 to 200 items a page (what every eBay stream's API accepts)",
                field("page_limit")
            ));
        }
        let max_attempts = check_count(
            &field("max_attempts"),
            self.max_attempts
                .unwrap_or(JobsSettings::DEFAULT.max_attempts),
            1,
            limits::MAX_ATTEMPTS_MAX,
        )?;
        let job_lease = bounded_duration(
            &field("job_lease"),
            self.job_lease.as_ref(),
            JobsSettings::DEFAULT.job_lease,
            limits::SECOND,
            limits::JOB_LEASE_MAX,
        )?;
        let batch_max = if name == "products" { 100 } else { 1 };
        let batch = self.batch.unwrap_or(batch_max);
        if !(1..=batch_max).contains(&batch) {
            return Err(format!(
                "{}: {batch} is out of range; this provider takes 1 to {batch_max} keys per request",
                field("batch")
            ));
        }
        let default_interval = match shape {
            // A whole inventory snapshot (a Feed task and its file) an hour.
            Shape::Cursor if feed_stream => Duration::from_secs(3600),
            // An offers snapshot is one getOffers call per SKU: an hour too.
            Shape::Cursor if name == crate::shapes::cursor::offers::STREAM => {
                Duration::from_secs(3600)
            }
            Shape::Windowed => Duration::from_secs(15 * 60),
            Shape::Cursor => Duration::from_secs(5 * 60),
            Shape::Jobs => Duration::from_secs(30),
        };
        let default_lag = match shape {
            Shape::Windowed => Duration::from_secs(5 * 60),
            Shape::Cursor => Duration::from_secs(2 * 60),
            Shape::Jobs => Duration::ZERO,
        };
        // The bound first: a huge value is refused as too large, not as "not whole hours".
        let lookback = whole_hours(
            &field("lookback"),
            bounded_duration(
                &field("lookback"),
                self.lookback.as_ref(),
                WindowedSettings::DEFAULT.lookback,
                hours(1),
                limits::LOOKBACK_MAX,
            )?,
        )?;
        // One report covers at most 7 days.
        let chunk = whole_hours(
            &field("chunk"),
            bounded_duration(
                &field("chunk"),
                self.chunk.as_ref(),
                WindowedSettings::DEFAULT.chunk,
                hours(1),
                hours(24 * 7),
            )?,
        )?;
        let interval = bounded_duration(
            &field("interval"),
            self.interval.as_ref(),
            default_interval,
            limits::SECOND,
            limits::INTERVAL_MAX,
        )?;
        if feed_stream && interval < FEED_INTERVAL_MIN {
            return Err(format!(
                "{}: {} is too short for active_inventory; eBay allows 25 LMS_ACTIVE_INVENTORY_REPORT tasks per seller in 24 hours, so use at least {}",
                field("interval"),
                humantime::format_duration(interval),
                humantime::format_duration(FEED_INTERVAL_MIN)
            ));
        }
        let safety_lag = bounded_duration(
            &field("safety_lag"),
            self.safety_lag.as_ref(),
            default_lag,
            Duration::ZERO,
            limits::INTERVAL_MAX,
        )?;
        let order = match self.order.as_deref() {
            None | Some("newest_first") => ClaimOrder::NewestFirst,
            Some("oldest_first") => ClaimOrder::OldestFirst,
            Some(other) => {
                return Err(format!(
                    "{}: unknown order {other:?}; expected newest_first or oldest_first",
                    field("order")
                ))
            }
        };
        let quota_cooldown = bounded_duration(
            &field("quota_cooldown"),
            self.quota_cooldown.as_ref(),
            Duration::from_secs(30 * 60),
            limits::SECOND,
            limits::QUOTA_COOLDOWN_MAX,
        )?;
        let retry_base = bounded_duration(
            &field("retry_base"),
            self.retry_base.as_ref(),
            Duration::from_secs(60),
            limits::MILLISECOND,
            limits::INTERVAL_MAX,
        )?;
        let retry_max = bounded_duration(
            &field("retry_max"),
            self.retry_max.as_ref(),
            hours(1),
            limits::MILLISECOND,
            limits::INTERVAL_MAX,
        )?;
        if retry_max < retry_base {
            return Err(format!(
                "{}: must not be shorter than retry_base ({})",
                field("retry_max"),
                humantime::format_duration(retry_base)
            ));
        }
        let poll_min = bounded_duration(
            &field("poll_min"),
            self.poll_min.as_ref(),
            WindowedSettings::DEFAULT.poll_min,
            limits::MILLISECOND,
            limits::POLL_MAX,
        )?;
        let poll_max = bounded_duration(
            &field("poll_max"),
            self.poll_max.as_ref(),
            WindowedSettings::DEFAULT.poll_max,
            limits::MILLISECOND,
            limits::POLL_MAX,
        )?;
        if poll_min.is_zero() || poll_max < poll_min {
            return Err(format!(
                "{}: poll_min must be above zero and poll_max at least poll_min",
                field("poll_max")
            ));
        }
        let poll_timeout = bounded_duration(
            &field("poll_timeout"),
            self.poll_timeout.as_ref(),
            WindowedSettings::DEFAULT.poll_timeout,
            limits::MILLISECOND,
            limits::POLL_TIMEOUT_MAX,
        )?;
        let max_document_bytes = check_count(
            &field("max_document_bytes"),
            self.max_document_bytes
                .unwrap_or(WindowedSettings::DEFAULT.max_document_bytes),
            limits::DOCUMENT_BYTES_MIN,
            limits::DOCUMENT_BYTES_MAX,
        )?;
        let max_in_flight = check_count(
            &field("max_in_flight"),
            self.max_in_flight
                .unwrap_or(WindowedSettings::DEFAULT.max_in_flight),
            1,
            limits::MAX_IN_FLIGHT,
        )?;
        let max_response_bytes = check_count(
            &field("max_response_bytes"),
            self.max_response_bytes
                .unwrap_or(CursorSettings::DEFAULT.max_response_bytes),
            limits::RESPONSE_BYTES_MIN,
            limits::RESPONSE_BYTES_MAX,
        )?;
        let feed = if feed_stream {
            FeedSettings {
                poll_min: self
                    .poll_min
                    .as_ref()
                    .map_or(FeedSettings::DEFAULT.poll_min, |_| poll_min),
                poll_max: self
                    .poll_max
                    .as_ref()
                    .map_or(FeedSettings::DEFAULT.poll_max, |_| poll_max),
                poll_timeout: self
                    .poll_timeout
                    .as_ref()
                    .map_or(FeedSettings::DEFAULT.poll_timeout, |_| poll_timeout),
                max_file_bytes: self
                    .max_document_bytes
                    .map_or(FeedSettings::DEFAULT.max_file_bytes, |_| max_document_bytes),
                max_xml_bytes: self
                    .max_document_bytes
                    .map_or(FeedSettings::DEFAULT.max_xml_bytes, |_| {
                        max_document_bytes.saturating_mul(FeedSettings::XML_PER_FILE_BYTE)
                    }),
            }
        } else {
            FeedSettings::DEFAULT
        };
        if feed.poll_max < feed.poll_min {
            return Err(format!(
                "{}: must be at least poll_min ({})",
                field("poll_max"),
                humantime::format_duration(feed.poll_min)
            ));
        }
        let shape_settings = match shape {
            Shape::Windowed => ShapeSettings::Windowed(WindowedSettings {
                lookback,
                chunk,
                order,
                poll_min,
                poll_max,
                poll_timeout,
                max_document_bytes,
                max_in_flight,
                daily_audit: self
                    .daily_audit
                    .unwrap_or(WindowedSettings::DEFAULT.daily_audit),
                weekly_audit: self
                    .weekly_audit
                    .unwrap_or(WindowedSettings::DEFAULT.weekly_audit),
            }),
            Shape::Cursor => ShapeSettings::Cursor(CursorSettings {
                start,
                max_window,
                page_limit,
                max_response_bytes,
                feed,
            }),
            Shape::Jobs => ShapeSettings::Jobs(JobsSettings {
                max_attempts,
                job_lease,
                batch,
            }),
        };
        Ok(StreamConfig {
            name,
            interval,
            safety_lag,
            quota_cooldown,
            retry_base,
            retry_max,
            shape: shape_settings,
        })
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.'
        })
}

/// The production API base and token url of a provider (amazon: by region).
fn default_endpoints(provider: &str, region: &str) -> Option<(&'static str, &'static str)> {
    match provider {
        "ebay" => {
            return Some((
                "https://api.ebay.com",
                "https://api.ebay.com/identity/v1/oauth2/token",
            ))
        }
        "stockx" => {
            return Some((
                "https://api.stockx.com",
                "https://accounts.stockx.com/oauth/token",
            ))
        }
        "keepa" => return Some(("https://api.keepa.com", "https://api.keepa.com/token")),
        // Alias has no token endpoint (personal access tokens); the url is never called.
        "alias" => return Some(("https://api.alias.org", "https://api.alias.org")),
        _ => {}
    }
    match region {
        "na" => Some((
            "https://sellingpartnerapi-na.amazon.com",
            "https://api.amazon.com/auth/o2/token",
        )),
        "eu" => Some((
            "https://sellingpartnerapi-eu.amazon.com",
            "https://api.amazon.co.uk/auth/o2/token",
        )),
        "fe" => Some((
            "https://sellingpartnerapi-fe.amazon.com",
            "https://api.amazon.co.jp/auth/o2/token",
        )),
        _ => None,
    }
}
