//! The simulator's mutable state behind its one mutex: operations, rejections, reports,
//! access tokens, and the admission of a call (token bucket, scheduled and random faults).

use std::collections::{BTreeMap, HashMap};

use rand::rngs::StdRng;
use rand::RngExt;

use super::bucket::TokenBucket;
use super::faults::{ContentFault, FaultKind, SimFaults};
use super::stats::{ServedRow, SimStats};
use super::{RateSpec, SimConfig};

/// The operations the simulator counts, schedules faults on and rate-limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Operation {
    Token,
    CreateReport,
    GetReport,
    GetReportDocument,
    DownloadDocument,
    GetReports,
    CancelReport,
}

impl Operation {
    pub(super) const ALL: [Operation; 7] = [
        Operation::Token,
        Operation::CreateReport,
        Operation::GetReport,
        Operation::GetReportDocument,
        Operation::DownloadDocument,
        Operation::GetReports,
        Operation::CancelReport,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Operation::Token => "token",
            Operation::CreateReport => "createReport",
            Operation::GetReport => "getReport",
            Operation::GetReportDocument => "getReportDocument",
            Operation::DownloadDocument => "downloadDocument",
            Operation::GetReports => "getReports",
            Operation::CancelReport => "cancelReport",
        }
    }

    pub(super) fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|operation| operation.name() == name)
    }
}

/// Why a call is refused; `handlers` turns each into its wire response.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Reject {
    /// 403 Unauthorized; `expired` selects the expired-token details.
    Unauthorized { expired: bool },
    /// 429 QuotaExceeded.
    Throttled { retry_after_secs: Option<u64> },
    /// 500 InternalFailure, injected.
    ServerError,
    /// 500 InternalFailure, a real failure inside the simulator.
    Internal(String),
    /// 400 InvalidInput.
    InvalidInput(String),
    /// 404 NotFound.
    NotFound(String),
    /// LWA error body `{"error","error_description"}` with status 400.
    Lwa {
        error: &'static str,
        description: String,
    },
    /// Download with a missing or unreadable `expires`.
    DocumentUnsigned,
    /// Download after the url expired.
    DocumentExpired,
    /// Download of an unknown document.
    DocumentMissing,
}

/// A report's fate, decided at createReport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Done(Option<ContentFault>),
    Fatal,
    Cancelled,
}

#[derive(Debug, Clone)]
pub(super) struct Report {
    pub(super) seller: String,
    pub(super) marketplace: String,
    pub(super) start: i64,
    pub(super) end: i64,
    /// Simulator clock (seconds) at creation.
    pub(super) created_at: f64,
    /// Real seconds after creation when the report leaves IN_QUEUE.
    pub(super) queued_for: f64,
    /// Real seconds after creation when the report ends; at least `queued_for`.
    pub(super) ends_after: f64,
    /// Cancelled by cancelReport while IN_QUEUE (it never started processing).
    pub(super) cancelled_by_request: bool,
    pub(super) outcome: Outcome,
    /// Set for DONE and FATAL outcomes; exposed once the report ends.
    pub(super) document_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    InQueue,
    InProgress,
    Ended,
}

#[derive(Debug, Clone)]
pub(super) struct AccessToken {
    pub(super) seller: String,
    /// Simulator clock (seconds) from which the token is expired.
    pub(super) expires_at: f64,
}

/// What an admitted SP-API call carries on.
pub(super) struct Admitted {
    pub(super) seller: String,
    /// The bucket rate on the real clock (the simulated rate × `time_scale`), for
    /// `x-amzn-RateLimit-Limit`.
    pub(super) rate: f64,
    /// A scheduled fault that did not fail the call itself.
    pub(super) scheduled: Option<FaultKind>,
}

/// A granted LWA token.
pub(super) struct TokenGrant {
    pub(super) access_token: String,
    pub(super) refresh_token: String,
    pub(super) expires_in: u64,
}

/// Everything mutable. Behind a std `Mutex` (not tokio's): every section is short,
/// synchronous, and never spans an `.await`.
pub(super) struct SimState {
    pub(super) faults: SimFaults,
    /// Seeded from the config so fault draws repeat for the same call order.
    pub(super) fault_rng: StdRng,
    /// Seeded from the config: the realistic profile's processing times repeat for the
    /// same order of createReport calls.
    pub(super) latency_rng: StdRng,
    /// Seeded from the OS: access tokens should not be guessable across runs.
    pub(super) id_rng: StdRng,
    /// Where the simulator listens (set by `serve`); document urls are built on it.
    pub(super) address: Option<std::net::SocketAddr>,
    /// getReports `nextToken` → where the next page starts; at most
    /// [`super::listing::MAX_PAGE_TOKENS`], the oldest dropped first.
    pub(super) page_tokens: HashMap<String, super::listing::PageCursor>,
    pub(super) page_token_order: std::collections::VecDeque<String>,
    pub(super) next_id: u64,
    pub(super) tokens: HashMap<String, AccessToken>,
    pub(super) buckets: HashMap<(String, Operation), TokenBucket>,
    pub(super) reports: HashMap<String, Report>,
    /// (seller, marketplace, dataStartTime, dataEndTime) → the reports created for it, in
    /// creation order: finds duplicate createReports without scanning every report. The
    /// simulator serves one report type, so the type is not part of the key.
    pub(super) reports_by_key: HashMap<(String, String, i64, i64), Vec<String>>,
    /// Document id → report id.
    pub(super) documents: HashMap<String, String>,
    pub(super) stats: SimStats,
    /// Calls per operation of the other providers' simulators (fault schedule positions).
    pub(super) provider_calls: HashMap<String, u64>,
    /// Keyed by (seller, marketplace, hour, asin): repeated downloads serve the same rows.
    pub(super) served: BTreeMap<(String, String, i64, String), ServedRow>,
}

