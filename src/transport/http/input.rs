//! What the gateway reads: JSON bodies, query parameters, path segments and
//! `If-Match`, decoded into the RPC's typed request.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prost::{Message, Name};
use serde_json::{Map, Value as Json};

use super::response::HttpError;
use crate::api::dialect;
use crate::domain::Error;

/// Reads a JSON object body. An empty body is `{}` unless `required`.
pub async fn json_body(
    headers: &HeaderMap,
    mut body: Body,
    limit: usize,
    required: bool,
) -> Result<Map<String, Json>, HttpError> {
    let result = read_json(headers, &mut body, limit, required).await;
    if result.is_err() {
        linger(body);
    }
    result
}

/// How long a refused body is still read (and dropped) after the answer.
const LINGER: Duration = Duration::from_secs(2);

/// Reads and drops, for a moment, what the client still sends of a body we
/// refused before reading it all: closing a socket with unread data resets
/// it, and the client could lose our answer (a lingering close).
fn linger(mut body: Body) {
    tokio::spawn(async move {
        let drain = async { while let Some(Ok(_)) = body.frame().await {} };
        let _ = tokio::time::timeout(LINGER, drain).await;
    });
}

async fn read_json(
    headers: &HeaderMap,
    body: &mut Body,
    limit: usize,
    required: bool,
) -> Result<Map<String, Json>, HttpError> {
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        let essence = content_type
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(HttpError::invalid(format!(
                "Content-Type must be application/json, got {:?}",
                content_type.to_str().unwrap_or("(not text)")
            )));
        }
    }
    let too_large = || {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RESOURCE_EXHAUSTED",
            format!("request body is larger than the limit of {limit} bytes"),
        )
    };
    // Refused before a byte of it is read.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let bytes: Bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => return Err(too_large()),
        Err(e) => return Err(HttpError::invalid(format!("cannot read the request body: {e}"))),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        if required {
            return Err(HttpError::invalid("request body is empty; expected a JSON object"));
        }
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Json>(&bytes) {
        Ok(Json::Object(object)) => Ok(object),
        Ok(other) => Err(Error::invalid(
            "request body",
            format!("expected a JSON object, got {}", dialect::type_name(&other)),
        )
        .into()),
        Err(e) => Err(HttpError::invalid(format!("request body is not valid JSON: {e}"))),
    }
}

/// Sets a request field from the path; a body that says otherwise is
/// refused.
pub fn from_path(field: &str, given: &mut String, path: &str) -> Result<(), HttpError> {
    if !given.is_empty() && given != path {
        return Err(Error::invalid(field, format!("the body says {given:?} but the path says {path:?}")).into());
    }
    path.clone_into(given);
    Ok(())
}

/// `If-Match: "7"` (or `7`) becomes `expected_version`; `*` asks for no
/// particular version. If-Match compares entity tags strongly (RFC 9110
/// 13.1.1), so a weak tag such as `W/"7"` never matches: 412.
pub fn if_match(headers: &HeaderMap, expected_version: &mut Option<u64>) -> Result<(), HttpError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(());
    }
    if text.starts_with("W/") {
        return Err(HttpError::new(
            StatusCode::PRECONDITION_FAILED,
            "FAILED_PRECONDITION",
            format!(
                "If-Match: {text} is a weak entity tag, and If-Match compares strongly (RFC 9110), \
                 so it never matches; send the ETag as given, e.g. \"7\""
            ),
        ));
    }
    let unquoted = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
    let version = unquoted
        .parse::<u64>()
        .map_err(|_| Error::invalid("If-Match", format!("expected a session version number, got {text:?}")))?;
    *expected_version = Some(version);
    Ok(())
}

/// Decodes query parameters into the request `T`, as JSON strings (the
/// dialect reads numbers and booleans from strings): names mapped by
/// `aliases`, those in `lists` collected into arrays.
pub fn query<T: Message + Name + Default>(
    raw: Option<&str>,
    aliases: &[(&str, &str)],
    lists: &[&str],
) -> Result<T, HttpError> {
    decode(query_object(raw, aliases, lists))
}

fn query_object(raw: Option<&str>, aliases: &[(&str, &str)], lists: &[&str]) -> Map<String, Json> {
    let mut object = Map::new();
    for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let name = aliases
            .iter()
            .find(|(alias, _)| *alias == key)
            .map_or(key.as_ref(), |(_, field)| field)
            .to_owned();
        let value = Json::String(value.into_owned());
        if lists.contains(&name.as_str()) {
            let entry = object.entry(name).or_insert_with(|| Json::Array(Vec::new()));
            if let Json::Array(items) = entry {
                items.push(value);
            }
        } else {
            object.insert(name, value);
        }
    }
    object
}

/// Decodes a JSON object into the request `T`.
pub fn decode<T: Message + Name + Default>(object: Map<String, Json>) -> Result<T, HttpError> {
    Ok(dialect::from_json(&Json::Object(object))?)
}

/// Reads a JSON body and decodes it into the request `T`.
pub async fn body<T: Message + Name + Default>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    required: bool,
) -> Result<T, HttpError> {
    decode(json_body(headers, body, limit, required).await?)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn query_parameters_become_typed_fields() {
        let aliases = [
            ("session_id", "session_ids"),
            ("type", "event_types"),
            ("after", "after_sequence"),
        ];
        let lists = ["session_ids", "event_types"];
        let raw = Some("session_id=a&session_id=b&type=session_created&after=3");
        assert_eq!(
            Json::Object(query_object(raw, &aliases, &lists)),
            json!({"session_ids": ["a", "b"], "event_types": ["session_created"], "after_sequence": "3"})
        );
        let request: crate::pb::WatchSessionsRequest = query(raw, &aliases, &lists).unwrap();
        assert_eq!(request.session_ids, ["a", "b"]);
        assert_eq!(request.after_sequence, Some(3));
    }

    #[test]
    fn path_values_fill_fields_and_conflicts_are_refused() {
        let mut given = String::new();
        from_path("session_id", &mut given, "s1").unwrap();
        assert_eq!(given, "s1");
        from_path("session_id", &mut given, "s1").unwrap();
        let error = from_path("session_id", &mut given, "s2").unwrap_err();
        assert!(format!("{error:?}").contains("the body says \\\"s1\\\" but the path says \\\"s2\\\""));
    }
}
