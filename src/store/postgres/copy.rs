//! `marketsync store copy`: moves the tables the PostgreSQL store holds ([`TABLES`]) from
//! a stopped installation's SQLite file into PostgreSQL, verified.
//!
//! - The SQLite file is taken exclusively (`locking_mode = EXCLUSIVE`, `BEGIN
//!   EXCLUSIVE`): a daemon or any other command with the file open makes the copy refuse
//!   (stop the daemon first), and nothing can change the source while it is read.
//! - Everything is written in one PostgreSQL transaction, in batches; a target that
//!   already holds rows is refused unless `force` (which empties those tables first).
//! - Verification before the commit: per table the row count and a SHA-256 over the
//!   rows in primary-key order (byte order of the text keys on both sides), each row
//!   serialised canonically in Rust ([`RowHasher`]) from what each engine returns. A
//!   mismatch rolls the whole copy back.
//! - Every identity sequence (claims, events, jobs, job runs, scheduler passes) is set
//!   past the highest id copied (and past SQLite's AUTOINCREMENT counters), so new rows
//!   never reuse an id.

use std::path::Path;

use rusqlite::OpenFlags;
use sha2::{Digest, Sha256};

use super::{DatabaseUrl, PgLedger, PgSettings, TABLES};
use crate::store::LedgerError;

/// Rows per insert statement.
const BATCH_ROWS: usize = 5_000;

/// A column's type, the same on both engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
    Real,
}

/// One table as the copy sees it: columns in order, primary key columns.
struct TableSpec {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    key: &'static [&'static str],
}

