//! `/metrics` as a Prometheus server sees it: scraped over HTTP from a real
//! server, read by a strict parser of both text formats, checked against
//! the metric contract (names, types, help, labels), and watched to count
//! what the calls in between did.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use agentbus::pb;
use agentbus::pb::message_service_client::MessageServiceClient;
use agentbus::pb::receive_messages_response::Kind;
use common::exposition::{Exposition, Format};
use common::{ApiKey, Bus};
use reqwest::StatusCode;
use serde_json::{Value as Json, json};
use tokio::time::timeout;

const KEY: &str = "metrics-key";
const ORCHESTRATOR: &str = "claude-code://orchestrator";
const BACKEND: &str = "opencode://backend";
const SEND: &str = "/agentbus.v1.MessageService/SendMessage";
const RECEIVE: &str = "/agentbus.v1.MessageService/ReceiveMessages";
const GET_SESSION: &str = "/agentbus.v1.SessionService/GetSession";

/// Every family `/metrics` exposes: the name of its samples' family (as in
/// Prometheus text), type, help and label names. Dashboards and alerts
/// depend on these; a change here is a breaking change.
const CONTRACT: &[(&str, &str, &str, &[&str])] = &[
    (
        "agentbus_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        &[],
    ),
    (
        "agentbus_active_sessions",
        "gauge",
        "Sessions in the active state.",
        &[],
    ),
    ("agentbus_registered_agents", "gauge", "Registered agents.", &[]),
    (
        "agentbus_message_throughput",
        "gauge",
        "Messages accepted per second over the last 60s.",
        &[],
    ),
    (
        "agentbus_messages_sent_total",
        "counter",
        "Messages accepted, by type.",
        &["type"],
    ),
    (
        "agentbus_message_deliveries_total",
        "counter",
        "Deliveries on inbox streams, retries included.",
        &[],
    ),
    (
        "agentbus_message_redeliveries_total",
        "counter",
        "Deliveries that were retries.",
        &[],
    ),
    (
        "agentbus_messages_acked_total",
        "counter",
        "Messages acknowledged by their recipient.",
        &[],
    ),
    (
        "agentbus_messages_dead_lettered_total",
        "counter",
        "Messages given up on.",
        &[],
    ),
    (
        "agentbus_auth_denied_total",
        "counter",
        "Calls refused by authentication or an access rule, by reason.",
        &["reason"],
    ),
    (
        "agentbus_message_ack_duration_seconds",
        "histogram",
        "From acceptance to acknowledgement, by message type.",
        &["type"],
    ),
    (
        "agentbus_requests_total",
        "counter",
        "Requests answered, by transport, route and code.",
        &["transport", "route", "code"],
    ),
    (
        "agentbus_request_duration_seconds",
        "histogram",
        "Time to answer unary requests, by transport and route.",
        &["transport", "route"],
    ),
    (
        "agentbus_message_handovers_total",
        "counter",
        "Messages handed straight to a waiting inbox stream, without an inbox read (PostgreSQL), from a send on this node or offered by another node.",
        &["from"],
    ),
    (
        "agentbus_retention_removed_total",
        "counter",
        "Rows removed by retention (retain_closed, retain_events), by kind.",
        &["kind"],
    ),
    (
        "agentbus_store_size_bytes",
        "gauge",
        "Bytes the database takes: SQLite's file and log, PostgreSQL's tables; 0 in memory.",
        &[],
    ),
    (
        "agentbus_build_info",
        "gauge",
        "The version of the running server; always 1.",
        &["version"],
    ),
];

struct Scraper {
    client: reqwest::Client,
    url: String,
}

impl Scraper {
    async fn get(&self, accept: &str, key: Option<&str>) -> reqwest::Response {
        let mut request = self.client.get(&self.url).header("accept", accept);
        if let Some(key) = key {
            request = request.header("x-agent-api-key", key);
        }
        request.send().await.unwrap()
    }

    /// Scrapes in `format`, checks the content type and that the text
    /// parses strictly, and checks it against [`CONTRACT`].
    async fn scrape(&self, format: Format) -> Exposition {
        let (accept, content_type) = match format {
            Format::Prometheus => ("text/plain;version=0.0.4", "text/plain; version=0.0.4; charset=utf-8"),
            Format::OpenMetrics => (
                "application/openmetrics-text;version=1.0.0",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
        };
        let response = self.get(accept, Some(KEY)).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], content_type);
        let text = response.text().await.unwrap();
        let exposition = Exposition::parse(format, &text).unwrap_or_else(|e| panic!("{format:?}: {e}\n{text}"));
        check_contract(format, &exposition, &text);
        exposition
    }

    async fn json(&self) -> Json {
        let response = self.get("application/json", Some(KEY)).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }
}

