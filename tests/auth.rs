//! Agent tokens and the access rules, black box: a real server with an
//! admin key, agents calling with their own tokens over gRPC (tonic) and
//! HTTP (reqwest), each trying what another agent may do.

mod common;

use std::time::Duration;

use agentbus::pb;
use common::{ApiKey, Bus, object, spec};
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const KEY: &str = "admin-s3cret";
const ORC: &str = "claude-code://orchestrator";
const BACKEND: &str = "opencode://backend";
const MALLORY: &str = "codex://mallory";
const TEAM: &str = "sess_team";

type Sessions = pb::session_service_client::SessionServiceClient<InterceptedService<Channel, ApiKey>>;
type Agents = pb::agent_service_client::AgentServiceClient<InterceptedService<Channel, ApiKey>>;
type Messages = pb::message_service_client::MessageServiceClient<InterceptedService<Channel, ApiKey>>;
use pb::agent_service_client::AgentServiceClient;
use pb::message_service_client::MessageServiceClient;
use pb::session_service_client::SessionServiceClient;

/// One caller's clients for both transports: gRPC with `x-agent-api-key`,
/// HTTP with `authorization: Bearer`.
#[derive(Clone)]
struct Client {
    sessions: Sessions,
    agents: Agents,
    messages: Messages,
    http: reqwest::Client,
    base: String,
    credential: String,
}

impl Client {
    async fn new(bus: &Bus, credential: &str) -> Self {
        let channel = bus.channel().await;
        let key = || ApiKey(Some(credential.to_owned()));
        Self {
            sessions: SessionServiceClient::with_interceptor(channel.clone(), key()),
            agents: AgentServiceClient::with_interceptor(channel.clone(), key()),
            messages: MessageServiceClient::with_interceptor(channel, key()),
            http: reqwest::Client::new(),
            base: bus.url(),
            credential: credential.to_owned(),
        }
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.credential)
    }

    async fn call(&self, method: Method, path: &str, body: Option<Json>) -> (StatusCode, Json) {
        let mut builder = self.request(method, path);
        if let Some(body) = body {
            builder = builder.json(&body);
        }
        let response = builder.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Json::String(text)))
    }

    async fn issue(&self, agent_id: &str, ttl: Option<Duration>) -> pb::IssueAgentTokenResponse {
        let request = pb::IssueAgentTokenRequest {
            agent_id: agent_id.into(),
            ttl: ttl.map(|ttl| prost_types::Duration::try_from(ttl).unwrap()),
            description: format!("test token of {agent_id}"),
        };
        self.agents
            .clone()
            .issue_agent_token(request)
            .await
            .unwrap()
            .into_inner()
    }

    async fn register(&self, agent_id: &str) {
        let request = pb::RegisterAgentRequest {
            agent: Some(pb::AgentDescriptor {
                agent_id: agent_id.into(),
                ..Default::default()
            }),
            update: true,
        };
        self.agents.clone().register_agent(request).await.unwrap();
    }

    async fn send(&self, from: &str, to: &str, id: &str) -> Result<pb::SendMessageResponse, tonic::Status> {
        self.messages
            .clone()
            .send_message(message(from, to, id))
            .await
            .map(tonic::Response::into_inner)
    }
}

fn message(from: &str, to: &str, id: &str) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        message: Some(pb::Message {
            message_id: id.into(),
            sender: Some(pb::AgentRef {
                agent_id: from.into(),
                ..Default::default()
            }),
            recipient: Some(pb::AgentRef {
                agent_id: to.into(),
                ..Default::default()
            }),
            message_type: pb::MessageType::StatusUpdate as i32,
            payload: Some(prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue("hello".into())),
            }),
            ..Default::default()
        }),
    }
}

/// Admin, and the orchestrator, backend and intruder with their tokens; a
/// session of the orchestrator and the backend; one message between them.
struct World {
    bus: Bus,
    admin: Client,
    orc: Client,
    backend: Client,
    mallory: Client,
}

