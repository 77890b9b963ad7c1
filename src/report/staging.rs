//! Validated rows staged between the two passes of an apply.
//!
//! The first pass ([`stage_vendor_sales_document`]) parses and validates the whole document
//! with no database lock held and stages every accepted row in a compact binary form; the
//! second ([`read_staged_rows`]) feeds those rows to the store inside its transaction,
//! doing no JSON or gzip work there. A document that does not validate never reaches the
//! store, and the transaction lasts only as long as the inserts.
//!
//! Where the rows wait ([`StagedRows`]): in memory up to [`MEMORY_STAGING_BYTES`] (most
//! documents: a 6-hour window of a vendor's ASINs), else in a file beside the document
//! (`<document>.staged`, readable by its owner only), so a document of any size is
//! staged in bounded memory. Either way the staged rows live only as long as one apply:
//! dropping them removes the file, and a crash between the passes leaves the hours
//! DOWNLOADED, so the next run stages again from the document. That is why the file is
//! not synced to disk: nothing ever reads it after a restart. (Before, every apply
//! created, synced and removed one file; with a thousand small documents applied at once
//! the file system was a tenth of the daemon's CPU time.)
//!
//! Format, per row (little endian): `hour_utc i64, ordered_units i64, ordered_revenue f64,
//! asin_len u32, asin bytes`. The bytes are ours, but they are still read with bounds: an
//! ASIN longer than [`super::MAX_STRING_BYTES`] or a cut row is an error, not an
//! allocation.

use std::fs::File;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use super::limits::{DocumentLimits, MAX_STRING_BYTES};
use super::{read_vendor_sales_document_with, ReportError, ReportSummary};
use crate::domain::{HourWindow, SalesRow};

const BUFFER_BYTES: usize = 64 * 1024;

/// Staged rows up to this many bytes stay in memory (about 27,000 rows of a 10-character
/// ASIN); beyond, they go to the staging file. With `daemon.max_concurrent_runs` applies
/// at once (8 by default), at most 8 MiB of staged rows are in memory.
pub const MEMORY_STAGING_BYTES: usize = 1024 * 1024;

/// The staging file of a document: its path with `.staged` appended.
pub fn staging_path(document: &Path) -> PathBuf {
    let mut name = document.as_os_str().to_os_string();
    name.push(".staged");
    PathBuf::from(name)
}

/// A document's validated rows between the two passes: in memory, or in the staging file
/// (removed when this is dropped).
#[derive(Debug)]
pub struct StagedRows {
    place: Place,
}

#[derive(Debug)]
enum Place {
    Memory(Vec<u8>),
    File(PathBuf),
}

impl StagedRows {
    /// The staging file, when the rows spilled to one.
    pub fn file(&self) -> Option<&Path> {
        match &self.place {
            Place::Memory(_) => None,
            Place::File(path) => Some(path),
        }
    }
}

impl Drop for StagedRows {
    fn drop(&mut self) {
        if let Place::File(path) = &self.place {
            remove_file_if_present(path, "staging file");
        }
    }
}

/// Removes a document or staging file the apply is done with; one already gone is fine,
/// any other failure is logged (a file left behind is not worth failing the unit for).
pub fn remove_file_if_present(path: &Path, what: &'static str) {
    if let Err(err) = std::fs::remove_file(path) {
        if err.kind() != ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %err, file = what, "cannot remove a file");
        }
    }
}

/// Where staged rows are being written: memory until `memory_bytes`, then `path`.
struct StagingWriter<'a> {
    path: &'a Path,
    memory_bytes: usize,
    memory: Vec<u8>,
    file: Option<BufWriter<File>>,
}

impl Write for StagingWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.file.is_none() && self.memory.len().saturating_add(bytes.len()) > self.memory_bytes
        {
            // Held before anything is written to it, so a failed write still leaves the
            // file to be removed with the staged rows.
            let file = self.file.insert(BufWriter::with_capacity(
                BUFFER_BYTES,
                create_private(self.path)?,
            ));
            file.write_all(&std::mem::take(&mut self.memory))?;
        }
        match &mut self.file {
            Some(file) => file.write(bytes),
            None => {
                self.memory.extend_from_slice(bytes);
                Ok(bytes.len())
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.file {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

/// First pass: reads and validates the document at `path` under `limits` and stages its
/// full-hour rows (in memory up to [`MEMORY_STAGING_BYTES`], beyond in the file `staged`).
/// On error nothing stays staged: the file, if one was begun, is removed.
pub fn stage_vendor_sales_document(
    path: &Path,
    gzip: bool,
    expected: HourWindow,
    limits: DocumentLimits,
    staged: &Path,
) -> Result<(ReportSummary, StagedRows), ReportError> {
    stage_spilling_after(path, gzip, expected, limits, staged, MEMORY_STAGING_BYTES)
}

/// [`stage_vendor_sales_document`] with the rows kept in memory up to `memory_bytes`.
pub fn stage_spilling_after(
    path: &Path,
    gzip: bool,
    expected: HourWindow,
    limits: DocumentLimits,
    staged: &Path,
    memory_bytes: usize,
) -> Result<(ReportSummary, StagedRows), ReportError> {
    let mut writer = StagingWriter {
        path: staged,
        memory_bytes,
        memory: Vec::new(),
        file: None,
    };
    let summary = read_vendor_sales_document_with(path, gzip, expected, limits, |row| {
        write_row(&mut writer, &row).map_err(ReportError::Io)
    })
    .and_then(|summary| {
        writer.flush()?;
        Ok(summary)
    });
    let spilled = writer.file.is_some();
    let rows = StagedRows {
        place: if spilled {
            Place::File(staged.to_path_buf())
        } else {
            Place::Memory(writer.memory)
        },
    };
    drop(writer.file);
    // On error `rows` is dropped here, and with it the file.
    Ok((summary?, rows))
}

/// Second pass: hands every staged row to `on_row` in order; returns how many.
pub fn read_staged_rows(
    staged: &StagedRows,
    on_row: impl FnMut(SalesRow) -> Result<(), ReportError>,
) -> Result<u64, ReportError> {
    match &staged.place {
        Place::Memory(bytes) => read_rows(&mut bytes.as_slice(), "staged rows", on_row),
        Place::File(path) => read_rows(
            &mut BufReader::with_capacity(BUFFER_BYTES, File::open(path)?),
            &format!("staging file {}", path.display()),
            on_row,
        ),
    }
}

fn read_rows(
    reader: &mut impl Read,
    label: &str,
    mut on_row: impl FnMut(SalesRow) -> Result<(), ReportError>,
) -> Result<u64, ReportError> {
    let mut rows = 0u64;
    loop {
        let mut head = [0u8; 28];
        match read_exact_or_end(reader, &mut head)? {
            Filled::End => return Ok(rows),
            Filled::Partial => {
                return Err(ReportError::Truncated(format!(
                    "{label}: cut inside row {rows}"
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
                "{label} row {rows}: asin length {asin_len} exceeds {MAX_STRING_BYTES}"
            )));
        }
        let mut asin = vec![0u8; asin_len];
        if !matches!(read_exact_or_end(reader, &mut asin)?, Filled::Full) {
            return Err(ReportError::Truncated(format!(
                "{label}: cut inside row {rows}"
            )));
        }
        let asin = String::from_utf8(asin).map_err(|_| {
            ReportError::Malformed(format!("{label} row {rows}: asin is not utf-8"))
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
