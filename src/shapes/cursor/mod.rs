//! Cursor streams (seed 003): a cursor per (account, stream); each run covers at most
//! `max_window` from the cursor, and the cursor moves only in the transaction that
//! applies that window's data. eBay's streams are the first users.
//!
//! A run: read the cursor (absent: `now − start`); the window is
//! `[cursor, min(cursor + max_window, now − safety_lag))`; empty means caught up. Every
//! page of the window is fetched (offset paging until `offset ≥ total`, `page_limit` per
//! page, each body capped at `max_response_bytes`), then ONE transaction checks the lease
//! fence, upserts each resource, appends one history row per changed tracked field of a
//! resource seen before (first sight and unchanged resources append nothing) and moves
//! the cursor to the window's end. The run loops window after window until caught up or
//! cancelled.
//!
//! Failure policy: a failed window (5xx, transport, oversized or malformed page, a result
//! set that kept changing while paged, a `total` needing more than
//! [`MAX_PAGES_PER_WINDOW`] pages) leaves the cursor, records `last_error`,
//! `failures + 1` and `retry_at` (`min(retry_max, retry_base·2^failures)` plus jitter) and
//! ends the run [`RunOutcome::Deferred`] until then. A 429 or refused credentials are not
//! failures: a cooldown is written under the account's scope (`quota`, or `auth` for
//! [`crate::shapes::AUTH_COOLDOWN`]) and the run ends [`RunOutcome::CoolingDown`]. Every
//! call first asks the TokenManager (`context.paced`).
//!
//! `active_inventory` is not a time window: each run takes one snapshot of the seller's
//! listings through the Feed API ([`inventory`]), under the same cursor row, cooldowns and
//! failure policy.
//!
//! Modules: [`adapter`] (the per-stream seam), [`ebay`] (orders, transactions, returns),
//! [`ebay_streams`] (finances, messages), [`ebay_cases`] (cases), [`ebay_inquiries`]
//! (inquiries), [`ebay_purchases`] (purchases, Trading XML), [`offers`] (a snapshot of Sell Inventory offers),
//! [`inventory`] (active_inventory),
//! [`crate::store::cursors`] (the [`CursorStore`] both engines implement),
//! [`crate::bench::cursor`] (`marketsync bench ebay`).
//!
//! Storage: the cursor rows, resource tables and history live with the hour ledger (the
//! engine `store::hour_ledger` opens: PostgreSQL with `[store] url_env`, else the SQLite
//! file), `active_inventory`'s snapshot tables too ([`crate::store::inventory::InventoryStore`]).

mod settings;
pub use settings::{CursorSettings, FeedSettings};

pub mod adapter;
pub mod ebay;
pub mod ebay_cases;
pub mod ebay_inquiries;
pub mod ebay_purchases;
pub mod ebay_streams;
pub mod inventory;
pub mod offers;

/// The eBay streams built end to end.
pub const EBAY_STREAMS: &[&str] = &[
    "orders",
    "transactions",
    "returns",
    "active_inventory",
    "finances",
    "offers",
    "messages",
    "cases",
    "inquiries",
    "purchases",
];

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
#[cfg(any(test, feature = "testing"))]
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tracing::{debug, error, info, warn};

use crate::domain::{format_ts, now_ts, parse_millis};
use crate::provider::ebay::{EbayClient, EbayCredentials, EbayEndpoints};
use crate::provider::ProviderError;
use crate::quota::{Pacer, Priority};
use crate::shapes::spec::{AccountConfig, Endpoints};
use crate::shapes::{
    retry_delay, CallError, QuotaStop, RunOutcome, ShapeRunner, StreamContext, StreamWork,
    SyncError, DEFERRED_RETRY, QUOTA_WAIT_MAX,
};
use crate::store::{LedgerError, LedgerStore, SqliteLedger};

pub use crate::store::cursors::{ChangeEvent, CursorSnapshot, CursorStore, OrderSummary};
pub use adapter::{CursorAdapter, CursorWindow, Page, Resource, TableSpec, TradingRequest};

/// Attempts at reading a window whose result set changed while it was paged (an item
/// modified meanwhile leaves the window and shifts the offsets) before it counts as failed.
const CONSISTENT_READ_ATTEMPTS: usize = 3;

/// The most pages one read of a window may take (`ceil(total / page_limit)`, checked on
/// the first page): a window whose `total` promises more fails, naming `max_window` as
/// the fix, instead of paging without end.
pub const MAX_PAGES_PER_WINDOW: u64 = 1000;

