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
//!
//! - [`schema`]: tables, versions and migrations;
//! - [`rows`]: records to rows and JSON bodies, and back;
//! - [`writer`]: the writer thread and its group commit;
//! - [`writes`]: what each write checks and changes inside the transaction;
//! - [`hot`]: the in-memory mirror of the hot path;
//! - [`checkpoint`]: the background WAL checkpointer;
//! - [`reads`]: the read pool and the queries that need the disk;
//! - [`retention`]: removing what is older than its retention, reclaiming space.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{
    EventFeed, EventFilter, Inbox, MessageWrite, SessionPage, SessionQuery, Store, StoreCounts, StoreError, WriteSet,
};
use crate::domain::agent::Agent;
use crate::domain::message::{MessageId, MessageRecord};
use crate::domain::session::{Session, SessionEvent};
use crate::domain::token::AgentToken;
use crate::domain::{AgentId, SessionId, Timestamp};

mod checkpoint;
mod hot;
mod reads;
mod retention;
mod rows;
mod schema;
mod writer;
mod writes;

#[cfg(test)]
mod tests;

use checkpoint::{Checkpointer, retry_soon};
use hot::{Hot, HotChange};
use reads::{READERS, ReadPool};
use rows::{encode, encode_delivery};
use schema::migrate;
use writer::{EncodedSet, Pending, WRITE_QUEUE, Writer, WriterRequest};

/// Most requests committed in one transaction, by default.
pub const DEFAULT_MAX_BATCH: usize = 512;

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
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
        // No automatic checkpoints in commits: see [`Checkpointer`]. A new
        // file takes `auto_vacuum` only before its first page is written,
        // which switching to WAL does, so it comes first (an older file is
        // switched by `schema::migrate`).
        conn.execute_batch(&format!(
            "PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync};
             PRAGMA wal_autocheckpoint = 0;"
        ))
        .map_err(|e| open_error(&options.path, e))?;
        migrate(&conn).map_err(|e| open_error(&options.path, e))?;
        // Room for every statement the writer runs (rusqlite keeps 16).
        conn.set_prepared_statement_cache_capacity(64);
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

    /// The database file and its write-ahead log, in bytes.
    fn size_bytes(&self) -> u64 {
        let path = &self.readers.path;
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        [path.as_os_str(), wal.as_os_str()]
            .iter()
            .filter_map(|file| std::fs::metadata(file).ok())
            .map(|meta| meta.len())
            .sum()
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
            .map(|write| encode_delivery(&write.record).map(|body| (write, body)))
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
        let id = id.clone();
        self.read(move |conn| reads::session(conn, &id)).await
    }

    async fn list_sessions(&self, query: &SessionQuery) -> Result<SessionPage, StoreError> {
        let query = query.clone();
        self.read(move |conn| reads::list_sessions(conn, &query)).await
    }

    async fn idle_sessions(&self, before: Timestamp, limit: usize) -> Result<Vec<Session>, StoreError> {
        self.read(move |conn| reads::idle_sessions(conn, before, limit)).await
    }

    async fn events(
        &self,
        after: u64,
        up_to: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<Vec<Arc<SessionEvent>>, StoreError> {
        let filter = filter.clone();
        self.read(move |conn| reads::events(conn, after, up_to, &filter, limit))
            .await
    }

    async fn put_agent(&self, agent: Agent, expected: Option<u64>) -> Result<Agent, StoreError> {
        let body = encode(&agent)?;
        let stored = agent.clone();
        let hot = Some(HotChange::PutAgent(Box::new(agent.clone())));
        let write = move |conn: &Connection| writes::put_agent(conn, &agent, &body, expected);
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
        let id = id.clone();
        Ok(self.write(move |conn| writes::delete_agent(conn, &id), hot).await? > 0)
    }

    async fn put_token(&self, token: AgentToken) -> Result<(), StoreError> {
        let body = encode(&token)?;
        let write = move |conn: &Connection| writes::put_token(conn, token, &body);
        self.write(write, None).await.map(drop)
    }

    async fn tokens(&self) -> Result<Vec<AgentToken>, StoreError> {
        self.read(reads::tokens).await
    }

    async fn delete_token(&self, token_id: &str) -> Result<bool, StoreError> {
        let id = token_id.to_owned();
        Ok(self.write(move |conn| writes::delete_token(conn, &id), None).await? > 0)
    }

    async fn touch_token(&self, token_id: &str, at: Timestamp) -> Result<(), StoreError> {
        let id = token_id.to_owned();
        self.write(move |conn| writes::touch_token(conn, &id, at), None)
            .await
            .map(drop)
    }

    async fn get_message(&self, id: &MessageId) -> Result<Option<MessageRecord>, StoreError> {
        if let Some(open) = self.hot().open.get(id) {
            return Ok(Some(open.clone()));
        }
        let id = id.clone();
        self.read(move |conn| reads::message(conn, &id)).await
    }

    async fn replies(&self, id: &MessageId, limit: usize) -> Result<Vec<MessageRecord>, StoreError> {
        let id = id.clone();
        self.read(move |conn| reads::replies(conn, &id, limit)).await
    }

    async fn inbox(&self, agent: &AgentId, now: Timestamp, limit: usize) -> Result<Inbox, StoreError> {
        let hot = self.hot();
        Ok(hot.index.inbox(agent, now, limit, |id| hot.open.get(id)))
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
        let mut counts = self.read(reads::counts).await?;
        counts.size_bytes = Some(self.size_bytes());
        Ok(counts)
    }

    async fn prune_messages(&self, before: Timestamp, limit: usize) -> Result<u64, StoreError> {
        self.write(move |conn| retention::prune_messages(conn, before, limit), None)
            .await
    }

    async fn prune_events(&self, before: Timestamp, limit: usize) -> Result<u64, StoreError> {
        self.write(move |conn| retention::prune_events(conn, before, limit), None)
            .await
    }

    async fn prune_sessions(&self, before: Timestamp, limit: usize) -> Result<u64, StoreError> {
        self.write(move |conn| retention::prune_sessions(conn, before, limit), None)
            .await
    }

    async fn reclaim(&self) -> Result<(), StoreError> {
        self.write(retention::reclaim, None).await.map(drop)
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
