//! The HTTP/JSON gateway: the prototype's REST API and one route for every
//! gRPC operation, on the same port as gRPC.
//!
//! A handler turns the path, query and JSON body into the RPC's typed
//! request (in the JSON dialect of [`dialect`]), calls the API function a
//! gRPC call reaches too, and writes the typed answer as JSON with
//! `"success": true`. Validation, conversion and every rule therefore exist
//! once. Errors become `{"success":false,"error":..,"code":..}` with the
//! HTTP status of [`errors`]. Streams are Server-Sent Events.
//!
//! [`dialect`]: crate::api::dialect
//! [`errors`]: crate::api::errors

mod agents;
mod input;
mod messages;
mod metrics;
pub mod response;
mod sessions;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use http_body_util::{BodyExt, Limited};
use prometheus_client::registry::Registry;
use serde_json::json;
use tonic::Status;
use tower_http::decompression::RequestDecompressionLayer;

use self::response::{HttpError, json_response};
use crate::api::errors::code_of_http_status;
use crate::api::{Api, Caller};
use crate::app::metrics::Metrics;
use crate::store::Store;
use crate::transport::listener::ConnectionInfo;
use crate::transport::request_metrics::RequestMetrics;

/// What the gateway calls: the API and, for `/metrics`, the counters, the
/// store's gauges and the registry they are exposed from.
pub struct Gateway {
    pub api: Arc<Api>,
    pub metrics: Arc<Metrics>,
    pub requests: Arc<RequestMetrics>,
    pub registry: Arc<Registry>,
    pub store: Arc<dyn Store>,
    pub max_body_bytes: usize,
    pub started: Instant,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub store_health: Arc<crate::transport::health::StoreHealth>,
}

type Gw = State<Arc<Gateway>>;

/// The caller of an HTTP request: authenticated from its headers before
/// anything else of it is read (401 otherwise).
impl FromRequestParts<Arc<Gateway>> for Caller {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, gw: &Arc<Gateway>) -> Result<Self, HttpError> {
        let peer = parts
            .extensions
            .get::<ConnectionInfo>()
            .and_then(|c| c.peer_agent.as_ref());
        let route = parts.extensions.get::<MatchedPath>().map_or("", MatchedPath::as_str);
        let method = format!("{} {route}", parts.method);
        Ok(gw.api.caller(&parts.headers, peer, method.into())?)
    }
}

pub fn router(gateway: Arc<Gateway>) -> Router {
    // Every route but /health takes a `Caller`, so it authenticates first.
    let routes = Router::new()
        .route("/agents/register", post(agents::register_agent))
        .route("/agents", get(agents::list_agents))
        .route(
            "/agents/{*agent_id}",
            get(agents::agent_route)
                .delete(agents::agent_route)
                .post(agents::agent_route),
        )
        .route("/messages/send", post(messages::send_message))
        .route("/messages/batch", post(messages::send_messages))
        .route("/messages/{message_id}", get(messages::get_message))
        .route("/sessions", post(sessions::create_session).get(sessions::list_sessions))
        .route("/sessions/events", get(sessions::watch_sessions))
        .route("/sessions/{session_id}", get(sessions::get_session))
        .route("/sessions/{session_id}/participants", post(sessions::add_participant))
        .route(
            "/sessions/{session_id}/participants/{*agent_id}",
            axum::routing::delete(sessions::remove_participant),
        )
        .route("/sessions/{session_id}/workflow", put(sessions::update_workflow))
        .route(
            "/sessions/{session_id}/workflow/advance",
            post(sessions::advance_workflow),
        )
        .route(
            "/sessions/{session_id}/context",
            put(sessions::replace_context).patch(sessions::merge_context),
        )
        .route("/sessions/{session_id}/complete", post(sessions::complete_session))
        .route("/sessions/{session_id}/terminate", post(sessions::terminate_session))
        .route("/sessions/{session_id}/aggregate", post(sessions::aggregate_results))
        .route("/sessions/{session_id}/summary", get(sessions::get_session_summary))
        .route(
            "/sessions/{session_id}/aggregations/{aggregation_id}/resolve",
            post(sessions::resolve_aggregation),
        )
        .route("/metrics", get(metrics::metrics));
    Router::new()
        .route("/health", get(health))
        .merge(routes)
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
            answer.headers_mut().append(name.clone(), value.clone());
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

async fn health(State(gw): Gw) -> Response {
    let uptime = u64::try_from(gw.started.elapsed().as_millis()).unwrap_or(u64::MAX);
    if gw.shutdown.is_cancelled() {
        let body = json!({"status": "shutting_down", "uptime": uptime});
        return json_response(StatusCode::SERVICE_UNAVAILABLE, &body);
    }
    if let Some(problem) = gw.store_health.problem() {
        let body = json!({"status": "unhealthy", "uptime": uptime, "error": problem});
        return json_response(StatusCode::SERVICE_UNAVAILABLE, &body);
    }
    json_response(StatusCode::OK, &json!({"status": "healthy", "uptime": uptime}))
}
