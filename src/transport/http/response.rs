//! What the gateway answers: the RPC's response as JSON with
//! `"success": true`, errors as `{"success":false,"error":..,"code":..}`
//! with the HTTP status of the one table, and Server-Sent Events.

use std::convert::Infallible;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use prost::{Message, Name};
use serde_json::{Map, Value as Json, json};
use tokio_stream::{Stream, StreamExt};

use crate::api::dialect;
use crate::api::errors::{code_name, grpc_code, http_status};
use crate::domain::Error;
use crate::transport::request_metrics::ErrorCode;

/// An error answered as `{"success":false,"error":..,"code":..}`.
#[derive(Debug)]
pub struct HttpError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl HttpError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
    }
}

impl From<Error> for HttpError {
    fn from(error: Error) -> Self {
        let code = grpc_code(error.kind);
        Self::new(http_status(code), code_name(code), error.message)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = json!({"success": false, "error": self.message, "code": self.code});
        let mut response = json_response(self.status, &body);
        response.extensions_mut().insert(ErrorCode(self.code));
        response
    }
}

pub fn json_response(status: StatusCode, body: &Json) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub type HttpResult = Result<Response, HttpError>;

/// The response message as JSON plus `"success": true`.
pub fn fields<T: Message + Name>(response: &T) -> Map<String, Json> {
    let mut object = Map::new();
    object.insert("success".into(), Json::Bool(true));
    object.extend(dialect::to_json(response));
    object
}

/// Answers 200 with `object`; a session in it sets the ETag to its version.
pub fn ok_object(object: Map<String, Json>) -> HttpResult {
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

/// Answers 200 with the response message.
pub fn ok<T: Message + Name>(response: &T) -> HttpResult {
    ok_object(fields(response))
}

/// A stream's last event when it ends with an error (e.g. UNAVAILABLE on
/// shutdown).
pub fn error_event(error: Error) -> Event {
    let code = code_name(grpc_code(error.kind));
    let body = json!({"success": false, "error": error.message, "code": code});
    Event::default().event("error").data(body.to_string())
}

/// An SSE response that proxies must neither buffer nor compress.
pub fn sse(events: impl Stream<Item = Event> + Send + 'static) -> Response {
    let mut response = Sse::new(events.map(Ok::<_, Infallible>)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}
