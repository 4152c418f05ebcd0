//! Group commit of lone message updates: acks, delivery claims, releases
//! (a write set of one compare-and-swap on a message, and nothing else).
//!
//! Each is one row changed by one statement, atomic by itself. Written
//! alone, every one is a statement and a commit of its own, and at a
//! thousand messages a second over many agents, each with a message or two
//! in flight, that is a thousand acks and a thousand claims a second, one
//! commit each. Here they queue while earlier batches run ([`batches`]),
//! and a batch is one `UPDATE ... FROM unnest(...) RETURNING message_id`,
//! committed by itself: the rows whose stored version is the one
//! expected change, the others do not, and each update gets its own answer
//! (a message that is gone or at another version is refused, as it would
//! be alone, and fails no other). Alone, an update is the one-row
//! statement it was before.
//!
//! A batch locks its rows in message id order, as every multi-row update
//! does, but a transaction that updates messages one statement at a time
//! (a session change with its messages) may hold one of them and wait for
//! another: if PostgreSQL reports the deadlock, the batch is written again
//! one update at a time, as it is after any failure of its own.
//!
//! [`batches`]: super::batches

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio_postgres::error::SqlState;

use super::batches::{Pending, Queue};
use super::cluster::Cluster;
use super::rows::ids_of;
use super::writes::{not_updated, update_rows};
use super::{db_error, pool_error};
use crate::store::{MessageWrite, StoreError};

/// Updates in one batch, at most.
const MAX_BATCH: usize = 256;

struct Shared {
    pool: Pool,
    cluster: Arc<Cluster>,
}

/// Starts taking batches off the queue and writing them on connections of
/// `pool`, at most `batches` at a time.
pub(super) fn start(pool: Pool, cluster: Arc<Cluster>, batches: usize) -> Queue {
    let shared = Arc::new(Shared { pool, cluster });
    super::batches::start(batches, MAX_BATCH, move |batch| {
        let shared = shared.clone();
        async move { run(&shared, batch).await }
    })
}

/// What failed a whole batch.
enum Failure {
    /// PostgreSQL broke a deadlock by failing the batch's statement.
    Deadlock(StoreError),
    Other(StoreError),
}

/// Writes the batch and answers each update.
async fn run(shared: &Shared, batch: Vec<Pending>) {
    match write(shared, &batch).await {
        Ok(outcomes) => {
            for (update, outcome) in batch.into_iter().zip(outcomes) {
                update.finish(&shared.cluster, outcome);
            }
        }
        Err(Failure::Deadlock(error) | Failure::Other(error @ StoreError::Backend(_))) if batch.len() > 1 => {
            tracing::debug!(%error, updates = batch.len(), "a batch of updates failed; writing them one by one");
            for update in batch {
                let outcome = match write(shared, std::slice::from_ref(&update)).await {
                    Ok(mut outcomes) => outcomes
                        .pop()
                        .unwrap_or(Err(StoreError::Backend("a batch of one update had no outcome".into()))),
                    Err(Failure::Deadlock(error) | Failure::Other(error)) => Err(error),
                };
                update.finish(&shared.cluster, outcome);
            }
        }
        Err(Failure::Deadlock(error) | Failure::Other(error)) => {
            for update in batch {
                update.finish(&shared.cluster, Err(error.clone()));
            }
        }
    }
}

/// One statement for the batch (committed by itself): the outcome of each
/// update, in order, or the error that failed them all.
async fn write(shared: &Shared, batch: &[Pending]) -> Result<Vec<Result<(), StoreError>>, Failure> {
    let client = shared.pool.get().await.map_err(|e| Failure::Other(pool_error(e)))?;
    let writes: Vec<(&MessageWrite, &str)> = batch
        .iter()
        .map(|update| (&update.write, update.body.as_str()))
        .collect();
    let rows = update_rows(&client, &writes).await.map_err(|error| {
        if error.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED) {
            Failure::Deadlock(db_error(error))
        } else {
            Failure::Other(db_error(error))
        }
    })?;
    let updated = ids_of(rows).map_err(Failure::Other)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for update in batch {
        outcomes.push(if updated.contains(update.write.record.id().as_str()) {
            Ok(())
        } else {
            Err(not_updated(&client, &update.write).await)
        });
    }
    Ok(outcomes)
}
