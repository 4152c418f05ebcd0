//! The transport ceiling: a tonic server whose SendMessage answers at once,
//! without validation or storage, over the same contract and payloads.

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::pb;
use crate::pb::message_service_server::{MessageService, MessageServiceServer};

struct Echo;

type Inbox = Pin<Box<dyn Stream<Item = Result<pb::ReceiveMessagesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl MessageService for Echo {
    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        let message_id = request.into_inner().message.map(|m| m.message_id).unwrap_or_default();
        Ok(Response::new(pb::SendMessageResponse {
            accepted: true,
            message_id,
            state: pb::MessageState::Queued as i32,
            reply: None,
        }))
    }

    type ReceiveMessagesStream = Inbox;

    async fn receive_messages(
        &self,
        _: Request<pb::ReceiveMessagesRequest>,
    ) -> Result<Response<Self::ReceiveMessagesStream>, Status> {
        Err(Status::unimplemented("the echo peer only answers SendMessage"))
    }

    async fn ack_message(&self, _: Request<pb::AckMessageRequest>) -> Result<Response<pb::AckMessageResponse>, Status> {
        Err(Status::unimplemented("the echo peer only answers SendMessage"))
    }

    async fn ack_messages(
        &self,
        _: Request<pb::AckMessagesRequest>,
    ) -> Result<Response<pb::AckMessagesResponse>, Status> {
        Err(Status::unimplemented("the echo peer only answers SendMessage"))
    }

    async fn get_message(&self, _: Request<pb::GetMessageRequest>) -> Result<Response<pb::GetMessageResponse>, Status> {
        Err(Status::unimplemented("the echo peer only answers SendMessage"))
    }

    async fn send_messages(
        &self,
        _: Request<pb::SendMessagesRequest>,
    ) -> Result<Response<pb::SendMessagesResponse>, Status> {
        Err(Status::unimplemented("the echo peer only answers SendMessage"))
    }

    type PublishMessagesStream = Pin<Box<dyn Stream<Item = Result<pb::PublishMessagesResponse, Status>> + Send>>;

    async fn publish_messages(
        &self,
        _: Request<tonic::Streaming<pb::PublishMessagesRequest>>,
    ) -> Result<Response<Self::PublishMessagesStream>, Status> {
        Err(Status::unimplemented("the echo peer only answers SendMessage"))
    }
}

/// Serves the echo peer on `listen` until killed; prints the address line
/// the harness waits for, like `agentbus serve`.
pub async fn serve(listen: &str) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("agentbus listening on {addr}");
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .max_concurrent_streams(Some(1024))
        .add_service(MessageServiceServer::new(Echo))
        .serve_with_incoming(incoming)
        .await
        .map_err(|e| e.to_string())
}
