//! MessageService: send, receive, acknowledge and look up messages.

use futures_util::future::join_all;
use prost::Message as _;
use tokio_stream::StreamExt;
use tonic::Code;

use super::agents::agent_id;
use super::convert::timestamp;
use super::convert_messages as convert;
use super::{Api, Caller, ItemStream, MAX_ACKS, MESSAGE_ENVELOPE_BYTES, errors};
use crate::app::messaging::{InboxItem, MAX_SENDS, NewMessage};
use crate::domain::message::MessageId;
use crate::domain::{Denial, Error, Result};
use crate::pb;
use crate::telemetry;

fn message_id(value: &str) -> Result<MessageId> {
    let id = MessageId::parse_field("message_id", value)?;
    telemetry::record_message(&id);
    Ok(id)
}

impl Api {
    /// Sizes the message as gRPC will send it, whichever transport it came
    /// by (JSON can grow several times as protobuf: `[1,1,...]`).
    fn check_size(&self, message: &pb::Message) -> Result<()> {
        let size = message.encoded_len();
        if size > self.max_encoded_message {
            return Err(Error::invalid(
                "message",
                format!(
                    "encodes to {size} bytes of protobuf; a message may take at most {} \
                     (max_message_bytes less {MESSAGE_ENVELOPE_BYTES} for the delivery around it): \
                     shrink the payload",
                    self.max_encoded_message
                ),
            ));
        }
        Ok(())
    }

    /// The message of a send, checked and converted, from the caller as
    /// its sender: an agent's message without a sender is from the agent.
    fn new_message(&self, caller: &Caller, message: Option<pb::Message>) -> Result<NewMessage> {
        let mut message = message;
        if let Some(message) = &mut message {
            if let Some(me) = caller.identity.agent_id() {
                let sender = message.sender.get_or_insert_default();
                if sender.agent_id.is_empty() {
                    sender.agent_id = me.to_string();
                }
            }
            self.check_size(message)?;
        }
        let mut new = convert::new_message_from(message)?;
        if new.trace.is_none() {
            new.trace = caller.trace.clone();
        }
        self.speak_as(caller, "message.sender.agent_id", &new.sender.agent_id)?;
        if let Some(session) = &new.sender.session_id {
            telemetry::record_session(session);
        }
        Ok(new)
    }

    pub async fn send_message(&self, caller: &Caller, r: pb::SendMessageRequest) -> Result<pb::SendMessageResponse> {
        let new = self.new_message(caller, r.message)?;
        let outcome = self.checked(caller, self.messaging.send(new, caller.deadline).await)?;
        telemetry::record_message(&outcome.message_id);
        Ok(pb::SendMessageResponse {
            accepted: true,
            message_id: outcome.message_id.to_string(),
            state: convert::message_state(outcome.state) as i32,
            reply: outcome.reply.as_ref().map(convert::message),
        })
    }

    /// Sends every message concurrently (their writes share commits) and
    /// answers one result per message, in order, once all are known.
    pub async fn send_messages(&self, caller: &Caller, r: pb::SendMessagesRequest) -> Result<pb::SendMessagesResponse> {
        if r.messages.is_empty() || r.messages.len() > MAX_SENDS {
            let why = format!("between 1 and {MAX_SENDS} messages, got {}", r.messages.len());
            return Err(Error::invalid("messages", why));
        }
        let sends = r
            .messages
            .into_iter()
            .map(|message| self.send_one(caller, Some(message)));
        Ok(pb::SendMessagesResponse {
            results: join_all(sends).await,
        })
    }

    /// One message of a batch, with its outcome as a result: an error
    /// fails only this message.
    pub(super) async fn send_one(&self, caller: &Caller, message: Option<pb::Message>) -> pb::SendResult {
        let given = message.as_ref().map(|m| m.message_id.clone()).unwrap_or_default();
        let outcome = match self.new_message(caller, message) {
            Ok(new) => self.checked(caller, self.messaging.send_batched(new).await),
            Err(e) => Err(e),
        };
        let mut result = pb::SendResult {
            message_id: given,
            ..Default::default()
        };
        let code = match outcome {
            Ok(outcome) => {
                result.accepted = true;
                result.message_id = outcome.message_id.to_string();
                result.state = convert::message_state(outcome.state) as i32;
                Code::Ok
            }
            Err(e) => {
                result.error = e.message;
                errors::grpc_code(e.kind)
            }
        };
        result.code = code as i32;
        result.code_name = errors::code_name(code).to_owned();
        result
    }

