//! `agentbus watch`: session events on stdout, one JSON object per line.

use std::time::Duration;

use clap::Args;
use tonic::{Code, Status};

use super::connection::{ClientArgs, Connection, Sessions};
use super::exit::describe;
use super::input;
use super::output::{Output, Stop};
use crate::api::errors::code_name;
use crate::pb;
use crate::pb::watch_sessions_response::Kind;

const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Only events of this session (repeatable; default: all sessions).
    #[arg(long = "session", value_name = "SESSION_ID")]
    sessions: Vec<String>,
    /// Only events of this type (repeatable), e.g. session_created,
    /// participant_added, task_delegated, session_completed.
    #[arg(long = "type", value_name = "WORD", value_parser = input::enum_word("agentbus.v1.SessionEventType"))]
    types: Vec<i32>,
    /// Replay stored events after this sequence first (0: the whole history);
    /// default: live events only.
    #[arg(long, value_name = "N")]
    after: Option<u64>,
    /// When the stream breaks (bus restarting, connection lost), reconnect
    /// and resume after the last printed event, retrying until interrupted.
    /// Without --after, events before the first one printed are not replayed.
    #[arg(long)]
    reconnect: bool,
}

pub async fn run(args: WatchArgs) -> Result<(), Stop> {
    let out = Output::lines();
    let conn = Connection::open(&args.client).await?;
    let mut client = conn.sessions();
    let mut request = pb::WatchSessionsRequest {
        session_ids: args.sessions,
        event_types: args.types,
        after_sequence: args.after,
    };
    let mut retry = FIRST_RETRY;
    loop {
        let before = request.after_sequence;
        let status = match follow(&mut client, &mut request, &out).await {
            Ok(()) => return Ok(()),
            Err(Stop::Failed(status)) => status,
            Err(stop) => return Err(stop),
        };
        if !(args.reconnect && worth_retrying(&status)) {
            return Err(status.into());
        }
        if request.after_sequence != before {
            retry = FIRST_RETRY; // It worked for a while: start backing off afresh.
        }
        let resume = request
            .after_sequence
            .map_or_else(|| "live events only".to_owned(), |n| format!("after sequence {n}"));
        eprintln!(
            "agentbus: {}: {}; reconnecting in {retry:?} ({resume})",
            code_name(status.code()),
            describe(&status)
        );
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(MAX_RETRY);
    }
}

/// Prints events until the stream ends, keeping `request.after_sequence` at
/// the last one printed so that a retry resumes right after it.
async fn follow(client: &mut Sessions, request: &mut pb::WatchSessionsRequest, out: &Output) -> Result<(), Stop> {
    let mut stream = client.watch_sessions(request.clone()).await?.into_inner();
    while let Some(response) = stream.message().await? {
        if let Some(Kind::Event(event)) = response.kind {
            out.print(&event)?;
            request.after_sequence = Some(event.sequence);
        }
    }
    Ok(())
}

/// The bus going away or a lost connection; everything else (a bad filter,
/// a sequence in the future, a wrong key) would fail the same way again.
fn worth_retrying(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled)
}
