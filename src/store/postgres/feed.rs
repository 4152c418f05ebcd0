//! Announcing committed events on the [`EventFeed`], in sequence order, with
//! no gap and no duplicate.
//!
//! Sequence numbers come from one counter row updated inside each event's
//! transaction (see [`super::writes`]), so they become visible in sequence
//! order: a transaction gets number N only after N-1's transaction ended,
//! and a committed N means every number below it is committed too. What is
//! left to order is this process's announcing: writers that committed N and
//! N+1 may reach [`Announcer::committed`] in either order, and a writer
//! whose COMMIT failed does not know whether its number exists. So:
//! - a writer registers its number when it gets it ([`Ticket`]), hands over
//!   the event once committed, and waits until the feed reached it (so that
//!   a caller that got sequence N can watch from N at once);
//! - events are published only contiguously from the feed's last sequence;
//!   a later one waits in `pending`;
//! - a missing number that no local writer holds (a lost COMMIT answer,
//!   or another node's commit) is read from the table by the [`follow`]
//!   task.
//!
//! Other nodes' events: every event transaction also sends a notification
//! (see [`super::cluster`]), delivered at commit; on another node's, the
//! follower reads `seq > last` in order. The counter row is what keeps that
//! gap-free across nodes: with a sequence or identity column instead, N+1
//! can commit before N, and a follower that read N+1 would skip N for good.
//! Notifications can be lost while the listening connection is down, so the
//! follower also reads after every reconnect and every [`BACKSTOP`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::rows::{event, to_i64};
use super::{db_error, pool_error};
use crate::domain::session::SessionEvent;
use crate::store::{EventFeed, StoreError};

/// Events read from the table per query when catching up.
const CATCH_UP_BATCH: i64 = 1000;

/// How long a writer waits for the feed to reach its event before answering
/// anyway (the database went away while a gap was being filled; watchers
/// get the event once it is back).
const ANNOUNCE_WAIT: Duration = Duration::from_secs(10);

/// How often the follower retries a gap it could not fill.
const RETRY_GAP: Duration = Duration::from_secs(1);

/// How often the follower reads the table without being woken, in case a
/// notification was lost.
const BACKSTOP: Duration = Duration::from_secs(5);

pub(super) struct Announcer {
    feed: Arc<EventFeed>,
    order: Mutex<Order>,
    /// The feed's last sequence, for writers waiting to be announced.
    published: watch::Sender<u64>,
    /// Wakes [`follow`]: a gap no local writer will fill.
    gap: Notify,
}

#[derive(Default)]
struct Order {
    /// Committed here, waiting for a lower number.
    pending: BTreeMap<u64, Arc<SessionEvent>>,
    /// Handed out to local transactions whose outcome is not reported yet.
    in_flight: BTreeSet<u64>,
}

impl Announcer {
    pub(super) fn new(feed: Arc<EventFeed>) -> Self {
        let (published, _) = watch::channel(feed.last_sequence());
        Self {
            feed,
            order: Mutex::new(Order::default()),
            published,
            gap: Notify::new(),
        }
    }

    fn order(&self) -> MutexGuard<'_, Order> {
        // Every change to Order completes before its guard drops.
        self.order.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `sequence`, just handed out inside a transaction.
    pub(super) fn allocated(self: &Arc<Self>, sequence: u64) -> Ticket {
        self.order().in_flight.insert(sequence);
        Ticket {
            sequence,
            announcer: Some(self.clone()),
        }
    }

    /// Publishes what is contiguous; wakes the follower on a gap that no
    /// local writer will fill. Called with the lock held, so the feed sees
    /// sequence order.
    fn drain(&self, order: &mut Order) {
        let mut last = self.feed.last_sequence();
        while let Some(event) = order.pending.remove(&(last + 1)) {
            last = event.sequence;
            self.feed.publish(event);
        }
        // Anything at or below `last` came twice (a writer and the follower).
        order.pending.retain(|&sequence, _| sequence > last);
        self.published.send_replace(last);
        if !order.pending.is_empty() && !order.in_flight.contains(&(last + 1)) {
            self.gap.notify_one();
        }
    }

    fn add(&self, order: &mut Order, event: Arc<SessionEvent>) {
        if event.sequence > self.feed.last_sequence() {
            order.pending.insert(event.sequence, event);
        }
    }

    /// Waits until the feed announced `sequence`, at most [`ANNOUNCE_WAIT`].
    pub(super) async fn announced(&self, sequence: u64) {
        let mut published = self.published.subscribe();
        let reached = tokio::time::timeout(ANNOUNCE_WAIT, published.wait_for(|&last| last >= sequence)).await;
        if reached.is_err() {
            tracing::warn!(
                sequence,
                last = self.feed.last_sequence(),
                "a committed event is not announced yet; watchers get it once the gap before it is read"
            );
        }
    }

