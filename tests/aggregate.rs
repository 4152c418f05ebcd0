//! Task results and their aggregation, black box: the tutorial session with
//! two implementers that disagree, a reviewer as specialist, estimates
//! weighted by confidence and a manual pick, over gRPC and HTTP.

mod common;

use agentbus::pb;
use common::{Bus, assert_status, tutorial_session};
use serde_json::{Value as Json, json};
use tokio_stream::StreamExt;
use tonic::Code;

const ORC: &str = "claude-code://orchestrator";
const BACKEND: &str = "opencode://backend";
const FRONTEND: &str = "codex://frontend";
const QA: &str = "claude-code://qa";
const SESSION: &str = "sess_agg";

fn value(json: Json) -> prost_types::Value {
    let object = common::object(json!({ "v": json }));
    object.fields.get("v").cloned().unwrap()
}

fn message(id: &str, from: &str, to: &str, kind: pb::MessageType, payload: Json) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        message: Some(pb::Message {
            message_id: id.into(),
            sender: Some(pb::AgentRef {
                agent_id: from.into(),
                session_id: SESSION.into(),
                ..Default::default()
            }),
            recipient: Some(pb::AgentRef {
                agent_id: to.into(),
                ..Default::default()
            }),
            message_type: kind as i32,
            payload: Some(value(payload)),
            task_id: id.trim_end_matches("-reply").into(),
            ..Default::default()
        }),
    }
}

struct Team {
    bus: Bus,
    messages: pb::message_service_client::MessageServiceClient<tonic::transport::Channel>,
    sessions: pb::session_service_client::SessionServiceClient<tonic::transport::Channel>,
}

impl Team {
    async fn start() -> Self {
        let bus = Bus::start(&["--store", "memory"]).await;
        let mut agents = bus.agents().await;
        for agent in [ORC, BACKEND, FRONTEND, QA] {
            let descriptor = pb::AgentDescriptor {
                agent_id: agent.into(),
                ..Default::default()
            };
            agents
                .register_agent(pb::RegisterAgentRequest {
                    agent: Some(descriptor),
                    update: false,
                })
                .await
                .unwrap();
        }
        let mut sessions = pb::session_service_client::SessionServiceClient::new(bus.channel().await);
        sessions.create_session(tutorial_session(SESSION)).await.unwrap();
        let messages = bus.messages().await;
        Self {
            bus,
            messages,
            sessions,
        }
    }

    /// Delegates task `id` to `agent`; with `answer`, the agent responds.
    async fn task(&mut self, id: &str, agent: &str, answer: Option<Json>) {
        let request = message(id, ORC, agent, pb::MessageType::TaskRequest, json!({"task": id}));
        self.messages.send_message(request).await.unwrap();
        if let Some(answer) = answer {
            let reply = message(
                &format!("{id}-reply"),
                agent,
                ORC,
                pb::MessageType::TaskResponse,
                answer,
            );
            self.messages.send_message(reply).await.unwrap();
        }
    }

    async fn aggregate(&mut self, request: pb::AggregateResultsRequest) -> Result<pb::Aggregation, tonic::Status> {
        let request = pb::AggregateResultsRequest {
            session_id: SESSION.into(),
            ..request
        };
        let response = self.sessions.aggregate_results(request).await?.into_inner();
        Ok(response.aggregation.unwrap())
    }
}

fn by_step(step: &str, strategy: pb::AggregationStrategy) -> pb::AggregateResultsRequest {
    pb::AggregateResultsRequest {
        step: step.into(),
        strategy: strategy as i32,
        ..Default::default()
    }
}

fn result(aggregation: &pb::Aggregation) -> Json {
    common::json(&prost_types::Struct {
        fields: [("v".to_owned(), aggregation.result.clone().unwrap())].into(),
    })["v"]
        .clone()
}

