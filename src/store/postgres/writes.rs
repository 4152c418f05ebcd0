//! What each write checks and changes, inside one transaction per call
//! (a lone one-row update is a statement of its own: atomic by itself).
//!
//! Version checks are compare-and-swap statements (`UPDATE ... WHERE
//! version = $expected`, `INSERT ... ON CONFLICT DO NOTHING`): a row lock
//! and READ COMMITTED's re-check of the WHERE clause after a concurrent
//! commit make each check hold against every other writer, on this node or
//! another. A refused write set is rolled back whole.
//!
//! The global event sequence is one counter row, `event_sequence`, updated
//! with `UPDATE ... RETURNING` as the last step before COMMIT. Its row lock
//! is held until the transaction ends, so event transactions take numbers
//! one at a time and commit in number order: N is visible before N+1 can be
//! handed out, and a rolled-back N is handed out again. That is what keeps
//! the sequence gap-free and totally ordered for watchers on every node (a
//! SEQUENCE or identity column is cheaper but hands out numbers that commit
//! out of order and leaves holes on rollback). The cost: session changes
//! are serialised for the time between that UPDATE and the end of COMMIT,
//! about one WAL flush each; message writes without a session change (sends
//! outside sessions, claims, acks) take no number and do not wait.
//!
//! Inbox limits count open messages with a plain read: writers racing for
//! the same recipient may together pass the limit by up to their number.
//! The limit protects memory and disk, not an invariant, and a per-recipient
//! lock would serialise every send to a busy agent. Far below the limit a
//! recent count stands in (see [`super::counts`]).

use std::collections::HashSet;
use std::sync::Arc;

use deadpool_postgres::Transaction;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::counts::OpenCounts;
use super::feed::{Announcer, Ticket};
use super::rows::{due_at, ids_of, message_state_code, state_code, to_i64, to_u64};
use super::{backend, db_error};
use crate::domain::AgentId;
use crate::domain::message::MessageId;
use crate::domain::session::{SessionEvent, SessionEventKind};
use crate::store::{
    MessageWrite, Record, SessionChange, StoreError, check_version, event_of, message_record, session_record,
};

/// A write set with its JSON bodies encoded by the caller.
pub(super) struct EncodedSet {
    pub(super) session: Option<(SessionChange, String)>,
    pub(super) messages: Vec<(MessageWrite, String)>,
}

/// Applies the set inside `tx`; a session change's event comes back with
/// the ticket of its sequence number, to hand over once committed.
pub(super) async fn apply(
    tx: &Transaction<'_>,
    set: EncodedSet,
    announcer: &Arc<Announcer>,
    counts: &OpenCounts,
) -> Result<Option<(Arc<SessionEvent>, Ticket)>, StoreError> {
    // The session's version first: a stale change fails before any work,
    // and an update holds the row from here on.
    let created_seq = match &set.session {
        Some((change, _)) => check_session(tx, change).await?,
        None => None,
    };
    if set.messages.len() > 1 && plain_updates(set.messages.iter().map(|(write, _)| write)) {
        update_all(tx, &set.messages).await?;
    } else {
        for (write, body) in &set.messages {
            apply_message(tx, write, body, counts).await?;
        }
    }
    match set.session {
        Some((change, body)) => write_session(tx, change, &body, created_seq, announcer).await.map(Some),
        None => Ok(None),
    }
}

/// Checks the change's expected version; answers the stored session's
/// list cursor, if it exists.
async fn check_session(tx: &Transaction<'_>, change: &SessionChange) -> Result<Option<i64>, StoreError> {
    let id = change.session.session_id.as_str();
    let statement = match change.expected_version {
        // A create takes no lock: a racing create fails on the primary key.
        None => "SELECT version, created_seq FROM sessions WHERE session_id = $1",
        Some(_) => "SELECT version, created_seq FROM sessions WHERE session_id = $1 FOR UPDATE",
    };
    let statement = tx.prepare_cached(statement).await.map_err(db_error)?;
    let stored = tx.query_opt(&statement, &[&id]).await.map_err(db_error)?;
    let version = stored.as_ref().map(|row| to_u64(row, 0)).transpose()?;
    check_version(session_record(change), change.expected_version, version)?;
    stored.map(|row| row.try_get(1).map_err(backend)).transpose()
}

