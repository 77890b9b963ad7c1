//! eBay Sell Feed API: the `LMS_ACTIVE_INVENTORY_REPORT` download task and its result
//! file, for the `active_inventory` stream. Wire formats: `docs/ebay-wire.md` ("Active
//! inventory").
//!
//! - [`create_inventory_task`]: `POST /sell/feed/v1/inventory_task` (createInventoryTask)
//!   with `{"feedType": "LMS_ACTIVE_INVENTORY_REPORT", "schemaVersion": "1.0"}`; eBay
//!   answers 202 with the task's URI in `Location`.
//! - [`get_inventory_task`]: `GET /sell/feed/v1/inventory_task/{task_id}`
//!   (getInventoryTask): the task's `status` ([`TaskStatus`]).
//! - [`download_result_file`]: `GET /sell/feed/v1/task/{task_id}/download_result_file`
//!   (getResultFile), streamed to a file with a byte cap and a total deadline.
//! - [`InventoryReader`]: the result file (zip, gzip or plain XML) parsed as a stream with
//!   a pull parser: one [`InventoryRow`] at a time, every field and every markup token
//!   bounded, the decompressed size capped; a malformed or truncated file is an error at
//!   the point it is found, so the caller applies nothing. A compressed file is inflated
//!   on a thread of its own, a few 256 KiB chunks ahead of the parser.
//!
//! Neither the access token nor any credential appears in errors or logs.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use quick_xml::events::Event;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tracing::debug;

use super::ebay::EbayClient;
use super::{invalid, read_capped, transport_error, ProviderError, MAX_JSON_BODY};
pub use crate::store::ebay_inventory::InventoryRow;

/// Operation (bucket and metrics label) of createInventoryTask.
pub const OP_CREATE_INVENTORY_TASK: &str = "createInventoryTask";
/// Operation of getInventoryTask.
pub const OP_GET_INVENTORY_TASK: &str = "getInventoryTask";
/// Operation of getResultFile.
pub const OP_GET_RESULT_FILE: &str = "getResultFile";
/// The one feed type `inventory_task` supports.
pub const FEED_TYPE: &str = "LMS_ACTIVE_INVENTORY_REPORT";
/// The ActiveInventoryReport schema version asked for.
pub const SCHEMA_VERSION: &str = "1.0";

/// Longest task id accepted from eBay (they are short, e.g. `task-5-1234567890`).
const MAX_TASK_ID: usize = 128;
/// Longest text of one field (ItemID, SKU, Price, Quantity, currencyID, Ack). eBay's SKU
/// is at most 50 characters, an ItemID 19 digits.
pub const MAX_FIELD_BYTES: usize = 256;
/// Longest run of bytes without `<` or `>` (one text node or one tag): bounds what the
/// pull parser buffers for a single event.
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;
/// Deepest element nesting accepted.
const MAX_DEPTH: usize = 32;
/// Most variations of one listing (eBay allows 250).
const MAX_VARIATIONS: usize = 1000;
/// Largest quantity accepted.
const MAX_QUANTITY: u64 = 1_000_000_000;
/// Most entries a zip result file may hold (eBay's holds one XML file).
const MAX_ZIP_ENTRIES: usize = 16;

/// A feed task's status (eBay's FeedStatusEnum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    Created,
    Queued,
    InProcess,
    Completed,
    CompletedWithError,
    PartiallyProcessed,
    Failed,
}

impl TaskStatus {
    fn parse(text: &str) -> Option<TaskStatus> {
        Some(match text {
            "CREATED" => TaskStatus::Created,
            "QUEUED" => TaskStatus::Queued,
            "IN_PROCESS" => TaskStatus::InProcess,
            "COMPLETED" => TaskStatus::Completed,
            "COMPLETED_WITH_ERROR" => TaskStatus::CompletedWithError,
            "PARTIALLY_PROCESSED" => TaskStatus::PartiallyProcessed,
            "FAILED" => TaskStatus::Failed,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Created => "CREATED",
            TaskStatus::Queued => "QUEUED",
            TaskStatus::InProcess => "IN_PROCESS",
            TaskStatus::Completed => "COMPLETED",
            TaskStatus::CompletedWithError => "COMPLETED_WITH_ERROR",
            TaskStatus::PartiallyProcessed => "PARTIALLY_PROCESSED",
            TaskStatus::Failed => "FAILED",
        }
    }

    /// Still being worked on: poll again.
    pub fn is_pending(self) -> bool {
        matches!(
            self,
            TaskStatus::Created | TaskStatus::Queued | TaskStatus::InProcess
        )
    }

    /// Finished with a result file getResultFile serves (COMPLETED or
    /// COMPLETED_WITH_ERROR, as eBay documents for getResultFile).
    pub fn has_file(self) -> bool {
        matches!(self, TaskStatus::Completed | TaskStatus::CompletedWithError)
    }
}

/// What getInventoryTask said about a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryTask {
    pub task_id: String,
    pub status: TaskStatus,
}

/// createInventoryTask: the new task's id, from the `Location` header of the 202.
pub async fn create_inventory_task(client: &EbayClient) -> Result<String, ProviderError> {
    let body = serde_json::json!({"feedType": FEED_TYPE, "schemaVersion": SCHEMA_VERSION});
    let response = client
        .send_authorized(OP_CREATE_INVENTORY_TASK, |http, base, token| {
            http.post(format!("{base}/sell/feed/v1/inventory_task"))
                .header(AUTHORIZATION, format!("Bearer {token}"))
                .header(ACCEPT, "application/json")
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_string())
        })
        .await?;
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    // The body of a 202 is empty; read (a little of) it so the connection is reusable.
    read_capped(response, OP_CREATE_INVENTORY_TASK, MAX_JSON_BODY, "").await?;
    let Some(location) = location else {
        return Err(invalid(
            OP_CREATE_INVENTORY_TASK,
            "the 202 has no Location header naming the task",
        ));
    };
    task_id_from_location(&location).ok_or_else(|| {
        invalid(
            OP_CREATE_INVENTORY_TASK,
            "the Location header names no valid task id",
        )
    })
}

