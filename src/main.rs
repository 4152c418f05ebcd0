use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use agentbus::bench::BenchArgs;
use agentbus::cli;
use agentbus::config::{Config, ServeArgs};
use agentbus::server;
use agentbus::telemetry::otlp::{Exporter, TelemetryArgs};

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
    Serve {
        #[command(flatten)]
        serve: ServeArgs,
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        telemetry: TelemetryArgs,
    },
    /// Measure a bus: throughput, latency percentiles, server CPU per operation.
    Bench(BenchArgs),
    /// Serve MCP over stdio for a coding agent (Claude Code, Codex, OpenCode), acting as one agent.
    Mcp {
        #[command(flatten)]
        mcp: agentbus::mcp::McpArgs,
        #[command(flatten)]
        log: LogArgs,
    },
    #[command(flatten)]
    Client(cli::Command),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve {
            serve: args,
            log,
            telemetry,
        } => serve(&args, &log, &telemetry),
        Command::Bench(args) => bench(args),
        // Stdout is the MCP protocol's; logs go to stderr.
        Command::Mcp { mcp, log } => {
            log.init("warn,agentbus=info", None);
            agentbus::mcp::run(mcp)
        }
        // Client output is the JSON on stdout and one error line on stderr.
        Command::Client(command) => cli::run(command),
    }
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    /// One line per event, coloured only when stderr is a terminal.
    Text,
    /// One JSON object per line.
    Json,
}

/// How the logs (on stderr) look; `RUST_LOG` picks what is logged.
#[derive(Args, Debug)]
struct LogArgs {
    /// How log lines look on stderr: text or json.
    #[arg(long, env = "AGENT_BUS_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

/// A layer besides the log's, such as span export.
type ExtraLayer = Box<dyn Layer<Registry> + Send + Sync>;

impl LogArgs {
    /// Logs to stderr what `RUST_LOG` (else `default_filter`) asks for;
    /// `extra` sees events and spans through its own filter.
    fn init(&self, default_filter: &str, extra: Option<ExtraLayer>) {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
        let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        let logs: ExtraLayer = match self.log_format {
            LogFormat::Text => Box::new(logs.with_ansi(std::io::stderr().is_terminal())),
            LogFormat::Json => Box::new(logs.json()),
        };
        let layers: Vec<ExtraLayer> = std::iter::once(Box::new(logs.with_filter(filter)) as ExtraLayer)
            .chain(extra)
            .collect();
        tracing_subscriber::registry().with(layers).init();
    }
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

fn serve(args: &ServeArgs, log: &LogArgs, telemetry: &TelemetryArgs) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("agentbus: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The exporter's gRPC channel lives on this runtime.
    let exporter = match &telemetry.otlp_endpoint {
        Some(endpoint) => match runtime.block_on(async { Exporter::start(endpoint) }) {
            Ok(exporter) => Some(exporter),
            Err(error) => {
                eprintln!("agentbus: {error}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    log.init("info", exporter.as_ref().map(|e| Box::new(e.layer()) as ExtraLayer));
    let code = serve_on(&runtime, args);
    if let Some(exporter) = exporter {
        // After the server stopped, with the runtime still running.
        exporter.shutdown();
    }
    code
}

fn serve_on(runtime: &tokio::runtime::Runtime, args: &ServeArgs) -> ExitCode {
    let config = match Config::load(args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("agentbus: {error}");
            return ExitCode::from(2);
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
