//! The transport-neutral API: the contract's codec (the JSON [`dialect`],
//! proto <-> domain conversion in [`convert`], the one error table in
//! [`errors`]) and one function per RPC that takes the typed request and the
//! [`Caller`] and returns the typed answer or a domain error.
//!
//! The gRPC services and the HTTP gateway are thin adapters over [`Api`]:
//! they build a `Caller` from their headers, decode the request, call the
//! same function and encode what it returns. Rules live below, in `app`.

mod agents;
pub mod auth;
pub mod convert;
pub mod convert_messages;
pub mod dialect;
pub mod errors;
mod messages;
mod publish;
mod sessions;
mod tokens;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

pub use self::auth::{API_KEY_HEADER, Authenticator, Identity};
use crate::app::agents::Agents;
use crate::app::messaging::Messaging;
pub use crate::app::messaging::{MAX_ACKS, MAX_SENDS};
use crate::app::metrics::Metrics;
use crate::app::sessions::Sessions;
use crate::app::tokens::Tokens;
use crate::domain::access::Actor;
use crate::domain::trace::TraceContext;
use crate::domain::{AgentId, Denial, Error, Timestamp};

/// The items of a server stream (an inbox, a watch), ending with an error
/// when it cannot go on.
pub type ItemStream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Error>> + Send>>;

/// Who is calling, what they call, until when they wait, and the trace
/// they continue.
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: Identity,
    /// The gRPC method path or the HTTP method and route, for the log.
    pub method: Cow<'static, str>,
    /// When the caller stops waiting (its `grpc-timeout`, less a margin so
    /// that a DEADLINE_EXCEEDED answer reaches it in time).
    pub deadline: Option<tokio::time::Instant>,
    /// W3C trace context (`traceparent`, `tracestate`) as received.
    pub trace: Option<TraceContext>,
}

impl Caller {
    /// Who the access rules see.
    pub fn actor(&self) -> Actor {
        self.identity.actor()
    }
}

/// What the API needs from the application, plus stream settings.
pub struct Api {
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) agents: Arc<Agents>,
    pub(crate) messaging: Arc<Messaging>,
    tokens: Arc<Tokens>,
    auth: Authenticator,
    metrics: Arc<Metrics>,
    /// The admin key may not send, receive or ack.
    require_agent_identity: bool,
    heartbeat: Duration,
    shutdown: CancellationToken,
    /// The largest message a send accepts, in protobuf bytes.
    max_encoded_message: usize,
}

/// What a stored message may grow by on its way out: the fields the server
/// fills in (id, timestamp, frameworks) and the answer around it (Delivery,
/// MessageStatus with recipient and reason, a SYNC reply's response).
pub const MESSAGE_ENVELOPE_BYTES: usize = 4096;

pub struct ApiConfig {
    /// The admin key; `None` trusts every caller.
    pub api_key: Option<String>,
    pub require_agent_identity: bool,
    pub tokens: Arc<Tokens>,
    pub metrics: Arc<Metrics>,
    pub heartbeat: Duration,
    pub shutdown: CancellationToken,
    pub max_message_bytes: usize,
}

impl Api {
    pub fn new(sessions: Arc<Sessions>, agents: Arc<Agents>, messaging: Arc<Messaging>, config: ApiConfig) -> Self {
        Self {
            sessions,
            agents,
            messaging,
            auth: Authenticator::new(config.api_key.as_deref(), config.tokens.clone()),
            tokens: config.tokens,
            metrics: config.metrics,
            require_agent_identity: config.require_agent_identity,
            heartbeat: config.heartbeat,
            shutdown: config.shutdown,
            // Whatever is accepted must be deliverable to a client whose
            // receive limit is max_message_bytes (grpc's default is 4 MiB).
            max_encoded_message: config.max_message_bytes.saturating_sub(MESSAGE_ENVELOPE_BYTES),
        }
    }

    /// The caller of `method` with these headers (gRPC metadata or HTTP),
    /// on a connection whose client certificate names `peer`:
    /// UNAUTHENTICATED unless its credentials are valid.
    pub fn caller(
        &self,
        headers: &HeaderMap,
        peer: Option<&AgentId>,
        method: Cow<'static, str>,
    ) -> Result<Caller, Error> {
        let values = |name: &'static str| headers.get_all(name).into_iter().map(|v| v.as_bytes());
        let identity = match self
            .auth
            .authenticate(values(API_KEY_HEADER), values("authorization"), peer)
        {
            Ok(identity) => identity,
            Err((denial, message)) => {
                self.record_denial(&"unauthenticated", &method, denial, message);
                return Err(Error::unauthenticated(message).because(denial));
            }
        };
        if let Some(agent) = identity.agent_id() {
            crate::telemetry::record_agent(agent);
        }
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let trace = TraceContext::from_headers(text("traceparent"), text("tracestate"));
        Ok(Caller {
            identity,
            method,
            deadline: text("grpc-timeout").and_then(grpc_timeout).and_then(wait_until),
            trace,
        })
    }
}

