//! Durable store in PostgreSQL, the backend for several agentbus nodes
//! sharing one database. Every guarantee of the store contract holds
//! against the database, with no state kept in memory but the event feed's
//! order, so other nodes' writes are seen by every read; other nodes'
//! events and inbox changes arrive as notifications ([`cluster`]).
//!
//! Driver: `tokio-postgres` with a `deadpool-postgres` pool. It is async
//! without a blocking thread per call, pipelines requests on one connection,
//! caches prepared statements per connection (`prepare_cached`: every
//! statement here is static text, prepared once per connection and then
//! sent as Bind/Execute only), exposes LISTEN/NOTIFY (cross-node
//! wake-ups) and portals (for list pages that stop loading at
//! the byte budget), and maps SQLSTATEs to typed codes. The benchmark's
//! PostgreSQL peer already uses it. `sqlx` would add compile-time checked
//! queries and its own pool, at the cost of a macro layer, a much larger
//! dependency tree and a database (or offline metadata) at build time.
//!
//! - [`schema`]: embedded, numbered migrations under an advisory lock;
//! - [`rows`]: records to rows and JSON bodies, and back;
//! - [`writes`]: the transactions, and why the event counter is one row;
//! - [`reads`]: the queries;
//! - [`feed`]: announcing committed events in sequence order;
//! - [`cluster`]: what nodes sharing the database tell each other
//!   (LISTEN/NOTIFY), and which one runs the background work.
//!
//! Errors: a lost or refused connection, a server shutting down or a pool
//! that cannot hand out a connection in time is [`StoreError::Unavailable`]
//! (UNAVAILABLE to clients: retry later); anything else unexpected is
//! [`StoreError::Backend`]. The pool opens connections again by itself once
//! the database is back.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_util::sync::CancellationToken;

use super::{
    AgentPresence, EventFeed, EventFilter, Inbox, MessageWrite, SessionPage, SessionQuery, Store, StoreCounts,
    StoreError, WriteSet,
};
use crate::domain::agent::Agent;
use crate::domain::message::{MessageId, MessageRecord, MessageState};
use crate::domain::session::{Session, SessionEvent};
use crate::domain::token::AgentToken;
use crate::domain::{AgentId, SessionId, Timestamp};

mod batches;
mod cluster;
mod counts;
mod feed;
mod inserts;
mod reads;
mod retention;
mod rows;
mod schema;
mod updates;
mod writes;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use cluster::Cluster;
use counts::OpenCounts;
use feed::Announcer;
use rows::encode;
use writes::{EncodedSet, execute};

/// Connections in the pool, by default.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// How long opening a connection may take, when the URL sets no
/// `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a call waits for a free connection before it is UNAVAILABLE.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// How long a health check waits for the database.
const CHECK_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// `postgres://user[:password]@host:port/database[?options]`.
    pub url: String,
    pub pool_size: usize,
    pub feed_capacity: usize,
}

pub struct PostgresStore {
    pool: Pool,
    feed: Arc<EventFeed>,
    announcer: Arc<Announcer>,
    cluster: Arc<Cluster>,
    counts: Arc<OpenCounts>,
    /// Connections whose commits do not wait for the WAL flush, for
    /// delivery claims (see [`Store::lease`] below) and notifications.
    lazy: Pool,
    /// New messages, committed in groups ([`inserts`]).
    inserts: batches::Queue,
    /// Lone updates (acks, releases), committed in groups ([`updates`]).
    updates: batches::Queue,
    /// Lone claims, the same on the lazy connections.
    leases: batches::Queue,
    /// Cancelled by [`Store::close`]; stops the feed's follower.
    closed: CancellationToken,
}

