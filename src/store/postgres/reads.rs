//! Reads: one statement each, prepared once per pooled connection.

use std::sync::Arc;

use deadpool_postgres::Object;

use super::rows::{bodies, body, decode, event, session, state_code, to_i64, to_u64};
use super::{backend, db_error};
use crate::domain::agent::Agent;
use crate::domain::message::{MessageId, MessageRecord};
use crate::domain::session::{Session, SessionEvent, SessionState};
use crate::domain::token::AgentToken;
use crate::domain::{AgentId, SessionId, Timestamp};
use crate::store::{AgentPresence, EventFilter, Inbox, SessionPage, SessionQuery, StoreCounts, StoreError};

/// Sessions fetched per round trip while a list page fills: the byte
/// budget stops the loading, not only the answer.
const LIST_CHUNK: i32 = 32;

/// Runs `sql` (one JSON body per row) and decodes the bodies.
async fn query_bodies<T: serde::de::DeserializeOwned>(
    client: &Object,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<T>, StoreError> {
    let statement = client.prepare_cached(sql).await.map_err(db_error)?;
    let rows = client.query(&statement, params).await.map_err(db_error)?;
    bodies(&rows, 0)
}

async fn query_body<T: serde::de::DeserializeOwned>(
    client: &Object,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Option<T>, StoreError> {
    let statement = client.prepare_cached(sql).await.map_err(db_error)?;
    let row = client.query_opt(&statement, params).await.map_err(db_error)?;
    row.map(|row| body(&row, 0)).transpose()
}

pub(super) async fn session_by_id(client: &Object, id: &SessionId) -> Result<Option<Session>, StoreError> {
    query_body(
        client,
        "SELECT body FROM sessions WHERE session_id = $1",
        &[&id.as_str()],
    )
    .await
}

pub(super) async fn list_sessions(client: &mut Object, query: &SessionQuery) -> Result<SessionPage, StoreError> {
    let after = to_i64(query.after.unwrap_or(0));
    let states: Vec<i32> = query.states.iter().map(|s| state_code(*s)).collect();
    // One row more than the page tells whether another page follows.
    let fetch = to_i64(query.limit as u64).saturating_add(1);
    let participant = query.participant.as_ref().map(AgentId::as_str);
    // A portal lives in a transaction; it hands rows over a chunk at a time.
    let tx = client
        .build_transaction()
        .read_only(true)
        .start()
        .await
        .map_err(db_error)?;
    let portal = match participant {
        Some(agent) => {
            let statement = tx
                .prepare_cached(
                    "SELECT s.created_seq, s.body FROM session_participants p
                     JOIN sessions s ON s.session_id = p.session_id
                     WHERE p.agent_id = $1 AND p.created_seq > $2 AND (cardinality($3::int4[]) = 0 OR s.state = ANY($3))
                     ORDER BY p.created_seq LIMIT $4",
                )
                .await
                .map_err(db_error)?;
            tx.bind(&statement, &[&agent, &after, &states, &fetch]).await
        }
        None => {
            let statement = tx
                .prepare_cached(
                    "SELECT created_seq, body FROM sessions
                     WHERE created_seq > $1 AND (cardinality($2::int4[]) = 0 OR state = ANY($2))
                     ORDER BY created_seq LIMIT $3",
                )
                .await
                .map_err(db_error)?;
            tx.bind(&statement, &[&after, &states, &fetch]).await
        }
    }
    .map_err(db_error)?;
    let mut page = SessionPage::default();
    let (mut bytes, mut last) = (0, None);
    'chunks: loop {
        let rows = tx.query_portal(&portal, LIST_CHUNK).await.map_err(db_error)?;
        for row in &rows {
            let cursor = to_u64(row, 0)?;
            let session = session(row, 1)?;
            bytes += session.wire_size();
            let over = query.max_bytes.is_some_and(|max| bytes > max);
            if page.sessions.len() == query.limit || (over && !page.sessions.is_empty()) {
                page.next = last;
                break 'chunks;
            }
            page.sessions.push(session);
            last = Some(cursor);
        }
        if rows.len() < LIST_CHUNK as usize {
            break;
        }
    }
    tx.commit().await.map_err(db_error)?;
    Ok(page)
}

pub(super) async fn idle_sessions(
    client: &Object,
    before: Timestamp,
    limit: usize,
) -> Result<Vec<Session>, StoreError> {
    query_bodies(
        client,
        "SELECT body FROM sessions WHERE state = $1 AND updated_at < $2 ORDER BY updated_at LIMIT $3",
        &[
            &state_code(SessionState::Active),
            &before.unix_micros(),
            &to_i64(limit as u64),
        ],
    )
    .await
}

pub(super) async fn events(
    client: &Object,
    after: u64,
    up_to: u64,
    filter: &EventFilter,
    limit: usize,
) -> Result<Vec<Arc<SessionEvent>>, StoreError> {
    let sessions: Vec<&str> = filter.session_ids.iter().map(SessionId::as_str).collect();
    let kinds: Vec<&str> = filter.kinds.iter().map(|k| k.as_str()).collect();
    let statement = client
        .prepare_cached(
            "SELECT seq, kind, at, agent_id, task_id, session FROM session_events
             WHERE seq > $1 AND seq <= $2
               AND (cardinality($3::text[]) = 0 OR session_id = ANY($3))
               AND (cardinality($4::text[]) = 0 OR kind = ANY($4))
             ORDER BY seq LIMIT $5",
        )
        .await
        .map_err(db_error)?;
    let rows = client
        .query(
            &statement,
            &[&to_i64(after), &to_i64(up_to), &sessions, &kinds, &to_i64(limit as u64)],
        )
        .await
        .map_err(db_error)?;
    rows.iter().map(|row| event(row).map(Arc::new)).collect()
}

pub(super) async fn agent(client: &Object, id: &AgentId) -> Result<Option<Agent>, StoreError> {
    query_body(client, "SELECT body FROM agents WHERE agent_id = $1", &[&id.as_str()]).await
}

pub(super) async fn is_registered(client: &Object, id: &AgentId) -> Result<bool, StoreError> {
    let statement = client
        .prepare_cached("SELECT 1 FROM agents WHERE agent_id = $1")
        .await
        .map_err(db_error)?;
    let row = client.query_opt(&statement, &[&id.as_str()]).await.map_err(db_error)?;
    Ok(row.is_some())
}

pub(super) async fn agents(client: &Object, after: Option<&AgentId>, limit: usize) -> Result<Vec<Agent>, StoreError> {
    query_bodies(
        client,
        "SELECT body FROM agents WHERE $1::text IS NULL OR agent_id > $1 ORDER BY agent_id LIMIT $2",
        &[&after.map(AgentId::as_str), &to_i64(limit as u64)],
    )
    .await
}

pub(super) async fn tokens(client: &Object) -> Result<Vec<AgentToken>, StoreError> {
    query_bodies(client, "SELECT body FROM agent_tokens ORDER BY issued", &[]).await
}

pub(super) async fn message(client: &Object, id: &MessageId) -> Result<Option<MessageRecord>, StoreError> {
    query_body(
        client,
        "SELECT body FROM messages WHERE message_id = $1",
        &[&id.as_str()],
    )
    .await
}

pub(super) async fn messages(client: &Object, ids: &[MessageId]) -> Result<Vec<MessageRecord>, StoreError> {
    let ids: Vec<&str> = ids.iter().map(MessageId::as_str).collect();
    query_bodies(
        client,
        "SELECT body FROM messages WHERE message_id = ANY($1::text[])",
        &[&ids],
    )
    .await
}

pub(super) async fn replies(client: &Object, id: &MessageId, limit: usize) -> Result<Vec<MessageRecord>, StoreError> {
    query_bodies(
        client,
        "SELECT body FROM messages WHERE in_reply_to = $1 ORDER BY accepted_at, message_id LIMIT $2",
        &[&id.as_str(), &to_i64(limit as u64)],
    )
    .await
}

/// The deliverable messages, and the first entry of `messages_waiting`
/// after `now`, in one statement: an inbox stream asks after every claim
/// that emptied the inbox, so the second part must not read the agent's
/// open messages. (A plain index scan also marks the entries of claimed
/// messages dead as it passes them, so later scans skip them; the partial
/// index of open messages, read by a count, cost about 2,600 entries per
/// call under load.) Rows with a body are the messages; a row without one
/// carries the time.
pub(super) async fn inbox(client: &Object, agent: &AgentId, now: Timestamp, limit: usize) -> Result<Inbox, StoreError> {
    let statement = client
        .prepare_cached(
            "(SELECT body, NULL::bigint FROM messages
              WHERE recipient = $1 AND state = 1 AND available_at <= $2
              ORDER BY priority DESC, accepted_at, message_id LIMIT $3)
             UNION ALL
             (SELECT NULL, available_at FROM messages
              WHERE recipient = $1 AND state = 1 AND available_at > $2
              ORDER BY available_at LIMIT 1)",
        )
        .await
        .map_err(db_error)?;
    let rows = client
        .query(
            &statement,
            &[&agent.as_str(), &now.unix_micros(), &to_i64(limit as u64)],
        )
        .await
        .map_err(db_error)?;
    let mut inbox = Inbox::default();
    for row in &rows {
        match row.try_get::<_, Option<&str>>(0).map_err(backend)? {
            Some(text) => inbox.records.push(decode(text)?),
            None => {
                let at: i64 = row.try_get(1).map_err(backend)?;
                inbox.later = Some(Timestamp::from_unix_micros(at));
            }
        }
    }
    Ok(inbox)
}

