//! What one write does inside the writer's transaction: the checks of the
//! contract against everything committed or staged before it, then the
//! rows. Runs on the writer thread only.

use std::sync::{Mutex, MutexGuard, PoisonError};

use foldhash::HashMap;
use rusqlite::{Connection, OptionalExtension, params};

use super::backend;
use super::hot::{Hot, HotChange};
use super::rows::{message_state_code, state_code};
use super::writer::{EncodedSet, in_savepoint};
use crate::domain::agent::Agent;
use crate::domain::message::{MessageId, MessageRecord};
use crate::domain::session::SessionEventKind;
use crate::domain::token::AgentToken;
use crate::domain::{AgentId, Timestamp};
use crate::store::{
    MessageWrite, Record, SessionChange, StoreError, agent_record, check_version, message_record, session_record,
};

/// Applies one write set inside its own savepoint; `sequence` is the
/// event number for its session change. A set of one message needs none:
/// it writes one statement, which SQLite undoes by itself if it fails.
pub(super) fn apply(
    conn: &Connection,
    set: &EncodedSet,
    sequence: Option<u64>,
    earlier: &Staged,
    hot: &Mutex<Hot>,
) -> Result<Staged, StoreError> {
    let write = |conn: &Connection| {
        if let (Some((change, body)), Some(sequence)) = (&set.session, sequence) {
            apply_session(conn, change, body, sequence)?;
        }
        let mut staged = Staged::default();
        for (write, body) in &set.messages {
            let view = View {
                set: &staged,
                earlier,
                hot,
            };
            let was_open_for = apply_message(conn, write, body, &view)?;
            staged.message(&write.record, was_open_for);
        }
        Ok(staged)
    };
    match (&set.session, set.messages.len()) {
        (None, 1) => write(conn),
        _ => in_savepoint(conn, write),
    }
}

/// What earlier writes of the transaction being built changed: [`Hot`]
/// shows it only after the commit.
#[derive(Default)]
pub(super) struct Staged {
    /// Version, and the recipient while it is open.
    messages: HashMap<MessageId, (u64, Option<AgentId>)>,
    /// Change in open messages per recipient.
    opened: HashMap<AgentId, i64>,
    /// Agents registered (true) or removed (false).
    agents: HashMap<AgentId, bool>,
}

impl Staged {
    /// `was_open_for`: the recipient of the previous version, if it was open
    /// (a fallback handover moves an open message to another recipient).
    fn message(&mut self, record: &MessageRecord, was_open_for: Option<AgentId>) {
        if let Some(previous) = was_open_for {
            *self.opened.entry(previous).or_default() -= 1;
        }
        let open_for = record.state.is_open().then(|| record.recipient.clone());
        if let Some(recipient) = &open_for {
            *self.opened.entry(recipient.clone()).or_default() += 1;
        }
        self.messages.insert(record.id().clone(), (record.version, open_for));
    }

    pub(super) fn agent(&mut self, change: &HotChange) {
        match change {
            HotChange::PutAgent(agent) => self.agents.insert(agent.id().clone(), true),
            HotChange::DeleteAgent(id) => self.agents.insert(id.clone(), false),
        };
    }

    /// Adds the changes of a later write set.
    pub(super) fn merge(&mut self, later: Staged) {
        self.messages.extend(later.messages);
        for (agent, delta) in later.opened {
            *self.opened.entry(agent).or_default() += delta;
        }
        self.agents.extend(later.agents);
    }
}

/// The state a write in the transaction sees: its own write set's changes,
/// over the earlier sets' ([`Staged`]), over [`Hot`], over the disk for
/// messages that are no longer open.
struct View<'a> {
    set: &'a Staged,
    earlier: &'a Staged,
    hot: &'a Mutex<Hot>,
}