/// The task id: the last path segment of the `Location` URI, checked (at most
/// [`MAX_TASK_ID`] characters of letters, digits, `-`, `_` and `.`, at least one of them
/// a letter or digit).
pub fn task_id_from_location(location: &str) -> Option<String> {
    let path = location.split(['?', '#']).next().unwrap_or("");
    let (parent, id) = path.trim_end_matches('/').rsplit_once('/')?;
    let valid = !id.is_empty()
        && id.len() <= MAX_TASK_ID
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && id.chars().any(|c| c.is_ascii_alphanumeric())
        && parent.ends_with("/inventory_task");
    valid.then(|| id.to_string())
}

/// getInventoryTask: the task's status.
pub async fn get_inventory_task(
    client: &EbayClient,
    task_id: &str,
) -> Result<InventoryTask, ProviderError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Task {
        task_id: Option<String>,
        status: String,
    }
    let response = client
        .send_authorized(OP_GET_INVENTORY_TASK, |http, base, token| {
            http.get(format!("{base}/sell/feed/v1/inventory_task/{task_id}"))
                .header(AUTHORIZATION, format!("Bearer {token}"))
                .header(ACCEPT, "application/json")
        })
        .await?;
    let body = read_capped(response, OP_GET_INVENTORY_TASK, MAX_JSON_BODY, "").await?;
    let task: Task = serde_json::from_slice(&body).map_err(|err| {
        invalid(
            OP_GET_INVENTORY_TASK,
            &format!("the task is not the expected json: {err}"),
        )
    })?;
    if task.task_id.as_deref().is_some_and(|id| id != task_id) {
        return Err(invalid(
            OP_GET_INVENTORY_TASK,
            "the answer describes another task",
        ));
    }
    let status = TaskStatus::parse(&task.status).ok_or_else(|| {
        invalid(
            OP_GET_INVENTORY_TASK,
            &format!("unknown task status {:?}", super::clip(&task.status)),
        )
    })?;
    Ok(InventoryTask {
        task_id: task_id.to_string(),
        status,
    })
}

/// getResultFile: streams the task's result file as served (still compressed) into
/// `dest` (created or truncated, mode 0600), never buffering it; fails past `max_bytes`
/// or after `deadline` in all. On failure `dest` is removed. Returns the bytes written.
pub async fn download_result_file(
    client: &EbayClient,
    task_id: &str,
    dest: &Path,
    max_bytes: u64,
    deadline: Duration,
) -> Result<u64, ProviderError> {
    let op = OP_GET_RESULT_FILE;
    let work = async {
        let mut response = client
            .send_authorized(op, |http, base, token| {
                http.get(format!(
                    "{base}/sell/feed/v1/task/{task_id}/download_result_file"
                ))
                .header(AUTHORIZATION, format!("Bearer {token}"))
                .header(ACCEPT, "application/octet-stream")
                .timeout(deadline)
            })
            .await?;
        if let Some(length) = response.content_length() {
            if length > max_bytes {
                return Err(invalid(
                    op,
                    &format!("result file is {length} bytes, over the {max_bytes} byte limit (max_document_bytes)"),
                ));
            }
        }
        let mut options = tokio::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        options.mode(0o600);
        let file = options
            .open(dest)
            .await
            .map_err(|err| invalid(op, &format!("cannot create {}: {err}", dest.display())))?;
        let mut writer = tokio::io::BufWriter::with_capacity(64 * 1024, file);
        let mut written: u64 = 0;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|err| transport_error(op, err))?
        {
            written = written.saturating_add(chunk.len() as u64);
            if written > max_bytes {
                return Err(invalid(
                    op,
                    &format!("result file exceeds the {max_bytes} byte limit (max_document_bytes)"),
                ));
            }
            writer
                .write_all(&chunk)
                .await
                .map_err(|err| invalid(op, &format!("cannot write {}: {err}", dest.display())))?;
        }
        writer
            .flush()
            .await
            .map_err(|err| invalid(op, &format!("cannot write {}: {err}", dest.display())))?;
        Ok(written)
    };
    let result = match tokio::time::timeout(deadline, work).await {
        Ok(result) => result,
        Err(_) => Err(ProviderError::Transport {
            operation: op,
            message: format!(
                "deadline exceeded (the download may take {} s in all)",
                deadline.as_secs()
            ),
        }),
    };
    match result {
        Ok(written) => {
            debug!(
                operation = op,
                task_id,
                bytes = written,
                "result file downloaded"
            );
            Ok(written)
        }
        Err(err) => {
            if let Err(remove) = tokio::fs::remove_file(dest).await {
                debug!(operation = op, path = %dest.display(), error = %remove, "cannot remove a partial result file");
            }
            Err(err)
        }
    }
}

/// Why a result file could not be read. Any of these fails the whole snapshot.
#[derive(Debug, thiserror::Error)]
pub enum FeedFileError {
    #[error("cannot read the result file: {0}")]
    Io(String),
    #[error("the result file is not a readable zip: {0}")]
    Zip(String),
    #[error("the result file decompresses to more than {0} bytes")]
    TooLarge(u64),
    #[error("malformed report at byte {position}: {message}")]
    Malformed { position: u64, message: String },
    #[error("the report is truncated: it ends inside <{0}>")]
    Truncated(String),
    #[error("the report ended without an ActiveInventoryReport")]
    NoReport,
    #[error("eBay reported a failure in the result file (Ack {0})")]
    Failure(String),
}

