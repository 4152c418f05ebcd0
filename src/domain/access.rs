//! Who acts in a call, and what the session rules let them do. Errors name
//! the rule that refused ([`Denial`]); a session the caller takes no part
//! in is NOT_FOUND, as if it did not exist.

use super::session::Session;
use super::{AgentId, Denial, Error, Result};

/// The one acting: the holder of the admin key (or anyone, when the bus has
/// no key), or one agent (by token or client certificate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Admin,
    Agent(AgentId),
}

/// What a call does to a session.
#[derive(Debug, Clone, Copy)]
pub enum SessionAction<'a> {
    /// Get, list, watch.
    Read,
    /// Add participants, change the workflow, complete, terminate.
    Orchestrate(&'static str),
    /// Change the shared context: any present participant.
    Contribute,
    /// Remove this participant: the orchestrator, or the participant itself.
    Remove(&'a AgentId),
}

impl Actor {
    pub fn agent(&self) -> Option<&AgentId> {
        match self {
            Self::Admin => None,
            Self::Agent(agent) => Some(agent),
        }
    }

    /// Whether the actor sees the session at all.
    pub fn sees(&self, session: &Session) -> bool {
        self.agent().is_none_or(|agent| session.involves(agent))
    }

    pub fn check_session(&self, session: &Session, action: SessionAction<'_>) -> Result<()> {
        let Some(agent) = self.agent() else {
            return Ok(());
        };
        let id = &session.session_id;
        if !session.involves(agent) {
            return Err(Error::not_found(format!("session {id} not found")).because(Denial::NotParticipant));
        }
        let orchestrator = &session.orchestrator == agent;
        match action {
            SessionAction::Read => Ok(()),
            SessionAction::Orchestrate(_) | SessionAction::Remove(_) if orchestrator => Ok(()),
            SessionAction::Remove(target) if target == agent => Ok(()),
            SessionAction::Orchestrate(what) => Err(Error::denied(
                Denial::NotOrchestrator,
                format!(
                    "only the orchestrator {} of session {id} may {what}",
                    session.orchestrator
                ),
            )),
            SessionAction::Remove(target) => Err(Error::denied(
                Denial::NotOrchestrator,
                format!(
                    "only the orchestrator {} of session {id} may remove {target}; a participant may remove only itself",
                    session.orchestrator
                ),
            )),
            SessionAction::Contribute => {
                let present = orchestrator || session.participant(agent).is_some_and(|p| p.status.is_present());
                if present {
                    Ok(())
                } else {
                    Err(Error::denied(
                        Denial::NotParticipant,
                        format!("{agent} is no longer a participant of session {id}"),
                    ))
                }
            }
        }
    }

    /// PERMISSION_DENIED unless the actor may act as `agent` (in `field`).
    pub fn check_agent(&self, field: &str, agent: &AgentId) -> Result<()> {
        match self.agent() {
            Some(me) if me != agent => Err(Error::denied(
                Denial::NotThatAgent,
                format!("{field}: {agent} is not the caller {me}; an agent token acts only as its own agent"),
            )),
            _ => Ok(()),
        }
    }
}
