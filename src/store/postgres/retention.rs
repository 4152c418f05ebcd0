//! Retention: removes what is older than its retention in small batches,
//! each in its own short transaction. Only the node that runs background
//! work prunes (see `super::cluster`), so batches never race each other.
//!
//! Removed events are recorded in `events_removed`, in the transaction
//! that deletes them: a reader of events checks it after its read (see
//! [`check_events_kept`]), so it is told about removed events instead of
//! reading past a gap. The oldest sequence left in the table would not do:
//! with commits out of sequence order, a smaller sequence may still be in
//! flight.

use deadpool_postgres::Object;

use super::rows::{session, to_i64, to_u64};
use super::{backend, db_error};
use crate::domain::Timestamp;
use crate::store::StoreError;

/// Closed messages (every state but 1 and 2, as the `messages_closed`
/// index) that closed before `before`, oldest first.
pub(super) async fn prune_messages(client: &Object, before: Timestamp, limit: usize) -> Result<u64, StoreError> {
    super::writes::execute(
        client,
        "DELETE FROM messages WHERE message_id IN (
             SELECT message_id FROM messages WHERE state NOT IN (1, 2) AND available_at < $1
             ORDER BY available_at LIMIT $2)",
        &[&before.unix_micros(), &to_i64(limit as u64)],
    )
    .await
}

/// The oldest events committed before `before`, up to the first that was
/// not, and never the latest.
pub(super) async fn prune_events(client: &mut Object, before: Timestamp, limit: usize) -> Result<u64, StoreError> {
    let tx = client.transaction().await.map_err(db_error)?;
    let rows = tx
        .query(
            "SELECT seq, at FROM session_events
             WHERE seq < (SELECT max(seq) FROM session_events) ORDER BY seq LIMIT $1",
            &[&to_i64(limit as u64)],
        )
        .await
        .map_err(db_error)?;
    let (mut through, mut count) = (None, 0);
    for row in &rows {
        let at: i64 = row.try_get(1).map_err(backend)?;
        if at >= before.unix_micros() {
            break;
        }
        through = Some(to_u64(row, 0)?);
        count += 1;
    }
    let Some(through) = through else { return Ok(0) };
    let through = to_i64(through);
    tx.execute("UPDATE events_removed SET through = greatest(through, $1)", &[&through])
        .await
        .map_err(db_error)?;
    tx.execute("DELETE FROM session_events WHERE seq <= $1", &[&through])
        .await
        .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    Ok(count)
}

/// Fails if retention removed events after `after`; called after reading
/// them, so that a removal the read saw is seen here too.
pub(super) async fn check_events_kept(client: &Object, after: u64) -> Result<(), StoreError> {
    let statement = client
        .prepare_cached("SELECT through FROM events_removed")
        .await
        .map_err(db_error)?;
    let removed = to_u64(&client.query_one(&statement, &[]).await.map_err(db_error)?, 0)?;
    if after < removed {
        return Err(StoreError::EventsRemoved {
            after,
            oldest: removed + 1,
        });
    }
    Ok(())
}

/// Ended sessions last changed before `before`, with their participant rows.
pub(super) async fn prune_sessions(client: &mut Object, before: Timestamp, limit: usize) -> Result<u64, StoreError> {
    let tx = client.transaction().await.map_err(db_error)?;
    let rows = tx
        .query(
            "DELETE FROM sessions WHERE session_id IN (
                 SELECT session_id FROM sessions WHERE state <> 1 AND updated_at < $1 LIMIT $2)
             RETURNING created_seq, body",
            &[&before.unix_micros(), &to_i64(limit as u64)],
        )
        .await
        .map_err(db_error)?;
    let (mut agents, mut created): (Vec<String>, Vec<i64>) = (Vec::new(), Vec::new());
    for row in &rows {
        let created_seq: i64 = row.try_get(0).map_err(backend)?;
        for participant in session(row, 1)?.participants {
            agents.push(participant.agent_id.as_str().to_owned());
            created.push(created_seq);
        }
    }
    tx.execute(
        "DELETE FROM session_participants p USING unnest($1::text[], $2::bigint[]) AS d(agent_id, created_seq)
         WHERE p.agent_id = d.agent_id AND p.created_seq = d.created_seq",
        &[&agents, &created],
    )
    .await
    .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    Ok(rows.len() as u64)
}
