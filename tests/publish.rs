//! SendMessages and PublishMessages, black box: one result per message in
//! request order, per-message errors beside successes, idempotent resends,
//! the batch limits, a slow reader, durability across kill -9, the HTTP
//! batch route and tokens inside a batch.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agentbus::pb;
use agentbus::pb::message_service_client::MessageServiceClient;
use common::{ApiKey, Bus, Messages, assert_status, object};
use serde_json::{Value as Json, json};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

const ORCHESTRATOR: &str = "claude-code://orchestrator";
const BACKEND: &str = "opencode://backend";
const FRONTEND: &str = "codex://frontend";

async fn register(bus: &Bus, ids: &[&str]) {
    let mut agents = bus.agents().await;
    for id in ids {
        let agent = pb::AgentDescriptor {
            agent_id: (*id).into(),
            ..Default::default()
        };
        agents
            .register_agent(pb::RegisterAgentRequest {
                agent: Some(agent),
                update: true,
            })
            .await
            .unwrap();
    }
}

async fn bus_with_agents(args: &[&str]) -> Bus {
    let bus = Bus::start(args).await;
    register(&bus, &[ORCHESTRATOR, BACKEND, FRONTEND]).await;
    bus
}

fn message(id: &str, from: &str, to: &str) -> pb::Message {
    pb::Message {
        payload: Some(prost_types::Value {
            kind: Some(prost_types::value::Kind::StructValue(object(json!({"id": id})))),
        }),
        ..common::task_request(id, from, to)
    }
}

fn with_payload(mut message: pb::Message, bytes: usize) -> pb::Message {
    let data = json!({"data": "x".repeat(bytes)});
    message.payload = Some(prost_types::Value {
        kind: Some(prost_types::value::Kind::StructValue(object(data))),
    });
    message
}

async fn send_batch(messages: &mut Messages, batch: Vec<pb::Message>) -> Result<Vec<pb::SendResult>, tonic::Status> {
    messages
        .send_messages(pb::SendMessagesRequest { messages: batch })
        .await
        .map(|r| r.into_inner().results)
}

/// (code name, message id) of each result.
fn outline(results: &[pb::SendResult]) -> Vec<(&str, &str)> {
    results
        .iter()
        .map(|r| (r.code_name.as_str(), r.message_id.as_str()))
        .collect()
}

async fn state_of(messages: &mut Messages, id: &str) -> Option<pb::MessageStatus> {
    match messages
        .get_message(pb::GetMessageRequest { message_id: id.into() })
        .await
    {
        Ok(response) => response.into_inner().status,
        Err(status) if status.code() == Code::NotFound => None,
        Err(status) => panic!("GetMessage {id}: {status}"),
    }
}

