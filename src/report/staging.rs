//! Validated rows staged in a file between the two passes of an apply.
//!
//! The first pass ([`stage_vendor_sales_document`]) parses and validates the whole document
//! with no database lock held and writes every accepted row to a staging file in a compact
//! binary form; the second ([`read_staged_rows`]) feeds those rows to the store inside its
//! transaction, doing no JSON or gzip work there. A document that does not validate never
//! reaches the store, and the transaction lasts only as long as the inserts.
//!
//! Format, per row (little endian): `hour_utc i64, ordered_units i64, ordered_revenue f64,
//! asin_len u32, asin bytes`. The file is ours, but it is still read with bounds: an ASIN
//! longer than [`super::MAX_STRING_BYTES`] or a cut row is an error, not an allocation.

use std::fs::File;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use super::limits::{DocumentLimits, MAX_STRING_BYTES};
use super::{read_vendor_sales_document_with, ReportError, ReportSummary};
use crate::domain::{HourWindow, SalesRow};

const BUFFER_BYTES: usize = 64 * 1024;

/// The staging file of a document: its path with `.staged` appended.
pub fn staging_path(document: &Path) -> PathBuf {
    let mut name = document.as_os_str().to_os_string();
    name.push(".staged");
    PathBuf::from(name)
}

/// First pass: reads and validates the document at `path` under `limits` and writes its
/// full-hour rows to `staged`. On error the staging file is removed.
pub fn stage_vendor_sales_document(
    path: &Path,
    gzip: bool,
    expected: HourWindow,
    limits: DocumentLimits,
    staged: &Path,
) -> Result<ReportSummary, ReportError> {
    let result = (|| {
        let mut writer = BufWriter::with_capacity(BUFFER_BYTES, create_private(staged)?);
        let summary = read_vendor_sales_document_with(path, gzip, expected, limits, |row| {
            write_row(&mut writer, &row).map_err(ReportError::Io)
        })?;
        writer.flush()?;
        writer.get_ref().sync_data()?;
        Ok(summary)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(staged);
    }
    result
}

/// Second pass: hands every staged row to `on_row` in order; returns how many.
pub fn read_staged_rows(
    staged: &Path,
    mut on_row: impl FnMut(SalesRow) -> Result<(), ReportError>,
) -> Result<u64, ReportError> {
    let mut reader = BufReader::with_capacity(BUFFER_BYTES, File::open(staged)?);
    let mut rows = 0u64;
    loop {
        let mut head = [0u8; 28];
        match read_exact_or_end(&mut reader, &mut head)? {
            Filled::End => return Ok(rows),
            Filled::Partial => {
                return Err(ReportError::Truncated(format!(
                    "staging file {} ends inside row {rows}",
                    staged.display()
                )))
            }
            Filled::Full => {}
        }
        let field = |from: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&head[from..from + 8]);
            bytes
        };
        let hour_utc = i64::from_le_bytes(field(0));
        let ordered_units = i64::from_le_bytes(field(8));
        let ordered_revenue = f64::from_le_bytes(field(16));
        let mut length = [0u8; 4];
        length.copy_from_slice(&head[24..28]);
        let asin_len = usize::try_from(u32::from_le_bytes(length)).unwrap_or(usize::MAX);
        if asin_len > MAX_STRING_BYTES {
            return Err(ReportError::Malformed(format!(
                "staging file {} row {rows}: asin length {asin_len} exceeds {MAX_STRING_BYTES}",
                staged.display()
            )));
        }
        let mut asin = vec![0u8; asin_len];
        if !matches!(read_exact_or_end(&mut reader, &mut asin)?, Filled::Full) {
            return Err(ReportError::Truncated(format!(
                "staging file {} ends inside row {rows}",
                staged.display()
            )));
        }
        let asin = String::from_utf8(asin).map_err(|_| {
            ReportError::Malformed(format!(
                "staging file {} row {rows}: asin is not utf-8",
                staged.display()
            ))
        })?;
        on_row(SalesRow {
            hour_utc,
            asin,
            ordered_units,
            ordered_revenue,
        })?;
        rows = rows.saturating_add(1);
    }
}

fn write_row(writer: &mut impl Write, row: &SalesRow) -> std::io::Result<()> {
    let asin_len = u32::try_from(row.asin.len())
        .map_err(|_| std::io::Error::other("asin longer than u32::MAX bytes"))?;
    writer.write_all(&row.hour_utc.to_le_bytes())?;
    writer.write_all(&row.ordered_units.to_le_bytes())?;
    writer.write_all(&row.ordered_revenue.to_le_bytes())?;
    writer.write_all(&asin_len.to_le_bytes())?;
    writer.write_all(row.asin.as_bytes())
}

enum Filled {
    Full,
    Partial,
    End,
}

fn read_exact_or_end(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<Filled> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => {
                return Ok(if filled == 0 {
                    Filled::End
                } else {
                    Filled::Partial
                })
            }
            Ok(read) => filled += read,
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(Filled::Full)
}

/// Creates (truncating) a file readable by its owner only: staged rows are sales data.
fn create_private(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}
