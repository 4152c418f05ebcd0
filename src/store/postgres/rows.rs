//! How records become rows and back, as in the SQLite store: each record is
//! one JSON body (serde, so fields added later decode from older bodies
//! through their defaults) beside the columns that queries filter and sort
//! on. The column codes are the SQLite store's, fixed there and here alike:
//! stored, never renumbered.

use tokio_postgres::Row;

use super::{backend, corrupt};
use crate::domain::message::{MessageRecord, MessageState};
use crate::domain::session::{Session, SessionEvent, SessionEventKind, SessionState};
use crate::domain::{AgentId, Timestamp};
use crate::store::StoreError;

/// The `state` column of `sessions`.
pub(super) fn state_code(state: SessionState) -> i32 {
    match state {
        SessionState::Active => 1,
        SessionState::Completed => 2,
        SessionState::Terminated => 3,
        SessionState::Expired => 4,
    }
}

/// The `state` column of `messages` (the partial indexes name 1 and 2).
pub(super) fn message_state_code(state: MessageState) -> i32 {
    match state {
        MessageState::Queued => 1,
        MessageState::Delivered => 2,
        MessageState::Acked => 3,
        MessageState::Answered => 4,
        MessageState::DeadLettered => 5,
        MessageState::Expired => 6,
    }
}

/// When the sweeper must look at the message (the `due_at` column): a
/// delivered one at its ack deadline or routing timeout, whichever comes
/// first, a queued one at its routing timeout, a closed one never.
pub(super) fn due_at(record: &MessageRecord) -> Option<i64> {
    match record.state {
        MessageState::Delivered => Some(record.available_at.min(record.expires_at).unix_micros()),
        MessageState::Queued => Some(record.expires_at.unix_micros()),
        _ => None,
    }
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, StoreError> {
    serde_json::from_str(body).map_err(corrupt)
}

pub(super) fn encode<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(format!("cannot encode a record: {e}")))
}

/// Decodes the JSON body in column `index` of each row.
pub(super) fn bodies<T: serde::de::DeserializeOwned>(rows: &[Row], index: usize) -> Result<Vec<T>, StoreError> {
    rows.iter().map(|row| body(row, index)).collect()
}

pub(super) fn body<T: serde::de::DeserializeOwned>(row: &Row, index: usize) -> Result<T, StoreError> {
    decode(row.try_get::<_, &str>(index).map_err(backend)?)
}

/// Versions, sequences and limits are `u64` in the domain and `bigint`
/// in PostgreSQL; nothing the bus writes comes near `i64::MAX`.
pub(super) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(super) fn to_u64(row: &Row, index: usize) -> Result<u64, StoreError> {
    let value: i64 = row.try_get(index).map_err(backend)?;
    u64::try_from(value).map_err(|_| corrupt(format!("negative count or version {value}")))
}

/// The text in the first column of each row (ids), as a set.
pub(super) fn ids_of(rows: Vec<Row>) -> Result<std::collections::HashSet<String>, StoreError> {
    rows.iter()
        .map(|row| row.try_get::<_, String>(0).map_err(backend))
        .collect()
}

pub(super) fn session(row: &Row, index: usize) -> Result<Session, StoreError> {
    body(row, index)
}

/// One `session_events` row: `seq, kind, at, agent_id, task_id, session`.
pub(super) fn event(row: &Row) -> Result<SessionEvent, StoreError> {
    let kind: &str = row.try_get(1).map_err(backend)?;
    let agent_id: Option<&str> = row.try_get(3).map_err(backend)?;
    Ok(SessionEvent {
        sequence: to_u64(row, 0)?,
        kind: SessionEventKind::parse(kind).ok_or_else(|| corrupt(format!("event kind {kind:?}")))?,
        timestamp: Timestamp::from_unix_micros(row.try_get(2).map_err(backend)?),
        agent_id: agent_id.map(|a| AgentId::parse(a).map_err(corrupt)).transpose()?,
        task_id: row.try_get(4).map_err(backend)?,
        session: session(row, 5)?,
    })
}
