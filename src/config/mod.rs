//! Server configuration: one struct per subsystem, resolved in layers by
//! [`figment`]: defaults, then an optional TOML file, then `AGENT_BUS_*`
//! environment variables, then command-line flags (see [`layers`]).
//!
//! Each setting has one name everywhere: the file key `ack_timeout`, the
//! variable `AGENT_BUS_ACK_TIMEOUT`, the flag `--ack-timeout`. The file stays
//! flat; which subsystem a key belongs to is read off the structs below.

mod flags;
mod layers;
mod listen;
mod print;
mod values;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::app::retention::Retention;
use crate::domain::token::TOKEN_PREFIX;
use crate::store::postgres::DEFAULT_POOL_SIZE;
use crate::store::sqlite::Synchronous;
use crate::telemetry::otlp::OtlpEndpoint;
use crate::transport::tls::TlsFiles;

pub use flags::{LAYERS_HELP, ServeArgs};
pub use layers::{Environment, Loaded};
pub use listen::ListenAddr;
pub use print::PrintFormat;
pub use values::parse_duration;

/// Which store backs the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Durable SQLite file under the data directory.
    Sqlite,
    /// Nothing survives the process; for tests and throwaway runs.
    Memory,
    /// A PostgreSQL database (`database_url`), which several nodes can share.
    Postgres,
}

/// The resolved configuration of `agentbus serve`. Serializing it prints
/// secrets: only [`Loaded::print`] shows it to people, redacted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub storage: StorageConfig,
    pub sessions: SessionsConfig,
    pub delivery: DeliveryConfig,
    pub tls: TlsConfig,
    pub retention: RetentionConfig,
    pub telemetry: TelemetryConfig,
}

/// The port, its connections and the streams on them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: ListenAddr,
    /// What `listen` resolved to when the configuration was loaded, IPv4
    /// first: the addresses checked for exposure and bound, from one lookup.
    #[serde(skip)]
    pub listen_addrs: Vec<SocketAddr>,
    /// Open connections at most (the prototype's `maxConnections`); lowered
    /// at start to what the open-file limit allows.
    pub max_connections: usize,
    /// A connection that sends no complete request head within this is closed.
    #[serde(with = "values::humantime_serde")]
    pub header_read_timeout: Duration,
    /// Largest gRPC message and HTTP body.
    pub max_message_bytes: usize,
    #[serde(with = "values::humantime_serde")]
    pub heartbeat_interval: Duration,
    #[serde(with = "values::humantime_serde")]
    pub shutdown_grace: Duration,
    /// After SIGTERM, keep serving this long with health reporting
    /// NOT_SERVING (HTTP 503) so load balancers stop sending traffic.
    #[serde(with = "values::humantime_serde")]
    pub shutdown_drain: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: ListenAddr {
                host: "127.0.0.1".into(),
                port: 8080,
            },
            listen_addrs: Vec::new(),
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            max_message_bytes: 4 * 1024 * 1024,
            heartbeat_interval: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            shutdown_drain: Duration::ZERO,
        }
    }
}

/// Who may call.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// A secret: printed redacted.
    pub api_key: Option<String>,
    /// The admin key may not send, receive or ack: only agents (by token or
    /// client certificate) speak, as themselves.
    pub require_agent_identity: bool,
    /// Listening on a non-loopback address without `api_key` is allowed.
    pub insecure: bool,
}

/// Where the bus keeps its state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub store: StoreKind,
    pub data_dir: PathBuf,
    pub sqlite_synchronous: Synchronous,
    /// The PostgreSQL database of `store = "postgres"`; its password is
    /// printed redacted.
    pub database_url: Option<String>,
    /// Connections to PostgreSQL at most.
    pub database_pool_size: usize,
    /// Live events buffered per watcher before it falls back to the store.
    pub watch_buffer: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            store: StoreKind::Sqlite,
            data_dir: PathBuf::from("./agentbus-data"),
            sqlite_synchronous: Synchronous::Full,
            database_url: None,
            database_pool_size: DEFAULT_POOL_SIZE,
            watch_buffer: 1024,
        }
    }
}

