//! The MCP tools: their inputs (JSON Schema from the types below, whose doc
//! comments are what a model reads), and what each calls on the bus. Inputs
//! are turned into the RPC's request in the gateway's JSON dialect, so the
//! bus validates them exactly as it validates HTTP calls and names the
//! field that is wrong.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};
use tokio::time::Instant;
use tonic::{Request, Status};

use super::Bus;
use crate::api::dialect;
use crate::api::errors::code_name;
use crate::pb;

/// Most seconds a waiting tool waits.
const MAX_WAIT_SECONDS: u64 = 60;
/// Most deliveries one receive_messages returns.
const MAX_RECEIVE: u32 = 50;
/// Most events one wait_for_session_events returns.
const MAX_EVENTS: usize = 200;
/// Once something arrived, how long to wait for more before answering.
const LINGER: Duration = Duration::from_millis(200);

/// A tool's answer: the response in the JSON dialect and a summary.
struct Answer {
    structured: Json,
    summary: String,
}

type Outcome = Result<Answer, Status>;

#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoInput {}

/// Filters, as ListAgents takes them; all optional.
#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListAgentsInput {
    /// Only agents of this framework, e.g. "opencode".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    framework: Option<String>,
    /// Only agents listing this capability (a language, tool, task kind...), e.g. "rust".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    capability: Option<String>,
    /// Only agents that are (true) or are not (false) connected now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    online: Option<bool>,
    /// Agents per page (default 50, at most 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page_size: Option<u32>,
    /// next_page_token of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page_token: Option<String>,
}

#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum MessageKind {
    TaskRequest,
    TaskResponse,
    StatusUpdate,
    Error,
    Heartbeat,
}

#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum PriorityWord {
    Low,
    Medium,
    High,
    Critical,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessageInput {
    /// The recipient's agent id, e.g. "opencode://backend".
    to: String,
    /// task_request (delegate work; the default), task_response (the result of a task you were
    /// given), status_update, error or heartbeat.
    #[serde(default)]
    message_type: Option<MessageKind>,
    /// Any JSON: the task, the result, the update. E.g. {"task": "add a /health route"}.
    #[serde(default)]
    payload: Option<Json>,
    /// The session this message belongs to; a task_request in a session delegates a task there.
    #[serde(default)]
    session_id: Option<String>,
    /// low, medium (default), high or critical.
    #[serde(default)]
    priority: Option<PriorityWord>,
    /// The message_id this message answers (for a task_response or a reply).
    #[serde(default)]
    in_reply_to: Option<String>,
    /// Your own id for the message, to make a retried send idempotent.
    #[serde(default)]
    message_id: Option<String>,
    /// Wait up to this many seconds (1-300) for the recipient's reply and return it.
    #[serde(default)]
    wait_for_reply_seconds: Option<u32>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiveInput {
    /// How long to wait for a first message, in seconds (0-60, default 10).
    #[serde(default)]
    wait_seconds: Option<u64>,
    /// Most messages to return (1-50, default 10).
    #[serde(default)]
    max: Option<u32>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AckInput {
    /// The message_id of each message you handled (1-1000).
    message_ids: Vec<String>,
}

#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ParticipantInput {
    /// The participant's agent id, e.g. "opencode://backend".
    agent_id: String,
    /// Its role, e.g. "implementer" or "reviewer".
    #[serde(default)]
    role: String,
}

#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct StepInput {
    /// Unique within the session, e.g. "design".
    name: String,
    #[serde(default)]
    description: String,
    /// Agents that work on this step.
    #[serde(default)]
    required_agents: Vec<String>,
    /// Names of steps that must be completed before this one.
    #[serde(default)]
    dependencies: Vec<String>,
}

#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionInput {
    /// Your id for the session (sess_ and letters, digits, _ or -); default: one is made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session_id: Option<String>,
    /// The agents taking part, besides you (the orchestrator).
    #[serde(default)]
    participants: Vec<ParticipantInput>,
    /// The workflow, in order.
    #[serde(default)]
    steps: Vec<StepInput>,
    /// Context every participant reads and may update, e.g. {"project": "notifications"}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shared_context: Option<JsonObject>,
}

#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionIdInput {
    /// The session, e.g. "sess_demo".
    session_id: String,
}