async fn write_session(
    tx: &Transaction<'_>,
    change: SessionChange,
    body: &str,
    created_seq: Option<i64>,
    announcer: &Arc<Announcer>,
) -> Result<(Arc<SessionEvent>, Ticket), StoreError> {
    let next = tx
        .prepare_cached("UPDATE event_sequence SET last = last + 1 RETURNING last")
        .await
        .map_err(db_error)?;
    let sequence: i64 = tx
        .query_one(&next, &[])
        .await
        .map_err(db_error)?
        .try_get(0)
        .map_err(backend)?;
    let ticket = announcer.allocated(sequence as u64);
    let session = &change.session;
    let id = session.session_id.as_str();
    let (state, version, updated) = (
        state_code(session.state),
        to_i64(session.version),
        session.updated_at.unix_micros(),
    );
    let write = match created_seq {
        Some(_) => {
            let update = tx
                .prepare_cached(
                    "UPDATE sessions SET state = $2, version = $3, updated_at = $4, body = $5 WHERE session_id = $1",
                )
                .await
                .map_err(db_error)?;
            tx.execute(&update, &[&id, &state, &version, &updated, &body]).await
        }
        None => {
            let insert = tx
                .prepare_cached(
                    "INSERT INTO sessions (session_id, created_seq, state, version, updated_at, body)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .await
                .map_err(db_error)?;
            tx.execute(&insert, &[&id, &sequence, &state, &version, &updated, &body])
                .await
        }
    };
    match write {
        Ok(_) => {}
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            return Err(StoreError::AlreadyExists(session_record(&change)()));
        }
        Err(e) => return Err(db_error(e)),
    }
    if matches!(
        change.kind,
        SessionEventKind::SessionCreated | SessionEventKind::ParticipantAdded
    ) {
        let participants: Vec<&str> = session.participants.iter().map(|p| p.agent_id.as_str()).collect();
        let join = tx
            .prepare_cached(
                "INSERT INTO session_participants (agent_id, created_seq, session_id)
                 SELECT agent_id, $2, $3 FROM unnest($1::text[]) AS agent_id
                 ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(db_error)?;
        let created = created_seq.unwrap_or(sequence);
        tx.execute(&join, &[&participants, &created, &id])
            .await
            .map_err(db_error)?;
    }
    let insert_event = tx
        .prepare_cached(
            "INSERT INTO session_events (seq, session_id, kind, at, agent_id, task_id, session)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await
        .map_err(db_error)?;
    tx.execute(
        &insert_event,
        &[
            &sequence,
            &id,
            &change.kind.as_str(),
            &change.timestamp.unix_micros(),
            &change.agent_id.as_ref().map(AgentId::as_str),
            &change.task_id.as_deref(),
            &body,
        ],
    )
    .await
    .map_err(db_error)?;
    Ok((Arc::new(event_of(change, sequence as u64)), ticket))
}

/// Writes one message in the order of checks of [`MessageWrite::expected`]:
/// its id or version, then its recipient, then the recipient's inbox.
async fn apply_message(
    tx: &Transaction<'_>,
    write: &MessageWrite,
    body: &str,
    counts: &OpenCounts,
) -> Result<(), StoreError> {
    let record = &write.record;
    let id = record.id().as_str();
    let (recipient, state) = (record.recipient.as_str(), message_state_code(record.state));
    let (available, expires, due) = (
        record.available_at.unix_micros(),
        record.expires_at.unix_micros(),
        due_at(record),
    );
    let version = to_i64(record.version);
    match write.expected {
        Some(expected) => {
            // Only what changes after the insert: the reply index is left alone.
            let update = tx
                .prepare_cached(
                    "UPDATE messages SET recipient = $2, state = $3, available_at = $4, expires_at = $5,
                         due_at = $6, version = $7, body = $8
                     WHERE message_id = $1 AND version = $9",
                )
                .await
                .map_err(db_error)?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] = [
                &id,
                &recipient,
                &state,
                &available,
                &expires,
                &due,
                &version,
                &body,
                &to_i64(expected),
            ];
            if tx.execute(&update, &params).await.map_err(db_error)? == 0 {
                return Err(not_updated(tx, write).await);
            }
            match refusal(tx, write, counts).await? {
                Some(refusal) => Err(refusal),
                None => Ok(()),
            }
        }
        None => {
            if let Some(refusal) = refusal(tx, write, counts).await? {
                // A taken id is the first refusal of the contract.
                if stored_version(tx, record.id()).await?.is_some() {
                    return Err(StoreError::AlreadyExists(message_record(record)()));
                }
                return Err(refusal);
            }
            let insert = tx
                .prepare_cached(
                    "INSERT INTO messages (message_id, recipient, state, priority, accepted_at, available_at,
                         expires_at, due_at, in_reply_to, version, body)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                     ON CONFLICT (message_id) DO NOTHING",
                )
                .await
                .map_err(db_error)?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 11] = [
                &id,
                &recipient,
                &state,
                &(record.message.priority as i32),
                &record.accepted_at.unix_micros(),
                &available,
                &expires,
                &due,
                &record.message.in_reply_to.as_ref().map(MessageId::as_str),
                &version,
                &body,
            ];
            if tx.execute(&insert, &params).await.map_err(db_error)? == 0 {
                return Err(StoreError::AlreadyExists(message_record(record)()));
            }
            Ok(())
        }
    }
}

