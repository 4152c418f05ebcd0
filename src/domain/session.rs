//! Sessions: participants, workflow, shared context and the state machine
//! that ends them. Every successful change bumps `version` and `updated_at`.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::aggregate::{Aggregation, AggregationRequest, TaskResult, aggregate};
use super::error::{Error, Result};
use super::ids::{AgentId, SessionId};
use super::json::{self, JsonObject};
use super::summary::ExecutiveSummary;
use super::time::Timestamp;
use super::validate::{check_count, check_list, check_name, check_text};

/// Limits that the rules enforce; set from the server configuration.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    /// Active participants, the orchestrator included.
    pub max_participants: usize,
    /// Serialized size of the shared context.
    pub max_context_bytes: usize,
    /// Bound of a whole session snapshot on the wire, so every event and
    /// response carrying it fits the message size limit.
    pub max_session_bytes: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_participants: 10,
            max_context_bytes: 1024 * 1024,
            max_session_bytes: 4 * 1024 * 1024 - 64 * 1024,
        }
    }
}

// Bounds on free-text fields, so one request cannot bloat every snapshot.
const MAX_NAME: usize = 128;
const MAX_ROLE: usize = 64;
const MAX_SHORT_TEXT: usize = 1024;
const MAX_LONG_TEXT: usize = 64 * 1024;
const MAX_LIST: usize = 256;
const MAX_ARTIFACTS: usize = 1024;
const MAX_STEPS: usize = 256;
const MAX_TASKS: usize = 1000;
/// Aggregations one session keeps.
const MAX_AGGREGATIONS: usize = 100;
/// Participant records, those that left included.
const MAX_PARTICIPANT_RECORDS: usize = 1000;
/// Wire size of one participant's metadata.
const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Payloads larger than this are not copied into the task.
const MAX_TASK_PAYLOAD_BYTES: usize = 64 * 1024;
pub const DEFAULT_ROLE: &str = "participant";
pub const ORCHESTRATOR_ROLE: &str = "orchestrator";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Active,
    Completed,
    Terminated,
    Expired,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Completed => "completed",
            Self::Terminated => "terminated",
            Self::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantStatus {
    Active,
    Waiting,
    Busy,
    Left,
    SessionTerminated,
}