/// What a cooldown does to a cursor stream (logged when one ends a run).
const COOLDOWN_CONSEQUENCE: &str = "cooling down, the cursor stays";

/// The next window from `cursor` at `now`: `[cursor, min(cursor + max_window, now −
/// safety_lag))`, or `None` when that is empty (caught up).
pub fn next_window(
    cursor: i64,
    now: i64,
    max_window: Duration,
    safety_lag: Duration,
) -> Option<CursorWindow> {
    let max_window = (max_window.as_secs() as i64).max(1);
    let end = (cursor + max_window).min(now - safety_lag.as_secs() as i64);
    (end > cursor).then_some(CursorWindow { start: cursor, end })
}

/// What the engine takes as "now": the system clock, or one a test sets.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    System,
    /// Unix seconds, set by the owner (tests pin it to the simulator's clock). Only in
    /// test builds (the `testing` feature).
    #[cfg(any(test, feature = "testing"))]
    Manual(Arc<AtomicI64>),
}

impl Clock {
    pub fn now(&self) -> i64 {
        match self {
            Clock::System => now_ts(),
            #[cfg(any(test, feature = "testing"))]
            Clock::Manual(now) => now.load(Ordering::SeqCst),
        }
    }
}

/// The cursor engine of one account: its eBay client, the stream adapters, and the
/// stores its tables live in.
pub struct CursorRunner {
    client: Arc<EbayClient>,
    pacer: Option<Pacer>,
    /// The engine of every stream's cursor, resources and history (the
    /// `active_inventory` snapshot's tables included): the hour ledger's (PostgreSQL with
    /// `[store] url_env`, else the SQLite file).
    cursors: Arc<dyn LedgerStore>,
    adapters: HashMap<&'static str, Arc<dyn CursorAdapter>>,
    clock: Clock,
}

/// Why a window was not applied.
enum WindowError {
    /// The quota did not let the call go (or shutdown stopped it first).
    Refused(CallError),
    Provider(ProviderError),
    /// The result set kept changing while paged.
    Inconsistent(String),
    /// The window's `total` needs more than [`MAX_PAGES_PER_WINDOW`] pages.
    TooLarge(String),
}

impl CursorRunner {
    /// A runner for the built eBay streams, its tables in the SQLite file `ledger`.
    pub fn new(client: Arc<EbayClient>, pacer: Option<Pacer>, ledger: Arc<SqliteLedger>) -> Self {
        let cursors: Arc<dyn LedgerStore> = ledger;
        CursorRunner {
            client,
            pacer,
            cursors,
            adapters: ebay::adapters()
                .into_iter()
                .map(|adapter| (adapter.stream(), adapter))
                .collect(),
            clock: Clock::System,
        }
    }

    /// Keeps the cursor streams (every one) in `cursors` (the hour ledger's engine)
    /// instead of the SQLite file.
    pub fn with_cursor_store(mut self, cursors: Arc<dyn LedgerStore>) -> Self {
        self.cursors = cursors;
        self
    }

    /// Uses `clock` for windows (tests pin it together with the simulator's).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The start every snapshot stream's run shares (active_inventory, offers): stop when
    /// shutdown was asked or a cooldown runs, load (or create) the stream's cursor row, and
    /// defer while a failed snapshot waits for its retry. `Ok(Err(outcome))`: the run ends
    /// with `outcome`; `Ok(Ok((cursor, now)))`: go on.
    pub(super) async fn snapshot_start(
        &self,
        context: &StreamContext,
        stream: &'static str,
    ) -> Result<Result<(crate::store::cursors::CursorRow, i64), RunOutcome>, SyncError> {
        if context.cancel.is_cancelled() || context.abort.is_cancelled() {
            return Ok(Err(RunOutcome::Cancelled));
        }
        if let Some(cooling) = context.cooling_down().await? {
            return Ok(Err(cooling));
        }
        // A snapshot is the unit of these streams: the crash drill (`[chaos]`) strikes here.
        if let Some(chaos) = &context.chaos {
            chaos.on_unit(&context.account.id).await;
        }
        let now = self.clock.now();
        let account = context.account.id.clone();
        let cursor = self
            .on_cursors(move |store| store.load_or_init_cursor(&account, stream, 0, now))
            .await?;
        if let Some(retry_at) = cursor.retry_at.filter(|retry_at| *retry_at > now) {
            return Ok(Err(RunOutcome::Deferred {
                reason: format!("a failed snapshot is retried at {}", format_ts(retry_at)),
                retry_in: Duration::from_secs(u64::try_from(retry_at - now).unwrap_or(1)),
                infrastructure: false,
            }));
        }
        Ok(Ok((cursor, now)))
    }

