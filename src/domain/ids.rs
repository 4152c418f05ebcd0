//! Identifiers that have been validated once and can be trusted afterwards.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};

/// A session id: 1-128 characters of `[A-Za-z0-9._:-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(String);

impl SessionId {
    pub const MAX_LEN: usize = 128;

    pub fn parse(value: &str) -> Result<Self, String> {
        if value.is_empty() {
            return Err("must not be empty".into());
        }
        if value.len() > Self::MAX_LEN {
            return Err(format!(
                "must be at most {} characters, got {}",
                Self::MAX_LEN,
                value.len()
            ));
        }
        if let Some(bad) = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
        {
            return Err(format!("{value:?} contains {bad:?}; allowed are A-Z a-z 0-9 . _ : -"));
        }
        Ok(Self(value.to_owned()))
    }

    /// Parses `value` as the request field `field`.
    pub fn parse_field(field: &str, value: &str) -> Result<Self> {
        Self::parse(value).map_err(|reason| Error::invalid(field, reason))
    }

    /// A fresh server-chosen id, `sess_<uuid v7>`, so ids sort by creation time.
    pub fn generate() -> Self {
        Self(format!("sess_{}", uuid::Uuid::now_v7()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An agent id of the form `<framework>://<name>`, e.g. `claude-code://qa`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgentId {
    value: String,
    framework_len: usize,
}

impl AgentId {
    pub const MAX_LEN: usize = 256;
    pub const MAX_FRAMEWORK_LEN: usize = 64;

    pub fn parse(value: &str) -> Result<Self, String> {
        let Some((framework, name)) = value.split_once("://") else {
            return Err(format!("{value:?} is not an agent id of the form <framework>://<name>"));
        };
        if value.len() > Self::MAX_LEN {
            return Err(format!(
                "must be at most {} characters, got {}",
                Self::MAX_LEN,
                value.len()
            ));
        }
        let framework_ok = !framework.is_empty()
            && framework.len() <= Self::MAX_FRAMEWORK_LEN
            && framework.starts_with(|c: char| c.is_ascii_alphanumeric())
            && framework
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'));
        if !framework_ok {
            return Err(format!(
                "framework {framework:?} in {value:?} must be 1-{} characters of A-Z a-z 0-9 - _ . + starting with a letter or digit",
                Self::MAX_FRAMEWORK_LEN
            ));
        }
        if name.is_empty() {
            return Err(format!("{value:?} has an empty name after ://"));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | ':' | '@' | '/' | '+')))
        {
            return Err(format!(
                "name in {value:?} contains {bad:?}; allowed are A-Z a-z 0-9 - _ . ~ : @ / +"
            ));
        }
        Ok(Self {
            value: value.to_owned(),
            framework_len: framework.len(),
        })
    }

    /// Parses `value` as the request field `field`.
    pub fn parse_field(field: &str, value: &str) -> Result<Self> {
        Self::parse(value).map_err(|reason| Error::invalid(field, reason))
    }

    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// The part before `://`.
    pub fn framework(&self) -> &str {
        &self.value[..self.framework_len]
    }
}

macro_rules! string_conversions {
    ($ty:ty) => {
        impl TryFrom<String> for $ty {
            type Error = String;
            fn try_from(value: String) -> Result<Self, String> {
                Self::parse(&value)
            }
        }

        impl From<$ty> for String {
            fn from(id: $ty) -> String {
                id.as_str().to_owned()
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_conversions!(SessionId);
string_conversions!(AgentId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids() {
        assert!(SessionId::parse("sess_feature-x:2025.02").is_ok());
        assert!(SessionId::parse("").is_err());
        assert!(SessionId::parse("has space").is_err());
        assert!(SessionId::parse(&"a".repeat(129)).is_err());
        assert!(SessionId::parse(&"a".repeat(128)).is_ok());
        assert!(SessionId::generate().as_str().starts_with("sess_"));
    }

    #[test]
    fn agent_ids() {
        let id = AgentId::parse("claude-code://qa").unwrap();
        assert_eq!(id.framework(), "claude-code");
        assert!(AgentId::parse("opencode://team/backend@v2").is_ok());
        for bad in [
            "qa",
            "://qa",
            "claude-code://",
            "-x://a",
            "a b://c",
            "x://a b",
            "x://a\u{e9}",
        ] {
            assert!(AgentId::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
