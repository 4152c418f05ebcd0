//! The schema and its migrations, embedded in the binary.
//!
//! What is versioned, and how:
//! - The tables and indexes: [`MIGRATIONS`] lists numbered steps; the
//!   one-row table `agentbus_schema` holds the number of the last step
//!   applied. At start a node takes a session-level advisory lock (one per
//!   schema), applies the steps past that number, each in one transaction
//!   with its new number, and lets go: several nodes starting at once
//!   migrate once, the others wait and find nothing to do. A database whose
//!   number is past every step this build knows is refused, untouched: this
//!   build cannot know what that version changed, and writing to it could
//!   break the newer nodes.
//! - The records: JSON bodies, as in the SQLite store (see [`super::rows`]):
//!   a field added to a domain type carries `#[serde(default)]` and needs
//!   no step; renaming or removing one, or changing its meaning, needs a
//!   step that rewrites the bodies.
//!
//! A future schema change: append a step to [`MIGRATIONS`] with the next
//! number; never edit a step that shipped. Steps run inside a transaction
//! (PostgreSQL's DDL is transactional), so a step that fails leaves the
//! previous version whole. Nodes of the previous build refuse the new
//! version, so upgrade every node of a cluster (stop the old ones first, or
//! make the step one the old build can live with and bump the number in a
//! later release).

use deadpool_postgres::Object;

use super::{backend, db_error};
use crate::store::StoreError;

/// The steps, in order; a step's number is its index plus one.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the tables of the SQLite store's version 4, plus the event counter.
    // Ids sort bytewise (COLLATE "C"), as in the other stores, whatever the
    // database's locale.
    r#"
CREATE TABLE sessions (
    session_id  TEXT COLLATE "C" PRIMARY KEY,
    created_seq BIGINT NOT NULL UNIQUE,
    state       INTEGER NOT NULL,
    version     BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX sessions_idle ON sessions (updated_at) WHERE state = 1;
CREATE TABLE session_participants (
    agent_id    TEXT COLLATE "C" NOT NULL,
    created_seq BIGINT NOT NULL,
    session_id  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (agent_id, created_seq)
);
-- The last event sequence handed out: see `super::writes` on why one row.
CREATE TABLE event_sequence (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    last     BIGINT NOT NULL
);
INSERT INTO event_sequence (last) VALUES (0);
CREATE TABLE session_events (
    seq        BIGINT PRIMARY KEY,
    session_id TEXT COLLATE "C" NOT NULL,
    kind       TEXT NOT NULL,
    at         BIGINT NOT NULL,
    agent_id   TEXT,
    task_id    TEXT,
    session    TEXT NOT NULL
);
CREATE INDEX session_events_by_session ON session_events (session_id, seq);
CREATE TABLE messages (
    message_id   TEXT COLLATE "C" PRIMARY KEY,
    recipient    TEXT COLLATE "C" NOT NULL,
    state        INTEGER NOT NULL,
    priority     INTEGER NOT NULL,
    accepted_at  BIGINT NOT NULL,
    available_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    due_at       BIGINT,
    in_reply_to  TEXT COLLATE "C",
    version      BIGINT NOT NULL,
    body         TEXT NOT NULL
);
CREATE INDEX messages_inbox ON messages (recipient, priority DESC, accepted_at, message_id) WHERE state = 1;
CREATE INDEX messages_open ON messages (recipient) WHERE state IN (1, 2);
CREATE INDEX messages_due ON messages (due_at, message_id) WHERE due_at IS NOT NULL;
CREATE INDEX messages_by_reply ON messages (in_reply_to, accepted_at) WHERE in_reply_to IS NOT NULL;
CREATE TABLE agents (
    agent_id TEXT COLLATE "C" PRIMARY KEY,
    version  BIGINT NOT NULL,
    body     TEXT NOT NULL
);
CREATE TABLE agent_tokens (
    token_id TEXT COLLATE "C" PRIMARY KEY,
    issued   BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    body     TEXT NOT NULL
);
"#,
    // 2: presence across nodes: which node has an agent's inbox streams
    // open (a row lives while its node refreshes it), and when each agent
    // was last seen.
    r#"
CREATE TABLE agent_streams (
    agent_id    TEXT COLLATE "C" NOT NULL,
    node_id     TEXT NOT NULL,
    alive_until BIGINT NOT NULL,
    PRIMARY KEY (agent_id, node_id)
);
CREATE TABLE agent_seen (
    agent_id  TEXT COLLATE "C" PRIMARY KEY,
    last_seen BIGINT NOT NULL
);
"#,
    r#"
-- Retention: closed messages by when they closed, ended sessions by when
-- they ended, and the last event sequence it removed (see `super::retention`).
CREATE INDEX messages_closed ON messages (available_at) WHERE state NOT IN (1, 2);
CREATE INDEX sessions_ended ON sessions (updated_at) WHERE state <> 1;
CREATE TABLE events_removed (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    through  BIGINT NOT NULL
);
INSERT INTO events_removed (through) VALUES (0);
"#,
    r#"
-- When an agent's next queued message becomes deliverable, read as the
-- first entry of this index rather than by reading every open message of
-- the agent (see `super::reads::inbox`).
CREATE INDEX messages_waiting ON messages (recipient, available_at) WHERE state = 1;
"#,
];

/// The version this build writes: the number of its last step.
pub(super) const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Brings the schema in the connection's `search_path` to
/// [`SCHEMA_VERSION`] under an advisory lock; refuses a newer one. Answers
/// the schema's name.
pub(super) async fn migrate(client: &mut Object) -> Result<String, StoreError> {
    let schema: Option<String> = client
        .query_one("SELECT current_schema()", &[])
        .await
        .map_err(db_error)?
        .try_get(0)
        .map_err(backend)?;
    let Some(schema) = schema else {
        return Err(StoreError::Backend(
            "no schema to create the tables in: the search_path names no existing schema".into(),
        ));
    };
    // One lock per schema: nodes sharing a schema take turns, tests in
    // their own schemas do not wait for each other.
    let key = format!("agentbus migrate {schema}");
    client
        .execute("SELECT pg_advisory_lock(hashtext($1))", &[&key])
        .await
        .map_err(db_error)?;
    let migrated = apply_steps(client).await;
    // Closing the connection would release it too; a pooled one stays open.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock(hashtext($1))", &[&key])
        .await
        .map_err(db_error);
    migrated.and(unlocked).map(|_| schema)
}

async fn apply_steps(client: &mut Object) -> Result<(), StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS agentbus_schema (
                 only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
                 version  INTEGER NOT NULL
             )",
        )
        .await
        .map_err(db_error)?;
    let stored: i32 = client
        .query_opt("SELECT version FROM agentbus_schema", &[])
        .await
        .map_err(db_error)?
        .map(|row| row.try_get(0))
        .transpose()
        .map_err(backend)?
        .unwrap_or(0);
    if stored > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "the database's schema is version {stored}, newer than this agentbus knows ({SCHEMA_VERSION}): \
             a newer agentbus migrated it; run that version, or point --database-url at another database"
        )));
    }
    for (index, step) in MIGRATIONS.iter().enumerate().skip(stored.max(0) as usize) {
        let version = index as i32 + 1;
        let tx = client.transaction().await.map_err(db_error)?;
        tx.batch_execute(step).await.map_err(db_error)?;
        tx.execute(
            "INSERT INTO agentbus_schema (version) VALUES ($1)
             ON CONFLICT (only_row) DO UPDATE SET version = EXCLUDED.version",
            &[&version],
        )
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        tracing::info!(version, "migrated the PostgreSQL schema");
    }
    Ok(())
}
