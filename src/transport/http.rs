//! The HTTP/JSON gateway: the prototype's REST API and one route for every
//! gRPC operation, on the same port as gRPC.
//!
//! A handler turns the path, query and JSON body into the RPC's request
//! message (in the JSON dialect of [`dialect`]), calls the very gRPC handler
//! a gRPC client would reach, and writes the response message as JSON with
//! `"success": true`. Validation, conversion and every rule therefore exist
//! once. Errors become `{"success":false,"error":..,"code":..}` with the
//! HTTP status from [`errors`]. Streams are Server-Sent Events.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prost::{Message, Name};
use serde_json::{Map, Value as Json, json};
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tower_http::decompression::RequestDecompressionLayer;

use super::auth::{API_KEY_HEADER, ApiKeyAuth};
use super::dialect;
use super::errors::{code_name, code_of_http_status, http_status, status};
use super::grpc::SessionGrpc;
use super::grpc_messages::{AgentGrpc, MessageGrpc};
use super::metrics_http::{self, RequestMetrics};
use crate::app::metrics::Metrics;
use crate::domain::Error;
use crate::pb;
use crate::pb::agent_service_server::AgentService;
use crate::pb::message_service_server::MessageService;
use crate::pb::session_service_server::SessionService;
use crate::store::Store;

/// What the gateway calls: the gRPC handlers and, for `/metrics`, the
/// counters and the store's gauges.
pub struct Gateway {
    pub sessions: Arc<SessionGrpc>,
    pub agents: Arc<AgentGrpc>,
    pub messages: Arc<MessageGrpc>,
    pub auth: ApiKeyAuth,
    pub metrics: Arc<Metrics>,
    pub requests: Arc<RequestMetrics>,
    pub store: Arc<dyn Store>,
    pub max_body_bytes: usize,
    pub started: Instant,
    pub shutdown: CancellationToken,
}

type Gw = State<Arc<Gateway>>;

/// An error answered as `{"success":false,"error":..,"code":..}`.
#[derive(Debug)]
pub struct HttpError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl HttpError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
    }
}

impl From<Status> for HttpError {
    fn from(status: Status) -> Self {
        Self::new(http_status(status.code()), code_name(status.code()), status.message())
    }
}

impl From<Error> for HttpError {
    fn from(error: Error) -> Self {
        status(error).into()
    }
}

/// The gRPC code name of an error response, for the request metrics.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = json!({"success": false, "error": self.message, "code": self.code});
        let mut response = json_response(self.status, &body);
        response.extensions_mut().insert(ErrorCode(self.code));
        response
    }
}

pub(super) fn json_response(status: StatusCode, body: &Json) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

type HttpResult = Result<Response, HttpError>;

pub fn router(gateway: Arc<Gateway>) -> Router {
    let authenticated = Router::new()
        .route("/agents/register", post(register_agent))
        .route("/agents", get(list_agents))
        .route(
            "/agents/{*rest}",
            get(agent_route).delete(agent_route).post(agent_route),
        )
        .route("/messages/send", post(send_message))
        .route("/messages/{message_id}", get(get_message))
        .route("/sessions", post(create_session).get(list_sessions))
        .route("/sessions/events", get(watch_sessions))
        .route("/sessions/{session_id}", get(get_session))
        .route("/sessions/{session_id}/participants", post(add_participant))
        .route(
            "/sessions/{session_id}/participants/{*agent_id}",
            axum::routing::delete(remove_participant),
        )
        .route("/sessions/{session_id}/workflow", put(update_workflow))
        .route("/sessions/{session_id}/workflow/advance", post(advance_workflow))
        .route(
            "/sessions/{session_id}/context",
            put(replace_context).patch(merge_context),
        )
        .route("/sessions/{session_id}/complete", post(complete_session))
        .route("/sessions/{session_id}/terminate", post(terminate_session))
        .route("/metrics", get(metrics_http::metrics))
        .route_layer(middleware::from_fn_with_state(gateway.clone(), authenticate));
    Router::new()
        .route("/health", get(health))
        .merge(authenticated)
        .method_not_allowed_fallback(method_not_allowed)
        // gzip bodies are decoded (and the body limit applies to what they
        // decode to); any other Content-Encoding is 415.
        .layer(RequestDecompressionLayer::new())
        .layer(middleware::from_fn(json_errors))
        .with_state(gateway)
}

