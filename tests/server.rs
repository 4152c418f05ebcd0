//! The server as a process: auth, reflection, health, limits, shutdown and
//! crash durability.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentbus::pb;
use common::{Bus, assert_status, object, tutorial_session};
use serde_json::json;
use tokio::time::timeout;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn api_key_is_required_when_configured() {
    let bus = Bus::start(&["--store", "memory", "--api-key", "s3cret-key"]).await;
    let get = || pb::GetSessionRequest {
        session_id: "sess_auth".into(),
    };

    let mut anonymous = bus.sessions().await;
    assert_status(
        anonymous.create_session(tutorial_session("sess_auth")).await,
        Code::Unauthenticated,
        "missing API key",
    );
    let mut wrong = bus.sessions_with_key(Some("s3cret-kez")).await;
    assert_status(wrong.get_session(get()).await, Code::Unauthenticated, "invalid API key");
    assert_status(
        wrong.watch_sessions(pb::WatchSessionsRequest::default()).await,
        Code::Unauthenticated,
        "invalid API key",
    );

    let mut client = bus.sessions_with_key(Some("s3cret-key")).await;
    client.create_session(tutorial_session("sess_auth")).await.unwrap();

    // `authorization: Bearer KEY` works too.
    let mut request = tonic::Request::new(get());
    request
        .metadata_mut()
        .insert("authorization", "Bearer s3cret-key".parse().unwrap());
    let mut bearer = pb::session_service_client::SessionServiceClient::new(bus.channel().await);
    assert_eq!(
        bearer
            .get_session(request)
            .await
            .unwrap()
            .into_inner()
            .session
            .unwrap()
            .session_id,
        "sess_auth"
    );
    let mut request = tonic::Request::new(get());
    request
        .metadata_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    assert_status(bearer.get_session(request).await, Code::Unauthenticated, "invalid");

    // Health and reflection stay open for probes and tools.
    let mut health = HealthClient::new(bus.channel().await);
    let status = health
        .check(HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status(), ServingStatus::Serving);
    assert!(
        reflected_services(&bus)
            .await
            .contains(&"agentbus.v1.SessionService".to_string())
    );
}

#[tokio::test]
async fn without_a_key_calls_need_no_credentials() {
    let bus = Bus::start(&["--store", "memory"]).await;
    let mut client = bus.sessions().await;
    client.create_session(tutorial_session("sess_open")).await.unwrap();
}

#[tokio::test]
async fn refuses_public_address_without_key_unless_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let output = match Bus::try_start_in(dir.path(), &["--store", "memory", "--listen", "0.0.0.0:0"]) {
        Ok(_) => panic!("server started on 0.0.0.0 without a key"),
        Err(output) => output,
    };
    assert!(output.contains("exit status: 2"), "{output}");
    assert!(
        output.contains("--insecure") && output.contains("--api-key"),
        "{output}"
    );

    let insecure = Bus::start(&["--store", "memory", "--listen", "0.0.0.0:0", "--insecure"]).await;
    assert_eq!(insecure.addr.ip().to_string(), "0.0.0.0");
    let with_key = Bus::start(&["--store", "memory", "--listen", "0.0.0.0:0", "--api-key", "k"]).await;
    assert_eq!(with_key.addr.ip().to_string(), "0.0.0.0");
}

async fn reflected_services(bus: &Bus) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let mut client = ServerReflectionClient::new(bus.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    match responses.message().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(list)) => list.service.into_iter().map(|s| s.name).collect(),
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_describe_the_api() {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

    let bus = Bus::start(&["--store", "memory"]).await;
    let services = reflected_services(&bus).await;
    for expected in ["agentbus.v1.SessionService", "grpc.health.v1.Health"] {
        assert!(
            services.iter().any(|s| s == expected),
            "{expected} missing from {services:?}"
        );
    }

    // grpcurl 1.8 speaks v1alpha and resolves files by symbol.
    let mut client = ServerReflectionClient::new(bus.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "agentbus.v1.SessionService".into(),
        )),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("no file descriptor");
    };
    let names: Vec<String> = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| {
            <prost_types::FileDescriptorProto as prost::Message>::decode(bytes.as_slice())
                .unwrap()
                .name()
                .to_string()
        })
        .collect();
    assert!(
        names.iter().any(|n| n == "agentbus/v1/session_service.proto"),
        "{names:?}"
    );
}

