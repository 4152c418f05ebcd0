use std::path::{Path, PathBuf};

use super::print::redact_password;
use super::*;

fn environment(env: &[(&str, &str)]) -> Environment {
    let vars = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    Environment::new(vars, ["AGENT_BUS_URL".to_string(), "AGENT_BUS_CONFIG".to_string()])
}

fn load_with_sources(args: &ServeArgs, env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    Config::load(args, &environment(env))
}

fn load(args: &ServeArgs, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    load_with_sources(args, env).map(|loaded| loaded.config)
}

/// `text` as the file of `--config`, in `dir`.
fn with_file(dir: &tempfile::TempDir, text: &str) -> ServeArgs {
    let file = dir.path().join("bus.toml");
    std::fs::write(&file, text).unwrap();
    ServeArgs {
        config: Some(file),
        ..Default::default()
    }
}

#[test]
fn defaults_mirror_the_prototype() {
    let config = load(&ServeArgs::default(), &[]).unwrap();
    assert_eq!(config.server.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.server.heartbeat_interval, Duration::from_secs(30));
    assert_eq!(config.sessions.session_idle_timeout, Duration::from_secs(3600));
    assert_eq!(config.sessions.max_participants, 10);
    assert_eq!(config.storage.store, StoreKind::Sqlite);
}

#[test]
fn flags_beat_env_beat_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bus.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:9000\"\nmax_participants = 3\nheartbeat_interval = \"5s\"\n",
    )
    .unwrap();
    let mut args = ServeArgs {
        config: Some(file),
        ..Default::default()
    };
    let config = load(&args, &[]).unwrap();
    assert_eq!((config.server.listen.port, config.sessions.max_participants), (9000, 3));
    assert_eq!(config.server.heartbeat_interval, Duration::from_secs(5));

    let config = load(&args, &[("AGENT_BUS_PORT", "9100")]).unwrap();
    assert_eq!(config.server.listen, "127.0.0.1:9100".parse().unwrap());

    args.listen = Some("127.0.0.1:9200".parse().unwrap());
    let config = load(&args, &[("AGENT_BUS_PORT", "9100")]).unwrap();
    assert_eq!(config.server.listen.port, 9200);
}