/// Planner settings of every connection: no hash or merge joins.
///
/// Every statement here that joins (a batch of updates over `unnest`
/// arrays, sessions by participant) is meant as a loop of index lookups.
/// PostgreSQL caches one generic plan per prepared statement and
/// connection, made from the table's size when it is made, and keeps it
/// until the table is next analyzed: made while the table is new and
/// nearly empty, a hash join over a sequential scan looks cheapest, and
/// stays, reading the whole table on every call as it grows (in a
/// 10-second benchmark on a new schema, a batch of three acks took a
/// millisecond, against about 0.1 ms as lookups). Without the two join
/// methods the plan is lookups from the start, and for these statements
/// that is the best plan at any size.
const SESSION_SETTINGS: &str = "-c enable_hashjoin=off -c enable_mergejoin=off";

impl PostgresStore {
    /// Connects, migrates the schema and starts following the event feed.
    /// Fails with [`StoreError::Unavailable`] if the database cannot be
    /// reached, naming it (without the password).
    pub async fn open(options: &PostgresOptions) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = options
            .url
            .parse()
            .map_err(|e| StoreError::Backend(format!("invalid database URL: {e}")))?;
        let target = describe(&config);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // An OK answers a commit that is on disk, whatever the database's
        // or the role's default (a setting given last wins).
        let given = config
            .get_options()
            .map(|given| format!("{given} "))
            .unwrap_or_default();
        let mut lazy_config = config.clone();
        lazy_config.options(format!("{given}{SESSION_SETTINGS} -c synchronous_commit=off"));
        config.options(format!("{given}{SESSION_SETTINGS} -c synchronous_commit=on"));
        let pool = build_pool(&config, options.pool_size)?;
        let lazy = build_pool(&lazy_config, lazy_pool_size(options.pool_size))?;
        let at_target = |error: StoreError| match error {
            StoreError::Unavailable(detail) => {
                StoreError::Unavailable(format!("cannot reach PostgreSQL at {target}: {detail}"))
            }
            StoreError::Backend(detail) => StoreError::Backend(format!("PostgreSQL at {target}: {detail}")),
            other => other,
        };
        let mut client = pool.get().await.map_err(pool_error).map_err(at_target)?;
        let schema = schema::migrate(&mut client).await.map_err(at_target)?;
        let last: i64 = client
            .query_one("SELECT last FROM event_sequence", &[])
            .await
            .map_err(db_error)
            .map_err(at_target)?
            .try_get(0)
            .map_err(backend)?;
        drop(client);
        let feed = Arc::new(EventFeed::new(options.feed_capacity, last as u64));
        let announcer = Arc::new(Announcer::new(feed.clone()));
        let closed = CancellationToken::new();
        let (cluster, outbox) = Cluster::new(&schema);
        let cluster = Arc::new(cluster);
        tokio::spawn(feed::follow(announcer.clone(), pool.clone(), closed.clone()));
        tokio::spawn(cluster::send(cluster.clone(), lazy.clone(), outbox, closed.clone()));
        tokio::spawn(cluster::listen(
            cluster.clone(),
            config,
            announcer.clone(),
            closed.clone(),
        ));
        let counts = Arc::new(OpenCounts::default());
        // A quarter of the pool at most writes new messages: reads,
        // deliveries and acks keep connections while batches commit.
        let inserts = inserts::start(pool.clone(), cluster.clone(), counts.clone(), options.pool_size / 4);
        let updates = updates::start(pool.clone(), cluster.clone(), options.pool_size / 4);
        // Half the lazy connections at most: notifications use them too.
        let leases = updates::start(lazy.clone(), cluster.clone(), lazy_pool_size(options.pool_size) / 2);
        tracing::info!(database = %target, schema, pool_size = options.pool_size, "PostgreSQL store open");
        Ok(Self {
            pool,
            feed,
            announcer,
            cluster,
            counts,
            lazy,
            inserts,
            updates,
            leases,
            closed,
        })
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    /// A lone write of a message, committed with others on `queue`'s
    /// connections ([`inserts`], [`updates`]).
    async fn enqueue(&self, write: MessageWrite, queue: &batches::Queue) -> Result<(), StoreError> {
        let body = encode(&write.record)?;
        let mut notices = Vec::new();
        self.cluster.message_payloads(&write, &body, &mut notices);
        let (answer, answered) = tokio::sync::oneshot::channel();
        let pending = batches::Pending {
            write,
            body,
            notices,
            answer,
        };
        queue.send(pending).map_err(|_| StoreError::Closed)?;
        answered.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Applies the set in a transaction of its own, on a connection of
    /// `pool`.
    async fn transaction(&self, set: WriteSet, pool: &Pool) -> Result<Option<Arc<SessionEvent>>, StoreError> {
        let session = match set.session {
            Some(change) => {
                let body = encode(&change.session)?;
                Some((change, body))
            }
            None => None,
        };
        let messages: Vec<(MessageWrite, String)> = set
            .messages
            .into_iter()
            .map(|write| encode(&write.record).map(|body| (write, body)))
            .collect::<Result<_, _>>()?;
        let mut notices = Vec::new();
        for (write, body) in &messages {
            self.cluster.message_payloads(write, body, &mut notices);
        }
        let set = EncodedSet { session, messages };
        let (pool, announcer, cluster, counts) = (
            pool.clone(),
            self.announcer.clone(),
            self.cluster.clone(),
            self.counts.clone(),
        );
        // A task of its own: a caller that gives up (a client hanging up)
        // must not abandon a transaction in its COMMIT, nor leave a
        // committed event unannounced and the feed stalled behind it.
        let task = tokio::spawn(async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(db_error)?;
            let applied = writes::apply(&tx, set, &announcer, &counts).await?;
            if let Some((event, _)) = &applied {
                notices.push(cluster.event_payload(event.sequence));
            }
            tx.commit().await.map_err(db_error)?;
            cluster.notify(notices);
            Ok::<_, StoreError>(applied.map(|(event, ticket)| {
                ticket.committed(event.clone());
                event
            }))
        });
        let event = task
            .await
            .map_err(|e| StoreError::Backend(format!("write task failed: {e}")))??;
        if let Some(event) = &event {
            // Whoever gets sequence N may watch from N at once.
            self.announcer.announced(event.sequence).await;
        }
        Ok(event)
    }

