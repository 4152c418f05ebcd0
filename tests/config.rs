//! `agentbus config print` as an operator runs it: the real binary with a
//! file, the environment and flags, reading what it prints and how it exits.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// The binary, with no AGENT_BUS_* variables inherited from the test's
/// environment.
fn agentbus() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_agentbus"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("AGENT_BUS_")) {
        command.env_remove(name);
    }
    command
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// `config print --format json --config FILE` with `env` and `flags`.
fn print_json(file: &Path, env: &[(&str, &str)], flags: &[&str]) -> Value {
    let mut command = agentbus();
    command
        .args(["config", "print", "--format", "json", "--config"])
        .arg(file);
    let output = command.args(flags).envs(env.iter().copied()).output().unwrap();
    serde_json::from_str(&stdout(&output)).unwrap()
}

#[test]
fn config_print_names_the_source_of_each_value_and_its_output_loads_back() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bus.toml");
    std::fs::write(
        &file,
        "max_participants = 4\nack_timeout = \"40s\"\nretain_events = \"0s\"\n",
    )
    .unwrap();
    let env = [("AGENT_BUS_INBOX_LIMIT", "9"), ("AGENT_BUS_PORT", "9090")];
    let flags = [
        "--ack-timeout",
        "45s",
        "--api-key",
        "s3cret-admin-key",
        "--store",
        "memory",
    ];

    let mut command = agentbus();
    command.args(["config", "print", "--config"]).arg(&file).args(flags);
    let printed = stdout(&command.envs(env).output().unwrap());
    let file_source = format!("# file {}\n", file.display());
    for line in [
        format!("\nmax_participants = 4  {file_source}"),
        format!("\nretain_events = \"0s\"  {file_source}"),
        "\ninbox_limit = 9  # env AGENT_BUS_INBOX_LIMIT\n".into(),
        "\nlisten = \"127.0.0.1:9090\"  # env AGENT_BUS_PORT\n".into(),
        "\nack_timeout = \"45s\"  # flag --ack-timeout\n".into(),
        "\nstore = \"memory\"  # flag --store\n".into(),
        "\nheartbeat_interval = \"30s\"  # default\n".into(),
        "\n# api_key = \"***\"  # flag --api-key; redacted\n".into(),
    ] {
        assert!(printed.contains(&line), "{line:?} not in:\n{printed}");
    }
    assert!(!printed.contains("s3cret"), "{printed}");

    // Loaded with --config, the output is the same configuration, but for
    // the secret it does not print.
    let printed_file = dir.path().join("printed.toml");
    std::fs::write(&printed_file, &printed).unwrap();
    let original = print_json(&file, &env, &flags);
    let again = print_json(&printed_file, &[], &[]);
    let settings = original["settings"].as_object().unwrap();
    assert_eq!(settings.len(), again["settings"].as_object().unwrap().len());
    for (key, setting) in settings {
        let reloaded = &again["settings"][key];
        if key == "api_key" {
            assert_eq!(reloaded["value"], Value::Null);
            continue;
        }
        assert_eq!(reloaded["value"], setting["value"], "{key}");
        if setting["source"] != "default" {
            assert_eq!(reloaded["source"], format!("file {}", printed_file.display()), "{key}");
        }
    }
    assert_eq!(original["settings"]["api_key"]["redacted"], true);
}

#[test]
fn config_print_fails_as_serve_would_on_an_invalid_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bus.toml");
    std::fs::write(&file, "ack_timout = \"1s\"\n").unwrap();
    for subcommand in [&["config", "print"][..], &["serve"]] {
        let output = agentbus().args(subcommand).arg("--config").arg(&file).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{subcommand:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{subcommand:?}");
        assert!(
            stderr.contains(&format!(
                "{}: unknown setting \"ack_timout\" (did you mean ack_timeout?)",
                file.display()
            )),
            "{stderr}"
        );
    }
    let output = agentbus()
        .args(["config", "print", "--max-participants", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("max_participants must be between 1 and 10000, got 0 (flag --max-participants)"),
        "{stderr}"
    );
}