impl View<'_> {
    fn layers(&self) -> [&Staged; 2] {
        [self.set, self.earlier]
    }

    /// The message's current version, and its recipient if it is open. New
    /// messages are not looked up on disk: the primary key refuses one
    /// stored there.
    fn message(&self, conn: &Connection, write: &MessageWrite) -> Result<(Option<u64>, Option<AgentId>), StoreError> {
        let id = write.record.id();
        if let Some((version, open_for)) = self.layers().iter().find_map(|staged| staged.messages.get(id)) {
            return Ok((Some(*version), open_for.clone()));
        }
        let mut hot = self.hot();
        if let Some(open) = hot.open.get(id) {
            let found = (Some(open.version), Some(open.recipient.clone()));
            hot.staging.insert(id.clone());
            return Ok(found);
        }
        drop(hot);
        if write.expected.is_none() {
            return Ok((None, None));
        }
        let stored = conn
            .prepare_cached("SELECT version FROM messages WHERE message_id = ?1")
            .and_then(|mut stmt| stmt.query_row([id.as_str()], |r| r.get(0)).optional())
            .map_err(backend)?;
        Ok((stored, None))
    }

    fn is_registered(&self, agent: &AgentId) -> bool {
        match self.layers().iter().find_map(|staged| staged.agents.get(agent)) {
            Some(registered) => *registered,
            None => self.hot().agents.contains_key(agent),
        }
    }

    fn open_count(&self, agent: &AgentId) -> u64 {
        let staged: i64 = self.layers().iter().filter_map(|staged| staged.opened.get(agent)).sum();
        let open = self.hot().index.open_count(agent) as i64 + staged;
        open.max(0) as u64
    }

    fn hot(&self) -> MutexGuard<'_, Hot> {
        self.hot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn apply_session(conn: &Connection, change: &SessionChange, body: &str, sequence: u64) -> Result<(), StoreError> {
    let session = &change.session;
    let id = session.session_id.as_str();
    let stored: Option<(u64, u64)> = conn
        .prepare_cached("SELECT version, created_seq FROM sessions WHERE session_id = ?1")
        .and_then(|mut stmt| stmt.query_row([id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(backend)?;
    check_version(
        session_record(change),
        change.expected_version,
        stored.map(|(version, _)| version),
    )?;
    let state = state_code(session.state);
    let updated = session.updated_at.unix_micros();
    let created_seq = match stored {
        Some((_, created_seq)) => {
            conn.prepare_cached(
                "UPDATE sessions SET state = ?2, version = ?3, updated_at = ?4, body = ?5 WHERE session_id = ?1",
            )
            .and_then(|mut stmt| stmt.execute(params![id, state, session.version, updated, body]))
            .map_err(backend)?;
            created_seq
        }
        None => {
            conn.prepare_cached(
                "INSERT INTO sessions (session_id, created_seq, state, version, updated_at, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut stmt| stmt.execute(params![id, sequence, state, session.version, updated, body]))
            .map_err(backend)?;
            sequence
        }
    };
    if matches!(
        change.kind,
        SessionEventKind::SessionCreated | SessionEventKind::ParticipantAdded
    ) {
        let mut stmt = conn
            .prepare_cached(
                "INSERT OR IGNORE INTO session_participants (agent_id, created_seq, session_id) VALUES (?1, ?2, ?3)",
            )
            .map_err(backend)?;
        for participant in &session.participants {
            stmt.execute(params![participant.agent_id.as_str(), created_seq, id])
                .map_err(backend)?;
        }
    }
    conn.prepare_cached(
        "INSERT INTO session_events (seq, session_id, kind, at, agent_id, task_id, session) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            sequence,
            id,
            change.kind.as_str(),
            change.timestamp.unix_micros(),
            change.agent_id.as_ref().map(AgentId::as_str),
            change.task_id.as_deref(),
            body
        ])
    })
    .map_err(backend)?;
    Ok(())
}

/// Why the write may not commit once its version checked out: its
/// recipient is not registered, or that inbox is full.
fn refusal(write: &MessageWrite, view: &View<'_>) -> Option<StoreError> {
    let recipient = &write.record.recipient;
    if write.require_recipient && !view.is_registered(recipient) {
        return Some(StoreError::NotFound(Record::Agent(recipient.clone())));
    }
    match (write.expected, write.inbox_limit) {
        (None, Some(limit)) if view.open_count(recipient) >= limit => Some(StoreError::InboxFull {
            agent: recipient.clone(),
            limit,
        }),
        _ => None,
    }
}

fn is_stored(conn: &Connection, id: &MessageId) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT 1 FROM messages WHERE message_id = ?1")
        .and_then(|mut stmt| stmt.exists([id.as_str()]))
        .map_err(backend)
}