/// How large sessions grow and how long they stay without a change.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    #[serde(with = "values::humantime_serde")]
    pub session_idle_timeout: Duration,
    pub max_participants: usize,
    pub max_context_bytes: usize,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            session_idle_timeout: Duration::from_secs(3600),
            max_participants: 10,
            max_context_bytes: 1024 * 1024,
        }
    }
}

/// How messages are delivered, retried and given up on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// A delivery not acknowledged within this is delivered again.
    #[serde(with = "values::humantime_serde")]
    pub ack_timeout: Duration,
    /// Routing timeout of messages that set none.
    #[serde(with = "values::humantime_serde")]
    pub message_timeout: Duration,
    /// Unit of the retry backoff (linear: n x base, exponential: 2^(n-1) x base).
    #[serde(with = "values::humantime_serde")]
    pub retry_backoff: Duration,
    /// Open messages per recipient before sends are RESOURCE_EXHAUSTED.
    pub inbox_limit: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            ack_timeout: Duration::from_secs(30),
            message_timeout: Duration::from_secs(300),
            retry_backoff: Duration::from_secs(1),
            inbox_limit: 10_000,
        }
    }
}

/// TLS on the one port: on when `tls_cert` and `tls_key` are set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain and key: serve gRPC and HTTP over TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// PEM CA: require client certificates signed by it (mutual TLS).
    pub tls_client_ca: Option<PathBuf>,
}

/// Where trace spans go.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// An OTLP/gRPC collector, e.g. http://localhost:4317; none: no export.
    pub otlp_endpoint: Option<String>,
}

impl TelemetryConfig {
    /// The collector, checked by [`Config::load`].
    pub fn otlp_endpoint(&self) -> Option<OtlpEndpoint> {
        OtlpEndpoint::parse(self.otlp_endpoint.as_deref()?).ok()
    }
}

/// How long finished things are kept before they are deleted; zero keeps
/// them forever.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Acknowledged, answered, dead-lettered and expired messages.
    #[serde(with = "values::humantime_serde")]
    pub retain_closed: Duration,
    /// Session events and ended sessions.
    #[serde(with = "values::humantime_serde")]
    pub retain_events: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            retain_closed: 7 * DAY,
            retain_events: 30 * DAY,
        }
    }
}

