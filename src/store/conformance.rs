//! One behaviour suite, run against every backend. A backend joins with an
//! `async fn name() -> Fixture` and one line, `conformance!(name);`.

use crate::domain::trace::TraceContext;
use std::sync::Arc;

use serde_json::json;

use super::memory::MemoryStore;
use super::postgres::testing::TestSchema;
use super::sqlite::{SqliteOptions, SqliteStore, Synchronous};
use super::{EventFilter, MessageWrite, Record, SessionChange, SessionQuery, Store, StoreError, WriteSet};
use crate::domain::agent::{Agent, AgentDescriptor, Capabilities};
use crate::domain::message::{
    AgentRef, Message, MessageId, MessageRecord, MessageState, MessageType, Priority, Routing,
};
use crate::domain::session::{NewSession, ParticipantSpec, Session, SessionEventKind, SessionLimits, SessionState};
use crate::domain::token::AgentToken;
use crate::domain::{AgentId, JsonObject, SessionId, Timestamp};

/// A store plus whatever keeps its data alive while a test runs (a
/// temporary directory, later a database schema).
struct Fixture {
    store: Arc<dyn Store>,
    _keep: Option<Box<dyn std::any::Any + Send>>,
}

async fn memory() -> Fixture {
    Fixture {
        store: Arc::new(MemoryStore::new(64)),
        _keep: None,
    }
}

fn sqlite_options(dir: &std::path::Path) -> SqliteOptions {
    SqliteOptions {
        path: dir.join("bus.sqlite3"),
        synchronous: Synchronous::Normal,
        feed_capacity: 64,
        // Small batches, so concurrent tests span several transactions.
        max_batch: 8,
    }
}

async fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&sqlite_options(dir.path())).unwrap();
    Fixture {
        store: Arc::new(store),
        _keep: Some(Box::new(dir)),
    }
}

/// A schema of its own in the test database (see `postgres::testing`),
/// dropped after the test.
async fn postgres() -> Fixture {
    let schema = TestSchema::create().await;
    let store = schema.open().await;
    Fixture {
        store: Arc::new(store),
        _keep: Some(Box::new(schema)),
    }
}

fn agent(id: &str) -> AgentId {
    AgentId::parse(id).unwrap()
}

fn new_session(id: &str, participants: &[&str]) -> Session {
    let new = NewSession {
        session_id: Some(SessionId::parse(id).unwrap()),
        orchestrator: agent("claude-code://orchestrator"),
        participants: participants
            .iter()
            .map(|p| ParticipantSpec::new(p, "", "implementer", vec![], JsonObject::new()).unwrap())
            .collect(),
        steps: vec![],
        shared_context: JsonObject::new(),
    };
    Session::create(new, &SessionLimits::default(), Timestamp::now()).unwrap()
}

fn create(session: &Session) -> SessionChange {
    SessionChange {
        session: session.clone(),
        expected_version: None,
        kind: SessionEventKind::SessionCreated,
        agent_id: None,
        task_id: None,
        timestamp: Timestamp::now(),
    }
}

/// The session with its context changed, as the next version.
fn changed(session: &Session, key: &str) -> SessionChange {
    let mut next = session.clone();
    next.shared_context.insert(key.into(), json!(true));
    next.version += 1;
    next.updated_at = Timestamp::now();
    SessionChange {
        session: next,
        expected_version: Some(session.version),
        kind: SessionEventKind::SharedContextUpdated,
        agent_id: None,
        task_id: None,
        timestamp: Timestamp::now(),
    }
}

async fn all_events(store: &dyn Store) -> Vec<u64> {
    let up_to = store.feed().last_sequence();
    store
        .events(0, up_to, &EventFilter::default(), 10_000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.sequence)
        .collect()
}

async fn create_get_and_version_checks(store: Arc<dyn Store>) {
    let session = new_session("s1", &["opencode://backend"]);
    let event = store.commit(create(&session)).await.unwrap();
    assert_eq!((event.sequence, event.kind), (1, SessionEventKind::SessionCreated));
    assert_eq!(
        store.get_session(&session.session_id).await.unwrap(),
        Some(session.clone())
    );
    assert_eq!(
        store.get_session(&SessionId::parse("nope").unwrap()).await.unwrap(),
        None
    );

    assert_eq!(
        store.commit(create(&session)).await.unwrap_err(),
        StoreError::AlreadyExists(Record::Session(session.session_id.clone()))
    );
    let updated = store.commit(changed(&session, "a")).await.unwrap();
    assert_eq!((updated.sequence, updated.session.version), (2, 2));
    let stale = store.commit(changed(&session, "b")).await.unwrap_err();
    assert!(
        matches!(
            stale,
            StoreError::Conflict {
                expected: 1,
                actual: 2,
                ..
            }
        ),
        "{stale:?}"
    );
    let missing = store
        .commit(changed(&new_session("ghost", &[]), "c"))
        .await
        .unwrap_err();
    assert_eq!(
        missing,
        StoreError::NotFound(Record::Session(SessionId::parse("ghost").unwrap()))
    );
    assert_eq!(
        store.get_session(&session.session_id).await.unwrap().unwrap().version,
        2
    );
    // Failed commits consume no sequence number.
    assert_eq!(all_events(store.as_ref()).await, vec![1, 2]);
    assert_eq!(store.feed().last_sequence(), 2);
}

fn seqs(events: Vec<Arc<crate::domain::session::SessionEvent>>) -> Vec<u64> {
    events.iter().map(|e| e.sequence).collect()
}