    /// Runs `work` on the blocking pool against the cursor store (the hour ledger's
    /// engine), where every stream's cursor, resources and history live.
    async fn on_cursors<T, F>(&self, work: F) -> Result<T, SyncError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn LedgerStore) -> Result<T, LedgerError> + Send + 'static,
    {
        let store = Arc::clone(&self.cursors);
        crate::store::blocking(move || work(store.as_ref()))
            .await
            .map_err(|err| SyncError::Join(err.0))?
            .map_err(SyncError::from)
    }

    async fn run_stream(
        &self,
        context: &StreamContext,
        fence: crate::store::WriteFence,
    ) -> Result<RunOutcome, SyncError> {
        let stream = &context.stream;
        let account = context.account.id.clone();
        if stream.name == inventory::STREAM {
            return inventory::run_snapshot(self, context, fence).await;
        }
        if stream.name == offers::STREAM {
            return offers::run_snapshot(self, context, fence).await;
        }
        let Some(adapter) = self.adapters.get(stream.name.as_str()).cloned() else {
            error!(
                "no cursor adapter for this stream; expected one of {}",
                EBAY_STREAMS.join(", ")
            );
            return Ok(RunOutcome::Finished {
                applied: 0,
                failed: 1,
            });
        };
        if context.cancel.is_cancelled() || context.abort.is_cancelled() {
            return Ok(RunOutcome::Cancelled);
        }
        if let Some(cooling) = context.cooling_down().await? {
            return Ok(cooling);
        }
        let now = self.clock.now();
        let initial = now - stream.cursor().start.as_secs() as i64;
        let (account_db, stream_db) = (account.clone(), stream.name.clone());
        let cursor = self
            .on_cursors(move |store| {
                store.load_or_init_cursor(&account_db, &stream_db, initial, now)
            })
            .await?;
        if let Some(retry_at) = cursor.retry_at.filter(|retry_at| *retry_at > now) {
            return Ok(RunOutcome::Deferred {
                reason: format!("a failed window is retried at {}", format_ts(retry_at)),
                retry_in: Duration::from_secs((retry_at - now) as u64),
                infrastructure: false,
            });
        }
        let mut cursor_ts = cursor.cursor_ts;
        let mut applied = 0i64;
        loop {
            if context.cancel.is_cancelled() || context.abort.is_cancelled() {
                return Ok(RunOutcome::Cancelled);
            }
            let now = self.clock.now();
            let Some(window) = next_window(
                cursor_ts,
                now,
                stream.cursor().max_window,
                stream.safety_lag,
            ) else {
                break;
            };
            context.bump();
            // A window is the cursor shape's unit: the crash drill (`[chaos]`) strikes here.
            if let Some(chaos) = &context.chaos {
                chaos.on_unit(&context.account.id).await;
            }
            let live = next_window(
                window.end,
                now,
                stream.cursor().max_window,
                stream.safety_lag,
            )
            .is_none();
            let query_window = if live {
                self.revisit_window(context, adapter.as_ref(), window)
                    .await?
            } else {
                window
            };
            let fetched = self
                .fetch_window(context, adapter.as_ref(), window, query_window)
                .await;
            let resources = match fetched {
                Ok(resources) => resources,
                Err(WindowError::Refused(refused)) => {
                    return self.refused(context, refused).await;
                }
                Err(WindowError::Provider(err)) if err.stops_account() => {
                    return self.stop_account(context, &err).await;
                }
                Err(WindowError::Provider(err)) => {
                    return self
                        .fail_window(context, fence, window, cursor.failures, &err.to_string())
                        .await;
                }
                Err(WindowError::Inconsistent(message) | WindowError::TooLarge(message)) => {
                    return self
                        .fail_window(context, fence, window, cursor.failures, &message)
                        .await;
                }
            };
            let (account_db, stream_db) = (account.clone(), stream.name.clone());
            let spec = adapter.table();
            let count = resources.len();
            let result = self
                .on_cursors(move |store| {
                    store.apply_window(
                        &account_db,
                        &stream_db,
                        fence,
                        spec,
                        &resources,
                        window,
                        now_ts(),
                    )
                })
                .await?;
            debug!(
                from = %format_ts(window.start),
                to = %format_ts(window.end),
                resources = count,
                inserted = result.inserted,
                updated = result.updated,
                events = result.events,
                "window applied"
            );
            cursor_ts = window.end;
            applied += 1;
            // The window reached now − safety_lag: caught up. Looping on would chase the
            // clock one paced call at a time and never hand the stream back to its
            // interval (nor release its lease).
            if live {
                break;
            }
        }
        if applied > 0 {
            info!(windows = applied, cursor = %format_ts(cursor_ts), "caught up");
        }
        Ok(RunOutcome::Finished { applied, failed: 0 })
    }

    /// What a live `window` of `adapter` reads: from `window.start − revisit` for an
    /// adapter that revisits; for one that knows its open resources, only back to the
    /// oldest of them (a date that does not parse reaches back the whole `revisit`).
    async fn revisit_window(
        &self,
        context: &StreamContext,
        adapter: &dyn CursorAdapter,
        window: CursorWindow,
    ) -> Result<CursorWindow, SyncError> {
        let revisit = i64::try_from(adapter.revisit().as_secs()).unwrap_or(i64::MAX);
        if revisit <= 0 {
            return Ok(window);
        }
        let earliest = window.start.saturating_sub(revisit);
        let Some(open) = adapter.open_resources() else {
            return Ok(CursorWindow {
                start: earliest,
                end: window.end,
            });
        };
        let account = context.account.id.clone();
        let oldest_opt = self
            .on_cursors(move |store| store.oldest_open(&account, open))
            .await?;
        let start = match oldest_opt {
            None => window.start,
            Some(text) => match parse_millis(&text) {
                Some(millis) => millis.div_euclid(1000).clamp(earliest, window.start),
                None => {
                    warn!(date = %text, "a stored date does not parse; reading the whole revisit span");
                    earliest
                }
            },
        };
        Ok(CursorWindow {
            start,
            end: window.end,
        })
    }

    /// Every page of `query_window` (the `window` itself, or wider for a live window of
    /// an adapter that revisits), checked complete: as many distinct items as `total`
    /// said, and the same `total` on every page.
    async fn fetch_window(
        &self,
        context: &StreamContext,
        adapter: &dyn CursorAdapter,
        window: CursorWindow,
        query_window: CursorWindow,
    ) -> Result<Vec<Resource>, WindowError> {
        let stream = &context.stream;
        let limit = stream
            .cursor()
            .page_limit
            .clamp(1, adapter.max_page_limit().clamp(1, 200));
        let operation = adapter.operation();
        let mut last_problem = String::new();
        for attempt in 1..=CONSISTENT_READ_ATTEMPTS {
            let mut items: Vec<Resource> = Vec::new();
            let mut totals: Vec<u64> = Vec::new();
            let mut offset = 0u64;
            // The pages the first `total` promises, never more than MAX_PAGES_PER_WINDOW.
            let mut pages_due: Option<u64> = None;
            let mut pages = 0u64;
            loop {
                context
                    .paced(operation, 1.0, Priority::Background, QUOTA_WAIT_MAX, true)
                    .await
                    .map_err(WindowError::Refused)?;
                let max_bytes = stream.cursor().max_response_bytes;
                let result = match adapter.trading_request(query_window, offset, limit) {
                    Some(request) => {
                        crate::provider::ebay_trading::trading_call(
                            &self.client,
                            operation,
                            request.call_name,
                            &request.body,
                            max_bytes,
                        )
                        .await
                    }
                    None => {
                        self.client
                            .get_capped(
                                operation,
                                adapter.api(),
                                adapter.path(),
                                &adapter.query(query_window, offset, limit),
                                max_bytes,
                            )
                            .await
                    }
                };
                context.observe(operation, &result);
                let body = result.map_err(WindowError::Provider)?;
                let page = adapter.parse(&body).map_err(|message| {
                    WindowError::Provider(ProviderError::InvalidResponse { operation, message })
                })?;
                drop(body);
                pages = pages.saturating_add(1);
                let due = *pages_due.get_or_insert_with(|| page.total.div_ceil(u64::from(limit)));
                if due > MAX_PAGES_PER_WINDOW {
                    return Err(WindowError::TooLarge(format!(
                        "window {}..{} holds {} items: {due} pages of {limit}, over the limit of {MAX_PAGES_PER_WINDOW} pages per window; lower max_window",
                        format_ts(window.start),
                        format_ts(window.end),
                        page.total
                    )));
                }
                let moved = totals.first().is_some_and(|first| *first != page.total);
                totals.push(page.total);
                if moved {
                    // The result set changed under the offsets: this read is void. No
                    // progress is reported for it (a window that never settles must
                    // still look stuck to the supervisor).
                    break;
                }
                context.bump();
                let received = page.items.len();
                items.extend(page.items);
                offset = offset.saturating_add(u64::from(limit));
                if offset >= page.total || received == 0 || pages >= due {
                    break;
                }
            }
            let mut seen = HashSet::with_capacity(items.len());
            // Keep the last copy of an id served twice (it moved between pages).
            let mut unique: Vec<Resource> = Vec::with_capacity(items.len());
            for item in items.into_iter().rev() {
                if seen.insert(item.id.clone()) {
                    unique.push(item);
                }
            }
            unique.reverse();
            let first_total = totals.first().copied().unwrap_or(0);
            let steady = totals.iter().all(|total| *total == first_total);
            if steady && unique.len() as u64 == first_total {
                return Ok(unique);
            }
            last_problem = format!(
                "window {}..{} changed while paged (totals {:?}, {} distinct items)",
                format_ts(window.start),
                format_ts(window.end),
                totals.iter().take(8).collect::<Vec<_>>(),
                unique.len()
            );
            warn!(attempt, problem = %last_problem, "reading the window again");
        }
        Err(WindowError::Inconsistent(last_problem))
    }

    /// The window failed: the cursor stays; failures, error and retry time are recorded.
    async fn fail_window(
        &self,
        context: &StreamContext,
        fence: crate::store::WriteFence,
        window: CursorWindow,
        failures_before: i64,
        message: &str,
    ) -> Result<RunOutcome, SyncError> {
        let delay = retry_delay(&context.stream, failures_before);
        let now = self.clock.now();
        let retry_at = now + delay.as_secs().max(1) as i64;
        warn!(
            from = %format_ts(window.start),
            to = %format_ts(window.end),
            error = %message,
            retry_at = %format_ts(retry_at),
            "window failed; cursor stays, retrying later"
        );
        let (account, stream, text) = (
            context.account.id.clone(),
            context.stream.name.clone(),
            message.to_string(),
        );
        self.on_cursors(move |store| {
            store.record_failure(&account, &stream, fence, &text, retry_at, now)
        })
        .await?;
        Ok(RunOutcome::Deferred {
            reason: message.to_string(),
            retry_in: Duration::from_secs((retry_at - now).max(1) as u64),
            infrastructure: false,
        })
    }

    /// A 429 or refused credentials: a cooldown under the account's scope, no failure.
    async fn stop_account(
        &self,
        context: &StreamContext,
        err: &ProviderError,
    ) -> Result<RunOutcome, SyncError> {
        context
            .cool_down(context.refusal_cooldown(err), true, COOLDOWN_CONSEQUENCE)
            .await
    }

    /// A call the quota did not let go: nothing failed, the window is read again later.
    async fn refused(
        &self,
        context: &StreamContext,
        refused: CallError,
    ) -> Result<RunOutcome, SyncError> {
        let err = match refused {
            CallError::Cancelled => return Ok(RunOutcome::Cancelled),
            CallError::Provider(err) => return self.stop_account(context, &err).await,
            CallError::Quota(err) => err,
        };
        match context.quota_stop(err) {
            QuotaStop::Cooldown { cooldown, record } => {
                context
                    .cool_down(cooldown, record, COOLDOWN_CONSEQUENCE)
                    .await
            }
            QuotaStop::Deferred {
                reason,
                infrastructure,
            } => Ok(RunOutcome::Deferred {
                reason,
                retry_in: DEFERRED_RETRY,
                infrastructure,
            }),
            QuotaStop::Misconfigured(err) => {
                let message =
                    format!("quota refused the call: {err}; fix [quota.ebay] in the configuration");
                error!(error = %message, "window not read");
                Ok(RunOutcome::Finished {
                    applied: 0,
                    failed: 1,
                })
            }
        }
    }
}