#[tokio::test]
async fn health_reports_serving_per_service() {
    let bus = Bus::start(&["--store", "memory"]).await;
    let mut health = HealthClient::new(bus.channel().await);
    for service in ["", "agentbus.v1.SessionService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.status(), ServingStatus::Serving, "{service:?}");
    }
    assert_status(
        health
            .check(HealthCheckRequest {
                service: "nope.Service".into(),
            })
            .await,
        Code::NotFound,
        "",
    );
}

#[tokio::test]
async fn oversized_requests_are_refused() {
    let bus = Bus::start(&[
        "--store",
        "memory",
        "--max-message-bytes",
        "4096",
        "--max-context-bytes",
        "1024",
    ])
    .await;
    let mut client = bus.sessions().await;
    let mut request = tutorial_session("sess_big");
    request.shared_context = Some(object(json!({ "blob": "x".repeat(8192) })));
    let error = client.create_session(request).await.unwrap_err();
    eprintln!("oversized request: {:?} {}", error.code(), error.message());
    assert!(
        matches!(error.code(), Code::ResourceExhausted | Code::OutOfRange),
        "unexpected {:?}: {}",
        error.code(),
        error.message()
    );
    assert!(error.message().contains("4096"), "{}", error.message());
    // The connection still works for normal requests.
    client.create_session(tutorial_session("sess_small")).await.unwrap();
}