impl ParticipantStatus {
    /// Counts towards the participant limit and may act in the session.
    pub fn is_present(self) -> bool {
        matches!(self, Self::Active | Self::Waiting | Self::Busy)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Participant {
    pub agent_id: AgentId,
    pub framework: String,
    pub role: String,
    pub status: ParticipantStatus,
    pub join_time: Timestamp,
    pub leave_time: Option<Timestamp>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub metadata: JsonObject,
}

/// A validated request to add an agent to a session.
#[derive(Debug, Clone, PartialEq)]
pub struct ParticipantSpec {
    pub agent_id: AgentId,
    pub framework: String,
    pub role: String,
    pub capabilities: Vec<String>,
    pub metadata: JsonObject,
}

impl ParticipantSpec {
    /// Validates raw fields; errors name the field relative to the participant.
    pub fn new(
        agent_id: &str,
        framework: &str,
        role: &str,
        capabilities: Vec<String>,
        metadata: JsonObject,
    ) -> Result<Self> {
        let agent_id = AgentId::parse_field("agent_id", agent_id)?;
        if !framework.is_empty() && framework != agent_id.framework() {
            return Err(Error::invalid(
                "framework",
                format!(
                    "{framework:?} does not match the framework {:?} of agent id {agent_id}",
                    agent_id.framework()
                ),
            ));
        }
        let role = if role.is_empty() {
            DEFAULT_ROLE.to_owned()
        } else {
            role.to_owned()
        };
        check_name("role", &role, MAX_ROLE)?;
        check_list("capabilities", &capabilities, MAX_LIST, MAX_NAME)?;
        let metadata_size = json::object_wire_size(&metadata);
        if metadata_size > MAX_METADATA_BYTES {
            return Err(Error::invalid(
                "metadata",
                format!("takes about {metadata_size} bytes; at most {MAX_METADATA_BYTES} allowed"),
            ));
        }
        Ok(Self {
            framework: agent_id.framework().to_owned(),
            agent_id,
            role,
            capabilities,
            metadata,
        })
    }

    fn join(self, now: Timestamp) -> Participant {
        Participant {
            agent_id: self.agent_id,
            framework: self.framework,
            role: self.role,
            status: ParticipantStatus::Active,
            join_time: now,
            leave_time: None,
            capabilities: self.capabilities,
            metadata: self.metadata,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkflowStep {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub required_agents: Vec<AgentId>,
    #[serde(default)]
    pub optional_agents: Vec<AgentId>,
    #[serde(default)]
    pub dependencies: Vec<String>,
    #[serde(default)]
    pub outputs: Vec<String>,
    #[serde(default)]
    pub estimated_duration: Option<Duration>,
}

impl WorkflowStep {
    /// Checks the step's own fields; errors name the field within the step.
    fn validate(&self) -> Result<()> {
        check_name("name", &self.name, MAX_NAME)?;
        check_text("description", &self.description, MAX_SHORT_TEXT)?;
        check_count("required_agents", self.required_agents.len(), MAX_LIST)?;
        check_count("optional_agents", self.optional_agents.len(), MAX_LIST)?;
        check_list("dependencies", &self.dependencies, MAX_LIST, MAX_NAME)?;
        check_list("outputs", &self.outputs, MAX_LIST, MAX_SHORT_TEXT)?;
        Ok(())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    /// Empty before the first step starts and after the last one completes.
    pub current_step: String,
    pub completed_steps: Vec<String>,
    pub pending_steps: Vec<String>,
    pub steps: Vec<WorkflowStep>,
}

impl Workflow {
    /// The first step is current, the rest pending.
    fn from_steps(steps: Vec<WorkflowStep>) -> Result<Self> {
        check_count("steps", steps.len(), MAX_STEPS)?;
        let mut names = HashSet::new();
        for (i, step) in steps.iter().enumerate() {
            step.validate().map_err(|e| e.within(format!("steps[{i}]")))?;
            if !names.insert(step.name.as_str()) {
                return Err(Error::invalid(
                    format!("steps[{i}].name"),
                    format!("duplicate step name {:?}", step.name),
                ));
            }
        }
        for (i, step) in steps.iter().enumerate() {
            for dependency in &step.dependencies {
                if dependency == &step.name {
                    return Err(Error::invalid(
                        format!("steps[{i}].dependencies"),
                        format!("step {:?} depends on itself", step.name),
                    ));
                }
                if !names.contains(dependency.as_str()) {
                    return Err(Error::invalid(
                        format!("steps[{i}].dependencies"),
                        format!("unknown step {dependency:?}"),
                    ));
                }
            }
        }
        if let Some(step) = first_cycle(&steps) {
            return Err(Error::invalid(
                "steps",
                format!("dependencies form a cycle through step {step:?}"),
            ));
        }
        let mut order = steps.iter().map(|s| s.name.clone());
        Ok(Self {
            current_step: order.next().unwrap_or_default(),
            completed_steps: Vec::new(),
            pending_steps: order.collect(),
            steps,
        })
    }

    fn step(&self, name: &str) -> Option<&WorkflowStep> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// A name used in a workflow position must be a defined step when the
    /// session defines steps.
    fn check_known(&self, field: &str, name: &str) -> Result<()> {
        check_name(field, name, MAX_NAME)?;
        if !self.steps.is_empty() && self.step(name).is_none() {
            let defined: Vec<&str> = self.steps.iter().map(|s| s.name.as_str()).collect();
            return Err(Error::invalid(
                field,
                format!("{name:?} is not a step of this session (steps: {})", defined.join(", ")),
            ));
        }
        Ok(())
    }

    /// Dependencies of `step` that will not be completed once the current
    /// step completes.
    fn unmet_dependencies<'a>(&'a self, step: &str) -> Vec<&'a str> {
        let done = |d: &String| self.completed_steps.contains(d) || d == &self.current_step;
        self.step(step)
            .map(|s| s.dependencies.iter().filter(|d| !done(d)).map(String::as_str).collect())
            .unwrap_or_default()
    }
}

/// Some step on a dependency cycle, if there is one (Kahn's algorithm).
fn first_cycle(steps: &[WorkflowStep]) -> Option<&str> {
    let mut remaining: Vec<&WorkflowStep> = steps.iter().collect();
    let mut done: HashSet<&str> = HashSet::new();
    loop {
        let before = remaining.len();
        remaining.retain(|step| {
            let ready = step.dependencies.iter().all(|d| done.contains(d.as_str()));
            if ready {
                done.insert(step.name.as_str());
            }
            !ready
        });
        if remaining.is_empty() {
            return None;
        }
        if remaining.len() == before {
            return remaining.first().map(|s| s.name.as_str());
        }
    }
}

/// How UpdateSharedContext combines the given object with the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextUpdateMode {
    Replace,
    /// RFC 7386 JSON merge patch.
    Merge,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub session_id: SessionId,
    pub orchestrator: AgentId,
    pub participants: Vec<Participant>,
    pub workflow: Workflow,
    pub shared_context: JsonObject,
    pub state: SessionState,
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub artifacts: Vec<String>,
    #[serde(default)]
    pub termination_reason: String,
    #[serde(default)]
    pub termination_details: String,
    #[serde(default)]
    pub tasks: Vec<Task>,
    /// Results aggregated with AggregateResults, oldest first.
    #[serde(default)]
    pub aggregations: Vec<Aggregation>,
    /// Made when the session ends.
    #[serde(default)]
    pub executive_summary: Option<ExecutiveSummary>,
}

/// Where a delegated task stands; the last three are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Delegated,
    Working,
    Completed,
    Failed,
    TimedOut,
}

impl TaskState {
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::TimedOut)
    }
}