/// Opens a downloaded result file for streaming: a zip's (first) XML entry, a gzip
/// stream or plain XML, told apart by their first bytes; at most `max_xml_bytes` of XML
/// are read.
pub fn open_result_file(
    path: &Path,
    max_xml_bytes: u64,
) -> Result<InventoryReader<Inflated>, FeedFileError> {
    let mut file = File::open(path).map_err(|err| FeedFileError::Io(err.to_string()))?;
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < magic.len() {
        match file.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(err) => return Err(FeedFileError::Io(err.to_string())),
        }
    }
    let file = File::open(path).map_err(|err| FeedFileError::Io(err.to_string()))?;
    let xml: Box<dyn Read + Send> = if got == 4 && magic == *b"PK\x03\x04" {
        check_zip_directory(path)?;
        let mut archive =
            zip::ZipArchive::new(file).map_err(|err| FeedFileError::Zip(err.to_string()))?;
        if archive.is_empty() || archive.len() > MAX_ZIP_ENTRIES {
            return Err(FeedFileError::Zip(format!(
                "{} entries, 1 to {MAX_ZIP_ENTRIES} expected",
                archive.len()
            )));
        }
        let index = (0..archive.len())
            .find(|index| {
                archive
                    .name_for_index(*index)
                    .is_some_and(|name| name.to_ascii_lowercase().ends_with(".xml"))
            })
            .unwrap_or(0);
        // The entry's compressed bytes, read through a handle of their own (the zip
        // crate's entry reader borrows the archive).
        let (start, compressed, method) = {
            let entry = archive
                .by_index_raw(index)
                .map_err(|err| FeedFileError::Zip(err.to_string()))?;
            (
                entry.data_start(),
                entry.compressed_size(),
                entry.compression(),
            )
        };
        drop(archive);
        let mut raw = File::open(path).map_err(|err| FeedFileError::Io(err.to_string()))?;
        raw.seek(SeekFrom::Start(start))
            .map_err(|err| FeedFileError::Io(err.to_string()))?;
        let raw = raw.take(compressed);
        match method {
            zip::CompressionMethod::Stored => Box::new(raw),
            zip::CompressionMethod::Deflated => {
                Box::new(flate2::read::DeflateDecoder::new(BufReader::new(raw)))
            }
            other => {
                return Err(FeedFileError::Zip(format!(
                    "unsupported compression {other:?}"
                )))
            }
        }
    } else if got >= 2 && magic[..2] == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(file)
    };
    let capped = CappedReader {
        inner: xml,
        left: max_xml_bytes,
        limit: max_xml_bytes,
    };
    // The inflate thread checks the markup runs itself: no guard on the parser's side.
    Ok(InventoryReader::over(Inflated::start(capped)?))
}

/// Bytes of XML the inflate thread hands on at a time.
const INFLATE_CHUNK: usize = 256 * 1024;
/// Chunks it may be ahead of the parser: with [`INFLATE_CHUNK`], at most about 2 MiB of
/// XML in memory (these, the one being filled and the one being parsed).
const INFLATE_AHEAD: usize = 4;

/// What the inflate thread hands the parser.
enum Chunk {
    Data(Vec<u8>),
    /// The XML ended cleanly. Without it (the thread panicked) the file is unreadable.
    End,
    Failed(std::io::Error),
}

/// The result file's XML, decompressed (and capped) on a thread of its own a few chunks
/// ahead of the parser, so inflating and parsing overlap instead of adding up. The
/// thread ends at the end of the XML, at its first error, or when this reader is
/// dropped (its next hand-over fails). Spent chunks go back to it to be filled again.
///
/// The thread also bounds the runs without markup ([`MarkupRuns`], as [`MarkupGuard`]
/// does for other inputs): the XML a run passes [`MAX_TOKEN_BYTES`] in is handed on up
/// to that byte, then the failure. That check costs the parser's thread nothing.
pub struct Inflated {
    chunks: std::sync::mpsc::Receiver<Chunk>,
    spent: std::sync::mpsc::Sender<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
    ended: bool,
    /// After a failure, every later read fails alike.
    failed: Option<String>,
}

impl Inflated {
    fn start(xml: impl Read + Send + 'static) -> Result<Inflated, FeedFileError> {
        let (sender, chunks) = std::sync::mpsc::sync_channel(INFLATE_AHEAD);
        let (spent, recycled) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("inventory-inflate".to_string())
            .spawn(move || inflate_ahead(xml, &sender, &recycled))
            .map_err(|err| FeedFileError::Io(format!("cannot start the inflate thread: {err}")))?;
        Ok(Inflated {
            chunks,
            spent,
            current: Vec::new(),
            at: 0,
            ended: false,
            failed: None,
        })
    }
}

/// The inflate thread: reads `xml` to its end in chunks (reusing the spent ones).
fn inflate_ahead(
    mut xml: impl Read,
    sender: &std::sync::mpsc::SyncSender<Chunk>,
    recycled: &std::sync::mpsc::Receiver<Vec<u8>>,
) {
    let mut runs = MarkupRuns::default();
    loop {
        let mut buffer = recycled
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(INFLATE_CHUNK));
        buffer.resize(INFLATE_CHUNK, 0);
        let mut filled = 0;
        let mut failure = None;
        let mut ended = false;
        while filled < INFLATE_CHUNK {
            match xml.read(&mut buffer[filled..]) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(read) => filled += read,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
        }
        buffer.truncate(filled);
        if let Some(at) = runs.passes_limit(&buffer) {
            // The bytes before the run's limit are XML like any other; then the failure.
            buffer.truncate(at);
            failure = Some(run_too_long());
        }
        if !buffer.is_empty() && sender.send(Chunk::Data(buffer)).is_err() {
            return;
        }
        if let Some(err) = failure {
            let _ = sender.send(Chunk::Failed(err));
            return;
        }
        if ended {
            let _ = sender.send(Chunk::End);
            return;
        }
    }
}

impl Read for Inflated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl Inflated {
    /// [`BufRead::fill_buf`] once the current chunk is spent: the next one, the end, or
    /// the failure (again at every later call).
    fn next_chunk(&mut self) -> std::io::Result<&[u8]> {
        if let Some(message) = &self.failed {
            return Err(std::io::Error::other(message.clone()));
        }
        while self.at >= self.current.len() && !self.ended {
            match self.chunks.recv() {
                Ok(Chunk::Data(data)) => {
                    let spent = std::mem::replace(&mut self.current, data);
                    self.at = 0;
                    if spent.capacity() > 0 {
                        // The thread may have ended; the chunk is then just freed.
                        let _ = self.spent.send(spent);
                    }
                }
                Ok(Chunk::End) => self.ended = true,
                Ok(Chunk::Failed(err)) => {
                    self.failed = Some(err.to_string());
                    return Err(err);
                }
                Err(_) => {
                    let message = "the inflate thread stopped before the end of the xml";
                    self.failed = Some(message.to_string());
                    return Err(std::io::Error::other(message));
                }
            }
        }
        Ok(&self.current[self.at.min(self.current.len())..])
    }
}