#[test]
fn bad_values_are_named() {
    let err = load(&ServeArgs::default(), &[("AGENT_BUS_PORT", "http")]).unwrap_err();
    assert!(err.to_string().contains("AGENT_BUS_PORT"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bus.toml");
    std::fs::write(&file, "heartbeat_interval = \"30\"\n").unwrap();
    let err = load(
        &ServeArgs {
            config: Some(file.clone()),
            ..Default::default()
        },
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("heartbeat_interval"), "{err}");
    std::fs::write(&file, "no_such_setting = 1\n").unwrap();
    assert!(
        load(
            &ServeArgs {
                config: Some(file),
                ..Default::default()
            },
            &[]
        )
        .is_err()
    );
}

#[test]
fn limits_are_bounded_both_ways() {
    let too_long = ServeArgs {
        heartbeat_interval: Some(Duration::from_secs(86_400 * 400)),
        ..Default::default()
    };
    assert!(
        load(&too_long, &[])
            .unwrap_err()
            .to_string()
            .contains("heartbeat_interval must be between")
    );
    let context = ServeArgs {
        max_context_bytes: Some(3 * 1024 * 1024),
        ..Default::default()
    };
    assert!(
        load(&context, &[])
            .unwrap_err()
            .to_string()
            .contains("max_context_bytes")
    );
    let buffer = ServeArgs {
        watch_buffer: Some(usize::MAX),
        ..Default::default()
    };
    assert!(load(&buffer, &[]).unwrap_err().to_string().contains("watch_buffer"));
}

#[test]
fn postgres_needs_a_database_url_from_a_flag_the_env_or_the_file() {
    let postgres = ServeArgs {
        store: Some(StoreKind::Postgres),
        ..Default::default()
    };
    let err = load(&postgres, &[]).unwrap_err().to_string();
    assert!(err.contains("--database-url"), "{err}");
    let with_url = ServeArgs {
        database_url: Some("postgres://bus:secret@db:5432/agentbus".into()),
        ..postgres.clone()
    };
    let config = load(&with_url, &[]).unwrap();
    assert_eq!(config.storage.store, StoreKind::Postgres);
    assert_eq!(config.storage.database_pool_size, 16);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bus.toml");
    std::fs::write(
        &file,
        "store = \"postgres\"\ndatabase_url = \"postgres://db/bus\"\ndatabase_pool_size = 4\n",
    )
    .unwrap();
    let from_file = ServeArgs {
        config: Some(file),
        ..Default::default()
    };
    let config = load(&from_file, &[]).unwrap();
    assert_eq!(config.storage.database_url.as_deref(), Some("postgres://db/bus"));
    assert_eq!(config.storage.database_pool_size, 4);
    let bad = ServeArgs {
        database_url: Some("postgres://db:notaport/bus".into()),
        ..postgres
    };
    let err = load(&bad, &[]).unwrap_err().to_string();
    assert!(err.contains("database_url is not a PostgreSQL URL"), "{err}");
    let zero = ServeArgs {
        database_pool_size: Some(0),
        ..Default::default()
    };
    assert!(load(&zero, &[]).unwrap_err().to_string().contains("database_pool_size"));
}

#[test]
fn insecure_from_a_file_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bus.toml");
    std::fs::write(&file, "insecure = true\n").unwrap();
    let args = ServeArgs {
        config: Some(file),
        ..Default::default()
    };
    assert!(load(&args, &[]).unwrap().auth.insecure);
    let off = ServeArgs {
        insecure: Some(false),
        ..args
    };
    assert!(!load(&off, &[]).unwrap().auth.insecure);
}

#[test]
fn public_listen_needs_a_key_or_insecure() {
    let err = load(&ServeArgs::default(), &[("AGENT_BUS_HOST", "0.0.0.0")]).unwrap_err();
    assert!(err.to_string().contains("--insecure"), "{err}");
    let args = ServeArgs {
        api_key: Some("k".into()),
        ..Default::default()
    };
    assert!(load(&args, &[("AGENT_BUS_HOST", "0.0.0.0")]).is_ok());
    let args = ServeArgs {
        insecure: Some(true),
        ..Default::default()
    };
    assert!(load(&args, &[("AGENT_BUS_HOST", "0.0.0.0")]).is_ok());
}

#[test]
fn listen_takes_host_names_and_checks_what_they_resolve_to() {
    let named = ServeArgs {
        listen: Some("localhost:0".parse().unwrap()),
        ..Default::default()
    };
    let config = load(&named, &[]).unwrap();
    assert_eq!(config.server.listen.to_string(), "localhost:0");
    assert!(
        config
            .server
            .listen
            .resolve()
            .unwrap()
            .iter()
            .all(|a| a.ip().is_loopback())
    );
    let v6: ListenAddr = "[::1]:8080".parse().unwrap();
    assert_eq!(
        (v6.host.as_str(), v6.port, v6.to_string()),
        ("::1", 8080, "[::1]:8080".into())
    );
    for bad in ["localhost", "::1:8080", ":8080", "host:99999", "[::1]8080", "a b:1"] {
        assert!(bad.parse::<ListenAddr>().is_err(), "{bad}");
    }
    let unresolvable = ServeArgs {
        listen: Some("no-such-host.invalid:8080".parse().unwrap()),
        ..Default::default()
    };
    let err = load(&unresolvable, &[]).unwrap_err();
    assert!(err.to_string().contains("cannot resolve the listen address"), "{err}");
}

/// Each setting of `Config` by its file key, as the file would spell it;
/// null for the optional ones, which have no default. The file is flat: the
/// subsystems' settings side by side.
fn settings(config: &Config) -> serde_json::Map<String, serde_json::Value> {
    let serde_json::Value::Object(subsystems) = serde_json::to_value(config).unwrap() else {
        panic!("Config is not a table of subsystems");
    };
    let mut flat = serde_json::Map::new();
    for (subsystem, settings) in subsystems {
        let serde_json::Value::Object(settings) = settings else {
            panic!("{subsystem} is not a table of settings");
        };
        for (key, value) in settings {
            assert!(flat.insert(key.clone(), value).is_none(), "{key} is in two subsystems");
        }
    }
    flat
}

#[test]
fn the_example_config_lists_every_setting_with_its_default() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/agentbus.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let written: toml::Table = text.parse().unwrap();
    // `# key = value` lines: the optional settings, shown commented out.
    let commented: Vec<&str> = text
        .lines()
        .filter_map(|line| Some(line.strip_prefix("# ")?.split_once(" = ")?.0))
        .collect();
    let defaults = settings(&Config::default());
    for (key, default) in &defaults {
        if default.is_null() {
            assert!(
                commented.contains(&key.as_str()) && !written.contains_key(key),
                "{key} has no default: the example shows it commented out, `# {key} = ...`"
            );
        } else {
            assert!(
                written.contains_key(key),
                "deploy/agentbus.example.toml lacks the setting {key} (default {default})"
            );
        }
    }

    // Loaded by the real loader, the file gives the defaults, but for the
    // systemd unit's data directory.
    let from_file = |config: PathBuf| {
        let args = ServeArgs {
            config: Some(config),
            ..Default::default()
        };
        load(&args, &[]).map(|config| settings(&config))
    };
    let loaded = from_file(path).unwrap();
    for (key, default) in &defaults {
        let expected = match key.as_str() {
            "data_dir" => "/var/lib/agentbus".into(),
            _ => default.clone(),
        };
        assert_eq!(loaded[key], expected, "{key} in deploy/agentbus.example.toml");
    }

    // The commented-out examples are valid settings too.
    let dir = tempfile::tempdir().unwrap();
    let uncommented = dir.path().join("uncommented.toml");
    let text: String = text
        .lines()
        .map(|line| match line.strip_prefix("# ").and_then(|l| l.split_once(" = ")) {
            Some((key, _)) if defaults.get(key).is_some_and(serde_json::Value::is_null) => {
                format!("{}\n", &line[2..])
            }
            _ => format!("{line}\n"),
        })
        .collect();
    std::fs::write(&uncommented, text).unwrap();
    let all = from_file(uncommented).unwrap();
    for key in defaults.keys() {
        assert!(!all[key].is_null(), "{key} was not set by its commented-out example");
    }
}