/// A task delegated with a TASK_REQUEST inside a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub task_id: String,
    pub assignee: AgentId,
    pub delegated_by: AgentId,
    /// The TASK_REQUEST that created it.
    pub request_id: String,
    pub state: TaskState,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Payload of the last message that moved it (the result, once completed).
    pub last_payload: Option<serde_json::Value>,
    /// What its TASK_RESPONSE (or ERROR) reported, typed.
    #[serde(default)]
    pub result: Option<TaskResult>,
    /// The workflow step current when it was delegated.
    #[serde(default)]
    pub step: String,
    /// Replies that moved it.
    #[serde(default)]
    pub updates: u32,
}

impl Task {
    /// How long it took, once final.
    pub fn duration(&self) -> Option<Duration> {
        let micros = self
            .updated_at
            .unix_micros()
            .checked_sub(self.created_at.unix_micros())?;
        self.state
            .is_final()
            .then(|| std::time::Duration::from_micros(u64::try_from(micros).unwrap_or(0)))
    }
}

/// A validated CreateSession request.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub session_id: Option<SessionId>,
    pub orchestrator: AgentId,
    pub participants: Vec<ParticipantSpec>,
    pub steps: Vec<WorkflowStep>,
    pub shared_context: JsonObject,
}

impl Session {
    /// Builds a new session at version 1. The orchestrator joins first.
    pub fn create(new: NewSession, limits: &SessionLimits, now: Timestamp) -> Result<Self> {
        let orchestrator = ParticipantSpec {
            framework: new.orchestrator.framework().to_owned(),
            agent_id: new.orchestrator.clone(),
            role: ORCHESTRATOR_ROLE.to_owned(),
            capabilities: Vec::new(),
            metadata: JsonObject::new(),
        };
        let mut seen = HashSet::from([new.orchestrator.clone()]);
        for (i, spec) in new.participants.iter().enumerate() {
            if !seen.insert(spec.agent_id.clone()) {
                return Err(Error::invalid(
                    format!("participants[{i}].agent_id"),
                    format!("{} is listed twice (the orchestrator joins by itself)", spec.agent_id),
                ));
            }
        }
        let count = new.participants.len() + 1;
        if count > limits.max_participants {
            return Err(Error::resource_exhausted(format!(
                "a session may have at most {} active participants, the orchestrator included; {count} requested",
                limits.max_participants
            )));
        }
        check_context_size(&new.shared_context, limits)?;
        let participants = std::iter::once(orchestrator)
            .chain(new.participants)
            .map(|spec| spec.join(now))
            .collect();
        Ok(Self {
            session_id: new.session_id.unwrap_or_else(SessionId::generate),
            orchestrator: new.orchestrator,
            participants,
            workflow: Workflow::from_steps(new.steps)?,
            shared_context: new.shared_context,
            state: SessionState::Active,
            version: 1,
            created_at: now,
            updated_at: now,
            ended_at: None,
            summary: String::new(),
            artifacts: Vec::new(),
            termination_reason: String::new(),
            termination_details: String::new(),
            tasks: Vec::new(),
            aggregations: Vec::new(),
            executive_summary: None,
        })
    }

