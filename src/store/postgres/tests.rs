//! What only the PostgreSQL store has: its schema versions, its connection,
//! and a database that goes away and comes back. The contract itself is the
//! conformance suite's (`conformance!(postgres)`).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::testing::{TestSchema, database_url};
use super::*;
use crate::domain::agent::AgentDescriptor;

#[test]
fn the_database_is_named_without_its_password() {
    let config: tokio_postgres::Config = "postgres://bus:secret@db.example:6543/agentbus".parse().unwrap();
    assert_eq!(describe(&config), "postgres://bus@db.example:6543/agentbus");
    let config: tokio_postgres::Config = "postgres://postgres@127.0.0.1/test".parse().unwrap();
    assert_eq!(describe(&config), "postgres://postgres@127.0.0.1:5432/test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_at_once_migrate_once() {
    let schema = TestSchema::create().await;
    let opens = (0..4).map(|_| {
        let options = schema.options();
        tokio::spawn(async move { PostgresStore::open(&options).await.map(drop) })
    });
    for open in opens {
        open.await.unwrap().unwrap();
    }
    let store = schema.open().await;
    let client = store.client().await.unwrap();
    let version: i32 = client
        .query_one("SELECT version FROM agentbus_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, schema::SCHEMA_VERSION);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused_and_left_alone() {
    let schema = TestSchema::create().await;
    drop(schema.open().await);
    schema
        .execute("UPDATE agentbus_schema SET version = version + 1; CREATE TABLE later_table (x int)")
        .await;
    let refused = PostgresStore::open(&schema.options()).await.err().expect("refused");
    assert_eq!(refused.kind(), crate::domain::ErrorKind::Internal);
    let message = refused.to_string();
    assert!(message.contains("newer than this agentbus knows"), "{message}");
    assert!(
        message.contains("127.0.0.1:5432") || message.contains("postgres://"),
        "{message}"
    );
    // Still there, untouched.
    schema.execute("SELECT x FROM later_table").await;
}

#[tokio::test]
async fn an_unreachable_database_is_named_at_start() {
    let options = PostgresOptions {
        // Nothing listens on port 1.
        url: "postgres://postgres@127.0.0.1:1/test".into(),
        pool_size: 1,
        feed_capacity: 8,
    };
    let error = PostgresStore::open(&options).await.err().expect("no database there");
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("cannot reach PostgreSQL at postgres://postgres@127.0.0.1:1/test"),
        "{message}"
    );
}

/// A TCP proxy in front of the test database, to cut every connection and
/// refuse new ones, as a database that went away does.
struct Proxy {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Proxy {
    async fn start(listen: SocketAddr) -> Proxy {
        let config: tokio_postgres::Config = database_url().parse().unwrap();
        let upstream = match (&config.get_hosts()[0], config.get_ports().first()) {
            (tokio_postgres::config::Host::Tcp(host), port) => format!("{host}:{}", port.unwrap_or(&5432)),
            _ => panic!("the test database must be reached over TCP"),
        };
        let listener = TcpListener::bind(listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = tokio::select! {
                    () = stopped.cancelled() => return,
                    accepted = listener.accept() => accepted.unwrap(),
                };
                let (upstream, stopped) = (upstream.clone(), stopped.clone());
                tokio::spawn(async move {
                    let mut outbound = TcpStream::connect(upstream).await.unwrap();
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = stopped.cancelled() => {}
                    }
                });
            }
        });
        Proxy { addr, stop }
    }

    /// The test database's URL through this proxy, in `schema`.
    fn url(&self, schema: &TestSchema) -> String {
        let config: tokio_postgres::Config = database_url().parse().unwrap();
        let user = config.get_user().unwrap_or("postgres");
        let password = config
            .get_password()
            .map(|p| format!(":{}", String::from_utf8_lossy(p)))
            .unwrap_or_default();
        let database = config.get_dbname().unwrap_or("test");
        format!(
            "postgres://{user}{password}@{}/{database}?options=-csearch_path%3D{}",
            self.addr, schema.name
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_unavailable_while_the_database_is_away_and_work_once_it_is_back() {
    let schema = TestSchema::create().await;
    let proxy = Proxy::start("127.0.0.1:0".parse().unwrap()).await;
    let options = PostgresOptions {
        url: proxy.url(&schema),
        ..schema.options()
    };
    let store = PostgresStore::open(&options).await.unwrap();
    let agent = |id: &str| Agent::registered(AgentDescriptor::new(AgentId::parse(id).unwrap()), Timestamp::now());
    store.put_agent(agent("codex://before"), None).await.unwrap();

    proxy.stop.cancel();
    let addr = proxy.addr;
    // Connections the pool holds are cut; new ones are refused.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let read = store.get_agent(&AgentId::parse("codex://before").unwrap()).await;
    assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
    let write = store.put_agent(agent("codex://during"), None).await.unwrap_err();
    assert!(matches!(write, StoreError::Unavailable(_)), "{write:?}");
    assert_eq!(write.kind(), crate::domain::ErrorKind::Unavailable);
    assert_eq!(write.client_message(), "the database is unavailable; retry later");

    let _back = Proxy::start(addr).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match store.put_agent(agent("codex://after"), None).await {
            Ok(_) => break,
            Err(StoreError::Unavailable(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(other) => panic!("the store did not recover: {other:?}"),
        }
    }
    let ids: Vec<String> = store
        .list_agents(None, 10)
        .await
        .unwrap()
        .iter()
        .map(|a| a.id().to_string())
        .collect();
    assert_eq!(ids, ["codex://after", "codex://before"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_are_synchronous_whatever_the_url_asks() {
    let schema = TestSchema::create().await;
    let options = PostgresOptions {
        url: format!("{}%20-csynchronous_commit%3Doff", schema.url),
        ..schema.options()
    };
    let store = PostgresStore::open(&options).await.unwrap();
    let client = store.client().await.unwrap();
    let row = client.query_one("SHOW synchronous_commit", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "on");
    // The URL's other options still hold.
    let row = client.query_one("SELECT current_schema()", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), schema.name);
    // Delivery claims alone do not wait for the flush (see `Store::lease`).
    let lazy = store.lazy.get().await.unwrap();
    let row = lazy.query_one("SHOW synchronous_commit", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "off");
    let row = lazy.query_one("SELECT current_schema()", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), schema.name);
}

/// A store whose sends commit one batch at a time (a pool of 4 runs one),
/// so that an inbox limit is exact, with `agents` registered.
async fn one_batch_at_a_time(schema: &TestSchema, agents: &[&str]) -> Arc<PostgresStore> {
    let store = Arc::new(
        PostgresStore::open(&PostgresOptions {
            pool_size: 4,
            ..schema.options()
        })
        .await
        .unwrap(),
    );
    for id in agents {
        let agent = Agent::registered(AgentDescriptor::new(AgentId::parse(id).unwrap()), Timestamp::now());
        store.put_agent(agent, None).await.unwrap();
    }
    store
}

/// Many sends at once share batches ([`super::inserts`]), and each still
/// gets the answer it would get alone: accepted, a taken id (also when
/// the message would be refused anyway), an unregistered recipient, a
/// full inbox; of several sends with one id exactly one is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_share_commits_and_each_gets_its_own_answer() {
    use crate::domain::message::Priority;
    use crate::store::Record;
    use crate::store::conformance::{insert, message};

    let schema = TestSchema::create().await;
    let store = one_batch_at_a_time(&schema, &["codex://a", "codex://b", "codex://limited"]).await;
    let send = |id: String, to: &str, limit: Option<u64>| {
        let mut write = insert(&message(&id, to, Priority::Medium, 1));
        write.require_recipient = true;
        write.inbox_limit = limit;
        write
    };
    store
        .write(send("taken".into(), "codex://a", None).into())
        .await
        .unwrap();

    let mut writes = Vec::new();
    for i in 0..120 {
        let to = if i % 2 == 0 { "codex://a" } else { "codex://b" };
        writes.push(("accepted", send(format!("n-{i}"), to, None)));
    }
    for i in 0..10 {
        writes.push(("unregistered", send(format!("ghost-{i}"), "codex://ghost", None)));
    }
    writes.push(("taken", send("taken".into(), "codex://b", None)));
    writes.push(("taken", send("taken".into(), "codex://ghost", None)));
    for _ in 0..5 {
        writes.push(("twin", send("twin".into(), "codex://a", None)));
    }
    for i in 0..20 {
        writes.push(("limited", send(format!("l-{i}"), "codex://limited", Some(5))));
    }
    let tasks: Vec<_> = writes
        .into_iter()
        .map(|(kind, write)| {
            let store = store.clone();
            tokio::spawn(async move { (kind, store.write(write.into()).await) })
        })
        .collect();
    let mut twins = 0;
    let mut limited = 0;
    for task in tasks {
        match task.await.unwrap() {
            ("accepted", outcome) => assert_eq!(outcome, Ok(None)),
            ("unregistered", outcome) => assert!(
                matches!(&outcome, Err(StoreError::NotFound(Record::Agent(a))) if a.as_str() == "codex://ghost"),
                "{outcome:?}"
            ),
            ("taken", outcome) => assert!(
                matches!(&outcome, Err(StoreError::AlreadyExists(Record::Message(id))) if id.as_str() == "taken"),
                "{outcome:?}"
            ),
            ("twin", Ok(None)) => twins += 1,
            ("twin", outcome) => assert!(matches!(outcome, Err(StoreError::AlreadyExists(_))), "{outcome:?}"),
            ("limited", Ok(None)) => limited += 1,
            ("limited", outcome) => assert!(
                matches!(outcome, Err(StoreError::InboxFull { limit: 5, .. })),
                "{outcome:?}"
            ),
            (kind, outcome) => panic!("{kind}: {outcome:?}"),
        }
    }
    assert_eq!(twins, 1, "one of the sends with one id is accepted");
    assert_eq!(limited, 5, "the inbox takes as many as its limit");
    let depth = |id: &str| {
        let store = store.clone();
        let id = AgentId::parse(id).unwrap();
        async move { store.inbox_depth(&id).await.unwrap() }
    };
    assert_eq!(depth("codex://a").await, 1 + 60 + 1);
    assert_eq!(depth("codex://b").await, 60);
    assert_eq!(depth("codex://limited").await, 5);
    let stored = store
        .get_message(&crate::domain::message::MessageId::parse_field("message_id", "n-7").unwrap())
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(stored.recipient.as_str(), "codex://b");
}

/// A batch that admits sends by the node's last count and then counts the
/// database for the same recipient adds what it admitted to that count:
/// they are not in the database before the batch commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_counts_what_it_admitted_before_counting() {
    use crate::store::conformance::{insert, message};

    let schema = TestSchema::create().await;
    let to = "codex://limited";
    let store = one_batch_at_a_time(&schema, &[to]).await;
    let send = |id: String| {
        let mut write = insert(&message(&id, to, crate::domain::message::Priority::Medium, 1));
        write.inbox_limit = Some(5);
        write
    };
    // Counted: one open message.
    store.write(send("first".into()).into()).await.unwrap();
    for round in 0..3 {
        let tasks: Vec<_> = (0..12)
            .map(|i| {
                let store = store.clone();
                let write = send(format!("r{round}-{i}"));
                tokio::spawn(async move { store.write(write.into()).await })
            })
            .collect();
        for task in tasks {
            let outcome = task.await.unwrap();
            assert!(
                matches!(outcome, Ok(None) | Err(StoreError::InboxFull { limit: 5, .. })),
                "{outcome:?}"
            );
        }
        assert_eq!(
            store.inbox_depth(&AgentId::parse(to).unwrap()).await.unwrap(),
            5,
            "round {round}"
        );
    }
}

/// Many lone updates at once (claims on the lazy connections, acks on the
/// others) share batches ([`super::updates`]), and each still gets the
/// answer it would get alone: written, a stale version, a message that is
/// not there; of several claims of one message exactly one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_share_commits_and_each_gets_its_own_answer() {
    use crate::domain::message::{MessageState, Priority};
    use crate::store::Record;
    use crate::store::conformance::{insert, message, next};

    let schema = TestSchema::create().await;
    let to = "codex://a";
    let store = one_batch_at_a_time(&schema, &[to]).await;
    let mut queued = Vec::new();
    for i in 0..100 {
        let record = message(&format!("m-{i}"), to, Priority::Medium, i + 1);
        store.write(insert(&record).into()).await.unwrap();
        queued.push(record);
    }
    let run = |writes: Vec<(&'static str, MessageWrite, bool)>| {
        let tasks: Vec<_> = writes
            .into_iter()
            .map(|(kind, write, claim)| {
                let store = store.clone();
                tokio::spawn(async move {
                    let outcome = if claim {
                        store.lease(vec![write]).await
                    } else {
                        store.write(write.into()).await.map(drop)
                    };
                    (kind, outcome)
                })
            })
            .collect();
        async move {
            let mut outcomes = Vec::new();
            for task in tasks {
                outcomes.push(task.await.unwrap());
            }
            outcomes
        }
    };
    let claims: Vec<MessageWrite> = queued.iter().map(|r| next(r, MessageState::Delivered)).collect();
    let mut writes: Vec<_> = claims[..80].iter().map(|w| ("claimed", w.clone(), true)).collect();
    for _ in 0..5 {
        writes.push(("twin", claims[95].clone(), true));
    }
    let mut twins = 0;
    for (kind, outcome) in run(writes).await {
        match (kind, outcome) {
            ("claimed", outcome) => assert_eq!(outcome, Ok(())),
            ("twin", Ok(())) => twins += 1,
            ("twin", outcome) => assert!(
                matches!(
                    &outcome,
                    Err(StoreError::Conflict {
                        expected: 1,
                        actual: 2,
                        ..
                    })
                ),
                "{outcome:?}"
            ),
            (kind, outcome) => panic!("{kind}: {outcome:?}"),
        }
    }
    assert_eq!(twins, 1, "one of the claims of one message wins");

    let mut writes: Vec<_> = claims[..80]
        .iter()
        .map(|claimed| ("acked", next(&claimed.record, MessageState::Acked), false))
        .collect();
    // Stale: written as if the claim had not happened.
    for claimed in &claims[..10] {
        writes.push(("stale", next(&claimed.record, MessageState::Acked), false));
        writes.last_mut().unwrap().1.expected = Some(1);
    }
    for i in 0..5 {
        let ghost = message(&format!("ghost-{i}"), to, Priority::Medium, 1);
        writes.push(("ghost", next(&ghost, MessageState::Acked), false));
    }
    for (kind, outcome) in run(writes).await {
        match (kind, outcome) {
            ("acked", outcome) => assert_eq!(outcome, Ok(())),
            ("stale", outcome) => assert!(
                matches!(&outcome, Err(StoreError::Conflict { expected: 1, .. })),
                "{outcome:?}"
            ),
            ("ghost", outcome) => assert!(
                matches!(&outcome, Err(StoreError::NotFound(Record::Message(id))) if id.as_str().starts_with("ghost-")),
                "{outcome:?}"
            ),
            (kind, outcome) => panic!("{kind}: {outcome:?}"),
        }
    }
    let ids: Vec<MessageId> = queued.iter().map(|r| r.id().clone()).collect();
    let stored = store.get_messages(&ids).await.unwrap();
    let state_of = |i: usize| {
        stored
            .iter()
            .find(|r| r.id() == &ids[i])
            .map(|r| (r.state, r.version))
            .unwrap()
    };
    assert_eq!(state_of(0), (MessageState::Acked, 3));
    assert_eq!(state_of(79), (MessageState::Acked, 3));
    assert_eq!(state_of(85), (MessageState::Queued, 1));
    assert_eq!(state_of(95), (MessageState::Delivered, 2));
    assert_eq!(store.inbox_depth(&AgentId::parse(to).unwrap()).await.unwrap(), 20);
}

/// The next signal within 5 s, past the resynchronisation a listening
/// connection starts with and whatever `skip` names.
async fn next_signal(
    signals: &mut tokio::sync::broadcast::Receiver<crate::store::Signal>,
    skip: impl Fn(&crate::store::Signal) -> bool,
) -> crate::store::Signal {
    loop {
        let signal = tokio::time::timeout(Duration::from_secs(5), signals.recv())
            .await
            .expect("a signal in time")
            .unwrap();
        if signal != crate::store::Signal::Resync && !skip(&signal) {
            return signal;
        }
    }
}

/// Writes probes through `writer` until `signals`, of another store on the
/// schema, hears one, then lets the rest arrive: a store hears nothing sent
/// before its LISTEN, which starts in the background when it opens.
async fn until_listening(writer: &PostgresStore, signals: &mut tokio::sync::broadcast::Receiver<crate::store::Signal>) {
    use crate::domain::message::Priority;
    use crate::store::conformance::{insert, message};
    for _ in 0..100 {
        let id = crate::domain::message::MessageId::generate();
        let probe = message(id.as_str(), "codex://probe", Priority::Medium, 1);
        writer.write(insert(&probe).into()).await.unwrap();
        if let Ok(Ok(crate::store::Signal::Offer(_))) =
            tokio::time::timeout(Duration::from_millis(100), signals.recv()).await
        {
            while tokio::time::timeout(Duration::from_millis(300), signals.recv())
                .await
                .is_ok()
            {}
            return;
        }
    }
    panic!("the other store never heard a probe");
}

/// Closing a delivery tells the other nodes there is room under a prefetch
/// limit only when another node made the claim: the claiming node's own
/// stream is the only one that can be waiting, and that node wakes it
/// itself (a notification costs every listening database session a
/// wake-up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_is_announced_only_to_the_node_that_claimed() {
    use crate::domain::message::{MessageState, Priority};
    use crate::store::Signal;
    use crate::store::conformance::{insert, message, next};

    let schema = TestSchema::create().await;
    let (a, b) = (schema.open().await, schema.open().await);
    until_listening(&a, &mut b.signals().unwrap()).await;
    until_listening(&b, &mut a.signals().unwrap()).await;
    let to = "codex://a";
    let agent = AgentId::parse(to).unwrap();
    let mut claims = Vec::new();
    for i in 0..2 {
        let record = message(&format!("m-{i}"), to, Priority::Medium, i + 1);
        a.write(insert(&record).into()).await.unwrap();
        let claim = next(&record, MessageState::Delivered);
        a.lease(vec![claim.clone()]).await.unwrap();
        claims.push(claim.record);
    }
    // The first signal after the setup's: the offers of the first two
    // messages may still be on their way, and a listener that has just
    // connected resynchronises.
    let first = |store: &PostgresStore| {
        let mut signals = store.signals().unwrap();
        async move {
            next_signal(
                &mut signals,
                |signal| matches!(signal, Signal::Offer(record) if ["m-0", "m-1"].contains(&record.id().as_str())),
            )
            .await
        }
    };
    // Closed on A, which claimed it: B hears nothing of it, and next of the
    // new message A stores after it (notifications arrive in order).
    let heard = first(&b);
    a.write(next(&claims[0], MessageState::Acked).into()).await.unwrap();
    let queued = message("m-2", to, Priority::Medium, 3);
    a.write(insert(&queued).into()).await.unwrap();
    assert_eq!(heard.await, Signal::Offer(Box::new(queued)));
    // Closed on B, claimed on A: A hears of the room.
    let heard = first(&a);
    b.write(next(&claims[1], MessageState::Acked).into()).await.unwrap();
    assert_eq!(heard.await, Signal::Room(agent));
}

