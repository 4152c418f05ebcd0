//! Tests of what only the SQLite store does: its writer thread, group
//! commit, checkpoints and migrations. What every backend does is in
//! [`crate::store::conformance`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;

use super::schema::SCHEMA_VERSION;
use super::*;
use crate::domain::message::MessageState;
use crate::domain::session::{NewSession, SessionEventKind, SessionLimits};
use crate::store::SessionChange;

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

/// Space freed by retention goes back to the file system: the file
/// shrinks once removed messages are reclaimed and checkpointed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_gives_the_space_back() {
    use crate::domain::message::Priority;
    use crate::store::conformance::{insert, message};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus.sqlite3");
    let store = SqliteStore::open(&test_options(path.clone())).unwrap();
    let payload = "x".repeat(4096);
    for i in 0..1000 {
        let mut record = message(&format!("m{i}"), "opencode://backend", Priority::Medium, i);
        record.message.make_mut().payload = serde_json::json!({ "text": payload });
        let closed = record.closed(MessageState::Acked, Timestamp::from_unix_micros(i));
        Store::write(&store, insert(&closed).into()).await.unwrap();
    }
    store.close().await.unwrap();
    let full = std::fs::metadata(&path).unwrap().len();
    assert!(full > 4_000_000, "{full} bytes");
    // A new file is incremental from the start, so opening it again does
    // not rewrite it (VACUUM is only for files made before version 5).
    let auto_vacuum: i64 = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .unwrap();
    assert_eq!(auto_vacuum, 2, "INCREMENTAL");

    let store = SqliteStore::open(&test_options(path.clone())).unwrap();
    let everything = Timestamp::from_unix_micros(i64::MAX);
    let mut removed = 0;
    loop {
        let batch = store.prune_messages(everything, 300).await.unwrap();
        removed += batch;
        if batch == 0 {
            break;
        }
    }
    assert_eq!(removed, 1000);
    for _ in 0..4 {
        store.reclaim().await.unwrap();
    }
    store.close().await.unwrap();
    let reclaimed = std::fs::metadata(&path).unwrap().len();
    assert!(reclaimed < full / 4, "{full} bytes before, {reclaimed} after");
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
        [
            "messages_by_reply",
            "messages_closed",
            "messages_open",
            "sqlite_autoindex_messages_1"
        ]
    );
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    // Rewritten once so that retention can give space back.
    let auto_vacuum: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap();
    assert_eq!(auto_vacuum, 2, "INCREMENTAL");
    let plan: String = conn
        .query_row(
            concat!("EXPLAIN QUERY PLAN ", rows::message_rows!(), " WHERE m.state IN (1, 2)"),
            [],
            |r| r.get(3),
        )
        .unwrap();
    assert!(plan.contains("messages_open"), "{plan}");
}