#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListSessionsInput {
    /// Only sessions in these states: active, completed, terminated, expired.
    #[serde(default)]
    states: Vec<String>,
    /// Only sessions this agent takes part in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    participant: Option<String>,
    /// Sessions per page (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page_size: Option<u32>,
    /// next_page_token of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page_token: Option<String>,
}

#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum ContextMode {
    Merge,
    Replace,
}

#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateContextInput {
    session_id: String,
    /// With merge (the default) an RFC 7386 merge patch: keys set to null are removed, others
    /// set. With replace, the whole new context.
    context: JsonObject,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mode: Option<ContextMode>,
    /// Change only if the session is still at this version (from a previous answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expected_version: Option<u64>,
}

#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWorkflowInput {
    session_id: String,
    /// The step now in progress.
    current_step: String,
    #[serde(default)]
    completed_steps: Vec<String>,
    #[serde(default)]
    pending_steps: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expected_version: Option<u64>,
}

#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdvanceWorkflowInput {
    session_id: String,
    /// The step to go to; default: the next pending step whose dependencies are done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expected_version: Option<u64>,
}

#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteInput {
    session_id: String,
    /// What was achieved, for the people reading the session later.
    #[serde(default)]
    summary: String,
    /// Links or paths of what the session produced.
    #[serde(default)]
    artifacts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expected_version: Option<u64>,
}

#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TerminateInput {
    session_id: String,
    /// Why the session stops, e.g. "timeout" or "requirements changed".
    #[serde(default)]
    reason: String,
    #[serde(default)]
    details: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expected_version: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitEventsInput {
    /// Only events of these sessions; empty: every session you take part in.
    #[serde(default)]
    session_ids: Vec<String>,
    /// Events after this sequence number: next_after_sequence of your previous call. Omit it to
    /// wait for new events only.
    #[serde(default)]
    after_sequence: Option<u64>,
    /// How long to wait for a first event, in seconds (0-60, default 10).
    #[serde(default)]
    wait_seconds: Option<u64>,
    /// Include each event's whole session snapshot (large); default false.
    #[serde(default)]
    include_sessions: bool,
}

/// One tool: its name, description and input type.
macro_rules! tools {
    ($($name:literal => $method:ident($input:ty): $description:expr;)*) => {
        /// Every tool, for tools/list.
        pub fn list() -> Vec<Tool> {
            vec![$(Tool::new($name, $description, schema::<$input>()),)*]
        }

        /// Runs the named tool; None if there is none.
        pub async fn call(bus: &Bus, name: &str, arguments: JsonObject) -> Option<CallToolResult> {
            let outcome = match name {
                $($name => match parse::<$input>(arguments) {
                    Ok(input) => bus.$method(input).await,
                    Err(message) => Err(Status::invalid_argument(message)),
                },)*
                _ => return None,
            };
            Some(result(outcome))
        }
    };
}