/// A queued message reaches the other nodes as it was stored, so that a
/// stream waiting there can claim it without reading the inbox. Offers
/// arrive in the order their writes committed; a message too long for a
/// notification is announced as work for its recipient instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_are_offered_to_the_other_nodes_in_commit_order() {
    use crate::domain::message::Priority;
    use crate::store::Signal;
    use crate::store::conformance::{insert, message};

    let schema = TestSchema::create().await;
    let (a, b) = (schema.open().await, schema.open().await);
    let to = "codex://a";
    let mut signals = b.signals().unwrap();
    until_listening(&a, &mut signals).await;
    let mut heard = async || next_signal(&mut signals, |_| false).await;
    // One write of three messages, then three writes: each offered, in the
    // order written (ids descending: not sorted by their text).
    let queued: Vec<_> = (0..6)
        .map(|i| message(&format!("m-{}", 9 - i), to, Priority::Medium, i + 1))
        .collect();
    a.write(WriteSet {
        session: None,
        messages: queued[..3].iter().map(insert).collect(),
    })
    .await
    .unwrap();
    for record in &queued[3..] {
        a.write(insert(record).into()).await.unwrap();
    }
    for record in queued {
        assert_eq!(heard().await, Signal::Offer(Box::new(record)));
    }
    let mut long = message("long", to, Priority::Medium, 20);
    long.message.make_mut().payload = serde_json::json!({ "data": "x".repeat(8_000) });
    a.write(insert(&long).into()).await.unwrap();
    assert_eq!(heard().await, Signal::Work(AgentId::parse(to).unwrap()));
}

/// A batch of updates is planned as primary-key lookups even when the plan
/// is made while the table is empty: a plan made then is kept as the table
/// grows (see `SESSION_SETTINGS`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_updates_is_planned_as_lookups_on_an_empty_table() {
    let schema = TestSchema::create().await;
    let store = schema.open().await;
    let client = store.client().await.unwrap();
    client
        .batch_execute(&format!(
            "SET plan_cache_mode = force_generic_plan;
             PREPARE update_many(text[], text[], int4[], int8[], int8[], int8[], int8[], text[], int8[]) AS {}",
            writes::UPDATE_MANY
        ))
        .await
        .unwrap();
    let plan: Vec<String> = client
        .query(
            "EXPLAIN EXECUTE update_many('{a,b}', '{x,x}', '{3,3}', '{1,1}', '{1,1}', '{1,1}', '{2,2}', '{q,q}', '{1,1}')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let plan = plan.join("\n");
    client
        .batch_execute("DEALLOCATE update_many; RESET plan_cache_mode")
        .await
        .unwrap();
    assert!(plan.contains("Nested Loop") && plan.contains("messages_pkey"), "{plan}");
    assert!(!plan.contains("Seq Scan on messages"), "{plan}");
}
