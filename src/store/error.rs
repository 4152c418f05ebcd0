//! What a store can refuse or fail, the same for every backend. The
//! application matches on these variants and on [`Record`], never on a
//! message; each error classifies itself ([`StoreError::kind`]) so that the
//! mapping to a client-visible error lives in one place.

use std::fmt;

use crate::domain::message::MessageId;
use crate::domain::{AgentId, ErrorKind, SessionId};

/// The stored record an error is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Session(SessionId),
    Agent(AgentId),
    Message(MessageId),
    /// An agent token, by its id.
    Token(String),
}

/// Reads `session s1`, `agent codex://a`, `message m1`, `token tok_1`.
impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::Session(id) => write!(f, "session {id}"),
            Record::Agent(id) => write!(f, "agent {id}"),
            Record::Message(id) => write!(f, "message {id}"),
            Record::Token(id) => write!(f, "token {id}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    AlreadyExists(Record),
    #[error("{0} does not exist")]
    NotFound(Record),
    /// The stored version differs from the expected one.
    #[error("{record} is at version {actual}, not {expected}")]
    Conflict { record: Record, expected: u64, actual: u64 },
    #[error("the inbox of {agent} is full ({limit} messages waiting)")]
    InboxFull { agent: AgentId, limit: u64 },
    /// Events after `after` were asked for, but retention removed every
    /// event before `oldest`, some of them after `after`.
    #[error("events up to {} were removed by retention; asked for those after {after}", oldest - 1)]
    EventsRemoved { after: u64, oldest: u64 },
    #[error("the store is closed")]
    Closed,
    /// The database cannot be reached (down, restarting, connection cut):
    /// the write did not happen, or its outcome is unknown; a retry may
    /// succeed once it is back. The detail names the database and the
    /// cause, for the log.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("storage failure: {0}")]
    Backend(String),
}

impl StoreError {
    /// What a client can do about it (quickwit's `ServiceError`): decided
    /// here, once, for every backend.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::AlreadyExists(_) => ErrorKind::AlreadyExists,
            StoreError::NotFound(_) => ErrorKind::NotFound,
            StoreError::Conflict { .. } => ErrorKind::Aborted,
            StoreError::InboxFull { .. } => ErrorKind::ResourceExhausted,
            StoreError::EventsRemoved { .. } => ErrorKind::OutOfRange,
            StoreError::Closed | StoreError::Unavailable(_) => ErrorKind::Unavailable,
            StoreError::Backend(_) => ErrorKind::Internal,
        }
    }

    /// What a client is told; a backend failure's detail stays in the
    /// server log.
    pub fn client_message(&self) -> String {
        match self {
            StoreError::AlreadyExists(record) => format!("{record} already exists"),
            StoreError::NotFound(record) => format!("{record} not found"),
            StoreError::Conflict {
                record,
                expected,
                actual,
            } => format!("{record} is at version {actual}, not the expected {expected}"),
            StoreError::InboxFull { agent, limit } => {
                format!("the inbox of {agent} is full ({limit} messages waiting); retry later")
            }
            StoreError::EventsRemoved { after, oldest } => format!(
                "after_sequence: {after} is before the oldest event kept, {oldest} (retain_events removed the \
                 events up to {}): resume from {} to skip the removed ones, or read the sessions afresh",
                oldest - 1,
                oldest - 1
            ),
            StoreError::Closed => "the server is shutting down".into(),
            StoreError::Unavailable(_) => "the database is unavailable; retry later".into(),
            StoreError::Backend(_) => "storage failure; see the server log".into(),
        }
    }
}

/// Checks a compare-and-swap write: `expected` is the version the writer
/// read (`None`: the record must not exist yet), `stored` what is there.
/// `record` names it, built only on failure.
pub(super) fn check_version(
    record: impl FnOnce() -> Record,
    expected: Option<u64>,
    stored: Option<u64>,
) -> Result<(), StoreError> {
    match (expected, stored) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(StoreError::AlreadyExists(record())),
        (Some(_), None) => Err(StoreError::NotFound(record())),
        (Some(expected), Some(actual)) if expected == actual => Ok(()),
        (Some(expected), Some(actual)) => Err(StoreError::Conflict {
            record: record(),
            expected,
            actual,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_record_as_before() {
        let message = Record::Message(MessageId::parse_field("message_id", "m1").unwrap());
        let agent = Record::Agent(AgentId::parse("codex://a").unwrap());
        assert_eq!(
            StoreError::AlreadyExists(message.clone()).to_string(),
            "message m1 already exists"
        );
        assert_eq!(
            StoreError::NotFound(agent.clone()).to_string(),
            "agent codex://a does not exist"
        );
        assert_eq!(
            StoreError::AlreadyExists(Record::Token("tok_1".into())).client_message(),
            "token tok_1 already exists"
        );
        let conflict = StoreError::Conflict {
            record: Record::Session(SessionId::parse("s1").unwrap()),
            expected: 1,
            actual: 2,
        };
        assert_eq!(conflict.to_string(), "session s1 is at version 2, not 1");
        assert_eq!(
            conflict.client_message(),
            "session s1 is at version 2, not the expected 1"
        );
        assert_eq!(conflict.kind(), ErrorKind::Aborted);
        assert_eq!(
            StoreError::NotFound(agent).client_message(),
            "agent codex://a not found"
        );
        let backend = StoreError::Backend("disk I/O error".into());
        assert_eq!(backend.kind(), ErrorKind::Internal);
        assert!(!backend.client_message().contains("disk"));
        let down = StoreError::Unavailable("connection refused".into());
        assert_eq!(down.kind(), ErrorKind::Unavailable);
        assert_eq!(down.client_message(), "the database is unavailable; retry later");
    }
}
