//! Server configuration: defaults, then an optional TOML file, then
//! `AGENT_BUS_*` environment variables, then command-line flags.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;

use crate::app::retention::Retention;
use crate::domain::token::TOKEN_PREFIX;
use crate::store::postgres::DEFAULT_POOL_SIZE;
use crate::store::sqlite::Synchronous;
use crate::transport::tls::TlsFiles;

/// Which store backs the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Durable SQLite file under the data directory.
    Sqlite,
    /// Nothing survives the process; for tests and throwaway runs.
    Memory,
    /// A PostgreSQL database (`database_url`), which several nodes can share.
    Postgres,
}

/// The resolved configuration of `agentbus serve`.
// Serialize only in tests, which read the list of settings from it (see
// deploy/agentbus.example.toml); a real one would print api_key and database_url.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: ListenAddr,
    /// What `listen` resolved to when the configuration was loaded, IPv4
    /// first: the addresses checked for exposure and bound, from one lookup.
    #[serde(skip)]
    pub listen_addrs: Vec<SocketAddr>,
    pub api_key: Option<String>,
    /// The admin key may not send, receive or ack: only agents (by token or
    /// client certificate) speak, as themselves.
    pub require_agent_identity: bool,
    pub insecure: bool,
    pub store: StoreKind,
    pub data_dir: PathBuf,
    pub sqlite_synchronous: Synchronous,
    /// The PostgreSQL database of `store = "postgres"`; may hold a password.
    pub database_url: Option<String>,
    /// Connections to PostgreSQL at most.
    pub database_pool_size: usize,
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub session_idle_timeout: Duration,
    pub max_participants: usize,
    pub max_message_bytes: usize,
    pub max_context_bytes: usize,
    /// Live events buffered per watcher before it falls back to the store.
    pub watch_buffer: usize,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// After SIGTERM, keep serving this long with health reporting
    /// NOT_SERVING (HTTP 503) so load balancers stop sending traffic.
    #[serde(with = "humantime_serde")]
    pub shutdown_drain: Duration,
    /// A delivery not acknowledged within this is delivered again.
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// Routing timeout of messages that set none.
    #[serde(with = "humantime_serde")]
    pub message_timeout: Duration,
    /// Unit of the retry backoff (linear: n x base, exponential: 2^(n-1) x base).
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Open messages per recipient before sends are RESOURCE_EXHAUSTED.
    pub inbox_limit: u64,
    /// Open connections at most (the prototype's `maxConnections`); lowered
    /// at start to what the open-file limit allows.
    pub max_connections: usize,
    /// A connection that sends no complete request head within this is closed.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Closed messages are removed this long after they closed; 0: never.
    #[serde(with = "humantime_serde")]
    pub retain_closed: Duration,
    /// Session events, and ended sessions, are removed this long after
    /// they happened; 0: never.
    #[serde(with = "humantime_serde")]
    pub retain_events: Duration,
    /// PEM certificate chain and key: serve gRPC and HTTP over TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// PEM CA: require client certificates signed by it (mutual TLS).
    pub tls_client_ca: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: ListenAddr {
                host: "127.0.0.1".into(),
                port: 8080,
            },
            listen_addrs: Vec::new(),
            api_key: None,
            require_agent_identity: false,
            insecure: false,
            store: StoreKind::Sqlite,
            data_dir: PathBuf::from("./agentbus-data"),
            sqlite_synchronous: Synchronous::Full,
            database_url: None,
            database_pool_size: DEFAULT_POOL_SIZE,
            heartbeat_interval: Duration::from_secs(30),
            session_idle_timeout: Duration::from_secs(3600),
            max_participants: 10,
            max_message_bytes: 4 * 1024 * 1024,
            max_context_bytes: 1024 * 1024,
            watch_buffer: 1024,
            shutdown_grace: Duration::from_secs(5),
            shutdown_drain: Duration::ZERO,
            ack_timeout: Duration::from_secs(30),
            message_timeout: Duration::from_secs(300),
            retry_backoff: Duration::from_secs(1),
            inbox_limit: 10_000,
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            retain_closed: Duration::from_secs(7 * 86_400),
            retain_events: Duration::from_secs(30 * 86_400),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
        }
    }
}