impl BufRead for Inflated {
    /// The parser asks for every few bytes of XML: the rest of the current chunk is
    /// answered inline (a failure leaves no chunk, so it is always met below).
    #[inline]
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.at < self.current.len() {
            return Ok(&self.current[self.at..]);
        }
        self.next_chunk()
    }

    #[inline]
    fn consume(&mut self, amount: usize) {
        self.at = self.at.saturating_add(amount).min(self.current.len());
    }
}

/// Largest central directory accepted (eBay's zip holds one entry): the zip crate reads
/// the whole directory into memory, so a hostile file must not make it large.
const MAX_ZIP_DIRECTORY: u64 = 64 * 1024;

/// Checks a zip's end-of-central-directory record (and its zip64 form) before the zip
/// crate reads the directory: at most [`MAX_ZIP_ENTRIES`] entries and
/// [`MAX_ZIP_DIRECTORY`] bytes.
fn check_zip_directory(path: &Path) -> Result<(), FeedFileError> {
    let io = |err: std::io::Error| FeedFileError::Io(err.to_string());
    let bad = |message: &str| FeedFileError::Zip(message.to_string());
    let mut file = File::open(path).map_err(io)?;
    let length = file.metadata().map_err(io)?.len();
    // The record is 22 bytes plus a comment of at most 65,535.
    let tail_length = length.min(22 + 65_535);
    let tail_start = length - tail_length;
    file.seek(SeekFrom::Start(tail_start)).map_err(io)?;
    let mut tail = Vec::with_capacity(usize::try_from(tail_length).unwrap_or(0));
    file.by_ref()
        .take(tail_length)
        .read_to_end(&mut tail)
        .map_err(io)?;
    let at = tail
        .windows(4)
        .rposition(|window| window == b"PK\x05\x06")
        .filter(|at| at + 22 <= tail.len())
        .ok_or_else(|| bad("no end of central directory record"))?;
    let u16_at = |offset: usize| u64::from(u16::from_le_bytes([tail[offset], tail[offset + 1]]));
    let u32_at = |offset: usize| {
        u64::from(u32::from_le_bytes([
            tail[offset],
            tail[offset + 1],
            tail[offset + 2],
            tail[offset + 3],
        ]))
    };
    let mut entries = u16_at(at + 10);
    let mut directory = u32_at(at + 12);
    if entries == 0xFFFF || directory == 0xFFFF_FFFF {
        // Zip64: the locator (20 bytes) just before the record points at the zip64 record.
        let locator = at
            .checked_sub(20)
            .filter(|locator| tail[*locator..*locator + 4] == *b"PK\x06\x07")
            .ok_or_else(|| bad("a zip64 archive without its locator"))?;
        let record_offset = u32_at(locator + 8) | (u32_at(locator + 12) << 32);
        if record_offset.saturating_add(56) > length {
            return Err(bad("the zip64 record lies outside the file"));
        }
        file.seek(SeekFrom::Start(record_offset)).map_err(io)?;
        let mut record = [0u8; 56];
        file.read_exact(&mut record).map_err(io)?;
        if record[..4] != *b"PK\x06\x06" {
            return Err(bad("no zip64 end of central directory record"));
        }
        let u64_at = |offset: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&record[offset..offset + 8]);
            u64::from_le_bytes(bytes)
        };
        entries = u64_at(32);
        directory = u64_at(40);
    }
    if entries == 0 || entries > MAX_ZIP_ENTRIES as u64 || directory > MAX_ZIP_DIRECTORY {
        return Err(FeedFileError::Zip(format!(
            "{entries} entries in a {directory}-byte directory; 1 to {MAX_ZIP_ENTRIES} entries expected"
        )));
    }
    Ok(())
}

/// Fails a read once more than `limit` bytes came through (a decompression bomb).
struct CappedReader<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        match self.left.checked_sub(read as u64) {
            Some(left) => {
                self.left = left;
                Ok(read)
            }
            None => Err(std::io::Error::other(TooLargeMarker(self.limit))),
        }
    }
}

#[derive(Debug)]
struct TooLargeMarker(u64);

impl std::fmt::Display for TooLargeMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "more than {} bytes of xml", self.0)
    }
}

impl std::error::Error for TooLargeMarker {}

/// Fails once a run of more than [`MAX_TOKEN_BYTES`] bytes holds neither `<` nor `>`:
/// the pull parser buffers one event (a text node, a tag) at a time, and this bounds it.
/// [`InventoryReader::new`] reads through it; a result file's [`Inflated`] checks the
/// same on its own thread instead ([`MarkupRuns`]).
pub struct MarkupGuard<R> {
    inner: R,
    run: usize,
    failed: bool,
}

/// The failure of a run without markup longer than [`MAX_TOKEN_BYTES`].
fn run_too_long() -> std::io::Error {
    std::io::Error::other(format!("more than {MAX_TOKEN_BYTES} bytes without markup"))
}

/// The run without `<` or `>` at the end of the XML seen so far, across chunks.
#[derive(Debug, Default)]
struct MarkupRuns {
    run: usize,
}

impl MarkupRuns {
    /// Where in `chunk` (the XML's next bytes) a run passes [`MAX_TOKEN_BYTES`], if it
    /// does. Markup comes every few bytes in a report, so the chunk is first looked at a
    /// block of half the limit at a time (a longer run holds a whole such block): only a
    /// block without markup, or an edge of the chunk far from markup, is walked byte by
    /// byte.
    fn passes_limit(&mut self, chunk: &[u8]) -> Option<usize> {
        const BLOCK: usize = MAX_TOKEN_BYTES / 2;
        let markup = |bytes: &[u8]| memchr::memchr2(b'<', b'>', bytes);
        if let (Some(first), Some(last)) = (markup(chunk), memchr::memrchr2(b'<', b'>', chunk)) {
            let tail = chunk.len() - last - 1;
            if self.run.saturating_add(first) <= MAX_TOKEN_BYTES
                && tail <= MAX_TOKEN_BYTES
                && chunk[first..=last]
                    .chunks(BLOCK)
                    .all(|block| markup(block).is_some())
            {
                self.run = tail;
                return None;
            }
        }
        let mut start = 0;
        for at in memchr::memchr2_iter(b'<', b'>', chunk) {
            if self.run.saturating_add(at - start) > MAX_TOKEN_BYTES {
                return Some(start + (MAX_TOKEN_BYTES - self.run.min(MAX_TOKEN_BYTES)));
            }
            self.run = 0;
            start = at + 1;
        }
        let tail = chunk.len() - start;
        if self.run.saturating_add(tail) > MAX_TOKEN_BYTES {
            return Some(start + (MAX_TOKEN_BYTES - self.run.min(MAX_TOKEN_BYTES)));
        }
        self.run = self.run.saturating_add(tail);
        None
    }
}

