//! `--noise`: one thread that keeps a core busy for the whole run, as a
//! build or another service on the same machine would.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// A busy thread, stopped when dropped.
pub struct Noise {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl Noise {
    /// Starts the thread (pinned to no core: the scheduler places it).
    pub fn start() -> Result<Self, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bench-noise".into())
            .spawn(move || spin(&flag))
            .map_err(|e| format!("cannot start the --noise thread: {e}"))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

/// Pure arithmetic, no memory traffic and no system calls, until `stop`.
fn spin(stop: &AtomicBool) -> u64 {
    let mut x: u64 = 1;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..10_000 {
            x = std::hint::black_box(
                x.wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407),
            );
        }
    }
    x
}

impl Drop for Noise {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