fn check_contract(format: Format, exposition: &Exposition, text: &str) {
    let names: BTreeSet<_> = exposition.families.iter().map(|f| f.name.as_str()).collect();
    for (name, kind, help, label_names) in CONTRACT {
        // OpenMetrics names a counter's family without `_total`, an info
        // metric's without `_info`.
        let (family_name, kind) = match (format, *kind) {
            (Format::OpenMetrics, "counter") => (name.strip_suffix("_total").unwrap(), "counter"),
            (Format::OpenMetrics, _) if name.ends_with("_build_info") => (name.strip_suffix("_info").unwrap(), "info"),
            _ => (*name, *kind),
        };
        let family = exposition
            .family(family_name)
            .unwrap_or_else(|| panic!("{format:?}: no family {family_name} in {names:?}\n{text}"));
        assert_eq!(family.kind, kind, "{format:?} {family_name}");
        assert_eq!(family.help, *help, "{format:?} {family_name}");
        if format == Format::OpenMetrics {
            let unit = ["seconds", "bytes"]
                .into_iter()
                .find(|unit| name.ends_with(&format!("_{unit}")));
            assert_eq!(family.unit.as_deref(), unit, "{family_name}");
        }
        for sample in &family.samples {
            let mut got: Vec<_> = sample
                .labels
                .keys()
                .map(String::as_str)
                .filter(|l| *l != "le")
                .collect();
            got.sort_unstable();
            let mut want = label_names.to_vec();
            want.sort_unstable();
            assert_eq!(got, want, "{format:?} labels of {}", sample.name);
        }
    }
    assert_eq!(
        names.len(),
        CONTRACT.len(),
        "{format:?}: families not in the contract: {names:?}"
    );
}