/// Flags of `agentbus serve`; each also reads its `AGENT_BUS_*` variable.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (keys in snake_case).
    #[arg(long, env = "AGENT_BUS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on: HOST:PORT, where HOST is an IP address (IPv6 in
    /// brackets) or a name such as localhost
    /// [default: 127.0.0.1:8080; env AGENT_BUS_HOST / AGENT_BUS_PORT].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<ListenAddr>,
    /// Require this key from every client (metadata `x-agent-api-key` or `authorization: Bearer`).
    #[arg(long, env = "AGENT_BUS_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The admin key (--api-key) may no longer send, receive or ack
    /// messages: only agents, by token or client certificate, as themselves.
    #[arg(long, env = "AGENT_BUS_REQUIRE_AGENT_IDENTITY", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub require_agent_identity: Option<bool>,
    /// Allow listening on a non-loopback address without an API key
    /// (`--insecure`, `--insecure=false`; env accepts true/false/1/0/yes/no).
    #[arg(long, env = "AGENT_BUS_INSECURE", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: Option<bool>,
    #[arg(long, env = "AGENT_BUS_STORE", value_enum)]
    pub store: Option<StoreKind>,
    /// Directory of the SQLite store.
    #[arg(long, env = "AGENT_BUS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// `full` (fsync every commit) or `normal` (survives a crash, not power loss).
    #[arg(long, env = "AGENT_BUS_SQLITE_SYNCHRONOUS", value_parser = parse_synchronous)]
    pub sqlite_synchronous: Option<Synchronous>,
    /// The PostgreSQL database of `--store postgres`, e.g.
    /// postgres://user@host:5432/agentbus (a password in it stays out of logs).
    #[arg(long, env = "AGENT_BUS_DATABASE_URL", hide_env_values = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Connections to PostgreSQL at most [default: 16].
    #[arg(long, env = "AGENT_BUS_DATABASE_POOL_SIZE")]
    pub database_pool_size: Option<usize>,
    /// e.g. 30s
    #[arg(long, env = "AGENT_BUS_HEARTBEAT_INTERVAL", value_parser = parse_duration)]
    pub heartbeat_interval: Option<Duration>,
    /// e.g. 1h
    #[arg(long, env = "AGENT_BUS_SESSION_IDLE_TIMEOUT", value_parser = parse_duration)]
    pub session_idle_timeout: Option<Duration>,
    #[arg(long, env = "AGENT_BUS_MAX_PARTICIPANTS")]
    pub max_participants: Option<usize>,
    #[arg(long, env = "AGENT_BUS_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    #[arg(long, env = "AGENT_BUS_MAX_CONTEXT_BYTES")]
    pub max_context_bytes: Option<usize>,
    #[arg(long, env = "AGENT_BUS_WATCH_BUFFER")]
    pub watch_buffer: Option<usize>,
    /// e.g. 5s
    #[arg(long, env = "AGENT_BUS_SHUTDOWN_GRACE", value_parser = parse_duration)]
    pub shutdown_grace: Option<Duration>,
    /// e.g. 5s; default 0s
    #[arg(long, env = "AGENT_BUS_SHUTDOWN_DRAIN", value_parser = parse_duration)]
    pub shutdown_drain: Option<Duration>,
    /// e.g. 30s
    #[arg(long, env = "AGENT_BUS_ACK_TIMEOUT", value_parser = parse_duration)]
    pub ack_timeout: Option<Duration>,
    /// e.g. 300s
    #[arg(long, env = "AGENT_BUS_MESSAGE_TIMEOUT", value_parser = parse_duration)]
    pub message_timeout: Option<Duration>,
    /// e.g. 1s
    #[arg(long, env = "AGENT_BUS_RETRY_BACKOFF", value_parser = parse_duration)]
    pub retry_backoff: Option<Duration>,
    #[arg(long, env = "AGENT_BUS_INBOX_LIMIT")]
    pub inbox_limit: Option<u64>,
    /// Open connections at most [default: 10000, lowered to fit the open-file limit].
    #[arg(long, env = "AGENT_BUS_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Close connections that send no complete request head within this, e.g. 10s.
    #[arg(long, env = "AGENT_BUS_HEADER_READ_TIMEOUT", value_parser = parse_duration)]
    pub header_read_timeout: Option<Duration>,
    /// Remove acked, answered, dead-lettered and expired messages this long after they closed, e.g. 7d; 0s keeps them [default: 7d].
    #[arg(long, env = "AGENT_BUS_RETAIN_CLOSED", value_parser = parse_duration)]
    pub retain_closed: Option<Duration>,
    /// Remove session events and ended sessions this long after they happened, e.g. 30d; 0s keeps them [default: 30d].
    #[arg(long, env = "AGENT_BUS_RETAIN_EVENTS", value_parser = parse_duration)]
    pub retain_events: Option<Duration>,
    /// Serve TLS with this PEM certificate chain (needs --tls-key); reloaded on SIGHUP.
    #[arg(long, env = "AGENT_BUS_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "AGENT_BUS_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this PEM CA (mutual TLS).
    #[arg(long, env = "AGENT_BUS_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
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

