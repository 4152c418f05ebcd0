//! The `agentbus` command-line client as a user runs it: the real binary as
//! a subprocess against a real server, reading its stdout, stderr and exit code.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

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
