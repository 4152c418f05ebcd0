//! Session routes and the session event stream: `/sessions/...`.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::sse::Event;
use serde_json::{Map, Value as Json};
use tokio_stream::StreamExt;

use super::input::{body, decode, from_path, if_match, json_body, query};
use super::response::{HttpResult, error_event, ok, sse};
use super::{Gateway, Gw};
use crate::api::{Caller, dialect};
use crate::domain::Error;
use crate::pb;

pub async fn create_session(State(gw): Gw, caller: Caller, headers: HeaderMap, request: Body) -> HttpResult {
    let request = body(&headers, request, gw.max_body_bytes, true).await?;
    ok(&gw.api.create_session(&caller, request).await?)
}

pub async fn list_sessions(State(gw): Gw, caller: Caller, RawQuery(raw): RawQuery) -> HttpResult {
    let request = query(raw.as_deref(), &[("state", "states")], &["states"])?;
    ok(&gw.api.list_sessions(&caller, request).await?)
}

pub async fn get_session(State(gw): Gw, caller: Caller, Path(session_id): Path<String>) -> HttpResult {
    ok(&gw
        .api
        .get_session(&caller, pb::GetSessionRequest { session_id })
        .await?)
}

/// `GET /sessions/{id}/summary`: the executive summary as JSON, or as
/// Markdown for `Accept: text/markdown`.
pub async fn get_session_summary(
    State(gw): Gw,
    caller: Caller,
    Path(session_id): Path<String>,
    headers: HeaderMap,
) -> HttpResult {
    let response = gw
        .api
        .get_session_summary(&caller, pb::GetSessionSummaryRequest { session_id })
        .await?;
    let markdown = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/markdown"));
    if markdown {
        let content_type = [(axum::http::header::CONTENT_TYPE, "text/markdown; charset=utf-8")];
        return Ok((content_type, response.markdown).into_response());
    }
    ok(&response)
}

/// A session change: the request from the body (`{}` when optional and
/// empty), the session id from the path and `If-Match` as
/// `expected_version`.
trait Change: prost::Message + prost::Name + Default {
    fn target(&mut self) -> (&mut String, &mut Option<u64>);
}

macro_rules! change {
    ($($request:ident),*) => {$(
        impl Change for pb::$request {
            fn target(&mut self) -> (&mut String, &mut Option<u64>) {
                (&mut self.session_id, &mut self.expected_version)
            }
        }
    )*};
}

change!(
    AddParticipantRequest,
    RemoveParticipantRequest,
    UpdateWorkflowRequest,
    AdvanceWorkflowRequest,
    UpdateSharedContextRequest,
    CompleteSessionRequest,
    TerminateSessionRequest,
    AggregateResultsRequest,
    ResolveAggregationRequest
);

fn targeted<T: Change>(mut request: T, session_id: &str, headers: &HeaderMap) -> Result<T, super::HttpError> {
    let (id, expected_version) = request.target();
    from_path("session_id", id, session_id)?;
    if_match(headers, expected_version)?;
    Ok(request)
}

async fn change<T: Change>(
    gw: &Gateway,
    session_id: &str,
    headers: &HeaderMap,
    request: Body,
    required: bool,
) -> Result<T, super::HttpError> {
    let request = body(headers, request, gw.max_body_bytes, required).await?;
    targeted(request, session_id, headers)
}

/// Routes whose body is the request (optional where `required` is false),
/// named as the API functions they call.
macro_rules! change_routes {
    ($($name:ident(required: $required:expr);)*) => {$(
        pub async fn $name(
            State(gw): Gw,
            caller: Caller,
            Path(id): Path<String>,
            headers: HeaderMap,
            request: Body,
        ) -> HttpResult {
            let request = change(&gw, &id, &headers, request, $required).await?;
            ok(&gw.api.$name(&caller, request).await?)
        }
    )*};
}

change_routes! {
    update_workflow(required: true);
    advance_workflow(required: false);
    complete_session(required: false);
    terminate_session(required: true);
    aggregate_results(required: false);
}

