//! Counters and latency histograms of the message flow, for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::domain::message::MessageType;
use crate::domain::{Denial, Result};
use crate::store::{Store, StoreCounts};

/// Upper bounds of the latency buckets, in seconds (Prometheus `le`).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A lock-free latency histogram with [`LATENCY_BUCKETS`].
#[derive(Default)]
pub struct Histogram {
    /// Non-cumulative counts; the last slot is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS`], then `+Inf`.
    pub cumulative: Vec<u64>,
    pub sum_micros: u64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }
}

impl Histogram {
    pub fn observe(&self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        let slot = LATENCY_BUCKETS
            .iter()
            .position(|le| seconds <= *le)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect();
        HistogramSnapshot {
            cumulative,
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
        }
    }
}

/// Seconds of history behind [`MetricsSnapshot::throughput`].
pub const THROUGHPUT_WINDOW_SECS: u64 = 60;
const RING: usize = THROUGHPUT_WINDOW_SECS as usize + 4;

/// Events per wall-clock second over the last minute.
struct Rate {
    seconds: [AtomicU64; RING],
    counts: [AtomicU64; RING],
}

impl Default for Rate {
    fn default() -> Self {
        Self {
            seconds: std::array::from_fn(|_| AtomicU64::new(0)),
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Rate {
    fn record(&self) {
        let now = unix_seconds();
        let slot = (now % RING as u64) as usize;
        let stamp = self.seconds[slot].load(Ordering::Acquire);
        if stamp != now
            && self.seconds[slot]
                .compare_exchange(stamp, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // First event of a new second in this slot; a concurrent event
            // of the same second may be lost, which a rate can afford.
            self.counts[slot].store(0, Ordering::Release);
        }
        self.counts[slot].fetch_add(1, Ordering::AcqRel);
    }

    /// Mean per second over the completed seconds of the window (or of
    /// `uptime`, if shorter).
    fn per_second(&self, uptime: Duration) -> f64 {
        let now = unix_seconds();
        let window = uptime.as_secs().clamp(1, THROUGHPUT_WINDOW_SECS);
        let total: u64 = (1..=window)
            .map(|ago| {
                let second = now - ago;
                let slot = (second % RING as u64) as usize;
                if self.seconds[slot].load(Ordering::Acquire) == second {
                    self.counts[slot].load(Ordering::Acquire)
                } else {
                    0
                }
            })
            .sum();
        total as f64 / window as f64
    }
}

#[derive(Default)]
pub struct Metrics {
    sent: [AtomicU64; MessageType::ALL.len()],
    delivered: AtomicU64,
    redelivered: AtomicU64,
    acked: AtomicU64,
    dead_lettered: AtomicU64,
    /// Send-to-ack latency per message type.
    ack_latency: [Histogram; MessageType::ALL.len()],
    sent_rate: Rate,
    denied: [AtomicU64; Denial::ALL.len()],
}

/// A consistent-enough copy of the counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Accepted messages per type, in [`MessageType::ALL`] order.
    pub sent: [u64; MessageType::ALL.len()],
    /// Deliveries on inbox streams, first attempts and retries.
    pub delivered: u64,
    /// Deliveries that were retries.
    pub redelivered: u64,
    pub acked: u64,
    pub dead_lettered: u64,
    /// Send-to-ack latency per type, in [`MessageType::ALL`] order.
    pub ack_latency: Vec<HistogramSnapshot>,
    /// Messages accepted per second over the last minute.
    pub throughput: f64,
    /// Calls refused by authentication or an access rule, in
    /// [`Denial::ALL`] order.
    pub denied: [u64; Denial::ALL.len()],
}

impl MetricsSnapshot {
    pub fn total_sent(&self) -> u64 {
        self.sent.iter().sum()
    }

    /// Sum of send-to-ack latencies; divide by `acked` for the mean.
    pub fn ack_latency_micros(&self) -> u64 {
        self.ack_latency.iter().map(|h| h.sum_micros).sum()
    }
}

fn index(message_type: MessageType) -> usize {
    MessageType::ALL.iter().position(|t| *t == message_type).unwrap_or(0)
}

impl Metrics {
    pub fn sent(&self, message_type: MessageType) {
        self.sent[index(message_type)].fetch_add(1, Ordering::Relaxed);
        self.sent_rate.record();
    }

    pub fn delivered(&self, attempt: u32) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        if attempt > 1 {
            self.redelivered.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn acked(&self, message_type: MessageType, latency: Duration) {
        self.acked.fetch_add(1, Ordering::Relaxed);
        self.ack_latency[index(message_type)].observe(latency);
    }

    pub fn dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    pub fn denied(&self, denial: Denial) {
        self.denied[denial as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The message counters plus the store's gauges; `uptime` bounds the
    /// throughput window of a young server.
    pub async fn collect(&self, store: &dyn Store, uptime: Duration) -> Result<(MetricsSnapshot, StoreCounts)> {
        Ok((self.snapshot(uptime), store.counts().await?))
    }

    pub fn snapshot(&self, uptime: Duration) -> MetricsSnapshot {
        MetricsSnapshot {
            sent: std::array::from_fn(|i| self.sent[i].load(Ordering::Relaxed)),
            delivered: self.delivered.load(Ordering::Relaxed),
            redelivered: self.redelivered.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            ack_latency: self.ack_latency.iter().map(Histogram::snapshot).collect(),
            throughput: self.sent_rate.per_second(uptime),
            denied: std::array::from_fn(|i| self.denied[i].load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_rates_count_recent_seconds() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(300));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(60));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.cumulative[0], 1);
        assert_eq!(snapshot.cumulative[3], 2, "3 ms falls under le=0.005");
        assert_eq!(snapshot.cumulative[LATENCY_BUCKETS.len() - 1], 2);
        assert_eq!(snapshot.count(), 3);
        assert_eq!(snapshot.sum_micros, 60_003_300);

        let rate = Rate::default();
        for _ in 0..10 {
            rate.record();
        }
        // The current second is not complete yet, so it does not count.
        assert!(rate.per_second(Duration::from_secs(5)) <= 10.0 / 5.0 + f64::EPSILON);
    }
}
