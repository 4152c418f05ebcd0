//! The schema and its migrations.
//!
//! What is versioned, and how:
//! - The tables and indexes: `PRAGMA user_version` holds [`SCHEMA_VERSION`]
//!   of the last agentbus that opened the file. Every statement of
//!   [`SCHEMA`] is idempotent (`IF NOT EXISTS`, `IF EXISTS`), so running it
//!   on any older file brings that file to the current version; a file of a
//!   newer version is refused, because this build cannot know what that
//!   version changed.
//! - The records: each row keeps its record as a JSON body (see
//!   [`super::rows`]), written by serde. A field added to a domain type
//!   carries `#[serde(default)]`, so bodies written before it still decode;
//!   renaming or removing a field, or changing its meaning, needs a schema
//!   version whose step rewrites the bodies. A message record is kept in two
//!   parts since version 6: its message in `message_bodies`, the rest in
//!   `messages` (see [`super::rows::message_rows`]).
//!
//! A future schema change: bump [`SCHEMA_VERSION`], append its steps to
//! [`SCHEMA`] under a `-- Version N:` comment, each step idempotent (create
//! or drop with `IF [NOT] EXISTS`; a step that cannot be written so, such as
//! `ALTER TABLE ... ADD COLUMN` or a rewrite of bodies, goes in [`migrate`]
//! behind a check of the stored version, in one transaction with the new
//! `user_version`), never edit a step an earlier version shipped, and add a
//! test that opens a file of the previous version (as
//! `a_version_2_file_is_migrated` and `a_version_5_file_is_migrated` do).

use rusqlite::Connection;

use super::rows::encode_delivery;
use crate::domain::message::MessageRecord;

pub(super) const SCHEMA_VERSION: i64 = 6;

pub(super) const SCHEMA: &str = "
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
-- Version 5: retention removes closed messages by when they closed (their
-- available_at); ended sessions are found through sessions_by_idle.
CREATE INDEX IF NOT EXISTS messages_closed ON messages(available_at) WHERE state NOT IN (1, 2);
-- Version 6: a message's JSON, which never changes once accepted, is stored
-- once, here; the body in `messages` holds the rest of its record, and its
-- `body_id` (added by `migrate`) names the row here. Acks and deliveries
-- then rewrite a small row instead of the whole message.
CREATE TABLE IF NOT EXISTS message_bodies (
    body_id INTEGER PRIMARY KEY,
    message TEXT NOT NULL
);
";

/// Brings the file to [`SCHEMA_VERSION`]; refuses a newer one.
pub(super) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "database schema version {version} is newer than this agentbus understands ({SCHEMA_VERSION})"
        )));
    }
    incremental_vacuum(conn)?;
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(SCHEMA)?;
    if version < 6 {
        separate_messages(&tx)?;
    }
    tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
    tx.commit()
}

/// Version 6: links `messages` to `message_bodies`, removes a message's
/// body with its row, and moves the message out of every body stored
/// before.
fn separate_messages(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "ALTER TABLE messages ADD COLUMN body_id INTEGER;
         CREATE TRIGGER IF NOT EXISTS messages_body_removed AFTER DELETE ON messages
         BEGIN DELETE FROM message_bodies WHERE body_id = OLD.body_id; END;",
    )?;
    let unreadable = |rowid: i64, e: &dyn std::fmt::Display| {
        rusqlite::Error::ToSqlConversionFailure(
            format!("cannot read the message in row {rowid} of messages: {e}").into(),
        )
    };
    let mut page = conn.prepare("SELECT rowid, body FROM messages WHERE rowid > ?1 ORDER BY rowid LIMIT 1000")?;
    let mut body = conn.prepare("INSERT INTO message_bodies (message) VALUES (?1)")?;
    let mut rest = conn.prepare("UPDATE messages SET body = ?2, body_id = ?3 WHERE rowid = ?1")?;
    let mut after = 0;
    loop {
        let rows: Vec<(i64, String)> = page
            .query_map([after], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let Some(&(last, _)) = rows.last() else { break };
        for (rowid, stored) in rows {
            let record: MessageRecord = serde_json::from_str(&stored).map_err(|e| unreadable(rowid, &e))?;
            let message = record.message.json().map_err(|e| unreadable(rowid, &e))?;
            // As the writer writes it, room for the closing included.
            let delivery = encode_delivery(&record).map_err(|e| unreadable(rowid, &e))?;
            body.execute([message.get()])?;
            rest.execute(rusqlite::params![rowid, delivery, conn.last_insert_rowid()])?;
        }
        after = last;
    }
    if after > 0 {
        tracing::info!("stored each message apart from its delivery state (schema version 6)");
    }
    Ok(())
}

/// Retention frees pages; with `auto_vacuum = INCREMENTAL` they can be given
/// back to the file system (see `super::retention::reclaim`). A new file
/// takes the mode before its first table; a file made before version 5 is
/// rewritten once by VACUUM, which takes a while on a large file.
fn incremental_vacuum(conn: &Connection) -> rusqlite::Result<()> {
    const INCREMENTAL: i64 = 2;
    let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
    if mode == INCREMENTAL {
        return Ok(());
    }
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")?;
    let tables: i64 = conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))?;
    if tables > 0 {
        tracing::info!("switching the database file to incremental vacuum: rewriting it once (VACUUM)");
        conn.execute_batch("VACUUM")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_file_is_refused_and_left_alone() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1))
            .unwrap();
        let refused = migrate(&conn).unwrap_err().to_string();
        assert!(refused.contains("newer than this agentbus understands"), "{refused}");
        let tables: i64 = conn
            .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tables, 0);
    }

    #[test]
    fn migrating_twice_changes_nothing() {
        let conn = Connection::open_in_memory().unwrap();
        migrate(&conn).unwrap();
        let schema = |conn: &Connection| -> Vec<String> {
            conn.prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let first = schema(&conn);
        migrate(&conn).unwrap();
        assert_eq!(schema(&conn), first);
    }
}