impl<R: BufRead> Read for MarkupGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for MarkupGuard<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.failed {
            return Err(run_too_long());
        }
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        if let Ok(available) = self.inner.fill_buf() {
            let consumed = &available[..amount.min(available.len())];
            // Only the bytes after the last `<` or `>` extend the run: searched from the
            // end, where the parser's consumed spans nearly always end in markup.
            match consumed
                .iter()
                .rposition(|byte| *byte == b'<' || *byte == b'>')
            {
                Some(at) => self.run = consumed.len() - at - 1,
                None => self.run = self.run.saturating_add(consumed.len()),
            }
            if self.run > MAX_TOKEN_BYTES {
                self.failed = true;
            }
        }
        self.inner.consume(amount);
    }
}

/// Which field's text is being collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    ItemId,
    Sku,
    Price,
    Quantity,
    Ack,
}

/// The element names the reader acts on; every other name is `Other` (its text is
/// skipped). Kept as a small copyable tag so the open-element path allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    ActiveInventoryReport,
    SkuDetails,
    Variations,
    Variation,
    Ack,
    ItemId,
    Sku,
    Price,
    Quantity,
    Other,
}

impl Name {
    fn of(local: &[u8]) -> Name {
        match local {
            b"ActiveInventoryReport" => Name::ActiveInventoryReport,
            b"SKUDetails" => Name::SkuDetails,
            b"Variations" => Name::Variations,
            b"Variation" => Name::Variation,
            b"Ack" => Name::Ack,
            b"ItemID" => Name::ItemId,
            b"SKU" => Name::Sku,
            b"Price" => Name::Price,
            b"Quantity" => Name::Quantity,
            _ => Name::Other,
        }
    }
}

/// One `SKUDetails` or `Variation` being read.
#[derive(Debug, Default)]
struct Partial {
    item_id: Option<String>,
    sku: Option<String>,
    price: Option<String>,
    currency: Option<String>,
    /// Parsed as it is read (no string kept).
    quantity: Option<u64>,
}

/// The streaming reader of an ActiveInventoryReport: an iterator of rows, one
/// `SKUDetails` (or one `Variation` of it) at a time. Element names follow eBay's
/// ActiveInventoryReport (Merchant Data / LMS): `ActiveInventoryReport` (optionally
/// inside `BulkDataExchangeResponses`), `SKUDetails` with `ItemID`, `SKU`,
/// `Price currencyID`, `Quantity`, and `Variations/Variation` with `SKU`, `Price`,
/// `Quantity`; anything else is skipped. After the first error it yields nothing more.
///
/// Events are read into one reused buffer and never copied; open elements are kept as
/// [`Name`] tags (the innermost one's text, for a truncation message, is kept apart).
pub struct InventoryReader<R: BufRead> {
    reader: quick_xml::Reader<R>,
    buf: Vec<u8>,
    /// The open elements (at most [`MAX_DEPTH`]), each with where its name starts in
    /// `names`.
    path: Vec<(Name, usize)>,
    /// The open elements' names as read (at most 64 bytes each), end to end: only for
    /// a truncation message, reused without allocating.
    names: Vec<u8>,
    saw_report: bool,
    closed_report: bool,
    item: Option<Partial>,
    variation: Option<Partial>,
    variations: Vec<InventoryRow>,
    /// Rows of the last listing not yet handed out (its variations).
    pending: std::collections::VecDeque<InventoryRow>,
    field: Option<Field>,
    text: String,
    done: bool,
}

impl<R: BufRead> InventoryReader<MarkupGuard<R>> {
    /// A reader of `input`, any XML source (its markup runs bounded by [`MarkupGuard`]).
    pub fn new(input: R) -> InventoryReader<MarkupGuard<R>> {
        InventoryReader::over(MarkupGuard {
            inner: input,
            run: 0,
            failed: false,
        })
    }
}

impl<R: BufRead> InventoryReader<R> {
    /// A reader of `input`, whose markup runs are already bounded.
    fn over(input: R) -> InventoryReader<R> {
        let mut reader = quick_xml::Reader::from_reader(input);
        let config = reader.config_mut();
        config.trim_text(true);
        config.check_end_names = true;
        config.expand_empty_elements = true;
        InventoryReader {
            reader,
            buf: Vec::with_capacity(1024),
            path: Vec::new(),
            names: Vec::new(),
            saw_report: false,
            closed_report: false,
            item: None,
            variation: None,
            variations: Vec::new(),
            pending: std::collections::VecDeque::new(),
            field: None,
            text: String::new(),
            done: false,
        }
    }

    fn malformed(&self, message: impl Into<String>) -> FeedFileError {
        FeedFileError::Malformed {
            position: self.reader.buffer_position(),
            message: message.into(),
        }
    }

    /// Nothing is left to read (after a syntax error: the file stopped inside markup).
    fn at_end_of_input(&mut self) -> bool {
        matches!(self.reader.get_mut().fill_buf(), Ok(rest) if rest.is_empty())
    }

    /// The innermost open element's name (for a truncation message).
    fn open_element(&self) -> String {
        let start = self
            .path
            .last()
            .map_or(self.names.len(), |(_, start)| *start);
        String::from_utf8_lossy(&self.names[start..]).into_owned()
    }

    fn parent_is(&self, name: Name) -> bool {
        self.path.last().is_some_and(|(last, _)| *last == name)
    }

    fn push_text(&mut self, text: &str) -> Result<(), FeedFileError> {
        if self.field.is_none() {
            return Ok(());
        }
        if self.text.len().saturating_add(text.len()) > MAX_FIELD_BYTES {
            return Err(self.malformed(format!("a field is longer than {MAX_FIELD_BYTES} bytes")));
        }
        self.text.push_str(text);
        Ok(())
    }

    /// The next event, mapped to at most one finished listing (pushed to `pending`).
    fn step(&mut self) -> Result<bool, FeedFileError> {
        // The buffer is lent to the event for the time of this step, then given back.
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let stepped = self.step_into(&mut buf);
        self.buf = buf;
        stepped
    }

