//! The one writer thread. It drains whatever requests are waiting and
//! commits them in one transaction (group commit): one fsync serves many
//! concurrent RPCs. Each request runs in its own savepoint (or is a single
//! statement, which SQLite undoes alone), so a refused write fails alone; a
//! failure that rolls back the whole transaction fails the whole batch.

use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::backend;
use super::checkpoint::Checkpointer;
use super::hot::{Hot, HotChange};
use super::writes::{Staged, apply};
use crate::domain::message::MessageRecord;
use crate::domain::session::SessionEvent;
use crate::store::{EventFeed, MessageWrite, SessionChange, StoreError, event_of};

/// Requests waiting for the writer before callers wait to enqueue.
pub(super) const WRITE_QUEUE: usize = 4096;

/// Delivery claims and who waits for them (see [`Store::lease`]).
pub(super) type Lease = (Vec<MessageWrite>, oneshot::Sender<Result<(), StoreError>>);

pub(super) enum WriterRequest {
    Commit(Box<Pending>),
    Lease(Lease),
    Close(oneshot::Sender<Result<(), StoreError>>),
}

/// A write waiting for the writer thread.
pub(super) enum Pending {
    /// A write set; a session change in it gets the next event sequence.
    Set {
        set: Box<EncodedSet>,
        reply: oneshot::Sender<SetResult>,
    },
    /// Any other write; answers the number of rows it changed.
    Rows {
        write: RowsWrite,
        reply: oneshot::Sender<Result<u64, StoreError>>,
        hot: Option<HotChange>,
    },
}

pub(super) type RowsWrite = Box<dyn FnOnce(&Connection) -> Result<u64, StoreError> + Send>;
pub(super) type SetResult = Result<Option<Arc<SessionEvent>>, StoreError>;

/// A write set with its JSON bodies encoded by the caller, off the writer thread.
pub(super) struct EncodedSet {
    pub(super) session: Option<(SessionChange, String)>,
    pub(super) messages: Vec<(MessageWrite, String)>,
}

impl Pending {
    fn fail(self, error: StoreError) {
        // The caller may have gone away; nothing to do then.
        let _ = match self {
            Pending::Set { reply, .. } => reply.send(Err(error)).is_ok(),
            Pending::Rows { reply, .. } => reply.send(Err(error)).is_ok(),
        };
    }
}

/// A write's result, answered only after its transaction committed, with
/// what it changes in [`Hot`].
enum Outcome {
    Set(oneshot::Sender<SetResult>, SetResult, Vec<MessageRecord>),
    Rows(
        oneshot::Sender<Result<u64, StoreError>>,
        Result<u64, StoreError>,
        Option<HotChange>,
    ),
}

pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) feed: Arc<EventFeed>,
    pub(super) hot: Arc<Mutex<Hot>>,
    /// Sequence of the latest committed event.
    pub(super) last: u64,
    pub(super) max_batch: usize,
    /// Stopped before the final checkpoint at close.
    pub(super) checkpointer: Option<Checkpointer>,
}

impl Writer {
    pub(super) fn run(mut self, mut requests: mpsc::Receiver<WriterRequest>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        let mut leases = Vec::new();
        while let Some(first) = requests.blocking_recv() {
            let mut close = None;
            let mut next = Some(first);
            while let Some(request) = next.take() {
                match request {
                    WriterRequest::Commit(pending) => batch.push(*pending),
                    WriterRequest::Lease(lease) => leases.push(lease),
                    WriterRequest::Close(done) => close = Some(done),
                }
                if close.is_none() && batch.len() + leases.len() < self.max_batch {
                    next = requests.try_recv().ok();
                }
            }
            self.commit(&mut batch);
            self.lease(&mut leases);
            if let Some(done) = close {
                requests.close();
                while let Ok(request) = requests.try_recv() {
                    match request {
                        WriterRequest::Commit(pending) => pending.fail(StoreError::Closed),
                        WriterRequest::Lease((_, reply)) => {
                            let _ = reply.send(Err(StoreError::Closed));
                        }
                        WriterRequest::Close(_) => {}
                    }
                }
                let _ = done.send(self.checkpoint());
                return;
            }
        }
        let _ = self.checkpoint();
    }

    /// Reloads the latest stored sequence after a failed commit, so the
    /// next one neither reuses nor skips a number.
    fn resync(&mut self) {
        match self
            .conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM session_events", [], |r| r.get(0))
        {
            Ok(last) => self.last = last,
            Err(error) => tracing::error!(%error, "cannot re-read the latest event sequence"),
        }
    }

    fn checkpoint(&mut self) -> Result<(), StoreError> {
        if let Some(checkpointer) = self.checkpointer.take() {
            checkpointer.stop();
        }
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .map_err(backend)
    }

    /// Applies delivery claims to [`Hot`] only, after the batch they came
    /// with committed, so they see every committed change.
    fn lease(&self, leases: &mut Vec<Lease>) {
        let mut hot = self.hot.lock().unwrap_or_else(PoisonError::into_inner);
        for (writes, reply) in leases.drain(..) {
            let _ = reply.send(hot.lease(writes));
        }
    }

