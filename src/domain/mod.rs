//! Domain types and rules: ids, sessions and their state machine, errors.
//! Knows nothing of protobuf, HTTP or SQL.

pub mod access;
pub mod agent;
pub mod aggregate;
pub mod error;
pub mod ids;
pub mod json;
pub mod message;
pub mod session;
pub mod summary;
pub mod time;
pub mod token;
pub mod trace;
pub mod validate;

pub use error::{Denial, Error, ErrorKind, Result};
pub use ids::{AgentId, SessionId};
pub use json::JsonObject;
pub use time::Timestamp;
