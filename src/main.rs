use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use agentbus::bench::BenchArgs;
use agentbus::cli;
use agentbus::config::{Config, ServeArgs};
use agentbus::server;

// glibc malloc was about a sixth of the server's CPU under load, with
// arena-lock contention between the tokio workers and the SQLite writer.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// jemalloc's options, read when it starts. Without background threads, freed
// pages are only purged while the process keeps allocating, so after a burst
// of large messages an idle server held on to the peak; with them, unused
// pages go back to the OS about a second after they are freed.
// SAFETY: jemalloc (built with its `_rjem_` prefix) reads this symbol as a
// `const char *` naming a NUL-terminated string; it is never written.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 85] =
    b"background_thread:true,max_background_threads:1,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[derive(Parser)]
#[command(
    name = "agentbus",
    version,
    about = "A gRPC bus for AI agents: sessions, messages, coordination",
    after_help = cli::exit_codes_help()
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bus (gRPC with reflection and health on one port).
    Serve(ServeArgs),
    /// Measure a bus: throughput, latency percentiles, server CPU per operation.
    Bench(BenchArgs),
    /// Serve MCP over stdio for a coding agent (Claude Code, Codex, OpenCode), acting as one agent.
    Mcp(agentbus::mcp::McpArgs),
    #[command(flatten)]
    Client(cli::Command),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => {
            init_tracing("info");
            serve(&args)
        }
        Command::Bench(args) => bench(args),
        // Stdout is the MCP protocol's; logs go to stderr.
        Command::Mcp(args) => {
            init_tracing("warn,agentbus=info");
            agentbus::mcp::run(args)
        }
        // Client output is the JSON on stdout and one error line on stderr.
        Command::Client(command) => cli::run(command),
    }
}

fn init_tracing(default_filter: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)))
        .with_writer(std::io::stderr)
        .init();
}

fn bench(args: BenchArgs) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("agentbus: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(agentbus::bench::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("agentbus bench: {error}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &ServeArgs) -> ExitCode {
    let config = match Config::load(args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("agentbus: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("agentbus: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        // The first address that binds of those the configuration checked.
        let bound = tokio::net::TcpListener::bind(config.listen_addrs.as_slice()).await;
        let listener = match bound {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("agentbus: cannot listen on {}: {error}", config.listen);
                return ExitCode::FAILURE;
            }
        };
        let address = listener
            .local_addr()
            .map_or_else(|_| config.listen.to_string(), |a| a.to_string());
        tracing::info!(
            %address,
            store = ?config.store,
            auth = config.api_key.is_some(),
            tls = config.tls_cert.is_some(),
            mutual_tls = config.tls_client_ca.is_some(),
            "agentbus listening"
        );
        // Tests and scripts read this line to find the port when using :0.
        println!("agentbus listening on {address}");
        match server::serve(config, listener, stop_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("agentbus: {error}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
