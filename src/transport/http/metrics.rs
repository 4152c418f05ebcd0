//! `GET /metrics`: the prototype's JSON by default, Prometheus text or
//! OpenMetrics when the client asks for `text/plain` or
//! `application/openmetrics-text`; both encoded by `prometheus-client` from
//! the server's registry.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{prometheus_text, text};
use serde_json::json;

use super::Gw;
use super::response::{HttpError, json_response};
use crate::api::Caller;
use crate::domain::message::MessageType;

enum Format {
    Json,
    Prometheus,
    OpenMetrics,
}

fn format(headers: &HeaderMap) -> Format {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.contains("application/openmetrics-text") {
        Format::OpenMetrics
    } else if accept.contains("text/plain") {
        Format::Prometheus
    } else {
        Format::Json
    }
}

/// `GET /metrics`.
pub async fn metrics(State(gw): Gw, _caller: Caller, headers: HeaderMap) -> Result<Response, HttpError> {
    let uptime = gw.started.elapsed();
    let (messages, counts) = gw.metrics.collect(gw.store.as_ref(), uptime).await?;
    let (all, errors) = gw.requests.totals();
    let average_ack_ms = if messages.acked == 0 {
        0.0
    } else {
        messages.ack_latency_sum.as_secs_f64() * 1000.0 / messages.acked as f64
    };
    let kind = format(&headers);
    if let Format::Json = kind {
        let by_type: serde_json::Map<_, _> = MessageType::ALL
            .iter()
            .zip(messages.sent)
            .map(|(t, n)| (t.as_str().to_owned(), json!(n)))
            .collect();
        let body = json!({
            "total_messages": messages.total_sent(),
            "active_sessions": counts.active_sessions,
            "registered_agents": counts.registered_agents,
            "average_response_time": average_ack_ms,
            "error_rate": if all == 0 { 0.0 } else { errors as f64 / all as f64 },
            "uptime": u64::try_from(uptime.as_millis()).unwrap_or(u64::MAX),
            "throughput": messages.throughput,
            "messages": {
                "sent_by_type": by_type,
                "delivered": messages.delivered,
                "redelivered": messages.redelivered,
                "acked": messages.acked,
                "dead_lettered": messages.dead_lettered,
            },
            "requests": {"total": all, "errors": errors},
        });
        return Ok(json_response(StatusCode::OK, &body));
    }
    let mut exposition = String::new();
    let content_type = if let Format::OpenMetrics = kind {
        text::encode(&mut exposition, &gw.registry).map_err(unencodable)?;
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        prometheus_text::encode(&mut exposition, &gw.registry).map_err(unencodable)?;
        prometheus_text::CONTENT_TYPE
    };
    let mut response = (StatusCode::OK, exposition).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}

/// Writing to a `String` fails only if a metric's own encoding does.
fn unencodable(_: std::fmt::Error) -> HttpError {
    HttpError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL",
        "the metrics could not be encoded",
    )
}
