//! Transports: gRPC and the HTTP/JSON gateway over the [`api`](crate::api),
//! and the listener they share, on one port.

pub mod codec;
pub mod grpc;
pub mod health;
pub mod http;
pub mod listener;
pub mod request_metrics;
pub mod tls;
