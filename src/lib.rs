//! agentbus: a gRPC bus through which AI agents find each other, exchange
//! messages and coordinate work in sessions.
//!
//! Layers: [`server`] wires [`transport`] (gRPC, HTTP) -> [`api`] (the
//! contract: codec, errors, one function per RPC) -> [`app`] (use cases) ->
//! [`store`], with [`domain`] types shared by all of them. [`cli`] and
//! [`bench`] are clients of the bus, not layers of it.

#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod bench;
pub mod cli;
pub mod config;
pub mod domain;
pub mod mcp;
pub mod pb;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod transport;