const SPECS: &[TableSpec] = &[
    TableSpec {
        name: "ledger_hours",
        columns: &[
            ("account", Kind::Text),
            ("stream", Kind::Text),
            ("hour_utc", Kind::Int),
            ("state", Kind::Text),
            ("priority", Kind::Int),
            ("attempts", Kind::Int),
            ("last_error", Kind::Text),
            ("next_retry_at", Kind::Int),
            ("claim_id", Kind::Int),
            ("claimed_by", Kind::Text),
            ("fence", Kind::Int),
            ("report_id", Kind::Text),
            ("report_document_id", Kind::Text),
            ("document_path", Kind::Text),
            ("created_at", Kind::Int),
            ("updated_at", Kind::Int),
            ("applied_at", Kind::Int),
        ],
        key: &["account", "stream", "hour_utc"],
    },
    TableSpec {
        name: "ledger_claims",
        columns: &[
            ("id", Kind::Int),
            ("account", Kind::Text),
            ("stream", Kind::Text),
            ("start_hour", Kind::Int),
            ("end_hour", Kind::Int),
            ("claimed_by", Kind::Text),
            ("fence", Kind::Int),
            ("claimed_at", Kind::Int),
            ("finished_at", Kind::Int),
            ("outcome", Kind::Text),
        ],
        key: &["id"],
    },
    TableSpec {
        name: "cooldowns",
        columns: &[
            ("scope", Kind::Text),
            ("reason", Kind::Text),
            ("started_at", Kind::Int),
            ("until_at", Kind::Int),
            ("detail", Kind::Text),
        ],
        key: &["scope"],
    },
    TableSpec {
        name: "audits",
        columns: &[
            ("account", Kind::Text),
            ("stream", Kind::Text),
            ("kind", Kind::Text),
            ("last_run_at", Kind::Int),
        ],
        key: &["account", "stream", "kind"],
    },
    TableSpec {
        name: "vendor_realtime_sales",
        columns: &[
            ("account", Kind::Text),
            ("hour_utc", Kind::Int),
            ("asin", Kind::Text),
            ("ordered_units", Kind::Int),
            ("ordered_revenue", Kind::Real),
            ("report_id", Kind::Text),
            ("updated_at", Kind::Int),
        ],
        key: &["account", "hour_utc", "asin"],
    },
    TableSpec {
        name: "scope_fences",
        columns: &[
            ("account", Kind::Text),
            ("stream", Kind::Text),
            ("fence", Kind::Int),
            ("updated_at", Kind::Int),
        ],
        key: &["account", "stream"],
    },
    TableSpec {
        name: "account_supervision",
        columns: &[
            ("account", Kind::Text),
            ("state", Kind::Text),
            ("restarts", Kind::Int),
            ("last_crash_at", Kind::Int),
            ("last_crash_reason", Kind::Text),
            ("quarantined_until", Kind::Int),
            ("resume_requested", Kind::Int),
            ("updated_at", Kind::Int),
            ("state_reason", Kind::Text),
        ],
        key: &["account"],
    },
    TableSpec {
        name: "cursors",
        columns: &[
            ("account", Kind::Text),
            ("stream", Kind::Text),
            ("cursor_ts", Kind::Int),
            ("updated_at", Kind::Int),
            ("last_run_at", Kind::Int),
            ("last_error", Kind::Text),
            ("failures", Kind::Int),
            ("retry_at", Kind::Int),
        ],
        key: &["account", "stream"],
    },
    TableSpec {
        name: "ebay_orders",
        columns: &[
            ("account", Kind::Text),
            ("order_id", Kind::Text),
            ("creation_date", Kind::Text),
            ("last_modified_date", Kind::Text),
            ("fulfillment_status", Kind::Text),
            ("payment_status", Kind::Text),
            ("total_value", Kind::Text),
            ("currency", Kind::Text),
            ("buyer", Kind::Text),
            ("raw", Kind::Text),
            ("first_seen_at", Kind::Int),
            ("updated_at", Kind::Int),
        ],
        key: &["account", "order_id"],
    },
    TableSpec {
        name: "ebay_transactions",
        columns: &[
            ("account", Kind::Text),
            ("transaction_id", Kind::Text),
            ("transaction_type", Kind::Text),
            ("transaction_date", Kind::Text),
            ("transaction_status", Kind::Text),
            ("amount_value", Kind::Text),
            ("currency", Kind::Text),
            ("order_id", Kind::Text),
            ("raw", Kind::Text),
            ("first_seen_at", Kind::Int),
            ("updated_at", Kind::Int),
        ],
        key: &["account", "transaction_id"],
    },
    TableSpec {
        name: "ebay_returns",
        columns: &[
            ("account", Kind::Text),
            ("return_id", Kind::Text),
            ("order_id", Kind::Text),
            ("creation_date", Kind::Text),
            ("state", Kind::Text),
            ("return_type", Kind::Text),
            ("raw", Kind::Text),
            ("first_seen_at", Kind::Int),
            ("updated_at", Kind::Int),
        ],
        key: &["account", "return_id"],
    },
    TableSpec {
        name: "events",
        columns: &[
            ("id", Kind::Int),
            ("account", Kind::Text),
            ("stream", Kind::Text),
            ("resource_id", Kind::Text),
            ("field", Kind::Text),
            ("before", Kind::Text),
            ("after", Kind::Text),
            ("observed_at", Kind::Int),
        ],
        key: &["id"],
    },
    TableSpec {
        name: "ebay_payouts",
        columns: &[
            ("account", Kind::Text),
            ("payout_id", Kind::Text),
            ("payout_date", Kind::Text),
            ("payout_status", Kind::Text),
            ("amount_value", Kind::Text),
            ("currency", Kind::Text),
            ("transaction_count", Kind::Int),
            ("instrument_type", Kind::Text),
            ("raw", Kind::Text),
            ("first_seen_at", Kind::Int),
            ("updated_at", Kind::Int),
        ],
        key: &["account", "payout_id"],
    },
    TableSpec {
        name: "ebay_offers",
        columns: &[
            ("account", Kind::Text),
            ("offer_id", Kind::Text),
            ("sku", Kind::Text),
            ("status", Kind::Text),
            ("listing_id", Kind::Text),
            ("listing_status", Kind::Text),
            ("price_value", Kind::Text),
            ("currency", Kind::Text),
            ("available_quantity", Kind::Text),
            ("raw", Kind::Text),
            ("first_seen_at", Kind::Int),
            ("updated_at", Kind::Int),
        ],
        key: &["account", "offer_id"],
    },
    TableSpec {
        name: "ebay_conversations",
        columns: &[
            ("account", Kind::Text),
            ("conversation_id", Kind::Text),
            ("conversation_type", Kind::Text),
            ("conversation_status", Kind::Text),
            ("created_date", Kind::Text),
            ("latest_message_id", Kind::Text),
            ("latest_message_date", Kind::Text),
            ("read_status", Kind::Text),
            ("unread_count", Kind::Text),
            ("sender", Kind::Text),
            ("raw", Kind::Text),
            ("first_seen_at", Kind::Int),
            ("updated_at", Kind::Int),
        ],
        key: &["account", "conversation_id"],
    },
    TableSpec {
        name: "ebay_cases",
        columns: &[
            ("account", Kind::Text),
            ("case_id", Kind::Text),
            ("case_type", Kind::Text),
            ("status", Kind::Text),
            ("creation_date", Kind::Text),
            ("claim_value", Kind::Text),
            ("currency", Kind::Text),
            ("item_id", Kind::Text),
            ("transaction_id", Kind::Text),
            ("raw", Kind::Text),
            ("first_seen_at", Kind::Int),
            ("updated_at", Kind::Int),
        ],
        key: &["account", "case_id"],
    },
    TableSpec {
        name: "ebay_inquiries",
        columns: &[
            ("account", Kind::Text),
            ("inquiry_id", Kind::Text),
            ("status", Kind::Text),
            ("creation_date", Kind::Text),
            ("last_modified", Kind::Text),
            ("respond_by", Kind::Text),
            ("claim_value", Kind::Text),
            ("currency", Kind::Text),
            ("item_id", Kind::Text),
            ("transaction_id", Kind::Text),
            ("raw", Kind::Text),
            ("first_seen_at", Kind::Int),
            ("updated_at", Kind::Int),
        ],
        key: &["account", "inquiry_id"],
    },
    TableSpec {
        name: "ebay_purchases",
        columns: &[
            ("account", Kind::Text),
            ("order_id", Kind::Text),
            ("order_status", Kind::Text),
            ("created_time", Kind::Text),
            ("last_modified", Kind::Text),
            ("paid_time", Kind::Text),
            ("shipped_time", Kind::Text),
            ("total_value", Kind::Text),
            ("currency", Kind::Text),
            ("seller_user_id", Kind::Text),
            ("raw", Kind::Text),
            ("first_seen_at", Kind::Int),
            ("updated_at", Kind::Int),
        ],
        key: &["account", "order_id"],
    },
    TableSpec {
        name: "ebay_inventory",
        columns: &[
            ("account", Kind::Text),
            ("item_id", Kind::Text),
            ("sku", Kind::Text),
            ("quantity", Kind::Int),
            ("price", Kind::Text),
            ("currency", Kind::Text),
            ("state", Kind::Text),
            ("snapshot", Kind::Int),
            ("first_seen_at", Kind::Int),
            ("updated_at", Kind::Int),
        ],
        key: &["account", "item_id", "sku"],
    },
    TableSpec {
        name: "ebay_inventory_snapshots",
        columns: &[("account", Kind::Text), ("snapshot", Kind::Int)],
        key: &["account"],
    },
    TableSpec {
        name: "ebay_feed_tasks",
        columns: &[
            ("account", Kind::Text),
            ("stream", Kind::Text),
            ("task_id", Kind::Text),
            ("created_at", Kind::Int),
        ],
        key: &["account", "stream"],
    },
    TableSpec {
        name: "jobs",
        columns: &[
            ("id", Kind::Int),
            ("provider", Kind::Text),
            ("sku", Kind::Text),
            ("size", Kind::Text),
            ("dedupe_key", Kind::Text),
            ("priority", Kind::Int),
            ("state", Kind::Text),
            ("attempts", Kind::Int),
            ("error", Kind::Text),
            ("not_before", Kind::Int),
            ("lease_owner", Kind::Text),
            ("lease_until", Kind::Int),
            ("created_at", Kind::Int),
            ("updated_at", Kind::Int),
            ("finished_at", Kind::Int),
            ("source", Kind::Text),
        ],
        key: &["id"],
    },
    TableSpec {
        name: "market_prices",
        columns: &[
            ("provider", Kind::Text),
            ("sku", Kind::Text),
            ("size", Kind::Text),
            ("lowest_ask", Kind::Real),
            ("highest_bid", Kind::Real),
            ("last_sale", Kind::Real),
            ("currency", Kind::Text),
            ("updated_at", Kind::Int),
            ("job_id", Kind::Int),
            ("listing_count", Kind::Int),
            ("price_min", Kind::Real),
            ("price_median", Kind::Real),
            ("price_mean", Kind::Real),
            ("price_max", Kind::Real),
            ("listings_total", Kind::Int),
        ],
        key: &["provider", "sku", "size"],
    },
    TableSpec {
        name: "keepa_products",
        columns: &[
            ("asin", Kind::Text),
            ("domain", Kind::Int),
            ("title", Kind::Text),
            ("current_amazon", Kind::Int),
            ("current_new", Kind::Int),
            ("sales_rank", Kind::Int),
            ("avg_90_new", Kind::Int),
            ("avg_365_new", Kind::Int),
            ("history_points", Kind::Int),
            ("raw", Kind::Text),
            ("updated_at", Kind::Int),
            ("job_id", Kind::Int),
        ],
        key: &["asin", "domain"],
    },
    TableSpec {
        name: "job_runs",
        columns: &[
            ("id", Kind::Int),
            ("provider", Kind::Text),
            ("account", Kind::Text),
            ("started_at", Kind::Int),
            ("finished_at", Kind::Int),
            ("jobs_run", Kind::Int),
            ("succeeded", Kind::Int),
            ("failed", Kind::Int),
            ("deferred", Kind::Int),
            ("not_found", Kind::Int),
            ("calls_made", Kind::Int),
            ("rescued", Kind::Int),
            ("outcome", Kind::Text),
        ],
        key: &["id"],
    },
    TableSpec {
        name: "stockx_styles",
        columns: &[
            ("style_key", Kind::Text),
            ("style_id", Kind::Text),
            ("product_id", Kind::Text),
            ("title", Kind::Text),
            ("resolved_at", Kind::Int),
            ("expires_at", Kind::Int),
        ],
        key: &["style_key"],
    },
    // Before stockx_variants, which references it.
    TableSpec {
        name: "stockx_products",
        columns: &[
            ("product_id", Kind::Text),
            ("resolved_at", Kind::Int),
            ("expires_at", Kind::Int),
            ("variants", Kind::Int),
        ],
        key: &["product_id"],
    },
    TableSpec {
        name: "stockx_variants",
        columns: &[
            ("product_id", Kind::Text),
            ("size_key", Kind::Text),
            ("variant_id", Kind::Text),
        ],
        key: &["product_id", "size_key"],
    },
    TableSpec {
        name: "tracked_items",
        columns: &[
            ("provider", Kind::Text),
            ("sku", Kind::Text),
            ("size", Kind::Text),
            ("dedupe_key", Kind::Text),
            ("added_at", Kind::Int),
            ("source", Kind::Text),
        ],
        key: &["provider", "sku", "size"],
    },
    TableSpec {
        name: "market_job_runs",
        columns: &[
            ("id", Kind::Int),
            ("provider", Kind::Text),
            ("started_at", Kind::Int),
            ("finished_at", Kind::Int),
            ("tracked", Kind::Int),
            ("fresh", Kind::Int),
            ("stale_after", Kind::Int),
            ("live", Kind::Int),
            ("selected", Kind::Int),
            ("hot", Kind::Int),
            ("background", Kind::Int),
            ("merged", Kind::Int),
            ("deferred", Kind::Int),
            ("budget_left", Kind::Real),
            ("outcome", Kind::Text),
        ],
        key: &["id"],
    },
    TableSpec {
        name: "alias_catalog",
        columns: &[
            ("sku_key", Kind::Text),
            ("sku", Kind::Text),
            ("catalog_id", Kind::Text),
            ("sizes", Kind::Text),
            ("resolved_at", Kind::Int),
            ("expires_at", Kind::Int),
        ],
        key: &["sku_key"],
    },
    TableSpec {
        name: "quota_corrections",
        columns: &[
            ("bucket", Kind::Text),
            ("configured_burst", Kind::Real),
            ("burst", Kind::Real),
            ("corrections", Kind::Int),
            ("first_at", Kind::Int),
            ("last_at", Kind::Int),
            ("detail", Kind::Text),
        ],
        key: &["bucket"],
    },
];

