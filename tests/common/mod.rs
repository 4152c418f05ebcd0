//! Test harness: runs the real `agentbus` binary on 127.0.0.1:0 and talks
//! to it over TCP with generated tonic clients.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

pub mod exposition;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use agentbus::pb;
use agentbus::pb::session_service_client::SessionServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub mod postgres;

pub type Sessions = SessionServiceClient<InterceptedService<Channel, ApiKey>>;
pub type Agents = agentbus::pb::agent_service_client::AgentServiceClient<Channel>;
pub type Messages = agentbus::pb::message_service_client::MessageServiceClient<Channel>;

/// A running server process; killed when dropped.
pub struct Bus {
    child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Bus {
    /// Starts a server with a fresh data directory and the given extra flags.
    pub async fn start(args: &[&str]) -> Bus {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut bus = Self::start_in(temp.path(), args).await;
        bus._temp = Some(temp);
        bus
    }

    /// Starts a server on an existing data directory (for restarts).
    pub async fn start_in(data_dir: &Path, args: &[&str]) -> Bus {
        Self::try_start_in(data_dir, args).unwrap_or_else(|output| panic!("server did not start:\n{output}"))
    }

    /// Starts the server; on failure returns its exit status and output.
    pub fn try_start_in(data_dir: &Path, args: &[&str]) -> Result<Bus, String> {
        Self::try_start_with(data_dir, args, None)
    }

    /// Starts a server whose soft and hard open-file limits are `limit`.
    pub async fn start_with_open_files(limit: u64, args: &[&str]) -> Bus {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut bus = Self::try_start_with(temp.path(), args, Some(limit))
            .unwrap_or_else(|output| panic!("server did not start:\n{output}"));
        bus._temp = Some(temp);
        bus
    }

    fn try_start_with(data_dir: &Path, args: &[&str], open_files: Option<u64>) -> Result<Bus, String> {
        let binary = env!("CARGO_BIN_EXE_agentbus");
        let mut command = match open_files {
            Some(limit) => {
                let mut shell = Command::new("sh");
                shell.args(["-c", &format!("ulimit -n {limit} && exec \"$0\" \"$@\""), binary]);
                shell
            }
            None => Command::new(binary),
        };
        command.arg("serve");
        if !args.iter().any(|a| a.starts_with("--listen")) {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        command.arg("--data-dir").arg(data_dir).args(args);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("server.log"))
            .expect("log file");
        for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("AGENT_BUS_")) {
            command.env_remove(name);
        }
        let mut child = command
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn agentbus");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => {
                let addr = line
                    .rsplit(' ')
                    .next()
                    .and_then(|a| a.parse().ok())
                    .expect("address in the first line");
                Ok(Bus {
                    child,
                    addr,
                    data_dir: data_dir.to_owned(),
                    _temp: None,
                })
            }
            Err(_) => {
                let status = wait_for_exit(&mut child, Duration::from_secs(5));
                let _ = child.kill();
                let log = std::fs::read_to_string(data_dir.join("server.log")).unwrap_or_default();
                let status = status.map_or_else(|| "still running".to_string(), |s| s.to_string());
                Err(format!("{status}\n{log}"))
            }
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .expect("connect")
    }

    /// SessionService client without credentials.
    pub async fn sessions(&self) -> Sessions {
        self.sessions_with_key(None).await
    }

    pub async fn sessions_with_key(&self, key: Option<&str>) -> Sessions {
        SessionServiceClient::with_interceptor(self.channel().await, ApiKey(key.map(str::to_owned)))
    }

    pub async fn agents(&self) -> Agents {
        Agents::new(self.channel().await)
    }

    pub async fn messages(&self) -> Messages {
        Messages::new(self.channel().await)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the pid of a child we spawned and still own.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({signal}) failed");
    }

    /// Waits up to `timeout` for the process to exit. Async, so the test's
    /// own clients keep running meanwhile (a graceful HTTP/2 shutdown needs
    /// them to answer the server's GOAWAY).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Adds `x-agent-api-key` to every call when set.
#[derive(Clone)]
pub struct ApiKey(pub Option<String>);

impl tonic::service::Interceptor for ApiKey {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(key) = &self.0 {
            request
                .metadata_mut()
                .insert("x-agent-api-key", key.parse().expect("ascii key"));
        }
        Ok(request)
    }
}

