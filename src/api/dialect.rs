//! The JSON dialect of the HTTP gateway, which is the prototype's: field
//! names in snake_case, enum values as lowercase words without their type
//! prefix (`"task_request"`, `"high"`), durations as `"300s"`, timestamps in
//! RFC 3339, and `google.protobuf.Struct`/`Value` as plain JSON.
//!
//! The mapping is driven by the proto descriptors, so every message of the
//! contract has exactly one JSON form, used for request bodies, responses
//! and Server-Sent Events alike. Decoding names the offending field.

use std::sync::LazyLock;

use prost::{Message, Name};
use prost_reflect::{
    DescriptorPool, DynamicMessage, EnumDescriptor, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage,
};
use serde_json::{Map, Number, Value as Json};

use super::convert;
use crate::domain::{Error, Result, Timestamp};
use crate::pb;

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).expect("the descriptor set built by build.rs decodes")
});

fn descriptor(full_name: &str) -> MessageDescriptor {
    POOL.get_message_by_name(full_name)
        .unwrap_or_else(|| panic!("{full_name} is not in the descriptor set"))
}

/// Decodes a JSON object into the request message `T`.
pub fn from_json<T: Message + Name + Default>(value: &Json) -> Result<T> {
    check_depth(value, 0)?;
    let message = decode_message(&descriptor(&T::full_name()), value, "")?;
    message
        .transcode_to()
        .map_err(|e| Error::internal(format!("transcoding {}: {e}", T::full_name())))
}

/// Refuses a request body nested too deep; `value` sits `above` levels
/// down in it.
pub fn check_depth(value: &Json, above: usize) -> Result<()> {
    if above + depth(value) > convert::MAX_JSON_DEPTH {
        return Err(Error::invalid(
            "request body",
            format!("nested deeper than {} levels", convert::MAX_JSON_DEPTH),
        ));
    }
    Ok(())
}

