//! Transports: gRPC now, the HTTP/JSON gateway on the same port later.

pub mod auth;
pub mod convert;
pub mod convert_messages;
pub mod grpc;
pub mod grpc_messages;
pub mod health;
pub mod server;
