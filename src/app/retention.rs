//! Retention keeps the database bounded: closed messages are removed
//! `retain_closed` after they closed, session events and ended sessions
//! `retain_events` after they happened. Removal runs in the background in
//! small batches, so writes beside it are never held up for long, on one
//! node of several sharing a store.
//!
//! What retention removes is gone for good: a resend of a removed
//! message's id is a new message, and a watch resuming before the oldest
//! kept event fails with OUT_OF_RANGE naming it (see
//! [`crate::store::StoreError::EventsRemoved`]) instead of skipping events.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::metrics::{Metrics, Removed};
use crate::domain::Timestamp;
use crate::store::{Store, StoreError};

/// Rows removed per batch (one short transaction each).
const BATCH: usize = 500;
/// Pause between two full batches, so that a large backlog is removed
/// without taking the writer from other work.
const BETWEEN_BATCHES: Duration = Duration::from_millis(20);

/// How long closed messages and events are kept; `None`: forever.
#[derive(Debug, Clone, Copy, Default)]
pub struct Retention {
    pub closed: Option<Duration>,
    pub events: Option<Duration>,
}

impl Retention {
    /// How often to look for what expired: a quarter of the shorter
    /// retention, between 100 ms and 10 s.
    pub fn period(&self) -> Option<Duration> {
        let shortest = [self.closed, self.events].into_iter().flatten().min()?;
        Some((shortest / 4).clamp(Duration::from_millis(100), Duration::from_secs(10)))
    }
}

/// Removes what retention no longer keeps until `shutdown`.
pub async fn run(store: Arc<dyn Store>, metrics: Arc<Metrics>, retention: Retention, shutdown: CancellationToken) {
    let Some(period) = retention.period() else { return };
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            // Another node may run it now; ask again at every tick.
            _ = ticks.tick() => if store.runs_background_work()
                && let Err(error) = prune(store.as_ref(), &metrics, retention, &shutdown).await
            {
                tracing::warn!(%error, "retention failed; trying again later");
            }
        }
    }
}

/// One pass: everything that expired by now, batch after batch, then
/// the space it freed.
pub async fn prune(
    store: &dyn Store,
    metrics: &Metrics,
    retention: Retention,
    shutdown: &CancellationToken,
) -> Result<u64, StoreError> {
    let now = Timestamp::now();
    let mut total = 0;
    let kinds = [
        (Removed::Messages, retention.closed),
        (Removed::Events, retention.events),
        (Removed::Sessions, retention.events),
    ];
    for (kind, keep) in kinds {
        let Some(keep) = keep else { continue };
        let before = now.saturating_sub(keep);
        while !shutdown.is_cancelled() {
            let removed = match kind {
                Removed::Messages => store.prune_messages(before, BATCH).await?,
                Removed::Events => store.prune_events(before, BATCH).await?,
                Removed::Sessions => store.prune_sessions(before, BATCH).await?,
            };
            metrics.removed(kind, removed);
            total += removed;
            if removed < BATCH as u64 {
                break;
            }
            tokio::time::sleep(BETWEEN_BATCHES).await;
        }
    }
    if total > 0 {
        tracing::debug!(removed = total, "retention removed rows");
    }
    // Also after a pass that removed nothing: a pass frees at most so much.
    store.reclaim().await?;
    Ok(total)
}
