//! In-memory indexes of messages: what the SQLite indexes give the durable
//! store, so that no query scans every message. Used by the memory store
//! over all its messages and by the SQLite store over its hot set of open
//! messages.

use std::cmp::Reverse;
use std::collections::BTreeSet;

use foldhash::{HashMap, HashSet};

use super::Inbox;
use crate::domain::message::{MessageId, MessageRecord, MessageState, Priority};
use crate::domain::{AgentId, Timestamp};

#[derive(Default)]
pub struct MessageIndex {
    /// Queued messages per recipient in delivery order.
    queued: HashMap<AgentId, BTreeSet<(Reverse<Priority>, Timestamp, MessageId)>>,
    /// Queued or delivered (open) messages per recipient.
    open: HashMap<AgentId, HashSet<MessageId>>,
    /// Open messages by when the sweeper must look at them.
    due: BTreeSet<(Timestamp, MessageId)>,
    /// Replies by the message they answer.
    replies: HashMap<MessageId, Vec<MessageId>>,
}

fn queue_key(m: &MessageRecord) -> (Reverse<Priority>, Timestamp, MessageId) {
    (Reverse(m.message.priority), m.accepted_at, m.id().clone())
}

/// When a delivered message's ack is overdue or an open one expires.
fn due_at(m: &MessageRecord) -> Option<Timestamp> {
    match m.state {
        MessageState::Delivered => Some(m.available_at.min(m.expires_at)),
        MessageState::Queued => Some(m.expires_at),
        _ => None,
    }
}

impl MessageIndex {
    /// Forgets `m` (the version about to be replaced); replies stay indexed.
    pub fn remove(&mut self, m: &MessageRecord) {
        if m.state == MessageState::Queued
            && let Some(queue) = self.queued.get_mut(&m.recipient)
        {
            queue.remove(&queue_key(m));
            if queue.is_empty() {
                self.queued.remove(&m.recipient);
            }
        }
        if m.state.is_open()
            && let Some(open) = self.open.get_mut(&m.recipient)
        {
            open.remove(m.id());
            if open.is_empty() {
                self.open.remove(&m.recipient);
            }
        }
        if let Some(at) = due_at(m) {
            self.due.remove(&(at, m.id().clone()));
        }
    }

    /// Indexes `m`; `is_new` (its first version) also indexes it as a reply.
    pub fn add(&mut self, m: &MessageRecord, is_new: bool) {
        if m.state == MessageState::Queued {
            self.queued.entry(m.recipient.clone()).or_default().insert(queue_key(m));
        }
        if m.state.is_open() {
            self.open.entry(m.recipient.clone()).or_default().insert(m.id().clone());
        }
        if let Some(at) = due_at(m) {
            self.due.insert((at, m.id().clone()));
        }
        if let (true, Some(original)) = (is_new, &m.message.in_reply_to) {
            self.replies.entry(original.clone()).or_default().push(m.id().clone());
        }
    }

    /// Forgets `m` for good (retention removed it): also as a reply, and the
    /// replies to it.
    pub fn forget(&mut self, m: &MessageRecord) {
        self.remove(m);
        self.replies.remove(m.id());
        if let Some(original) = &m.message.in_reply_to
            && let Some(replies) = self.replies.get_mut(original)
        {
            replies.retain(|id| id != m.id());
            if replies.is_empty() {
                self.replies.remove(original);
            }
        }
    }

    pub fn open_count(&self, agent: &AgentId) -> usize {
        self.open.get(agent).map_or(0, HashSet::len)
    }

    /// Queued messages for `agent` available at `now`, in delivery order,
    /// and when the next one not available yet will be.
    pub fn inbox<'a>(
        &self,
        agent: &AgentId,
        now: Timestamp,
        limit: usize,
        get: impl Fn(&MessageId) -> Option<&'a MessageRecord>,
    ) -> Inbox {
        let mut inbox = Inbox::default();
        let Some(queue) = self.queued.get(agent) else {
            return inbox;
        };
        for m in queue.iter().filter_map(|(_, _, id)| get(id)) {
            if m.available_at > now {
                inbox.later = Some(inbox.later.map_or(m.available_at, |later| later.min(m.available_at)));
            } else if inbox.records.len() < limit {
                inbox.records.push(m.clone());
            }
        }
        inbox
    }

    /// Delivered messages past their ack deadline and open ones past their
    /// routing timeout.
    pub fn due<'a>(
        &self,
        now: Timestamp,
        limit: usize,
        get: impl Fn(&MessageId) -> Option<&'a MessageRecord>,
    ) -> Vec<MessageRecord> {
        let due = self
            .due
            .iter()
            .take_while(|(at, _)| *at <= now)
            .filter_map(|(_, id)| get(id));
        due.take(limit).cloned().collect()
    }

    pub fn open<'a>(
        &self,
        agent: &AgentId,
        limit: usize,
        get: impl Fn(&MessageId) -> Option<&'a MessageRecord>,
    ) -> Vec<MessageRecord> {
        let Some(open) = self.open.get(agent) else {
            return Vec::new();
        };
        open.iter().filter_map(get).take(limit).cloned().collect()
    }

    /// Replies to `id`, oldest first.
    pub fn replies<'a>(
        &self,
        id: &MessageId,
        limit: usize,
        get: impl Fn(&MessageId) -> Option<&'a MessageRecord>,
    ) -> Vec<MessageRecord> {
        let ids = self.replies.get(id).map_or(&[][..], Vec::as_slice);
        let mut replies: Vec<&MessageRecord> = ids.iter().filter_map(get).collect();
        replies.sort_by_key(|m| m.accepted_at);
        replies.into_iter().take(limit).cloned().collect()
    }
}
