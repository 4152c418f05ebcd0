//! Request metrics for both transports: answers counted by transport, route
//! and code, unary calls timed. The `/metrics` endpoint of the gateway
//! renders them. The same middleware runs each call in its trace span.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use prost_reflect::DescriptorPool;
use tracing::Instrument;

use crate::api::errors::code_name;
use crate::app::metrics::latency_histogram;
use crate::pb;
use crate::telemetry;

/// The gRPC code name of an HTTP error response, set by the gateway for
/// these metrics.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

/// The path of the gRPC method a request calls, for the log of denied
/// calls; set by [`record`].
#[derive(Debug, Clone, Copy)]
pub struct RpcMethod(pub &'static str);

/// The paths of every RPC the server serves.
static KNOWN_RPCS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    let mut paths: HashSet<String> = [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    if let Ok(pool) = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET) {
        for service in pool.services() {
            for method in service.methods() {
                paths.insert(format!("/{}/{}", service.full_name(), method.name()));
            }
        }
    }
    paths
});

/// The path of the RPC at `path`, if the server serves one there.
pub fn known_rpc(path: &str) -> Option<&'static str> {
    KNOWN_RPCS.get(path).map(String::as_str)
}

/// The labels of an answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Answer {
    transport: &'static str,
    route: Cow<'static, str>,
    code: &'static str,
}

/// The labels of a latency.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Route {
    transport: &'static str,
    route: Cow<'static, str>,
}

/// Requests seen by the server, by transport, route and code.
///
/// A request takes no exclusive lock but its own route's histogram: the
/// families are read-locked to find a series (write-locked once, when a
/// route or code is first seen).
pub struct RequestMetrics {
    answers: Family<Answer, Counter>,
    latency: Family<Route, Histogram, fn() -> Histogram>,
    /// For the JSON `error_rate`, which has no label to look up.
    all: AtomicU64,
    errors: AtomicU64,
}

impl Default for RequestMetrics {
    /// Counters registered nowhere, for tests.
    fn default() -> Self {
        Self::new(&mut Registry::default())
    }
}

impl RequestMetrics {
    /// Creates the request families and registers them with `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self {
            answers: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            all: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        };
        // `prometheus-client` ends the help texts with a full stop.
        registry.register(
            "requests",
            "Requests answered, by transport, route and code",
            metrics.answers.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Time to answer unary requests, by transport and route",
            Unit::Seconds,
            metrics.latency.clone(),
        );
        metrics
    }

    fn answered(&self, transport: &'static str, route: Cow<'static, str>, code: &'static str) {
        self.all.fetch_add(1, Ordering::Relaxed);
        if code != "OK" {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.answers.get_or_create(&Answer { transport, route, code }).inc();
    }

    /// (all requests, requests answered with an error).
    pub fn totals(&self) -> (u64, u64) {
        (self.all.load(Ordering::Relaxed), self.errors.load(Ordering::Relaxed))
    }
}

/// Middleware over every route, gRPC and HTTP: counts answers by code and
/// times unary calls (streams are counted, not timed). Runs the call in its
/// span, named after the route ([`telemetry::call_span`]); one middleware
/// for both, as each layer costs allocations on every call.
pub async fn record(State(metrics): State<Arc<RequestMetrics>>, mut request: Request, next: Next) -> Response {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    // Labels come from a fixed set (known RPCs, route templates), whatever
    // paths clients send, so the metrics cannot grow without bound.
    let path = request.uri().path();
    let matched = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    let rpc = if grpc { known_rpc(path) } else { None };
    let route: Cow<'static, str> = match (rpc, matched) {
        (Some(rpc), _) => Cow::Borrowed(rpc),
        (None, Some(template)) => Cow::Owned(format!("{} {template}", request.method())),
        (None, None) => Cow::Borrowed("unmatched"),
    };
    if let Some(rpc) = rpc {
        request.extensions_mut().insert(RpcMethod(rpc));
    }
    let transport = if grpc { "grpc" } else { "http" };
    // `agentbus.v1.MessageService/SendMessage`, `POST /messages/send`.
    let span = telemetry::call_span(route.strip_prefix('/').unwrap_or(&route), request.headers());
    let started = Instant::now();
    let response = if span.is_disabled() {
        next.run(request).await
    } else {
        next.run(request).instrument(span.clone()).await
    };
    let code = if grpc {
        response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok()?.parse::<i32>().ok())
            .map_or("OK", |n| code_name(tonic::Code::from_i32(n)))
    } else if let Some(ErrorCode(code)) = response.extensions().get::<ErrorCode>() {
        code
    } else if response.status().is_success() {
        "OK"
    } else {
        "UNKNOWN"
    };
    let streaming = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
        || (grpc && is_streaming_rpc(&route));
    if !streaming {
        let latency = started.elapsed().as_secs_f64();
        let key = Route {
            transport,
            route: route.clone(),
        };
        metrics.latency.get_or_create(&key).observe(latency);
    }
    telemetry::record_answer(&span, code);
    metrics.answered(transport, route, code);
    response
}

fn is_streaming_rpc(path: &str) -> bool {
    [
        "/ReceiveMessages",
        "/PublishMessages",
        "/WatchSessions",
        "/Watch",
        "/ServerReflectionInfo",
    ]
    .iter()
    .any(|method| path.ends_with(method))
}