/// Whether the writes are updates of distinct messages that need no check
/// beyond their versions (claims, acks): those can be written by one
/// statement, [`update_all`].
pub(super) fn plain_updates<'a>(writes: impl IntoIterator<Item = &'a MessageWrite>) -> bool {
    let mut ids = HashSet::new();
    writes
        .into_iter()
        .all(|write| write.expected.is_some() && !write.require_recipient && ids.insert(write.record.id()))
}

/// Updates every message whose stored version is the one expected, in one
/// statement; if one is not, fails as the first such write would alone
/// (the transaction is then rolled back whole).
pub(super) async fn update_all(
    tx: &impl deadpool_postgres::GenericClient,
    messages: &[(MessageWrite, String)],
) -> Result<(), StoreError> {
    let writes: Vec<(&MessageWrite, &str)> = messages.iter().map(|(write, body)| (write, body.as_str())).collect();
    let updated = ids_of(update_rows(tx, &writes).await.map_err(db_error)?)?;
    if updated.len() == writes.len() {
        return Ok(());
    }
    let (write, _) = writes
        .iter()
        .find(|(write, _)| !updated.contains(write.record.id().as_str()))
        .ok_or_else(|| StoreError::Backend("an update returned a message twice".into()))?;
    Err(not_updated(tx, write).await)
}

/// The update of several messages, each if its version is the one expected.
/// Planned as a nested loop of primary-key lookups (see `SESSION_SETTINGS`
/// in the parent module for why that needs saying).
pub(super) const UPDATE_MANY: &str =
    "UPDATE messages AS m SET recipient = u.recipient, state = u.state, available_at = u.available_at,
         expires_at = u.expires_at, due_at = u.due_at, version = u.version, body = u.body
     FROM unnest($1::text[], $2::text[], $3::int4[], $4::int8[], $5::int8[], $6::int8[], $7::int8[],
         $8::text[], $9::int8[])
         AS u(message_id, recipient, state, available_at, expires_at, due_at, version, body, expected)
     WHERE m.message_id = u.message_id AND m.version = u.expected
     RETURNING m.message_id";

