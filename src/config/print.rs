//! `agentbus config print`: the effective configuration, each value with
//! its source, secrets redacted.

use std::collections::BTreeMap;

use clap::ValueEnum;
use figment::value::Value;

use super::Loaded;

/// How `config print` writes the configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum PrintFormat {
    /// A TOML file for --config, with each value's source in a comment.
    #[default]
    Toml,
    /// `{"settings": {"KEY": {"value": ..., "source": ...}}, "ignored_env": [...]}`.
    Json,
}

/// What is printed in place of a secret.
const REDACTED: &str = "***";

/// One setting as printed.
enum Shown {
    /// No value (an optional setting at its default).
    Unset,
    Plain(Value),
    /// A secret: in TOML it is printed commented out, so that the output,
    /// loaded with --config, takes it from where it came from again.
    Redacted(String),
}

impl Shown {
    fn of(key: &str, value: Value) -> Self {
        if matches!(value, Value::Empty(..)) {
            return Shown::Unset;
        }
        let redacted = match (key, value.as_str()) {
            ("api_key", Some(_)) => Some(REDACTED.to_owned()),
            ("database_url", Some(url)) => redact_password(url),
            _ => None,
        };
        match redacted {
            Some(redacted) => Shown::Redacted(redacted),
            None => Shown::Plain(value),
        }
    }
}

impl Loaded {
    /// The configuration as `config print` shows it.
    pub fn print(&self, format: PrintFormat) -> String {
        let values = Value::serialize(&self.config)
            .ok()
            .and_then(Value::into_dict)
            .unwrap_or_default();
        let settings = self.settings().map(|(section, key)| {
            let value = values
                .get(section)
                .and_then(|keys| keys.as_dict())
                .and_then(|keys| keys.get(key))
                .cloned()
                .unwrap_or_else(|| Value::from(figment::value::Empty::None));
            (section, key, Shown::of(key, value), self.source(key))
        });
        match format {
            PrintFormat::Toml => self.toml(settings),
            PrintFormat::Json => self.json(settings),
        }
    }

    fn toml<'a>(&self, settings: impl Iterator<Item = (&'a str, &'a str, Shown, String)>) -> String {
        let mut text = String::from(
            "# The configuration of agentbus serve with these flags and this environment, loadable with\n\
             # --config; after each setting, where its value came from. Secrets are not printed.\n",
        );
        for name in &self.ignored_env {
            text.push_str(&format!("# ignored: {name} is not a setting\n"));
        }
        let mut current = "";
        for (section, key, shown, source) in settings {
            if section != current {
                text.push_str(&format!("\n# {section}\n"));
                current = section;
            }
            let line = match shown {
                Shown::Unset => format!("# {key} is not set  # {source}"),
                Shown::Plain(value) => format!("{}  # {source}", toml_line(key, &value)),
                Shown::Redacted(redacted) => {
                    format!("# {}  # {source}; redacted", toml_line(key, &Value::from(redacted)))
                }
            };
            text.push_str(&line);
            text.push('\n');
        }
        text
    }

    fn json<'a>(&self, settings: impl Iterator<Item = (&'a str, &'a str, Shown, String)>) -> String {
        let settings: BTreeMap<&str, serde_json::Value> = settings
            .map(|(_, key, shown, source)| {
                let (value, redacted) = match shown {
                    Shown::Unset => (serde_json::Value::Null, false),
                    Shown::Plain(value) => (serde_json::to_value(value).unwrap_or_default(), false),
                    Shown::Redacted(redacted) => (redacted.into(), true),
                };
                let mut entry = serde_json::json!({"value": value, "source": source});
                if redacted {
                    entry["redacted"] = true.into();
                }
                (key, entry)
            })
            .collect();
        let document = serde_json::json!({"settings": settings, "ignored_env": self.ignored_env});
        format!("{document:#}\n")
    }
}

/// `key = value` as TOML writes it.
fn toml_line(key: &str, value: &Value) -> String {
    match toml::Value::try_from(value) {
        Ok(value) => format!("{key} = {value}"),
        Err(error) => format!("# {key} cannot be shown: {error}"),
    }
}

/// `url` with its password replaced by `***`, or `None` when it holds none:
/// `postgres://user:PASSWORD@host/db`, or `password=PASSWORD` in a query
/// string or a `key=value` connection string.
pub(super) fn redact_password(url: &str) -> Option<String> {
    let mut redacted = url.to_owned();
    if let Some(scheme_end) = url.find("://") {
        let authority_start = scheme_end + 3;
        let authority_end = url[authority_start..]
            .find(['/', '?'])
            .map_or(url.len(), |end| authority_start + end);
        let authority = &url[authority_start..authority_end];
        if let Some(at) = authority.rfind('@')
            && let Some(colon) = authority[..at].find(':')
        {
            redacted.replace_range(authority_start + colon + 1..authority_start + at, REDACTED);
        }
    }
    let mut from = 0;
    while let Some(found) = redacted[from..].find("password=") {
        let start = from + found + "password=".len();
        let rest = &redacted[start..];
        let end = match rest.strip_prefix('\'') {
            Some(quoted) => quoted.find('\'').map_or(rest.len(), |end| end + 2),
            None => rest.find(['&', ' ']).unwrap_or(rest.len()),
        };
        redacted.replace_range(start..start + end, REDACTED);
        from = start + REDACTED.len();
    }
    (redacted != url).then_some(redacted)
}
