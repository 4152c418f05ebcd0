//! WatchSessions: ordering, filters, resume, slow subscribers, heartbeats.

mod common;

use std::time::Duration;

use agentbus::pb;
use agentbus::pb::watch_sessions_response::Kind;
use common::{Bus, Sessions, assert_status, object, spec, tutorial_session};
use serde_json::json;
use tokio::time::timeout;
use tonic::{Code, Streaming};

type Watch = Streaming<pb::WatchSessionsResponse>;

async fn watch(client: &mut Sessions, request: pb::WatchSessionsRequest) -> Watch {
    client.watch_sessions(request).await.unwrap().into_inner()
}

/// The next event, skipping heartbeats; fails after 5 s.
async fn next_event(stream: &mut Watch) -> pb::SessionEvent {
    loop {
        let message = timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("no event within 5s");
        match message.expect("stream error").expect("stream ended").kind {
            Some(Kind::Event(event)) => return event,
            Some(Kind::Heartbeat(_)) => continue,
            None => panic!("empty response"),
        }
    }
}

async fn next_events(stream: &mut Watch, count: usize) -> Vec<pb::SessionEvent> {
    let mut events = Vec::with_capacity(count);
    for _ in 0..count {
        events.push(next_event(stream).await);
    }
    events
}

async fn assert_quiet(stream: &mut Watch) {
    if let Ok(message) = timeout(Duration::from_millis(300), stream.message()).await {
        panic!("expected no further event, got {message:?}");
    }
}

async fn merge(client: &mut Sessions, session_id: &str, key: &str) {
    client
        .update_shared_context(pb::UpdateSharedContextRequest {
            session_id: session_id.into(),
            context: Some(object(json!({ key: true }))),
            mode: pb::ContextUpdateMode::Merge as i32,
            expected_version: None,
        })
        .await
        .unwrap();
}

fn live() -> pb::WatchSessionsRequest {
    pb::WatchSessionsRequest::default()
}