/// Gives every error answer the JSON shape, including those made outside
/// our handlers: axum's extractor rejections (such as a path that is not
/// UTF-8) and the decompression layer's 415. Their text becomes `error`.
async fn json_errors(request: Request, next: Next) -> Response {
    let encoding = request.headers().get(header::CONTENT_ENCODING).cloned();
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match Limited::new(body, 16 * 1024).collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).trim().to_owned(),
        Err(_) => String::new(),
    };
    let message = match (status, encoding) {
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, Some(encoding)) if text.is_empty() => format!(
            "Content-Encoding {:?} is not supported; send the body as it is or gzip-compressed",
            String::from_utf8_lossy(encoding.as_bytes())
        ),
        _ if text.is_empty() => status.canonical_reason().unwrap_or("error").to_owned(),
        _ => text,
    };
    let mut answer = HttpError::new(status, code_of_http_status(status), message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}

/// Answers requests no route matched: gRPC calls get UNIMPLEMENTED, the
/// rest a JSON 404.
pub async fn not_found(request: Request) -> Response {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        let status = Status::unimplemented(format!("no such method: {}", request.uri().path()));
        return status.into_http();
    }
    HttpError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("no route for {} {}", request.method(), request.uri().path()),
    )
    .into_response()
}

async fn method_not_allowed(request: Request) -> Response {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "UNIMPLEMENTED",
        format!("{} is not allowed on {}", request.method(), request.uri().path()),
    )
    .into_response()
}

async fn authenticate(State(gw): Gw, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let values = |name: &'static str| headers.get_all(name).into_iter().map(HeaderValue::as_bytes);
    match gw
        .auth
        .check(values(API_KEY_HEADER), values(header::AUTHORIZATION.as_str()))
    {
        Ok(()) => next.run(request).await,
        Err(reason) => HttpError::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", reason).into_response(),
    }
}

async fn health(State(gw): Gw) -> Response {
    let uptime = u64::try_from(gw.started.elapsed().as_millis()).unwrap_or(u64::MAX);
    if gw.shutdown.is_cancelled() {
        let body = json!({"status": "shutting_down", "uptime": uptime});
        return json_response(StatusCode::SERVICE_UNAVAILABLE, &body);
    }
    json_response(StatusCode::OK, &json!({"status": "healthy", "uptime": uptime}))
}

/// Reads a JSON object body. An empty body is `{}` unless `required`.
async fn json_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    required: bool,
) -> Result<Map<String, Json>, HttpError> {
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        let essence = content_type
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(HttpError::invalid(format!(
                "Content-Type must be application/json, got {:?}",
                content_type.to_str().unwrap_or("(not text)")
            )));
        }
    }
    let too_large = || {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RESOURCE_EXHAUSTED",
            format!("request body is larger than the limit of {limit} bytes"),
        )
    };
    // Refused before a byte of it is read.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let bytes: Bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => return Err(too_large()),
        Err(e) => return Err(HttpError::invalid(format!("cannot read the request body: {e}"))),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        if required {
            return Err(HttpError::invalid("request body is empty; expected a JSON object"));
        }
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Json>(&bytes) {
        Ok(Json::Object(object)) => Ok(object),
        Ok(other) => Err(Error::invalid(
            "request body",
            format!("expected a JSON object, got {}", dialect::type_name(&other)),
        )
        .into()),
        Err(e) => Err(HttpError::invalid(format!("request body is not valid JSON: {e}"))),
    }
}

/// Sets `key` from the path; a body that says otherwise is refused.
fn from_path(object: &mut Map<String, Json>, key: &str, value: &str) -> Result<(), HttpError> {
    match object.get(key) {
        Some(Json::String(given)) if given != value => {
            Err(Error::invalid(key, format!("the body says {given:?} but the path says {value:?}")).into())
        }
        _ => {
            object.insert(key.to_owned(), Json::String(value.to_owned()));
            Ok(())
        }
    }
}