impl SimState {
    /// Counts the call and returns the fault scheduled for it, if any.
    pub(super) fn count(&mut self, operation: Operation) -> Option<FaultKind> {
        let nth = self.stats.calls.bump(operation);
        self.faults
            .schedule
            .iter()
            .find(|entry| entry.nth == nth && entry.operation == operation.name())
            .map(|entry| entry.fault)
    }

    fn throttled(&mut self, operation: Operation) -> Reject {
        self.stats.throttled.bump(operation);
        Reject::Throttled {
            retry_after_secs: self.faults.retry_after_secs,
        }
    }

    fn server_error(&mut self, operation: Operation) -> Reject {
        self.stats.server_errors.bump(operation);
        Reject::ServerError
    }

    /// Applies a scheduled throttle/server_error; passes other kinds on.
    pub(super) fn apply_scheduled(
        &mut self,
        operation: Operation,
        scheduled: Option<FaultKind>,
    ) -> Result<Option<FaultKind>, Reject> {
        match scheduled {
            Some(FaultKind::Throttle) => Err(self.throttled(operation)),
            Some(FaultKind::ServerError) => Err(self.server_error(operation)),
            other => Ok(other),
        }
    }

    /// `true` with probability `probability`; draws nothing when it is zero.
    pub(super) fn chance(&mut self, probability: f64) -> bool {
        probability > 0.0 && self.fault_rng.random::<f64>() < probability
    }

    /// The gate of every SP-API call: count, authenticate, faults, then the bucket.
    pub(super) fn admit(
        &mut self,
        operation: Operation,
        access_token: Option<&str>,
        now: f64,
        config: &SimConfig,
    ) -> Result<Admitted, Reject> {
        let scheduled = self.count(operation);
        let seller = match access_token.and_then(|token| self.tokens.get(token)) {
            None => return Err(Reject::Unauthorized { expired: false }),
            Some(token) if now >= token.expires_at => {
                return Err(Reject::Unauthorized { expired: true })
            }
            Some(token) => token.seller.clone(),
        };
        let scheduled = self.apply_scheduled(operation, scheduled)?;
        if scheduled.is_none() {
            if self.chance(self.faults.throttle) {
                return Err(self.throttled(operation));
            }
            if self.chance(self.faults.server_error) {
                return Err(self.server_error(operation));
            }
        }
        let spec = config.rate_for(operation.name()).unwrap_or(RateSpec {
            rate: 1.0,
            burst: 1.0,
        });
        // Buckets refill on the simulated clock: `time_scale` speeds them up together with
        // report processing.
        let bucket_now = now * config.time_scale();
        let bucket = self
            .buckets
            .entry((seller.clone(), operation))
            .or_insert_with(|| TokenBucket::new(spec.rate, spec.burst, bucket_now));
        // What a client on the real clock sees: the bucket refills `time_scale` times
        // faster than its simulated rate.
        let rate = bucket.rate() * config.time_scale();
        if !bucket.try_take(bucket_now) {
            // Where a paced client and this bucket disagreed: the level it found (tokens
            // on the simulated clock) and the real-clock time since the simulator started.
            tracing::debug!(seller = %seller, operation = operation.name(), clock = now, level = bucket.level(bucket_now), "simulator bucket throttled");
            *self
                .stats
                .bucket_throttles
                .entry(format!("{seller}/{}", operation.name()))
                .or_default() += 1;
            return Err(self.throttled(operation));
        }
        tracing::trace!(seller = %seller, operation = operation.name(), clock = now, level = bucket.level(bucket_now), "simulator bucket took a token");
        Ok(Admitted {
            seller,
            rate,
            scheduled,
        })
    }

    pub(super) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The outcome of a new report: a scheduled kind wins, else the probabilities in order.
    pub(super) fn draw_outcome(&mut self, scheduled: Option<FaultKind>) -> Outcome {
        if let Some(kind) = scheduled {
            return match kind {
                FaultKind::Fatal => Outcome::Fatal,
                FaultKind::Cancelled => Outcome::Cancelled,
                other => Outcome::Done(ContentFault::from_kind(other)),
            };
        }
        let faults = [
            (self.faults.fatal, Outcome::Fatal),
            (self.faults.cancelled, Outcome::Cancelled),
            (
                self.faults.truncated,
                Outcome::Done(Some(ContentFault::Truncated)),
            ),
            (
                self.faults.malformed,
                Outcome::Done(Some(ContentFault::Malformed)),
            ),
            (
                self.faults.wrong_window,
                Outcome::Done(Some(ContentFault::WrongWindow)),
            ),
        ];
        for (probability, outcome) in faults {
            if self.chance(probability) {
                return outcome;
            }
        }
        Outcome::Done(None)
    }
}