    /// Reads every committed event past the feed's last one and publishes
    /// them.
    async fn catch_up(&self, pool: &Pool) -> Result<(), StoreError> {
        let client = pool.get().await.map_err(pool_error)?;
        let statement = client
            .prepare_cached(
                "SELECT seq, kind, at, agent_id, task_id, session FROM session_events
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .await
            .map_err(db_error)?;
        loop {
            let after = self.feed.last_sequence();
            let rows = client
                .query(&statement, &[&to_i64(after), &CATCH_UP_BATCH])
                .await
                .map_err(db_error)?;
            let events = rows.iter().map(event).collect::<Result<Vec<_>, _>>()?;
            let mut order = self.order();
            for event in events {
                self.add(&mut order, Arc::new(event));
            }
            self.drain(&mut order);
            if (rows.len() as i64) < CATCH_UP_BATCH {
                return Ok(());
            }
        }
    }

    /// Another node committed an event, or notifications may have been
    /// missed: the follower reads the table.
    pub(super) fn wake_follower(&self) {
        self.gap.notify_one();
    }

    fn has_gap(&self) -> bool {
        !self.order().pending.is_empty()
    }
}

/// A sequence number handed out to a transaction. Dropped without
/// [`Ticket::committed`] (the transaction failed, or its COMMIT answer was
/// lost), the number may or may not exist: the follower looks.
pub(super) struct Ticket {
    sequence: u64,
    announcer: Option<Arc<Announcer>>,
}

impl Ticket {
    /// The transaction committed `event`: publish it, in order.
    pub(super) fn committed(mut self, event: Arc<SessionEvent>) {
        if let Some(announcer) = self.announcer.take() {
            let mut order = announcer.order();
            order.in_flight.remove(&self.sequence);
            announcer.add(&mut order, event);
            announcer.drain(&mut order);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(announcer) = self.announcer.take() {
            let mut order = announcer.order();
            order.in_flight.remove(&self.sequence);
            // A rolled-back number is handed out again and changes
            // nothing; a committed one whose answer was lost is read back.
            announcer.gap.notify_one();
            announcer.drain(&mut order);
        }
    }
}

/// Reads committed events from the table until `stop`. Wakes on a gap or
/// another node's event, every [`RETRY_GAP`] while a gap stays open (the
/// database is away), and every [`BACKSTOP`] regardless.
pub(super) async fn follow(announcer: Arc<Announcer>, pool: Pool, stop: CancellationToken) {
    loop {
        let wait = if announcer.has_gap() { RETRY_GAP } else { BACKSTOP };
        tokio::select! {
            () = stop.cancelled() => return,
            () = announcer.gap.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
        if let Err(error) = announcer.catch_up(&pool).await {
            tracing::warn!(%error, "cannot read committed events to fill a gap in the feed; retrying");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::session::SessionEventKind;
    use crate::domain::{JsonObject, SessionId, Timestamp};

    fn event(sequence: u64) -> Arc<SessionEvent> {
        let new = crate::domain::session::NewSession {
            session_id: Some(SessionId::parse("s").unwrap()),
            orchestrator: crate::domain::AgentId::parse("a://o").unwrap(),
            participants: vec![],
            steps: vec![],
            shared_context: JsonObject::new(),
        };
        let limits = crate::domain::session::SessionLimits::default();
        Arc::new(SessionEvent {
            sequence,
            kind: SessionEventKind::SessionCreated,
            timestamp: Timestamp::now(),
            agent_id: None,
            task_id: None,
            session: crate::domain::session::Session::create(new, &limits, Timestamp::now()).unwrap(),
        })
    }

    #[tokio::test]
    async fn events_committed_out_of_order_are_announced_in_order() {
        let feed = Arc::new(EventFeed::new(16, 0));
        let announcer = Arc::new(Announcer::new(feed.clone()));
        let mut live = feed.subscribe();
        let (first, second) = (announcer.allocated(1), announcer.allocated(2));
        second.committed(event(2));
        assert_eq!(feed.last_sequence(), 0);
        first.committed(event(1));
        assert_eq!(feed.last_sequence(), 2);
        assert_eq!(live.recv().await.unwrap().sequence, 1);
        assert_eq!(live.recv().await.unwrap().sequence, 2);
        announcer.announced(2).await;
        // A duplicate (the follower read it too) is not announced again.
        announcer.allocated(2).committed(event(2));
        assert!(live.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_lost_number_wakes_the_follower() {
        let announcer = Arc::new(Announcer::new(Arc::new(EventFeed::new(16, 0))));
        let (lost, later) = (announcer.allocated(1), announcer.allocated(2));
        later.committed(event(2));
        drop(lost);
        assert!(announcer.has_gap());
        tokio::time::timeout(Duration::from_secs(1), announcer.gap.notified())
            .await
            .expect("the follower is woken");
    }
}