/// `If-Match: "7"` (or `7`) becomes `expected_version`; `*` asks for no
/// particular version. If-Match compares entity tags strongly (RFC 9110
/// 13.1.1), so a weak tag such as `W/"7"` never matches: 412.
fn if_match(headers: &HeaderMap, object: &mut Map<String, Json>) -> Result<(), HttpError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(());
    }
    if text.starts_with("W/") {
        return Err(HttpError::new(
            StatusCode::PRECONDITION_FAILED,
            "FAILED_PRECONDITION",
            format!(
                "If-Match: {text} is a weak entity tag, and If-Match compares strongly (RFC 9110), \
                 so it never matches; send the ETag as given, e.g. \"7\""
            ),
        ));
    }
    let unquoted = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
    let version = unquoted
        .parse::<u64>()
        .map_err(|_| Error::invalid("If-Match", format!("expected a session version number, got {text:?}")))?;
    object.insert("expected_version".into(), Json::from(version));
    Ok(())
}

/// Query parameters as a JSON object of strings (the dialect reads numbers
/// and booleans from strings): names mapped by `aliases`, those in `lists`
/// collected into arrays.
fn query(raw: Option<&str>, aliases: &[(&str, &str)], lists: &[&str]) -> Map<String, Json> {
    let mut object = Map::new();
    for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let name = aliases
            .iter()
            .find(|(alias, _)| *alias == key)
            .map_or(key.as_ref(), |(_, field)| field)
            .to_owned();
        let value = Json::String(value.into_owned());
        if lists.contains(&name.as_str()) {
            let entry = object.entry(name).or_insert_with(|| Json::Array(Vec::new()));
            if let Json::Array(items) = entry {
                items.push(value);
            }
        } else {
            object.insert(name, value);
        }
    }
    object
}

/// Decodes `request` into `Req`, calls the gRPC handler, and answers with
/// the response as JSON plus `"success": true`.
async fn call<Req, Resp, Fut>(
    request: Map<String, Json>,
    handler: impl FnOnce(tonic::Request<Req>) -> Fut,
) -> Result<Map<String, Json>, HttpError>
where
    Req: Message + Name + Default,
    Resp: Message + Name,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let decoded: Req = dialect::from_json(&Json::Object(request))?;
    let response = handler(tonic::Request::new(decoded)).await?;
    let mut object = Map::new();
    object.insert("success".into(), Json::Bool(true));
    object.extend(dialect::to_json(response.get_ref()));
    Ok(object)
}

fn ok(object: Map<String, Json>) -> HttpResult {
    let etag = object
        .get("session")
        .and_then(|s| s.get("version"))
        .and_then(Json::as_u64);
    let mut response = json_response(StatusCode::OK, &Json::Object(object));
    if let Some(version) = etag
        && let Ok(value) = HeaderValue::from_str(&format!("\"{version}\""))
    {
        response.headers_mut().insert(header::ETAG, value);
    }
    Ok(response)
}

// ---- Agents -----------------------------------------------------------

/// The prototype's body is `{"agent_descriptor": {..}, "health_check_url",
/// "status_endpoint", "authentication"}`; ours is `{"agent": {..}, "update"}`.
/// Both are accepted, and `capabilities` may be a plain list of strings
/// (taken as optimal tasks).
async fn register_agent(State(gw): Gw, headers: HeaderMap, body: Body) -> HttpResult {
    let mut request = json_body(&headers, body, gw.max_body_bytes, true).await?;
    if let Some(descriptor) = request.remove("agent_descriptor") {
        if request.contains_key("agent") {
            return Err(HttpError::invalid("give either agent or agent_descriptor, not both"));
        }
        request.insert("agent".into(), descriptor);
    }
    // The prototype's per-agent credentials; the bus authenticates callers
    // with its own API key instead.
    request.remove("authentication");
    for key in ["health_check_url", "status_endpoint"] {
        if let Some(value) = request.remove(key)
            && let Some(Json::Object(agent)) = request.get_mut("agent")
        {
            agent.entry(key).or_insert(value);
        }
    }
    if let Some(Json::Object(agent)) = request.get_mut("agent")
        && let Some(Json::Array(list)) = agent.get("capabilities").cloned()
    {
        agent.insert("capabilities".into(), json!({"optimal_tasks": list}));
    }
    let mut answer = call(request, |r| gw.agents.register_agent(r)).await?;
    let agent_id = answer
        .get("agent")
        .and_then(|a| a.get("descriptor"))
        .and_then(|d| d.get("agent_id"))
        .cloned()
        .unwrap_or(Json::Null);
    answer.insert("agent_id".into(), agent_id);
    ok(answer)
}

