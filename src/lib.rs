//! agentbus: a gRPC bus through which AI agents find each other, exchange
//! messages and coordinate work in sessions.
//!
//! Layers: [`transport`] -> [`app`] -> [`store`], with [`domain`] types
//! shared by all of them.

#![forbid(unsafe_code)]

pub mod app;
pub mod bench;
pub mod config;
pub mod domain;
pub mod pb;
pub mod store;
pub mod transport;