pub(super) async fn due(client: &Object, now: Timestamp, limit: usize) -> Result<Vec<MessageRecord>, StoreError> {
    query_bodies(
        client,
        "SELECT body FROM messages WHERE due_at <= $1 ORDER BY due_at, message_id LIMIT $2",
        &[&now.unix_micros(), &to_i64(limit as u64)],
    )
    .await
}

pub(super) async fn open(client: &Object, agent: &AgentId, limit: usize) -> Result<Vec<MessageRecord>, StoreError> {
    query_bodies(
        client,
        "SELECT body FROM messages WHERE recipient = $1 AND state IN (1, 2) LIMIT $2",
        &[&agent.as_str(), &to_i64(limit as u64)],
    )
    .await
}

pub(super) async fn counts(client: &Object) -> Result<StoreCounts, StoreError> {
    let statement = client
        .prepare_cached(
            "SELECT (SELECT count(*) FROM sessions WHERE state = $1), (SELECT count(*) FROM agents),
                    (SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = current_schema() AND c.relkind = 'r')",
        )
        .await
        .map_err(db_error)?;
    let row = client
        .query_one(&statement, &[&state_code(SessionState::Active)])
        .await
        .map_err(db_error)?;
    Ok(StoreCounts {
        active_sessions: to_u64(&row, 0)?,
        registered_agents: to_u64(&row, 1)?,
        size_bytes: Some(to_u64(&row, 2)?),
    })
}