impl RetentionConfig {
    /// What the retention task keeps, zero read as forever.
    pub fn retention(&self) -> Retention {
        let keep = |age: Duration| (!age.is_zero()).then_some(age);
        Retention {
            closed: keep(self.retain_closed),
            events: keep(self.retain_events),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

impl Config {
    /// Resolves the configuration from the flags in `args`, the variables in
    /// `env` and the file of `--config` (see [`layers`]).
    pub fn load(args: &ServeArgs, env: &Environment) -> Result<Loaded, ConfigError> {
        layers::load(args, env)
    }

    /// Checks every setting; `source` names where a setting's value came from.
    fn validate(&self, source: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        let (server, auth, storage) = (&self.server, &self.auth, &self.storage);
        if let Some(key) = &auth.api_key
            && (key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()))
        {
            return invalid(format!(
                "api_key must be non-empty printable ASCII without spaces ({})",
                source("api_key")
            ));
        }
        if auth.api_key.as_deref().is_some_and(|key| key.starts_with(TOKEN_PREFIX)) {
            return invalid(format!(
                "api_key must not start with {TOKEN_PREFIX:?}: that prefix marks agent tokens ({})",
                source("api_key")
            ));
        }
        if auth.require_agent_identity && auth.api_key.is_none() {
            return invalid(format!(
                "require_agent_identity ({}) needs api_key: without an admin key every caller is trusted, \
                 and anyone could issue themselves a token",
                source("require_agent_identity")
            ));
        }
        let durations = [
            ("heartbeat_interval", server.heartbeat_interval, 10 * MS, HOUR),
            (
                "session_idle_timeout",
                self.sessions.session_idle_timeout,
                100 * MS,
                365 * DAY,
            ),
            ("ack_timeout", self.delivery.ack_timeout, 10 * MS, DAY),
            ("message_timeout", self.delivery.message_timeout, 10 * MS, 30 * DAY),
            ("retry_backoff", self.delivery.retry_backoff, 10 * MS, HOUR),
            ("shutdown_grace", server.shutdown_grace, Duration::ZERO, HOUR),
            ("shutdown_drain", server.shutdown_drain, Duration::ZERO, HOUR),
            ("header_read_timeout", server.header_read_timeout, 100 * MS, HOUR),
        ];
        for (name, value, min, max) in durations {
            if !(min..=max).contains(&value) {
                return invalid(format!(
                    "{name} must be between {} and {}, got {} ({})",
                    humantime::format_duration(min),
                    humantime::format_duration(max),
                    humantime::format_duration(value),
                    source(name)
                ));
            }
        }
        // Zero keeps forever; anything else is compared with timestamps, so
        // it stays far from overflowing them.
        let retention = [
            ("retain_closed", self.retention.retain_closed),
            ("retain_events", self.retention.retain_events),
        ];
        for (name, value) in retention {
            if !value.is_zero() && !(SECOND..=100 * 365 * DAY).contains(&value) {
                return invalid(format!(
                    "{name} must be 0s (keep forever) or between 1s and 100 years, got {} ({})",
                    humantime::format_duration(value),
                    source(name)
                ));
            }
        }
        let counts = [
            ("max_participants", self.sessions.max_participants as u64, 1, 10_000),
            (
                "max_message_bytes",
                server.max_message_bytes as u64,
                1024,
                256 * 1024 * 1024,
            ),
            // The context must leave room for the rest of a session snapshot.
            (
                "max_context_bytes",
                self.sessions.max_context_bytes as u64,
                2,
                server.max_message_bytes as u64 / 2,
            ),
            ("inbox_limit", self.delivery.inbox_limit, 1, 10_000_000),
            ("watch_buffer", storage.watch_buffer as u64, 1, 1_000_000),
            ("max_connections", server.max_connections as u64, 1, 1_000_000),
            ("database_pool_size", storage.database_pool_size as u64, 1, 10_000),
        ];
        for (name, value, min, max) in counts {
            if !(min..=max).contains(&value) {
                return invalid(format!(
                    "{name} must be between {min} and {max}, got {value} ({})",
                    source(name)
                ));
            }
        }
        match (storage.store, &storage.database_url) {
            (StoreKind::Postgres, None) => {
                return invalid(format!(
                    "store postgres ({}) needs database_url (--database-url or AGENT_BUS_DATABASE_URL), \
                     e.g. postgres://user@host:5432/agentbus",
                    source("store")
                ));
            }
            (_, Some(url)) => {
                // The driver's own words name the part that is wrong, never
                // the whole URL with its password.
                if let Err(error) = url.parse::<tokio_postgres::Config>() {
                    return invalid(format!(
                        "database_url is not a PostgreSQL URL: {error} ({})",
                        source("database_url")
                    ));
                }
            }
            _ => {}
        }
        if let Some(endpoint) = &self.telemetry.otlp_endpoint
            && let Err(error) = OtlpEndpoint::parse(endpoint)
        {
            return invalid(format!("otlp_endpoint: {error} ({})", source("otlp_endpoint")));
        }
        let tls = &self.tls;
        match (&tls.tls_cert, &tls.tls_key, &tls.tls_client_ca) {
            (Some(_), None, _) | (None, Some(_), _) => {
                return invalid("tls_cert and tls_key go together: give both or neither".into());
            }
            (None, None, Some(_)) => {
                return invalid("tls_client_ca needs tls_cert and tls_key: mutual TLS is TLS first".into());
            }
            _ => {}
        }
        let exposed = server.listen_addrs.iter().any(|a| !a.ip().is_loopback());
        if auth.api_key.is_none() && exposed && !auth.insecure {
            return invalid(format!(
                "refusing to listen on {} ({}) without an API key: anyone who can reach it could drive the bus. \
                 Set --api-key (or AGENT_BUS_API_KEY), listen on a loopback address, or pass --insecure",
                server.listen,
                source("listen")
            ));
        }
        Ok(())
    }

    /// The TLS files, when TLS is on.
    pub fn tls_files(&self) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: self.tls.tls_cert.clone()?,
            key: self.tls.tls_key.clone()?,
            client_ca: self.tls.tls_client_ca.clone(),
        })
    }

    /// Path of the SQLite database file.
    pub fn sqlite_path(&self) -> PathBuf {
        self.storage.data_dir.join("agentbus.sqlite3")
    }
}
