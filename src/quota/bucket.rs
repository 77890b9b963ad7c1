//! A token bucket with injected time: the pure arithmetic of the quota model.
//!
//! Time is a [`Duration`] since an origin the owner chooses (the TokenManager uses its
//! start instant; tests use any number), so every rule here is testable without sleeping.
//!
//! Rules:
//! - The level refills at `rate` tokens per second up to `burst`; a level above `burst`
//!   (a provider reported more than we thought the bucket holds) is kept, never raised.
//! - Tokens are `f64` and the level may be negative: Keepa reports negative balances
//!   (seed 004) and [`Bucket::resync_keepa`] honours them. The wait for the next grant is
//!   computed once, in closed form (`|balance|/rate + refillIn`), never by a retry loop.
//! - A reserve keeps manual work from starving: a non-manual take
//!   ([`Bucket::try_take_reserved`]) only succeeds while `level - cost >= reserve`, where
//!   `reserve = reserve_share * burst` (default share [`DEFAULT_RESERVE_SHARE`]). A cost so
//!   large that `cost + reserve > burst` needs a full bucket instead, so it is never
//!   impossible. Manual takes ([`Bucket::try_take`]) may use the reserve.
//! - A take leaves the provider's bucket when its call arrives there, not at the grant:
//!   at each answer ([`Bucket::answered`]) the level is lowered to the least the
//!   provider's bucket can hold (after a take from a full bucket, its refill started up
//!   to one round trip later than ours), so the model is never ahead of the provider.
//! - A failed take returns how long to wait until it would succeed if nobody else takes
//!   in between; it changes nothing.
//!
//! - A window cap ([`WindowCap`], an hourly call budget): with one, the bucket also logs
//!   its takes and a take waits until at most `limit` tokens were taken in the trailing
//!   `length` (plus a guard of `length/1000`, at most 1 s, for a call that reaches the
//!   provider later than its grant). The wait is the end of the oldest takes that must
//!   leave the window, computed once from the log.
//!
//! Options: `rate` (tokens/s, learned from `x-amzn-RateLimit-Limit` via
//! [`Bucket::set_rate`]), `burst`, `reserve_share`. Emits nothing (no logging here).

use std::collections::VecDeque;
use std::time::Duration;

use super::WindowCap;

/// The share of `burst` that non-manual work may not take.
pub const DEFAULT_RESERVE_SHARE: f64 = 0.2;

/// Relative slack for float comparisons: a wake computed for "exactly enough tokens"
/// must find enough tokens, not `1e-15` too few (which would cost another wake-up).
const EPSILON: f64 = 1e-9;

/// A token bucket. See the module docs for the rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// Tokens added per second; always finite and `> 0`.
    rate: f64,
    /// Capacity; always finite and `> 0`.
    burst: f64,
    /// `[0, 1]`.
    reserve_share: f64,
    /// The level as of `updated_at` (may be negative).
    tokens: f64,
    /// The time the level refers to. It may lie in the future after a Keepa resync: the
    /// bucket does not refill before it (the provider's next refill).
    updated_at: Duration,
    /// At most `limit` tokens taken in any trailing `length`; `None`: no cap.
    window: Option<WindowCap>,
    /// The takes still inside the window, oldest first: (when, tokens).
    log: VecDeque<(Duration, f64)>,
    /// The takes no provider answer has followed yet, oldest first (at most
    /// [`MAX_UNANSWERED`]). See [`Bucket::answered`].
    unanswered: VecDeque<Unanswered>,
    /// Tokens taken since the bucket was made: the tokens taken since an unanswered
    /// take are this less its [`Unanswered::taken_before`].
    taken_total: f64,
}

/// The most entries a window log keeps; beyond it the two oldest are merged into the
/// later one's time (which keeps the merged tokens in the window longer, never shorter).
const MAX_LOG: usize = 100_000;

/// How long after `length` a take still counts: `length/1000`, at most 1 s, so a call
/// that reached the provider a little after its grant is out of the provider's window
/// too before its slot is given again.
fn window_span(cap: &WindowCap) -> Duration {
    cap.length
        .saturating_add((cap.length / 1000).min(Duration::from_secs(1)))
}

