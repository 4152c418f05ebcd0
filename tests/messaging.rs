//! AgentService and MessageService over real gRPC: delivery, acks,
//! retries, fallback, dead letters, sync replies, tasks, limits.

mod common;

use std::time::{Duration, Instant};

use agentbus::pb;
use agentbus::pb::receive_messages_response::Kind;
use common::{Agents, Bus, Messages, assert_status, json, object, spec};
use serde_json::json as j;
use tokio::time::timeout;
use tonic::{Code, Streaming};

type Inbox = Streaming<pb::ReceiveMessagesResponse>;

const ORCHESTRATOR: &str = "claude-code://orchestrator";
const BACKEND: &str = "opencode://backend";
const FRONTEND: &str = "codex://frontend";

async fn register(agents: &mut Agents, id: &str) {
    let descriptor = pb::AgentDescriptor {
        agent_id: id.into(),
        ..Default::default()
    };
    agents
        .register_agent(pb::RegisterAgentRequest {
            agent: Some(descriptor),
            update: false,
        })
        .await
        .unwrap();
}

/// A bus with the orchestrator, backend and frontend registered.
async fn bus_with_agents(args: &[&str]) -> (Bus, Agents, Messages) {
    let bus = Bus::start(args).await;
    let mut agents = bus.agents().await;
    for id in [ORCHESTRATOR, BACKEND, FRONTEND] {
        register(&mut agents, id).await;
    }
    let messages = bus.messages().await;
    (bus, agents, messages)
}

fn message(id: &str, from: &str, to: &str) -> pb::Message {
    pb::Message {
        payload: Some(prost_types::Value {
            kind: Some(prost_types::value::Kind::StructValue(object(
                j!({"task_type": "implementation", "id": id}),
            ))),
        }),
        ..common::task_request(id, from, to)
    }
}

fn routing(max_retries: u32, backoff: pb::Backoff, fallbacks: &[&str]) -> Option<pb::Routing> {
    Some(pb::Routing {
        retry_policy: Some(pb::RetryPolicy {
            max_retries,
            backoff: backoff as i32,
        }),
        fallback_agents: fallbacks.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
}

async fn send(messages: &mut Messages, message: pb::Message) -> Result<pb::SendMessageResponse, tonic::Status> {
    messages
        .send_message(pb::SendMessageRequest { message: Some(message) })
        .await
        .map(|r| r.into_inner())
}

async fn inbox(messages: &mut Messages, agent: &str) -> Inbox {
    messages
        .receive_messages(pb::ReceiveMessagesRequest {
            agent_id: agent.into(),
            max_in_flight: 0,
        })
        .await
        .unwrap()
        .into_inner()
}

/// The next delivery, skipping heartbeats; fails after `within`.
async fn next_delivery(inbox: &mut Inbox, within: Duration) -> pb::Delivery {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = timeout(left, inbox.message()).await.expect("no delivery in time");
        match message.expect("stream error").expect("stream ended").kind {
            Some(Kind::Delivery(delivery)) => return delivery,
            Some(Kind::Heartbeat(_)) => continue,
            None => panic!("empty response"),
        }
    }
}

async fn assert_no_delivery(inbox: &mut Inbox, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, inbox.message()).await {
            Err(_) => return,
            Ok(Ok(Some(pb::ReceiveMessagesResponse {
                kind: Some(Kind::Heartbeat(_)),
            }))) => continue,
            Ok(other) => panic!("unexpected delivery: {other:?}"),
        }
    }
}

fn id_of(delivery: &pb::Delivery) -> &str {
    &delivery.message.as_ref().unwrap().message_id
}

async fn ack(messages: &mut Messages, agent: &str, id: &str) -> pb::MessageState {
    let request = pb::AckMessageRequest {
        agent_id: agent.into(),
        message_id: id.into(),
    };
    messages.ack_message(request).await.unwrap().into_inner().state()
}

async fn status_of(messages: &mut Messages, id: &str) -> pb::MessageStatus {
    let request = pb::GetMessageRequest { message_id: id.into() };
    messages
        .get_message(request)
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
}

