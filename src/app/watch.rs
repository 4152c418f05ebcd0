//! WatchSessions: replay stored events after a sequence number, then follow
//! live events with no gap and no duplicate. A subscriber that falls behind
//! the live buffer goes back to the store instead of losing events, so it
//! never slows down writers or other subscribers.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;

use crate::domain::session::SessionEvent;
use crate::domain::{AgentId, Error, ErrorKind, Result, Timestamp};
use crate::store::{EventFilter, Store};

/// Events read from the store per query while catching up.
const REPLAY_BATCH: usize = 256;

#[derive(Debug, Clone)]
pub enum WatchItem {
    Event(Arc<SessionEvent>),
    Heartbeat { timestamp: Timestamp, last_sequence: u64 },
}

#[derive(Debug, Clone, Default)]
pub struct WatchRequest {
    pub filter: EventFilter,
    /// Replay events after this sequence first; `None`: live events only.
    pub after_sequence: Option<u64>,
    /// Only events of sessions this agent takes part in, from the event
    /// that made it a participant (each event carries the session as it
    /// became).
    pub visible_to: Option<AgentId>,
}

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchItem>> + Send>>;

enum Wake {
    Shutdown,
    Live(std::result::Result<Arc<SessionEvent>, RecvError>),
    Idle,
}

/// Starts a watch. Fails at once if `after_sequence` is beyond the latest
/// committed event. The stream ends with UNAVAILABLE when `shutdown` fires.
pub fn watch(
    store: Arc<dyn Store>,
    request: WatchRequest,
    heartbeat: Duration,
    shutdown: CancellationToken,
) -> Result<WatchStream> {
    // Subscribe before reading the latest sequence: every event after it is
    // then either in the store or still to come on `live`.
    let mut live = store.feed().subscribe();
    let latest = store.feed().last_sequence();
    if let Some(after) = request.after_sequence
        && after > latest
    {
        return Err(Error::new(
            ErrorKind::OutOfRange,
            format!("after_sequence: {after} is beyond the latest event {latest}"),
        ));
    }
    // Every event up to `cursor` has been sent or skipped by the filter.
    let mut cursor = request.after_sequence.unwrap_or(latest);
    let mut catch_up = request.after_sequence.is_some();
    let filter = request.filter;
    let visible_to = request.visible_to;
    let visible = move |event: &SessionEvent| visible_to.as_ref().is_none_or(|agent| event.session.involves(agent));
    Ok(Box::pin(async_stream::stream! {
        let mut idle = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
        idle.set_missed_tick_behavior(MissedTickBehavior::Delay);
        if !catch_up {
            // A live-only watch says where it starts, so a client that
            // drops before the first event can resume without a gap.
            yield Ok(WatchItem::Heartbeat { timestamp: Timestamp::now(), last_sequence: cursor });
        }
        loop {
            while catch_up && !shutdown.is_cancelled() {
                let up_to = store.feed().last_sequence();
                if up_to <= cursor {
                    catch_up = false;
                    break;
                }
                let batch = match store.events(cursor, up_to, &filter, REPLAY_BATCH).await {
                    Ok(batch) => batch,
                    Err(e) => {
                        yield Err(Error::from(e));
                        return;
                    }
                };
                let complete = batch.len() < REPLAY_BATCH;
                for event in batch {
                    cursor = event.sequence;
                    if visible(&event) {
                        idle.reset();
                        yield Ok(WatchItem::Event(event));
                    }
                }
                if complete {
                    cursor = up_to;
                }
            }
            let wake = tokio::select! {
                biased;
                () = shutdown.cancelled() => Wake::Shutdown,
                received = live.recv() => Wake::Live(received),
                _ = idle.tick() => Wake::Idle,
            };
            match wake {
                Wake::Shutdown => {
                    yield Err(Error::unavailable("the server is shutting down; resume with after_sequence"));
                    return;
                }
                Wake::Live(Ok(event)) if event.sequence <= cursor => {}
                Wake::Live(Ok(event)) if event.sequence == cursor + 1 => {
                    cursor = event.sequence;
                    if filter.matches(&event) && visible(&event) {
                        idle.reset();
                        yield Ok(WatchItem::Event(event));
                    }
                }
                // A gap (we joined mid-stream) or a lag (we fell behind the
                // live buffer): the store has everything up to the latest.
                Wake::Live(Ok(_)) => catch_up = true,
                Wake::Live(Err(RecvError::Lagged(skipped))) => {
                    tracing::info!(skipped, cursor, "watcher fell behind the live buffer; catching up from the store");
                    catch_up = true;
                }
                Wake::Live(Err(RecvError::Closed)) => {
                    yield Err(Error::unavailable("the event feed closed; resume with after_sequence"));
                    return;
                }
                // The cursor, not the latest commit: every event up to it
                // was sent or filtered out, so it is a safe resume point.
                Wake::Idle => yield Ok(WatchItem::Heartbeat { timestamp: Timestamp::now(), last_sequence: cursor }),
            }
        }
    }))
}
