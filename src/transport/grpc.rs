//! gRPC handlers: decode the request, call one application function,
//! encode the answer. Errors map to status codes in [`status`].

use std::sync::Arc;
use std::time::Duration;

use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::convert;
pub use super::errors::status;
use crate::app::sessions::{ListSessions, Sessions};
use crate::app::watch::{self, WatchItem, WatchRequest};
use crate::domain::session::{ContextUpdateMode, NewSession};
use crate::domain::{AgentId, Error, SessionId};
use crate::pb;
use crate::pb::session_service_server::SessionService;
use crate::store::EventFilter;

/// Most session ids one watch may filter on.
const MAX_WATCH_SESSION_IDS: usize = 1000;

pub struct SessionGrpc {
    sessions: Arc<Sessions>,
    heartbeat: Duration,
    shutdown: CancellationToken,
}

impl SessionGrpc {
    pub fn new(sessions: Arc<Sessions>, heartbeat: Duration, shutdown: CancellationToken) -> Self {
        Self {
            sessions,
            heartbeat,
            shutdown,
        }
    }
}

type GrpcResult<T> = Result<Response<T>, Status>;

fn session_id(value: &str) -> Result<SessionId, Status> {
    SessionId::parse_field("session_id", value).map_err(status)
}

fn respond<T>(
    result: crate::domain::Result<crate::domain::session::Session>,
    wrap: impl FnOnce(Option<pb::Session>) -> T,
) -> GrpcResult<T> {
    result
        .map(|s| Response::new(wrap(Some(convert::session(&s)))))
        .map_err(status)
}

#[tonic::async_trait]
impl SessionService for SessionGrpc {
    async fn create_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> GrpcResult<pb::CreateSessionResponse> {
        let r = request.into_inner();
        let decode = || -> crate::domain::Result<NewSession> {
            let session_id = match r.session_id.as_str() {
                "" => None,
                id => Some(SessionId::parse_field("session_id", id)?),
            };
            if r.orchestrator.is_empty() {
                return Err(Error::invalid(
                    "orchestrator",
                    "is required (an agent id such as claude-code://orchestrator)",
                ));
            }
            Ok(NewSession {
                session_id,
                orchestrator: AgentId::parse_field("orchestrator", &r.orchestrator)?,
                participants: r
                    .participants
                    .into_iter()
                    .enumerate()
                    .map(|(i, p)| convert::participant_spec_from(&format!("participants[{i}]"), p))
                    .collect::<Result<_, _>>()?,
                steps: r
                    .steps
                    .into_iter()
                    .enumerate()
                    .map(|(i, s)| convert::workflow_step_from(&format!("steps[{i}]"), s))
                    .collect::<Result<_, _>>()?,
                shared_context: convert::json_object_from("shared_context", r.shared_context)?,
            })
        };
        let new = decode().map_err(status)?;
        respond(self.sessions.create(new).await, |session| pb::CreateSessionResponse {
            session,
        })
    }

    async fn get_session(&self, request: Request<pb::GetSessionRequest>) -> GrpcResult<pb::GetSessionResponse> {
        let id = session_id(&request.get_ref().session_id)?;
        respond(self.sessions.get(&id).await, |session| pb::GetSessionResponse {
            session,
        })
    }