    pub fn is_active(&self) -> bool {
        self.state == SessionState::Active
    }

    /// The orchestrator or a participant, present or past.
    pub fn involves(&self, agent_id: &AgentId) -> bool {
        &self.orchestrator == agent_id || self.participant(agent_id).is_some()
    }

    pub fn participant(&self, agent_id: &AgentId) -> Option<&Participant> {
        self.participants.iter().find(|p| &p.agent_id == agent_id)
    }

    pub fn present_participants(&self) -> usize {
        self.participants.iter().filter(|p| p.status.is_present()).count()
    }

    pub fn add_participant(&mut self, spec: ParticipantSpec, limits: &SessionLimits, now: Timestamp) -> Result<()> {
        self.ensure_active()?;
        let existing = self.participants.iter().position(|p| p.agent_id == spec.agent_id);
        if let Some(i) = existing
            && self.participants[i].status.is_present()
        {
            return Err(Error::already_exists(format!(
                "{} is already an active participant of session {}",
                spec.agent_id, self.session_id
            )));
        }
        if self.present_participants() >= limits.max_participants {
            return Err(Error::resource_exhausted(format!(
                "session {} already has the maximum of {} active participants",
                self.session_id, limits.max_participants
            )));
        }
        if existing.is_none() && self.participants.len() >= MAX_PARTICIPANT_RECORDS {
            return Err(Error::resource_exhausted(format!(
                "session {} already has {MAX_PARTICIPANT_RECORDS} participant records",
                self.session_id
            )));
        }
        let participant = spec.join(now);
        match existing {
            // A participant that left rejoins under its original record.
            Some(i) => self.participants[i] = participant,
            None => self.participants.push(participant),
        }
        self.touch(now);
        Ok(())
    }

    pub fn remove_participant(&mut self, agent_id: &AgentId, now: Timestamp) -> Result<()> {
        self.ensure_active()?;
        if agent_id == &self.orchestrator {
            return Err(Error::failed_precondition(format!(
                "{agent_id} is the orchestrator of session {}; complete or terminate the session instead",
                self.session_id
            )));
        }
        let session_id = self.session_id.clone();
        let Some(participant) = self.participants.iter_mut().find(|p| &p.agent_id == agent_id) else {
            return Err(Error::not_found(format!(
                "{agent_id} is not a participant of session {session_id}"
            )));
        };
        if !participant.status.is_present() {
            return Err(Error::failed_precondition(format!(
                "{agent_id} already left session {session_id}"
            )));
        }
        participant.status = ParticipantStatus::Left;
        participant.leave_time = Some(now);
        self.touch(now);
        Ok(())
    }