    fn step_into(&mut self, buf: &mut Vec<u8>) -> Result<bool, FeedFileError> {
        let event = match self.reader.read_event_into(buf) {
            Ok(event) => event,
            Err(quick_xml::Error::Io(err)) => {
                if let Some(marker) = err
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<TooLargeMarker>())
                {
                    return Err(FeedFileError::TooLarge(marker.0));
                }
                return Err(FeedFileError::Io(err.to_string()));
            }
            // Every "unclosed" syntax error means the input ended inside markup.
            Err(quick_xml::Error::Syntax(_)) if self.at_end_of_input() => {
                return Err(FeedFileError::Truncated(self.open_element()));
            }
            Err(err) => return Err(self.malformed(err.to_string())),
        };
        match event {
            Event::Start(start) => {
                let local = start.local_name();
                let name = Name::of(local.as_ref());
                if self.path.len() >= MAX_DEPTH {
                    return Err(self.malformed(format!("elements nested deeper than {MAX_DEPTH}")));
                }
                if self.field.is_some() {
                    return Err(self.malformed("an element inside a field"));
                }
                match name {
                    Name::ActiveInventoryReport => {
                        if self.saw_report {
                            return Err(self.malformed("a second ActiveInventoryReport"));
                        }
                        self.saw_report = true;
                    }
                    Name::SkuDetails if self.parent_is(Name::ActiveInventoryReport) => {
                        self.item = Some(Partial::default());
                        self.variations.clear();
                    }
                    Name::Variation if self.parent_is(Name::Variations) && self.item.is_some() => {
                        self.variation = Some(Partial::default());
                    }
                    Name::Ack if self.parent_is(Name::ActiveInventoryReport) => {
                        self.field = Some(Field::Ack);
                    }
                    Name::ItemId if self.parent_is(Name::SkuDetails) => {
                        self.field = Some(Field::ItemId)
                    }
                    Name::Sku if self.in_listing() => self.field = Some(Field::Sku),
                    Name::Quantity if self.in_listing() => self.field = Some(Field::Quantity),
                    Name::Price if self.in_listing() => {
                        self.field = Some(Field::Price);
                        let mut currency = None;
                        for attribute in start.attributes() {
                            let attribute =
                                attribute.map_err(|err| self.malformed(err.to_string()))?;
                            if attribute.key.local_name().as_ref() == b"currencyID" {
                                // Unescaped only when it holds a reference at all.
                                let value = if attribute.value.contains(&b'&') {
                                    attribute
                                        .unescape_value()
                                        .map_err(|err| self.malformed(err.to_string()))?
                                } else {
                                    std::borrow::Cow::Borrowed(
                                        std::str::from_utf8(&attribute.value)
                                            .map_err(|err| self.malformed(err.to_string()))?,
                                    )
                                };
                                currency = Some(check_currency(&value).ok_or_else(|| {
                                    self.malformed("Price has an invalid currencyID")
                                })?);
                            }
                        }
                        let target = if self.parent_is(Name::Variation) {
                            self.variation.as_mut()
                        } else {
                            self.item.as_mut()
                        };
                        if let Some(target) = target {
                            target.currency = currency;
                        }
                    }
                    _ => {}
                }
                self.text.clear();
                let start = self.names.len();
                self.names
                    .extend_from_slice(&local.as_ref()[..local.as_ref().len().min(64)]);
                self.path.push((name, start));
            }
            Event::End(end) => {
                let name = Name::of(end.local_name().as_ref());
                if let Some((_, start)) = self.path.pop() {
                    self.names.truncate(start);
                }
                if let Some(field) = self.field.take() {
                    // The buffer is lent to the field and kept for the next one: a field's
                    // value is one allocation of its own size (the buffer's grows once).
                    let mut text = std::mem::take(&mut self.text);
                    let set = self.set_field(field, &text);
                    text.clear();
                    self.text = text;
                    set?;
                    return Ok(false);
                }
                match name {
                    Name::Variation => {
                        if let (Some(variation), Some(item)) = (self.variation.take(), &self.item) {
                            if self.variations.len() >= MAX_VARIATIONS {
                                return Err(self.malformed(format!(
                                    "a listing with more than {MAX_VARIATIONS} variations"
                                )));
                            }
                            let item_id = item.item_id.clone().unwrap_or_default();
                            let row = self.finish(variation, Some(item_id), "Variation")?;
                            self.variations.push(row);
                        }
                    }
                    Name::SkuDetails if self.parent_is(Name::ActiveInventoryReport) => {
                        if let Some(item) = self.item.take() {
                            if item.item_id.is_none() {
                                return Err(self.malformed("a SKUDetails without ItemID"));
                            }
                            if self.variations.is_empty() {
                                let row = self.finish(item, None, "SKUDetails")?;
                                self.pending.push_back(row);
                            } else {
                                let item_id = item.item_id.unwrap_or_default();
                                // Variations carry the price and quantity; their ItemID is
                                // the listing's (it may come after them).
                                for mut row in self.variations.drain(..) {
                                    row.item_id.clone_from(&item_id);
                                    self.pending.push_back(row);
                                }
                            }
                            return Ok(true);
                        }
                    }
                    Name::ActiveInventoryReport => self.closed_report = true,
                    _ => {}
                }
            }
            // Text outside a field is skipped undecoded.
            Event::Text(text) if self.field.is_some() => {
                let decoded = text
                    .decode()
                    .map_err(|err| self.malformed(err.to_string()))?;
                self.push_text(&decoded)?;
            }
            Event::CData(data) if self.field.is_some() => {
                let decoded =
                    std::str::from_utf8(&data).map_err(|err| self.malformed(err.to_string()))?;
                self.push_text(decoded)?;
            }
            Event::GeneralRef(reference) => {
                let mut utf8 = [0u8; 4];
                let resolved: &str = match reference
                    .resolve_char_ref()
                    .map_err(|err| self.malformed(err.to_string()))?
                {
                    Some(ch) => ch.encode_utf8(&mut utf8),
                    None => {
                        let name = reference
                            .decode()
                            .map_err(|err| self.malformed(err.to_string()))?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| self.malformed(format!("unknown entity &{name};")))?
                    }
                };
                self.push_text(resolved)?;
            }
            Event::Eof => {
                if !self.path.is_empty() {
                    return Err(FeedFileError::Truncated(self.open_element()));
                }
                if !self.saw_report || !self.closed_report {
                    return Err(FeedFileError::NoReport);
                }
                self.done = true;
            }
            Event::DocType(_) => return Err(self.malformed("a DOCTYPE (not in eBay's reports)")),
            _ => {}
        }
        Ok(false)
    }

    /// The innermost open element is a listing or one of its variations.
    fn in_listing(&self) -> bool {
        self.parent_is(Name::SkuDetails) || self.parent_is(Name::Variation)
    }

    fn set_field(&mut self, field: Field, text: &str) -> Result<(), FeedFileError> {
        // trim_text already dropped the whitespace around the text events; a field
        // split by an entity or CDATA may still hold some.
        let text = text.trim();
        if field == Field::Ack {
            if text == "Failure" {
                return Err(FeedFileError::Failure(text.to_string()));
            }
            return Ok(());
        }
        let quantity = if field == Field::Quantity {
            Some(parse_count(text).ok_or_else(|| self.malformed("Quantity is not a count"))?)
        } else {
            None
        };
        let target = if self.variation.is_some() {
            self.variation.as_mut()
        } else {
            self.item.as_mut()
        };
        let Some(target) = target else {
            return Ok(());
        };
        match field {
            Field::ItemId => target.item_id = Some(text.to_string()),
            Field::Sku => target.sku = Some(text.to_string()),
            Field::Price => target.price = Some(text.to_string()),
            Field::Quantity => target.quantity = quantity,
            Field::Ack => {}
        }
        Ok(())
    }

    /// A finished SKUDetails (without variations) or Variation as a checked row.
    fn finish(
        &self,
        partial: Partial,
        item_id: Option<String>,
        what: &str,
    ) -> Result<InventoryRow, FeedFileError> {
        let item_id = item_id.or(partial.item_id).unwrap_or_default();
        if !item_id.is_empty() && !item_id.bytes().all(|c| c.is_ascii_alphanumeric()) {
            return Err(self.malformed(format!("{what}: ItemID is not an item id")));
        }
        let quantity = partial
            .quantity
            .ok_or_else(|| self.malformed(format!("{what} without Quantity")))?;
        let price = match partial.price {
            Some(price) if is_decimal(&price) => Some(price),
            Some(_) => return Err(self.malformed(format!("{what}: Price is not an amount"))),
            None => None,
        };
        Ok(InventoryRow {
            item_id,
            sku: partial.sku.unwrap_or_default(),
            quantity,
            price,
            currency: partial.currency,
        })
    }
}

