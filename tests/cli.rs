//! The `agentbus` command-line client as a user runs it: the real binary as
//! a subprocess against a real server, reading its stdout, stderr and exit code.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use agentbus::pb;
use common::Bus;
use serde_json::{Value, json};

const ORCHESTRATOR: &str = "claude-code://orchestrator";
const BACKEND: &str = "opencode://backend";
const FRONTEND: &str = "codex://frontend";

/// What one run of the client printed and how it exited.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The single JSON object a successful unary command prints.
    #[track_caller]
    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "exit code; stderr: {}", self.stderr);
        assert!(self.stderr.is_empty(), "stderr: {}", self.stderr);
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }

    /// Asserts `agentbus: CODE: ...needle...` on stderr, nothing on stdout,
    /// and the exit code.
    #[track_caller]
    fn fails(&self, exit: i32, code_name: &str, needle: &str) {
        assert_eq!(self.code, exit, "exit code; stderr: {}", self.stderr);
        assert_eq!(self.stdout, "", "stdout of a failed command");
        let prefix = format!("agentbus: {code_name}: ");
        assert!(
            self.stderr.starts_with(&prefix) && self.stderr.contains(needle) && self.stderr.lines().count() == 1,
            "stderr {:?} is not one line starting {prefix:?} containing {needle:?}",
            self.stderr
        );
    }
}

/// The client binary, with no AGENT_BUS_* settings inherited from the test's
/// environment.
fn agentbus() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_agentbus"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("AGENT_BUS_")) {
        command.env_remove(name);
    }
    command
}