async fn list_agents(State(gw): Gw, RawQuery(raw): RawQuery) -> HttpResult {
    let request = query(raw.as_deref(), &[], &[]);
    ok(call(request, |r| gw.agents.list_agents(r)).await?)
}

/// `/agents/{agent_id}`, `/agents/{agent_id}/messages`,
/// `/agents/{agent_id}/messages/{message_id}/ack` and
/// `/agents/{agent_id}/messages/ack` (body `{"message_ids": [...]}`). The
/// agent id may be URL-encoded or not (`opencode://backend` has slashes).
async fn agent_route(
    State(gw): Gw,
    method: Method,
    Path(rest): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> HttpResult {
    let (agent_id, sub) = split_agent_path(&rest);
    let segments: Vec<&str> = sub.split('/').filter(|s| !s.is_empty()).collect();
    let mut request = Map::new();
    request.insert("agent_id".into(), Json::String(agent_id.to_owned()));
    match (method, segments.as_slice()) {
        (Method::GET, []) => ok(call(request, |r| gw.agents.get_agent(r)).await?),
        (Method::DELETE, []) => ok(call(request, |r| gw.agents.unregister_agent(r)).await?),
        (Method::GET, ["messages"]) => {
            // `?max_in_flight=N`: the prefetch limit.
            request.extend(query(raw.as_deref(), &[], &[]));
            from_path(&mut request, "agent_id", agent_id)?;
            inbox(&gw, request).await
        }
        (Method::POST, ["messages", message_id, "ack"]) => {
            request.insert("message_id".into(), Json::String((*message_id).to_owned()));
            ok(call(request, |r| gw.messages.ack_message(r)).await?)
        }
        (Method::POST, ["messages", "ack"]) => {
            let mut body = json_body(&headers, body, gw.max_body_bytes, true).await?;
            from_path(&mut body, "agent_id", agent_id)?;
            ok(call(body, |r| gw.messages.ack_messages(r)).await?)
        }
        (method, [] | ["messages"] | ["messages", "ack"] | ["messages", _, "ack"]) => Err(HttpError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNIMPLEMENTED",
            format!("{method} is not allowed on /agents/{rest}"),
        )),
        _ => Err(HttpError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no route for /agents/{rest}"),
        )),
    }
}

/// `opencode://backend/messages` -> (`opencode://backend`, `/messages`).
fn split_agent_path(rest: &str) -> (&str, &str) {
    let name_start = rest.find("://").map_or(0, |i| i + 3);
    let end = rest[name_start..].find('/').map_or(rest.len(), |i| name_start + i);
    (&rest[..end], &rest[end..])
}

// ---- Messages ---------------------------------------------------------

/// The prototype's `POST /messages/send`: the body is the message itself.
async fn send_message(State(gw): Gw, headers: HeaderMap, body: Body) -> HttpResult {
    let message = json_body(&headers, body, gw.max_body_bytes, true).await?;
    let mut request = Map::new();
    request.insert("message".into(), Json::Object(message));
    ok(call(request, |r| gw.messages.send_message(r)).await?)
}

async fn get_message(State(gw): Gw, Path(message_id): Path<String>) -> HttpResult {
    let mut request = Map::new();
    request.insert("message_id".into(), Json::String(message_id));
    ok(call(request, |r| gw.messages.get_message(r)).await?)
}

/// The inbox as Server-Sent Events: `event: message`, `id:` the message id,
/// `data:` the delivery; acknowledge with `POST .../ack`. `?max_in_flight=N`
/// holds deliveries back until earlier ones are acknowledged.
async fn inbox(gw: &Gateway, request: Map<String, Json>) -> HttpResult {
    let decoded: pb::ReceiveMessagesRequest = dialect::from_json(&Json::Object(request))?;
    let stream = gw
        .messages
        .receive_messages(tonic::Request::new(decoded))
        .await?
        .into_inner();
    let events = stream.map(|item| match item {
        Ok(pb::ReceiveMessagesResponse {
            kind: Some(pb::receive_messages_response::Kind::Delivery(delivery)),
        }) => {
            let id = delivery
                .message
                .as_ref()
                .map(|m| m.message_id.clone())
                .unwrap_or_default();
            Event::default()
                .event("message")
                .id(id)
                .data(Json::Object(dialect::to_json(&delivery)).to_string())
        }
        Ok(pb::ReceiveMessagesResponse {
            kind: Some(pb::receive_messages_response::Kind::Heartbeat(beat)),
        }) => Event::default().comment(format!("heartbeat inbox_depth={}", beat.inbox_depth)),
        Ok(_) => Event::default().comment(""),
        Err(status) => error_event(&status),
    });
    Ok(sse(events))
}

