//! Durable single-node store in an embedded SQLite file (WAL mode).
//!
//! All writes go through one writer thread that drains whatever requests
//! are waiting and commits them in one transaction (group commit): one fsync
//! serves many concurrent RPCs. Each request runs in its own savepoint, so a
//! version conflict fails that request alone. Reads use a small pool of
//! separate connections and never wait for the writer.
//!
//! Agents, open (queued or delivered) messages and active sessions are also
//! kept in memory, updated by the writer thread after each commit in commit
//! order, so the hot path (recipient lookups, inbox claims, sweeps, acks,
//! session updates) reads no SQL.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params, params_from_iter};
use tokio::sync::{mpsc, oneshot};

use super::index::MessageIndex;
use super::{
    EventFeed, EventFilter, MessageWrite, Record, SessionChange, SessionPage, SessionQuery, Store, StoreCounts,
    StoreError, WriteSet, agent_record, check_version, event_of, message_record, session_record,
};
use crate::domain::agent::Agent;
use crate::domain::message::{MessageId, MessageRecord, MessageState};
use crate::domain::session::{Session, SessionEvent, SessionEventKind, SessionState};
use crate::domain::token::AgentToken;
use crate::domain::{AgentId, SessionId, Timestamp};

/// Most requests committed in one transaction, by default.
pub const DEFAULT_MAX_BATCH: usize = 512;
/// Requests waiting for the writer before callers wait to enqueue.
const WRITE_QUEUE: usize = 4096;
const READERS: usize = 4;
const SCHEMA_VERSION: i64 = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    session_id  TEXT PRIMARY KEY,
    created_seq INTEGER NOT NULL UNIQUE,
    state       INTEGER NOT NULL,
    version     INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_idle ON sessions(state, updated_at);
