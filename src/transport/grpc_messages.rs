//! gRPC handlers of AgentService and MessageService.

use std::sync::Arc;
use std::time::Duration;

use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::convert::timestamp;
use super::convert_messages as convert;
use super::grpc::status;
use crate::app::agents::{Agents, ListAgents};
use crate::app::messaging::{InboxItem, MAX_ACKS, Messaging};
use crate::domain::message::MessageId;
use crate::domain::{AgentId, Error};
use crate::pb;
use crate::pb::agent_service_server::AgentService;
use crate::pb::message_service_server::MessageService;

type GrpcResult<T> = Result<Response<T>, Status>;

fn agent_id(field: &str, value: &str) -> Result<AgentId, Status> {
    AgentId::parse_field(field, value).map_err(status)
}

fn message_id(value: &str) -> Result<MessageId, Status> {
    MessageId::parse_field("message_id", value).map_err(status)
}

/// Until when the server may wait for the caller: its `grpc-timeout` from
/// now, less a margin, so a DEADLINE_EXCEEDED answer arrives before the
/// caller (and tonic's own timeout) gives up.
fn wait_until<T>(request: &Request<T>) -> Option<tokio::time::Instant> {
    let deadline = deadline(request)?;
    let budget = deadline.saturating_sub((deadline / 10).min(Duration::from_millis(50)));
    Some(tokio::time::Instant::now() + budget)
}