impl Config {
    /// Resolves the configuration from `args` (flags and their env vars),
    /// the environment and the optional file.
    pub fn load(args: &ServeArgs) -> Result<Self, ConfigError> {
        Self::load_with_env(args, |name| std::env::var(name).ok())
    }

    fn load_with_env(args: &ServeArgs, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut config = match &args.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        if let Some(host) = env("AGENT_BUS_HOST").filter(|h| !h.is_empty()) {
            config.listen.host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        }
        if let Some(port) = env("AGENT_BUS_PORT").filter(|p| !p.is_empty()) {
            let port = port.parse().map_err(|_| {
                ConfigError::Invalid(format!("AGENT_BUS_PORT: {port:?} is not a port number (0-65535)"))
            })?;
            config.listen.port = port;
        }
        config.apply(args);
        config.listen_addrs = config.listen.resolve().map_err(ConfigError::Invalid)?;
        config.validate()?;
        Ok(config)
    }

    fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })
    }

    fn apply(&mut self, args: &ServeArgs) {
        fn set<T: Clone>(target: &mut T, value: &Option<T>) {
            if let Some(value) = value {
                *target = value.clone();
            }
        }
        set(&mut self.listen, &args.listen);
        if args.api_key.is_some() {
            self.api_key = args.api_key.clone();
        }
        set(&mut self.insecure, &args.insecure);
        set(&mut self.require_agent_identity, &args.require_agent_identity);
        set(&mut self.store, &args.store);
        set(&mut self.data_dir, &args.data_dir);
        set(&mut self.sqlite_synchronous, &args.sqlite_synchronous);
        if args.database_url.is_some() {
            self.database_url.clone_from(&args.database_url);
        }
        set(&mut self.database_pool_size, &args.database_pool_size);
        set(&mut self.heartbeat_interval, &args.heartbeat_interval);
        set(&mut self.session_idle_timeout, &args.session_idle_timeout);
        set(&mut self.max_participants, &args.max_participants);
        set(&mut self.max_message_bytes, &args.max_message_bytes);
        set(&mut self.max_context_bytes, &args.max_context_bytes);
        set(&mut self.watch_buffer, &args.watch_buffer);
        set(&mut self.shutdown_grace, &args.shutdown_grace);
        set(&mut self.shutdown_drain, &args.shutdown_drain);
        set(&mut self.ack_timeout, &args.ack_timeout);
        set(&mut self.message_timeout, &args.message_timeout);
        set(&mut self.retry_backoff, &args.retry_backoff);
        set(&mut self.inbox_limit, &args.inbox_limit);
        set(&mut self.max_connections, &args.max_connections);
        set(&mut self.header_read_timeout, &args.header_read_timeout);
        set(&mut self.retain_closed, &args.retain_closed);
        set(&mut self.retain_events, &args.retain_events);
        for (target, value) in [
            (&mut self.tls_cert, &args.tls_cert),
            (&mut self.tls_key, &args.tls_key),
            (&mut self.tls_client_ca, &args.tls_client_ca),
        ] {
            if value.is_some() {
                target.clone_from(value);
            }
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        if let Some(key) = &self.api_key
            && (key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()))
        {
            return invalid("api_key must be non-empty printable ASCII without spaces".into());
        }
        if self.api_key.as_deref().is_some_and(|key| key.starts_with(TOKEN_PREFIX)) {
            return invalid(format!(
                "api_key must not start with {TOKEN_PREFIX:?}: that prefix marks agent tokens"
            ));
        }
        if self.require_agent_identity && self.api_key.is_none() {
            return invalid(
                "require_agent_identity needs api_key: without an admin key every caller is trusted, \
                 and anyone could issue themselves a token"
                    .into(),
            );
        }
        const MS: Duration = Duration::from_millis(1);
        const HOUR: Duration = Duration::from_secs(3600);
        const DAY: Duration = Duration::from_secs(86_400);
        let durations = [
            ("heartbeat_interval", self.heartbeat_interval, 10 * MS, HOUR),
            ("session_idle_timeout", self.session_idle_timeout, 100 * MS, 365 * DAY),
            ("ack_timeout", self.ack_timeout, 10 * MS, DAY),
            ("message_timeout", self.message_timeout, 10 * MS, 30 * DAY),
            ("retry_backoff", self.retry_backoff, 10 * MS, HOUR),
            ("shutdown_grace", self.shutdown_grace, Duration::ZERO, HOUR),
            ("shutdown_drain", self.shutdown_drain, Duration::ZERO, HOUR),
            ("header_read_timeout", self.header_read_timeout, 100 * MS, HOUR),
        ];
        for (name, value) in [
            ("retain_closed", self.retain_closed),
            ("retain_events", self.retain_events),
        ] {
            if !value.is_zero() && !(Duration::from_secs(1)..=36_500 * DAY).contains(&value) {
                return invalid(format!(
                    "{name} must be 0s (keep forever) or between 1s and 100years, got {}",
                    humantime::format_duration(value)
                ));
            }
        }
        for (name, value, min, max) in durations {
            if !(min..=max).contains(&value) {
                return invalid(format!(
                    "{name} must be between {} and {}, got {}",
                    humantime::format_duration(min),
                    humantime::format_duration(max),
                    humantime::format_duration(value)
                ));
            }
        }
        let counts = [
            ("max_participants", self.max_participants as u64, 1, 10_000),
            (
                "max_message_bytes",
                self.max_message_bytes as u64,
                1024,
                256 * 1024 * 1024,
            ),
            // The context must leave room for the rest of a session snapshot.
            (
                "max_context_bytes",
                self.max_context_bytes as u64,
                2,
                self.max_message_bytes as u64 / 2,
            ),
            ("inbox_limit", self.inbox_limit, 1, 10_000_000),
            ("watch_buffer", self.watch_buffer as u64, 1, 1_000_000),
            ("max_connections", self.max_connections as u64, 1, 1_000_000),
            ("database_pool_size", self.database_pool_size as u64, 1, 10_000),
        ];
        for (name, value, min, max) in counts {
            if !(min..=max).contains(&value) {
                return invalid(format!("{name} must be between {min} and {max}, got {value}"));
            }
        }
        match (self.store, &self.database_url) {
            (StoreKind::Postgres, None) => {
                return invalid(
                    "store postgres needs database_url (--database-url or AGENT_BUS_DATABASE_URL), \
                     e.g. postgres://user@host:5432/agentbus"
                        .into(),
                );
            }
            (_, Some(url)) => {
                // The driver's own words name the part that is wrong, never
                // the whole URL with its password.
                if let Err(error) = url.parse::<tokio_postgres::Config>() {
                    return invalid(format!("database_url is not a PostgreSQL URL: {error}"));
                }
            }
            _ => {}
        }
        match (&self.tls_cert, &self.tls_key, &self.tls_client_ca) {
            (Some(_), None, _) | (None, Some(_), _) => {
                return invalid("tls_cert and tls_key go together: give both or neither".into());
            }
            (None, None, Some(_)) => {
                return invalid("tls_client_ca needs tls_cert and tls_key: mutual TLS is TLS first".into());
            }
            _ => {}
        }
        let exposed = self.listen_addrs.iter().any(|a| !a.ip().is_loopback());
        if self.api_key.is_none() && exposed && !self.insecure {
            return invalid(format!(
                "refusing to listen on {} without an API key: anyone who can reach it could drive the bus. \
                 Set --api-key (or AGENT_BUS_API_KEY), listen on a loopback address, or pass --insecure",
                self.listen
            ));
        }
        Ok(())
    }

    /// The TLS files, when TLS is on.
    pub fn retention(&self) -> Retention {
        let keep = |age: Duration| (!age.is_zero()).then_some(age);
        Retention {
            closed: keep(self.retain_closed),
            events: keep(self.retain_events),
        }
    }

    pub fn tls_files(&self) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }

    /// Path of the SQLite database file.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("agentbus.sqlite3")
    }
}

