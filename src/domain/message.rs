//! Messages between agents and their delivery bookkeeping.

use std::ops::Deref;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::error::{Error, Result};
use super::ids::{AgentId, SessionId};
use super::json::JsonObject;
use super::time::Timestamp;
use super::trace::TraceContext;
use super::validate::check_text;

/// The bus itself, as the sender of dead-letter notices.
pub const BUS_AGENT: &str = "agentbus://bus";
const MAX_FALLBACKS: usize = 16;
const MAX_TASK_ID: usize = 128;

/// A message id: 1-128 characters of `[A-Za-z0-9._:-]`, like session ids.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MessageId(String);

impl MessageId {
    pub fn parse_field(field: &str, value: &str) -> Result<Self> {
        SessionId::parse(value)
            .map(|id| Self(id.as_str().to_owned()))
            .map_err(|reason| Error::invalid(field, reason))
    }

    /// A fresh server-chosen id, `msg_<uuid v7>`.
    pub fn generate() -> Self {
        Self(format!("msg_{}", uuid::Uuid::now_v7()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MessageId {
    type Error = String;
    fn try_from(value: String) -> std::result::Result<Self, String> {
        SessionId::parse(&value).map(|_| Self(value))
    }
}

impl From<MessageId> for String {
    fn from(id: MessageId) -> String {
        id.0
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageType {
    TaskRequest,
    TaskResponse,
    StatusUpdate,
    Error,
    Heartbeat,
}

impl MessageType {
    pub const ALL: [MessageType; 5] = [
        Self::TaskRequest,
        Self::TaskResponse,
        Self::StatusUpdate,
        Self::Error,
        Self::Heartbeat,
    ];

    /// The snake_case word of the JSON dialect and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TaskRequest => "task_request",
            Self::TaskResponse => "task_response",
            Self::StatusUpdate => "status_update",
            Self::Error => "error",
            Self::Heartbeat => "heartbeat",
        }
    }
}

/// Higher is delivered first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low = 1,
    Medium = 2,
    High = 3,
    Critical = 4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    Linear,
    Exponential,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    Async,
    Sync,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub backoff: Backoff,
}

impl RetryPolicy {
    /// Wait before redelivering after the `attempt`-th delivery went unacked.
    pub fn delay(&self, attempt: u32, base: Duration) -> Duration {
        let factor = match self.backoff {
            Backoff::Linear => attempt.max(1),
            Backoff::Exponential => 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX),
        };
        base.saturating_mul(factor).min(Duration::from_secs(3600))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Routing {
    /// `None`: the server's message timeout.
    pub timeout: Option<Duration>,
    pub retry_policy: RetryPolicy,
    pub fallback_agents: Vec<AgentId>,
    pub delivery_mode: DeliveryMode,
}

impl Default for Routing {
    fn default() -> Self {
        Self {
            timeout: None,
            retry_policy: RetryPolicy {
                max_retries: 3,
                backoff: Backoff::Linear,
            },
            fallback_agents: Vec::new(),
            delivery_mode: DeliveryMode::Async,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRef {
    pub agent_id: AgentId,
    pub framework: String,
    pub session_id: Option<SessionId>,
}

impl AgentRef {
    /// Validates the framework against the id (defaulting it when empty).
    pub fn new(agent_id: AgentId, framework: &str, session_id: Option<SessionId>) -> Result<Self> {
        if !framework.is_empty() && framework != agent_id.framework() {
            return Err(Error::invalid(
                "framework",
                format!(
                    "{framework:?} does not match the framework {:?} of agent id {agent_id}",
                    agent_id.framework()
                ),
            ));
        }
        Ok(Self {
            framework: agent_id.framework().to_owned(),
            agent_id,
            session_id,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub message_id: MessageId,
    pub timestamp: Timestamp,
    pub sender: AgentRef,
    pub recipient: AgentRef,
    pub message_type: MessageType,
    pub priority: Priority,
    pub payload: Value,
    pub routing: Routing,
    #[serde(default)]
    pub metadata: JsonObject,
    pub in_reply_to: Option<MessageId>,
    pub task_id: Option<String>,
    /// The sender's trace, handed to the recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceContext>,
}

impl Message {
    /// Field checks that do not need the registry or sessions.
    pub fn validate(&self) -> Result<()> {
        if let Some(task_id) = &self.task_id {
            check_text("task_id", task_id, MAX_TASK_ID)?;
            if task_id.is_empty() {
                return Err(Error::invalid("task_id", "must not be empty when given"));
            }
        }
        if self.routing.fallback_agents.len() > MAX_FALLBACKS {
            return Err(Error::invalid(
                "routing.fallback_agents",
                format!(
                    "at most {MAX_FALLBACKS} allowed, got {}",
                    self.routing.fallback_agents.len()
                ),
            ));
        }
        if let Some(i) = self
            .routing
            .fallback_agents
            .iter()
            .position(|a| a == &self.recipient.agent_id)
        {
            return Err(Error::invalid(
                format!("routing.fallback_agents[{i}]"),
                "is the recipient itself",
            ));
        }
        if self.routing.timeout == Some(Duration::ZERO) {
            return Err(Error::invalid("routing.timeout", "must be positive"));
        }
        if self.in_reply_to.as_ref() == Some(&self.message_id) {
            return Err(Error::invalid("in_reply_to", "a message cannot answer itself"));
        }
        Ok(())
    }

    /// The task this message belongs to, if it is part of one.
    pub fn task_key(&self) -> Option<String> {
        self.task_id.clone().or_else(|| match self.message_type {
            MessageType::TaskRequest => Some(self.message_id.to_string()),
            _ => None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    Queued,
    Delivered,
    Acked,
    Answered,
    DeadLettered,
    Expired,
}

impl MessageState {
    /// Still waiting to be delivered or acknowledged.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Queued | Self::Delivered)
    }
}

/// A message as its records hold it: it never changes once accepted, so
/// every version of a record (and every copy on its way to a stream) shares
/// it, and its JSON is written once, when the first version is stored;
/// later versions store it again as written.
#[derive(Clone)]
pub struct SharedMessage(Arc<Shared>);

struct Shared {
    message: Message,
    json: OnceLock<Box<RawValue>>,
}

impl SharedMessage {
    pub fn new(message: Message) -> Self {
        Self(Arc::new(Shared {
            message,
            json: OnceLock::new(),
        }))
    }

    /// The message to change (tests, and messages built before they are
    /// stored); the JSON is written again.
    pub fn make_mut(&mut self) -> &mut Message {
        if Arc::get_mut(&mut self.0).is_none() {
            *self = Self::new(self.0.message.clone());
        }
        let shared = Arc::get_mut(&mut self.0).expect("just made unique");
        shared.json = OnceLock::new();
        &mut shared.message
    }

    /// The message's JSON, written the first time it is asked for.
    pub fn json(&self) -> serde_json::Result<&RawValue> {
        match self.0.json.get() {
            Some(json) => Ok(json),
            None => serde_json::value::to_raw_value(&self.0.message).map(|json| &**self.0.json.get_or_init(|| json)),
        }
    }
}

impl Deref for SharedMessage {
    type Target = Message;

    fn deref(&self) -> &Message {
        &self.0.message
    }
}

impl std::fmt::Debug for SharedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.message.fmt(f)
    }
}

impl PartialEq for SharedMessage {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.message == other.0.message
    }
}

impl Serialize for SharedMessage {
    /// The JSON kept from the first time. Records are written with
    /// serde_json only (store bodies, notifications), which copies it as is.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self.json() {
            Ok(json) => json.serialize(serializer),
            Err(_) => self.0.message.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for SharedMessage {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        Message::deserialize(deserializer).map(Self::new)
    }
}

/// A message plus where its delivery stands; stored and updated by
/// compare-and-swap on `version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub message: SharedMessage,
    pub state: MessageState,
    /// The recipient being tried: the original one or a fallback agent.
    pub recipient: AgentId,
    /// Index of the next fallback agent to try.
    pub next_fallback: usize,
    /// Deliveries to the current recipient.
    pub attempts: u32,
    pub total_attempts: u32,
    /// Also the FIFO order within a priority.
    pub accepted_at: Timestamp,
    /// QUEUED: deliverable from then; DELIVERED: the ack deadline; closed
    /// (acked, answered, dead-lettered, expired): when it closed, which
    /// retention counts from.
    pub available_at: Timestamp,
    /// The routing timeout.
    pub expires_at: Timestamp,
    pub last_delivered_at: Option<Timestamp>,
    pub acked_at: Option<Timestamp>,
    pub reason: String,
    /// Identifies the sender's request, for idempotent resends.
    pub fingerprint: u64,
    pub version: u64,
}

impl MessageRecord {
    /// The record's JSON without its message: an object of the other
    /// fields, the part that the SQL stores write with every version. The
    /// message never changes once accepted, so they store it once
    /// ([`SharedMessage::json`]); [`Self::from_parts`] joins the two again.
    pub fn delivery_json(&self) -> serde_json::Result<String> {
        const MESSAGE_FIRST: &[u8] = br#"{"message":"#;
        /// Room for the other fields, so that the buffer is not grown (and
        /// copied) while they are written.
        const REST: usize = 512;
        let message = self.message.json()?.get().as_bytes();
        let mut whole = Vec::with_capacity(MESSAGE_FIRST.len() + message.len() + REST);
        serde_json::to_writer(&mut whole, self)?;
        // `message` is the first field, written as the JSON kept for it.
        let starts_with_message = whole
            .strip_prefix(MESSAGE_FIRST)
            .and_then(|rest| rest.strip_prefix(message))
            .is_some_and(|rest| rest.starts_with(b","));
        if !starts_with_message {
            return Err(serde::ser::Error::custom(
                "a record's JSON does not start with its message",
            ));
        }
        // Keeps the opening brace; the rest (short) is checked as UTF-8.
        whole.drain(1..=MESSAGE_FIRST.len() + message.len());
        String::from_utf8(whole).map_err(serde::ser::Error::custom)
    }

    /// The record whose message's JSON is `message` and the rest of whose
    /// JSON is `delivery` (see [`Self::delivery_json`]).
    pub fn from_parts(message: &str, delivery: &str) -> serde_json::Result<Self> {
        let rest = delivery
            .trim_start()
            .strip_prefix('{')
            .ok_or_else(|| serde::de::Error::custom("the delivery JSON of a record is not an object"))?;
        let comma = if rest.trim_start().starts_with('}') { "" } else { "," };
        serde_json::from_str(&format!(r#"{{"message":{message}{comma}{rest}"#))
    }

    /// A message just accepted for `recipient` (with the index of the next
    /// fallback agent to try), deliverable at once, expiring after `timeout`.
    pub fn queued(
        message: Message,
        (recipient, next_fallback): (AgentId, usize),
        now: Timestamp,
        timeout: Duration,
        fingerprint: u64,
    ) -> Self {
        Self {
            message: SharedMessage::new(message),
            state: MessageState::Queued,
            recipient,
            next_fallback,
            attempts: 0,
            total_attempts: 0,
            accepted_at: now,
            available_at: now,
            expires_at: now.saturating_add(timeout),
            last_delivered_at: None,
            acked_at: None,
            reason: String::new(),
            fingerprint,
            version: 1,
        }
    }

    pub fn id(&self) -> &MessageId {
        &self.message.message_id
    }

    /// This record moved to `state`, a closed one, at `at`.
    pub fn closed(&self, state: MessageState, at: Timestamp) -> Self {
        debug_assert!(!state.is_open(), "{state:?} is not a closed state");
        Self {
            state,
            available_at: at,
            ..self.clone()
        }
    }
}

/// FNV-1a's starting value.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a of `bytes`: stable across builds, versions and processes,
/// unlike std's hasher.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    fnv1a(FNV_OFFSET, bytes)
}

/// FNV-1a over `bytes`, continuing from `hash`.
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// FNV-1a of `value`'s JSON, hashed as it is written: the same value as
/// hashing the serialized bytes, which is what earlier versions stored.
pub fn json_fingerprint<T: serde::Serialize>(value: &T) -> serde_json::Result<u64> {
    struct Fnv(u64);
    impl std::io::Write for Fnv {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 = fnv1a(self.0, bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut hash = Fnv(FNV_OFFSET);
    serde_json::to_writer(&mut hash, value)?;
    Ok(hash.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_delays() {
        let base = Duration::from_millis(100);
        let linear = RetryPolicy {
            max_retries: 5,
            backoff: Backoff::Linear,
        };
        let exponential = RetryPolicy {
            max_retries: 5,
            backoff: Backoff::Exponential,
        };
        let delays = |p: &RetryPolicy| (1..=4).map(|a| p.delay(a, base).as_millis()).collect::<Vec<_>>();
        assert_eq!(delays(&linear), [100, 200, 300, 400]);
        assert_eq!(delays(&exponential), [100, 200, 400, 800]);
        assert_eq!(exponential.delay(80, base), Duration::from_secs(3600));
    }

    /// The SQL stores keep a record as its message's JSON and the rest.
    #[test]
    fn a_record_is_its_message_and_the_rest_of_its_json() {
        let queued = crate::store::conformance::message("m1", "opencode://backend", Priority::High, 1);
        let mut acked = queued.closed(MessageState::Acked, queued.accepted_at);
        acked.reason = "done, \"quoted\"".into();
        for record in [&queued, &acked] {
            let delivery = record.delivery_json().unwrap();
            let rest: serde_json::Value = serde_json::from_str(&delivery).unwrap();
            let mut whole = serde_json::to_value(record).unwrap();
            let message = whole.as_object_mut().unwrap().remove("message").unwrap();
            assert_eq!(rest, whole, "every field but the message");
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(record.message.json().unwrap().get()).unwrap(),
                message
            );
            let joined = MessageRecord::from_parts(record.message.json().unwrap().get(), &delivery).unwrap();
            assert_eq!(&joined, record);
        }
        // Pretty-printed parts (PostgreSQL's jsonb output) join as well.
        let delivery = serde_json::to_string_pretty(
            &serde_json::from_str::<serde_json::Value>(&acked.delivery_json().unwrap()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            MessageRecord::from_parts(acked.message.json().unwrap().get(), &delivery).unwrap(),
            acked
        );
        for (message, delivery) in [("{}", "[]"), ("{", "{\"state\":\"acked\"}"), ("{}", "{\"message\":{}}")] {
            assert!(
                MessageRecord::from_parts(message, delivery).is_err(),
                "{message} {delivery}"
            );
        }
    }

    #[test]
    fn fingerprints_are_stable() {
        let fingerprint = stable_hash;
        assert_eq!(fingerprint(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fingerprint(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(fingerprint(b"ab"), fingerprint(b"ba"));
        // Fingerprints stored by earlier versions (from a buffer) still match.
        let value = serde_json::json!({"payload": {"n": [1, 2.5, "x"]}, "to": "opencode://backend"});
        let buffered = fingerprint(&serde_json::to_vec(&value).unwrap());
        assert_eq!(json_fingerprint(&value).unwrap(), buffered);
    }
}