/// A take of a bucket that no provider answer has followed yet ([`Bucket::answered`]).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Unanswered {
    /// When it was granted.
    granted: Duration,
    /// The level before it.
    before: f64,
    /// [`Bucket`]'s `taken_total` before it.
    taken_before: f64,
}

/// The most unanswered takes a bucket remembers (calls in flight at once); beyond it the
/// oldest is forgotten (it then binds nothing).
const MAX_UNANSWERED: usize = 4096;

/// How long after its grant a take still waits for its answer: longer than a provider
/// call lasts (the default call deadline is 2 minutes). A take older than this had no
/// answer (its call failed before one came, or nobody observed it) and binds nothing.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(300);

/// The smallest rate and burst a bucket accepts; smaller or non-finite settings are
/// raised to it so every wait stays finite.
pub const MIN_SETTING: f64 = 1e-9;

fn sane(value: f64) -> f64 {
    if value.is_finite() {
        value.max(MIN_SETTING)
    } else {
        MIN_SETTING
    }
}

/// `seconds` as a duration, rounded up to the next microsecond, saturating.
fn secs_up(seconds: f64) -> Duration {
    if seconds <= 0.0 || seconds.is_nan() {
        return Duration::ZERO;
    }
    let micros = (seconds * 1e6).ceil();
    if micros >= u64::MAX as f64 {
        Duration::MAX
    } else {
        Duration::from_micros(micros as u64)
    }
}

impl Bucket {
    /// A full bucket as of `now`, with the default reserve share.
    pub fn new(rate: f64, burst: f64, now: Duration) -> Bucket {
        let burst = sane(burst);
        Bucket {
            rate: sane(rate),
            burst,
            reserve_share: DEFAULT_RESERVE_SHARE,
            tokens: burst,
            updated_at: now,
            window: None,
            log: VecDeque::new(),
            unanswered: VecDeque::new(),
            taken_total: 0.0,
        }
    }

    /// Sets the window cap (`None`: none). A cap with a limit that is not finite and
    /// `> 0` or a zero length is no cap.
    pub fn with_window(mut self, window: Option<WindowCap>) -> Bucket {
        self.window =
            window.filter(|cap| cap.limit.is_finite() && cap.limit > 0.0 && !cap.length.is_zero());
        self
    }

    pub fn window(&self) -> Option<WindowCap> {
        self.window
    }

    /// Tokens taken within the window as of `now` (0 without a window).
    pub fn window_used(&self, now: Duration) -> f64 {
        let Some(cap) = &self.window else {
            return 0.0;
        };
        let span = window_span(cap);
        self.log
            .iter()
            .filter(|(at, _)| at.saturating_add(span) > now)
            .map(|(_, tokens)| tokens)
            .sum()
    }

    /// How long until `cost` more fits in the window (zero: now; [`Duration::MAX`]: a
    /// cost above the limit never does).
    fn window_wait(&self, cost: f64, now: Duration) -> Duration {
        let Some(cap) = &self.window else {
            return Duration::ZERO;
        };
        let slack = EPSILON * cap.limit.max(1.0);
        if cost > cap.limit + slack {
            return Duration::MAX;
        }
        let span = window_span(cap);
        let mut used = self.window_used(now);
        if used + cost <= cap.limit + slack {
            return Duration::ZERO;
        }
        for (at, tokens) in &self.log {
            let leaves = at.saturating_add(span);
            if leaves <= now {
                continue;
            }
            used -= tokens;
            if used + cost <= cap.limit + slack {
                return leaves - now;
            }
        }
        Duration::MAX
    }

    fn log_take(&mut self, cost: f64, now: Duration) {
        let Some(cap) = &self.window else {
            return;
        };
        let span = window_span(cap);
        while self
            .log
            .front()
            .is_some_and(|(at, _)| at.saturating_add(span) <= now)
        {
            self.log.pop_front();
        }
        if cost > 0.0 && cost.is_finite() {
            self.log.push_back((now, cost));
        }
        while self.log.len() > MAX_LOG {
            if let Some((_, tokens)) = self.log.pop_front() {
                if let Some(next) = self.log.front_mut() {
                    next.1 += tokens;
                }
            }
        }
    }

