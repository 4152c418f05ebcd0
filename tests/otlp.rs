//! Traces over OTLP: a small OTLP trace receiver stands in for the
//! collector; the bus exports to it with `--otlp-endpoint`. The sender's
//! call span and the recipient's delivery span are in the sender's trace.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentbus::pb;
use agentbus::pb::receive_messages_response::Kind;
use common::{Agents, Bus};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::json as j;
use tokio::time::timeout;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Streaming;

const SENDER: &str = "claude-code://orchestrator";
const RECIPIENT: &str = "opencode://backend";

/// The sender's trace over gRPC and over HTTP, and the recipient's own
/// trace for its inbox call, which deliveries must not join.
const GRPC_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const GRPC_PARENT: &str = "00f067aa0ba902b7";
const HTTP_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const HTTP_PARENT: &str = "b7ad6b7169203331";
const INBOX_TRACE: &str = "11111111111111111111111111111111";

/// An OTLP/gRPC trace receiver on 127.0.0.1:0 that keeps what it gets.
#[derive(Clone, Default)]
struct Receiver {
    requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.requests.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    /// Serves until the test ends; returns the receiver and its URL.
    async fn start() -> (Self, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let receiver = Self::default();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        (receiver, url)
    }

    fn spans(&self) -> Vec<Span> {
        let requests = self.requests.lock().unwrap();
        requests
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| s.spans.clone())
            .collect()
    }

    fn service_names(&self) -> Vec<String> {
        let requests = self.requests.lock().unwrap();
        requests
            .iter()
            .flat_map(|r| &r.resource_spans)
            .filter_map(|r| r.resource.as_ref())
            .flat_map(|r| &r.attributes)
            .filter(|a| a.key == "service.name")
            .filter_map(|a| text(a.value.as_ref()?.value.as_ref()?))
            .collect()
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| text(a.value.as_ref()?.value.as_ref()?))
}