tools! {
    "whoami" => whoami(NoInput):
        "Who you are on the bus: your agent id, your registration (capabilities, online, inbox \
         depth) and the bus address. Use it first to learn your own id. Example: {}";
    "list_agents" => list_agents(ListAgentsInput):
        "Find other agents to delegate to, by framework, capability or whether they are online. \
         Example: {\"capability\": \"rust\", \"online\": true}";
    "send_message" => send_message(SendMessageInput):
        "Send a message from you to another agent: delegate a task (task_request), return a result \
         (task_response with in_reply_to), or report progress. With wait_for_reply_seconds it waits \
         for the reply and returns it. Example: {\"to\": \"opencode://backend\", \"message_type\": \
         \"task_request\", \"session_id\": \"sess_demo\", \"payload\": {\"task\": \"implement the API\"}}";
    "receive_messages" => receive_messages(ReceiveInput):
        "Get messages sent to you, waiting up to wait_seconds for the first. Each delivery has the \
         message and its attempt number. Messages are not acknowledged: call ack_messages once you \
         handled them, or they are delivered again later. Example: {\"wait_seconds\": 30, \"max\": 5}";
    "ack_messages" => ack_messages(AckInput):
        "Acknowledge messages you received and handled, so they are not delivered again. \
         Example: {\"message_ids\": [\"msg_0192...\"]}";
    "create_session" => create_session(CreateSessionInput):
        "Start a session you orchestrate: participants, workflow steps and a shared context. \
         Example: {\"session_id\": \"sess_demo\", \"participants\": [{\"agent_id\": \
         \"opencode://backend\", \"role\": \"implementer\"}], \"steps\": [{\"name\": \"design\"}, \
         {\"name\": \"implementation\"}], \"shared_context\": {\"project\": \"notifications\"}}";
    "get_session" => get_session(SessionIdInput):
        "Read a session you take part in: participants, workflow, shared context, tasks, version. \
         Example: {\"session_id\": \"sess_demo\"}";
    "list_sessions" => list_sessions(ListSessionsInput):
        "List the sessions you take part in, optionally by state. Example: {\"states\": [\"active\"]}";
    "update_shared_context" => update_shared_context(UpdateContextInput):
        "Change a session's shared context: merge (default) or replace. Any participant may. \
         Example: {\"session_id\": \"sess_demo\", \"context\": {\"api_ready\": true}}";
    "update_workflow" => update_workflow(UpdateWorkflowInput):
        "Set a session's workflow position (orchestrator only). Example: {\"session_id\": \
         \"sess_demo\", \"current_step\": \"review\", \"completed_steps\": [\"design\", \
         \"implementation\"]}";
    "advance_workflow" => advance_workflow(AdvanceWorkflowInput):
        "Complete the current step and start the next (orchestrator only). Example: \
         {\"session_id\": \"sess_demo\"}";
    "complete_session" => complete_session(CompleteInput):
        "End a session as done, with a summary (orchestrator only). Example: {\"session_id\": \
         \"sess_demo\", \"summary\": \"API and UI shipped\"}";
    "terminate_session" => terminate_session(TerminateInput):
        "Stop a session that cannot finish (orchestrator only). Example: {\"session_id\": \
         \"sess_demo\", \"reason\": \"requirements changed\"}";
    "wait_for_session_events" => wait_for_session_events(WaitEventsInput):
        "Wait for things to happen in your sessions (tasks delegated or answered, context changed, \
         workflow advanced, session ended), up to wait_seconds. Returns the events and \
         next_after_sequence: pass it as after_sequence next time to miss nothing. Example: \
         {\"session_ids\": [\"sess_demo\"], \"after_sequence\": 0, \"wait_seconds\": 30}";
}

fn schema<T: JsonSchema>() -> Arc<JsonObject> {
    let schema = schemars::schema_for!(T);
    match serde_json::to_value(schema) {
        Ok(Json::Object(object)) => Arc::new(object),
        _ => Arc::new(Map::new()),
    }
}

/// The arguments as `T`; the error names the path of the wrong field.
fn parse<T: DeserializeOwned>(arguments: JsonObject) -> Result<T, String> {
    serde_path_to_error::deserialize(Json::Object(arguments)).map_err(|error| {
        let path = error.path().to_string();
        if path == "." {
            format!("arguments: {}", error.inner())
        } else {
            format!("arguments.{path}: {}", error.inner())
        }
    })
}

/// The tool result: structured content and a summary, or an error result
/// naming the gRPC code.
fn result(outcome: Outcome) -> CallToolResult {
    match outcome {
        Ok(answer) => {
            let mut result = CallToolResult::success(vec![
                ContentBlock::text(answer.summary),
                ContentBlock::text(answer.structured.to_string()),
            ]);
            result.structured_content = Some(answer.structured);
            result
        }
        Err(status) => {
            let code = code_name(status.code());
            let mut message = status.message().to_owned();
            if status.code() == tonic::Code::Unavailable {
                message.push_str(" (the bus may be down or restarting; retry in a few seconds)");
            }
            let mut result = CallToolResult::error(vec![ContentBlock::text(format!("{code}: {message}"))]);
            result.structured_content = Some(json!({"code": code, "message": message}));
            result
        }
    }
}

fn to_json<T: prost::Message + prost::Name>(message: &T) -> Json {
    Json::Object(dialect::to_json(message))
}

/// The request in the JSON dialect, decoded as the bus decodes HTTP bodies.
fn request<T: prost::Message + prost::Name + Default>(value: Json) -> Result<T, Status> {
    dialect::from_json(&value).map_err(|e| Status::invalid_argument(e.message))
}

