//! The bounds of a document read: how many decompressed bytes, and how long one JSON string
//! or number literal may be. [`GuardedReader`] enforces them on the decompressed bytes as
//! they stream, before serde_json buffers anything, so a gzip bomb or a 512 MiB string
//! fails at the cap with memory bounded by the cap of one field, not by the document.

use std::io::{self, Read};

/// Longest JSON string (key or value, in its escaped form, quotes excluded): 64 KiB. An ASIN
/// is 10 characters and a timestamp 20; nothing in a report row comes near this.
pub const MAX_STRING_BYTES: usize = 64 * 1024;
/// Longest run of number or literal characters (`-0.5e10`, `true`): 256 bytes. A revenue
/// or a unit count needs at most ~25.
pub const MAX_NUMBER_BYTES: usize = 256;
/// The decompressed cap used when the caller names none: 512 MiB, the default of the
/// stream setting `max_document_bytes`.
pub const DEFAULT_MAX_DOCUMENT_BYTES: u64 = 512 * 1024 * 1024;

/// The bounds one document read runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentLimits {
    /// Most bytes the document may hold once decompressed (the stream's
    /// `max_document_bytes`, which also caps the compressed download).
    pub max_document_bytes: u64,
    /// Most bytes of one JSON string (see [`MAX_STRING_BYTES`]).
    pub max_string_bytes: usize,
    /// Most bytes of one number or literal (see [`MAX_NUMBER_BYTES`]).
    pub max_number_bytes: usize,
}

impl DocumentLimits {
    /// The documented field caps with `max_document_bytes` as the decompressed cap.
    pub fn new(max_document_bytes: u64) -> DocumentLimits {
        DocumentLimits {
            max_document_bytes,
            max_string_bytes: MAX_STRING_BYTES,
            max_number_bytes: MAX_NUMBER_BYTES,
        }
    }
}

impl Default for DocumentLimits {
    fn default() -> DocumentLimits {
        DocumentLimits::new(DEFAULT_MAX_DOCUMENT_BYTES)
    }
}

/// Which cap a document broke; carried inside an `io::Error` through serde_json and turned
/// into [`super::ReportError::TooLarge`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error(
        "the decompressed document exceeds max_document_bytes = {cap} bytes; \
         raise the stream's max_document_bytes if such documents are expected"
    )]
    Document { cap: u64 },
    #[error(
        "a json string at decompressed byte {offset} is longer than the {cap}-byte cap \
         of one field"
    )]
    String { cap: usize, offset: u64 },
    #[error(
        "a json number or literal at decompressed byte {offset} is longer than the \
         {cap}-byte cap of one field"
    )]
    Number { cap: usize, offset: u64 },
}

/// Where the scanner is in the JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lexer {
    /// Between tokens (structure, whitespace).
    Between,
    /// Inside a string; `escaped`: the previous byte was an unescaped backslash.
    InString { escaped: bool },
    /// Inside a number or a literal (`true`, `false`, `null`).
    InScalar,
}

/// Counts and lexes the decompressed bytes, failing the read once a cap is passed.
///
/// The lexer is deliberately loose (it does not validate JSON, serde_json does): it only
/// needs to know where a string or a scalar run starts and ends, which a quote, a
/// backslash escape and the structural characters decide.
pub struct GuardedReader<R> {
    inner: R,
    limits: DocumentLimits,
    /// Decompressed bytes read so far.
    total: u64,
    lexer: Lexer,
    /// Bytes of the current string or scalar so far.
    token_bytes: usize,
    /// The cap that was passed; every later read fails with it again.
    tripped: Option<LimitExceeded>,
}

impl<R: Read> GuardedReader<R> {
    pub fn new(inner: R, limits: DocumentLimits) -> GuardedReader<R> {
        GuardedReader {
            inner,
            limits,
            total: 0,
            lexer: Lexer::Between,
            token_bytes: 0,
            tripped: None,
        }
    }

    /// Decompressed bytes read so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    fn trip(&mut self, exceeded: LimitExceeded) -> io::Error {
        self.tripped = Some(exceeded.clone());
        io::Error::other(exceeded)
    }

    /// Runs the lexer over `bytes`, which start at decompressed offset `start`.
    fn scan(&mut self, bytes: &[u8], start: u64) -> Result<(), LimitExceeded> {
        let string_cap = self.limits.max_string_bytes;
        let number_cap = self.limits.max_number_bytes;
        for (index, &byte) in bytes.iter().enumerate() {
            let offset = start.saturating_add(index as u64);
            match self.lexer {
                Lexer::InString { escaped } => {
                    if escaped {
                        self.lexer = Lexer::InString { escaped: false };
                    } else if byte == b'"' {
                        self.lexer = Lexer::Between;
                        continue;
                    } else if byte == b'\\' {
                        self.lexer = Lexer::InString { escaped: true };
                    }
                    self.token_bytes = self.token_bytes.saturating_add(1);
                    if self.token_bytes > string_cap {
                        return Err(LimitExceeded::String {
                            cap: string_cap,
                            offset,
                        });
                    }
                }
                Lexer::InScalar | Lexer::Between => {
                    if byte == b'"' {
                        self.lexer = Lexer::InString { escaped: false };
                        self.token_bytes = 0;
                    } else if is_scalar_byte(byte) {
                        if self.lexer == Lexer::Between {
                            self.lexer = Lexer::InScalar;
                            self.token_bytes = 0;
                        }
                        self.token_bytes = self.token_bytes.saturating_add(1);
                        if self.token_bytes > number_cap {
                            return Err(LimitExceeded::Number {
                                cap: number_cap,
                                offset,
                            });
                        }
                    } else {
                        self.lexer = Lexer::Between;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Bytes that continue a number or a literal: anything but structure, whitespace and quotes
/// (so garbage runs are bounded too).
fn is_scalar_byte(byte: u8) -> bool {
    !matches!(
        byte,
        b'{' | b'}' | b'[' | b']' | b',' | b':' | b'"' | b' ' | b'\t' | b'\n' | b'\r'
    )
}

impl<R: Read> Read for GuardedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(exceeded) = &self.tripped {
            return Err(io::Error::other(exceeded.clone()));
        }
        // Never ask for more than one byte past the cap: the read that crosses it fails.
        let room = self
            .limits
            .max_document_bytes
            .saturating_sub(self.total)
            .saturating_add(1);
        let wanted = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let read = self.inner.read(&mut buf[..wanted])?;
        let start = self.total;
        self.total = self.total.saturating_add(read as u64);
        if self.total > self.limits.max_document_bytes {
            let cap = self.limits.max_document_bytes;
            return Err(self.trip(LimitExceeded::Document { cap }));
        }
        if let Err(exceeded) = self.scan(&buf[..read], start) {
            return Err(self.trip(exceeded));
        }
        Ok(read)
    }
}

/// The cap an io error (from the reader, possibly through serde_json) reports, if any.
pub(super) fn limit_of(err: &io::Error) -> Option<&LimitExceeded> {
    err.get_ref()
        .and_then(|inner| inner.downcast_ref::<LimitExceeded>())
}
