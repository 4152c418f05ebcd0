//! Session use cases: create, read, list, change, end, expire.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::access::{Actor, SessionAction};
use crate::domain::aggregate::AggregationRequest;
use crate::domain::session::{
    ContextUpdateMode, NewSession, ParticipantSpec, Session, SessionEventKind, SessionLimits, SessionState,
};
use crate::domain::{AgentId, Error, JsonObject, Result, SessionId, Timestamp};
use crate::store::{SessionChange, SessionQuery, Store, StoreError};

pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 500;
/// Retries of a change that lost a race with another writer.
const MAX_ATTEMPTS: usize = 32;
const EXPIRY_BATCH: usize = 100;
const PAGE_TOKEN_PREFIX: &str = "s1.";

#[derive(Debug, Clone, Default)]
pub struct ListSessions {
    pub states: Vec<SessionState>,
    pub participant: Option<AgentId>,
    /// 0 means the default.
    pub page_size: usize,
    pub page_token: String,
}

#[derive(Debug, Clone, Default)]
pub struct SessionList {
    pub sessions: Vec<Session>,
    /// Empty on the last page.
    pub next_page_token: String,
}

pub struct Sessions {
    store: Arc<dyn Store>,
    limits: SessionLimits,
    idle_timeout: Duration,
}

impl Sessions {
    pub fn new(store: Arc<dyn Store>, limits: SessionLimits, idle_timeout: Duration) -> Self {
        Self {
            store,
            limits,
            idle_timeout,
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// An agent may create only sessions it orchestrates.
    pub async fn create(&self, actor: &Actor, new: NewSession) -> Result<Session> {
        actor.check_agent("orchestrator", &new.orchestrator)?;
        let now = Timestamp::now();
        let session = Session::create(new, &self.limits, now)?;
        session.check_size(&self.limits)?;
        let change = SessionChange {
            session,
            expected_version: None,
            kind: SessionEventKind::SessionCreated,
            agent_id: None,
            task_id: None,
            timestamp: now,
        };
        Ok(self.store.commit(change).await?.session.clone())
    }

    /// A session the actor takes no part in is NOT_FOUND.
    pub async fn get(&self, actor: &Actor, id: &SessionId) -> Result<Session> {
        let session = self.load(id).await?;
        actor.check_session(&session, SessionAction::Read)?;
        Ok(session)
    }

    async fn load(&self, id: &SessionId) -> Result<Session> {
        self.store
            .get_session(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("session {id} not found")))
    }

    /// An agent lists only sessions it takes or took part in.
    pub async fn list(&self, actor: &Actor, request: ListSessions) -> Result<SessionList> {
        let after = match request.page_token.as_str() {
            "" => None,
            token => Some(
                token
                    .strip_prefix(PAGE_TOKEN_PREFIX)
                    .and_then(|cursor| cursor.parse::<u64>().ok())
                    .ok_or_else(|| {
                        Error::invalid(
                            "page_token",
                            format!("{token:?} is not a token returned by ListSessions"),
                        )
                    })?,
            ),
        };
        let limit = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size => size.min(MAX_PAGE_SIZE),
        };
        // An agent's own sessions, of which those `participant` is in too.
        let (participant, also) = match (actor.agent(), request.participant) {
            (Some(me), Some(other)) if *me != other => (Some(me.clone()), Some(other)),
            (Some(me), _) => (Some(me.clone()), None),
            (None, participant) => (participant, None),
        };
        let query = SessionQuery {
            states: request.states,
            participant,
            after,
            limit,
            max_bytes: Some(self.limits.max_session_bytes),
        };
        // A page fits one answer (each session fits the snapshot limit).
        let mut page = self.store.list_sessions(&query).await?;
        if let Some(other) = also {
            page.sessions.retain(|s| s.involves(&other));
        }
        Ok(SessionList {
            sessions: page.sessions,
            next_page_token: page
                .next
                .map(|cursor| format!("{PAGE_TOKEN_PREFIX}{cursor}"))
                .unwrap_or_default(),
        })
    }

    pub async fn add_participant(
        &self,
        actor: &Actor,
        id: &SessionId,
        spec: ParticipantSpec,
        expected: Option<u64>,
    ) -> Result<Session> {
        let agent = spec.agent_id.clone();
        self.change(
            (actor, SessionAction::Orchestrate("add participants")),
            id,
            expected,
            SessionEventKind::ParticipantAdded,
            Some(agent),
            |s, now| s.add_participant(spec.clone(), &self.limits, now),
        )
        .await
    }

    pub async fn remove_participant(
        &self,
        actor: &Actor,
        id: &SessionId,
        agent: &AgentId,
        expected: Option<u64>,
    ) -> Result<Session> {
        self.change(
            (actor, SessionAction::Remove(agent)),
            id,
            expected,
            SessionEventKind::ParticipantRemoved,
            Some(agent.clone()),
            |s, now| s.remove_participant(agent, now),
        )
        .await
    }

    pub async fn update_workflow(
        &self,
        actor: &Actor,
        id: &SessionId,
        current: String,
        completed: Vec<String>,
        pending: Vec<String>,
        expected: Option<u64>,
    ) -> Result<Session> {
        let access = (actor, SessionAction::Orchestrate("change the workflow"));
        self.change(
            access,
            id,
            expected,
            SessionEventKind::WorkflowUpdated,
            None,
            |s, now| s.update_workflow(current.clone(), completed.clone(), pending.clone(), now),
        )
        .await
    }