/// Where to listen: an IP address or a host name, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr {
    pub host: String,
    pub port: u16,
}

impl ListenAddr {
    /// The addresses the host resolves to (a name may give several), IPv4
    /// first so that `localhost` means 127.0.0.1 wherever it can.
    pub fn resolve(&self) -> Result<Vec<SocketAddr>, String> {
        let mut addresses: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve the listen address {self}: {e}"))?
            .collect();
        addresses.sort_by_key(SocketAddr::is_ipv6);
        if addresses.is_empty() {
            return Err(format!("the listen address {self} resolves to no address"));
        }
        Ok(addresses)
    }
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let invalid =
            |why: &str| format!("{text:?} is not HOST:PORT ({why}), e.g. 127.0.0.1:8080, localhost:0, [::1]:8080");
        let (host, port) = match text.strip_prefix('[') {
            Some(rest) => {
                let (host, rest) = rest.split_once(']').ok_or_else(|| invalid("no closing bracket"))?;
                (host, rest.strip_prefix(':').ok_or_else(|| invalid("no port"))?)
            }
            None => text.rsplit_once(':').ok_or_else(|| invalid("no port"))?,
        };
        if host.is_empty() || host.contains(['/', ' ']) || (host.contains(':') && !text.starts_with('[')) {
            return Err(invalid("write IPv6 addresses in brackets"));
        }
        let port = port.parse().map_err(|_| invalid("the port must be 0-65535"))?;
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
impl serde::Serialize for ListenAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A duration with a unit, e.g. `250ms`, `30s`, `1h`.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value).map_err(|e| format!("{value:?} is not a duration such as 30s or 1h: {e}"))
}

