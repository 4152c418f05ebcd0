//! What several nodes on one database tell each other, and which of them
//! runs the background work.
//!
//! Signals travel by LISTEN/NOTIFY on one channel per schema. A write that
//! makes a message deliverable, closes a delivery, stores a reply or
//! appends a session event sends a notification for each once it has
//! committed. A queued message's notification carries the message as
//! stored (an offer): a node whose stream of the recipient waits with
//! nothing to deliver claims it by its version and skips the inbox read
//! (see `app::messaging::signals`).
//!
//! Notifications go out after the commit, not inside the write's
//! transaction: PostgreSQL serialises every committing transaction that
//! notified, database-wide, for the length of its commit (its WAL flush
//! included), which would undo group commit for every write. The [`send`] task instead batches what the
//! writes queued into one small transaction with `synchronous_commit = off`
//! (a notification is a nudge; the data is already durable), so the lock
//! is taken once per batch and never held across a flush. Each node keeps one
//! connection of its own, outside the pool, that LISTENs and turns other
//! nodes' notifications into [`Signal`]s (its own it has acted on
//! already) and event notifications into a wake-up of the feed's follower,
//! which reads the events from the table in sequence order (see
//! [`super::feed`]; the notification carries no event, only a nudge).
//!
//! Notifications are not durable: while the connection is down they are
//! lost. So after every (re)connect the node resynchronises: the follower
//! reads every event past its last, and every local inbox stream looks
//! again ([`Signal::Resync`]). Inbox streams also look at every heartbeat,
//! and the follower every [`super::feed`] backstop period, so a lost
//! notification delays, never loses.
//!
//! The same connection holds a session-level advisory lock that elects the
//! node running the background work: whoever holds it sweeps; the others
//! try to take it every [`LEADER_CHECK`]. If the node dies, PostgreSQL
//! ends its session and frees the lock; if this connection breaks, the node
//! stops sweeping at once, before trying again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{broadcast, mpsc};
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use super::db_error;
use super::feed::Announcer;
use super::rows::decode;
use crate::domain::AgentId;
use crate::domain::message::{MessageId, MessageRecord, MessageState, stable_hash};
use crate::store::{MessageWrite, Signal, StoreError};

/// How often a node that does not run the background work tries to, and
/// the one that does checks its connection.
const LEADER_CHECK: Duration = Duration::from_secs(1);

/// How long to wait before connecting again after the listener's
/// connection failed.
const RECONNECT: Duration = Duration::from_millis(500);

/// Signals a slow consumer may fall behind by before it resynchronises.
const SIGNAL_BUFFER: usize = 4096;

/// This node's place among the nodes sharing the schema.
pub(super) struct Cluster {
    /// Random per process: tells this node's notifications from others'.
    node: String,
    /// The NOTIFY channel of the schema.
    channel: String,
    /// The advisory lock key of the schema's background work.
    leader_key: String,
    leader: AtomicBool,
    signals: broadcast::Sender<Signal>,
    /// Payloads of committed writes, for [`send`].
    outbox: mpsc::UnboundedSender<String>,
    /// Deliveries this node's streams claimed.
    claims: LocalClaims,
}

/// Claims this node committed: message id and the claim's version. At most
/// [`LocalClaims::CAPACITY`] (claims closed on other nodes are never
/// forgotten here; when full, all are forgotten, and closing one of those
/// sends the notification after all, which is only a nudge too many).
#[derive(Default)]
struct LocalClaims(Mutex<HashMap<MessageId, u64>>);

impl LocalClaims {
    const CAPACITY: usize = 65_536;

    fn noted<'a>(&self, claims: impl Iterator<Item = (&'a MessageId, u64)>) {
        let mut noted = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for (id, version) in claims {
            if noted.len() >= Self::CAPACITY {
                noted.clear();
            }
            noted.insert(id.clone(), version);
        }
    }

    /// Forgets the message's claim; answers whether it was this node's
    /// claim at `version`.
    fn forget(&self, id: &MessageId, version: u64) -> bool {
        let mut noted = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        noted.remove(id) == Some(version)
    }
}

/// The receiving end of [`Cluster`]'s outbox.
pub(super) type Outbox = mpsc::UnboundedReceiver<String>;

impl Cluster {
    pub(super) fn new(schema: &str) -> (Self, Outbox) {
        let node = uuid::Uuid::now_v7().simple().to_string();
        let (outbox, queued) = mpsc::unbounded_channel();
        let cluster = Self {
            node,
            // A channel name is an identifier (at most 63 bytes); schema
            // names may be longer or need quoting, their digest neither.
            channel: format!("agentbus_{:x}", stable_hash(schema.as_bytes())),
            leader_key: format!("agentbus background work {schema}"),
            leader: AtomicBool::new(false),
            signals: broadcast::channel(SIGNAL_BUFFER).0,
            outbox,
            claims: LocalClaims::default(),
        };
        (cluster, queued)
    }

    /// Queues notifications of a committed write for [`send`].
    pub(super) fn notify(&self, payloads: impl IntoIterator<Item = String>) {
        for payload in payloads {
            // Closed only once the store is: nobody to tell.
            let _ = self.outbox.send(payload);
        }
    }