fn run(mut command: Command, stdin: &str) -> Run {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn agentbus");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    Run {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// `agentbus ARGS --addr <bus>`.
fn cli(bus: &Bus, args: &[&str]) -> Run {
    cli_stdin(bus, args, "")
}

fn cli_stdin(bus: &Bus, args: &[&str], stdin: &str) -> Run {
    let mut command = agentbus();
    command.args(args).args(["--addr", &bus.url()]);
    run(command, stdin)
}

/// A client process whose stdout is read line by line as it comes.
struct Stream {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Stream {
    fn spawn(bus: &Bus, args: &[&str]) -> Stream {
        Self::spawn_reading(bus, args, usize::MAX)
    }

    /// Reads `limit` lines, then closes its end of the pipe, as `head` does.
    fn spawn_reading(bus: &Bus, args: &[&str], limit: usize) -> Stream {
        let mut child = agentbus()
            .args(args)
            .args(["--addr", &bus.url()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn agentbus");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok).take(limit) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Stream { child, lines }
    }

    #[track_caller]
    fn next(&self) -> Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a line within 10s");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    fn assert_quiet(&self, wait: Duration) {
        if let Ok(line) = self.lines.recv_timeout(wait) {
            panic!("unexpected line: {line}");
        }
    }

    /// Waits for the process to exit on its own; its exit code and stderr.
    fn wait(mut self, timeout: Duration) -> (i32, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "still running after {timeout:?}");
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut self.child.stderr.take().unwrap(), &mut stderr).unwrap();
        (status.code().expect("exited, not killed"), stderr)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn sessions_from_create_to_complete_and_terminate() {
    let bus = Bus::start(&["--store", "memory"]).await;

    let created = cli(
        &bus,
        &[
            "sessions",
            "create",
            "--id",
            "sess_cli_1",
            "--orchestrator",
            ORCHESTRATOR,
            "--participant",
            &format!("{BACKEND}=implementer"),
            "--participant",
            FRONTEND,
            "--step",
            "design",
            "--step",
            "review",
            "--context",
            r#"{"project": "feature/notifications", "requirements": ["audit logs"]}"#,
        ],
    )
    .json();
    let session = &created["session"];
    assert_eq!(session["session_id"], "sess_cli_1");
    assert_eq!(session["state"], "active");
    assert_eq!(session["version"], 1);
    let roles: Vec<_> = session["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["agent_id"].as_str().unwrap(), p["role"].as_str().unwrap()))
        .collect();
    assert_eq!(
        roles,
        [
            (ORCHESTRATOR, "orchestrator"),
            (BACKEND, "implementer"),
            (FRONTEND, "participant")
        ]
    );
    assert_eq!(session["workflow"]["current_step"], "design");
    assert_eq!(session["workflow"]["pending_steps"], json!(["review"]));
    assert_eq!(session["shared_context"]["requirements"], json!(["audit logs"]));

    // A whole request in the dialect on stdin; --id overrides its session_id.
    let request = json!({
        "session_id": "ignored",
        "orchestrator": ORCHESTRATOR,
        "participants": [{"agent_id": "claude-code://qa", "role": "reviewer"}],
        "steps": [{"name": "review", "required_agents": ["claude-code://qa"], "estimated_duration": "90s"}],
    });
    let second = cli_stdin(
        &bus,
        &["sessions", "create", "--json", "-", "--id", "sess_cli_2"],
        &request.to_string(),
    )
    .json();
    assert_eq!(second["session"]["session_id"], "sess_cli_2");
    assert_eq!(second["session"]["workflow"]["steps"][0]["estimated_duration"], "90s");

    let fetched = cli(&bus, &["sessions", "get", "sess_cli_1"]).json();
    assert_eq!(fetched, created);

    let ids = |list: &Value| -> Vec<String> {
        list["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["session_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let active = cli(&bus, &["sessions", "list", "--state", "active"]).json();
    assert_eq!(ids(&active), ["sess_cli_1", "sess_cli_2"]);
    let backend = cli(&bus, &["sessions", "list", "--participant", BACKEND]).json();
    assert_eq!(ids(&backend), ["sess_cli_1"]);
    let page = cli(&bus, &["sessions", "list", "--page-size", "1"]).json();
    assert_eq!(ids(&page), ["sess_cli_1"]);
    let token = page["next_page_token"].as_str().unwrap();
    assert!(!token.is_empty());
    let next = cli(&bus, &["sessions", "list", "--page-size", "1", "--page-token", token]).json();
    assert_eq!(ids(&next), ["sess_cli_2"]);
    let all = cli(&bus, &["sessions", "list", "--page-size", "1", "--all"]).json();
    assert_eq!(ids(&all), ["sess_cli_1", "sess_cli_2"]);
    assert_eq!(all["next_page_token"], "");

    let completed = cli(
        &bus,
        &[
            "sessions",
            "complete",
            "sess_cli_1",
            "--summary",
            "All tasks completed successfully",
            "--artifact",
            "s3://artifacts/build.zip",
            "--artifact",
            "s3://artifacts/report.html",
            "--expected-version",
            "1",
        ],
    )
    .json();
    assert_eq!(completed["session"]["state"], "completed");
    assert_eq!(completed["session"]["summary"], "All tasks completed successfully");
    assert_eq!(
        completed["session"]["artifacts"],
        json!(["s3://artifacts/build.zip", "s3://artifacts/report.html"])
    );
    cli(&bus, &["sessions", "complete", "sess_cli_1"]).fails(4, "FAILED_PRECONDITION", "completed");

    cli(
        &bus,
        &[
            "sessions",
            "terminate",
            "sess_cli_2",
            "--reason",
            "timeout",
            "--expected-version",
            "7",
        ],
    )
    .fails(4, "ABORTED", "nothing was changed");
    let terminated = cli(
        &bus,
        &[
            "sessions",
            "terminate",
            "sess_cli_2",
            "--reason",
            "timeout",
            "--details",
            "Frontend agent offline",
        ],
    )
    .json();
    assert_eq!(terminated["session"]["state"], "terminated");
    assert_eq!(terminated["session"]["termination_reason"], "timeout");
    assert_eq!(terminated["session"]["termination_details"], "Frontend agent offline");

    let ended = cli(
        &bus,
        &["sessions", "list", "--state", "completed", "--state", "TERMINATED"],
    )
    .json();
    assert_eq!(ids(&ended), ["sess_cli_1", "sess_cli_2"]);
    assert_eq!(
        ids(&cli(&bus, &["sessions", "list", "--state", "active"]).json()).len(),
        0
    );
}

#[tokio::test]
async fn errors_name_the_grpc_code_and_exit_with_its_code() {
    let bus = Bus::start(&["--store", "memory"]).await;

    cli(&bus, &["sessions", "get", "sess_missing"]).fails(3, "NOT_FOUND", "sess_missing");
    // Rejected by the bus, which names the field.
    cli(&bus, &["sessions", "create", "--orchestrator", "not an agent id"]).fails(
        2,
        "INVALID_ARGUMENT",
        "orchestrator",
    );
    // Rejected before connecting, naming the flag.
    cli(
        &bus,
        &["sessions", "create", "--orchestrator", ORCHESTRATOR, "--context", "[1]"],
    )
    .fails(2, "INVALID_ARGUMENT", "--context: expected a JSON object");
    cli_stdin(&bus, &["sessions", "create", "--json", "-"], r#"{"colour": "red"}"#).fails(
        2,
        "INVALID_ARGUMENT",
        "--json: colour: unknown field",
    );

    // Usage errors are clap's, with its exit code 2.
    let usage = cli(&bus, &["sessions", "terminate", "sess_x"]);
    assert_eq!(usage.code, 2);
    assert!(usage.stderr.contains("--reason"), "{}", usage.stderr);
    let word = cli(&bus, &["sessions", "list", "--state", "sleeping"]);
    assert_eq!(word.code, 2);
    assert!(
        word.stderr
            .contains("expected one of: active, completed, terminated, expired"),
        "{}",
        word.stderr
    );

    // Nothing listens on a port we just freed.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut command = agentbus();
    command.args(["sessions", "get", "sess_x", "--addr", &free.to_string()]);
    run(command, "").fails(6, "UNAVAILABLE", &format!("cannot connect to http://{free}"));
}

#[tokio::test]
async fn tokens_are_issued_used_listed_and_revoked() {
    let bus = Bus::start(&["--store", "memory", "--api-key", "s3cret"]).await;
    let admin = |args: &[&str]| cli(&bus, &[args, &["--api-key", "s3cret"]].concat());
    let issued = admin(&[
        "tokens",
        "issue",
        "opencode://backend",
        "--ttl",
        "1h",
        "--description",
        "ci",
    ])
    .json();
    let token = issued["token"].as_str().unwrap();
    let token_id = issued["token_id"].as_str().unwrap();
    assert!(token.starts_with("abt_"), "{issued}");

    let registered = cli(
        &bus,
        &["agents", "register", "--id", "opencode://backend", "--token", token],
    )
    .json();
    assert_eq!(registered["created"], true);
    cli(&bus, &["agents", "register", "--id", "codex://other", "--token", token]).fails(
        5,
        "PERMISSION_DENIED",
        "is not the caller opencode://backend",
    );
    cli(&bus, &["tokens", "list", "opencode://backend", "--token", token]).fails(5, "PERMISSION_DENIED", "admin");

    let listed = admin(&["tokens", "list", "opencode://backend"]).json();
    assert_eq!(listed["tokens"][0]["token_id"], token_id);
    assert_eq!(listed["tokens"][0]["description"], "ci");
    assert!(!listed.to_string().contains(token), "the token itself is never listed");
    admin(&["tokens", "revoke", token_id, "--agent", "opencode://backend"]).json();
    cli(&bus, &["agents", "list", "--token", token]).fails(5, "UNAUTHENTICATED", "invalid agent token");
    admin(&["tokens", "revoke", token_id]).fails(3, "NOT_FOUND", token_id);

    let both = cli(&bus, &["agents", "list", "--token", token, "--api-key", "s3cret"]);
    assert_eq!(both.code, 2, "{}", both.stderr);
}

#[tokio::test]
async fn the_api_key_goes_with_every_call() {
    let bus = Bus::start(&["--store", "memory", "--api-key", "s3cret"]).await;

    cli(&bus, &["sessions", "list"]).fails(5, "UNAUTHENTICATED", "missing API key");
    cli(&bus, &["sessions", "get", "sess_x", "--api-key", "wrong"]).fails(5, "UNAUTHENTICATED", "invalid API key");

    // From the environment, with the address as host:port.
    let mut command = agentbus();
    command
        .args(["sessions", "list"])
        .env("AGENT_BUS_URL", bus.addr.to_string())
        .env("AGENT_BUS_API_KEY", "s3cret");
    let listed = run(command, "").json();
    assert_eq!(listed, json!({"sessions": [], "next_page_token": ""}));
}

#[tokio::test]
async fn agents_register_list_get_unregister() {
    let bus = Bus::start(&["--store", "memory"]).await;

    let registered = cli(
        &bus,
        &[
            "agents",
            "register",
            "--id",
            BACKEND,
            "--capability",
            "languages=rust",
            "--capability",
            "implementation",
        ],
    )
    .json();
    assert_eq!(registered["created"], true);
    let descriptor = &registered["agent"]["descriptor"];
    assert_eq!(descriptor["framework"], "opencode");
    assert_eq!(descriptor["capabilities"]["languages"], json!(["rust"]));
    assert_eq!(descriptor["capabilities"]["optimal_tasks"], json!(["implementation"]));

    let frontend = json!({
        "agent_id": FRONTEND,
        "capabilities": {"languages": ["typescript"], "performance_profile": {"avg_response_time": "2.5s"}},
        "metadata": {"version": "1.2.0", "tags": ["ui"]},
    });
    let from_json = cli_stdin(&bus, &["agents", "register", "--json", "-"], &frontend.to_string()).json();
    assert_eq!(from_json["agent"]["descriptor"]["metadata"]["tags"], json!(["ui"]));
    assert_eq!(
        from_json["agent"]["descriptor"]["capabilities"]["performance_profile"]["avg_response_time"],
        "2.5s"
    );

    cli(&bus, &["agents", "register", "--id", BACKEND]).fails(4, "ALREADY_EXISTS", BACKEND);
    let updated = cli(
        &bus,
        &[
            "agents",
            "register",
            "--id",
            BACKEND,
            "--capability",
            "tools=cargo",
            "--update",
        ],
    )
    .json();
    assert_eq!(updated["created"], false);
    assert_eq!(
        updated["agent"]["descriptor"]["capabilities"]["tools"],
        json!(["cargo"])
    );
    cli(
        &bus,
        &["agents", "register", "--id", BACKEND, "--capability", "colour=red"],
    )
    .fails(2, "INVALID_ARGUMENT", "--capability: unknown list \"colour\"");

    let ids = |list: &Value| -> Vec<String> {
        list["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["descriptor"]["agent_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&cli(&bus, &["agents", "list"]).json()), [FRONTEND, BACKEND]);
    assert_eq!(
        ids(&cli(&bus, &["agents", "list", "--capability", "typescript"]).json()),
        [FRONTEND]
    );
    assert_eq!(
        ids(&cli(&bus, &["agents", "list", "--framework", "opencode"]).json()),
        [BACKEND]
    );
    assert_eq!(
        ids(&cli(
            &bus,
            &["agents", "list", "--online", "false", "--page-size", "1", "--all"]
        )
        .json()),
        [FRONTEND, BACKEND]
    );

    let got = cli(&bus, &["agents", "get", BACKEND]).json();
    assert_eq!(got["agent"]["online"], false);
    assert_eq!(got["agent"]["inbox_depth"], 0);

    assert_eq!(
        cli(&bus, &["agents", "unregister", FRONTEND]).json()["dead_lettered"],
        0
    );
    cli(&bus, &["agents", "get", FRONTEND]).fails(3, "NOT_FOUND", FRONTEND);
    cli(&bus, &["agents", "unregister", FRONTEND]).fails(3, "NOT_FOUND", FRONTEND);
    assert_eq!(ids(&cli(&bus, &["agents", "list"]).json()), [BACKEND]);
}

async fn message_state(bus: &Bus, message_id: &str) -> (pb::MessageState, u32) {
    let status = bus
        .messages()
        .await
        .get_message(pb::GetMessageRequest {
            message_id: message_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    (status.state(), status.total_attempts)
}

#[tokio::test]
async fn send_then_receive_acknowledges_each_delivery() {
    let bus = Bus::start(&["--store", "memory"]).await;
    for id in [ORCHESTRATOR, BACKEND] {
        cli(&bus, &["agents", "register", "--id", id]).json();
    }

    let sent = cli(
        &bus,
        &[
            "send",
            "--from",
            ORCHESTRATOR,
            "--to",
            BACKEND,
            "--type",
            "task_request",
            "--priority",
            "high",
            "--payload",
            r#"{"task_type": "implementation"}"#,
            "--id",
            "task_impl_backend",
            "--task-id",
            "impl",
            "--timeout",
            "300s",
        ],
    )
    .json();
    assert_eq!(
        sent,
        json!({"accepted": true, "message_id": "task_impl_backend", "state": "queued"})
    );

    let received = cli(&bus, &["receive", "--agent", BACKEND, "--count", "1"]);
    let delivery = received.json();
    assert_eq!(delivery["attempt"], 1);
    let message = &delivery["message"];
    assert_eq!(message["message_id"], "task_impl_backend");
    assert_eq!(message["sender"]["agent_id"], ORCHESTRATOR);
    assert_eq!(message["message_type"], "task_request");
    assert_eq!(message["priority"], "high");
    assert_eq!(message["task_id"], "impl");
    assert_eq!(message["routing"]["timeout"], "300s");
    assert_eq!(message["payload"], json!({"task_type": "implementation"}));
    assert_eq!(
        message_state(&bus, "task_impl_backend").await,
        (pb::MessageState::Acked, 1)
    );

    // A whole message from stdin; --no-ack leaves it to come again.
    let status_update = json!({
        "message_id": "progress_1",
        "sender": {"agent_id": BACKEND},
        "recipient": {"agent_id": ORCHESTRATOR},
        "message_type": "status_update",
        "payload": {"progress": 0.5},
    });
    let sent = cli_stdin(&bus, &["send", "--json", "-"], &status_update.to_string()).json();
    assert_eq!(sent["message_id"], "progress_1");
    let unacked = cli(&bus, &["receive", "--agent", ORCHESTRATOR, "--count", "1", "--no-ack"]).json();
    assert_eq!(unacked["message"]["payload"], json!({"progress": 0.5}));
    let (state, attempts) = message_state(&bus, "progress_1").await;
    assert_ne!(state, pb::MessageState::Acked);
    assert_eq!(attempts, 1);
    let again = cli(&bus, &["receive", "--agent", ORCHESTRATOR, "--count", "1"]).json();
    assert_eq!(again["message"]["message_id"], "progress_1");
    assert_eq!(again["attempt"], 2);
    assert_eq!(message_state(&bus, "progress_1").await.0, pb::MessageState::Acked);

    cli(
        &bus,
        &[
            "send",
            "--from",
            ORCHESTRATOR,
            "--to",
            BACKEND,
            "--type",
            "task_request",
            "--payload",
            "hello",
        ],
    )
    .fails(2, "INVALID_ARGUMENT", "--payload: not valid JSON");
    cli(
        &bus,
        &[
            "send",
            "--from",
            ORCHESTRATOR,
            "--to",
            "opencode://nobody",
            "--type",
            "task_request",
        ],
    )
    .fails(3, "NOT_FOUND", "opencode://nobody");
}

#[tokio::test]
async fn a_sync_send_prints_the_reply_or_runs_out_of_time() {
    let bus = Bus::start(&["--store", "memory"]).await;
    for id in [ORCHESTRATOR, BACKEND] {
        cli(&bus, &["agents", "register", "--id", id]).json();
    }
    let request = [
        "send",
        "--from",
        ORCHESTRATOR,
        "--to",
        BACKEND,
        "--type",
        "task_request",
        "--payload",
        r#"{"question": "ready?"}"#,
        "--sync",
    ];

    let mut waiting = agentbus();
    waiting
        .args(request)
        .args(["--id", "ask_1", "--addr", &bus.url()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let waiting = waiting.spawn().unwrap();
    let question = cli(&bus, &["receive", "--agent", BACKEND, "--count", "1"]).json();
    assert_eq!(question["message"]["message_id"], "ask_1");
    cli(
        &bus,
        &[
            "send",
            "--from",
            BACKEND,
            "--to",
            ORCHESTRATOR,
            "--type",
            "task_response",
            "--in-reply-to",
            "ask_1",
            "--payload",
            r#"{"answer": "yes"}"#,
        ],
    )
    .json();
    let output = waiting.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let answered: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answered["message_id"], "ask_1");
    assert_eq!(answered["reply"]["payload"], json!({"answer": "yes"}));
    assert_eq!(answered["reply"]["in_reply_to"], "ask_1");

    // Nobody answers this one within the call's deadline.
    let started = Instant::now();
    let mut args = request.to_vec();
    args.extend(["--rpc-timeout", "300ms"]);
    cli(&bus, &args).fails(7, "DEADLINE_EXCEEDED", "no reply");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn watch_prints_each_event_as_one_json_line() {
    let bus = Bus::start(&["--store", "memory"]).await;
    cli(
        &bus,
        &["sessions", "create", "--id", "sess_w1", "--orchestrator", ORCHESTRATOR],
    )
    .json();

    let everything = Stream::spawn(&bus, &["watch", "--after", "0"]);
    let completions = Stream::spawn(
        &bus,
        &[
            "watch",
            "--after",
            "0",
            "--session",
            "sess_w2",
            "--type",
            "session_completed",
        ],
    );
    let replayed = everything.next();
    assert_eq!(replayed["sequence"], 1);
    assert_eq!(replayed["type"], "session_created");
    assert_eq!(replayed["session_id"], "sess_w1");
    assert_eq!(replayed["session"]["orchestrator"], ORCHESTRATOR);

    cli(
        &bus,
        &["sessions", "create", "--id", "sess_w2", "--orchestrator", ORCHESTRATOR],
    )
    .json();
    cli(&bus, &["sessions", "complete", "sess_w1"]).json();
    cli(&bus, &["sessions", "complete", "sess_w2", "--summary", "done"]).json();
    let live: Vec<_> = (0..3).map(|_| everything.next()).collect();
    let seen: Vec<_> = live
        .iter()
        .map(|e| {
            (
                e["sequence"].as_u64().unwrap(),
                e["type"].as_str().unwrap(),
                e["session_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (2, "session_created", "sess_w2"),
            (3, "session_completed", "sess_w1"),
            (4, "session_completed", "sess_w2")
        ]
    );
    let completed = completions.next();
    assert_eq!(
        (completed["sequence"].as_u64(), completed["session"]["summary"].as_str()),
        (Some(4), Some("done"))
    );
    completions.assert_quiet(Duration::from_millis(200));
}

#[tokio::test]
async fn watch_ends_cleanly_when_its_reader_goes_or_on_ctrl_c() {
    let bus = Bus::start(&["--store", "memory", "--heartbeat-interval", "100ms"]).await;
    cli(
        &bus,
        &["sessions", "create", "--id", "sess_h", "--orchestrator", ORCHESTRATOR],
    )
    .json();

    // `agentbus watch | head -1`: after one event nothing else comes, yet
    // watch must notice that its reader has gone and exit quietly.
    let head = Stream::spawn_reading(&bus, &["watch", "--after", "0"], 1);
    assert_eq!(head.next()["session_id"], "sess_h");
    let (code, stderr) = head.wait(Duration::from_secs(5));
    assert_eq!((code, stderr.as_str()), (0, ""));

    // Heartbeats (every 100ms here) are not printed; Ctrl-C ends it with 0.
    // Its first line shows it is running, with its signal handler in place.
    let interrupted = Stream::spawn(&bus, &["watch", "--after", "0"]);
    assert_eq!(interrupted.next()["sequence"], 1);
    interrupted.assert_quiet(Duration::from_millis(350));
    // SAFETY: kill(2) on the pid of a child we spawned and still own.
    let rc = unsafe { libc::kill(interrupted.child.id() as i32, libc::SIGINT) };
    assert_eq!(rc, 0);
    let (code, stderr) = interrupted.wait(Duration::from_secs(5));
    assert_eq!((code, stderr.as_str()), (0, ""));

    let future = cli(&bus, &["watch", "--after", "99"]);
    future.fails(2, "OUT_OF_RANGE", "99");
}

#[tokio::test]
async fn watch_reconnect_resumes_after_a_restart_without_gaps() {
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("--listen=127.0.0.1:{port}");
    let bus = Bus::start_in(data.path(), &[&listen]).await;
    cli(
        &bus,
        &["sessions", "create", "--id", "sess_r1", "--orchestrator", ORCHESTRATOR],
    )
    .json();

    let watch = Stream::spawn(&bus, &["watch", "--after", "0", "--reconnect"]);
    assert_eq!(watch.next()["sequence"], 1);
    drop(bus); // kill -9
    let bus = Bus::start_in(data.path(), &[&listen]).await;
    cli(
        &bus,
        &["sessions", "create", "--id", "sess_r2", "--orchestrator", ORCHESTRATOR],
    )
    .json();
    let resumed = watch.next();
    assert_eq!(
        (resumed["sequence"].as_u64(), resumed["session_id"].as_str()),
        (Some(2), Some("sess_r2"))
    );
    watch.assert_quiet(Duration::from_millis(200));
}