/// Updates, in one statement, every message whose stored version is the
/// one its write expects (`expected` is set on each); answers the rows
/// updated, each holding its `message_id`.
pub(super) async fn update_rows(
    client: &impl deadpool_postgres::GenericClient,
    writes: &[(&MessageWrite, &str)],
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    // Rows are locked in the arrays' order: by id, the same order for every
    // such statement, so two of them sharing messages wait for each other
    // rather than deadlock.
    let mut sorted: Vec<&(&MessageWrite, &str)> = writes.iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.record.id().as_str().cmp(b.0.record.id().as_str()));
    let records = || sorted.iter().map(|(write, _)| &write.record);
    let ids: Vec<&str> = records().map(|record| record.id().as_str()).collect();
    let recipients: Vec<&str> = records().map(|record| record.recipient.as_str()).collect();
    let states: Vec<i32> = records().map(|record| message_state_code(record.state)).collect();
    let available: Vec<i64> = records().map(|record| record.available_at.unix_micros()).collect();
    let expires: Vec<i64> = records().map(|record| record.expires_at.unix_micros()).collect();
    let due: Vec<Option<i64>> = records().map(due_at).collect();
    let versions: Vec<i64> = records().map(|record| to_i64(record.version)).collect();
    let bodies: Vec<&str> = sorted.iter().map(|(_, body)| *body).collect();
    let expected: Vec<i64> = sorted
        .iter()
        .map(|(write, _)| to_i64(write.expected.unwrap_or(0)))
        .collect();
    // One row (a claim, a lone ack) has a statement of its own: over
    // `unnest` arrays PostgreSQL's plan cache finds a custom plan cheaper
    // than the generic one every time and plans the statement again on
    // each execution, which cost as much as running it.
    let sql = if sorted.len() == 1 {
        "UPDATE messages AS m SET recipient = $2, state = $3, available_at = $4, expires_at = $5, due_at = $6,
             version = $7, body = $8
         WHERE m.message_id = $1 AND m.version = $9
         RETURNING m.message_id"
    } else {
        UPDATE_MANY
    };
    let update = client.prepare_cached(sql).await?;
    let params: [&(dyn ToSql + Sync); 9] = match sorted.as_slice() {
        [(_, body)] => [
            &ids[0],
            &recipients[0],
            &states[0],
            &available[0],
            &expires[0],
            &due[0],
            &versions[0],
            body,
            &expected[0],
        ],
        _ => [
            &ids,
            &recipients,
            &states,
            &available,
            &expires,
            &due,
            &versions,
            &bodies,
            &expected,
        ],
    };
    client.query(&update, &params).await
}

/// Why an update of [`update_rows`] changed nothing: the message is gone
/// or at another version.
pub(super) async fn not_updated(client: &impl deadpool_postgres::GenericClient, write: &MessageWrite) -> StoreError {
    let expected = write.expected.unwrap_or(0);
    let stored = match stored_version(client, write.record.id()).await {
        Ok(stored) => stored,
        Err(error) => return error,
    };
    match check_version(message_record(&write.record), Some(expected), stored) {
        Err(error) => error,
        // Back at the expected version by now: it changed and changed back.
        Ok(()) => StoreError::Backend(format!(
            "message {} at version {expected} was not updated",
            write.record.id()
        )),
    }
}

async fn stored_version(tx: &impl deadpool_postgres::GenericClient, id: &MessageId) -> Result<Option<u64>, StoreError> {
    let select = tx
        .prepare_cached("SELECT version FROM messages WHERE message_id = $1")
        .await
        .map_err(db_error)?;
    let row = tx.query_opt(&select, &[&id.as_str()]).await.map_err(db_error)?;
    row.map(|row| to_u64(&row, 0)).transpose()
}

/// The first key of agents' registration locks (advisory locks with two
/// keys, the second the agent id's hash: a space of their own, apart from
/// the one-key locks of migrations and the background work).
pub(super) const REGISTRATION_LOCKS: i32 = 0x6162_7573; // "abus"

/// Takes the registration lock of each agent, shared, then answers which
/// of them are registered. The lock: an unregistration (which takes it
/// exclusively) waits for this commit, so it cannot miss the message, and a
/// send after it sees the agent gone. Not a row lock (`FOR KEY SHARE`, as a
/// foreign key takes): concurrent sends to one agent would share the row
/// through a MultiXact, rewritten with every locker, which cost several
/// times a send's own work. The check is a statement of its own, after the
/// lock, so its snapshot sees an unregistration that committed meanwhile.
pub(super) async fn lock_registered(
    tx: &impl deadpool_postgres::GenericClient,
    agents: &[&str],
) -> Result<HashSet<String>, StoreError> {
    let lock = tx
        .prepare_cached(
            "SELECT pg_advisory_xact_lock_shared($1, hashtext(agent_id)) FROM unnest($2::text[]) AS agent_id",
        )
        .await
        .map_err(db_error)?;
    // One agent by equality: PostgreSQL plans `= ANY($1)` again on every
    // execution (see `update_all`).
    let registered = tx
        .prepare_cached(match agents {
            [_] => "SELECT agent_id FROM agents WHERE agent_id = $1",
            _ => "SELECT agent_id FROM agents WHERE agent_id = ANY($1::text[])",
        })
        .await
        .map_err(db_error)?;
    let check_params: [&(dyn ToSql + Sync); 1] = match agents {
        [agent] => [agent],
        _ => [&agents],
    };
    let lock_params: [&(dyn ToSql + Sync); 2] = [&REGISTRATION_LOCKS, &agents];
    // Pipelined: one round trip for both.
    let (locked, found) = tokio::join!(tx.execute(&lock, &lock_params), tx.query(&registered, &check_params));
    locked.map_err(db_error)?;
    ids_of(found.map_err(db_error)?)
}

