//! The HTTP/JSON gateway, black box: a real server on 127.0.0.1:0, driven
//! with reqwest (HTTP/1.1 and HTTP/2) and curl, next to tonic clients.

mod common;

use std::time::Duration;

use agentbus::pb;
use common::Bus;
use common::exposition::{Exposition, Format};
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};
use tokio_stream::StreamExt;

const KEY: &str = "s3cret";
const ORCHESTRATOR: &str = "claude-code://orchestrator";
const BACKEND: &str = "opencode://backend";
const REVIEWER: &str = "codex://reviewer";

/// A JSON client for one bus.
struct Http {
    base: String,
    client: reqwest::Client,
    key: Option<String>,
}

impl Http {
    fn new(bus: &Bus, key: Option<&str>) -> Self {
        Self {
            base: bus.url(),
            client: reqwest::Client::new(),
            key: key.map(str::to_owned),
        }
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.client.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(key) => builder.header("x-agent-api-key", key),
            None => builder,
        }
    }

    async fn send(&self, builder: reqwest::RequestBuilder) -> (StatusCode, Json) {
        let response = builder.send().await.expect("request");
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = response.text().await.expect("body");
        assert!(
            content_type.starts_with("application/json"),
            "{status} answered with {content_type:?}: {text}"
        );
        (status, serde_json::from_str(&text).expect("JSON body"))
    }

    async fn call(&self, method: Method, path: &str, body: Option<Json>) -> (StatusCode, Json) {
        let mut builder = self.request(method, path);
        if let Some(body) = body {
            builder = builder.json(&body);
        }
        self.send(builder).await
    }

    /// A call that must succeed; returns the body.
    async fn ok(&self, method: Method, path: &str, body: Option<Json>) -> Json {
        let (status, body) = self.call(method.clone(), path, body).await;
        assert_eq!(status, StatusCode::OK, "{method} {path}: {body}");
        assert_eq!(body["success"], true, "{body}");
        body
    }

    /// A call that must fail with `status` and `code`, whose message
    /// contains `message`.
    async fn fails(
        &self,
        method: Method,
        path: &str,
        body: Option<Json>,
        status: StatusCode,
        code: &str,
        message: &str,
    ) {
        let (got, body) = self.call(method.clone(), path, body).await;
        assert_error(got, &body, status, code, message);
    }

    async fn sse(&self, path: &str, last_event_id: Option<u64>) -> Sse {
        let mut builder = self.request(Method::GET, path);
        if let Some(id) = last_event_id {
            builder = builder.header("last-event-id", id.to_string());
        }
        let response = builder.send().await.expect("SSE request");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert_eq!(response.headers()["x-accel-buffering"], "no");
        assert!(response.headers().get("content-encoding").is_none());
        Sse {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }
}

fn assert_error(got: StatusCode, body: &Json, status: StatusCode, code: &str, message: &str) {
    assert_eq!(got, status, "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["code"], code, "{body}");
    let error = body["error"].as_str().expect("error message");
    assert!(error.contains(message), "{error:?} should contain {message:?}");
}

type ByteStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// A Server-Sent Events reader.
struct Sse {
    body: ByteStream,
    buffer: String,
}

#[derive(Debug, Default)]
struct SseEvent {
    id: Option<String>,
    event: Option<String>,
    data: String,
    comments: Vec<String>,
}

impl SseEvent {
    fn json(&self) -> Json {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {}", self.data))
    }
}

impl Sse {
    /// The next block (event or comment), or None when the stream ends.
    async fn next_block(&mut self, wait: Duration) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent::default();
                for line in block.lines() {
                    if let Some(comment) = line.strip_prefix(':') {
                        event.comments.push(comment.trim().to_owned());
                    } else if let Some((field, value)) = line.split_once(':') {
                        let value = value.strip_prefix(' ').unwrap_or(value);
                        match field {
                            "id" => event.id = Some(value.to_owned()),
                            "event" => event.event = Some(value.to_owned()),
                            "data" => event.data.push_str(value),
                            _ => {}
                        }
                    }
                }
                return Some(event);
            }
            let chunk = tokio::time::timeout(wait, self.body.next())
                .await
                .expect("no SSE data in time");
            match chunk {
                Some(Ok(bytes)) => self.buffer.push_str(std::str::from_utf8(&bytes).expect("UTF-8")),
                _ => return None,
            }
        }
    }

    /// The next event, skipping keep-alive comments.
    async fn next_event(&mut self) -> SseEvent {
        loop {
            let block = self.next_block(Duration::from_secs(10)).await.expect("stream ended");
            if block.event.is_some() || !block.data.is_empty() {
                return block;
            }
        }
    }
}

async fn bus() -> (Bus, Http) {
    let bus = Bus::start(&["--api-key", KEY, "--heartbeat-interval", "200ms"]).await;
    let http = Http::new(&bus, Some(KEY));
    for (id, framework) in [
        (ORCHESTRATOR, "claude-code"),
        (BACKEND, "opencode"),
        (REVIEWER, "codex"),
    ] {
        http.ok(
            Method::POST,
            "/agents/register",
            Some(json!({"agent_descriptor": {"agent_id": id, "framework": framework}})),
        )
        .await;
    }
    (bus, http)
}

