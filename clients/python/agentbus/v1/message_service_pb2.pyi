from agentbus.v1 import message_pb2 as _message_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SendMessageRequest(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: _message_pb2.Message
    def __init__(self, message: _Optional[_Union[_message_pb2.Message, _Mapping]] = ...) -> None: ...

class SendMessageResponse(_message.Message):
    __slots__ = ("accepted", "message_id", "state", "reply")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    message_id: str
    state: _message_pb2.MessageState
    reply: _message_pb2.Message
    def __init__(self, accepted: bool = ..., message_id: _Optional[str] = ..., state: _Optional[_Union[_message_pb2.MessageState, str]] = ..., reply: _Optional[_Union[_message_pb2.Message, _Mapping]] = ...) -> None: ...

class ReceiveMessagesRequest(_message.Message):
    __slots__ = ("agent_id", "max_in_flight")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    max_in_flight: int
    def __init__(self, agent_id: _Optional[str] = ..., max_in_flight: _Optional[int] = ...) -> None: ...

class ReceiveMessagesResponse(_message.Message):
    __slots__ = ("delivery", "heartbeat")
    DELIVERY_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    delivery: Delivery
    heartbeat: InboxHeartbeat
    def __init__(self, delivery: _Optional[_Union[Delivery, _Mapping]] = ..., heartbeat: _Optional[_Union[InboxHeartbeat, _Mapping]] = ...) -> None: ...

class Delivery(_message.Message):
    __slots__ = ("message", "attempt", "ack_deadline")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ACK_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    message: _message_pb2.Message
    attempt: int
    ack_deadline: _timestamp_pb2.Timestamp
    def __init__(self, message: _Optional[_Union[_message_pb2.Message, _Mapping]] = ..., attempt: _Optional[int] = ..., ack_deadline: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class InboxHeartbeat(_message.Message):
    __slots__ = ("timestamp", "inbox_depth")
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    INBOX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    timestamp: _timestamp_pb2.Timestamp
    inbox_depth: int
    def __init__(self, timestamp: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., inbox_depth: _Optional[int] = ...) -> None: ...

class AckMessageRequest(_message.Message):
    __slots__ = ("agent_id", "message_id")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    message_id: str
    def __init__(self, agent_id: _Optional[str] = ..., message_id: _Optional[str] = ...) -> None: ...

class AckMessageResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: _message_pb2.MessageState
    def __init__(self, state: _Optional[_Union[_message_pb2.MessageState, str]] = ...) -> None: ...

class AckMessagesRequest(_message.Message):
    __slots__ = ("agent_id", "message_ids")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    message_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, agent_id: _Optional[str] = ..., message_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class AckMessagesResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AckResult]
    def __init__(self, results: _Optional[_Iterable[_Union[AckResult, _Mapping]]] = ...) -> None: ...

class AckResult(_message.Message):
    __slots__ = ("message_id", "state", "code", "error", "code_name")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CODE_NAME_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    state: _message_pb2.MessageState
    code: int
    error: str
    code_name: str
    def __init__(self, message_id: _Optional[str] = ..., state: _Optional[_Union[_message_pb2.MessageState, str]] = ..., code: _Optional[int] = ..., error: _Optional[str] = ..., code_name: _Optional[str] = ...) -> None: ...

class SendMessagesRequest(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[_message_pb2.Message]
    def __init__(self, messages: _Optional[_Iterable[_Union[_message_pb2.Message, _Mapping]]] = ...) -> None: ...

class SendMessagesResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SendResult]
    def __init__(self, results: _Optional[_Iterable[_Union[SendResult, _Mapping]]] = ...) -> None: ...

class PublishMessagesRequest(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: _message_pb2.Message
    def __init__(self, message: _Optional[_Union[_message_pb2.Message, _Mapping]] = ...) -> None: ...

class PublishMessagesResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: SendResult
    def __init__(self, result: _Optional[_Union[SendResult, _Mapping]] = ...) -> None: ...

class SendResult(_message.Message):
    __slots__ = ("accepted", "message_id", "state", "code", "error", "code_name")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CODE_NAME_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    message_id: str
    state: _message_pb2.MessageState
    code: int
    error: str
    code_name: str
    def __init__(self, accepted: bool = ..., message_id: _Optional[str] = ..., state: _Optional[_Union[_message_pb2.MessageState, str]] = ..., code: _Optional[int] = ..., error: _Optional[str] = ..., code_name: _Optional[str] = ...) -> None: ...

class GetMessageRequest(_message.Message):
    __slots__ = ("message_id",)
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    def __init__(self, message_id: _Optional[str] = ...) -> None: ...

class GetMessageResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: _message_pb2.MessageStatus
    def __init__(self, status: _Optional[_Union[_message_pb2.MessageStatus, _Mapping]] = ...) -> None: ...