/// Why the write may not commit once its id or version checked out: its
/// recipient is not registered, or that inbox is full.
async fn refusal(
    tx: &Transaction<'_>,
    write: &MessageWrite,
    counts: &OpenCounts,
) -> Result<Option<StoreError>, StoreError> {
    let recipient = &write.record.recipient;
    if write.require_recipient && lock_registered(tx, &[recipient.as_str()]).await?.is_empty() {
        return Ok(Some(StoreError::NotFound(Record::Agent(recipient.clone()))));
    }
    if let (None, Some(limit)) = (write.expected, write.inbox_limit)
        && !counts.clearly_within(recipient, limit)
    {
        let open = open_count(tx, recipient).await?;
        counts.counted(recipient, open);
        if open >= limit {
            return Ok(Some(StoreError::InboxFull {
                agent: recipient.clone(),
                limit,
            }));
        }
    }
    Ok(None)
}

pub(super) async fn open_count(
    client: &impl deadpool_postgres::GenericClient,
    agent: &AgentId,
) -> Result<u64, StoreError> {
    let count = client
        .prepare_cached("SELECT count(*) FROM messages WHERE recipient = $1 AND state IN (1, 2)")
        .await
        .map_err(db_error)?;
    let row = client.query_one(&count, &[&agent.as_str()]).await.map_err(db_error)?;
    to_u64(&row, 0)
}

/// Writes the agent if its stored version is `expected`, in one statement.
pub(super) async fn put_agent(
    client: &deadpool_postgres::Object,
    agent: &crate::domain::agent::Agent,
    body: &str,
    expected: Option<u64>,
) -> Result<(), StoreError> {
    let id = agent.id().as_str();
    let version = to_i64(agent.version);
    let written = match expected {
        None => {
            let insert = client
                .prepare_cached(
                    "INSERT INTO agents (agent_id, version, body) VALUES ($1, $2, $3) ON CONFLICT (agent_id) DO NOTHING",
                )
                .await
                .map_err(db_error)?;
            client.execute(&insert, &[&id, &version, &body]).await
        }
        Some(expected) => {
            let update = client
                .prepare_cached("UPDATE agents SET version = $2, body = $3 WHERE agent_id = $1 AND version = $4")
                .await
                .map_err(db_error)?;
            client
                .execute(&update, &[&id, &version, &body, &to_i64(expected)])
                .await
        }
    };
    if written.map_err(db_error)? == 1 {
        return Ok(());
    }
    let select = client
        .prepare_cached("SELECT version FROM agents WHERE agent_id = $1")
        .await
        .map_err(db_error)?;
    let stored = client.query_opt(&select, &[&id]).await.map_err(db_error)?;
    let stored = stored.map(|row| to_u64(&row, 0)).transpose()?;
    check_version(crate::store::agent_record(agent), expected, stored)?;
    // The version matched by now: the row changed and changed back between
    // the two statements. Rare enough to report as the conflict it was.
    Err(StoreError::Conflict {
        record: Record::Agent(agent.id().clone()),
        expected: expected.unwrap_or(0),
        actual: stored.unwrap_or(0),
    })
}

/// Runs one statement that changes rows; answers how many.
pub(super) async fn execute(
    client: &deadpool_postgres::Object,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<u64, StoreError> {
    let statement = client.prepare_cached(sql).await.map_err(db_error)?;
    client.execute(&statement, params).await.map_err(db_error)
}
