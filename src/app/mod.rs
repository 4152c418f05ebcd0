//! Use cases. Each public function enforces the rules once, for every
//! transport; the store only persists.

pub mod agents;
pub mod messaging;
pub mod metrics;
pub mod presence;
pub mod sessions;
pub mod tokens;
pub mod watch;

use crate::domain::Error;
use crate::store::StoreError;

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::AlreadyExists(record) => Error::already_exists(format!("{record} already exists")),
            StoreError::NotFound(record) => Error::not_found(format!("{record} not found")),
            StoreError::Conflict {
                record,
                expected,
                actual,
            } => Error::aborted(format!("{record} is at version {actual}, not the expected {expected}")),
            StoreError::InboxFull { agent, limit } => Error::resource_exhausted(format!(
                "the inbox of {agent} is full ({limit} messages waiting); retry later"
            )),
            StoreError::Closed => Error::unavailable("the server is shutting down"),
            StoreError::Backend(detail) => {
                tracing::error!(%detail, "storage failure");
                Error::internal("storage failure; see the server log")
            }
        }
    }
}