async fn events_filter_and_bound(store: Arc<dyn Store>) {
    let a = new_session("a", &[]);
    let b = new_session("b", &[]);
    store.commit(create(&a)).await.unwrap();
    store.commit(create(&b)).await.unwrap();
    store.commit(changed(&a, "x")).await.unwrap();
    let only_a = EventFilter {
        session_ids: vec![a.session_id.clone()],
        kinds: vec![],
    };
    assert_eq!(seqs(store.events(0, 3, &only_a, 10).await.unwrap()), vec![1, 3]);
    let created = EventFilter {
        session_ids: vec![],
        kinds: vec![SessionEventKind::SessionCreated],
    };
    assert_eq!(seqs(store.events(0, 3, &created, 10).await.unwrap()), vec![1, 2]);
    assert_eq!(
        seqs(store.events(1, 2, &EventFilter::default(), 10).await.unwrap()),
        vec![2]
    );
    assert_eq!(
        seqs(store.events(0, 3, &EventFilter::default(), 2).await.unwrap()),
        vec![1, 2]
    );
    let event = &store.events(2, 3, &EventFilter::default(), 1).await.unwrap()[0];
    assert_eq!(event.session.shared_context.get("x"), Some(&json!(true)));
    assert_eq!(event.kind, SessionEventKind::SharedContextUpdated);
}

async fn feed_announces_in_order(store: Arc<dyn Store>) {
    let mut feed = store.feed().subscribe();
    let session = new_session("fed", &[]);
    store.commit(create(&session)).await.unwrap();
    store.commit(changed(&session, "k")).await.unwrap();
    assert_eq!(feed.recv().await.unwrap().sequence, 1);
    let second = feed.recv().await.unwrap();
    assert_eq!((second.sequence, second.session.version), (2, 2));
}

async fn list_pages_and_filters(store: Arc<dyn Store>) {
    for i in 0..5 {
        let participants: &[&str] = if i % 2 == 0 { &["codex://frontend"] } else { &[] };
        store
            .commit(create(&new_session(&format!("l{i}"), participants)))
            .await
            .unwrap();
    }
    let l1 = store
        .get_session(&SessionId::parse("l1").unwrap())
        .await
        .unwrap()
        .unwrap();
    let mut ended = l1.clone();
    ended.state = SessionState::Completed;
    ended.version += 1;
    store
        .commit(SessionChange {
            session: ended,
            expected_version: Some(1),
            ..create(&l1)
        })
        .await
        .unwrap();
    // Read back as ended (the SQLite store keeps only active ones in memory).
    let reread = store.get_session(&l1.session_id).await.unwrap().unwrap();
    assert_eq!((reread.state, reread.version), (SessionState::Completed, 2));

    let mut query = SessionQuery {
        limit: 2,
        ..Default::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = store.list_sessions(&query).await.unwrap();
        assert!(page.sessions.len() <= 2);
        seen.extend(page.sessions.iter().map(|s| s.session_id.to_string()));
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["l0", "l1", "l2", "l3", "l4"]);

    // A byte budget smaller than any session still pages one at a time.
    let mut query = SessionQuery {
        limit: 10,
        max_bytes: Some(1),
        ..Default::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = store.list_sessions(&query).await.unwrap();
        assert_eq!(page.sessions.len(), 1);
        seen.extend(page.sessions.iter().map(|s| s.session_id.to_string()));
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["l0", "l1", "l2", "l3", "l4"]);

    let frontend = SessionQuery {
        participant: Some(agent("codex://frontend")),
        limit: 10,
        ..Default::default()
    };
    let ids: Vec<String> = store
        .list_sessions(&frontend)
        .await
        .unwrap()
        .sessions
        .iter()
        .map(|s| s.session_id.to_string())
        .collect();
    assert_eq!(ids, ["l0", "l2", "l4"]);
    let completed = SessionQuery {
        states: vec![SessionState::Completed],
        limit: 10,
        ..Default::default()
    };
    let page = store.list_sessions(&completed).await.unwrap();
    assert_eq!(page.sessions.len(), 1);
    assert_eq!(page.sessions[0].session_id.as_str(), "l1");
    assert_eq!(page.next, None);
    let orchestrator = SessionQuery {
        participant: Some(agent("claude-code://orchestrator")),
        states: vec![SessionState::Active],
        limit: 3,
        ..Default::default()
    };
    let page = store.list_sessions(&orchestrator).await.unwrap();
    assert_eq!(page.sessions.len(), 3);
    assert!(page.next.is_some());
    assert_eq!(store.counts().await.unwrap().active_sessions, 4);
}

async fn idle_sessions_oldest_first(store: Arc<dyn Store>) {
    let mut old = new_session("old", &[]);
    old.updated_at = Timestamp::from_unix_micros(1_000);
    let mut older = new_session("older", &[]);
    older.updated_at = Timestamp::from_unix_micros(500);
    let fresh = new_session("fresh", &[]);
    for s in [&old, &older, &fresh] {
        store.commit(create(s)).await.unwrap();
    }
    let idle = store
        .idle_sessions(Timestamp::from_unix_micros(2_000), 10)
        .await
        .unwrap();
    let ids: Vec<&str> = idle.iter().map(|s| s.session_id.as_str()).collect();
    assert_eq!(ids, ["older", "old"]);
    assert_eq!(
        store
            .idle_sessions(Timestamp::from_unix_micros(2_000), 1)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn concurrent_writers(store: Arc<dyn Store>) {
    let base = new_session("contended", &[]);
    store.commit(create(&base)).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = store.clone();
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let own = new_session(&format!("c{i}"), &[]);
            store.commit(create(&own)).await.unwrap();
            // All race to update the same version; exactly one may win.
            store.commit(changed(&base, &format!("k{i}"))).await.is_ok()
        }));
    }
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.unwrap());
    }
    assert_eq!(winners, 1);
    assert_eq!(all_events(store.as_ref()).await, (1..=52).collect::<Vec<u64>>());
}

