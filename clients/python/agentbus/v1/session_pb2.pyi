from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AggregationStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGGREGATION_STRATEGY_UNSPECIFIED: _ClassVar[AggregationStrategy]
    AGGREGATION_STRATEGY_CONSENSUS: _ClassVar[AggregationStrategy]
    AGGREGATION_STRATEGY_SPECIALIST_PRIORITY: _ClassVar[AggregationStrategy]
    AGGREGATION_STRATEGY_CONFIDENCE_WEIGHTED: _ClassVar[AggregationStrategy]
    AGGREGATION_STRATEGY_MANUAL: _ClassVar[AggregationStrategy]

class ConflictKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONFLICT_KIND_UNSPECIFIED: _ClassVar[ConflictKind]
    CONFLICT_KIND_RESULT_DISAGREEMENT: _ClassVar[ConflictKind]
    CONFLICT_KIND_APPROACH_DIFFERENCE: _ClassVar[ConflictKind]

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    TASK_STATE_DELEGATED: _ClassVar[TaskState]
    TASK_STATE_WORKING: _ClassVar[TaskState]
    TASK_STATE_COMPLETED: _ClassVar[TaskState]
    TASK_STATE_FAILED: _ClassVar[TaskState]
    TASK_STATE_TIMED_OUT: _ClassVar[TaskState]

class SessionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_STATE_UNSPECIFIED: _ClassVar[SessionState]
    SESSION_STATE_ACTIVE: _ClassVar[SessionState]
    SESSION_STATE_COMPLETED: _ClassVar[SessionState]
    SESSION_STATE_TERMINATED: _ClassVar[SessionState]
    SESSION_STATE_EXPIRED: _ClassVar[SessionState]

class ParticipantStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PARTICIPANT_STATUS_UNSPECIFIED: _ClassVar[ParticipantStatus]
    PARTICIPANT_STATUS_ACTIVE: _ClassVar[ParticipantStatus]
    PARTICIPANT_STATUS_WAITING: _ClassVar[ParticipantStatus]
    PARTICIPANT_STATUS_BUSY: _ClassVar[ParticipantStatus]
    PARTICIPANT_STATUS_LEFT: _ClassVar[ParticipantStatus]
    PARTICIPANT_STATUS_SESSION_TERMINATED: _ClassVar[ParticipantStatus]

class SessionEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_EVENT_TYPE_UNSPECIFIED: _ClassVar[SessionEventType]
    SESSION_EVENT_TYPE_SESSION_CREATED: _ClassVar[SessionEventType]
    SESSION_EVENT_TYPE_PARTICIPANT_ADDED: _ClassVar[SessionEventType]
    SESSION_EVENT_TYPE_PARTICIPANT_REMOVED: _ClassVar[SessionEventType]
    SESSION_EVENT_TYPE_WORKFLOW_UPDATED: _ClassVar[SessionEventType]
    SESSION_EVENT_TYPE_SHARED_CONTEXT_UPDATED: _ClassVar[SessionEventType]
    SESSION_EVENT_TYPE_SESSION_COMPLETED: _ClassVar[SessionEventType]
    SESSION_EVENT_TYPE_SESSION_TERMINATED: _ClassVar[SessionEventType]
    SESSION_EVENT_TYPE_SESSION_EXPIRED: _ClassVar[SessionEventType]
    SESSION_EVENT_TYPE_TASK_DELEGATED: _ClassVar[SessionEventType]
    SESSION_EVENT_TYPE_TASK_UPDATED: _ClassVar[SessionEventType]
    SESSION_EVENT_TYPE_RESULTS_AGGREGATED: _ClassVar[SessionEventType]