#[tokio::test]
async fn send_messages_answers_each_message_in_order_and_one_failure_fails_only_itself() {
    let bus = bus_with_agents(&["--store", "memory", "--inbox-limit", "2"]).await;
    let mut messages = bus.messages().await;
    messages
        .send_message(pb::SendMessageRequest {
            message: Some(message("earlier", ORCHESTRATOR, BACKEND)),
        })
        .await
        .unwrap();
    let mut sync = message("sync", ORCHESTRATOR, BACKEND);
    sync.routing = Some(pb::Routing {
        delivery_mode: pb::DeliveryMode::Sync as i32,
        ..Default::default()
    });
    let mut changed = message("earlier", ORCHESTRATOR, BACKEND);
    changed.payload = None;
    let mut no_type = message("no-type", ORCHESTRATOR, FRONTEND);
    no_type.message_type = 0;
    let batch = vec![
        message("f1", ORCHESTRATOR, FRONTEND),
        message("ghost", ORCHESTRATOR, "codex://ghost"),
        no_type,
        sync,
        // The same message again: answered from the first send.
        message("earlier", ORCHESTRATOR, BACKEND),
        // The same id with other content.
        changed,
        message("f2", ORCHESTRATOR, FRONTEND),
        // FRONTEND's inbox holds 2.
        message("f3", ORCHESTRATOR, FRONTEND),
        // A message without an id gets the server's.
        message("", ORCHESTRATOR, BACKEND),
    ];
    let results = send_batch(&mut messages, batch).await.unwrap();
    let answered = outline(&results);
    assert_eq!(answered.len(), 9, "{results:?}");
    assert_eq!(answered[0], ("OK", "f1"));
    assert_eq!(answered[1], ("NOT_FOUND", "ghost"));
    assert_eq!(answered[2], ("INVALID_ARGUMENT", "no-type"));
    assert_eq!(answered[3], ("INVALID_ARGUMENT", "sync"));
    assert_eq!(answered[4], ("OK", "earlier"));
    assert_eq!(answered[5], ("ALREADY_EXISTS", "earlier"));
    assert_eq!(answered[6], ("OK", "f2"));
    assert_eq!(answered[7], ("RESOURCE_EXHAUSTED", "f3"));
    assert_eq!(answered[8].0, "OK");
    assert!(answered[8].1.starts_with("msg_"), "{:?}", answered[8]);
    assert!(
        results[1].error.contains("codex://ghost is not registered"),
        "{}",
        results[1].error
    );
    assert!(results[2].error.contains("message_type"), "{}", results[2].error);
    assert!(
        results[3].error.contains("routing.delivery_mode") && results[3].error.contains("SendMessage"),
        "{}",
        results[3].error
    );
    assert!(results[7].error.contains("full"), "{}", results[7].error);
    for result in &results {
        assert_eq!(result.accepted, result.code == 0, "{result:?}");
        let names = [
            (0, "OK"),
            (3, "INVALID_ARGUMENT"),
            (5, "NOT_FOUND"),
            (6, "ALREADY_EXISTS"),
            (8, "RESOURCE_EXHAUSTED"),
        ];
        assert!(names.contains(&(result.code, result.code_name.as_str())), "{result:?}");
        if result.accepted {
            assert_eq!(result.state, pb::MessageState::Queued as i32, "{result:?}");
        }
    }
    for id in ["f1", "f2", "earlier", answered[8].1] {
        assert!(state_of(&mut messages, id).await.is_some(), "{id} was not stored");
    }
    for id in ["ghost", "no-type", "sync", "f3"] {
        assert!(state_of(&mut messages, id).await.is_none(), "{id} was stored");
    }
    // A resend of the whole batch: the stored ones answer as before.
    let again = send_batch(
        &mut messages,
        vec![
            message("f1", ORCHESTRATOR, FRONTEND),
            message("f2", ORCHESTRATOR, FRONTEND),
        ],
    )
    .await
    .unwrap();
    assert_eq!(outline(&again), [("OK", "f1"), ("OK", "f2")]);
}

#[tokio::test]
async fn batches_of_no_message_or_more_than_1000_are_refused() {
    let bus = bus_with_agents(&["--store", "memory"]).await;
    let mut messages = bus.messages().await;
    assert_status(
        send_batch(&mut messages, Vec::new()).await,
        Code::InvalidArgument,
        "messages: between 1 and 1000 messages, got 0",
    );
    let many = (0..1001)
        .map(|i| message(&format!("m{i}"), ORCHESTRATOR, BACKEND))
        .collect();
    assert_status(
        send_batch(&mut messages, many).await,
        Code::InvalidArgument,
        "between 1 and 1000 messages, got 1001",
    );
    assert!(state_of(&mut messages, "m0").await.is_none());
    let full = (0..1000)
        .map(|i| message(&format!("m{i}"), ORCHESTRATOR, BACKEND))
        .collect();
    let results = send_batch(&mut messages, full).await.unwrap();
    assert_eq!(results.len(), 1000);
    assert!(results.iter().all(|r| r.accepted));
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result.message_id, format!("m{i}"));
    }
}

/// Publishes `batch` on one stream, half-closes and reads every result.
async fn publish_all(messages: &mut Messages, batch: Vec<pb::Message>) -> Result<Vec<pb::SendResult>, tonic::Status> {
    let requests = tokio_stream::iter(
        batch
            .into_iter()
            .map(|m| pb::PublishMessagesRequest { message: Some(m) }),
    );
    let mut responses = messages.publish_messages(requests).await?.into_inner();
    let mut results = Vec::new();
    while let Some(response) = responses.message().await? {
        results.push(response.result.expect("a result"));
    }
    Ok(results)
}

#[tokio::test]
async fn publish_answers_in_request_order_and_ends_after_a_half_close() {
    let bus = bus_with_agents(&["--store", "memory"]).await;
    let mut messages = bus.messages().await;
    let batch: Vec<pb::Message> = (0..600)
        .map(|i| match i % 7 {
            3 => message(&format!("p{i}"), ORCHESTRATOR, "codex://ghost"),
            // A resend of an earlier message of the same stream.
            5 => message(&format!("p{}", i - 5), ORCHESTRATOR, BACKEND),
            _ => message(&format!("p{i}"), ORCHESTRATOR, BACKEND),
        })
        .collect();
    let expected: Vec<String> = batch.iter().map(|m| m.message_id.clone()).collect();
    let results = timeout(Duration::from_secs(60), publish_all(&mut messages, batch))
        .await
        .expect("the stream ended")
        .unwrap();
    assert_eq!(results.len(), 600);
    for (i, (result, id)) in results.iter().zip(&expected).enumerate() {
        assert_eq!(&result.message_id, id, "result {i} out of order");
        let want = if i % 7 == 3 { "NOT_FOUND" } else { "OK" };
        assert_eq!(result.code_name, want, "result {i}: {result:?}");
    }
    assert!(state_of(&mut messages, "p599").await.is_some());

    // An empty stream ends at once, OK.
    assert!(publish_all(&mut messages, Vec::new()).await.unwrap().is_empty());
}

