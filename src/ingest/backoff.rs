//! Exponential backoff with jitter for failed events.

use rand::Rng;

use crate::config::RetrySettings;

/// Delay before attempt `attempts + 1`: base * 2^(attempts-1), capped, then drawn uniformly from
/// its upper half so that a burst of failures does not come back as a burst.
pub fn retry_delay(settings: &RetrySettings, attempts: i32) -> chrono::Duration {
    let exp = attempts.saturating_sub(1).clamp(0, 30) as u32;
    let full = settings
        .base_delay
        .saturating_mul(2u32.saturating_pow(exp))
        .min(settings.max_delay);
    let jittered = full.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
    chrono::Duration::from_std(jittered).unwrap_or(chrono::Duration::hours(6))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings() -> RetrySettings {
        RetrySettings {
            max_attempts: 10,
            base_delay: Duration::from_secs(30),
            max_delay: Duration::from_secs(3600),
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(60),
        }
    }

    #[test]
    fn delays_grow_exponentially_within_jitter_and_are_capped() {
        let s = settings();
        for (attempts, full) in [(1, 30), (2, 60), (3, 120), (5, 480), (9, 3600), (30, 3600)] {
            for _ in 0..50 {
                let d = retry_delay(&s, attempts).num_milliseconds();
                assert!(
                    d >= full * 500 && d <= full * 1000,
                    "attempt {attempts}: {d}ms"
                );
            }
        }
    }
}
