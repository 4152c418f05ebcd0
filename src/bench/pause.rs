//! `--pause`: stops the server for a while in the middle of an `e2e` run
//! (SIGSTOP, then SIGCONT) and measures how the latency recovers: the p99
//! of the messages sent in the second after SIGCONT, and how long after
//! SIGCONT a sliding window of sends is back under the p99 budget.

use std::process::Command;
use std::time::Duration;

/// The sliding window of send times whose p99 decides recovery.
pub const WINDOW: Duration = Duration::from_millis(100);
/// How far the window slides each step.
pub const STEP: Duration = Duration::from_millis(10);
/// A window with a p99 under this has recovered.
pub const RECOVERED_P99: Duration = Duration::from_millis(10);
/// The span after SIGCONT whose p99 is reported.
pub const AFTER: Duration = Duration::from_secs(1);

/// Sends SIGSTOP to `pids`, waits `length`, sends SIGCONT; returns when the
/// server runs again, in microseconds since the Unix epoch (the clock the
/// messages' send times use).
pub async fn stop_and_continue(pids: Vec<u32>, length: Duration) -> Result<u64, String> {
    tokio::task::spawn_blocking(move || {
        signal("STOP", &pids)?;
        std::thread::sleep(length);
        signal("CONT", &pids)?;
        Ok(super::scenarios::now_micros())
    })
    .await
    .map_err(|e| format!("the pause task failed: {e}"))?
}

/// `kill -NAME PID...`: the library forbids unsafe code, so no libc::kill.
fn signal(name: &str, pids: &[u32]) -> Result<(), String> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .args(pids.iter().map(u32::to_string))
        .status()
        .map_err(|e| format!("cannot run kill -{name}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -{name} {pids:?} failed: {status}"))
    }
}

/// How the latency came back after the pause.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovery {
    /// p99 of the messages sent in [`AFTER`] after SIGCONT; None when none
    /// of them arrived.
    pub after_p99: Option<Duration>,
    /// Messages sent in that second that arrived.
    pub after_count: usize,
    /// From SIGCONT to the start of the first [`WINDOW`] of sends (sliding
    /// by [`STEP`]) whose p99 is under [`RECOVERED_P99`]; None when no
    /// window before the last send is.
    pub recovered_in: Option<Duration>,
}

/// Computes [`Recovery`] from `arrivals`, each a message's send time and
/// its latency in microseconds (in any order; sorted here), with SIGCONT at
/// `resumed` (µs, same clock). Messages that never arrived are not in
/// `arrivals`; the run reports them as lost.
pub fn recovery(arrivals: &mut [(u64, u64)], resumed: u64) -> Recovery {
    arrivals.sort_unstable();
    let micros = |d: Duration| d.as_micros() as u64;
    let latencies = |from: u64, to: u64| -> Vec<u64> {
        let start = arrivals.partition_point(|&(sent, _)| sent < from);
        let end = arrivals.partition_point(|&(sent, _)| sent < to);
        arrivals[start..end].iter().map(|&(_, latency)| latency).collect()
    };
    let after = latencies(resumed, resumed + micros(AFTER));
    let after_p99 = p99(after.clone()).map(Duration::from_micros);
    let last_sent = arrivals.last().map_or(0, |&(sent, _)| sent);
    let mut recovered_in = None;
    let mut from = resumed;
    while from + micros(WINDOW) <= last_sent + 1 {
        if let Some(p99) = p99(latencies(from, from + micros(WINDOW)))
            && p99 < micros(RECOVERED_P99)
        {
            recovered_in = Some(Duration::from_micros(from - resumed));
            break;
        }
        from += micros(STEP);
    }
    Recovery {
        after_p99,
        after_count: after.len(),
        recovered_in,
    }
}

/// The nearest-rank 99th percentile.
fn p99(mut values: Vec<u64>) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = (values.len() * 99).div_ceil(100);
    Some(values[rank.max(1) - 1])
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Recovery, recovery};

    const MS: u64 = 1000;
    /// SIGCONT, in µs since the epoch.
    const RESUMED: u64 = 1_700_000_000_000_000;

    /// One message sent every millisecond from `from_ms` to `to_ms` after
    /// SIGCONT, its latency given by `latency_ms`.
    fn sends(from_ms: i64, to_ms: i64, latency_ms: impl Fn(i64) -> u64) -> Vec<(u64, u64)> {
        (from_ms..to_ms)
            .map(|k| ((RESUMED as i64 + k * MS as i64) as u64, latency_ms(k) * MS))
            .collect()
    }

    #[test]
    fn a_server_that_catches_up_at_once_recovers_in_zero() {
        let mut arrivals = sends(-500, 2000, |_| 1);
        let r = recovery(&mut arrivals, RESUMED);
        assert_eq!(
            r,
            Recovery {
                after_p99: Some(Duration::from_millis(1)),
                after_count: 1000,
                recovered_in: Some(Duration::ZERO),
            }
        );
    }

    #[test]
    fn recovery_is_the_first_window_whose_p99_is_under_10_ms() {
        // Latency falls by 1 ms per millisecond from 300 ms at SIGCONT. A
        // window of 100 sends has as its p99 its second largest latency:
        // the window starting at 280 ms holds 20..1 ms (p99 19 ms), the one
        // at 290 ms 10..1 ms (p99 9 ms).
        let mut arrivals = sends(0, 2000, |k| (300 - k).max(1) as u64);
        let r = recovery(&mut arrivals, RESUMED);
        assert_eq!(r.recovered_in, Some(Duration::from_millis(290)));
        // The second after SIGCONT: 1000 sends, the 990th smallest is the
        // 11th largest, 290 ms.
        assert_eq!(r.after_p99, Some(Duration::from_millis(290)));
        assert_eq!(r.after_count, 1000);
    }

    #[test]
    fn sends_before_sigcont_do_not_count() {
        // Slow while stopped, fast from SIGCONT on.
        let mut arrivals = sends(-200, 0, |_| 500);
        arrivals.extend(sends(0, 1000, |_| 2));
        let r = recovery(&mut arrivals, RESUMED);
        assert_eq!(r.recovered_in, Some(Duration::ZERO));
        assert_eq!(r.after_p99, Some(Duration::from_millis(2)));
    }

    #[test]
    fn a_run_that_stays_slow_has_not_recovered() {
        let mut arrivals = sends(0, 3000, |_| 40);
        let r = recovery(&mut arrivals, RESUMED);
        assert_eq!(r.recovered_in, None);
        assert_eq!(r.after_p99, Some(Duration::from_millis(40)));
        // Nothing arrived after the pause at all.
        let mut nothing = sends(-300, 0, |_| 1);
        let r = recovery(&mut nothing, RESUMED);
        assert_eq!((r.after_p99, r.after_count, r.recovered_in), (None, 0, None));
    }
}
