//! The one error type of the domain and application layers. Transports map
//! [`ErrorKind`] to a gRPC code or an HTTP status in one table each.

use std::fmt;

/// What went wrong, in terms a client can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    ResourceExhausted,
    /// A conditional change lost: `expected_version` did not match.
    Aborted,
    OutOfRange,
    /// A wait (e.g. for a SYNC reply) ran out of time.
    DeadlineExceeded,
    Unauthenticated,
    /// The caller is known but may not do this.
    PermissionDenied,
    Unavailable,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    /// Set when an access rule refused the call (whatever the kind: a
    /// session hidden from the caller is NOT_FOUND), for the log and the
    /// `agentbus_auth_denied_total{reason}` counter; never sent to clients.
    pub denial: Option<Denial>,
}

/// Why an access rule refused a call: the `reason` label of the denials
/// counter. [`Denial::ALL`] lists them in declaration order, so that a
/// denial is its own index there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Denial {
    MissingCredentials,
    InvalidCredentials,
    ExpiredToken,
    /// Token management, for instance.
    AdminOnly,
    /// `--require-agent-identity`: the admin key may not speak as an agent.
    AgentIdentityRequired,
    /// Acting as another agent: its sender, inbox or registration.
    NotThatAgent,
    NotOrchestrator,
    /// A session or message the caller takes no part in.
    NotParticipant,
}

impl Denial {
    pub const ALL: [Denial; 8] = [
        Self::MissingCredentials,
        Self::InvalidCredentials,
        Self::ExpiredToken,
        Self::AdminOnly,
        Self::AgentIdentityRequired,
        Self::NotThatAgent,
        Self::NotOrchestrator,
        Self::NotParticipant,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingCredentials => "missing_credentials",
            Self::InvalidCredentials => "invalid_credentials",
            Self::ExpiredToken => "expired_token",
            Self::AdminOnly => "admin_only",
            Self::AgentIdentityRequired => "agent_identity_required",
            Self::NotThatAgent => "not_that_agent",
            Self::NotOrchestrator => "not_orchestrator",
            Self::NotParticipant => "not_participant",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            denial: None,
        }
    }

    /// PERMISSION_DENIED for this reason.
    pub fn denied(denial: Denial, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PermissionDenied, message).because(denial)
    }

    /// Marks an error as an access rule's refusal.
    pub fn because(self, denial: Denial) -> Self {
        Self {
            denial: Some(denial),
            ..self
        }
    }

    /// INVALID_ARGUMENT whose message starts with the offending field.
    pub fn invalid(field: impl fmt::Display, reason: impl fmt::Display) -> Self {
        Self::new(ErrorKind::InvalidArgument, format!("{field}: {reason}"))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlreadyExists, message)
    }

    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::FailedPrecondition, message)
    }

    pub fn resource_exhausted(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ResourceExhausted, message)
    }

    pub fn aborted(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Aborted, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthenticated, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Prefixes the field path of an INVALID_ARGUMENT error, so nested
    /// validation can report `participants[2].agent_id`.
    pub fn within(self, parent: impl fmt::Display) -> Self {
        match self.kind {
            ErrorKind::InvalidArgument => Self {
                message: format!("{parent}.{}", self.message),
                ..self
            },
            _ => self,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