pub fn spec(agent_id: &str, role: &str) -> pb::ParticipantSpec {
    pb::ParticipantSpec {
        agent_id: agent_id.into(),
        role: role.into(),
        ..Default::default()
    }
}

pub fn step(name: &str) -> pb::WorkflowStep {
    pb::WorkflowStep {
        name: name.into(),
        ..Default::default()
    }
}

/// A protobuf Struct from a JSON object literal.
pub fn object(value: serde_json::Value) -> prost_types::Struct {
    let serde_json::Value::Object(map) = value else {
        panic!("not an object: {value}")
    };
    prost_types::Struct {
        fields: map.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
    }
}

fn to_value(value: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(to_value).collect(),
        }),
        object @ serde_json::Value::Object(_) => Kind::StructValue(self::object(object)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// JSON view of a protobuf Struct, for readable assertions.
pub fn json(value: &prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(value.fields.iter().map(|(k, v)| (k.clone(), from_value(v))).collect())
}

fn from_value(value: &prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match &value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => (*b).into(),
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n).map_or(serde_json::Value::Null, Into::into),
        Some(Kind::StringValue(s)) => s.clone().into(),
        Some(Kind::ListValue(list)) => list.values.iter().map(from_value).collect(),
        Some(Kind::StructValue(s)) => json(s),
    }
}

/// A TASK_REQUEST `id` from `from` to `to`, with no payload.
pub fn task_request(id: &str, from: &str, to: &str) -> pb::Message {
    pb::Message {
        message_id: id.into(),
        sender: Some(pb::AgentRef {
            agent_id: from.into(),
            ..Default::default()
        }),
        recipient: Some(pb::AgentRef {
            agent_id: to.into(),
            ..Default::default()
        }),
        message_type: pb::MessageType::TaskRequest as i32,
        ..Default::default()
    }
}

/// The tutorial's session: orchestrator, three participants, three steps.
/// An inbox stream of `agent`, without a prefetch limit.
pub async fn inbox(bus: &Bus, agent: &str) -> tonic::Streaming<pb::ReceiveMessagesResponse> {
    bus.messages()
        .await
        .receive_messages(pb::ReceiveMessagesRequest {
            agent_id: agent.into(),
            max_in_flight: 0,
        })
        .await
        .unwrap()
        .into_inner()
}

pub fn tutorial_session(session_id: &str) -> pb::CreateSessionRequest {
    pb::CreateSessionRequest {
        session_id: session_id.into(),
        orchestrator: "claude-code://orchestrator".into(),
        participants: vec![
            spec("opencode://backend", "implementer"),
            spec("codex://frontend", "implementer"),
            spec("claude-code://qa", "reviewer"),
        ],
        steps: vec![
            pb::WorkflowStep {
                required_agents: vec!["claude-code://orchestrator".into()],
                ..step("design")
            },
            pb::WorkflowStep {
                required_agents: vec!["opencode://backend".into(), "codex://frontend".into()],
                ..step("implementation")
            },
            pb::WorkflowStep {
                required_agents: vec!["claude-code://qa".into()],
                ..step("review")
            },
        ],
        shared_context: Some(object(serde_json::json!({
            "project": "feature/notifications",
            "requirements": ["real-time updates", "audit logs"]
        }))),
    }
}

/// Asserts the call failed with `code` and a message containing `needle`.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: tonic::Code, needle: &str) {
    match result {
        Ok(value) => panic!("expected {code:?} ({needle}), got Ok({value:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "wrong code; message: {}", status.message());
            assert!(
                status.message().contains(needle),
                "message {:?} lacks {needle:?}",
                status.message()
            );
        }
    }
}

/// `/metrics` in the Prometheus text format, parsed.
pub async fn scrape(bus: &Bus) -> exposition::Exposition {
    let text = reqwest::Client::new()
        .get(format!("{}/metrics", bus.url()))
        .header("accept", "text/plain;version=0.0.4")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    exposition::Exposition::parse(exposition::Format::Prometheus, &text).unwrap()
}

/// Messages a node handed straight to a waiting stream, by where they came
/// from (`agentbus_message_handovers_total`).
pub async fn handovers(bus: &Bus, from: &str) -> f64 {
    scrape(bus)
        .await
        .value("agentbus_message_handovers_total", &[("from", from)])
        .expect("the handovers counter")
}