    /// Sets the reserve share (clamped to `[0, 1]`; non-finite means the default).
    pub fn with_reserve_share(mut self, share: f64) -> Bucket {
        self.reserve_share = if share.is_finite() {
            share.clamp(0.0, 1.0)
        } else {
            DEFAULT_RESERVE_SHARE
        };
        self
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn burst(&self) -> f64 {
        self.burst
    }

    pub fn reserve_share(&self) -> f64 {
        self.reserve_share
    }

    /// The tokens non-manual work leaves alone: `reserve_share * burst`.
    pub fn reserve(&self) -> f64 {
        self.reserve_share * self.burst
    }

    /// The level at `now` (refilled, capped at `burst`), without changing the bucket.
    pub fn level(&self, now: Duration) -> f64 {
        if now <= self.updated_at || self.tokens >= self.burst {
            return self.tokens;
        }
        let elapsed = (now - self.updated_at).as_secs_f64();
        (self.tokens + self.rate * elapsed).min(self.burst)
    }

    /// The level a take must find: `cost`, plus the reserve for non-manual work (at most
    /// up to a full bucket).
    fn need(&self, cost: f64, reserved: bool) -> f64 {
        if reserved {
            (cost + self.reserve()).min(self.burst.max(cost))
        } else {
            cost
        }
    }

    /// How long until a take of `cost` would succeed (zero: now). Changes nothing.
    /// A cost above `burst` can never be paid: the wait is [`Duration::MAX`].
    /// With a window cap, also until `cost` more fits in the window.
    pub fn wait(&self, cost: f64, reserved: bool, now: Duration) -> Duration {
        if cost > self.burst * (1.0 + EPSILON) {
            return Duration::MAX;
        }
        self.level_wait(cost, reserved, now)
            .max(self.window_wait(cost, now))
    }

    fn level_wait(&self, cost: f64, reserved: bool, now: Duration) -> Duration {
        let need = self.need(cost, reserved);
        let slack = EPSILON * need.abs().max(1.0);
        let level = self.level(now);
        if level + slack >= need {
            return Duration::ZERO;
        }
        // Not before the refill clock starts (a Keepa `refillIn`), then deficit / rate.
        let hold = self.updated_at.saturating_sub(now);
        let from = now.max(self.updated_at);
        let deficit = need - self.level(from);
        hold.saturating_add(secs_up(deficit / self.rate))
    }

    /// Takes `cost` unconditionally (the level may go negative; the window logs it).
    /// Used once every bucket of a request agreed it can pay.
    pub fn take(&mut self, cost: f64, now: Duration) {
        self.refill(now);
        let granted = now.max(self.updated_at);
        // Takes whose answer never came (the call failed before the provider answered,
        // or nobody observed it) bind nothing.
        while self
            .unanswered
            .front()
            .is_some_and(|oldest| granted.saturating_sub(oldest.granted) > ANSWER_WITHIN)
        {
            self.unanswered.pop_front();
        }
        if self.unanswered.len() >= MAX_UNANSWERED {
            self.unanswered.pop_front();
        }
        self.unanswered.push_back(Unanswered {
            granted,
            before: self.tokens,
            taken_before: self.taken_total,
        });
        self.taken_total += cost;
        self.tokens -= cost;
        self.log_take(cost, now);
    }

    /// A provider answered a call this bucket granted (its 2xx, or its 429 before
    /// [`Bucket::correct`]): the level is brought down to what the provider's bucket
    /// holds at least, which the refill since the grant may have overtaken.
    ///
    /// Why: a call takes its token from the provider's bucket when it *arrives* there,
    /// somewhere between its grant and its answer, not at the grant. Below the cap that
    /// does not matter (the bucket refills either way), but a bucket at its cap does not
    /// refill: after a take from a full bucket the provider's refill starts only at the
    /// arrival, while this model started it at the grant, and so ran ahead of the
    /// provider by the refill of that gap. At the start of a run that gap is the whole
    /// first round trip (connections set up while every account starts at once on a
    /// loaded machine: hundreds of milliseconds), which a rate margin of 2% (20 ms at one
    /// call a second) does not cover: the first call past the burst met a 429.
    ///
    /// The bound: with `granted` the oldest unanswered take, `before` the level before it
    /// and `taken` the tokens taken since (it included), the provider's level
    /// now is at least `min(before + rate * (now - granted), burst) - taken`, wherever in
    /// between each of those calls arrived (a level refilled from `before`, or from the
    /// cap, less at most every take since). The model's level is lowered to it, never
    /// raised. While the bucket is drained the bound is the model's own level and nothing
    /// changes; after a take from a full bucket it costs the refill of one round trip.
    ///
    /// Answers are matched to takes in order (each answer ends the oldest unanswered
    /// take): exact when calls of a bucket go one at a time (the report lanes); with
    /// several in flight and answered out of order a bound may come out too high, and
    /// then it lowers nothing (never more than the model's own level). A take whose
    /// answer never came is given up after [`ANSWER_WITHIN`].
    pub fn answered(&mut self, now: Duration) {
        let Some(oldest) = self.unanswered.pop_front() else {
            return;
        };
        self.refill(now);
        let flight = now.saturating_sub(oldest.granted);
        if flight > ANSWER_WITHIN {
            return;
        }
        let taken = self.taken_total - oldest.taken_before;
        let bound = (oldest.before + self.rate * flight.as_secs_f64()).min(self.burst) - taken;
        if bound.is_finite() && bound < self.tokens {
            self.tokens = bound;
        }
    }

    /// A manual take: succeeds while `level >= cost` (the reserve may be used);
    /// otherwise returns the wait and changes nothing.
    pub fn try_take(&mut self, cost: f64, now: Duration) -> Result<(), Duration> {
        self.try_take_as(cost, false, now)
    }

    /// A non-manual take: succeeds while `level - cost >= reserve`; otherwise returns the
    /// wait and changes nothing.
    pub fn try_take_reserved(&mut self, cost: f64, now: Duration) -> Result<(), Duration> {
        self.try_take_as(cost, true, now)
    }

    /// [`Bucket::try_take`] (`reserved = false`) or [`Bucket::try_take_reserved`].
    pub fn try_take_as(
        &mut self,
        cost: f64,
        reserved: bool,
        now: Duration,
    ) -> Result<(), Duration> {
        match self.wait(cost, reserved, now) {
            Duration::ZERO => {
                self.take(cost, now);
                Ok(())
            }
            wait => Err(wait),
        }
    }

    /// Sets the refill rate from now on (tokens added so far were at the old rate).
    /// Returns false (and changes nothing) for a rate that is not finite and `> 0`.
    pub fn set_rate(&mut self, rate: f64, now: Duration) -> bool {
        if !(rate.is_finite() && rate > 0.0) {
            return false;
        }
        self.refill(now);
        self.rate = rate.max(MIN_SETTING);
        true
    }

    /// Sets the capacity (the level is not changed; refills stop at the new burst).
    pub fn set_burst(&mut self, burst: f64, now: Duration) -> bool {
        if !(burst.is_finite() && burst > 0.0) {
            return false;
        }
        self.refill(now);
        self.burst = burst.max(MIN_SETTING);
        true
    }

    /// Adopts the balance a Keepa response reported: `tokens_left` (may be negative),
    /// `refill_in_ms` until the next refill, `refill_rate_per_min` tokens per minute.
    /// The rate becomes `refill_rate_per_min / 60` per second and the burst
    /// `60 * refill_rate_per_min` (Keepa plans hold one hour of refill); the bucket does
    /// not refill before `now + refill_in`. So a take of `cost` waits
    /// `refillIn + (|balance| + cost) / rate`, computed once by [`Bucket::wait`].
    /// A non-positive or non-finite rate keeps the current rate and burst.
    pub fn resync_keepa(
        &mut self,
        tokens_left: i64,
        refill_in_ms: u64,
        refill_rate_per_min: f64,
        now: Duration,
    ) {
        if refill_rate_per_min.is_finite() && refill_rate_per_min > 0.0 {
            let refill_rate_per_min = refill_rate_per_min.min(super::KEEPA_MAX_REFILL_RATE);
            self.rate = (refill_rate_per_min / 60.0).max(MIN_SETTING);
            self.burst = (refill_rate_per_min * 60.0).max(MIN_SETTING);
        }
        let bounded = super::KeepaValues::bounded(tokens_left, refill_in_ms, 1.0);
        self.tokens = bounded.tokens_left as f64;
        self.updated_at = now.saturating_add(Duration::from_millis(bounded.refill_in_ms));
    }

    /// A provider said 429: whatever we thought, its bucket is empty now.
    pub fn drain(&mut self, now: Duration) {
        self.refill(now);
        self.tokens = self.tokens.min(0.0);
    }

    /// A provider said 429 to a call this bucket granted (issue 12): the model was
    /// wrong, so it is corrected instead of obeyed for half an hour. The level goes to
    /// zero (never up), and the burst goes down to what the provider really accepted
    /// since the bucket was last full ([`accepted_burst`]), never below 1 and never up
    /// (a burst already below 1 stays). When `hold` (the provider's `Retry-After`) is longer than
    /// one token interval, the refill starts late enough that the next token comes at
    /// `now + hold`; otherwise the next token comes one interval after `now`.
    /// Returns the burst before and after.
    pub fn correct(&mut self, cost: f64, hold: Duration, now: Duration) -> (f64, f64) {
        self.refill(now);
        let before = self.burst;
        let cost = if cost.is_finite() { cost.max(0.0) } else { 1.0 };
        let accepted = accepted_burst(self.burst, self.tokens, cost);
        if accepted < self.burst {
            self.burst = accepted;
        }
        self.tokens = self.tokens.min(0.0);
        let interval = secs_up(1.0 / self.rate);
        if hold > interval {
            self.updated_at = self.updated_at.max(now.saturating_add(hold - interval));
        }
        (before, self.burst)
    }

    fn refill(&mut self, now: Duration) {
        if now <= self.updated_at {
            return;
        }
        self.tokens = self.level(now);
        self.updated_at = now;
    }
}

/// The burst a 429 shows, as of the call it refused: the calls the provider served
/// since the bucket was last full (`burst - level - cost`: the refused call's `cost` was
/// taken but not served), less the tokens refilled meanwhile, of which only whole ones
/// served a call. A provider whose bucket of burst B served `n` calls in a time that
/// refilled `r` tokens and refused the next holds at most `ceil(n - r)`: that is the
/// answer, so a bucket that served 10 calls in a second of a 1/min refill learns 10,
/// not 9. Never below 1; a value that is not finite gives 1.
pub fn accepted_burst(burst: f64, level: f64, cost: f64) -> f64 {
    // A whole number a rounding error above itself is not rounded up.
    let accepted = (burst - level - cost - 1e-9).ceil();
    if accepted.is_finite() {
        accepted.max(1.0)
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn starts_full_and_refills_at_rate() {
        let mut bucket = Bucket::new(2.0, 4.0, secs(0));
        for _ in 0..4 {
            assert_eq!(bucket.try_take(1.0, secs(0)), Ok(()));
        }
        assert_eq!(
            bucket.try_take(1.0, secs(0)),
            Err(Duration::from_millis(500))
        );
        assert_eq!(bucket.try_take(1.0, Duration::from_millis(500)), Ok(()));
        assert_eq!(bucket.level(secs(100)), 4.0);
    }

    #[test]
    fn keepa_negative_balance_waits_once_in_closed_form() {
        let mut bucket = Bucket::new(1.0, 1200.0, secs(0));
        bucket.resync_keepa(-30, 5000, 20.0, secs(0));
        // |balance| / (20/60) + 5 s = 95 s for a zero cost; 98 s for one token.
        assert_eq!(bucket.wait(0.0, false, secs(0)), secs(95));
        assert_eq!(bucket.wait(1.0, false, secs(0)), secs(98));
        assert_eq!(bucket.wait(1.0, false, secs(50)), secs(48));
        assert_eq!(bucket.try_take(1.0, secs(98)), Ok(()));
        assert_eq!(bucket.burst(), 1200.0);
    }

    #[test]
    fn reserve_is_left_to_manual_work() {
        let mut bucket = Bucket::new(1.0, 10.0, secs(0));
        // Background may take down to the reserve (2 tokens).
        for _ in 0..8 {
            assert_eq!(bucket.try_take_reserved(1.0, secs(0)), Ok(()));
        }
        assert_eq!(bucket.try_take_reserved(1.0, secs(0)), Err(secs(1)));
        assert_eq!(bucket.try_take(2.0, secs(0)), Ok(()));
        // A background cost above burst - reserve needs a full bucket, not the impossible.
        assert_eq!(bucket.wait(9.0, true, secs(0)), secs(10));
        assert_eq!(bucket.wait(11.0, false, secs(0)), Duration::MAX);
    }

    #[test]
    fn correction_lowers_the_burst_to_what_the_provider_accepted_never_below_one() {
        // Ours says 15, the provider's holds 10: the 11th call is throttled.
        let mut bucket = Bucket::new(1.0, 15.0, secs(0));
        for _ in 0..11 {
            bucket.take(1.0, secs(0));
        }
        assert_eq!(bucket.correct(1.0, Duration::ZERO, secs(0)), (15.0, 10.0));
        assert_eq!(bucket.level(secs(0)), 0.0);
        // The retry waits one token interval.
        assert_eq!(bucket.wait(1.0, false, secs(0)), secs(1));
        // A 429 on the first call: the burst is 1, never 0.
        let mut bucket = Bucket::new(1.0, 15.0, secs(0));
        bucket.take(1.0, secs(0));
        assert_eq!(bucket.correct(1.0, Duration::ZERO, secs(0)), (15.0, 1.0));
        // Served 10 while a fraction of a token refilled (a 1/min bucket, 1.5 s):
        // the provider's burst is 10, not 9.
        let mut bucket = Bucket::new(1.0 / 60.0, 15.0, secs(0));
        for call in 0..11 {
            bucket.take(1.0, Duration::from_millis(150 * call));
        }
        let now = Duration::from_millis(1500);
        assert_eq!(bucket.correct(1.0, Duration::ZERO, now), (15.0, 10.0));
        // Served 10 while more than a whole token refilled (a 1/s bucket, 1.5 s): 9
        // calls of the burst and one of the refill.
        let mut bucket = Bucket::new(1.0, 15.0, secs(0));
        for call in 0..11 {
            bucket.take(1.0, Duration::from_millis(150 * call));
        }
        assert_eq!(bucket.correct(1.0, Duration::ZERO, now), (15.0, 9.0));
        // Never up.
        let mut bucket = Bucket::new(1.0, 15.0, secs(0));
        bucket.resync_keepa(-1000, 0, 60.0, secs(0));
        let burst = bucket.burst();
        assert_eq!(bucket.correct(1.0, Duration::ZERO, secs(0)).1, burst);
    }

    #[test]
    fn correction_honours_a_retry_after_longer_than_one_interval() {
        let mut bucket = Bucket::new(1.0, 5.0, secs(0));
        bucket.take(5.0, secs(0));
        bucket.correct(1.0, secs(30), secs(0));
        assert_eq!(bucket.wait(1.0, false, secs(0)), secs(30));
        assert_eq!(bucket.try_take(1.0, secs(30)), Ok(()));
    }

    #[test]
    fn a_window_cap_grants_the_whole_limit_in_any_window_and_not_one_more() {
        // 5 an hour at the full rate (720 s a token), burst 1.25, capped at 5 in any hour.
        let spec = crate::quota::BucketSpec::hourly_budget(5.0, 1.25);
        let mut bucket = Bucket::new(spec.rate, spec.burst, secs(0)).with_window(spec.window);
        let mut grants = Vec::new();
        let mut now = secs(0);
        // A drainer always waiting: each take as soon as the bucket lets it.
        while now < secs(5 * 3600) {
            match bucket.try_take(1.0, now) {
                Ok(()) => grants.push(now),
                Err(wait) => now += wait,
            }
        }
        // Every window of an hour (the clock hours and every other) holds at most 5.
        for &from in &grants {
            let within = grants
                .iter()
                .filter(|&&at| at >= from && at < from + secs(3600))
                .count();
            assert!(within <= 5, "{within} grants in the hour from {from:?}");
        }
        // The whole budget is reached: 5 in every clock hour (the bucket alone, at
        // (5 − 1.25)/h so that it keeps every hour within 5, gives 4 in some).
        for hour in 0..5u64 {
            let within = grants
                .iter()
                .filter(|&&at| at >= secs(hour * 3600) && at < secs((hour + 1) * 3600))
                .count();
            assert_eq!(within, 5, "hour {hour}: {grants:?}");
        }
        // The 6th take of the first hour waits for the first to leave the window (its
        // hour and the guard of 1 s).
        let mut bucket = Bucket::new(1.0, 10.0, secs(0)).with_window(spec.window);
        for _ in 0..5 {
            assert_eq!(bucket.try_take(1.0, secs(0)), Ok(()));
        }
        assert_eq!(bucket.wait(1.0, false, secs(10)), secs(3591));
        assert_eq!(bucket.window_used(secs(10)), 5.0);
        assert_eq!(bucket.try_take(1.0, secs(3601)), Ok(()));
        // A cost above the limit never fits.
        assert_eq!(bucket.wait(6.0, false, secs(9000)), Duration::MAX);
    }

    #[test]
    fn without_a_log_a_window_becomes_the_bucket_that_keeps_it() {
        let spec = crate::quota::BucketSpec::hourly_budget(100.0, 1.25);
        let plain = spec.without_window();
        assert_eq!(plain.window, None);
        assert!((plain.rate * 3600.0 - 98.75).abs() < 1e-9, "{plain:?}");
        assert_eq!(plain.burst, 1.25);
        let bucket = crate::quota::BucketSpec::new(0.5, 2.0);
        assert_eq!(bucket.without_window(), bucket);
    }

    /// A client pacing with this bucket against a provider's bucket of the same rate and
    /// burst that takes each call when it arrives (as SP-API's and the simulator's do):
    /// the first call of each burst reaches the provider `first_leg` after its grant (a
    /// connection set up on a loaded machine), the others 1 to 7 ms after theirs. Calls
    /// go one at a time (one lane); 40 calls, then an idle minute (both buckets full
    /// again), then 40 more. Returns the provider's refusals.
    fn refusals_against_a_provider_reached_late(first_leg: Duration, answer: bool) -> usize {
        let (rate, burst) = (1.002, 15.0);
        let mut ours = Bucket::new(rate, burst, secs(0));
        let mut theirs = Bucket::new(rate, burst, secs(0));
        let mut now = secs(0);
        let mut refused = 0;
        for call in 0..80u64 {
            if call == 40 {
                now += secs(60);
            }
            if let Err(wait) = ours.try_take(1.0, now) {
                now += wait;
                assert_eq!(ours.try_take(1.0, now), Ok(()));
            }
            let out = if call % 40 == 0 {
                first_leg
            } else {
                Duration::from_millis(1 + call * 37 % 7)
            };
            let arrival = now + out;
            if theirs.try_take(1.0, arrival).is_err() {
                refused += 1;
            }
            now = arrival + Duration::from_millis(2);
            if answer {
                ours.answered(now);
            }
        }
        refused
    }

    #[test]
    fn answers_keep_the_model_behind_a_provider_the_first_call_reached_late() {
        // Without the answers the model starts refilling at the first grant, 400 ms
        // before the provider does, and the first call past the burst is refused (each
        // burst: 2).
        assert_eq!(
            refusals_against_a_provider_reached_late(Duration::from_millis(400), false),
            2
        );
        for first_leg in [0, 3, 30, 400, 2500] {
            assert_eq!(
                refusals_against_a_provider_reached_late(Duration::from_millis(first_leg), true),
                0,
                "first call {first_leg} ms on its way"
            );
        }
        // What it costs: one round trip of refill per take from a full bucket, nothing
        // from a drained one.
        let mut bucket = Bucket::new(1.0, 15.0, secs(0));
        bucket.take(1.0, secs(0));
        bucket.answered(Duration::from_millis(400));
        assert!((bucket.level(Duration::from_millis(400)) - 14.0).abs() < 1e-9);
        for _ in 0..14 {
            bucket.take(1.0, Duration::from_millis(400));
        }
        bucket.answered(Duration::from_millis(900));
        assert!((bucket.level(Duration::from_millis(900)) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn set_rate_keeps_what_was_refilled() {
        let mut bucket = Bucket::new(1.0, 10.0, secs(0));
        bucket.take(10.0, secs(0));
        assert!(bucket.set_rate(2.0, secs(2)));
        assert!((bucket.level(secs(3)) - 4.0).abs() < 1e-9);
        assert!(!bucket.set_rate(f64::NAN, secs(3)));
        assert!(!bucket.set_rate(0.0, secs(3)));
    }
}
