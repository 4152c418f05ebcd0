//! Three server processes on one PostgreSQL schema, used as a cluster: any
//! call on any node, and every guarantee of one node kept (issue 11).
//!
//! Nodes run with a 30 s heartbeat, so an inbox stream that is not pushed
//! would look again only after 30 s: deliveries within a second prove that
//! other nodes' writes wake it.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agentbus::pb;
use agentbus::pb::receive_messages_response::Kind as InboxKind;
use agentbus::pb::watch_sessions_response::Kind as WatchKind;
use common::postgres::{Schema, database_url};
use common::{Bus, Messages, handovers, inbox, object, tutorial_session};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::timeout;
use tonic::{Code, Streaming};

const ORCHESTRATOR: &str = "claude-code://orchestrator";
const BACKEND: &str = "opencode://backend";

/// Flags of every node: the schema's URL, and heartbeats too slow to find
/// anything by polling within a test's waits.
fn node_args(url: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--store",
        "postgres",
        "--database-url",
        url,
        "--heartbeat-interval",
        "30s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

async fn start_nodes(url: &str, extra: &[&str], count: usize) -> Vec<Bus> {
    let args = node_args(url, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut nodes = Vec::new();
    for _ in 0..count {
        nodes.push(Bus::start(&args).await);
    }
    nodes
}

/// The index of the node that runs the background work.
async fn leader(nodes: &[Bus]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(index) = nodes
            .iter()
            .position(|node| node.log().contains("this node runs the background work"))
        {
            return index;
        }
        assert!(Instant::now() < deadline, "no node runs the background work");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn register(bus: &Bus, id: &str) {
    let agent = pb::AgentDescriptor {
        agent_id: id.into(),
        ..Default::default()
    };
    bus.agents()
        .await
        .register_agent(pb::RegisterAgentRequest {
            agent: Some(agent),
            update: false,
        })
        .await
        .unwrap();
}

fn message(id: &str, priority: pb::Priority) -> pb::Message {
    let agent = |id: &str| {
        Some(pb::AgentRef {
            agent_id: id.into(),
            ..Default::default()
        })
    };
    pb::Message {
        message_id: id.into(),
        sender: agent(ORCHESTRATOR),
        recipient: agent(BACKEND),
        message_type: pb::MessageType::StatusUpdate as i32,
        priority: priority as i32,
        ..Default::default()
    }
}

async fn send(
    client: &mut Messages,
    id: &str,
    priority: pb::Priority,
) -> Result<pb::SendMessageResponse, tonic::Status> {
    client
        .send_message(pb::SendMessageRequest {
            message: Some(message(id, priority)),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The next delivery's message id within `wait`, skipping heartbeats;
/// `None` if none came.
async fn next_delivery(stream: &mut Streaming<pb::ReceiveMessagesResponse>, wait: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let next = timeout(deadline - tokio::time::Instant::now(), stream.message())
            .await
            .ok()?;
        match next.ok()??.kind {
            Some(InboxKind::Delivery(delivery)) => return Some(delivery.message?.message_id),
            _ => continue,
        }
    }
}

async fn ack(client: &mut Messages, id: &str) {
    client
        .ack_message(pb::AckMessageRequest {
            agent_id: BACKEND.into(),
            message_id: id.into(),
        })
        .await
        .unwrap();
}

async fn watch_from(bus: &Bus, after: u64) -> Streaming<pb::WatchSessionsResponse> {
    bus.sessions()
        .await
        .watch_sessions(pb::WatchSessionsRequest {
            after_sequence: Some(after),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// The next `count` events of a watch, as (sequence, session id, type).
async fn events(stream: &mut Streaming<pb::WatchSessionsResponse>, count: usize) -> Vec<(u64, String, i32)> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let next = timeout(Duration::from_secs(15), stream.message())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} events came: {seen:?}", seen.len()))
            .unwrap()
            .expect("the watch is open");
        if let Some(WatchKind::Event(event)) = next.kind {
            let session_id = event.session.map(|s| s.session_id).unwrap_or_default();
            seen.push((event.sequence, session_id, event.r#type));
        }
    }
    seen
}

#[tokio::test]
async fn messages_sent_on_one_node_are_pushed_to_inboxes_on_others_once_each_in_priority_order() {
    let schema = Schema::create("cluster_delivery").await;
    let nodes = start_nodes(&schema.url(), &[], 3).await;
    register(&nodes[0], ORCHESTRATOR).await;
    register(&nodes[0], BACKEND).await;
    let mut sender = nodes[0].messages().await;

    // Pushed: an inbox on node 1, idle, gets a message sent through node 0
    // long before its next look (30 s).
    let mut stream = inbox(&nodes[1], BACKEND).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent_at = Instant::now();
    send(&mut sender, "push-1", pb::Priority::Medium).await.unwrap();
    assert_eq!(
        next_delivery(&mut stream, Duration::from_secs(5)).await.as_deref(),
        Some("push-1")
    );
    let latency = sent_at.elapsed();
    assert!(latency < Duration::from_secs(2), "cross-node delivery took {latency:?}");
    ack(&mut sender, "push-1").await;
    // The stream waited with nothing to deliver: node 0 offered the message
    // in its notification and node 1 claimed it without reading the inbox.
    // Offers keep the order of the sends.
    assert_eq!(handovers(&nodes[1], "offer").await, 1.0);
    let offered: Vec<String> = (0..20).map(|i| format!("offer-{i:02}")).collect();
    for id in &offered {
        send(&mut sender, id, pb::Priority::Medium).await.unwrap();
    }
    let mut received = Vec::new();
    for _ in &offered {
        let id = next_delivery(&mut stream, Duration::from_secs(5))
            .await
            .expect("a delivery");
        ack(&mut sender, &id).await;
        received.push(id);
    }
    assert_eq!(received, offered);
    assert!(handovers(&nodes[1], "offer").await > 1.0);
    drop(stream);

    // Priority first, FIFO within a priority, whichever node stored them.
    let mut senders = [sender.clone(), nodes[1].messages().await, nodes[2].messages().await];
    let order = [
        ("p-low-1", pb::Priority::Low),
        ("p-high-1", pb::Priority::High),
        ("p-low-2", pb::Priority::Low),
        ("p-high-2", pb::Priority::High),
        ("p-medium-1", pb::Priority::Medium),
    ];
    for (i, (id, priority)) in order.iter().enumerate() {
        send(&mut senders[i % 3], id, *priority).await.unwrap();
    }
    let mut stream = inbox(&nodes[2], BACKEND).await;
    let mut received = Vec::new();
    for _ in 0..order.len() {
        let id = next_delivery(&mut stream, Duration::from_secs(5))
            .await
            .expect("a delivery");
        ack(&mut sender, &id).await;
        received.push(id);
    }
    assert_eq!(received, ["p-high-1", "p-high-2", "p-medium-1", "p-low-1", "p-low-2"]);
    drop(stream);

    // Competing consumers on two nodes: each message held by one at a time.
    let streams = [inbox(&nodes[1], BACKEND).await, inbox(&nodes[2], BACKEND).await];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let total = 60;
    let consumers: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, mut stream)| {
            let mut acker = senders[i + 1].clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(id) = next_delivery(&mut stream, Duration::from_secs(3)).await {
                    ack(&mut acker, &id).await;
                    got.push(id);
                }
                got
            })
        })
        .collect();
    for i in 0..total {
        send(&mut senders[i % 3], &format!("c-{i}"), pb::Priority::Medium)
            .await
            .unwrap();
    }
    let mut all = Vec::new();
    let mut per_node = Vec::new();
    for consumer in consumers {
        let got = consumer.await.unwrap();
        per_node.push(got.len());
        all.extend(got);
    }
    let unique: BTreeSet<&String> = all.iter().collect();
    assert_eq!(all.len(), total, "deliveries {per_node:?}: {all:?}");
    assert_eq!(unique.len(), total, "a message was held twice: {all:?}");
}

#[tokio::test]
async fn watchers_on_every_node_see_one_gap_free_sequence_and_resume_on_another_node() {
    let schema = Schema::create("cluster_watch").await;
    let nodes = Arc::new(start_nodes(&schema.url(), &[], 3).await);
    let mut watches = Vec::new();
    for node in nodes.iter() {
        watches.push(watch_from(node, 0).await);
    }
    // Sessions created and changed through all three nodes at once, so
    // transactions of different nodes interleave.
    let per_node = 8;
    let writers: Vec<_> = (0..3)
        .map(|n| {
            let nodes = nodes.clone();
            tokio::spawn(async move {
                let mut client = nodes[n].sessions().await;
                for i in 0..per_node {
                    let id = format!("w-{n}-{i}");
                    client.create_session(tutorial_session(&id)).await.unwrap();
                    client
                        .update_shared_context(pb::UpdateSharedContextRequest {
                            session_id: id,
                            context: Some(object(serde_json::json!({"step": i}))),
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let total = 3 * per_node * 2;
    let mut seen = Vec::new();
    for watch in &mut watches {
        seen.push(events(watch, total).await);
    }
    let sequences: Vec<u64> = seen[0].iter().map(|e| e.0).collect();
    assert_eq!(
        sequences,
        (1..=total as u64).collect::<Vec<_>>(),
        "gap or disorder on node 0"
    );
    assert_eq!(seen[0], seen[1], "node 1 saw another history");
    assert_eq!(seen[0], seen[2], "node 2 saw another history");

    // A sequence from node 0 resumes on node 1, with nothing skipped.
    let resume_at = seen[0][10].0;
    let mut resumed = watch_from(&nodes[1], resume_at).await;
    let rest = events(&mut resumed, total - 11).await;
    assert_eq!(rest[..], seen[0][11..]);
}

#[tokio::test]
async fn compare_and_swap_and_idempotent_sends_hold_across_nodes() {
    let schema = Schema::create("cluster_cas").await;
    let nodes = start_nodes(&schema.url(), &[], 3).await;
    let mut first = nodes[0].sessions().await;
    let created = first
        .create_session(tutorial_session("cas"))
        .await
        .unwrap()
        .into_inner();
    let version = created.session.unwrap().version;

    for round in 0..5u64 {
        let mut racers = Vec::new();
        for (n, node) in nodes.iter().enumerate() {
            let mut client = node.sessions().await;
            racers.push(tokio::spawn(async move {
                client
                    .update_shared_context(pb::UpdateSharedContextRequest {
                        session_id: "cas".into(),
                        context: Some(object(serde_json::json!({ "winner": n }))),
                        expected_version: Some(version + round),
                        ..Default::default()
                    })
                    .await
            }));
        }
        let mut won = 0;
        for racer in racers {
            match racer.await.unwrap() {
                Ok(_) => won += 1,
                Err(status) => assert_eq!(status.code(), Code::Aborted, "{status:?}"),
            }
        }
        assert_eq!(won, 1, "round {round}: {won} writers won the same version");
    }
    let session = first
        .get_session(pb::GetSessionRequest {
            session_id: "cas".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(session.version, version + 5);

    // The same message id through three nodes at once: stored once, and
    // every caller told the same.
    register(&nodes[0], ORCHESTRATOR).await;
    register(&nodes[0], BACKEND).await;
    for round in 0..5 {
        let id = format!("same-{round}");
        let mut racers = Vec::new();
        for node in &nodes {
            let mut client = node.messages().await;
            let id = id.clone();
            racers.push(tokio::spawn(async move {
                send(&mut client, &id, pb::Priority::Medium).await
            }));
        }
        for racer in racers {
            let answer = racer.await.unwrap().unwrap();
            assert!(answer.accepted, "{answer:?}");
            assert_eq!(answer.message_id, id);
        }
    }
    let mut stream = inbox(&nodes[1], BACKEND).await;
    let mut received = Vec::new();
    while let Some(id) = next_delivery(&mut stream, Duration::from_secs(2)).await {
        received.push(id);
    }
    received.sort();
    assert_eq!(received, ["same-0", "same-1", "same-2", "same-3", "same-4"]);
}

#[tokio::test]
async fn an_idle_session_expires_once_with_three_nodes_sweeping() {
    let schema = Schema::create("cluster_expiry").await;
    let nodes = start_nodes(&schema.url(), &["--session-idle-timeout", "1s"], 3).await;
    let mut watch = watch_from(&nodes[2], 0).await;
    for (i, node) in nodes.iter().enumerate() {
        node.sessions()
            .await
            .create_session(tutorial_session(&format!("idle-{i}")))
            .await
            .unwrap();
    }
    // Three creations, three expiries, in some order.
    let seen = events(&mut watch, 6).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut all = watch_from(&nodes[0], 0).await;
    let history = events(&mut all, 6).await;
    assert_eq!(seen, history);
    let expired = pb::SessionEventType::SessionExpired as i32;
    let mut per_session: HashMap<&str, usize> = HashMap::new();
    for (_, session, kind) in &history {
        if *kind == expired {
            *per_session.entry(session).or_default() += 1;
        }
    }
    assert_eq!(per_session.len(), 3, "{history:?}");
    assert!(per_session.values().all(|&n| n == 1), "{history:?}");
    // Nothing more came after the six.
    let more = timeout(Duration::from_secs(2), async {
        loop {
            if let Some(WatchKind::Event(event)) = all.message().await.unwrap().unwrap().kind {
                return event;
            }
        }
    })
    .await;
    assert!(more.is_err(), "an extra event: {more:?}");
}

#[tokio::test]
async fn a_killed_nodes_unacknowledged_deliveries_go_to_the_others_and_nothing_acknowledged_is_lost() {
    let schema = Schema::create("cluster_kill").await;
    let mut nodes = start_nodes(&schema.url(), &["--ack-timeout", "2s"], 3).await;
    // The victim is the node running the background work, so another one
    // must take it over to redeliver.
    let victim = leader(&nodes).await;
    let (sending_node, survivor) = ((victim + 1) % 3, (victim + 2) % 3);
    register(&nodes[sending_node], ORCHESTRATOR).await;
    register(&nodes[sending_node], BACKEND).await;

    // The victim receives and acks about half of what it is handed;
    // another node takes sends the whole time.
    let mut on_victim = inbox(&nodes[victim], BACKEND).await;
    let mut victim_acks = nodes[victim].messages().await;
    let sending = Arc::new(AtomicBool::new(true));
    let sender = {
        let mut client = nodes[sending_node].messages().await;
        let sending = sending.clone();
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            let mut i = 0;
            while sending.load(Ordering::Relaxed) || i < 50 {
                let id = format!("k-{i}");
                if send(&mut client, &id, pb::Priority::Medium)
                    .await
                    .is_ok_and(|a| a.accepted)
                {
                    accepted.push(id);
                }
                i += 1;
            }
            accepted
        })
    };
    let mut acked_on_victim = BTreeSet::new();
    let mut handed_out = 0;
    while handed_out < 40 {
        let id = next_delivery(&mut on_victim, Duration::from_secs(10))
            .await
            .expect("deliveries on the victim");
        handed_out += 1;
        if handed_out % 2 == 0 {
            ack(&mut victim_acks, &id).await;
            acked_on_victim.insert(id);
        }
    }
    nodes[victim].signal(libc::SIGKILL);
    nodes[victim]
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("the victim died");
    tokio::time::sleep(Duration::from_millis(500)).await;
    sending.store(false, Ordering::Relaxed);
    let accepted = sender.await.unwrap();

    // The survivor gets everything else: queued, and after the ack timeout
    // what the dead node held.
    let mut survivor_acks = nodes[survivor].messages().await;
    let mut survivor = inbox(&nodes[survivor], BACKEND).await;
    let mut received = BTreeSet::new();
    let expected: BTreeSet<String> = accepted
        .iter()
        .filter(|id| !acked_on_victim.contains(*id))
        .cloned()
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while received != expected && Instant::now() < deadline {
        if let Some(id) = next_delivery(&mut survivor, Duration::from_secs(5)).await {
            ack(&mut survivor_acks, &id).await;
            received.insert(id);
        }
    }
    let missing: Vec<_> = expected.difference(&received).collect();
    assert!(missing.is_empty(), "never delivered after the victim died: {missing:?}");
    for id in &acked_on_victim {
        let status = survivor_acks
            .get_message(pb::GetMessageRequest { message_id: id.clone() })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        assert_eq!(status.state(), pb::MessageState::Acked, "{id}");
    }
    assert!(
        nodes
            .iter()
            .any(|node| node.log().contains("this node runs the background work") && node.pid() != nodes[victim].pid()),
        "no other node took over the background work"
    );
    drop(nodes.remove(victim));
}

async fn agent_on(bus: &Bus, id: &str) -> pb::Agent {
    bus.agents()
        .await
        .get_agent(pb::GetAgentRequest { agent_id: id.into() })
        .await
        .unwrap()
        .into_inner()
        .agent
        .unwrap()
}

async fn online_ids(bus: &Bus) -> Vec<String> {
    let listed = bus
        .agents()
        .await
        .list_agents(pb::ListAgentsRequest {
            online: Some(true),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    listed
        .agents
        .into_iter()
        .filter_map(|agent| agent.descriptor.map(|d| d.agent_id))
        .collect()
}

/// Waits until `check` holds, at most 10 s (presence is published every
/// second).
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut check: F) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_agent_is_online_on_every_node_while_its_stream_is_open_on_one() {
    let schema = Schema::create("cluster_presence").await;
    let nodes = start_nodes(&schema.url(), &[], 3).await;
    register(&nodes[0], BACKEND).await;
    register(&nodes[0], ORCHESTRATOR).await;
    assert!(!agent_on(&nodes[0], BACKEND).await.online);

    let stream = inbox(&nodes[1], BACKEND).await;
    eventually("online on node 0", async || agent_on(&nodes[0], BACKEND).await.online).await;
    let seen = agent_on(&nodes[2], BACKEND).await;
    assert!(seen.online && seen.last_seen.is_some(), "{seen:?}");
    assert_eq!(online_ids(&nodes[2]).await, [BACKEND]);

    drop(stream);
    eventually("offline on node 2", async || !agent_on(&nodes[2], BACKEND).await.online).await;
    assert!(online_ids(&nodes[0]).await.is_empty());
    let offline = agent_on(&nodes[0], BACKEND).await;
    assert!(
        offline.last_seen.unwrap().seconds >= seen.last_seen.unwrap().seconds,
        "{offline:?}"
    );
}

/// A TCP proxy to the database that the test can cut and restore.
struct Proxy {
    port: u16,
    up: watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (up, _) = watch::channel(true);
        let state = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if !*state.borrow() {
                    continue; // Refused: dropped at once.
                }
                let mut down = state.subscribe();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = down.wait_for(|up| !up) => {}
                    }
                });
            }
        });
        Proxy { port, up }
    }

    fn set(&self, up: bool) {
        self.up.send_replace(up);
    }
}

async fn health(bus: &Bus) -> i32 {
    let mut client = tonic_health::pb::health_client::HealthClient::new(bus.channel().await);
    client
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status
}

async fn http_health(bus: &Bus) -> (u16, serde_json::Value) {
    let response = reqwest::get(format!("{}/health", bus.url())).await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn wait_for_health(bus: &Bus, status: tonic_health::pb::health_check_response::ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while health(bus).await != status as i32 {
        assert!(Instant::now() < deadline, "health never became {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_node_reports_a_lost_database_and_recovers_by_itself() {
    use tonic_health::pb::health_check_response::ServingStatus;

    let schema = Schema::create("cluster_db_down").await;
    let base: tokio_postgres::Config = database_url().parse().unwrap();
    let host = match &base.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
        other => panic!("the test database must be reached over TCP, not {other:?}"),
    };
    let port = base.get_ports().first().copied().unwrap_or(5432);
    let proxy = Proxy::start(format!("{host}:{port}")).await;
    let url = format!(
        "postgres://{}@127.0.0.1:{}/{}?options=-csearch_path%3D{}",
        base.get_user().unwrap_or("postgres"),
        proxy.port,
        base.get_dbname().unwrap_or("test"),
        schema.name
    );
    // Node 0 reaches the database through the proxy, node 1 directly.
    let node = Bus::start(&node_args(&url, &[]).iter().map(String::as_str).collect::<Vec<_>>()).await;
    let other = Bus::start(
        &node_args(&schema.url(), &[])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .await;
    register(&other, ORCHESTRATOR).await;
    register(&other, BACKEND).await;
    wait_for_health(&node, ServingStatus::Serving).await;

    proxy.set(false);
    wait_for_health(&node, ServingStatus::NotServing).await;
    let (status, body) = http_health(&node).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unhealthy", "{body}");
    let started = Instant::now();
    let refused = node
        .sessions()
        .await
        .create_session(tutorial_session("while-down"))
        .await
        .expect_err("no database");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(started.elapsed() < Duration::from_secs(15), "the call hung");
    // The node stays up meanwhile.
    assert_eq!(http_health(&node).await.0, 503);

    proxy.set(true);
    wait_for_health(&node, ServingStatus::Serving).await;
    assert_eq!(http_health(&node).await.0, 200);
    node.sessions()
        .await
        .create_session(tutorial_session("after"))
        .await
        .expect("the node works again");
    // Its listener is back too: a message sent through the other node is
    // pushed to an inbox here.
    let mut stream = inbox(&node, BACKEND).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut sender = other.messages().await;
    send(&mut sender, "after-outage", pb::Priority::Medium).await.unwrap();
    assert_eq!(
        next_delivery(&mut stream, Duration::from_secs(5)).await.as_deref(),
        Some("after-outage")
    );
}