/// A count of at most [`MAX_QUANTITY`]: ASCII digits only (at most 10 of them).
fn parse_count(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 10 {
        return None;
    }
    let mut value: u64 = 0;
    for byte in text.bytes() {
        if !byte.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u64::from(byte - b'0');
    }
    (value <= MAX_QUANTITY).then_some(value)
}

fn check_currency(value: &str) -> Option<String> {
    (value.len() == 3 && value.chars().all(|c| c.is_ascii_uppercase())).then(|| value.to_string())
}

/// A non-negative decimal amount: digits with at most one `.` (at most 32 characters).
fn is_decimal(text: &str) -> bool {
    let mut dots = 0;
    !text.is_empty()
        && text.len() <= 32
        && text.chars().all(|c| {
            if c == '.' {
                dots += 1;
                dots == 1
            } else {
                c.is_ascii_digit()
            }
        })
        && text.chars().any(|c| c.is_ascii_digit())
}

impl<R: BufRead> Iterator for InventoryReader<R> {
    type Item = Result<InventoryRow, FeedFileError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(row) = self.pending.pop_front() {
                return Some(Ok(row));
            }
            if self.done {
                return None;
            }
            if let Err(err) = self.step() {
                self.done = true;
                self.pending.clear();
                return Some(Err(err));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(xml: &str) -> Result<Vec<InventoryRow>, FeedFileError> {
        InventoryReader::new(xml.as_bytes()).collect()
    }

    const REPORT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<BulkDataExchangeResponses xmlns="urn:ebay:apis:eBLBaseComponents">
<ActiveInventoryReport>
  <Ack>Success</Ack>
  <SKUDetails><SKU>A&amp;B</SKU><Price currencyID="USD">15.38</Price><Quantity>1</Quantity><ItemID>206349816749</ItemID></SKUDetails>
  <SKUDetails><ItemID>206349816964</ItemID><Variations>
    <Variation><SKU>V-1</SKU><Price currencyID="USD">10.50</Price><Quantity>2</Quantity></Variation>
    <Variation><SKU>V-2</SKU><Price currencyID="USD">11</Price><Quantity>0</Quantity></Variation>
  </Variations></SKUDetails>
</ActiveInventoryReport></BulkDataExchangeResponses>"#;

    #[test]
    fn a_report_yields_one_row_per_sku_and_variation() {
        let rows = rows(REPORT).expect("rows");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].sku, "A&B");
        assert_eq!(rows[0].item_id, "206349816749");
        assert_eq!(rows[0].price.as_deref(), Some("15.38"));
        assert_eq!(rows[0].currency.as_deref(), Some("USD"));
        assert_eq!(
            (
                rows[1].item_id.as_str(),
                rows[1].sku.as_str(),
                rows[1].quantity
            ),
            ("206349816964", "V-1", 2)
        );
        assert_eq!(rows[2].quantity, 0);
    }

    #[test]
    fn truncated_malformed_and_oversized_files_fail() {
        // Cut inside a tag or between elements: truncated.
        let cut = &REPORT[..REPORT.len() - 40];
        assert!(
            matches!(rows(cut), Err(FeedFileError::Truncated(_))),
            "{:?}",
            rows(cut)
        );
        let at_boundary = &REPORT[..REPORT.find("</ActiveInventoryReport>").expect("end")];
        assert!(
            matches!(rows(at_boundary), Err(FeedFileError::Truncated(_))),
            "{:?}",
            rows(at_boundary)
        );
        let bad = REPORT.replace("<Quantity>1</Quantity>", "<Quantity>many</Quantity>");
        assert!(matches!(rows(&bad), Err(FeedFileError::Malformed { .. })));
        let mismatched = REPORT.replace("</SKU><Price", "</SKUX><Price");
        assert!(rows(&mismatched).is_err());
        let long = REPORT.replace("A&amp;B", &"x".repeat(MAX_FIELD_BYTES + 1));
        assert!(matches!(rows(&long), Err(FeedFileError::Malformed { .. })));
        let huge_text = REPORT.replace("A&amp;B", &"x".repeat(MAX_TOKEN_BYTES * 3));
        assert!(rows(&huge_text).is_err());
        assert!(matches!(rows("<Other/>"), Err(FeedFileError::NoReport)));
        let failure = REPORT.replace("<Ack>Success</Ack>", "<Ack>Failure</Ack>");
        assert!(matches!(rows(&failure), Err(FeedFileError::Failure(_))));
    }

    #[test]
    fn markup_runs_fail_where_a_run_passes_the_limit_in_any_chunk() {
        let markup = |len: usize| "<a>".repeat(len / 3).into_bytes();
        // A report-like chunk, runs of 1 byte: nothing.
        let mut runs = MarkupRuns::default();
        assert_eq!(runs.passes_limit(&markup(INFLATE_CHUNK)), None);
        // A run of exactly the limit is allowed, one byte more is not, at that byte.
        let mut chunk = markup(30);
        chunk.extend(std::iter::repeat_n(b'x', MAX_TOKEN_BYTES));
        chunk.extend(markup(30));
        assert_eq!(MarkupRuns::default().passes_limit(&chunk), None);
        let mut chunk = markup(30);
        chunk.extend(std::iter::repeat_n(b'x', MAX_TOKEN_BYTES + 1));
        chunk.extend(markup(30));
        assert_eq!(
            MarkupRuns::default().passes_limit(&chunk),
            Some(30 + MAX_TOKEN_BYTES)
        );
        // A run carried over chunk ends: its head at the end of one chunk, its tail
        // at the start of the next, and a chunk without any markup in between.
        let mut runs = MarkupRuns::default();
        let mut head = markup(30);
        head.extend(std::iter::repeat_n(b'x', 1000));
        assert_eq!(runs.passes_limit(&head), None);
        assert_eq!(runs.passes_limit(&vec![b'y'; MAX_TOKEN_BYTES - 2000]), None);
        let mut next = vec![b'z'; 999];
        next.extend(markup(30));
        assert_eq!(
            runs.passes_limit(&next),
            None,
            "1000 + limit - 2000 + 999 bytes"
        );
        let mut runs = MarkupRuns::default();
        assert_eq!(runs.passes_limit(&head), None);
        assert_eq!(runs.passes_limit(&vec![b'y'; MAX_TOKEN_BYTES - 1000]), None);
        assert_eq!(
            runs.passes_limit(b"zz<a>"),
            Some(0),
            "one byte past the limit"
        );
        // A run at a chunk's tail, longer than the limit by itself.
        let mut chunk = markup(30);
        chunk.extend(std::iter::repeat_n(b'x', MAX_TOKEN_BYTES + 10));
        assert_eq!(
            MarkupRuns::default().passes_limit(&chunk),
            Some(30 + MAX_TOKEN_BYTES)
        );
    }

    #[test]
    fn a_result_file_with_a_run_past_the_limit_fails_after_its_listings_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("report.xml");
        // Text of an element the reader skips: only the run bounds it.
        let note = format!("<Note>{}</Note><ItemID>", "x".repeat(MAX_TOKEN_BYTES * 3));
        let huge_text = REPORT.replace("<ItemID>206349816964", &format!("{note}206349816964"));
        std::fs::write(&path, huge_text).expect("write");
        let rows: Vec<_> = open_result_file(&path, u64::MAX).expect("open").collect();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert!(rows[0].is_ok(), "the first listing is read: {rows:?}");
        assert!(
            matches!(&rows[1], Err(FeedFileError::Io(message)) if message.contains("without markup")),
            "{rows:?}"
        );
        // The same XML read through the guard, a few KiB at a time as from a socket,
        // fails alike.
        let bytes = std::fs::read(&path).expect("read");
        let through_guard: Result<Vec<_>, _> =
            InventoryReader::new(BufReader::with_capacity(8192, &bytes[..])).collect();
        assert!(
            matches!(&through_guard, Err(FeedFileError::Io(message)) if message.contains("without markup")),
            "{through_guard:?}"
        );
    }

    #[test]
    fn a_zip_with_too_many_entries_is_refused_before_its_directory_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, entries: usize| {
            let path = dir.path().join(name);
            let file = File::create(&path).expect("create");
            let mut zip = zip::ZipWriter::new(file);
            for index in 0..entries {
                zip.start_file(
                    format!("report-{index}.xml"),
                    zip::write::SimpleFileOptions::default(),
                )
                .expect("entry");
                std::io::Write::write_all(&mut zip, REPORT.as_bytes()).expect("write");
            }
            zip.finish().expect("finish");
            path
        };
        let good = write("good.zip", 1);
        let rows: Vec<_> = open_result_file(&good, 1 << 20)
            .expect("open")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(rows.len(), 3);
        let many = write("many.zip", MAX_ZIP_ENTRIES + 1);
        assert!(matches!(
            open_result_file(&many, 1 << 20),
            Err(FeedFileError::Zip(_))
        ));
        // More XML than the cap: refused while reading.
        let capped: Result<Vec<_>, _> = open_result_file(&good, 100).expect("open").collect();
        assert!(
            matches!(capped, Err(FeedFileError::TooLarge(100))),
            "{capped:?}"
        );
    }

    #[test]
    fn task_ids_come_from_the_location_path_only() {
        assert_eq!(
            task_id_from_location("https://api.ebay.com/sell/feed/v1/inventory_task/task-1-23")
                .as_deref(),
            Some("task-1-23")
        );
        assert_eq!(
            task_id_from_location("https://api.ebay.com/sell/feed/v1/order_task/x"),
            None
        );
        assert_eq!(
            task_id_from_location("/sell/feed/v1/inventory_task/a%2Fb"),
            None
        );
        assert_eq!(
            task_id_from_location("/sell/feed/v1/inventory_task/.."),
            None
        );
    }
}