impl Api {
    fn record_denial(&self, caller: &dyn std::fmt::Display, method: &str, denial: Denial, message: &str) {
        self.metrics.denied(denial);
        tracing::warn!(%caller, method, reason = denial.as_str(), "denied: {message}");
    }

    /// Logs and counts an access rule's refusal; every error passes.
    fn observe(&self, caller: &Caller, error: Error) -> Error {
        if let Some(denial) = error.denial {
            self.record_denial(&caller.identity, &caller.method, denial, &error.message);
        }
        error
    }

    /// `result`, with a refusal logged and counted.
    fn checked<T>(&self, caller: &Caller, result: Result<T, Error>) -> Result<T, Error> {
        result.map_err(|e| self.observe(caller, e))
    }

    /// PERMISSION_DENIED for an agent: token management is the admin's.
    fn admin_only(&self, caller: &Caller) -> Result<(), Error> {
        match caller.identity.agent_id() {
            Some(agent) => Err(self.observe(
                caller,
                Error::denied(
                    Denial::AdminOnly,
                    format!("only the admin key may manage tokens; {agent} may not"),
                ),
            )),
            None => Ok(()),
        }
    }

    /// PERMISSION_DENIED unless the caller may act as `agent` (`field` of
    /// the request): an agent only as itself.
    fn act_as(&self, caller: &Caller, field: &str, agent: &AgentId) -> Result<(), Error> {
        crate::telemetry::record_agent(agent);
        self.checked(caller, caller.identity.actor().check_agent(field, agent))
    }

    /// As [`Api::act_as`], for sending, receiving and acknowledging, which
    /// `--require-agent-identity` keeps from the admin key.
    fn speak_as(&self, caller: &Caller, field: &str, agent: &AgentId) -> Result<(), Error> {
        if self.require_agent_identity && caller.identity.agent_id().is_none() {
            return Err(self.observe(
                caller,
                Error::denied(
                    Denial::AgentIdentityRequired,
                    "only agents may send, receive and acknowledge messages on this bus \
                     (--require-agent-identity): call with the agent's token or client certificate",
                ),
            ));
        }
        self.act_as(caller, field, agent)
    }

    /// Ends the stream with UNAUTHENTICATED when the caller's token is
    /// revoked or expires.
    fn guard<T: Send + 'static>(&self, caller: &Caller, items: ItemStream<T>) -> ItemStream<T> {
        let Some(grant) = caller.identity.grant().cloned() else {
            return items;
        };
        let revoked = grant.revoked().clone().cancelled_owned();
        let expiry = grant.expires_at().map(|at| {
            let left = at.unix_micros().saturating_sub(Timestamp::now().unix_micros());
            Duration::from_micros(u64::try_from(left).unwrap_or(0))
        });
        let expired = async move {
            match expiry {
                Some(left) => tokio::time::sleep(left).await,
                None => std::future::pending().await,
            }
        };
        let end = async move {
            tokio::select! {
                () = revoked => Error::unauthenticated("the agent token was revoked"),
                () = expired => Error::unauthenticated("the agent token has expired"),
            }
        };
        Box::pin(async_stream::stream! {
            let mut items = items;
            let mut end = std::pin::pin!(end);
            loop {
                let next = tokio::select! {
                    biased;
                    error = &mut end => Err(error),
                    item = items.next() => Ok(item),
                };
                match next {
                    Ok(Some(item)) => yield item,
                    Ok(None) => return,
                    Err(error) => {
                        yield Err(error);
                        return;
                    }
                }
            }
        })
    }
}

/// Until when to wait for a caller that waits `timeout`: less a margin, so
/// that a DEADLINE_EXCEEDED answer arrives before the caller (and tonic's
/// own timeout) gives up. None (no deadline) if that is beyond the clock.
fn wait_until(timeout: Duration) -> Option<tokio::time::Instant> {
    let budget = timeout.saturating_sub((timeout / 10).min(Duration::from_millis(50)));
    tokio::time::Instant::now().checked_add(budget)
}

/// A `grpc-timeout` value: at most 8 digits and a unit (`250m`, `2S`,
/// `1H`), as the gRPC protocol spells it; anything else is ignored.
fn grpc_timeout(value: &str) -> Option<Duration> {
    let (amount, unit) = value.split_at(value.len().checked_sub(1)?);
    if amount.is_empty() || amount.len() > 8 || !amount.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = amount.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_header() {
        assert_eq!(grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout("x"), None);
        assert_eq!(grpc_timeout(""), None);
        assert_eq!(grpc_timeout("18446744073709551615S"), None);
        assert_eq!(grpc_timeout("+5S"), None);
        let far = grpc_timeout("99999999H").unwrap();
        assert!(wait_until(far).is_some_and(|at| at > tokio::time::Instant::now()));
    }
}
