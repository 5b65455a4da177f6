"""The scenarios of issue 5 and the targets they run against."""
from __future__ import annotations

from dataclasses import dataclass

from . import fixtures, loadgen
from .loadgen import LoadResult


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    prefix: str            # "" for the upstream itself, "/clusters/<name>" through a proxy
    pid: int               # whose process tree's CPU time counts
    alpn: frozenset[str]   # what the target negotiates

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{self.prefix}{path}"


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    connections: int
    streams: int = 0                    # > 0: HTTP/2 with h2load, this many streams per connection
    headers: tuple[str, ...] = ()

    @property
    def protocol(self) -> str:
        return "h2" if self.streams else "http/1.1"

    def run(self, target: Target, auth_header: str, seconds: int, core: int) -> LoadResult:
        headers = [auth_header, *self.headers]
        if self.streams:
            return loadgen.h2load(target.url(self.path), headers, self.connections, self.streams, seconds, core)
        return loadgen.wrk(target.url(self.path), headers, self.connections, seconds, core)


SMALL_GET_64 = Scenario("small GET, 64 conns", fixtures.POD_PATH, 64)
SMALL_GET_1 = Scenario("small GET, 1 conn", fixtures.POD_PATH, 1)
LIST_64 = Scenario("100 KB list, 64 conns", fixtures.POD_LIST_PATH, 64)
NEW_TLS_16 = Scenario("new TLS conn per request, 16 conns", fixtures.POD_PATH, 16, headers=("Connection: close",))
HTTP2_1x64 = Scenario("HTTP/2, 1 conn x 64 streams", fixtures.POD_PATH, 1, streams=64)

ALL = (SMALL_GET_64, SMALL_GET_1, LIST_64, NEW_TLS_16, HTTP2_1x64)