    pub async fn advance_workflow(
        &self,
        actor: &Actor,
        id: &SessionId,
        next: Option<&str>,
        expected: Option<u64>,
    ) -> Result<Session> {
        let access = (actor, SessionAction::Orchestrate("advance the workflow"));
        self.change(
            access,
            id,
            expected,
            SessionEventKind::WorkflowUpdated,
            None,
            |s, now| s.advance_workflow(next, now),
        )
        .await
    }

    pub async fn update_shared_context(
        &self,
        actor: &Actor,
        id: &SessionId,
        context: JsonObject,
        mode: ContextUpdateMode,
        expected: Option<u64>,
    ) -> Result<Session> {
        let access = (actor, SessionAction::Contribute);
        self.change(
            access,
            id,
            expected,
            SessionEventKind::SharedContextUpdated,
            None,
            |s, now| s.update_shared_context(context.clone(), mode, &self.limits, now),
        )
        .await
    }

    pub async fn complete(
        &self,
        actor: &Actor,
        id: &SessionId,
        summary: String,
        artifacts: Vec<String>,
        expected: Option<u64>,
    ) -> Result<Session> {
        let access = (actor, SessionAction::Orchestrate("complete the session"));
        self.change(
            access,
            id,
            expected,
            SessionEventKind::SessionCompleted,
            None,
            |s, now| s.complete(summary.clone(), artifacts.clone(), now),
        )
        .await
    }

    pub async fn terminate(
        &self,
        actor: &Actor,
        id: &SessionId,
        reason: String,
        details: String,
        expected: Option<u64>,
    ) -> Result<Session> {
        let access = (actor, SessionAction::Orchestrate("terminate the session"));
        self.change(
            access,
            id,
            expected,
            SessionEventKind::SessionTerminated,
            None,
            |s, now| s.terminate(reason.clone(), details.clone(), now),
        )
        .await
    }

    /// Aggregates task results (orchestrator only); the aggregation is the
    /// last of the returned session's `aggregations`.
    pub async fn aggregate(
        &self,
        actor: &Actor,
        id: &SessionId,
        request: AggregationRequest,
        expected: Option<u64>,
    ) -> Result<Session> {
        let access = (actor, SessionAction::Orchestrate("aggregate results"));
        self.change(
            access,
            id,
            expected,
            SessionEventKind::ResultsAggregated,
            None,
            |s, now| s.aggregate(&request, now).map(drop),
        )
        .await
    }

    /// Records the orchestrator's pick for an aggregation.
    pub async fn resolve_aggregation(
        &self,
        actor: &Actor,
        id: &SessionId,
        aggregation_id: &str,
        chosen_task_id: &str,
        note: String,
        expected: Option<u64>,
    ) -> Result<Session> {
        let access = (actor, SessionAction::Orchestrate("resolve aggregations"));
        self.change(
            access,
            id,
            expected,
            SessionEventKind::ResultsAggregated,
            None,
            |s, now| {
                s.resolve_aggregation(aggregation_id, chosen_task_id, note.clone(), now)
                    .map(drop)
            },
        )
        .await
    }

    /// Whether this node runs the background work now (one node of
    /// several sharing a store does).
    pub fn runs_background_work(&self) -> bool {
        self.store.runs_background_work()
    }

    /// Expires every active session idle for longer than the idle timeout;
    /// returns how many it expired. A session touched meanwhile is skipped.
    pub async fn expire_idle(&self) -> Result<usize> {
        let mut expired = 0;
        loop {
            let before = Timestamp::now().saturating_sub(self.idle_timeout);
            let idle = self.store.idle_sessions(before, EXPIRY_BATCH).await?;
            let mut progressed = false;
            for session in &idle {
                let id = &session.session_id;
                match self
                    .change(
                        (&Actor::Admin, SessionAction::Read),
                        id,
                        None,
                        SessionEventKind::SessionExpired,
                        None,
                        |s, now| s.expire(before, now),
                    )
                    .await
                {
                    Ok(_) => {
                        expired += 1;
                        progressed = true;
                    }
                    // Touched or ended since it was listed: not idle any more.
                    Err(e) if e.kind == crate::domain::ErrorKind::FailedPrecondition => {}
                    Err(e) => return Err(e),
                }
            }
            if idle.len() < EXPIRY_BATCH || !progressed {
                return Ok(expired);
            }
        }
    }

    /// Reads the session, checks that the actor may make the change,
    /// applies `apply` to a copy and commits it if nobody changed the
    /// session meanwhile; retries otherwise. With `expected`, any other
    /// version is ABORTED instead.
    async fn change<F>(
        &self,
        (actor, action): (&Actor, SessionAction<'_>),
        id: &SessionId,
        expected: Option<u64>,
        kind: SessionEventKind,
        agent_id: Option<AgentId>,
        apply: F,
    ) -> Result<Session>
    where
        F: Fn(&mut Session, Timestamp) -> Result<()>,
    {
        for _ in 0..MAX_ATTEMPTS {
            let current = self.load(id).await?;
            actor.check_session(&current, action)?;
            if let Some(expected) = expected
                && expected != current.version
            {
                return Err(Error::aborted(format!(
                    "session {id} is at version {}, not the expected {expected}; nothing was changed",
                    current.version
                )));
            }
            let now = Timestamp::now();
            let mut next = current.clone();
            apply(&mut next, now)?;
            next.check_size(&self.limits)?;
            let change = SessionChange {
                session: next,
                expected_version: Some(current.version),
                kind,
                agent_id: agent_id.clone(),
                task_id: None,
                timestamp: now,
            };
            match self.store.commit(change).await {
                Ok(event) => return Ok(event.session.clone()),
                Err(StoreError::Conflict { .. }) if expected.is_none() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::aborted(format!("session {id} is changing too fast; retry")))
    }
}