async fn register(scraper: &Scraper, agent_id: &str) {
    let framework = agent_id.split("://").next().unwrap();
    let response = scraper
        .client
        .post(scraper.url.replace("/metrics", "/agents/register"))
        .header("x-agent-api-key", KEY)
        .json(&json!({"agent_descriptor": {"agent_id": agent_id, "framework": framework}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{}", response.text().await.unwrap());
}

#[tokio::test]
async fn a_scraper_reads_valid_text_whose_counters_follow_the_calls() {
    let bus = Bus::start(&["--api-key", KEY, "--heartbeat-interval", "200ms"]).await;
    let scraper = Scraper {
        client: reqwest::Client::new(),
        url: format!("{}/metrics", bus.url()),
    };

    // A fresh server exposes every family once it has answered a request
    // (request series appear with their first request, here this one), the
    // counters of each message type and refusal reason at zero.
    scraper.json().await;
    let before = scraper.scrape(Format::Prometheus).await;
    scraper.scrape(Format::OpenMetrics).await;
    assert_eq!(
        before.value("agentbus_messages_sent_total", &[("type", "task_request")]),
        Some(0.0)
    );
    assert_eq!(
        before.value("agentbus_auth_denied_total", &[("reason", "missing_credentials")]),
        Some(0.0)
    );
    assert_eq!(
        before.value(
            "agentbus_message_ack_duration_seconds_count",
            &[("type", "task_request")]
        ),
        Some(0.0)
    );
    assert_eq!(
        before.value("agentbus_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        Some(1.0)
    );

    // Two agents over HTTP; a message sent, delivered and acked over gRPC;
    // a lookup that fails; two calls refused.
    register(&scraper, ORCHESTRATOR).await;
    register(&scraper, BACKEND).await;
    let mut messages = MessageServiceClient::with_interceptor(bus.channel().await, ApiKey(Some(KEY.into())));
    let mut inbox = messages
        .receive_messages(pb::ReceiveMessagesRequest {
            agent_id: BACKEND.into(),
            max_in_flight: 0,
        })
        .await
        .unwrap()
        .into_inner();
    messages
        .send_message(pb::SendMessageRequest {
            message: Some(pb::Message {
                message_id: "msg_metrics_1".into(),
                sender: Some(pb::AgentRef {
                    agent_id: ORCHESTRATOR.into(),
                    ..Default::default()
                }),
                recipient: Some(pb::AgentRef {
                    agent_id: BACKEND.into(),
                    ..Default::default()
                }),
                message_type: pb::MessageType::TaskRequest as i32,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let delivery = loop {
        let item = timeout(Duration::from_secs(5), inbox.message()).await.unwrap();
        if let Some(Kind::Delivery(delivery)) = item.unwrap().unwrap().kind {
            break delivery;
        }
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    messages
        .ack_message(pb::AckMessageRequest {
            agent_id: BACKEND.into(),
            message_id: delivery.message.unwrap().message_id,
        })
        .await
        .unwrap();
    let mut sessions = bus.sessions_with_key(Some(KEY)).await;
    let missing = sessions
        .get_session(pb::GetSessionRequest {
            session_id: "sess_nowhere".into(),
        })
        .await;
    assert_eq!(missing.unwrap_err().code(), tonic::Code::NotFound);
    assert_eq!(scraper.get("text/plain", None).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        scraper.get("text/plain", Some("wrong-key")).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let after = scraper.scrape(Format::Prometheus).await;
    let open = scraper.scrape(Format::OpenMetrics).await;
    for scrape in [&after, &open] {
        let grown = |name: &str, labels: &[(&str, &str)]| {
            scrape.value(name, labels).unwrap_or(0.0) - before.value(name, labels).unwrap_or(0.0)
        };
        assert_eq!(grown("agentbus_messages_sent_total", &[("type", "task_request")]), 1.0);
        assert_eq!(grown("agentbus_message_deliveries_total", &[]), 1.0);
        assert_eq!(grown("agentbus_messages_acked_total", &[]), 1.0);
        assert_eq!(
            grown(
                "agentbus_message_ack_duration_seconds_count",
                &[("type", "task_request")]
            ),
            1.0
        );
        assert!(grown("agentbus_message_ack_duration_seconds_sum", &[("type", "task_request")]) >= 0.005);
        assert_eq!(
            grown("agentbus_auth_denied_total", &[("reason", "missing_credentials")]),
            1.0
        );
        assert_eq!(
            grown("agentbus_auth_denied_total", &[("reason", "invalid_credentials")]),
            1.0
        );
        assert_eq!(scrape.value("agentbus_registered_agents", &[]), Some(2.0));
        for (route, code) in [(SEND, "OK"), (GET_SESSION, "NOT_FOUND")] {
            let labels = [("transport", "grpc"), ("route", route), ("code", code)];
            assert_eq!(scrape.value("agentbus_requests_total", &labels), Some(1.0), "{route}");
            let labels = [("transport", "grpc"), ("route", route)];
            assert_eq!(
                scrape.value("agentbus_request_duration_seconds_count", &labels),
                Some(1.0),
                "{route}"
            );
        }
        let register = [
            ("transport", "http"),
            ("route", "POST /agents/register"),
            ("code", "OK"),
        ];
        assert_eq!(scrape.value("agentbus_requests_total", &register), Some(2.0));
        let refused = [
            ("transport", "http"),
            ("route", "GET /metrics"),
            ("code", "UNAUTHENTICATED"),
        ];
        assert_eq!(scrape.value("agentbus_requests_total", &refused), Some(2.0));
        // Streams are counted when they end, never timed.
        assert_eq!(
            scrape.sum("agentbus_request_duration_seconds_count", &[("route", RECEIVE)]),
            0.0
        );
    }

    // Counters only grow, and the scrapes themselves are requests.
    for family in after.families.iter().filter(|f| f.kind == "counter") {
        for sample in &family.samples {
            let labels: Vec<_> = sample.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let earlier = before.value(&sample.name, &labels).unwrap_or(0.0);
            assert!(sample.value >= earlier, "{} {labels:?} fell", sample.name);
        }
    }
    assert!(after.sum("agentbus_requests_total", &[]) > before.sum("agentbus_requests_total", &[]) + 6.0);
    assert!(after.value("agentbus_uptime_seconds", &[]) > before.value("agentbus_uptime_seconds", &[]));

    // The prototype's JSON counts the same calls.
    let json = scraper.json().await;
    assert_eq!(json["total_messages"], 1);
    assert_eq!(json["registered_agents"], 2);
    assert_eq!(json["messages"]["acked"], 1);
    assert!(json["average_response_time"].as_f64().unwrap() >= 5.0, "{json}");
    let total = json["requests"]["total"].as_f64().unwrap();
    assert!(total >= open.sum("agentbus_requests_total", &[]), "{json}");
    assert!(json["requests"]["errors"].as_u64().unwrap() >= 3, "{json}");
    drop(inbox);
}

/// The reader above is only worth its checks if it refuses bad text.
#[test]
fn the_reader_refuses_what_a_scraper_would() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n";
    assert!(Exposition::parse(Format::Prometheus, good).is_ok());
    for (format, bad) in [
        (Format::Prometheus, "# TYPE a_total counter\na_total 1\n"),
        (Format::Prometheus, "# HELP a A.\n# TYPE a counter\na_total 1\n"),
        (
            Format::Prometheus,
            "# HELP a_total A.\n# TYPE a_total counter\na_total 1\na_total 2\n",
        ),
        (
            Format::Prometheus,
            "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1} 1\n",
        ),
        (
            Format::Prometheus,
            "# HELP a_total A.\n# TYPE a_total counter\na_total -1\n",
        ),
        (
            Format::Prometheus,
            "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        ),
        (
            Format::Prometheus,
            "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
        ),
        (Format::OpenMetrics, "# HELP a A.\n# TYPE a counter\na_total 1\n"),
        (
            Format::OpenMetrics,
            "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n# EOF\n",
        ),
        (
            Format::OpenMetrics,
            "# HELP a A.\n# TYPE a gauge\n# UNIT a seconds\na 1\n# EOF\n",
        ),
    ] {
        assert!(Exposition::parse(format, bad).is_err(), "{format:?} accepted:\n{bad}");
    }
}