fn depth(value: &Json) -> usize {
    match value {
        Json::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Json::Object(object) => 1 + object.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Encodes a message of the contract as a JSON object.
pub fn to_json<T: Message + Name>(message: &T) -> Map<String, Json> {
    let mut dynamic = DynamicMessage::new(descriptor(&T::full_name()));
    // Both sides share one schema, so transcoding cannot fail.
    if dynamic.transcode_from(message).is_err() {
        return Map::new();
    }
    encode_message(&dynamic)
}

/// The dialect's word for an enum value: `MESSAGE_TYPE_TASK_REQUEST` of
/// `MessageType` is `task_request`.
fn enum_word(enum_type: &EnumDescriptor, number: i32) -> Option<String> {
    let value = enum_type.get_value(number)?;
    let prefix = enum_prefix(enum_type);
    let name = value.name();
    Some(name.strip_prefix(prefix.as_str()).unwrap_or(name).to_ascii_lowercase())
}

/// The word for a value of the generated enum `E` (e.g. an event type).
pub fn word_of<E: Into<i32>>(enum_full_name: &str, value: E) -> String {
    POOL.get_enum_by_name(enum_full_name)
        .and_then(|e| enum_word(&e, value.into()))
        .unwrap_or_default()
}

/// `SessionEventType` -> `SESSION_EVENT_TYPE_`.
fn enum_prefix(enum_type: &EnumDescriptor) -> String {
    let mut prefix = String::new();
    for (i, c) in enum_type.name().chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            prefix.push('_');
        }
        prefix.push(c.to_ascii_uppercase());
    }
    prefix.push('_');
    prefix
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// "a string", "an array"...: what a JSON value is, for error messages.
pub fn type_name(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn wrong_type(path: &str, expected: &str, got: &Json) -> Error {
    let field = if path.is_empty() { "request body" } else { path };
    Error::invalid(field, format!("expected {expected}, got {}", type_name(got)))
}

fn decode_message(desc: &MessageDescriptor, value: &Json, path: &str) -> Result<DynamicMessage> {
    if let Some(well_known) = decode_well_known(desc, value, path)? {
        return Ok(well_known);
    }
    let Json::Object(object) = value else {
        return Err(wrong_type(path, "an object", value));
    };
    let mut message = DynamicMessage::new(desc.clone());
    for (key, item) in object {
        let field = desc
            .get_field_by_name(key)
            .or_else(|| desc.get_field_by_json_name(key))
            .ok_or_else(|| {
                let known: Vec<_> = desc.fields().map(|f| f.name().to_owned()).collect();
                Error::invalid(
                    join(path, key),
                    format!("unknown field; expected one of: {}", known.join(", ")),
                )
            })?;
        if item.is_null() {
            continue; // Unset, as in proto3 JSON.
        }
        let field_path = join(path, field.name());
        let decoded = if field.is_map() {
            decode_map(&field, item, &field_path)?
        } else if field.is_list() {
            let Json::Array(items) = item else {
                return Err(wrong_type(&field_path, "an array", item));
            };
            let values = items
                .iter()
                .enumerate()
                .map(|(i, v)| decode_single(&field.kind(), v, &format!("{field_path}[{i}]")))
                .collect::<Result<_>>()?;
            prost_reflect::Value::List(values)
        } else {
            decode_single(&field.kind(), item, &field_path)?
        };
        message.set_field(&field, decoded);
    }
    Ok(message)
}

fn decode_map(field: &FieldDescriptor, value: &Json, path: &str) -> Result<prost_reflect::Value> {
    let Json::Object(object) = value else {
        return Err(wrong_type(path, "an object", value));
    };
    let Kind::Message(entry) = field.kind() else {
        return Err(Error::internal(format!("{path}: map without an entry type")));
    };
    let value_kind = entry.map_entry_value_field().kind();
    let mut map = std::collections::HashMap::new();
    for (key, item) in object {
        let item_path = format!("{path}[{key:?}]");
        let key = match entry.map_entry_key_field().kind() {
            Kind::String => MapKey::String(key.clone()),
            _ => return Err(Error::invalid(path, "only maps with string keys are supported")),
        };
        map.insert(key, decode_single(&value_kind, item, &item_path)?);
    }
    Ok(prost_reflect::Value::Map(map))
}

fn decode_single(kind: &Kind, value: &Json, path: &str) -> Result<prost_reflect::Value> {
    use prost_reflect::Value as V;
    Ok(match kind {
        Kind::String => match value {
            Json::String(s) => V::String(s.clone()),
            other => return Err(wrong_type(path, "a string", other)),
        },
        Kind::Bool => match value {
            Json::Bool(b) => V::Bool(*b),
            // As query parameters carry them.
            Json::String(s) if s == "true" || s == "false" => V::Bool(s == "true"),
            other => return Err(wrong_type(path, "true or false", other)),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => V::I32(integer(value, path)?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => V::I64(integer(value, path)?),
        Kind::Uint32 | Kind::Fixed32 => V::U32(integer(value, path)?),
        Kind::Uint64 | Kind::Fixed64 => V::U64(integer(value, path)?),
        Kind::Double => V::F64(float(value, path)?),
        Kind::Float => V::F32(float(value, path)? as f32),
        Kind::Bytes => return Err(Error::invalid(path, "bytes fields are not part of the JSON dialect")),
        Kind::Enum(enum_type) => V::EnumNumber(decode_enum(enum_type, value, path)?),
        Kind::Message(desc) => V::Message(decode_message(desc, value, path)?),
    })
}

/// A whole number from a JSON number or a numeric string, within `T`'s range.
fn integer<T: TryFrom<i128> + std::fmt::Display>(value: &Json, path: &str) -> Result<T> {
    let parsed: Option<i128> = match value {
        Json::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 1e30)
                    .map(|f| f as i128)
            }),
        Json::String(s) => s.trim().parse().ok(),
        other => return Err(wrong_type(path, "a whole number", other)),
    };
    let shown = match value {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    let number = parsed.ok_or_else(|| Error::invalid(path, format!("{shown} is not a whole number")))?;
    T::try_from(number).map_err(|_| Error::invalid(path, format!("{shown} is out of range")))
}

fn float(value: &Json, path: &str) -> Result<f64> {
    match value {
        Json::Number(n) => n
            .as_f64()
            .ok_or_else(|| Error::invalid(path, format!("{n} is not a number"))),
        Json::String(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .ok_or_else(|| Error::invalid(path, format!("{s:?} is not a number"))),
        other => Err(wrong_type(path, "a number", other)),
    }
}

fn decode_enum(enum_type: &EnumDescriptor, value: &Json, path: &str) -> Result<i32> {
    let Json::String(word) = value else {
        return Err(wrong_type(path, "a string", value));
    };
    let prefix = enum_prefix(enum_type);
    let wanted = word.trim().to_ascii_uppercase();
    let found = enum_type
        .values()
        .filter(|v| v.number() != 0)
        .find(|v| v.name() == wanted || v.name().strip_prefix(prefix.as_str()) == Some(wanted.as_str()));
    match found {
        Some(v) => Ok(v.number()),
        None => {
            let words: Vec<_> = enum_type
                .values()
                .filter(|v| v.number() != 0)
                .filter_map(|v| enum_word(enum_type, v.number()))
                .collect();
            Err(Error::invalid(
                path,
                format!("unknown value {word:?}; expected one of: {}", words.join(", ")),
            ))
        }
    }
}

/// Timestamp, Duration, Struct, Value and ListValue in their JSON forms.
fn decode_well_known(desc: &MessageDescriptor, value: &Json, path: &str) -> Result<Option<DynamicMessage>> {
    let mut message = DynamicMessage::new(desc.clone());
    let transcoded = match desc.full_name() {
        "google.protobuf.Timestamp" => {
            let Json::String(text) = value else {
                return Err(wrong_type(path, "an RFC 3339 timestamp string", value));
            };
            let t = parse_rfc3339(text).map_err(|why| Error::invalid(path, why))?;
            message.transcode_from(&convert::timestamp(t))
        }
        "google.protobuf.Duration" => {
            let Json::String(text) = value else {
                return Err(wrong_type(path, "a duration string such as \"300s\"", value));
            };
            let d = parse_duration(text).map_err(|why| Error::invalid(path, why))?;
            message.transcode_from(&convert::duration(d))
        }
        "google.protobuf.Struct" => {
            let Json::Object(object) = value else {
                return Err(wrong_type(path, "an object", value));
            };
            message.transcode_from(&convert::json_object(object))
        }
        "google.protobuf.Value" => message.transcode_from(&convert::json_value(value)),
        "google.protobuf.ListValue" => {
            let Json::Array(items) = value else {
                return Err(wrong_type(path, "an array", value));
            };
            message.transcode_from(&prost_types::ListValue {
                values: items.iter().map(convert::json_value).collect(),
            })
        }
        _ => return Ok(None),
    };
    transcoded.map_err(|e| Error::internal(format!("{path}: {e}")))?;
    Ok(Some(message))
}

/// A duration as the dialect spells it (`300s`, `1.5s`, `250ms`, `5m`).
pub fn duration(text: &str) -> Option<std::time::Duration> {
    parse_duration(text).ok()
}

/// `"300s"`, `"1.5s"` (the protobuf JSON form), or a humantime duration
/// such as `"250ms"`, `"5m"`, `"1h30m"`; no spaces, never a bare number
/// (whose unit would be a guess).
fn parse_duration(text: &str) -> std::result::Result<std::time::Duration, String> {
    let refused = || format!("expected a duration such as \"300s\", \"1.5s\" or \"250ms\", got {text:?}");
    if text.is_empty() || text.chars().any(char::is_whitespace) {
        return Err(refused());
    }
    let out_of_range = || {
        format!(
            "{text:?} is outside 0s to {}s, protobuf Duration's range",
            convert::MAX_DURATION_SECONDS
        )
    };
    let seconds = text
        .strip_suffix('s')
        .filter(|n| !n.ends_with(['m', 'n', 'u', 'µ']))
        .and_then(|n| n.parse::<f64>().ok());
    let duration = match seconds {
        Some(secs) => {
            if !(0.0..=convert::MAX_DURATION_SECONDS as f64).contains(&secs) {
                return Err(out_of_range());
            }
            std::time::Duration::try_from_secs_f64(secs).map_err(|_| refused())?
        }
        None => humantime::parse_duration(text).map_err(|_| refused())?,
    };
    if duration.as_secs() > convert::MAX_DURATION_SECONDS as u64 {
        return Err(out_of_range());
    }
    Ok(duration)
}

fn format_duration(seconds: i64, nanos: i32) -> String {
    if nanos == 0 {
        return format!("{seconds}s");
    }
    let fraction = format!("{:09}", nanos.unsigned_abs());
    format!("{seconds}.{}s", fraction.trim_end_matches('0'))
}

fn encode_message(message: &DynamicMessage) -> Map<String, Json> {
    let mut object = Map::new();
    for field in message.descriptor().fields() {
        let is_message = matches!(field.kind(), Kind::Message(_)) && !field.is_list() && !field.is_map();
        if (is_message || field.supports_presence()) && !message.has_field(&field) {
            continue;
        }
        let value = message.get_field(&field);
        if let (Kind::Enum(_), prost_reflect::Value::EnumNumber(0)) = (field.kind(), value.as_ref()) {
            continue; // Unspecified: the field was not set.
        }
        object.insert(field.name().to_owned(), encode_value(&field.kind(), &value));
    }
    object
}

fn encode_value(kind: &Kind, value: &prost_reflect::Value) -> Json {
    use prost_reflect::Value as V;
    match value {
        V::Bool(b) => Json::Bool(*b),
        V::I32(n) => Json::from(*n),
        V::I64(n) => Json::from(*n),
        V::U32(n) => Json::from(*n),
        V::U64(n) => Json::from(*n),
        V::F32(n) => Number::from_f64(f64::from(*n)).map_or(Json::Null, Json::Number),
        V::F64(n) => Number::from_f64(*n).map_or(Json::Null, Json::Number),
        V::String(s) => Json::String(s.clone()),
        V::Bytes(b) => Json::Array(b.iter().map(|byte| Json::from(*byte)).collect()),
        V::EnumNumber(n) => match kind {
            Kind::Enum(e) => enum_word(e, *n).map_or_else(|| Json::from(*n), Json::String),
            _ => Json::from(*n),
        },
        V::Message(m) => encode_well_known(m).unwrap_or_else(|| Json::Object(encode_message(m))),
        V::List(items) => Json::Array(items.iter().map(|v| encode_value(kind, v)).collect()),
        V::Map(entries) => {
            let value_kind = match kind {
                Kind::Message(entry) => entry.map_entry_value_field().kind(),
                other => other.clone(),
            };
            let mut object = Map::new();
            for (key, v) in entries {
                let key = match key {
                    MapKey::String(s) => s.clone(),
                    MapKey::Bool(b) => b.to_string(),
                    MapKey::I32(n) => n.to_string(),
                    MapKey::I64(n) => n.to_string(),
                    MapKey::U32(n) => n.to_string(),
                    MapKey::U64(n) => n.to_string(),
                };
                object.insert(key, encode_value(&value_kind, v));
            }
            Json::Object(object)
        }
    }
}

fn encode_well_known(message: &DynamicMessage) -> Option<Json> {
    Some(match message.descriptor().full_name() {
        "google.protobuf.Timestamp" => {
            let t: prost_types::Timestamp = message.transcode_to().ok()?;
            let micros = t.seconds.saturating_mul(1_000_000) + i64::from(t.nanos / 1000);
            Json::String(format_rfc3339(Timestamp::from_unix_micros(micros)))
        }
        "google.protobuf.Duration" => {
            let d: prost_types::Duration = message.transcode_to().ok()?;
            Json::String(format_duration(d.seconds, d.nanos))
        }
        "google.protobuf.Struct" => {
            let s: prost_types::Struct = message.transcode_to().ok()?;
            Json::Object(convert::json_object_from("", Some(s)).ok()?)
        }
        "google.protobuf.Value" => {
            let v: prost_types::Value = message.transcode_to().ok()?;
            convert::json_value_from("", Some(v)).ok()?
        }
        "google.protobuf.ListValue" => {
            let list: prost_types::ListValue = message.transcode_to().ok()?;
            let values = list
                .values
                .into_iter()
                .map(|v| convert::json_value_from("", Some(v)).ok());
            Json::Array(values.collect::<Option<_>>()?)
        }
        _ => return None,
    })
}

/// An RFC 3339 timestamp (`time`'s parser: offsets at most 23:59), with
/// `T`, `t` or a space between date and time, within protobuf Timestamp's
/// range (years 0001 to 9999 in UTC).
fn parse_rfc3339(text: &str) -> std::result::Result<Timestamp, String> {
    use time::format_description::well_known::Rfc3339;
    if !matches!(text.as_bytes().get(10), Some(b'T' | b't' | b' ')) {
        return Err(format!(
            "{text:?} is not an RFC 3339 timestamp such as \"2025-02-02T11:00:00Z\""
        ));
    }
    let parsed = time::OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| format!("{text:?} is not an RFC 3339 timestamp such as \"2025-02-02T11:00:00Z\": {e}"))?;
    let seconds = parsed.unix_timestamp();
    if !(convert::MIN_TIMESTAMP_SECONDS..=convert::MAX_TIMESTAMP_SECONDS).contains(&seconds) {
        return Err(format!("{text:?} is outside years 0001 to 9999 (UTC)"));
    }
    Ok(Timestamp::from_unix_micros(
        seconds * 1_000_000 + i64::from(parsed.microsecond()),
    ))
}

/// RFC 3339 in UTC with microseconds, e.g. `2026-11-24T02:20:13.123456Z`.
fn format_rfc3339(t: Timestamp) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.unix_micros()) * 1000)
        .ok()
        .and_then(|at| at.format(FORMAT).ok())
        .unwrap_or_else(|| format!("{}us since the Unix epoch", t.unix_micros()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn timestamps_round_trip_through_rfc3339() {
        let t = parse_rfc3339("2025-02-02T11:00:00Z").unwrap();
        assert_eq!(t.unix_micros(), 1_738_494_000_000_000);
        assert_eq!(format_rfc3339(t), "2025-02-02T11:00:00.000000Z");
        let offset = parse_rfc3339("2025-02-02T12:30:00.25+01:30").unwrap();
        assert_eq!(offset.unix_micros(), 1_738_494_000_250_000);
        assert_eq!(
            format_rfc3339(Timestamp::from_unix_micros(951_782_400_000_001)),
            "2000-02-29T00:00:00.000001Z"
        );
        assert_eq!(parse_rfc3339("2025-02-02 11:00:00z").unwrap(), t);
        assert_eq!(parse_rfc3339("2025-02-02t10:00:00-01:00").unwrap(), t);
        for bad in [
            "2025-02-30T00:00:00Z",
            "2025-02-02",
            "2025-02-02T11:00:00",
            "2025-13-01T00:00:00Z",
            "2025-02-02T11:00:00+25:00",
            "2025-02-02T11:00:00+24:00",
            "2025-02-02T11:00:00+0100",
            "2025-02-02X11:00:00Z",
            "0000-12-31T23:59:59Z",
            "0001-01-01T00:30:00+01:00",
            " 2025-02-02T11:00:00Z",
            "x",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
        assert!(parse_rfc3339("9999-12-31T23:59:59.999999Z").is_ok());
    }

    #[test]
    fn messages_decode_from_the_prototype_dialect() {
        let body = json!({
            "message_id": "m1",
            "timestamp": "2025-02-02T11:00:00Z",
            "sender": {"agent_id": "claude-code://orchestrator", "framework": "claude-code"},
            "recipient": {"agent_id": "opencode://backend"},
            "message_type": "task_request",
            "priority": "HIGH",
            "payload": {"task_type": "implementation", "n": [1, 2]},
            "routing": {"timeout": "1.5s", "retry_policy": {"max_retries": "2", "backoff": "exponential"},
                        "delivery_mode": "sync"},
        });
        let message: pb::Message = from_json(&body).unwrap();
        assert_eq!(message.message_type(), pb::MessageType::TaskRequest);
        assert_eq!(message.priority(), pb::Priority::High);
        let routing = message.routing.clone().unwrap();
        assert_eq!(
            routing.timeout,
            Some(prost_types::Duration {
                seconds: 1,
                nanos: 500_000_000
            })
        );
        assert_eq!(routing.retry_policy.unwrap().max_retries, 2);
        assert_eq!(routing.delivery_mode(), pb::DeliveryMode::Sync);
        let back = to_json(&message);
        assert_eq!(back["message_type"], "task_request");
        assert_eq!(back["routing"]["timeout"], "1.5s");
        assert_eq!(back["routing"]["retry_policy"]["backoff"], "exponential");
        assert_eq!(back["timestamp"], "2025-02-02T11:00:00.000000Z");
        assert_eq!(back["payload"], json!({"task_type": "implementation", "n": [1, 2]}));
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (
                json!({"priority": "urgent"}),
                "priority: unknown value \"urgent\"; expected one of: low, medium, high, critical",
            ),
            (json!({"sender": "me"}), "sender: expected an object, got a string"),
            (
                json!({"routing": {"retry_policy": {"max_retries": -1}}}),
                "routing.retry_policy.max_retries: -1 is out of range",
            ),
            (
                json!({"routing": {"retry_policy": {"max_retries": 1e300}}}),
                "routing.retry_policy.max_retries: 1e+300 is not a whole number",
            ),
            (
                json!({"routing": {"timeout": "soon"}}),
                "routing.timeout: expected a duration",
            ),
            (
                json!({"routing": {"timeout": 5}}),
                "routing.timeout: expected a duration string such as \"300s\", got a number",
            ),
            (
                json!({"routing": {"timeout": "5 s"}}),
                "routing.timeout: expected a duration",
            ),
            (
                json!({"routing": {"timeout": "-1s"}}),
                "routing.timeout: \"-1s\" is outside 0s to 315576000000s",
            ),
            (
                json!({"routing": {"timeout": "20000y"}}),
                "routing.timeout: \"20000y\" is outside 0s to 315576000000s",
            ),
            (
                json!({"routing": {"timeout": "9223372036854775807s"}}),
                "routing.timeout: \"9223372036854775807s\" is outside 0s to 315576000000s",
            ),
            (
                json!({"timestamp": "2025-02-02T11:00:00+25:00"}),
                "timestamp: \"2025-02-02T11:00:00+25:00\" is not an RFC 3339 timestamp",
            ),
            (
                json!({"routing": {"fallback_agents": "x"}}),
                "routing.fallback_agents: expected an array, got a string",
            ),
            (
                json!({"colour": 1}),
                "colour: unknown field; expected one of: message_id,",
            ),
            (json!([1]), "request body: expected an object, got an array"),
        ];
        for (body, expected) in cases {
            let error = from_json::<pb::Message>(&body).unwrap_err();
            assert!(error.message.starts_with(expected), "{body}: {}", error.message);
        }
    }

    #[test]
    fn enum_words_drop_the_type_prefix() {
        assert_eq!(
            word_of("agentbus.v1.SessionEventType", pb::SessionEventType::TaskDelegated),
            "task_delegated"
        );
        assert_eq!(
            word_of("agentbus.v1.SessionState", pb::SessionState::Completed),
            "completed"
        );
    }
}