    pub async fn receive_messages(
        &self,
        caller: &Caller,
        r: pb::ReceiveMessagesRequest,
    ) -> Result<ItemStream<pb::ReceiveMessagesResponse>> {
        let agent = agent_id("agent_id", &r.agent_id)?;
        self.speak_as(caller, "agent_id", &agent)?;
        let max_in_flight = match r.max_in_flight {
            0 => None,
            n => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        };
        let inbox = self
            .messaging
            .receive(agent.clone(), max_in_flight, self.shutdown.clone())
            .await?;
        let responses = inbox.map(move |item| {
            let kind = match item? {
                InboxItem::Delivery {
                    message,
                    attempt,
                    ack_deadline,
                } => {
                    let _delivery = telemetry::delivery_span(&agent, &message, attempt).entered();
                    pb::receive_messages_response::Kind::Delivery(pb::Delivery {
                        message: Some(convert::message(&message)),
                        attempt,
                        ack_deadline: Some(timestamp(ack_deadline)),
                    })
                }
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
        Ok(self.guard(caller, Box::pin(responses)))
    }

    pub async fn ack_message(&self, caller: &Caller, r: pb::AckMessageRequest) -> Result<pb::AckMessageResponse> {
        let agent = agent_id("agent_id", &r.agent_id)?;
        self.speak_as(caller, "agent_id", &agent)?;
        let id = message_id(&r.message_id)?;
        let state = self.checked(caller, self.messaging.ack(&caller.actor(), &agent, &id).await)?;
        Ok(pb::AckMessageResponse {
            state: convert::message_state(state) as i32,
        })
    }

    pub async fn ack_messages(&self, caller: &Caller, r: pb::AckMessagesRequest) -> Result<pb::AckMessagesResponse> {
        let agent = agent_id("agent_id", &r.agent_id)?;
        self.speak_as(caller, "agent_id", &agent)?;
        let field = "message_ids";
        if r.message_ids.is_empty() || r.message_ids.len() > MAX_ACKS {
            let why = format!("between 1 and {MAX_ACKS} ids, got {}", r.message_ids.len());
            return Err(Error::invalid(field, why));
        }
        let ids = r
            .message_ids
            .iter()
            .enumerate()
            .map(|(i, id)| MessageId::parse_field(&format!("{field}[{i}]"), id))
            .collect::<Result<Vec<_>, _>>()?;
        let results = self.messaging.ack_many(&caller.actor(), &agent, &ids).await;
        let results = ids
            .iter()
            .zip(results)
            .map(|(id, result)| {
                let mut answer = pb::AckResult {
                    message_id: id.as_str().to_owned(),
                    ..Default::default()
                };
                let code = match result {
                    Ok(state) => {
                        answer.state = convert::message_state(state) as i32;
                        Code::Ok
                    }
                    Err(e) => {
                        let e = self.observe(caller, e);
                        answer.error = e.message;
                        errors::grpc_code(e.kind)
                    }
                };
                answer.code = code as i32;
                answer.code_name = errors::code_name(code).to_owned();
                answer
            })
            .collect();
        Ok(pb::AckMessagesResponse { results })
    }

    /// An agent sees only the messages it sent or was sent (as recipient or
    /// fallback it went to); others are NOT_FOUND, as if they did not exist.
    pub async fn get_message(&self, caller: &Caller, r: pb::GetMessageRequest) -> Result<pb::GetMessageResponse> {
        let id = message_id(&r.message_id)?;
        let record = self.messaging.get(&id).await?;
        if let Some(me) = caller.identity.agent_id() {
            let m = &record.message;
            let involved = m.sender.agent_id == *me || m.recipient.agent_id == *me || record.recipient == *me;
            if !involved {
                let hidden = Error::not_found(format!("message {id} not found")).because(Denial::NotParticipant);
                return Err(self.observe(caller, hidden));
            }
        }
        Ok(pb::GetMessageResponse {
            status: Some(convert::message_status(&record)),
        })
    }
}