fn parse_synchronous(value: &str) -> Result<Synchronous, String> {
    match value {
        "full" => Ok(Synchronous::Full),
        "normal" => Ok(Synchronous::Normal),
        _ => Err(format!("{value:?} must be `full` or `normal`")),
    }
}

/// serde support for durations written as `30s`, `1h`.
mod humantime_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }

    #[cfg(test)]
    pub fn serialize<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*duration))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(args: &ServeArgs, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::load_with_env(args, |name| env.get(name).cloned())
    }

    #[test]
    fn defaults_mirror_the_prototype() {
        let config = load(&ServeArgs::default(), &[]).unwrap();
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(config.session_idle_timeout, Duration::from_secs(3600));
        assert_eq!(config.max_participants, 10);
        assert_eq!(config.store, StoreKind::Sqlite);
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bus.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nmax_participants = 3\nheartbeat_interval = \"5s\"\n",
        )
        .unwrap();
        let mut args = ServeArgs {
            config: Some(file),
            ..Default::default()
        };
        let config = load(&args, &[]).unwrap();
        assert_eq!((config.listen.port, config.max_participants), (9000, 3));
        assert_eq!(config.heartbeat_interval, Duration::from_secs(5));

        let config = load(&args, &[("AGENT_BUS_PORT", "9100")]).unwrap();
        assert_eq!(config.listen, "127.0.0.1:9100".parse().unwrap());

        args.listen = Some("127.0.0.1:9200".parse().unwrap());
        let config = load(&args, &[("AGENT_BUS_PORT", "9100")]).unwrap();
        assert_eq!(config.listen.port, 9200);
    }

    #[test]
    fn bad_values_are_named() {
        let err = load(&ServeArgs::default(), &[("AGENT_BUS_PORT", "http")]).unwrap_err();
        assert!(err.to_string().contains("AGENT_BUS_PORT"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bus.toml");
        std::fs::write(&file, "heartbeat_interval = \"30\"\n").unwrap();
        let err = load(
            &ServeArgs {
                config: Some(file.clone()),
                ..Default::default()
            },
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("heartbeat_interval"), "{err}");
        std::fs::write(&file, "no_such_setting = 1\n").unwrap();
        assert!(
            load(
                &ServeArgs {
                    config: Some(file),
                    ..Default::default()
                },
                &[]
            )
            .is_err()
        );
    }

    #[test]
    fn limits_are_bounded_both_ways() {
        let too_long = ServeArgs {
            heartbeat_interval: Some(Duration::from_secs(86_400 * 400)),
            ..Default::default()
        };
        assert!(
            load(&too_long, &[])
                .unwrap_err()
                .to_string()
                .contains("heartbeat_interval must be between")
        );
        let context = ServeArgs {
            max_context_bytes: Some(3 * 1024 * 1024),
            ..Default::default()
        };
        assert!(
            load(&context, &[])
                .unwrap_err()
                .to_string()
                .contains("max_context_bytes")
        );
        let buffer = ServeArgs {
            watch_buffer: Some(usize::MAX),
            ..Default::default()
        };
        assert!(load(&buffer, &[]).unwrap_err().to_string().contains("watch_buffer"));
    }

    #[test]
    fn postgres_needs_a_database_url_from_a_flag_the_env_or_the_file() {
        let postgres = ServeArgs {
            store: Some(StoreKind::Postgres),
            ..Default::default()
        };
        let err = load(&postgres, &[]).unwrap_err().to_string();
        assert!(err.contains("--database-url"), "{err}");
        let with_url = ServeArgs {
            database_url: Some("postgres://bus:secret@db:5432/agentbus".into()),
            ..postgres.clone()
        };
        let config = load(&with_url, &[]).unwrap();
        assert_eq!(config.store, StoreKind::Postgres);
        assert_eq!(config.database_pool_size, 16);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bus.toml");
        std::fs::write(
            &file,
            "store = \"postgres\"\ndatabase_url = \"postgres://db/bus\"\ndatabase_pool_size = 4\n",
        )
        .unwrap();
        let from_file = ServeArgs {
            config: Some(file),
            ..Default::default()
        };
        let config = load(&from_file, &[]).unwrap();
        assert_eq!(config.database_url.as_deref(), Some("postgres://db/bus"));
        assert_eq!(config.database_pool_size, 4);
        let bad = ServeArgs {
            database_url: Some("postgres://db:notaport/bus".into()),
            ..postgres
        };
        let err = load(&bad, &[]).unwrap_err().to_string();
        assert!(err.contains("database_url is not a PostgreSQL URL"), "{err}");
        let zero = ServeArgs {
            database_pool_size: Some(0),
            ..Default::default()
        };
        assert!(load(&zero, &[]).unwrap_err().to_string().contains("database_pool_size"));
    }

    #[test]
    fn insecure_from_a_file_can_be_turned_off() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bus.toml");
        std::fs::write(&file, "insecure = true\n").unwrap();
        let args = ServeArgs {
            config: Some(file),
            ..Default::default()
        };
        assert!(load(&args, &[]).unwrap().insecure);
        let off = ServeArgs {
            insecure: Some(false),
            ..args
        };
        assert!(!load(&off, &[]).unwrap().insecure);
    }

    #[test]
    fn public_listen_needs_a_key_or_insecure() {
        let err = load(&ServeArgs::default(), &[("AGENT_BUS_HOST", "0.0.0.0")]).unwrap_err();
        assert!(err.to_string().contains("--insecure"), "{err}");
        let args = ServeArgs {
            api_key: Some("k".into()),
            ..Default::default()
        };
        assert!(load(&args, &[("AGENT_BUS_HOST", "0.0.0.0")]).is_ok());
        let args = ServeArgs {
            insecure: Some(true),
            ..Default::default()
        };
        assert!(load(&args, &[("AGENT_BUS_HOST", "0.0.0.0")]).is_ok());
    }

    #[test]
    fn listen_takes_host_names_and_checks_what_they_resolve_to() {
        let named = ServeArgs {
            listen: Some("localhost:0".parse().unwrap()),
            ..Default::default()
        };
        let config = load(&named, &[]).unwrap();
        assert_eq!(config.listen.to_string(), "localhost:0");
        assert!(config.listen.resolve().unwrap().iter().all(|a| a.ip().is_loopback()));
        let v6: ListenAddr = "[::1]:8080".parse().unwrap();
        assert_eq!(
            (v6.host.as_str(), v6.port, v6.to_string()),
            ("::1", 8080, "[::1]:8080".into())
        );
        for bad in ["localhost", "::1:8080", ":8080", "host:99999", "[::1]8080", "a b:1"] {
            assert!(bad.parse::<ListenAddr>().is_err(), "{bad}");
        }
        let unresolvable = ServeArgs {
            listen: Some("no-such-host.invalid:8080".parse().unwrap()),
            ..Default::default()
        };
        let err = load(&unresolvable, &[]).unwrap_err();
        assert!(err.to_string().contains("cannot resolve the listen address"), "{err}");
    }

    /// Each setting of `Config` by its file key, as the file would spell it;
    /// null for the optional ones, which have no default.
    fn settings(config: &Config) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(config).unwrap() {
            serde_json::Value::Object(map) => map,
            other => panic!("Config serialized to {other}"),
        }
    }

    #[test]
    fn the_example_config_lists_every_setting_with_its_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/agentbus.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let written: toml::Table = text.parse().unwrap();
        // `# key = value` lines: the optional settings, shown commented out.
        let commented: Vec<&str> = text
            .lines()
            .filter_map(|line| Some(line.strip_prefix("# ")?.split_once(" = ")?.0))
            .collect();
        let defaults = settings(&Config::default());
        for (key, default) in &defaults {
            if default.is_null() {
                assert!(
                    commented.contains(&key.as_str()) && !written.contains_key(key),
                    "{key} has no default: the example shows it commented out, `# {key} = ...`"
                );
            } else {
                assert!(
                    written.contains_key(key),
                    "deploy/agentbus.example.toml lacks the setting {key} (default {default})"
                );
            }
        }

        // Loaded by the real loader, the file gives the defaults, but for the
        // systemd unit's data directory.
        let from_file = |config: PathBuf| {
            let args = ServeArgs {
                config: Some(config),
                ..Default::default()
            };
            load(&args, &[]).map(|config| settings(&config))
        };
        let loaded = from_file(path).unwrap();
        for (key, default) in &defaults {
            let expected = match key.as_str() {
                "data_dir" => "/var/lib/agentbus".into(),
                _ => default.clone(),
            };
            assert_eq!(loaded[key], expected, "{key} in deploy/agentbus.example.toml");
        }

        // The commented-out examples are valid settings too.
        let dir = tempfile::tempdir().unwrap();
        let uncommented = dir.path().join("uncommented.toml");
        let text: String = text
            .lines()
            .map(|line| match line.strip_prefix("# ").and_then(|l| l.split_once(" = ")) {
                Some((key, _)) if defaults.get(key).is_some_and(serde_json::Value::is_null) => {
                    format!("{}\n", &line[2..])
                }
                _ => format!("{line}\n"),
            })
            .collect();
        std::fs::write(&uncommented, text).unwrap();
        let all = from_file(uncommented).unwrap();
        for key in defaults.keys() {
            assert!(!all[key].is_null(), "{key} was not set by its commented-out example");
        }
    }
}