/// What the nodes published about `agents`: online while a node's row is
/// alive, last seen as the latest any node recorded.
pub(super) async fn presence(client: &Object, agents: &[AgentId]) -> Result<Vec<AgentPresence>, StoreError> {
    let ids: Vec<&str> = agents.iter().map(AgentId::as_str).collect();
    let statement = client
        .prepare_cached(
            "SELECT id,
                    EXISTS (SELECT 1 FROM agent_streams s WHERE s.agent_id = id AND s.alive_until > $2),
                    (SELECT last_seen FROM agent_seen l WHERE l.agent_id = id)
             FROM unnest($1::text[]) AS id",
        )
        .await
        .map_err(db_error)?;
    let rows = client
        .query(&statement, &[&ids, &Timestamp::now().unix_micros()])
        .await
        .map_err(db_error)?;
    let mut published = Vec::with_capacity(rows.len());
    for (agent, row) in agents.iter().zip(&rows) {
        let online: bool = row.try_get(1).map_err(backend)?;
        let last_seen: Option<i64> = row.try_get(2).map_err(backend)?;
        if online || last_seen.is_some() {
            published.push(AgentPresence {
                agent_id: agent.clone(),
                online,
                last_seen: last_seen.map(Timestamp::from_unix_micros),
            });
        }
    }
    Ok(published)
}
