//! Counters and latency histograms of the message flow, for `/metrics`,
//! kept in `prometheus-client` metrics registered with the server's registry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::domain::message::MessageType;
use crate::domain::{Denial, Result};
use crate::store::{Store, StoreCounts};

/// Upper bounds of the latency buckets, in seconds (Prometheus `le`):
/// half a millisecond to ten seconds, the span of a call or an ack.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram with [`LATENCY_BUCKETS`], the constructor of histogram
/// families.
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
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

/// The label of series kept per message type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TypeLabel {
    r#type: &'static str,
}

/// The label of rows removed by retention.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// The label of hand-overs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FromLabel {
    from: &'static str,
}

/// The label of refusals.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The counters of the message flow and the gauges of `/metrics`.
///
/// Every series is created up front (a type or reason that never happened
/// reads 0 instead of being absent), and the hot path holds its own handle
/// to it, so counting is one atomic add: no lock, no label lookup.
pub struct Metrics {
    sent: [Counter; MessageType::ALL.len()],
    delivered: Counter,
    redelivered: Counter,
    acked: Counter,
    dead_lettered: Counter,
    /// Send-to-ack latency per message type.
    ack_latency: [Histogram; MessageType::ALL.len()],
    /// Their sum for the JSON mean (the library's histograms do not tell).
    ack_latency_micros: AtomicU64,
    sent_rate: Rate,
    denied: [Counter; Denial::ALL.len()],
    /// Set from the store and the clock at each scrape.
    uptime: Gauge<f64, AtomicU64>,
    active_sessions: Gauge,
    registered_agents: Gauge,
    throughput: Gauge<f64, AtomicU64>,
    store_size: Gauge,
    /// Rows removed by retention, in [`Removed::ALL`] order.
    removed: [Counter; Removed::ALL.len()],
    /// Messages handed straight to a waiting stream, in [`HandedFrom::ALL`]
    /// order.
    handed: [Counter; HandedFrom::ALL.len()],
}

/// Who handed a message straight to a waiting inbox stream, without an
/// inbox read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandedFrom {
    /// A send on the stream's node, which stored the message claimed.
    Send,
    /// Another node, whose notification carried the queued message.
    Offer,
}

impl HandedFrom {
    pub const ALL: [HandedFrom; 2] = [HandedFrom::Send, HandedFrom::Offer];

    pub fn as_str(self) -> &'static str {
        match self {
            HandedFrom::Send => "send",
            HandedFrom::Offer => "offer",
        }
    }
}

/// What retention removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    Messages,
    Events,
    Sessions,
}

impl Removed {
    pub const ALL: [Removed; 3] = [Removed::Messages, Removed::Events, Removed::Sessions];

    pub fn as_str(self) -> &'static str {
        match self {
            Removed::Messages => "messages",
            Removed::Events => "events",
            Removed::Sessions => "sessions",
        }
    }
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
    /// Sum of send-to-ack latencies; divide by `acked` for the mean.
    pub ack_latency_sum: Duration,
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
}

/// `prometheus-client` appends the full stop to every help text itself.
fn help(text: &str) -> &str {
    text.strip_suffix('.').unwrap_or(text)
}

impl Default for Metrics {
    /// Counters registered nowhere, for tests.
    fn default() -> Self {
        Self::new(&mut Registry::default())
    }
}

