use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use agentbus::bench::BenchArgs;
use agentbus::cli;
use agentbus::config::{self, Config, Environment, Loaded, PrintFormat, ServeArgs};
use agentbus::server;
use agentbus::telemetry::otlp::Exporter;

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
    #[command(after_help = config::LAYERS_HELP)]
    Serve {
        #[command(flatten)]
        serve: ServeArgs,
        #[command(flatten)]
        log: LogArgs,
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
    /// Show the configuration `serve` would run with.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    #[command(flatten)]
    Client(cli::Command),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration, each setting with where its value
    /// came from (default, file, env or flag); secrets redacted. Takes the
    /// flags of `serve`; exits 2, as `serve` would, when it is invalid.
    #[command(after_help = config::LAYERS_HELP)]
    Print {
        #[command(flatten)]
        serve: ServeArgs,
        /// toml (a file for --config, sources in comments) or json.
        #[arg(long, value_enum, default_value = "toml")]
        format: PrintFormat,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve { serve: args, log } => serve(&args, &log),
        Command::Bench(args) => bench(args),
        Command::Config {
            command: ConfigCommand::Print { serve, format },
        } => print_config(&serve, format),
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

/// The configuration of `args`, the environment and the file; an invalid
/// one is reported and exits 2.
fn load_config(args: &ServeArgs) -> Result<Loaded, ExitCode> {
    Config::load(args, &Environment::from_process(flag_variables())).map_err(|error| {
        eprintln!("agentbus: {error}");
        ExitCode::from(2)
    })
}

/// The `AGENT_BUS_*` variables that the binary's flags read (the client's
/// AGENT_BUS_URL, AGENT_BUS_CONFIG...): no settings, and no typos either.
fn flag_variables() -> Vec<String> {
    fn collect(command: &clap::Command, names: &mut Vec<String>) {
        let variables = command.get_arguments().filter_map(|arg| arg.get_env()?.to_str());
        names.extend(variables.map(String::from));
        for subcommand in command.get_subcommands() {
            collect(subcommand, names);
        }
    }
    let mut names = Vec::new();
    collect(&Cli::command(), &mut names);
    names
}

fn print_config(args: &ServeArgs, format: PrintFormat) -> ExitCode {
    let loaded = match load_config(args) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    match std::io::stdout().write_all(loaded.print(format).as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("agentbus: cannot write the configuration: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The server's runtime: tokio's default, with the LIFO slot off where the
/// build allows it (`--cfg tokio_unstable`, set in `.cargo/config.toml`).
///
/// With the slot on, a task woken by the running task runs right after it,
/// on the same thread. One commit completes a few dozen sends at once; each
/// answer wakes its HTTP/2 connection's task, which then runs at once and
/// writes that single answer: one `writev` per message. With the slot off
/// the connection's task runs after the other answers of the commit and
/// writes them together (0.4 `writev` per message, about 10 % less server
/// CPU per message in the closed-loop `send`; benches/README.md).
fn serve_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    builder.build()
}

fn serve(args: &ServeArgs, log: &LogArgs) -> ExitCode {
    let loaded = match load_config(args) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let runtime = match serve_runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("agentbus: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The exporter's gRPC channel lives on this runtime.
    let exporter = match loaded.config.telemetry.otlp_endpoint() {
        Some(endpoint) => match runtime.block_on(async { Exporter::start(&endpoint) }) {
            Ok(exporter) => Some(exporter),
            Err(error) => {
                eprintln!("agentbus: {error}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    log.init("info", exporter.as_ref().map(|e| Box::new(e.layer()) as ExtraLayer));
    for variable in &loaded.ignored_env {
        tracing::warn!(%variable, "ignoring an AGENT_BUS_* variable that is no setting (misspelt?)");
    }
    let code = serve_on(&runtime, loaded.config);
    if let Some(exporter) = exporter {
        // After the server stopped, with the runtime still running.
        exporter.shutdown();
    }
    code
}

fn serve_on(runtime: &tokio::runtime::Runtime, config: Config) -> ExitCode {
    runtime.block_on(async {
        // The first address that binds of those the configuration checked.
        let bound = tokio::net::TcpListener::bind(config.server.listen_addrs.as_slice()).await;
        let listener = match bound {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("agentbus: cannot listen on {}: {error}", config.server.listen);
                return ExitCode::FAILURE;
            }
        };
        let address = listener
            .local_addr()
            .map_or_else(|_| config.server.listen.to_string(), |a| a.to_string());
        tracing::info!(
            %address,
            store = ?config.storage.store,
            auth = config.auth.api_key.is_some(),
            tls = config.tls.tls_cert.is_some(),
            mutual_tls = config.tls.tls_client_ca.is_some(),
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
