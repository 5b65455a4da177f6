import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Gateway(_message.Message):
    __slots__ = ("id", "hostname", "pid", "version", "revision", "applied_at", "started_at", "heartbeat_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    hostname: str
    pid: int
    version: str
    revision: int
    applied_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    heartbeat_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., hostname: _Optional[str] = ..., pid: _Optional[int] = ..., version: _Optional[str] = ..., revision: _Optional[int] = ..., applied_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., heartbeat_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetFleetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetFleetStatusResponse(_message.Message):
    __slots__ = ("store_revision", "published_revision", "gateways")
    STORE_REVISION_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_REVISION_FIELD_NUMBER: _ClassVar[int]
    GATEWAYS_FIELD_NUMBER: _ClassVar[int]
    store_revision: int
    published_revision: int
    gateways: _containers.RepeatedCompositeFieldContainer[Gateway]
    def __init__(self, store_revision: _Optional[int] = ..., published_revision: _Optional[int] = ..., gateways: _Optional[_Iterable[_Union[Gateway, _Mapping]]] = ...) -> None: ...

class WaitForRevisionRequest(_message.Message):
    __slots__ = ("revision", "timeout")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    revision: int
    timeout: _duration_pb2.Duration
    def __init__(self, revision: _Optional[int] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class WaitForRevisionResponse(_message.Message):
    __slots__ = ("revision", "gateways", "waited")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    GATEWAYS_FIELD_NUMBER: _ClassVar[int]
    WAITED_FIELD_NUMBER: _ClassVar[int]
    revision: int
    gateways: _containers.RepeatedCompositeFieldContainer[Gateway]
    waited: _duration_pb2.Duration
    def __init__(self, revision: _Optional[int] = ..., gateways: _Optional[_Iterable[_Union[Gateway, _Mapping]]] = ..., waited: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
