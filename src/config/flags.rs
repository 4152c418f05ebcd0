//! The flags of `agentbus serve`, the top layer of the configuration.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::StoreKind;
use super::listen::ListenAddr;
use super::values::{humantime_serde, parse_duration, parse_synchronous};
use crate::store::sqlite::Synchronous;

/// How settings are layered, for `--help`.
pub const LAYERS_HELP: &str = "\
Each setting is read from, lowest to highest precedence: its default, the --config file \
(key ack_timeout), the environment (AGENT_BUS_ACK_TIMEOUT) and the flag (--ack-timeout). \
AGENT_BUS_HOST and AGENT_BUS_PORT set the two halves of listen. \
`agentbus config print` shows the result and where each value came from.";

/// Flags of `agentbus serve` and `agentbus config print`: one per setting,
/// named as its file key with dashes. Serialized (the flags given), they are
/// the top layer of the configuration; `AGENT_BUS_*` variables are read by
/// the layer below, not by clap, so that each value knows its source.
#[derive(Debug, Clone, Default, Args, Serialize)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (keys in snake_case).
    #[arg(long, env = "AGENT_BUS_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on: HOST:PORT, where HOST is an IP address (IPv6 in
    /// brackets) or a name such as localhost
    /// [default: 127.0.0.1:8080; env AGENT_BUS_HOST / AGENT_BUS_PORT].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<ListenAddr>,
    /// Require this key from every client (metadata `x-agent-api-key` or `authorization: Bearer`).
    #[arg(long)]
    pub api_key: Option<String>,
    /// The admin key (--api-key) may no longer send, receive or ack
    /// messages: only agents, by token or client certificate, as themselves.
    #[arg(long, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub require_agent_identity: Option<bool>,
    /// Allow listening on a non-loopback address without an API key
    /// (`--insecure`, `--insecure=false`; env accepts true/false/1/0/yes/no).
    #[arg(long, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: Option<bool>,
    #[arg(long, value_enum)]
    pub store: Option<StoreKind>,
    /// Directory of the SQLite store.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// `full` (fsync every commit) or `normal` (survives a crash, not power loss).
    #[arg(long, value_parser = parse_synchronous)]
    pub sqlite_synchronous: Option<Synchronous>,
    /// The PostgreSQL database of `--store postgres`, e.g.
    /// postgres://user@host:5432/agentbus (a password in it stays out of logs).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Connections to PostgreSQL at most, plus a quarter as many for claims and notifications [default: 16].
    #[arg(long)]
    pub database_pool_size: Option<usize>,
    /// e.g. 30s
    #[arg(long, value_parser = parse_duration)]
    #[serde(serialize_with = "humantime_serde::option::serialize")]
    pub heartbeat_interval: Option<Duration>,
    /// e.g. 1h
    #[arg(long, value_parser = parse_duration)]
    #[serde(serialize_with = "humantime_serde::option::serialize")]
    pub session_idle_timeout: Option<Duration>,
    #[arg(long)]
    pub max_participants: Option<usize>,
    #[arg(long)]
    pub max_message_bytes: Option<usize>,
    #[arg(long)]
    pub max_context_bytes: Option<usize>,
    #[arg(long)]
    pub watch_buffer: Option<usize>,
    /// e.g. 5s
    #[arg(long, value_parser = parse_duration)]
    #[serde(serialize_with = "humantime_serde::option::serialize")]
    pub shutdown_grace: Option<Duration>,
    /// e.g. 5s; default 0s
    #[arg(long, value_parser = parse_duration)]
    #[serde(serialize_with = "humantime_serde::option::serialize")]
    pub shutdown_drain: Option<Duration>,
    /// e.g. 30s
    #[arg(long, value_parser = parse_duration)]
    #[serde(serialize_with = "humantime_serde::option::serialize")]
    pub ack_timeout: Option<Duration>,
    /// e.g. 300s
    #[arg(long, value_parser = parse_duration)]
    #[serde(serialize_with = "humantime_serde::option::serialize")]
    pub message_timeout: Option<Duration>,
    /// e.g. 1s
    #[arg(long, value_parser = parse_duration)]
    #[serde(serialize_with = "humantime_serde::option::serialize")]
    pub retry_backoff: Option<Duration>,
    #[arg(long)]
    pub inbox_limit: Option<u64>,
    /// Open connections at most [default: 10000, lowered to fit the open-file limit].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Close connections that send no complete request head within this, e.g. 10s.
    #[arg(long, value_parser = parse_duration)]
    #[serde(serialize_with = "humantime_serde::option::serialize")]
    pub header_read_timeout: Option<Duration>,
    /// Serve TLS with this PEM certificate chain (needs --tls-key); reloaded on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this PEM CA (mutual TLS).
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// Export trace spans over OTLP/gRPC to this collector, e.g. http://localhost:4317.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// How long acknowledged, answered, dead-lettered and expired messages
    /// are kept, e.g. 7d; 0s keeps them forever.
    #[arg(long, value_parser = parse_duration)]
    #[serde(serialize_with = "humantime_serde::option::serialize")]
    pub retain_closed: Option<Duration>,
    /// How long session events and ended sessions are kept, e.g. 30d; 0s
    /// keeps them forever.
    #[arg(long, value_parser = parse_duration)]
    #[serde(serialize_with = "humantime_serde::option::serialize")]
    pub retain_events: Option<Duration>,
}
