//! SessionService over real gRPC: the tutorial flow, every RPC and its errors.

mod common;

use agentbus::pb;
use common::{Bus, assert_status, json, object, spec, step, tutorial_session};
use serde_json::json;
use tonic::Code;

fn statuses(session: &pb::Session) -> Vec<(String, String, pb::ParticipantStatus)> {
    session
        .participants
        .iter()
        .map(|p| (p.agent_id.clone(), p.role.clone(), p.status()))
        .collect()
}

#[tokio::test]
async fn tutorial_flow_from_create_to_complete() {
    let bus = Bus::start(&[]).await;
    let mut client = bus.sessions().await;

    let session = client
        .create_session(tutorial_session("sess_notifications_1"))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(session.session_id, "sess_notifications_1");
    assert_eq!(session.state(), pb::SessionState::Active);
    assert_eq!(session.version, 1);
    let first = &session.participants[0];
    assert_eq!(
        (first.agent_id.as_str(), first.role.as_str(), first.framework.as_str()),
        ("claude-code://orchestrator", "orchestrator", "claude-code")
    );
    let qa = session
        .participants
        .iter()
        .find(|p| p.agent_id == "claude-code://qa")
        .unwrap();
    assert_eq!(qa.framework, "claude-code");
    assert!(
        session
            .participants
            .iter()
            .all(|p| p.status() == pb::ParticipantStatus::Active && p.join_time.is_some())
    );
    let workflow = session.workflow.clone().unwrap();
    assert_eq!(workflow.current_step, "design");
    assert_eq!(workflow.pending_steps, ["implementation", "review"]);
    assert!(workflow.completed_steps.is_empty());
    assert_eq!(
        workflow.steps[1].required_agents,
        ["opencode://backend", "codex://frontend"]
    );
    assert_eq!(
        json(session.shared_context.as_ref().unwrap())["project"],
        "feature/notifications"
    );
    assert!(session.created_at.is_some() && session.updated_at.is_some() && session.ended_at.is_none());

    let added = client
        .add_participant(pb::AddParticipantRequest {
            session_id: session.session_id.clone(),
            participant: Some(pb::ParticipantSpec {
                framework: "opencode".into(),
                ..spec("opencode://security", "reviewer")
            }),
            expected_version: None,
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(added.version, 2);
    assert_eq!(added.participants.len(), 5);

    let updated = client
        .update_workflow(pb::UpdateWorkflowRequest {
            session_id: session.session_id.clone(),
            current_step: "implementation".into(),
            completed_steps: vec!["design".into()],
            pending_steps: vec!["review".into()],
            expected_version: None,
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    let workflow = updated.workflow.unwrap();
    assert_eq!(
        (
            workflow.current_step.as_str(),
            workflow.completed_steps.as_slice(),
            workflow.pending_steps.as_slice()
        ),
        (
            "implementation",
            &["design".to_string()][..],
            &["review".to_string()][..]
        )
    );

    let merged = client
        .update_shared_context(pb::UpdateSharedContextRequest {
            session_id: session.session_id.clone(),
            context: Some(object(
                json!({"branch": "feature/notifications", "latestCommit": "abc123"}),
            )),
            mode: pb::ContextUpdateMode::Merge as i32,
            expected_version: Some(3),
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    let context = json(merged.shared_context.as_ref().unwrap());
    assert_eq!(context["project"], "feature/notifications");
    assert_eq!(context["latestCommit"], "abc123");
    assert_eq!(merged.version, 4);

    let completed = client
        .complete_session(pb::CompleteSessionRequest {
            session_id: session.session_id.clone(),
            summary: "All tasks completed successfully".into(),
            artifacts: vec!["s3://artifacts/build.zip".into()],
            expected_version: None,
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(completed.state(), pb::SessionState::Completed);
    assert_eq!(completed.summary, "All tasks completed successfully");
    assert_eq!(completed.artifacts, ["s3://artifacts/build.zip"]);
    assert!(completed.ended_at.is_some());

    let fetched = client
        .get_session(pb::GetSessionRequest {
            session_id: session.session_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(fetched, completed);
}

#[tokio::test]
async fn server_generates_ids_and_rejects_taken_ones() {
    let bus = Bus::start(&["--store", "memory"]).await;
    let mut client = bus.sessions().await;
    let mut request = tutorial_session("");
    let a = client
        .create_session(request.clone())
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    let b = client
        .create_session(request.clone())
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert!(
        a.session_id.starts_with("sess_") && a.session_id.len() == 5 + 36,
        "{}",
        a.session_id
    );
    assert_ne!(a.session_id, b.session_id);
    request.session_id = a.session_id.clone();
    assert_status(client.create_session(request).await, Code::AlreadyExists, &a.session_id);
}

#[tokio::test]
async fn create_validates_every_field() {
    let bus = Bus::start(&["--store", "memory", "--max-participants", "4"]).await;
    let mut client = bus.sessions().await;
    let base = tutorial_session("sess_valid");
    let cases: Vec<(pb::CreateSessionRequest, Code, &str)> = vec![
        (
            pb::CreateSessionRequest {
                session_id: "bad id!".into(),
                ..base.clone()
            },
            Code::InvalidArgument,
            "session_id",
        ),
        (
            pb::CreateSessionRequest {
                session_id: "x".repeat(129),
                ..base.clone()
            },
            Code::InvalidArgument,
            "session_id",
        ),
        (
            pb::CreateSessionRequest {
                orchestrator: String::new(),
                ..base.clone()
            },
            Code::InvalidArgument,
            "orchestrator",
        ),
        (
            pb::CreateSessionRequest {
                orchestrator: "orchestrator".into(),
                ..base.clone()
            },
            Code::InvalidArgument,
            "orchestrator",
        ),
        (
            pb::CreateSessionRequest {
                participants: vec![spec("opencode://backend", "x"), spec("nope", "x")],
                ..base.clone()
            },
            Code::InvalidArgument,
            "participants[1].agent_id",
        ),
        (
            pb::CreateSessionRequest {
                participants: vec![pb::ParticipantSpec {
                    framework: "codex".into(),
                    ..spec("opencode://backend", "x")
                }],
                ..base.clone()
            },
            Code::InvalidArgument,
            "participants[0].framework",
        ),
        (
            pb::CreateSessionRequest {
                participants: vec![spec("opencode://a", "x"), spec("opencode://a", "y")],
                ..base.clone()
            },
            Code::InvalidArgument,
            "participants[1].agent_id",
        ),
        (
            pb::CreateSessionRequest {
                participants: vec![spec("claude-code://orchestrator", "x")],
                ..base.clone()
            },
            Code::InvalidArgument,
            "participants[0].agent_id",
        ),
        (
            pb::CreateSessionRequest {
                participants: (0..4).map(|i| spec(&format!("opencode://p{i}"), "x")).collect(),
                ..base.clone()
            },
            Code::ResourceExhausted,
            "at most 4",
        ),
        (
            pb::CreateSessionRequest {
                steps: vec![step("a"), step("a")],
                ..base.clone()
            },
            Code::InvalidArgument,
            "steps[1].name",
        ),
        (
            pb::CreateSessionRequest {
                steps: vec![step("")],
                ..base.clone()
            },
            Code::InvalidArgument,
            "steps[0].name",
        ),
        (
            pb::CreateSessionRequest {
                steps: vec![pb::WorkflowStep {
                    dependencies: vec!["ghost".into()],
                    ..step("a")
                }],
                ..base.clone()
            },
            Code::InvalidArgument,
            "steps[0].dependencies",
        ),
        (
            pb::CreateSessionRequest {
                steps: vec![
                    pb::WorkflowStep {
                        dependencies: vec!["b".into()],
                        ..step("a")
                    },
                    pb::WorkflowStep {
                        dependencies: vec!["a".into()],
                        ..step("b")
                    },
                ],
                ..base.clone()
            },
            Code::InvalidArgument,
            "cycle",
        ),
        (
            pb::CreateSessionRequest {
                steps: vec![pb::WorkflowStep {
                    required_agents: vec!["qa".into()],
                    ..step("a")
                }],
                ..base.clone()
            },
            Code::InvalidArgument,
            "steps[0].required_agents[0]",
        ),
        (
            pb::CreateSessionRequest {
                steps: vec![pb::WorkflowStep {
                    estimated_duration: Some(prost_types::Duration { seconds: -5, nanos: 0 }),
                    ..step("a")
                }],
                ..base.clone()
            },
            Code::InvalidArgument,
            "steps[0].estimated_duration",
        ),
    ];
    for (request, code, needle) in cases {
        assert_status(client.create_session(request).await, code, needle);
    }
    // Nothing was created by the failed calls.
    let listed = client
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.sessions.is_empty());
}

#[tokio::test]
async fn unknown_sessions_are_not_found_and_bad_ids_invalid() {
    let bus = Bus::start(&["--store", "memory"]).await;
    let mut client = bus.sessions().await;
    assert_status(
        client
            .get_session(pb::GetSessionRequest {
                session_id: "sess_missing".into(),
            })
            .await,
        Code::NotFound,
        "sess_missing",
    );
    assert_status(
        client
            .get_session(pb::GetSessionRequest {
                session_id: String::new(),
            })
            .await,
        Code::InvalidArgument,
        "session_id",
    );
    let missing = "sess_missing".to_string();
    assert_status(
        client
            .add_participant(pb::AddParticipantRequest {
                session_id: missing.clone(),
                participant: Some(spec("a://b", "r")),
                expected_version: None,
            })
            .await,
        Code::NotFound,
        "not found",
    );
    assert_status(
        client
            .terminate_session(pb::TerminateSessionRequest {
                session_id: missing.clone(),
                reason: "x".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "not found",
    );
    assert_status(
        client
            .advance_workflow(pb::AdvanceWorkflowRequest {
                session_id: missing,
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "not found",
    );
}

#[tokio::test]
async fn participants_join_leave_and_rejoin_within_the_limit() {
    let bus = Bus::start(&["--store", "memory", "--max-participants", "3"]).await;
    let mut client = bus.sessions().await;
    let id = "sess_people".to_string();
    client
        .create_session(pb::CreateSessionRequest {
            session_id: id.clone(),
            orchestrator: "claude-code://lead".into(),
            participants: vec![spec("opencode://backend", "implementer")],
            ..Default::default()
        })
        .await
        .unwrap();
    let add = |agent: &str| pb::AddParticipantRequest {
        session_id: id.clone(),
        participant: Some(spec(agent, "")),
        expected_version: None,
    };

    let session = client
        .add_participant(add("codex://frontend"))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(session.participants[2].role, "participant", "empty role defaults");
    assert_status(
        client.add_participant(add("codex://frontend")).await,
        Code::AlreadyExists,
        "already an active participant",
    );
    assert_status(
        client.add_participant(add("codex://extra")).await,
        Code::ResourceExhausted,
        "maximum of 3",
    );
    assert_status(
        client
            .add_participant(pb::AddParticipantRequest {
                participant: None,
                ..add("x://y")
            })
            .await,
        Code::InvalidArgument,
        "participant",
    );
    assert_status(
        client.add_participant(add("no-scheme")).await,
        Code::InvalidArgument,
        "participant.agent_id",
    );

    let remove = |agent: &str| pb::RemoveParticipantRequest {
        session_id: id.clone(),
        agent_id: agent.into(),
        expected_version: None,
    };
    let session = client
        .remove_participant(remove("codex://frontend"))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    let left = session
        .participants
        .iter()
        .find(|p| p.agent_id == "codex://frontend")
        .unwrap();
    assert_eq!(left.status(), pb::ParticipantStatus::Left);
    assert!(left.leave_time.is_some());
    assert_eq!(session.participants.len(), 3, "the record is kept");
    assert_status(
        client.remove_participant(remove("codex://frontend")).await,
        Code::FailedPrecondition,
        "already left",
    );
    assert_status(
        client.remove_participant(remove("codex://stranger")).await,
        Code::NotFound,
        "not a participant",
    );
    assert_status(
        client.remove_participant(remove("claude-code://lead")).await,
        Code::FailedPrecondition,
        "orchestrator",
    );
    assert_status(
        client.remove_participant(remove("bad")).await,
        Code::InvalidArgument,
        "agent_id",
    );

    // Only active participants count: a slot is free again.
    let session = client
        .add_participant(add("codex://extra"))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(session.participants.len(), 4);
    // Rejoining reuses the record.
    assert_status(
        client.add_participant(add("codex://frontend")).await,
        Code::ResourceExhausted,
        "maximum",
    );
    client.remove_participant(remove("codex://extra")).await.unwrap();
    let session = client
        .add_participant(add("codex://frontend"))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    let back = session
        .participants
        .iter()
        .find(|p| p.agent_id == "codex://frontend")
        .unwrap();
    assert_eq!((back.status(), back.leave_time), (pb::ParticipantStatus::Active, None));
    assert_eq!(session.participants.len(), 4);
}

#[tokio::test]
async fn workflow_updates_are_checked_against_defined_steps() {
    let bus = Bus::start(&["--store", "memory"]).await;
    let mut client = bus.sessions().await;
    let id = "sess_flow".to_string();
    client.create_session(tutorial_session(&id)).await.unwrap();
    let update = |current: &str, completed: &[&str], pending: &[&str]| pb::UpdateWorkflowRequest {
        session_id: id.clone(),
        current_step: current.into(),
        completed_steps: completed.iter().map(|s| s.to_string()).collect(),
        pending_steps: pending.iter().map(|s| s.to_string()).collect(),
        expected_version: None,
    };
    assert_status(
        client.update_workflow(update("deploy", &["design"], &[])).await,
        Code::InvalidArgument,
        "current_step",
    );
    assert_status(
        client.update_workflow(update("review", &["design", "nope"], &[])).await,
        Code::InvalidArgument,
        "completed_steps[1]",
    );
    assert_status(
        client.update_workflow(update("review", &["review"], &[])).await,
        Code::InvalidArgument,
        "more than once",
    );
    assert_status(
        client.update_workflow(update("", &[], &[""])).await,
        Code::InvalidArgument,
        "pending_steps[0]",
    );
    let done = client
        .update_workflow(update("", &["design", "implementation", "review"], &[]))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(done.workflow.unwrap().current_step, "");

    // Without defined steps any names go.
    client
        .create_session(pb::CreateSessionRequest {
            session_id: "sess_free".into(),
            orchestrator: "a://b".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    client
        .update_workflow(pb::UpdateWorkflowRequest {
            session_id: "sess_free".into(),
            current_step: "anything".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn advance_walks_the_steps_and_respects_dependencies() {
    let bus = Bus::start(&["--store", "memory"]).await;
    let mut client = bus.sessions().await;
    let id = "sess_advance".to_string();
    client
        .create_session(pb::CreateSessionRequest {
            session_id: id.clone(),
            orchestrator: "claude-code://orchestrator".into(),
            steps: vec![
                step("design"),
                step("docs"),
                pb::WorkflowStep {
                    dependencies: vec!["docs".into()],
                    ..step("release")
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    let advance = |next: &str| pb::AdvanceWorkflowRequest {
        session_id: id.clone(),
        next_step: next.into(),
        expected_version: None,
    };
    // release depends on docs, which is neither completed nor current.
    assert_status(
        client.advance_workflow(advance("release")).await,
        Code::FailedPrecondition,
        "depends on docs",
    );
    assert_status(
        client.advance_workflow(advance("ghost")).await,
        Code::InvalidArgument,
        "next_step",
    );
    assert_status(
        client.advance_workflow(advance("design")).await,
        Code::FailedPrecondition,
        "not pending",
    );

    let s = client
        .advance_workflow(advance(""))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    let w = s.workflow.unwrap();
    assert_eq!(
        (
            w.current_step.as_str(),
            w.completed_steps.clone(),
            w.pending_steps.clone()
        ),
        ("docs", vec!["design".to_string()], vec!["release".to_string()])
    );
    let w = client
        .advance_workflow(advance("release"))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap()
        .workflow
        .unwrap();
    assert_eq!(
        (w.current_step.as_str(), w.completed_steps.len(), w.pending_steps.len()),
        ("release", 2, 0)
    );
    // Advancing past the last step completes it and leaves no current step.
    let s = client
        .advance_workflow(advance(""))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(s.state(), pb::SessionState::Active, "the session stays active");
    let w = s.workflow.unwrap();
    assert_eq!(
        (w.current_step.as_str(), w.completed_steps.as_slice()),
        ("", &["design".to_string(), "docs".into(), "release".into()][..])
    );
    assert_status(
        client.advance_workflow(advance("")).await,
        Code::FailedPrecondition,
        "no current or pending step",
    );
}

#[tokio::test]
async fn shared_context_replace_merge_and_expected_version() {
    let bus = Bus::start(&["--store", "memory", "--max-context-bytes", "200"]).await;
    let mut client = bus.sessions().await;
    let id = "sess_ctx".to_string();
    let created = client
        .create_session(tutorial_session(&id))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    let update = |context: serde_json::Value, mode: pb::ContextUpdateMode, expected: Option<u64>| {
        pb::UpdateSharedContextRequest {
            session_id: id.clone(),
            context: Some(object(context)),
            mode: mode as i32,
            expected_version: expected,
        }
    };

    let s = client
        .update_shared_context(update(
            json!({"a": {"b": 1, "c": 2}, "keep": true}),
            pb::ContextUpdateMode::Unspecified,
            Some(created.version),
        ))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(
        json(s.shared_context.as_ref().unwrap()),
        json!({"a": {"b": 1.0, "c": 2.0}, "keep": true}),
        "replace drops old keys"
    );

    let s = client
        .update_shared_context(update(
            json!({"a": {"b": null, "d": "x"}, "new": [1]}),
            pb::ContextUpdateMode::Merge,
            None,
        ))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(
        json(s.shared_context.as_ref().unwrap()),
        json!({"a": {"c": 2.0, "d": "x"}, "keep": true, "new": [1.0]})
    );

    // A stale expected_version is ABORTED and changes nothing.
    assert_status(
        client
            .update_shared_context(update(
                json!({"lost": true}),
                pb::ContextUpdateMode::Merge,
                Some(s.version - 1),
            ))
            .await,
        Code::Aborted,
        &format!("at version {}", s.version),
    );
    assert_status(
        client
            .update_shared_context(update(
                json!({"big": "x".repeat(300)}),
                pb::ContextUpdateMode::Merge,
                None,
            ))
            .await,
        Code::ResourceExhausted,
        "limit is 200 bytes",
    );
    assert_status(
        client
            .update_shared_context(pb::UpdateSharedContextRequest {
                context: None,
                ..update(json!({}), pb::ContextUpdateMode::Merge, None)
            })
            .await,
        Code::InvalidArgument,
        "context",
    );
    assert_status(
        client
            .update_shared_context(pb::UpdateSharedContextRequest {
                mode: 9,
                ..update(json!({}), pb::ContextUpdateMode::Merge, None)
            })
            .await,
        Code::InvalidArgument,
        "mode",
    );
    let after = client
        .get_session(pb::GetSessionRequest { session_id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(after.version, s.version);
    assert_eq!(after.shared_context, s.shared_context);
}

#[tokio::test]
async fn expected_version_guards_every_mutation() {
    let bus = Bus::start(&["--store", "memory"]).await;
    let mut client = bus.sessions().await;
    let id = "sess_guarded".to_string();
    client.create_session(tutorial_session(&id)).await.unwrap();
    assert_status(
        client
            .add_participant(pb::AddParticipantRequest {
                session_id: id.clone(),
                participant: Some(spec("a://b", "r")),
                expected_version: Some(7),
            })
            .await,
        Code::Aborted,
        "not the expected 7",
    );
    assert_status(
        client
            .complete_session(pb::CompleteSessionRequest {
                session_id: id.clone(),
                expected_version: Some(2),
                ..Default::default()
            })
            .await,
        Code::Aborted,
        "expected 2",
    );
    let done = client
        .complete_session(pb::CompleteSessionRequest {
            session_id: id.clone(),
            expected_version: Some(1),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(done.version, 2);
}

#[tokio::test]
async fn ended_sessions_refuse_every_mutation() {
    let bus = Bus::start(&["--store", "memory"]).await;
    let mut client = bus.sessions().await;
    let id = "sess_over".to_string();
    client.create_session(tutorial_session(&id)).await.unwrap();
    assert_status(
        client
            .terminate_session(pb::TerminateSessionRequest {
                session_id: id.clone(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "reason",
    );
    let terminated = client
        .terminate_session(pb::TerminateSessionRequest {
            session_id: id.clone(),
            reason: "timeout".into(),
            details: "Frontend agent offline".into(),
            expected_version: None,
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(terminated.state(), pb::SessionState::Terminated);
    assert_eq!(
        (
            terminated.termination_reason.as_str(),
            terminated.termination_details.as_str()
        ),
        ("timeout", "Frontend agent offline")
    );
    assert!(terminated.ended_at.is_some());
    assert!(
        statuses(&terminated)
            .iter()
            .all(|(_, _, s)| *s == pb::ParticipantStatus::SessionTerminated)
    );

    let s = id.clone();
    assert_status(
        client
            .add_participant(pb::AddParticipantRequest {
                session_id: s.clone(),
                participant: Some(spec("a://b", "r")),
                expected_version: None,
            })
            .await,
        Code::FailedPrecondition,
        "terminated",
    );
    assert_status(
        client
            .remove_participant(pb::RemoveParticipantRequest {
                session_id: s.clone(),
                agent_id: "claude-code://qa".into(),
                expected_version: None,
            })
            .await,
        Code::FailedPrecondition,
        "terminated",
    );
    assert_status(
        client
            .update_workflow(pb::UpdateWorkflowRequest {
                session_id: s.clone(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "terminated",
    );
    assert_status(
        client
            .advance_workflow(pb::AdvanceWorkflowRequest {
                session_id: s.clone(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "terminated",
    );
    assert_status(
        client
            .update_shared_context(pb::UpdateSharedContextRequest {
                session_id: s.clone(),
                context: Some(object(json!({}))),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "terminated",
    );
    assert_status(
        client
            .complete_session(pb::CompleteSessionRequest {
                session_id: s.clone(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "terminated",
    );
    assert_status(
        client
            .terminate_session(pb::TerminateSessionRequest {
                session_id: s.clone(),
                reason: "again".into(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "terminated",
    );
    let unchanged = client
        .get_session(pb::GetSessionRequest { session_id: s })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(unchanged, terminated);
}

#[tokio::test]
async fn list_filters_by_state_and_participant_and_pages() {
    let bus = Bus::start(&[]).await;
    let mut client = bus.sessions().await;
    for i in 0..7 {
        let mut request = pb::CreateSessionRequest {
            session_id: format!("sess_list_{i}"),
            orchestrator: "claude-code://orchestrator".into(),
            ..Default::default()
        };
        if i % 3 == 0 {
            request.participants.push(spec("codex://frontend", "implementer"));
        }
        client.create_session(request).await.unwrap();
    }
    client
        .terminate_session(pb::TerminateSessionRequest {
            session_id: "sess_list_1".into(),
            reason: "r".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let mut token = String::new();
    let mut ids = Vec::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_sessions(pb::ListSessionsRequest {
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        ids.extend(page.sessions.into_iter().map(|s| s.session_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(ids, (0..7).map(|i| format!("sess_list_{i}")).collect::<Vec<_>>());

    let frontend = client
        .list_sessions(pb::ListSessionsRequest {
            participant: "codex://frontend".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = frontend.sessions.iter().map(|s| s.session_id.as_str()).collect();
    assert_eq!(ids, ["sess_list_0", "sess_list_3", "sess_list_6"]);

    let terminated = client
        .list_sessions(pb::ListSessionsRequest {
            states: vec![pb::SessionState::Terminated as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(terminated.sessions.len(), 1);
    let active = client
        .list_sessions(pb::ListSessionsRequest {
            states: vec![pb::SessionState::Active as i32, pb::SessionState::Completed as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(active.sessions.len(), 6);

    assert_status(
        client
            .list_sessions(pb::ListSessionsRequest {
                page_token: "garbage".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "page_token",
    );
    assert_status(
        client
            .list_sessions(pb::ListSessionsRequest {
                states: vec![0],
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "states[0]",
    );
    assert_status(
        client
            .list_sessions(pb::ListSessionsRequest {
                participant: "frontend".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "participant",
    );
}

#[tokio::test]
async fn idle_sessions_expire_exactly_once() {
    let bus = Bus::start(&["--session-idle-timeout", "400ms"]).await;
    let mut client = bus.sessions().await;
    client.create_session(tutorial_session("sess_idle")).await.unwrap();
    client.create_session(tutorial_session("sess_busy")).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // Keep one session busy while the other goes idle.
    let expired = loop {
        client
            .update_shared_context(pb::UpdateSharedContextRequest {
                session_id: "sess_busy".into(),
                context: Some(object(json!({"tick": 1}))),
                mode: pb::ContextUpdateMode::Merge as i32,
                expected_version: None,
            })
            .await
            .unwrap();
        let s = client
            .get_session(pb::GetSessionRequest {
                session_id: "sess_idle".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .session
            .unwrap();
        if s.state() == pb::SessionState::Expired {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "session never expired");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(expired.ended_at.is_some());
    let busy = client
        .get_session(pb::GetSessionRequest {
            session_id: "sess_busy".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(busy.state(), pb::SessionState::Active);
    assert_status(
        client
            .advance_workflow(pb::AdvanceWorkflowRequest {
                session_id: "sess_idle".into(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "expired",
    );
    // Several sweeps later there is still exactly one expiry event.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut watch = client
        .watch_sessions(pb::WatchSessionsRequest {
            session_ids: vec!["sess_idle".into()],
            event_types: vec![pb::SessionEventType::SessionExpired as i32],
            after_sequence: Some(0),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert!(matches!(first.kind, Some(pb::watch_sessions_response::Kind::Event(ref e)) if e.session_id == "sess_idle"));
    let next = tokio::time::timeout(std::time::Duration::from_millis(300), watch.message()).await;
    assert!(next.is_err(), "a second expiry event arrived: {next:?}");
}

#[tokio::test]
async fn snapshots_stay_within_the_message_size_limit() {
    let bus = Bus::start(&[
        "--store",
        "memory",
        "--max-message-bytes",
        "262144",
        "--max-context-bytes",
        "100000",
    ])
    .await;
    let mut client = bus.sessions().await;
    client.create_session(tutorial_session("sess_big")).await.unwrap();
    let update = |context: serde_json::Value| pb::UpdateSharedContextRequest {
        session_id: "sess_big".into(),
        context: Some(object(context)),
        mode: pb::ContextUpdateMode::Merge as i32,
        expected_version: None,
    };
    // 40 KB of JSON, but every number is a whole protobuf Value on the wire:
    // the snapshot would not fit a 256 KiB message.
    let numbers = serde_json::Value::Array(vec![json!(1); 20_000]);
    assert_status(
        client.update_shared_context(update(json!({ "n": numbers }))).await,
        Code::ResourceExhausted,
        "on the wire",
    );
    client
        .update_shared_context(update(json!({ "text": "x".repeat(50_000) })))
        .await
        .unwrap();
    let session = client
        .get_session(pb::GetSessionRequest {
            session_id: "sess_big".into(),
        })
        .await
        .unwrap();
    assert_eq!(session.into_inner().session.unwrap().version, 2);

    let mut heavy = spec("codex://heavy", "observer");
    heavy.metadata = Some(object(json!({ "blob": "x".repeat(20_000) })));
    assert_status(
        client
            .add_participant(pb::AddParticipantRequest {
                session_id: "sess_big".into(),
                participant: Some(heavy),
                expected_version: None,
            })
            .await,
        Code::InvalidArgument,
        "participant.metadata",
    );
}