// ---- Sessions ---------------------------------------------------------

async fn create_session(State(gw): Gw, headers: HeaderMap, body: Body) -> HttpResult {
    let request = json_body(&headers, body, gw.max_body_bytes, true).await?;
    ok(call(request, |r| gw.sessions.create_session(r)).await?)
}

async fn list_sessions(State(gw): Gw, RawQuery(raw): RawQuery) -> HttpResult {
    let request = query(raw.as_deref(), &[("state", "states")], &["states"]);
    ok(call(request, |r| gw.sessions.list_sessions(r)).await?)
}

async fn get_session(State(gw): Gw, Path(session_id): Path<String>) -> HttpResult {
    let mut request = Map::new();
    request.insert("session_id".into(), Json::String(session_id));
    ok(call(request, |r| gw.sessions.get_session(r)).await?)
}

/// A session mutation: the body plus the session id from the path and
/// `If-Match` as `expected_version`.
async fn mutation(
    gw: &Gateway,
    session_id: &str,
    headers: &HeaderMap,
    body: Body,
    required: bool,
) -> Result<Map<String, Json>, HttpError> {
    let mut request = json_body(headers, body, gw.max_body_bytes, required).await?;
    from_path(&mut request, "session_id", session_id)?;
    if_match(headers, &mut request)?;
    Ok(request)
}

/// The body is either `{"participant": {..}}` or the participant itself.
async fn add_participant(State(gw): Gw, Path(id): Path<String>, headers: HeaderMap, body: Body) -> HttpResult {
    let mut request = json_body(&headers, body, gw.max_body_bytes, true).await?;
    if !request.contains_key("participant") {
        let version = request.remove("expected_version");
        let spec = std::mem::take(&mut request);
        request.insert("participant".into(), Json::Object(spec));
        if let Some(version) = version {
            request.insert("expected_version".into(), version);
        }
    }
    from_path(&mut request, "session_id", &id)?;
    if_match(&headers, &mut request)?;
    ok(call(request, |r| gw.sessions.add_participant(r)).await?)
}

