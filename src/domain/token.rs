//! Agent tokens: credentials that authenticate their holder as one agent.
//! The bus keeps a token's SHA-256 hash, never the token.

use serde::{Deserialize, Serialize};

use super::{AgentId, Timestamp};

/// What every token starts with, so that secret scanners can spot one.
pub const TOKEN_PREFIX: &str = "abt_";
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 256;
/// Most tokens one agent may hold (expired ones are dropped first).
pub const MAX_TOKENS_PER_AGENT: usize = 100;

/// A token's stored form: its hash and metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentToken {
    pub token_id: String,
    pub agent_id: AgentId,
    /// SHA-256 of the whole token, in lowercase hex.
    pub hash: String,
    pub description: String,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
}

impl AgentToken {
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}
