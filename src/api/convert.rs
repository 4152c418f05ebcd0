//! Conversions between protobuf messages and domain types. Incoming values
//! are validated here and errors name the request field.

use std::time::Duration;

use prost_types::value::Kind;
use serde_json::{Number, Value};

use crate::domain::aggregate::{Aggregation, Conflict, ConflictKind, Strategy};
use crate::domain::session::{
    Participant, ParticipantSpec, ParticipantStatus, Session, SessionEvent, SessionEventKind, SessionState, Task,
    TaskState, Workflow, WorkflowStep,
};
use crate::domain::summary::{ExecutiveSummary, StepState};
use crate::domain::{AgentId, Error, JsonObject, Result, Timestamp};
use crate::pb;

/// Deeper JSON is refused. Each JSON level costs up to three protobuf
/// message levels (Value, Struct, map entry), and protobuf decoders stop at
/// 100, so deeper values could not cross gRPC anyway.
pub const MAX_JSON_DEPTH: usize = 32;

/// protobuf Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
pub const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
pub const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;
/// protobuf Duration's maximum, about 10,000 years.
pub const MAX_DURATION_SECONDS: i64 = 315_576_000_000;

pub fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    let micros = t.unix_micros();
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

pub fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

pub fn duration_from(field: &str, d: &prost_types::Duration) -> Result<Duration> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(Error::invalid(
            field,
            format!("must be a non-negative duration, got {}s {}ns", d.seconds, d.nanos),
        ));
    }
    if d.seconds > MAX_DURATION_SECONDS {
        return Err(Error::invalid(
            field,
            format!(
                "{}s is beyond protobuf Duration's maximum of {MAX_DURATION_SECONDS}s",
                d.seconds
            ),
        ));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

pub fn json_object_from(field: &str, value: Option<prost_types::Struct>) -> Result<JsonObject> {
    value.map_or_else(|| Ok(JsonObject::new()), |s| struct_to_json(field, s, 0))
}

fn struct_to_json(field: &str, value: prost_types::Struct, depth: usize) -> Result<JsonObject> {
    if depth > MAX_JSON_DEPTH {
        return Err(Error::invalid(
            field,
            format!("nested deeper than {MAX_JSON_DEPTH} levels"),
        ));
    }
    value
        .fields
        .into_iter()
        .map(|(k, v)| Ok((k, value_to_json(field, v, depth + 1)?)))
        .collect()
}

fn value_to_json(field: &str, value: prost_types::Value, depth: usize) -> Result<Value> {
    Ok(match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::NumberValue(n)) => {
            Value::Number(json_number(n).ok_or_else(|| Error::invalid(field, format!("{n} is not a JSON number")))?)
        }
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json(field, s, depth)?),
        Some(Kind::ListValue(list)) => {
            if depth > MAX_JSON_DEPTH {
                return Err(Error::invalid(
                    field,
                    format!("nested deeper than {MAX_JSON_DEPTH} levels"),
                ));
            }
            Value::Array(
                list.values
                    .into_iter()
                    .map(|v| value_to_json(field, v, depth + 1))
                    .collect::<Result<_>>()?,
            )
        }
    })
}

/// protobuf's `Value` holds every number as a double; whole numbers that a
/// double represents exactly come back as JSON integers (`1`, not `1.0`).
fn json_number(n: f64) -> Option<Number> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if n.fract() == 0.0 && n.abs() <= EXACT {
        Some(Number::from(n as i64))
    } else {
        Number::from_f64(n)
    }
}

/// Any JSON value; a missing value is `null`.
pub fn json_value_from(field: &str, value: Option<prost_types::Value>) -> Result<Value> {
    value.map_or(Ok(Value::Null), |v| value_to_json(field, v, 0))
}

pub fn timestamp_from(field: &str, t: &prost_types::Timestamp) -> Result<Timestamp> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(Error::invalid(
            field,
            format!("nanos must be within 0..1e9, got {}", t.nanos),
        ));
    }
    if !(MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&t.seconds) {
        return Err(Error::invalid(
            field,
            format!(
                "{}s is outside protobuf Timestamp's range (years 0001 to 9999)",
                t.seconds
            ),
        ));
    }
    Ok(Timestamp::from_unix_micros(
        t.seconds * 1_000_000 + i64::from(t.nanos / 1000),
    ))
}

pub fn json_object(object: &JsonObject) -> prost_types::Struct {
    prost_types::Struct {
        fields: object.iter().map(|(k, v)| (k.clone(), json_value(v))).collect(),
    }
}

pub fn json_value(value: &Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(prost_types::NullValue::NullValue as i32),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_value).collect(),
        }),
        Value::Object(object) => Kind::StructValue(json_object(object)),
    };
    prost_types::Value { kind: Some(kind) }
}

