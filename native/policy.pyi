from typing import Any, Mapping, Protocol

NO_MATCH: int
UNKNOWN_CLUSTER: int
KUBECTL_DISABLED: int
READ_ONLY: int

class _Attributes(Protocol):
    is_resource_request: bool
    path: str
    verb: str
    api_group: str
    namespace: str
    resource: str
    subresource: str
    name: str

class PolicyIndex:
    def __init__(self, snapshot_data: Mapping[str, Any], cache_limit: int = 100_000) -> None: ...
    @property
    def cache_size(self) -> int: ...
    @property
    def reads_source(self) -> bool: ...
    @property
    def reads_channel(self) -> bool: ...
    def decide(self, user: str, groups: tuple[str, ...], component: str, channel: str, cluster: str,
               info: _Attributes, source: str, now: float) -> int:
        """The index (in snapshot order) of the binding that decided, or NO_MATCH, UNKNOWN_CLUSTER,
        KUBECTL_DISABLED, READ_ONLY."""