fn session_body(id: &str) -> Json {
    json!({
        "session_id": id,
        "orchestrator": ORCHESTRATOR,
        "participants": [{"agent_id": BACKEND, "role": "implementer"}],
        "steps": [{"name": "design"}, {"name": "build"}, {"name": "review"}],
        "shared_context": {"repo": "notifications"},
    })
}

fn encoded(agent_id: &str) -> String {
    agent_id.replace(':', "%3A").replace('/', "%2F")
}

#[tokio::test]
async fn the_tutorial_curl_command_works_verbatim() {
    let (bus, http) = bus().await;
    let session = http
        .ok(Method::POST, "/sessions", Some(session_body("sess_tutorial")))
        .await;
    let session_id = session["session"]["session_id"].as_str().unwrap();
    // Exactly the tutorial's command, with the bus's port.
    let script = r#"curl -s -X POST http://localhost:$PORT/messages/send \
-H "Content-Type: application/json" \
-H "x-agent-api-key: ${AGENT_BUS_API_KEY}" \
-d '{
"message_id": "task_impl_backend",
"timestamp": "2025-02-02T11:00:00Z",
"sender": {
"agent_id": "claude-code://orchestrator",
"framework": "claude-code",
"session_id": "'"$sessionId"'"
},
"recipient": { "agent_id": "opencode://backend", "framework": "opencode" },
"message_type": "task_request",
"priority": "high",
"payload": { "task_type": "implementation", "context": { "component": "notification-service" } },
"routing": {
"timeout": "300s",
"retry_policy": { "max_retries": 1, "backoff": "linear" },
"delivery_mode": "async"
}
}'"#;
    let output = std::process::Command::new("bash")
        .args(["-c", script])
        .env("PORT", bus.addr.port().to_string())
        .env("AGENT_BUS_API_KEY", KEY)
        .env("sessionId", session_id)
        .output()
        .expect("curl must be installed for this test");
    assert!(output.status.success(), "{output:?}");
    let answer: Json = serde_json::from_slice(&output.stdout).expect("JSON from curl");
    assert_eq!(
        answer,
        json!({"success": true, "accepted": true, "message_id": "task_impl_backend", "state": "queued"})
    );
    // The bus correlated it with the session as a delegated task.
    let session = http.ok(Method::GET, "/sessions/sess_tutorial", None).await;
    assert_eq!(session["session"]["tasks"][0]["task_id"], "task_impl_backend");
    assert_eq!(session["session"]["tasks"][0]["state"], "delegated");
}

