//! Whether and when an Auth call tries again: only after a transient failure (timeout, connection
//! error, `429`, `5xx`), after a jittered exponential backoff or, when a `429` or `503` says so in
//! `Retry-After`, after the wait the service asked for.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _, Sleeper};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::error::Failure;

/// Base delay before the second attempt of a call; doubled for every further one, up to
/// [`MAX_BACKOFF`]. The jitter adds up to as much again.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Longest `Retry-After` honoured. A waiting call holds a reconcile worker, so a service that
/// asks for more is tried again after this, and after the last attempt the tenant's requeue
/// backoff takes over.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// The delays between `attempts` attempts: 100 ms, 200 ms, 400 ms, … up to 2 s, each plus a
/// random part of up to the same again (backon's jitter), so that calls which failed together,
/// say when Auth restarted, do not all come back at once.
fn backoff(attempts: u32) -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(FIRST_BACKOFF)
        .with_max_delay(MAX_BACKOFF)
        .with_factor(2.0)
        .with_jitter()
        .with_max_times(usize::try_from(attempts.saturating_sub(1)).unwrap_or(usize::MAX))
}

/// Whether another attempt could succeed where this one failed.
fn is_transient(failure: &Failure) -> bool {
    match failure {
        Failure::Timeout => true,
        Failure::Transport { transient, .. } => *transient,
        Failure::Status { status, .. } => status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS,
        Failure::Token { .. } => false,
    }
}

/// The wait before the next attempt: the one the failed attempt's answer asked for, else the
/// backoff's. No backoff (no attempt left) stays no attempt.
fn next_delay(failure: &Failure, backoff: Option<Duration>) -> Option<Duration> {
    let asked = match failure {
        Failure::Status { retry_after, .. } => *retry_after,
        _ => None,
    };
    backoff.map(|delay| asked.unwrap_or(delay))
}

