//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): the trace a
//! message belongs to, taken from the sender's call and handed to the
//! recipient with the delivery, so its work continues the sender's trace.

use serde::{Deserialize, Serialize};

use super::{Error, Result};

/// Longest `tracestate` kept: the specification's 32 members of at most
/// 256 characters would be 8 KiB; implementations may cut at 512.
const MAX_TRACESTATE: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    /// `version-trace_id-parent_id-flags`, e.g.
    /// `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`.
    pub traceparent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// Checks a trace context a client set on a message; errors name
    /// `field`'s parts.
    pub fn parse(field: &str, traceparent: &str, tracestate: &str) -> Result<Self> {
        check_traceparent(traceparent).map_err(|reason| Error::invalid(format!("{field}.traceparent"), reason))?;
        let tracestate = match tracestate {
            "" => None,
            state => {
                check_tracestate(state).map_err(|reason| Error::invalid(format!("{field}.tracestate"), reason))?;
                Some(state.to_owned())
            }
        };
        Ok(Self {
            traceparent: traceparent.to_owned(),
            tracestate,
        })
    }

    /// From request headers: invalid ones are ignored, as the
    /// specification asks of a receiver (a `tracestate` without a valid
    /// `traceparent` too).
    pub fn from_headers(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<Self> {
        let traceparent = traceparent?.trim();
        check_traceparent(traceparent).ok()?;
        Some(Self {
            traceparent: traceparent.to_owned(),
            tracestate: tracestate
                .map(str::trim)
                .filter(|state| check_tracestate(state).is_ok())
                .map(str::to_owned),
        })
    }

    /// The 32 hex digits of the trace id.
    pub fn trace_id(&self) -> &str {
        &self.traceparent[3..35]
    }

    /// The 16 hex digits of the span the context was taken in: the parent
    /// of the spans that continue it.
    pub fn parent_id(&self) -> &str {
        &self.traceparent[36..52]
    }

    /// The trace flags; bit 0 says whether the caller records the trace.
    pub fn flags(&self) -> u8 {
        // Two lowercase hex digits, checked when the context was made.
        u8::from_str_radix(&self.traceparent[53..55], 16).unwrap_or(0)
    }
}

fn check_traceparent(value: &str) -> std::result::Result<(), String> {
    let parts: Vec<&str> = value.split('-').collect();
    let lower_hex =
        |part: &str, len: usize| part.len() == len && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let shaped = parts.len() == 4
        && lower_hex(parts[0], 2)
        && lower_hex(parts[1], 32)
        && lower_hex(parts[2], 16)
        && lower_hex(parts[3], 2);
    if !shaped {
        return Err(format!(
            "expected version-trace_id-parent_id-flags in lowercase hex \
             (\"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\"), got {value:?}"
        ));
    }
    if parts[0] != "00" {
        return Err(format!("version {:?} is not supported; use \"00\"", parts[0]));
    }
    if parts[1].bytes().all(|b| b == b'0') || parts[2].bytes().all(|b| b == b'0') {
        return Err("trace_id and parent_id must not be all zeros".into());
    }
    Ok(())
}

fn check_tracestate(value: &str) -> std::result::Result<(), String> {
    if value.len() > MAX_TRACESTATE {
        return Err(format!("at most {MAX_TRACESTATE} characters, got {}", value.len()));
    }
    if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err("only printable ASCII is allowed".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn valid_contexts_are_kept_and_name_their_trace() {
        let trace = TraceContext::parse("message.trace_context", VALID, "congo=t61rcWkgMzE").unwrap();
        assert_eq!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(trace.parent_id(), "00f067aa0ba902b7");
        assert_eq!(trace.flags(), 1);
        assert_eq!(trace.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
        assert_eq!(
            TraceContext::from_headers(Some(VALID), None).unwrap().traceparent,
            VALID
        );
    }

    #[test]
    fn invalid_fields_are_refused_and_invalid_headers_ignored() {
        for bad in [
            "",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            let error = TraceContext::parse("message.trace_context", bad, "").unwrap_err();
            assert!(
                error.to_string().contains("message.trace_context.traceparent"),
                "{error}"
            );
            assert!(TraceContext::from_headers(Some(bad), None).is_none());
        }
        let long = "a".repeat(513);
        assert!(TraceContext::parse("t", VALID, &long).is_err());
        assert_eq!(
            TraceContext::from_headers(Some(VALID), Some(&long)).unwrap().tracestate,
            None
        );
    }
}