/// The identity columns of the copied tables: (table, column), moved past the ids copied
/// and past SQLite's AUTOINCREMENT counter of the same table.
const IDENTITIES: &[(&str, &str)] = &[
    ("ledger_claims", "id"),
    ("events", "id"),
    ("jobs", "id"),
    ("job_runs", "id"),
    ("market_job_runs", "id"),
];

/// Why a copy did not happen (a verification mismatch is not an error: see
/// [`TableCheck::ok`]).
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("the sqlite file {path} is in use (a running daemon or another marketsync command has it open); stop the daemon (e.g. systemctl stop marketsync) and run the copy again")]
    SourceBusy { path: String },
    #[error("cannot read the sqlite file {path}: {message}")]
    Source { path: String, message: String },
    #[error("the target already holds {rows} row(s) in {table}; copy into an empty database, or pass --force to replace the target's ledger tables")]
    TargetNotEmpty { table: &'static str, rows: i64 },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl From<postgres::Error> for CopyError {
    fn from(err: postgres::Error) -> Self {
        CopyError::Ledger(LedgerError::Postgres(err))
    }
}

/// One table's verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCheck {
    pub table: &'static str,
    pub source_rows: u64,
    pub target_rows: u64,
    /// SHA-256 (hex) of the source's rows.
    pub source_checksum: String,
    /// SHA-256 (hex) of the target's rows, computed the same way.
    pub target_checksum: String,
}