#[test]
fn each_layer_overrides_the_one_below_for_a_nested_setting() {
    let dir = tempfile::tempdir().unwrap();
    let ack = |loaded: &Loaded| (loaded.config.delivery.ack_timeout, loaded.source("ack_timeout"));
    let loaded = load_with_sources(&ServeArgs::default(), &[]).unwrap();
    assert_eq!(ack(&loaded), (Duration::from_secs(30), "default".into()));

    let mut args = with_file(&dir, "ack_timeout = \"40s\"\n");
    let file = dir.path().join("bus.toml");
    let loaded = load_with_sources(&args, &[]).unwrap();
    assert_eq!(
        ack(&loaded),
        (Duration::from_secs(40), format!("file {}", file.display()))
    );

    let env = [("AGENT_BUS_ACK_TIMEOUT", "50s")];
    let loaded = load_with_sources(&args, &env).unwrap();
    assert_eq!(
        ack(&loaded),
        (Duration::from_secs(50), "env AGENT_BUS_ACK_TIMEOUT".into())
    );

    args.ack_timeout = Some(Duration::from_secs(60));
    let loaded = load_with_sources(&args, &env).unwrap();
    assert_eq!(ack(&loaded), (Duration::from_secs(60), "flag --ack-timeout".into()));
    // The other settings keep their own sources.
    assert_eq!(loaded.source("inbox_limit"), "default");
}