/// `POST /sessions/{id}/aggregations/{aggregation_id}/resolve`, body
/// `{"chosen_task_id": .., "note": ..}`.
pub async fn resolve_aggregation(
    State(gw): Gw,
    caller: Caller,
    Path((id, aggregation_id)): Path<(String, String)>,
    headers: HeaderMap,
    request: Body,
) -> HttpResult {
    let mut request: pb::ResolveAggregationRequest = change(&gw, &id, &headers, request, true).await?;
    from_path("aggregation_id", &mut request.aggregation_id, &aggregation_id)?;
    ok(&gw.api.resolve_aggregation(&caller, request).await?)
}

/// The body is either `{"participant": {..}}` or the participant itself.
pub async fn add_participant(
    State(gw): Gw,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    request: Body,
) -> HttpResult {
    let mut object = json_body(&headers, request, gw.max_body_bytes, true).await?;
    if !object.contains_key("participant") {
        let version = object.remove("expected_version");
        let spec = std::mem::take(&mut object);
        object.insert("participant".into(), Json::Object(spec));
        if let Some(version) = version {
            object.insert("expected_version".into(), version);
        }
    }
    let request: pb::AddParticipantRequest = targeted(decode(object)?, &id, &headers)?;
    ok(&gw.api.add_participant(&caller, request).await?)
}

pub async fn remove_participant(
    State(gw): Gw,
    caller: Caller,
    Path((id, agent_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> HttpResult {
    let request = pb::RemoveParticipantRequest {
        agent_id,
        ..Default::default()
    };
    let request = targeted(request, &id, &headers)?;
    ok(&gw.api.remove_participant(&caller, request).await?)
}

pub async fn replace_context(
    State(gw): Gw,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    request: Body,
) -> HttpResult {
    update_context(&gw, &caller, &id, &headers, request, pb::ContextUpdateMode::Replace).await
}

/// RFC 7386 JSON merge patch (`application/merge-patch+json` or JSON).
pub async fn merge_context(
    State(gw): Gw,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    request: Body,
) -> HttpResult {
    update_context(&gw, &caller, &id, &headers, request, pb::ContextUpdateMode::Merge).await
}

/// The body is the context object (or the patch) itself.
async fn update_context(
    gw: &Gateway,
    caller: &Caller,
    id: &str,
    headers: &HeaderMap,
    request: Body,
    mode: pb::ContextUpdateMode,
) -> HttpResult {
    let context = json_body(headers, request, gw.max_body_bytes, true).await?;
    let mut request: pb::UpdateSharedContextRequest =
        decode(Map::from_iter([("context".to_owned(), Json::Object(context))]))?;
    request.mode = mode as i32;
    let request = targeted(request, id, headers)?;
    ok(&gw.api.update_shared_context(caller, request).await?)
}

/// Session events as Server-Sent Events: `id:` the sequence, `event:` the
/// event type, `data:` the event. Filters `?session_id=` (repeatable) and
/// `?type=`; resume with `Last-Event-ID` (or `?after=`).
pub async fn watch_sessions(State(gw): Gw, caller: Caller, headers: HeaderMap, RawQuery(raw): RawQuery) -> HttpResult {
    let aliases = [
        ("session_id", "session_ids"),
        ("type", "event_types"),
        ("after", "after_sequence"),
    ];
    let mut request: pb::WatchSessionsRequest = query(raw.as_deref(), &aliases, &["session_ids", "event_types"])?;
    if let Some(last) = headers.get("last-event-id") {
        let text = last.to_str().unwrap_or("").trim();
        let sequence = text.parse::<u64>().map_err(|_| {
            Error::invalid(
                "Last-Event-ID",
                format!("expected an event sequence number, got {text:?}"),
            )
        })?;
        request.after_sequence = Some(sequence);
    }
    let items = gw.api.watch_sessions(&caller, request)?;
    let events = items.map(|item| match item {
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
        Err(error) => error_event(error),
    });
    Ok(sse(events))
}