impl TableCheck {
    pub fn ok(&self) -> bool {
        self.source_rows == self.target_rows && self.source_checksum == self.target_checksum
    }
}

/// Copies every table of [`TABLES`] from the SQLite file at `source` into the database at
/// `target` (migrated first), verifies them and commits only when every table matches.
/// `progress(table, rows_so_far)` is called after each batch. Returns the per-table
/// checks; the copy was committed if and only if all are [`TableCheck::ok`].
pub fn copy_sqlite_to_postgres(
    source: &Path,
    target: &DatabaseUrl,
    force: bool,
    progress: &mut dyn FnMut(&str, u64),
) -> Result<Vec<TableCheck>, CopyError> {
    debug_assert_eq!(SPECS.len(), TABLES.len());
    let shown = source.display().to_string();
    let source_error = |err: rusqlite::Error| CopyError::Source {
        path: shown.clone(),
        message: err.to_string(),
    };
    if !source.is_file() {
        return Err(CopyError::Source {
            path: shown.clone(),
            message: "no such file".to_string(),
        });
    }
    let sqlite = rusqlite::Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(source_error)?;
    sqlite
        .busy_timeout(std::time::Duration::from_millis(500))
        .map_err(source_error)?;
    // Exclusive: refused while any other connection has the file open.
    sqlite
        .pragma_update(None, "locking_mode", "EXCLUSIVE")
        .map_err(source_error)?;
    if let Err(err) = sqlite.execute_batch("BEGIN EXCLUSIVE") {
        return Err(if is_busy(&err) {
            CopyError::SourceBusy { path: shown }
        } else {
            source_error(err)
        });
    }
    // The first read takes the lock in WAL mode: a busy answer here means the same.
    if let Err(err) = sqlite.query_row("SELECT COUNT(*) FROM sqlite_master", [], |row| {
        row.get::<_, i64>(0)
    }) {
        return Err(if is_busy(&err) {
            CopyError::SourceBusy { path: shown }
        } else {
            source_error(err)
        });
    }

    let ledger = PgLedger::open(target.expose(), &PgSettings::default())?;
    let mut client = ledger.client()?;
    let mut tx = client.transaction()?;
    for spec in SPECS {
        let rows: i64 = tx
            .query_one(format!("SELECT COUNT(*) FROM {}", spec.name).as_str(), &[])?
            .get(0);
        if rows > 0 && !force {
            return Err(CopyError::TargetNotEmpty {
                table: spec.name,
                rows,
            });
        }
    }
    if force {
        tx.batch_execute(&format!("TRUNCATE {} RESTART IDENTITY", TABLES.join(", ")))?;
    }

    let mut checks = Vec::with_capacity(SPECS.len());
    for spec in SPECS {
        let (source_rows, source_checksum) =
            copy_table(&sqlite, &mut tx, spec, progress).map_err(|err| match err {
                CopyError::Source { message, .. } => CopyError::Source {
                    path: shown.clone(),
                    message: format!("{}: {message}", spec.name),
                },
                other => other,
            })?;
        let (target_rows, target_checksum) = postgres_checksum(&mut tx, spec)?;
        checks.push(TableCheck {
            table: spec.name,
            source_rows,
            target_rows,
            source_checksum,
            target_checksum,
        });
    }
    // New rows continue after the highest id either engine handed out.
    for (table, column) in IDENTITIES {
        let sqlite_next: i64 = sqlite
            .query_row(
                "SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = ?1",
                [table],
                |row| row.get(0),
            )
            .unwrap_or(0);
        // Names are this module's constants, never input.
        tx.execute(
            format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'),
                               GREATEST((SELECT COALESCE(MAX({column}), 0) FROM {table}), $1::bigint, 1),
                               GREATEST((SELECT COALESCE(MAX({column}), 0) FROM {table}), $1::bigint) > 0)"
            )
            .as_str(),
            &[&sqlite_next],
        )?;
    }
    if checks.iter().all(TableCheck::ok) {
        tx.commit()?;
    } else {
        tx.rollback()?;
    }
    let _ = sqlite.execute_batch("ROLLBACK");
    Ok(checks)
}

