//! `agentbus mcp`: an MCP server over stdio (the official Rust SDK, `rmcp`)
//! through which a coding agent (Claude Code, Codex, OpenCode, ...) joins
//! the bus as one agent. It is a gRPC client of a running bus: every tool is
//! one or a few calls, made as `--agent`, answered with the response in the
//! gateway's JSON dialect (`structuredContent`) and a short summary a model
//! reads. Bus errors are tool results with `isError: true`, never protocol
//! errors; a bus that is down is such an error, and the next call connects
//! again. Stdout carries only the protocol; logs go to stderr.

mod tools;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use rmcp::ServiceExt;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerConfig,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData, ServerHandler};
use tokio::sync::OnceCell;
use tonic::{Code, Status};

use crate::cli::ClientArgs;
use crate::cli::agents::add_capability;
use crate::cli::connection::Connection;
use crate::cli::input;
use crate::pb;

#[derive(Args, Debug)]
pub struct McpArgs {
    /// The agent this MCP server acts as, e.g. claude-code://orchestrator.
    #[arg(long, env = "AGENT_BUS_AGENT_ID", value_name = "AGENT_ID")]
    agent: String,
    /// The bus: http://HOST:PORT, https://HOST:PORT for TLS.
    #[arg(
        long,
        env = "AGENT_BUS_ADDR",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    addr: String,
    /// The bus's admin key, sent as `x-agent-api-key`.
    #[arg(long, env = "AGENT_BUS_API_KEY", hide_env_values = true, value_name = "KEY")]
    api_key: Option<String>,
    /// The agent's token (`abt_...`), sent as `authorization: Bearer`.
    #[arg(
        long,
        env = "AGENT_BUS_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        conflicts_with = "api_key"
    )]
    token: Option<String>,
    /// With https://: trust servers signed by this PEM CA.
    #[arg(long, env = "AGENT_BUS_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
    /// With https://: present this PEM client certificate (needs --key).
    #[arg(long, env = "AGENT_BUS_CERT", value_name = "FILE")]
    cert: Option<PathBuf>,
    /// The PEM private key of --cert.
    #[arg(long, env = "AGENT_BUS_KEY", value_name = "FILE")]
    key: Option<PathBuf>,
    /// A capability to register (repeatable): LIST=VALUE as in `agents register`.
    #[arg(long, value_name = "[LIST=]VALUE")]
    capability: Vec<String>,
    /// The agent's whole AgentDescriptor in the JSON dialect, from FILE; --capability adds to it.
    #[arg(long, value_name = "FILE")]
    descriptor: Option<String>,
}

/// The MCP server: one agent's door to the bus.
pub struct Bus {
    conn: Connection,
    agent: String,
    registration: pb::RegisterAgentRequest,
    /// Set once the agent is registered (or found registered).
    registered: OnceCell<()>,
}

impl Bus {
    fn new(args: McpArgs) -> Result<Self, Status> {
        let client = ClientArgs {
            addr: args.addr,
            api_key: args.api_key,
            token: args.token,
            rpc_timeout: None,
            pretty: false,
            ca: args.ca,
            cert: args.cert,
            key: args.key,
        };
        let mut descriptor: pb::AgentDescriptor = match &args.descriptor {
            Some(source) => input::read_message(source)?,
            None => pb::AgentDescriptor::default(),
        };
        descriptor.agent_id.clone_from(&args.agent);
        for capability in &args.capability {
            add_capability(&mut descriptor, capability)?;
        }
        Ok(Self {
            conn: Connection::lazy(&client)?,
            agent: args.agent,
            registration: pb::RegisterAgentRequest {
                agent: Some(descriptor),
                update: false,
            },
            registered: OnceCell::new(),
        })
    }

    /// Registers the agent unless it is registered already; retried on the
    /// next call after a failure (the bus may be down for now).
    async fn ensure_registered(&self) -> Result<(), Status> {
        self.registered
            .get_or_try_init(|| async {
                match self.conn.agents().register_agent(self.registration.clone()).await {
                    Ok(_) => Ok(()),
                    Err(status) if status.code() == Code::AlreadyExists => Ok(()),
                    Err(status) => Err(status),
                }
            })
            .await
            .map(|_| ())
    }
}

impl ServerHandler for Bus {
    fn get_info(&self) -> ServerConfig {
        let info = Implementation::new("agentbus", env!("CARGO_PKG_VERSION"));
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(info)
            .with_instructions(format!(
                "You are {} on agentbus, a message bus between AI agents. Use receive_messages to get \
                 your tasks, send_message to delegate or reply, ack_messages once a message is handled, \
                 and the session tools to coordinate multi-step work with other agents.",
                self.agent
            ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools::list()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let arguments = request.arguments.unwrap_or_default();
        tools::call(self, &request.name, arguments)
            .await
            .map(CallToolResponse::from)
            .ok_or_else(|| ErrorData::invalid_params(format!("no tool named {:?}", request.name), None))
    }
}

/// Serves MCP on stdin/stdout until the client closes stdin.
pub fn run(args: McpArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("agentbus mcp: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The channel is made inside the runtime (it spawns its connection task).
    let _entered = runtime.enter();
    let bus = match Bus::new(args) {
        Ok(bus) => Arc::new(bus),
        Err(status) => {
            eprintln!("agentbus mcp: {}", status.message());
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        // Register now if the bus is up; otherwise on the first tool call.
        if let Err(status) = bus.ensure_registered().await {
            tracing::warn!(code = ?status.code(), "cannot register yet: {}", status.message());
        }
        let service = bus.serve(rmcp::transport::stdio()).await?;
        service.waiting().await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("agentbus mcp: {error}");
            ExitCode::FAILURE
        }
    }
}
