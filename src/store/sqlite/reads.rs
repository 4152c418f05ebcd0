//! Reads: a small pool of read-only connections, used from blocking tasks,
//! and the queries that need the disk (what [`super::hot::Hot`] does not
//! hold: closed messages, ended sessions, events, tokens, pages).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params, params_from_iter};

use super::rows::{
    decode_event, first, message_rows, parse_session, placeholders, query_bodies, query_messages, state_code, to_i64,
};
use super::{backend, open_error};
use crate::domain::message::{MessageId, MessageRecord};
use crate::domain::session::{Session, SessionEvent, SessionState};
use crate::domain::token::AgentToken;
use crate::domain::{SessionId, Timestamp};
use crate::store::{EventFilter, SessionPage, SessionQuery, StoreCounts, StoreError};

/// Read connections kept open, and reads running at once.
pub(super) const READERS: usize = 4;

/// At most [`READERS`] connections, each used by one blocking task at a
/// time: further reads wait for a turn instead of opening connections (and
/// blocking threads) of their own.
pub(super) struct ReadPool {
    pub(super) path: PathBuf,
    pub(super) idle: Mutex<Vec<Connection>>,
    pub(super) turns: Arc<tokio::sync::Semaphore>,
}

impl ReadPool {
    pub(super) fn take(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(conn);
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(&self.path, flags).map_err(|e| open_error(&self.path, e))?;
        conn.execute_batch("PRAGMA query_only = 1; PRAGMA busy_timeout = 5000;")
            .map_err(backend)?;
        Ok(conn)
    }

    pub(super) fn give(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < READERS {
            idle.push(conn);
        }
    }
}

pub(super) fn session(conn: &Connection, id: &SessionId) -> Result<Option<Session>, StoreError> {
    let body: Option<String> = conn
        .prepare_cached("SELECT body FROM sessions WHERE session_id = ?1")
        .and_then(|mut stmt| stmt.query_row([id.as_str()], |r| r.get(0)).optional())
        .map_err(backend)?;
    body.as_deref().map(parse_session).transpose()
}

pub(super) fn list_sessions(conn: &Connection, query: &SessionQuery) -> Result<SessionPage, StoreError> {
    let after = i64::try_from(query.after.unwrap_or(0)).unwrap_or(i64::MAX);
    let mask: i64 = query.states.iter().fold(0, |mask, s| mask | (1_i64 << state_code(*s)));
    // One row more than the page tells whether another page follows.
    let fetch = i64::try_from(query.limit).unwrap_or(i64::MAX).saturating_add(1);
    let mut statement = match &query.participant {
        Some(_) => conn.prepare_cached(
            "SELECT s.created_seq, s.body FROM session_participants p
             JOIN sessions s ON s.session_id = p.session_id
             WHERE p.agent_id = ?1 AND p.created_seq > ?2 AND (?3 = 0 OR (?3 >> s.state) & 1)
             ORDER BY p.created_seq LIMIT ?4",
        ),
        None => conn.prepare_cached(
            "SELECT created_seq, body FROM sessions
             WHERE created_seq > ?1 AND (?2 = 0 OR (?2 >> state) & 1)
             ORDER BY created_seq LIMIT ?3",
        ),
    }
    .map_err(backend)?;
    let mut rows = match &query.participant {
        Some(agent) => statement.query(params![agent.as_str(), after, mask, fetch]),
        None => statement.query(params![after, mask, fetch]),
    }
    .map_err(backend)?;
    // Rows are read one at a time, so a byte budget stops loading.
    let mut page = SessionPage::default();
    let (mut bytes, mut last) = (0, None);
    while let Some(row) = rows.next().map_err(backend)? {
        let cursor: u64 = row.get(0).map_err(backend)?;
        let session = parse_session(&row.get::<_, String>(1).map_err(backend)?)?;
        bytes += session.wire_size();
        let over = query.max_bytes.is_some_and(|max| bytes > max);
        if page.sessions.len() == query.limit || (over && !page.sessions.is_empty()) {
            page.next = last;
            break;
        }
        page.sessions.push(session);
        last = Some(cursor);
    }
    Ok(page)
}

pub(super) fn idle_sessions(conn: &Connection, before: Timestamp, limit: usize) -> Result<Vec<Session>, StoreError> {
    let sql = "SELECT body FROM sessions WHERE state = ?1 AND updated_at < ?2 ORDER BY updated_at LIMIT ?3";
    let active = state_code(SessionState::Active);
    query_bodies(conn, sql, params![active, before.unix_micros(), to_i64(limit as u64)])
}

pub(super) fn events(
    conn: &Connection,
    after: u64,
    up_to: u64,
    filter: &EventFilter,
    limit: usize,
) -> Result<Vec<Arc<SessionEvent>>, StoreError> {
    let mut sql =
        String::from("SELECT seq, kind, at, agent_id, task_id, session FROM session_events WHERE seq > ? AND seq <= ?");
    let mut args = vec![SqlValue::Integer(to_i64(after)), SqlValue::Integer(to_i64(up_to))];
    if !filter.session_ids.is_empty() {
        sql.push_str(&format!(
            " AND session_id IN ({})",
            placeholders(filter.session_ids.len())
        ));
        args.extend(
            filter
                .session_ids
                .iter()
                .map(|id| SqlValue::Text(id.as_str().to_owned())),
        );
    }
    if !filter.kinds.is_empty() {
        sql.push_str(&format!(" AND kind IN ({})", placeholders(filter.kinds.len())));
        args.extend(filter.kinds.iter().map(|k| SqlValue::Text(k.as_str().to_owned())));
    }
    sql.push_str(" ORDER BY seq LIMIT ?");
    args.push(SqlValue::Integer(to_i64(limit as u64)));
    let mut stmt = conn.prepare(&sql).map_err(backend)?;
    let mut rows = stmt.query(params_from_iter(args)).map_err(backend)?;
    let mut events = Vec::new();
    while let Some(row) = rows.next().map_err(backend)? {
        events.push(Arc::new(decode_event(row)?));
    }
    // After the read: had retention removed what it would have returned,
    // this later statement sees that too.
    if let Some(oldest) = super::retention::oldest_event(conn)?
        && oldest > after + 1
    {
        return Err(StoreError::EventsRemoved { after, oldest });
    }
    Ok(events)
}

pub(super) fn tokens(conn: &Connection) -> Result<Vec<AgentToken>, StoreError> {
    query_bodies(conn, "SELECT body FROM agent_tokens ORDER BY issued", [])
}

pub(super) fn message(conn: &Connection, id: &MessageId) -> Result<Option<MessageRecord>, StoreError> {
    let sql = concat!(message_rows!(), " WHERE m.message_id = ?1");
    query_messages(conn, sql, params![id.as_str()]).map(first)
}

pub(super) fn replies(conn: &Connection, id: &MessageId, limit: usize) -> Result<Vec<MessageRecord>, StoreError> {
    let sql = concat!(
        message_rows!(),
        " WHERE m.in_reply_to = ?1 ORDER BY m.accepted_at LIMIT ?2"
    );
    query_messages(conn, sql, params![id.as_str(), to_i64(limit as u64)])
}

pub(super) fn counts(conn: &Connection) -> Result<StoreCounts, StoreError> {
    let (active_sessions, registered_agents) = conn
        .query_row(
            "SELECT (SELECT COUNT(*) FROM sessions WHERE state = ?1), (SELECT COUNT(*) FROM agents)",
            [state_code(SessionState::Active)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(backend)?;
    Ok(StoreCounts {
        active_sessions,
        registered_agents,
        size_bytes: None,
    })
}
