//! In-memory store for tests and throwaway runs. Same semantics as the
//! durable backends; nothing survives the process.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use foldhash::{HashMap, HashMapExt};

use super::index::MessageIndex;
use super::{
    EventFeed, EventFilter, Inbox, Record, SessionPage, SessionQuery, Store, StoreCounts, StoreError, WriteSet,
    agent_record, check_version, event_of, message_record, session_record,
};
use crate::domain::agent::Agent;
use crate::domain::message::{MessageId, MessageRecord};
use crate::domain::session::{Session, SessionEvent, SessionState};
use crate::domain::token::AgentToken;
use crate::domain::{AgentId, SessionId, Timestamp};

pub struct MemoryStore {
    inner: Mutex<Inner>,
    feed: EventFeed,
}

#[derive(Default)]
struct Inner {
    /// Session and the sequence of its creation event (its list cursor).
    sessions: HashMap<SessionId, (Session, u64)>,
    by_creation: BTreeMap<u64, SessionId>,
    /// The events retention kept: the first has sequence `removed_events + 1`.
    events: VecDeque<Arc<SessionEvent>>,
    removed_events: u64,
    agents: BTreeMap<AgentId, Agent>,
    messages: HashMap<MessageId, MessageRecord>,
    /// In issue order.
    tokens: Vec<AgentToken>,
    index: MessageIndex,
    /// Closed messages by when they closed, for retention.
    closed_messages: BTreeSet<(Timestamp, MessageId)>,
    closed: bool,
}

impl Inner {
    fn last_sequence(&self) -> u64 {
        self.removed_events + self.events.len() as u64
    }
}

