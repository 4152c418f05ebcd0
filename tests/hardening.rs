//! Regression tests for the defects a black-box probe found (issue 16), each
//! against a real server on 127.0.0.1:0, and a table of malformed inputs over
//! both transports.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use agentbus::pb;
use common::{Bus, assert_status, object};
use prost::Message as _;
use reqwest::StatusCode;
use serde_json::{Value as Json, json};
use tokio_stream::StreamExt;
use tonic::Code;

const KEY: &str = "K";
const BIG: &str = "opencode://big";
const SENDER: &str = "claude-code://o";
const MIB: usize = 1024 * 1024;

fn keyed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("x-agent-api-key", KEY.parse().unwrap());
    request
}

async fn bus_with_big_agent(args: &[&str]) -> Bus {
    let mut all = vec!["--api-key", KEY];
    all.extend_from_slice(args);
    let bus = Bus::start(&all).await;
    let agent = pb::AgentDescriptor {
        agent_id: BIG.into(),
        ..Default::default()
    };
    bus.agents()
        .await
        .register_agent(keyed(pb::RegisterAgentRequest {
            agent: Some(agent),
            update: false,
        }))
        .await
        .expect("register");
    bus
}

fn text_message(id: &str, payload_len: usize) -> pb::Message {
    pb::Message {
        message_id: id.into(),
        sender: Some(pb::AgentRef {
            agent_id: SENDER.into(),
            ..Default::default()
        }),
        recipient: Some(pb::AgentRef {
            agent_id: BIG.into(),
            ..Default::default()
        }),
        message_type: pb::MessageType::TaskRequest as i32,
        payload: Some(prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue("p".repeat(payload_len))),
        }),
        ..Default::default()
    }
}

/// A message whose protobuf encoding is exactly `size` bytes.
fn message_of_size(id: &str, size: usize) -> pb::Message {
    let mut len = size - 200;
    loop {
        let message = text_message(id, len);
        match message.encoded_len() {
            n if n == size => return message,
            n if n < size => len += size - n,
            _ => len -= 1,
        }
    }
}

async fn send(bus: &Bus, message: pb::Message) -> Result<pb::SendMessageResponse, tonic::Status> {
    let mut client = bus.messages().await.max_encoding_message_size(64 * MIB);
    client
        .send_message(keyed(pb::SendMessageRequest { message: Some(message) }))
        .await
        .map(tonic::Response::into_inner)
}

// ---- D1: whatever is accepted is deliverable ---------------------------

#[tokio::test]
async fn d1_messages_are_sized_as_delivered_and_never_block_an_inbox() {
    let bus = bus_with_big_agent(&[]).await;
    // The probe's message: 4,194,200 bytes of payload, under the request
    // limit but too large for the delivery wrapped around it.
    assert_status(
        send(&bus, text_message("big1", 4_194_200)).await,
        Code::InvalidArgument,
        "message: encodes to",
    );
    // The largest message accepted: 4 MiB less the 4 KiB envelope.
    let limit = 4 * MIB - 4096;
    assert_status(
        send(&bus, message_of_size("over", limit + 1)).await,
        Code::InvalidArgument,
        &format!("a message may take at most {limit}"),
    );
    send(&bus, message_of_size("fits", limit))
        .await
        .expect("largest message");
    let mut behind = text_message("behind", 10);
    behind.priority = pb::Priority::Low as i32;
    send(&bus, behind).await.expect("small message behind it");

    // A client with gRPC's default 4 MiB receive limit (grpcurl's too) gets
    // both, and reads the large one back.
    let mut messages = bus.messages().await;
    let mut inbox = messages
        .receive_messages(keyed(pb::ReceiveMessagesRequest {
            agent_id: BIG.into(),
            max_in_flight: 0,
        }))
        .await
        .expect("inbox")
        .into_inner();
    let mut delivered = Vec::new();
    while delivered.len() < 2 {
        let item = tokio::time::timeout(Duration::from_secs(10), inbox.next())
            .await
            .expect("delivery in time")
            .expect("stream open")
            .expect("delivery decodes within 4 MiB");
        if let Some(pb::receive_messages_response::Kind::Delivery(delivery)) = item.kind {
            delivered.push(delivery.message.unwrap().message_id);
        }
    }
    assert_eq!(delivered, ["fits", "behind"]);
    let status = messages
        .get_message(keyed(pb::GetMessageRequest {
            message_id: "fits".into(),
        }))
        .await
        .expect("GetMessage of the largest message")
        .into_inner();
    let read_back = status.status.unwrap().message.unwrap();
    assert_eq!(read_back.payload, message_of_size("fits", limit).payload);
}

