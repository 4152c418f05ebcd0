//! Peers measured with the same closed loop, payload and concurrency as
//! `send`: one durable append per operation, acknowledged to the client.
//! Built only with `--features peers`.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use super::driver::closed_loop;
use super::process::{self, CpuProbe, CpuWindow, Spawned};
use super::{BenchArgs, Peer, Report, Scenario};

pub async fn measure(args: &BenchArgs, peer: Peer) -> Result<Report, String> {
    match peer {
        Peer::Nats => nats(args).await,
        Peer::Redis => redis(args).await,
        Peer::Postgres => postgres(args).await,
        Peer::Echo => Err("the echo peer is measured by the scenarios".into()),
    }
}

/// The scenario a peer stands in for: `publish` keeps as many appends in
/// flight (connections x in-flight) as `send` does.
fn scenario(args: &BenchArgs) -> &'static str {
    if args.scenario == Scenario::Publish {
        "publish"
    } else {
        "send"
    }
}

fn body(args: &BenchArgs) -> String {
    format!("{{\"data\":\"{}\"}}", "x".repeat(args.payload.saturating_sub(11)))
}

/// JetStream publish with ack into a file-backed stream (the server's own
/// fsync policy applies: by default JetStream syncs periodically, not per
/// message).
async fn nats(args: &BenchArgs) -> Result<Report, String> {
    let mut contexts = Vec::new();
    for _ in 0..args.connections.max(1) {
        let client = async_nats::connect(args.nats.as_str())
            .await
            .map_err(|e| format!("cannot connect to NATS at {}: {e}", args.nats))?;
        contexts.push(async_nats::jetstream::new(client));
    }
    let config = async_nats::jetstream::stream::Config {
        name: "AGENTBUS_BENCH".into(),
        subjects: vec!["agentbus.bench".into()],
        storage: async_nats::jetstream::stream::StorageType::File,
        max_messages: 1_000_000,
        ..Default::default()
    };
    let _ = contexts[0].delete_stream("AGENTBUS_BENCH").await;
    contexts[0]
        .create_stream(config)
        .await
        .map_err(|e| format!("cannot create the JetStream stream: {e}"))?;
    let payload = axum::body::Bytes::from(body(args));
    let measured = closed_loop(args.workers(), args.timing(), |i| {
        let (js, payload) = (contexts[i % contexts.len()].clone(), payload.clone());
        move |_| {
            let (js, payload) = (js.clone(), payload.clone());
            async move {
                js.publish("agentbus.bench", payload)
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        }
    })
    .await;
    let _ = contexts[0].delete_stream("AGENTBUS_BENCH").await;
    Ok(Report::new(
        args,
        scenario(args),
        "nats jetstream (file, publish+ack)".into(),
        &measured,
        None,
    ))
}

/// XADD on a redis-server started here with `appendfsync always`.
async fn redis(args: &BenchArgs) -> Result<Report, String> {
    let port = process::free_port()?;
    let dir = process::scratch_dir("redis")?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start redis-server (is it installed?): {e}"))?;
    let server = Spawned::wrap(child, format!("127.0.0.1:{port}"), Some(dir));
    process::wait_for_port(&server.addr, Duration::from_secs(10)).await?;
    let client = redis::Client::open(format!("redis://{}/", server.addr)).map_err(|e| e.to_string())?;
    let mut connections = Vec::new();
    for _ in 0..args.connections.max(1) {
        connections.push(
            client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| format!("cannot connect to redis: {e}"))?,
        );
    }
    let payload = Arc::new(body(args));
    let cpu_before = process::cpu_time(server.pid());
    let measured = closed_loop(args.workers(), args.timing(), |i| {
        let (connection, payload) = (connections[i % connections.len()].clone(), payload.clone());
        move |_| {
            let (mut connection, payload) = (connection.clone(), payload.clone());
            async move {
                redis::cmd("XADD")
                    .arg("agentbus-bench")
                    .arg("*")
                    .arg("data")
                    .arg(payload.as_str())
                    .query_async::<String>(&mut connection)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        }
    })
    .await;
    // Warm-up included: redis is only sampled around the whole run.
    let cpu = cpu_before
        .zip(process::cpu_time(server.pid()))
        .map(|(a, b)| b.saturating_sub(a));
    let mut report = Report::new(
        args,
        scenario(args),
        "redis XADD (appendfsync always)".into(),
        &measured,
        None,
    );
    report.extra.insert(
        "server_cpu_s_including_warmup".into(),
        serde_json::json!(cpu.map(|c| c.as_secs_f64())),
    );
    Ok(report)
}

/// INSERT of the payload with `synchronous_commit = on`, prepared, with
/// `in_flight` pipelined statements per connection; PostgreSQL's CPU time
/// is measured as with `--spawn postgres`.
async fn postgres(args: &BenchArgs) -> Result<Report, String> {
    let database = args.postgres.as_deref().unwrap_or(&args.database_url);
    let config: tokio_postgres::Config = database
        .parse()
        .map_err(|e| format!("not a PostgreSQL connection string: {e}"))?;
    let target = crate::store::postgres::describe(&config);
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("cannot connect to PostgreSQL at {target}: {e}"))?;
        tokio::spawn(connection);
        client
            .batch_execute("SET synchronous_commit = on")
            .await
            .map_err(|e| e.to_string())?;
        clients.push(Arc::new(client));
    }
    clients[0]
        .batch_execute(
            "DROP TABLE IF EXISTS agentbus_bench; CREATE TABLE agentbus_bench (id bigserial PRIMARY KEY, payload text NOT NULL)",
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut statements = Vec::new();
    for client in &clients {
        statements.push(
            client
                .prepare("INSERT INTO agentbus_bench (payload) VALUES ($1)")
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let payload = Arc::new(body(args));
    let probe = CpuProbe {
        pids: Vec::new(),
        postgres: true,
    };
    let cpu = CpuWindow::start(probe, args.warmup);
    let measured = closed_loop(args.workers(), args.timing(), |i| {
        let slot = i % clients.len();
        let (client, statement, payload) = (clients[slot].clone(), statements[slot].clone(), payload.clone());
        move |_| {
            let (client, statement, payload) = (client.clone(), statement.clone(), payload.clone());
            async move {
                client
                    .execute(&statement, &[&payload.as_str()])
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        }
    })
    .await;
    let used = cpu.finish().await;
    let _ = clients[0].batch_execute("DROP TABLE IF EXISTS agentbus_bench").await;
    Ok(Report::new(
        args,
        scenario(args),
        "postgres INSERT (synchronous_commit=on)".into(),
        &measured,
        Some(&used),
    ))
}