AGGREGATION_STRATEGY_UNSPECIFIED: AggregationStrategy
AGGREGATION_STRATEGY_CONSENSUS: AggregationStrategy
AGGREGATION_STRATEGY_SPECIALIST_PRIORITY: AggregationStrategy
AGGREGATION_STRATEGY_CONFIDENCE_WEIGHTED: AggregationStrategy
AGGREGATION_STRATEGY_MANUAL: AggregationStrategy
CONFLICT_KIND_UNSPECIFIED: ConflictKind
CONFLICT_KIND_RESULT_DISAGREEMENT: ConflictKind
CONFLICT_KIND_APPROACH_DIFFERENCE: ConflictKind
TASK_STATE_UNSPECIFIED: TaskState
TASK_STATE_DELEGATED: TaskState
TASK_STATE_WORKING: TaskState
TASK_STATE_COMPLETED: TaskState
TASK_STATE_FAILED: TaskState
TASK_STATE_TIMED_OUT: TaskState
SESSION_STATE_UNSPECIFIED: SessionState
SESSION_STATE_ACTIVE: SessionState
SESSION_STATE_COMPLETED: SessionState
SESSION_STATE_TERMINATED: SessionState
SESSION_STATE_EXPIRED: SessionState
PARTICIPANT_STATUS_UNSPECIFIED: ParticipantStatus
PARTICIPANT_STATUS_ACTIVE: ParticipantStatus
PARTICIPANT_STATUS_WAITING: ParticipantStatus
PARTICIPANT_STATUS_BUSY: ParticipantStatus
PARTICIPANT_STATUS_LEFT: ParticipantStatus
PARTICIPANT_STATUS_SESSION_TERMINATED: ParticipantStatus
SESSION_EVENT_TYPE_UNSPECIFIED: SessionEventType
SESSION_EVENT_TYPE_SESSION_CREATED: SessionEventType
SESSION_EVENT_TYPE_PARTICIPANT_ADDED: SessionEventType
SESSION_EVENT_TYPE_PARTICIPANT_REMOVED: SessionEventType
SESSION_EVENT_TYPE_WORKFLOW_UPDATED: SessionEventType
SESSION_EVENT_TYPE_SHARED_CONTEXT_UPDATED: SessionEventType
SESSION_EVENT_TYPE_SESSION_COMPLETED: SessionEventType
SESSION_EVENT_TYPE_SESSION_TERMINATED: SessionEventType
SESSION_EVENT_TYPE_SESSION_EXPIRED: SessionEventType
SESSION_EVENT_TYPE_TASK_DELEGATED: SessionEventType
SESSION_EVENT_TYPE_TASK_UPDATED: SessionEventType
SESSION_EVENT_TYPE_RESULTS_AGGREGATED: SessionEventType

class Session(_message.Message):
    __slots__ = ("session_id", "orchestrator", "participants", "workflow", "shared_context", "state", "version", "created_at", "updated_at", "ended_at", "summary", "artifacts", "termination_reason", "termination_details", "tasks", "aggregations", "executive_summary")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ORCHESTRATOR_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    SHARED_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    TERMINATION_REASON_FIELD_NUMBER: _ClassVar[int]
    TERMINATION_DETAILS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATIONS_FIELD_NUMBER: _ClassVar[int]
    EXECUTIVE_SUMMARY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    orchestrator: str
    participants: _containers.RepeatedCompositeFieldContainer[Participant]
    workflow: Workflow
    shared_context: _struct_pb2.Struct
    state: SessionState
    version: int
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    summary: str
    artifacts: _containers.RepeatedScalarFieldContainer[str]
    termination_reason: str
    termination_details: str
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    aggregations: _containers.RepeatedCompositeFieldContainer[Aggregation]
    executive_summary: ExecutiveSummary
    def __init__(self, session_id: _Optional[str] = ..., orchestrator: _Optional[str] = ..., participants: _Optional[_Iterable[_Union[Participant, _Mapping]]] = ..., workflow: _Optional[_Union[Workflow, _Mapping]] = ..., shared_context: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., state: _Optional[_Union[SessionState, str]] = ..., version: _Optional[int] = ..., created_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., summary: _Optional[str] = ..., artifacts: _Optional[_Iterable[str]] = ..., termination_reason: _Optional[str] = ..., termination_details: _Optional[str] = ..., tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., aggregations: _Optional[_Iterable[_Union[Aggregation, _Mapping]]] = ..., executive_summary: _Optional[_Union[ExecutiveSummary, _Mapping]] = ...) -> None: ...

