//! One port for everything: gRPC services, health and reflection, and the
//! HTTP/JSON gateway (HTTP/1.1 and HTTP/2), in one router. Requests with a
//! gRPC content type that match no service get UNIMPLEMENTED, others a JSON
//! 404.
//!
//! Shutdown order: health turns NOT_SERVING, the shutdown token ends every
//! open stream, the listener stops accepting, connections get `grace` to
//! finish, then the store is flushed and closed.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tower::util::{MapRequestLayer, MapResponseLayer};

use crate::api::{Api, ApiConfig};
use crate::app::agents::Agents;
use crate::app::messaging::{Messaging, MessagingConfig};
use crate::app::metrics::Metrics;
use crate::app::presence::{self, Presence};
use crate::app::retention;
use crate::app::sessions::Sessions;
use crate::app::tokens::Tokens;
use crate::config::{Config, StoreKind};
use crate::domain::session::SessionLimits;
use crate::pb;
use crate::pb::agent_service_server::AgentServiceServer;
use crate::pb::message_service_server::MessageServiceServer;
use crate::pb::session_service_server::SessionServiceServer;
use crate::store::memory::MemoryStore;
use crate::store::postgres::{PostgresOptions, PostgresStore};
use crate::store::sqlite::{DEFAULT_MAX_BATCH, SqliteOptions, SqliteStore};
use crate::store::{Store, StoreError};
use crate::transport::codec;
use crate::transport::grpc::{Authenticate, Grpc};
use crate::transport::health::{ShutdownAwareHealth, StoreHealth};
use crate::transport::http::{self, Gateway};
use crate::transport::listener::{self, ConnectionLimits};
use crate::transport::request_metrics::{self, RequestMetrics};
use crate::transport::tls::{Tls, TlsError};

/// Answers may exceed max_message_bytes by this much. Sends are sized so
/// that their deliveries fit max_message_bytes; this spare room keeps a
/// message stored before that check (or any answer we sized wrong)
/// deliverable to clients with a larger limit instead of failing the stream.
const RESPONSE_HEADROOM: usize = 64 * 1024;

/// How often the store's health is checked.
const STORE_CHECK: Duration = Duration::from_secs(1);

/// Services whose health is reported besides the overall `""`.
const SERVICE_NAMES: [&str; 3] = [
    <SessionServiceServer<Grpc> as tonic::server::NamedService>::NAME,
    <AgentServiceServer<Grpc> as tonic::server::NamedService>::NAME,
    <MessageServiceServer<Grpc> as tonic::server::NamedService>::NAME,
];

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match config.storage.store {
        StoreKind::Memory => Arc::new(MemoryStore::new(config.storage.watch_buffer)),
        StoreKind::Sqlite => Arc::new(SqliteStore::open(&SqliteOptions {
            path: config.sqlite_path(),
            synchronous: config.storage.sqlite_synchronous,
            feed_capacity: config.storage.watch_buffer,
            max_batch: DEFAULT_MAX_BATCH,
        })?),
        StoreKind::Postgres => {
            let url = config
                .storage
                .database_url
                .clone()
                .ok_or_else(|| StoreError::Backend("store postgres needs database_url (--database-url)".into()))?;
            Arc::new(
                PostgresStore::open(&PostgresOptions {
                    url,
                    pool_size: config.storage.database_pool_size,
                    feed_capacity: config.storage.watch_buffer,
                })
                .await?,
            )
        }
    })
}

