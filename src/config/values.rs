//! How setting values are written: durations with a unit, the SQLite sync mode.

use std::time::Duration;

use crate::store::sqlite::Synchronous;

/// A duration with a unit, e.g. `250ms`, `30s`, `1h`, `7d`.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value).map_err(|e| format!("{value:?} is not a duration such as 30s or 1h: {e}"))
}

pub(super) fn parse_synchronous(value: &str) -> Result<Synchronous, String> {
    match value {
        "full" => Ok(Synchronous::Full),
        "normal" => Ok(Synchronous::Normal),
        _ => Err(format!("{value:?} must be `full` or `normal`")),
    }
}

/// serde support for durations written as `30s`, `1h`.
pub(super) mod humantime_serde {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Deserializer, Visitor};
    use serde::{Serialize, Serializer};

    struct DurationText;

    impl Visitor<'_> for DurationText {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration with a unit such as \"30s\" or \"1h\"")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            super::parse_duration(text).map_err(E::custom)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_str(DurationText)
    }

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*duration))
    }

    /// For the flags, where a duration may be absent.
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(duration: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
            duration
                .map(|d| humantime::format_duration(d).to_string())
                .serialize(serializer)
        }
    }
}
