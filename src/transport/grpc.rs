//! The gRPC services: each method takes the caller from the metadata, calls
//! the API function of the same name and maps its error to a status.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;

use axum::http::{Extensions, HeaderMap};
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::{Request, Response, Status, Streaming};

use crate::api::errors::{error_of_status, status};
use crate::api::{Api, Caller, ItemStream};
use crate::pb;
use crate::pb::agent_service_server::AgentService;
use crate::pb::message_service_server::MessageService;
use crate::pb::session_service_server::SessionService;
use crate::transport::listener::ConnectionInfo;
use crate::transport::request_metrics::RpcMethod;

/// AgentService, MessageService and SessionService over one [`Api`].
pub struct Grpc {
    api: Arc<Api>,
}

impl Grpc {
    pub fn new(api: Arc<Api>) -> Self {
        Self { api }
    }

    /// The caller [`Authenticate`] found, and the request message.
    fn caller<T>(&self, request: Request<T>) -> Result<(Caller, T), Status> {
        let (metadata, mut extensions, message) = request.into_parts();
        let caller = match extensions.remove::<Caller>() {
            Some(caller) => caller,
            None => authenticate(&self.api, metadata.into_headers(), &extensions)?.0,
        };
        Ok((caller, message))
    }
}

/// Authenticates a call from its metadata before tonic reads its message,
/// so a caller without credentials costs no body buffering or decoding; the
/// [`Caller`] goes to the method in the request's extensions.
#[derive(Clone)]
pub struct Authenticate(pub Arc<Api>);

impl Interceptor for Authenticate {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let (metadata, mut extensions, ()) = request.into_parts();
        let (caller, headers) = authenticate(&self.0, metadata.into_headers(), &extensions)?;
        extensions.insert(caller);
        Ok(Request::from_parts(MetadataMap::from_headers(headers), extensions, ()))
    }
}

/// The caller of a call with these headers, on the connection and for the
/// method that the extensions name.
fn authenticate(api: &Api, headers: HeaderMap, extensions: &Extensions) -> Result<(Caller, HeaderMap), Status> {
    let peer = extensions.get::<ConnectionInfo>().and_then(|c| c.peer_agent.as_ref());
    let method = extensions
        .get::<RpcMethod>()
        .map_or(Cow::Borrowed("unknown gRPC method"), |m| Cow::Borrowed(m.0));
    let caller = api.caller(&headers, peer, method).map_err(status)?;
    Ok((caller, headers))
}

type GrpcStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn stream<T: 'static>(items: ItemStream<T>) -> Response<GrpcStream<T>> {
    Response::new(Box::pin(items.map(|item| item.map_err(status))))
}

/// An `impl` of a generated service trait whose unary methods call the API
/// function of the same name; streaming methods follow as written.
macro_rules! service {
    ($service:ident { $($method:ident($request:ident) -> $response:ident;)* } $($streams:tt)*) => {
        #[tonic::async_trait]
        impl $service for Grpc {
            $(
                async fn $method(&self, request: Request<pb::$request>) -> Result<Response<pb::$response>, Status> {
                    let (caller, message) = self.caller(request)?;
                    self.api.$method(&caller, message).await.map(Response::new).map_err(status)
                }
            )*
            $($streams)*
        }
    };
}

service! {
    AgentService {
        register_agent(RegisterAgentRequest) -> RegisterAgentResponse;
        unregister_agent(UnregisterAgentRequest) -> UnregisterAgentResponse;
        get_agent(GetAgentRequest) -> GetAgentResponse;
        list_agents(ListAgentsRequest) -> ListAgentsResponse;
        issue_agent_token(IssueAgentTokenRequest) -> IssueAgentTokenResponse;
        list_agent_tokens(ListAgentTokensRequest) -> ListAgentTokensResponse;
        revoke_agent_token(RevokeAgentTokenRequest) -> RevokeAgentTokenResponse;
    }
}

service! {
    MessageService {
        send_message(SendMessageRequest) -> SendMessageResponse;
        ack_message(AckMessageRequest) -> AckMessageResponse;
        ack_messages(AckMessagesRequest) -> AckMessagesResponse;
        get_message(GetMessageRequest) -> GetMessageResponse;
        send_messages(SendMessagesRequest) -> SendMessagesResponse;
    }

    type ReceiveMessagesStream = GrpcStream<pb::ReceiveMessagesResponse>;

    async fn receive_messages(
        &self,
        request: Request<pb::ReceiveMessagesRequest>,
    ) -> Result<Response<Self::ReceiveMessagesStream>, Status> {
        let (caller, message) = self.caller(request)?;
        Ok(stream(self.api.receive_messages(&caller, message).await.map_err(status)?))
    }

    type PublishMessagesStream = GrpcStream<pb::PublishMessagesResponse>;

    async fn publish_messages(
        &self,
        request: Request<Streaming<pb::PublishMessagesRequest>>,
    ) -> Result<Response<Self::PublishMessagesStream>, Status> {
        let (caller, requests) = self.caller(request)?;
        let requests = Box::pin(requests.map(|request| request.map_err(error_of_status)));
        Ok(stream(self.api.publish_messages(&caller, requests)))
    }
}

service! {
    SessionService {
        create_session(CreateSessionRequest) -> CreateSessionResponse;
        get_session(GetSessionRequest) -> GetSessionResponse;
        list_sessions(ListSessionsRequest) -> ListSessionsResponse;
        add_participant(AddParticipantRequest) -> AddParticipantResponse;
        remove_participant(RemoveParticipantRequest) -> RemoveParticipantResponse;
        update_workflow(UpdateWorkflowRequest) -> UpdateWorkflowResponse;
        advance_workflow(AdvanceWorkflowRequest) -> AdvanceWorkflowResponse;
        update_shared_context(UpdateSharedContextRequest) -> UpdateSharedContextResponse;
        complete_session(CompleteSessionRequest) -> CompleteSessionResponse;
        terminate_session(TerminateSessionRequest) -> TerminateSessionResponse;
        aggregate_results(AggregateResultsRequest) -> AggregateResultsResponse;
        resolve_aggregation(ResolveAggregationRequest) -> ResolveAggregationResponse;
        get_session_summary(GetSessionSummaryRequest) -> GetSessionSummaryResponse;
    }

    type WatchSessionsStream = GrpcStream<pb::WatchSessionsResponse>;

    async fn watch_sessions(
        &self,
        request: Request<pb::WatchSessionsRequest>,
    ) -> Result<Response<Self::WatchSessionsStream>, Status> {
        let (caller, message) = self.caller(request)?;
        Ok(stream(self.api.watch_sessions(&caller, message).map_err(status)?))
    }
}
