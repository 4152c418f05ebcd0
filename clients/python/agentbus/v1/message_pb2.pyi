from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MessageType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MESSAGE_TYPE_UNSPECIFIED: _ClassVar[MessageType]
    MESSAGE_TYPE_TASK_REQUEST: _ClassVar[MessageType]
    MESSAGE_TYPE_TASK_RESPONSE: _ClassVar[MessageType]
    MESSAGE_TYPE_STATUS_UPDATE: _ClassVar[MessageType]
    MESSAGE_TYPE_ERROR: _ClassVar[MessageType]
    MESSAGE_TYPE_HEARTBEAT: _ClassVar[MessageType]

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    PRIORITY_LOW: _ClassVar[Priority]
    PRIORITY_MEDIUM: _ClassVar[Priority]
    PRIORITY_HIGH: _ClassVar[Priority]
    PRIORITY_CRITICAL: _ClassVar[Priority]

class Backoff(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BACKOFF_UNSPECIFIED: _ClassVar[Backoff]
    BACKOFF_LINEAR: _ClassVar[Backoff]
    BACKOFF_EXPONENTIAL: _ClassVar[Backoff]

class DeliveryMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DELIVERY_MODE_UNSPECIFIED: _ClassVar[DeliveryMode]
    DELIVERY_MODE_ASYNC: _ClassVar[DeliveryMode]
    DELIVERY_MODE_SYNC: _ClassVar[DeliveryMode]

class MessageState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MESSAGE_STATE_UNSPECIFIED: _ClassVar[MessageState]
    MESSAGE_STATE_QUEUED: _ClassVar[MessageState]
    MESSAGE_STATE_DELIVERED: _ClassVar[MessageState]
    MESSAGE_STATE_ACKED: _ClassVar[MessageState]
    MESSAGE_STATE_ANSWERED: _ClassVar[MessageState]
    MESSAGE_STATE_DEAD_LETTERED: _ClassVar[MessageState]
    MESSAGE_STATE_EXPIRED: _ClassVar[MessageState]
MESSAGE_TYPE_UNSPECIFIED: MessageType
MESSAGE_TYPE_TASK_REQUEST: MessageType
MESSAGE_TYPE_TASK_RESPONSE: MessageType
MESSAGE_TYPE_STATUS_UPDATE: MessageType
MESSAGE_TYPE_ERROR: MessageType
MESSAGE_TYPE_HEARTBEAT: MessageType
PRIORITY_UNSPECIFIED: Priority
PRIORITY_LOW: Priority
PRIORITY_MEDIUM: Priority
PRIORITY_HIGH: Priority
PRIORITY_CRITICAL: Priority
BACKOFF_UNSPECIFIED: Backoff
BACKOFF_LINEAR: Backoff
BACKOFF_EXPONENTIAL: Backoff
DELIVERY_MODE_UNSPECIFIED: DeliveryMode
DELIVERY_MODE_ASYNC: DeliveryMode
DELIVERY_MODE_SYNC: DeliveryMode
MESSAGE_STATE_UNSPECIFIED: MessageState
MESSAGE_STATE_QUEUED: MessageState
MESSAGE_STATE_DELIVERED: MessageState
MESSAGE_STATE_ACKED: MessageState
MESSAGE_STATE_ANSWERED: MessageState
MESSAGE_STATE_DEAD_LETTERED: MessageState
MESSAGE_STATE_EXPIRED: MessageState

class Message(_message.Message):
    __slots__ = ("message_id", "timestamp", "sender", "recipient", "message_type", "priority", "payload", "routing", "metadata", "in_reply_to", "task_id", "trace_context")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_TYPE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    IN_REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    timestamp: _timestamp_pb2.Timestamp
    sender: AgentRef
    recipient: AgentRef
    message_type: MessageType
    priority: Priority
    payload: _struct_pb2.Value
    routing: Routing
    metadata: _struct_pb2.Struct
    in_reply_to: str
    task_id: str
    trace_context: TraceContext
    def __init__(self, message_id: _Optional[str] = ..., timestamp: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., sender: _Optional[_Union[AgentRef, _Mapping]] = ..., recipient: _Optional[_Union[AgentRef, _Mapping]] = ..., message_type: _Optional[_Union[MessageType, str]] = ..., priority: _Optional[_Union[Priority, str]] = ..., payload: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., routing: _Optional[_Union[Routing, _Mapping]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., in_reply_to: _Optional[str] = ..., task_id: _Optional[str] = ..., trace_context: _Optional[_Union[TraceContext, _Mapping]] = ...) -> None: ...

class TraceContext(_message.Message):
    __slots__ = ("traceparent", "tracestate")
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    TRACESTATE_FIELD_NUMBER: _ClassVar[int]
    traceparent: str
    tracestate: str
    def __init__(self, traceparent: _Optional[str] = ..., tracestate: _Optional[str] = ...) -> None: ...

class AgentRef(_message.Message):
    __slots__ = ("agent_id", "framework", "session_id")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    FRAMEWORK_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    framework: str
    session_id: str
    def __init__(self, agent_id: _Optional[str] = ..., framework: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class Routing(_message.Message):
    __slots__ = ("timeout", "retry_policy", "fallback_agents", "delivery_mode")
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    RETRY_POLICY_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_AGENTS_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_MODE_FIELD_NUMBER: _ClassVar[int]
    timeout: _duration_pb2.Duration
    retry_policy: RetryPolicy
    fallback_agents: _containers.RepeatedScalarFieldContainer[str]
    delivery_mode: DeliveryMode
    def __init__(self, timeout: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., retry_policy: _Optional[_Union[RetryPolicy, _Mapping]] = ..., fallback_agents: _Optional[_Iterable[str]] = ..., delivery_mode: _Optional[_Union[DeliveryMode, str]] = ...) -> None: ...

class RetryPolicy(_message.Message):
    __slots__ = ("max_retries", "backoff")
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_FIELD_NUMBER: _ClassVar[int]
    max_retries: int
    backoff: Backoff
    def __init__(self, max_retries: _Optional[int] = ..., backoff: _Optional[_Union[Backoff, str]] = ...) -> None: ...

class MessageStatus(_message.Message):
    __slots__ = ("message", "state", "attempts", "current_recipient", "accepted_at", "last_delivered_at", "acked_at", "reason", "total_attempts")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_DELIVERED_AT_FIELD_NUMBER: _ClassVar[int]
    ACKED_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    message: Message
    state: MessageState
    attempts: int
    current_recipient: str
    accepted_at: _timestamp_pb2.Timestamp
    last_delivered_at: _timestamp_pb2.Timestamp
    acked_at: _timestamp_pb2.Timestamp
    reason: str
    total_attempts: int
    def __init__(self, message: _Optional[_Union[Message, _Mapping]] = ..., state: _Optional[_Union[MessageState, str]] = ..., attempts: _Optional[int] = ..., current_recipient: _Optional[str] = ..., accepted_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., last_delivered_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., acked_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., total_attempts: _Optional[int] = ...) -> None: ...