async fn remove_participant(
    State(gw): Gw,
    Path((id, agent_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> HttpResult {
    let mut request = Map::new();
    from_path(&mut request, "session_id", &id)?;
    from_path(&mut request, "agent_id", &agent_id)?;
    if_match(&headers, &mut request)?;
    ok(call(request, |r| gw.sessions.remove_participant(r)).await?)
}

async fn update_workflow(State(gw): Gw, Path(id): Path<String>, headers: HeaderMap, body: Body) -> HttpResult {
    let request = mutation(&gw, &id, &headers, body, true).await?;
    ok(call(request, |r| gw.sessions.update_workflow(r)).await?)
}

async fn advance_workflow(State(gw): Gw, Path(id): Path<String>, headers: HeaderMap, body: Body) -> HttpResult {
    let request = mutation(&gw, &id, &headers, body, false).await?;
    ok(call(request, |r| gw.sessions.advance_workflow(r)).await?)
}

async fn replace_context(State(gw): Gw, Path(id): Path<String>, headers: HeaderMap, body: Body) -> HttpResult {
    update_context(&gw, &id, &headers, body, "replace").await
}

/// RFC 7386 JSON merge patch (`application/merge-patch+json` or JSON).
async fn merge_context(State(gw): Gw, Path(id): Path<String>, headers: HeaderMap, body: Body) -> HttpResult {
    update_context(&gw, &id, &headers, body, "merge").await
}

/// The body is the context object (or the patch) itself.
async fn update_context(gw: &Gateway, id: &str, headers: &HeaderMap, body: Body, mode: &str) -> HttpResult {
    let context = json_body(headers, body, gw.max_body_bytes, true).await?;
    let mut request = Map::new();
    request.insert("context".into(), Json::Object(context));
    request.insert("mode".into(), Json::String(mode.into()));
    from_path(&mut request, "session_id", id)?;
    if_match(headers, &mut request)?;
    ok(call(request, |r| gw.sessions.update_shared_context(r)).await?)
}

async fn complete_session(State(gw): Gw, Path(id): Path<String>, headers: HeaderMap, body: Body) -> HttpResult {
    let request = mutation(&gw, &id, &headers, body, false).await?;
    ok(call(request, |r| gw.sessions.complete_session(r)).await?)
}

async fn terminate_session(State(gw): Gw, Path(id): Path<String>, headers: HeaderMap, body: Body) -> HttpResult {
    let request = mutation(&gw, &id, &headers, body, true).await?;
    ok(call(request, |r| gw.sessions.terminate_session(r)).await?)
}

/// Session events as Server-Sent Events: `id:` the sequence, `event:` the
/// event type, `data:` the event. Filters `?session_id=` (repeatable) and
/// `?type=`; resume with `Last-Event-ID` (or `?after=`).
async fn watch_sessions(State(gw): Gw, headers: HeaderMap, RawQuery(raw): RawQuery) -> HttpResult {
    let aliases = [
        ("session_id", "session_ids"),
        ("type", "event_types"),
        ("after", "after_sequence"),
    ];
    let mut request = query(raw.as_deref(), &aliases, &["session_ids", "event_types"]);
    if let Some(last) = headers.get("last-event-id") {
        let text = last.to_str().unwrap_or("").trim();
        let sequence = text.parse::<u64>().map_err(|_| {
            Error::invalid(
                "Last-Event-ID",
                format!("expected an event sequence number, got {text:?}"),
            )
        })?;
        request.insert("after_sequence".into(), Json::from(sequence));
    }
    let decoded: pb::WatchSessionsRequest = dialect::from_json(&Json::Object(request))?;
    let stream = gw
        .sessions
        .watch_sessions(tonic::Request::new(decoded))
        .await?
        .into_inner();
    let events = stream.map(|item| match item {
        Ok(pb::WatchSessionsResponse {
            kind: Some(pb::watch_sessions_response::Kind::Event(event)),
        }) => Event::default()
            .id(event.sequence.to_string())
            .event(dialect::word_of("agentbus.v1.SessionEventType", event.r#type))
            .data(Json::Object(dialect::to_json(&event)).to_string()),
        Ok(pb::WatchSessionsResponse {
            kind: Some(pb::watch_sessions_response::Kind::Heartbeat(beat)),
        }) => Event::default().comment(format!("heartbeat last_sequence={}", beat.last_sequence)),
        Ok(_) => Event::default().comment(""),
        Err(status) => error_event(&status),
    });
    Ok(sse(events))
}

/// A stream's last event when it ends with an error (e.g. UNAVAILABLE on
/// shutdown).
fn error_event(status: &Status) -> Event {
    let body = json!({"success": false, "error": status.message(), "code": code_name(status.code())});
    Event::default().event("error").data(body.to_string())
}

/// An SSE response that proxies must neither buffer nor compress.
fn sse(events: impl Stream<Item = Event> + Send + 'static) -> Response {
    let mut response = Sse::new(events.map(Ok::<_, Infallible>)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_paths_split_with_or_without_encoding() {
        assert_eq!(split_agent_path("opencode://backend"), ("opencode://backend", ""));
        assert_eq!(
            split_agent_path("opencode://backend/messages/m1/ack"),
            ("opencode://backend", "/messages/m1/ack")
        );
        assert_eq!(split_agent_path("nonsense/messages"), ("nonsense", "/messages"));
    }

    #[test]
    fn query_parameters_become_typed_fields() {
        let q = query(
            Some("session_id=a&session_id=b&type=session_created&online=true&after=3"),
            &[("session_id", "session_ids"), ("type", "event_types")],
            &["session_ids", "event_types"],
        );
        assert_eq!(
            Json::Object(q),
            json!({"session_ids": ["a", "b"], "event_types": ["session_created"], "online": "true", "after": "3"})
        );
    }
}