/// The caller's deadline from the `grpc-timeout` header, if it sent one.
fn deadline<T>(request: &Request<T>) -> Option<Duration> {
    let value = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (amount, unit) = value.split_at(value.len().checked_sub(1)?);
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

pub struct AgentGrpc {
    agents: Arc<Agents>,
}

impl AgentGrpc {
    pub fn new(agents: Arc<Agents>) -> Self {
        Self { agents }
    }
}

#[tonic::async_trait]
impl AgentService for AgentGrpc {
    async fn register_agent(
        &self,
        request: Request<pb::RegisterAgentRequest>,
    ) -> GrpcResult<pb::RegisterAgentResponse> {
        let r = request.into_inner();
        let descriptor = r.agent.ok_or_else(|| status(Error::invalid("agent", "is required")))?;
        let descriptor = convert::agent_descriptor_from("agent", descriptor).map_err(status)?;
        let (view, created) = self.agents.register(descriptor, r.update).await.map_err(status)?;
        Ok(Response::new(pb::RegisterAgentResponse {
            agent: Some(convert::agent(&view)),
            created,
        }))
    }

    async fn unregister_agent(
        &self,
        request: Request<pb::UnregisterAgentRequest>,
    ) -> GrpcResult<pb::UnregisterAgentResponse> {
        let id = agent_id("agent_id", &request.get_ref().agent_id)?;
        let dead_lettered = self.agents.unregister(&id).await.map_err(status)?;
        Ok(Response::new(pb::UnregisterAgentResponse { dead_lettered }))
    }

    async fn get_agent(&self, request: Request<pb::GetAgentRequest>) -> GrpcResult<pb::GetAgentResponse> {
        let id = agent_id("agent_id", &request.get_ref().agent_id)?;
        let view = self.agents.get(&id).await.map_err(status)?;
        Ok(Response::new(pb::GetAgentResponse {
            agent: Some(convert::agent(&view)),
        }))
    }

    async fn list_agents(&self, request: Request<pb::ListAgentsRequest>) -> GrpcResult<pb::ListAgentsResponse> {
        let r = request.into_inner();
        let request = ListAgents {
            framework: Some(r.framework).filter(|f| !f.is_empty()),
            capability: Some(r.capability).filter(|c| !c.is_empty()),
            online: r.online,
            page_size: r.page_size as usize,
            page_token: r.page_token,
        };
        let (agents, next_page_token) = self.agents.list(request).await.map_err(status)?;
        Ok(Response::new(pb::ListAgentsResponse {
            agents: agents.iter().map(convert::agent).collect(),
            next_page_token,
        }))
    }
}

/// What a stored message may grow by on its way out: the fields the server
/// fills in (id, timestamp, frameworks) and the answer around it (Delivery,
/// MessageStatus with recipient and reason, a SYNC reply's response).
pub const MESSAGE_ENVELOPE_BYTES: usize = 4096;

pub struct MessageGrpc {
    messaging: Arc<Messaging>,
    shutdown: CancellationToken,
    /// The largest message a send accepts, in protobuf bytes: whatever is
    /// accepted must be deliverable to a client whose receive limit is
    /// max_message_bytes (grpcurl's and grpc's default is 4 MiB).
    max_encoded_message: usize,
}

impl MessageGrpc {
    pub fn new(messaging: Arc<Messaging>, shutdown: CancellationToken, max_message_bytes: usize) -> Self {
        Self {
            messaging,
            shutdown,
            max_encoded_message: max_message_bytes.saturating_sub(MESSAGE_ENVELOPE_BYTES),
        }
    }

    /// Sizes the message as gRPC will send it, whichever transport it came
    /// by (JSON can grow several times as protobuf: `[1,1,...]`).
    fn check_size(&self, message: &pb::Message) -> Result<(), Status> {
        let size = prost::Message::encoded_len(message);
        if size > self.max_encoded_message {
            return Err(status(Error::invalid(
                "message",
                format!(
                    "encodes to {size} bytes of protobuf; a message may take at most {} \
                     (max_message_bytes less {MESSAGE_ENVELOPE_BYTES} for the delivery around it): \
                     shrink the payload",
                    self.max_encoded_message
                ),
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl MessageService for MessageGrpc {
    async fn send_message(&self, request: Request<pb::SendMessageRequest>) -> GrpcResult<pb::SendMessageResponse> {
        let deadline = wait_until(&request);
        let message = request.into_inner().message;
        if let Some(message) = &message {
            self.check_size(message)?;
        }
        let new = convert::new_message_from(message).map_err(status)?;
        let outcome = self.messaging.send(new, deadline).await.map_err(status)?;
        Ok(Response::new(pb::SendMessageResponse {
            accepted: true,
            message_id: outcome.message_id.to_string(),
            state: convert::message_state(outcome.state) as i32,
            reply: outcome.reply.as_ref().map(convert::message),
        }))
    }

    type ReceiveMessagesStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ReceiveMessagesResponse, Status>> + Send>>;

    async fn receive_messages(
        &self,
        request: Request<pb::ReceiveMessagesRequest>,
    ) -> GrpcResult<Self::ReceiveMessagesStream> {
        let agent = agent_id("agent_id", &request.get_ref().agent_id)?;
        let max_in_flight = match request.get_ref().max_in_flight {
            0 => None,
            n => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        };
        let inbox = self
            .messaging
            .receive(agent, max_in_flight, self.shutdown.clone())
            .await
            .map_err(status)?;
        let responses = inbox.map(|item| {
            let kind = match item.map_err(status)? {
                InboxItem::Delivery {
                    message,
                    attempt,
                    ack_deadline,
                } => pb::receive_messages_response::Kind::Delivery(pb::Delivery {
                    message: Some(convert::message(&message)),
                    attempt,
                    ack_deadline: Some(timestamp(ack_deadline)),
                }),
                InboxItem::Heartbeat {
                    timestamp: at,
                    inbox_depth,
                } => pb::receive_messages_response::Kind::Heartbeat(pb::InboxHeartbeat {
                    timestamp: Some(timestamp(at)),
                    inbox_depth,
                }),
            };
            Ok(pb::ReceiveMessagesResponse { kind: Some(kind) })
        });
        Ok(Response::new(Box::pin(responses)))
    }

    async fn ack_message(&self, request: Request<pb::AckMessageRequest>) -> GrpcResult<pb::AckMessageResponse> {
        let r = request.get_ref();
        let agent = agent_id("agent_id", &r.agent_id)?;
        let id = message_id(&r.message_id)?;
        let state = self.messaging.ack(&agent, &id).await.map_err(status)?;
        Ok(Response::new(pb::AckMessageResponse {
            state: convert::message_state(state) as i32,
        }))
    }

    async fn ack_messages(&self, request: Request<pb::AckMessagesRequest>) -> GrpcResult<pb::AckMessagesResponse> {
        let r = request.get_ref();
        let agent = agent_id("agent_id", &r.agent_id)?;
        let field = "message_ids";
        if r.message_ids.is_empty() || r.message_ids.len() > MAX_ACKS {
            let why = format!("between 1 and {MAX_ACKS} ids, got {}", r.message_ids.len());
            return Err(status(Error::invalid(field, why)));
        }
        let ids = r
            .message_ids
            .iter()
            .enumerate()
            .map(|(i, id)| MessageId::parse_field(&format!("{field}[{i}]"), id))
            .collect::<Result<Vec<_>, _>>()
            .map_err(status)?;
        let results = self.messaging.ack_many(&agent, &ids).await;
        let results = ids
            .iter()
            .zip(results)
            .map(|(id, result)| {
                let mut answer = pb::AckResult {
                    message_id: id.as_str().to_owned(),
                    ..Default::default()
                };
                match result {
                    Ok(state) => answer.state = convert::message_state(state) as i32,
                    Err(e) => {
                        let failed = status(e);
                        answer.code = failed.code() as i32;
                        answer.error = failed.message().to_owned();
                    }
                }
                answer
            })
            .collect();
        Ok(Response::new(pb::AckMessagesResponse { results }))
    }

    async fn get_message(&self, request: Request<pb::GetMessageRequest>) -> GrpcResult<pb::GetMessageResponse> {
        let id = message_id(&request.get_ref().message_id)?;
        let record = self.messaging.get(&id).await.map_err(status)?;
        Ok(Response::new(pb::GetMessageResponse {
            status: Some(convert::message_status(&record)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_header() {
        let with = |value: &str| {
            let mut request = Request::new(());
            request.metadata_mut().insert("grpc-timeout", value.parse().unwrap());
            deadline(&request)
        };
        assert_eq!(with("250m"), Some(Duration::from_millis(250)));
        assert_eq!(with("2S"), Some(Duration::from_secs(2)));
        assert_eq!(with("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(with("x"), None);
        assert_eq!(deadline(&Request::new(())), None);
    }
}