/// Serves on `listener` until `stop` resolves, then shuts down gracefully.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let tls = match config.tls_files() {
        Some(files) => {
            let tls = Arc::new(Tls::load(files)?);
            tls.reload_on_sighup();
            Some(tls)
        }
        None => None,
    };
    let store = open_store(&config).await?;
    let shutdown = CancellationToken::new();
    let limits = SessionLimits {
        max_participants: config.sessions.max_participants,
        max_context_bytes: config.sessions.max_context_bytes,
        // Room for the event or response wrapped around a snapshot.
        max_session_bytes: config.server.max_message_bytes / 8 * 7,
    };
    // List pages get the same room as one snapshot.
    let max_page_bytes = limits.max_session_bytes;
    let max_answer_bytes = config.server.max_message_bytes + RESPONSE_HEADROOM;
    let sessions = Arc::new(Sessions::new(
        store.clone(),
        limits.clone(),
        config.sessions.session_idle_timeout,
    ));

    let health = HealthReporter::new();
    set_health(&health, ServingStatus::Serving).await;
    let health_service = HealthServer::new(ShutdownAwareHealth::new(
        HealthService::from_health_reporter(health.clone()),
        shutdown.clone(),
    ));
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let presence = Arc::new(Presence::default());
    let mut registry = Registry::with_prefix("agentbus");
    let metrics = Arc::new(Metrics::new(&mut registry));
    let messaging = Arc::new(Messaging::new(
        store.clone(),
        presence.clone(),
        metrics.clone(),
        MessagingConfig {
            ack_timeout: config.delivery.ack_timeout,
            message_timeout: config.delivery.message_timeout,
            retry_base: config.delivery.retry_backoff,
            inbox_limit: config.delivery.inbox_limit,
            heartbeat: config.server.heartbeat_interval,
            session_limits: limits,
        },
    ));
    let agents = Arc::new(Agents::new(
        store.clone(),
        presence.clone(),
        messaging.clone(),
        max_page_bytes,
    ));
    let api = Arc::new(Api::new(
        sessions.clone(),
        agents,
        messaging.clone(),
        ApiConfig {
            api_key: config.auth.api_key.clone(),
            require_agent_identity: config.auth.require_agent_identity,
            tokens: Arc::new(Tokens::load(store.clone()).await?),
            metrics: metrics.clone(),
            heartbeat: config.server.heartbeat_interval,
            shutdown: shutdown.clone(),
            max_message_bytes: config.server.max_message_bytes,
        },
    ));
    let grpc = Arc::new(Grpc::new(api.clone()));
    let authenticate = Authenticate(api.clone());
    let session_service = SessionServiceServer::from_arc(grpc.clone())
        .max_decoding_message_size(config.server.max_message_bytes)
        .max_encoding_message_size(max_answer_bytes);
    let agent_service = AgentServiceServer::from_arc(grpc.clone())
        .max_decoding_message_size(config.server.max_message_bytes)
        .max_encoding_message_size(max_answer_bytes);
    let message_service = MessageServiceServer::from_arc(grpc)
        .max_decoding_message_size(config.server.max_message_bytes)
        .max_encoding_message_size(max_answer_bytes);
    let requests = Arc::new(RequestMetrics::new(&mut registry));
    let store_health = Arc::new(StoreHealth::default());
    let gateway = Arc::new(Gateway {
        api,
        metrics: metrics.clone(),
        requests: requests.clone(),
        registry: Arc::new(registry),
        store: store.clone(),
        max_body_bytes: config.server.max_message_bytes,
        started: Instant::now(),
        shutdown: shutdown.clone(),
        store_health: store_health.clone(),
    });
    let router = Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(InterceptedService::new(session_service, authenticate.clone()))
        .add_service(InterceptedService::new(agent_service, authenticate.clone()))
        .add_service(InterceptedService::new(message_service, authenticate))
        .into_axum_router()
        .layer(MapResponseLayer::new(codec::request_errors))
        .merge(http::router(gateway))
        .fallback(http::not_found)
        .layer(axum::middleware::from_fn_with_state(requests, request_metrics::record))
        .layer(MapRequestLayer::new(listener::first_request_arrived));

    // A store shared with other nodes: follow their changes, share presence.
    if let Some(signals) = store.signals() {
        tokio::spawn(messaging.clone().follow_signals(signals, shutdown.clone()));
        tokio::spawn(presence::publish(presence.clone(), store.clone(), shutdown.clone()));
    }
    let background = [
        tokio::spawn(sweep_idle_sessions(
            sessions,
            config.sessions.session_idle_timeout,
            shutdown.clone(),
        )),
        tokio::spawn(sweep_messages(messaging, config.delivery.ack_timeout, shutdown.clone())),
        tokio::spawn(retention::run(
            store.clone(),
            metrics.clone(),
            config.retention.retention(),
            shutdown.clone(),
        )),
        tokio::spawn(check_store(
            store.clone(),
            health.clone(),
            store_health,
            shutdown.clone(),
        )),
    ];

    let stopping = CancellationToken::new();
    let begin_shutdown = {
        let (health, shutdown, stopping) = (health.clone(), shutdown.clone(), stopping.clone());
        let drain = config.server.shutdown_drain;
        async move {
            stop.await;
            tracing::info!(?drain, "shutting down");
            set_health(&health, ServingStatus::NotServing).await;
            shutdown.cancel();
            // Still accepting, but reporting NOT_SERVING / 503.
            tokio::time::sleep(drain).await;
            stopping.cancel();
        }
    };

    let limits = ConnectionLimits {
        max_connections: listener::fit_descriptor_limit(config.server.max_connections),
        header_read_timeout: config.server.header_read_timeout,
    };
    let incoming = listener::incoming(listener, limits, tls);
    let server = tonic::transport::Server::builder()
        // HTTP/1.1 is accepted for the JSON gateway on this port.
        .accept_http1(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(1024))
        .add_routes(Routes::from(router))
        .serve_with_incoming_shutdown(incoming, begin_shutdown);
    tokio::pin!(server);

    let grace = config.server.shutdown_grace;
    let served = tokio::select! {
        result = &mut server => result.map_err(ServeError::from),
        () = async { stopping.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "connections still open after the shutdown grace period; closing them");
            Ok(())
        }
    };
    shutdown.cancel();
    for task in background {
        let _ = task.await;
    }
    let closed = store.close().await;
    tracing::info!("store closed");
    served?;
    closed.map_err(ServeError::from)
}