pub fn agent_ids(field: &str, values: &[String]) -> Result<Vec<AgentId>> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| AgentId::parse_field(&format!("{field}[{i}]"), v))
        .collect()
}

pub fn participant_spec_from(field: &str, spec: pb::ParticipantSpec) -> Result<ParticipantSpec> {
    let metadata = json_object_from("metadata", spec.metadata).map_err(|e| e.within(field))?;
    ParticipantSpec::new(&spec.agent_id, &spec.framework, &spec.role, spec.capabilities, metadata)
        .map_err(|e| e.within(field))
}

pub fn workflow_step_from(field: &str, step: pb::WorkflowStep) -> Result<WorkflowStep> {
    let convert = || -> Result<WorkflowStep> {
        Ok(WorkflowStep {
            required_agents: agent_ids("required_agents", &step.required_agents)?,
            optional_agents: agent_ids("optional_agents", &step.optional_agents)?,
            estimated_duration: step
                .estimated_duration
                .as_ref()
                .map(|d| duration_from("estimated_duration", d))
                .transpose()?,
            name: step.name.clone(),
            description: step.description.clone(),
            dependencies: step.dependencies.clone(),
            outputs: step.outputs.clone(),
        })
    };
    convert().map_err(|e| e.within(field))
}

pub fn session_state_from(field: &str, value: i32) -> Result<SessionState> {
    match pb::SessionState::try_from(value) {
        Ok(pb::SessionState::Active) => Ok(SessionState::Active),
        Ok(pb::SessionState::Completed) => Ok(SessionState::Completed),
        Ok(pb::SessionState::Terminated) => Ok(SessionState::Terminated),
        Ok(pb::SessionState::Expired) => Ok(SessionState::Expired),
        Ok(pb::SessionState::Unspecified) | Err(_) => Err(Error::invalid(
            field,
            format!("{value} is not a session state (ACTIVE, COMPLETED, TERMINATED, EXPIRED)"),
        )),
    }
}

fn session_state(state: SessionState) -> pb::SessionState {
    match state {
        SessionState::Active => pb::SessionState::Active,
        SessionState::Completed => pb::SessionState::Completed,
        SessionState::Terminated => pb::SessionState::Terminated,
        SessionState::Expired => pb::SessionState::Expired,
    }
}

const EVENT_KINDS: [(SessionEventKind, pb::SessionEventType); 11] = [
    (SessionEventKind::SessionCreated, pb::SessionEventType::SessionCreated),
    (
        SessionEventKind::ParticipantAdded,
        pb::SessionEventType::ParticipantAdded,
    ),
    (
        SessionEventKind::ParticipantRemoved,
        pb::SessionEventType::ParticipantRemoved,
    ),
    (SessionEventKind::WorkflowUpdated, pb::SessionEventType::WorkflowUpdated),
    (
        SessionEventKind::SharedContextUpdated,
        pb::SessionEventType::SharedContextUpdated,
    ),
    (
        SessionEventKind::SessionCompleted,
        pb::SessionEventType::SessionCompleted,
    ),
    (
        SessionEventKind::SessionTerminated,
        pb::SessionEventType::SessionTerminated,
    ),
    (SessionEventKind::SessionExpired, pb::SessionEventType::SessionExpired),
    (SessionEventKind::TaskDelegated, pb::SessionEventType::TaskDelegated),
    (SessionEventKind::TaskUpdated, pb::SessionEventType::TaskUpdated),
    (
        SessionEventKind::ResultsAggregated,
        pb::SessionEventType::ResultsAggregated,
    ),
];

pub fn event_kind_from(field: &str, value: i32) -> Result<SessionEventKind> {
    EVENT_KINDS
        .iter()
        .find(|(_, pb_kind)| *pb_kind as i32 == value)
        .map(|(kind, _)| *kind)
        .ok_or_else(|| Error::invalid(field, format!("{value} is not a session event type")))
}

fn event_kind(kind: SessionEventKind) -> pb::SessionEventType {
    EVENT_KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(pb::SessionEventType::Unspecified, |(_, pb_kind)| *pb_kind)
}

fn participant_status(status: ParticipantStatus) -> pb::ParticipantStatus {
    match status {
        ParticipantStatus::Active => pb::ParticipantStatus::Active,
        ParticipantStatus::Waiting => pb::ParticipantStatus::Waiting,
        ParticipantStatus::Busy => pb::ParticipantStatus::Busy,
        ParticipantStatus::Left => pb::ParticipantStatus::Left,
        ParticipantStatus::SessionTerminated => pb::ParticipantStatus::SessionTerminated,
    }
}

fn strings(ids: &[AgentId]) -> Vec<String> {
    ids.iter().map(|id| id.to_string()).collect()
}

