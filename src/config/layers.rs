//! The four layers of the configuration, merged by figment: defaults < file
//! < `AGENT_BUS_*` environment < flags.
//!
//! Every layer speaks the flat names of the file (`ack_timeout`); before it
//! is merged, each name is moved under its subsystem (`delivery.ack_timeout`)
//! as read off [`Config`]'s defaults, so there is no list of settings to keep
//! in step, and a name that is no setting is caught here with its source:
//! serde cannot deny unknown fields across `#[serde(flatten)]`, and nesting
//! keeps figment's error paths (which name the key and its provider) intact.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::{Config, ConfigError, ListenAddr, ServeArgs};

const PREFIX: &str = "AGENT_BUS_";
/// The two halves of `listen`, read besides `AGENT_BUS_LISTEN`.
const HOST: &str = "AGENT_BUS_HOST";
const PORT: &str = "AGENT_BUS_PORT";

/// Provider names, as [`Loaded::source`] shows them.
const DEFAULT: &str = "default";
const FILE: &str = "file";
const ENV: &str = "env";
const FLAG: &str = "flag";

/// The `AGENT_BUS_*` variables the configuration is read from.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    vars: BTreeMap<String, String>,
    /// Variables of the binary's other commands and flags (the client's
    /// `AGENT_BUS_URL`, `AGENT_BUS_CONFIG`...): no setting, and no typo.
    not_settings: BTreeSet<String>,
}

impl Environment {
    /// The process environment's `AGENT_BUS_*` variables; `not_settings`
    /// names those that other commands and flags read.
    pub fn from_process(not_settings: impl IntoIterator<Item = String>) -> Self {
        let vars = std::env::vars_os().filter_map(|(name, value)| {
            let name = name.into_string().ok()?;
            Some((name, value.to_string_lossy().into_owned()))
        });
        Self::new(vars, not_settings)
    }

    pub fn new(
        vars: impl IntoIterator<Item = (String, String)>,
        not_settings: impl IntoIterator<Item = String>,
    ) -> Self {
        Self {
            // An empty variable counts as unset, as it does for clap.
            vars: vars
                .into_iter()
                .filter(|(name, value)| name.starts_with(PREFIX) && !value.is_empty())
                .collect(),
            not_settings: not_settings.into_iter().collect(),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

/// A resolved, valid configuration and where each of its values came from.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// `AGENT_BUS_*` variables that are neither a setting nor read by any
    /// other command: probably misspelt. They are ignored (the environment
    /// is shared with the client, scripts and other tools), but reported.
    pub ignored_env: Vec<String>,
    figment: Figment,
    settings: Settings,
}

impl Loaded {
    /// Where the value of the setting `key` came from: `default`,
    /// `file /etc/agentbus.toml`, `env AGENT_BUS_ACK_TIMEOUT`, `flag --ack-timeout`.
    pub fn source(&self, key: &str) -> String {
        let path = self.settings.path(key);
        match self.figment.find_metadata(&path) {
            Some(metadata) => describe(metadata, key),
            None => DEFAULT.into(),
        }
    }

    /// Each setting's subsystem and key, in the order `config print` lists them.
    pub(super) fn settings(&self) -> impl Iterator<Item = (&str, &str)> {
        self.settings.ordered()
    }
}

/// Which subsystem each setting (by its flat file key) belongs to.
#[derive(Debug, Clone)]
struct Settings {
    section_of: BTreeMap<String, String>,
}

impl Settings {
    fn of(defaults: &Dict) -> Self {
        let mut section_of = BTreeMap::new();
        for (section, value) in defaults {
            if let Value::Dict(_, keys) = value {
                for key in keys.keys() {
                    section_of.insert(key.clone(), section.clone());
                }
            }
        }
        Self { section_of }
    }

    fn contains(&self, key: &str) -> bool {
        self.section_of.contains_key(key)
    }

    /// `delivery.ack_timeout` of `ack_timeout`.
    fn path(&self, key: &str) -> String {
        match self.section_of.get(key) {
            Some(section) => format!("{section}.{key}"),
            None => key.into(),
        }
    }

    fn ordered(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut pairs: Vec<(&str, &str)> = self
            .section_of
            .iter()
            .map(|(key, section)| (section.as_str(), key.as_str()))
            .collect();
        pairs.sort_unstable();
        pairs.into_iter()
    }

    /// Moves each flat key under its subsystem; the keys that are no setting
    /// are the error, each with the setting it may have meant.
    fn nest(&self, flat: Dict) -> Result<Dict, String> {
        let mut nested = Dict::new();
        let mut unknown = Vec::new();
        for (key, value) in flat {
            match self.section_of.get(&key) {
                Some(section) => {
                    if let Value::Dict(_, keys) = nested
                        .entry(section.clone())
                        .or_insert_with(|| Value::from(Dict::new()))
                    {
                        keys.insert(key, value);
                    }
                }
                None => unknown.push(self.unknown(&key)),
            }
        }
        if unknown.is_empty() {
            Ok(nested)
        } else {
            Err(unknown.join(", "))
        }
    }

    /// `unknown setting "ack_timout" (did you mean ack_timeout?)`.
    fn unknown(&self, key: &str) -> String {
        let closest = self
            .section_of
            .keys()
            .map(|known| (edit_distance(key, known), known))
            .min()
            .filter(|(distance, _)| *distance <= 2);
        match closest {
            Some((_, known)) => format!("unknown setting {key:?} (did you mean {known}?)"),
            None => format!("unknown setting {key:?}"),
        }
    }
}

/// One layer: its data (nested by subsystem) and who provided it.
struct Layer {
    metadata: Metadata,
    data: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.data.clone()))
    }
}