/// Redelivers, falls back and dead-letters due messages until shutdown.
async fn sweep_messages(messaging: Arc<Messaging>, ack_timeout: Duration, shutdown: CancellationToken) {
    let period = (ack_timeout / 20).clamp(Duration::from_millis(20), Duration::from_secs(1));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            // Another node may run it now; ask again at every tick.
            _ = ticks.tick() => if messaging.runs_background_work()
                && let Err(error) = messaging.sweep().await
            {
                tracing::warn!(%error, "sweeping due messages failed");
            }
        }
    }
}

/// Checks the store every [`STORE_CHECK`] until shutdown: while it fails,
/// health is NOT_SERVING (gRPC) and 503 (HTTP), naming the problem.
async fn check_store(
    store: Arc<dyn Store>,
    health: HealthReporter,
    state: Arc<StoreHealth>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(STORE_CHECK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let problem = store.check().await.err().map(|e| e.to_string());
        if !state.set(problem.clone()) || shutdown.is_cancelled() {
            continue;
        }
        match problem {
            Some(problem) => {
                tracing::warn!(%problem, "the store is unavailable; health reports NOT_SERVING until it is back");
                set_health(&health, ServingStatus::NotServing).await;
            }
            None => {
                tracing::info!("the store is available again; health reports SERVING");
                set_health(&health, ServingStatus::Serving).await;
            }
        }
    }
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    for name in SERVICE_NAMES {
        health.set_service_status(name, status).await;
    }
}

/// Expires idle sessions until shutdown, checking a few times per timeout.
async fn sweep_idle_sessions(sessions: Arc<Sessions>, idle_timeout: Duration, shutdown: CancellationToken) {
    let period = (idle_timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(30));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => if sessions.runs_background_work() {
                match sessions.expire_idle().await {
                    Ok(0) => {}
                    Ok(count) => tracing::info!(count, "expired idle sessions"),
                    Err(error) => tracing::warn!(%error, "expiring idle sessions failed"),
                }
            },
        }
    }
}