/// The one span named `name` in `trace` about `message_id`; the panic
/// lists what was exported.
fn find<'a>(spans: &'a [Span], name: &str, trace: &str, message_id: &str) -> &'a Span {
    let found: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == name && attribute(s, "message_id").as_deref() == Some(message_id))
        .collect();
    let summary = || {
        spans
            .iter()
            .map(|s| {
                format!(
                    "{} trace={} parent={} message_id={:?}",
                    s.name,
                    hex(&s.trace_id),
                    hex(&s.parent_span_id),
                    attribute(s, "message_id")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        found.len(),
        1,
        "one {name} span of {message_id}; exported:\n{}",
        summary()
    );
    assert_eq!(
        hex(&found[0].trace_id),
        trace,
        "{name} of {message_id} is in the sender's trace; exported:\n{}",
        summary()
    );
    found[0]
}

async fn register(agents: &mut Agents, id: &str) {
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

fn message(id: &str) -> pb::Message {
    common::task_request(id, SENDER, RECIPIENT)
}

async fn next_delivery(inbox: &mut Streaming<pb::ReceiveMessagesResponse>) -> pb::Message {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let item = timeout(left, inbox.message()).await.expect("no delivery in time");
        match item.expect("stream error").expect("stream ended").kind {
            Some(Kind::Delivery(delivery)) => return delivery.message.unwrap(),
            _ => continue,
        }
    }
}

#[tokio::test]
async fn the_recipients_delivery_span_is_in_the_senders_trace() {
    let (receiver, url) = Receiver::start().await;
    let mut bus = Bus::start(&["--store", "memory", "--otlp-endpoint", &url]).await;
    let mut agents = bus.agents().await;
    register(&mut agents, SENDER).await;
    register(&mut agents, RECIPIENT).await;
    let mut messages = bus.messages().await;

    // The recipient's inbox call has a trace of its own.
    let mut receive = tonic::Request::new(pb::ReceiveMessagesRequest {
        agent_id: RECIPIENT.into(),
        max_in_flight: 0,
    });
    let inbox_parent = format!("00-{INBOX_TRACE}-2222222222222222-01");
    receive
        .metadata_mut()
        .insert("traceparent", inbox_parent.parse().unwrap());
    let mut inbox = messages.clone().receive_messages(receive).await.unwrap().into_inner();

    // Sent over gRPC with the sender's traceparent in the metadata.
    let mut send = tonic::Request::new(pb::SendMessageRequest {
        message: Some(message("traced-grpc")),
    });
    let traceparent = format!("00-{GRPC_TRACE}-{GRPC_PARENT}-01");
    send.metadata_mut().insert("traceparent", traceparent.parse().unwrap());
    messages.send_message(send).await.unwrap();
    assert_eq!(next_delivery(&mut inbox).await.message_id, "traced-grpc");

    // Sent over HTTP with the header.
    let sent: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/messages/send", bus.url()))
        .header("traceparent", format!("00-{HTTP_TRACE}-{HTTP_PARENT}-01"))
        .json(&j!({"message_id": "traced-http", "sender": {"agent_id": SENDER},
                   "recipient": {"agent_id": RECIPIENT}, "message_type": "task_request"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sent["success"], true, "{sent}");
    assert_eq!(next_delivery(&mut inbox).await.message_id, "traced-http");

    // A graceful stop flushes the spans (the batch's delay is 5 s).
    bus.signal(libc::SIGTERM);
    let status = bus.wait_exit(Duration::from_secs(20)).await.expect("the bus stops");
    assert!(status.success(), "{status}\n{}", bus.log());
    let spans = receiver.spans();
    assert!(
        receiver.service_names().iter().all(|name| name == "agentbus"),
        "{:?}",
        receiver.service_names()
    );

    // The sender's call: in its trace, under its span, naming the message.
    let send = find(
        &spans,
        "agentbus.v1.MessageService/SendMessage",
        GRPC_TRACE,
        "traced-grpc",
    );
    assert_eq!(hex(&send.parent_span_id), GRPC_PARENT);
    assert_eq!(attribute(send, "agent_id").as_deref(), Some(SENDER));
    // The delivery: in the trace stored with the message, not the inbox's.
    let delivery = find(&spans, "deliver", GRPC_TRACE, "traced-grpc");
    assert_eq!(hex(&delivery.parent_span_id), GRPC_PARENT);
    assert_eq!(attribute(delivery, "agent_id").as_deref(), Some(RECIPIENT));

    let send = find(&spans, "POST /messages/send", HTTP_TRACE, "traced-http");
    assert_eq!(hex(&send.parent_span_id), HTTP_PARENT);
    let delivery = find(&spans, "deliver", HTTP_TRACE, "traced-http");
    assert_eq!(hex(&delivery.parent_span_id), HTTP_PARENT);

    // The inbox call itself continues the recipient's trace.
    let inbox_call = spans
        .iter()
        .find(|s| s.name == "agentbus.v1.MessageService/ReceiveMessages")
        .expect("a ReceiveMessages span");
    assert_eq!(hex(&inbox_call.trace_id), INBOX_TRACE);
    assert_eq!(attribute(inbox_call, "agent_id").as_deref(), Some(RECIPIENT));
}

#[tokio::test]
async fn an_unreachable_collector_costs_only_the_spans() {
    // Nothing listens there: refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut bus = Bus::start(&["--store", "memory", "--otlp-endpoint", &url]).await;
    let mut agents = bus.agents().await;
    register(&mut agents, SENDER).await;
    register(&mut agents, RECIPIENT).await;
    let mut messages = bus.messages().await;
    let mut inbox = messages
        .clone()
        .receive_messages(pb::ReceiveMessagesRequest {
            agent_id: RECIPIENT.into(),
            max_in_flight: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut send = tonic::Request::new(pb::SendMessageRequest {
        message: Some(message("untraced")),
    });
    let traceparent = format!("00-{GRPC_TRACE}-{GRPC_PARENT}-01");
    send.metadata_mut().insert("traceparent", traceparent.parse().unwrap());
    messages.send_message(send).await.unwrap();
    assert_eq!(next_delivery(&mut inbox).await.message_id, "untraced");

    bus.signal(libc::SIGTERM);
    let status = bus.wait_exit(Duration::from_secs(20)).await.expect("the bus stops");
    assert!(status.success(), "{status}\n{}", bus.log());
    let log = bus.log();
    assert!(log.contains("cannot export spans over OTLP"), "{log}");
}

#[tokio::test]
async fn a_collector_url_is_checked_at_start() {
    let temp = tempfile::tempdir().unwrap();
    let error = Bus::try_start_in(temp.path(), &["--otlp-endpoint", "localhost:4317"])
        .err()
        .expect("the bus refuses the URL");
    assert!(error.contains("--otlp-endpoint"), "{error}");
    assert!(error.contains("http://localhost:4317"), "{error}");
}