/// A value read from either engine.
enum Value {
    Int(Option<i64>),
    Text(Option<String>),
    Real(Option<f64>),
}

/// Copies one table in primary-key order; returns the source's row count and checksum.
fn copy_table(
    sqlite: &rusqlite::Connection,
    tx: &mut postgres::Transaction<'_>,
    spec: &TableSpec,
    progress: &mut dyn FnMut(&str, u64),
) -> Result<(u64, String), CopyError> {
    let source = |err: rusqlite::Error| CopyError::Source {
        path: String::new(),
        message: err.to_string(),
    };
    let names: Vec<&str> = spec.columns.iter().map(|(name, _)| *name).collect();
    let sql = format!(
        "SELECT {} FROM {} ORDER BY {}",
        names.join(", "),
        spec.name,
        spec.key.join(", ")
    );
    let mut statement = sqlite.prepare(&sql).map_err(source)?;
    let mut rows = statement.query([]).map_err(source)?;
    let mut hasher = RowHasher::default();
    let mut batch: Vec<Vec<Value>> = Vec::with_capacity(BATCH_ROWS);
    let mut copied = 0u64;
    while let Some(row) = rows.next().map_err(source)? {
        let mut values = Vec::with_capacity(spec.columns.len());
        for (index, (_, kind)) in spec.columns.iter().enumerate() {
            values.push(match kind {
                Kind::Int => Value::Int(row.get(index).map_err(source)?),
                Kind::Text => Value::Text(row.get(index).map_err(source)?),
                Kind::Real => Value::Real(row.get(index).map_err(source)?),
            });
        }
        hasher.row(&values);
        batch.push(values);
        if batch.len() >= BATCH_ROWS {
            copied = copied.saturating_add(insert_batch(tx, spec, &mut batch)?);
            progress(spec.name, copied);
        }
    }
    copied = copied.saturating_add(insert_batch(tx, spec, &mut batch)?);
    progress(spec.name, copied);
    Ok((hasher.rows, hasher.finish()))
}