#[tokio::test]
async fn sigterm_ends_open_streams_and_exits_promptly() {
    let mut bus = Bus::start(&[]).await;
    let channel = bus.channel().await;
    let mut health = HealthClient::new(channel.clone());
    let mut health_watch = health
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health_watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );
    let mut client = bus.sessions().await;
    let mut watchers = Vec::new();
    for _ in 0..3 {
        watchers.push(
            client
                .watch_sessions(pb::WatchSessionsRequest {
                    after_sequence: Some(0),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner(),
        );
    }
    client
        .create_session(tutorial_session("sess_before_stop"))
        .await
        .unwrap();

    let started = Instant::now();
    bus.signal(libc::SIGTERM);
    let not_serving = timeout(Duration::from_secs(3), health_watch.message())
        .await
        .expect("no health update");
    assert_eq!(not_serving.unwrap().unwrap().status(), ServingStatus::NotServing);
    for mut watcher in watchers {
        let ended = loop {
            match timeout(Duration::from_secs(3), watcher.message())
                .await
                .expect("watch stream did not end")
            {
                Ok(Some(_event)) => continue,
                other => break other,
            }
        };
        let status = ended.expect_err("watch should end with a status");
        assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
        assert!(status.message().contains("shutting down"), "{}", status.message());
    }
    let exit = bus
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("server did not exit within 5s");
    assert!(exit.success(), "{exit:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}\n{}",
        started.elapsed(),
        bus.log()
    );
    assert!(bus.log().contains("store closed"), "{}", bus.log());
}

/// What the clients were told succeeded before the crash.
#[derive(Default)]
struct Acknowledged {
    created: Vec<String>,
    keys: HashMap<String, Vec<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_and_restart() {
    let mut bus = Bus::start(&[]).await;
    let acked = Arc::new(Mutex::new(Acknowledged::default()));
    let mut writers = Vec::new();
    for writer in 0..8 {
        let mut client = bus.sessions().await;
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for round in 0.. {
                let id = format!("sess_w{writer}_r{round}");
                if client.create_session(tutorial_session(&id)).await.is_err() {
                    return;
                }
                acked.lock().unwrap().created.push(id.clone());
                for k in 0..3 {
                    let key = format!("k{k}");
                    let merged = client
                        .update_shared_context(pb::UpdateSharedContextRequest {
                            session_id: id.clone(),
                            context: Some(object(json!({ key.clone(): round }))),
                            mode: pb::ContextUpdateMode::Merge as i32,
                            expected_version: None,
                        })
                        .await;
                    if merged.is_err() {
                        return;
                    }
                    acked.lock().unwrap().keys.entry(id.clone()).or_default().push(key);
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().created.len() < 150 {
        assert!(Instant::now() < deadline, "load did not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bus.signal(libc::SIGKILL);
    assert!(bus.wait_exit(Duration::from_secs(5)).await.is_some());
    for writer in writers {
        timeout(Duration::from_secs(30), writer)
            .await
            .expect("writer hung")
            .unwrap();
    }

    let restarted = Bus::start_in(&bus.data_dir, &[]).await;
    let mut client = restarted.sessions().await;
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let acked_writes = acked.created.len() + acked.keys.values().map(Vec::len).sum::<usize>();
    for id in &acked.created {
        let session = client
            .get_session(pb::GetSessionRequest { session_id: id.clone() })
            .await;
        let session = session
            .unwrap_or_else(|e| panic!("acknowledged session {id} lost: {e}"))
            .into_inner()
            .session
            .unwrap();
        let context = common::json(session.shared_context.as_ref().unwrap());
        for key in acked.keys.get(id).into_iter().flatten() {
            assert!(context.get(key).is_some(), "acknowledged key {key} of {id} lost");
        }
    }
    // The event log is gap-free and holds at least every acknowledged write.
    let mut watch = client
        .watch_sessions(pb::WatchSessionsRequest {
            after_sequence: Some(0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut expected = 1;
    while let Ok(Some(Ok(Some(message)))) = timeout(Duration::from_millis(500), watch.message())
        .await
        .map(|m| m.map(Some).transpose())
    {
        if let Some(pb::watch_sessions_response::Kind::Event(event)) = message.kind {
            assert_eq!(event.sequence, expected, "gap in the event log");
            expected += 1;
        }
    }
    let events = expected - 1;
    eprintln!("{acked_writes} acknowledged writes before kill -9; {events} events after restart");
    assert!(
        events >= acked_writes as u64,
        "{events} events for {acked_writes} acknowledged writes"
    );
}

#[tokio::test]
async fn logs_are_plain_text_off_a_terminal_or_json_lines() {
    // The test's stderr is a file: no colour codes in it.
    let bus = Bus::start(&["--store", "memory"]).await;
    bus.sessions()
        .await
        .get_session(pb::GetSessionRequest {
            session_id: "sess_log".into(),
        })
        .await
        .unwrap_err();
    let text = bus.log();
    assert!(text.contains("INFO"), "{text}");
    assert!(!text.contains('\u{1b}'), "colour codes in a log file: {text:?}");

    let bus = Bus::start(&["--store", "memory", "--log-format", "json"]).await;
    let json = bus.log();
    let lines: Vec<&str> = json.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        let object: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(object["level"].is_string() && object["fields"].is_object(), "{line}");
    }
}

/// deploy/agentbus.service is hardened and runs `agentbus serve --config
/// %d/agentbus.toml`, the credential copy of /etc/agentbus/agentbus.toml:
/// that command line with deploy/agentbus.example.toml in place starts a
/// server (here on 127.0.0.1:0, with a data directory of its own instead of
/// the unit's /var/lib/agentbus). `.ci/run` also checks the unit with
/// `systemd-analyze verify`.
#[tokio::test]
async fn the_systemd_unit_serves_the_example_config() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let unit = std::fs::read_to_string(deploy.join("agentbus.service")).unwrap();
    let values = |key: &str| -> Vec<&str> {
        unit.lines()
            .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
            .collect()
    };
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("StateDirectory", "agentbus"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallFilter", "@system-service"),
        ("CapabilityBoundingSet", ""),
        ("LimitNOFILE", "65536"),
        ("Restart", "on-failure"),
        ("LoadCredential", "agentbus.toml:/etc/agentbus/agentbus.toml"),
    ] {
        assert!(values(key).contains(&value), "{key}={value} missing from the unit");
    }
    let example = std::fs::read_to_string(deploy.join("agentbus.example.toml")).unwrap();
    assert!(
        example.contains("\ndata_dir = \"/var/lib/agentbus\"\n"),
        "the StateDirectory"
    );

    let exec_start = values("ExecStart");
    let mut words = exec_start[0].split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/agentbus"));
    assert_eq!(words.next(), Some("serve"));
    let example = deploy.join("agentbus.example.toml");
    let args: Vec<String> = words
        .map(|word| match word {
            "%d/agentbus.toml" => example.display().to_string(),
            word => word.to_owned(),
        })
        .collect();
    assert!(args.iter().any(|arg| *arg == example.display().to_string()), "{args:?}");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let bus = Bus::start(&args).await;
    let status = HealthClient::new(bus.channel().await)
        .check(HealthCheckRequest { service: "".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status(), ServingStatus::Serving);
    assert!(
        bus.data_dir.join("agentbus.sqlite3").exists(),
        "the example's store is SQLite"
    );
}