#[tokio::test]
async fn every_change_is_an_event_in_order_with_a_snapshot() {
    let bus = Bus::start(&[]).await;
    let mut client = bus.sessions().await;
    let mut stream = watch(&mut client, live()).await;
    let id = "sess_events".to_string();

    client.create_session(tutorial_session(&id)).await.unwrap();
    client
        .add_participant(pb::AddParticipantRequest {
            session_id: id.clone(),
            participant: Some(spec("opencode://security", "reviewer")),
            expected_version: None,
        })
        .await
        .unwrap();
    client
        .remove_participant(pb::RemoveParticipantRequest {
            session_id: id.clone(),
            agent_id: "opencode://security".into(),
            expected_version: None,
        })
        .await
        .unwrap();
    client
        .advance_workflow(pb::AdvanceWorkflowRequest {
            session_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    merge(&mut client, &id, "branch").await;
    client
        .complete_session(pb::CompleteSessionRequest {
            session_id: id.clone(),
            summary: "done".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    client.create_session(tutorial_session("sess_events_2")).await.unwrap();
    client
        .terminate_session(pb::TerminateSessionRequest {
            session_id: "sess_events_2".into(),
            reason: "timeout".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let events = next_events(&mut stream, 8).await;
    use pb::SessionEventType as T;
    let types: Vec<T> = events.iter().map(|e| e.r#type()).collect();
    assert_eq!(
        types,
        [
            T::SessionCreated,
            T::ParticipantAdded,
            T::ParticipantRemoved,
            T::WorkflowUpdated,
            T::SharedContextUpdated,
            T::SessionCompleted,
            T::SessionCreated,
            T::SessionTerminated
        ]
    );
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=8).collect::<Vec<_>>(), "global, gap-free sequence");
    assert_eq!(events[1].agent_id, "opencode://security");
    assert_eq!(events[2].agent_id, "opencode://security");
    for (i, event) in events[..6].iter().enumerate() {
        let snapshot = event.session.as_ref().unwrap();
        assert_eq!(snapshot.version, i as u64 + 1, "snapshot after the event");
        assert_eq!(event.session_id, id);
        assert!(event.timestamp.is_some());
    }
    assert_eq!(
        events[3]
            .session
            .as_ref()
            .unwrap()
            .workflow
            .as_ref()
            .unwrap()
            .current_step,
        "implementation"
    );
    assert_eq!(events[5].session.as_ref().unwrap().state(), pb::SessionState::Completed);
    assert_quiet(&mut stream).await;
}

#[tokio::test]
async fn filters_by_session_and_type() {
    let bus = Bus::start(&["--store", "memory"]).await;
    let mut client = bus.sessions().await;
    let mut only_a = watch(
        &mut client,
        pb::WatchSessionsRequest {
            session_ids: vec!["sess_a".into()],
            ..live()
        },
    )
    .await;
    let mut only_created = watch(
        &mut client,
        pb::WatchSessionsRequest {
            event_types: vec![pb::SessionEventType::SessionCreated as i32],
            ..live()
        },
    )
    .await;
    for id in ["sess_a", "sess_b"] {
        client.create_session(tutorial_session(id)).await.unwrap();
        merge(&mut client, id, "x").await;
    }
    let a: Vec<(u64, String)> = next_events(&mut only_a, 2)
        .await
        .into_iter()
        .map(|e| (e.sequence, e.session_id))
        .collect();
    assert_eq!(a, [(1, "sess_a".to_string()), (2, "sess_a".to_string())]);
    assert_quiet(&mut only_a).await;
    let created: Vec<u64> = next_events(&mut only_created, 2)
        .await
        .iter()
        .map(|e| e.sequence)
        .collect();
    assert_eq!(created, [1, 3]);
    assert_quiet(&mut only_created).await;

    assert_status(
        client
            .watch_sessions(pb::WatchSessionsRequest {
                session_ids: vec!["bad id".into()],
                ..live()
            })
            .await,
        Code::InvalidArgument,
        "session_ids[0]",
    );
    assert_status(
        client
            .watch_sessions(pb::WatchSessionsRequest {
                event_types: vec![0],
                ..live()
            })
            .await,
        Code::InvalidArgument,
        "event_types[0]",
    );
    assert_status(
        client
            .watch_sessions(pb::WatchSessionsRequest {
                after_sequence: Some(99),
                ..live()
            })
            .await,
        Code::OutOfRange,
        "after_sequence",
    );
}

#[tokio::test]
async fn resume_after_disconnect_replays_then_follows_live() {
    let bus = Bus::start(&[]).await;
    let mut client = bus.sessions().await;
    let mut first = watch(
        &mut client,
        pb::WatchSessionsRequest {
            after_sequence: Some(0),
            ..live()
        },
    )
    .await;
    client.create_session(tutorial_session("sess_resume")).await.unwrap();
    merge(&mut client, "sess_resume", "one").await;
    let seen = next_events(&mut first, 2).await;
    let last = seen.last().unwrap().sequence;
    drop(first);

    // Changes while nobody watches.
    for key in ["two", "three", "four"] {
        merge(&mut client, "sess_resume", key).await;
    }
    let mut resumed = watch(
        &mut client,
        pb::WatchSessionsRequest {
            after_sequence: Some(last),
            ..live()
        },
    )
    .await;
    // Writers keep going while the replay runs.
    let mut writer = bus.sessions().await;
    let writing = tokio::spawn(async move {
        for i in 0..20 {
            merge(&mut writer, "sess_resume", &format!("live{i}")).await;
        }
    });
    let events = next_events(&mut resumed, 23).await;
    writing.await.unwrap();
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(
        sequences,
        (last + 1..=last + 23).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    assert_quiet(&mut resumed).await;
}

#[tokio::test]
async fn replay_from_zero_after_restart_has_the_whole_history() {
    let mut first = Bus::start(&[]).await;
    let mut client = first.sessions().await;
    client.create_session(tutorial_session("sess_history")).await.unwrap();
    merge(&mut client, "sess_history", "k").await;
    first.signal(libc::SIGTERM);
    assert!(first.wait_exit(Duration::from_secs(10)).await.is_some());

    let restarted = Bus::start_in(&first.data_dir, &[]).await;
    let mut client = restarted.sessions().await;
    let mut stream = watch(
        &mut client,
        pb::WatchSessionsRequest {
            after_sequence: Some(0),
            ..live()
        },
    )
    .await;
    let events = next_events(&mut stream, 2).await;
    assert_eq!(events.iter().map(|e| e.sequence).collect::<Vec<_>>(), [1, 2]);
    merge(&mut client, "sess_history", "after").await;
    assert_eq!(
        next_event(&mut stream).await.sequence,
        3,
        "sequence continues after restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_neither_blocks_others_nor_misses_events() {
    // A tiny live buffer forces the slow watcher back to the store.
    let bus = Bus::start(&["--watch-buffer", "4"]).await;
    let mut client = bus.sessions().await;
    client.create_session(tutorial_session("sess_slow")).await.unwrap();
    let mut slow = watch(
        &mut client,
        pb::WatchSessionsRequest {
            after_sequence: Some(0),
            ..live()
        },
    )
    .await;
    let mut fast = watch(
        &mut client,
        pb::WatchSessionsRequest {
            after_sequence: Some(0),
            ..live()
        },
    )
    .await;
    const UPDATES: usize = 300;
    let padding = "x".repeat(16 * 1024); // big snapshots fill flow-control windows
    let mut writer = bus.sessions().await;
    let writes = tokio::spawn(async move {
        for i in 0..UPDATES {
            writer
                .update_shared_context(pb::UpdateSharedContextRequest {
                    session_id: "sess_slow".into(),
                    context: Some(object(json!({ "i": i, "pad": padding }))),
                    mode: pb::ContextUpdateMode::Replace as i32,
                    expected_version: None,
                })
                .await
                .unwrap();
        }
    });
    // The fast watcher keeps up while the slow one reads nothing.
    let fast_events = next_events(&mut fast, UPDATES + 1).await;
    timeout(Duration::from_secs(30), writes)
        .await
        .expect("writers were blocked")
        .unwrap();
    assert_eq!(fast_events.last().unwrap().sequence, UPDATES as u64 + 1);

    let slow_events = next_events(&mut slow, UPDATES + 1).await;
    let sequences: Vec<u64> = slow_events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=UPDATES as u64 + 1).collect::<Vec<_>>());
    let last = slow_events.last().unwrap().session.as_ref().unwrap();
    assert_eq!(
        common::json(last.shared_context.as_ref().unwrap())["i"],
        json!((UPDATES - 1) as f64)
    );
    assert!(
        bus.log().contains("catching up from the store"),
        "the slow watcher never lagged:\n{}",
        bus.log()
    );
}

#[tokio::test]
async fn idle_streams_get_heartbeats() {
    let bus = Bus::start(&["--store", "memory", "--heartbeat-interval", "200ms"]).await;
    let mut client = bus.sessions().await;
    client.create_session(tutorial_session("sess_hb")).await.unwrap();
    let mut stream = watch(
        &mut client,
        pb::WatchSessionsRequest {
            session_ids: vec!["sess_other".into()],
            ..live()
        },
    )
    .await;
    let started = std::time::Instant::now();
    // A live-only watch starts with a heartbeat saying where it starts.
    let first = timeout(Duration::from_millis(150), stream.message())
        .await
        .expect("no starting heartbeat")
        .unwrap()
        .unwrap();
    let Some(Kind::Heartbeat(start)) = first.kind else {
        panic!("expected the starting heartbeat, got {first:?}");
    };
    assert_eq!(start.last_sequence, 1, "it starts after the one existing event");
    let mut beats = 0;
    while beats < 2 {
        let message = timeout(Duration::from_secs(3), stream.message())
            .await
            .expect("no heartbeat")
            .unwrap()
            .unwrap();
        match message.kind {
            Some(Kind::Heartbeat(beat)) => {
                assert_eq!(beat.last_sequence, 1, "heartbeats carry the resume point");
                assert!(beat.timestamp.is_some());
                beats += 1;
            }
            other => panic!("expected a heartbeat, got {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(350) && elapsed < Duration::from_secs(2),
        "two beats took {elapsed:?}"
    );
}
