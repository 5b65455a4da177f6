import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BootstrapToken(_message.Message):
    __slots__ = ("id", "cluster", "expires_at", "secret", "used_at", "used_by", "revision")
    ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    USED_AT_FIELD_NUMBER: _ClassVar[int]
    USED_BY_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    id: str
    cluster: str
    expires_at: _timestamp_pb2.Timestamp
    secret: str
    used_at: _timestamp_pb2.Timestamp
    used_by: str
    revision: int
    def __init__(self, id: _Optional[str] = ..., cluster: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., secret: _Optional[str] = ..., used_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., used_by: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class IssueBootstrapTokenRequest(_message.Message):
    __slots__ = ("cluster", "ttl")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    ttl: _duration_pb2.Duration
    def __init__(self, cluster: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class AgentCertificate(_message.Message):
    __slots__ = ("serial", "cluster", "agent_id", "common_name", "spki_sha256", "expires_at", "enrolled_by", "revoked", "retired", "live", "revision")
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    COMMON_NAME_FIELD_NUMBER: _ClassVar[int]
    SPKI_SHA256_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_BY_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    RETIRED_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    serial: str
    cluster: str
    agent_id: str
    common_name: str
    spki_sha256: str
    expires_at: _timestamp_pb2.Timestamp
    enrolled_by: str
    revoked: bool
    retired: bool
    live: bool
    revision: int
    def __init__(self, serial: _Optional[str] = ..., cluster: _Optional[str] = ..., agent_id: _Optional[str] = ..., common_name: _Optional[str] = ..., spki_sha256: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., enrolled_by: _Optional[str] = ..., revoked: _Optional[bool] = ..., retired: _Optional[bool] = ..., live: _Optional[bool] = ..., revision: _Optional[int] = ...) -> None: ...

class ListAgentCertificatesRequest(_message.Message):
    __slots__ = ("cluster",)
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    def __init__(self, cluster: _Optional[str] = ...) -> None: ...

class ListAgentCertificatesResponse(_message.Message):
    __slots__ = ("certificates",)
    CERTIFICATES_FIELD_NUMBER: _ClassVar[int]
    certificates: _containers.RepeatedCompositeFieldContainer[AgentCertificate]
    def __init__(self, certificates: _Optional[_Iterable[_Union[AgentCertificate, _Mapping]]] = ...) -> None: ...

class Refusal(_message.Message):
    __slots__ = ("id", "at", "action", "cluster", "subject", "peer", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    at: _timestamp_pb2.Timestamp
    action: str
    cluster: str
    subject: str
    peer: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., action: _Optional[str] = ..., cluster: _Optional[str] = ..., subject: _Optional[str] = ..., peer: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ListRefusalsRequest(_message.Message):
    __slots__ = ("cluster", "limit")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    limit: int
    def __init__(self, cluster: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListRefusalsResponse(_message.Message):
    __slots__ = ("refusals",)
    REFUSALS_FIELD_NUMBER: _ClassVar[int]
    refusals: _containers.RepeatedCompositeFieldContainer[Refusal]
    def __init__(self, refusals: _Optional[_Iterable[_Union[Refusal, _Mapping]]] = ...) -> None: ...

class EnrollRequest(_message.Message):
    __slots__ = ("cluster", "bootstrap_token", "csr")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    BOOTSTRAP_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CSR_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    bootstrap_token: str
    csr: bytes
    def __init__(self, cluster: _Optional[str] = ..., bootstrap_token: _Optional[str] = ..., csr: _Optional[bytes] = ...) -> None: ...

class RenewRequest(_message.Message):
    __slots__ = ("certificate", "csr", "signed_at", "signature")
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    CSR_FIELD_NUMBER: _ClassVar[int]
    SIGNED_AT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    certificate: bytes
    csr: bytes
    signed_at: _timestamp_pb2.Timestamp
    signature: bytes
    def __init__(self, certificate: _Optional[bytes] = ..., csr: _Optional[bytes] = ..., signed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., signature: _Optional[bytes] = ...) -> None: ...

class AgentCredentials(_message.Message):
    __slots__ = ("certificate", "certificate_pem", "agent_ca", "gateway_ca")
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    AGENT_CA_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_CA_FIELD_NUMBER: _ClassVar[int]
    certificate: AgentCertificate
    certificate_pem: bytes
    agent_ca: bytes
    gateway_ca: bytes
    def __init__(self, certificate: _Optional[_Union[AgentCertificate, _Mapping]] = ..., certificate_pem: _Optional[bytes] = ..., agent_ca: _Optional[bytes] = ..., gateway_ca: _Optional[bytes] = ...) -> None: ...
