//! The simulated Sell Feed API: the `LMS_ACTIVE_INVENTORY_REPORT` inventory task and its
//! result file (`docs/ebay-wire.md`, "Active inventory").
//!
//! - `POST /sell/feed/v1/inventory_task` (createInventoryTask): body `{"feedType":
//!   "LMS_ACTIVE_INVENTORY_REPORT", "schemaVersion": "1.0"}`; 202 with `Location`.
//! - `GET /sell/feed/v1/inventory_task/{task_id}` (getInventoryTask): `QUEUED`, then
//!   `IN_PROCESS`, then `COMPLETED` after `feed_task_polls` polls.
//! - `GET /sell/feed/v1/task/{task_id}/download_result_file` (getResultFile): a zip
//!   holding one XML ActiveInventoryReport, streamed from a file the simulator wrote.
//! - `PUT /_sim/ebay/feed/control`: `{"corrupt_next": "truncated" | "malformed"}` spoils
//!   the next result file (tests of the all-or-nothing apply).
//!
//! A seller may create `feed_daily_tasks` (eBay: 25) tasks in 24 hours; the next is
//! refused with 409 errorId 160025.
//!
//! All three need a **user** access token (refresh-token grant), as eBay's seller APIs
//! do: an application token is refused with 403 errorId 1100. The seller's listings are
//! a pure function of (seed, seller, epoch, index) ([`inventory_listings`]): an epoch is
//! `inventory_change_every` long, and each epoch some quantities and prices change and
//! some listings are absent (ended), so two snapshots have history to record.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::data::{draw, seller_key};
use super::{authorize, ebay_error, format_millis, injected, Ebay, EbaySimConfig};
use crate::sim::Simulator;

/// Fault-schedule name of createInventoryTask.
pub const OP_CREATE_INVENTORY_TASK: &str = "ebay.createInventoryTask";
/// Fault-schedule name of getInventoryTask.
pub const OP_GET_INVENTORY_TASK: &str = "ebay.getInventoryTask";
/// Fault-schedule name of getResultFile.
pub const OP_GET_RESULT_FILE: &str = "ebay.getResultFile";

const FEED_TYPE: &str = "LMS_ACTIVE_INVENTORY_REPORT";
const SCHEMA_VERSION: &str = "1.0";
/// Tasks remembered (oldest forgotten first).
const MAX_TASKS: usize = 1000;
/// Result files kept on disk (oldest removed first).
const MAX_FILES: usize = 4;
const DAY: i64 = 86_400;

/// One listing of the simulated seller's active inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimListing {
    pub item_id: String,
    /// `None` for a listing without a seller SKU.
    pub sku: Option<String>,
    /// Price and quantity of a single-SKU listing (`None` when it has variations).
    pub price: Option<String>,
    pub quantity: Option<u64>,
    /// (SKU, price, quantity) of each variation of a multi-variation listing.
    pub variations: Vec<(String, String, u64)>,
}

impl SimListing {
    /// The rows a client stores for it: (item id, SKU or "", quantity, price).
    pub fn rows(&self) -> Vec<(String, String, u64, String)> {
        if self.variations.is_empty() {
            vec![(
                self.item_id.clone(),
                self.sku.clone().unwrap_or_default(),
                self.quantity.unwrap_or(0),
                self.price.clone().unwrap_or_default(),
            )]
        } else {
            self.variations
                .iter()
                .map(|(sku, price, quantity)| {
                    (self.item_id.clone(), sku.clone(), *quantity, price.clone())
                })
                .collect()
        }
    }
}