fn participant(p: &Participant) -> pb::Participant {
    pb::Participant {
        agent_id: p.agent_id.to_string(),
        framework: p.framework.clone(),
        role: p.role.clone(),
        status: participant_status(p.status) as i32,
        join_time: Some(timestamp(p.join_time)),
        leave_time: p.leave_time.map(timestamp),
        capabilities: p.capabilities.clone(),
        metadata: Some(json_object(&p.metadata)),
    }
}

fn workflow_step(step: &WorkflowStep) -> pb::WorkflowStep {
    pb::WorkflowStep {
        name: step.name.clone(),
        description: step.description.clone(),
        required_agents: strings(&step.required_agents),
        optional_agents: strings(&step.optional_agents),
        dependencies: step.dependencies.clone(),
        outputs: step.outputs.clone(),
        estimated_duration: step.estimated_duration.map(duration),
    }
}

fn workflow(w: &Workflow) -> pb::Workflow {
    pb::Workflow {
        current_step: w.current_step.clone(),
        completed_steps: w.completed_steps.clone(),
        pending_steps: w.pending_steps.clone(),
        steps: w.steps.iter().map(workflow_step).collect(),
    }
}

pub fn session(s: &Session) -> pb::Session {
    pb::Session {
        session_id: s.session_id.to_string(),
        orchestrator: s.orchestrator.to_string(),
        participants: s.participants.iter().map(participant).collect(),
        workflow: Some(workflow(&s.workflow)),
        shared_context: Some(json_object(&s.shared_context)),
        state: session_state(s.state) as i32,
        version: s.version,
        created_at: Some(timestamp(s.created_at)),
        updated_at: Some(timestamp(s.updated_at)),
        ended_at: s.ended_at.map(timestamp),
        summary: s.summary.clone(),
        artifacts: s.artifacts.clone(),
        termination_reason: s.termination_reason.clone(),
        termination_details: s.termination_details.clone(),
        tasks: s.tasks.iter().map(task).collect(),
        aggregations: s.aggregations.iter().map(aggregation).collect(),
        executive_summary: s.executive_summary.as_ref().map(executive_summary),
    }
}

fn task_state(state: TaskState) -> pb::TaskState {
    match state {
        TaskState::Delegated => pb::TaskState::Delegated,
        TaskState::Working => pb::TaskState::Working,
        TaskState::Completed => pb::TaskState::Completed,
        TaskState::Failed => pb::TaskState::Failed,
        TaskState::TimedOut => pb::TaskState::TimedOut,
    }
}

fn task(t: &Task) -> pb::Task {
    let state = task_state(t.state);
    pb::Task {
        task_id: t.task_id.clone(),
        assignee: t.assignee.to_string(),
        delegated_by: t.delegated_by.to_string(),
        request_id: t.request_id.clone(),
        state: state as i32,
        created_at: Some(timestamp(t.created_at)),
        updated_at: Some(timestamp(t.updated_at)),
        last_payload: t.last_payload.as_ref().map(json_value),
        result: t.result.as_ref().map(|r| json_value(&r.result)),
        confidence: t.result.as_ref().and_then(|r| r.confidence),
        approach: t.result.as_ref().map(|r| r.approach.clone()).unwrap_or_default(),
        success: t.result.as_ref().is_some_and(|r| r.success),
        duration: t.duration().map(duration),
        step: t.step.clone(),
    }
}

const STRATEGIES: [(Strategy, pb::AggregationStrategy); 4] = [
    (Strategy::Consensus, pb::AggregationStrategy::Consensus),
    (
        Strategy::SpecialistPriority,
        pb::AggregationStrategy::SpecialistPriority,
    ),
    (
        Strategy::ConfidenceWeighted,
        pb::AggregationStrategy::ConfidenceWeighted,
    ),
    (Strategy::Manual, pb::AggregationStrategy::Manual),
];

pub fn strategy_from(field: &str, value: i32) -> Result<Strategy> {
    if value == pb::AggregationStrategy::Unspecified as i32 {
        return Ok(Strategy::Consensus);
    }
    STRATEGIES
        .iter()
        .find(|(_, p)| *p as i32 == value)
        .map(|(s, _)| *s)
        .ok_or_else(|| {
            Error::invalid(
                field,
                format!("{value} is not CONSENSUS, SPECIALIST_PRIORITY, CONFIDENCE_WEIGHTED or MANUAL"),
            )
        })
}

fn conflict(c: &Conflict) -> pb::Conflict {
    pb::Conflict {
        kind: match c.kind {
            ConflictKind::ResultDisagreement => pb::ConflictKind::ResultDisagreement,
            ConflictKind::ApproachDifference => pb::ConflictKind::ApproachDifference,
        } as i32,
        task_ids: c.task_ids.clone(),
        detail: c.detail.clone(),
    }
}