async fn world(extra: &[&str]) -> World {
    let mut args = vec!["--store", "memory", "--api-key", KEY, "--heartbeat-interval", "200ms"];
    args.extend(extra);
    let bus = Bus::start(&args).await;
    let admin = Client::new(&bus, KEY).await;
    let mut tokens = Vec::new();
    for agent in [ORC, BACKEND, MALLORY] {
        admin.register(agent).await;
        let issued = admin.issue(agent, None).await;
        tokens.push(Client::new(&bus, &issued.token).await);
    }
    let [orc, backend, mallory] = tokens.try_into().ok().unwrap();
    let create = pb::CreateSessionRequest {
        session_id: TEAM.into(),
        orchestrator: ORC.into(),
        participants: vec![spec(BACKEND, "implementer")],
        steps: vec![common::step("design"), common::step("build")],
        shared_context: Some(object(json!({"project": "auth"}))),
    };
    orc.sessions.clone().create_session(create).await.unwrap();
    orc.send(ORC, BACKEND, "msg_orc_1").await.unwrap();
    World {
        bus,
        admin,
        orc,
        backend,
        mallory,
    }
}

type Call = std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::Status>> + Send>>;

/// One attempt: the gRPC call and the HTTP request doing the same, and the
/// code both must answer.
struct Case {
    name: &'static str,
    code: Code,
    grpc: Box<dyn Fn(Client) -> Call>,
    http: (Method, String, Option<Json>),
}

macro_rules! case {
    ($name:literal, $code:ident, |$c:ident| $grpc:expr, $method:ident $path:expr $(, $body:expr)?) => {
        Case {
            name: $name,
            code: Code::$code,
            grpc: Box::new(|mut $c: Client| Box::pin(async move { $grpc.await.map(drop) })),
            http: (Method::$method, $path.to_string(), None $(.or(Some($body)))?),
        }
    };
}

fn http_status(code: Code) -> StatusCode {
    match code {
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        other => panic!("no HTTP status for {other:?} in this test"),
    }
}

/// Runs every case over gRPC and over HTTP as `client`.
async fn refused(client: &Client, cases: Vec<Case>) {
    for case in cases {
        let result = (case.grpc)(client.clone()).await;
        let status = result.expect_err(&format!("{}: gRPC call was allowed", case.name));
        assert_eq!(
            status.code(),
            case.code,
            "{} over gRPC: {}",
            case.name,
            status.message()
        );
        let (method, path, body) = case.http;
        let (status, answer) = client.call(method, &path, body).await;
        assert_eq!(status, http_status(case.code), "{} over HTTP: {answer}", case.name);
        assert_eq!(answer["success"], false, "{}: {answer}", case.name);
    }
}