fn price_text(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// The seller's active listings at `now`: `inventory_listings` candidates, of which
/// about 1 in 50 is absent (ended) in a given epoch. Every 20th listing has three
/// variations; every 97th has no seller SKU. In an epoch about 1 in 5 quantities and
/// 1 in 10 prices differ from the listing's base values.
pub fn inventory_listings(
    seed: u64,
    config: &EbaySimConfig,
    seller: &str,
    now: i64,
) -> impl Iterator<Item = SimListing> {
    let key = seller_key(seller);
    let every = i64::try_from(config.inventory_change_every.as_secs())
        .unwrap_or(i64::MAX)
        .max(1);
    let epoch = now.div_euclid(every);
    let count = config.inventory_listings;
    let quantity = move |index: u32, salt: u64| -> u64 {
        if draw(seed, key, epoch, index, salt + 1).is_multiple_of(5) {
            1 + draw(seed, key, epoch, index, salt) % 40
        } else {
            1 + draw(seed, key, 0, index, salt) % 40
        }
    };
    let price = move |index: u32, salt: u64| -> String {
        let base = 500 + draw(seed, key, 0, index, salt) % 20_000;
        if draw(seed, key, epoch, index, salt + 1).is_multiple_of(10) {
            price_text(base + 100 + draw(seed, key, epoch, index, salt) % 1_000)
        } else {
            price_text(base)
        }
    };
    (0..count).filter_map(move |index| {
        if draw(seed, key, epoch, index, 11).is_multiple_of(50) {
            return None;
        }
        let item_id = format!(
            "{}",
            110_000_000_000u64 + (key % 1000) * 1_000_000 + u64::from(index)
        );
        let sku = (index % 97 != 3).then(|| format!("SKU-{index:06}"));
        if index % 20 == 7 {
            let variations = (0..3u64)
                .map(|variation| {
                    (
                        format!("SKU-{index:06}-{variation}"),
                        price(index, 20 + variation * 4),
                        quantity(index, 22 + variation * 4),
                    )
                })
                .collect();
            return Some(SimListing {
                item_id,
                sku,
                price: None,
                quantity: None,
                variations,
            });
        }
        Some(SimListing {
            item_id,
            sku,
            price: Some(price(index, 12)),
            quantity: Some(quantity(index, 14)),
            variations: Vec::new(),
        })
    })
}

/// How the next result file is spoiled (tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Corruption {
    /// The XML stops part way through (inside a SKUDetails).
    Truncated,
    /// One Quantity is not a number.
    Malformed,
}

/// Writes the ActiveInventoryReport of `listings` as XML to `out` (as eBay's LMS files
/// are laid out: `BulkDataExchangeResponses` around `ActiveInventoryReport`).
pub fn write_report<W: Write>(
    out: &mut W,
    listings: impl Iterator<Item = SimListing>,
    timestamp: &str,
    corruption: Option<Corruption>,
) -> std::io::Result<()> {
    out.write_all(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<BulkDataExchangeResponses xmlns=\"urn:ebay:apis:eBLBaseComponents\">\n<ActiveInventoryReport>\n")?;
    write!(
        out,
        "<Ack>Success</Ack>\n<Version>1355</Version>\n<Timestamp>{timestamp}</Timestamp>\n"
    )?;
    for (position, listing) in listings.enumerate() {
        if corruption == Some(Corruption::Truncated) && position == 10 {
            // The file ends inside a listing.
            write!(
                out,
                "<SKUDetails>\n<ItemID>{}</ItemID>\n<Quan",
                listing.item_id
            )?;
            return Ok(());
        }
        out.write_all(b"<SKUDetails>\n")?;
        if let Some(sku) = &listing.sku {
            writeln!(out, "<SKU>{sku}</SKU>")?;
        }
        if let (Some(price), Some(quantity)) = (&listing.price, listing.quantity) {
            writeln!(out, "<Price currencyID=\"USD\">{price}</Price>")?;
            if corruption == Some(Corruption::Malformed) && position == 10 {
                out.write_all(b"<Quantity>ten</Quantity>\n")?;
            } else {
                writeln!(out, "<Quantity>{quantity}</Quantity>")?;
            }
        }
        writeln!(out, "<ItemID>{}</ItemID>", listing.item_id)?;
        if !listing.variations.is_empty() {
            out.write_all(b"<Variations>\n")?;
            for (sku, price, quantity) in &listing.variations {
                writeln!(
                    out,
                    "<Variation><SKU>{sku}</SKU><Price currencyID=\"USD\">{price}</Price><Quantity>{quantity}</Quantity></Variation>"
                )?;
            }
            out.write_all(b"</Variations>\n")?;
        }
        out.write_all(b"</SKUDetails>\n")?;
    }
    out.write_all(b"</ActiveInventoryReport>\n</BulkDataExchangeResponses>\n")
}