fn wait(seconds: Option<u64>) -> Result<Duration, Status> {
    match seconds.unwrap_or(10) {
        s if s <= MAX_WAIT_SECONDS => Ok(Duration::from_secs(s)),
        s => Err(Status::invalid_argument(format!(
            "arguments.wait_seconds: {s} is more than {MAX_WAIT_SECONDS}"
        ))),
    }
}

/// What `keep` takes from a stream's messages, until `max` are in, `wait`
/// passes before the first, or the stream is quiet for [`LINGER`] after
/// one. An error before the first ends the call; after it, the collection.
async fn collect<M, T>(
    stream: &mut tonic::Streaming<M>,
    wait: Duration,
    max: usize,
    mut keep: impl FnMut(M) -> Option<T>,
) -> Result<Vec<T>, Status> {
    let deadline = Instant::now() + wait;
    let mut items = Vec::new();
    while items.len() < max {
        let until = if items.is_empty() {
            deadline
        } else {
            deadline.min(Instant::now() + LINGER)
        };
        match tokio::time::timeout_at(until, stream.message()).await {
            Ok(Ok(Some(message))) => items.extend(keep(message)),
            Ok(Err(status)) if items.is_empty() => return Err(status),
            Ok(Ok(None) | Err(_)) | Err(_) => break,
        }
    }
    Ok(items)
}

fn session_line(session: Option<&pb::Session>) -> String {
    session.map_or_else(String::new, |s| {
        let current = s.workflow.as_ref().map_or("", |w| w.current_step.as_str());
        format!(
            "session {} ({}, version {}, step {current:?}, {} participants)",
            s.session_id,
            dialect::word_of("agentbus.v1.SessionState", s.state),
            s.version,
            s.participants.len()
        )
    })
}

macro_rules! session_change {
    ($($method:ident($input:ty) => $rpc:ident($request:ty), $verb:literal;)*) => {
        impl Bus {
            $(
                async fn $method(&self, input: $input) -> Outcome {
                    let request: $request = request(serde_json::to_value(&input).unwrap_or_default())?;
                    let response = self.sessions(request, |mut c, r| async move { c.$rpc(r).await }).await?;
                    Ok(Answer {
                        summary: format!("{}: {}", $verb, session_line(response.session.as_ref())),
                        structured: to_json(&response),
                    })
                }
            )*
        }
    };
}

session_change! {
    get_session(SessionIdInput) => get_session(pb::GetSessionRequest), "read";
    update_shared_context(UpdateContextInput) => update_shared_context(pb::UpdateSharedContextRequest), "context updated";
    update_workflow(UpdateWorkflowInput) => update_workflow(pb::UpdateWorkflowRequest), "workflow updated";
    advance_workflow(AdvanceWorkflowInput) => advance_workflow(pb::AdvanceWorkflowRequest), "workflow advanced";
    complete_session(CompleteInput) => complete_session(pb::CompleteSessionRequest), "completed";
    terminate_session(TerminateInput) => terminate_session(pb::TerminateSessionRequest), "terminated";
}

