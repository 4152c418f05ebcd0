//! Write throughput and latency, printed as a table:
//! 1. the SQLite store with group commit vs. one transaction per write (the
//!    reference), and the memory store as a ceiling, at several concurrencies;
//! 2. CreateSession end to end over gRPC against an in-process server;
//! 3. messages sent to one agent, delivered on its stream and acknowledged.
//!
//! Run: `cargo bench --bench throughput` (AGENTBUS_BENCH_OPS sets writes per run).

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentbus::config::{Config, StoreKind};
use agentbus::domain::session::{NewSession, ParticipantSpec, Session, SessionEventKind, SessionLimits};
use agentbus::domain::{AgentId, JsonObject, SessionId, Timestamp};
use agentbus::pb;
use agentbus::store::memory::MemoryStore;
use agentbus::store::sqlite::{SqliteOptions, SqliteStore, Synchronous};
use agentbus::store::{SessionChange, Store};
use tonic::transport::Channel;

fn ops() -> usize {
    std::env::var("AGENTBUS_BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000)
}

struct Stats {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

fn stats(mut latencies: Vec<Duration>, elapsed: Duration) -> Stats {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Stats {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn print(name: &str, concurrency: usize, s: &Stats) {
    println!(
        "{name:<34} {concurrency:>5} {:>12.0} {:>10.2} {:>10.2}",
        s.per_second,
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3
    );
}

fn session(i: usize) -> Session {
    let new = NewSession {
        session_id: Some(SessionId::parse(&format!("sess_bench_{i}")).unwrap()),
        orchestrator: AgentId::parse("claude-code://orchestrator").unwrap(),
        participants: vec![
            ParticipantSpec::new("opencode://backend", "", "implementer", vec![], JsonObject::new()).unwrap(),
        ],
        steps: vec![],
        shared_context: serde_json::from_str(r#"{"project":"feature/notifications","n":1}"#).unwrap(),
    };
    Session::create(new, &SessionLimits::default(), Timestamp::now()).unwrap()
}

/// Runs `op(i)` for `i` in `0..total`, spread over `concurrency` tasks.
async fn measure<F, Fut>(concurrency: usize, total: usize, op: F) -> Stats
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for i in (worker..total).step_by(concurrency) {
                let begun = Instant::now();
                op(i).await;
                latencies.push(begun.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    stats(latencies, started.elapsed())
}

/// `total` session creations straight against the store.
async fn run_store(store: Arc<dyn Store>, concurrency: usize, total: usize) -> Stats {
    measure(concurrency, total, move |i| {
        let store = store.clone();
        async move {
            let change = SessionChange {
                session: session(i),
                expected_version: None,
                kind: SessionEventKind::SessionCreated,
                agent_id: None,
                task_id: None,
                timestamp: Timestamp::now(),
            };
            store.commit(change).await.unwrap();
        }
    })
    .await
}

fn sqlite(dir: &std::path::Path, max_batch: usize) -> Arc<dyn Store> {
    let options = SqliteOptions {
        path: dir.join("bench.sqlite3"),
        synchronous: Synchronous::Full,
        feed_capacity: 1024,
        max_batch,
    };
    Arc::new(SqliteStore::open(&options).unwrap())
}

/// Runs `body` against an in-process server on a fresh SQLite store.
async fn with_server<F, Fut, T>(body: F) -> T
where
    F: FnOnce(Channel) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.storage.store = StoreKind::Sqlite;
    config.storage.data_dir = dir.path().to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(agentbus::server::serve(config, listener, async {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let result = body(channel).await;
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    result
}

async fn create_sessions(concurrency: usize, total: usize) -> Stats {
    with_server(|channel| async move {
        let client = pb::session_service_client::SessionServiceClient::new(channel);
        measure(concurrency, total, move |i| {
            let mut client = client.clone();
            async move {
                let request = pb::CreateSessionRequest {
                    session_id: format!("sess_grpc_{i}"),
                    orchestrator: "claude-code://orchestrator".into(),
                    participants: vec![pb::ParticipantSpec {
                        agent_id: "opencode://backend".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                };
                client.create_session(request).await.unwrap();
            }
        })
        .await
    })
    .await
}

/// `total` messages from `concurrency` senders to one agent whose inbox
/// stream acknowledges each delivery: send latency, and how fast messages
/// got from the first send to their ack.
async fn message_flow(concurrency: usize, total: usize) -> (Stats, f64) {
    const FROM: &str = "claude-code://orchestrator";
    const TO: &str = "opencode://backend";
    with_server(|channel| async move {
        let mut agents = pb::agent_service_client::AgentServiceClient::new(channel.clone());
        for id in [FROM, TO] {
            let agent = pb::AgentDescriptor {
                agent_id: id.into(),
                ..Default::default()
            };
            agents
                .register_agent(pb::RegisterAgentRequest {
                    agent: Some(agent),
                    update: false,
                })
                .await
                .unwrap();
        }
        let messages = pb::message_service_client::MessageServiceClient::new(channel);
        let mut inbox = messages
            .clone()
            .receive_messages(pb::ReceiveMessagesRequest {
                agent_id: TO.into(),
                max_in_flight: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let acker = messages.clone();
        let consumer = tokio::spawn(async move {
            let mut acks = tokio::task::JoinSet::new();
            let mut delivered = 0;
            while delivered < total {
                let Some(pb::receive_messages_response::Kind::Delivery(delivery)) =
                    inbox.message().await.unwrap().unwrap().kind
                else {
                    continue;
                };
                delivered += 1;
                let mut acker = acker.clone();
                let message_id = delivery.message.unwrap().message_id;
                acks.spawn(async move {
                    acker
                        .ack_message(pb::AckMessageRequest {
                            agent_id: TO.into(),
                            message_id,
                        })
                        .await
                        .unwrap();
                });
            }
            acks.join_all().await;
            Instant::now()
        });
        let started = Instant::now();
        let sends = measure(concurrency, total, move |i| {
            let mut messages = messages.clone();
            async move {
                let message = pb::Message {
                    sender: Some(pb::AgentRef {
                        agent_id: FROM.into(),
                        ..Default::default()
                    }),
                    recipient: Some(pb::AgentRef {
                        agent_id: TO.into(),
                        ..Default::default()
                    }),
                    message_type: pb::MessageType::TaskRequest as i32,
                    payload: Some(prost_types::Value {
                        kind: Some(prost_types::value::Kind::NumberValue(i as f64)),
                    }),
                    ..Default::default()
                };
                messages
                    .send_message(pb::SendMessageRequest { message: Some(message) })
                    .await
                    .unwrap();
            }
        })
        .await;
        let finished = consumer.await.unwrap();
        (sends, total as f64 / (finished - started).as_secs_f64())
    })
    .await
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let total = ops();
    println!("{total} session creations per row; SQLite synchronous=FULL (fsync per commit)");
    println!(
        "{:<34} {:>5} {:>12} {:>10} {:>10}",
        "store", "conc", "writes/s", "p50 ms", "p99 ms"
    );
    runtime.block_on(async {
        for concurrency in [1, 8, 64] {
            let memory: Arc<dyn Store> = Arc::new(MemoryStore::new(1024));
            print(
                "memory (ceiling)",
                concurrency,
                &run_store(memory, concurrency, total).await,
            );
            let dir = tempfile::tempdir().unwrap();
            print(
                "sqlite, txn per write (reference)",
                concurrency,
                &run_store(sqlite(dir.path(), 1), concurrency, total).await,
            );
            let dir = tempfile::tempdir().unwrap();
            print(
                "sqlite, group commit",
                concurrency,
                &run_store(sqlite(dir.path(), 512), concurrency, total).await,
            );
        }
        println!();
        println!(
            "{:<34} {:>5} {:>12} {:>10} {:>10}",
            "gRPC CreateSession (sqlite)", "conc", "calls/s", "p50 ms", "p99 ms"
        );
        for concurrency in [1, 16, 64] {
            print(
                "end to end over loopback",
                concurrency,
                &create_sessions(concurrency, total).await,
            );
        }
        println!();
        println!(
            "{:<34} {:>5} {:>12} {:>10} {:>10} {:>14}",
            "messages to one agent (sqlite)", "conc", "sends/s", "p50 ms", "p99 ms", "sent->acked/s"
        );
        for concurrency in [1, 16, 64] {
            let (sends, flow) = message_flow(concurrency, total).await;
            println!(
                "{:<34} {concurrency:>5} {:>12.0} {:>10.2} {:>10.2} {flow:>14.0}",
                "send, deliver on a stream, ack",
                sends.per_second,
                sends.p50.as_secs_f64() * 1e3,
                sends.p99.as_secs_f64() * 1e3
            );
        }
    });
}
