//! Transports: gRPC and the HTTP/JSON gateway, on one port.

pub mod auth;
pub mod codec;
pub mod convert;
pub mod convert_messages;
pub mod dialect;
pub mod errors;
pub mod grpc;
pub mod grpc_messages;
pub mod health;
pub mod http;
pub mod listener;
pub mod metrics_http;
pub mod server;