    /// Sets the workflow position as given (the tutorial's `updateWorkflow`).
    pub fn update_workflow(
        &mut self,
        current: String,
        completed: Vec<String>,
        pending: Vec<String>,
        now: Timestamp,
    ) -> Result<()> {
        self.ensure_active()?;
        check_count("completed_steps", completed.len(), MAX_STEPS)?;
        check_count("pending_steps", pending.len(), MAX_STEPS)?;
        let mut seen: HashSet<&str> = HashSet::new();
        let positions = std::iter::once(("current_step".to_owned(), &current))
            .filter(|(_, name)| !name.is_empty())
            .chain(
                completed
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (format!("completed_steps[{i}]"), n)),
            )
            .chain(
                pending
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (format!("pending_steps[{i}]"), n)),
            );
        for (field, name) in positions {
            self.workflow.check_known(&field, name)?;
            if !seen.insert(name) {
                return Err(Error::invalid(
                    field,
                    format!("step {name:?} appears more than once in the workflow"),
                ));
            }
        }
        self.workflow.current_step = current;
        self.workflow.completed_steps = completed;
        self.workflow.pending_steps = pending;
        self.touch(now);
        Ok(())
    }

    /// Completes the current step (if any) and starts `next`, or the first
    /// pending step. After the last step the workflow has no current step and
    /// the session stays active until it is completed or terminated.
    pub fn advance_workflow(&mut self, next: Option<&str>, now: Timestamp) -> Result<()> {
        self.ensure_active()?;
        let workflow = &mut self.workflow;
        let index = match next {
            Some(name) => {
                workflow.check_known("next_step", name)?;
                workflow.pending_steps.iter().position(|p| p == name).ok_or_else(|| {
                    Error::failed_precondition(format!(
                        "step {name:?} is not pending (current: {:?})",
                        workflow.current_step
                    ))
                })?
            }
            None if workflow.pending_steps.is_empty() && workflow.current_step.is_empty() => {
                return Err(Error::failed_precondition(format!(
                    "the workflow of session {} has no current or pending step",
                    self.session_id
                )));
            }
            None => 0,
        };
        if let Some(candidate) = workflow.pending_steps.get(index) {
            let unmet = workflow.unmet_dependencies(candidate);
            if !unmet.is_empty() {
                return Err(Error::failed_precondition(format!(
                    "step {candidate:?} depends on {}, not completed yet",
                    unmet.join(", ")
                )));
            }
        }
        if !workflow.current_step.is_empty() {
            let finished = std::mem::take(&mut workflow.current_step);
            workflow.completed_steps.push(finished);
        }
        if index < workflow.pending_steps.len() {
            workflow.current_step = workflow.pending_steps.remove(index);
        }
        self.touch(now);
        Ok(())
    }

    pub fn update_shared_context(
        &mut self,
        context: JsonObject,
        mode: ContextUpdateMode,
        limits: &SessionLimits,
        now: Timestamp,
    ) -> Result<()> {
        self.ensure_active()?;
        let updated = match mode {
            ContextUpdateMode::Replace => context,
            ContextUpdateMode::Merge => {
                let mut merged = self.shared_context.clone();
                json::merge_patch(&mut merged, &context);
                merged
            }
        };
        check_context_size(&updated, limits)?;
        self.shared_context = updated;
        self.touch(now);
        Ok(())
    }

    pub fn complete(&mut self, summary: String, artifacts: Vec<String>, now: Timestamp) -> Result<()> {
        self.ensure_active()?;
        check_text("summary", &summary, MAX_LONG_TEXT)?;
        check_list("artifacts", &artifacts, MAX_ARTIFACTS, MAX_SHORT_TEXT)?;
        self.summary = summary;
        self.artifacts = artifacts;
        self.end(SessionState::Completed, now);
        Ok(())
    }

    /// Records a task assigned by `delegated_by` to `assignee`.
    pub fn delegate_task(&mut self, task: Task, now: Timestamp) -> Result<()> {
        self.ensure_active()?;
        if self.task(&task.task_id).is_some() {
            return Err(Error::already_exists(format!(
                "task {} already exists in session {}",
                task.task_id, self.session_id
            )));
        }
        if self.tasks.len() >= MAX_TASKS {
            return Err(Error::resource_exhausted(format!(
                "session {} already has the maximum of {MAX_TASKS} tasks",
                self.session_id
            )));
        }
        self.tasks.push(task);
        self.touch(now);
        Ok(())
    }

    /// Moves a task that is not final yet; false when nothing changed.
    /// Moves a task that is not final yet, keeping the payload of the message
    /// `source` that moved it (a note in its place when it is large); false
    /// when nothing changed.
    pub fn update_task(
        &mut self,
        task_id: &str,
        state: TaskState,
        payload: serde_json::Value,
        result: Option<TaskResult>,
        source: &str,
        now: Timestamp,
    ) -> bool {
        if !self.is_active() {
            return false;
        }
        let Some(task) = self.tasks.iter_mut().find(|t| t.task_id == task_id) else {
            return false;
        };
        if task.state.is_final() {
            return false;
        }
        let note = |size: usize| serde_json::json!({"truncated": true, "bytes": size, "message_id": source});
        let size = json::wire_size(&payload);
        task.state = state;
        task.updated_at = now;
        task.updates = task.updates.saturating_add(1);
        task.last_payload = Some(if size > MAX_TASK_PAYLOAD_BYTES {
            note(size)
        } else {
            payload
        });
        if let Some(mut result) = result {
            let size = json::wire_size(&result.result);
            if size > MAX_TASK_PAYLOAD_BYTES {
                result.result = note(size);
            }
            task.result = Some(result);
        }
        self.touch(now);
        true
    }

    /// Fails when the snapshot could exceed `limits.max_session_bytes` on
    /// the wire.
    pub fn check_size(&self, limits: &SessionLimits) -> Result<()> {
        let size = self.wire_size();
        if size > limits.max_session_bytes {
            return Err(Error::resource_exhausted(format!(
                "session {} would take about {size} bytes on the wire; the limit is {} \
                 (from max_message_bytes): shrink the shared context, metadata or task payloads",
                self.session_id, limits.max_session_bytes
            )));
        }
        Ok(())
    }

    /// An upper bound of the snapshot's size as JSON or protobuf.
    pub fn wire_size(&self) -> usize {
        let json_trees = json::object_wire_size(&self.shared_context)
            + self
                .participants
                .iter()
                .map(|p| json::object_wire_size(&p.metadata))
                .sum::<usize>()
            + self
                .tasks
                .iter()
                .filter_map(|t| t.last_payload.as_ref())
                .map(json::wire_size)
                .sum::<usize>()
            + self
                .tasks
                .iter()
                .filter_map(|t| t.result.as_ref())
                .map(|r| json::wire_size(&r.result))
                .sum::<usize>();
        // The JSON document counts the trees once more: a safe overestimate.
        json::encoded_len(self) + json_trees
    }

    /// Aggregates task results; the aggregation is kept in the session.
    pub fn aggregate(&mut self, request: &AggregationRequest, now: Timestamp) -> Result<Aggregation> {
        self.ensure_active()?;
        if self.aggregations.len() >= MAX_AGGREGATIONS {
            return Err(Error::resource_exhausted(format!(
                "session {} already holds the maximum of {MAX_AGGREGATIONS} aggregations",
                self.session_id
            )));
        }
        if !request.step.is_empty() && !self.workflow.steps.iter().any(|s| s.name == request.step) {
            return Err(Error::invalid(
                "step",
                format!("session {} has no step {:?}", self.session_id, request.step),
            ));
        }
        let id = format!("agg_{}", self.aggregations.len() + 1);
        let aggregation = aggregate(&self.tasks, request, id, now)?;
        self.aggregations.push(aggregation.clone());
        self.touch(now);
        Ok(aggregation)
    }

    /// Records the orchestrator's pick for an aggregation.
    pub fn resolve_aggregation(
        &mut self,
        aggregation_id: &str,
        chosen_task_id: &str,
        note: String,
        now: Timestamp,
    ) -> Result<Aggregation> {
        self.ensure_active()?;
        check_text("note", &note, MAX_LONG_TEXT)?;
        let by = self.orchestrator.clone();
        let session_id = self.session_id.clone();
        let aggregation = self
            .aggregations
            .iter_mut()
            .find(|a| a.aggregation_id == aggregation_id)
            .ok_or_else(|| {
                Error::not_found(format!(
                    "aggregation {aggregation_id} not found in session {session_id}"
                ))
            })?;
        aggregation.resolve(chosen_task_id, note, by, now)?;
        let resolved = aggregation.clone();
        self.touch(now);
        Ok(resolved)
    }

    pub fn task(&self, task_id: &str) -> Option<&Task> {
        self.tasks.iter().find(|t| t.task_id == task_id)
    }

    /// An agent that can send and receive in this session right now.
    pub fn is_present(&self, agent_id: &AgentId) -> bool {
        self.participant(agent_id).is_some_and(|p| p.status.is_present())
    }

    /// Ends the session; present participants become `session_terminated`.
    pub fn terminate(&mut self, reason: String, details: String, now: Timestamp) -> Result<()> {
        self.ensure_active()?;
        check_name("reason", &reason, MAX_SHORT_TEXT)?;
        check_text("details", &details, MAX_LONG_TEXT)?;
        self.termination_reason = reason;
        self.termination_details = details;
        self.end(SessionState::Terminated, now);
        Ok(())
    }

    /// Expires a session idle since before `idle_before`. Fails (and so
    /// happens at most once) when the session ended or was touched since.
    pub fn expire(&mut self, idle_before: Timestamp, now: Timestamp) -> Result<()> {
        self.ensure_active()?;
        if self.updated_at >= idle_before {
            return Err(Error::failed_precondition(format!(
                "session {} is not idle",
                self.session_id
            )));
        }
        self.end(SessionState::Expired, now);
        Ok(())
    }

    fn end(&mut self, state: SessionState, now: Timestamp) {
        if state != SessionState::Completed {
            for participant in self.participants.iter_mut().filter(|p| p.status.is_present()) {
                participant.status = ParticipantStatus::SessionTerminated;
            }
        }
        self.state = state;
        self.ended_at = Some(now);
        self.executive_summary = Some(ExecutiveSummary::of(self, now));
        self.touch(now);
    }

    fn ensure_active(&self) -> Result<()> {
        if self.is_active() {
            return Ok(());
        }
        Err(Error::failed_precondition(format!(
            "session {} is {} and can no longer change",
            self.session_id,
            self.state.as_str()
        )))
    }

    fn touch(&mut self, now: Timestamp) {
        self.version += 1;
        // Never move backwards, even if the wall clock does.
        self.updated_at = self.updated_at.max(now);
    }
}

