//! Agent routes, inboxes and acks: `/agents/...`.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::sse::Event;
use serde_json::{Value as Json, json};
use tokio_stream::StreamExt;

use super::input::{body, decode, from_path, json_body, query};
use super::response::{HttpError, HttpResult, error_event, fields, ok, ok_object, sse};
use super::{Gateway, Gw};
use crate::api::{Caller, dialect};
use crate::pb;

/// The prototype's body is `{"agent_descriptor": {..}, "health_check_url",
/// "status_endpoint", "authentication"}`; ours is `{"agent": {..}, "update"}`.
/// Both are accepted, and `capabilities` may be a plain list of strings
/// (taken as optimal tasks).
pub async fn register_agent(State(gw): Gw, caller: Caller, headers: HeaderMap, body: Body) -> HttpResult {
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
    let response = gw.api.register_agent(&caller, decode(request)?).await?;
    let agent_id = response
        .agent
        .as_ref()
        .and_then(|a| a.descriptor.as_ref())
        .map_or(Json::Null, |d| Json::String(d.agent_id.clone()));
    let mut answer = fields(&response);
    answer.insert("agent_id".into(), agent_id);
    ok_object(answer)
}

pub async fn list_agents(State(gw): Gw, caller: Caller, RawQuery(raw): RawQuery) -> HttpResult {
    ok(&gw.api.list_agents(&caller, query(raw.as_deref(), &[], &[])?).await?)
}

/// `/agents/{agent_id}`, `/agents/{agent_id}/messages`,
/// `/agents/{agent_id}/messages/{message_id}/ack`,
/// `/agents/{agent_id}/messages/ack` (body `{"message_ids": [...]}`) and
/// `/agents/{agent_id}/tokens[/{token_id}]`. The
/// agent id may be URL-encoded or not (`opencode://backend` has slashes).
pub async fn agent_route(
    State(gw): Gw,
    caller: Caller,
    method: Method,
    Path(rest): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    request_body: Body,
) -> HttpResult {
    let (agent_id, sub) = split_agent_path(&rest);
    let agent_id = agent_id.to_owned();
    let segments: Vec<&str> = sub.split('/').filter(|s| !s.is_empty()).collect();
    match (method, segments.as_slice()) {
        (Method::GET, []) => ok(&gw.api.get_agent(&caller, pb::GetAgentRequest { agent_id }).await?),
        (Method::DELETE, []) => ok(&gw
            .api
            .unregister_agent(&caller, pb::UnregisterAgentRequest { agent_id })
            .await?),
        (Method::GET, ["messages"]) => {
            // `?max_in_flight=N`: the prefetch limit.
            let mut request: pb::ReceiveMessagesRequest = query(raw.as_deref(), &[], &[])?;
            from_path("agent_id", &mut request.agent_id, &agent_id)?;
            inbox(&gw, &caller, request).await
        }
        (Method::POST, ["messages", message_id, "ack"]) => {
            let request = pb::AckMessageRequest {
                agent_id,
                message_id: (*message_id).to_owned(),
            };
            ok(&gw.api.ack_message(&caller, request).await?)
        }
        (Method::POST, ["messages", "ack"]) => {
            let mut request: pb::AckMessagesRequest = body(&headers, request_body, gw.max_body_bytes, true).await?;
            from_path("agent_id", &mut request.agent_id, &agent_id)?;
            ok(&gw.api.ack_messages(&caller, request).await?)
        }
        (Method::POST, ["tokens"]) => {
            // `{"ttl": "24h", "description": ".."}`; shown once.
            let mut request: pb::IssueAgentTokenRequest =
                body(&headers, request_body, gw.max_body_bytes, false).await?;
            from_path("agent_id", &mut request.agent_id, &agent_id)?;
            ok(&gw.api.issue_agent_token(&caller, request).await?)
        }
        (Method::GET, ["tokens"]) => ok(&gw
            .api
            .list_agent_tokens(&caller, pb::ListAgentTokensRequest { agent_id })
            .await?),
        (Method::DELETE, ["tokens", token_id]) => {
            let request = pb::RevokeAgentTokenRequest {
                token_id: (*token_id).to_owned(),
                agent_id,
            };
            ok(&gw.api.revoke_agent_token(&caller, request).await?)
        }
        (method, [] | ["messages"] | ["messages", "ack"] | ["messages", _, "ack"] | ["tokens"] | ["tokens", _]) => {
            Err(HttpError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNIMPLEMENTED",
                format!("{method} is not allowed on /agents/{rest}"),
            ))
        }
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

/// The inbox as Server-Sent Events: `event: message`, `id:` the message id,
/// `data:` the delivery; acknowledge with `POST .../ack`. `?max_in_flight=N`
/// holds deliveries back until earlier ones are acknowledged.
async fn inbox(gw: &Gateway, caller: &Caller, request: pb::ReceiveMessagesRequest) -> HttpResult {
    let items = gw.api.receive_messages(caller, request).await?;
    let events = items.map(|item| match item {
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
        Err(error) => error_event(error),
    });
    Ok(sse(events))
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
}