/// Writes the zip eBay serves: one deflated `ActiveInventoryReport.xml` entry.
pub fn write_result_zip(
    path: &std::path::Path,
    listings: impl Iterator<Item = SimListing>,
    timestamp: &str,
    corruption: Option<Corruption>,
) -> std::io::Result<()> {
    let file = std::fs::File::create(path)?;
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::with_capacity(256 * 1024, file));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1))
        .large_file(true);
    zip.start_file("ActiveInventoryReport.xml", options)
        .map_err(std::io::Error::other)?;
    {
        let mut writer = std::io::BufWriter::with_capacity(256 * 1024, &mut zip);
        write_report(&mut writer, listings, timestamp, corruption)?;
        writer.flush()?;
    }
    let mut inner = zip.finish().map_err(std::io::Error::other)?;
    inner.flush()
}

#[derive(Debug, Clone)]
struct SimTask {
    seller: String,
    created_at: i64,
    polls: u32,
    file: Option<PathBuf>,
    corruption: Option<Corruption>,
}

#[derive(Default)]
struct FeedState {
    tasks: BTreeMap<u64, (String, SimTask)>,
    by_id: HashMap<String, u64>,
    next: u64,
    corrupt_next: Option<Corruption>,
    files: Vec<PathBuf>,
    /// Creation times of each seller's tasks in the last 24 hours (eBay's per-seller
    /// limit on LMS_ACTIVE_INVENTORY_REPORT tasks).
    created: HashMap<String, std::collections::VecDeque<i64>>,
}

/// The Feed API's own state.
struct Feed {
    state: Mutex<FeedState>,
    /// Where result files are written; removed with the simulator.
    dir: Option<tempfile::TempDir>,
}