#[tokio::test]
async fn register_get_list_and_unregister_agents() {
    let bus = Bus::start(&["--store", "memory"]).await;
    let mut agents = bus.agents().await;
    let descriptor = pb::AgentDescriptor {
        agent_id: BACKEND.into(),
        capabilities: Some(pb::AgentCapabilities {
            languages: vec!["rust".into()],
            optimal_tasks: vec!["implementation".into()],
            performance_profile: Some(pb::PerformanceProfile {
                avg_response_time: Some(prost_types::Duration {
                    seconds: 2,
                    nanos: 500_000_000,
                }),
                success_rate: 0.95,
                concurrent_capacity: 3,
            }),
            ..Default::default()
        }),
        metadata: Some(pb::AgentMetadata {
            version: "1.0".into(),
            tags: vec!["backend".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let registered = agents
        .register_agent(pb::RegisterAgentRequest {
            agent: Some(descriptor.clone()),
            update: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(registered.created);
    let agent = registered.agent.unwrap();
    assert_eq!(agent.descriptor.as_ref().unwrap().framework, "opencode");
    assert!(!agent.online);
    assert_eq!(agent.inbox_depth, 0);
    assert_status(
        agents
            .register_agent(pb::RegisterAgentRequest {
                agent: Some(descriptor.clone()),
                update: false,
            })
            .await,
        Code::AlreadyExists,
        "already registered",
    );
    let updated = agents
        .register_agent(pb::RegisterAgentRequest {
            agent: Some(pb::AgentDescriptor {
                health_check_url: "http://backend/health".into(),
                ..descriptor.clone()
            }),
            update: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!updated.created);
    assert_eq!(
        updated.agent.unwrap().descriptor.unwrap().health_check_url,
        "http://backend/health"
    );
    for id in [FRONTEND, "codex://reviewer", "claude-code://qa"] {
        register(&mut agents, id).await;
    }

    let list = |framework: &str, capability: &str, online: Option<bool>, page_size: u32, page_token: String| {
        pb::ListAgentsRequest {
            framework: framework.into(),
            capability: capability.into(),
            online,
            page_size,
            page_token,
        }
    };
    let ids = |response: &pb::ListAgentsResponse| {
        response
            .agents
            .iter()
            .map(|a| a.descriptor.as_ref().unwrap().agent_id.clone())
            .collect::<Vec<_>>()
    };
    let codex = agents
        .list_agents(list("codex", "", None, 0, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&codex), ["codex://frontend", "codex://reviewer"]);
    let rust = agents
        .list_agents(list("", "rust", None, 0, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&rust), [BACKEND]);
    let implementation = agents
        .list_agents(list("", "implementation", None, 0, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&implementation), [BACKEND]);

    // Online follows open inbox streams.
    let mut messages = bus.messages().await;
    let stream = inbox(&mut messages, FRONTEND).await;
    let online = agents
        .list_agents(list("", "", Some(true), 0, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&online), [FRONTEND]);
    let frontend = agents
        .get_agent(pb::GetAgentRequest {
            agent_id: FRONTEND.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .agent
        .unwrap();
    assert!(frontend.online && frontend.last_seen.is_some());
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    while agents
        .list_agents(list("", "", Some(true), 0, String::new()))
        .await
        .unwrap()
        .into_inner()
        .agents
        .len()
        == 1
    {
        assert!(Instant::now() < deadline, "agent stayed online after its stream closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut token = String::new();
    let mut all = Vec::new();
    loop {
        let page = agents
            .list_agents(list("", "", None, 3, token))
            .await
            .unwrap()
            .into_inner();
        all.extend(ids(&page));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        all,
        ["claude-code://qa", "codex://frontend", "codex://reviewer", BACKEND]
    );

    let removed = agents
        .unregister_agent(pb::UnregisterAgentRequest {
            agent_id: "codex://reviewer".into(),
        })
        .await
        .unwrap();
    assert_eq!(removed.into_inner().dead_lettered, 0);
    assert_status(
        agents
            .unregister_agent(pb::UnregisterAgentRequest {
                agent_id: "codex://reviewer".into(),
            })
            .await,
        Code::NotFound,
        "not registered",
    );
    assert_status(
        agents
            .get_agent(pb::GetAgentRequest {
                agent_id: "codex://reviewer".into(),
            })
            .await,
        Code::NotFound,
        "codex://reviewer",
    );

    // Bad input names the field.
    let bad = |descriptor: pb::AgentDescriptor| pb::RegisterAgentRequest {
        agent: Some(descriptor),
        update: false,
    };
    assert_status(
        agents.register_agent(pb::RegisterAgentRequest::default()).await,
        Code::InvalidArgument,
        "agent",
    );
    assert_status(
        agents
            .register_agent(bad(pb::AgentDescriptor {
                agent_id: "backend".into(),
                ..Default::default()
            }))
            .await,
        Code::InvalidArgument,
        "agent.agent_id",
    );
    assert_status(
        agents
            .register_agent(bad(pb::AgentDescriptor {
                agent_id: "x://y".into(),
                framework: "z".into(),
                ..Default::default()
            }))
            .await,
        Code::InvalidArgument,
        "agent.framework",
    );
    assert_status(
        agents
            .register_agent(bad(pb::AgentDescriptor {
                capabilities: Some(pb::AgentCapabilities {
                    performance_profile: Some(pb::PerformanceProfile {
                        success_rate: 1.5,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..descriptor.clone()
            }))
            .await,
        Code::InvalidArgument,
        "agent.capabilities.performance_profile.success_rate",
    );
    assert_status(
        agents.list_agents(list("", "", None, 0, "nonsense".into())).await,
        Code::InvalidArgument,
        "page_token",
    );
}

#[tokio::test]
async fn offline_messages_replay_on_connect_in_priority_order() {
    let (_bus, _agents, mut messages) = bus_with_agents(&[]).await;
    let priorities = [
        ("low-1", pb::Priority::Low),
        ("medium-1", pb::Priority::Medium),
        ("critical-1", pb::Priority::Critical),
        ("high-1", pb::Priority::High),
        ("medium-2", pb::Priority::Unspecified),
        ("critical-2", pb::Priority::Critical),
    ];
    for (id, priority) in priorities {
        let accepted = send(
            &mut messages,
            pb::Message {
                priority: priority as i32,
                ..message(id, ORCHESTRATOR, BACKEND)
            },
        )
        .await
        .unwrap();
        assert!(accepted.accepted);
        assert_eq!(
            (accepted.message_id.as_str(), accepted.state()),
            (id, pb::MessageState::Queued)
        );
    }
    let mut backend = inbox(&mut messages, BACKEND).await;
    let mut order = Vec::new();
    for _ in 0..priorities.len() {
        let delivery = next_delivery(&mut backend, Duration::from_secs(5)).await;
        assert_eq!(delivery.attempt, 1);
        assert!(delivery.ack_deadline.is_some());
        order.push(id_of(&delivery).to_string());
        ack(&mut messages, BACKEND, id_of(&delivery)).await;
    }
    assert_eq!(
        order,
        ["critical-1", "critical-2", "high-1", "medium-1", "medium-2", "low-1"]
    );

    // Live messages arrive on the open stream.
    send(&mut messages, message("live", ORCHESTRATOR, BACKEND))
        .await
        .unwrap();
    let live = next_delivery(&mut backend, Duration::from_secs(5)).await;
    assert_eq!(
        live.message.as_ref().unwrap().payload,
        message("live", ORCHESTRATOR, BACKEND).payload
    );
    assert_eq!(ack(&mut messages, BACKEND, "live").await, pb::MessageState::Acked);
    let status = status_of(&mut messages, "live").await;
    assert_eq!((status.state(), status.attempts), (pb::MessageState::Acked, 1));
    assert!(status.acked_at.is_some());
    // Acking again is harmless.
    assert_eq!(ack(&mut messages, BACKEND, "live").await, pb::MessageState::Acked);
    assert_no_delivery(&mut backend, Duration::from_millis(300)).await;
}

/// Delivery times of one message that is never acknowledged.
async fn redelivery_gaps(backoff: pb::Backoff) -> Vec<Duration> {
    let (_bus, _agents, mut messages) = bus_with_agents(&["--ack-timeout", "300ms", "--retry-backoff", "200ms"]).await;
    let mut backend = inbox(&mut messages, BACKEND).await;
    send(
        &mut messages,
        pb::Message {
            routing: routing(3, backoff, &[]),
            ..message("flaky", ORCHESTRATOR, BACKEND)
        },
    )
    .await
    .unwrap();
    let mut times = Vec::new();
    for attempt in 1..=4 {
        let delivery = next_delivery(&mut backend, Duration::from_secs(10)).await;
        assert_eq!((id_of(&delivery), delivery.attempt), ("flaky", attempt));
        times.push(Instant::now());
    }
    // Acking the last attempt ends it.
    assert_eq!(ack(&mut messages, BACKEND, "flaky").await, pb::MessageState::Acked);
    assert_eq!(status_of(&mut messages, "flaky").await.total_attempts, 4);
    assert_no_delivery(&mut backend, Duration::from_millis(800)).await;
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test]
async fn unacked_messages_are_redelivered_with_linear_backoff() {
    let gaps = redelivery_gaps(pb::Backoff::Linear).await;
    // ack timeout 300ms + n x 200ms, give or take the sweep period.
    for (gap, backoff) in gaps.iter().zip([200, 400, 600]) {
        let expected = Duration::from_millis(300 + backoff);
        assert!(*gap >= expected - Duration::from_millis(30), "gaps {gaps:?}");
        assert!(*gap < expected + Duration::from_millis(400), "gaps {gaps:?}");
    }
}

#[tokio::test]
async fn unacked_messages_are_redelivered_with_exponential_backoff() {
    let gaps = redelivery_gaps(pb::Backoff::Exponential).await;
    for (gap, backoff) in gaps.iter().zip([200, 400, 800]) {
        let expected = Duration::from_millis(300 + backoff);
        assert!(*gap >= expected - Duration::from_millis(30), "gaps {gaps:?}");
        assert!(*gap < expected + Duration::from_millis(400), "gaps {gaps:?}");
    }
}

#[tokio::test]
async fn exhausted_retries_go_to_fallback_agents_in_order() {
    let (bus, mut agents, mut messages) = bus_with_agents(&["--ack-timeout", "200ms", "--retry-backoff", "50ms"]).await;
    register(&mut agents, "aider://second").await;
    let mut backend = inbox(&mut messages, BACKEND).await;
    let mut frontend = inbox(&mut messages, FRONTEND).await;
    let mut second = inbox(&mut bus.messages().await, "aider://second").await;
    let fallbacks = ["codex://unregistered", FRONTEND, "aider://second"];
    send(
        &mut messages,
        pb::Message {
            routing: routing(1, pb::Backoff::Linear, &fallbacks),
            ..message("m", ORCHESTRATOR, BACKEND)
        },
    )
    .await
    .unwrap();
    for attempt in 1..=2 {
        assert_eq!(
            next_delivery(&mut backend, Duration::from_secs(5)).await.attempt,
            attempt
        );
    }
    // The unregistered fallback is skipped; the frontend gets its own retries.
    for attempt in 1..=2 {
        assert_eq!(
            next_delivery(&mut frontend, Duration::from_secs(5)).await.attempt,
            attempt
        );
    }
    let last = next_delivery(&mut second, Duration::from_secs(5)).await;
    assert_eq!((id_of(&last), last.attempt), ("m", 1));
    assert_status(
        messages
            .ack_message(pb::AckMessageRequest {
                agent_id: BACKEND.into(),
                message_id: "m".into(),
            })
            .await,
        Code::FailedPrecondition,
        "addressed to aider://second",
    );
    assert_eq!(ack(&mut messages, "aider://second", "m").await, pb::MessageState::Acked);
    let status = status_of(&mut messages, "m").await;
    assert_eq!(
        (status.current_recipient.as_str(), status.total_attempts),
        ("aider://second", 5)
    );
    assert_no_delivery(&mut backend, Duration::from_millis(300)).await;
}

/// The ERROR notice the bus sent about `id`, from the sender's inbox.
async fn dead_letter_notice(messages: &mut Messages, sender: &str, id: &str) -> pb::Message {
    let mut sender_inbox = inbox(messages, sender).await;
    let notice = next_delivery(&mut sender_inbox, Duration::from_secs(10))
        .await
        .message
        .unwrap();
    assert_eq!(notice.message_type(), pb::MessageType::Error);
    assert_eq!(notice.in_reply_to, id);
    assert_eq!(notice.sender.as_ref().unwrap().agent_id, "agentbus://bus");
    notice
}

fn payload(message: &pb::Message) -> serde_json::Value {
    match &message.payload.as_ref().unwrap().kind {
        Some(prost_types::value::Kind::StructValue(s)) => json(s),
        other => panic!("payload is not an object: {other:?}"),
    }
}

#[tokio::test]
async fn exhausted_messages_are_dead_lettered_and_the_sender_told() {
    let (_bus, _agents, mut messages) = bus_with_agents(&["--ack-timeout", "200ms", "--retry-backoff", "50ms"]).await;
    let mut backend = inbox(&mut messages, BACKEND).await;
    send(
        &mut messages,
        pb::Message {
            routing: routing(1, pb::Backoff::Linear, &[]),
            ..message("doomed", ORCHESTRATOR, BACKEND)
        },
    )
    .await
    .unwrap();
    next_delivery(&mut backend, Duration::from_secs(5)).await;
    next_delivery(&mut backend, Duration::from_secs(5)).await;
    let notice = dead_letter_notice(&mut messages, ORCHESTRATOR, "doomed").await;
    let reason = payload(&notice);
    assert_eq!(reason["error"], "dead_lettered");
    assert!(
        reason["reason"].as_str().unwrap().contains("no ack after 2 deliveries"),
        "{reason}"
    );
    let status = status_of(&mut messages, "doomed").await;
    assert_eq!(status.state(), pb::MessageState::DeadLettered);
    assert!(status.reason.contains("no registered fallback"), "{}", status.reason);
    assert_status(
        messages
            .ack_message(pb::AckMessageRequest {
                agent_id: BACKEND.into(),
                message_id: "doomed".into(),
            })
            .await,
        Code::FailedPrecondition,
        "dead-lettered",
    );
    assert_no_delivery(&mut backend, Duration::from_millis(400)).await;
}

#[tokio::test]
async fn routing_timeout_dead_letters_undelivered_messages() {
    let (_bus, _agents, mut messages) = bus_with_agents(&[]).await;
    let timed = pb::Message {
        routing: Some(pb::Routing {
            timeout: Some(prost_types::Duration {
                seconds: 0,
                nanos: 400_000_000,
            }),
            ..Default::default()
        }),
        ..message("late", ORCHESTRATOR, BACKEND)
    };
    let started = Instant::now();
    send(&mut messages, timed).await.unwrap();
    let notice = dead_letter_notice(&mut messages, ORCHESTRATOR, "late").await;
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(payload(&notice)["reason"].as_str().unwrap().contains("routing timeout"));
    assert_eq!(
        status_of(&mut messages, "late").await.state(),
        pb::MessageState::DeadLettered
    );
    // The recipient connecting later does not get it.
    let mut backend = inbox(&mut messages, BACKEND).await;
    assert_no_delivery(&mut backend, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn sync_send_returns_the_reply() {
    let (bus, _agents, mut messages) = bus_with_agents(&[]).await;
    let mut backend_client = bus.messages().await;
    let mut backend = inbox(&mut backend_client, BACKEND).await;
    let responder = tokio::spawn(async move {
        let request = next_delivery(&mut backend, Duration::from_secs(5))
            .await
            .message
            .unwrap();
        // Someone other than the recipient claiming to answer is not the reply.
        let mut impostor = message("impostor", FRONTEND, ORCHESTRATOR);
        impostor.message_type = pb::MessageType::TaskResponse as i32;
        impostor.in_reply_to = request.message_id.clone();
        send(&mut backend_client, impostor).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut reply = message("reply-1", BACKEND, ORCHESTRATOR);
        reply.message_type = pb::MessageType::TaskResponse as i32;
        reply.in_reply_to = request.message_id.clone();
        send(&mut backend_client, reply).await.unwrap();
    });
    let mut request = message("ask", ORCHESTRATOR, BACKEND);
    request.routing = Some(pb::Routing {
        delivery_mode: pb::DeliveryMode::Sync as i32,
        ..Default::default()
    });
    let answer = send(&mut messages, request.clone()).await.unwrap();
    responder.await.unwrap();
    assert_eq!(answer.state(), pb::MessageState::Answered);
    let reply = answer.reply.unwrap();
    assert_eq!(
        (reply.message_id.as_str(), reply.in_reply_to.as_str()),
        ("reply-1", "ask")
    );
    assert_eq!(
        status_of(&mut messages, "ask").await.state(),
        pb::MessageState::Answered
    );
    // Resending the same request returns the same reply at once.
    let again = send(&mut messages, request).await.unwrap();
    assert_eq!(again.reply.unwrap().message_id, "reply-1");
    // The reply reached the caller in the response, so it is acked rather
    // than left waiting in the orchestrator's inbox; the impostor's is not.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while status_of(&mut messages, "reply-1").await.state() != pb::MessageState::Acked {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the SYNC reply was never settled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        status_of(&mut messages, "impostor").await.state(),
        pb::MessageState::Queued
    );
}

#[tokio::test]
async fn sync_send_without_reply_hits_the_deadline() {
    let (_bus, _agents, mut messages) = bus_with_agents(&[]).await;
    let mut request = message("unanswered", ORCHESTRATOR, BACKEND);
    request.routing = Some(pb::Routing {
        delivery_mode: pb::DeliveryMode::Sync as i32,
        ..Default::default()
    });
    let mut call = tonic::Request::new(pb::SendMessageRequest {
        message: Some(request.clone()),
    });
    call.set_timeout(Duration::from_millis(400));
    let started = Instant::now();
    assert_status(messages.send_message(call).await, Code::DeadlineExceeded, "");
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    while status_of(&mut messages, "unanswered").await.state() != pb::MessageState::Expired {
        assert!(Instant::now() < deadline, "message never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A routing timeout shorter than the caller's deadline wins.
    request.message_id = "short".into();
    request.routing.as_mut().unwrap().timeout = Some(prost_types::Duration {
        seconds: 0,
        nanos: 300_000_000,
    });
    let started = Instant::now();
    assert_status(
        send(&mut messages, request).await,
        Code::DeadlineExceeded,
        "no reply to message short",
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn resends_are_idempotent() {
    let (bus, _agents, mut messages) = bus_with_agents(&[]).await;
    let original = message("once", ORCHESTRATOR, BACKEND);
    let first = send(&mut messages, original.clone()).await.unwrap();
    let second = send(&mut messages, original.clone()).await.unwrap();
    assert_eq!(
        (first.message_id.as_str(), second.message_id.as_str()),
        ("once", "once")
    );
    let mut backend = inbox(&mut messages, BACKEND).await;
    assert_eq!(
        id_of(&next_delivery(&mut backend, Duration::from_secs(5)).await),
        "once"
    );
    assert_no_delivery(&mut backend, Duration::from_millis(300)).await;
    ack(&mut messages, BACKEND, "once").await;
    assert_eq!(
        send(&mut messages, original.clone()).await.unwrap().state(),
        pb::MessageState::Acked
    );

    let mut changed = original.clone();
    changed.priority = pb::Priority::Critical as i32;
    assert_status(send(&mut messages, changed).await, Code::AlreadyExists, "already used");
    // The first send's answer stands even when a new send would now fail:
    // here the recipient is gone.
    drop(backend);
    let mut agents = bus.agents().await;
    agents
        .unregister_agent(pb::UnregisterAgentRequest {
            agent_id: BACKEND.into(),
        })
        .await
        .unwrap();
    assert_eq!(
        send(&mut messages, original.clone()).await.unwrap().state(),
        pb::MessageState::Acked
    );
    let mut fresh = original.clone();
    fresh.message_id = "never-sent".into();
    assert_status(send(&mut messages, fresh).await, Code::NotFound, "not registered");
    let mut other_sender = original;
    other_sender.sender = Some(pb::AgentRef {
        agent_id: FRONTEND.into(),
        ..Default::default()
    });
    assert_status(
        send(&mut messages, other_sender).await,
        Code::AlreadyExists,
        "already used",
    );
    // A send that named no id is not resent by naming the id it got.
    let mut unnamed = message("", ORCHESTRATOR, FRONTEND);
    let given = send(&mut messages, unnamed.clone()).await.unwrap().message_id;
    assert!(given.starts_with("msg_"), "{given}");
    unnamed.message_id = given;
    assert_status(send(&mut messages, unnamed).await, Code::AlreadyExists, "already used");
}

#[tokio::test]
async fn two_streams_share_an_inbox_and_a_closing_one_loses_nothing() {
    let (bus, _agents, mut messages) = bus_with_agents(&[]).await;
    let mut first = inbox(&mut messages, BACKEND).await;
    let mut second = inbox(&mut bus.messages().await, BACKEND).await;
    for i in 0..10 {
        send(&mut messages, message(&format!("m{i}"), ORCHESTRATOR, BACKEND))
            .await
            .unwrap();
    }
    let mut seen = std::collections::HashSet::new();
    let (mut from_first, mut from_second) = (0, 0);
    while seen.len() < 10 {
        tokio::select! {
            d = next_delivery(&mut first, Duration::from_secs(5)) => { from_first += 1; assert!(seen.insert(id_of(&d).to_string())); ack(&mut messages, BACKEND, id_of(&d)).await; }
            d = next_delivery(&mut second, Duration::from_secs(5)) => { from_second += 1; assert!(seen.insert(id_of(&d).to_string())); ack(&mut messages, BACKEND, id_of(&d)).await; }
        }
    }
    assert_eq!(from_first + from_second, 10, "each message went to exactly one stream");
    assert_no_delivery(&mut first, Duration::from_millis(200)).await;
    assert_no_delivery(&mut second, Duration::from_millis(200)).await;

    // The first stream takes a message and closes without acking: the
    // second gets it right away, not after the 30s ack timeout.
    drop(second);
    send(&mut messages, message("orphan", ORCHESTRATOR, BACKEND))
        .await
        .unwrap();
    let taken = next_delivery(&mut first, Duration::from_secs(5)).await;
    assert_eq!(id_of(&taken), "orphan");
    let mut third = inbox(&mut bus.messages().await, BACKEND).await;
    drop(first);
    let again = next_delivery(&mut third, Duration::from_secs(5)).await;
    assert_eq!((id_of(&again), again.attempt), ("orphan", 2));
}

#[tokio::test]
async fn full_inboxes_push_back() {
    let (_bus, _agents, mut messages) = bus_with_agents(&["--inbox-limit", "3"]).await;
    for i in 0..3 {
        send(&mut messages, message(&format!("m{i}"), ORCHESTRATOR, BACKEND))
            .await
            .unwrap();
    }
    assert_status(
        send(&mut messages, message("m3", ORCHESTRATOR, BACKEND)).await,
        Code::ResourceExhausted,
        "inbox of opencode://backend is full",
    );
    // Other inboxes are unaffected, and acking makes room.
    send(&mut messages, message("other", ORCHESTRATOR, FRONTEND))
        .await
        .unwrap();
    let mut backend = inbox(&mut messages, BACKEND).await;
    let first = next_delivery(&mut backend, Duration::from_secs(5)).await;
    ack(&mut messages, BACKEND, id_of(&first)).await;
    send(&mut messages, message("m3", ORCHESTRATOR, BACKEND)).await.unwrap();
}

#[tokio::test]
async fn max_in_flight_holds_back_deliveries_until_acks() {
    let (bus, _agents, mut messages) = bus_with_agents(&["--store", "memory"]).await;
    for id in ["one", "two", "three"] {
        send(&mut messages, message(id, ORCHESTRATOR, BACKEND)).await.unwrap();
    }
    let mut client = bus.messages().await;
    let mut backend = client
        .receive_messages(pb::ReceiveMessagesRequest {
            agent_id: BACKEND.into(),
            max_in_flight: 1,
        })
        .await
        .unwrap()
        .into_inner();
    let first = next_delivery(&mut backend, Duration::from_secs(5)).await;
    assert_eq!(id_of(&first), "one");
    // Nothing more until it is acknowledged.
    assert!(
        timeout(
            Duration::from_millis(300),
            next_delivery(&mut backend, Duration::from_secs(5))
        )
        .await
        .is_err(),
        "a second delivery arrived before the first was acked"
    );
    assert_eq!(status_of(&mut messages, "two").await.attempts, 0);
    ack(&mut messages, BACKEND, "one").await;
    let second = next_delivery(&mut backend, Duration::from_secs(5)).await;
    assert_eq!(id_of(&second), "two");
    drop(backend);
    // The third was never claimed, so closing the stream cost it nothing.
    let third = status_of(&mut messages, "three").await;
    assert_eq!((third.state(), third.attempts), (pb::MessageState::Queued, 0));
}

#[tokio::test]
async fn ack_messages_acks_a_batch_with_one_result_per_id() {
    let (bus, _agents, mut messages) = bus_with_agents(&[]).await;
    for id in ["b1", "b2", "b3", "other"] {
        let to = if id == "other" { FRONTEND } else { BACKEND };
        send(&mut messages, message(id, ORCHESTRATOR, to)).await.unwrap();
    }
    let mut backend = inbox(&mut messages, BACKEND).await;
    for _ in 0..3 {
        next_delivery(&mut backend, Duration::from_secs(5)).await;
    }
    ack(&mut messages, BACKEND, "b3").await;
    let ids = ["b1", "b2", "b1", "b3", "missing", "other"];
    let results = messages
        .ack_messages(pb::AckMessagesRequest {
            agent_id: BACKEND.into(),
            message_ids: ids.iter().map(|id| id.to_string()).collect(),
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let summary: Vec<(String, pb::MessageState, i32, &str)> = results
        .iter()
        .map(|r| (r.message_id.clone(), r.state(), r.code, r.code_name.as_str()))
        .collect();
    // The code as a number (as before) and by name, as HTTP errors name it.
    let acked = |id: &str| (id.to_owned(), pb::MessageState::Acked, 0, "OK");
    let failed = |id: &str, code: Code, name| (id.to_owned(), pb::MessageState::Unspecified, code as i32, name);
    assert_eq!(
        summary,
        [
            acked("b1"),
            acked("b2"),
            acked("b1"),
            acked("b3"),
            failed("missing", Code::NotFound, "NOT_FOUND"),
            failed("other", Code::FailedPrecondition, "FAILED_PRECONDITION"),
        ]
    );
    assert!(
        results[5].error.contains("addressed to codex://frontend"),
        "{}",
        results[5].error
    );
    for id in ["b1", "b2"] {
        assert_eq!(status_of(&mut messages, id).await.state(), pb::MessageState::Acked);
    }
    assert_eq!(
        status_of(&mut messages, "other").await.state(),
        pb::MessageState::Queued
    );
    // Acked for good: nothing is delivered again.
    assert_no_delivery(&mut backend, Duration::from_millis(300)).await;

    // Malformed requests fail as a whole, naming the field.
    let request = |ids: Vec<String>| pb::AckMessagesRequest {
        agent_id: BACKEND.into(),
        message_ids: ids,
    };
    assert_status(
        messages.ack_messages(request(Vec::new())).await,
        Code::InvalidArgument,
        "message_ids: between 1 and 1000 ids, got 0",
    );
    assert_status(
        messages.ack_messages(request(vec!["b1".into(); 1001])).await,
        Code::InvalidArgument,
        "got 1001",
    );
    assert_status(
        messages.ack_messages(request(vec!["b1".into(), String::new()])).await,
        Code::InvalidArgument,
        "message_ids[1]",
    );
    drop(bus);
}

#[tokio::test]
async fn unregistering_dead_letters_the_inbox() {
    let (bus, mut agents, mut messages) = bus_with_agents(&[]).await;
    let mut backend = inbox(&mut bus.messages().await, BACKEND).await;
    let mut frontend = inbox(&mut bus.messages().await, FRONTEND).await;
    send(&mut messages, message("stranded", FRONTEND, BACKEND))
        .await
        .unwrap();
    let stranded = next_delivery(&mut backend, Duration::from_secs(5)).await;
    assert_eq!(id_of(&stranded), "stranded");
    let request = pb::UnregisterAgentRequest {
        agent_id: BACKEND.into(),
    };
    let removed = agents.unregister_agent(request).await.unwrap().into_inner();
    assert_eq!(removed.dead_lettered, 1);
    let notice = next_delivery(&mut frontend, Duration::from_secs(5))
        .await
        .message
        .unwrap();
    assert_eq!(
        (notice.message_type(), notice.in_reply_to.as_str()),
        (pb::MessageType::Error, "stranded")
    );
    assert!(payload(&notice)["reason"].as_str().unwrap().contains("unregistered"));
    // The unregistered agent's open stream ends.
    let ended = timeout(Duration::from_secs(5), async {
        loop {
            match backend.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stream of an unregistered agent stayed open");
    assert_eq!(ended.unwrap_err().code(), Code::NotFound);
    assert_status(
        send(&mut messages, message("after", ORCHESTRATOR, BACKEND)).await,
        Code::NotFound,
        "agent opencode://backend is not registered",
    );
    // A registered fallback still takes messages for it.
    let mut redirected = message("redirected", ORCHESTRATOR, BACKEND);
    redirected.routing = routing(0, pb::Backoff::Linear, &[FRONTEND]);
    send(&mut messages, redirected).await.unwrap();
    assert_eq!(status_of(&mut messages, "redirected").await.current_recipient, FRONTEND);
}

#[tokio::test]
async fn bad_messages_are_refused_with_the_field_named() {
    let (_bus, _agents, mut messages) = bus_with_agents(&["--store", "memory"]).await;
    let base = message("ok", ORCHESTRATOR, BACKEND);
    let cases: Vec<(pb::Message, Code, &str)> = vec![
        (
            pb::Message {
                message_id: "bad id".into(),
                ..base.clone()
            },
            Code::InvalidArgument,
            "message.message_id",
        ),
        (
            pb::Message {
                sender: None,
                ..base.clone()
            },
            Code::InvalidArgument,
            "message.sender",
        ),
        (
            pb::Message {
                sender: Some(pb::AgentRef {
                    agent_id: "orchestrator".into(),
                    ..Default::default()
                }),
                ..base.clone()
            },
            Code::InvalidArgument,
            "message.sender.agent_id",
        ),
        (
            pb::Message {
                recipient: Some(pb::AgentRef {
                    agent_id: BACKEND.into(),
                    framework: "codex".into(),
                    ..Default::default()
                }),
                ..base.clone()
            },
            Code::InvalidArgument,
            "message.recipient.framework",
        ),
        (
            pb::Message {
                message_type: 0,
                ..base.clone()
            },
            Code::InvalidArgument,
            "message.message_type",
        ),
        (
            pb::Message {
                priority: 9,
                ..base.clone()
            },
            Code::InvalidArgument,
            "message.priority",
        ),
        (
            pb::Message {
                routing: Some(pb::Routing {
                    timeout: Some(prost_types::Duration { seconds: -1, nanos: 0 }),
                    ..Default::default()
                }),
                ..base.clone()
            },
            Code::InvalidArgument,
            "message.routing.timeout",
        ),
        (
            pb::Message {
                routing: routing(1, pb::Backoff::Linear, &[BACKEND]),
                ..base.clone()
            },
            Code::InvalidArgument,
            "message.routing.fallback_agents[0]",
        ),
        (
            pb::Message {
                routing: routing(1, pb::Backoff::Linear, &["nope"]),
                ..base.clone()
            },
            Code::InvalidArgument,
            "message.routing.fallback_agents[0]",
        ),
        (
            pb::Message {
                routing: Some(pb::Routing {
                    delivery_mode: 7,
                    ..Default::default()
                }),
                ..base.clone()
            },
            Code::InvalidArgument,
            "message.routing.delivery_mode",
        ),
        (
            pb::Message {
                in_reply_to: "ok".into(),
                ..base.clone()
            },
            Code::InvalidArgument,
            "message.in_reply_to",
        ),
        (
            pb::Message {
                timestamp: Some(prost_types::Timestamp { seconds: 1, nanos: -1 }),
                ..base.clone()
            },
            Code::InvalidArgument,
            "message.timestamp",
        ),
        (
            message("ghost", ORCHESTRATOR, "codex://ghost"),
            Code::NotFound,
            "agent codex://ghost is not registered",
        ),
    ];
    for (bad, code, needle) in cases {
        assert_status(send(&mut messages, bad).await, code, needle);
    }
    assert_status(
        messages.send_message(pb::SendMessageRequest { message: None }).await,
        Code::InvalidArgument,
        "message",
    );
    assert_status(
        messages
            .receive_messages(pb::ReceiveMessagesRequest {
                agent_id: "codex://ghost".into(),
                max_in_flight: 0,
            })
            .await,
        Code::NotFound,
        "not registered",
    );
    assert_status(
        messages
            .receive_messages(pb::ReceiveMessagesRequest {
                agent_id: "ghost".into(),
                max_in_flight: 0,
            })
            .await,
        Code::InvalidArgument,
        "agent_id",
    );
    assert_status(
        messages
            .ack_message(pb::AckMessageRequest {
                agent_id: BACKEND.into(),
                message_id: "missing".into(),
            })
            .await,
        Code::NotFound,
        "message missing",
    );
    assert_status(
        messages
            .get_message(pb::GetMessageRequest {
                message_id: "missing".into(),
            })
            .await,
        Code::NotFound,
        "missing",
    );
    send(&mut messages, base).await.unwrap();
    // Someone else's message cannot be acked; one's own can, even before
    // this server delivered it (after a restart forgot its delivery, say).
    assert_status(
        messages
            .ack_message(pb::AckMessageRequest {
                agent_id: FRONTEND.into(),
                message_id: "ok".into(),
            })
            .await,
        Code::FailedPrecondition,
        "addressed to opencode://backend",
    );
    assert_eq!(ack(&mut messages, BACKEND, "ok").await, pb::MessageState::Acked);
    // Server-filled fields.
    let anonymous = send(
        &mut messages,
        pb::Message {
            message_id: String::new(),
            ..message("", ORCHESTRATOR, FRONTEND)
        },
    )
    .await
    .unwrap();
    assert!(anonymous.message_id.starts_with("msg_"), "{}", anonymous.message_id);
    assert!(
        status_of(&mut messages, &anonymous.message_id)
            .await
            .message
            .unwrap()
            .timestamp
            .is_some()
    );
}

fn event_of(response: pb::WatchSessionsResponse) -> Option<pb::SessionEvent> {
    match response.kind {
        Some(pb::watch_sessions_response::Kind::Event(event)) => Some(event),
        _ => None,
    }
}

#[tokio::test]
async fn task_requests_in_sessions_become_tasks_with_events() {
    let (bus, _agents, mut messages) = bus_with_agents(&["--ack-timeout", "200ms"]).await;
    let mut sessions = bus.sessions().await;
    sessions
        .create_session(pb::CreateSessionRequest {
            session_id: "sess_tasks".into(),
            orchestrator: ORCHESTRATOR.into(),
            participants: vec![spec(BACKEND, "implementer")],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut watch = sessions
        .watch_sessions(pb::WatchSessionsRequest {
            session_ids: vec!["sess_tasks".into()],
            event_types: vec![
                pb::SessionEventType::TaskDelegated as i32,
                pb::SessionEventType::TaskUpdated as i32,
            ],
            after_sequence: None,
        })
        .await
        .unwrap()
        .into_inner();
    let in_session = |mut m: pb::Message| {
        m.sender.as_mut().unwrap().session_id = "sess_tasks".into();
        m
    };
    let mut request = in_session(message("task_impl_backend", ORCHESTRATOR, BACKEND));
    request.task_id = "impl-1".into();
    send(&mut messages, request).await.unwrap();
    // Skips heartbeats (a live watch starts with one).
    let mut next_event = async || loop {
        let item = timeout(Duration::from_secs(5), watch.message()).await.unwrap().unwrap();
        if let Some(event) = item.and_then(event_of) {
            return event;
        }
    };
    let delegated = next_event().await;
    assert_eq!(
        (delegated.r#type(), delegated.task_id.as_str()),
        (pb::SessionEventType::TaskDelegated, "impl-1")
    );
    let task = &delegated.session.as_ref().unwrap().tasks[0];
    assert_eq!(
        (task.assignee.as_str(), task.state()),
        (BACKEND, pb::TaskState::Delegated)
    );

    let mut status = in_session(message("status-1", BACKEND, ORCHESTRATOR));
    status.message_type = pb::MessageType::StatusUpdate as i32;
    status.in_reply_to = "task_impl_backend".into();
    send(&mut messages, status).await.unwrap();
    let working = next_event().await;
    assert_eq!(
        working.session.as_ref().unwrap().tasks[0].state(),
        pb::TaskState::Working
    );

    let mut response = in_session(message("result-1", BACKEND, ORCHESTRATOR));
    response.message_type = pb::MessageType::TaskResponse as i32;
    response.task_id = "impl-1".into();
    send(&mut messages, response).await.unwrap();
    let completed = next_event().await;
    let task = &completed.session.as_ref().unwrap().tasks[0];
    assert_eq!(task.state(), pb::TaskState::Completed);
    let result = task.last_payload.as_ref().unwrap();
    assert!(matches!(&result.kind, Some(prost_types::value::Kind::StructValue(s)) if json(s)["id"] == "result-1"));

    // A large result stays with its message; the task keeps a note.
    let mut big_request = in_session(message("big-task", ORCHESTRATOR, BACKEND));
    big_request.task_id = "big".into();
    send(&mut messages, big_request).await.unwrap();
    assert_eq!(next_event().await.r#type(), pb::SessionEventType::TaskDelegated);
    let mut big = in_session(message("big-result", BACKEND, ORCHESTRATOR));
    big.message_type = pb::MessageType::TaskResponse as i32;
    big.task_id = "big".into();
    big.payload = Some(prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue("r".repeat(200_000))),
    });
    send(&mut messages, big).await.unwrap();
    let completed = next_event().await;
    let task = completed
        .session
        .unwrap()
        .tasks
        .into_iter()
        .find(|t| t.task_id == "big")
        .unwrap();
    assert_eq!(task.state(), pb::TaskState::Completed);
    match task.last_payload.unwrap().kind {
        Some(prost_types::value::Kind::StructValue(note)) => {
            assert_eq!(json(&note)["truncated"], true);
            assert_eq!(json(&note)["message_id"], "big-result");
        }
        other => panic!("expected a truncation note, got {other:?}"),
    }

    // A request that times out marks its task timed out.
    let mut doomed = in_session(message("doomed", ORCHESTRATOR, BACKEND));
    doomed.routing = Some(pb::Routing {
        timeout: Some(prost_types::Duration {
            seconds: 0,
            nanos: 300_000_000,
        }),
        ..Default::default()
    });
    send(&mut messages, doomed).await.unwrap();
    assert_eq!(next_event().await.r#type(), pb::SessionEventType::TaskDelegated);
    let timed_out = next_event().await;
    assert_eq!(timed_out.task_id, "doomed");
    let session = timed_out.session.unwrap();
    assert_eq!(
        session.tasks.iter().find(|t| t.task_id == "doomed").unwrap().state(),
        pb::TaskState::TimedOut
    );

    // Session rules: registered agents outside the session, unknown or ended sessions.
    assert_status(
        send(&mut messages, in_session(message("x1", ORCHESTRATOR, FRONTEND))).await,
        Code::FailedPrecondition,
        "recipient codex://frontend is not an active participant",
    );
    assert_status(
        send(&mut messages, in_session(message("x2", FRONTEND, BACKEND))).await,
        Code::FailedPrecondition,
        "session sess_tasks does not exist or codex://frontend takes no part in it",
    );
    let mut elsewhere = message("x3", ORCHESTRATOR, BACKEND);
    elsewhere.sender.as_mut().unwrap().session_id = "sess_missing".into();
    assert_status(
        send(&mut messages, elsewhere).await,
        Code::FailedPrecondition,
        "session sess_missing does not exist",
    );
    sessions
        .complete_session(pb::CompleteSessionRequest {
            session_id: "sess_tasks".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_status(
        send(&mut messages, in_session(message("x4", ORCHESTRATOR, BACKEND))).await,
        Code::FailedPrecondition,
        "completed",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_messages_survive_kill_9_and_are_delivered_after_restart() {
    let (mut bus, _agents, _) = bus_with_agents(&[]).await;
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut senders = Vec::new();
    for sender in 0..4 {
        let mut client = bus.messages().await;
        let accepted = accepted.clone();
        senders.push(tokio::spawn(async move {
            for i in 0.. {
                let id = format!("s{sender}-{i}");
                if send(&mut client, message(&id, ORCHESTRATOR, BACKEND)).await.is_err() {
                    return;
                }
                accepted.lock().unwrap().push(id);
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while accepted.lock().unwrap().len() < 200 {
        assert!(Instant::now() < deadline, "load did not get going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bus.signal(libc::SIGKILL);
    assert!(bus.wait_exit(Duration::from_secs(5)).await.is_some());
    for sender in senders {
        timeout(Duration::from_secs(30), sender)
            .await
            .expect("sender hung")
            .unwrap();
    }
    let accepted: std::collections::HashSet<String> = accepted.lock().unwrap().drain(..).collect();

    let restarted = Bus::start_in(&bus.data_dir, &[]).await;
    let mut messages = restarted.messages().await;
    let mut backend = inbox(&mut messages, BACKEND).await;
    let mut delivered = std::collections::HashSet::new();
    loop {
        match timeout(Duration::from_secs(2), backend.message()).await {
            Ok(Ok(Some(pb::ReceiveMessagesResponse {
                kind: Some(Kind::Delivery(d)),
            }))) => {
                let id = id_of(&d).to_string();
                ack(&mut messages, BACKEND, &id).await;
                delivered.insert(id);
            }
            Ok(Ok(Some(_))) => continue,
            _ => break,
        }
    }
    let lost: Vec<&String> = accepted.difference(&delivered).collect();
    eprintln!(
        "{} accepted before kill -9, {} delivered after restart",
        accepted.len(),
        delivered.len()
    );
    assert!(
        lost.is_empty(),
        "{} accepted messages lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

#[tokio::test]
async fn idle_inboxes_get_heartbeats_with_their_depth() {
    let (_bus, _agents, mut messages) = bus_with_agents(&["--store", "memory", "--heartbeat-interval", "200ms"]).await;
    let mut backend = inbox(&mut messages, BACKEND).await;
    send(&mut messages, message("held", ORCHESTRATOR, BACKEND))
        .await
        .unwrap();
    // Delivered but not acked: still counted in the depth.
    next_delivery(&mut backend, Duration::from_secs(5)).await;
    let started = Instant::now();
    let beat = match timeout(Duration::from_secs(3), backend.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .kind
    {
        Some(Kind::Heartbeat(beat)) => beat,
        other => panic!("expected a heartbeat, got {other:?}"),
    };
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(beat.inbox_depth, 1);
    assert!(beat.timestamp.is_some());
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn the_senders_trace_context_reaches_the_recipient_from_metadata_headers_or_the_message() {
    let (bus, _agents, mut messages) = bus_with_agents(&[]).await;
    let mut backend = inbox(&mut messages, BACKEND).await;

    // From gRPC metadata, as an OpenTelemetry-instrumented client sends it.
    let mut request = tonic::Request::new(pb::SendMessageRequest {
        message: Some(message("traced-grpc", ORCHESTRATOR, BACKEND)),
    });
    request
        .metadata_mut()
        .insert("traceparent", TRACEPARENT.parse().unwrap());
    request
        .metadata_mut()
        .insert("tracestate", "congo=t61rcWkgMzE".parse().unwrap());
    messages.send_message(request).await.unwrap();
    let delivered = next_delivery(&mut backend, Duration::from_secs(5))
        .await
        .message
        .unwrap();
    let trace = delivered.trace_context.expect("the delivery carries the trace");
    assert_eq!(trace.traceparent, TRACEPARENT);
    assert_eq!(trace.tracestate, "congo=t61rcWkgMzE");

    // From HTTP headers; kept with the stored message.
    let http = reqwest::Client::new();
    let sent: serde_json::Value = http
        .post(format!("{}/messages/send", bus.url()))
        .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .json(&j!({"message_id": "traced-http", "sender": {"agent_id": ORCHESTRATOR},
                   "recipient": {"agent_id": BACKEND}, "message_type": "task_request"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sent["success"], true, "{sent}");
    let delivered = next_delivery(&mut backend, Duration::from_secs(5))
        .await
        .message
        .unwrap();
    assert_eq!(
        delivered.trace_context.unwrap().traceparent,
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    let stored: serde_json::Value = http
        .get(format!("{}/messages/traced-http", bus.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = stored.to_string();
    assert!(text.contains("0af7651916cd43dd8448eb211c80319c"), "{text}");

    // A context set on the message wins over the call's; a bad one is refused.
    let mut explicit = message("traced-field", ORCHESTRATOR, BACKEND);
    explicit.trace_context = Some(pb::TraceContext {
        traceparent: TRACEPARENT.into(),
        tracestate: String::new(),
    });
    let mut request = tonic::Request::new(pb::SendMessageRequest {
        message: Some(explicit),
    });
    request.metadata_mut().insert(
        "traceparent",
        "00-11111111111111111111111111111111-2222222222222222-01"
            .parse()
            .unwrap(),
    );
    messages.send_message(request).await.unwrap();
    let delivered = next_delivery(&mut backend, Duration::from_secs(5))
        .await
        .message
        .unwrap();
    assert_eq!(delivered.trace_context.unwrap().traceparent, TRACEPARENT);
    let mut bad = message("traced-bad", ORCHESTRATOR, BACKEND);
    bad.trace_context = Some(pb::TraceContext {
        traceparent: "00-not-a-trace-01".into(),
        tracestate: String::new(),
    });
    assert_status(
        send(&mut messages, bad).await,
        Code::InvalidArgument,
        "message.trace_context.traceparent",
    );

    // A malformed header is ignored, as W3C asks of a receiver.
    let mut request = tonic::Request::new(pb::SendMessageRequest {
        message: Some(message("untraced", ORCHESTRATOR, BACKEND)),
    });
    request.metadata_mut().insert("traceparent", "garbage".parse().unwrap());
    messages.send_message(request).await.unwrap();
    let delivered = next_delivery(&mut backend, Duration::from_secs(5))
        .await
        .message
        .unwrap();
    assert_eq!(delivered.trace_context, None);
}