/// The wait a `429` or `503` asks for in `Retry-After` (RFC 9110: delta-seconds, or an HTTP-date
/// compared with `now`; a past date asks for none), at most [`MAX_RETRY_AFTER`]. Other statuses
/// do not define it for a retry of the same request, so it is ignored there.
pub(super) fn retry_after(status: StatusCode, headers: &HeaderMap, now: jiff::Timestamp) -> Option<Duration> {
    if !matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
        return None;
    }
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for a u64 is a very long wait, capped below like any other.
        value.parse().map_or(MAX_RETRY_AFTER, Duration::from_secs)
    } else {
        // The IMF-fixdate form of an HTTP-date is RFC 2822 with the zone "GMT".
        let at = jiff::fmt::rfc2822::DateTimeParser::new().parse_timestamp(value).ok()?;
        Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Makes attempts, numbered from 1, until one succeeds, one fails for good, or `attempts` were
/// made, sleeping with `sleeper` in between (tests pass one that records the waits). A failure
/// comes with the number of attempts made.
pub(super) async fn run<T, Fut>(
    attempts: u32,
    sleeper: impl Sleeper,
    mut attempt: impl FnMut(u32) -> Fut,
) -> Result<T, (Failure, u32)>
where
    Fut: Future<Output = Result<T, Failure>>,
{
    // Atomic only because the call's future must be Send; nothing runs concurrently here.
    let made = AtomicU32::new(0);
    let result = (|| attempt(made.fetch_add(1, Ordering::Relaxed) + 1))
        .retry(backoff(attempts))
        .sleep(sleeper)
        .when(is_transient)
        .adjust(next_delay)
        .notify(|failure, delay| {
            let attempt = made.load(Ordering::Relaxed);
            tracing::debug!(attempt, ?delay, error = %failure, "NeuralLog Auth call failed; retrying");
        })
        .await;
    result.map_err(|failure| (failure, made.load(Ordering::Relaxed)))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use backon::BackoffBuilder as _;
    use reqwest::header::HeaderValue;

    use super::*;

    fn status(code: StatusCode, retry_after: Option<Duration>) -> Failure {
        Failure::Status { status: code, body: String::new(), retry_after }
    }

    /// Runs `failures` in order (then success) with up to `attempts` attempts; returns the
    /// outcome and the waits asked for between them, without waiting.
    async fn run_recorded(attempts: u32, failures: Vec<Failure>) -> (Result<u32, (Failure, u32)>, Vec<Duration>) {
        let waits = Arc::new(Mutex::new(Vec::new()));
        let recorder = {
            let waits = Arc::clone(&waits);
            move |delay: Duration| {
                waits.lock().expect("not poisoned").push(delay);
                std::future::ready(())
            }
        };
        let mut failures = failures.into_iter();
        let outcome =
            run(attempts, recorder, |attempt| std::future::ready(failures.next().map_or(Ok(attempt), Err))).await;
        let waits = waits.lock().expect("not poisoned").clone();
        (outcome, waits)
    }

    #[test]
    fn jitter_keeps_every_delay_between_the_base_and_twice_the_base() {
        let bases = [100, 200, 400, 800, 1600, 2000, 2000, 2000].map(Duration::from_millis);
        // The f32 arithmetic inside backon may land a few nanoseconds off.
        let slack = Duration::from_micros(1);
        let mut first = Vec::new();
        for _ in 0..500 {
            let delays: Vec<Duration> = backoff(9).build().collect();
            assert_eq!(delays.len(), bases.len(), "one delay between each two of 9 attempts");
            for (delay, base) in delays.iter().zip(bases) {
                assert!(*delay + slack >= base && *delay < base * 2 + slack, "{delay:?} for base {base:?}");
            }
            first.push(delays[0]);
        }
        first.dedup();
        assert!(first.len() > 1, "the delays vary");
        assert_eq!(backoff(1).build().count(), 0, "a single attempt never waits");
        assert_eq!(backoff(0).build().count(), 0);
    }

    #[tokio::test]
    async fn retries_transient_failures_within_the_attempts() {
        let (outcome, waits) = run_recorded(3, vec![Failure::Timeout, status(StatusCode::BAD_GATEWAY, None)]).await;
        assert_eq!(outcome.ok(), Some(3), "the third attempt succeeds");
        let slack = Duration::from_micros(1);
        let within = |wait: Duration, base: Duration| wait + slack >= base && wait < base * 2 + slack;
        assert!(
            waits.len() == 2 && within(waits[0], FIRST_BACKOFF) && within(waits[1], FIRST_BACKOFF * 2),
            "{waits:?}"
        );

        let failures = (0..5).map(|_| status(StatusCode::TOO_MANY_REQUESTS, None)).collect();
        let (outcome, waits) = run_recorded(3, failures).await;
        assert!(matches!(outcome, Err((Failure::Status { .. }, 3))), "gives up after 3 attempts");
        assert_eq!(waits.len(), 2);
    }

    #[tokio::test]
    async fn does_not_retry_a_permanent_failure() {
        for failure in [
            status(StatusCode::BAD_REQUEST, None),
            status(StatusCode::UNAUTHORIZED, None),
            Failure::Transport { message: "bad request".into(), transient: false },
        ] {
            let (outcome, waits) = run_recorded(3, vec![failure]).await;
            assert!(matches!(outcome, Err((_, 1))), "one attempt only");
            assert!(waits.is_empty());
        }
    }

    #[tokio::test]
    async fn waits_as_long_as_retry_after_asks() {
        let asked = Some(Duration::from_secs(1));
        let failures =
            vec![status(StatusCode::SERVICE_UNAVAILABLE, asked), status(StatusCode::TOO_MANY_REQUESTS, asked)];
        let (outcome, waits) = run_recorded(3, failures).await;
        assert_eq!(outcome.ok(), Some(3));
        assert_eq!(waits, [Duration::from_secs(1); 2], "Retry-After instead of the backoff");

        let failures = (0..3).map(|_| status(StatusCode::SERVICE_UNAVAILABLE, asked)).collect();
        let (outcome, waits) = run_recorded(2, failures).await;
        assert!(matches!(outcome, Err((_, 2))), "Retry-After adds no attempt");
        assert_eq!(waits, [Duration::from_secs(1)]);
    }

    #[test]
    fn reads_retry_after_of_429_and_503() {
        let now: jiff::Timestamp = "2026-01-01T12:00:00Z".parse().expect("a timestamp");
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, HeaderValue::from_str(value).expect("a header value"));
            headers
        };
        let read = |code, value: &str| retry_after(code, &with(value), now);
        let too_many = StatusCode::TOO_MANY_REQUESTS;

        assert_eq!(read(too_many, "1"), Some(Duration::from_secs(1)));
        assert_eq!(read(StatusCode::SERVICE_UNAVAILABLE, " 3 "), Some(Duration::from_secs(3)));
        assert_eq!(read(too_many, "0"), Some(Duration::ZERO));
        assert_eq!(read(too_many, "3600"), Some(MAX_RETRY_AFTER), "capped");
        assert_eq!(read(too_many, "99999999999999999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(read(too_many, "Thu, 01 Jan 2026 12:00:05 GMT"), Some(Duration::from_secs(5)));
        assert_eq!(read(too_many, "Thu, 01 Jan 2026 11:00:00 GMT"), Some(Duration::ZERO), "in the past");
        assert_eq!(read(too_many, "Fri, 02 Jan 2026 12:00:00 GMT"), Some(MAX_RETRY_AFTER));

        for unusable in ["", "-1", "+1", "1.5", "soon"] {
            assert_eq!(read(too_many, unusable), None, "{unusable:?}");
        }
        assert_eq!(retry_after(too_many, &HeaderMap::new(), now), None);
        for other in [StatusCode::INTERNAL_SERVER_ERROR, StatusCode::BAD_GATEWAY, StatusCode::MOVED_PERMANENTLY] {
            assert_eq!(read(other, "1"), None, "{other}");
        }
    }
}
