//! Persistence behind one trait. Backends: [`memory`] for tests and
//! throwaway runs, [`sqlite`] (default) for a durable single node,
//! [`postgres`] for a database that several nodes will share.
//!
//! A write is a compare-and-swap on the session's version plus an appended
//! event with the next global sequence number, committed atomically. Each
//! backend announces committed events, in sequence order, on its
//! [`EventFeed`]; watchers replay from the store and follow the feed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::domain::agent::Agent;
use crate::domain::message::{MessageId, MessageRecord};
use crate::domain::session::{Session, SessionEvent, SessionEventKind, SessionState};
use crate::domain::token::AgentToken;
use crate::domain::{AgentId, SessionId, Timestamp};

mod error;
mod index;
pub mod memory;
pub mod postgres;
pub mod sqlite;

#[cfg(test)]
pub(crate) mod conformance;

use error::check_version;
pub use error::{Record, StoreError};

/// One change to commit: the new session and the event describing it.
#[derive(Debug, Clone)]
pub struct SessionChange {
    pub session: Session,
    /// `None` creates the session (which must not exist); `Some(v)` updates
    /// it only if the stored version is `v`.
    pub expected_version: Option<u64>,
    pub kind: SessionEventKind,
    pub agent_id: Option<AgentId>,
    pub task_id: Option<String>,
    pub timestamp: Timestamp,
}

/// A compare-and-swap write of one message record.
#[derive(Debug, Clone)]
pub struct MessageWrite {
    pub record: MessageRecord,
    /// `None`: the message must not exist yet. Every backend checks a write
    /// in this order and fails with the first check that does not hold:
    /// 1. the version: a taken id, of an open or a closed message, fails
    ///    with [`StoreError::AlreadyExists`]; an update of a missing or a
    ///    changed message with [`StoreError::NotFound`] or
    ///    [`StoreError::Conflict`];
    /// 2. `require_recipient`;
    /// 3. `inbox_limit`.
    ///
    /// The id comes first because a resend (the same id again) is told by it
    /// alone, whatever changed since the first send: a caller need not look
    /// the id up after a refusal. The recipient comes before its inbox: an
    /// unregistered agent has no inbox to be full, and its `NotFound` sends
    /// the caller to resolve the recipient again.
    pub expected: Option<u64>,
    /// For new messages: fail with [`StoreError::InboxFull`] if the
    /// recipient already has this many open messages.
    pub inbox_limit: Option<u64>,
    /// Fail with [`StoreError::NotFound`] unless `record.recipient` is a
    /// registered agent when the write commits.
    pub require_recipient: bool,
}

impl From<MessageWrite> for WriteSet {
    fn from(write: MessageWrite) -> Self {
        Self {
            session: None,
            messages: vec![write],
        }
    }
}

/// What [`Store::inbox`] read.
#[derive(Debug, Default)]
pub struct Inbox {
    pub records: Vec<MessageRecord>,
    /// The earliest time after `now` at which a QUEUED message of the
    /// agent becomes deliverable; `None` if none waits for a later time.
    pub later: Option<Timestamp>,
}

/// Gauges read from the store, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounts {
    pub active_sessions: u64,
    pub registered_agents: u64,
    /// Bytes the database takes (files, or relations); `None` in memory.
    pub size_bytes: Option<u64>,
}

/// Writes committed together or not at all.
#[derive(Debug, Clone, Default)]
pub struct WriteSet {
    pub session: Option<SessionChange>,
    pub messages: Vec<MessageWrite>,
}

#[derive(Debug, Clone, Default)]
pub struct SessionQuery {
    /// Empty: any state.
    pub states: Vec<SessionState>,
    /// Sessions this agent ever joined.
    pub participant: Option<AgentId>,
    /// Resume after this cursor (from a previous page).
    pub after: Option<u64>,
    pub limit: usize,
    /// End the page before the sessions' [`Session::wire_size`] would add up
    /// to more than this (a page holds at least one session): a page fits one
    /// answer, and listing large sessions loads no more than that.
    pub max_bytes: Option<usize>,
}

#[derive(Debug, Clone, Default)]
pub struct SessionPage {
    /// In creation order.
    pub sessions: Vec<Session>,
    /// Set when more sessions may follow.
    pub next: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Empty: every session.
    pub session_ids: Vec<SessionId>,
    /// Empty: every kind.
    pub kinds: Vec<SessionEventKind>,
}

