//! grpc.health.v1 with streams that end at shutdown (tonic-health's Watch
//! never ends on its own, which would hold graceful shutdown open), and the
//! store's health that both it and HTTP `/health` report.

use std::pin::Pin;
use std::sync::{Mutex, PoisonError};

use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::HealthService;

pub struct ShutdownAwareHealth {
    inner: HealthService,
    shutdown: CancellationToken,
}

impl ShutdownAwareHealth {
    pub fn new(inner: HealthService, shutdown: CancellationToken) -> Self {
        Self { inner, shutdown }
    }
}

#[tonic::async_trait]
impl Health for ShutdownAwareHealth {
    async fn check(&self, request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(&self, request: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let mut statuses = self.inner.watch(request).await?.into_inner();
        let shutdown = self.shutdown.clone();
        let stream = async_stream::stream! {
            loop {
                // Status changes first, so NOT_SERVING (set before the
                // shutdown token fires) still reaches the watcher.
                let next = tokio::select! {
                    biased;
                    next = statuses.next() => next,
                    () = shutdown.cancelled() => None,
                };
                match next {
                    Some(status) => yield status,
                    None => break,
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Why the store failed its last check, if it did.
#[derive(Debug, Default)]
pub struct StoreHealth {
    problem: Mutex<Option<String>>,
}

impl StoreHealth {
    pub fn problem(&self) -> Option<String> {
        self.problem.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Records the outcome of a check; answers whether it changed.
    pub fn set(&self, problem: Option<String>) -> bool {
        let mut current = self.problem.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = current.is_some() != problem.is_some();
        *current = problem;
        changed
    }
}