CREATE TABLE IF NOT EXISTS session_participants (
    agent_id    TEXT NOT NULL,
    created_seq INTEGER NOT NULL,
    session_id  TEXT NOT NULL,
    PRIMARY KEY (agent_id, created_seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS session_events (
    seq        INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL,
    kind       TEXT NOT NULL,
    at         INTEGER NOT NULL,
    agent_id   TEXT,
    task_id    TEXT,
    session    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS session_events_by_session ON session_events(session_id, seq);
CREATE TABLE IF NOT EXISTS messages (
    message_id   TEXT PRIMARY KEY,
    recipient    TEXT NOT NULL,
    state        INTEGER NOT NULL,
    priority     INTEGER NOT NULL,
    accepted_at  INTEGER NOT NULL,
    available_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    in_reply_to  TEXT,
    version      INTEGER NOT NULL,
    body         TEXT NOT NULL
);
-- Version 2: deadlines are served from memory; this index only cost writes.
DROP INDEX IF EXISTS messages_by_expiry;
-- Version 3: inboxes and deadlines are served from memory too; only opening
-- the store looks for open messages, and this index holds only those.
DROP INDEX IF EXISTS messages_by_inbox;
DROP INDEX IF EXISTS messages_by_deadline;
CREATE INDEX IF NOT EXISTS messages_open ON messages(state) WHERE state IN (1, 2);
CREATE INDEX IF NOT EXISTS messages_by_reply ON messages(in_reply_to, accepted_at) WHERE in_reply_to IS NOT NULL;
CREATE TABLE IF NOT EXISTS agents (
    agent_id TEXT PRIMARY KEY,
    version  INTEGER NOT NULL,
    body     TEXT NOT NULL
);
-- Version 4: agent tokens (their hashes and metadata, as JSON in body).
CREATE TABLE IF NOT EXISTS agent_tokens (
    token_id TEXT PRIMARY KEY,
    issued   INTEGER NOT NULL UNIQUE,
    body     TEXT NOT NULL
);
";

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync on every commit: survives power loss.
    Full,
    /// fsync at checkpoints only: survives a process crash, not power loss.
    Normal,
}

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub path: PathBuf,
    pub synchronous: Synchronous,
    pub feed_capacity: usize,
    /// Most requests per transaction; 1 turns group commit off.
    pub max_batch: usize,
}

pub struct SqliteStore {
    writer: mpsc::Sender<WriterRequest>,
    readers: Arc<ReadPool>,
    feed: Arc<EventFeed>,
    hot: Arc<Mutex<Hot>>,
}

/// Every agent and every open message as committed. SQLite stays the
/// record; this spares the hot path its reads.
#[derive(Default)]
struct Hot {
    agents: BTreeMap<AgentId, Agent>,
    open: HashMap<MessageId, MessageRecord>,
    index: MessageIndex,
    /// Open messages the writer's current transaction changes: until it is
    /// done, their leases wait behind it.
    staging: HashSet<MessageId>,
    /// Active sessions.
    sessions: HashMap<SessionId, Session>,
}

impl Hot {
    fn load(conn: &Connection) -> Result<Self, StoreError> {
        let mut hot = Hot::default();
        for agent in query_bodies::<Agent>(conn, "SELECT body FROM agents", [])? {
            hot.agents.insert(agent.id().clone(), agent);
        }
        for record in query_bodies(conn, "SELECT body FROM messages WHERE state IN (1, 2)", [])? {
            hot.message(record);
        }
        let active = [state_code(SessionState::Active)];
        for session in query_bodies::<Session>(conn, "SELECT body FROM sessions WHERE state = ?1", active)? {
            hot.sessions.insert(session.session_id.clone(), session);
        }
        Ok(hot)
    }

    /// Applies a committed message version.
    fn message(&mut self, record: MessageRecord) {
        if let Some(previous) = self.open.remove(record.id()) {
            self.index.remove(&previous);
        }
        if record.state.is_open() {
            self.index.add(&record, false);
            self.open.insert(record.id().clone(), record);
        }
    }

    /// Applies a committed session change.
    fn session(&mut self, session: &Session) {
        if session.is_active() {
            self.sessions.insert(session.session_id.clone(), session.clone());
        } else {
            self.sessions.remove(&session.session_id);
        }
    }

    /// Claims kept in memory only: checked and applied all or nothing.
    /// Only open messages can be leased: one that is no longer open (acked,
    /// dead-lettered meanwhile) is a lost race, a conflict, as in the memory
    /// store, which still holds its later version.
    fn lease(&mut self, writes: Vec<MessageWrite>) -> Result<(), StoreError> {
        for write in &writes {
            let current = self.open.get(write.record.id()).map(|m| m.version);
            match (write.expected, current) {
                (Some(expected), None) => {
                    return Err(StoreError::Conflict {
                        record: message_record(&write.record)(),
                        expected,
                        actual: 0,
                    });
                }
                _ => check_version(message_record(&write.record), write.expected, current)?,
            }
        }
        writes.into_iter().for_each(|write| self.message(write.record));
        Ok(())
    }

    fn apply(&mut self, change: HotChange) {
        match change {
            HotChange::PutAgent(agent) => {
                self.agents.insert(agent.id().clone(), *agent);
            }
            HotChange::DeleteAgent(id) => {
                self.agents.remove(&id);
            }
        }
    }
}

/// What a row write changes in [`Hot`] once committed.
enum HotChange {
    PutAgent(Box<Agent>),
    DeleteAgent(AgentId),
}

/// Delivery claims and who waits for them (see [`Store::lease`]).
type Lease = (Vec<MessageWrite>, oneshot::Sender<Result<(), StoreError>>);

enum WriterRequest {
    Commit(Box<Pending>),
    Lease(Lease),
    Close(oneshot::Sender<Result<(), StoreError>>),
}

/// A write waiting for the writer thread.
enum Pending {
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

type RowsWrite = Box<dyn FnOnce(&Connection) -> Result<u64, StoreError> + Send>;
type SetResult = Result<Option<Arc<SessionEvent>>, StoreError>;

/// A write set with its JSON bodies encoded by the caller, off the writer thread.
struct EncodedSet {
    session: Option<(SessionChange, String)>,
    messages: Vec<(MessageWrite, String)>,
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

impl SqliteStore {
    /// Opens (creating if needed) the database at `options.path`.
    pub fn open(options: &SqliteOptions) -> Result<Self, StoreError> {
        if let Some(dir) = options.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Backend(format!("cannot create data directory {}: {e}", dir.display())))?;
        }
        let mut conn = Connection::open(&options.path).map_err(|e| open_error(&options.path, e))?;
        let sync = match options.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        conn.busy_handler(Some(retry_soon))
            .map_err(|e| open_error(&options.path, e))?;
        // No automatic checkpoints in commits: see [`Checkpointer`].
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA wal_autocheckpoint = 0;"
        ))
        .map_err(|e| open_error(&options.path, e))?;
        migrate(&conn).map_err(|e| open_error(&options.path, e))?;
        let hot = Arc::new(Mutex::new(Hot::load(&conn)?));
        let last: u64 = conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM session_events", [], |r| r.get(0))
            .map_err(backend)?;
        let feed = Arc::new(EventFeed::new(options.feed_capacity, last));
        let (writer, requests) = mpsc::channel(WRITE_QUEUE);
        let max_batch = options.max_batch.max(1);
        let (thread_feed, thread_hot) = (feed.clone(), hot.clone());
        let checkpointer = Checkpointer::start(&options.path)?;
        std::thread::Builder::new()
            .name("agentbus-sqlite-writer".into())
            .spawn(move || {
                Writer {
                    conn,
                    feed: thread_feed,
                    hot: thread_hot,
                    last,
                    max_batch,
                    checkpointer: Some(checkpointer),
                }
                .run(requests)
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        let readers = Arc::new(ReadPool {
            path: options.path.clone(),
            idle: Mutex::new(Vec::new()),
            turns: Arc::new(tokio::sync::Semaphore::new(READERS)),
        });
        Ok(Self {
            writer,
            readers,
            feed,
            hot,
        })
    }

    fn hot(&self) -> MutexGuard<'_, Hot> {
        // Every change to Hot completes before its guard drops.
        self.hot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `write` on the writer thread, inside the next group commit;
    /// `hot` is applied to the in-memory state once it committed.
    async fn write<F>(&self, write: F, hot: Option<HotChange>) -> Result<u64, StoreError>
    where
        F: FnOnce(&Connection) -> Result<u64, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let pending = Pending::Rows {
            write: Box::new(write),
            reply,
            hot,
        };
        self.writer
            .send(WriterRequest::Commit(Box::new(pending)))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T, F>(&self, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.readers.clone();
        // The turn is the task's: a caller that gives up does not free it.
        let turn = pool
            .turns
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let task = tokio::task::spawn_blocking(move || {
            let conn = pool.take()?;
            let result = query(&conn);
            pool.give(conn);
            drop(turn);
            result
        });
        task.await
            .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }
}

fn open_error(path: &Path, error: rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("cannot open database {}: {error}", path.display()))
}