#[tokio::test]
async fn implementers_disagree_a_specialist_decides_estimates_are_weighted() {
    let mut team = Team::start().await;
    use pb::AggregationStrategy as S;
    team.task(
        "design-api",
        BACKEND,
        Some(json!({"result": {"framework": "axum"}, "confidence": 0.8, "approach": "rest"})),
    )
    .await;
    team.task(
        "design-ui",
        FRONTEND,
        Some(json!({"result": {"framework": "actix"}, "confidence": 0.6, "approach": "rest"})),
    )
    .await;
    team.task(
        "design-review",
        QA,
        Some(json!({"result": {"framework": "actix"}, "confidence": 0.9, "approach": "grpc"})),
    )
    .await;

    // Consensus: two of three agree; two disagreeing pairs and two approaches.
    let consensus = team.aggregate(by_step("design", S::Consensus)).await.unwrap();
    assert_eq!(result(&consensus), json!({"framework": "actix"}));
    assert_eq!(consensus.contributing_task_ids, ["design-ui", "design-review"]);
    let kinds: Vec<i32> = consensus.conflicts.iter().map(|c| c.kind).collect();
    let disagreement = pb::ConflictKind::ResultDisagreement as i32;
    assert_eq!(
        kinds,
        [disagreement, disagreement, pb::ConflictKind::ApproachDifference as i32]
    );
    // 2/3 agree, less 0.1 for each of 3 conflicts, to six decimals.
    assert_eq!(consensus.confidence, 0.366667);
    assert_eq!(consensus.candidates.len(), 3);

    // The reviewer is the specialist.
    let specialist = pb::AggregateResultsRequest {
        specialist: QA.into(),
        ..by_step("design", S::SpecialistPriority)
    };
    let decided = team.aggregate(specialist).await.unwrap();
    assert_eq!(
        (result(&decided), decided.confidence),
        (json!({"framework": "actix"}), 0.9)
    );

    // Estimates in the next step, weighted by confidence: (8 x 0.9 + 4 x 0.3) / 1.2 = 7.
    team.sessions
        .advance_workflow(pb::AdvanceWorkflowRequest {
            session_id: SESSION.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    team.task("estimate-api", BACKEND, Some(json!({"result": 8, "confidence": 0.9})))
        .await;
    team.task("estimate-ui", FRONTEND, Some(json!({"result": 4, "confidence": 0.3})))
        .await;
    let weighted = team
        .aggregate(by_step("implementation", S::ConfidenceWeighted))
        .await
        .unwrap();
    assert!((result(&weighted).as_f64().unwrap() - 7.0).abs() < 1e-9, "{weighted:?}");
    assert_status(
        team.aggregate(by_step("design", S::ConfidenceWeighted)).await,
        Code::InvalidArgument,
        "task design-api",
    );

    // A task still running is listed, or refused with require_complete.
    team.task("estimate-review", QA, None).await;
    let partial = team.aggregate(by_step("implementation", S::Consensus)).await.unwrap();
    assert_eq!(partial.missing_task_ids, ["estimate-review"]);
    let strict = pb::AggregateResultsRequest {
        require_complete: true,
        ..by_step("implementation", S::Consensus)
    };
    assert_status(
        team.aggregate(strict).await,
        Code::FailedPrecondition,
        "estimate-review",
    );

    // The tasks carry their typed results and durations.
    let session = team
        .sessions
        .get_session(pb::GetSessionRequest {
            session_id: SESSION.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    let api = session.tasks.iter().find(|t| t.task_id == "design-api").unwrap();
    assert_eq!(
        (api.confidence, api.approach.as_str(), api.success),
        (Some(0.8), "rest", true)
    );
    assert_eq!(api.step, "design");
    assert!(api.duration.is_some());
    assert_eq!(session.aggregations.len(), 4);

    // Bad task results are refused when sent.
    let bad = message(
        "bad-reply",
        BACKEND,
        ORC,
        pb::MessageType::TaskResponse,
        json!({"result": 1, "confidence": 2}),
    );
    assert_status(
        team.messages.send_message(bad).await,
        Code::InvalidArgument,
        "payload.confidence",
    );

    // Each aggregation is an event.
    let mut watch = team
        .sessions
        .watch_sessions(pb::WatchSessionsRequest {
            after_sequence: Some(0),
            event_types: vec![pb::SessionEventType::ResultsAggregated as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut aggregated = 0;
    while aggregated < 4 {
        if let Some(pb::watch_sessions_response::Kind::Event(_)) = watch.next().await.unwrap().unwrap().kind {
            aggregated += 1;
        }
    }
}

#[tokio::test]
async fn manual_aggregation_over_http_is_resolved_by_the_orchestrator() {
    let mut team = Team::start().await;
    team.task(
        "design-api",
        BACKEND,
        Some(json!({"result": "axum", "approach": "rest"})),
    )
    .await;
    team.task(
        "design-ui",
        FRONTEND,
        Some(json!({"result": "actix", "approach": "rest"})),
    )
    .await;
    let http = reqwest::Client::new();
    let base = format!("{}/sessions/{SESSION}", team.bus.url());
    let manual: Json = http
        .post(format!("{base}/aggregate"))
        .json(&json!({"step": "design", "strategy": "manual"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(manual["success"], true, "{manual}");
    let aggregation = &manual["aggregation"];
    assert_eq!(aggregation["strategy"], "manual");
    assert_eq!(aggregation["result"], Json::Null, "{aggregation}");
    assert_eq!(aggregation["candidates"].as_array().unwrap().len(), 2);
    assert_eq!(aggregation["conflicts"][0]["kind"], "result_disagreement");
    let id = aggregation["aggregation_id"].as_str().unwrap();

    let resolve = |chosen: &str| {
        http.post(format!("{base}/aggregations/{id}/resolve"))
            .json(&json!({"chosen_task_id": chosen, "note": "matches our stack"}))
            .send()
    };
    let wrong = resolve("design-nope").await.unwrap();
    assert_eq!(wrong.status(), reqwest::StatusCode::BAD_REQUEST);
    let resolved: Json = resolve("design-api").await.unwrap().json().await.unwrap();
    assert_eq!(resolved["aggregation"]["result"], "axum", "{resolved}");
    assert_eq!(resolved["aggregation"]["resolution"]["resolved_by"], ORC);
    let unknown = http
        .post(format!("{base}/aggregations/agg_99/resolve"))
        .json(&json!({"chosen_task_id": "design-api"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), reqwest::StatusCode::NOT_FOUND);
    let bad_strategy = http
        .post(format!("{base}/aggregate"))
        .json(&json!({"strategy": "majority"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_strategy.status(), reqwest::StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_ended_session_has_an_executive_summary_on_every_transport() {
    let mut team = Team::start().await;
    use pb::AggregationStrategy as S;
    team.task(
        "design-api",
        BACKEND,
        Some(json!({"result": "axum", "approach": "rest"})),
    )
    .await;
    team.task(
        "design-ui",
        FRONTEND,
        Some(json!({"result": "actix", "approach": "rest"})),
    )
    .await;
    team.aggregate(by_step("design", S::Manual)).await.unwrap();
    let failed = message(
        "design-review-reply",
        QA,
        ORC,
        pb::MessageType::Error,
        json!({"error": "no access"}),
    );
    team.task("design-review", QA, None).await;
    team.messages.send_message(failed).await.unwrap();

    let summary = |session_id: &str| pb::GetSessionSummaryRequest {
        session_id: session_id.into(),
    };
    assert_status(
        team.sessions.get_session_summary(summary(SESSION)).await,
        Code::FailedPrecondition,
        "made when it ends",
    );
    let completed = team
        .sessions
        .complete_session(pb::CompleteSessionRequest {
            session_id: SESSION.into(),
            summary: "Design settled; review blocked".into(),
            artifacts: vec!["docs/design.md".into()],
            expected_version: None,
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    let carried = completed.executive_summary.unwrap();
    assert_eq!(carried.outcome, pb::SessionState::Completed as i32);
    assert_eq!(carried.text, "Design settled; review blocked");
    let design = &carried.steps[0];
    assert_eq!((design.name.as_str(), design.tasks.len()), ("design", 3));
    assert_eq!(design.agents[0], ORC, "required agents first");
    // The manual aggregation was never resolved: its conflict is open.
    assert_eq!(carried.unresolved_conflicts.len(), 1);
    let totals = carried.totals.unwrap();
    assert_eq!((totals.tasks_completed, totals.tasks_failed), (2, 1));
    assert_eq!(totals.messages, 6);
    assert_eq!(totals.contributions.len(), 3);

    let answer = team
        .sessions
        .get_session_summary(summary(SESSION))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.summary.as_ref().unwrap().text, carried.text);
    assert!(
        answer.markdown.starts_with("# Session sess_agg: completed"),
        "{}",
        answer.markdown
    );

    let url = format!("{}/sessions/{SESSION}/summary", team.bus.url());
    let http = reqwest::Client::new();
    let json_summary: Json = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(json_summary["summary"]["totals"]["tasks_failed"], 1, "{json_summary}");
    let markdown = http.get(&url).header("accept", "text/markdown").send().await.unwrap();
    assert!(
        markdown.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/markdown")
    );
    let text = markdown.text().await.unwrap();
    assert!(
        text.contains("## design") && text.contains("design-review") && text.contains("docs/design.md"),
        "{text}"
    );
    assert!(text.contains("## Unresolved conflicts"), "{text}");

    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_agentbus"))
        .args(["sessions", "summary", SESSION, "--addr", &team.bus.url()])
        .output()
        .unwrap();
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    assert_eq!(
        String::from_utf8_lossy(&cli.stdout).trim_end(),
        answer.markdown.trim_end()
    );

    // Terminated sessions get theirs too, marked as such.
    team.sessions
        .create_session(pb::CreateSessionRequest {
            session_id: "sess_stop".into(),
            orchestrator: ORC.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let stopped = team
        .sessions
        .terminate_session(pb::TerminateSessionRequest {
            session_id: "sess_stop".into(),
            reason: "timeout".into(),
            details: "frontend offline".into(),
            expected_version: None,
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap()
        .executive_summary
        .unwrap();
    assert_eq!(stopped.outcome, pb::SessionState::Terminated as i32);
    assert_eq!(stopped.text, "timeout: frontend offline");
}
