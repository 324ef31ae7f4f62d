//! How a [`Reconnect`](super::Reconnect) waits: [`ReconnectOptions`].

use std::time::Duration;

/// How a [`Reconnect`](super::Reconnect) waits between attempts and how long it waits on the
/// server. `Default` gives the values noted.
///
/// The wait before attempt *n* of a series (the attempts since the last
/// connection) is `initial_delay × 2ⁿ⁻¹`, at most `max_delay`; with
/// `jitter` each wait is drawn at random from its upper half, `[d/2, d]`, so
/// clients that lost the same server at the same moment come back spread
/// out, and the waits still grow from one attempt to the next. The very
/// first connect ([`Reconnect::new`](super::Reconnect::new)) does not wait.
///
/// ```
/// use std::time::Duration;
/// use tofu::ReconnectOptions;
/// let opts = ReconnectOptions {
///     initial_delay: Duration::from_millis(50),
///     max_attempts: Some(10),
///     ..ReconnectOptions::default()
/// };
/// assert_eq!(opts.max_delay, Duration::from_secs(10));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconnectOptions {
    /// The wait before the first attempt after a lost connection (default
    /// 100 ms, as libzmq's `ZMQ_RECONNECT_IVL`; zero is raised to 1 ms).
    pub initial_delay: Duration,
    /// The longest wait between attempts (default 10 s; never below
    /// `initial_delay`).
    pub max_delay: Duration,
    /// Failed attempts in a row after which the helper gives up (default
    /// `None`: never; `Some(0)` counts as `Some(1)`).
    pub max_attempts: Option<u32>,
    /// Draw each wait from `[d/2, d]` instead of waiting exactly `d`
    /// (default `true`).
    pub jitter: bool,
    /// How long the server may take to answer a HelloRequest (or, at
    /// [`stop`](super::Reconnect::stop), a ByeRequest) before the helper aborts the
    /// channel (default 10 s; `None` waits forever). This also bounds a TCP
    /// connect to a host that does not answer at all, which the kernel
    /// would otherwise retry for minutes.
    pub handshake_timeout: Option<Duration>,
}

impl Default for ReconnectOptions {
    fn default() -> ReconnectOptions {
        ReconnectOptions {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            max_attempts: None,
            jitter: true,
            handshake_timeout: Some(Duration::from_secs(10)),
        }
    }
}

impl ReconnectOptions {
    /// The wait before attempt `attempt` (1 for the first of a series),
    /// before jitter: `initial_delay × 2^(attempt-1)`, at most `max_delay`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let o = tofu::ReconnectOptions::default();
    /// assert_eq!(o.nominal_delay(1), Duration::from_millis(100));
    /// assert_eq!(o.nominal_delay(3), Duration::from_millis(400));
    /// assert_eq!(o.nominal_delay(60), Duration::from_secs(10));
    /// ```
    pub fn nominal_delay(&self, attempt: u32) -> Duration {
        let initial = self.initial_delay.max(Duration::from_millis(1));
        let max = self.max_delay.max(initial);
        let doublings = attempt.saturating_sub(1).min(31);
        initial.saturating_mul(1 << doublings).min(max)
    }

    /// The wait before `attempt` with jitter applied for a random `unit` in
    /// `[0, 1)`: `d × (1 + unit) / 2`, or `d` without jitter.
    pub(super) fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let d = self.nominal_delay(attempt);
        if self.jitter {
            d.mul_f64((1.0 + unit.clamp(0.0, 1.0)) / 2.0)
        } else {
            d
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_backoff_doubles_up_to_the_maximum() {
        let o = ReconnectOptions {
            initial_delay: 100 * MS,
            max_delay: 1000 * MS,
            ..ReconnectOptions::default()
        };
        let waits: Vec<u128> = (1..=6).map(|n| o.nominal_delay(n).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(o.nominal_delay(u32::MAX), 1000 * MS, "no overflow");
        let zero = ReconnectOptions {
            initial_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            ..o
        };
        assert_eq!(zero.nominal_delay(1), MS, "never a busy loop");
    }

    #[test]
    fn jitter_stays_in_the_upper_half_so_waits_still_grow() {
        let o = ReconnectOptions::default();
        for n in 1..8 {
            let d = o.nominal_delay(n);
            assert_eq!(o.delay(n, 0.0), d / 2);
            assert!(o.delay(n, 0.999_999) <= d);
            // While the waits double, the shortest wait of the next attempt
            // is at least the longest of this one.
            if o.nominal_delay(n + 1) == 2 * d {
                assert!(o.delay(n + 1, 0.0) >= o.delay(n, 0.999_999));
            }
        }
        let exact = ReconnectOptions { jitter: false, ..o };
        assert_eq!(exact.delay(2, 0.3), 200 * MS);
    }
}
