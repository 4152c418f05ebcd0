//! AgentService: register, unregister, find and list agents.

use super::convert_messages as convert;
use super::{Api, Caller};
use crate::app::agents::ListAgents;
use crate::domain::{AgentId, Error, Result};
use crate::pb;

pub(super) fn agent_id(field: &str, value: &str) -> Result<AgentId> {
    AgentId::parse_field(field, value)
}

impl Api {
    pub async fn register_agent(
        &self,
        caller: &Caller,
        r: pb::RegisterAgentRequest,
    ) -> Result<pb::RegisterAgentResponse> {
        let descriptor = r.agent.ok_or_else(|| Error::invalid("agent", "is required"))?;
        let descriptor = convert::agent_descriptor_from("agent", descriptor)?;
        self.act_as(caller, "agent.agent_id", &descriptor.agent_id)?;
        let (view, created) = self.agents.register(descriptor, r.update).await?;
        Ok(pb::RegisterAgentResponse {
            agent: Some(convert::agent(&view)),
            created,
        })
    }

    pub async fn unregister_agent(
        &self,
        caller: &Caller,
        r: pb::UnregisterAgentRequest,
    ) -> Result<pb::UnregisterAgentResponse> {
        let id = agent_id("agent_id", &r.agent_id)?;
        self.act_as(caller, "agent_id", &id)?;
        let dead_lettered = self.agents.unregister(&id).await?;
        Ok(pb::UnregisterAgentResponse { dead_lettered })
    }

    pub async fn get_agent(&self, _caller: &Caller, r: pb::GetAgentRequest) -> Result<pb::GetAgentResponse> {
        let id = agent_id("agent_id", &r.agent_id)?;
        let view = self.agents.get(&id).await?;
        Ok(pb::GetAgentResponse {
            agent: Some(convert::agent(&view)),
        })
    }

    pub async fn list_agents(&self, _caller: &Caller, r: pb::ListAgentsRequest) -> Result<pb::ListAgentsResponse> {
        let request = ListAgents {
            framework: Some(r.framework).filter(|f| !f.is_empty()),
            capability: Some(r.capability).filter(|c| !c.is_empty()),
            online: r.online,
            page_size: r.page_size as usize,
            page_token: r.page_token,
        };
        let (agents, next_page_token) = self.agents.list(request).await?;
        Ok(pb::ListAgentsResponse {
            agents: agents.iter().map(convert::agent).collect(),
            next_page_token,
        })
    }
}