    pub(super) fn node(&self) -> &str {
        &self.node
    }

    pub(super) fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Acquire)
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<Signal> {
        self.signals.subscribe()
    }

    /// The notifications a committed `write` (whose JSON body is `body`)
    /// sends: the queued message itself, offered to a waiting stream of its
    /// recipient (or, when the body is too long for a notification, work
    /// for the recipient); room when a delivery closed (unless this node
    /// made the claim: only its own stream can be waiting for that room,
    /// and this node wakes it itself); and the reply for a waiting SYNC
    /// sender when it is a new reply.
    pub(super) fn message_payloads(&self, write: &MessageWrite, body: &str, out: &mut Vec<String>) {
        let record = &write.record;
        let recipient = record.recipient.as_str();
        let claimed_here = write
            .expected
            .is_some_and(|expected| self.claims.forget(record.id(), expected));
        match record.state {
            MessageState::Queued if body.len() <= MAX_OFFER => out.push(self.payload('o', body)),
            MessageState::Queued => out.push(self.payload('w', recipient)),
            // A claim: nobody waits for it.
            MessageState::Delivered => {}
            _ if claimed_here => {}
            _ => out.push(self.payload('a', recipient)),
        }
        if let (None, Some(original)) = (write.expected, &record.message.in_reply_to) {
            out.push(self.payload('r', original.as_str()));
        }
    }

    /// Notes the claims this node committed (see [`Self::message_payloads`]).
    pub(super) fn claimed<'a>(&self, claims: impl IntoIterator<Item = (&'a MessageId, u64)>) {
        self.claims.noted(claims.into_iter());
    }

    /// An unregistered agent's streams look again, and end.
    pub(super) fn unregistered_payload(&self, agent: &AgentId) -> String {
        self.payload('w', agent.as_str())
    }

    pub(super) fn event_payload(&self, sequence: u64) -> String {
        self.payload('e', &sequence.to_string())
    }

    fn payload(&self, kind: char, value: &str) -> String {
        format!("{}|{kind}|{value}", self.node)
    }

    /// Acts on a notification: another node's event wakes the follower,
    /// its message changes become signals. Our own were acted on already.
    fn received(&self, payload: &str, announcer: &Announcer) {
        let mut parts = payload.splitn(3, '|');
        let (Some(node), Some(kind), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
            tracing::debug!(payload, "ignoring a notification that is not agentbus's");
            return;
        };
        if node == self.node {
            return;
        }
        let signal = match kind {
            "e" => {
                announcer.wake_follower();
                return;
            }
            "w" => AgentId::parse(value).ok().map(Signal::Work),
            "o" => match decode::<MessageRecord>(value) {
                Ok(record) => Some(Signal::Offer(Box::new(record))),
                // A record this build cannot read (a newer node's): the
                // recipient's streams read it from the inbox.
                Err(_) => decode::<Addressed>(value).ok().map(|to| Signal::Work(to.recipient)),
            },
            "a" => AgentId::parse(value).ok().map(Signal::Room),
            "r" => MessageId::try_from(value.to_owned()).ok().map(Signal::Reply),
            _ => None,
        };
        match signal {
            // No receiver yet (the app subscribes at start): nothing waits.
            Some(signal) => drop(self.signals.send(signal)),
            None => tracing::debug!(payload, "ignoring a notification that is not agentbus's"),
        }
    }

    fn resync(&self, announcer: &Announcer) {
        announcer.wake_follower();
        let _ = self.signals.send(Signal::Resync);
    }
}

/// The recipient of an offered record, whatever else the record holds.
#[derive(serde::Deserialize)]
struct Addressed {
    recipient: AgentId,
}

/// Sends queued notifications until `stop`: whatever queued while the
/// previous batch was sent goes in the next, in the order queued (offers
/// reach the other nodes in commit order), duplicates once. A batch that
/// fails is dropped: listeners also look at every heartbeat and backstop.
pub(super) async fn send(cluster: Arc<Cluster>, pool: Pool, mut queued: Outbox, stop: CancellationToken) {
    let mut batch = Vec::new();
    loop {
        let received = tokio::select! {
            () = stop.cancelled() => return,
            received = queued.recv_many(&mut batch, MAX_BATCH) => received,
        };
        if received == 0 {
            return;
        }
        let mut seen = HashSet::new();
        let payloads: Vec<&str> = batch
            .iter()
            .map(String::as_str)
            .filter(|payload| seen.insert(*payload))
            .collect();
        if let Err(error) = send_batch(&pool, &cluster.channel, &payloads).await {
            tracing::debug!(%error, dropped = payloads.len(), "sending notifications failed");
        }
        batch.clear();
    }
}

/// Notifications sent per transaction, at most.
const MAX_BATCH: usize = 1000;

/// The longest JSON body offered in a notification: PostgreSQL refuses
/// payloads of 8,000 bytes or more, and the node id and kind come first.
const MAX_OFFER: usize = 7_000;

