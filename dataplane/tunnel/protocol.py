"""The tunnel's wire format, sans-IO (docs/tunnels.md, "Protocol").

1. TLS 1.2+ with ALPN `accesspoint-tunnel/1`; the agent presents its client certificate.
2. The agent sends one line, `ACCESSPOINT-TUNNEL/1 <cluster>\\r\\n`; the gateway answers
   `OK <gateway> <worker> <workers>\\r\\n` (which replica and which of its worker processes holds
   the tunnel: an agent keeps one tunnel per worker of every replica) or `REFUSED <reason>\\r\\n`
   and closes. Lines are ASCII and at most MAX_LINE bytes.
3. After OK, HTTP/2 with reversed roles: the gateway sends the client preface, the agent serves.
   Each stream is one request of a caller, with these AccessPoint fields:
   - ASSERTION_HEADER: the signed identity (assertion.py), on every request stream;
   - UPGRADE_HEADER: the caller's `Upgrade` value (HTTP/2 forbids `Upgrade`); the stream is
     not ended after the head, since the upgraded bytes follow as DATA;
   - SWITCHED_HEADER: in the agent's `200` answer to an upgrade stream that the API server
     switched (101): the API server's raw 101 head, base64; DATA then carries the session's
     bytes both ways and END_STREAM is a half-close;
   - CONTROL_HEADER: a control stream from the gateway (`drain`: reconnect elsewhere, this
     gateway is going away; in-flight streams finish; `members`: MEMBERS_HEADER carries the
     gateway fleet as this gateway sees it, see membership.py). The gateway never forwards a
     caller's field with a RESERVED_PREFIXES name, so callers cannot forge any of these.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from ..http2 import Keepalive

ALPN = "accesspoint-tunnel/1"
GREETING = b"ACCESSPOINT-TUNNEL/1 "
ACCEPTED = b"OK"
REFUSED = b"REFUSED "
MAX_LINE = 512
MAX_WORKERS = 256         # as --workers allows

ASSERTION_HEADER = b"x-accesspoint-assertion"
UPGRADE_HEADER = b"accesspoint-upgrade"
SWITCHED_HEADER = b"accesspoint-switched"
CONTROL_HEADER = b"accesspoint-control"
DRAIN = b"drain"
MEMBERS = b"members"
MEMBERS_HEADER = b"accesspoint-members"
RESERVED_PREFIXES = (b"accesspoint-", b"x-accesspoint-")


class HelloError(Exception):
    """The opening exchange failed; `reason` is safe to log and to send; `code` is a fixed word
    (metrics label, audit field)."""

    def __init__(self, reason: str, code: str = "greeting"):
        super().__init__(reason)
        self.reason = reason
        self.code = code


class LineReader:
    """Collects one CRLF-terminated line; `feed` returns (line, bytes after it) once complete."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> tuple[bytes, bytes] | None:
        self._buffer += data
        end = self._buffer.find(b"\r\n")
        if end < 0:
            if len(self._buffer) > MAX_LINE:
                raise HelloError("the greeting line is too long")
            return None
        if end > MAX_LINE:
            raise HelloError("the greeting line is too long")
        return bytes(self._buffer[:end]), bytes(self._buffer[end + 2:])


def greeting(cluster: str) -> bytes:
    return GREETING + cluster.encode("ascii") + b"\r\n"


def parse_greeting(line: bytes) -> str:
    """The cluster an agent says it serves."""
    if not line.startswith(GREETING):
        raise HelloError("not an AccessPoint tunnel greeting")
    try:
        cluster = line[len(GREETING):].decode("ascii")
    except UnicodeDecodeError:
        raise HelloError("the cluster name is not ASCII") from None
    if not cluster or not cluster.isprintable() or " " in cluster:
        raise HelloError("the greeting names no valid cluster")
    return cluster


@dataclass(frozen=True)
class Accepted:
    """Who accepted a tunnel: the gateway replica's id and its worker `worker` of `workers`."""
    gateway: str
    worker: int
    workers: int

    @property
    def key(self) -> tuple[str, int]:
        return self.gateway, self.worker


def _token_ok(value: str) -> bool:
    return bool(value) and value.isascii() and value.isprintable() and " " not in value


def accept(gateway: str, worker: int, workers: int) -> bytes:
    if not _token_ok(gateway) or not 0 <= worker < workers:
        raise ValueError("a gateway id is printable ASCII without spaces, and worker < workers")
    return ACCEPTED + f" {gateway} {worker} {workers}\r\n".encode("ascii")


def refuse(reason: str) -> bytes:
    text = reason.encode("ascii", "replace")[:MAX_LINE - len(REFUSED)].replace(b"\r", b" ").replace(b"\n", b" ")
    return REFUSED + text + b"\r\n"


def parse_answer(line: bytes) -> Accepted:
    """Who accepted; HelloError with the gateway's reason otherwise."""
    if line.startswith(ACCEPTED + b" "):
        parts = line.decode("ascii", "replace").split(" ")
        if len(parts) == 4 and _token_ok(parts[1]) and parts[2].isdigit() and parts[3].isdigit():
            accepted = Accepted(parts[1], int(parts[2]), int(parts[3]))
            if accepted.worker < accepted.workers <= MAX_WORKERS:
                return accepted
        raise HelloError("the gateway's acceptance line is malformed")
    if line.startswith(REFUSED):
        raise HelloError("the gateway refused the tunnel: " + line[len(REFUSED):].decode("ascii", "replace"))
    raise HelloError("the gateway answered the greeting with something else")


class TunnelKeepalive(Keepalive):
    """Both ends PING an idle tunnel too (`Keepalive` PINGs only while streams are open): a dead
    tunnel must be noticed before a request picks it, and the agent must redial."""

    def __init__(self, interval: float, timeout: float, idle_timeout: float, now: float,
                 on_rtt: Callable[[float], None] | None = None):
        super().__init__(interval, timeout, idle_timeout, now)
        self.on_rtt = on_rtt
        self.rtt: float | None = None          # of the last answered PING, seconds

    def tick(self, now: float, active: int) -> str | None:
        return super().tick(now, max(active, 1))

    def acked(self) -> None:
        if self.ping_sent is not None:
            self.rtt = max(0.0, time.monotonic() - self.ping_sent)
            if self.on_rtt is not None:
                self.on_rtt(self.rtt)
        super().acked()