    /// A client for a write, unless the store is closed.
    async fn writer(&self) -> Result<Object, StoreError> {
        if self.closed.is_cancelled() {
            return Err(StoreError::Closed);
        }
        self.client().await
    }
}

fn build_pool(config: &tokio_postgres::Config, size: usize) -> Result<Pool, StoreError> {
    let manager = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig {
            // A connection the server closed is noticed by the client
            // (`is_closed`); a check query per checkout would cost a
            // round trip on every call.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| StoreError::Backend(format!("cannot build the connection pool: {e}")))
}

/// The set's one message write, taken out of it, if the set is that and
/// nothing else and `fits` the write.
fn lone(set: &mut WriteSet, fits: impl FnOnce(&MessageWrite) -> bool) -> Option<MessageWrite> {
    match (&set.session, set.messages.as_slice()) {
        (None, [write]) if fits(write) => set.messages.pop(),
        _ => None,
    }
}

/// Connections for delivery claims and notifications, beside the pool's:
/// a quarter as many, at least one.
fn lazy_pool_size(pool_size: usize) -> usize {
    (pool_size / 4).max(1)
}

/// `postgres://user@host:port/database`: the URL without its password.
pub(crate) fn describe(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(host, port)| match host {
            Host::Tcp(name) => format!("{name}:{port}"),
            Host::Unix(path) => format!("{}:{port}", path.display()),
        })
        .collect();
    let user = config.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    let database = config.get_dbname().unwrap_or_default();
    format!("postgres://{user}{}/{database}", hosts.join(","))
}

/// Classifies a driver error: a connection that is gone or refused, or a
/// server that cannot serve now, is worth a retry later (UNAVAILABLE).
fn db_error(error: tokio_postgres::Error) -> StoreError {
    let retry_later = match error.code() {
        Some(code) => {
            code.code().starts_with("08") // connection exception
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                    SqlState::READ_ONLY_SQL_TRANSACTION, // a standby, during a failover
                    SqlState::T_R_SERIALIZATION_FAILURE,
                    SqlState::T_R_DEADLOCK_DETECTED,
                ]
                .contains(code)
        }
        // No SQLSTATE: the connection broke, or could not be opened.
        None => {
            error.is_closed() || std::error::Error::source(&error).is_some_and(|source| source.is::<std::io::Error>())
        }
    };
    if retry_later {
        StoreError::Unavailable(error.to_string())
    } else {
        StoreError::Backend(error.to_string())
    }
}