/// One statement, committed on its own, on a connection of the pool whose
/// commits do not wait for the WAL flush (a notification is a nudge).
async fn send_batch(pool: &Pool, channel: &str, payloads: &[&str]) -> Result<(), StoreError> {
    let client = pool.get().await.map_err(super::pool_error)?;
    let statement = client
        .prepare_cached("SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload")
        .await
        .map_err(db_error)?;
    client
        .execute(&statement, &[&channel, &payloads])
        .await
        .map_err(db_error)
        .map(drop)
}

/// Listens for other nodes' notifications and competes for the background
/// work until `stop`, reconnecting after any failure.
pub(super) async fn listen(
    cluster: Arc<Cluster>,
    config: tokio_postgres::Config,
    announcer: Arc<Announcer>,
    stop: CancellationToken,
) {
    loop {
        let outcome = tokio::select! {
            () = stop.cancelled() => Ok(()),
            outcome = connected(&cluster, &config, &announcer) => outcome,
        };
        if cluster.leader.swap(false, Ordering::AcqRel) {
            tracing::warn!("this node stopped running the background work (its database session ended)");
        }
        match outcome {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%error, "lost the database connection that listens for other nodes; reconnecting")
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RECONNECT) => {}
        }
    }
}

/// One connection's life: LISTEN, resynchronise, then relay notifications
/// and take or keep the leader lock. Returns only with the error that
/// ended it.
async fn connected(
    cluster: &Cluster,
    config: &tokio_postgres::Config,
    announcer: &Announcer,
) -> Result<(), StoreError> {
    let (client, mut connection) = config.connect(NoTls).await.map_err(db_error)?;
    let (notifications, mut received) = mpsc::unbounded_channel();
    // The connection delivers notifications only to whoever polls it.
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(notification))) => {
                    if notifications.send(notification).is_err() {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error),
                None => return Ok(()),
            }
        }
    });
    let _abort = AbortOnDrop(driver.abort_handle());
    client
        .batch_execute(&format!("LISTEN {}", cluster.channel))
        .await
        .map_err(db_error)?;
    // Whatever was sent while nobody listened is read from the tables.
    cluster.resync(announcer);
    let mut ticks = tokio::time::interval(LEADER_CHECK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            notification = received.recv() => match notification {
                Some(notification) => cluster.received(notification.payload(), announcer),
                None => return Err(StoreError::Unavailable("the listening connection closed".into())),
            },
            _ = ticks.tick() => {
                if cluster.is_leader() {
                    // Still connected, so still holding the lock.
                    client.simple_query("SELECT 1").await.map_err(db_error)?;
                } else {
                    let taken: bool = client
                        .query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&cluster.leader_key])
                        .await
                        .map_err(db_error)?
                        .try_get(0)
                        .map_err(super::backend)?;
                    if taken {
                        cluster.leader.store(true, Ordering::Release);
                        tracing::info!("this node runs the background work (expiry, redelivery, dead letters)");
                    }
                }
            }
        }
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_get_distinct_stable_channel_names() {
        let (a, b) = (Cluster::new("public").0, Cluster::new("public").0);
        assert_eq!(a.channel, b.channel);
        assert_ne!(a.node, b.node);
        assert_ne!(a.channel, Cluster::new("agentbus_bb_x").0.channel);
        assert!(a.channel.len() <= 63 && a.channel.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    }

    #[test]
    fn an_offer_is_heard_as_the_record_or_else_as_work_for_its_recipient() {
        use crate::domain::message::Priority;
        use crate::store::EventFeed;
        use crate::store::conformance::{insert, message};

        let (here, there) = (Cluster::new("s").0, Cluster::new("s").0);
        let announcer = Announcer::new(Arc::new(EventFeed::new(16, 0)));
        let mut heard = here.subscribe();
        let record = message("m-1", "codex://a", Priority::High, 1);
        let body = serde_json::to_string(&record).unwrap();
        let mut payloads = Vec::new();
        there.message_payloads(&insert(&record), &body, &mut payloads);
        assert_eq!(payloads, [format!("{}|o|{body}", there.node)]);
        here.received(&payloads[0], &announcer);
        assert_eq!(heard.try_recv().unwrap(), Signal::Offer(Box::new(record.clone())));
        // A node's own offers were acted on where they were sent.
        let mut own = there.subscribe();
        there.received(&payloads[0], &announcer);
        assert!(own.try_recv().is_err());
        // A record this build cannot read still wakes its recipient.
        let unreadable = format!(
            "{}|o|{{\"recipient\":\"codex://a\",\"state\":\"Sideways\"}}",
            there.node
        );
        here.received(&unreadable, &announcer);
        assert_eq!(
            heard.try_recv().unwrap(),
            Signal::Work(AgentId::parse("codex://a").unwrap())
        );
        // Too long to offer: work for the recipient.
        let mut payloads = Vec::new();
        there.message_payloads(&insert(&record), &"x".repeat(MAX_OFFER + 1), &mut payloads);
        assert_eq!(payloads, [format!("{}|w|codex://a", there.node)]);
    }
}
