//! `agentbus tokens issue|list|revoke`: agent tokens, with the admin key.

use std::time::Duration;

use clap::{Args, Subcommand};

use super::connection::{ClientArgs, Connection};
use super::input;
use super::output::{Output, Stop};
use crate::pb;

#[derive(Args, Debug)]
#[command(subcommand_required = true)]
pub struct TokensArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: TokensCommand,
}

#[derive(Subcommand, Debug)]
enum TokensCommand {
    /// Issue a token that acts as AGENT_ID; prints it once (IssueAgentTokenResponse).
    Issue {
        agent_id: String,
        /// Valid for this long (e.g. 24h, 30m); default: until revoked.
        #[arg(long, value_name = "DURATION", value_parser = input::std_duration)]
        ttl: Option<Duration>,
        /// What the token is for (at most 256 characters).
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List an agent's tokens: metadata only (ListAgentTokensResponse).
    List { agent_id: String },
    /// Revoke a token: its calls fail and its open streams end at once.
    Revoke {
        token_id: String,
        /// Fail unless the token belongs to this agent.
        #[arg(long = "agent", value_name = "AGENT_ID")]
        agent_id: Option<String>,
    },
}

pub async fn run(args: TokensArgs) -> Result<(), Stop> {
    let out = Output::new(args.client.pretty);
    let conn = Connection::open(&args.client).await?;
    let mut agents = conn.agents();
    match args.command {
        TokensCommand::Issue {
            agent_id,
            ttl,
            description,
        } => {
            let request = pb::IssueAgentTokenRequest {
                agent_id,
                ttl: ttl.map(|ttl| prost_types::Duration {
                    seconds: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
                    nanos: i32::try_from(ttl.subsec_nanos()).unwrap_or(0),
                }),
                description,
            };
            out.print(agents.issue_agent_token(conn.unary(request)).await?.get_ref())
        }
        TokensCommand::List { agent_id } => {
            let request = pb::ListAgentTokensRequest { agent_id };
            out.print(agents.list_agent_tokens(conn.unary(request)).await?.get_ref())
        }
        TokensCommand::Revoke { token_id, agent_id } => {
            let request = pb::RevokeAgentTokenRequest {
                token_id,
                agent_id: agent_id.unwrap_or_default(),
            };
            out.print(agents.revoke_agent_token(conn.unary(request)).await?.get_ref())
        }
    }
}
