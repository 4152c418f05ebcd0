//! The real server on PostgreSQL (`--store postgres`), in a schema of its
//! own in the test database (AGENTBUS_TEST_DATABASE_URL, default the local
//! `postgres://postgres@127.0.0.1:5432/test` that .ci/run starts).

mod common;

use std::time::Duration;

use agentbus::pb;
use agentbus::pb::receive_messages_response::Kind;
use common::postgres::Schema;
use common::{Bus, handovers, inbox, object, tutorial_session};
use tokio::time::timeout;

const ORCHESTRATOR: &str = "claude-code://orchestrator";
const BACKEND: &str = "opencode://backend";

async fn register(bus: &Bus, id: &str) {
    let descriptor = pb::AgentDescriptor {
        agent_id: id.into(),
        ..Default::default()
    };
    bus.agents()
        .await
        .register_agent(pb::RegisterAgentRequest {
            agent: Some(descriptor),
            update: false,
        })
        .await
        .unwrap();
}

fn task(id: &str) -> pb::Message {
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
        message_type: pb::MessageType::TaskRequest as i32,
        payload: Some(prost_types::Value {
            kind: Some(prost_types::value::Kind::StructValue(object(
                serde_json::json!({"task_type": "implementation"}),
            ))),
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_session_and_a_message_round_trip_on_postgres_and_survive_a_restart() {
    let schema = Schema::create("round_trip").await;
    let url = schema.url();
    let args = ["--store", "postgres", "--database-url", &url];
    let bus = Bus::start(&args).await;

    let mut sessions = bus.sessions().await;
    let created = sessions
        .create_session(tutorial_session("pg-session"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.session.unwrap().version, 1);
    register(&bus, ORCHESTRATOR).await;
    register(&bus, BACKEND).await;

    let mut messages = bus.messages().await;
    let sent = messages
        .send_message(pb::SendMessageRequest {
            message: Some(task("pg-m1")),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(sent.accepted, "{sent:?}");
    let mut stream = inbox(&bus, BACKEND).await;
    let delivery = next_delivery(&mut stream).await;
    assert_eq!(delivery.message.unwrap().message_id, "pg-m1");
    let acked = messages
        .ack_message(pb::AckMessageRequest {
            agent_id: BACKEND.into(),
            message_id: "pg-m1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acked.state(), pb::MessageState::Acked);
    drop(stream);
    drop(bus);

    // Another process on the same schema sees everything as it was left.
    let bus = Bus::start(&args).await;
    let status = bus
        .messages()
        .await
        .get_message(pb::GetMessageRequest {
            message_id: "pg-m1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(status.state(), pb::MessageState::Acked);
    let session = bus
        .sessions()
        .await
        .get_session(pb::GetSessionRequest {
            session_id: "pg-session".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(session.session.unwrap().session_id, "pg-session");
}

#[tokio::test]
async fn an_unreachable_database_stops_the_server_with_its_address() {
    // Nothing listens on port 1.
    let args = [
        "--store",
        "postgres",
        "--database-url",
        "postgres://postgres@127.0.0.1:1/test",
    ];
    let mut bus = Bus::start(&args).await;
    let status = bus.wait_exit(Duration::from_secs(20)).await.expect("the server exits");
    assert!(!status.success());
    let log = bus.log();
    assert!(
        log.contains("cannot reach PostgreSQL at postgres://postgres@127.0.0.1:1/test"),
        "{log}"
    );
}

/// The next delivery on `inbox`, skipping heartbeats.
async fn next_delivery(inbox: &mut tonic::Streaming<pb::ReceiveMessagesResponse>) -> pb::Delivery {
    loop {
        let next = timeout(Duration::from_secs(10), inbox.message())
            .await
            .expect("a delivery in time")
            .unwrap()
            .expect("the stream is open");
        if let Some(Kind::Delivery(delivery)) = next.kind {
            return delivery;
        }
    }
}

/// Sends messages (acking each) until one is handed over to the stream,
/// which answers DELIVERED at once: the stream waits for hand-overs only
/// once a read found its inbox empty. Returns that message's id.
async fn send_until_handed_over(
    bus: &Bus,
    inbox: &mut tonic::Streaming<pb::ReceiveMessagesResponse>,
    tag: &str,
) -> String {
    let mut messages = bus.messages().await;
    for i in 0..100 {
        let id = format!("{tag}-{i}");
        let sent = messages
            .send_message(pb::SendMessageRequest {
                message: Some(task(&id)),
            })
            .await
            .unwrap()
            .into_inner();
        if sent.state() == pb::MessageState::Delivered {
            return id;
        }
        assert_eq!(sent.state(), pb::MessageState::Queued, "{sent:?}");
        // Not handed over: the stream reads it from the inbox.
        let delivery = next_delivery(inbox).await;
        assert_eq!(delivery.message.unwrap().message_id, id);
        messages
            .ack_message(pb::AckMessageRequest {
                agent_id: BACKEND.into(),
                message_id: id,
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no send was handed over to the waiting stream in 100 tries");
}

#[tokio::test]
async fn a_send_hands_its_message_to_a_waiting_stream_and_a_closed_stream_gives_it_back() {
    let schema = Schema::create("handover").await;
    let url = schema.url();
    // Long enough that a delivery given back by the ack timeout could not
    // pass for one given back by the closing stream.
    let bus = Bus::start(&["--store", "postgres", "--database-url", &url, "--ack-timeout", "120s"]).await;
    register(&bus, ORCHESTRATOR).await;
    register(&bus, BACKEND).await;
    let mut messages = bus.messages().await;

    // Handed over: stored claimed, delivered as the first attempt, acked
    // like any delivery.
    let mut stream = inbox(&bus, BACKEND).await;
    let handed = send_until_handed_over(&bus, &mut stream, "handed").await;
    let delivery = next_delivery(&mut stream).await;
    assert_eq!(
        (delivery.message.unwrap().message_id, delivery.attempt),
        (handed.clone(), 1)
    );
    assert_eq!(handovers(&bus, "send").await, 1.0);
    let acked = messages
        .ack_message(pb::AckMessageRequest {
            agent_id: BACKEND.into(),
            message_id: handed,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acked.state(), pb::MessageState::Acked);

    // Handed over, delivered, never acked: closing the stream gives it
    // back, and the next stream receives it as the second attempt.
    let given_back = send_until_handed_over(&bus, &mut stream, "given-back").await;
    let delivery = next_delivery(&mut stream).await;
    assert_eq!(delivery.message.unwrap().message_id, given_back);
    drop(stream);
    let mut stream = inbox(&bus, BACKEND).await;
    let delivery = next_delivery(&mut stream).await;
    assert_eq!(
        (delivery.message.unwrap().message_id, delivery.attempt),
        (given_back, 2)
    );
}