fn check_context_size(context: &JsonObject, limits: &SessionLimits) -> Result<()> {
    let size = json::encoded_len(context);
    if size > limits.max_context_bytes {
        return Err(Error::resource_exhausted(format!(
            "shared_context would be {size} bytes as JSON; the limit is {} bytes",
            limits.max_context_bytes
        )));
    }
    Ok(())
}

/// What kind of change a session event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEventKind {
    SessionCreated,
    ParticipantAdded,
    ParticipantRemoved,
    WorkflowUpdated,
    SharedContextUpdated,
    SessionCompleted,
    SessionTerminated,
    SessionExpired,
    TaskDelegated,
    TaskUpdated,
    ResultsAggregated,
}

impl SessionEventKind {
    pub const ALL: [SessionEventKind; 11] = [
        Self::SessionCreated,
        Self::ParticipantAdded,
        Self::ParticipantRemoved,
        Self::WorkflowUpdated,
        Self::SharedContextUpdated,
        Self::SessionCompleted,
        Self::SessionTerminated,
        Self::SessionExpired,
        Self::TaskDelegated,
        Self::TaskUpdated,
        Self::ResultsAggregated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SessionCreated => "session_created",
            Self::ParticipantAdded => "participant_added",
            Self::ParticipantRemoved => "participant_removed",
            Self::WorkflowUpdated => "workflow_updated",
            Self::SharedContextUpdated => "shared_context_updated",
            Self::SessionCompleted => "session_completed",
            Self::SessionTerminated => "session_terminated",
            Self::SessionExpired => "session_expired",
            Self::TaskDelegated => "task_delegated",
            Self::TaskUpdated => "task_updated",
            Self::ResultsAggregated => "results_aggregated",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == value)
    }
}

/// One committed change, with the session as it was right after it.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionEvent {
    pub sequence: u64,
    pub kind: SessionEventKind,
    pub timestamp: Timestamp,
    pub agent_id: Option<AgentId>,
    /// The task concerned, for task events.
    pub task_id: Option<String>,
    pub session: Session,
}

impl SessionEvent {
    pub fn session_id(&self) -> &SessionId {
        &self.session.session_id
    }
}
