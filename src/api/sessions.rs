//! SessionService: create, read, list, change, end and watch sessions.

use tokio_stream::StreamExt;

use super::convert;
use super::{Api, Caller, ItemStream};
use crate::app::sessions::ListSessions;
use crate::app::watch::{self, WatchItem, WatchRequest};
use crate::domain::aggregate::AggregationRequest;
use crate::domain::session::{ContextUpdateMode, NewSession, Session};
use crate::domain::{AgentId, Error, Result, SessionId};
use crate::pb;
use crate::store::EventFilter;
use crate::telemetry;

/// Most session ids one watch may filter on.
const MAX_WATCH_SESSION_IDS: usize = 1000;

fn session_id(value: &str) -> Result<SessionId> {
    let id = SessionId::parse_field("session_id", value)?;
    telemetry::record_session(&id);
    Ok(id)
}

impl Api {
    /// The session after a change, wrapped in its RPC's answer; an access
    /// rule's refusal is logged and counted.
    fn respond<T>(
        &self,
        caller: &Caller,
        result: Result<Session>,
        wrap: impl FnOnce(Option<pb::Session>) -> T,
    ) -> Result<T> {
        self.checked(caller, result).map(|s| wrap(Some(convert::session(&s))))
    }

    pub async fn create_session(
        &self,
        caller: &Caller,
        r: pb::CreateSessionRequest,
    ) -> Result<pb::CreateSessionResponse> {
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
        let new = decode()?;
        let created = self.sessions.create(&caller.actor(), new).await;
        if let Ok(session) = &created {
            telemetry::record_session(&session.session_id);
        }
        self.respond(caller, created, |session| pb::CreateSessionResponse { session })
    }

    pub async fn get_session(&self, caller: &Caller, r: pb::GetSessionRequest) -> Result<pb::GetSessionResponse> {
        let id = session_id(&r.session_id)?;
        self.respond(caller, self.sessions.get(&caller.actor(), &id).await, |session| {
            pb::GetSessionResponse { session }
        })
    }

    pub async fn list_sessions(&self, caller: &Caller, r: pb::ListSessionsRequest) -> Result<pb::ListSessionsResponse> {
        let states = r
            .states
            .iter()
            .enumerate()
            .map(|(i, s)| convert::session_state_from(&format!("states[{i}]"), *s))
            .collect::<Result<_, _>>()?;
        let participant = match r.participant.as_str() {
            "" => None,
            agent => Some(AgentId::parse_field("participant", agent)?),
        };
        let request = ListSessions {
            states,
            participant,
            page_size: r.page_size as usize,
            page_token: r.page_token,
        };
        let list = self.sessions.list(&caller.actor(), request).await?;
        Ok(pb::ListSessionsResponse {
            sessions: list.sessions.iter().map(convert::session).collect(),
            next_page_token: list.next_page_token,
        })
    }

    pub async fn add_participant(
        &self,
        caller: &Caller,
        r: pb::AddParticipantRequest,
    ) -> Result<pb::AddParticipantResponse> {
        let id = session_id(&r.session_id)?;
        let spec = r
            .participant
            .ok_or_else(|| Error::invalid("participant", "is required"))?;
        let spec = convert::participant_spec_from("participant", spec)?;
        self.respond(
            caller,
            self.sessions
                .add_participant(&caller.actor(), &id, spec, r.expected_version)
                .await,
            |session| pb::AddParticipantResponse { session },
        )
    }

    pub async fn remove_participant(
        &self,
        caller: &Caller,
        r: pb::RemoveParticipantRequest,
    ) -> Result<pb::RemoveParticipantResponse> {
        let id = session_id(&r.session_id)?;
        let agent = AgentId::parse_field("agent_id", &r.agent_id)?;
        self.respond(
            caller,
            self.sessions
                .remove_participant(&caller.actor(), &id, &agent, r.expected_version)
                .await,
            |session| pb::RemoveParticipantResponse { session },
        )
    }

    pub async fn update_workflow(
        &self,
        caller: &Caller,
        r: pb::UpdateWorkflowRequest,
    ) -> Result<pb::UpdateWorkflowResponse> {
        let id = session_id(&r.session_id)?;
        let result = self
            .sessions
            .update_workflow(
                &caller.actor(),
                &id,
                r.current_step,
                r.completed_steps,
                r.pending_steps,
                r.expected_version,
            )
            .await;
        self.respond(caller, result, |session| pb::UpdateWorkflowResponse { session })
    }

    pub async fn advance_workflow(
        &self,
        caller: &Caller,
        r: pb::AdvanceWorkflowRequest,
    ) -> Result<pb::AdvanceWorkflowResponse> {
        let id = session_id(&r.session_id)?;
        let next = Some(r.next_step.as_str()).filter(|s| !s.is_empty());
        self.respond(
            caller,
            self.sessions
                .advance_workflow(&caller.actor(), &id, next, r.expected_version)
                .await,
            |session| pb::AdvanceWorkflowResponse { session },
        )
    }

