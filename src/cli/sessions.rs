//! `agentbus sessions create|get|list|complete|terminate`.

use clap::{Args, Subcommand};

use super::connection::{ClientArgs, Connection};
use super::input;
use super::output::{Output, Stop};
use crate::pb;

#[derive(Args, Debug)]
#[command(subcommand_required = true)]
pub struct SessionsArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: SessionsCommand,
}

#[derive(Subcommand, Debug)]
enum SessionsCommand {
    /// Create a session; prints the CreateSessionResponse.
    Create(CreateArgs),
    /// Print one session (GetSessionResponse).
    Get { session_id: String },
    /// List sessions, oldest first (ListSessionsResponse).
    List(ListArgs),
    /// Complete an active session (CompleteSessionResponse).
    Complete(CompleteArgs),
    /// Terminate an active session (TerminateSessionResponse).
    Terminate(TerminateArgs),
    /// Print an ended session's executive summary as Markdown (--json: the GetSessionSummaryResponse).
    Summary {
        session_id: String,
        /// Print the response as JSON instead of the Markdown.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
struct CreateArgs {
    /// A whole CreateSessionRequest in the JSON dialect, from FILE or `-` (stdin);
    /// the flags below override or extend it.
    #[arg(long, value_name = "FILE|-")]
    json: Option<String>,
    /// Session id (default: the bus makes `sess_<uuid>`).
    #[arg(long)]
    id: Option<String>,
    /// Agent id of the orchestrator, e.g. claude-code://orchestrator.
    #[arg(long, value_name = "AGENT_ID")]
    orchestrator: Option<String>,
    /// A participant, optionally with its role (repeatable).
    #[arg(long, value_name = "AGENT_ID[=ROLE]", value_parser = input::participant)]
    participant: Vec<pb::ParticipantSpec>,
    /// A workflow step, in order (repeatable); the first becomes current.
    #[arg(long, value_name = "NAME")]
    step: Vec<String>,
    /// The shared context, a JSON object.
    #[arg(long, value_name = "JSON")]
    context: Option<String>,
}

#[derive(Args, Debug)]
struct ListArgs {
    /// Only sessions in this state (repeatable): active, completed, terminated, expired.
    #[arg(long, value_name = "STATE", value_parser = input::enum_word("agentbus.v1.SessionState"))]
    state: Vec<i32>,
    /// Only sessions this agent has joined.
    #[arg(long, value_name = "AGENT_ID")]
    participant: Option<String>,
    /// Sessions per page (bus default 50, at most 500).
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
struct CompleteArgs {
    session_id: String,
    #[arg(long)]
    summary: Option<String>,
    /// An artifact reference, e.g. s3://artifacts/build.zip (repeatable).
    #[arg(long, value_name = "URI")]
    artifact: Vec<String>,
    /// Only if the session is at this version (else ABORTED, exit 4).
    #[arg(long, value_name = "N")]
    expected_version: Option<u64>,
}

#[derive(Args, Debug)]
struct TerminateArgs {
    session_id: String,
    /// Why, e.g. timeout.
    #[arg(long)]
    reason: String,
    #[arg(long)]
    details: Option<String>,
    /// Only if the session is at this version (else ABORTED, exit 4).
    #[arg(long, value_name = "N")]
    expected_version: Option<u64>,
}

pub async fn run(args: SessionsArgs) -> Result<(), Stop> {
    let out = Output::new(args.client.pretty);
    match args.command {
        SessionsCommand::Create(create) => {
            let request = create.request()?;
            let conn = Connection::open(&args.client).await?;
            let response = conn.sessions().create_session(conn.unary(request)).await?;
            out.print(response.get_ref())
        }
        SessionsCommand::Get { session_id } => {
            let conn = Connection::open(&args.client).await?;
            let request = pb::GetSessionRequest { session_id };
            let response = conn.sessions().get_session(conn.unary(request)).await?;
            out.print(response.get_ref())
        }
        SessionsCommand::Summary { session_id, json } => {
            let conn = Connection::open(&args.client).await?;
            let request = pb::GetSessionSummaryRequest { session_id };
            let response = conn.sessions().get_session_summary(conn.unary(request)).await?;
            if json {
                out.print(response.get_ref())
            } else {
                out.text(&response.get_ref().markdown)
            }
        }
        SessionsCommand::List(list) => {
            let conn = Connection::open(&args.client).await?;
            out.print(&list.fetch(&conn).await?)
        }
        SessionsCommand::Complete(complete) => {
            let conn = Connection::open(&args.client).await?;
            let request = pb::CompleteSessionRequest {
                session_id: complete.session_id,
                summary: complete.summary.unwrap_or_default(),
                artifacts: complete.artifact,
                expected_version: complete.expected_version,
            };
            let response = conn.sessions().complete_session(conn.unary(request)).await?;
            out.print(response.get_ref())
        }
        SessionsCommand::Terminate(terminate) => {
            let conn = Connection::open(&args.client).await?;
            let request = pb::TerminateSessionRequest {
                session_id: terminate.session_id,
                reason: terminate.reason,
                details: terminate.details.unwrap_or_default(),
                expected_version: terminate.expected_version,
            };
            let response = conn.sessions().terminate_session(conn.unary(request)).await?;
            out.print(response.get_ref())
        }
    }
}

impl CreateArgs {
    fn request(self) -> Result<pb::CreateSessionRequest, tonic::Status> {
        let mut request: pb::CreateSessionRequest = match &self.json {
            Some(source) => input::read_message(source)?,
            None => pb::CreateSessionRequest::default(),
        };
        if let Some(id) = self.id {
            request.session_id = id;
        }
        if let Some(orchestrator) = self.orchestrator {
            request.orchestrator = orchestrator;
        }
        request.participants.extend(self.participant);
        request.steps.extend(self.step.into_iter().map(|name| pb::WorkflowStep {
            name,
            ..Default::default()
        }));
        if let Some(context) = &self.context {
            request.shared_context = Some(input::parse_object("--context", context)?);
        }
        Ok(request)
    }
}

impl ListArgs {
    /// One page, or with `--all` every page from `--page-token` on, merged.
    async fn fetch(self, conn: &Connection) -> Result<pb::ListSessionsResponse, tonic::Status> {
        let mut request = pb::ListSessionsRequest {
            states: self.state,
            participant: self.participant.unwrap_or_default(),
            page_size: self.page_size.unwrap_or_default(),
            page_token: self.page_token.unwrap_or_default(),
        };
        let mut client = conn.sessions();
        let mut all = pb::ListSessionsResponse::default();
        loop {
            let page = client.list_sessions(conn.unary(request.clone())).await?.into_inner();
            all.sessions.extend(page.sessions);
            if !self.all || page.next_page_token.is_empty() {
                all.next_page_token = page.next_page_token;
                return Ok(all);
            }
            request.page_token = page.next_page_token;
        }
    }
}