#[test]
fn env_values_are_read_as_their_setting_wants_them() {
    let env = [
        ("AGENT_BUS_INSECURE", "yes"),
        ("AGENT_BUS_MAX_PARTICIPANTS", "3"),
        ("AGENT_BUS_API_KEY", "12345"),
        ("AGENT_BUS_STORE", "memory"),
        ("AGENT_BUS_RETAIN_CLOSED", "1d"),
        ("AGENT_BUS_HOST", "[::1]"),
        // Empty counts as unset.
        ("AGENT_BUS_INBOX_LIMIT", ""),
    ];
    let loaded = load_with_sources(&ServeArgs::default(), &env).unwrap();
    let config = &loaded.config;
    assert!(config.auth.insecure);
    assert_eq!(config.sessions.max_participants, 3);
    assert_eq!(config.auth.api_key.as_deref(), Some("12345"));
    assert_eq!(config.storage.store, StoreKind::Memory);
    assert_eq!(config.retention.retain_closed, Duration::from_secs(86_400));
    assert_eq!(config.delivery.inbox_limit, 10_000);
    assert_eq!(config.server.listen.to_string(), "[::1]:8080");
    assert_eq!(loaded.source("listen"), "env AGENT_BUS_HOST");
    let both = [("AGENT_BUS_HOST", "localhost"), ("AGENT_BUS_PORT", "0")];
    let loaded = load_with_sources(&ServeArgs::default(), &both).unwrap();
    assert_eq!(loaded.source("listen"), "env AGENT_BUS_HOST and AGENT_BUS_PORT");
}

#[test]
fn unknown_keys_in_the_file_are_named_and_unknown_variables_reported() {
    let dir = tempfile::tempdir().unwrap();
    let err = load(&with_file(&dir, "ack_timout = \"1s\"\n"), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("bus.toml"), "{err}");
    assert!(
        err.contains("unknown setting \"ack_timout\" (did you mean ack_timeout?)"),
        "{err}"
    );
    let err = load(&with_file(&dir, "[delivery]\nack_timeout = \"1s\"\n"), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown setting \"delivery\""), "{err}");

    // Variables are shared with the client and other tools: not an error.
    let env = [
        ("AGENT_BUS_ACK_TIMOUT", "1s"),
        ("AGENT_BUS_URL", "http://bus:8080"),
        ("AGENT_BUS_CONFIG", "/nowhere"),
    ];
    let loaded = load_with_sources(&ServeArgs::default(), &env).unwrap();
    assert_eq!(loaded.ignored_env, ["AGENT_BUS_ACK_TIMOUT"]);
    assert!(
        loaded
            .print(PrintFormat::Toml)
            .contains("# ignored: AGENT_BUS_ACK_TIMOUT is not a setting")
    );
}

#[test]
fn bad_values_are_named_with_their_source() {
    let dir = tempfile::tempdir().unwrap();
    let args = with_file(&dir, "max_participants = \"many\"\n");
    let err = load(&args, &[]).unwrap_err().to_string();
    assert!(err.starts_with("max_participants (file "), "{err}");
    assert!(err.contains("bus.toml): "), "{err}");
    let err = load(&args, &[("AGENT_BUS_MAX_PARTICIPANTS", "lots")])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("max_participants (env AGENT_BUS_MAX_PARTICIPANTS): "),
        "{err}"
    );
    let err = load(&ServeArgs::default(), &[("AGENT_BUS_ACK_TIMEOUT", "30")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ack_timeout (env AGENT_BUS_ACK_TIMEOUT): \"30\" is not a duration"),
        "{err}"
    );
    let flag = ServeArgs {
        inbox_limit: Some(0),
        ..Default::default()
    };
    let err = load(&flag, &[]).unwrap_err().to_string();
    assert!(
        err.contains("inbox_limit must be between 1 and 10000000, got 0 (flag --inbox-limit)"),
        "{err}"
    );
}

#[test]
fn retention_keeps_forever_at_zero_and_otherwise_at_least_a_second() {
    let config = load(&ServeArgs::default(), &[]).unwrap();
    assert_eq!(config.retention.retain_closed, Duration::from_secs(7 * 86_400));
    assert_eq!(config.retention.retain_events, Duration::from_secs(30 * 86_400));
    let forever = [("AGENT_BUS_RETAIN_CLOSED", "0s"), ("AGENT_BUS_RETAIN_EVENTS", "1m")];
    let config = load(&ServeArgs::default(), &forever).unwrap();
    assert_eq!(config.retention.retain_closed, Duration::ZERO);
    assert_eq!(config.retention.retain_events, Duration::from_secs(60));
    let short = ServeArgs {
        retain_events: Some(Duration::from_millis(500)),
        ..Default::default()
    };
    let err = load(&short, &[]).unwrap_err().to_string();
    assert!(
        err.contains("retain_events must be 0s (keep forever) or between 1s"),
        "{err}"
    );
    assert!(err.contains("(flag --retain-events)"), "{err}");
}