fn backend(error: rusqlite::Error) -> StoreError {
    StoreError::Backend(error.to_string())
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("corrupt row in the database: {what}"))
}

fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "database schema version {version} is newer than this agentbus understands ({SCHEMA_VERSION})"
        )));
    }
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
}

fn state_code(state: SessionState) -> i64 {
    match state {
        SessionState::Active => 1,
        SessionState::Completed => 2,
        SessionState::Terminated => 3,
        SessionState::Expired => 4,
    }
}

struct Writer {
    conn: Connection,
    feed: Arc<EventFeed>,
    hot: Arc<Mutex<Hot>>,
    /// Sequence of the latest committed event.
    last: u64,
    max_batch: usize,
    /// Stopped before the final checkpoint at close.
    checkpointer: Option<Checkpointer>,
}

impl Writer {
    fn run(mut self, mut requests: mpsc::Receiver<WriterRequest>) {
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
        let mut tx = match self.conn.transaction_with_behavior(TransactionBehavior::Immediate) {
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
                    match apply(&mut tx, &set, next, &staged, &self.hot) {
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
                    let result = in_savepoint(&mut tx, write);
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

fn in_savepoint(tx: &mut Transaction<'_>, write: RowsWrite) -> Result<u64, StoreError> {
    let sp = tx.savepoint().map_err(backend)?;
    let rows = write(&sp)?;
    sp.commit().map_err(backend)?;
    Ok(rows)
}

fn fail_all(batch: &mut Vec<Pending>, error: &StoreError) {
    for pending in batch.drain(..) {
        pending.fail(error.clone());
    }
}

/// Applies one write set inside its own savepoint; `sequence` is the
/// event number for its session change.
fn apply(
    tx: &mut Transaction<'_>,
    set: &EncodedSet,
    sequence: Option<u64>,
    earlier: &Staged,
    hot: &Mutex<Hot>,
) -> Result<Staged, StoreError> {
    let sp = tx.savepoint().map_err(backend)?;
    if let (Some((change, body)), Some(sequence)) = (&set.session, sequence) {
        apply_session(&sp, change, body, sequence)?;
    }
    let mut staged = Staged::default();
    for (write, body) in &set.messages {
        let view = View {
            set: &staged,
            earlier,
            hot,
        };
        let was_open_for = apply_message(&sp, write, body, &view)?;
        staged.message(&write.record, was_open_for);
    }
    sp.commit().map_err(backend)?;
    Ok(staged)
}

/// What earlier writes of the transaction being built changed: [`Hot`]
/// shows it only after the commit.
#[derive(Default)]
struct Staged {
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

    fn agent(&mut self, change: &HotChange) {
        match change {
            HotChange::PutAgent(agent) => self.agents.insert(agent.id().clone(), true),
            HotChange::DeleteAgent(id) => self.agents.insert(id.clone(), false),
        };
    }

    /// Adds the changes of a later write set.
    fn merge(&mut self, later: Staged) {
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

fn message_state_code(state: MessageState) -> i64 {
    match state {
        MessageState::Queued => 1,
        MessageState::Delivered => 2,
        MessageState::Acked => 3,
        MessageState::Answered => 4,
        MessageState::DeadLettered => 5,
        MessageState::Expired => 6,
    }
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
    // An UPDATE sets only what changes after the insert, so the index on
    // replies is left alone; REPLACE would rewrite every index.
    let sql = if stored.is_some() {
        "UPDATE messages SET recipient = ?2, state = ?3, available_at = ?6, expires_at = ?7, version = ?9, body = ?10
         WHERE message_id = ?1"
    } else {
        "INSERT INTO messages
         (message_id, recipient, state, priority, accepted_at, available_at, expires_at, in_reply_to, version, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    };
    match conn.prepare_cached(sql).and_then(|mut stmt| stmt.execute(columns)) {
        Ok(_) => Ok(was_open_for),
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
            Err(StoreError::AlreadyExists(message_record(record)()))
        }
        Err(e) => Err(backend(e)),
    }
}

/// Copies the WAL back into the database on its own thread and connection.
/// SQLite's automatic checkpoint runs inside the commit that crosses its
/// threshold, and then after every commit until the WAL starts over, each
/// time with an fsync of the database: it stalled the writer and every write
/// queued behind it (open-loop delivery fell over at 4,000/s). Here PASSIVE
/// checkpoints, which never block the writer, copy the WAL every
/// [`CHECKPOINT_EVERY`]. The writer starts the WAL over only when every
/// frame was copied before its transaction began, which a steady stream of
/// commits rarely allows; so once the WAL holds [`WAL_RESTART`] frames, a
/// RESTART checkpoint (right after a PASSIVE one, with little left to copy)
/// makes the writer wait that long for it to start the WAL over.
struct Checkpointer {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// About 32 MiB of 4 KiB pages.
const WAL_RESTART: i64 = 8192;

/// The busy handler of the writer and the checkpointer: each waits only for
/// the other (a RESTART checkpoint, a commit), which is short, so it retries
/// every 100 µs rather than with SQLite's default back-off of sleeps up to
/// 100 ms. At least five seconds in all, like the busy timeout it replaces.
fn retry_soon(retries: i32) -> bool {
    std::thread::sleep(std::time::Duration::from_micros(100));
    retries < 50_000
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path).map_err(|e| open_error(path, e))?;
        conn.busy_handler(Some(retry_soon)).map_err(backend)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        // (busy, frames in the WAL, frames copied)
        let checkpoint = move |mode: &str| {
            let frames = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get::<_, i64>(1));
            frames.inspect_err(|error| tracing::warn!(%error, mode, "WAL checkpoint failed; retrying"))
        };
        let thread = std::thread::Builder::new()
            .name("agentbus-sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                    if checkpoint("PASSIVE").is_ok_and(|frames| frames >= WAL_RESTART) {
                        let _ = checkpoint("RESTART");
                    }
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Self { stop, thread })
    }

    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// At most [`READERS`] connections, each used by one blocking task at a
/// time: further reads wait for a turn instead of opening connections (and
/// blocking threads) of their own.
struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    turns: Arc<tokio::sync::Semaphore>,
}

impl ReadPool {
    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(conn);
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(&self.path, flags).map_err(|e| open_error(&self.path, e))?;
        conn.execute_batch("PRAGMA query_only = 1; PRAGMA busy_timeout = 5000;")
            .map_err(backend)?;
        Ok(conn)
    }

    fn give(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < READERS {
            idle.push(conn);
        }
    }
}

fn parse_session(body: &str) -> Result<Session, StoreError> {
    decode(body)
}

fn decode<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, StoreError> {
    serde_json::from_str(body).map_err(corrupt)
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(format!("cannot encode a record: {e}")))
}

#[async_trait]
impl Store for SqliteStore {
    /// Claims live in [`Hot`] only: a crash forgets them and the messages
    /// are queued again, as they still are on disk.
    async fn lease(&self, writes: Vec<MessageWrite>) -> Result<(), StoreError> {
        if self.writer.is_closed() {
            return Err(StoreError::Closed);
        }
        {
            // Most claims touch nothing the writer is busy with: no need to
            // queue behind it (two thread switches).
            let mut hot = self.hot();
            if !writes.iter().any(|write| hot.staging.contains(write.record.id())) {
                return hot.lease(writes);
            }
        }
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(WriterRequest::Lease((writes, reply)))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn write(&self, set: WriteSet) -> Result<Option<Arc<SessionEvent>>, StoreError> {
        let session = match set.session {
            Some(change) => {
                let body = encode(&change.session)?;
                Some((change, body))
            }
            None => None,
        };
        let messages = set
            .messages
            .into_iter()
            .map(|write| encode(&write.record).map(|body| (write, body)))
            .collect::<Result<_, _>>()?;
        let (reply, answer) = oneshot::channel();
        let set = Box::new(EncodedSet { session, messages });
        self.writer
            .send(WriterRequest::Commit(Box::new(Pending::Set { set, reply })))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn get_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        if let Some(session) = self.hot().sessions.get(id) {
            return Ok(Some(session.clone()));
        }
        let id = id.as_str().to_owned();
        self.read(move |conn| {
            let body: Option<String> = conn
                .prepare_cached("SELECT body FROM sessions WHERE session_id = ?1")
                .and_then(|mut stmt| stmt.query_row([id], |r| r.get(0)).optional())
                .map_err(backend)?;
            body.as_deref().map(parse_session).transpose()
        })
        .await
    }

    async fn list_sessions(&self, query: &SessionQuery) -> Result<SessionPage, StoreError> {
        let query = query.clone();
        self.read(move |conn| {
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
        })
        .await
    }

    async fn idle_sessions(&self, before: Timestamp, limit: usize) -> Result<Vec<Session>, StoreError> {
        self.read(move |conn| {
            let sql = "SELECT body FROM sessions WHERE state = ?1 AND updated_at < ?2 ORDER BY updated_at LIMIT ?3";
            let active = state_code(SessionState::Active);
            query_bodies(conn, sql, params![active, before.unix_micros(), to_i64(limit as u64)])
        })
        .await
    }

    async fn events(
        &self,
        after: u64,
        up_to: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<Vec<Arc<SessionEvent>>, StoreError> {
        let filter = filter.clone();
        self.read(move |conn| {
            let mut sql = String::from(
                "SELECT seq, kind, at, agent_id, task_id, session FROM session_events WHERE seq > ? AND seq <= ?",
            );
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
            let rows = stmt
                .query_map(params_from_iter(args), |r| {
                    Ok((
                        r.get::<_, u64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                })
                .map_err(backend)?;
            let mut events = Vec::new();
            for row in rows {
                let (sequence, kind, at, agent_id, task_id, body) = row.map_err(backend)?;
                let kind = SessionEventKind::parse(&kind).ok_or_else(|| corrupt(format!("event kind {kind:?}")))?;
                let agent_id = agent_id.map(|a| AgentId::parse(&a).map_err(corrupt)).transpose()?;
                events.push(Arc::new(SessionEvent {
                    sequence,
                    kind,
                    timestamp: Timestamp::from_unix_micros(at),
                    agent_id,
                    task_id,
                    session: parse_session(&body)?,
                }));
            }
            Ok(events)
        })
        .await
    }

    async fn put_agent(&self, agent: Agent, expected: Option<u64>) -> Result<Agent, StoreError> {
        let body = encode(&agent)?;
        let stored = agent.clone();
        let hot = Some(HotChange::PutAgent(Box::new(agent.clone())));
        let write = move |conn: &Connection| {
            let id = agent.id().as_str();
            let current: Option<u64> = conn
                .prepare_cached("SELECT version FROM agents WHERE agent_id = ?1")
                .and_then(|mut stmt| stmt.query_row([id], |r| r.get(0)).optional())
                .map_err(backend)?;
            check_version(agent_record(&agent), expected, current)?;
            conn.prepare_cached("INSERT OR REPLACE INTO agents (agent_id, version, body) VALUES (?1, ?2, ?3)")
                .and_then(|mut stmt| stmt.execute(params![id, agent.version, body]))
                .map_err(backend)
                .map(|rows| rows as u64)
        };
        self.write(write, hot).await?;
        Ok(stored)
    }

    async fn get_agent(&self, id: &AgentId) -> Result<Option<Agent>, StoreError> {
        Ok(self.hot().agents.get(id).cloned())
    }

    async fn is_registered(&self, id: &AgentId) -> Result<bool, StoreError> {
        Ok(self.hot().agents.contains_key(id))
    }

    async fn list_agents(&self, after: Option<&AgentId>, limit: usize) -> Result<Vec<Agent>, StoreError> {
        let hot = self.hot();
        let agents = match after {
            Some(after) => hot
                .agents
                .range::<AgentId, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => hot.agents.range::<AgentId, _>(..),
        };
        Ok(agents.take(limit).map(|(_, agent)| agent.clone()).collect())
    }

    async fn delete_agent(&self, id: &AgentId) -> Result<bool, StoreError> {
        let hot = Some(HotChange::DeleteAgent(id.clone()));
        let id = id.as_str().to_owned();
        let write = move |conn: &Connection| {
            conn.execute("DELETE FROM agents WHERE agent_id = ?1", [id])
                .map_err(backend)
                .map(|rows| rows as u64)
        };
        Ok(self.write(write, hot).await? > 0)
    }

    async fn put_token(&self, token: AgentToken) -> Result<(), StoreError> {
        let body = encode(&token)?;
        let write = move |conn: &Connection| {
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
        };
        self.write(write, None).await.map(drop)
    }

    async fn tokens(&self) -> Result<Vec<AgentToken>, StoreError> {
        self.read(|conn| query_bodies(conn, "SELECT body FROM agent_tokens ORDER BY issued", []))
            .await
    }

    async fn delete_token(&self, token_id: &str) -> Result<bool, StoreError> {
        let id = token_id.to_owned();
        let write = move |conn: &Connection| {
            conn.execute("DELETE FROM agent_tokens WHERE token_id = ?1", [id])
                .map_err(backend)
                .map(|rows| rows as u64)
        };
        Ok(self.write(write, None).await? > 0)
    }

    async fn touch_token(&self, token_id: &str, at: Timestamp) -> Result<(), StoreError> {
        let id = token_id.to_owned();
        let write = move |conn: &Connection| {
            conn.execute(
                "UPDATE agent_tokens SET body = json_set(body, '$.last_used_at', ?2) WHERE token_id = ?1",
                params![id, at.unix_micros()],
            )
            .map_err(backend)
            .map(|rows| rows as u64)
        };
        self.write(write, None).await.map(drop)
    }

    async fn get_message(&self, id: &MessageId) -> Result<Option<MessageRecord>, StoreError> {
        if let Some(open) = self.hot().open.get(id) {
            return Ok(Some(open.clone()));
        }
        let id = id.as_str().to_owned();
        self.read(move |conn| {
            query_bodies(conn, "SELECT body FROM messages WHERE message_id = ?1", params![id]).map(first)
        })
        .await
    }

    async fn replies(&self, id: &MessageId, limit: usize) -> Result<Vec<MessageRecord>, StoreError> {
        let id = id.as_str().to_owned();
        self.read(move |conn| {
            let sql = "SELECT body FROM messages WHERE in_reply_to = ?1 ORDER BY accepted_at LIMIT ?2";
            query_bodies(conn, sql, params![id, to_i64(limit as u64)])
        })
        .await
    }

    async fn inbox(&self, agent: &AgentId, now: Timestamp, limit: usize) -> Result<Vec<MessageRecord>, StoreError> {
        let hot = self.hot();
        Ok(hot.index.inbox(agent, now, limit, |id| hot.open.get(id)))
    }

    async fn next_available(&self, agent: &AgentId) -> Result<Option<Timestamp>, StoreError> {
        let hot = self.hot();
        Ok(hot.index.next_available(agent, |id| hot.open.get(id)))
    }

    async fn due_messages(&self, now: Timestamp, limit: usize) -> Result<Vec<MessageRecord>, StoreError> {
        let hot = self.hot();
        Ok(hot.index.due(now, limit, |id| hot.open.get(id)))
    }

    async fn open_messages(&self, agent: &AgentId, limit: usize) -> Result<Vec<MessageRecord>, StoreError> {
        let hot = self.hot();
        Ok(hot.index.open(agent, limit, |id| hot.open.get(id)))
    }

    async fn inbox_depth(&self, agent: &AgentId) -> Result<u64, StoreError> {
        Ok(self.hot().index.open_count(agent) as u64)
    }

    async fn counts(&self) -> Result<StoreCounts, StoreError> {
        self.read(|conn| {
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
            })
        })
        .await
    }

    fn feed(&self) -> &EventFeed {
        &self.feed
    }

    async fn close(&self) -> Result<(), StoreError> {
        let (done, closed) = oneshot::channel();
        if self.writer.send(WriterRequest::Close(done)).await.is_err() {
            return Ok(()); // Already closed.
        }
        closed.await.unwrap_or(Ok(()))
    }
}

/// Runs `sql`, which selects one JSON body per row, and decodes the bodies.
fn query_bodies<T: serde::de::DeserializeOwned>(
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

fn first(mut records: Vec<MessageRecord>) -> Option<MessageRecord> {
    (!records.is_empty()).then(|| records.swap_remove(0))
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn placeholders(count: usize) -> String {
    vec!["?"; count].join(", ")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::session::{NewSession, SessionLimits};

    fn test_options(path: PathBuf) -> SqliteOptions {
        SqliteOptions {
            path,
            synchronous: Synchronous::Normal,
            feed_capacity: 16,
            max_batch: 64,
        }
    }

    fn session(id: &str) -> SessionChange {
        let new = NewSession {
            session_id: Some(SessionId::parse(id).unwrap()),
            orchestrator: AgentId::parse("claude-code://orchestrator").unwrap(),
            participants: vec![],
            steps: vec![],
            shared_context: Default::default(),
        };
        SessionChange {
            session: Session::create(new, &SessionLimits::default(), Timestamp::now()).unwrap(),
            expected_version: None,
            kind: SessionEventKind::SessionCreated,
            agent_id: None,
            task_id: None,
            timestamp: Timestamp::now(),
        }
    }

    /// A claim of a message the writer's open transaction is changing waits
    /// for that commit, so it cannot succeed against the version the write
    /// replaces (both would win).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_waits_for_a_staged_write_of_its_message() {
        use crate::domain::message::Priority;
        use crate::store::conformance::{insert, message, next};
        let dir = tempfile::tempdir().unwrap();
        let options = test_options(dir.path().join("bus.sqlite3"));
        let store = Arc::new(SqliteStore::open(&options).unwrap());
        let queued = message("contended", "opencode://backend", Priority::Medium, 1);
        Store::write(store.as_ref(), insert(&queued).into()).await.unwrap();
        let sleep = |ms| {
            let store = store.clone();
            tokio::spawn(async move {
                let pause = move |_: &Connection| {
                    std::thread::sleep(Duration::from_millis(ms));
                    Ok(0)
                };
                store.write(pause, None).await
            })
        };
        // Hold the writer, so the ack and a second pause form one batch; the
        // lease comes while that batch pauses with the ack staged.
        let busy = sleep(200);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ack = tokio::spawn({
            let store = store.clone();
            let acked = next(&queued, MessageState::Acked);
            async move { Store::write(store.as_ref(), acked.into()).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let pause = sleep(300);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let lease = store.lease(vec![next(&queued, MessageState::Delivered)]).await;
        assert!(matches!(lease, Err(StoreError::Conflict { .. })), "{lease:?}");
        for task in [busy, pause] {
            task.await.unwrap().unwrap();
        }
        ack.await.unwrap().unwrap();
        let stored = store.get_message(queued.id()).await.unwrap().unwrap();
        assert_eq!(stored.state, MessageState::Acked);
        // Nothing staged now: a claim of an open message goes straight in.
        let other = message("free", "opencode://backend", Priority::Medium, 2);
        Store::write(store.as_ref(), insert(&other).into()).await.unwrap();
        store.lease(vec![next(&other, MessageState::Delivered)]).await.unwrap();
    }

    /// Commits never checkpoint; the background thread copies the WAL into
    /// the database file while the store is open.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_is_checkpointed_in_the_background() {
        use crate::domain::message::Priority;
        use crate::store::conformance::{insert, message};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus.sqlite3");
        let options = test_options(path.clone());
        let store = SqliteStore::open(&options).unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        for i in 0..500 {
            let record = message(&format!("m{i}"), "opencode://backend", Priority::Medium, i);
            Store::write(&store, insert(&record).into()).await.unwrap();
        }
        let grown = || std::fs::metadata(&path).unwrap().len() > before + 100_000;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !grown() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(grown(), "the database file did not grow from {before} bytes");
        store.close().await.unwrap();
    }

    /// A version 2 file (with its inbox and deadline indexes) opens as
    /// version 3: those indexes replaced by the one on open messages, which
    /// the load of open messages uses.
    #[tokio::test]
    async fn a_version_2_file_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus.sqlite3");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE messages (message_id TEXT PRIMARY KEY, recipient TEXT NOT NULL, state INTEGER NOT NULL,
                 priority INTEGER NOT NULL, accepted_at INTEGER NOT NULL, available_at INTEGER NOT NULL,
                 expires_at INTEGER NOT NULL, in_reply_to TEXT, version INTEGER NOT NULL, body TEXT NOT NULL);
                 CREATE INDEX messages_by_inbox ON messages(recipient, state, priority DESC, accepted_at);
                 CREATE INDEX messages_by_deadline ON messages(state, available_at);
                 PRAGMA user_version = 2;",
            )
            .unwrap();
        }
        let options = test_options(path.clone());
        SqliteStore::open(&options).unwrap().close().await.unwrap();
        let conn = Connection::open(&path).unwrap();
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            indexes,
            ["messages_by_reply", "messages_open", "sqlite_autoindex_messages_1"]
        );
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT body FROM messages WHERE state IN (1, 2)",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("messages_open"), "{plan}");
    }

