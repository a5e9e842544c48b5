//! Retry policy: capped exponential backoff.
//!
//! Attempt `n` (1-based) that fails with a retryable error is followed,
//! after `min(initial_backoff * multiplier^(n-1), max_backoff)`, by attempt
//! `n + 1`, until `max_attempts` attempts were made; then the message is
//! dead-lettered. The lane worker waits in place, so later messages of the
//! same lane (the same aggregate) are never handled before a retried one.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::options::{duration, ConfigError, Fields};

/// How failed attempts are retried.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lanebus::RetryPolicy;
///
/// let policy = RetryPolicy::attempts(5)
///     .with_backoff(Duration::from_millis(10), Duration::from_millis(50));
/// assert_eq!(policy.backoff(1), Duration::from_millis(10));
/// assert_eq!(policy.backoff(2), Duration::from_millis(20));
/// assert_eq!(policy.backoff(4), Duration::from_millis(50));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in all, the first included; `1` disables retries.
    pub max_attempts: u32,
    /// Wait before the second attempt.
    #[serde(with = "duration")]
    pub initial_backoff: Duration,
    /// Upper bound of any wait.
    #[serde(with = "duration")]
    pub max_backoff: Duration,
    /// Growth factor of the wait per attempt (≥ 1).
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
            multiplier: 2.0,
        }
    }
}

impl RetryPolicy {
    /// No retries: one attempt, then dead-letter.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// `max_attempts` attempts with the default backoff.
    pub fn attempts(max_attempts: u32) -> Self {
        Self {
            max_attempts,
            ..Self::default()
        }
    }

    /// Sets the initial and maximal backoff.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    /// The wait after failed attempt `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(64) as i32;
        let secs = self.initial_backoff.as_secs_f64() * self.multiplier.powi(exp);
        let max = self.max_backoff.as_secs_f64();
        if !secs.is_finite() || secs >= max {
            self.max_backoff
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// Checks the fields; `prefix` names where the policy sits in a config.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let fields = Fields::at(prefix);
        fields.range("max_attempts", self.max_attempts, 1..)?;
        fields.ensure(
            "multiplier",
            self.multiplier.is_finite() && self.multiplier >= 1.0,
            "must be a finite number of at least 1",
        )?;
        fields.ensure(
            "initial_backoff",
            self.initial_backoff <= self.max_backoff,
            "must not exceed max_backoff",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1), Duration::from_millis(10));
        assert_eq!(p.backoff(2), Duration::from_millis(20));
        assert_eq!(p.backoff(3), Duration::from_millis(40));
        assert_eq!(p.backoff(100), Duration::from_secs(1));
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn validate_names_field() {
        let p = RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        };
        let err = p.validate("subscribe.retry").unwrap_err();
        assert!(
            err.to_string().contains("subscribe.retry.max_attempts"),
            "{err}"
        );
    }
}
