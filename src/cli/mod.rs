//! The command-line client, `agentbus sessions|agents|tokens|send|receive|watch`:
//! calls to a running bus through the generated tonic clients.
//!
//! Each command turns its flags (or a `--json` document in the JSON dialect)
//! into one request, calls the bus, and prints the response in the dialect:
//! one JSON object for a unary call, one object per line for a stream.
//! Errors go to stderr as `agentbus: CODE_NAME: message` and map to the exit
//! codes in [`exit`].

pub(crate) mod agents;
pub(crate) mod connection;
mod exit;
pub(crate) mod input;
mod output;
mod receive;
mod send;
mod sessions;
mod tokens;
mod watch;

use std::process::ExitCode;

use clap::Subcommand;

pub use connection::ClientArgs;
pub use exit::exit_codes_help;
use output::Stop;

/// The client subcommands, flattened into the binary's top-level commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create, inspect, list and end sessions.
    #[command(after_help = exit_codes_help())]
    Sessions(sessions::SessionsArgs),
    /// Register, inspect, list and unregister agents.
    #[command(after_help = exit_codes_help())]
    Agents(agents::AgentsArgs),
    /// Issue, list and revoke agent tokens (admin key).
    #[command(after_help = exit_codes_help())]
    Tokens(tokens::TokensArgs),
    /// Send one message; prints the SendMessageResponse.
    #[command(after_help = exit_codes_help())]
    Send(send::SendArgs),
    /// Open an agent's inbox and print each delivery as one JSON line, acknowledging it.
    #[command(after_help = exit_codes_help())]
    Receive(receive::ReceiveArgs),
    /// Print session events as they happen, one JSON object per line.
    #[command(after_help = exit_codes_help())]
    Watch(watch::WatchArgs),
}

/// Runs one client command to completion and returns the process exit code.
pub fn run(command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("agentbus: INTERNAL: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match command {
            Command::Sessions(args) => sessions::run(args).await,
            Command::Agents(args) => agents::run(args).await,
            Command::Tokens(args) => tokens::run(args).await,
            Command::Send(args) => send::run(args).await,
            // Streams end cleanly on Ctrl-C, SIGTERM or a closed stdout.
            Command::Receive(args) => until_stopped(receive::run(args)).await,
            Command::Watch(args) => until_stopped(watch::run(args)).await,
        }
    });
    match result {
        Ok(()) | Err(Stop::StdoutClosed) => ExitCode::SUCCESS,
        Err(Stop::Failed(status)) => exit::report(&status),
    }
}

async fn until_stopped(command: impl Future<Output = Result<(), Stop>>) -> Result<(), Stop> {
    tokio::select! {
        result = command => result,
        () = output::interrupted() => Ok(()),
    }
}
