from agentbus.v1 import session_pb2 as _session_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ContextUpdateMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTEXT_UPDATE_MODE_UNSPECIFIED: _ClassVar[ContextUpdateMode]
    CONTEXT_UPDATE_MODE_REPLACE: _ClassVar[ContextUpdateMode]
    CONTEXT_UPDATE_MODE_MERGE: _ClassVar[ContextUpdateMode]
CONTEXT_UPDATE_MODE_UNSPECIFIED: ContextUpdateMode
CONTEXT_UPDATE_MODE_REPLACE: ContextUpdateMode
CONTEXT_UPDATE_MODE_MERGE: ContextUpdateMode

class CreateSessionRequest(_message.Message):
    __slots__ = ("session_id", "orchestrator", "participants", "steps", "shared_context")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ORCHESTRATOR_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SHARED_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    orchestrator: str
    participants: _containers.RepeatedCompositeFieldContainer[_session_pb2.ParticipantSpec]
    steps: _containers.RepeatedCompositeFieldContainer[_session_pb2.WorkflowStep]
    shared_context: _struct_pb2.Struct
    def __init__(self, session_id: _Optional[str] = ..., orchestrator: _Optional[str] = ..., participants: _Optional[_Iterable[_Union[_session_pb2.ParticipantSpec, _Mapping]]] = ..., steps: _Optional[_Iterable[_Union[_session_pb2.WorkflowStep, _Mapping]]] = ..., shared_context: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class CreateSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: _session_pb2.Session
    def __init__(self, session: _Optional[_Union[_session_pb2.Session, _Mapping]] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class GetSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: _session_pb2.Session
    def __init__(self, session: _Optional[_Union[_session_pb2.Session, _Mapping]] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ("states", "participant", "page_size", "page_token")
    STATES_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[_session_pb2.SessionState]
    participant: str
    page_size: int
    page_token: str
    def __init__(self, states: _Optional[_Iterable[_Union[_session_pb2.SessionState, str]]] = ..., participant: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions", "next_page_token")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[_session_pb2.Session]
    next_page_token: str
    def __init__(self, sessions: _Optional[_Iterable[_Union[_session_pb2.Session, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class AddParticipantRequest(_message.Message):
    __slots__ = ("session_id", "participant", "expected_version")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    participant: _session_pb2.ParticipantSpec
    expected_version: int
    def __init__(self, session_id: _Optional[str] = ..., participant: _Optional[_Union[_session_pb2.ParticipantSpec, _Mapping]] = ..., expected_version: _Optional[int] = ...) -> None: ...

class AddParticipantResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: _session_pb2.Session
    def __init__(self, session: _Optional[_Union[_session_pb2.Session, _Mapping]] = ...) -> None: ...

class RemoveParticipantRequest(_message.Message):
    __slots__ = ("session_id", "agent_id", "expected_version")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    agent_id: str
    expected_version: int
    def __init__(self, session_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class RemoveParticipantResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: _session_pb2.Session
    def __init__(self, session: _Optional[_Union[_session_pb2.Session, _Mapping]] = ...) -> None: ...

class UpdateWorkflowRequest(_message.Message):
    __slots__ = ("session_id", "current_step", "completed_steps", "pending_steps", "expected_version")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENT_STEP_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_STEPS_FIELD_NUMBER: _ClassVar[int]
    PENDING_STEPS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    current_step: str
    completed_steps: _containers.RepeatedScalarFieldContainer[str]
    pending_steps: _containers.RepeatedScalarFieldContainer[str]
    expected_version: int
    def __init__(self, session_id: _Optional[str] = ..., current_step: _Optional[str] = ..., completed_steps: _Optional[_Iterable[str]] = ..., pending_steps: _Optional[_Iterable[str]] = ..., expected_version: _Optional[int] = ...) -> None: ...

class UpdateWorkflowResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: _session_pb2.Session
    def __init__(self, session: _Optional[_Union[_session_pb2.Session, _Mapping]] = ...) -> None: ...

class AdvanceWorkflowRequest(_message.Message):
    __slots__ = ("session_id", "next_step", "expected_version")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NEXT_STEP_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    next_step: str
    expected_version: int
    def __init__(self, session_id: _Optional[str] = ..., next_step: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class AdvanceWorkflowResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: _session_pb2.Session
    def __init__(self, session: _Optional[_Union[_session_pb2.Session, _Mapping]] = ...) -> None: ...

class UpdateSharedContextRequest(_message.Message):
    __slots__ = ("session_id", "context", "mode", "expected_version")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    context: _struct_pb2.Struct
    mode: ContextUpdateMode
    expected_version: int
    def __init__(self, session_id: _Optional[str] = ..., context: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., mode: _Optional[_Union[ContextUpdateMode, str]] = ..., expected_version: _Optional[int] = ...) -> None: ...

class UpdateSharedContextResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: _session_pb2.Session
    def __init__(self, session: _Optional[_Union[_session_pb2.Session, _Mapping]] = ...) -> None: ...

class CompleteSessionRequest(_message.Message):
    __slots__ = ("session_id", "summary", "artifacts", "expected_version")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    summary: str
    artifacts: _containers.RepeatedScalarFieldContainer[str]
    expected_version: int
    def __init__(self, session_id: _Optional[str] = ..., summary: _Optional[str] = ..., artifacts: _Optional[_Iterable[str]] = ..., expected_version: _Optional[int] = ...) -> None: ...

class CompleteSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: _session_pb2.Session
    def __init__(self, session: _Optional[_Union[_session_pb2.Session, _Mapping]] = ...) -> None: ...

class TerminateSessionRequest(_message.Message):
    __slots__ = ("session_id", "reason", "details", "expected_version")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    reason: str
    details: str
    expected_version: int
    def __init__(self, session_id: _Optional[str] = ..., reason: _Optional[str] = ..., details: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class TerminateSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: _session_pb2.Session
    def __init__(self, session: _Optional[_Union[_session_pb2.Session, _Mapping]] = ...) -> None: ...

class WatchSessionsRequest(_message.Message):
    __slots__ = ("session_ids", "event_types", "after_sequence")
    SESSION_IDS_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    session_ids: _containers.RepeatedScalarFieldContainer[str]
    event_types: _containers.RepeatedScalarFieldContainer[_session_pb2.SessionEventType]
    after_sequence: int
    def __init__(self, session_ids: _Optional[_Iterable[str]] = ..., event_types: _Optional[_Iterable[_Union[_session_pb2.SessionEventType, str]]] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class WatchSessionsResponse(_message.Message):
    __slots__ = ("event", "heartbeat")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    event: _session_pb2.SessionEvent
    heartbeat: Heartbeat
    def __init__(self, event: _Optional[_Union[_session_pb2.SessionEvent, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("timestamp", "last_sequence")
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    timestamp: _timestamp_pb2.Timestamp
    last_sequence: int
    def __init__(self, timestamp: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., last_sequence: _Optional[int] = ...) -> None: ...

class AggregateResultsRequest(_message.Message):
    __slots__ = ("session_id", "task_ids", "step", "strategy", "specialist", "require_complete", "expected_version")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    SPECIALIST_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    task_ids: _containers.RepeatedScalarFieldContainer[str]
    step: str
    strategy: _session_pb2.AggregationStrategy
    specialist: str
    require_complete: bool
    expected_version: int
    def __init__(self, session_id: _Optional[str] = ..., task_ids: _Optional[_Iterable[str]] = ..., step: _Optional[str] = ..., strategy: _Optional[_Union[_session_pb2.AggregationStrategy, str]] = ..., specialist: _Optional[str] = ..., require_complete: bool = ..., expected_version: _Optional[int] = ...) -> None: ...

class AggregateResultsResponse(_message.Message):
    __slots__ = ("aggregation", "session")
    AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    aggregation: _session_pb2.Aggregation
    session: _session_pb2.Session
    def __init__(self, aggregation: _Optional[_Union[_session_pb2.Aggregation, _Mapping]] = ..., session: _Optional[_Union[_session_pb2.Session, _Mapping]] = ...) -> None: ...

class ResolveAggregationRequest(_message.Message):
    __slots__ = ("session_id", "aggregation_id", "chosen_task_id", "note", "expected_version")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_ID_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    aggregation_id: str
    chosen_task_id: str
    note: str
    expected_version: int
    def __init__(self, session_id: _Optional[str] = ..., aggregation_id: _Optional[str] = ..., chosen_task_id: _Optional[str] = ..., note: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class ResolveAggregationResponse(_message.Message):
    __slots__ = ("aggregation", "session")
    AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    aggregation: _session_pb2.Aggregation
    session: _session_pb2.Session
    def __init__(self, aggregation: _Optional[_Union[_session_pb2.Aggregation, _Mapping]] = ..., session: _Optional[_Union[_session_pb2.Session, _Mapping]] = ...) -> None: ...

class GetSessionSummaryRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class GetSessionSummaryResponse(_message.Message):
    __slots__ = ("summary", "markdown")
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    MARKDOWN_FIELD_NUMBER: _ClassVar[int]
    summary: _session_pb2.ExecutiveSummary
    markdown: str
    def __init__(self, summary: _Optional[_Union[_session_pb2.ExecutiveSummary, _Mapping]] = ..., markdown: _Optional[str] = ...) -> None: ...
