//! `POST /messages/send`, `POST /messages/batch` and `GET /messages/{message_id}`.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::{Map, Value as Json};

use super::Gw;
use super::input::{self, decode, json_body};
use super::response::{HttpResult, ok};
use crate::api::{Caller, convert, dialect};
use crate::pb;

/// The prototype's `POST /messages/send`: the body is the message itself
/// (errors name its fields as `message.<field>`, as over gRPC).
pub async fn send_message(State(gw): Gw, caller: Caller, headers: HeaderMap, body: Body) -> HttpResult {
    let mut message = json_body(&headers, body, gw.max_body_bytes, true).await?;
    // The payload, the bulk of a message, becomes its protobuf value
    // directly: the dialect, which has nothing to check in a
    // `google.protobuf.Value` but its depth, would take it through a
    // dynamic message and protobuf bytes twice (a fifth of this call's CPU).
    let payload = message.remove("payload").filter(|payload| !payload.is_null());
    if let Some(payload) = &payload {
        dialect::check_depth(payload, 2)?;
    }
    let mut request: pb::SendMessageRequest = decode(Map::from_iter([("message".to_owned(), Json::Object(message))]))?;
    if let (Some(message), Some(payload)) = (request.message.as_mut(), payload) {
        message.payload = Some(convert::json_value(&payload));
    }
    ok(&gw.api.send_message(&caller, request).await?)
}

/// `POST /messages/batch`: SendMessages, `{"messages": [...]}` ->
/// `{"results": [...]}` (200 whatever the results; a result per message).
pub async fn send_messages(State(gw): Gw, caller: Caller, headers: HeaderMap, request_body: Body) -> HttpResult {
    let request: pb::SendMessagesRequest = input::body(&headers, request_body, gw.max_body_bytes, true).await?;
    ok(&gw.api.send_messages(&caller, request).await?)
}

pub async fn get_message(State(gw): Gw, caller: Caller, Path(message_id): Path<String>) -> HttpResult {
    ok(&gw
        .api
        .get_message(&caller, pb::GetMessageRequest { message_id })
        .await?)
}