impl Feed {
    fn lock(&self) -> MutexGuard<'_, FeedState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The Feed API routes (merged into the eBay router, inside its `Ebay` extension).
pub(super) fn routes() -> Router<Arc<Simulator>> {
    let feed = Arc::new(Feed {
        state: Mutex::new(FeedState::default()),
        dir: tempfile::Builder::new()
            .prefix("marketsync-sim-feed")
            .tempdir()
            .ok(),
    });
    Router::new()
        .route("/sell/feed/v1/inventory_task", post(create_inventory_task))
        .route(
            "/sell/feed/v1/inventory_task/{task_id}",
            get(get_inventory_task),
        )
        .route(
            "/sell/feed/v1/task/{task_id}/download_result_file",
            get(get_result_file),
        )
        .route("/_sim/ebay/feed/control", put(control))
        .layer(Extension(feed))
}

/// The seller of a call with a **user** token, or eBay's answer to refuse it.
fn admit_user(
    sim: &Simulator,
    ebay: &Ebay,
    headers: &HeaderMap,
    operation: &str,
) -> Result<String, Box<Response>> {
    Ebay::bump(&mut ebay.lock().stats.calls, operation);
    let token = authorize(sim, ebay, headers)?;
    // A user token with the Inventory scope: eBay answers an application token, or a
    // user token without the scope, with 403 errorId 1100.
    if !super::oauth::permits(&token, "feed") {
        return Err(Box::new(super::oauth::access_denied()));
    }
    let seller = token.seller;
    if let Some(response) = injected(sim, ebay, operation) {
        return Err(Box::new(response));
    }
    Ok(seller)
}

fn feed_error(status: StatusCode, error_id: u32, message: &str) -> Response {
    ebay_error(status, error_id, "API_FEED", "REQUEST", message)
}

fn no_task(task_id: &str) -> Response {
    feed_error(
        StatusCode::NOT_FOUND,
        160003,
        &format!("Task {task_id} does not exist."),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateInventoryTaskRequest {
    feed_type: Option<String>,
    schema_version: Option<String>,
}

async fn create_inventory_task(
    State(sim): State<Arc<Simulator>>,
    Extension(ebay): Extension<Arc<Ebay>>,
    Extension(feed): Extension<Arc<Feed>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seller = match admit_user(&sim, &ebay, &headers, OP_CREATE_INVENTORY_TASK) {
        Ok(seller) => seller,
        Err(response) => return *response,
    };
    let marketplace_ok = headers
        .get("X-EBAY-C-MARKETPLACE-ID")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("EBAY_"));
    if !marketplace_ok {
        return feed_error(
            StatusCode::BAD_REQUEST,
            160027,
            "The X-EBAY-C-MARKETPLACE-ID header is missing or invalid.",
        );
    }
    let request: Option<CreateInventoryTaskRequest> = serde_json::from_slice(&body).ok();
    let Some(request) = request.filter(|request| request.feed_type.as_deref() == Some(FEED_TYPE))
    else {
        return feed_error(
            StatusCode::BAD_REQUEST,
            160017,
            "The 'feedType' is missing or invalid.",
        );
    };
    if request
        .schema_version
        .as_deref()
        .is_some_and(|version| version != SCHEMA_VERSION)
    {
        return feed_error(
            StatusCode::BAD_REQUEST,
            160018,
            "The 'schemaVersion' is invalid.",
        );
    }
    let now = ebay.now(&sim);
    let daily_limit = sim.config().ebay.feed_daily_tasks as usize;
    let task_id = {
        let mut state = feed.lock();
        let created = state.created.entry(seller.clone()).or_default();
        while created.front().is_some_and(|at| *at <= now - DAY) {
            created.pop_front();
        }
        if created.len() >= daily_limit {
            return ebay_error(
                StatusCode::CONFLICT,
                160025,
                "API_FEED",
                "BUSINESS",
                "You have exceeded the maximum number of records or tasks that can be created or processed in the period (hourly or daily). Wait until the present period ends before trying again. Please reference the API documentation for more information.",
            );
        }
        created.push_back(now);
        if state.created.len() > MAX_TASKS {
            // Sellers with no task in the last day are forgotten first.
            state
                .created
                .retain(|_, times| times.back().is_some_and(|at| *at > now - DAY));
        }
        state.next += 1;
        let number = state.next;
        let task_id = format!("task-{number}-{}", seller_key(&seller) % 100_000);
        let corruption = state.corrupt_next.take();
        state.tasks.insert(
            number,
            (
                task_id.clone(),
                SimTask {
                    seller,
                    created_at: now,
                    polls: 0,
                    file: None,
                    corruption,
                },
            ),
        );
        state.by_id.insert(task_id.clone(), number);
        while state.tasks.len() > MAX_TASKS {
            if let Some((_, (old_id, _))) = state.tasks.pop_first() {
                state.by_id.remove(&old_id);
            }
        }
        task_id
    };
    // On the simulator's own address, never the request's Host (as every link it sends).
    let location = format!(
        "{}/sell/feed/v1/inventory_task/{task_id}",
        super::sell::origin(&sim)
    );
    let mut response = StatusCode::ACCEPTED.into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

async fn get_inventory_task(
    State(sim): State<Arc<Simulator>>,
    Extension(ebay): Extension<Arc<Ebay>>,
    Extension(feed): Extension<Arc<Feed>>,
    Path(task_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let seller = match admit_user(&sim, &ebay, &headers, OP_GET_INVENTORY_TASK) {
        Ok(seller) => seller,
        Err(response) => return *response,
    };
    let polls_needed = sim.config().ebay.feed_task_polls;
    let (task, generate) = {
        let mut state = feed.lock();
        let Some(number) = state.by_id.get(&task_id).copied() else {
            return no_task(&task_id);
        };
        let Some((_, task)) = state.tasks.get_mut(&number) else {
            return no_task(&task_id);
        };
        if task.seller != seller {
            return no_task(&task_id);
        }
        task.polls = task.polls.saturating_add(1);
        let generate = task.polls > polls_needed && task.file.is_none();
        (task.clone(), generate)
    };
    if generate {
        let Some(dir) = feed.dir.as_ref().map(|dir| dir.path().to_path_buf()) else {
            return feed_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                160001,
                "There was a problem with an eBay internal system or process. Contact eBay Developer Technical Support for assistance.",
            );
        };
        let path = dir.join(format!("{task_id}.zip"));
        let seed = sim.config().seed;
        let config = sim.config().ebay.clone();
        let timestamp = format_millis(task.created_at.saturating_mul(1000));
        let written = {
            let path = path.clone();
            let seller = task.seller.clone();
            tokio::task::spawn_blocking(move || {
                write_result_zip(
                    &path,
                    inventory_listings(seed, &config, &seller, task.created_at),
                    &timestamp,
                    task.corruption,
                )
            })
            .await
        };
        if !matches!(written, Ok(Ok(()))) {
            return feed_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                160001,
                "There was a problem with an eBay internal system or process. Contact eBay Developer Technical Support for assistance.",
            );
        }
        let mut state = feed.lock();
        if let Some(number) = state.by_id.get(&task_id).copied() {
            if let Some((_, stored)) = state.tasks.get_mut(&number) {
                stored.file = Some(path.clone());
            }
        }
        state.files.push(path);
        while state.files.len() > MAX_FILES {
            let old = state.files.remove(0);
            let _ = std::fs::remove_file(&old);
            for (_, stored) in state.tasks.values_mut() {
                if stored.file.as_ref() == Some(&old) {
                    stored.file = None;
                    stored.polls = 0;
                }
            }
        }
    }
    let status = match task.polls {
        polls if polls > polls_needed => "COMPLETED",
        polls if polls > polls_needed / 2 => "IN_PROCESS",
        _ => "QUEUED",
    };
    let mut body = json!({
        "taskId": task_id,
        "status": status,
        "feedType": FEED_TYPE,
        "schemaVersion": SCHEMA_VERSION,
        "creationDate": format_millis(task.created_at.saturating_mul(1000)),
        "detailHref": format!("/sell/feed/v1/inventory_task/{task_id}"),
    });
    if status == "COMPLETED" {
        body["completionDate"] = json!(format_millis(ebay.now(&sim).saturating_mul(1000)));
    }
    Json(body).into_response()
}

async fn get_result_file(
    State(sim): State<Arc<Simulator>>,
    Extension(ebay): Extension<Arc<Ebay>>,
    Extension(feed): Extension<Arc<Feed>>,
    Path(task_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let seller = match admit_user(&sim, &ebay, &headers, OP_GET_RESULT_FILE) {
        Ok(seller) => seller,
        Err(response) => return *response,
    };
    let file = {
        let state = feed.lock();
        let Some((_, task)) = state
            .by_id
            .get(&task_id)
            .and_then(|number| state.tasks.get(number))
            .filter(|(_, task)| task.seller == seller)
        else {
            return no_task(&task_id);
        };
        task.file.clone()
    };
    let opened = match &file {
        Some(path) => tokio::fs::File::open(path).await.ok(),
        None => None,
    };
    let Some(opened) = opened else {
        return feed_error(
            StatusCode::NOT_FOUND,
            160014,
            &format!("No file found for task ID {task_id}."),
        );
    };
    let length = opened.metadata().await.ok().map(|meta| meta.len());
    let stream = futures_util::stream::unfold(opened, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut chunk = vec![0u8; 64 * 1024];
        match file.read(&mut chunk).await {
            Ok(0) => None,
            Ok(read) => {
                chunk.truncate(read);
                Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), file))
            }
            Err(err) => Some((Err(err), file)),
        }
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(value) =
        HeaderValue::from_str(&format!("attachment; filename=\"{task_id}_report.zip\""))
    {
        headers.insert(CONTENT_DISPOSITION, value);
    }
    if let Some(length) = length {
        headers.insert(
            axum::http::header::CONTENT_LENGTH,
            HeaderValue::from(length),
        );
    }
    response
}

/// `PUT /_sim/ebay/feed/control`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedControl {
    /// Spoil the result file of the next task created.
    pub corrupt_next: Option<Corruption>,
}

async fn control(
    Extension(feed): Extension<Arc<Feed>>,
    Json(control): Json<FeedControl>,
) -> Response {
    feed.lock().corrupt_next = control.corrupt_next;
    StatusCode::NO_CONTENT.into_response()
}
