//! Counters of the message flow, for the HTTP gateway's `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::domain::Result;
use crate::domain::message::MessageType;
use crate::store::{Store, StoreCounts};

#[derive(Default)]
pub struct Metrics {
    sent: [AtomicU64; MessageType::ALL.len()],
    delivered: AtomicU64,
    redelivered: AtomicU64,
    acked: AtomicU64,
    dead_lettered: AtomicU64,
    ack_latency_micros: AtomicU64,
}

/// A consistent-enough copy of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Accepted messages per type, in [`MessageType::ALL`] order.
    pub sent: [u64; MessageType::ALL.len()],
    /// Deliveries on inbox streams, first attempts and retries.
    pub delivered: u64,
    /// Deliveries that were retries.
    pub redelivered: u64,
    pub acked: u64,
    pub dead_lettered: u64,
    /// Sum of send-to-ack latencies; divide by `acked` for the mean.
    pub ack_latency_micros: u64,
}

impl MetricsSnapshot {
    pub fn total_sent(&self) -> u64 {
        self.sent.iter().sum()
    }
}

impl Metrics {
    pub fn sent(&self, message_type: MessageType) {
        let index = MessageType::ALL.iter().position(|t| *t == message_type).unwrap_or(0);
        self.sent[index].fetch_add(1, Ordering::Relaxed);
    }

    pub fn delivered(&self, attempt: u32) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        if attempt > 1 {
            self.redelivered.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn acked(&self, latency_micros: u64) {
        self.acked.fetch_add(1, Ordering::Relaxed);
        self.ack_latency_micros.fetch_add(latency_micros, Ordering::Relaxed);
    }

    pub fn dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    /// The message counters plus the store's gauges.
    pub async fn collect(&self, store: &dyn Store) -> Result<(MetricsSnapshot, StoreCounts)> {
        Ok((self.snapshot(), store.counts().await?))
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            sent: std::array::from_fn(|i| self.sent[i].load(Ordering::Relaxed)),
            delivered: self.delivered.load(Ordering::Relaxed),
            redelivered: self.redelivered.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            ack_latency_micros: self.ack_latency_micros.load(Ordering::Relaxed),
        }
    }
}