#[tokio::test]
async fn agents_register_in_both_shapes_and_list_get_unregister() {
    let (bus, http) = bus().await;
    // The prototype's shape, with capabilities as a plain list.
    let body = json!({
        "agent_descriptor": {
            "agent_id": "opencode://frontend",
            "framework": "opencode",
            "capabilities": ["react", "css"],
            "metadata": {"version": "1.2.0", "author": "team", "tags": ["ui"]},
        },
        "health_check_url": "http://localhost:9000/health",
        "authentication": {"type": "api_key", "credentials": "ignored"},
    });
    let answer = http.ok(Method::POST, "/agents/register", Some(body.clone())).await;
    assert_eq!(answer["agent_id"], "opencode://frontend");
    assert_eq!(answer["created"], true);
    let descriptor = &answer["agent"]["descriptor"];
    assert_eq!(descriptor["capabilities"]["optimal_tasks"], json!(["react", "css"]));
    assert_eq!(descriptor["health_check_url"], "http://localhost:9000/health");
    http.fails(
        Method::POST,
        "/agents/register",
        Some(body),
        StatusCode::CONFLICT,
        "ALREADY_EXISTS",
        "agent opencode://frontend is already registered",
    )
    .await;
    // Ours, with the object form and an update.
    let update = json!({"agent": {"agent_id": "opencode://frontend", "capabilities": {
        "languages": ["typescript"], "performance_profile": {"avg_response_time": "2.5s", "success_rate": 0.95}}},
        "update": true});
    let answer = http.ok(Method::POST, "/agents/register", Some(update)).await;
    assert_eq!(answer["created"], false);
    assert_eq!(
        answer["agent"]["descriptor"]["capabilities"]["performance_profile"]["avg_response_time"],
        "2.5s"
    );

    let listed = http.ok(Method::GET, "/agents?framework=opencode", None).await;
    let ids: Vec<_> = listed["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["descriptor"]["agent_id"].clone())
        .collect();
    assert_eq!(ids, [json!("opencode://backend"), json!("opencode://frontend")]);
    let typescript = http
        .ok(Method::GET, "/agents?capability=typescript&online=false", None)
        .await;
    assert_eq!(typescript["agents"].as_array().unwrap().len(), 1);
    let page = http.ok(Method::GET, "/agents?page_size=2", None).await;
    assert_eq!(page["agents"].as_array().unwrap().len(), 2);
    let token = page["next_page_token"].as_str().unwrap();
    let rest = http
        .ok(Method::GET, &format!("/agents?page_size=2&page_token={token}"), None)
        .await;
    assert_eq!(rest["agents"].as_array().unwrap().len(), 2);

    // Agent ids in paths work URL-encoded and as they are.
    let got = http
        .ok(Method::GET, &format!("/agents/{}", encoded(BACKEND)), None)
        .await;
    assert_eq!(got["agent"]["descriptor"]["agent_id"], BACKEND);
    assert_eq!(got["agent"]["online"], false);
    let got = http.ok(Method::GET, "/agents/opencode://frontend", None).await;
    assert_eq!(got["agent"]["descriptor"]["framework"], "opencode");

    let removed = http
        .ok(
            Method::DELETE,
            &format!("/agents/{}", encoded("opencode://frontend")),
            None,
        )
        .await;
    assert_eq!(removed["dead_lettered"], 0);
    http.fails(
        Method::DELETE,
        "/agents/opencode%3A%2F%2Ffrontend",
        None,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "agent opencode://frontend is not registered",
    )
    .await;
    http.fails(
        Method::GET,
        "/agents/not-an-id",
        None,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "agent_id",
    )
    .await;
    // The gRPC registry sees the same state.
    let mut agents = bus.agents().await;
    let mut request = tonic::Request::new(pb::GetAgentRequest {
        agent_id: "opencode://frontend".into(),
    });
    request.metadata_mut().insert("x-agent-api-key", KEY.parse().unwrap());
    assert_eq!(
        agents.get_agent(request).await.unwrap_err().code(),
        tonic::Code::NotFound
    );
}

#[tokio::test]
async fn keys_are_checked_like_grpc_and_health_is_open() {
    let (bus, _http) = bus().await;
    let anonymous = Http::new(&bus, None);
    anonymous
        .fails(
            Method::GET,
            "/agents",
            None,
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "missing API key",
        )
        .await;
    let wrong = Http::new(&bus, Some("nope"));
    wrong
        .fails(
            Method::POST,
            "/messages/send",
            Some(json!({})),
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "invalid API key",
        )
        .await;
    wrong
        .fails(
            Method::GET,
            "/metrics",
            None,
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "invalid API key",
        )
        .await;
    let bearer = anonymous.request(Method::GET, "/agents").bearer_auth(KEY);
    let (status, body) = anonymous.send(bearer).await;
    assert_eq!((status, body["success"].clone()), (StatusCode::OK, json!(true)));
    let (status, health) = anonymous.call(Method::GET, "/health", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "healthy");
    assert!(health["uptime"].as_u64().is_some(), "{health}");
}

#[tokio::test]
async fn sessions_over_http_cover_every_operation() {
    let (bus, http) = bus().await;
    let created = http.ok(Method::POST, "/sessions", Some(session_body("sess_ops"))).await;
    assert_eq!(created["session"]["state"], "active");
    assert_eq!(created["session"]["workflow"]["current_step"], "design");
    http.fails(
        Method::POST,
        "/sessions",
        Some(session_body("sess_ops")),
        StatusCode::CONFLICT,
        "ALREADY_EXISTS",
        "sess_ops",
    )
    .await;

    let added = http
        .ok(
            Method::POST,
            "/sessions/sess_ops/participants",
            Some(json!({"agent_id": REVIEWER, "role": "security-reviewer"})),
        )
        .await;
    let roles: Vec<_> = added["session"]["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["role"].clone())
        .collect();
    assert_eq!(
        roles,
        [json!("orchestrator"), json!("implementer"), json!("security-reviewer")]
    );
    let removed = http
        .ok(
            Method::DELETE,
            &format!("/sessions/sess_ops/participants/{}", encoded(REVIEWER)),
            None,
        )
        .await;
    assert_eq!(removed["session"]["participants"][2]["status"], "left");

    let advanced = http.ok(Method::POST, "/sessions/sess_ops/workflow/advance", None).await;
    assert_eq!(advanced["session"]["workflow"]["current_step"], "build");
    assert_eq!(advanced["session"]["workflow"]["completed_steps"], json!(["design"]));
    let workflow = json!({"current_step": "review", "completed_steps": ["design", "build"], "pending_steps": []});
    let updated = http
        .ok(Method::PUT, "/sessions/sess_ops/workflow", Some(workflow))
        .await;
    assert_eq!(updated["session"]["workflow"]["current_step"], "review");

    // Context: replace, then merge patch guarded by If-Match.
    let replaced = http
        .ok(
            Method::PUT,
            "/sessions/sess_ops/context",
            Some(json!({"branch": "main", "tmp": 1})),
        )
        .await;
    assert_eq!(
        replaced["session"]["shared_context"],
        json!({"branch": "main", "tmp": 1})
    );
    let version = replaced["session"]["version"].as_u64().unwrap();
    let patch = |v: u64| {
        http.request(Method::PATCH, "/sessions/sess_ops/context")
            .header("content-type", "application/merge-patch+json")
            .header("if-match", format!("\"{v}\""))
            .body(json!({"latest_commit": "abc123", "tmp": null}).to_string())
    };
    let (status, stale) = http.send(patch(version - 1)).await;
    assert_error(status, &stale, StatusCode::CONFLICT, "ABORTED", "not the expected");
    let response = patch(version).send().await.unwrap();
    assert_eq!(response.headers()["etag"], format!("\"{}\"", version + 1));
    let merged: Json = response.json().await.unwrap();
    assert_eq!(
        merged["session"]["shared_context"],
        json!({"branch": "main", "latest_commit": "abc123"})
    );

    let complete = json!({"summary": "All tasks completed successfully", "artifacts": ["s3://artifacts/build.zip"]});
    let completed = http
        .ok(Method::POST, "/sessions/sess_ops/complete", Some(complete))
        .await;
    assert_eq!(completed["session"]["state"], "completed");
    assert_eq!(completed["session"]["artifacts"], json!(["s3://artifacts/build.zip"]));
    http.fails(
        Method::POST,
        "/sessions/sess_ops/terminate",
        Some(json!({"reason": "late"})),
        StatusCode::CONFLICT,
        "FAILED_PRECONDITION",
        "sess_ops",
    )
    .await;

    http.ok(Method::POST, "/sessions", Some(session_body("sess_other")))
        .await;
    let terminated = http
        .ok(
            Method::POST,
            "/sessions/sess_other/terminate",
            Some(json!({"reason": "timeout", "details": "no progress"})),
        )
        .await;
    assert_eq!(terminated["session"]["participants"][0]["status"], "session_terminated");
    http.ok(Method::POST, "/sessions", Some(session_body("sess_third")))
        .await;

    let active = http.ok(Method::GET, "/sessions?state=active", None).await;
    assert_eq!(active["sessions"].as_array().unwrap().len(), 1);
    let ended = http
        .ok(Method::GET, "/sessions?state=completed&state=terminated", None)
        .await;
    assert_eq!(ended["sessions"].as_array().unwrap().len(), 2);
    let first = http.ok(Method::GET, "/sessions?page_size=2", None).await;
    let token = first["next_page_token"].as_str().unwrap();
    let second = http
        .ok(Method::GET, &format!("/sessions?page_size=2&page_token={token}"), None)
        .await;
    assert_eq!(second["sessions"][0]["session_id"], "sess_third");
    assert_eq!(second["next_page_token"], "");
    let mine = http
        .ok(
            Method::GET,
            &format!("/sessions?participant={}", encoded(BACKEND)),
            None,
        )
        .await;
    assert_eq!(mine["sessions"].as_array().unwrap().len(), 3);

    // What HTTP wrote, gRPC reads.
    let mut sessions = bus.sessions_with_key(Some(KEY)).await;
    let got = sessions
        .get_session(pb::GetSessionRequest {
            session_id: "sess_ops".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(got.state(), pb::SessionState::Completed);
    assert_eq!(got.summary, "All tasks completed successfully");

    http.fails(
        Method::GET,
        "/sessions/sess_nope",
        None,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "sess_nope",
    )
    .await;
    http.fails(
        Method::POST,
        "/sessions/sess_third/terminate",
        None,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "request body is empty",
    )
    .await;
    http.fails(
        Method::POST,
        "/sessions/sess_third/complete",
        Some(json!({"session_id": "sess_other"})),
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "session_id: the body says \"sess_other\" but the path says \"sess_third\"",
    )
    .await;
    http.fails(
        Method::GET,
        "/sessions?state=sleeping",
        None,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "states[0]: unknown value \"sleeping\"; expected one of: active, completed, terminated, expired",
    )
    .await;
}

#[tokio::test]
async fn session_events_stream_in_order_and_resume_from_last_event_id() {
    let (_bus, http) = bus().await;
    let mut all = http.sse("/sessions/events?after=0", None).await;
    http.ok(Method::POST, "/sessions", Some(session_body("sess_a"))).await;
    http.ok(Method::POST, "/sessions", Some(session_body("sess_b"))).await;
    http.ok(Method::POST, "/sessions/sess_a/workflow/advance", None).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = all.next_event().await;
        let data = event.json();
        assert_eq!(event.id.as_deref(), Some(data["sequence"].to_string().as_str()));
        assert_eq!(event.event.as_deref(), data["type"].as_str());
        seen.push((
            data["sequence"].as_u64().unwrap(),
            data["type"].clone(),
            data["session_id"].clone(),
        ));
    }
    assert_eq!(
        seen,
        [
            (1, json!("session_created"), json!("sess_a")),
            (2, json!("session_created"), json!("sess_b")),
            (3, json!("workflow_updated"), json!("sess_a")),
        ]
    );
    // Keep-alive comments flow while idle.
    let idle = all.next_block(Duration::from_secs(5)).await.unwrap();
    assert!(idle.comments.iter().any(|c| c.starts_with("heartbeat")), "{idle:?}");
    drop(all);

    // A reconnecting client sends Last-Event-ID; it wins over ?after=.
    http.ok(Method::POST, "/sessions/sess_b/complete", None).await;
    let mut resumed = http.sse("/sessions/events?after=0", Some(1)).await;
    let next: Vec<_> = [
        resumed.next_event().await,
        resumed.next_event().await,
        resumed.next_event().await,
    ]
    .iter()
    .map(|e| e.json()["sequence"].as_u64().unwrap())
    .collect();
    assert_eq!(next, [2, 3, 4], "no gap, no duplicate");

    // Filters by session and type.
    let mut filtered = http
        .sse(
            "/sessions/events?after=0&session_id=sess_b&type=session_completed",
            None,
        )
        .await;
    let only = filtered.next_event().await.json();
    assert_eq!(
        (only["sequence"].as_u64(), only["type"].as_str()),
        (Some(4), Some("session_completed"))
    );

    http.fails(
        Method::GET,
        "/sessions/events?after=999",
        None,
        StatusCode::BAD_REQUEST,
        "OUT_OF_RANGE",
        "999",
    )
    .await;
    let bad_resume = http
        .request(Method::GET, "/sessions/events")
        .header("last-event-id", "abc");
    let (status, body) = http.send(bad_resume).await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "Last-Event-ID",
    );
}

fn message(id: &str, from: &str, to: &str, message_type: &str) -> Json {
    json!({
        "message_id": id,
        "sender": {"agent_id": from},
        "recipient": {"agent_id": to},
        "message_type": message_type,
        "priority": "medium",
        "payload": {"id": id},
    })
}

#[tokio::test]
async fn the_inbox_streams_as_sse_and_acks_over_http() {
    let (bus, http) = bus().await;
    for (id, priority) in [("low1", "low"), ("crit", "critical"), ("low2", "low")] {
        let mut body = message(id, ORCHESTRATOR, BACKEND, "task_request");
        body["priority"] = json!(priority);
        http.ok(Method::POST, "/messages/send", Some(body)).await;
    }
    let mut inbox = http.sse(&format!("/agents/{}/messages", encoded(BACKEND)), None).await;
    let mut order = Vec::new();
    for _ in 0..3 {
        let event = inbox.next_event().await;
        assert_eq!(event.event.as_deref(), Some("message"));
        let delivery = event.json();
        assert_eq!(delivery["attempt"], 1);
        assert!(delivery["ack_deadline"].as_str().unwrap().ends_with('Z'));
        let id = delivery["message"]["message_id"].as_str().unwrap().to_owned();
        assert_eq!(event.id.as_deref(), Some(id.as_str()));
        order.push(id);
    }
    assert_eq!(order, ["crit", "low1", "low2"], "priority first, then FIFO");
    let online = http
        .ok(Method::GET, &format!("/agents/{}", encoded(BACKEND)), None)
        .await;
    assert_eq!(online["agent"]["online"], true);

    let acked = http
        .ok(
            Method::POST,
            &format!("/agents/{}/messages/crit/ack", encoded(BACKEND)),
            None,
        )
        .await;
    assert_eq!(acked["state"], "acked");
    let status = http.ok(Method::GET, "/messages/crit", None).await;
    assert_eq!(status["status"]["state"], "acked");
    assert_eq!(status["status"]["attempts"], 1);
    // Several at once, one result each; the raw agent id works in the path.
    let batch = http
        .ok(
            Method::POST,
            &format!("/agents/{BACKEND}/messages/ack"),
            Some(json!({"message_ids": ["low1", "low2", "crit", "nope"]})),
        )
        .await;
    let results: Vec<_> = batch["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let code = (r["code"].clone(), r["code_name"].clone());
            (r["message_id"].clone(), r["state"].clone(), code)
        })
        .collect();
    let (ok, not_found) = ((json!(0), json!("OK")), (json!(5), json!("NOT_FOUND")));
    assert_eq!(
        results,
        [
            (json!("low1"), json!("acked"), ok.clone()),
            (json!("low2"), json!("acked"), ok.clone()),
            (json!("crit"), json!("acked"), ok),
            (json!("nope"), json!(null), not_found),
        ]
    );
    http.fails(
        Method::POST,
        &format!("/agents/{}/messages/ack", encoded(BACKEND)),
        Some(json!({"message_ids": []})),
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "message_ids",
    )
    .await;
    http.fails(
        Method::POST,
        &format!("/agents/{}/messages/ack", encoded(BACKEND)),
        Some(json!({"agent_id": REVIEWER, "message_ids": ["low1"]})),
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "the path says",
    )
    .await;
    http.fails(
        Method::POST,
        &format!("/agents/{}/messages/crit/ack", encoded(REVIEWER)),
        None,
        StatusCode::CONFLICT,
        "FAILED_PRECONDITION",
        "crit",
    )
    .await;
    http.fails(
        Method::GET,
        "/messages/nope",
        None,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "nope",
    )
    .await;

    // With a prefetch limit of 1 the next message waits for the ack.
    http.ok(
        Method::POST,
        "/messages/send",
        Some(message("next1", ORCHESTRATOR, REVIEWER, "task_request")),
    )
    .await;
    http.ok(
        Method::POST,
        "/messages/send",
        Some(message("next2", ORCHESTRATOR, REVIEWER, "task_request")),
    )
    .await;
    let mut limited = http
        .sse(&format!("/agents/{}/messages?max_in_flight=1", encoded(REVIEWER)), None)
        .await;
    assert_eq!(limited.next_event().await.id.as_deref(), Some("next1"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        http.ok(Method::GET, "/messages/next2", None).await["status"]["attempts"],
        0
    );
    http.ok(
        Method::POST,
        &format!("/agents/{}/messages/next1/ack", encoded(REVIEWER)),
        None,
    )
    .await;
    assert_eq!(limited.next_event().await.id.as_deref(), Some("next2"));

    // gRPC sees the acks made over HTTP.
    let mut messages = bus.messages().await;
    let mut request = tonic::Request::new(pb::GetMessageRequest {
        message_id: "crit".into(),
    });
    request.metadata_mut().insert("x-agent-api-key", KEY.parse().unwrap());
    let status = messages
        .get_message(request)
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(status.state(), pb::MessageState::Acked);
    http.fails(
        Method::GET,
        "/agents/codex%3A%2F%2Fghost/messages",
        None,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "agent codex://ghost is not registered",
    )
    .await;
}

#[tokio::test]
async fn sync_sends_return_the_reply() {
    let (_bus, http) = bus().await;
    let mut inbox = http.sse(&format!("/agents/{}/messages", encoded(BACKEND)), None).await;
    let responder = {
        let http = Http {
            base: http.base.clone(),
            client: reqwest::Client::new(),
            key: Some(KEY.into()),
        };
        tokio::spawn(async move {
            let request = inbox.next_event().await.json();
            let id = request["message"]["message_id"].as_str().unwrap().to_owned();
            http.ok(
                Method::POST,
                &format!("/agents/{}/messages/{id}/ack", encoded(BACKEND)),
                None,
            )
            .await;
            let mut reply = message("answer", BACKEND, ORCHESTRATOR, "task_response");
            reply["in_reply_to"] = json!(id);
            http.ok(Method::POST, "/messages/send", Some(reply)).await;
        })
    };
    let mut request = message("question", ORCHESTRATOR, BACKEND, "task_request");
    request["routing"] = json!({"timeout": "10s", "delivery_mode": "sync"});
    let answer = http.ok(Method::POST, "/messages/send", Some(request)).await;
    assert_eq!(answer["message_id"], "question");
    assert_eq!(answer["reply"]["message_id"], "answer");
    assert_eq!(answer["reply"]["message_type"], "task_response");
    responder.await.unwrap();

    let mut lonely = message("unanswered", ORCHESTRATOR, REVIEWER, "task_request");
    lonely["routing"] = json!({"timeout": "0.3s", "delivery_mode": "sync"});
    http.fails(
        Method::POST,
        "/messages/send",
        Some(lonely),
        StatusCode::GATEWAY_TIMEOUT,
        "DEADLINE_EXCEEDED",
        "unanswered",
    )
    .await;

    // The caller's own deadline (`grpc-timeout`, as over gRPC) ends the
    // wait before a longer routing timeout.
    let mut impatient = message("impatient", ORCHESTRATOR, REVIEWER, "task_request");
    impatient["routing"] = json!({"timeout": "30s", "delivery_mode": "sync"});
    let started = std::time::Instant::now();
    let request = http
        .request(Method::POST, "/messages/send")
        .header("grpc-timeout", "500m")
        .json(&impatient);
    let (status, answer) = http.send(request).await;
    assert_error(
        status,
        &answer,
        StatusCode::GATEWAY_TIMEOUT,
        "DEADLINE_EXCEEDED",
        "impatient",
    );
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

#[tokio::test]
async fn bad_messages_name_the_field() {
    let (_bus, http) = bus().await;
    let base = message("m1", ORCHESTRATOR, BACKEND, "task_request");
    let with = |path: &[&str], value: Json| {
        let mut body = base.clone();
        let mut target = &mut body;
        for key in &path[..path.len() - 1] {
            target = target.as_object_mut().unwrap().entry(*key).or_insert(json!({}));
        }
        target[path[path.len() - 1]] = value;
        body
    };
    let cases = [
        (
            with(&["message_type"], json!("task")),
            "message_type: unknown value \"task\"; expected one of: task_request",
        ),
        (
            with(&["priority"], json!(3)),
            "priority: expected a string, got a number",
        ),
        (
            with(&["routing", "retry_policy", "backoff"], json!("random")),
            "routing.retry_policy.backoff: unknown value",
        ),
        (
            with(&["routing", "timeout"], json!("forever")),
            "routing.timeout: expected a duration",
        ),
        (
            with(&["routing", "retry_policy", "max_retries"], json!(99_999_999_999u64)),
            "routing.retry_policy.max_retries: 99999999999 is out of range",
        ),
        (
            with(&["timestamp"], json!("yesterday")),
            "timestamp: \"yesterday\" is not an RFC 3339 timestamp",
        ),
        (
            with(&["sender"], json!("me")),
            "sender: expected an object, got a string",
        ),
        (with(&["colour"], json!("blue")), "colour: unknown field"),
        (with(&["recipient", "agent_id"], json!("nobody")), "recipient.agent_id"),
        (
            with(&["payload"], nested(31)),
            "request body: nested deeper than 32 levels",
        ),
    ];
    for (body, expected) in cases {
        http.fails(
            Method::POST,
            "/messages/send",
            Some(body),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            expected,
        )
        .await;
    }
    http.fails(
        Method::POST,
        "/messages/send",
        Some(message("m2", ORCHESTRATOR, "codex://ghost", "task_request")),
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "agent codex://ghost is not registered",
    )
    .await;
}

/// The payload takes a shorter way into the message than the other
/// fields: it arrives exactly as sent, and the body's depth limit counts it
/// (up to the limit here; past it in `bad_messages_name_the_field`).
#[tokio::test]
async fn payloads_arrive_as_sent_and_count_toward_the_depth_limit() {
    let (_bus, http) = bus().await;
    let payload = json!({
        "text": "héllo \"quoted\" \n line",
        "n": 42, "x": -1.5, "big": 12345678901u64, "ok": true, "none": null,
        "list": [1, "two", {"three": [3]}, []],
        "nested": {"a": {"b": {"c": {}}}},
    });
    let mut body = message("as-sent", ORCHESTRATOR, BACKEND, "task_request");
    body["payload"] = payload.clone();
    http.ok(Method::POST, "/messages/send", Some(body)).await;
    let stored = http.ok(Method::GET, "/messages/as-sent", None).await;
    assert_eq!(stored["status"]["message"]["payload"], payload, "{stored}");
    // A null payload is an absent one, as for every other field.
    let mut body = message("no-payload", ORCHESTRATOR, BACKEND, "task_request");
    body["payload"] = Json::Null;
    let (status, _) = http.call(Method::POST, "/messages/send", Some(body.clone())).await;
    body.as_object_mut().unwrap().remove("payload");
    let (without, _) = http.call(Method::POST, "/messages/send", Some(body)).await;
    assert_eq!(status, without);
    // {"message": {"payload": ...}} may nest 32 levels: 30 in the payload
    // (31 is refused: `bad_messages_name_the_field`).
    let mut body = message("deep-ok", ORCHESTRATOR, BACKEND, "task_request");
    body["payload"] = nested(30);
    http.ok(Method::POST, "/messages/send", Some(body)).await;
}

/// A JSON object `levels` deep.
fn nested(levels: usize) -> Json {
    (1..levels).fold(json!({}), |inner, _| json!({ "k": inner }))
}

#[tokio::test]
async fn malformed_requests_get_4xx_json_and_the_server_stays_healthy() {
    let bus = Bus::start(&[
        "--api-key",
        KEY,
        "--store",
        "memory",
        "--max-message-bytes",
        "65536",
        "--max-context-bytes",
        "16384",
    ])
    .await;
    let http = Http::new(&bus, Some(KEY));
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let deep_object = format!(
        "{{\"payload\": {}{}}}",
        "{\"a\":".repeat(100),
        "1".to_owned() + &"}".repeat(100)
    );
    // (name, body, content type, status, part of the error)
    type Case<'a> = (&'a str, Vec<u8>, Option<&'a str>, StatusCode, &'a str);
    let cases: Vec<Case> = vec![
        (
            "truncated",
            br#"{"message_id": "x", "sender": {"#.to_vec(),
            None,
            StatusCode::BAD_REQUEST,
            "not valid JSON",
        ),
        (
            "empty",
            Vec::new(),
            None,
            StatusCode::BAD_REQUEST,
            "request body is empty",
        ),
        (
            "whitespace",
            b"  \n ".to_vec(),
            None,
            StatusCode::BAD_REQUEST,
            "request body is empty",
        ),
        (
            "array",
            b"[1, 2]".to_vec(),
            None,
            StatusCode::BAD_REQUEST,
            "expected a JSON object, got an array",
        ),
        (
            "huge number",
            br#"{"routing": {"retry_policy": {"max_retries": 1e999}}}"#.to_vec(),
            None,
            StatusCode::BAD_REQUEST,
            "not valid JSON",
        ),
        (
            "invalid UTF-8",
            b"{\"message_id\": \"\xff\xfe\"}".to_vec(),
            None,
            StatusCode::BAD_REQUEST,
            "not valid JSON",
        ),
        (
            "deep nesting",
            deep.into_bytes(),
            None,
            StatusCode::BAD_REQUEST,
            "not valid JSON",
        ),
        (
            "deep payload",
            deep_object.into_bytes(),
            None,
            StatusCode::BAD_REQUEST,
            "nested deeper",
        ),
        (
            "wrong type",
            br#"{"sender": ["a"]}"#.to_vec(),
            None,
            StatusCode::BAD_REQUEST,
            "sender: expected an object, got an array",
        ),
        (
            "form content type",
            b"{}".to_vec(),
            Some("application/x-www-form-urlencoded"),
            StatusCode::BAD_REQUEST,
            "Content-Type must be application/json",
        ),
        (
            "too large",
            vec![b' '; 70_000],
            None,
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than the limit of 65536 bytes",
        ),
    ];
    for (name, body, content_type, status, message) in cases {
        let request = http
            .request(Method::POST, "/messages/send")
            .header("content-type", content_type.unwrap_or("application/json"))
            .body(body);
        let (got, answer) = http.send(request).await;
        assert_eq!(got, status, "{name}: {answer}");
        assert_eq!(answer["success"], false, "{name}");
        assert!(answer["error"].as_str().unwrap().contains(message), "{name}: {answer}");
    }
    let (status, body) = http.call(Method::GET, "/no/such/route", None).await;
    assert_error(
        status,
        &body,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "no route for GET /no/such/route",
    );
    let (status, body) = http.call(Method::DELETE, "/messages/send", None).await;
    assert_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "UNIMPLEMENTED",
        "DELETE is not allowed",
    );
    let (status, body) = http.call(Method::PUT, "/agents/opencode%3A%2F%2Fbackend", None).await;
    assert_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "UNIMPLEMENTED",
        "PUT is not allowed",
    );

    let (status, health) = http.call(Method::GET, "/health", None).await;
    assert_eq!((status, health["status"].clone()), (StatusCode::OK, json!("healthy")));
    let mut grpc = bus.agents().await;
    let mut request = tonic::Request::new(pb::ListAgentsRequest::default());
    request.metadata_mut().insert("x-agent-api-key", KEY.parse().unwrap());
    assert!(grpc.list_agents(request).await.is_ok(), "gRPC still served");
}

