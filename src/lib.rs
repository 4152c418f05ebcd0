//! agentbus: a gRPC bus through which AI agents find each other, exchange
//! messages and coordinate work in sessions.
//!
//! Layers: [`transport`] -> [`app`] -> [`store`], with [`domain`] types
//! shared by all of them. [`cli`] is a client of the bus, not a layer of it.

#![forbid(unsafe_code)]

pub mod app;
pub mod bench;
pub mod cli;
pub mod config;
pub mod domain;
pub mod pb;
pub mod store;
pub mod transport;
