//! `agentbus send`: one message from flags or a `--json` document.

use clap::Args;
use tonic::Status;

use super::connection::{ClientArgs, Connection};
use super::input;
use super::output::{Output, Stop};
use crate::pb;

#[derive(Args, Debug)]
pub struct SendArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// A whole Message in the JSON dialect, from FILE or `-` (stdin); the
    /// flags below override its fields.
    #[arg(long, value_name = "FILE|-")]
    json: Option<String>,
    /// Sender agent id.
    #[arg(long, value_name = "AGENT_ID", required_unless_present = "json")]
    from: Option<String>,
    /// Recipient agent id.
    #[arg(long, value_name = "AGENT_ID", required_unless_present = "json")]
    to: Option<String>,
    /// task_request, task_response, status_update, error or heartbeat.
    #[arg(
        long = "type",
        value_name = "WORD",
        required_unless_present = "json",
        value_parser = input::enum_word("agentbus.v1.MessageType")
    )]
    message_type: Option<i32>,
    /// low, medium (the default), high or critical.
    #[arg(long, value_name = "WORD", value_parser = input::enum_word("agentbus.v1.Priority"))]
    priority: Option<i32>,
    /// Any JSON value, e.g. '{"task_type": "implementation"}' or '"text"'.
    #[arg(long, value_name = "JSON")]
    payload: Option<String>,
    /// Session the message belongs to (the sender's session_id).
    #[arg(long, value_name = "SESSION_ID")]
    session: Option<String>,
    /// Message id (default: the bus makes `msg_<uuid>`); resending an id is idempotent.
    #[arg(long, value_name = "MESSAGE_ID")]
    id: Option<String>,
    /// The message this one answers.
    #[arg(long, value_name = "MESSAGE_ID")]
    in_reply_to: Option<String>,
    /// Task this message belongs to (a task request's default: its message id).
    #[arg(long)]
    task_id: Option<String>,
    /// Routing timeout: dead-letter if not acknowledged within it (e.g. 300s).
    #[arg(long, value_name = "DURATION", value_parser = input::duration)]
    timeout: Option<prost_types::Duration>,
    /// Wait for the reply and print it in `reply` (SYNC delivery); bounded by
    /// the routing timeout and --rpc-timeout.
    #[arg(long)]
    sync: bool,
}

pub async fn run(args: SendArgs) -> Result<(), Stop> {
    let out = Output::new(args.client.pretty);
    let message = args.message()?;
    let conn = Connection::open(&args.client).await?;
    let request = pb::SendMessageRequest { message: Some(message) };
    let response = conn.messages().send_message(conn.unary(request)).await?;
    out.print(response.get_ref())
}

impl SendArgs {
    fn message(&self) -> Result<pb::Message, Status> {
        let mut message: pb::Message = match &self.json {
            Some(source) => input::read_message(source)?,
            None => pb::Message::default(),
        };
        if let Some(from) = &self.from {
            message.sender.get_or_insert_default().agent_id.clone_from(from);
        }
        if let Some(session) = &self.session {
            message.sender.get_or_insert_default().session_id.clone_from(session);
        }
        if let Some(to) = &self.to {
            message.recipient.get_or_insert_default().agent_id.clone_from(to);
        }
        if let Some(message_type) = self.message_type {
            message.message_type = message_type;
        }
        if let Some(priority) = self.priority {
            message.priority = priority;
        }
        if let Some(payload) = &self.payload {
            message.payload = Some(input::parse_value("--payload", payload)?);
        }
        if let Some(id) = &self.id {
            message.message_id.clone_from(id);
        }
        if let Some(in_reply_to) = &self.in_reply_to {
            message.in_reply_to.clone_from(in_reply_to);
        }
        if let Some(task_id) = &self.task_id {
            message.task_id.clone_from(task_id);
        }
        if let Some(timeout) = self.timeout {
            message.routing.get_or_insert_default().timeout = Some(timeout);
        }
        if self.sync {
            message.routing.get_or_insert_default().delivery_mode = pb::DeliveryMode::Sync as i32;
        }
        Ok(message)
    }
}