pub(super) fn load(args: &ServeArgs, env: &Environment) -> Result<Loaded, ConfigError> {
    let defaults = dict(&Config::default())?;
    let settings = Settings::of(&defaults);
    let by_file_key = |_: &Profile, keys: &[&str]| last(keys).to_owned();
    let mut figment = Figment::from(Layer {
        metadata: Metadata::named(DEFAULT).interpolater(by_file_key),
        data: defaults,
    });
    if let Some(path) = &args.config {
        figment = figment.merge(file_layer(path, &settings)?);
    }
    let (env_layer, ignored_env) = env_layer(env, &settings, &figment)?;
    figment = figment.merge(env_layer).merge(flag_layer(args, &settings)?);
    let config: Config = figment.extract_lossy().map_err(named)?;
    let mut loaded = Loaded {
        config,
        ignored_env,
        figment,
        settings,
    };
    let resolved = loaded.config.server.listen.resolve();
    loaded.config.server.listen_addrs =
        resolved.map_err(|e| ConfigError::Invalid(format!("{e} ({})", loaded.source("listen"))))?;
    loaded.config.validate(&|key| loaded.source(key))?;
    Ok(loaded)
}

fn file_layer(path: &Path, settings: &Settings) -> Result<Layer, ConfigError> {
    let parse_error = |message: String| ConfigError::Parse {
        path: path.into(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| parse_error(e.to_string()))?;
    let flat = dict(&table).map_err(|e| parse_error(e.to_string()))?;
    Ok(Layer {
        metadata: Metadata::from(FILE, path).interpolater(|_: &Profile, keys: &[&str]| last(keys).to_owned()),
        data: settings.nest(flat).map_err(parse_error)?,
    })
}

/// `AGENT_BUS_<KEY>` for each setting; `AGENT_BUS_HOST` and `AGENT_BUS_PORT`
/// replace one half of `listen` as given by the layers below (or by
/// `AGENT_BUS_LISTEN`). The values stay strings: figment's lossy extraction
/// reads numbers and booleans (true/false/yes/no/on/off/1/0) out of them
/// where a setting wants one, and an API key of digits stays a string.
fn env_layer(env: &Environment, settings: &Settings, below: &Figment) -> Result<(Layer, Vec<String>), ConfigError> {
    let mut flat = Dict::new();
    let mut ignored = Vec::new();
    for (name, value) in &env.vars {
        let key = name[PREFIX.len()..].to_ascii_lowercase();
        if settings.contains(&key) {
            flat.insert(key, Value::from(value.clone()));
        } else if name != HOST && name != PORT && !env.not_settings.contains(name) {
            ignored.push(name.clone());
        }
    }

    let mut listen_from: Vec<String> = Vec::new();
    if flat.contains_key("listen") {
        listen_from.push(format!("{PREFIX}LISTEN"));
    }
    let (host, port) = (env.get(HOST), env.get(PORT));
    if host.is_some() || port.is_some() {
        let mut listen: ListenAddr = match flat.get("listen").and_then(Value::as_str) {
            Some(text) => text
                .parse()
                .map_err(|e| ConfigError::Invalid(format!("{PREFIX}LISTEN: {e}")))?,
            None => below.extract_inner_lossy(&settings.path("listen")).map_err(named)?,
        };
        if let Some(host) = host {
            listen.host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            listen_from.push(HOST.into());
        }
        if let Some(port) = port {
            listen.port = port
                .parse()
                .map_err(|_| ConfigError::Invalid(format!("{PORT}: {port:?} is not a port number (0-65535)")))?;
            listen_from.push(PORT.into());
        }
        flat.insert("listen".into(), Value::from(listen.to_string()));
    }

    let listen_from = listen_from.join(" and ");
    let metadata = Metadata::named(ENV).interpolater(move |_: &Profile, keys: &[&str]| match last(keys) {
        "listen" if !listen_from.is_empty() => listen_from.clone(),
        key => format!("{PREFIX}{}", key.to_ascii_uppercase()),
    });
    let data = settings
        .nest(flat)
        .map_err(|e| ConfigError::Invalid(format!("environment: {e}")))?;
    Ok((Layer { metadata, data }, ignored))
}

/// The flags that were given; a flag for a setting is `--` and its file key
/// with dashes.
fn flag_layer(args: &ServeArgs, settings: &Settings) -> Result<Layer, ConfigError> {
    let mut flat = dict(args)?;
    flat.retain(|_, value| !matches!(value, Value::Empty(..)));
    let data = settings
        .nest(flat)
        .map_err(|e| ConfigError::Invalid(format!("flags: {e}")))?;
    Ok(Layer {
        metadata: Metadata::named(FLAG)
            .interpolater(|_: &Profile, keys: &[&str]| format!("--{}", last(keys).replace('_', "-"))),
        data,
    })
}

/// `value` as figment's dictionary.
fn dict(value: &impl serde::Serialize) -> Result<Dict, ConfigError> {
    Value::serialize(value)
        .map_err(named)?
        .into_dict()
        .ok_or_else(|| ConfigError::Invalid("the configuration is not a table of settings".into()))
}

fn last<'a>(keys: &[&'a str]) -> &'a str {
    keys.last().copied().unwrap_or_default()
}

/// `default`, `file PATH`, `env NAME` or `flag --name`, for the setting `key`.
fn describe(metadata: &Metadata, key: &str) -> String {
    let name = metadata.interpolate(&Profile::Default, &[key]);
    match (&*metadata.name, metadata.source.as_ref().and_then(|s| s.file_path())) {
        (FILE, Some(path)) => format!("{FILE} {}", path.display()),
        (DEFAULT, _) => DEFAULT.into(),
        (provider, _) => format!("{provider} {name}"),
    }
}

/// figment's errors, each naming the setting and where its value came from:
/// `heartbeat_interval (file /etc/agentbus.toml): "30" is not a duration...`.
fn named(error: figment::Error) -> ConfigError {
    let messages: Vec<String> = error
        .into_iter()
        .map(|error| {
            let key = error.path.last().map_or("configuration", String::as_str);
            match &error.metadata {
                Some(metadata) => format!("{key} ({}): {}", describe(metadata, key), error.kind),
                None => format!("{key}: {}", error.kind),
            }
        })
        .collect();
    ConfigError::Invalid(messages.join("; "))
}

/// Levenshtein distance, for suggesting the setting a typo meant.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}
