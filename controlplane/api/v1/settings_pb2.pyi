import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from controlplane.api.v1 import bindings_pb2 as _bindings_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BreakGlassPolicy(_message.Message):
    __slots__ = ("role", "group", "clusters", "max_duration")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    MAX_DURATION_FIELD_NUMBER: _ClassVar[int]
    role: str
    group: str
    clusters: _bindings_pb2.ClusterSelector
    max_duration: _duration_pb2.Duration
    def __init__(self, role: _Optional[str] = ..., group: _Optional[str] = ..., clusters: _Optional[_Union[_bindings_pb2.ClusterSelector, _Mapping]] = ..., max_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class Settings(_message.Message):
    __slots__ = ("break_glass_enabled", "group_compaction", "max_exec_sessions", "max_watches", "approver_group", "access_request_max_duration", "break_glass", "session_idle_timeout", "revision")
    BREAK_GLASS_ENABLED_FIELD_NUMBER: _ClassVar[int]
    GROUP_COMPACTION_FIELD_NUMBER: _ClassVar[int]
    MAX_EXEC_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_WATCHES_FIELD_NUMBER: _ClassVar[int]
    APPROVER_GROUP_FIELD_NUMBER: _ClassVar[int]
    ACCESS_REQUEST_MAX_DURATION_FIELD_NUMBER: _ClassVar[int]
    BREAK_GLASS_FIELD_NUMBER: _ClassVar[int]
    SESSION_IDLE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    break_glass_enabled: bool
    group_compaction: bool
    max_exec_sessions: int
    max_watches: int
    approver_group: str
    access_request_max_duration: _duration_pb2.Duration
    break_glass: BreakGlassPolicy
    session_idle_timeout: _duration_pb2.Duration
    revision: int
    def __init__(self, break_glass_enabled: _Optional[bool] = ..., group_compaction: _Optional[bool] = ..., max_exec_sessions: _Optional[int] = ..., max_watches: _Optional[int] = ..., approver_group: _Optional[str] = ..., access_request_max_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., break_glass: _Optional[_Union[BreakGlassPolicy, _Mapping]] = ..., session_idle_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class GetSettingsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UpdateSettingsRequest(_message.Message):
    __slots__ = ("settings", "expected_revision")
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    settings: Settings
    expected_revision: int
    def __init__(self, settings: _Optional[_Union[Settings, _Mapping]] = ..., expected_revision: _Optional[int] = ...) -> None: ...
