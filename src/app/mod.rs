//! Use cases. Each public function enforces the rules once, for every
//! transport; the store only persists.

pub mod agents;
pub mod messaging;
pub mod metrics;
pub mod presence;
pub mod retention;
pub mod sessions;
pub mod tokens;
pub mod watch;

use crate::domain::Error;
use crate::store::StoreError;

/// The store classifies its own errors ([`StoreError::kind`]) and words
/// them for clients; only a backend failure's detail is kept back, for the
/// log.
impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::Backend(detail) => tracing::error!(%detail, "storage failure"),
            StoreError::Unavailable(detail) => tracing::warn!(%detail, "database unavailable"),
            _ => {}
        }
        Error::new(error.kind(), error.client_message())
    }
}
