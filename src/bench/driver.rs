//! Load drivers: closed loop (N workers, each with one call in flight) and
//! open loop (a fixed arrival rate), both with a warm-up that is not
//! measured and HDR latency histograms.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

/// Latencies in microseconds, 1 µs to 10 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static histogram bounds are valid")
}

pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// When to measure and when to stop.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub warmup: Duration,
    pub duration: Duration,
    /// Stop after this many measured operations instead of `duration`.
    pub count: Option<u64>,
}

/// What one driver run measured (warm-up excluded).
pub struct Measured {
    pub latency: Histogram<u64>,
    pub ops: u64,
    pub errors: u64,
    pub first_errors: Vec<String>,
    pub elapsed: Duration,
}

impl Measured {
    /// The same run, measured at the receiving end: `ops` arrivals with
    /// their `latency` (send errors stay the sender's).
    pub fn arrivals(&self, latency: Histogram<u64>, ops: u64) -> Measured {
        Measured {
            latency,
            ops,
            errors: self.errors,
            first_errors: self.first_errors.clone(),
            elapsed: self.elapsed,
        }
    }
}

struct Shared {
    measure_from: Instant,
    stop_at: Instant,
    remaining: Option<AtomicU64>,
}

impl Shared {
    fn new(timing: Timing) -> Self {
        let now = Instant::now();
        let measure_from = now + timing.warmup;
        let stop_at = if timing.count.is_some() {
            now + Duration::from_secs(24 * 3600)
        } else {
            measure_from + timing.duration
        };
        Self {
            measure_from,
            stop_at,
            remaining: timing.count.map(AtomicU64::new),
        }
    }

    /// Whether one more operation may start.
    fn admit(&self, now: Instant) -> bool {
        if now >= self.stop_at {
            return false;
        }
        match &self.remaining {
            Some(remaining) if now >= self.measure_from => remaining
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok(),
            _ => true,
        }
    }
}

struct Tally {
    latency: Histogram<u64>,
    ops: u64,
    errors: u64,
    first_errors: Vec<String>,
}

impl Tally {
    fn new() -> Self {
        Self {
            latency: histogram(),
            ops: 0,
            errors: 0,
            first_errors: Vec::new(),
        }
    }

    fn record(&mut self, result: Result<(), String>, latency: Duration) {
        match result {
            Ok(()) => {
                self.ops += 1;
                let _ = self.latency.record(micros(latency));
            }
            Err(error) => {
                self.errors += 1;
                if self.first_errors.len() < 3 {
                    self.first_errors.push(error);
                }
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        let _ = self.latency.add(&other.latency);
        self.ops += other.ops;
        self.errors += other.errors;
        for error in other.first_errors {
            if self.first_errors.len() < 3 {
                self.first_errors.push(error);
            }
        }
    }
}

/// Runs `workers` loops, each calling its operation back to back.
/// `make(i)` builds worker `i`'s operation; it gets a sequence number.
pub async fn closed_loop<F, Fut>(workers: usize, timing: Timing, make: impl Fn(usize) -> F) -> Measured
where
    F: FnMut(u64) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let shared = Arc::new(Shared::new(timing));
    let sequence = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..workers)
        .map(|i| {
            let mut op = make(i);
            let (shared, sequence) = (shared.clone(), sequence.clone());
            tokio::spawn(async move {
                let mut tally = Tally::new();
                loop {
                    let start = Instant::now();
                    if !shared.admit(start) {
                        return tally;
                    }
                    let result = op(sequence.fetch_add(1, Ordering::Relaxed)).await;
                    if start >= shared.measure_from {
                        tally.record(result, start.elapsed());
                    }
                }
            })
        })
        .collect();
    finish(tasks, &shared).await
}

/// Starts one operation every `1/rate` seconds (never more than
/// `max_in_flight` at once; a start that finds none free is an error).
pub async fn open_loop<F, Fut>(rate: f64, max_in_flight: usize, timing: Timing, mut op: F) -> Measured
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let shared = Arc::new(Shared::new(timing));
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let begin = Instant::now();
    // Each operation's task returns its outcome, not a histogram of its own:
    // a histogram is about 170 KB, which at thousands of operations a
    // second made the bench the machine's largest user of memory (and of
    // memory bandwidth).
    let mut tasks: Vec<tokio::task::JoinHandle<Outcome>> = Vec::new();
    let mut sequence = 0u64;
    loop {
        let due = begin + interval.mul_f64(sequence as f64);
        tokio::time::sleep_until(due.into()).await;
        if !shared.admit(due) {
            break;
        }
        let measured = due >= shared.measure_from;
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            let outcome = measured.then(|| {
                (
                    Err(format!("more than {max_in_flight} operations in flight")),
                    Duration::ZERO,
                )
            });
            tasks.push(tokio::spawn(async move { outcome }));
            sequence += 1;
            continue;
        };
        let future = op(sequence);
        tasks.push(tokio::spawn(async move {
            let result = future.await;
            drop(permit);
            // Latency from the intended start, so a slow server cannot
            // hide queueing (no coordinated omission).
            measured.then(|| (result, due.elapsed()))
        }));
        sequence += 1;
    }
    let mut total = Tally::new();
    for task in tasks {
        if let Ok(Some((result, latency))) = task.await {
            total.record(result, latency);
        }
    }
    total.measured(&shared)
}

/// One open-loop operation's result and latency, when it was measured.
type Outcome = Option<(Result<(), String>, Duration)>;

async fn finish(tasks: Vec<tokio::task::JoinHandle<Tally>>, shared: &Shared) -> Measured {
    let mut total = Tally::new();
    for task in tasks {
        if let Ok(tally) = task.await {
            total.merge(tally);
        }
    }
    total.measured(shared)
}

impl Tally {
    fn measured(self, shared: &Shared) -> Measured {
        Measured {
            latency: self.latency,
            ops: self.ops,
            errors: self.errors,
            first_errors: self.first_errors,
            elapsed: if shared.remaining.is_some() {
                shared.measure_from.elapsed()
            } else {
                shared.stop_at - shared.measure_from
            },
        }
    }
}
