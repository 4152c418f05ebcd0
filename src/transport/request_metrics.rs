//! Request metrics for both transports: answers counted by transport, route
//! and code, unary calls timed. The `/metrics` endpoint of the gateway
//! renders them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use prost_reflect::DescriptorPool;

use crate::api::errors::code_name;
use crate::app::metrics::{Histogram, HistogramSnapshot};
use crate::pb;

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

/// Per route: answers by code, and the latency of unary calls.
#[derive(Default)]
struct RouteStats {
    codes: Mutex<HashMap<&'static str, u64>>,
    latency: Histogram,
}

/// Requests seen by the server, keyed by (transport, route).
#[derive(Default)]
pub struct RequestMetrics {
    routes: Mutex<HashMap<(&'static str, String), Arc<RouteStats>>>,
}

pub struct RouteSnapshot {
    pub transport: &'static str,
    pub route: String,
    pub codes: Vec<(&'static str, u64)>,
    pub latency: HistogramSnapshot,
}

impl RequestMetrics {
    fn route(&self, transport: &'static str, route: String) -> Arc<RouteStats> {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        routes.entry((transport, route)).or_default().clone()
    }

    pub fn snapshot(&self) -> Vec<RouteSnapshot> {
        let routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<_> = routes
            .iter()
            .map(|((transport, route), stats)| {
                let mut codes: Vec<_> = stats
                    .codes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .map(|(c, n)| (*c, *n))
                    .collect();
                codes.sort_unstable();
                RouteSnapshot {
                    transport,
                    route: route.clone(),
                    codes,
                    latency: stats.latency.snapshot(),
                }
            })
            .collect();
        all.sort_by(|a, b| (a.transport, &a.route).cmp(&(b.transport, &b.route)));
        all
    }

    /// (all requests, requests answered with an error).
    pub fn totals(snapshot: &[RouteSnapshot]) -> (u64, u64) {
        snapshot
            .iter()
            .flat_map(|r| &r.codes)
            .fold((0, 0), |(all, errors), (code, n)| {
                (all + n, if *code == "OK" { errors } else { errors + n })
            })
    }
}

/// Middleware over every route, gRPC and HTTP: counts answers by code and
/// times unary calls (streams are counted, not timed).
pub async fn record(State(metrics): State<Arc<RequestMetrics>>, mut request: Request, next: Next) -> Response {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    // Labels come from a fixed set (known RPCs, route templates), whatever
    // paths clients send, so the metrics cannot grow without bound.
    let path = request.uri().path();
    let matched = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    let rpc = if grpc { KNOWN_RPCS.get(path) } else { None };
    let route = match (rpc, matched) {
        (Some(rpc), _) => rpc.clone(),
        (None, Some(template)) => format!("{} {template}", request.method()),
        (None, None) => "unmatched".to_owned(),
    };
    if let Some(rpc) = rpc {
        request.extensions_mut().insert(RpcMethod(rpc.as_str()));
    }
    let transport = if grpc { "grpc" } else { "http" };
    let started = Instant::now();
    let response = next.run(request).await;
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
    let stats = metrics.route(transport, route);
    *stats
        .codes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(code)
        .or_default() += 1;
    if !streaming {
        stats.latency.observe(started.elapsed());
    }
    response
}

fn is_streaming_rpc(path: &str) -> bool {
    ["/ReceiveMessages", "/WatchSessions", "/Watch", "/ServerReflectionInfo"]
        .iter()
        .any(|method| path.ends_with(method))
}