impl EventFilter {
    pub fn matches(&self, event: &SessionEvent) -> bool {
        (self.session_ids.is_empty() || self.session_ids.contains(event.session_id()))
            && (self.kinds.is_empty() || self.kinds.contains(&event.kind))
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies every write of the set atomically (a session change also
    /// appends its event); returns the session event once it is durable.
    async fn write(&self, set: WriteSet) -> Result<Option<Arc<SessionEvent>>, StoreError>;

    /// Applies message writes that need not survive a crash: delivery
    /// claims. Versions are checked as by [`Store::write`], and later reads
    /// and writes see the result, but a backend may keep it in memory only;
    /// after a restart the messages are as before the lease (queued) and are
    /// delivered again, which at-least-once delivery allows.
    async fn lease(&self, writes: Vec<MessageWrite>) -> Result<(), StoreError> {
        self.write(WriteSet {
            session: None,
            messages: writes,
        })
        .await
        .map(drop)
    }

    /// Atomically applies the change and appends its event.
    async fn commit(&self, change: SessionChange) -> Result<Arc<SessionEvent>, StoreError> {
        let set = WriteSet {
            session: Some(change),
            messages: Vec::new(),
        };
        self.write(set)
            .await?
            .ok_or_else(|| StoreError::Backend("a session change produced no event".into()))
    }

    async fn get_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError>;

    async fn list_sessions(&self, query: &SessionQuery) -> Result<SessionPage, StoreError>;

    /// Active sessions whose `updated_at` is before `before`, oldest first.
    async fn idle_sessions(&self, before: Timestamp, limit: usize) -> Result<Vec<Session>, StoreError>;

    /// Events with `after < sequence <= up_to` that match `filter`, in order,
    /// at most `limit` of them. Fails with [`StoreError::EventsRemoved`] if
    /// retention removed events after `after`: never a silent gap.
    async fn events(
        &self,
        after: u64,
        up_to: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<Vec<Arc<SessionEvent>>, StoreError>;

    /// Writes the agent if its stored version is `expected` (`None`: it
    /// must not be registered yet).
    async fn put_agent(&self, agent: Agent, expected: Option<u64>) -> Result<Agent, StoreError>;

    async fn get_agent(&self, id: &AgentId) -> Result<Option<Agent>, StoreError>;

    /// Whether the agent is registered, without copying it.
    async fn is_registered(&self, id: &AgentId) -> Result<bool, StoreError> {
        Ok(self.get_agent(id).await?.is_some())
    }

    /// Agents in id order, starting after `after`.
    async fn list_agents(&self, after: Option<&AgentId>, limit: usize) -> Result<Vec<Agent>, StoreError>;

    /// Removes the agent; false if it was not registered.
    async fn delete_agent(&self, id: &AgentId) -> Result<bool, StoreError>;

    /// Stores a new agent token; [`StoreError::AlreadyExists`] if its id
    /// is taken.
    async fn put_token(&self, token: AgentToken) -> Result<(), StoreError>;

    /// Every stored token, oldest first (the application keeps them in
    /// memory).
    async fn tokens(&self) -> Result<Vec<AgentToken>, StoreError>;

    /// Removes the token; false if there was none.
    async fn delete_token(&self, token_id: &str) -> Result<bool, StoreError>;

    /// Records when the token was last used; nothing if it is gone.
    async fn touch_token(&self, token_id: &str, at: Timestamp) -> Result<(), StoreError>;

    async fn get_message(&self, id: &MessageId) -> Result<Option<MessageRecord>, StoreError>;

    /// The messages with these ids, each once, in no particular order (a
    /// missing id is left out): one read for a batch of acks.
    async fn get_messages(&self, ids: &[MessageId]) -> Result<Vec<MessageRecord>, StoreError> {
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            found.extend(self.get_message(id).await?);
        }
        Ok(found)
    }

    /// Messages with `in_reply_to == id`, oldest first, at most `limit`.
    async fn replies(&self, id: &MessageId, limit: usize) -> Result<Vec<MessageRecord>, StoreError>;

    /// QUEUED messages for `agent` deliverable at `now` (higher priority
    /// first, then oldest first, at most `limit`), and when the next one
    /// that is not deliverable yet will be. One read, so that an inbox
    /// stream that drained the inbox knows how long it may sleep without
    /// asking again.
    async fn inbox(&self, agent: &AgentId, now: Timestamp, limit: usize) -> Result<Inbox, StoreError>;

    /// Open messages whose ack deadline (DELIVERED) or routing timeout
    /// passed by `now`.
    async fn due_messages(&self, now: Timestamp, limit: usize) -> Result<Vec<MessageRecord>, StoreError>;

    /// Open (QUEUED or DELIVERED) messages for `agent`.
    async fn open_messages(&self, agent: &AgentId, limit: usize) -> Result<Vec<MessageRecord>, StoreError>;

    async fn inbox_depth(&self, agent: &AgentId) -> Result<u64, StoreError>;

    async fn counts(&self) -> Result<StoreCounts, StoreError>;

    /// Retention: removes up to `limit` closed messages (acked, answered,
    /// dead-lettered, expired) that closed before `before`, oldest first;
    /// returns how many. A resend of a removed message's id is a new message.
    async fn prune_messages(&self, before: Timestamp, limit: usize) -> Result<u64, StoreError>;

    /// Retention: removes up to `limit` of the oldest events committed
    /// before `before`, in sequence order, and never the latest one. What is
    /// kept is every event after some sequence number, so a reader asking
    /// for removed events is told ([`StoreError::EventsRemoved`]), and the
    /// sequence never restarts.
    async fn prune_events(&self, before: Timestamp, limit: usize) -> Result<u64, StoreError>;

    /// Retention: removes up to `limit` ended sessions (not active) last
    /// changed before `before`; returns how many.
    async fn prune_sessions(&self, before: Timestamp, limit: usize) -> Result<u64, StoreError>;

    /// Gives space freed by pruning back to the file system, a bounded
    /// amount per call (SQLite's incremental vacuum). Elsewhere nothing to
    /// do: memory is freed at once, PostgreSQL's autovacuum reuses space.
    async fn reclaim(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Where committed events are announced, in sequence order.
    fn feed(&self) -> &EventFeed;

    /// What other nodes sharing this store changed that this node's
    /// streams wait for; `None` for a store only this process uses.
    fn signals(&self) -> Option<broadcast::Receiver<Signal>> {
        None
    }

    /// Whether a send may store its message already claimed for an inbox
    /// stream of this node that waits with nothing to deliver, and hand it
    /// over (see `Messaging::insert`). Worth it where a claim is a write of
    /// its own to the shared store (PostgreSQL): it saves the inbox read and
    /// the claim's row write. Not where claims live in memory beside a
    /// queued row (SQLite, memory): nothing to save, and after a restart the
    /// message would wait out its ack deadline instead of being queued.
    fn claims_on_send(&self) -> bool {
        false
    }

    /// Whether this node runs the background work (expiry, redelivery and
    /// dead-letter sweeps). With several nodes on one store, one at a time
    /// does; the work stays correct if two overlap for a moment (every
    /// change is a compare-and-swap), only wasted.
    fn runs_background_work(&self) -> bool {
        true
    }

    /// Records, for the other nodes sharing this store, which agents have
    /// an inbox stream open on this node (for `alive_for` unless recorded
    /// again) and when each was last seen. Nothing for a store only this
    /// process uses.
    async fn publish_presence(&self, _agents: &[AgentPresence], _alive_for: Duration) -> Result<(), StoreError> {
        Ok(())
    }

    /// What every node published about these agents (an agent no node
    /// published is left out).
    async fn presence(&self, _agents: &[AgentId]) -> Result<Vec<AgentPresence>, StoreError> {
        Ok(Vec::new())
    }

    /// Whether the store can serve now (for health checks).
    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Flushes everything and refuses further writes.
    async fn close(&self) -> Result<(), StoreError>;
}

/// Whether an agent has an inbox stream open, and when it was last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPresence {
    pub agent_id: AgentId,
    pub online: bool,
    pub last_seen: Option<Timestamp>,
}

/// A change another node committed, for the streams of this one.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// A message became deliverable to this agent (or it was
    /// unregistered): its inbox streams look again.
    Work(AgentId),
    /// This message was queued for its recipient, as stored: a stream of
    /// the recipient that waits with nothing to deliver may claim it
    /// without reading the inbox; otherwise it is [`Signal::Work`].
    Offer(Box<MessageRecord>),
    /// A delivery to this agent was acknowledged or closed: room under a
    /// stream's prefetch limit.
    Room(AgentId),
    /// A reply to this message was stored: a SYNC sender may be waiting.
    Reply(MessageId),
    /// Signals may have been missed (the store reconnected, or this node
    /// fell behind): every stream looks again.
    Resync,
}

/// Announces committed events in sequence order and remembers the latest.
#[derive(Debug)]
pub struct EventFeed {
    sender: broadcast::Sender<Arc<SessionEvent>>,
    last: AtomicU64,
}

impl EventFeed {
    pub fn new(capacity: usize, last_sequence: u64) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self {
            sender,
            last: AtomicU64::new(last_sequence),
        }
    }

    /// Every event with a sequence up to this one is committed and readable.
    pub fn last_sequence(&self) -> u64 {
        self.last.load(Ordering::Acquire)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<SessionEvent>> {
        self.sender.subscribe()
    }

    /// Called by backends, in sequence order, after the commit.
    fn publish(&self, event: Arc<SessionEvent>) {
        self.last.store(event.sequence, Ordering::Release);
        // No subscribers is fine: nobody is watching.
        let _ = self.sender.send(event);
    }
}

fn session_record(change: &SessionChange) -> impl FnOnce() -> Record + '_ {
    move || Record::Session(change.session.session_id.clone())
}

fn message_record(record: &MessageRecord) -> impl FnOnce() -> Record + '_ {
    move || Record::Message(record.id().clone())
}

fn agent_record(agent: &Agent) -> impl FnOnce() -> Record + '_ {
    move || Record::Agent(agent.id().clone())
}

fn event_of(change: SessionChange, sequence: u64) -> SessionEvent {
    SessionEvent {
        sequence,
        kind: change.kind,
        timestamp: change.timestamp,
        agent_id: change.agent_id,
        task_id: change.task_id,
        session: change.session,
    }
}