fn pool_error(error: PoolError) -> StoreError {
    match error {
        PoolError::Backend(error) => db_error(error),
        PoolError::Timeout(kind) => StoreError::Unavailable(format!("no database connection in time ({kind:?})")),
        PoolError::Closed => StoreError::Closed,
        other => StoreError::Backend(other.to_string()),
    }
}

/// A column that did not convert.
fn backend(error: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(error.to_string())
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("corrupt row in the database: {what}"))
}

#[async_trait]
impl Store for PostgresStore {
    async fn write(&self, mut set: WriteSet) -> Result<Option<Arc<SessionEvent>>, StoreError> {
        if self.closed.is_cancelled() {
            return Err(StoreError::Closed);
        }
        // New messages stored claimed (see `Store::claims_on_send`): their
        // acks need not tell other nodes about room.
        let claims: Vec<(MessageId, u64)> = set
            .messages
            .iter()
            .filter(|write| write.expected.is_none() && write.record.state == MessageState::Delivered)
            .map(|write| (write.record.id().clone(), write.record.version))
            .collect();
        let closes: Vec<AgentId> = set
            .messages
            .iter()
            .filter(|write| write.expected.is_some() && !write.record.state.is_open())
            .map(|write| write.record.recipient.clone())
            .collect();
        let written = match lone(&mut set, |write| write.expected.is_none()) {
            Some(write) => self.enqueue(write, &self.inserts).await.map(|()| None),
            None => match lone(&mut set, |write| writes::plain_updates([write])) {
                Some(write) => self.enqueue(write, &self.updates).await.map(|()| None),
                None => self.transaction(set, &self.pool).await,
            },
        };
        if written.is_ok() {
            self.cluster.claimed(claims.iter().map(|(id, version)| (id, *version)));
            closes.iter().for_each(|agent| self.counts.closed(agent));
        }
        written
    }

    fn claims_on_send(&self) -> bool {
        true
    }

    /// Claims are rows here, so that any node sees them and can deliver
    /// the message again, but their commits do not wait for the WAL flush
    /// (`synchronous_commit = off`): a database that crashes may forget the
    /// last claims, and their messages are delivered again, as the
    /// contract allows. Other nodes see a claim as soon as it commits, and
    /// a later durable commit (the ack) flushes it first.
    async fn lease(&self, writes: Vec<MessageWrite>) -> Result<(), StoreError> {
        if self.closed.is_cancelled() {
            return Err(StoreError::Closed);
        }
        let mut set = WriteSet {
            session: None,
            messages: writes,
        };
        let claims: Vec<(MessageId, u64)> = set
            .messages
            .iter()
            .map(|write| (write.record.id().clone(), write.record.version))
            .collect();
        let leased = match lone(&mut set, |write| writes::plain_updates([write])) {
            Some(write) => self.enqueue(write, &self.leases).await,
            None => self.transaction(set, &self.lazy).await.map(drop),
        };
        if leased.is_ok() {
            self.cluster.claimed(claims.iter().map(|(id, version)| (id, *version)));
        }
        leased
    }