impl ShapeRunner for CursorRunner {
    fn pacer(&self) -> Option<&Pacer> {
        self.pacer.as_ref()
    }

    fn run<'a>(
        &'a self,
        context: &'a StreamContext,
        fence: crate::store::WriteFence,
    ) -> BoxFuture<'a, Result<RunOutcome, SyncError>> {
        Box::pin(self.run_stream(context, fence))
    }
}

/// The eBay client of `account`: its endpoints (the embedded simulator's when it uses
/// it) and credentials read from the variables the configuration names.
pub fn ebay_client(
    account: &AccountConfig,
    http: &reqwest::Client,
    simulator: Option<SocketAddr>,
) -> anyhow::Result<EbayClient> {
    let endpoints = match (&account.endpoints, simulator) {
        (Endpoints::EmbeddedSimulator, Some(addr)) => EbayEndpoints::new(
            &format!("http://{addr}"),
            &format!("http://{addr}/identity/v1/oauth2/token"),
        ),
        (Endpoints::EmbeddedSimulator, None) => anyhow::bail!(
            "account {}: uses the embedded simulator, which is not enabled; set [simulator] enabled = true or give the account an endpoint",
            account.id
        ),
        (
            Endpoints::Explicit {
                api_base,
                token_url,
            },
            _,
        ) => EbayEndpoints::new(api_base, token_url),
    };
    let credentials = match &account.credentials {
        Some(names) => EbayCredentials {
            client_id: crate::provider::read_env(&account.id, names.client_id_env.as_deref())?,
            client_secret: crate::provider::read_env(
                &account.id,
                names.client_secret_env.as_deref(),
            )?,
            refresh_token: match names.refresh_token_env.as_deref() {
                Some(name) => Some(crate::provider::read_env(&account.id, Some(name))?),
                None => None,
            },
        },
        // The simulator accepts any client; the refresh token names the seller.
        None => EbayCredentials {
            client_id: "simulator-client".to_string(),
            client_secret: "simulator-secret".to_string(),
            refresh_token: Some(format!("simulator-refresh-{}", account.quota_scope())),
        },
    };
    Ok(EbayClient::new(
        http.clone(),
        endpoints,
        credentials,
        &account.marketplace,
    ))
}

