//! `agentbus bench`: drives a running bus (or one it starts) over gRPC or
//! HTTP and prints throughput, latency percentiles, errors and the server's
//! CPU time per operation; `--compare` measures peers (the tonic echo
//! ceiling, NATS JetStream, Redis, PostgreSQL) with the same settings in the
//! same run and reports ratios.

mod driver;
mod echo;
mod nodes;
mod noise;
mod pause;
#[cfg(feature = "peers")]
mod peers;
mod process;
mod scenarios;

use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::{Map, Value as Json};

use driver::{Measured, Timing};
use process::CpuUsed;

use crate::api::MAX_ACKS;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// SendMessage (async) in a closed loop; receivers ack so inboxes drain.
    Send,
    /// Request/reply through the bus: SYNC sends answered by responders.
    SendSync,
    /// Fixed arrival rate; latency from send to arrival on the recipient's stream.
    E2e,
    /// Create a session, merge into its context, complete it.
    Sessions,
    /// WatchSessions subscribers while sessions are created at --rate.
    Watch,
    /// The prototype's POST /messages/send over keep-alive HTTP/1.1 connections.
    HttpSend,
    /// One PublishMessages stream per connection with --in-flight messages
    /// outstanding on each, then SendMessages batches of --in-flight
    /// messages, one call in flight per connection; receivers ack as in send.
    Publish,
    /// Runs the echo peer server (used by `--compare echo`).
    #[value(hide = true)]
    EchoServer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Peer {
    /// A tonic server answering SendMessage at once (the transport ceiling).
    Echo,
    /// NATS JetStream publish with ack (file storage) on 127.0.0.1:4222.
    Nats,
    /// Redis XADD on a redis-server started with appendfsync always.
    Redis,
    /// PostgreSQL INSERT with synchronous_commit=on.
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SpawnStore {
    Sqlite,
    Memory,
    /// PostgreSQL at --database-url, in a schema of the run's own.
    Postgres,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// The bus to drive (ignored with --spawn).
    #[arg(long, env = "AGENT_BUS_URL", default_value = "http://127.0.0.1:8080")]
    pub addr: String,
    #[arg(long, env = "AGENT_BUS_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Start a fresh bus with this store on a free port (and measure its CPU).
    #[arg(long, value_enum)]
    pub spawn: Option<SpawnStore>,
    /// Extra `serve` flags for --spawn, e.g. --serve-arg=--sqlite-synchronous=normal.
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    pub serve_args: Vec<String>,
    /// The database of --spawn postgres; each run creates a schema of its
    /// own in it (`agentbus_bench_PID_N`) and drops it afterwards.
    #[arg(
        long,
        env = "AGENT_BUS_DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pub database_url: String,
    /// With --spawn postgres: start this many nodes on the same database and
    /// spread the connections over them round robin (e2e: senders on the
    /// first node, receivers on the others).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub nodes: u32,
    /// PID of the server, to report its CPU time per operation (set by --spawn).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Client connections (HTTP/2 for gRPC, HTTP/1.1 for http-send).
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Operations in flight per connection (closed loop).
    #[arg(long, default_value_t = 16)]
    pub in_flight: usize,
    /// Payload size in bytes (a JSON object with one string).
    #[arg(long, default_value_t = 500)]
    pub payload: usize,
    /// How long to measure.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Measure this many operations instead of a duration.
    #[arg(long)]
    pub count: Option<u64>,
    /// Unmeasured run-in before measuring.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Offered rate per second (e2e: messages, watch: events); e2e takes a
    /// comma-separated list and reports the highest rate meeting --max-p99.
    #[arg(long, value_delimiter = ',')]
    pub rate: Vec<f64>,
    /// e2e: the p99 a rate must keep to count as sustained.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    pub max_p99: Duration,
    /// Receiving agents (send, send-sync, e2e, http-send).
    #[arg(long, default_value_t = 4)]
    pub agents: usize,
    /// Receivers acknowledge up to this many deliveries per AckMessages
    /// call, one call in flight per agent; 1: one AckMessage per delivery,
    /// up to 256 in flight per agent.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=MAX_ACKS as i64))]
    pub ack_batch: u32,
    /// watch: number of subscribers.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// watch: open idle subscribers and report server memory per subscriber.
    #[arg(long)]
    pub idle: bool,
    /// Also measure these peers with the same settings and print ratios.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub compare: Vec<Peer>,
    /// PostgreSQL connection string for --compare postgres (default: --database-url).
    #[arg(long)]
    pub postgres: Option<String>,
    /// NATS server for --compare nats.
    #[arg(long, default_value = "127.0.0.1:4222")]
    pub nats: String,
    /// Listen address of `echo-server`.
    #[arg(long, default_value = "127.0.0.1:0", hide = true)]
    pub listen: String,
    /// Run one busy thread (a CPU-bound spin) beside the load for the
    /// whole run, as other work on the machine would.
    #[arg(long)]
    pub noise: bool,
    /// e2e: in the middle of the measured window, stop the server (SIGSTOP)
    /// for this long, then continue it (SIGCONT), and report the p99 of
    /// the second after and how long the latency took to recover. Needs the
    /// server's PID (--spawn or --server-pid).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub pause: Option<Duration>,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

impl BenchArgs {
    fn timing(&self) -> Timing {
        Timing {
            warmup: self.warmup,
            duration: self.duration,
            count: self.count,
        }
    }

    fn workers(&self) -> usize {
        self.connections.max(1) * self.in_flight.max(1)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    /// What was measured: `agentbus (postgres, 2 nodes)`, `redis (appendfsync always)`...
    pub target: String,
    /// The bus's store (`sqlite`, `memory`, `postgres`) when the bench
    /// started it; null for a bus at --addr and for peers.
    pub store: Option<String>,
    /// The bus processes measured; null for peers.
    pub nodes: Option<usize>,
    pub connections: usize,
    pub in_flight: usize,
    pub payload_bytes: usize,
    /// Whether a busy thread ran beside the load (`--noise`).
    pub noise: bool,
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    /// Operations per second.
    pub throughput: f64,
    /// Milliseconds.
    pub latency_ms: Latency,
    /// Server CPU (user + system) per operation, when the server's PID is
    /// known; with several nodes, their sum.
    pub server_cpu_us_per_op: Option<f64>,
    /// The same for each node, in node order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub node_cpu_us_per_op: Vec<Option<f64>>,
    /// CPU per operation of every process named `postgres` on this machine
    /// (the whole PostgreSQL server, other clients' work included), when
    /// the store is PostgreSQL and /proc shows them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres_cpu_us_per_op: Option<f64>,
    /// Scenario-specific figures (deliveries, losses, memory...).
    pub extra: Map<String, Json>,
    pub first_errors: Vec<String>,
    /// What could not be measured, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// This run's throughput divided by the agentbus run's, for peers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agentbus_ratio: Option<f64>,
}

impl Report {
    fn new(args: &BenchArgs, scenario: &str, target: String, measured: &Measured, cpu: Option<&CpuUsed>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        let h = &measured.latency;
        let seconds = measured.elapsed.as_secs_f64().max(1e-9);
        let per_op = |used: Duration| (measured.ops > 0).then(|| used.as_secs_f64() * 1e6 / measured.ops as f64);
        let mut notes = Vec::new();
        let postgres_cpu_us_per_op = match cpu.and_then(|c| c.postgres.as_ref()) {
            Some(Ok(used)) => per_op(*used),
            Some(Err(error)) => {
                notes.push(format!("PostgreSQL CPU not measured: {error}"));
                None
            }
            None => None,
        };
        if let Some(exited) = cpu.map(|c| c.postgres_exited).filter(|&n| n > 0) {
            notes.push(format!(
                "{exited} postgres process(es) exited during the measurement; their CPU time is not counted"
            ));
        }
        Self {
            scenario: scenario.to_owned(),
            target,
            store: None,
            nodes: None,
            connections: args.connections,
            in_flight: args.in_flight,
            payload_bytes: args.payload,
            noise: args.noise,
            ops: measured.ops,
            errors: measured.errors,
            seconds,
            throughput: measured.ops as f64 / seconds,
            latency_ms: Latency {
                p50: ms(h.value_at_quantile(0.50)),
                p90: ms(h.value_at_quantile(0.90)),
                p99: ms(h.value_at_quantile(0.99)),
                max: ms(h.max()),
                mean: h.mean() / 1000.0,
            },
            server_cpu_us_per_op: cpu.and_then(CpuUsed::total).and_then(per_op),
            node_cpu_us_per_op: cpu
                .map_or_else(Vec::new, |c| c.nodes.iter().map(|used| used.and_then(per_op)).collect()),
            postgres_cpu_us_per_op,
            extra: Map::new(),
            first_errors: measured.first_errors.clone(),
            notes,
            agentbus_ratio: None,
        }
    }

    fn print(&self) {
        let mut cpu = self
            .server_cpu_us_per_op
            .map_or(String::new(), |c| format!("  server cpu {c:.1} µs/op"));
        if self.node_cpu_us_per_op.len() > 1 && self.node_cpu_us_per_op.iter().any(Option::is_some) {
            let each: Vec<String> = self
                .node_cpu_us_per_op
                .iter()
                .map(|c| c.map_or("?".into(), |c| format!("{c:.1}")))
                .collect();
            cpu.push_str(&format!(" (nodes {})", each.join(" + ")));
        }
        if let Some(c) = self.postgres_cpu_us_per_op {
            cpu.push_str(&format!("  postgres cpu {c:.1} µs/op"));
        }
        let mut ratio = self
            .agentbus_ratio
            .map_or(String::new(), |r| format!("  agentbus/peer {r:.2}x"));
        if self.noise {
            ratio.push_str("  (noise)");
        }
        println!(
            "{:<10} {:<34} {}x{} {}B  {:>9.0}/s  p50 {:.2}ms p90 {:.2}ms p99 {:.2}ms max {:.2}ms  ops {} errors {}{cpu}{ratio}",
            self.scenario,
            self.target,
            self.connections,
            self.in_flight,
            self.payload_bytes,
            self.throughput,
            self.latency_ms.p50,
            self.latency_ms.p90,
            self.latency_ms.p99,
            self.latency_ms.max,
            self.ops,
            self.errors,
        );
        if !self.extra.is_empty() {
            println!("{:<10} {}", "", Json::Object(self.extra.clone()));
        }
        for error in &self.first_errors {
            println!("{:<10} error: {error}", "");
        }
        for note in &self.notes {
            println!("{:<10} note: {note}", "");
        }
    }
}

/// Runs the benchmark; prints the reports.
pub async fn run(args: BenchArgs) -> Result<(), String> {
    if args.scenario == Scenario::EchoServer {
        return echo::serve(&args.listen).await;
    }
    nodes::check(&args)?;
    if args.pause.is_some() && (args.scenario != Scenario::E2e || args.count.is_some()) {
        return Err("--pause is for e2e runs of a --duration".into());
    }
    // Dropped (stopped) when the run returns.
    let _noise = if args.noise { Some(noise::Noise::start()?) } else { None };
    let mut reports = scenarios::run(&args).await?;
    let Some(base) = reports.first().map(|r| r.throughput) else {
        return Err("nothing was measured".into());
    };
    for peer in &args.compare {
        let mut report = measure_peer(&args, *peer).await?;
        report.agentbus_ratio = Some(base / report.throughput.max(1e-9));
        reports.push(report);
    }
    if args.json {
        let text = serde_json::to_string_pretty(&reports).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        for report in &reports {
            report.print();
        }
    }
    Ok(())
}

async fn measure_peer(args: &BenchArgs, peer: Peer) -> Result<Report, String> {
    if !matches!(args.scenario, Scenario::Send | Scenario::HttpSend | Scenario::Publish) {
        return Err("--compare measures peers for the send, http-send and publish scenarios".into());
    }
    match peer {
        Peer::Echo => scenarios::echo_peer(args).await,
        #[cfg(feature = "peers")]
        other => peers::measure(args, other).await,
        #[cfg(not(feature = "peers"))]
        other => Err(format!(
            "--compare {other:?} needs the peer clients: build with `cargo build --release --features peers`"
        )),
    }
}