/// Inserts `batch` (emptied) with one `INSERT ... SELECT FROM UNNEST(...)`: one array
/// parameter per column.
fn insert_batch(
    tx: &mut postgres::Transaction<'_>,
    spec: &TableSpec,
    batch: &mut Vec<Vec<Value>>,
) -> Result<u64, CopyError> {
    if batch.is_empty() {
        return Ok(0);
    }
    let mut arrays: Vec<Box<dyn postgres::types::ToSql + Sync>> =
        Vec::with_capacity(spec.columns.len());
    for (index, (_, kind)) in spec.columns.iter().enumerate() {
        match kind {
            Kind::Int => arrays.push(Box::new(
                batch
                    .iter()
                    .map(|row| match &row[index] {
                        Value::Int(value) => *value,
                        _ => None,
                    })
                    .collect::<Vec<Option<i64>>>(),
            )),
            Kind::Text => arrays.push(Box::new(
                batch
                    .iter_mut()
                    .map(|row| match &mut row[index] {
                        Value::Text(value) => value.take(),
                        _ => None,
                    })
                    .collect::<Vec<Option<String>>>(),
            )),
            Kind::Real => arrays.push(Box::new(
                batch
                    .iter()
                    .map(|row| match &row[index] {
                        Value::Real(value) => *value,
                        _ => None,
                    })
                    .collect::<Vec<Option<f64>>>(),
            )),
        }
    }
    let names: Vec<&str> = spec.columns.iter().map(|(name, _)| *name).collect();
    let unnest: Vec<String> = spec
        .columns
        .iter()
        .enumerate()
        .map(|(index, (_, kind))| {
            let array_type = match kind {
                Kind::Int => "bigint[]",
                Kind::Text => "text[]",
                Kind::Real => "float8[]",
            };
            format!("${}::{array_type}", index + 1)
        })
        .collect();
    let sql = format!(
        "INSERT INTO {table} ({columns}) SELECT * FROM UNNEST({unnest})",
        table = spec.name,
        columns = names.join(", "),
        unnest = unnest.join(", "),
    );
    let params: Vec<&(dyn postgres::types::ToSql + Sync)> =
        arrays.iter().map(|array| array.as_ref()).collect();
    let inserted = tx.execute(sql.as_str(), &params)?;
    batch.clear();
    Ok(inserted)
}