    /// A write that makes SQLite drop the whole transaction, as a full disk
    /// or an I/O error can, must not leave earlier writes of its batch
    /// reported as done, nor let later ones commit outside the batch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rolled_back_transaction_fails_its_whole_batch() {
        let dir = tempfile::tempdir().unwrap();
        let options = test_options(dir.path().join("bus.sqlite3"));
        let store = Arc::new(SqliteStore::open(&options).unwrap());
        // Hold the writer so the next three writes queue up as one batch.
        let busy = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(
                        |_| {
                            std::thread::sleep(Duration::from_millis(300));
                            Ok(0)
                        },
                        None,
                    )
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let first = tokio::spawn({
            let store = store.clone();
            async move { store.commit(session("before")).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let rollback = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .write(
                        |conn| {
                            conn.execute_batch("ROLLBACK").map_err(backend)?;
                            Err(StoreError::Backend("simulated I/O error".into()))
                        },
                        None,
                    )
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let last = tokio::spawn({
            let store = store.clone();
            async move { store.commit(session("after")).await }
        });
        busy.await.unwrap().unwrap();
        assert!(rollback.await.unwrap().is_err());
        for (outcome, id) in [(first.await.unwrap(), "before"), (last.await.unwrap(), "after")] {
            let stored = store.get_session(&SessionId::parse(id).unwrap()).await.unwrap();
            assert_eq!(
                outcome.is_ok(),
                stored.is_some(),
                "{id}: reported {outcome:?}, stored {}",
                stored.is_some()
            );
        }
        // The sequence continues from what is really stored.
        let next = store.commit(session("later")).await.unwrap();
        let stored = store
            .events(0, next.sequence, &EventFilter::default(), 100)
            .await
            .unwrap();
        let sequences: Vec<u64> = stored.iter().map(|e| e.sequence).collect();
        assert_eq!(sequences, (1..=next.sequence).collect::<Vec<_>>());
    }
}
