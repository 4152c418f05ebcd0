//! Printing responses as dialect JSON on stdout, and noticing when to stop.

use std::io::Write;

use prost::{Message, Name};
use tonic::Status;

use crate::transport::dialect;

/// Why a command stopped before finishing its work.
#[derive(Debug)]
pub enum Stop {
    /// Reported on stderr with its exit code.
    Failed(Status),
    /// Whoever read our output has gone (`agentbus watch | head -1`): not an
    /// error, there is just no one left to tell.
    StdoutClosed,
}

impl From<Status> for Stop {
    fn from(status: Status) -> Self {
        Stop::Failed(status)
    }
}

/// Prints one JSON object per call: indented for `--pretty` unary output,
/// otherwise on one line, flushed at once so pipes see it immediately.
#[derive(Clone, Copy)]
pub struct Output {
    pretty: bool,
}

impl Output {
    pub fn new(pretty: bool) -> Self {
        Self { pretty }
    }

    pub fn print<T: Message + Name>(&self, message: &T) -> Result<(), Stop> {
        let json = serde_json::Value::Object(dialect::to_json(message));
        let text = if self.pretty {
            serde_json::to_string_pretty(&json)
        } else {
            serde_json::to_string(&json)
        }
        .map_err(|e| Status::internal(format!("cannot encode the response as JSON: {e}")))?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{text}")
            .and_then(|()| stdout.flush())
            .map_err(|error| match error.kind() {
                std::io::ErrorKind::BrokenPipe => Stop::StdoutClosed,
                _ => Stop::Failed(Status::internal(format!("cannot write to stdout: {error}"))),
            })
    }
}