    async fn list_sessions(&self, request: Request<pb::ListSessionsRequest>) -> GrpcResult<pb::ListSessionsResponse> {
        let r = request.into_inner();
        let states = r
            .states
            .iter()
            .enumerate()
            .map(|(i, s)| convert::session_state_from(&format!("states[{i}]"), *s))
            .collect::<Result<_, _>>()
            .map_err(status)?;
        let participant = match r.participant.as_str() {
            "" => None,
            agent => Some(AgentId::parse_field("participant", agent).map_err(status)?),
        };
        let request = ListSessions {
            states,
            participant,
            page_size: r.page_size as usize,
            page_token: r.page_token,
        };
        let list = self.sessions.list(request).await.map_err(status)?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: list.sessions.iter().map(convert::session).collect(),
            next_page_token: list.next_page_token,
        }))
    }

    async fn add_participant(
        &self,
        request: Request<pb::AddParticipantRequest>,
    ) -> GrpcResult<pb::AddParticipantResponse> {
        let r = request.into_inner();
        let id = session_id(&r.session_id)?;
        let spec = r
            .participant
            .ok_or_else(|| status(Error::invalid("participant", "is required")))?;
        let spec = convert::participant_spec_from("participant", spec).map_err(status)?;
        respond(
            self.sessions.add_participant(&id, spec, r.expected_version).await,
            |session| pb::AddParticipantResponse { session },
        )
    }

    async fn remove_participant(
        &self,
        request: Request<pb::RemoveParticipantRequest>,
    ) -> GrpcResult<pb::RemoveParticipantResponse> {
        let r = request.into_inner();
        let id = session_id(&r.session_id)?;
        let agent = AgentId::parse_field("agent_id", &r.agent_id).map_err(status)?;
        respond(
            self.sessions.remove_participant(&id, &agent, r.expected_version).await,
            |session| pb::RemoveParticipantResponse { session },
        )
    }

    async fn update_workflow(
        &self,
        request: Request<pb::UpdateWorkflowRequest>,
    ) -> GrpcResult<pb::UpdateWorkflowResponse> {
        let r = request.into_inner();
        let id = session_id(&r.session_id)?;
        let result = self
            .sessions
            .update_workflow(
                &id,
                r.current_step,
                r.completed_steps,
                r.pending_steps,
                r.expected_version,
            )
            .await;
        respond(result, |session| pb::UpdateWorkflowResponse { session })
    }

    async fn advance_workflow(
        &self,
        request: Request<pb::AdvanceWorkflowRequest>,
    ) -> GrpcResult<pb::AdvanceWorkflowResponse> {
        let r = request.into_inner();
        let id = session_id(&r.session_id)?;
        let next = Some(r.next_step.as_str()).filter(|s| !s.is_empty());
        respond(
            self.sessions.advance_workflow(&id, next, r.expected_version).await,
            |session| pb::AdvanceWorkflowResponse { session },
        )
    }

    async fn update_shared_context(
        &self,
        request: Request<pb::UpdateSharedContextRequest>,
    ) -> GrpcResult<pb::UpdateSharedContextResponse> {
        let r = request.into_inner();
        let id = session_id(&r.session_id)?;
        let mode = match pb::ContextUpdateMode::try_from(r.mode) {
            Ok(pb::ContextUpdateMode::Unspecified | pb::ContextUpdateMode::Replace) => ContextUpdateMode::Replace,
            Ok(pb::ContextUpdateMode::Merge) => ContextUpdateMode::Merge,
            Err(_) => {
                return Err(status(Error::invalid(
                    "mode",
                    format!("{} is not REPLACE or MERGE", r.mode),
                )));
            }
        };
        let context = r
            .context
            .ok_or_else(|| status(Error::invalid("context", "is required (a JSON object)")))?;
        let context = convert::json_object_from("context", Some(context)).map_err(status)?;
        respond(
            self.sessions
                .update_shared_context(&id, context, mode, r.expected_version)
                .await,
            |session| pb::UpdateSharedContextResponse { session },
        )
    }

    async fn complete_session(
        &self,
        request: Request<pb::CompleteSessionRequest>,
    ) -> GrpcResult<pb::CompleteSessionResponse> {
        let r = request.into_inner();
        let id = session_id(&r.session_id)?;
        respond(
            self.sessions
                .complete(&id, r.summary, r.artifacts, r.expected_version)
                .await,
            |session| pb::CompleteSessionResponse { session },
        )
    }

    async fn terminate_session(
        &self,
        request: Request<pb::TerminateSessionRequest>,
    ) -> GrpcResult<pb::TerminateSessionResponse> {
        let r = request.into_inner();
        let id = session_id(&r.session_id)?;
        respond(
            self.sessions
                .terminate(&id, r.reason, r.details, r.expected_version)
                .await,
            |session| pb::TerminateSessionResponse { session },
        )
    }

    type WatchSessionsStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::WatchSessionsResponse, Status>> + Send>>;

    async fn watch_sessions(
        &self,
        request: Request<pb::WatchSessionsRequest>,
    ) -> GrpcResult<Self::WatchSessionsStream> {
        let r = request.into_inner();
        if r.session_ids.len() > MAX_WATCH_SESSION_IDS {
            return Err(status(Error::invalid(
                "session_ids",
                format!("at most {MAX_WATCH_SESSION_IDS} allowed, got {}", r.session_ids.len()),
            )));
        }
        let session_ids = r
            .session_ids
            .iter()
            .enumerate()
            .map(|(i, id)| SessionId::parse_field(&format!("session_ids[{i}]"), id))
            .collect::<Result<_, _>>()
            .map_err(status)?;
        let kinds = r
            .event_types
            .iter()
            .enumerate()
            .map(|(i, t)| convert::event_kind_from(&format!("event_types[{i}]"), *t))
            .collect::<Result<_, _>>()
            .map_err(status)?;
        let request = WatchRequest {
            filter: EventFilter { session_ids, kinds },
            after_sequence: r.after_sequence,
        };
        let events = watch::watch(
            self.sessions.store().clone(),
            request,
            self.heartbeat,
            self.shutdown.clone(),
        )
        .map_err(status)?;
        let responses = events.map(|item| {
            let kind = match item.map_err(status)? {
                WatchItem::Event(event) => pb::watch_sessions_response::Kind::Event(convert::session_event(&event)),
                WatchItem::Heartbeat {
                    timestamp,
                    last_sequence,
                } => pb::watch_sessions_response::Kind::Heartbeat(pb::Heartbeat {
                    timestamp: Some(convert::timestamp(timestamp)),
                    last_sequence,
                }),
            };
            Ok(pb::WatchSessionsResponse { kind: Some(kind) })
        });
        Ok(Response::new(Box::pin(responses)))
    }
}