class ExecutiveSummary(_message.Message):
    __slots__ = ("outcome", "text", "steps", "unresolved_conflicts", "artifacts", "totals", "generated_at")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    UNRESOLVED_CONFLICTS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    GENERATED_AT_FIELD_NUMBER: _ClassVar[int]
    outcome: SessionState
    text: str
    steps: _containers.RepeatedCompositeFieldContainer[StepSummary]
    unresolved_conflicts: _containers.RepeatedCompositeFieldContainer[Conflict]
    artifacts: _containers.RepeatedScalarFieldContainer[str]
    totals: SummaryTotals
    generated_at: _timestamp_pb2.Timestamp
    def __init__(self, outcome: _Optional[_Union[SessionState, str]] = ..., text: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[StepSummary, _Mapping]]] = ..., unresolved_conflicts: _Optional[_Iterable[_Union[Conflict, _Mapping]]] = ..., artifacts: _Optional[_Iterable[str]] = ..., totals: _Optional[_Union[SummaryTotals, _Mapping]] = ..., generated_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StepSummary(_message.Message):
    __slots__ = ("name", "state", "agents", "tasks", "result")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: str
    agents: _containers.RepeatedScalarFieldContainer[str]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskOutcome]
    result: _struct_pb2.Value
    def __init__(self, name: _Optional[str] = ..., state: _Optional[str] = ..., agents: _Optional[_Iterable[str]] = ..., tasks: _Optional[_Iterable[_Union[TaskOutcome, _Mapping]]] = ..., result: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class TaskOutcome(_message.Message):
    __slots__ = ("task_id", "assignee", "state", "success", "duration")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ASSIGNEE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    assignee: str
    state: TaskState
    success: bool
    duration: _duration_pb2.Duration
    def __init__(self, task_id: _Optional[str] = ..., assignee: _Optional[str] = ..., state: _Optional[_Union[TaskState, str]] = ..., success: bool = ..., duration: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class SummaryTotals(_message.Message):
    __slots__ = ("messages", "tasks_completed", "tasks_failed", "tasks_timed_out", "duration", "contributions")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    TASKS_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    TASKS_FAILED_FIELD_NUMBER: _ClassVar[int]
    TASKS_TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    messages: int
    tasks_completed: int
    tasks_failed: int
    tasks_timed_out: int
    duration: _duration_pb2.Duration
    contributions: _containers.RepeatedCompositeFieldContainer[AgentContribution]
    def __init__(self, messages: _Optional[int] = ..., tasks_completed: _Optional[int] = ..., tasks_failed: _Optional[int] = ..., tasks_timed_out: _Optional[int] = ..., duration: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., contributions: _Optional[_Iterable[_Union[AgentContribution, _Mapping]]] = ...) -> None: ...

class AgentContribution(_message.Message):
    __slots__ = ("agent_id", "tasks", "completed", "failed")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    tasks: int
    completed: int
    failed: int
    def __init__(self, agent_id: _Optional[str] = ..., tasks: _Optional[int] = ..., completed: _Optional[int] = ..., failed: _Optional[int] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "assignee", "delegated_by", "request_id", "state", "created_at", "updated_at", "last_payload", "result", "confidence", "approach", "success", "duration", "step")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ASSIGNEE_FIELD_NUMBER: _ClassVar[int]
    DELEGATED_BY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    APPROACH_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    assignee: str
    delegated_by: str
    request_id: str
    state: TaskState
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    last_payload: _struct_pb2.Value
    result: _struct_pb2.Value
    confidence: float
    approach: str
    success: bool
    duration: _duration_pb2.Duration
    step: str
    def __init__(self, task_id: _Optional[str] = ..., assignee: _Optional[str] = ..., delegated_by: _Optional[str] = ..., request_id: _Optional[str] = ..., state: _Optional[_Union[TaskState, str]] = ..., created_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., last_payload: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., result: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., confidence: _Optional[float] = ..., approach: _Optional[str] = ..., success: bool = ..., duration: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., step: _Optional[str] = ...) -> None: ...

class Conflict(_message.Message):
    __slots__ = ("kind", "task_ids", "detail")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    kind: ConflictKind
    task_ids: _containers.RepeatedScalarFieldContainer[str]
    detail: str
    def __init__(self, kind: _Optional[_Union[ConflictKind, str]] = ..., task_ids: _Optional[_Iterable[str]] = ..., detail: _Optional[str] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("task_id", "agent_id", "result", "confidence", "approach", "success")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    APPROACH_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    agent_id: str
    result: _struct_pb2.Value
    confidence: float
    approach: str
    success: bool
    def __init__(self, task_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., result: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., confidence: _Optional[float] = ..., approach: _Optional[str] = ..., success: bool = ...) -> None: ...

class Resolution(_message.Message):
    __slots__ = ("chosen_task_id", "note", "resolved_by", "resolved_at")
    CHOSEN_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_BY_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_AT_FIELD_NUMBER: _ClassVar[int]
    chosen_task_id: str
    note: str
    resolved_by: str
    resolved_at: _timestamp_pb2.Timestamp
    def __init__(self, chosen_task_id: _Optional[str] = ..., note: _Optional[str] = ..., resolved_by: _Optional[str] = ..., resolved_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Aggregation(_message.Message):
    __slots__ = ("aggregation_id", "strategy", "step", "specialist", "result", "confidence", "contributing_task_ids", "conflicts", "candidates", "missing_task_ids", "created_at", "resolution")
    AGGREGATION_ID_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    SPECIALIST_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTING_TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    CONFLICTS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MISSING_TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    aggregation_id: str
    strategy: AggregationStrategy
    step: str
    specialist: str
    result: _struct_pb2.Value
    confidence: float
    contributing_task_ids: _containers.RepeatedScalarFieldContainer[str]
    conflicts: _containers.RepeatedCompositeFieldContainer[Conflict]
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    missing_task_ids: _containers.RepeatedScalarFieldContainer[str]
    created_at: _timestamp_pb2.Timestamp
    resolution: Resolution
    def __init__(self, aggregation_id: _Optional[str] = ..., strategy: _Optional[_Union[AggregationStrategy, str]] = ..., step: _Optional[str] = ..., specialist: _Optional[str] = ..., result: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., confidence: _Optional[float] = ..., contributing_task_ids: _Optional[_Iterable[str]] = ..., conflicts: _Optional[_Iterable[_Union[Conflict, _Mapping]]] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., missing_task_ids: _Optional[_Iterable[str]] = ..., created_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., resolution: _Optional[_Union[Resolution, _Mapping]] = ...) -> None: ...

class Participant(_message.Message):
    __slots__ = ("agent_id", "framework", "role", "status", "join_time", "leave_time", "capabilities", "metadata")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    FRAMEWORK_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    JOIN_TIME_FIELD_NUMBER: _ClassVar[int]
    LEAVE_TIME_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    framework: str
    role: str
    status: ParticipantStatus
    join_time: _timestamp_pb2.Timestamp
    leave_time: _timestamp_pb2.Timestamp
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    metadata: _struct_pb2.Struct
    def __init__(self, agent_id: _Optional[str] = ..., framework: _Optional[str] = ..., role: _Optional[str] = ..., status: _Optional[_Union[ParticipantStatus, str]] = ..., join_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., leave_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., capabilities: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ParticipantSpec(_message.Message):
    __slots__ = ("agent_id", "framework", "role", "capabilities", "metadata")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    FRAMEWORK_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    framework: str
    role: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    metadata: _struct_pb2.Struct
    def __init__(self, agent_id: _Optional[str] = ..., framework: _Optional[str] = ..., role: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Workflow(_message.Message):
    __slots__ = ("current_step", "completed_steps", "pending_steps", "steps")
    CURRENT_STEP_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_STEPS_FIELD_NUMBER: _ClassVar[int]
    PENDING_STEPS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    current_step: str
    completed_steps: _containers.RepeatedScalarFieldContainer[str]
    pending_steps: _containers.RepeatedScalarFieldContainer[str]
    steps: _containers.RepeatedCompositeFieldContainer[WorkflowStep]
    def __init__(self, current_step: _Optional[str] = ..., completed_steps: _Optional[_Iterable[str]] = ..., pending_steps: _Optional[_Iterable[str]] = ..., steps: _Optional[_Iterable[_Union[WorkflowStep, _Mapping]]] = ...) -> None: ...

class WorkflowStep(_message.Message):
    __slots__ = ("name", "description", "required_agents", "optional_agents", "dependencies", "outputs", "estimated_duration")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_AGENTS_FIELD_NUMBER: _ClassVar[int]
    OPTIONAL_AGENTS_FIELD_NUMBER: _ClassVar[int]
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_DURATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    required_agents: _containers.RepeatedScalarFieldContainer[str]
    optional_agents: _containers.RepeatedScalarFieldContainer[str]
    dependencies: _containers.RepeatedScalarFieldContainer[str]
    outputs: _containers.RepeatedScalarFieldContainer[str]
    estimated_duration: _duration_pb2.Duration
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., required_agents: _Optional[_Iterable[str]] = ..., optional_agents: _Optional[_Iterable[str]] = ..., dependencies: _Optional[_Iterable[str]] = ..., outputs: _Optional[_Iterable[str]] = ..., estimated_duration: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class SessionEvent(_message.Message):
    __slots__ = ("sequence", "session_id", "type", "timestamp", "session", "agent_id", "task_id")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    session_id: str
    type: SessionEventType
    timestamp: _timestamp_pb2.Timestamp
    session: Session
    agent_id: str
    task_id: str
    def __init__(self, sequence: _Optional[int] = ..., session_id: _Optional[str] = ..., type: _Optional[_Union[SessionEventType, str]] = ..., timestamp: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., session: _Optional[_Union[Session, _Mapping]] = ..., agent_id: _Optional[str] = ..., task_id: _Optional[str] = ...) -> None: ...