fn agent_record(id: &str, version: u64) -> Agent {
    let mut descriptor = AgentDescriptor::new(agent(id));
    descriptor.capabilities = Capabilities {
        tools: vec!["git".into()],
        ..Default::default()
    };
    Agent {
        version,
        ..Agent::registered(descriptor, Timestamp::now())
    }
}

async fn agents_register_update_list_delete(store: Arc<dyn Store>) {
    let first = agent_record("opencode://backend", 1);
    store.put_agent(first.clone(), None).await.unwrap();
    assert_eq!(store.get_agent(first.id()).await.unwrap(), Some(first.clone()));
    let taken = store.put_agent(first.clone(), None).await.unwrap_err();
    assert!(
        matches!(taken, StoreError::AlreadyExists(Record::Agent(ref id)) if id == first.id()),
        "{taken:?}"
    );
    let updated = agent_record("opencode://backend", 2);
    store.put_agent(updated.clone(), Some(1)).await.unwrap();
    assert!(matches!(
        store.put_agent(updated.clone(), Some(1)).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        store.put_agent(agent_record("x://ghost", 2), Some(1)).await,
        Err(StoreError::NotFound(Record::Agent(_)))
    ));
    for id in ["codex://frontend", "claude-code://qa", "aider://z"] {
        store.put_agent(agent_record(id, 1), None).await.unwrap();
    }
    let ids = |agents: Vec<Agent>| agents.iter().map(|a| a.id().to_string()).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_agents(None, 10).await.unwrap()),
        [
            "aider://z",
            "claude-code://qa",
            "codex://frontend",
            "opencode://backend"
        ]
    );
    let after = agent("claude-code://qa");
    assert_eq!(
        ids(store.list_agents(Some(&after), 1).await.unwrap()),
        ["codex://frontend"]
    );
    assert_eq!(store.counts().await.unwrap().registered_agents, 4);
    assert!(store.delete_agent(first.id()).await.unwrap());
    assert_eq!(store.counts().await.unwrap().registered_agents, 3);
    assert!(!store.delete_agent(first.id()).await.unwrap());
    assert_eq!(store.get_agent(first.id()).await.unwrap(), None);
}

pub(crate) fn message(id: &str, to: &str, priority: Priority, accepted: i64) -> MessageRecord {
    let message = Message {
        message_id: MessageId::parse_field("message_id", id).unwrap(),
        timestamp: Timestamp::from_unix_micros(accepted),
        sender: AgentRef::new(agent("claude-code://orchestrator"), "", None).unwrap(),
        recipient: AgentRef::new(agent(to), "", None).unwrap(),
        message_type: MessageType::TaskRequest,
        priority,
        payload: json!({"n": accepted}),
        routing: Routing::default(),
        metadata: JsonObject::new(),
        in_reply_to: None,
        task_id: None,
        // Stored and read back like every other field.
        trace: Some(
            TraceContext::parse(
                "trace",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "congo=t61rcWkgMzE",
            )
            .unwrap(),
        ),
    };
    let accepted = Timestamp::from_unix_micros(accepted);
    MessageRecord::queued(message, (agent(to), 0), accepted, std::time::Duration::from_secs(1), 7)
}

pub(super) fn insert(record: &MessageRecord) -> MessageWrite {
    MessageWrite {
        record: record.clone(),
        expected: None,
        inbox_limit: None,
        require_recipient: false,
    }
}

fn ids(records: &[MessageRecord]) -> Vec<&str> {
    records.iter().map(|r| r.id().as_str()).collect()
}