/// The sync shape of an eBay account's streams: its client (paced by `pacer`) and the
/// cursor runner. `ledger`: the SQLite file; `cursors`: the engine of every stream's
/// cursors, resources and history (the hour ledger's: `ledger` itself without `[store]`). `simulator`: the embedded simulator's address, for accounts served by it.
pub fn stream_work(
    account: &AccountConfig,
    http: &reqwest::Client,
    simulator: Option<SocketAddr>,
    pacer: Pacer,
    ledger: Arc<SqliteLedger>,
    cursors: Arc<dyn LedgerStore>,
) -> anyhow::Result<StreamWork> {
    let client = ebay_client(account, http, simulator)?;
    Ok(StreamWork::shape(Arc::new(
        CursorRunner::new(Arc::new(client), Some(pacer), ledger).with_cursor_store(cursors),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600;

    #[test]
    fn a_window_is_at_most_max_window_and_ends_before_the_safety_lag() {
        let day = Duration::from_secs(24 * H as u64);
        let lag = Duration::from_secs(120);
        let now = 1_000 * 24 * H;
        // 90 days behind: one day at a time.
        let window = next_window(now - 90 * 24 * H, now, day, lag).expect("window");
        assert_eq!(window.end - window.start, 24 * H);
        // Nearly caught up: up to now − lag.
        let window = next_window(now - H, now, day, lag).expect("window");
        assert_eq!(window.end, now - 120);
        // Caught up: nothing.
        assert_eq!(next_window(now - 120, now, day, lag), None);
        assert_eq!(next_window(now, now, day, lag), None);
    }

    #[test]
    fn catching_up_covers_every_second_exactly_once() {
        let day = Duration::from_secs(24 * H as u64);
        let lag = Duration::from_secs(120);
        let now = 500 * 24 * H + 1234;
        let mut cursor = now - 90 * 24 * H;
        let start = cursor;
        let mut covered = 0;
        let mut windows = 0;
        while let Some(window) = next_window(cursor, now, day, lag) {
            assert_eq!(window.start, cursor);
            assert!(window.end - window.start <= 24 * H);
            covered += window.end - window.start;
            cursor = window.end;
            windows += 1;
        }
        assert_eq!(covered, now - 120 - start);
        assert_eq!(windows, 90);
    }

    #[test]
    fn a_manual_clock_reads_what_was_set() {
        let now = Arc::new(AtomicI64::new(42));
        let clock = Clock::Manual(Arc::clone(&now));
        now.store(43, Ordering::SeqCst);
        assert_eq!(clock.now(), 43);
    }
}
