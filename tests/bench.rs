//! `agentbus bench` end to end: every scenario runs briefly against a bus it
//! starts itself and reports sane, loss-free figures as JSON; on PostgreSQL
//! (AGENTBUS_TEST_DATABASE_URL, default the local test database) it starts
//! several nodes.

use std::process::{Command, Output};

use serde_json::Value as Json;

fn run_bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentbus"))
        .arg("bench")
        .args(args)
        .args(["--duration", "700ms", "--warmup", "200ms", "--json"])
        .output()
        .expect("run agentbus bench")
}

fn reports(args: &[&str], output: &Output) -> Vec<Json> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "agentbus bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Runs the bench against a fresh bus on the memory store.
fn bench(args: &[&str]) -> Vec<Json> {
    let args = [args, &["--spawn", "memory"]].concat();
    reports(&args, &run_bench(&args))
}

fn database_url() -> String {
    std::env::var("AGENTBUS_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn check(report: &Json, scenario: &str) {
    assert_eq!(report["scenario"], scenario, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["ops"].as_u64().unwrap() > 0, "{report}");
    let latency = &report["latency_ms"];
    let (p50, p99, max) = (
        latency["p50"].as_f64().unwrap(),
        latency["p99"].as_f64().unwrap(),
        latency["max"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{report}");
    assert!(report["server_cpu_us_per_op"].as_f64().is_some(), "{report}");
}

#[test]
fn send_names_the_store_and_its_single_node() {
    let reports = bench(&["send", "--connections", "1", "--in-flight", "2"]);
    check(&reports[0], "send");
    assert_eq!(reports[0]["store"], "memory", "{}", reports[0]);
    assert_eq!(reports[0]["nodes"], 1, "{}", reports[0]);
    assert_eq!(reports[0]["target"], "agentbus (memory, 1 node)");
    assert_eq!(reports[0]["node_cpu_us_per_op"].as_array().unwrap().len(), 1);
    assert!(reports[0].get("postgres_cpu_us_per_op").is_none(), "{}", reports[0]);
}

#[test]
fn send_spreads_over_two_postgres_nodes_and_reports_each() {
    let url = database_url();
    let args = [
        "send",
        "--spawn",
        "postgres",
        "--nodes",
        "2",
        "--database-url",
        &url,
        "--connections",
        "2",
        "--in-flight",
        "4",
    ];
    let reports = reports(&args, &run_bench(&args));
    let report = &reports[0];
    check(report, "send");
    assert_eq!(report["store"], "postgres", "{report}");
    assert_eq!(report["nodes"], 2, "{report}");
    assert_eq!(report["target"], "agentbus (postgres, 2 nodes)");
    let per_node = report["node_cpu_us_per_op"].as_array().unwrap();
    assert_eq!(per_node.len(), 2, "{report}");
    let each: Vec<f64> = per_node.iter().map(|c| c.as_f64().unwrap()).collect();
    let total = report["server_cpu_us_per_op"].as_f64().unwrap();
    assert!((each[0] + each[1] - total).abs() < 1e-6 * total.max(1.0), "{report}");
    // Both nodes served: each took senders' connections and receivers.
    assert!(each.iter().all(|&c| c > 0.0), "{report}");
    // PostgreSQL's CPU, or a note saying why it could not be read.
    let notes = report["notes"].as_array().map_or(0, Vec::len);
    assert!(
        report["postgres_cpu_us_per_op"].as_f64().is_some() || notes > 0,
        "{report}"
    );
}

#[test]
fn e2e_on_two_nodes_sends_through_one_and_receives_on_the_other() {
    let url = database_url();
    // Where the messages go, not how fast: the p99 budget is generous.
    let args = [
        "e2e",
        "--spawn",
        "postgres",
        "--nodes",
        "2",
        "--database-url",
        &url,
        "--rate",
        "100",
        "--agents",
        "4",
        "--max-p99",
        "60s",
    ];
    let reports = reports(&args, &run_bench(&args));
    let report = &reports[0];
    check(report, "e2e");
    assert_eq!(report["nodes"], 2, "{report}");
    assert_eq!(report["extra"]["senders_on_nodes"], serde_json::json!([0]), "{report}");
    assert_eq!(
        report["extra"]["receivers_on_nodes"],
        serde_json::json!([1]),
        "{report}"
    );
    assert_eq!(report["node_cpu_us_per_op"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(report["extra"]["lost"], 0, "{report}");
}

#[test]
fn several_nodes_need_a_shared_store() {
    for store in ["sqlite", "memory"] {
        let output = run_bench(&["send", "--spawn", store, "--nodes", "2"]);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!(
                "--nodes 2 needs --spawn postgres: the {store} store belongs to one process"
            )),
            "{stderr}"
        );
    }
}

#[test]
fn send_reports_throughput_latency_cpu_and_compares_with_the_echo_peer() {
    let reports = bench(&["send", "--connections", "2", "--in-flight", "4", "--compare", "echo"]);
    assert_eq!(reports.len(), 2);
    check(&reports[0], "send");
    assert!(reports[0]["extra"]["acked_by_receivers"].as_u64().unwrap() > 0);
    check(&reports[1], "send");
    assert_eq!(reports[1]["target"], "tonic echo (transport ceiling)");
    let ratio = reports[1]["agentbus_ratio"].as_f64().unwrap();
    let expected = reports[0]["throughput"].as_f64().unwrap() / reports[1]["throughput"].as_f64().unwrap();
    assert!((ratio - expected).abs() < 1e-9, "{ratio} vs {expected}");
}

#[test]
fn send_sync_gets_every_reply() {
    let reports = bench(&["send-sync", "--connections", "1", "--in-flight", "4"]);
    check(&reports[0], "send-sync");
}

#[test]
fn e2e_sweeps_rates_without_loss() {
    // A generous p99 budget: this checks the sweep's bookkeeping, not the
    // speed of a debug build sharing two cores with the other tests.
    let reports = bench(&["e2e", "--rate", "200,400", "--agents", "8", "--max-p99", "60s"]);
    assert_eq!(reports.len(), 2);
    for (report, rate) in reports.iter().zip([200.0, 400.0]) {
        check(report, "e2e");
        assert_eq!(report["extra"]["offered_per_s"], rate);
        assert_eq!(report["extra"]["lost"], 0, "{report}");
        assert_eq!(report["extra"]["sent"], report["ops"], "{report}");
    }
    assert_eq!(reports[1]["extra"]["highest_rate_meeting_max_p99"], 400.0);
}

#[test]
fn publish_reports_the_stream_and_the_batches() {
    let reports = bench(&["publish", "--connections", "2", "--in-flight", "8"]);
    assert_eq!(reports.len(), 2, "{reports:?}");
    for report in &reports {
        check(report, "publish");
    }
    assert_eq!(reports[0]["target"], "agentbus (memory, 1 node) PublishMessages");
    assert_eq!(reports[1]["target"], "agentbus (memory, 1 node) SendMessages x8");
    // Every message sent on either path was acked by the receivers.
    assert!(
        reports[1]["extra"]["acked_by_receivers"].as_u64().unwrap() > 0,
        "{}",
        reports[1]
    );
}

#[test]
fn sessions_and_http_send_run() {
    let sessions = bench(&["sessions", "--connections", "1", "--in-flight", "4"]);
    check(&sessions[0], "sessions");
    assert_eq!(sessions[0]["extra"]["rpcs_per_op"], 3);
    let http = bench(&["http-send", "--connections", "2", "--in-flight", "2"]);
    check(&http[0], "http-send");
    assert_eq!(
        http[0]["connections"], 4,
        "one request in flight per HTTP/1.1 connection"
    );
}

#[test]
fn watch_counts_every_delivery_and_idle_memory() {
    let reports = bench(&["watch", "--subscribers", "20", "--rate", "100"]);
    check(&reports[0], "watch");
    assert_eq!(reports[0]["extra"]["lost"], 0, "{}", reports[0]);
    assert_eq!(reports[0]["ops"], reports[0]["extra"]["expected_deliveries"]);
    let idle = bench(&["watch", "--idle", "--subscribers", "200"]);
    assert_eq!(idle[0]["scenario"], "watch-idle");
    assert!(idle[0]["extra"]["server_bytes_per_subscriber"].as_f64().is_some());
}
