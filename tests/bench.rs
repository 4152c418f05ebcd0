//! `agentbus bench` end to end: every scenario runs briefly against a bus it
//! starts itself and reports sane, loss-free figures as JSON.

use std::process::Command;

use serde_json::Value as Json;

fn bench(args: &[&str]) -> Vec<Json> {
    let output = Command::new(env!("CARGO_BIN_EXE_agentbus"))
        .arg("bench")
        .args(args)
        .args([
            "--spawn",
            "memory",
            "--duration",
            "700ms",
            "--warmup",
            "200ms",
            "--json",
        ])
        .output()
        .expect("run agentbus bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "agentbus bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
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
