import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from controlplane.api.v1 import agents_pb2 as _agents_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Credential(_message.Message):
    __slots__ = ("kind", "ref", "cert_ref", "key_ref")
    KIND_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    CERT_REF_FIELD_NUMBER: _ClassVar[int]
    KEY_REF_FIELD_NUMBER: _ClassVar[int]
    kind: str
    ref: str
    cert_ref: str
    key_ref: str
    def __init__(self, kind: _Optional[str] = ..., ref: _Optional[str] = ..., cert_ref: _Optional[str] = ..., key_ref: _Optional[str] = ...) -> None: ...

class Cluster(_message.Message):
    __slots__ = ("name", "endpoint", "ca_bundle", "credential", "labels", "tunnel", "identity_mode", "kubectl_enabled", "revision", "read_only", "upstream_groups", "bootstrap", "connectivity")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    CA_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TUNNEL_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_MODE_FIELD_NUMBER: _ClassVar[int]
    KUBECTL_ENABLED_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_GROUPS_FIELD_NUMBER: _ClassVar[int]
    BOOTSTRAP_FIELD_NUMBER: _ClassVar[int]
    CONNECTIVITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    endpoint: str
    ca_bundle: str
    credential: Credential
    labels: _containers.ScalarMap[str, str]
    tunnel: bool
    identity_mode: str
    kubectl_enabled: bool
    revision: int
    read_only: bool
    upstream_groups: _containers.RepeatedScalarFieldContainer[str]
    bootstrap: _agents_pb2.BootstrapToken
    connectivity: TunnelConnectivity
    def __init__(self, name: _Optional[str] = ..., endpoint: _Optional[str] = ..., ca_bundle: _Optional[str] = ..., credential: _Optional[_Union[Credential, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., tunnel: _Optional[bool] = ..., identity_mode: _Optional[str] = ..., kubectl_enabled: _Optional[bool] = ..., revision: _Optional[int] = ..., read_only: _Optional[bool] = ..., upstream_groups: _Optional[_Iterable[str]] = ..., bootstrap: _Optional[_Union[_agents_pb2.BootstrapToken, _Mapping]] = ..., connectivity: _Optional[_Union[TunnelConnectivity, _Mapping]] = ...) -> None: ...

class TunnelConnectivity(_message.Message):
    __slots__ = ("agents", "tunnels", "gateways", "last_seen")
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    TUNNELS_FIELD_NUMBER: _ClassVar[int]
    GATEWAYS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    agents: int
    tunnels: int
    gateways: int
    last_seen: _timestamp_pb2.Timestamp
    def __init__(self, agents: _Optional[int] = ..., tunnels: _Optional[int] = ..., gateways: _Optional[int] = ..., last_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RegisterClusterRequest(_message.Message):
    __slots__ = ("cluster", "bootstrap_ttl")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    BOOTSTRAP_TTL_FIELD_NUMBER: _ClassVar[int]
    cluster: Cluster
    bootstrap_ttl: _duration_pb2.Duration
    def __init__(self, cluster: _Optional[_Union[Cluster, _Mapping]] = ..., bootstrap_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class UpdateClusterRequest(_message.Message):
    __slots__ = ("cluster", "expected_revision")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    cluster: Cluster
    expected_revision: int
    def __init__(self, cluster: _Optional[_Union[Cluster, _Mapping]] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class DeregisterClusterRequest(_message.Message):
    __slots__ = ("name", "expected_revision")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    name: str
    expected_revision: int
    def __init__(self, name: _Optional[str] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class DeregisterClusterResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class GetClusterRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListClustersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListClustersResponse(_message.Message):
    __slots__ = ("clusters",)
    CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    clusters: _containers.RepeatedCompositeFieldContainer[Cluster]
    def __init__(self, clusters: _Optional[_Iterable[_Union[Cluster, _Mapping]]] = ...) -> None: ...
