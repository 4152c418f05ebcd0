from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AgentDescriptor(_message.Message):
    __slots__ = ("agent_id", "framework", "capabilities", "endpoints", "metadata", "health_check_url", "status_endpoint")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    FRAMEWORK_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    HEALTH_CHECK_URL_FIELD_NUMBER: _ClassVar[int]
    STATUS_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    framework: str
    capabilities: AgentCapabilities
    endpoints: AgentEndpoints
    metadata: AgentMetadata
    health_check_url: str
    status_endpoint: str
    def __init__(self, agent_id: _Optional[str] = ..., framework: _Optional[str] = ..., capabilities: _Optional[_Union[AgentCapabilities, _Mapping]] = ..., endpoints: _Optional[_Union[AgentEndpoints, _Mapping]] = ..., metadata: _Optional[_Union[AgentMetadata, _Mapping]] = ..., health_check_url: _Optional[str] = ..., status_endpoint: _Optional[str] = ...) -> None: ...

class AgentCapabilities(_message.Message):
    __slots__ = ("input_types", "output_types", "languages", "tools", "model_preferences", "optimal_tasks", "performance_profile")
    INPUT_TYPES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TYPES_FIELD_NUMBER: _ClassVar[int]
    LANGUAGES_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    MODEL_PREFERENCES_FIELD_NUMBER: _ClassVar[int]
    OPTIMAL_TASKS_FIELD_NUMBER: _ClassVar[int]
    PERFORMANCE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    input_types: _containers.RepeatedScalarFieldContainer[str]
    output_types: _containers.RepeatedScalarFieldContainer[str]
    languages: _containers.RepeatedScalarFieldContainer[str]
    tools: _containers.RepeatedScalarFieldContainer[str]
    model_preferences: _containers.RepeatedScalarFieldContainer[str]
    optimal_tasks: _containers.RepeatedScalarFieldContainer[str]
    performance_profile: PerformanceProfile
    def __init__(self, input_types: _Optional[_Iterable[str]] = ..., output_types: _Optional[_Iterable[str]] = ..., languages: _Optional[_Iterable[str]] = ..., tools: _Optional[_Iterable[str]] = ..., model_preferences: _Optional[_Iterable[str]] = ..., optimal_tasks: _Optional[_Iterable[str]] = ..., performance_profile: _Optional[_Union[PerformanceProfile, _Mapping]] = ...) -> None: ...

class PerformanceProfile(_message.Message):
    __slots__ = ("avg_response_time", "success_rate", "concurrent_capacity")
    AVG_RESPONSE_TIME_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    CONCURRENT_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    avg_response_time: _duration_pb2.Duration
    success_rate: float
    concurrent_capacity: int
    def __init__(self, avg_response_time: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., success_rate: _Optional[float] = ..., concurrent_capacity: _Optional[int] = ...) -> None: ...

class AgentEndpoints(_message.Message):
    __slots__ = ("mcp", "http", "websocket")
    MCP_FIELD_NUMBER: _ClassVar[int]
    HTTP_FIELD_NUMBER: _ClassVar[int]
    WEBSOCKET_FIELD_NUMBER: _ClassVar[int]
    mcp: str
    http: str
    websocket: str
    def __init__(self, mcp: _Optional[str] = ..., http: _Optional[str] = ..., websocket: _Optional[str] = ...) -> None: ...

class AgentMetadata(_message.Message):
    __slots__ = ("version", "author", "tags", "description")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    version: str
    author: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    description: str
    def __init__(self, version: _Optional[str] = ..., author: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ...) -> None: ...

class Agent(_message.Message):
    __slots__ = ("descriptor", "online", "last_seen", "inbox_depth", "registered_at", "updated_at")
    DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    INBOX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    descriptor: AgentDescriptor
    online: bool
    last_seen: _timestamp_pb2.Timestamp
    inbox_depth: int
    registered_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, descriptor: _Optional[_Union[AgentDescriptor, _Mapping]] = ..., online: bool = ..., last_seen: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., inbox_depth: _Optional[int] = ..., registered_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
