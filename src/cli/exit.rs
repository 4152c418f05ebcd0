//! The one table from gRPC codes to exit codes, and how errors are reported.

use std::process::ExitCode;

use tonic::{Code, Status};

use crate::api::errors::code_name;

/// Exit codes scripts can rely on; any code not listed here exits 1.
const TABLE: [(u8, &str, &[Code]); 7] = [
    (
        2,
        "usage error or invalid request",
        &[Code::InvalidArgument, Code::OutOfRange],
    ),
    (3, "not found", &[Code::NotFound]),
    (
        4,
        "conflict: exists already, version mismatch, wrong state",
        &[Code::AlreadyExists, Code::Aborted, Code::FailedPrecondition],
    ),
    (
        5,
        "missing or wrong API key or token, or not allowed to the caller",
        &[Code::Unauthenticated, Code::PermissionDenied],
    ),
    (6, "cannot connect, or the bus is shutting down", &[Code::Unavailable]),
    (
        7,
        "out of time: --rpc-timeout, or a --sync send without a reply",
        &[Code::DeadlineExceeded],
    ),
    (
        8,
        "a limit was reached: inbox full, too many participants, too large",
        &[Code::ResourceExhausted],
    ),
];

pub fn exit_code(code: Code) -> u8 {
    if code == Code::Ok {
        return 0;
    }
    TABLE
        .iter()
        .find(|(_, _, codes)| codes.contains(&code))
        .map_or(1, |(exit, _, _)| *exit)
}

/// Prints `agentbus: CODE_NAME: message` to stderr and returns the exit code.
pub fn report(status: &Status) -> ExitCode {
    eprintln!("agentbus: {}: {}", code_name(status.code()), describe(status));
    ExitCode::from(exit_code(status.code()))
}

/// The status message, followed by its source chain when tonic attached one
/// (connection errors say little without it).
pub fn describe(status: &Status) -> String {
    with_sources(status.message().to_owned(), std::error::Error::source(status))
}

/// `text: source: source of source...`, skipping parts already said (tonic
/// and hyper often repeat their inner error in their own message).
pub fn with_sources(mut text: String, mut source: Option<&dyn std::error::Error>) -> String {
    while let Some(error) = source {
        let part = error.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        source = error.source();
    }
    text
}

/// The exit-code table for `--help`.
pub fn exit_codes_help() -> String {
    let mut help = String::from("Exit codes:\n");
    help.push_str("  0  success (watch, receive: also when stopped by Ctrl-C or a closed stdout)\n");
    help.push_str("  1  any other error (INTERNAL, UNKNOWN, ...)\n");
    for (exit, meaning, codes) in TABLE {
        let names: Vec<_> = codes.iter().map(|c| code_name(*c)).collect();
        help.push_str(&format!("  {exit}  {meaning} ({})\n", names.join(", ")));
    }
    help.push_str("Errors go to stderr as `agentbus: CODE_NAME: message` (usage errors: clap's message).");
    help
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_grpc_code_has_one_exit_code() {
        for number in 1..=16 {
            let code = Code::from_i32(number);
            let rows = TABLE.iter().filter(|(_, _, codes)| codes.contains(&code)).count();
            assert!(rows <= 1, "{code:?} is in {rows} rows");
            assert_ne!(exit_code(code), 0, "{code:?}");
        }
        assert_eq!(exit_code(Code::Ok), 0);
        assert_eq!(exit_code(Code::Internal), 1);
        assert_eq!(exit_code(Code::NotFound), 3);
        assert_eq!(exit_code(Code::Aborted), 4);
        assert!(exit_codes_help().contains("  6  cannot connect, or the bus is shutting down (UNAVAILABLE)\n"));
    }
}