/// Writes the message; answers the recipient of its previous version if that
/// was open.
fn apply_message(
    conn: &Connection,
    write: &MessageWrite,
    body: &str,
    view: &View<'_>,
) -> Result<Option<AgentId>, StoreError> {
    let record = &write.record;
    let id = record.id().as_str();
    let (stored, was_open_for) = view.message(conn, write)?;
    check_version(message_record(record), write.expected, stored)?;
    if let Some(refusal) = refusal(write, view) {
        // A new message's id is not looked up on disk on the way in (the
        // primary key refuses a taken one), but a taken id is the first
        // refusal of the contract ([`MessageWrite::expected`]): look now.
        if write.expected.is_none() && is_stored(conn, record.id())? {
            return Err(StoreError::AlreadyExists(message_record(record)()));
        }
        return Err(refusal);
    }
    let state = message_state_code(record.state);
    let columns = params![
        id,
        record.recipient.as_str(),
        state,
        record.message.priority as i64,
        record.accepted_at.unix_micros(),
        record.available_at.unix_micros(),
        record.expires_at.unix_micros(),
        record.message.in_reply_to.as_ref().map(MessageId::as_str),
        record.version,
        body
    ];
    // An UPDATE sets only what changes after the insert (the message stays
    // as stored), so the index on replies is left alone; REPLACE would
    // rewrite every index. The INSERT names the message's body row to come:
    // the one after the last, which [`insert_body`] then writes.
    let sql = if stored.is_some() {
        "UPDATE messages SET recipient = ?2, state = ?3, available_at = ?6, expires_at = ?7, version = ?9, body = ?10
         WHERE message_id = ?1"
    } else {
        "INSERT INTO messages
         (message_id, recipient, state, priority, accepted_at, available_at, expires_at, in_reply_to, version, body,
          body_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,
          (SELECT COALESCE(MAX(body_id), 0) + 1 FROM message_bodies))"
    };
    match conn.prepare_cached(sql).and_then(|mut stmt| stmt.execute(columns)) {
        Ok(_) if stored.is_some() => Ok(was_open_for),
        Ok(_) => insert_body(conn, record).map(|()| was_open_for),
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
            Err(StoreError::AlreadyExists(message_record(record)()))
        }
        Err(e) => Err(backend(e)),
    }
}

/// Stores the message of the row just inserted, in the body row it names.
/// A write of one message runs without a savepoint, so if this fails, the
/// row goes too.
fn insert_body(conn: &Connection, record: &MessageRecord) -> Result<(), StoreError> {
    let message = record
        .message
        .json()
        .map_err(|e| StoreError::Backend(format!("cannot encode a message: {e}")))?;
    let inserted = conn
        .prepare_cached(
            "INSERT INTO message_bodies (body_id, message)
             VALUES ((SELECT body_id FROM messages WHERE rowid = last_insert_rowid()), ?1)",
        )
        .and_then(|mut stmt| stmt.execute([message.get()]));
    inserted.map(drop).map_err(|e| {
        let removed = conn
            .prepare_cached("DELETE FROM messages WHERE message_id = ?1")
            .and_then(|mut stmt| stmt.execute([record.id().as_str()]));
        if let Err(also) = removed {
            tracing::warn!(error = %also, "cannot remove a message whose body could not be stored");
        }
        backend(e)
    })
}

/// Writes the agent if its stored version is `expected`.
pub(super) fn put_agent(
    conn: &Connection,
    agent: &Agent,
    body: &str,
    expected: Option<u64>,
) -> Result<u64, StoreError> {
    let id = agent.id().as_str();
    let current: Option<u64> = conn
        .prepare_cached("SELECT version FROM agents WHERE agent_id = ?1")
        .and_then(|mut stmt| stmt.query_row([id], |r| r.get(0)).optional())
        .map_err(backend)?;
    check_version(agent_record(agent), expected, current)?;
    conn.prepare_cached("INSERT OR REPLACE INTO agents (agent_id, version, body) VALUES (?1, ?2, ?3)")
        .and_then(|mut stmt| stmt.execute(params![id, agent.version, body]))
        .map_err(backend)
        .map(|rows| rows as u64)
}

pub(super) fn delete_agent(conn: &Connection, id: &AgentId) -> Result<u64, StoreError> {
    conn.execute("DELETE FROM agents WHERE agent_id = ?1", [id.as_str()])
        .map_err(backend)
        .map(|rows| rows as u64)
}

/// Stores a new token after the last one issued.
pub(super) fn put_token(conn: &Connection, token: AgentToken, body: &str) -> Result<u64, StoreError> {
    let inserted = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO agent_tokens (token_id, issued, body)
             VALUES (?1, (SELECT COALESCE(MAX(issued), 0) + 1 FROM agent_tokens), ?2)",
        )
        .and_then(|mut stmt| stmt.execute(params![token.token_id, body]))
        .map_err(backend)?;
    if inserted == 0 {
        return Err(StoreError::AlreadyExists(Record::Token(token.token_id)));
    }
    Ok(1)
}

pub(super) fn delete_token(conn: &Connection, token_id: &str) -> Result<u64, StoreError> {
    conn.execute("DELETE FROM agent_tokens WHERE token_id = ?1", [token_id])
        .map_err(backend)
        .map(|rows| rows as u64)
}

pub(super) fn touch_token(conn: &Connection, token_id: &str, at: Timestamp) -> Result<u64, StoreError> {
    conn.execute(
        "UPDATE agent_tokens SET body = json_set(body, '$.last_used_at', ?2) WHERE token_id = ?1",
        params![token_id, at.unix_micros()],
    )
    .map_err(backend)
    .map(|rows| rows as u64)
}
