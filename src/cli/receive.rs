//! `agentbus receive`: an agent's inbox on stdout, one delivery per line.

use clap::Args;

use super::connection::{ClientArgs, Connection};
use super::output::{Output, Stop};
use crate::pb;
use crate::pb::receive_messages_response::Kind;

#[derive(Args, Debug)]
pub struct ReceiveArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The agent whose inbox to open.
    #[arg(long, value_name = "AGENT_ID")]
    agent: String,
    /// Exit after this many deliveries (default: run until interrupted).
    /// Deliveries then come one at a time (see --max-in-flight), so at most
    /// one more may be pushed as the command exits; it goes back to the
    /// inbox, counted as an attempt.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Prefetch: at most this many unacknowledged deliveries at once
    /// (default 1 with --count, else no limit).
    #[arg(long, value_name = "N")]
    max_in_flight: Option<u32>,
    /// Do not acknowledge: when the command exits, whatever it printed goes
    /// back to the inbox (each delivery still counts as an attempt).
    #[arg(long)]
    no_ack: bool,
}

/// Prints each delivery before acknowledging it, so a delivery that could
/// not be printed (stdout closed) is never acknowledged and will come again.
pub async fn run(args: ReceiveArgs) -> Result<(), Stop> {
    if args.count == Some(0) {
        return Ok(());
    }
    let out = Output::lines();
    let conn = Connection::open(&args.client).await?;
    let mut messages = conn.messages();
    let request = pb::ReceiveMessagesRequest {
        agent_id: args.agent.clone(),
        max_in_flight: args.max_in_flight.unwrap_or(if args.count.is_some() { 1 } else { 0 }),
    };
    let mut inbox = messages.receive_messages(request).await?.into_inner();
    let mut received = 0;
    while let Some(response) = inbox.message().await? {
        let Some(Kind::Delivery(delivery)) = response.kind else {
            continue; // Heartbeats only say the inbox is idle.
        };
        out.print(&delivery)?;
        if !args.no_ack {
            let ack = pb::AckMessageRequest {
                agent_id: args.agent.clone(),
                message_id: delivery.message.map(|m| m.message_id).unwrap_or_default(),
            };
            messages.ack_message(conn.unary(ack)).await?;
        }
        received += 1;
        if args.count == Some(received) {
            break;
        }
    }
    Ok(())
}