    fn commit(&mut self, batch: &mut Vec<Pending>) {
        if batch.is_empty() {
            return;
        }
        self.commit_batch(batch);
        self.hot.lock().unwrap_or_else(PoisonError::into_inner).staging.clear();
    }

    /// Commits the batch in one transaction, then publishes the events in
    /// sequence order and answers each request.
    fn commit_batch(&mut self, batch: &mut Vec<Pending>) {
        let tx = match self.conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => return fail_all(batch, &backend(e)),
        };
        let mut sequence = self.last;
        let mut staged = Staged::default();
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut pending = batch.drain(..);
        while let Some(next_write) = pending.next() {
            let outcome = match next_write {
                Pending::Set { set, reply } => {
                    let next = set.session.as_ref().map(|_| sequence + 1);
                    match apply(&tx, &set, next, &staged, &self.hot) {
                        Ok(changes) => {
                            staged.merge(changes);
                            let EncodedSet { session, messages } = *set;
                            let event = session.map(|(change, _)| {
                                sequence += 1;
                                Arc::new(event_of(change, sequence))
                            });
                            let records = messages.into_iter().map(|(write, _)| write.record).collect();
                            Outcome::Set(reply, Ok(event), records)
                        }
                        Err(e) => Outcome::Set(reply, Err(e), Vec::new()),
                    }
                }
                Pending::Rows { write, reply, hot } => {
                    let result = in_savepoint(&tx, write);
                    if let (Ok(_), Some(change)) = (&result, &hot) {
                        staged.agent(change);
                    }
                    Outcome::Rows(reply, result, hot)
                }
            };
            let failed = outcome.is_err();
            outcomes.push(outcome);
            // Some errors (disk full, I/O) roll back the whole transaction,
            // not just the savepoint: then nothing of this batch is stored.
            if failed && tx.is_autocommit() {
                drop(tx);
                let error = StoreError::Backend("the transaction was rolled back by SQLite".into());
                fail_outcomes(outcomes, &error);
                pending.for_each(|rest| rest.fail(error.clone()));
                return self.resync();
            }
        }
        drop(pending);
        if let Err(e) = tx.commit() {
            fail_outcomes(outcomes, &backend(e));
            return self.resync();
        }
        self.last = sequence;
        let mut replies = Vec::with_capacity(outcomes.len());
        {
            // Committed: mirror the changes before anyone hears of them.
            let mut hot = self.hot.lock().unwrap_or_else(PoisonError::into_inner);
            for outcome in outcomes {
                match outcome {
                    Outcome::Set(reply, result, records) => {
                        if let Ok(event) = &result {
                            records.into_iter().for_each(|record| hot.message(record));
                            if let Some(event) = event {
                                hot.session(&event.session);
                            }
                        }
                        replies.push(Outcome::Set(reply, result, Vec::new()));
                    }
                    Outcome::Rows(reply, result, change) => {
                        if let (Ok(_), Some(change)) = (&result, change) {
                            hot.apply(change);
                        }
                        replies.push(Outcome::Rows(reply, result, None));
                    }
                }
            }
        }
        for outcome in replies {
            // The caller may have gone away; the change is committed anyway.
            let _ = match outcome {
                Outcome::Set(reply, outcome, _) => {
                    if let Ok(Some(event)) = &outcome {
                        self.feed.publish(event.clone());
                    }
                    reply.send(outcome).is_ok()
                }
                Outcome::Rows(reply, outcome, _) => reply.send(outcome).is_ok(),
            };
        }
    }
}

impl Outcome {
    fn is_err(&self) -> bool {
        match self {
            Outcome::Set(_, result, _) => result.is_err(),
            Outcome::Rows(_, result, _) => result.is_err(),
        }
    }
}

fn fail_outcomes(outcomes: Vec<Outcome>, error: &StoreError) {
    for outcome in outcomes {
        let _ = match outcome {
            Outcome::Set(reply, ..) => reply.send(Err(error.clone())).is_ok(),
            Outcome::Rows(reply, ..) => reply.send(Err(error.clone())).is_ok(),
        };
    }
}

/// Runs `write` in a savepoint: its changes are undone if it fails. The
/// savepoint statements are prepared once (rusqlite's `Savepoint` parses
/// them on every call, a few percent of a send's CPU).
pub(super) fn in_savepoint<T>(
    conn: &Connection,
    write: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let run = |sql: &str| {
        conn.prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute([]))
            .map_err(backend)
    };
    run("SAVEPOINT write")?;
    match write(conn) {
        Ok(done) => {
            run("RELEASE write")?;
            Ok(done)
        }
        Err(error) => {
            // Fails only if SQLite rolled back the whole transaction,
            // which the writer checks after every write.
            let _ = run("ROLLBACK TO write").and_then(|_| run("RELEASE write"));
            Err(error)
        }
    }
}

fn fail_all(batch: &mut Vec<Pending>, error: &StoreError) {
    for pending in batch.drain(..) {
        pending.fail(error.clone());
    }
}