async fn inbox_orders_by_priority_then_age(store: Arc<dyn Store>) {
    let to = "opencode://backend";
    let records = [
        message("low-1", to, Priority::Low, 10),
        message("high-1", to, Priority::High, 20),
        message("medium-1", to, Priority::Medium, 30),
        message("high-2", to, Priority::High, 40),
        message("later", to, Priority::Critical, 5_000),
        message("other", "codex://frontend", Priority::Critical, 1),
    ];
    for record in &records {
        store.write(insert(record).into()).await.unwrap();
    }
    let agent_id = agent(to);
    let now = Timestamp::from_unix_micros(100);
    assert_eq!(
        ids(&store.inbox(&agent_id, now, 10).await.unwrap().records),
        ["high-1", "high-2", "medium-1", "low-1"]
    );
    assert_eq!(
        ids(&store.inbox(&agent_id, now, 2).await.unwrap().records),
        ["high-1", "high-2"]
    );
    // Not deliverable yet: only when it will be.
    let inbox = store.inbox(&agent_id, now, 10).await.unwrap();
    assert_eq!(inbox.later, Some(Timestamp::from_unix_micros(5_000)));
    assert_eq!(
        store
            .inbox(&agent_id, Timestamp::from_unix_micros(5_000), 10)
            .await
            .unwrap()
            .later,
        None
    );
    assert_eq!(store.inbox_depth(&agent_id).await.unwrap(), 5);
    assert_eq!(store.open_messages(&agent_id, 100).await.unwrap().len(), 5);

    // Claim one by compare-and-swap; a second claim of the same version loses.
    let mut claimed = records[1].clone();
    claimed.state = MessageState::Delivered;
    claimed.available_at = Timestamp::from_unix_micros(200);
    claimed.version = 2;
    let claim = MessageWrite {
        record: claimed.clone(),
        expected: Some(1),
        inbox_limit: None,
        require_recipient: false,
    };
    store.write(claim.clone().into()).await.unwrap();
    assert!(matches!(
        store.write(claim.into()).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(store.get_message(claimed.id()).await.unwrap(), Some(claimed));
    assert_eq!(
        ids(&store.inbox(&agent_id, now, 10).await.unwrap().records),
        ["high-2", "medium-1", "low-1"]
    );

    // Due: the delivered one after its ack deadline, and anything expired.
    assert!(
        store
            .due_messages(Timestamp::from_unix_micros(150), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ids(&store.due_messages(Timestamp::from_unix_micros(250), 10).await.unwrap()),
        ["high-1"]
    );
    let expired = store
        .due_messages(Timestamp::from_unix_micros(1_000_045), 10)
        .await
        .unwrap();
    let mut expired_ids = ids(&expired);
    expired_ids.sort();
    assert_eq!(expired_ids, ["high-1", "high-2", "low-1", "medium-1", "other"]);
}

async fn write_sets_are_all_or_nothing(store: Arc<dyn Store>) {
    let session = new_session("atomic", &[]);
    let first = message("m1", "opencode://backend", Priority::Medium, 1);
    let mut reply = message("m2", "claude-code://orchestrator", Priority::Medium, 2);
    reply.message.make_mut().in_reply_to = Some(first.id().clone());
    // The duplicate m1 fails the whole set: neither session nor m2 land.
    let failing = WriteSet {
        session: Some(create(&session)),
        messages: vec![insert(&reply), insert(&first), insert(&first)],
    };
    assert!(matches!(store.write(failing).await, Err(StoreError::AlreadyExists(_))));
    assert_eq!(store.get_session(&session.session_id).await.unwrap(), None);
    assert_eq!(store.get_message(reply.id()).await.unwrap(), None);
    assert_eq!(store.feed().last_sequence(), 0);

    let event = store
        .write(WriteSet {
            session: Some(create(&session)),
            messages: vec![insert(&first), insert(&reply)],
        })
        .await
        .unwrap()
        .expect("a session event");
    assert_eq!(event.sequence, 1);
    let replies = store.replies(first.id(), 10).await.unwrap();
    assert_eq!(ids(&replies), ["m2"]);
    assert!(store.replies(reply.id(), 10).await.unwrap().is_empty());
    // Without a session change there is no event.
    let lone = message("m3", "codex://frontend", Priority::Low, 3);
    assert_eq!(store.write(insert(&lone).into()).await.unwrap(), None);
    // A closed message, no longer kept in memory by the SQLite store, still
    // refuses its id.
    store.write(next(&lone, MessageState::Acked).into()).await.unwrap();
    let again = store.write(insert(&first).into()).await.unwrap_err();
    assert_eq!(again, StoreError::AlreadyExists(Record::Message(first.id().clone())));
    let again = store.write(insert(&lone).into()).await.unwrap_err();
    assert_eq!(again, StoreError::AlreadyExists(Record::Message(lone.id().clone())));
}

/// Lone writes that meet in one commit: a refused one (a taken id, found
/// only when its INSERT fails; a stale version) fails alone and changes
/// nothing, and the others land.
async fn refused_lone_writes_fail_alone_in_shared_commits(store: Arc<dyn Store>) {
    let to = "opencode://backend";
    let closed: Vec<_> = (0..10)
        .map(|i| message(&format!("c{i}"), to, Priority::Medium, i))
        .collect();
    for record in &closed {
        store.write(insert(record).into()).await.unwrap();
        store.write(next(record, MessageState::Acked).into()).await.unwrap();
    }
    let fresh: Vec<_> = (0..10)
        .map(|i| message(&format!("f{i}"), to, Priority::Medium, 100 + i))
        .collect();
    let writes = closed.iter().zip(&fresh).flat_map(|(closed, fresh)| {
        [
            store.write(insert(closed).into()),
            store.write(insert(fresh).into()),
            store.write(next(closed, MessageState::Acked).into()),
        ]
    });
    let results = futures_util::future::join_all(writes).await;
    for (i, result) in results.chunks(3).enumerate() {
        let taken = StoreError::AlreadyExists(Record::Message(closed[i].id().clone()));
        assert_eq!(result[0].as_ref().unwrap_err(), &taken);
        assert_eq!(result[1].as_ref().unwrap(), &None);
        assert!(matches!(result[2], Err(StoreError::Conflict { .. })), "{:?}", result[2]);
        let kept = store.get_message(closed[i].id()).await.unwrap().unwrap();
        assert_eq!((kept.state, kept.version), (MessageState::Acked, closed[i].version + 1));
    }
    assert_eq!(store.inbox_depth(&agent(to)).await.unwrap(), fresh.len() as u64);
}

async fn inbox_limit_counts_open_messages(store: Arc<dyn Store>) {
    let to = "opencode://backend";
    let limited = |id: &str| MessageWrite {
        inbox_limit: Some(2),
        ..insert(&message(id, to, Priority::Medium, 1))
    };
    store.write(limited("a").into()).await.unwrap();
    store.write(limited("b").into()).await.unwrap();
    let full = store.write(limited("c").into()).await.unwrap_err();
    assert!(matches!(full, StoreError::InboxFull { limit: 2, .. }), "{full:?}");
    // Closing one earlier in the same set makes room, as it would when
    // done on its own.
    let mut acked = message("a", to, Priority::Medium, 1);
    acked.state = MessageState::Acked;
    acked.version = 2;
    let ack = MessageWrite {
        record: acked,
        expected: Some(1),
        inbox_limit: None,
        require_recipient: false,
    };
    store
        .write(WriteSet {
            session: None,
            messages: vec![ack, limited("c")],
        })
        .await
        .unwrap();
    assert_eq!(store.inbox_depth(&agent(to)).await.unwrap(), 2);
}

async fn writes_can_require_a_registered_recipient(store: Arc<dyn Store>) {
    let to = "opencode://backend";
    let mut write = insert(&message("needs-agent", to, Priority::Medium, 1));
    write.require_recipient = true;
    let missing = store.write(write.clone().into()).await.unwrap_err();
    assert_eq!(missing, StoreError::NotFound(Record::Agent(agent(to))));
    // Also within a set of several writes: the set is refused whole.
    let mut second = insert(&message("needs-agent-too", to, Priority::Medium, 1));
    second.require_recipient = true;
    let lone = insert(&message("beside-it", "codex://frontend", Priority::Medium, 1));
    let pair = WriteSet {
        session: None,
        messages: vec![lone.clone(), second],
    };
    assert_eq!(
        store.write(pair).await.unwrap_err(),
        StoreError::NotFound(Record::Agent(agent(to)))
    );
    assert_eq!(store.get_message(lone.record.id()).await.unwrap(), None);
    store.put_agent(agent_record(to, 1), None).await.unwrap();
    store.write(write.into()).await.unwrap();
    // The inbox limit also counts messages added earlier in the same set.
    let limited = |id: &str| MessageWrite {
        inbox_limit: Some(2),
        ..insert(&message(id, "codex://frontend", Priority::Low, 1))
    };
    let full = store
        .write(WriteSet {
            session: None,
            messages: vec![limited("f1"), limited("f2"), limited("f3")],
        })
        .await;
    assert!(matches!(full, Err(StoreError::InboxFull { limit: 2, .. })), "{full:?}");
    assert_eq!(store.inbox_depth(&agent("codex://frontend")).await.unwrap(), 0);
    // Handing an open message to another recipient (a fallback) moves it
    // between their counts within the set too.
    let held = message("handed", "codex://frontend", Priority::Low, 2);
    store.write(insert(&held).into()).await.unwrap();
    let mut moved = next(&held, MessageState::Queued);
    moved.record.recipient = agent("codex://fallback");
    let set = |writes| WriteSet {
        session: None,
        messages: writes,
    };
    let to_fallback = |id: &str| MessageWrite {
        inbox_limit: Some(1),
        ..insert(&message(id, "codex://fallback", Priority::Low, 3))
    };
    let over = store.write(set(vec![moved.clone(), to_fallback("f4")])).await;
    assert!(matches!(over, Err(StoreError::InboxFull { limit: 1, .. })), "{over:?}");
    let to_frontend = MessageWrite {
        inbox_limit: Some(1),
        ..insert(&message("f5", "codex://frontend", Priority::Low, 3))
    };
    store.write(set(vec![moved, to_frontend])).await.unwrap();
    assert_eq!(store.inbox_depth(&agent("codex://fallback")).await.unwrap(), 1);
    assert_eq!(store.inbox_depth(&agent("codex://frontend")).await.unwrap(), 1);
}

/// Every backend checks a message write in the same order and fails with
/// the first refusal: its id or version, then its recipient, then the
/// recipient's inbox (see [`MessageWrite::expected`]).
async fn message_checks_run_in_one_order(store: Arc<dyn Store>) {
    let to = "opencode://backend";
    let strict = |record: &MessageRecord| MessageWrite {
        inbox_limit: Some(0),
        require_recipient: true,
        ..insert(record)
    };
    let taken = |record: &MessageRecord| StoreError::AlreadyExists(Record::Message(record.id().clone()));
    let open = message("open", to, Priority::Medium, 1);
    store.write(insert(&open).into()).await.unwrap();
    assert_eq!(store.write(strict(&open).into()).await.unwrap_err(), taken(&open));
    // A closed message (the SQLite store no longer holds it in memory)
    // refuses its id before anything else too.
    let closed = message("closed", to, Priority::Medium, 2);
    store.write(insert(&closed).into()).await.unwrap();
    store.write(next(&closed, MessageState::Acked).into()).await.unwrap();
    assert_eq!(store.write(strict(&closed).into()).await.unwrap_err(), taken(&closed));
    // So does a stale update of it.
    let stale = MessageWrite {
        require_recipient: true,
        ..next(&closed, MessageState::Delivered)
    };
    let conflict = store.write(stale.into()).await.unwrap_err();
    assert!(
        matches!(conflict, StoreError::Conflict { record: Record::Message(ref id), expected: 1, actual: 2 } if id == closed.id()),
        "{conflict:?}"
    );
    // A new id: the missing recipient before the full inbox.
    let fresh = message("fresh", to, Priority::Medium, 3);
    assert_eq!(
        store.write(strict(&fresh).into()).await.unwrap_err(),
        StoreError::NotFound(Record::Agent(agent(to)))
    );
    store.put_agent(agent_record(to, 1), None).await.unwrap();
    assert_eq!(
        store.write(strict(&fresh).into()).await.unwrap_err(),
        StoreError::InboxFull {
            agent: agent(to),
            limit: 0
        }
    );
    assert_eq!(store.get_message(fresh.id()).await.unwrap(), None);
    assert_eq!(store.inbox_depth(&agent(to)).await.unwrap(), 1);
}

/// The next version of `record` in `state`, written over `record`.
pub(super) fn next(record: &MessageRecord, state: MessageState) -> MessageWrite {
    let mut next = record.clone();
    next.state = state;
    next.version += 1;
    MessageWrite {
        record: next,
        expected: Some(record.version),
        inbox_limit: None,
        require_recipient: false,
    }
}

async fn leases_are_version_checked_and_seen_by_writes(store: Arc<dyn Store>) {
    let queued = message("leased", "opencode://backend", Priority::Medium, 10);
    store.write(insert(&queued).into()).await.unwrap();
    let claim = next(&queued, MessageState::Delivered);
    let claimed = claim.record.clone();
    store.lease(vec![claim.clone()]).await.unwrap();
    assert_eq!(store.get_message(queued.id()).await.unwrap(), Some(claimed.clone()));
    assert!(
        store
            .inbox(&agent("opencode://backend"), Timestamp::from_unix_micros(i64::MAX), 10)
            .await
            .unwrap()
            .records
            .is_empty()
    );
    // A second claim of the same version loses, as a write would.
    assert!(matches!(
        store.lease(vec![claim]).await,
        Err(StoreError::Conflict { .. })
    ));
    // A durable write must build on the leased version, not the stored one.
    let stale = next(&queued, MessageState::Acked);
    assert!(matches!(
        store.write(stale.into()).await,
        Err(StoreError::Conflict { .. })
    ));
    let ack = next(&claimed, MessageState::Acked);
    store.write(ack.clone().into()).await.unwrap();
    assert_eq!(store.get_message(queued.id()).await.unwrap(), Some(ack.record.clone()));
    assert_eq!(store.inbox_depth(&agent("opencode://backend")).await.unwrap(), 0);
    // Leasing a message that closed meanwhile is a lost race, not an error.
    let late = next(&claimed, MessageState::Delivered);
    assert!(matches!(
        store.lease(vec![late]).await,
        Err(StoreError::Conflict { .. })
    ));
}

/// Several updates in one set (a stream's claims, a batch of acks): one
/// stale version refuses the set with that message's conflict, and none of
/// them land; whether it is a write or a lease.
async fn updates_of_several_messages_are_all_or_nothing(store: Arc<dyn Store>) {
    let records: Vec<MessageRecord> = (0..3)
        .map(|i| message(&format!("several-{i}"), "opencode://backend", Priority::Medium, 10 + i))
        .collect();
    for record in &records {
        store.write(insert(record).into()).await.unwrap();
    }
    let claims: Vec<MessageWrite> = records.iter().map(|r| next(r, MessageState::Delivered)).collect();
    let mut stale = claims.clone();
    stale[1].expected = Some(records[1].version + 5);
    let conflict = store.lease(stale.clone()).await.unwrap_err();
    assert!(
        matches!(&conflict, StoreError::Conflict { record: Record::Message(id), .. } if id == records[1].id()),
        "{conflict:?}"
    );
    let refused = store
        .write(WriteSet {
            session: None,
            messages: stale,
        })
        .await
        .unwrap_err();
    assert_eq!(refused, conflict);
    let mut missing = claims.clone();
    missing[2].record = next(
        &message("nowhere", "opencode://backend", Priority::Medium, 1),
        MessageState::Delivered,
    )
    .record;
    let refused = store
        .write(WriteSet {
            session: None,
            messages: missing,
        })
        .await
        .unwrap_err();
    assert_eq!(
        refused,
        StoreError::NotFound(Record::Message(
            MessageId::parse_field("message_id", "nowhere").unwrap()
        ))
    );
    for record in &records {
        assert_eq!(store.get_message(record.id()).await.unwrap().as_ref(), Some(record));
    }
    let mut asked: Vec<MessageId> = records.iter().rev().map(|r| r.id().clone()).collect();
    asked.push(MessageId::parse_field("message_id", "nowhere").unwrap());
    let mut found = store.get_messages(&asked).await.unwrap();
    found.sort_by(|a, b| a.id().as_str().cmp(b.id().as_str()));
    assert_eq!(found, records, "each stored one, the missing one left out");

    store.lease(claims.clone()).await.unwrap();
    let acks: Vec<MessageWrite> = claims.iter().map(|c| next(&c.record, MessageState::Acked)).collect();
    store
        .write(WriteSet {
            session: None,
            messages: acks.clone(),
        })
        .await
        .unwrap();
    for ack in &acks {
        assert_eq!(
            store.get_message(ack.record.id()).await.unwrap(),
            Some(ack.record.clone())
        );
    }
    assert_eq!(store.inbox_depth(&agent("opencode://backend")).await.unwrap(), 0);
}

fn token(id: &str, agent_id: &str) -> AgentToken {
    AgentToken {
        token_id: id.into(),
        agent_id: agent(agent_id),
        hash: format!("hash-of-{id}"),
        description: format!("token {id}"),
        created_at: Timestamp::from_unix_micros(1_000),
        expires_at: Some(Timestamp::from_unix_micros(9_000_000)),
        last_used_at: None,
    }
}

async fn tokens_put_list_touch_delete(store: Arc<dyn Store>) {
    let first = token("tok_1", "opencode://backend");
    let second = token("tok_2", "codex://frontend");
    store.put_token(first.clone()).await.unwrap();
    store.put_token(second.clone()).await.unwrap();
    assert!(matches!(
        store.put_token(token("tok_1", "x://other")).await,
        Err(StoreError::AlreadyExists(Record::Token(ref id))) if id == "tok_1"
    ));
    assert_eq!(store.tokens().await.unwrap(), [first.clone(), second.clone()]);
    let used = Timestamp::from_unix_micros(5_000);
    store.touch_token("tok_2", used).await.unwrap();
    store.touch_token("tok_gone", used).await.unwrap();
    let touched = AgentToken {
        last_used_at: Some(used),
        ..second
    };
    assert_eq!(store.tokens().await.unwrap(), [first, touched.clone()]);
    assert!(store.delete_token("tok_1").await.unwrap());
    assert!(!store.delete_token("tok_1").await.unwrap());
    assert_eq!(store.tokens().await.unwrap(), [touched]);
}

/// A message closed (acked) at `closed`, in its second version.
fn closed_at(id: &str, closed: i64) -> MessageRecord {
    let queued = message(id, "opencode://backend", Priority::Medium, 1);
    let mut acked = queued.closed(MessageState::Acked, Timestamp::from_unix_micros(closed));
    acked.version = 2;
    acked
}

async fn retention_removes_closed_messages_oldest_first(store: Arc<dyn Store>) {
    let mut reply = closed_at("old-reply", 150);
    reply.message.make_mut().in_reply_to = Some(MessageId::parse_field("message_id", "old-1").unwrap());
    let open = message("open", "opencode://backend", Priority::Medium, 1);
    for record in [
        closed_at("old-1", 100),
        closed_at("old-2", 200),
        reply,
        closed_at("new", 1_000),
        open.clone(),
    ] {
        // Inserted closed, as if acked long ago; the open one as sent.
        store.write(insert(&record).into()).await.unwrap();
    }
    let before = Timestamp::from_unix_micros(500);
    assert_eq!(store.prune_messages(before, 2).await.unwrap(), 2, "the limit holds");
    assert_eq!(
        store
            .get_message(&MessageId::parse_field("m", "old-1").unwrap())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .get_message(&MessageId::parse_field("m", "old-reply").unwrap())
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .get_message(&MessageId::parse_field("m", "old-2").unwrap())
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.prune_messages(before, 10).await.unwrap(), 1);
    assert_eq!(store.prune_messages(before, 10).await.unwrap(), 0);
    assert!(
        store
            .replies(&MessageId::parse_field("m", "old-1").unwrap(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // What closed later and what is open stay, open ones at any age.
    assert!(
        store
            .get_message(&MessageId::parse_field("m", "new").unwrap())
            .await
            .unwrap()
            .is_some()
    );
    let everything = Timestamp::from_unix_micros(i64::MAX);
    assert_eq!(store.prune_messages(everything, 10).await.unwrap(), 1, "only `new`");
    assert_eq!(store.get_message(open.id()).await.unwrap(), Some(open.clone()));
    assert_eq!(
        ids(&store
            .inbox(&agent("opencode://backend"), everything, 10)
            .await
            .unwrap()
            .records),
        ["open"]
    );
    // A removed id can be used again: it is a new message.
    store
        .write(insert(&message("old-1", "codex://frontend", Priority::Low, 2)).into())
        .await
        .unwrap();
}

async fn retention_removes_events_as_a_prefix_and_says_so(store: Arc<dyn Store>) {
    let session = new_session("retained", &[]);
    let at = |micros: i64, change: SessionChange| SessionChange {
        timestamp: Timestamp::from_unix_micros(micros),
        ..change
    };
    // Events at 100, 200, 900 and, the latest, 150.
    let first = store.commit(at(100, create(&session))).await.unwrap();
    let second = store.commit(at(200, changed(&first.session, "a"))).await.unwrap();
    let third = store.commit(at(900, changed(&second.session, "b"))).await.unwrap();
    store.commit(at(150, changed(&third.session, "c"))).await.unwrap();
    let all = EventFilter::default();
    // Up to the first event that is not old enough.
    assert_eq!(
        store.prune_events(Timestamp::from_unix_micros(500), 10).await.unwrap(),
        2
    );
    for after in [0, 1] {
        assert_eq!(
            store.events(after, 4, &all, 10).await.unwrap_err(),
            StoreError::EventsRemoved { after, oldest: 3 }
        );
    }
    assert_eq!(seqs(store.events(2, 4, &all, 10).await.unwrap()), vec![3, 4]);
    assert_eq!(
        store.prune_events(Timestamp::from_unix_micros(500), 10).await.unwrap(),
        0
    );
    // Never the latest: the sequence goes on from it.
    let everything = Timestamp::from_unix_micros(i64::MAX);
    assert_eq!(store.prune_events(everything, 10).await.unwrap(), 1);
    assert_eq!(store.prune_events(everything, 10).await.unwrap(), 0);
    assert_eq!(seqs(store.events(3, 4, &all, 10).await.unwrap()), vec![4]);
    assert!(matches!(
        store.events(2, 4, &all, 10).await,
        Err(StoreError::EventsRemoved { after: 2, oldest: 4 })
    ));
    let latest = store.get_session(&session.session_id).await.unwrap().unwrap();
    assert_eq!(store.commit(changed(&latest, "d")).await.unwrap().sequence, 5);
}

async fn retention_removes_ended_sessions(store: Arc<dyn Store>) {
    let participant = "opencode://backend";
    let ended = |id: &str, state: SessionState, updated: i64| {
        let mut session = new_session(id, &[participant]);
        session.state = state;
        session.updated_at = Timestamp::from_unix_micros(updated);
        session
    };
    let old_done = ended("old-done", SessionState::Completed, 100);
    let old_expired = ended("old-expired", SessionState::Expired, 100);
    let old_active = ended("old-active", SessionState::Active, 100);
    let new_done = ended("new-done", SessionState::Terminated, 1_000);
    for session in [&old_done, &old_expired, &old_active, &new_done] {
        store.commit(create(session)).await.unwrap();
    }
    let before = Timestamp::from_unix_micros(500);
    assert_eq!(store.prune_sessions(before, 1).await.unwrap(), 1, "the limit holds");
    assert_eq!(store.prune_sessions(before, 10).await.unwrap(), 1);
    assert_eq!(store.prune_sessions(before, 10).await.unwrap(), 0);
    for gone in [&old_done, &old_expired] {
        assert_eq!(store.get_session(&gone.session_id).await.unwrap(), None);
    }
    let query = SessionQuery {
        participant: Some(agent(participant)),
        limit: 10,
        ..SessionQuery::default()
    };
    let listed: Vec<_> = store
        .list_sessions(&query)
        .await
        .unwrap()
        .sessions
        .into_iter()
        .map(|s| s.session_id)
        .collect();
    assert_eq!(listed, [old_active.session_id.clone(), new_done.session_id.clone()]);
}

async fn closed_store_refuses_writes(store: Arc<dyn Store>) {
    store.close().await.unwrap();
    assert_eq!(
        store.commit(create(&new_session("late", &[]))).await.unwrap_err(),
        StoreError::Closed
    );
}

/// Runs the whole suite against one backend: `conformance!(name)` needs an
/// `async fn name() -> Fixture` beside it, and each test is an
/// `async fn(Arc<dyn Store>)` listed here once.
macro_rules! conformance {
    ($backend:ident) => {
        conformance!($backend:
            create_get_and_version_checks,
            events_filter_and_bound,
            feed_announces_in_order,
            list_pages_and_filters,
            idle_sessions_oldest_first,
            concurrent_writers,
            agents_register_update_list_delete,
            inbox_orders_by_priority_then_age,
            write_sets_are_all_or_nothing,
            refused_lone_writes_fail_alone_in_shared_commits,
            inbox_limit_counts_open_messages,
            writes_can_require_a_registered_recipient,
            message_checks_run_in_one_order,
            leases_are_version_checked_and_seen_by_writes,
            updates_of_several_messages_are_all_or_nothing,
            tokens_put_list_touch_delete,
            closed_store_refuses_writes,
            retention_removes_closed_messages_oldest_first,
            retention_removes_events_as_a_prefix_and_says_so,
            retention_removes_ended_sessions,
        );
    };
    ($backend:ident: $($test:ident),+ $(,)?) => {
        mod $backend {
            $(
                // Two workers: some tests race writers against each other.
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let fixture = super::$backend().await;
                    super::$test(fixture.store.clone()).await;
                }
            )+
        }
    };
}

conformance!(memory);
conformance!(sqlite);
conformance!(postgres);

#[tokio::test]
async fn sqlite_reopens_with_everything_and_continues_the_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let session = new_session("durable", &["opencode://backend"]);
    {
        let store = SqliteStore::open(&sqlite_options(dir.path())).unwrap();
        store.commit(create(&session)).await.unwrap();
        store.commit(changed(&session, "kept")).await.unwrap();
        store.close().await.unwrap();
    }
    let store = SqliteStore::open(&sqlite_options(dir.path())).unwrap();
    assert_eq!(store.feed().last_sequence(), 2);
    let reloaded = store.get_session(&session.session_id).await.unwrap().unwrap();
    assert_eq!(reloaded.shared_context.get("kept"), Some(&json!(true)));
    let next = store.commit(changed(&reloaded, "after")).await.unwrap();
    assert_eq!(next.sequence, 3);
}

#[tokio::test]
async fn sqlite_forgets_leases_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let queued = message("claimed", "opencode://backend", Priority::High, 5);
    {
        let store = SqliteStore::open(&sqlite_options(dir.path())).unwrap();
        store.write(insert(&queued).into()).await.unwrap();
        store.lease(vec![next(&queued, MessageState::Delivered)]).await.unwrap();
        store.close().await.unwrap();
    }
    // The claim was never durable: the message is queued again, as stored.
    let store = SqliteStore::open(&sqlite_options(dir.path())).unwrap();
    assert_eq!(store.get_message(queued.id()).await.unwrap(), Some(queued.clone()));
    let ready = store
        .inbox(&agent("opencode://backend"), Timestamp::from_unix_micros(i64::MAX), 10)
        .await
        .unwrap()
        .records;
    assert_eq!(ids(&ready), ["claimed"]);
}
