//! Group commit of new messages: concurrent sends share one transaction.
//!
//! A send outside a session is one new message. Written alone it is a
//! transaction of its own: BEGIN, the recipient's lock and check, the
//! INSERT, and a COMMIT that waits for its WAL flush, each a round trip on
//! a connection held throughout, and five statements for the database to
//! run per message. Here new messages queue while earlier batches commit
//! (at most [`MAX_BATCH`] per batch, a few batches at a time); a batch locks
//! and checks all its recipients with one statement each, inserts every
//! message it accepts with one `INSERT ... SELECT FROM unnest(...)`, and
//! commits once. Under load that is a handful of statements for dozens of
//! messages; alone, a message costs what it did before.
//!
//! Each message still gets its own answer, in the order of checks of
//! [`MessageWrite::expected`]: a refused message (unregistered recipient,
//! full inbox) is left out of the INSERT and answered `AlreadyExists` if
//! its id is taken, and `ON CONFLICT DO NOTHING RETURNING` tells which of
//! the inserted ids were taken. Two messages with one id never share a
//! batch, so that answer is unambiguous. A batch the database fails for a
//! reason of its own (not a lost connection) is tried again one message at
//! a time: no message fails for another's sake.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deadpool_postgres::{Object, Pool};
use tokio_postgres::Statement;
use tokio_postgres::types::ToSql;

use super::batches::{Pending, Queue};
use super::cluster::Cluster;
use super::counts::OpenCounts;
use super::rows::{due_at, ids_of, message_state_code, to_i64};
use super::writes::{lock_registered, open_count};
use super::{db_error, pool_error};
use crate::domain::AgentId;
use crate::domain::message::MessageId;
use crate::store::{Record, StoreError, message_record};

/// Messages in one batch, at most.
const MAX_BATCH: usize = 256;

struct Shared {
    pool: Pool,
    cluster: Arc<Cluster>,
    counts: Arc<OpenCounts>,
}

/// Starts taking batches off the queue, at most `batches` at a time.
pub(super) fn start(pool: Pool, cluster: Arc<Cluster>, counts: Arc<OpenCounts>, batches: usize) -> Queue {
    let shared = Arc::new(Shared { pool, cluster, counts });
    super::batches::start(batches, MAX_BATCH, move |batch| {
        let shared = shared.clone();
        async move { run(&shared, batch).await }
    })
}

/// Writes the batch and answers each message.
async fn run(shared: &Shared, batch: Vec<Pending>) {
    match write(shared, &batch).await {
        Ok(outcomes) => {
            for (insert, outcome) in batch.into_iter().zip(outcomes) {
                insert.finish(&shared.cluster, outcome);
            }
        }
        Err(StoreError::Backend(error)) if batch.len() > 1 => {
            tracing::debug!(%error, messages = batch.len(), "a batch of new messages failed; writing them one by one");
            for insert in batch {
                let outcome = match write(shared, std::slice::from_ref(&insert)).await {
                    Ok(mut outcomes) => outcomes
                        .pop()
                        .unwrap_or(Err(StoreError::Backend("a batch of one message had no outcome".into()))),
                    Err(error) => Err(error),
                };
                insert.finish(&shared.cluster, outcome);
            }
        }
        Err(error) => {
            for insert in batch {
                insert.finish(&shared.cluster, Err(error.clone()));
            }
        }
    }
}

/// One transaction for the batch: the outcome of each message, in order,
/// or the error that failed them all.
///
/// Two round trips when nothing is refused: BEGIN goes out with the
/// recipients' lock and check, the INSERT with the COMMIT (statements on
/// one connection run in the order sent, and a COMMIT after a failed
/// statement only rolls back). Whatever fails, the transaction is rolled
/// back before the connection goes back to the pool.
async fn write(shared: &Shared, batch: &[Pending]) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let client = shared.pool.get().await.map_err(pool_error)?;
    // Prepared (once per connection) before BEGIN, so that nothing waits
    // for a statement's preparation inside the transaction.
    let statement = client.prepare_cached(INSERT).await.map_err(db_error)?;
    let outcome = transaction(shared, &client, &statement, batch).await;
    if outcome.is_err() {
        // A broken connection fails this too, and the pool drops it.
        let _ = client.batch_execute("ROLLBACK").await;
    }
    outcome
}

