//! Whether and when an Auth call tries again: only after a transient failure (timeout, connection
//! error, `429`, `5xx`), after an exponential backoff.

use std::future::Future;
use std::time::Duration;

use reqwest::StatusCode;

use super::error::Failure;

/// Delay before the second attempt of a call; doubled for every further one, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Wait after failed attempt `attempt` (1-based): 100 ms, 200 ms, 400 ms, … up to 2 s.
fn backoff(attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
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

/// Makes attempts, numbered from 1, until one succeeds, one fails for good, or `attempts` were
/// made, sleeping [`backoff`] in between. A failure comes with the number of attempts made.
pub(super) async fn run<T, Fut>(attempts: u32, mut attempt: impl FnMut(u32) -> Fut) -> Result<T, (Failure, u32)>
where
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut made = 0;
    loop {
        made += 1;
        let failure = match attempt(made).await {
            Ok(value) => return Ok(value),
            Err(failure) => failure,
        };
        if !is_transient(&failure) || made >= attempts {
            return Err((failure, made));
        }
        let delay = backoff(made);
        tracing::debug!(attempt = made, ?delay, error = %failure, "NeuralLog Auth call failed; retrying");
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_exponentially_up_to_two_seconds() {
        let delays: Vec<u128> = (1..=7).map(|a| backoff(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