impl Metrics {
    /// Creates the counters and registers them, and the gauges `/metrics`
    /// sets at each scrape, with `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let by_type = Family::<TypeLabel, Counter>::default();
        let ack_latency = Family::<TypeLabel, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        let by_reason = Family::<ReasonLabel, Counter>::default();
        let by_kind = Family::<KindLabel, Counter>::default();
        let by_source = Family::<FromLabel, Counter>::default();
        let label = |t: MessageType| TypeLabel { r#type: t.as_str() };
        let metrics = Self {
            sent: MessageType::ALL.map(|t| by_type.get_or_create_owned(&label(t))),
            delivered: Counter::default(),
            redelivered: Counter::default(),
            acked: Counter::default(),
            dead_lettered: Counter::default(),
            ack_latency: MessageType::ALL.map(|t| ack_latency.get_or_create_owned(&label(t))),
            ack_latency_micros: AtomicU64::new(0),
            sent_rate: Rate::default(),
            denied: Denial::ALL.map(|d| by_reason.get_or_create_owned(&ReasonLabel { reason: d.as_str() })),
            uptime: Gauge::default(),
            active_sessions: Gauge::default(),
            registered_agents: Gauge::default(),
            throughput: Gauge::default(),
            store_size: Gauge::default(),
            removed: Removed::ALL.map(|k| by_kind.get_or_create_owned(&KindLabel { kind: k.as_str() })),
            handed: HandedFrom::ALL.map(|f| by_source.get_or_create_owned(&FromLabel { from: f.as_str() })),
        };
        registry.register(
            "build",
            help("The version of the running server; always 1."),
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register_with_unit(
            "uptime",
            help("Seconds since the server started."),
            Unit::Seconds,
            metrics.uptime.clone(),
        );
        registry.register(
            "active_sessions",
            help("Sessions in the active state."),
            metrics.active_sessions.clone(),
        );
        registry.register(
            "registered_agents",
            help("Registered agents."),
            metrics.registered_agents.clone(),
        );
        registry.register(
            "message_throughput",
            format!("Messages accepted per second over the last {THROUGHPUT_WINDOW_SECS}s"),
            metrics.throughput.clone(),
        );
        registry.register("messages_sent", help("Messages accepted, by type."), by_type);
        registry.register(
            "message_deliveries",
            help("Deliveries on inbox streams, retries included."),
            metrics.delivered.clone(),
        );
        registry.register(
            "message_redeliveries",
            help("Deliveries that were retries."),
            metrics.redelivered.clone(),
        );
        registry.register(
            "message_handovers",
            help(
                "Messages handed straight to a waiting inbox stream, without an inbox read (PostgreSQL), \
                 from a send on this node or offered by another node.",
            ),
            by_source,
        );
        registry.register(
            "messages_acked",
            help("Messages acknowledged by their recipient."),
            metrics.acked.clone(),
        );
        registry.register(
            "messages_dead_lettered",
            help("Messages given up on."),
            metrics.dead_lettered.clone(),
        );
        registry.register(
            "auth_denied",
            help("Calls refused by authentication or an access rule, by reason."),
            by_reason,
        );
        registry.register_with_unit(
            "message_ack_duration",
            help("From acceptance to acknowledgement, by message type."),
            Unit::Seconds,
            ack_latency,
        );
        registry.register(
            "retention_removed",
            help("Rows removed by retention (retain_closed, retain_events), by kind."),
            by_kind,
        );
        registry.register_with_unit(
            "store_size",
            help("Bytes the database takes: SQLite's file and log, PostgreSQL's tables; 0 in memory."),
            Unit::Bytes,
            metrics.store_size.clone(),
        );
        metrics
    }

    pub fn handed(&self, from: HandedFrom) {
        self.handed[from as usize].inc();
    }

    pub fn removed(&self, kind: Removed, rows: u64) {
        self.removed[kind as usize].inc_by(rows);
    }

    pub fn sent(&self, message_type: MessageType) {
        self.sent[index(message_type)].inc();
        self.sent_rate.record();
    }

    pub fn delivered(&self, attempt: u32) {
        self.delivered.inc();
        if attempt > 1 {
            self.redelivered.inc();
        }
    }

    pub fn acked(&self, message_type: MessageType, latency: Duration) {
        self.acked.inc();
        self.ack_latency[index(message_type)].observe(latency.as_secs_f64());
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.ack_latency_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn dead_lettered(&self) {
        self.dead_lettered.inc();
    }

    pub fn denied(&self, denial: Denial) {
        self.denied[denial as usize].inc();
    }

    /// The message counters plus the store's gauges; `uptime` bounds the
    /// throughput window of a young server. Sets the gauges of the
    /// registry to what it read, for the scrape that asked.
    pub async fn collect(&self, store: &dyn Store, uptime: Duration) -> Result<(MetricsSnapshot, StoreCounts)> {
        let counts = store.counts().await?;
        let snapshot = self.snapshot(uptime);
        self.uptime.set(uptime.as_secs_f64());
        self.active_sessions
            .set(i64::try_from(counts.active_sessions).unwrap_or(i64::MAX));
        self.registered_agents
            .set(i64::try_from(counts.registered_agents).unwrap_or(i64::MAX));
        self.throughput.set(snapshot.throughput);
        self.store_size
            .set(i64::try_from(counts.size_bytes.unwrap_or(0)).unwrap_or(i64::MAX));
        Ok((snapshot, counts))
    }

    pub fn snapshot(&self, uptime: Duration) -> MetricsSnapshot {
        MetricsSnapshot {
            sent: std::array::from_fn(|i| self.sent[i].get()),
            delivered: self.delivered.get(),
            redelivered: self.redelivered.get(),
            acked: self.acked.get(),
            dead_lettered: self.dead_lettered.get(),
            ack_latency_sum: Duration::from_micros(self.ack_latency_micros.load(Ordering::Relaxed)),
            throughput: self.sent_rate.per_second(uptime),
            denied: std::array::from_fn(|i| self.denied[i].get()),
        }
    }
}

fn index(message_type: MessageType) -> usize {
    MessageType::ALL.iter().position(|t| *t == message_type).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_every_series_starts_at_zero() {
        let mut registry = Registry::with_prefix("agentbus");
        let metrics = Metrics::new(&mut registry);
        for latency in [
            Duration::from_micros(300),
            Duration::from_millis(3),
            Duration::from_secs(60),
        ] {
            metrics.acked(MessageType::TaskRequest, latency);
        }
        metrics.denied(Denial::AdminOnly);
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        let series = |prefix: &str| -> Vec<&str> { text.lines().filter(|l| l.starts_with(prefix)).collect() };
        let task = "agentbus_message_ack_duration_seconds_bucket{type=\"task_request\",";
        let buckets = series(task);
        assert_eq!(buckets.len(), LATENCY_BUCKETS.len() + 1, "{text}");
        assert_eq!(buckets[0], format!("{task}le=\"0.0005\"}} 1"));
        assert_eq!(
            buckets[3],
            format!("{task}le=\"0.005\"}} 2"),
            "3 ms falls under le=0.005"
        );
        assert_eq!(buckets[LATENCY_BUCKETS.len() - 1], format!("{task}le=\"10\"}} 2"));
        assert_eq!(buckets[LATENCY_BUCKETS.len()], format!("{task}le=\"+Inf\"}} 3"));
        let sum = series("agentbus_message_ack_duration_seconds_sum{type=\"task_request\"}");
        let sum: f64 = sum[0].rsplit(' ').next().unwrap().parse().unwrap();
        assert!((sum - 60.0033).abs() < 1e-9, "{sum}");
        assert_eq!(series("agentbus_messages_sent_total{").len(), MessageType::ALL.len());
        assert!(
            text.contains("agentbus_messages_sent_total{type=\"error\"} 0\n"),
            "{text}"
        );
        assert_eq!(series("agentbus_auth_denied_total{").len(), Denial::ALL.len());
        assert!(
            text.contains("agentbus_auth_denied_total{reason=\"admin_only\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("# HELP agentbus_messages_acked_total Messages acknowledged by their recipient.\n"));

        let snapshot = metrics.snapshot(Duration::from_secs(1));
        assert_eq!(snapshot.acked, 3);
        assert_eq!(snapshot.ack_latency_sum.as_micros(), 60_003_300);
    }

    #[test]
    fn rates_count_recent_seconds() {
        let rate = Rate::default();
        for _ in 0..10 {
            rate.record();
        }
        // The current second is not complete yet, so it does not count.
        assert!(rate.per_second(Duration::from_secs(5)) <= 10.0 / 5.0 + f64::EPSILON);
    }
}
