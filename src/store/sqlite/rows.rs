//! How records become rows and back: each record is one JSON body (serde,
//! so fields added later decode from older bodies through their defaults)
//! beside the columns that queries filter and sort on, whose codes are
//! fixed here. A message record is two: its message, stored once, and the
//! rest, stored with every version ([`message_rows`]).

use rusqlite::Connection;

use super::{backend, corrupt};
use crate::domain::message::{MessageRecord, MessageState};
use crate::domain::session::{Session, SessionEvent, SessionEventKind, SessionState};
use crate::domain::{AgentId, Timestamp};
use crate::store::StoreError;

/// The `state` column of `sessions`. Stored: never renumber.
pub(super) fn state_code(state: SessionState) -> i64 {
    match state {
        SessionState::Active => 1,
        SessionState::Completed => 2,
        SessionState::Terminated => 3,
        SessionState::Expired => 4,
    }
}

/// The `state` column of `messages` (the `messages_open` index names 1 and
/// 2). Stored: never renumber.
pub(super) fn message_state_code(state: MessageState) -> i64 {
    match state {
        MessageState::Queued => 1,
        MessageState::Delivered => 2,
        MessageState::Acked => 3,
        MessageState::Answered => 4,
        MessageState::DeadLettered => 5,
        MessageState::Expired => 6,
    }
}

pub(super) fn parse_session(body: &str) -> Result<Session, StoreError> {
    decode(body)
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, StoreError> {
    serde_json::from_str(body).map_err(corrupt)
}

pub(super) fn encode<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(encode_error)
}

/// The body of a message record's row: the record without its message
/// ([`message_rows`]), with room for what closing it adds.
///
/// SQLite fills a table's last page with appended rows and starts a new
/// page only when the next row does not fit, so the rows of new messages
/// sit in full pages. Acking one writes its delivery and ack times where
/// its open row had `null` (16 digits for 4 each), and a row that grows in
/// a full page splits it, which also writes its neighbours and parent. An
/// open message's body therefore ends with the spaces its closing will use
/// (JSON allows whitespace after a value). Closed-loop `send`: the SQLite
/// threads wrote 7,353-7,377 bytes per message against 7,536-7,550, and
/// the `messages` pages held 10.0 rows against 9.8.
pub(super) fn encode_delivery(record: &MessageRecord) -> Result<String, StoreError> {
    /// A time's digits beyond `null`'s four.
    const TIME_ROOM: usize = 12;
    let mut body = record.delivery_json().map_err(encode_error)?;
    if record.state.is_open() {
        let unset = [record.last_delivered_at, record.acked_at]
            .iter()
            .filter(|at| at.is_none())
            .count();
        body.extend(std::iter::repeat_n(' ', unset * TIME_ROOM));
    }
    Ok(body)
}

fn encode_error(error: serde_json::Error) -> StoreError {
    StoreError::Backend(format!("cannot encode a record: {error}"))
}

/// Runs `sql`, which selects one JSON body per row, and decodes the bodies.
pub(super) fn query_bodies<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<T>, StoreError> {
    let bodies: Vec<String> = conn
        .prepare_cached(sql)
        .and_then(|mut stmt| stmt.query_map(params, |r| r.get(0))?.collect())
        .map_err(backend)?;
    bodies.iter().map(|b| decode(b)).collect()
}

/// The start of every read of message records, for `concat!`: the rest of
/// each record with its message, from `message_bodies` since version 6
/// (see `super::schema`). Readers add their `WHERE` on `m`.
macro_rules! message_rows {
    () => {
        "SELECT m.body, b.message FROM messages AS m LEFT JOIN message_bodies AS b ON b.body_id = m.body_id"
    };
}
pub(super) use message_rows;

/// Runs `sql`, which starts with [`message_rows`], and puts each record
/// together again.
pub(super) fn query_messages(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<MessageRecord>, StoreError> {
    let rows: Vec<(String, Option<String>)> = conn
        .prepare_cached(sql)
        .and_then(|mut stmt| stmt.query_map(params, |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(backend)?;
    rows.iter()
        .map(|(delivery, message)| {
            let message = message
                .as_deref()
                .ok_or_else(|| corrupt("a message without its body"))?;
            MessageRecord::from_parts(message, delivery).map_err(corrupt)
        })
        .collect()
}

pub(super) fn first(mut records: Vec<MessageRecord>) -> Option<MessageRecord> {
    (!records.is_empty()).then(|| records.swap_remove(0))
}

pub(super) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(super) fn placeholders(count: usize) -> String {
    vec!["?"; count].join(", ")
}

/// One `session_events` row: `seq, kind, at, agent_id, task_id, session`.
pub(super) fn decode_event(row: &rusqlite::Row<'_>) -> Result<SessionEvent, StoreError> {
    let kind: String = row.get(1).map_err(backend)?;
    let agent_id: Option<String> = row.get(3).map_err(backend)?;
    let body: String = row.get(5).map_err(backend)?;
    Ok(SessionEvent {
        sequence: row.get(0).map_err(backend)?,
        kind: SessionEventKind::parse(&kind).ok_or_else(|| corrupt(format!("event kind {kind:?}")))?,
        timestamp: Timestamp::from_unix_micros(row.get(2).map_err(backend)?),
        agent_id: agent_id.map(|a| AgentId::parse(&a).map_err(corrupt)).transpose()?,
        task_id: row.get(4).map_err(backend)?,
        session: parse_session(&body)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::message::Priority;
    use crate::store::conformance::message;

    /// A body written before a field existed decodes with the field's serde
    /// default: JSON bodies change without a schema version.
    #[test]
    fn a_body_without_a_later_field_decodes_with_its_default() {
        let record = message("m1", "opencode://backend", Priority::Medium, 1);
        let mut body: serde_json::Value = serde_json::from_str(&encode(&record).unwrap()).unwrap();
        body["message"].as_object_mut().unwrap().remove("metadata").unwrap();
        let decoded: MessageRecord = decode(&body.to_string()).unwrap();
        assert_eq!(decoded, record);
    }
}