impl Bus {
    /// One SessionService call, after making sure the agent is registered.
    async fn sessions<Q, R, F, Fut>(&self, request: Q, call: F) -> Result<R, Status>
    where
        F: FnOnce(crate::cli::connection::Sessions, Request<Q>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, Status>>,
    {
        self.ensure_registered().await?;
        Ok(call(self.conn.sessions(), Request::new(request)).await?.into_inner())
    }

    async fn whoami(&self, _: NoInput) -> Outcome {
        self.ensure_registered().await?;
        let request = pb::GetAgentRequest {
            agent_id: self.agent.clone(),
        };
        let agent = self.conn.agents().get_agent(request).await?.into_inner();
        Ok(Answer {
            summary: format!("You are {}.", self.agent),
            structured: json!({"agent_id": self.agent, "agent": to_json(&agent).get("agent")}),
        })
    }

    async fn list_agents(&self, input: ListAgentsInput) -> Outcome {
        let request: pb::ListAgentsRequest = request(serde_json::to_value(&input).unwrap_or_default())?;
        self.ensure_registered().await?;
        let response = self.conn.agents().list_agents(request).await?.into_inner();
        let names: Vec<String> = response
            .agents
            .iter()
            .filter_map(|a| {
                let id = &a.descriptor.as_ref()?.agent_id;
                Some(format!("{id}{}", if a.online { " (online)" } else { "" }))
            })
            .collect();
        Ok(Answer {
            summary: format!("{} agents: {}", names.len(), names.join(", ")),
            structured: to_json(&response),
        })
    }

    async fn send_message(&self, input: SendMessageInput) -> Outcome {
        let mut routing = Map::new();
        let wait = match input.wait_for_reply_seconds {
            None => None,
            Some(seconds @ 1..=300) => {
                routing.insert("delivery_mode".into(), json!("sync"));
                routing.insert("timeout".into(), json!(format!("{seconds}s")));
                Some(Duration::from_secs(u64::from(seconds)))
            }
            Some(other) => {
                return Err(Status::invalid_argument(format!(
                    "arguments.wait_for_reply_seconds: {other} is not between 1 and 300"
                )));
            }
        };
        let mut sender = json!({"agent_id": self.agent});
        if let Some(session_id) = &input.session_id {
            sender["session_id"] = json!(session_id);
        }
        let message = json!({
            "message_id": input.message_id.unwrap_or_default(),
            "sender": sender,
            "recipient": {"agent_id": input.to},
            "message_type": input.message_type.unwrap_or(MessageKind::TaskRequest),
            "priority": input.priority.unwrap_or(PriorityWord::Medium),
            "payload": input.payload.unwrap_or(Json::Null),
            "in_reply_to": input.in_reply_to.unwrap_or_default(),
            "routing": routing,
        });
        let request: pb::SendMessageRequest = request(json!({ "message": message }))?;
        self.ensure_registered().await?;
        let mut call = Request::new(request);
        if let Some(wait) = wait {
            call.set_timeout(wait + Duration::from_secs(5));
        }
        let response = self.conn.messages().send_message(call).await?.into_inner();
        let summary = match &response.reply {
            Some(reply) => format!(
                "Sent {}; reply {} from {}: {}",
                response.message_id,
                reply.message_id,
                reply.sender.as_ref().map_or("?", |s| s.agent_id.as_str()),
                to_json(reply).get("payload").unwrap_or(&Json::Null)
            ),
            None => format!(
                "Sent {} ({}).",
                response.message_id,
                dialect::word_of("agentbus.v1.MessageState", response.state)
            ),
        };
        Ok(Answer {
            summary,
            structured: to_json(&response),
        })
    }

    async fn receive_messages(&self, input: ReceiveInput) -> Outcome {
        let wait = wait(input.wait_seconds)?;
        let max = match input.max.unwrap_or(10) {
            n @ 1..=MAX_RECEIVE => n,
            n => {
                return Err(Status::invalid_argument(format!(
                    "arguments.max: {n} is not between 1 and {MAX_RECEIVE}"
                )));
            }
        };
        self.ensure_registered().await?;
        let request = pb::ReceiveMessagesRequest {
            agent_id: self.agent.clone(),
            max_in_flight: max,
        };
        let mut stream = self.conn.messages().receive_messages(request).await?.into_inner();
        let deliveries = collect(&mut stream, wait, max as usize, |response| match response.kind {
            Some(pb::receive_messages_response::Kind::Delivery(delivery)) => Some(delivery),
            _ => None,
        })
        .await?;
        let lines: Vec<String> = deliveries
            .iter()
            .filter_map(|d| {
                let m = d.message.as_ref()?;
                Some(format!(
                    "{} {} from {} (attempt {})",
                    m.message_id,
                    dialect::word_of("agentbus.v1.MessageType", m.message_type),
                    m.sender.as_ref().map_or("?", |s| s.agent_id.as_str()),
                    d.attempt
                ))
            })
            .collect();
        let summary = if lines.is_empty() {
            format!("No messages in {}s.", wait.as_secs())
        } else {
            format!(
                "{} messages: {}. Acknowledge each with ack_messages once handled.",
                lines.len(),
                lines.join("; ")
            )
        };
        let deliveries: Vec<Json> = deliveries.iter().map(to_json).collect();
        Ok(Answer {
            summary,
            structured: json!({ "deliveries": deliveries }),
        })
    }

    async fn ack_messages(&self, input: AckInput) -> Outcome {
        self.ensure_registered().await?;
        let request = pb::AckMessagesRequest {
            agent_id: self.agent.clone(),
            message_ids: input.message_ids,
        };
        let response = self.conn.messages().ack_messages(request).await?.into_inner();
        let failed: Vec<String> = response
            .results
            .iter()
            .filter(|r| r.code != 0)
            .map(|r| format!("{}: {} {}", r.message_id, r.code_name, r.error))
            .collect();
        let summary = if failed.is_empty() {
            format!("Acknowledged {} messages.", response.results.len())
        } else {
            format!("Not acknowledged: {}", failed.join("; "))
        };
        Ok(Answer {
            summary,
            structured: to_json(&response),
        })
    }

    async fn create_session(&self, input: CreateSessionInput) -> Outcome {
        let mut value = serde_json::to_value(&input).unwrap_or_default();
        value["orchestrator"] = json!(self.agent);
        let request: pb::CreateSessionRequest = request(value)?;
        let response = self
            .sessions(request, |mut c, r| async move { c.create_session(r).await })
            .await?;
        Ok(Answer {
            summary: format!("created: {}", session_line(response.session.as_ref())),
            structured: to_json(&response),
        })
    }

    async fn list_sessions(&self, input: ListSessionsInput) -> Outcome {
        let request: pb::ListSessionsRequest = request(serde_json::to_value(&input).unwrap_or_default())?;
        let response = self
            .sessions(request, |mut c, r| async move { c.list_sessions(r).await })
            .await?;
        let lines: Vec<String> = response.sessions.iter().map(|s| session_line(Some(s))).collect();
        Ok(Answer {
            summary: format!("{} sessions: {}", lines.len(), lines.join("; ")),
            structured: to_json(&response),
        })
    }

    async fn wait_for_session_events(&self, input: WaitEventsInput) -> Outcome {
        let wait = wait(input.wait_seconds)?;
        let request = pb::WatchSessionsRequest {
            session_ids: input.session_ids,
            event_types: Vec::new(),
            after_sequence: input.after_sequence,
        };
        let mut stream = self
            .sessions(request, |mut c, r| async move { c.watch_sessions(r).await })
            .await?;
        let mut cursor = input.after_sequence.unwrap_or(0);
        let events = collect(&mut stream, wait, MAX_EVENTS, |response| match response.kind? {
            pb::watch_sessions_response::Kind::Event(event) => {
                cursor = event.sequence;
                Some(event)
            }
            pb::watch_sessions_response::Kind::Heartbeat(beat) => {
                cursor = cursor.max(beat.last_sequence);
                None
            }
        })
        .await?;
        let lines: Vec<String> = events
            .iter()
            .map(|e| {
                let kind = dialect::word_of("agentbus.v1.SessionEventType", e.r#type);
                let who = if e.agent_id.is_empty() {
                    String::new()
                } else {
                    format!(" {}", e.agent_id)
                };
                format!("#{} {} {kind}{who}", e.sequence, e.session_id)
            })
            .collect();
        let events: Vec<Json> = events
            .into_iter()
            .map(|mut event| {
                if !input.include_sessions {
                    event.session = None;
                }
                to_json(&event)
            })
            .collect();
        let summary = match lines.is_empty() {
            true => format!(
                "No events in {}s. Pass after_sequence {cursor} next time.",
                wait.as_secs()
            ),
            false => format!(
                "{} events: {}. Pass after_sequence {cursor} next time.",
                lines.len(),
                lines.join("; ")
            ),
        };
        Ok(Answer {
            summary,
            structured: json!({"events": events, "next_after_sequence": cursor}),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_an_object_schema_and_an_example() {
        let tools = list();
        assert_eq!(tools.len(), 14);
        for tool in &tools {
            assert_eq!(tool.input_schema.get("type"), Some(&json!("object")), "{}", tool.name);
            let description = tool.description.as_deref().unwrap();
            assert!(description.contains("Example"), "{}", tool.name);
        }
    }

    #[test]
    fn bad_arguments_name_the_field() {
        let mut arguments = JsonObject::new();
        arguments.insert("wait_seconds".into(), json!("soon"));
        let error = parse::<ReceiveInput>(arguments).err().unwrap();
        assert!(error.starts_with("arguments.wait_seconds: "), "{error}");
        let error = parse::<AckInput>(JsonObject::new()).err().unwrap();
        assert!(error.contains("message_ids"), "{error}");
    }
}
