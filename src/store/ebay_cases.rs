//! The eBay Post-Order case stream's table (migration `0007_ebay_cases.sql`): its
//! columns, the fields whose changes are history, and which cases still move.

use super::cursors::TableSpec;
use super::ebay_streams::OpenSpec;

/// `ebay_cases` (stream `cases`, Post-Order case search): the case status and the
/// claimed amount are history.
pub static CASES_TABLE: TableSpec = TableSpec {
    table: "ebay_cases",
    key: "case_id",
    columns: &[
        "case_type",
        "status",
        "creation_date",
        "claim_value",
        "currency",
        "item_id",
        "transaction_id",
    ],
    tracked: &[
        ("status", "caseStatusEnum"),
        ("claim_value", "claimAmount.value"),
    ],
};

/// `ebay_cases` whose CaseStatusEnum is not final: every value but CLOSED and CS_CLOSED
/// (OTHER, "cannot be determined", counts as open). The search filters on creation date,
/// so a live run re-reads back to the oldest of them.
pub static OPEN_CASES: OpenSpec = OpenSpec {
    table: &CASES_TABLE,
    date_column: "creation_date",
    status_column: "status",
    open: &[
        "OPEN",
        "ON_HOLD",
        "OTHER",
        "REFUND_AGREED_BUT_FAILED",
        "WAITING_CS",
        "WAITING_DELIVERY",
    ],
};
