//! Retention: with `--retain-closed 1s --retain-events 1s`, closed messages,
//! old events and ended sessions go away in the background; a watch that
//! resumes before the oldest kept event is told so, over gRPC and SSE;
//! `/metrics` counts what was removed and the database's size.

mod common;

use std::time::{Duration, Instant};

use agentbus::pb;
use agentbus::pb::receive_messages_response::Kind;
use common::{Bus, assert_status, scrape, tutorial_session};
use tonic::Code;

const ORCHESTRATOR: &str = "claude-code://orchestrator";
const BACKEND: &str = "opencode://backend";

fn message(id: &str) -> pb::Message {
    common::task_request(id, ORCHESTRATOR, BACKEND)
}

/// Polls `done` every 100 ms for up to 15 s.
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut done: F) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done().await {
        assert!(Instant::now() < deadline, "{what} did not happen within 15s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn what_retention_removed_is_gone_and_said_to_be() {
    let bus = Bus::start(&["--retain-closed", "1s", "--retain-events", "1s"]).await;
    let mut agents = bus.agents().await;
    for id in [ORCHESTRATOR, BACKEND] {
        agents
            .register_agent(pb::RegisterAgentRequest {
                agent: Some(pb::AgentDescriptor {
                    agent_id: id.into(),
                    ..Default::default()
                }),
                update: false,
            })
            .await
            .unwrap();
    }
    let mut sessions = bus.sessions().await;
    sessions.create_session(tutorial_session("retained")).await.unwrap();
    sessions
        .complete_session(pb::CompleteSessionRequest {
            session_id: "retained".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = bus.messages().await;
    for id in ["acked", "open"] {
        messages
            .send_message(pb::SendMessageRequest {
                message: Some(message(id)),
            })
            .await
            .unwrap();
    }
    let mut inbox = messages
        .receive_messages(pb::ReceiveMessagesRequest {
            agent_id: BACKEND.into(),
            max_in_flight: 1,
        })
        .await
        .unwrap()
        .into_inner();
    let delivered = loop {
        match inbox.message().await.unwrap().unwrap().kind {
            Some(Kind::Delivery(delivery)) => break delivery.message.unwrap().message_id,
            _ => continue,
        }
    };
    assert_eq!(delivered, "acked", "FIFO");
    messages
        .ack_message(pb::AckMessageRequest {
            agent_id: BACKEND.into(),
            message_id: "acked".into(),
        })
        .await
        .unwrap();

    // The acked message and the completed session go; the open message stays.
    let get = |id: &'static str| {
        let mut messages = messages.clone();
        async move {
            messages
                .get_message(pb::GetMessageRequest { message_id: id.into() })
                .await
        }
    };
    eventually("removing the acked message", async || {
        get("acked").await.is_err_and(|s| s.code() == Code::NotFound)
    })
    .await;
    eventually("removing the completed session", async || {
        let request = pb::GetSessionRequest {
            session_id: "retained".into(),
        };
        sessions
            .get_session(request)
            .await
            .is_err_and(|s| s.code() == Code::NotFound)
    })
    .await;
    assert!(get("open").await.is_ok(), "open messages are kept at any age");

    // Event 1 (created) is gone, event 2 (completed), the latest, is kept.
    let resume = |after: u64| pb::WatchSessionsRequest {
        after_sequence: Some(after),
        ..Default::default()
    };
    let mut watch = sessions.watch_sessions(resume(0)).await.unwrap().into_inner();
    assert_status(
        watch.message().await,
        Code::OutOfRange,
        "after_sequence: 0 is before the oldest event kept, 2",
    );
    let mut watch = sessions.watch_sessions(resume(1)).await.unwrap().into_inner();
    let first = loop {
        match watch.message().await.unwrap().unwrap().kind {
            Some(pb::watch_sessions_response::Kind::Event(event)) => break event,
            _ => continue,
        }
    };
    assert_eq!(first.sequence, 2);

    // SSE: an error event saying the same, and the stream ends.
    let body = reqwest::Client::new()
        .get(format!("{}/sessions/events", bus.url()))
        .header("last-event-id", "0")
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("event: error"), "{body}");
    assert!(body.contains("OUT_OF_RANGE"), "{body}");
    assert!(body.contains("the oldest event kept, 2"), "{body}");

    // A removed id can be sent again: it is a new message.
    messages
        .send_message(pb::SendMessageRequest {
            message: Some(message("acked")),
        })
        .await
        .unwrap();

    let metrics = scrape(&bus).await;
    let removed = |kind: &str| {
        metrics
            .value("agentbus_retention_removed_total", &[("kind", kind)])
            .unwrap_or(0.0)
    };
    assert!(removed("messages") >= 1.0, "messages: {}", removed("messages"));
    assert!(removed("events") >= 1.0, "events: {}", removed("events"));
    assert_eq!(removed("sessions"), 1.0);
    let size = metrics.value("agentbus_store_size_bytes", &[]).unwrap();
    assert!(size > 4096.0, "store size {size}");
}

#[tokio::test]
async fn retention_settings_are_checked() {
    for (flag, value) in [("--retain-closed", "500ms"), ("--retain-events", "200years")] {
        let temp = tempfile::tempdir().unwrap();
        let refused = Bus::try_start_in(temp.path(), &[flag, value]).err().expect("refused");
        assert!(
            refused.contains("must be 0s (keep forever) or between 1s and 100 years"),
            "{refused}"
        );
    }
    // 0s keeps everything: no removal at all.
    let bus = Bus::start(&["--retain-closed", "0s", "--retain-events", "0s"]).await;
    let metrics = scrape(&bus).await;
    assert_eq!(
        metrics.value("agentbus_retention_removed_total", &[("kind", "events")]),
        Some(0.0)
    );
}
