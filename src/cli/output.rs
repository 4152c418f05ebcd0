//! Printing responses as dialect JSON on stdout, and noticing when to stop.

use std::io::Write;

use prost::{Message, Name};
use tonic::Status;

use crate::api::dialect;

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

    /// For streams: one object per line whatever `--pretty` says.
    pub fn lines() -> Self {
        Self { pretty: false }
    }

    pub fn print<T: Message + Name>(&self, message: &T) -> Result<(), Stop> {
        let json = serde_json::Value::Object(dialect::to_json(message));
        let text = if self.pretty {
            serde_json::to_string_pretty(&json)
        } else {
            serde_json::to_string(&json)
        }
        .map_err(|e| Status::internal(format!("cannot encode the response as JSON: {e}")))?;
        self.text(&text)
    }

    /// Prints text as it is, ending with a newline.
    pub fn text(&self, text: &str) -> Result<(), Stop> {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", text.trim_end())
            .and_then(|()| stdout.flush())
            .map_err(|error| match error.kind() {
                std::io::ErrorKind::BrokenPipe => Stop::StdoutClosed,
                _ => Stop::Failed(Status::internal(format!("cannot write to stdout: {error}"))),
            })
    }
}

/// Resolves on Ctrl-C, SIGTERM, or when stdout is a pipe whose reader has
/// gone. The last matters for quiet streams: `watch | head -1` must end
/// when `head` does, not at the next event, which may never come.
pub async fn interrupted() {
    tokio::select! {
        () = signalled() => {}
        () = stdout_closed() => {}
    }
}

async fn signalled() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A pipe's write end reports an error event once its reader closes. Files,
/// terminals and sockets are not watched; for them a failed write (EPIPE) is
/// the only signal, as usual.
async fn stdout_closed() {
    #[cfg(unix)]
    if let Some(pipe) = stdout_pipe() {
        while let Ok(ready) = pipe.ready(tokio::io::Interest::ERROR).await {
            if ready.is_error() {
                return;
            }
        }
    }
    std::future::pending::<()>().await;
}

/// A duplicate of stdout registered with the reactor, if stdout is a pipe.
#[cfg(unix)]
fn stdout_pipe() -> Option<tokio::net::unix::pipe::Sender> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileTypeExt;
    let file = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned().ok()?);
    if !file.metadata().ok()?.file_type().is_fifo() {
        return None;
    }
    // Unchecked, because the checked constructor makes the pipe non-blocking,
    // and that flag is shared with stdout itself (and whoever else writes to
    // it). This duplicate is only watched for readiness, never written to.
    tokio::net::unix::pipe::Sender::from_file_unchecked(file).ok()
}