impl MemoryStore {
    pub fn new(feed_capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            feed: EventFeed::new(feed_capacity, 0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied change:
        // every mutation below completes before the guard drops.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The lock, unless the store is closed to writes.
    fn open(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        let inner = self.lock();
        if inner.closed {
            return Err(StoreError::Closed);
        }
        Ok(inner)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn write(&self, set: WriteSet) -> Result<Option<Arc<SessionEvent>>, StoreError> {
        let mut inner = self.open()?;
        // Check everything first so a failure changes nothing.
        if let Some(change) = &set.session {
            let stored = inner.sessions.get(&change.session.session_id).map(|(s, _)| s.version);
            check_version(session_record(change), change.expected_version, stored)?;
        }
        // Records written by earlier writes of this set count as stored,
        // exactly as inside the SQLite transaction.
        let mut staged: HashMap<&MessageId, &MessageRecord> = HashMap::new();
        for write in &set.messages {
            let record = &write.record;
            let id = record.id();
            let current = staged.get(id).copied().or_else(|| inner.messages.get(id));
            check_version(message_record(record), write.expected, current.map(|m| m.version))?;
            if write.require_recipient && !inner.agents.contains_key(&record.recipient) {
                return Err(StoreError::NotFound(Record::Agent(record.recipient.clone())));
            }
            if let (None, Some(limit)) = (write.expected, write.inbox_limit) {
                let open_for = |m: &MessageRecord| m.recipient == record.recipient && m.state.is_open();
                // Stored open messages not rewritten by this set, plus the
                // staged ones that are open.
                let rewritten = staged
                    .keys()
                    .filter(|id| inner.messages.get(**id).is_some_and(open_for))
                    .count();
                let stored = inner.index.open_count(&record.recipient) - rewritten;
                let open = (stored + staged.values().filter(|m| open_for(m)).count()) as u64;
                if open >= limit {
                    return Err(StoreError::InboxFull {
                        agent: record.recipient.clone(),
                        limit,
                    });
                }
            }
            staged.insert(id, record);
        }
        let inner = &mut *inner;
        for write in set.messages {
            let id = write.record.id().clone();
            let previous = inner.messages.get(&id);
            if let Some(previous) = previous {
                inner.index.remove(previous);
                if !previous.state.is_open() {
                    inner.closed_messages.remove(&(previous.available_at, id.clone()));
                }
            }
            inner.index.add(&write.record, previous.is_none());
            if !write.record.state.is_open() {
                inner.closed_messages.insert((write.record.available_at, id.clone()));
            }
            inner.messages.insert(id, write.record);
        }
        let Some(change) = set.session else { return Ok(None) };
        let id = change.session.session_id.clone();
        let sequence = inner.last_sequence() + 1;
        let created = match inner.sessions.get(&id) {
            Some((_, created)) => *created,
            None => {
                inner.by_creation.insert(sequence, id.clone());
                sequence
            }
        };
        let event = Arc::new(event_of(change, sequence));
        inner.sessions.insert(id, (event.session.clone(), created));
        inner.events.push_back(event.clone());
        // Published under the lock, so the feed sees sequence order.
        self.feed.publish(event.clone());
        Ok(Some(event))
    }

    async fn get_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        Ok(self.lock().sessions.get(id).map(|(s, _)| s.clone()))
    }

    async fn list_sessions(&self, query: &SessionQuery) -> Result<SessionPage, StoreError> {
        let inner = self.lock();
        let Some(start) = query.after.map_or(Some(0), |after| after.checked_add(1)) else {
            return Ok(SessionPage::default());
        };
        let mut page = SessionPage::default();
        let mut last = None;
        let mut bytes = 0;
        for (&cursor, id) in inner.by_creation.range(start..) {
            let Some((session, _)) = inner.sessions.get(id) else {
                continue;
            };
            let state_ok = query.states.is_empty() || query.states.contains(&session.state);
            let participant_ok = query
                .participant
                .as_ref()
                .is_none_or(|agent| session.participant(agent).is_some());
            if !(state_ok && participant_ok) {
                continue;
            }
            bytes += session.wire_size();
            let over = query.max_bytes.is_some_and(|max| bytes > max);
            if page.sessions.len() == query.limit || (over && !page.sessions.is_empty()) {
                page.next = last;
                break;
            }
            page.sessions.push(session.clone());
            last = Some(cursor);
        }
        Ok(page)
    }

    async fn idle_sessions(&self, before: Timestamp, limit: usize) -> Result<Vec<Session>, StoreError> {
        let inner = self.lock();
        let mut idle: Vec<Session> = inner
            .sessions
            .values()
            .map(|(s, _)| s)
            .filter(|s| s.state == SessionState::Active && s.updated_at < before)
            .cloned()
            .collect();
        idle.sort_by_key(|s| s.updated_at);
        idle.truncate(limit);
        Ok(idle)
    }

    async fn events(
        &self,
        after: u64,
        up_to: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<Vec<Arc<SessionEvent>>, StoreError> {
        let inner = self.lock();
        if after < inner.removed_events {
            return Err(StoreError::EventsRemoved {
                after,
                oldest: inner.removed_events + 1,
            });
        }
        let index = |sequence: u64| {
            usize::try_from(sequence - inner.removed_events)
                .unwrap_or(usize::MAX)
                .min(inner.events.len())
        };
        let start = index(after);
        let end = index(up_to.max(after));
        Ok(inner
            .events
            .range(start..end)
            .filter(|e| filter.matches(e))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn put_agent(&self, agent: Agent, expected: Option<u64>) -> Result<Agent, StoreError> {
        let mut inner = self.open()?;
        check_version(
            agent_record(&agent),
            expected,
            inner.agents.get(agent.id()).map(|a| a.version),
        )?;
        inner.agents.insert(agent.id().clone(), agent.clone());
        Ok(agent)
    }

    async fn get_agent(&self, id: &AgentId) -> Result<Option<Agent>, StoreError> {
        Ok(self.lock().agents.get(id).cloned())
    }

    async fn is_registered(&self, id: &AgentId) -> Result<bool, StoreError> {
        Ok(self.lock().agents.contains_key(id))
    }

    async fn list_agents(&self, after: Option<&AgentId>, limit: usize) -> Result<Vec<Agent>, StoreError> {
        use std::ops::Bound;
        let inner = self.lock();
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(inner
            .agents
            .range((start, Bound::Unbounded))
            .take(limit)
            .map(|(_, a)| a.clone())
            .collect())
    }

    async fn delete_agent(&self, id: &AgentId) -> Result<bool, StoreError> {
        let mut inner = self.open()?;
        Ok(inner.agents.remove(id).is_some())
    }

    async fn put_token(&self, token: AgentToken) -> Result<(), StoreError> {
        let mut inner = self.open()?;
        if inner.tokens.iter().any(|t| t.token_id == token.token_id) {
            return Err(StoreError::AlreadyExists(Record::Token(token.token_id)));
        }
        inner.tokens.push(token);
        Ok(())
    }

    async fn tokens(&self) -> Result<Vec<AgentToken>, StoreError> {
        Ok(self.lock().tokens.clone())
    }

    async fn delete_token(&self, token_id: &str) -> Result<bool, StoreError> {
        let mut inner = self.open()?;
        let before = inner.tokens.len();
        inner.tokens.retain(|t| t.token_id != token_id);
        Ok(inner.tokens.len() < before)
    }

    async fn touch_token(&self, token_id: &str, at: Timestamp) -> Result<(), StoreError> {
        let mut inner = self.open()?;
        if let Some(token) = inner.tokens.iter_mut().find(|t| t.token_id == token_id) {
            token.last_used_at = Some(at);
        }
        Ok(())
    }

    async fn get_message(&self, id: &MessageId) -> Result<Option<MessageRecord>, StoreError> {
        Ok(self.lock().messages.get(id).cloned())
    }

    async fn replies(&self, id: &MessageId, limit: usize) -> Result<Vec<MessageRecord>, StoreError> {
        let inner = self.lock();
        Ok(inner.index.replies(id, limit, |id| inner.messages.get(id)))
    }

    async fn inbox(&self, agent: &AgentId, now: Timestamp, limit: usize) -> Result<Inbox, StoreError> {
        let inner = self.lock();
        Ok(inner.index.inbox(agent, now, limit, |id| inner.messages.get(id)))
    }

    async fn due_messages(&self, now: Timestamp, limit: usize) -> Result<Vec<MessageRecord>, StoreError> {
        let inner = self.lock();
        Ok(inner.index.due(now, limit, |id| inner.messages.get(id)))
    }

    async fn open_messages(&self, agent: &AgentId, limit: usize) -> Result<Vec<MessageRecord>, StoreError> {
        let inner = self.lock();
        Ok(inner.index.open(agent, limit, |id| inner.messages.get(id)))
    }

    async fn inbox_depth(&self, agent: &AgentId) -> Result<u64, StoreError> {
        Ok(self.lock().index.open_count(agent) as u64)
    }

    async fn counts(&self) -> Result<StoreCounts, StoreError> {
        let inner = self.lock();
        let active = inner
            .sessions
            .values()
            .filter(|(s, _)| s.state == SessionState::Active)
            .count();
        Ok(StoreCounts {
            active_sessions: active as u64,
            registered_agents: inner.agents.len() as u64,
            size_bytes: None,
        })
    }

    async fn prune_messages(&self, before: Timestamp, limit: usize) -> Result<u64, StoreError> {
        let mut inner = self.open()?;
        let inner = &mut *inner;
        let mut removed = 0;
        while removed < limit
            && let Some(first) = inner.closed_messages.first()
            && first.0 < before
        {
            let Some((_, id)) = inner.closed_messages.pop_first() else {
                break;
            };
            if let Some(record) = inner.messages.remove(&id) {
                inner.index.forget(&record);
            }
            removed += 1;
        }
        Ok(removed as u64)
    }

    async fn prune_events(&self, before: Timestamp, limit: usize) -> Result<u64, StoreError> {
        let mut inner = self.open()?;
        let mut removed = 0;
        while removed < limit && inner.events.len() > 1 && inner.events[0].timestamp < before {
            inner.events.pop_front();
            inner.removed_events += 1;
            removed += 1;
        }
        Ok(removed as u64)
    }

    async fn prune_sessions(&self, before: Timestamp, limit: usize) -> Result<u64, StoreError> {
        let mut inner = self.open()?;
        let ended: Vec<(SessionId, u64)> = inner
            .sessions
            .iter()
            .filter(|(_, (s, _))| !s.is_active() && s.updated_at < before)
            .take(limit)
            .map(|(id, (_, created))| (id.clone(), *created))
            .collect();
        for (id, created) in &ended {
            inner.sessions.remove(id);
            inner.by_creation.remove(created);
        }
        Ok(ended.len() as u64)
    }

    fn feed(&self) -> &EventFeed {
        &self.feed
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.lock().closed = true;
        Ok(())
    }
}