#[tokio::test]
async fn http2_works_on_the_same_port() {
    let (bus, _http) = bus().await;
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let response = client
        .get(format!("{}/agents", bus.url()))
        .header("x-agent-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let body: Json = response.json().await.unwrap();
    assert_eq!(body["agents"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn metrics_report_real_values_as_json_and_prometheus_text() {
    let (_bus, http) = bus().await;
    http.ok(
        Method::POST,
        "/messages/send",
        Some(message("m1", ORCHESTRATOR, BACKEND, "task_request")),
    )
    .await;
    http.ok(
        Method::POST,
        "/messages/send",
        Some(message("m2", BACKEND, ORCHESTRATOR, "status_update")),
    )
    .await;
    http.ok(Method::POST, "/sessions", Some(session_body("sess_m"))).await;
    let mut inbox = http.sse(&format!("/agents/{}/messages", encoded(BACKEND)), None).await;
    inbox.next_event().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    http.ok(
        Method::POST,
        &format!("/agents/{}/messages/m1/ack", encoded(BACKEND)),
        None,
    )
    .await;
    http.fails(
        Method::GET,
        "/sessions/sess_nope",
        None,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "",
    )
    .await;

    // Made-up paths do not become labels, with or without a gRPC content type.
    for path in [
        "/agentbus.v1.MessageService/Bogus123",
        "/agents/random-xyz",
        "/nowhere-abc",
    ] {
        let _ = http
            .request(Method::POST, path)
            .header("content-type", "application/grpc")
            .send()
            .await
            .unwrap();
    }

    let metrics = http.ok_plain(Method::GET, "/metrics").await;
    assert_eq!(metrics["total_messages"], 2);
    assert_eq!(metrics["active_sessions"], 1);
    assert_eq!(metrics["registered_agents"], 3);
    assert!(metrics["average_response_time"].as_f64().unwrap() >= 20.0, "{metrics}");
    let error_rate = metrics["error_rate"].as_f64().unwrap();
    assert!(error_rate > 0.0 && error_rate < 0.5, "{metrics}");
    assert!(metrics["uptime"].as_u64().unwrap() > 0);
    assert!(metrics["throughput"].as_f64().is_some());
    assert_eq!(metrics["messages"]["sent_by_type"]["status_update"], 1);

    for (accept, content_type, format) in [
        (
            "text/plain",
            "text/plain; version=0.0.4; charset=utf-8",
            Format::Prometheus,
        ),
        (
            "application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::OpenMetrics,
        ),
    ] {
        let response = http
            .request(Method::GET, "/metrics")
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["content-type"], content_type);
        let text = response.text().await.unwrap();
        let scrape = Exposition::parse(format, &text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
        for (name, labels, value) in [
            ("agentbus_messages_sent_total", &[("type", "task_request")][..], 1.0),
            ("agentbus_messages_acked_total", &[], 1.0),
            (
                "agentbus_requests_total",
                &[("transport", "http"), ("route", "POST /messages/send"), ("code", "OK")],
                2.0,
            ),
            (
                "agentbus_requests_total",
                &[
                    ("transport", "http"),
                    ("route", "GET /sessions/{session_id}"),
                    ("code", "NOT_FOUND"),
                ],
                1.0,
            ),
            (
                "agentbus_request_duration_seconds_count",
                &[("transport", "http"), ("route", "POST /messages/send")],
                2.0,
            ),
            (
                "agentbus_message_ack_duration_seconds_count",
                &[("type", "task_request")],
                1.0,
            ),
            (
                "agentbus_message_ack_duration_seconds_bucket",
                &[("type", "task_request"), ("le", "+Inf")],
                1.0,
            ),
            ("agentbus_active_sessions", &[], 1.0),
        ] {
            assert_eq!(scrape.value(name, labels), Some(value), "{name} {labels:?} in:\n{text}");
        }
        for made_up in ["Bogus123", "random-xyz", "nowhere-abc"] {
            assert!(!text.contains(made_up), "{made_up} became a label:\n{text}");
        }
    }
}

impl Http {
    /// GET whose JSON has no `success` field (`/metrics`).
    async fn ok_plain(&self, method: Method, path: &str) -> Json {
        let (status, body) = self.call(method, path, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

#[tokio::test]
async fn health_is_503_while_draining_and_sse_streams_end() {
    let mut bus = Bus::start(&[
        "--store",
        "memory",
        "--shutdown-drain",
        "2s",
        "--heartbeat-interval",
        "200ms",
    ])
    .await;
    let http = Http::new(&bus, None);
    let mut events = http.sse("/sessions/events", None).await;
    bus.signal(libc::SIGTERM);
    // The open stream gets an error event and ends.
    let last = events.next_event().await;
    assert_eq!(last.event.as_deref(), Some("error"));
    assert_eq!(last.json()["code"], "UNAVAILABLE");
    assert!(
        events.next_block(Duration::from_secs(5)).await.is_none(),
        "the stream ended"
    );
    let fresh = Http::new(&bus, None);
    let (status, health) = fresh.call(Method::GET, "/health", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health["status"], "shutting_down");
    let exit = bus
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("server exits after draining");
    assert!(exit.success(), "{exit:?}");
}
