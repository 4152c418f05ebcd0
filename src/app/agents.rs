//! Agent registry use cases.

use std::collections::HashMap;
use std::sync::Arc;

use super::messaging::Messaging;
use super::presence::Presence;
use crate::domain::agent::{Agent, AgentDescriptor};
use crate::domain::{AgentId, Error, Result, Timestamp, json};
use crate::store::{AgentPresence, Store, StoreError};

pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 500;
const PAGE_TOKEN_PREFIX: &str = "a1.";
/// Registrations read per store query while filtering a page.
const SCAN_BATCH: usize = 200;

/// An agent with what the bus knows about it right now.
#[derive(Debug, Clone)]
pub struct AgentView {
    pub agent: Agent,
    pub online: bool,
    pub last_seen: Option<Timestamp>,
    pub inbox_depth: u64,
}

#[derive(Debug, Clone, Default)]
pub struct ListAgents {
    pub framework: Option<String>,
    pub capability: Option<String>,
    pub online: Option<bool>,
    pub page_size: usize,
    pub page_token: String,
}

pub struct Agents {
    store: Arc<dyn Store>,
    presence: Arc<Presence>,
    messaging: Arc<Messaging>,
    /// A page of ListAgents ends before its agents (as JSON, which is no
    /// smaller than their protobuf) would exceed this.
    max_page_bytes: usize,
}

impl Agents {
    pub fn new(
        store: Arc<dyn Store>,
        presence: Arc<Presence>,
        messaging: Arc<Messaging>,
        max_page_bytes: usize,
    ) -> Self {
        Self {
            store,
            presence,
            messaging,
            max_page_bytes,
        }
    }

    /// Registers the agent, or replaces its descriptor when `update` is set;
    /// returns the agent and whether it was new.
    pub async fn register(&self, descriptor: AgentDescriptor, update: bool) -> Result<(AgentView, bool)> {
        let descriptor = descriptor.validated()?;
        let id = descriptor.agent_id.clone();
        let now = Timestamp::now();
        for _ in 0..8 {
            let existing = self.store.get_agent(&id).await?;
            let (agent, expected) = match existing {
                Some(_) if !update => {
                    return Err(Error::already_exists(format!(
                        "agent {id} is already registered; set update to replace its descriptor"
                    )));
                }
                Some(old) => (old.updated(descriptor.clone(), now), Some(old.version)),
                None => (Agent::registered(descriptor.clone(), now), None),
            };
            match self.store.put_agent(agent, expected).await {
                Ok(agent) => {
                    // Messages queued before (re)registration can flow now.
                    self.presence.wake(&id);
                    return Ok((self.view(agent).await?, expected.is_none()));
                }
                Err(StoreError::AlreadyExists(_) | StoreError::Conflict { .. }) if update => continue,
                Err(StoreError::AlreadyExists(_)) => {
                    return Err(Error::already_exists(format!("agent {id} is already registered")));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::aborted(format!("agent {id} is changing too fast; retry")))
    }

    /// Removes the agent and dead-letters what was waiting for it; returns
    /// how many messages were dead-lettered.
    pub async fn unregister(&self, id: &AgentId) -> Result<u32> {
        let removed = self.store.delete_agent(id).await?;
        self.presence.wake(id);
        // Also when it was already removed: finishes an unregister that
        // failed half-way.
        let dead_lettered = self.messaging.dead_letter_inbox(id).await?;
        if !removed && dead_lettered == 0 {
            return Err(Error::not_found(format!("agent {id} is not registered")));
        }
        Ok(dead_lettered)
    }

    pub async fn get(&self, id: &AgentId) -> Result<AgentView> {
        let agent = self
            .store
            .get_agent(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("agent {id} is not registered")))?;
        self.view(agent).await
    }

    /// Agents in id order that match every given filter.
    pub async fn list(&self, request: ListAgents) -> Result<(Vec<AgentView>, String)> {
        let mut after = match request.page_token.as_str() {
            "" => None,
            token => Some(
                token
                    .strip_prefix(PAGE_TOKEN_PREFIX)
                    .and_then(|id| AgentId::parse(id).ok())
                    .ok_or_else(|| {
                        Error::invalid("page_token", format!("{token:?} is not a token returned by ListAgents"))
                    })?,
            ),
        };
        let limit = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size => size.min(MAX_PAGE_SIZE),
        };
        let mut page = Vec::new();
        let mut page_bytes = 0;
        loop {
            let batch = self.store.list_agents(after.as_ref(), SCAN_BATCH).await?;
            let exhausted = batch.len() < SCAN_BATCH;
            let ids: Vec<AgentId> = batch.iter().map(|agent| agent.id().clone()).collect();
            let published = self.published(&ids).await?;
            for agent in batch {
                after = Some(agent.id().clone());
                let descriptor = &agent.descriptor;
                let (online, last_seen) = self.presence.merged(agent.id(), published.get(agent.id()));
                let matches = request.framework.as_ref().is_none_or(|f| &descriptor.framework == f)
                    && request
                        .capability
                        .as_ref()
                        .is_none_or(|c| descriptor.capabilities.mentions(c))
                    && request.online.is_none_or(|wanted| online == wanted);
                if !matches {
                    continue;
                }
                page_bytes += json::encoded_len(descriptor);
                if page.len() == limit || (!page.is_empty() && page_bytes > self.max_page_bytes) {
                    // One more match exists: the page ends before it.
                    let last = page
                        .last()
                        .map(|v: &AgentView| v.agent.id().to_string())
                        .unwrap_or_default();
                    return Ok((page, format!("{PAGE_TOKEN_PREFIX}{last}")));
                }
                page.push(self.view_with(agent, online, last_seen).await?);
            }
            if exhausted {
                return Ok((page, String::new()));
            }
        }
    }

    async fn view(&self, agent: Agent) -> Result<AgentView> {
        let id = agent.id().clone();
        let published = self.published(std::slice::from_ref(&id)).await?;
        let (online, last_seen) = self.presence.merged(&id, published.get(&id));
        self.view_with(agent, online, last_seen).await
    }

    async fn view_with(&self, agent: Agent, online: bool, last_seen: Option<Timestamp>) -> Result<AgentView> {
        Ok(AgentView {
            online,
            last_seen,
            inbox_depth: self.store.inbox_depth(agent.id()).await?,
            agent,
        })
    }

    /// What other nodes sharing the store published about `agents`.
    async fn published(&self, agents: &[AgentId]) -> Result<HashMap<AgentId, AgentPresence>> {
        let published = self.store.presence(agents).await?;
        Ok(published.into_iter().map(|p| (p.agent_id.clone(), p)).collect())
    }
}
