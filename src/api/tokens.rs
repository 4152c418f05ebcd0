//! AgentService's token calls: issue, list and revoke agent tokens. Admin
//! only.

use super::agents::agent_id;
use super::convert::{duration_from, timestamp};
use super::{Api, Caller};
use crate::domain::Result;
use crate::domain::token::AgentToken;
use crate::pb;

fn token(t: AgentToken) -> pb::AgentToken {
    pb::AgentToken {
        token_id: t.token_id,
        agent_id: t.agent_id.to_string(),
        description: t.description,
        created_at: Some(timestamp(t.created_at)),
        expires_at: t.expires_at.map(timestamp),
        last_used_at: t.last_used_at.map(timestamp),
    }
}

impl Api {
    pub async fn issue_agent_token(
        &self,
        caller: &Caller,
        r: pb::IssueAgentTokenRequest,
    ) -> Result<pb::IssueAgentTokenResponse> {
        self.admin_only(caller)?;
        let agent = agent_id("agent_id", &r.agent_id)?;
        let ttl = r.ttl.as_ref().map(|ttl| duration_from("ttl", ttl)).transpose()?;
        let issued = self.tokens.issue(agent, ttl, r.description).await?;
        tracing::info!(
            caller = %caller.identity,
            agent_id = %issued.metadata.agent_id,
            token_id = %issued.metadata.token_id,
            "agent token issued"
        );
        Ok(pb::IssueAgentTokenResponse {
            token: issued.token,
            token_id: issued.metadata.token_id,
            expires_at: issued.metadata.expires_at.map(timestamp),
        })
    }

    pub async fn list_agent_tokens(
        &self,
        caller: &Caller,
        r: pb::ListAgentTokensRequest,
    ) -> Result<pb::ListAgentTokensResponse> {
        self.admin_only(caller)?;
        let agent = agent_id("agent_id", &r.agent_id)?;
        Ok(pb::ListAgentTokensResponse {
            tokens: self.tokens.list(&agent).into_iter().map(token).collect(),
        })
    }

    pub async fn revoke_agent_token(
        &self,
        caller: &Caller,
        r: pb::RevokeAgentTokenRequest,
    ) -> Result<pb::RevokeAgentTokenResponse> {
        self.admin_only(caller)?;
        let agent = match r.agent_id.as_str() {
            "" => None,
            id => Some(agent_id("agent_id", id)?),
        };
        if r.token_id.is_empty() {
            return Err(crate::domain::Error::invalid("token_id", "is required"));
        }
        self.tokens.revoke(&r.token_id, agent.as_ref()).await?;
        tracing::info!(caller = %caller.identity, token_id = %r.token_id, "agent token revoked");
        Ok(pb::RevokeAgentTokenResponse {})
    }
}