#[test]
fn every_setting_has_a_flag_and_every_flag_a_setting() {
    use clap::CommandFactory;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let flags: Vec<String> = Cli::command()
        .get_arguments()
        .filter_map(|arg| arg.get_long().map(|long| long.replace('-', "_")))
        .filter(|flag| flag != "config")
        .collect();
    let mut keys: Vec<String> = settings(&Config::default()).keys().cloned().collect();
    keys.sort();
    let mut flags = flags;
    flags.sort();
    assert_eq!(flags, keys);
}

#[test]
fn print_shows_values_sources_and_no_secrets() {
    let args = ServeArgs {
        api_key: Some("s3cret-admin-key".into()),
        database_url: Some("postgres://bus:hunter2@db:5432/agentbus".into()),
        ..Default::default()
    };
    let loaded = load_with_sources(&args, &[("AGENT_BUS_INBOX_LIMIT", "7")]).unwrap();
    let text = loaded.print(PrintFormat::Toml);
    assert!(!text.contains("s3cret") && !text.contains("hunter2"), "{text}");
    assert!(
        text.contains("\n# api_key = \"***\"  # flag --api-key; redacted\n"),
        "{text}"
    );
    assert!(
        text.contains("\n# database_url = \"postgres://bus:***@db:5432/agentbus\"  # flag --database-url"),
        "{text}"
    );
    assert!(
        text.contains("\ninbox_limit = 7  # env AGENT_BUS_INBOX_LIMIT\n"),
        "{text}"
    );
    assert!(text.contains("\nack_timeout = \"30s\"  # default\n"), "{text}");
    assert!(text.contains("\n# tls_cert is not set  # default\n"), "{text}");

    let json: serde_json::Value = serde_json::from_str(&loaded.print(PrintFormat::Json)).unwrap();
    assert!(!json.to_string().contains("s3cret") && !json.to_string().contains("hunter2"));
    assert_eq!(
        json["settings"]["inbox_limit"],
        serde_json::json!({"value": 7, "source": "env AGENT_BUS_INBOX_LIMIT"})
    );
    assert_eq!(json["settings"]["api_key"]["redacted"], true);
    assert_eq!(json["settings"]["tls_cert"]["value"], serde_json::Value::Null);
}

#[test]
fn printed_configuration_loads_back_to_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let args = ServeArgs {
        ack_timeout: Some(Duration::from_millis(1500)),
        store: Some(StoreKind::Memory),
        listen: Some("[::1]:0".parse().unwrap()),
        ..with_file(&dir, "retain_events = \"0s\"\ndata_dir = \"/tmp/x y\"\n")
    };
    let loaded = load_with_sources(&args, &[("AGENT_BUS_INSECURE", "on")]).unwrap();
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, loaded.print(PrintFormat::Toml)).unwrap();
    let again = load(
        &ServeArgs {
            config: Some(printed),
            ..Default::default()
        },
        &[],
    )
    .unwrap();
    assert_eq!(settings(&again), settings(&loaded.config));
}

#[test]
fn passwords_are_redacted_from_database_urls() {
    let cases = [
        ("postgres://bus:pw@db/agentbus", Some("postgres://bus:***@db/agentbus")),
        ("postgres://bus@db/agentbus", None),
        (
            "postgres://db/agentbus?user=bus&password=pw&sslmode=require",
            Some("postgres://db/agentbus?user=bus&password=***&sslmode=require"),
        ),
        (
            "host=db user=bus password='p w' dbname=agentbus",
            Some("host=db user=bus password=*** dbname=agentbus"),
        ),
        (
            "postgres://b%40s:p%3Aw@db:5432/x",
            Some("postgres://b%40s:***@db:5432/x"),
        ),
    ];
    for (url, expected) in cases {
        assert_eq!(redact_password(url).as_deref(), expected, "{url}");
    }
}