/// Reads the table back from PostgreSQL in primary-key order (text keys in byte order,
/// as SQLite's BINARY collation sorts them) and hashes it as the source was hashed.
fn postgres_checksum(
    tx: &mut postgres::Transaction<'_>,
    spec: &TableSpec,
) -> Result<(u64, String), CopyError> {
    let names: Vec<&str> = spec.columns.iter().map(|(name, _)| *name).collect();
    let order: Vec<String> = spec
        .key
        .iter()
        .map(|key| {
            let kind = spec
                .columns
                .iter()
                .find(|(name, _)| name == key)
                .map(|(_, kind)| *kind);
            if kind == Some(Kind::Text) {
                format!("{key} COLLATE \"C\"")
            } else {
                key.to_string()
            }
        })
        .collect();
    let sql = format!(
        "SELECT {} FROM {} ORDER BY {}",
        names.join(", "),
        spec.name,
        order.join(", ")
    );
    let no_params: &[&(dyn postgres::types::ToSql + Sync)] = &[];
    let portal = tx.bind(sql.as_str(), no_params)?;
    let mut hasher = RowHasher::default();
    loop {
        let rows = tx.query_portal(&portal, 10_000)?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let values: Vec<Value> = spec
                .columns
                .iter()
                .enumerate()
                .map(|(index, (_, kind))| match kind {
                    Kind::Int => row.try_get(index).map(Value::Int),
                    Kind::Text => row.try_get(index).map(Value::Text),
                    Kind::Real => row.try_get(index).map(Value::Real),
                })
                .collect::<Result<_, _>>()?;
            hasher.row(&values);
        }
    }
    Ok((hasher.rows, hasher.finish()))
}

fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(
        err,
        rusqlite::Error::SqliteFailure(failure, _)
            if matches!(
                failure.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            )
    )
}

/// SHA-256 over rows, each value serialised the same way whichever engine it came from:
/// a tag per type (`n` null, `i` integer in decimal, `t` text with its byte length, `r`
/// the IEEE-754 bits of a real in hex), a unit separator between values and a record
/// separator after each row. Length-prefixed text keeps `("ab","c")` apart from
/// `("a","bc")`.
#[derive(Default)]
struct RowHasher {
    hasher: Sha256,
    rows: u64,
}

impl RowHasher {
    fn row(&mut self, values: &[Value]) {
        for value in values {
            match value {
                Value::Int(None) | Value::Text(None) | Value::Real(None) => {
                    self.hasher.update(b"n")
                }
                Value::Int(Some(number)) => {
                    self.hasher.update(format!("i{number}").as_bytes());
                }
                Value::Text(Some(text)) => {
                    self.hasher.update(format!("t{}:", text.len()).as_bytes());
                    self.hasher.update(text.as_bytes());
                }
                Value::Real(Some(number)) => {
                    self.hasher
                        .update(format!("r{:016x}", number.to_bits()).as_bytes());
                }
            }
            self.hasher.update([0x1f]);
        }
        self.hasher.update([0x1e]);
        self.rows = self.rows.saturating_add(1);
    }

    fn finish(self) -> String {
        self.hasher
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum(rows: &[Vec<Value>]) -> String {
        let mut hasher = RowHasher::default();
        for row in rows {
            hasher.row(row);
        }
        hasher.finish()
    }

    fn text(value: &str) -> Value {
        Value::Text(Some(value.to_string()))
    }

    /// The checksum tells apart what a naive concatenation would not: where a text value
    /// ends, NULL from empty text, a row boundary, and the exact bits of a real.
    #[test]
    fn the_row_checksum_separates_values_rows_nulls_and_reals() {
        let base = checksum(&[vec![text("ab"), text("c")]]);
        assert_eq!(base.len(), 64);
        assert_eq!(
            base,
            checksum(&[vec![text("ab"), text("c")]]),
            "deterministic"
        );
        for other in [
            vec![vec![text("a"), text("bc")]],
            vec![vec![text("ab")], vec![text("c")]],
            vec![vec![text("ab"), Value::Text(None)]],
        ] {
            assert_ne!(base, checksum(&other));
        }
        assert_ne!(
            checksum(&[vec![Value::Text(None)]]),
            checksum(&[vec![text("")]])
        );
        assert_ne!(
            checksum(&[vec![Value::Real(Some(0.0))]]),
            checksum(&[vec![Value::Real(Some(-0.0))]])
        );
        assert_ne!(
            checksum(&[vec![Value::Int(Some(12))]]),
            checksum(&[vec![Value::Int(Some(1)), Value::Int(Some(2))]])
        );
        assert_eq!(SPECS.len(), TABLES.len());
        for (spec, table) in SPECS.iter().zip(TABLES) {
            assert_eq!(spec.name, *table);
        }
    }
}
