//! Turning flags and `--json` documents into request fields. Values use the
//! JSON dialect's spelling (enum words such as `task_request`, durations such
//! as `300s`), so a flag and the same field in a `--json` file agree.

use std::io::Read;

use prost::{Message, Name};
use serde_json::Value as Json;
use tonic::Status;

use crate::api::{convert, dialect, errors};
use crate::pb;

/// Reads the `--json` argument, a file or `-` for stdin, as a message of the
/// contract in the JSON dialect.
pub fn read_message<T: Message + Name + Default>(source: &str) -> Result<T, Status> {
    let text = if source == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Status::invalid_argument(format!("--json: cannot read stdin: {e}")))?;
        text
    } else {
        std::fs::read_to_string(source)
            .map_err(|e| Status::invalid_argument(format!("--json: cannot read {source}: {e}")))?
    };
    let json = parse_json("--json", &text)?;
    dialect::from_json(&json).map_err(|error| {
        let status = errors::status(error);
        Status::new(status.code(), format!("--json: {}", status.message()))
    })
}

/// A flag's value as JSON.
pub fn parse_json(flag: &str, text: &str) -> Result<Json, Status> {
    serde_json::from_str(text).map_err(|e| {
        Status::invalid_argument(format!(
            "{flag}: not valid JSON ({e}); a string needs quotes, e.g. '\"text\"'"
        ))
    })
}

/// A flag's value as a JSON object, as a protobuf Struct.
pub fn parse_object(flag: &str, text: &str) -> Result<prost_types::Struct, Status> {
    match parse_json(flag, text)? {
        Json::Object(object) => Ok(convert::json_object(&object)),
        other => Err(Status::invalid_argument(format!(
            "{flag}: expected a JSON object, got {other}"
        ))),
    }
}

/// A flag's value as any JSON value, as a protobuf Value.
pub fn parse_value(flag: &str, text: &str) -> Result<prost_types::Value, Status> {
    Ok(convert::json_value(&parse_json(flag, text)?))
}

/// A clap value parser for the words of a contract enum (`task_request`,
/// `high`, `session_created`), case-insensitive, yielding the enum number.
/// The enums of the contract number their values 1, 2, 3... without gaps.
pub fn enum_word(enum_full_name: &'static str) -> impl Fn(&str) -> Result<i32, String> + Clone + Send + Sync {
    move |given: &str| {
        let wanted = given.trim().to_ascii_lowercase();
        let words: Vec<(i32, String)> = (1..)
            .map(|n| (n, dialect::word_of(enum_full_name, n)))
            .take_while(|(_, word)| !word.is_empty())
            .collect();
        words
            .iter()
            .find(|(_, word)| *word == wanted)
            .map(|(n, _)| *n)
            .ok_or_else(|| {
                let words: Vec<_> = words.into_iter().map(|(_, word)| word).collect();
                format!("expected one of: {}", words.join(", "))
            })
    }
}

/// A duration as the dialect spells it: `300s`, `1.5s`, `250ms`, `5m`.
pub fn duration(text: &str) -> Result<prost_types::Duration, String> {
    std_duration(text).map(crate::api::convert::duration)
}

pub fn std_duration(text: &str) -> Result<std::time::Duration, String> {
    dialect::duration(text).ok_or_else(|| "expected a duration such as 300s, 1.5s, 250ms or 5m".to_owned())
}

/// `AGENT_ID[=ROLE]` of `--participant`. Agent ids cannot contain `=`.
pub fn participant(text: &str) -> Result<pb::ParticipantSpec, String> {
    let (agent_id, role) = text.split_once('=').unwrap_or((text, ""));
    if agent_id.is_empty() {
        return Err("expected AGENT_ID or AGENT_ID=ROLE".into());
    }
    Ok(pb::ParticipantSpec {
        agent_id: agent_id.into(),
        role: role.into(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_words_parse_to_numbers() {
        let message_type = enum_word("agentbus.v1.MessageType");
        assert_eq!(message_type("task_request"), Ok(pb::MessageType::TaskRequest as i32));
        assert_eq!(message_type("STATUS_UPDATE"), Ok(pb::MessageType::StatusUpdate as i32));
        assert_eq!(
            message_type("urgent").unwrap_err(),
            "expected one of: task_request, task_response, status_update, error, heartbeat"
        );
        assert_eq!(enum_word("agentbus.v1.Priority")("critical"), Ok(4));
        assert_eq!(
            enum_word("agentbus.v1.SessionEventType")("task_updated"),
            Ok(pb::SessionEventType::TaskUpdated as i32)
        );
        assert!(enum_word("agentbus.v1.SessionState")("unspecified").is_err());
    }

    #[test]
    fn durations_use_the_dialect_spelling() {
        assert_eq!(
            duration("1.5s"),
            Ok(prost_types::Duration {
                seconds: 1,
                nanos: 500_000_000
            })
        );
        assert_eq!(std_duration("250ms"), Ok(std::time::Duration::from_millis(250)));
        assert_eq!(std_duration("5m"), Ok(std::time::Duration::from_secs(300)));
        assert!(duration("soon").is_err());
        assert!(duration("-1s").is_err());
    }

    #[test]
    fn participants_take_an_optional_role() {
        let spec = participant("opencode://backend=implementer").unwrap();
        assert_eq!(
            (spec.agent_id.as_str(), spec.role.as_str()),
            ("opencode://backend", "implementer")
        );
        assert_eq!(participant("codex://frontend").unwrap().role, "");
        assert!(participant("=reviewer").is_err());
    }

    #[test]
    fn json_flags_name_themselves() {
        assert!(
            parse_object("--context", "[1]")
                .unwrap_err()
                .message()
                .starts_with("--context: ")
        );
        assert!(
            parse_value("--payload", "hello")
                .unwrap_err()
                .message()
                .starts_with("--payload: ")
        );
        assert!(parse_value("--payload", "\"hello\"").is_ok());
    }
}
