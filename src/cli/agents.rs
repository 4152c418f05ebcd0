//! `agentbus agents list|get|register|unregister`.

use clap::{Args, Subcommand};
use tonic::Status;

use super::connection::{ClientArgs, Connection};
use super::input;
use super::output::{Output, Stop};
use crate::pb;

#[derive(Args, Debug)]
#[command(subcommand_required = true)]
pub struct AgentsArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: AgentsCommand,
}

#[derive(Subcommand, Debug)]
enum AgentsCommand {
    /// List registered agents, ordered by id (ListAgentsResponse).
    List(ListArgs),
    /// Print one agent (GetAgentResponse).
    Get { agent_id: String },
    /// Register an agent, or replace its descriptor with --update (RegisterAgentResponse).
    Register(RegisterArgs),
    /// Remove an agent; its open messages are dead-lettered (UnregisterAgentResponse).
    Unregister { agent_id: String },
}

#[derive(Args, Debug)]
struct ListArgs {
    /// Only agents of this framework, e.g. opencode.
    #[arg(long)]
    framework: Option<String>,
    /// Only agents listing this in any of their capability lists.
    #[arg(long)]
    capability: Option<String>,
    /// Only agents that are (true) or are not (false) online.
    #[arg(long, value_name = "BOOL")]
    online: Option<bool>,
    /// Agents per page (bus default 50, at most 500).
    #[arg(long, value_name = "N")]
    page_size: Option<u32>,
    /// Continue from a previous page's next_page_token.
    #[arg(long, value_name = "TOKEN")]
    page_token: Option<String>,
    /// Follow every page and print them as one response.
    #[arg(long)]
    all: bool,
}

#[derive(Args, Debug)]
struct RegisterArgs {
    /// A whole AgentDescriptor in the JSON dialect, from FILE or `-` (stdin);
    /// the flags below override or extend it.
    #[arg(long, value_name = "FILE|-")]
    json: Option<String>,
    /// Agent id, `<framework>://<name>`.
    #[arg(long, value_name = "AGENT_ID")]
    id: Option<String>,
    /// Must match the part of the id before `://` when given.
    #[arg(long)]
    framework: Option<String>,
    /// A capability (repeatable): LIST=VALUE adds VALUE to one of input_types,
    /// output_types, languages, tools, model_preferences, optimal_tasks;
    /// a bare VALUE goes to optimal_tasks.
    #[arg(long, value_name = "[LIST=]VALUE")]
    capability: Vec<String>,
    /// Replace the descriptor of an already registered agent instead of failing.
    #[arg(long)]
    update: bool,
}

pub async fn run(args: AgentsArgs) -> Result<(), Stop> {
    let out = Output::new(args.client.pretty);
    match args.command {
        AgentsCommand::List(list) => {
            let conn = Connection::open(&args.client).await?;
            out.print(&list.fetch(&conn).await?)
        }
        AgentsCommand::Get { agent_id } => {
            let conn = Connection::open(&args.client).await?;
            let request = pb::GetAgentRequest { agent_id };
            let response = conn.agents().get_agent(conn.unary(request)).await?;
            out.print(response.get_ref())
        }
        AgentsCommand::Register(register) => {
            let request = register.request()?;
            let conn = Connection::open(&args.client).await?;
            let response = conn.agents().register_agent(conn.unary(request)).await?;
            out.print(response.get_ref())
        }
        AgentsCommand::Unregister { agent_id } => {
            let conn = Connection::open(&args.client).await?;
            let request = pb::UnregisterAgentRequest { agent_id };
            let response = conn.agents().unregister_agent(conn.unary(request)).await?;
            out.print(response.get_ref())
        }
    }
}

impl ListArgs {
    async fn fetch(self, conn: &Connection) -> Result<pb::ListAgentsResponse, Status> {
        let mut request = pb::ListAgentsRequest {
            framework: self.framework.unwrap_or_default(),
            capability: self.capability.unwrap_or_default(),
            online: self.online,
            page_size: self.page_size.unwrap_or_default(),
            page_token: self.page_token.unwrap_or_default(),
        };
        let mut client = conn.agents();
        let mut all = pb::ListAgentsResponse::default();
        loop {
            let page = client.list_agents(conn.unary(request.clone())).await?.into_inner();
            all.agents.extend(page.agents);
            if !self.all || page.next_page_token.is_empty() {
                all.next_page_token = page.next_page_token;
                return Ok(all);
            }
            request.page_token = page.next_page_token;
        }
    }
}

impl RegisterArgs {
    fn request(self) -> Result<pb::RegisterAgentRequest, Status> {
        let mut agent: pb::AgentDescriptor = match &self.json {
            Some(source) => input::read_message(source)?,
            None => pb::AgentDescriptor::default(),
        };
        if let Some(id) = self.id {
            agent.agent_id = id;
        }
        if let Some(framework) = self.framework {
            agent.framework = framework;
        }
        for capability in &self.capability {
            add_capability(&mut agent, capability)?;
        }
        Ok(pb::RegisterAgentRequest {
            agent: Some(agent),
            update: self.update,
        })
    }
}

/// Adds `LIST=VALUE` (or a bare VALUE, an optimal task) to the agent's
/// capabilities, as `--capability` spells it.
pub fn add_capability(agent: &mut pb::AgentDescriptor, capability: &str) -> Result<(), Status> {
    let capabilities = agent.capabilities.get_or_insert_default();
    let (list, value) = capability.split_once('=').unwrap_or(("optimal_tasks", capability));
    let list = match list {
        "input_types" => &mut capabilities.input_types,
        "output_types" => &mut capabilities.output_types,
        "languages" => &mut capabilities.languages,
        "tools" => &mut capabilities.tools,
        "model_preferences" => &mut capabilities.model_preferences,
        "optimal_tasks" => &mut capabilities.optimal_tasks,
        other => {
            return Err(Status::invalid_argument(format!(
                "--capability: unknown list {other:?}; expected one of: input_types, output_types, \
                 languages, tools, model_preferences, optimal_tasks"
            )));
        }
    };
    list.push(value.to_owned());
    Ok(())
}