pub fn executive_summary(e: &ExecutiveSummary) -> pb::ExecutiveSummary {
    let t = &e.totals;
    pb::ExecutiveSummary {
        outcome: session_state(e.outcome) as i32,
        text: e.text.clone(),
        steps: e
            .steps
            .iter()
            .map(|step| pb::StepSummary {
                name: step.name.clone(),
                state: match step.state {
                    StepState::Completed => "completed",
                    StepState::Current => "current",
                    StepState::Pending => "pending",
                }
                .into(),
                agents: step.agents.iter().map(ToString::to_string).collect(),
                tasks: step
                    .tasks
                    .iter()
                    .map(|task| pb::TaskOutcome {
                        task_id: task.task_id.clone(),
                        assignee: task.assignee.to_string(),
                        state: task_state(task.state) as i32,
                        success: task.success,
                        duration: task.duration.map(duration),
                    })
                    .collect(),
                result: step.result.as_ref().map(json_value),
            })
            .collect(),
        unresolved_conflicts: e.unresolved_conflicts.iter().map(conflict).collect(),
        artifacts: e.artifacts.clone(),
        totals: Some(pb::SummaryTotals {
            messages: t.messages,
            tasks_completed: t.tasks_completed,
            tasks_failed: t.tasks_failed,
            tasks_timed_out: t.tasks_timed_out,
            duration: Some(duration(t.duration)),
            contributions: t
                .contributions
                .iter()
                .map(|c| pb::AgentContribution {
                    agent_id: c.agent_id.to_string(),
                    tasks: c.tasks,
                    completed: c.completed,
                    failed: c.failed,
                })
                .collect(),
        }),
        generated_at: Some(timestamp(e.generated_at)),
    }
}

pub fn aggregation(a: &Aggregation) -> pb::Aggregation {
    let strategy = STRATEGIES
        .iter()
        .find(|(s, _)| *s == a.strategy)
        .map_or(pb::AggregationStrategy::Unspecified, |(_, p)| *p);
    pb::Aggregation {
        aggregation_id: a.aggregation_id.clone(),
        strategy: strategy as i32,
        step: a.step.clone(),
        specialist: a.specialist.as_ref().map(ToString::to_string).unwrap_or_default(),
        result: a.result.as_ref().map(json_value),
        confidence: a.confidence,
        contributing_task_ids: a.contributing_task_ids.clone(),
        conflicts: a.conflicts.iter().map(conflict).collect(),
        candidates: a
            .candidates
            .iter()
            .map(|c| pb::Candidate {
                task_id: c.task_id.clone(),
                agent_id: c.agent_id.to_string(),
                result: Some(json_value(&c.result.result)),
                confidence: c.result.confidence,
                approach: c.result.approach.clone(),
                success: c.result.success,
            })
            .collect(),
        missing_task_ids: a.missing_task_ids.clone(),
        created_at: Some(timestamp(a.created_at)),
        resolution: a.resolution.as_ref().map(|r| pb::Resolution {
            chosen_task_id: r.chosen_task_id.clone(),
            note: r.note.clone(),
            resolved_by: r.resolved_by.to_string(),
            resolved_at: Some(timestamp(r.resolved_at)),
        }),
    }
}

pub fn session_event(e: &SessionEvent) -> pb::SessionEvent {
    pb::SessionEvent {
        sequence: e.sequence,
        session_id: e.session_id().to_string(),
        r#type: event_kind(e.kind) as i32,
        timestamp: Some(timestamp(e.timestamp)),
        session: Some(session(&e.session)),
        agent_id: e.agent_id.as_ref().map(ToString::to_string).unwrap_or_default(),
        task_id: e.task_id.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip() {
        let object: JsonObject = serde_json::from_str(r#"{"a":1.5,"b":[true,null,"x"],"c":{"d":{}}}"#).unwrap();
        assert_eq!(json_object_from("ctx", Some(json_object(&object))).unwrap(), object);
    }

    #[test]
    fn non_finite_numbers_are_refused() {
        let mut s = prost_types::Struct::default();
        s.fields.insert(
            "x".into(),
            prost_types::Value {
                kind: Some(Kind::NumberValue(f64::NAN)),
            },
        );
        let err = json_object_from("shared_context", Some(s)).unwrap_err();
        assert!(err.message.starts_with("shared_context"), "{err}");
    }

    #[test]
    fn timestamps_before_the_epoch() {
        let t = timestamp(Timestamp::from_unix_micros(-1));
        assert_eq!((t.seconds, t.nanos), (-1, 999_999_000));
    }
}