async fn transaction(
    shared: &Shared,
    tx: &Object,
    statement: &Statement,
    batch: &[Pending],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let (begun, registered) = tokio::join!(tx.batch_execute("BEGIN"), lock_recipients(tx, batch));
    begun.map_err(db_error)?;
    let registered = registered?;
    let mut refusals = Vec::with_capacity(batch.len());
    // Recipients counted in this batch: open messages, with those admitted
    // since.
    let mut open: HashMap<&AgentId, u64> = HashMap::new();
    // Admitted by the node's last count (`clearly_within`): not in the
    // database's count until this batch commits.
    let mut uncounted: HashMap<&AgentId, u64> = HashMap::new();
    for insert in batch {
        let write = &insert.write;
        let recipient = &write.record.recipient;
        let refusal = if write.require_recipient && !registered.contains(recipient.as_str()) {
            Some(StoreError::NotFound(Record::Agent(recipient.clone())))
        } else if let Some(limit) = write.inbox_limit {
            let counted = match open.get_mut(recipient) {
                Some(counted) => Some(counted),
                None if shared.counts.clearly_within(recipient, limit) => {
                    *uncounted.entry(recipient).or_default() += 1;
                    None
                }
                None => {
                    let counted = open_count(tx, recipient).await? + uncounted.get(recipient).copied().unwrap_or(0);
                    Some(open.entry(recipient).or_insert(counted))
                }
            };
            match counted {
                Some(counted) if *counted >= limit => Some(StoreError::InboxFull {
                    agent: recipient.clone(),
                    limit,
                }),
                Some(counted) => {
                    *counted += 1;
                    None
                }
                None => None,
            }
        } else {
            None
        };
        refusals.push(refusal);
    }
    // The next batches start from these counts, this batch's included.
    for (recipient, counted) in open {
        shared.counts.counted(recipient, counted);
    }
    let taken = taken_ids(tx, batch, &refusals).await?;
    let inserted = insert(tx, statement, batch, &refusals).await?;
    Ok(batch
        .iter()
        .zip(refusals)
        .map(|(insert, refusal)| {
            let id = insert.write.record.id().as_str();
            let already = || StoreError::AlreadyExists(message_record(&insert.write.record)());
            match refusal {
                // A taken id is the first refusal of the contract.
                Some(_) if taken.contains(id) => Err(already()),
                Some(refusal) => Err(refusal),
                None if inserted.contains(id) => Ok(()),
                None => Err(already()),
            }
        })
        .collect())
}

/// Locks every recipient that must be registered (see
/// [`lock_registered`]); answers those that are.
async fn lock_recipients(tx: &Object, batch: &[Pending]) -> Result<HashSet<String>, StoreError> {
    let mut recipients: Vec<&str> = batch
        .iter()
        .filter(|insert| insert.write.require_recipient)
        .map(|insert| insert.write.record.recipient.as_str())
        .collect();
    if recipients.is_empty() {
        return Ok(HashSet::new());
    }
    recipients.sort_unstable();
    recipients.dedup();
    lock_registered(tx, &recipients).await
}

/// The messages of the batch that were refused (`refused`) or not.
fn by_refusal<'a>(
    batch: &'a [Pending],
    refusals: &'a [Option<StoreError>],
    refused: bool,
) -> impl Iterator<Item = &'a Pending> {
    batch
        .iter()
        .zip(refusals)
        .filter(move |(_, refusal)| refusal.is_some() == refused)
        .map(|(insert, _)| insert)
}

/// Which of the refused messages' ids are taken already.
async fn taken_ids(
    tx: &Object,
    batch: &[Pending],
    refusals: &[Option<StoreError>],
) -> Result<HashSet<String>, StoreError> {
    let ids: Vec<&str> = by_refusal(batch, refusals, true)
        .map(|insert| insert.write.record.id().as_str())
        .collect();
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let select = tx
        .prepare_cached("SELECT message_id FROM messages WHERE message_id = ANY($1::text[])")
        .await
        .map_err(db_error)?;
    ids_of(tx.query(&select, &[&ids]).await.map_err(db_error)?)
}

const INSERT: &str = "INSERT INTO messages (message_id, recipient, state, priority, accepted_at, available_at,
         expires_at, due_at, in_reply_to, version, body)
     SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::int4[], $5::int8[], $6::int8[],
         $7::int8[], $8::int8[], $9::text[], $10::int8[], $11::text[])
     ON CONFLICT (message_id) DO NOTHING
     RETURNING message_id";

/// Inserts the messages not refused with `statement` ([`INSERT`]), one
/// statement for all, and commits; answers the ids inserted (the others
/// were taken).
async fn insert(
    tx: &Object,
    statement: &Statement,
    batch: &[Pending],
    refusals: &[Option<StoreError>],
) -> Result<HashSet<String>, StoreError> {
    let accepted: Vec<&Pending> = by_refusal(batch, refusals, false).collect();
    if accepted.is_empty() {
        tx.batch_execute("COMMIT").await.map_err(db_error)?;
        return Ok(HashSet::new());
    }
    let records = || accepted.iter().map(|insert| &insert.write.record);
    let ids: Vec<&str> = records().map(|record| record.id().as_str()).collect();
    let recipients: Vec<&str> = records().map(|record| record.recipient.as_str()).collect();
    let states: Vec<i32> = records().map(|record| message_state_code(record.state)).collect();
    let priorities: Vec<i32> = records().map(|record| record.message.priority as i32).collect();
    let accepted_at: Vec<i64> = records().map(|record| record.accepted_at.unix_micros()).collect();
    let available: Vec<i64> = records().map(|record| record.available_at.unix_micros()).collect();
    let expires: Vec<i64> = records().map(|record| record.expires_at.unix_micros()).collect();
    let due: Vec<Option<i64>> = records().map(due_at).collect();
    let replies: Vec<Option<&str>> = records()
        .map(|record| record.message.in_reply_to.as_ref().map(MessageId::as_str))
        .collect();
    let versions: Vec<i64> = records().map(|record| to_i64(record.version)).collect();
    let bodies: Vec<&str> = accepted.iter().map(|i| i.body.as_str()).collect();
    let params: [&(dyn ToSql + Sync); 11] = [
        &ids,
        &recipients,
        &states,
        &priorities,
        &accepted_at,
        &available,
        &expires,
        &due,
        &replies,
        &versions,
        &bodies,
    ];
    // Both sent before either answers: one round trip.
    let (inserted, committed) = tokio::join!(tx.query(statement, &params), tx.batch_execute("COMMIT"));
    let inserted = inserted.map_err(db_error)?;
    committed.map_err(db_error)?;
    ids_of(inserted)
}
