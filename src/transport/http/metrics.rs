//! `GET /metrics`: the prototype's JSON by default, Prometheus text or
//! OpenMetrics when the client asks for `text/plain` or
//! `application/openmetrics-text`.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Gw;
use super::response::{HttpError, json_response};
use crate::api::Caller;
use crate::app::metrics::{HistogramSnapshot, LATENCY_BUCKETS, THROUGHPUT_WINDOW_SECS};
use crate::domain::Denial;
use crate::domain::message::MessageType;
use crate::transport::request_metrics::RequestMetrics;

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
    let requests = gw.requests.snapshot();
    let (all, errors) = RequestMetrics::totals(&requests);
    let average_ack_ms = if messages.acked == 0 {
        0.0
    } else {
        messages.ack_latency_micros() as f64 / messages.acked as f64 / 1000.0
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
    let open = matches!(kind, Format::OpenMetrics);
    let mut out = Exposition {
        text: String::new(),
        open,
    };
    out.gauge(
        "agentbus_uptime_seconds",
        "Seconds since the server started.",
        &[(String::new(), uptime.as_secs_f64())],
    );
    out.gauge(
        "agentbus_active_sessions",
        "Sessions in the active state.",
        &[(String::new(), counts.active_sessions as f64)],
    );
    out.gauge(
        "agentbus_registered_agents",
        "Registered agents.",
        &[(String::new(), counts.registered_agents as f64)],
    );
    out.gauge(
        "agentbus_message_throughput",
        &format!("Messages accepted per second over the last {THROUGHPUT_WINDOW_SECS}s."),
        &[(String::new(), messages.throughput)],
    );
    let sent: Vec<_> = MessageType::ALL
        .iter()
        .zip(messages.sent)
        .map(|(t, n)| (format!("type=\"{}\"", t.as_str()), n))
        .collect();
    out.counter("agentbus_messages_sent", "Messages accepted, by type.", &sent);
    out.counter(
        "agentbus_message_deliveries",
        "Deliveries on inbox streams, retries included.",
        &[(String::new(), messages.delivered)],
    );
    out.counter(
        "agentbus_message_redeliveries",
        "Deliveries that were retries.",
        &[(String::new(), messages.redelivered)],
    );
    out.counter(
        "agentbus_messages_acked",
        "Messages acknowledged by their recipient.",
        &[(String::new(), messages.acked)],
    );
    out.counter(
        "agentbus_messages_dead_lettered",
        "Messages given up on.",
        &[(String::new(), messages.dead_lettered)],
    );
    let denied: Vec<_> = Denial::ALL
        .iter()
        .zip(messages.denied)
        .map(|(d, n)| (format!("reason=\"{}\"", d.as_str()), n))
        .collect();
    out.counter(
        "agentbus_auth_denied",
        "Calls refused by authentication or an access rule, by reason.",
        &denied,
    );
    let acks: Vec<_> = MessageType::ALL
        .iter()
        .zip(&messages.ack_latency)
        .map(|(t, h)| (format!("type=\"{}\"", t.as_str()), h))
        .collect();
    out.histogram(
        "agentbus_message_ack_duration_seconds",
        "From acceptance to acknowledgement, by message type.",
        &acks,
    );
    let answers: Vec<_> = requests
        .iter()
        .flat_map(|r| {
            r.codes.iter().map(move |(code, n)| {
                (
                    format!(
                        "transport=\"{}\",route=\"{}\",code=\"{code}\"",
                        r.transport,
                        escape(&r.route)
                    ),
                    *n,
                )
            })
        })
        .collect();
    out.counter(
        "agentbus_requests",
        "Requests answered, by transport, route and code.",
        &answers,
    );
    let latencies: Vec<_> = requests
        .iter()
        .filter(|r| r.latency.count() > 0)
        .map(|r| {
            (
                format!("transport=\"{}\",route=\"{}\"", r.transport, escape(&r.route)),
                &r.latency,
            )
        })
        .collect();
    out.histogram(
        "agentbus_request_duration_seconds",
        "Time to answer unary requests, by transport and route.",
        &latencies,
    );
    if open {
        out.text.push_str("# EOF\n");
    }
    let content_type = if open {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    let mut response = (StatusCode::OK, out.text).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Prometheus text format 0.0.4, or OpenMetrics 1.0 when `open`.
struct Exposition {
    text: String,
    open: bool,
}

impl Exposition {
    fn header(&mut self, family: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {family} {help}");
        let _ = writeln!(self.text, "# TYPE {family} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.text, "{name} {value}");
        } else {
            let _ = writeln!(self.text, "{name}{{{labels}}} {value}");
        }
    }

    fn gauge(&mut self, name: &str, help: &str, samples: &[(String, f64)]) {
        self.header(name, "gauge", help);
        for (labels, value) in samples {
            self.sample(name, labels, value);
        }
    }

    /// OpenMetrics names the family without `_total`; Prometheus text names
    /// it with.
    fn counter(&mut self, base: &str, help: &str, samples: &[(String, u64)]) {
        let total = format!("{base}_total");
        self.header(if self.open { base } else { &total }, "counter", help);
        for (labels, value) in samples {
            self.sample(&total, labels, value);
        }
    }

    fn histogram(&mut self, name: &str, help: &str, samples: &[(String, &HistogramSnapshot)]) {
        self.header(name, "histogram", help);
        for (labels, h) in samples {
            let sep = if labels.is_empty() { "" } else { "," };
            let bounds = LATENCY_BUCKETS.iter().map(f64::to_string).chain(["+Inf".to_owned()]);
            for (le, count) in bounds.zip(&h.cumulative) {
                self.sample(&format!("{name}_bucket"), &format!("{labels}{sep}le=\"{le}\""), count);
            }
            self.sample(&format!("{name}_sum"), labels, h.sum_micros as f64 / 1e6);
            self.sample(&format!("{name}_count"), labels, h.count());
        }
    }
}
