//! The in-memory mirror of what the hot path reads: every agent, every open
//! message, every active session, as committed. SQLite stays the record;
//! the writer thread applies each commit here, in commit order, before
//! anyone hears of it.

use std::collections::BTreeMap;

use foldhash::{HashMap, HashSet};
use rusqlite::Connection;

use super::rows::{message_rows, query_bodies, query_messages, state_code};
use crate::domain::agent::Agent;
use crate::domain::message::{MessageId, MessageRecord};
use crate::domain::session::{Session, SessionState};
use crate::domain::{AgentId, SessionId};
use crate::store::index::MessageIndex;
use crate::store::{MessageWrite, StoreError, check_version, message_record};

/// Every agent and every open message as committed. SQLite stays the
/// record; this spares the hot path its reads.
#[derive(Default)]
pub(super) struct Hot {
    pub(super) agents: BTreeMap<AgentId, Agent>,
    pub(super) open: HashMap<MessageId, MessageRecord>,
    pub(super) index: MessageIndex,
    /// Open messages the writer's current transaction changes: until it is
    /// done, their leases wait behind it.
    pub(super) staging: HashSet<MessageId>,
    /// Active sessions.
    pub(super) sessions: HashMap<SessionId, Session>,
}

impl Hot {
    pub(super) fn load(conn: &Connection) -> Result<Self, StoreError> {
        let mut hot = Hot::default();
        for agent in query_bodies::<Agent>(conn, "SELECT body FROM agents", [])? {
            hot.agents.insert(agent.id().clone(), agent);
        }
        let open = concat!(message_rows!(), " WHERE m.state IN (1, 2)");
        for record in query_messages(conn, open, [])? {
            hot.message(record);
        }
        let active = [state_code(SessionState::Active)];
        for session in query_bodies::<Session>(conn, "SELECT body FROM sessions WHERE state = ?1", active)? {
            hot.sessions.insert(session.session_id.clone(), session);
        }
        Ok(hot)
    }

    /// Applies a committed message version.
    pub(super) fn message(&mut self, record: MessageRecord) {
        if let Some(previous) = self.open.remove(record.id()) {
            self.index.remove(&previous);
        }
        if record.state.is_open() {
            self.index.add(&record, false);
            self.open.insert(record.id().clone(), record);
        }
    }

    /// Applies a committed session change.
    pub(super) fn session(&mut self, session: &Session) {
        if session.is_active() {
            self.sessions.insert(session.session_id.clone(), session.clone());
        } else {
            self.sessions.remove(&session.session_id);
        }
    }

    /// Claims kept in memory only: checked and applied all or nothing.
    /// Only open messages can be leased: one that is no longer open (acked,
    /// dead-lettered meanwhile) is a lost race, a conflict, as in the memory
    /// store, which still holds its later version.
    pub(super) fn lease(&mut self, writes: Vec<MessageWrite>) -> Result<(), StoreError> {
        for write in &writes {
            let current = self.open.get(write.record.id()).map(|m| m.version);
            match (write.expected, current) {
                (Some(expected), None) => {
                    return Err(StoreError::Conflict {
                        record: message_record(&write.record)(),
                        expected,
                        actual: 0,
                    });
                }
                _ => check_version(message_record(&write.record), write.expected, current)?,
            }
        }
        writes.into_iter().for_each(|write| self.message(write.record));
        Ok(())
    }

    pub(super) fn apply(&mut self, change: HotChange) {
        match change {
            HotChange::PutAgent(agent) => {
                self.agents.insert(agent.id().clone(), *agent);
            }
            HotChange::DeleteAgent(id) => {
                self.agents.remove(&id);
            }
        }
    }
}

/// What a row write changes in [`Hot`] once committed.
pub(super) enum HotChange {
    PutAgent(Box<Agent>),
    DeleteAgent(AgentId),
}