#[tokio::test]
async fn publish_reads_ahead_a_bounded_window_when_the_client_reads_slowly() {
    let bus = bus_with_agents(&["--store", "memory", "--inbox-limit", "100000"]).await;
    // A small receive window: results the client leaves unread soon hold
    // the server back.
    let channel = Channel::from_shared(bus.url())
        .unwrap()
        .initial_stream_window_size(Some(16 * 1024))
        .initial_connection_window_size(Some(16 * 1024))
        .connect()
        .await
        .unwrap();
    let mut messages = MessageServiceClient::new(channel);
    const TOTAL: usize = 8000;
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = pulled.clone();
    let requests = tokio_stream::iter(0..TOTAL).map(move |i| {
        counter.fetch_add(1, Ordering::Relaxed);
        pb::PublishMessagesRequest {
            message: Some(with_payload(message(&format!("w{i}"), ORCHESTRATOR, BACKEND), 2048)),
        }
    });
    let mut responses = messages.publish_messages(requests).await.unwrap().into_inner();
    // Read nothing for a while: the server must stop reading.
    let mut last = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = pulled.load(Ordering::Relaxed);
        if now == last && now > 0 {
            break;
        }
        last = now;
    }
    let stalled_at = pulled.load(Ordering::Relaxed);
    eprintln!("the client's stream stalled after {stalled_at} of {TOTAL} messages");
    assert!(stalled_at < TOTAL / 2, "the server read {stalled_at} messages ahead");
    // Then read everything: all results, in order.
    let mut count = 0;
    while let Some(response) = timeout(Duration::from_secs(60), responses.message())
        .await
        .expect("results keep coming")
        .unwrap()
    {
        let result = response.result.unwrap();
        assert_eq!(result.message_id, format!("w{count}"));
        assert!(result.accepted, "{result:?}");
        count += 1;
    }
    assert_eq!(count, TOTAL);
}