#[tokio::test]
async fn d1_json_that_grows_as_protobuf_is_refused_over_http() {
    let bus = bus_with_big_agent(&[]).await;
    // 1 MiB of JSON `[1,1,...]` takes 11 bytes per item as protobuf Values.
    let items = vec![json!(1); 520_000];
    let body = json!({"sender": {"agent_id": SENDER}, "recipient": {"agent_id": BIG},
                      "message_type": "task_request", "payload": items});
    let response = reqwest::Client::new()
        .post(format!("{}/messages/send", bus.url()))
        .header("x-agent-api-key", KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let answer: Json = response.json().await.unwrap();
    assert_eq!(answer["code"], "INVALID_ARGUMENT", "{answer}");
    assert!(
        answer["error"].as_str().unwrap().starts_with("message: encodes to"),
        "{answer}"
    );
}

#[tokio::test]
async fn d1_session_lists_are_paged_to_fit_one_answer() {
    let bus = Bus::start(&[
        "--api-key",
        KEY,
        "--store",
        "memory",
        "--max-message-bytes",
        "1048576",
        "--max-context-bytes",
        "524288",
    ])
    .await;
    let mut sessions = bus.sessions().await.max_decoding_message_size(MIB);
    for i in 0..5 {
        sessions
            .create_session(keyed(pb::CreateSessionRequest {
                session_id: format!("big{i}"),
                orchestrator: SENDER.into(),
                shared_context: Some(object(json!({"blob": "x".repeat(400_000)}))),
                ..Default::default()
            }))
            .await
            .expect("a session of 400 kB");
    }
    // Five such sessions do not fit one 1 MiB answer: pages stop short of
    // the limit, and every session is listed once.
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = sessions
            .list_sessions(keyed(pb::ListSessionsRequest {
                page_token: page_token.clone(),
                ..Default::default()
            }))
            .await
            .expect("a page within 1 MiB")
            .into_inner();
        assert!(!page.sessions.is_empty());
        seen.extend(page.sessions.into_iter().map(|s| s.session_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen, ["big0", "big1", "big2", "big3", "big4"]);
}

#[tokio::test]
async fn d1_agent_lists_are_paged_to_fit_one_answer() {
    let bus = Bus::start(&[
        "--store",
        "memory",
        "--max-message-bytes",
        "1048576",
        "--max-context-bytes",
        "524288",
    ])
    .await;
    let mut agents = bus.agents().await.max_decoding_message_size(MIB);
    let list = |tag: char| {
        (0..256)
            .map(|i| format!("{tag}{i}{}", "x".repeat(200)))
            .collect::<Vec<_>>()
    };
    let capabilities = pb::AgentCapabilities {
        input_types: list('i'),
        output_types: list('o'),
        languages: list('l'),
        tools: list('t'),
        ..Default::default()
    };
    for i in 0..8 {
        agents
            .register_agent(pb::RegisterAgentRequest {
                agent: Some(pb::AgentDescriptor {
                    agent_id: format!("opencode://wide{i}"),
                    capabilities: Some(capabilities.clone()),
                    ..Default::default()
                }),
                update: false,
            })
            .await
            .expect("an agent of 200 kB");
    }
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = agents
            .list_agents(pb::ListAgentsRequest {
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .expect("a page within 1 MiB")
            .into_inner();
        assert!(!page.agents.is_empty() && page.agents.len() < 8);
        seen.extend(page.agents.into_iter().map(|a| a.descriptor.unwrap().agent_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen.len(), 8);
}

// ---- D2: every gateway error is JSON ------------------------------------

#[tokio::test]
async fn d2_paths_that_are_not_utf8_get_json_errors() {
    let bus = Bus::start(&["--api-key", KEY, "--store", "memory"]).await;
    let client = reqwest::Client::new();
    for path in [
        "/sessions/%ff%fe",
        "/agents/%FF%FE",
        "/agents/%FF%FE/messages",
        "/messages/%c3%28",
    ] {
        let response = client
            .get(format!("{}{path}", bus.url()))
            .header("x-agent-api-key", KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(response.headers()["content-type"], "application/json", "{path}");
        let answer: Json = response.json().await.unwrap();
        assert_eq!(
            (answer["success"].clone(), answer["code"].clone()),
            (json!(false), json!("INVALID_ARGUMENT")),
            "{path}: {answer}"
        );
        assert!(answer["error"].as_str().unwrap().contains("UTF-8"), "{answer}");
    }
}

// ---- D3: deep nesting over gRPC ------------------------------------------

fn nested(depth: usize) -> prost_types::Struct {
    let mut value = object(json!({"leaf": 1}));
    for _ in 0..depth {
        value = prost_types::Struct {
            fields: [(
                "a".to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StructValue(value)),
                },
            )]
            .into(),
        };
    }
    value
}

#[tokio::test]
async fn d3_deep_nesting_over_grpc_is_invalid_argument_naming_the_field() {
    let bus = bus_with_big_agent(&[]).await;
    for depth in [34, 40, 60, 200] {
        let session = pb::CreateSessionRequest {
            orchestrator: SENDER.into(),
            shared_context: Some(nested(depth)),
            ..Default::default()
        };
        assert_status(
            bus.sessions().await.create_session(keyed(session)).await,
            Code::InvalidArgument,
            "shared_context",
        );
        let mut message = text_message(&format!("deep{depth}"), 1);
        message.payload = Some(prost_types::Value {
            kind: Some(prost_types::value::Kind::StructValue(nested(depth))),
        });
        assert_status(send(&bus, message).await, Code::InvalidArgument, "payload");
    }
}

// ---- D4: values the README refuses are refused ---------------------------

#[tokio::test]
async fn d4_bad_durations_timestamps_encodings_and_weak_etags_are_refused() {
    let bus = bus_with_big_agent(&[]).await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: Vec<u8>, headers: &[(&str, &str)]| {
        let mut request = client
            .post(format!("{}{path}", bus.url()))
            .header("x-agent-api-key", KEY)
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    let message = |extra: Json| {
        let mut body = json!({"sender": {"agent_id": SENDER}, "recipient": {"agent_id": BIG},
                              "message_type": "task_request"});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body.to_string().into_bytes()
    };
    // (body, extra headers, status, code, part of the error)
    type Case<'a> = (Vec<u8>, Vec<(&'a str, &'a str)>, StatusCode, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            message(json!({"routing": {"timeout": 5}})),
            vec![],
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "routing.timeout: expected a duration string",
        ),
        (
            message(json!({"routing": {"timeout": "5 s"}})),
            vec![],
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "routing.timeout: expected a duration",
        ),
        (
            message(json!({"routing": {"timeout": "9223372036854775807s"}})),
            vec![],
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "outside 0s to 315576000000s",
        ),
        (
            message(json!({"timestamp": "2025-02-02T11:00:00+25:00"})),
            vec![],
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "is not an RFC 3339 timestamp",
        ),
        (
            message(json!({})),
            vec![("content-encoding", "gzip")],
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "cannot read the request body",
        ),
        (
            message(json!({})),
            vec![("content-encoding", "compress")],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "INVALID_ARGUMENT",
            "Content-Encoding \"compress\" is not supported",
        ),
    ];
    for (body, headers, status, code, needle) in cases {
        let response = post("/messages/send", body, &headers).await.unwrap();
        let got = response.status();
        let answer: Json = response.json().await.unwrap();
        assert_eq!((got, answer["code"].as_str().unwrap()), (status, code), "{answer}");
        assert!(answer["error"].as_str().unwrap().contains(needle), "{needle}: {answer}");
    }
    // The issue's reproducer, all defects in one request.
    let reproducer = br#"{"sender":{"agent_id":"claude-code://o"},"recipient":{"agent_id":"opencode://big"},"message_type":"task_request","routing":{"timeout":"9223372036854775807s"},"timestamp":"2025-02-02T11:00:00+25:00"}"#;
    let response = post("/messages/send", reproducer.to_vec(), &[("content-encoding", "gzip")])
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // gzip that is gzip is read as JSON.
    let zipped = gzip(&message(json!({"message_id": "zipped"})));
    let response = post("/messages/send", zipped, &[("content-encoding", "gzip")])
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{:?}", response.text().await);

    // If-Match compares strongly: a weak tag never matches.
    let session = post(
        "/sessions",
        json!({"orchestrator": SENDER}).to_string().into_bytes(),
        &[],
    )
    .await
    .unwrap()
    .json::<Json>()
    .await
    .unwrap();
    let id = session["session"]["session_id"].as_str().unwrap().to_owned();
    let path = format!("/sessions/{id}/complete");
    let weak = post(&path, b"{}".to_vec(), &[("if-match", "W/\"1\"")]).await.unwrap();
    assert_eq!(weak.status(), StatusCode::PRECONDITION_FAILED);
    let answer: Json = weak.json().await.unwrap();
    assert_eq!(answer["code"], "FAILED_PRECONDITION", "{answer}");
    let strong = post(&path, b"{}".to_vec(), &[("if-match", "\"1\"")]).await.unwrap();
    assert_eq!(strong.status(), StatusCode::OK);

    // The same limits over gRPC, where protobuf carries the numbers.
    let mut too_long = text_message("long", 1);
    too_long.routing = Some(pb::Routing {
        timeout: Some(prost_types::Duration {
            seconds: 315_576_000_001,
            nanos: 0,
        }),
        ..Default::default()
    });
    assert_status(
        send(&bus, too_long).await,
        Code::InvalidArgument,
        "routing.timeout: 315576000001s is beyond protobuf Duration's maximum",
    );
    let mut far = text_message("far", 1);
    far.timestamp = Some(prost_types::Timestamp {
        seconds: 253_402_300_800,
        nanos: 0,
    });
    assert_status(
        send(&bus, far).await,
        Code::InvalidArgument,
        "timestamp: 253402300800s is outside",
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

// ---- D5: credentials and connections ------------------------------------

#[tokio::test]
async fn d5_any_invalid_credential_fails_the_call() {
    let bus = Bus::start(&["--api-key", KEY, "--store", "memory"]).await;
    let response = reqwest::Client::new()
        .get(format!("{}/agents", bus.url()))
        .header("x-agent-api-key", KEY)
        .header("authorization", "Bearer wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let answer: Json = response.json().await.unwrap();
    assert_eq!(answer["code"], "UNAUTHENTICATED");

    let mut request = keyed(pb::ListAgentsRequest::default());
    request
        .metadata_mut()
        .insert("authorization", "Bearer wrong".parse().unwrap());
    assert_status(
        bus.agents().await.list_agents(request).await,
        Code::Unauthenticated,
        "invalid API key",
    );
    let mut request = tonic::Request::new(pb::ListAgentsRequest::default());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {KEY}").parse().unwrap());
    bus.agents()
        .await
        .list_agents(request)
        .await
        .expect("Bearer alone is fine");

    // Credentials are checked from the metadata, before the message is read:
    // without a key even a message that does not decode is UNAUTHENTICATED.
    let mut grpc = tonic::client::Grpc::new(bus.channel().await);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/agentbus.v1.MessageService/SendMessage");
    let anonymous = grpc.unary(tonic::Request::new(vec![0x0f, 0x01]), path, RawCodec).await;
    assert_status(anonymous, Code::Unauthenticated, "missing API key");
}

/// A raw HTTP/1.1 request on a new connection; the head of the answer.
fn raw_http(bus: &Bus, request: &[u8], wait: Duration) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(bus.addr)?;
    stream.set_read_timeout(Some(wait))?;
    stream.write_all(request)?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test]
async fn d5_an_oversized_content_length_is_refused_before_the_body() {
    let bus = Bus::start(&["--api-key", KEY, "--store", "memory"]).await;
    let head = format!(
        "POST /messages/send HTTP/1.1\r\nHost: x\r\nx-agent-api-key: {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 5000000\r\n\r\n{{"
    );
    let started = Instant::now();
    let answer = raw_http(&bus, head.as_bytes(), Duration::from_secs(5)).expect("an answer without the body");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn d5_silent_connections_are_closed_and_cannot_starve_health() {
    // The hard limit too: the server cannot raise it, so it must cap
    // connections below it and make room by closing silent ones.
    let bus = Bus::start_with_open_files(
        128,
        &["--api-key", KEY, "--store", "memory", "--header-read-timeout", "1s"],
    )
    .await;
    let silent: Vec<TcpStream> = (0..200).filter_map(|_| TcpStream::connect(bus.addr).ok()).collect();
    assert!(silent.len() >= 100, "only {} connections opened", silent.len());
    for round in 0..5 {
        let started = Instant::now();
        let answer = raw_http(&bus, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("round {round}: health did not answer: {e}"));
        assert!(answer.starts_with("HTTP/1.1 200"), "round {round}: {answer}");
        eprintln!("health answered in {:?} during the flood", started.elapsed());
    }
    let mut health = tonic_health::pb::health_client::HealthClient::new(bus.channel().await);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("gRPC health during the flood");

    // Connections that never send a byte, or only the start of a request
    // (half an HTTP/2 preface, blank lines), are closed after the timeout.
    let starts: [&[u8]; 4] = [b"", b"PRI * HTTP/2.0\r\n\r\n", b"\r\n\r\n", b"GET / HTTP/1.1\r\n"];
    let mut slow: Vec<TcpStream> = starts
        .iter()
        .map(|start| {
            let mut stream = TcpStream::connect(bus.addr).unwrap();
            stream.write_all(start).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            stream
        })
        .collect();
    let started = Instant::now();
    for (stream, start) in slow.iter_mut().zip(starts) {
        let mut answer = Vec::new();
        match stream.read_to_end(&mut answer) {
            Ok(_) => {}
            Err(e) => assert_ne!(
                e.kind(),
                std::io::ErrorKind::WouldBlock,
                "{:?} still open after 5 s",
                String::from_utf8_lossy(start)
            ),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    let log = bus.log();
    assert!(log.contains("open-file limit") && log.contains("capping"), "{log}");
}

#[tokio::test]
async fn d5_past_max_connections_new_connections_are_closed_at_once() {
    let bus = Bus::start(&["--store", "memory", "--max-connections", "3"]).await;
    let request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(bus.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.write_all(request).unwrap();
        let mut answer = [0u8; 1024];
        let n = stream.read(&mut answer).unwrap();
        assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
        open.push(stream);
    }
    let started = Instant::now();
    let refused = raw_http(&bus, request, Duration::from_secs(5));
    assert!(
        matches!(&refused, Ok(answer) if answer.is_empty()) || refused.is_err(),
        "a fourth connection was served: {refused:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refusal took {:?}",
        started.elapsed()
    );
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match raw_http(&bus, request, Duration::from_secs(2)) {
            Ok(answer) if answer.starts_with("HTTP/1.1 200") => break,
            other => assert!(Instant::now() < deadline, "no room after a close: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn caller_deadlines_beyond_the_clock_are_ignored_not_a_crash() {
    // Found in review: `grpc-timeout` of u64::MAX seconds overflowed the
    // deadline and panicked the server.
    let bus = Bus::start(&["--api-key", KEY, "--store", "memory"]).await;
    for value in ["18446744073709551615S", "99999999H", "x"] {
        let response = reqwest::Client::new()
            .get(format!("{}/agents", bus.url()))
            .header("x-agent-api-key", KEY)
            .header("grpc-timeout", value)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{value}");
        let mut request = keyed(pb::ListAgentsRequest::default());
        request.metadata_mut().insert("grpc-timeout", value.parse().unwrap());
        let answer = bus.agents().await.list_agents(request).await;
        assert!(
            !matches!(&answer, Err(status) if matches!(status.code(), Code::Internal | Code::Unknown | Code::Unavailable)),
            "{value}: {answer:?}"
        );
    }
    let health: Json = reqwest::get(format!("{}/health", bus.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "healthy");
}

#[tokio::test]
async fn d5_listen_accepts_host_names() {
    let bus = Bus::start(&["--listen", "localhost:0", "--store", "memory"]).await;
    assert!(bus.addr.ip().is_loopback());
    let health: Json = reqwest::get(format!("{}/health", bus.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "healthy");
}

// ---- Malformed inputs over both transports -------------------------------

/// Sends bytes as they are: a codec for malformed protobuf.
#[derive(Clone, Copy, Default)]
struct RawCodec;
struct RawEncoder;
struct RawDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut out = vec![0; bytes::Buf::remaining(src)];
        bytes::Buf::copy_to_slice(src, &mut out);
        Ok(Some(out))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Every agentbus RPC: (path, server streaming).
fn methods() -> Vec<(String, bool)> {
    let pool = prost_reflect::DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
    pool.services()
        .flat_map(|service| {
            service
                .methods()
                .map(|m| {
                    (
                        format!("/{}/{}", service.full_name(), m.name()),
                        m.is_server_streaming(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Calls `path` with `body` as the request message; the status it got
/// (OK for a stream that opened).
async fn raw_call(channel: &tonic::transport::Channel, path: &str, streaming: bool, body: Vec<u8>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("channel ready");
    let path = tonic::codegen::http::uri::PathAndQuery::try_from(path.to_owned()).unwrap();
    let result = if streaming {
        grpc.server_streaming(keyed(body), path, RawCodec).await.map(|_| ())
    } else {
        grpc.unary(keyed(body), path, RawCodec).await.map(|_| ())
    };
    result.err().unwrap_or_else(|| tonic::Status::ok(""))
}

/// Bytes that are not a valid encoding of any request, and valid protobuf
/// that no rule accepts.
fn bad_protobuf() -> Vec<(&'static str, Vec<u8>)> {
    let mut deep_value = pb::SendMessageRequest {
        message: Some(text_message("deep", 1)),
    };
    deep_value.message.as_mut().unwrap().payload = Some(prost_types::Value {
        kind: Some(prost_types::value::Kind::StructValue(nested(120))),
    });
    let mut cases = vec![
        ("truncated varint", vec![0x08, 0xff]),
        ("length past the end", vec![0x0a, 0x05, b'a']),
        ("wire type 7", vec![0x0f, 0x01]),
        ("field number 0", vec![0x00, 0x01]),
        ("string not UTF-8", vec![0x0a, 0x02, 0xff, 0xfe]),
        (
            "overlong varint",
            vec![0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        ),
        ("group start", vec![0x0b, 0x0c]),
        ("huge length", vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        ("nested 120 levels", deep_value.encode_to_vec()),
        (
            "negative duration",
            pb::SendMessageRequest {
                message: Some(pb::Message {
                    routing: Some(pb::Routing {
                        timeout: Some(prost_types::Duration { seconds: -1, nanos: 0 }),
                        ..Default::default()
                    }),
                    ..text_message("neg", 1)
                }),
            }
            .encode_to_vec(),
        ),
    ];
    // Deterministic noise.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in [1, 3, 7, 16, 33, 64] {
        let noise = (0..len)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (seed >> 56) as u8
            })
            .collect();
        cases.push(("noise", noise));
    }
    cases
}

fn unit<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Result<(), tonic::Status> {
    result.map(|_| ())
}

/// Valid protobuf with values the contract refuses, as grpcurl would send
/// them from JSON: (what, result of the call).
async fn bad_values(bus: &Bus) -> Vec<(&'static str, Result<(), tonic::Status>)> {
    let mut messages = bus.messages().await;
    let mut sessions = bus.sessions().await;
    let mut agents = bus.agents().await;
    let message = |edit: fn(&mut pb::Message)| {
        let mut message = text_message("v", 1);
        edit(&mut message);
        keyed(pb::SendMessageRequest { message: Some(message) })
    };
    vec![
        (
            "duration beyond protobuf's maximum",
            unit(
                messages
                    .send_message(message(|m| {
                        m.routing = Some(pb::Routing {
                            timeout: Some(prost_types::Duration {
                                seconds: 315_576_000_001,
                                nanos: 0,
                            }),
                            ..Default::default()
                        });
                    }))
                    .await,
            ),
        ),
        (
            "duration nanos out of range",
            unit(
                messages
                    .send_message(message(|m| {
                        m.routing = Some(pb::Routing {
                            timeout: Some(prost_types::Duration {
                                seconds: 1,
                                nanos: 1_000_000_000,
                            }),
                            ..Default::default()
                        });
                    }))
                    .await,
            ),
        ),
        (
            "timestamp after 9999",
            unit(
                messages
                    .send_message(message(|m| {
                        m.timestamp = Some(prost_types::Timestamp {
                            seconds: i64::MAX,
                            nanos: 0,
                        });
                    }))
                    .await,
            ),
        ),
        (
            "timestamp negative nanos",
            unit(
                messages
                    .send_message(message(|m| {
                        m.timestamp = Some(prost_types::Timestamp { seconds: 0, nanos: -1 });
                    }))
                    .await,
            ),
        ),
        (
            "unknown message type",
            unit(messages.send_message(message(|m| m.message_type = 99)).await),
        ),
        (
            "negative priority",
            unit(messages.send_message(message(|m| m.priority = -5)).await),
        ),
        (
            "recipient without scheme",
            unit(
                messages
                    .send_message(message(|m| m.recipient.as_mut().unwrap().agent_id = "backend".into()))
                    .await,
            ),
        ),
        (
            "NaN in the payload",
            unit(
                messages
                    .send_message(message(|m| {
                        m.payload = Some(prost_types::Value {
                            kind: Some(prost_types::value::Kind::NumberValue(f64::NAN)),
                        });
                    }))
                    .await,
            ),
        ),
        (
            "ack of an empty id",
            unit(
                messages
                    .ack_message(keyed(pb::AckMessageRequest {
                        agent_id: BIG.into(),
                        message_id: String::new(),
                    }))
                    .await,
            ),
        ),
        (
            "ack of 1001 ids",
            unit(
                messages
                    .ack_messages(keyed(pb::AckMessagesRequest {
                        agent_id: BIG.into(),
                        message_ids: vec!["m".into(); 1001],
                    }))
                    .await,
            ),
        ),
        (
            "session state 42",
            unit(
                sessions
                    .list_sessions(keyed(pb::ListSessionsRequest {
                        states: vec![42],
                        ..Default::default()
                    }))
                    .await,
            ),
        ),
        (
            "forged page token",
            unit(
                sessions
                    .list_sessions(keyed(pb::ListSessionsRequest {
                        page_token: "s1.x".into(),
                        ..Default::default()
                    }))
                    .await,
            ),
        ),
        (
            "session id with a slash",
            unit(
                sessions
                    .get_session(keyed(pb::GetSessionRequest {
                        session_id: "a/b".into(),
                    }))
                    .await,
            ),
        ),
        (
            "context update of nothing",
            unit(
                sessions
                    .update_shared_context(keyed(pb::UpdateSharedContextRequest {
                        session_id: "nope".into(),
                        mode: 77,
                        ..Default::default()
                    }))
                    .await,
            ),
        ),
        (
            "agent without id",
            unit(
                agents
                    .register_agent(keyed(pb::RegisterAgentRequest {
                        agent: Some(pb::AgentDescriptor::default()),
                        update: false,
                    }))
                    .await,
            ),
        ),
        (
            "agent id of 10,000 bytes",
            unit(
                agents
                    .get_agent(keyed(pb::GetAgentRequest {
                        agent_id: format!("x://{}", "a".repeat(10_000)),
                    }))
                    .await,
            ),
        ),
    ]
}

/// Malformed HTTP requests: (method, path, extra headers, body). Session
/// routes name a session that does not exist, so that a body valid for one
/// of them still changes nothing.
type HttpCase = (&'static str, String, Vec<(&'static str, String)>, Vec<u8>);

fn bad_http() -> Vec<HttpCase> {
    let routes: [(&str, &str); 11] = [
        ("POST", "/messages/send"),
        ("POST", "/sessions"),
        ("POST", "/agents/register"),
        ("PUT", "/sessions/missing/workflow"),
        ("POST", "/sessions/missing/workflow/advance"),
        ("PUT", "/sessions/missing/context"),
        ("PATCH", "/sessions/missing/context"),
        ("POST", "/sessions/missing/complete"),
        ("POST", "/sessions/missing/terminate"),
        ("POST", "/sessions/missing/participants"),
        ("POST", "/agents/opencode%3A%2F%2Fbig/messages/ack"),
    ];
    let deep_array = format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes();
    let deep_object = format!("{{\"a\":{}1{}}}", "{\"a\":".repeat(40), "}".repeat(40)).into_bytes();
    let bodies: Vec<Vec<u8>> = vec![
        b"{\"a\": ".to_vec(),
        b"[]".to_vec(),
        b"\"text\"".to_vec(),
        b"42".to_vec(),
        b"null".to_vec(),
        b"{\"x\": \"\xff\"}".to_vec(),
        deep_array,
        deep_object,
        br#"{"no_such_field": 1}"#.to_vec(),
        br#"{"session_id": 7, "agent_id": [], "message_ids": {}}"#.to_vec(),
        br#"{"expected_version": 1e999}"#.to_vec(),
        br#"{"expected_version": -1, "context": "x"}"#.to_vec(),
        br#"{"participant": {"agent_id": "\u0000"}}"#.to_vec(),
        b"{}{}".to_vec(),
        vec![0; 64],
    ];
    let mut cases = Vec::new();
    for (method, path) in routes {
        for body in &bodies {
            cases.push((method, path.to_owned(), Vec::new(), body.clone()));
        }
        for (name, value) in [
            ("content-type", "text/plain".to_owned()),
            ("content-encoding", "gzip".to_owned()),
            ("content-encoding", "zstd".to_owned()),
            ("if-match", "W/\"1\"".to_owned()),
            ("if-match", "\"one\"".to_owned()),
            ("content-length", "5000000".to_owned()),
        ] {
            cases.push((method, path.to_owned(), vec![(name, value)], b"{}".to_vec()));
        }
    }
    for path in [
        "/sessions/%ff",
        "/agents/%ff%fe",
        "/messages/%ff",
        "/sessions?page_size=-1",
        "/sessions?page_size=1e9",
        "/sessions?state=sleeping",
        "/agents?online=maybe",
        "/sessions/events?after=abc",
        "/sessions/events?type=nothing",
        "/agents/opencode%3A%2F%2Fbig/messages?max_in_flight=-3",
        "/agents/not-an-agent-id",
        "/sessions/a%2Fb",
    ] {
        cases.push(("GET", path.to_owned(), Vec::new(), Vec::new()));
    }
    cases.push((
        "GET",
        "/sessions/events".to_owned(),
        vec![("last-event-id", "x".to_owned())],
        Vec::new(),
    ));
    cases
}

#[tokio::test]
async fn malformed_inputs_over_both_transports_get_clear_errors_and_leave_the_bus_intact() {
    let bus = bus_with_big_agent(&[]).await;
    let mut sessions = bus.sessions().await;
    let before = sessions
        .create_session(keyed(pb::CreateSessionRequest {
            session_id: "s1".into(),
            orchestrator: SENDER.into(),
            participants: vec![common::spec(BIG, "implementer")],
            shared_context: Some(object(json!({"kept": true}))),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    send(&bus, text_message("kept", 10)).await.unwrap();
    let mut count = 0;

    // gRPC: malformed protobuf to every method.
    let channel = bus.channel().await;
    for (path, streaming) in methods() {
        for (what, body) in bad_protobuf() {
            let status = raw_call(&channel, &path, streaming, body).await;
            assert!(
                !matches!(status.code(), Code::Internal | Code::Unknown | Code::Unavailable),
                "{path} with {what}: {status:?}"
            );
            count += 1;
        }
    }
    // gRPC framing errors, written by hand over HTTP/2.
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let frames: [(&str, Vec<u8>); 4] = [
        ("compression flag without grpc-encoding", vec![1, 0, 0, 0, 1, 0]),
        ("compression flag 7", vec![7, 0, 0, 0, 0]),
        ("body ends inside the frame", vec![0, 0, 0, 0, 10, 1, 2]),
        ("body ends inside the header", vec![0, 0, 0]),
    ];
    for (path, _) in methods().into_iter().take(8) {
        for (what, frame) in &frames {
            let response = h2
                .post(format!("{}{path}", bus.url()))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .header("x-agent-api-key", KEY)
                .body(frame.clone())
                .send()
                .await
                .unwrap();
            let code = response
                .headers()
                .get("grpc-status")
                .map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(
                code.as_deref(),
                Some("3"),
                "{path} with {what}: {:?}",
                response.headers()
            );
            count += 1;
        }
    }
    // gRPC: well-formed requests with values the contract refuses.
    for (what, result) in bad_values(&bus).await {
        let status = result.expect_err(what);
        assert!(
            matches!(status.code(), Code::InvalidArgument | Code::NotFound),
            "{what}: {status:?}"
        );
        count += 1;
    }
    // HTTP: every route with bodies and headers it must refuse.
    let client = reqwest::Client::new();
    for (method, path, headers, body) in bad_http() {
        let mut request = client
            .request(method.parse().unwrap(), format!("{}{path}", bus.url()))
            .header("x-agent-api-key", KEY)
            .body(body);
        if !headers.iter().any(|(name, _)| *name == "content-type") {
            request = request.header("content-type", "application/json");
        }
        for (name, value) in &headers {
            request = request.header(*name, value);
        }
        let what = format!("{method} {path} {headers:?}");
        let response = match request.send().await {
            Ok(response) => response,
            // A declared length we never send: the server answers 413 and
            // may close before reqwest finishes writing.
            Err(e) if headers.iter().any(|(name, _)| *name == "content-length") => {
                eprintln!("{what}: {e}");
                count += 1;
                continue;
            }
            Err(e) => panic!("{what}: {e}"),
        };
        let status = response.status();
        let is_json = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        let text = response.text().await.unwrap();
        assert!(status.is_client_error(), "{what}: {status} {text}");
        assert!(is_json, "{what}: not JSON: {text}");
        let answer: Json = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["success"], false, "{what}: {answer}");
        assert!(
            !["INTERNAL", "UNKNOWN"].contains(&answer["code"].as_str().unwrap()),
            "{what}: {answer}"
        );
        count += 1;
    }
    assert!(count >= 200, "only {count} malformed inputs");
    eprintln!("{count} malformed inputs refused");

    // Healthy, and nothing that was there changed.
    let health: Json = reqwest::get(format!("{}/health", bus.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "healthy");
    let after = sessions
        .get_session(keyed(pb::GetSessionRequest {
            session_id: "s1".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(after, before);
    let kept = bus
        .messages()
        .await
        .get_message(keyed(pb::GetMessageRequest {
            message_id: "kept".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(kept.state, pb::MessageState::Queued as i32);
    let listed = sessions
        .list_sessions(keyed(pb::ListSessionsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.sessions.len(), 1, "a malformed request created a session");
}