#[tokio::test]
async fn an_agent_token_cannot_act_as_another_agent() {
    let w = world(&[]).await;
    let cases = vec![
        case!("send as the orchestrator", PermissionDenied,
            |c| c.messages.send_message(message(ORC, BACKEND, "msg_spoof")),
            POST "/messages/send", json!({"sender": {"agent_id": ORC}, "recipient": {"agent_id": BACKEND},
                "message_type": "STATUS_UPDATE", "payload": "spoofed"})),
        case!("read the backend's inbox", PermissionDenied,
            |c| c.messages.receive_messages(pb::ReceiveMessagesRequest { agent_id: BACKEND.into(), ..Default::default() }),
            GET format!("/agents/{BACKEND}/messages")),
        case!("ack the backend's message", PermissionDenied,
            |c| c.messages.ack_message(pb::AckMessageRequest { agent_id: BACKEND.into(), message_id: "msg_orc_1".into() }),
            POST format!("/agents/{BACKEND}/messages/msg_orc_1/ack")),
        case!("ack the backend's messages", PermissionDenied,
            |c| c.messages.ack_messages(pb::AckMessagesRequest { agent_id: BACKEND.into(), message_ids: vec!["msg_orc_1".into()] }),
            POST format!("/agents/{BACKEND}/messages/ack"), json!({"message_ids": ["msg_orc_1"]})),
        case!("re-register the orchestrator", PermissionDenied,
            |c| c.agents.register_agent(pb::RegisterAgentRequest {
                agent: Some(pb::AgentDescriptor { agent_id: ORC.into(), ..Default::default() }), update: true }),
            POST "/agents/register", json!({"agent": {"agent_id": ORC}, "update": true})),
        case!("unregister the backend", PermissionDenied,
            |c| c.agents.unregister_agent(pb::UnregisterAgentRequest { agent_id: BACKEND.into() }),
            DELETE format!("/agents/{BACKEND}")),
        case!("read a message between others", NotFound,
            |c| c.messages.get_message(pb::GetMessageRequest { message_id: "msg_orc_1".into() }),
            GET "/messages/msg_orc_1"),
        case!("create a session for the orchestrator", PermissionDenied,
            |c| c.sessions.create_session(pb::CreateSessionRequest {
                session_id: "sess_spoof".into(), orchestrator: ORC.into(), ..Default::default() }),
            POST "/sessions", json!({"session_id": "sess_spoof", "orchestrator": ORC})),
        case!("get a foreign session", NotFound,
            |c| c.sessions.get_session(pb::GetSessionRequest { session_id: TEAM.into() }),
            GET format!("/sessions/{TEAM}")),
        case!("join a foreign session", NotFound,
            |c| c.sessions.add_participant(pb::AddParticipantRequest {
                session_id: TEAM.into(), participant: Some(spec(MALLORY, "spy")), expected_version: None }),
            POST format!("/sessions/{TEAM}/participants"), json!({"participant": {"agent_id": MALLORY}})),
        case!("change a foreign session's context", NotFound,
            |c| c.sessions.update_shared_context(pb::UpdateSharedContextRequest {
                session_id: TEAM.into(), context: Some(object(json!({"x": 1}))), ..Default::default() }),
            PATCH format!("/sessions/{TEAM}/context"), json!({"context": {"x": 1}})),
        case!("complete a foreign session", NotFound,
            |c| c.sessions.complete_session(pb::CompleteSessionRequest { session_id: TEAM.into(), ..Default::default() }),
            POST format!("/sessions/{TEAM}/complete"), json!({})),
        case!("terminate a foreign session", NotFound,
            |c| c.sessions.terminate_session(pb::TerminateSessionRequest { session_id: TEAM.into(), ..Default::default() }),
            POST format!("/sessions/{TEAM}/terminate"), json!({})),
        case!("issue itself a token", PermissionDenied,
            |c| c.agents.issue_agent_token(pb::IssueAgentTokenRequest { agent_id: MALLORY.into(), ..Default::default() }),
            POST format!("/agents/{MALLORY}/tokens"), json!({})),
        case!("list tokens", PermissionDenied,
            |c| c.agents.list_agent_tokens(pb::ListAgentTokensRequest { agent_id: ORC.into() }),
            GET format!("/agents/{ORC}/tokens")),
        case!("revoke a token", PermissionDenied,
            |c| c.agents.revoke_agent_token(pb::RevokeAgentTokenRequest { token_id: "tok_x".into(), agent_id: String::new() }),
            DELETE format!("/agents/{ORC}/tokens/tok_x")),
    ];
    refused(&w.mallory, cases).await;

    // A participant that is not the orchestrator may not steer the session.
    let cases = vec![
        case!("add a participant", PermissionDenied,
            |c| c.sessions.add_participant(pb::AddParticipantRequest {
                session_id: TEAM.into(), participant: Some(spec(MALLORY, "friend")), expected_version: None }),
            POST format!("/sessions/{TEAM}/participants"), json!({"participant": {"agent_id": MALLORY}})),
        case!("remove the orchestrator", PermissionDenied,
            |c| c.sessions.remove_participant(pb::RemoveParticipantRequest {
                session_id: TEAM.into(), agent_id: ORC.into(), expected_version: None }),
            DELETE format!("/sessions/{TEAM}/participants/{ORC}")),
        case!("change the workflow", PermissionDenied,
            |c| c.sessions.update_workflow(pb::UpdateWorkflowRequest {
                session_id: TEAM.into(), current_step: "build".into(), ..Default::default() }),
            PUT format!("/sessions/{TEAM}/workflow"), json!({"current_step": "build"})),
        case!("advance the workflow", PermissionDenied,
            |c| c.sessions.advance_workflow(pb::AdvanceWorkflowRequest { session_id: TEAM.into(), ..Default::default() }),
            POST format!("/sessions/{TEAM}/workflow/advance"), json!({})),
        case!("complete the session", PermissionDenied,
            |c| c.sessions.complete_session(pb::CompleteSessionRequest { session_id: TEAM.into(), ..Default::default() }),
            POST format!("/sessions/{TEAM}/complete"), json!({})),
        case!("terminate the session", PermissionDenied,
            |c| c.sessions.terminate_session(pb::TerminateSessionRequest { session_id: TEAM.into(), ..Default::default() }),
            POST format!("/sessions/{TEAM}/terminate"), json!({})),
    ];
    refused(&w.backend, cases).await;

    // Nothing changed: the session is as created, the message as sent.
    let mut admin = w.admin.clone();
    let team = admin
        .sessions
        .get_session(pb::GetSessionRequest {
            session_id: TEAM.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(team.version, 1);
    assert_eq!(team.participants.len(), 2);
    let stored = admin
        .messages
        .get_message(pb::GetMessageRequest {
            message_id: "msg_orc_1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(stored.state, pb::MessageState::Queued as i32);

    // Every refusal was counted by reason, and logged with caller and method.
    let metrics = w.admin.request(Method::GET, "/metrics").header("accept", "text/plain");
    let text = metrics.send().await.unwrap().text().await.unwrap();
    for (reason, at_least) in [
        ("not_that_agent", 14),
        ("not_participant", 12),
        ("admin_only", 6),
        ("not_orchestrator", 12),
    ] {
        let count: u64 = text
            .lines()
            .find(|l| l.starts_with(&format!("agentbus_auth_denied_total{{reason=\"{reason}\"}}")))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no counter for {reason} in {text}"));
        assert!(count >= at_least, "{reason}: {count} < {at_least}");
    }
    let log = w.bus.log();
    assert!(
        log.lines().any(|l| l.contains("denied")
            && l.contains(MALLORY)
            && l.contains("/agentbus.v1.MessageService/SendMessage")
            && l.contains("not_that_agent")),
        "{log}"
    );
}

#[tokio::test]
async fn agents_do_what_their_part_allows() {
    let w = world(&[]).await;
    let (mut orc, mut backend) = (w.orc.clone(), w.backend.clone());

    // An empty sender is the caller; the recipient reads its own inbox.
    let mut unsigned = message("", ORC, "msg_backend_1");
    unsigned.message.as_mut().unwrap().sender = None;
    backend.messages.send_message(unsigned).await.unwrap();
    let sent = backend
        .messages
        .get_message(pb::GetMessageRequest {
            message_id: "msg_backend_1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(sent.message.unwrap().sender.unwrap().agent_id, BACKEND);
    let mut inbox = orc
        .messages
        .receive_messages(pb::ReceiveMessagesRequest {
            agent_id: ORC.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let delivery = loop {
        match inbox.next().await.unwrap().unwrap().kind {
            Some(pb::receive_messages_response::Kind::Delivery(d)) => break d,
            _ => continue,
        }
    };
    assert_eq!(delivery.message.unwrap().message_id, "msg_backend_1");
    orc.messages
        .ack_message(pb::AckMessageRequest {
            agent_id: ORC.into(),
            message_id: "msg_backend_1".into(),
        })
        .await
        .unwrap();

    // Discovery is open; a participant reads and contributes to its session.
    backend
        .agents
        .list_agents(pb::ListAgentsRequest::default())
        .await
        .unwrap();
    w.mallory
        .agents
        .clone()
        .get_agent(pb::GetAgentRequest { agent_id: ORC.into() })
        .await
        .unwrap();
    let (status, body) = w.backend.call(Method::GET, &format!("/sessions/{TEAM}"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = w
        .backend
        .call(
            Method::PATCH,
            &format!("/sessions/{TEAM}/context"),
            Some(json!({"context": {"api": "done"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Lists hold only the caller's sessions.
    let create = |id: &str, orchestrator: &str| pb::CreateSessionRequest {
        session_id: id.into(),
        orchestrator: orchestrator.into(),
        ..Default::default()
    };
    w.mallory
        .sessions
        .clone()
        .create_session(create("sess_mallory", MALLORY))
        .await
        .unwrap();
    let ids = |response: pb::ListSessionsResponse| -> Vec<String> {
        response.sessions.into_iter().map(|s| s.session_id).collect()
    };
    let listed = backend
        .sessions
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .unwrap();
    assert_eq!(ids(listed.into_inner()), [TEAM]);
    let asked_for_mallory = pb::ListSessionsRequest {
        participant: MALLORY.into(),
        ..Default::default()
    };
    let listed = backend.sessions.list_sessions(asked_for_mallory).await.unwrap();
    assert!(ids(listed.into_inner()).is_empty());
    let everything = w
        .admin
        .sessions
        .clone()
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .unwrap();
    assert_eq!(ids(everything.into_inner()), [TEAM, "sess_mallory"]);

    // The orchestrator steers; a participant may leave by itself.
    orc.sessions
        .advance_workflow(pb::AdvanceWorkflowRequest {
            session_id: TEAM.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (status, body) = w
        .backend
        .call(
            Method::DELETE,
            &format!("/sessions/{TEAM}/participants/{BACKEND}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A former participant still sees the session, but may not change it.
    backend
        .sessions
        .get_session(pb::GetSessionRequest {
            session_id: TEAM.into(),
        })
        .await
        .unwrap();
    let late = backend
        .sessions
        .update_shared_context(pb::UpdateSharedContextRequest {
            session_id: TEAM.into(),
            context: Some(object(json!({"late": true}))),
            ..Default::default()
        })
        .await;
    common::assert_status(late, Code::PermissionDenied, "no longer a participant");
    orc.sessions
        .complete_session(pb::CompleteSessionRequest {
            session_id: TEAM.into(),
            summary: "done".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// The events of a watch in its first second, heartbeats skipped.
async fn events(stream: &mut tonic::Streaming<pb::WatchSessionsResponse>) -> Vec<(String, i32)> {
    let mut seen = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(Some(item)) = tokio::time::timeout_at(until, stream.next()).await {
        if let Some(pb::watch_sessions_response::Kind::Event(e)) = item.unwrap().kind {
            seen.push((e.session_id, e.r#type));
        }
    }
    seen
}

#[tokio::test]
async fn a_watch_sees_a_session_from_when_the_agent_joins_it() {
    let w = world(&[]).await;
    let mut orc = w.orc.clone();
    orc.sessions
        .create_session(pb::CreateSessionRequest {
            session_id: "sess_late".into(),
            orchestrator: ORC.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let context = |n: i64| pb::UpdateSharedContextRequest {
        session_id: "sess_late".into(),
        context: Some(object(json!({"n": n}))),
        mode: pb::ContextUpdateMode::Merge as i32,
        expected_version: None,
    };
    orc.sessions.update_shared_context(context(1)).await.unwrap();
    orc.sessions
        .add_participant(pb::AddParticipantRequest {
            session_id: "sess_late".into(),
            participant: Some(spec(BACKEND, "implementer")),
            expected_version: None,
        })
        .await
        .unwrap();
    orc.sessions.update_shared_context(context(2)).await.unwrap();

    let watch = |client: &Client| {
        let mut sessions = client.sessions.clone();
        async move {
            let request = pb::WatchSessionsRequest {
                after_sequence: Some(0),
                ..Default::default()
            };
            sessions.watch_sessions(request).await.unwrap().into_inner()
        }
    };
    use pb::SessionEventType as T;
    let backend_sees = events(&mut watch(&w.backend).await).await;
    assert_eq!(
        backend_sees,
        [
            (TEAM.to_owned(), T::SessionCreated as i32),
            ("sess_late".to_owned(), T::ParticipantAdded as i32),
            ("sess_late".to_owned(), T::SharedContextUpdated as i32),
        ]
    );
    assert!(events(&mut watch(&w.mallory).await).await.is_empty());
    assert_eq!(events(&mut watch(&w.orc).await).await.len(), 5);
    assert_eq!(events(&mut watch(&w.admin).await).await.len(), 5);
}

#[tokio::test]
async fn revoking_a_token_ends_its_calls_and_its_open_streams() {
    let w = world(&[]).await;
    let mut backend = w.backend.clone();
    let mut inbox = backend
        .messages
        .receive_messages(pb::ReceiveMessagesRequest {
            agent_id: BACKEND.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut watch = backend
        .sessions
        .watch_sessions(pb::WatchSessionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let sse = w
        .backend
        .request(Method::GET, &format!("/agents/{BACKEND}/messages"))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), StatusCode::OK);
    let mut sse = sse.bytes_stream();

    let mut admin = w.admin.clone();
    let listed = admin
        .agents
        .list_agent_tokens(pb::ListAgentTokensRequest {
            agent_id: BACKEND.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].last_used_at.is_some());
    let (status, body) = w
        .admin
        .call(
            Method::DELETE,
            &format!("/agents/{BACKEND}/tokens/{}", listed[0].token_id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    for status in [stream_error(&mut inbox).await, stream_error(&mut watch).await] {
        assert_eq!(status.code(), Code::Unauthenticated, "{}", status.message());
        assert!(status.message().contains("revoked"), "{}", status.message());
    }
    let deadline = Duration::from_secs(2);
    let text = tokio::time::timeout(deadline, async {
        let mut text = String::new();
        while let Some(Ok(chunk)) = sse.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("event: error") {
                break;
            }
        }
        text
    })
    .await
    .expect("SSE inbox still open");
    assert!(text.contains("UNAUTHENTICATED"), "{text}");

    common::assert_status(
        backend
            .agents
            .get_agent(pb::GetAgentRequest { agent_id: ORC.into() })
            .await,
        Code::Unauthenticated,
        "invalid agent token",
    );
    let (status, _) = w.backend.call(Method::GET, "/agents", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let again = pb::RevokeAgentTokenRequest {
        token_id: listed[0].token_id.clone(),
        agent_id: String::new(),
    };
    common::assert_status(
        admin.agents.revoke_agent_token(again).await,
        Code::NotFound,
        "not found",
    );
}

/// The error a stream ends with, within four seconds.
async fn stream_error<T>(stream: &mut tonic::Streaming<T>) -> tonic::Status {
    let end = async {
        loop {
            if let Err(status) = stream.next().await.expect("the stream ended without an error") {
                return status;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(4), end)
        .await
        .expect("the stream is still open")
}

#[tokio::test]
async fn tokens_expire_and_are_validated() {
    let w = world(&[]).await;
    let short = w.admin.issue(MALLORY, Some(Duration::from_millis(1500))).await;
    assert!(
        short.token.starts_with("abt_") && short.token.len() == 68,
        "{}",
        short.token
    );
    assert!(short.expires_at.is_some());
    let mut mallory = Client::new(&w.bus, &short.token).await;
    let mut watch = mallory
        .sessions
        .watch_sessions(pb::WatchSessionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let end = stream_error(&mut watch).await;
    assert_eq!(end.code(), Code::Unauthenticated);
    assert!(end.message().contains("expired"), "{}", end.message());
    common::assert_status(
        mallory.agents.list_agents(pb::ListAgentsRequest::default()).await,
        Code::Unauthenticated,
        "expired",
    );

    let mut admin = w.admin.clone();
    let bad = |agent_id: &str, ttl: Option<prost_types::Duration>, description: &str| pb::IssueAgentTokenRequest {
        agent_id: agent_id.into(),
        ttl,
        description: description.into(),
    };
    common::assert_status(
        admin.agents.issue_agent_token(bad("not an agent", None, "")).await,
        Code::InvalidArgument,
        "agent_id",
    );
    common::assert_status(
        admin
            .agents
            .issue_agent_token(bad(ORC, Some(prost_types::Duration::default()), ""))
            .await,
        Code::InvalidArgument,
        "ttl",
    );
    common::assert_status(
        admin.agents.issue_agent_token(bad(ORC, None, &"x".repeat(257))).await,
        Code::InvalidArgument,
        "description",
    );
    // A token and the admin key on one call name two callers.
    let mut both = tonic::Request::new(pb::ListAgentsRequest::default());
    both.metadata_mut().insert("x-agent-api-key", KEY.parse().unwrap());
    let token = format!("Bearer {}", w.orc.credential);
    both.metadata_mut().insert("authorization", token.parse().unwrap());
    common::assert_status(
        admin.agents.list_agents(both).await,
        Code::Unauthenticated,
        "different callers",
    );
    let forged = format!("abt_{}", "0".repeat(64));
    let (status, body) = Client::new(&w.bus, &forged)
        .await
        .call(Method::GET, "/agents", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

#[tokio::test]
async fn tokens_survive_a_restart_and_revocations_too() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--api-key", KEY];
    let (kept, revoked) = {
        let bus = Bus::start_in(dir.path(), &args).await;
        let admin = Client::new(&bus, KEY).await;
        let kept = admin.issue(ORC, None).await;
        let revoked = admin.issue(ORC, None).await;
        admin
            .agents
            .clone()
            .revoke_agent_token(pb::RevokeAgentTokenRequest {
                token_id: revoked.token_id.clone(),
                agent_id: ORC.into(),
            })
            .await
            .unwrap();
        (kept, revoked)
    };
    let bus = Bus::start_in(dir.path(), &args).await;
    Client::new(&bus, &kept.token).await.register(ORC).await;
    let (status, _) = Client::new(&bus, &revoked.token)
        .await
        .call(Method::GET, "/agents", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let listed = Client::new(&bus, KEY)
        .await
        .agents
        .list_agent_tokens(pb::ListAgentTokensRequest { agent_id: ORC.into() })
        .await
        .unwrap()
        .into_inner()
        .tokens;
    let ids: Vec<_> = listed.iter().map(|t| t.token_id.as_str()).collect();
    assert_eq!(ids, [kept.token_id.as_str()]);
    assert_eq!(listed[0].description, format!("test token of {ORC}"));
}

#[tokio::test]
async fn require_agent_identity_keeps_the_admin_key_from_speaking() {
    let w = world(&["--require-agent-identity"]).await;
    common::assert_status(
        w.admin.send(ORC, BACKEND, "msg_admin").await,
        Code::PermissionDenied,
        "--require-agent-identity",
    );
    let (status, body) = w
        .admin
        .call(Method::GET, &format!("/agents/{BACKEND}/messages"), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // Management stays with the admin; agents speak as themselves.
    w.admin.issue(BACKEND, None).await;
    w.backend.send(BACKEND, ORC, "msg_agent").await.unwrap();
}

fn in_session(mut request: pb::SendMessageRequest, kind: pb::MessageType, in_reply_to: &str) -> pb::SendMessageRequest {
    let message = request.message.as_mut().unwrap();
    message.sender.as_mut().unwrap().session_id = TEAM.into();
    message.message_type = kind as i32;
    message.in_reply_to = in_reply_to.into();
    request
}

#[tokio::test]
async fn messages_do_not_reach_into_what_the_sender_takes_no_part_in() {
    let w = world(&[]).await;
    let (mut orc, mut backend, mut mallory) = (w.orc.clone(), w.backend.clone(), w.mallory.clone());

    // A foreign session answers as a missing one does.
    let foreign = mallory
        .messages
        .send_message(in_session(
            message(MALLORY, ORC, "msg_m1"),
            pb::MessageType::StatusUpdate,
            "",
        ))
        .await
        .unwrap_err();
    let mut missing = in_session(message(MALLORY, ORC, "msg_m2"), pb::MessageType::StatusUpdate, "");
    missing.message.as_mut().unwrap().sender.as_mut().unwrap().session_id = "sess_nowhere".into();
    let missing = mallory.messages.send_message(missing).await.unwrap_err();
    assert_eq!(foreign.code(), missing.code());
    assert_eq!(
        foreign.message().replace(TEAM, "X"),
        missing.message().replace("sess_nowhere", "X")
    );

    // Acking another agent's message in one's own name: as if it did not exist.
    let ack = pb::AckMessageRequest {
        agent_id: MALLORY.into(),
        message_id: "msg_orc_1".into(),
    };
    common::assert_status(mallory.messages.ack_message(ack).await, Code::NotFound, "not found");

    // A participant cannot report on a task delegated to another.
    let task = in_session(message(ORC, BACKEND, "msg_task"), pb::MessageType::TaskRequest, "");
    orc.messages.send_message(task).await.unwrap();
    orc.sessions
        .add_participant(pb::AddParticipantRequest {
            session_id: TEAM.into(),
            participant: Some(spec(MALLORY, "reviewer")),
            expected_version: None,
        })
        .await
        .unwrap();
    let task_state = |mut sessions: Sessions| async move {
        let session = sessions
            .get_session(pb::GetSessionRequest {
                session_id: TEAM.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .session
            .unwrap();
        session
            .tasks
            .iter()
            .find(|t| t.task_id == "msg_task")
            .map(|t| t.state)
            .unwrap()
    };
    let spoofed = in_session(
        message(MALLORY, ORC, "msg_spoofed_result"),
        pb::MessageType::TaskResponse,
        "msg_task",
    );
    mallory.messages.send_message(spoofed).await.unwrap();
    assert_eq!(task_state(orc.sessions.clone()).await, pb::TaskState::Delegated as i32);
    let real = in_session(
        message(BACKEND, ORC, "msg_real_result"),
        pb::MessageType::TaskResponse,
        "msg_task",
    );
    backend.messages.send_message(real).await.unwrap();
    assert_eq!(task_state(orc.sessions.clone()).await, pb::TaskState::Completed as i32);
}