    async fn get_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        reads::session_by_id(&self.client().await?, id).await
    }

    async fn list_sessions(&self, query: &SessionQuery) -> Result<SessionPage, StoreError> {
        reads::list_sessions(&mut self.client().await?, query).await
    }

    async fn idle_sessions(&self, before: Timestamp, limit: usize) -> Result<Vec<Session>, StoreError> {
        reads::idle_sessions(&self.client().await?, before, limit).await
    }

    async fn events(
        &self,
        after: u64,
        up_to: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<Vec<Arc<SessionEvent>>, StoreError> {
        let client = self.client().await?;
        let events = reads::events(&client, after, up_to, filter, limit).await?;
        retention::check_events_kept(&client, after).await?;
        Ok(events)
    }

    async fn put_agent(&self, agent: Agent, expected: Option<u64>) -> Result<Agent, StoreError> {
        let body = encode(&agent)?;
        writes::put_agent(&self.writer().await?, &agent, &body, expected).await?;
        Ok(agent)
    }

    async fn get_agent(&self, id: &AgentId) -> Result<Option<Agent>, StoreError> {
        reads::agent(&self.client().await?, id).await
    }

    async fn is_registered(&self, id: &AgentId) -> Result<bool, StoreError> {
        reads::is_registered(&self.client().await?, id).await
    }

    async fn list_agents(&self, after: Option<&AgentId>, limit: usize) -> Result<Vec<Agent>, StoreError> {
        reads::agents(&self.client().await?, after, limit).await
    }

    async fn delete_agent(&self, id: &AgentId) -> Result<bool, StoreError> {
        let mut client = self.writer().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        // Waits for sends to the agent under way (see `writes::lock_registered`).
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&writes::REGISTRATION_LOCKS, &id.as_str()],
        )
        .await
        .map_err(db_error)?;
        let deleted = tx
            .execute("DELETE FROM agents WHERE agent_id = $1", &[&id.as_str()])
            .await
            .map_err(db_error)?
            > 0;
        // What the nodes published about it goes with it (streams expire).
        tx.execute("DELETE FROM agent_seen WHERE agent_id = $1", &[&id.as_str()])
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        if deleted {
            // Its streams on other nodes look again, and end.
            self.cluster.notify([self.cluster.unregistered_payload(id)]);
        }
        Ok(deleted)
    }

    async fn put_token(&self, token: AgentToken) -> Result<(), StoreError> {
        let body = encode(&token)?;
        let client = self.writer().await?;
        let inserted = execute(
            &client,
            "INSERT INTO agent_tokens (token_id, body) VALUES ($1, $2) ON CONFLICT (token_id) DO NOTHING",
            &[&token.token_id, &body],
        )
        .await?;
        if inserted == 0 {
            return Err(StoreError::AlreadyExists(super::Record::Token(token.token_id)));
        }
        Ok(())
    }

    async fn tokens(&self) -> Result<Vec<AgentToken>, StoreError> {
        reads::tokens(&self.client().await?).await
    }

    async fn delete_token(&self, token_id: &str) -> Result<bool, StoreError> {
        let client = self.writer().await?;
        let deleted = execute(&client, "DELETE FROM agent_tokens WHERE token_id = $1", &[&token_id]).await?;
        Ok(deleted > 0)
    }

    async fn touch_token(&self, token_id: &str, at: Timestamp) -> Result<(), StoreError> {
        let client = self.writer().await?;
        execute(
            &client,
            "UPDATE agent_tokens SET body = jsonb_set(body::jsonb, '{last_used_at}', to_jsonb($2::bigint))::text
             WHERE token_id = $1",
            &[&token_id, &at.unix_micros()],
        )
        .await
        .map(drop)
    }

    async fn get_message(&self, id: &MessageId) -> Result<Option<MessageRecord>, StoreError> {
        reads::message(&self.client().await?, id).await
    }

    async fn get_messages(&self, ids: &[MessageId]) -> Result<Vec<MessageRecord>, StoreError> {
        reads::messages(&self.client().await?, ids).await
    }

    async fn replies(&self, id: &MessageId, limit: usize) -> Result<Vec<MessageRecord>, StoreError> {
        reads::replies(&self.client().await?, id, limit).await
    }

    async fn inbox(&self, agent: &AgentId, now: Timestamp, limit: usize) -> Result<Inbox, StoreError> {
        reads::inbox(&self.client().await?, agent, now, limit).await
    }

    async fn due_messages(&self, now: Timestamp, limit: usize) -> Result<Vec<MessageRecord>, StoreError> {
        reads::due(&self.client().await?, now, limit).await
    }

    async fn open_messages(&self, agent: &AgentId, limit: usize) -> Result<Vec<MessageRecord>, StoreError> {
        reads::open(&self.client().await?, agent, limit).await
    }

    async fn inbox_depth(&self, agent: &AgentId) -> Result<u64, StoreError> {
        writes::open_count(&self.client().await?, agent).await
    }

    async fn counts(&self) -> Result<StoreCounts, StoreError> {
        reads::counts(&self.client().await?).await
    }

    async fn prune_messages(&self, before: Timestamp, limit: usize) -> Result<u64, StoreError> {
        retention::prune_messages(&self.writer().await?, before, limit).await
    }

    async fn prune_events(&self, before: Timestamp, limit: usize) -> Result<u64, StoreError> {
        retention::prune_events(&mut self.writer().await?, before, limit).await
    }

    async fn prune_sessions(&self, before: Timestamp, limit: usize) -> Result<u64, StoreError> {
        retention::prune_sessions(&mut self.writer().await?, before, limit).await
    }

    fn feed(&self) -> &EventFeed {
        &self.feed
    }

    fn signals(&self) -> Option<tokio::sync::broadcast::Receiver<super::Signal>> {
        Some(self.cluster.subscribe())
    }

    fn runs_background_work(&self) -> bool {
        self.cluster.is_leader()
    }

    async fn publish_presence(&self, agents: &[AgentPresence], alive_for: Duration) -> Result<(), StoreError> {
        let now = Timestamp::now();
        let until = now.saturating_add(alive_for).unix_micros();
        let (mut online, mut offline, mut seen, mut seen_at) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for agent in agents {
            let id = agent.agent_id.as_str();
            if agent.online {
                online.push(id)
            } else {
                offline.push(id)
            }
            if let Some(at) = agent.last_seen {
                seen.push(id);
                seen_at.push(at.unix_micros());
            }
        }
        let mut client = self.writer().await?;
        let node = self.cluster.node();
        // One transaction: a reader sees an agent online together with
        // when it was last seen, never one without the other.
        let tx = client.transaction().await.map_err(db_error)?;
        let statements = [
            // Rows of nodes that stopped refreshing them (they died) go too.
            "DELETE FROM agent_streams WHERE (node_id = $1 AND agent_id = ANY($2)) OR alive_until < $3",
            "INSERT INTO agent_streams (agent_id, node_id, alive_until)
             SELECT agent_id, $2, $3 FROM unnest($1::text[]) AS agent_id
             ON CONFLICT (agent_id, node_id) DO UPDATE SET alive_until = EXCLUDED.alive_until",
            "INSERT INTO agent_seen (agent_id, last_seen)
             SELECT * FROM unnest($1::text[], $2::bigint[])
             ON CONFLICT (agent_id) DO UPDATE SET last_seen = GREATEST(agent_seen.last_seen, EXCLUDED.last_seen)",
        ];
        let now_micros = now.unix_micros();
        let params: [&[&(dyn tokio_postgres::types::ToSql + Sync)]; 3] = [
            &[&node, &offline, &now_micros],
            &[&online, &node, &until],
            &[&seen, &seen_at],
        ];
        for (sql, params) in statements.into_iter().zip(params) {
            let statement = tx.prepare_cached(sql).await.map_err(db_error)?;
            tx.execute(&statement, params).await.map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)
    }

    async fn presence(&self, agents: &[AgentId]) -> Result<Vec<AgentPresence>, StoreError> {
        reads::presence(&self.client().await?, agents).await
    }

    async fn check(&self) -> Result<(), StoreError> {
        let client = tokio::time::timeout(CHECK_WAIT, self.client())
            .await
            .map_err(|_| StoreError::Unavailable("no database connection in time".into()))??;
        tokio::time::timeout(CHECK_WAIT, client.simple_query("SELECT 1"))
            .await
            .map_err(|_| StoreError::Unavailable("the database did not answer in time".into()))?
            .map_err(db_error)
            .map(drop)
    }

    /// Refuses further writes; those under way finish on their own.
    async fn close(&self) -> Result<(), StoreError> {
        self.closed.cancel();
        Ok(())
    }
}