    pub async fn update_shared_context(
        &self,
        caller: &Caller,
        r: pb::UpdateSharedContextRequest,
    ) -> Result<pb::UpdateSharedContextResponse> {
        let id = session_id(&r.session_id)?;
        let mode = match pb::ContextUpdateMode::try_from(r.mode) {
            Ok(pb::ContextUpdateMode::Unspecified | pb::ContextUpdateMode::Replace) => ContextUpdateMode::Replace,
            Ok(pb::ContextUpdateMode::Merge) => ContextUpdateMode::Merge,
            Err(_) => {
                return Err(Error::invalid("mode", format!("{} is not REPLACE or MERGE", r.mode)));
            }
        };
        let context = r
            .context
            .ok_or_else(|| Error::invalid("context", "is required (a JSON object)"))?;
        let context = convert::json_object_from("context", Some(context))?;
        self.respond(
            caller,
            self.sessions
                .update_shared_context(&caller.actor(), &id, context, mode, r.expected_version)
                .await,
            |session| pb::UpdateSharedContextResponse { session },
        )
    }

    pub async fn complete_session(
        &self,
        caller: &Caller,
        r: pb::CompleteSessionRequest,
    ) -> Result<pb::CompleteSessionResponse> {
        let id = session_id(&r.session_id)?;
        self.respond(
            caller,
            self.sessions
                .complete(&caller.actor(), &id, r.summary, r.artifacts, r.expected_version)
                .await,
            |session| pb::CompleteSessionResponse { session },
        )
    }

    pub async fn terminate_session(
        &self,
        caller: &Caller,
        r: pb::TerminateSessionRequest,
    ) -> Result<pb::TerminateSessionResponse> {
        let id = session_id(&r.session_id)?;
        self.respond(
            caller,
            self.sessions
                .terminate(&caller.actor(), &id, r.reason, r.details, r.expected_version)
                .await,
            |session| pb::TerminateSessionResponse { session },
        )
    }

    pub async fn get_session_summary(
        &self,
        caller: &Caller,
        r: pb::GetSessionSummaryRequest,
    ) -> Result<pb::GetSessionSummaryResponse> {
        let id = session_id(&r.session_id)?;
        let session = self.checked(caller, self.sessions.get(&caller.actor(), &id).await)?;
        let summary = session.executive_summary.as_ref().ok_or_else(|| {
            Error::failed_precondition(format!(
                "session {id} is {}: its summary is made when it ends",
                session.state.as_str()
            ))
        })?;
        Ok(pb::GetSessionSummaryResponse {
            summary: Some(convert::executive_summary(summary)),
            markdown: summary.to_markdown(id.as_str()),
        })
    }

    pub async fn aggregate_results(
        &self,
        caller: &Caller,
        r: pb::AggregateResultsRequest,
    ) -> Result<pb::AggregateResultsResponse> {
        let id = session_id(&r.session_id)?;
        let request = AggregationRequest {
            task_ids: r.task_ids,
            step: r.step,
            strategy: convert::strategy_from("strategy", r.strategy)?,
            specialist: match r.specialist.as_str() {
                "" => None,
                agent => Some(AgentId::parse_field("specialist", agent)?),
            },
            require_complete: r.require_complete,
        };
        let result = self
            .sessions
            .aggregate(&caller.actor(), &id, request, r.expected_version)
            .await;
        let session = self.checked(caller, result)?;
        Ok(pb::AggregateResultsResponse {
            aggregation: session.aggregations.last().map(convert::aggregation),
            session: Some(convert::session(&session)),
        })
    }

    pub async fn resolve_aggregation(
        &self,
        caller: &Caller,
        r: pb::ResolveAggregationRequest,
    ) -> Result<pb::ResolveAggregationResponse> {
        let id = session_id(&r.session_id)?;
        let result = self
            .sessions
            .resolve_aggregation(
                &caller.actor(),
                &id,
                &r.aggregation_id,
                &r.chosen_task_id,
                r.note,
                r.expected_version,
            )
            .await;
        let session = self.checked(caller, result)?;
        Ok(pb::ResolveAggregationResponse {
            aggregation: session
                .aggregations
                .iter()
                .find(|a| a.aggregation_id == r.aggregation_id)
                .map(convert::aggregation),
            session: Some(convert::session(&session)),
        })
    }

    pub fn watch_sessions(
        &self,
        caller: &Caller,
        r: pb::WatchSessionsRequest,
    ) -> Result<ItemStream<pb::WatchSessionsResponse>> {
        if r.session_ids.len() > MAX_WATCH_SESSION_IDS {
            return Err(Error::invalid(
                "session_ids",
                format!("at most {MAX_WATCH_SESSION_IDS} allowed, got {}", r.session_ids.len()),
            ));
        }
        let session_ids = r
            .session_ids
            .iter()
            .enumerate()
            .map(|(i, id)| SessionId::parse_field(&format!("session_ids[{i}]"), id))
            .collect::<Result<_, _>>()?;
        let kinds = r
            .event_types
            .iter()
            .enumerate()
            .map(|(i, t)| convert::event_kind_from(&format!("event_types[{i}]"), *t))
            .collect::<Result<_, _>>()?;
        let request = WatchRequest {
            filter: EventFilter { session_ids, kinds },
            after_sequence: r.after_sequence,
            visible_to: caller.identity.agent_id().cloned(),
        };
        let events = watch::watch(
            self.sessions.store().clone(),
            request,
            self.heartbeat,
            self.shutdown.clone(),
        )?;
        let responses = events.map(|item| {
            let kind = match item? {
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
        Ok(self.guard(caller, Box::pin(responses)))
    }
}