#[tokio::test]
async fn published_results_are_durable_across_kill_9() {
    let mut bus = bus_with_agents(&[]).await;
    let mut messages = bus.messages().await;
    let (requests, incoming) = mpsc::channel(64);
    let mut responses = messages
        .publish_messages(ReceiverStream::new(incoming))
        .await
        .unwrap()
        .into_inner();
    let producer = tokio::spawn(async move {
        for i in 0.. {
            let request = pb::PublishMessagesRequest {
                message: Some(message(&format!("d{i}"), ORCHESTRATOR, BACKEND)),
            };
            if requests.send(request).await.is_err() {
                return;
            }
        }
    });
    let mut accepted = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while accepted.len() < 300 {
        assert!(Instant::now() < deadline, "the load did not get going");
        let result = responses.message().await.unwrap().unwrap().result.unwrap();
        assert!(result.accepted, "{result:?}");
        accepted.push(result.message_id);
    }
    // Killed with more in flight.
    bus.signal(libc::SIGKILL);
    assert!(bus.wait_exit(Duration::from_secs(5)).await.is_some());
    while let Ok(Some(response)) = responses.message().await {
        if let Some(result) = response.result.filter(|r| r.accepted) {
            accepted.push(result.message_id);
        }
    }
    producer.abort();

    let restarted = Bus::start_in(&bus.data_dir, &[]).await;
    let mut messages = restarted.messages().await;
    let mut lost = Vec::new();
    for id in &accepted {
        if state_of(&mut messages, id).await.is_none() {
            lost.push(id.clone());
        }
    }
    eprintln!("{} results before kill -9", accepted.len());
    assert!(
        lost.is_empty(),
        "{} accepted messages lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

#[tokio::test]
async fn publish_ends_with_unavailable_when_the_server_shuts_down() {
    let mut bus = bus_with_agents(&["--store", "memory"]).await;
    let mut messages = bus.messages().await;
    let (requests, incoming) = mpsc::channel(8);
    let mut responses = messages
        .publish_messages(ReceiverStream::new(incoming))
        .await
        .unwrap()
        .into_inner();
    let request = |id: &str| pb::PublishMessagesRequest {
        message: Some(message(id, ORCHESTRATOR, BACKEND)),
    };
    requests.send(request("before")).await.unwrap();
    let first = responses.message().await.unwrap().unwrap().result.unwrap();
    assert_eq!((first.code_name.as_str(), first.message_id.as_str()), ("OK", "before"));
    bus.signal(libc::SIGTERM);
    let end = timeout(Duration::from_secs(10), responses.message())
        .await
        .expect("the stream ended");
    assert_status(end, Code::Unavailable, "shutting down");
    assert!(bus.wait_exit(Duration::from_secs(10)).await.is_some());
}

#[tokio::test]
async fn the_http_batch_route_answers_one_result_per_message() {
    let bus = bus_with_agents(&["--store", "memory"]).await;
    let http = reqwest::Client::new();
    let post = |body: Json| http.post(format!("{}/messages/batch", bus.url())).json(&body).send();
    let one = |id: &str, to: &str| {
        json!({
            "message_id": id,
            "sender": {"agent_id": ORCHESTRATOR},
            "recipient": {"agent_id": to},
            "message_type": "task_request",
            "payload": {"n": 1},
        })
    };
    let response = post(json!({"messages": [one("h1", BACKEND), one("h2", "codex://ghost"), one("h3", FRONTEND)]}))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Json = response.json().await.unwrap();
    assert_eq!(body["success"], true, "{body}");
    let results = body["results"].as_array().unwrap();
    let outline: Vec<(&str, &str, bool)> = results
        .iter()
        .map(|r| {
            (
                r["code_name"].as_str().unwrap(),
                r["message_id"].as_str().unwrap(),
                r["accepted"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outline,
        [("OK", "h1", true), ("NOT_FOUND", "h2", false), ("OK", "h3", true)]
    );
    assert_eq!(results[0]["state"], "queued", "{body}");
    assert_eq!(results[1]["code"], 5, "{body}");

    let empty = post(json!({"messages": []})).await.unwrap();
    assert_eq!(empty.status(), 400);
    let body: Json = empty.json().await.unwrap();
    assert_eq!(body["code"], "INVALID_ARGUMENT", "{body}");
}

#[tokio::test]
async fn a_token_sends_only_as_its_own_agent_inside_a_batch() {
    const KEY: &str = "admin-s3cret";
    let bus = Bus::start(&["--store", "memory", "--api-key", KEY]).await;
    let admin = || ApiKey(Some(KEY.to_owned()));
    let mut agents = pb::agent_service_client::AgentServiceClient::with_interceptor(bus.channel().await, admin());
    for id in [ORCHESTRATOR, BACKEND] {
        let agent = pb::AgentDescriptor {
            agent_id: id.into(),
            ..Default::default()
        };
        agents
            .register_agent(pb::RegisterAgentRequest {
                agent: Some(agent),
                update: true,
            })
            .await
            .unwrap();
    }
    let token = agents
        .issue_agent_token(pb::IssueAgentTokenRequest {
            agent_id: ORCHESTRATOR.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let mut orchestrator = MessageServiceClient::with_interceptor(bus.channel().await, ApiKey(Some(token.clone())));
    let mut from_nobody = message("t3", "", BACKEND);
    from_nobody.sender = None;
    let batch = vec![
        message("t1", ORCHESTRATOR, BACKEND),
        message("t2", BACKEND, ORCHESTRATOR),
        from_nobody,
    ];
    let results = orchestrator
        .send_messages(pb::SendMessagesRequest {
            messages: batch.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(
        outline(&results),
        [("OK", "t1"), ("PERMISSION_DENIED", "t2"), ("OK", "t3")]
    );
    assert!(results[1].error.contains(BACKEND), "{}", results[1].error);

    // The same over a stream (resends of t1 and t3).
    let requests = tokio_stream::iter(
        batch
            .into_iter()
            .map(|m| pb::PublishMessagesRequest { message: Some(m) }),
    );
    let mut responses = orchestrator.publish_messages(requests).await.unwrap().into_inner();
    let mut streamed = Vec::new();
    while let Some(response) = responses.message().await.unwrap() {
        streamed.push(response.result.unwrap());
    }
    assert_eq!(
        outline(&streamed),
        [("OK", "t1"), ("PERMISSION_DENIED", "t2"), ("OK", "t3")]
    );

    // Without credentials the call itself is refused.
    let mut anonymous = MessageServiceClient::new(bus.channel().await);
    assert_status(
        anonymous
            .send_messages(pb::SendMessagesRequest {
                messages: vec![message("t4", ORCHESTRATOR, BACKEND)],
            })
            .await,
        Code::Unauthenticated,
        "",
    );
}
