//! Traces: a span for every call (named after the gRPC method or the HTTP
//! route) and for every delivery of a message to its recipient, exported
//! over OTLP when `--otlp-endpoint` is set ([`otlp`]).
//!
//! A call's span continues the caller's W3C trace (`traceparent`); a
//! delivery's span continues the trace stored with the message, so the
//! recipient's side of a message is in the sender's trace.
//!
//! The spans are at DEBUG level: with no exporter and the default log
//! filter they are disabled, and each costs one level check on the hot
//! path. `RUST_LOG=agentbus::telemetry=debug` shows them in the logs.

pub mod otlp;

use std::fmt::Display;

use axum::http::HeaderMap;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing::Span;
use tracing::field::{Empty, display};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::domain::AgentId;
use crate::domain::message::Message;
use crate::domain::trace::TraceContext;

/// The target of the spans (and of this module's events), which the OTLP
/// exporter's filter lets through at DEBUG.
pub const TARGET: &str = "agentbus::telemetry";

/// The span of one call named `name` (`agentbus.v1.MessageService/SendMessage`,
/// `POST /messages/send`), continuing the trace of its `traceparent` header.
/// `name` is only formatted when the span is enabled.
pub fn call_span(name: impl Display, headers: &HeaderMap) -> Span {
    let span = tracing::debug_span!(
        target: TARGET,
        "call",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = Empty,
        code = Empty,
        agent_id = Empty,
        session_id = Empty,
        message_id = Empty,
    );
    if !span.is_disabled() {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(trace) = TraceContext::from_headers(text("traceparent"), text("tracestate")) {
            continue_trace(&span, &trace);
        }
    }
    span
}

/// The span of handing `message` to `recipient` (its `attempt`th delivery),
/// continuing the trace stored with the message.
pub fn delivery_span(recipient: &AgentId, message: &Message, attempt: u32) -> Span {
    let span = tracing::debug_span!(
        target: TARGET,
        "deliver",
        otel.kind = "consumer",
        agent_id = %recipient,
        message_id = %message.message_id,
        session_id = Empty,
        sender_id = %message.sender.agent_id,
        attempt,
    );
    if !span.is_disabled() {
        if let Some(id) = &message.sender.session_id {
            span.record("session_id", display(id));
        }
        if let Some(trace) = &message.trace {
            continue_trace(&span, trace);
        }
    }
    span
}

/// Records how a call was answered (a gRPC code name, also for HTTP);
/// the server's failures, as OpenTelemetry's gRPC conventions count them,
/// mark the span as failed. A stream's end is not its answer.
pub fn record_answer(span: &Span, code: &'static str) {
    if span.is_disabled() {
        return;
    }
    span.record("code", code);
    if is_server_error(code) {
        span.record("otel.status_code", "error");
    }
}

fn is_server_error(code: &str) -> bool {
    matches!(
        code,
        "UNKNOWN" | "DEADLINE_EXCEEDED" | "UNIMPLEMENTED" | "INTERNAL" | "UNAVAILABLE" | "DATA_LOSS"
    )
}

/// Records the agent the current call acts as on its span.
pub fn record_agent(id: &AgentId) {
    Span::current().record("agent_id", display(id));
}

/// Records the session the current call names on its span.
pub fn record_session(id: &impl Display) {
    Span::current().record("session_id", display(id));
}

/// Records the message the current call names on its span.
pub fn record_message(id: &impl Display) {
    Span::current().record("message_id", display(id));
}

/// Makes the span a child of the remote span that `trace` names; does
/// nothing without an exporter (no OpenTelemetry layer to tell).
fn continue_trace(span: &Span, trace: &TraceContext) {
    if let Some(parent) = remote_parent(trace) {
        // Fails only without the layer or once the span was entered;
        // neither leaves anything to do.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
    }
}

/// The OpenTelemetry form of a W3C trace context; None if its ids are not
/// valid (all zeros, which parsing already refuses).
fn remote_parent(trace: &TraceContext) -> Option<SpanContext> {
    let trace_id = TraceId::from_hex(trace.trace_id()).ok()?;
    let span_id = SpanId::from_hex(trace.parent_id()).ok()?;
    // An invalid tracestate is dropped, as the specification asks.
    let state = trace
        .tracestate
        .as_deref()
        .and_then(|state| state.parse::<TraceState>().ok())
        .unwrap_or_default();
    let context = SpanContext::new(trace_id, span_id, TraceFlags::new(trace.flags()), true, state);
    context.is_valid().then_some(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_exporter_the_default_log_filter_disables_the_spans() {
        let logs = tracing_subscriber::fmt().with_env_filter("info").finish();
        tracing::subscriber::with_default(logs, || {
            let mut headers = HeaderMap::new();
            headers.insert(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                    .parse()
                    .unwrap(),
            );
            assert!(call_span("agentbus.v1.MessageService/SendMessage", &headers).is_disabled());
        });
        let debug = tracing_subscriber::fmt()
            .with_env_filter("agentbus::telemetry=debug")
            .finish();
        tracing::subscriber::with_default(debug, || {
            assert!(!call_span("agentbus.v1.MessageService/SendMessage", &HeaderMap::new()).is_disabled());
        });
    }

    #[test]
    fn only_the_servers_failures_are_errors() {
        assert!(!is_server_error("OK"));
        assert!(!is_server_error("NOT_FOUND"));
        assert!(!is_server_error("INVALID_ARGUMENT"));
        assert!(is_server_error("UNAVAILABLE"));
        assert!(is_server_error("INTERNAL"));
    }

    #[test]
    fn a_traceparent_names_the_remote_parent() {
        let trace = TraceContext::parse(
            "t",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "congo=t61rcWkgMzE",
        )
        .unwrap();
        let parent = remote_parent(&trace).unwrap();
        assert_eq!(format!("{}", parent.trace_id()), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(format!("{}", parent.span_id()), "00f067aa0ba902b7");
        assert!(parent.is_sampled());
        assert!(parent.is_remote());
        assert_eq!(parent.trace_state().get("congo"), Some("t61rcWkgMzE"));

        let unsampled =
            TraceContext::parse("t", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", "").unwrap();
        assert!(!remote_parent(&unsampled).unwrap().is_sampled());
    }
}