/// A version 5 file kept each message record whole in its body; opened as
/// version 6, the messages move to `message_bodies` and read back the same,
/// open ones (loaded at start) and closed ones (read from the file) alike,
/// and removing a message removes its body.
#[tokio::test]
async fn a_version_5_file_is_migrated() {
    use crate::domain::message::Priority;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus.sqlite3");
    let queued = crate::store::conformance::message("m-queued", "opencode://backend", Priority::High, 1);
    let mut reply = crate::store::conformance::message("m-reply", "claude-code://orchestrator", Priority::Low, 2);
    reply.message.make_mut().in_reply_to = Some(queued.id().clone());
    let reply = reply.closed(MessageState::Acked, reply.accepted_at);
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA auto_vacuum = INCREMENTAL;
             CREATE TABLE messages (message_id TEXT PRIMARY KEY, recipient TEXT NOT NULL, state INTEGER NOT NULL,
             priority INTEGER NOT NULL, accepted_at INTEGER NOT NULL, available_at INTEGER NOT NULL,
             expires_at INTEGER NOT NULL, in_reply_to TEXT, version INTEGER NOT NULL, body TEXT NOT NULL);
             PRAGMA user_version = 5;",
        )
        .unwrap();
        for (record, state) in [(&queued, 1), (&reply, 3)] {
            conn.execute(
                "INSERT INTO messages VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7, ?8, ?9)",
                rusqlite::params![
                    record.id().as_str(),
                    record.recipient.as_str(),
                    state,
                    record.accepted_at.unix_micros(),
                    record.available_at.unix_micros(),
                    record.expires_at.unix_micros(),
                    record.message.in_reply_to.as_ref().map(|id| id.as_str()),
                    record.version,
                    rows::encode(record).unwrap()
                ],
            )
            .unwrap();
        }
    }
    let store = SqliteStore::open(&test_options(path.clone())).unwrap();
    assert_eq!(store.get_message(queued.id()).await.unwrap().as_ref(), Some(&queued));
    assert_eq!(
        store.replies(queued.id(), 10).await.unwrap(),
        std::slice::from_ref(&reply)
    );
    let open = store.open_messages(&queued.recipient, 10).await.unwrap();
    assert_eq!(open, std::slice::from_ref(&queued));
    // Stored apart: each body holds the rest of its record only.
    let stored = |sql: &str| -> Vec<String> {
        let conn = Connection::open(&path).unwrap();
        let mut stmt = conn.prepare(sql).unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    for body in stored("SELECT body FROM messages") {
        assert!(!body.contains("\"message\""), "{body}");
    }
    // Written as the writer writes it: an open one with room for its closing.
    assert_eq!(
        stored("SELECT body FROM messages WHERE state = 1"),
        [rows::encode_delivery(&queued).unwrap()]
    );
    assert_eq!(stored("SELECT message FROM message_bodies").len(), 2);
    // Retention removes a closed message with its body.
    let removed = store.prune_messages(Timestamp::now(), 10).await.unwrap();
    assert_eq!(removed, 1);
    assert_eq!(store.get_message(reply.id()).await.unwrap(), None);
    store.close().await.unwrap();
    let left = stored("SELECT message FROM message_bodies");
    assert_eq!(left.len(), 1);
    assert!(left[0].contains("m-queued"), "{left:?}");
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

/// A record's message is encoded once and shared by its versions: the
/// stored JSON is still the message's own, and a changed message is
/// encoded again while the versions that shared it keep theirs.
#[test]
fn a_shared_message_is_stored_as_itself_and_again_once_changed() {
    use crate::domain::message::Priority;
    let message_of = |record: &MessageRecord| {
        let body: serde_json::Value = serde_json::from_str(&rows::encode(record).unwrap()).unwrap();
        body["message"].clone()
    };
    let first = crate::store::conformance::message("m1", "opencode://backend", Priority::Medium, 1);
    let expected = serde_json::to_value(&*first.message).unwrap();
    assert_eq!(message_of(&first), expected);
    let acked = first.closed(MessageState::Acked, first.accepted_at);
    assert_eq!(message_of(&acked), expected, "written as the first version's");
    let mut changed = acked.clone();
    changed.message.make_mut().payload = serde_json::json!({ "text": "changed" });
    assert_eq!(
        message_of(&changed)["payload"],
        serde_json::json!({ "text": "changed" })
    );
    assert_eq!(message_of(&acked), expected);
    // Not shared any more: changed in place, and encoded again.
    changed.message.make_mut().payload = serde_json::json!({ "text": "again" });
    assert_eq!(message_of(&changed)["payload"], serde_json::json!({ "text": "again" }));
    let decoded: MessageRecord = rows::decode(&rows::encode(&changed).unwrap()).unwrap();
    assert_eq!(decoded, changed);
}

#[test]
fn closing_a_message_does_not_grow_its_row() {
    use crate::domain::message::Priority;
    // Times of today's size: a closing changes them, with as many digits.
    let now = crate::domain::Timestamp::now();
    let mut queued = crate::store::conformance::message("m1", "opencode://backend", Priority::Medium, 1);
    queued.accepted_at = now;
    queued.available_at = now;
    queued.expires_at = now.saturating_add(std::time::Duration::from_secs(300));
    let mut delivered = queued.clone();
    delivered.state = MessageState::Delivered;
    delivered.attempts = 1;
    delivered.total_attempts = 1;
    delivered.last_delivered_at = Some(now);
    delivered.version += 1;
    let mut acked = delivered.closed(MessageState::Acked, now);
    acked.acked_at = Some(now);
    acked.version += 1;
    let body = |record: &MessageRecord| rows::encode_delivery(record).unwrap();
    for open in [&queued, &delivered] {
        assert!(
            body(&acked).len() <= body(open).len(),
            "{} grew to {}",
            body(open),
            body(&acked)
        );
    }
    let message = queued.message.json().unwrap().get();
    for record in [&queued, &delivered, &acked] {
        assert_eq!(&MessageRecord::from_parts(message, &body(record)).unwrap(), record);
    }
}
