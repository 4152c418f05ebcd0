"""Conversions between plain Python values and the protobuf types of the API.

Everything here is pure (no I/O) and shared by the sync and the asyncio client.

* JSON-ish Python values (``dict``, ``list``, ``str``, numbers, ``bool``,
  ``None``) <-> ``google.protobuf.Value`` / ``Struct``: :func:`to_value`,
  :func:`to_struct`, :func:`to_python`.  Note that JSON numbers are doubles on
  the wire, so ``1`` comes back as ``1.0`` (equal in Python).
* Enums given as short strings: ``"task_request"``, ``"TASK-REQUEST"``,
  ``"MESSAGE_TYPE_TASK_REQUEST"``, the enum's int value, or ``None`` (unset).
* Durations given as seconds (``int``/``float``), a ``datetime.timedelta``,
  a string with a unit (``"250ms"``, ``"300s"``, ``"5m"``, ``"1h"``, ``"1m30s"``)
  or a ``google.protobuf.Duration``.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable, Mapping
from typing import Any, Optional, TypeVar, Union, cast, overload

from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2
from google.protobuf.message import Message as _ProtoMessage

from agentbus.v1 import message_pb2, message_service_pb2, session_pb2, session_service_pb2

__all__ = [
    "to_value",
    "to_struct",
    "to_python",
    "to_duration",
    "to_datetime",
    "message_type",
    "priority",
    "backoff",
    "delivery_mode",
    "session_state",
    "session_event_type",
    "context_update_mode",
    "aggregation_strategy",
    "enum_name",
    "parse_enum",
    "payload_of",
]

M = TypeVar("M", bound=_ProtoMessage)
#: A generated enum type (``message_pb2.MessageType``, ...): an int subclass to type checkers.
E = TypeVar("E", bound=int)

JSON = Union[None, bool, int, float, str, list[Any], dict[str, Any]]


# --------------------------------------------------------------------------
# JSON values


def to_value(obj: Any) -> struct_pb2.Value:
    """A JSON-compatible Python value as a ``google.protobuf.Value``.

    Accepts an existing ``Value`` (copied), ``Struct`` or ``ListValue`` too.
    Raises ``TypeError`` for values JSON cannot represent (e.g. ``datetime``).
    """
    if isinstance(obj, struct_pb2.Value):
        out = struct_pb2.Value()
        out.CopyFrom(obj)
        return out
    out = struct_pb2.Value()
    if isinstance(obj, struct_pb2.Struct):
        out.struct_value.CopyFrom(obj)
        return out
    if isinstance(obj, struct_pb2.ListValue):
        out.list_value.CopyFrom(obj)
        return out
    _fill_value(out, obj, "payload")
    return out


def _fill_value(out: struct_pb2.Value, obj: Any, path: str) -> None:
    if obj is None:
        out.null_value = struct_pb2.NULL_VALUE
    elif isinstance(obj, bool):
        out.bool_value = obj
    elif isinstance(obj, (int, float)):
        out.number_value = float(obj)
    elif isinstance(obj, str):
        out.string_value = obj
    elif isinstance(obj, Mapping):
        struct = out.struct_value
        struct.SetInParent()
        for key, item in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"{path}: object keys must be str, not {type(key).__name__}")
            _fill_value(struct.fields[key], item, f"{path}.{key}")
    elif isinstance(obj, (list, tuple)):
        lst = out.list_value
        lst.SetInParent()
        for i, item in enumerate(obj):
            _fill_value(lst.values.add(), item, f"{path}[{i}]")
    elif isinstance(obj, (struct_pb2.Value, struct_pb2.Struct, struct_pb2.ListValue)):
        out.CopyFrom(to_value(obj))
    else:
        raise TypeError(f"{path}: {type(obj).__name__} is not a JSON value")


def to_struct(obj: Optional[Mapping[str, Any]]) -> struct_pb2.Struct:
    """A ``dict`` (or ``None``: empty) as a ``google.protobuf.Struct``."""
    if isinstance(obj, struct_pb2.Struct):
        out = struct_pb2.Struct()
        out.CopyFrom(obj)
        return out
    if obj is None:
        return struct_pb2.Struct()
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected a dict (JSON object), not {type(obj).__name__}")
    return to_value(obj).struct_value


@overload
def to_python(value: struct_pb2.Struct) -> dict[str, Any]: ...
@overload
def to_python(value: struct_pb2.ListValue) -> list[Any]: ...
@overload
def to_python(value: Union[struct_pb2.Value, None]) -> JSON: ...
def to_python(value: Union[struct_pb2.Value, struct_pb2.Struct, struct_pb2.ListValue, None]) -> JSON:
    """A ``Value``/``Struct``/``ListValue`` as plain Python (dict, list, ...).

    An unset ``Value`` (no kind) is ``None``.
    """
    if value is None:
        return None
    if isinstance(value, struct_pb2.Struct):
        return {k: to_python(v) for k, v in value.fields.items()}
    if isinstance(value, struct_pb2.ListValue):
        return [to_python(v) for v in value.values]
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "struct_value":
        return to_python(value.struct_value)
    if kind == "list_value":
        return to_python(value.list_value)
    return cast(JSON, getattr(value, kind))


def payload_of(message: Any) -> JSON:
    """The payload of a ``Message`` (or of a ``Delivery``'s message) as Python."""
    if isinstance(message, message_service_pb2.Delivery):
        message = message.message
    return to_python(message.payload) if message.HasField("payload") else None


# --------------------------------------------------------------------------
# Durations and timestamps

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")


def to_duration(value: Union[int, float, str, _dt.timedelta, duration_pb2.Duration]) -> duration_pb2.Duration:
    """Seconds, a ``timedelta``, ``"300s"``/``"250ms"``/``"1m30s"`` or a Duration."""
    if isinstance(value, duration_pb2.Duration):
        out = duration_pb2.Duration()
        out.CopyFrom(value)
        return out
    if isinstance(value, _dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise TypeError("a duration cannot be a bool")
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        pos, seconds = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(text) or not text:
            raise ValueError(f"not a duration: {value!r} (use e.g. '300s', '250ms', '5m', '1h30m')")
    else:
        raise TypeError(f"not a duration: {value!r}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {value!r}")
    out = duration_pb2.Duration()
    out.seconds = int(seconds)
    out.nanos = int(round((seconds - int(seconds)) * 1e9))
    if out.nanos >= 1_000_000_000:
        out.seconds += 1
        out.nanos -= 1_000_000_000
    return out


def to_datetime(ts: timestamp_pb2.Timestamp) -> Optional[_dt.datetime]:
    """A Timestamp as an aware UTC ``datetime`` (``None`` when unset/zero)."""
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return ts.ToDatetime(tzinfo=_dt.timezone.utc)


# --------------------------------------------------------------------------
# Enums


def parse_enum(enum: type[E], value: Any, prefix: str, *, what: str) -> E:
    """The int value of ``value`` in the generated ``enum`` wrapper.

    ``value`` may be an int (or enum value), ``None`` (0, unspecified), or a
    name with or without ``prefix``, in any case, with ``-`` or ``_``.
    """
    wrapper: Any = enum  # an EnumTypeWrapper at run time
    if value is None:
        return cast(E, 0)
    if isinstance(value, bool):
        raise TypeError(f"{what}: expected a name or an int, not a bool")
    if isinstance(value, int):
        if value not in wrapper.values():
            raise ValueError(f"{what}: {value} is not a valid value; use one of {_choices(enum, prefix)}")
        return cast(E, int(value))
    if isinstance(value, str):
        name = value.strip().upper().replace("-", "_").replace(" ", "_")
        if not name.startswith(prefix):
            name = prefix + name
        try:
            return cast(E, wrapper.Value(name))
        except ValueError:
            raise ValueError(
                f"{what}: unknown value {value!r}; use one of {_choices(enum, prefix)}"
            ) from None
    raise TypeError(f"{what}: expected a name or an int, not {type(value).__name__}")


def enum_name(enum: Any, number: int, prefix: str) -> str:
    """The short lower-case name of an enum value: ``task_request``."""
    try:
        name: str = enum.Name(number)
    except ValueError:
        return str(number)
    return name[len(prefix):].lower() if name.startswith(prefix) else name.lower()


def _choices(enum: Any, prefix: str) -> str:
    names = [n[len(prefix):].lower() for n in enum.keys() if not n.endswith("_UNSPECIFIED")]
    return ", ".join(repr(n) for n in names)


def message_type(value: Any) -> message_pb2.MessageType:
    """``"task_request"``, ``"task_response"``, ``"status_update"``, ``"error"``, ``"heartbeat"``."""
    return parse_enum(message_pb2.MessageType, value, "MESSAGE_TYPE_", what="message_type")


def priority(value: Any) -> message_pb2.Priority:
    """``"low"``, ``"medium"``, ``"high"``, ``"critical"`` (``None``: unspecified = medium)."""
    return parse_enum(message_pb2.Priority, value, "PRIORITY_", what="priority")


def backoff(value: Any) -> message_pb2.Backoff:
    """``"linear"`` or ``"exponential"``."""
    return parse_enum(message_pb2.Backoff, value, "BACKOFF_", what="backoff")


def delivery_mode(value: Any) -> message_pb2.DeliveryMode:
    """``"async"`` or ``"sync"``."""
    return parse_enum(message_pb2.DeliveryMode, value, "DELIVERY_MODE_", what="delivery_mode")


def session_state(value: Any) -> session_pb2.SessionState:
    """``"active"``, ``"completed"``, ``"terminated"``, ``"expired"``."""
    return parse_enum(session_pb2.SessionState, value, "SESSION_STATE_", what="session state")


def session_event_type(value: Any) -> session_pb2.SessionEventType:
    """``"session_created"``, ``"participant_added"``, ``"task_delegated"``, ..."""
    return parse_enum(session_pb2.SessionEventType, value, "SESSION_EVENT_TYPE_", what="event type")


def context_update_mode(value: Any) -> session_service_pb2.ContextUpdateMode:
    """``"replace"`` or ``"merge"``."""
    return parse_enum(session_service_pb2.ContextUpdateMode, value, "CONTEXT_UPDATE_MODE_", what="mode")


def aggregation_strategy(value: Any) -> session_pb2.AggregationStrategy:
    """``"consensus"``, ``"specialist_priority"``, ``"confidence_weighted"`` or
    ``"manual"`` (``None``: unspecified, which the server treats as consensus)."""
    return parse_enum(session_pb2.AggregationStrategy, value, "AGGREGATION_STRATEGY_", what="strategy")


# --------------------------------------------------------------------------
# Messages from dicts


def to_message(cls: type[M], value: Any, *, what: str) -> M:
    """``value`` as a ``cls`` message: an instance (copied) or a dict in the
    protobuf JSON shape (snake_case or camelCase field names)."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        out = cls()
        out.CopyFrom(value)
        return out
    if isinstance(value, Mapping):
        try:
            return json_format.ParseDict(dict(value), cls())
        except json_format.ParseError as exc:
            raise ValueError(f"{what}: {exc}") from None
    raise TypeError(f"{what}: expected a {cls.__name__} or a dict, not {type(value).__name__}")


def str_list(value: Optional[Iterable[str]], *, what: str) -> list[str]:
    """A list of strings; a single string is refused (a common mistake)."""
    if value is None:
        return []
    if isinstance(value, str):
        raise TypeError(f"{what}: expected a list of strings, not a single string")
    return [str(v) for v in value]
