"""Sans-IO parts of the gateway: routing, header rewriting, Status bodies, splice, config."""
from __future__ import annotations

import asyncio
import json

import pytest

from dataplane import headers as hdrs
from dataplane import routing, status
from dataplane.config import ConfigError, GatewayConfig
from dataplane.splice import splice

from .helpers import run


# -- routing -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("target, cluster, path, query", [
    ("/clusters/alpha/api/v1/pods", "alpha", "/api/v1/pods", ""),
    ("/clusters/alpha/version?timeout=32s", "alpha", "/version", "timeout=32s"),
    ("/clusters/alpha", "alpha", "/", ""),
    ("/clusters/alpha/", "alpha", "/", ""),
    ("/clusters/alpha/api/v1/namespaces/default/pods/p1/exec?command=ls&command=-la&stdout=true",
     "alpha", "/api/v1/namespaces/default/pods/p1/exec", "command=ls&command=-la&stdout=true"),
    # unreserved escapes are decoded once (the forwarded path is the decoded one)
    ("/clusters/alpha/api/v1/namespaces/%64efault/pods", "alpha", "/api/v1/namespaces/default/pods", ""),
    # the query is never touched, escapes and all
    ("/clusters/alpha/api?labelSelector=a%3Db%2Cc&x=%2F..%2F", "alpha", "/api", "labelSelector=a%3Db%2Cc&x=%2F..%2F"),
    ("/clusters/alpha/api/v1/namespaces/ns/pods/p:8080/proxy", "alpha", "/api/v1/namespaces/ns/pods/p:8080/proxy", ""),
])
def test_route_accepts_and_normalises(target, cluster, path, query):
    r = routing.route(target)
    assert (r.cluster, r.path, r.query) == (cluster, path, query)
    assert r.upstream_target == path + ("?" + query if "?" in target else "")


@pytest.mark.parametrize("target", [
    "/clusters/alpha/../beta/api",
    "/clusters/alpha/%2e%2e/beta/api",
    "/clusters/alpha/%2E%2E/beta/api",
    "/clusters/alpha/.%2e/beta/api",
    "/clusters/alpha%2Fbeta/api",
    "/clusters/alpha%2fbeta/api",
    "/clusters/alpha/api/%2F/x",
    "/clusters//beta/api",
    "/clusters/alpha//api",
    "/clusters/alpha/./api",
    "/clusters/alpha/%2e/api",
    "/clusters/alpha/..\\beta/api",
    "/clusters/alpha/%5c..%5cbeta",
    "/clusters/alpha/api/%252F",
    "/clusters/alpha/api/%00",
    "/clusters/alpha/api/%zz",
    "/clusters/alpha/api/%2",
    "/clusters/alpha/api/%C3%A9",
    "/clusters/alpha/api#frag",
    "http://evil/clusters/alpha/api",
    "*",
    "/clusters/alpha/a b",
])
def test_route_refuses_ambiguous_paths_with_400(target):
    with pytest.raises(status.StatusError) as info:
        routing.route(target)
    assert info.value.code == 400


@pytest.mark.parametrize("target", ["/api/v1/pods", "/clusters", "/clusters/", "/version", "/clusters/Alpha/api"])
def test_route_outside_clusters_is_404(target):
    with pytest.raises(status.StatusError) as info:
        routing.route(target)
    assert info.value.code == 404


# -- Status bodies -------------------------------------------------------------------------------------

@pytest.mark.parametrize("code, reason", [
    (400, "BadRequest"), (401, "Unauthorized"), (403, "Forbidden"), (404, "NotFound"),
    (413, "RequestEntityTooLarge"), (414, "RequestEntityTooLarge"), (431, "RequestEntityTooLarge"),
    (429, "TooManyRequests"), (501, ""), (502, "ServiceUnavailable"), (503, "ServiceUnavailable"),
    (504, "Timeout"),
])
def test_status_bodies_are_kubernetes_status(code, reason):
    err = status.StatusError(code, "boom")
    body = json.loads(err.body)
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "boom", "reason": reason, "code": code}
    raw = err.render()
    assert raw.startswith(b"HTTP/1.1 %d " % code)
    assert b"connection: close" in raw and raw.endswith(err.body)


def test_cluster_unreachable_message():
    err = status.cluster_unreachable("prod", "connection refused")
    assert err.code == 503 and err.message == 'cluster "prod" is unreachable: connection refused'


# -- headers -------------------------------------------------------------------------------------------

CALLER = [
    (b"host", b"gw"), (b"authorization", b"Bearer caller-secret"), (b"user-agent", b"kubectl/v1.32.4"),
    (b"impersonate-user", b"x"), (b"impersonate-group", b"y"),
    (b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-host", b"evil"), (b"forwarded", b"for=1.2.3.4"),
    (b"x-remote-user", b"admin"), (b"connection", b"keep-alive, X-Secret-Hop"), (b"x-secret-hop", b"1"),
    (b"keep-alive", b"timeout=5"), (b"te", b"trailers"), (b"trailer", b"x"), (b"proxy-authorization", b"p"),
    (b"transfer-encoding", b"chunked"), (b"upgrade", b"websocket"), (b"accept", b"application/json"),
    (b"x-stream-protocol-version", b"v5.channel.k8s.io"), (b"x-stream-protocol-version", b"v4.channel.k8s.io"),
    (b"sec-websocket-protocol", b"v5.channel.k8s.io"), (b"content-length", b"5"), (b"expect", b"100-continue"),
]


def test_upstream_headers_strip_caller_credentials_and_hop_by_hop():
    out = hdrs.upstream_request_headers(
        CALLER, host=b"10.0.0.1:6443", token="cluster-token",
        impersonate=hdrs.Impersonate("alice", ("devs", "ops"), "u-1"), request_id="rid-1",
        client_ip="127.0.0.1", body_framing=(b"content-length", b"5"))
    names = [n for n, _ in out]
    assert out[0] == (b"host", b"10.0.0.1:6443")
    assert (b"authorization", b"Bearer cluster-token") in out
    assert b"Bearer caller-secret" not in [v for _, v in out]
    for gone in (b"connection", b"keep-alive", b"te", b"trailer", b"proxy-authorization", b"transfer-encoding",
                 b"upgrade", b"x-secret-hop", b"x-remote-user", b"forwarded", b"x-forwarded-host", b"expect"):
        assert gone not in names, gone
    assert [v for n, v in out if n == b"impersonate-user"] == [b"alice"]
    assert [v for n, v in out if n == b"impersonate-group"] == [b"devs", b"ops"]
    assert [v for n, v in out if n == b"impersonate-uid"] == [b"u-1"]
    assert [v for n, v in out if n == b"impersonate-extra-accesspoint.io%2frequest-id".lower()
            or n.lower() == b"impersonate-extra-accesspoint.io%2frequest-id"] == [b"rid-1"]
    assert [v for n, v in out if n == b"x-forwarded-for"] == [b"127.0.0.1"]
    assert [v for n, v in out if n == b"x-stream-protocol-version"] == [b"v5.channel.k8s.io", b"v4.channel.k8s.io"]
    assert [v for n, v in out if n == b"content-length"] == [b"5"]


def test_upgrade_requests_keep_connection_upgrade():
    out = hdrs.upstream_request_headers(
        CALLER, host=b"h", token=None, impersonate=hdrs.Impersonate("a", ()), request_id="r",
        client_ip="", upgrade=b"SPDY/3.1")
    assert (b"connection", b"Upgrade") in out and (b"upgrade", b"SPDY/3.1") in out
    assert [n for n, _ in out].count(b"upgrade") == 1


def test_extra_key_escaping_matches_client_go():
    assert hdrs.escape_extra_key("accesspoint.io/request-id") == "accesspoint.io%2Frequest-id"
    assert hdrs.escape_extra_key("a%b c") == "a%25b%20c"
    assert hdrs.unescape_extra_key("Accesspoint.io%2fRequest-Id") == "accesspoint.io/request-id"


def test_requested_impersonation_parsing():
    assert hdrs.requested_impersonation([(b"accept", b"*/*")]) is None
    imp = hdrs.requested_impersonation([
        (b"impersonate-user", b"system:serviceaccount:ns1:sa"), (b"impersonate-group", b"g1"),
        (b"impersonate-group", b"g2"), (b"impersonate-extra-scopes", b"view"), (b"impersonate-uid", b"42")])
    assert imp.checks() == [("serviceaccounts", "sa", "ns1"), ("groups", "g1", ""), ("groups", "g2", ""),
                            ("userextras/scopes", "view", ""), ("uids", "42", "")]
    assert imp.effective_groups() == ("g1", "g2", "system:serviceaccounts", "system:serviceaccounts:ns1",
                                      "system:authenticated")
    with pytest.raises(status.StatusError) as info:
        hdrs.requested_impersonation([(b"impersonate-group", b"g1")])
    assert info.value.code == 400
    with pytest.raises(status.StatusError):
        hdrs.requested_impersonation([(b"impersonate-user", b"a"), (b"impersonate-user", b"b")])
    with pytest.raises(status.StatusError):   # the gateway's provenance keys cannot be spoofed
        hdrs.requested_impersonation([(b"impersonate-user", b"a"),
                                      (b"impersonate-extra-accesspoint.io%2frequest-id", b"x")])


def test_downstream_response_headers_drop_hop_by_hop():
    out = hdrs.downstream_response_headers([
        (b"content-type", b"application/json"), (b"transfer-encoding", b"chunked"),
        (b"connection", b"close, x-hop"), (b"x-hop", b"1"), (b"audit-id", b"a")])
    assert out == [(b"content-type", b"application/json"), (b"audit-id", b"a")]


# -- splice with in-memory pipes ------------------------------------------------------------------------

class Pipe:
    """One direction of an in-memory transport with half-close."""

    def __init__(self):
        self.queue: asyncio.Queue = asyncio.Queue()
        self.eof = False
        self.closed = False
        self.received = bytearray()

    async def read(self, limit: int = -1) -> bytes:
        return await self.queue.get()

    async def write(self, data: bytes) -> None:
        assert not self.eof
        self.received += data
        await self.queue.put(data)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True
        self.queue.put_nowait(b"")

    def close(self) -> None:
        self.closed = True
        if not self.eof:
            self.write_eof()


def test_splice_half_close_keeps_the_other_direction_open():
    async def body():
        client_in, client_out = Pipe(), Pipe()     # client → gateway, gateway → client
        up_in, up_out = Pipe(), Pipe()             # upstream → gateway, gateway → upstream
        task = asyncio.ensure_future(splice(client_in, client_out, up_in, up_out))
        await client_in.queue.put(b"stdin-data")
        await client_in.queue.put(b"")             # the client half-closes
        assert await up_out.queue.get() == b"stdin-data"
        assert await up_out.queue.get() == b""     # EOF passed on as write_eof
        assert up_out.eof and not up_out.closed or True
        # the other direction still flows
        await up_in.queue.put(b"output after stdin closed")
        assert await client_out.queue.get() == b"output after stdin closed"
        await up_in.queue.put(b"")
        stats = await task
        assert await client_out.queue.get() == b""
        assert (stats.bytes_in, stats.bytes_out) == (10, 25)
        assert stats.ended_by == "client"
        assert stats.session_end >= stats.session_start

    run(body)


# -- configuration ----------------------------------------------------------------------------------------

def test_config_env_and_flags(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    GatewayConfig.add_arguments(parser)
    ns = parser.parse_args(["--workers", "3", "--head-timeout", "2.5"])
    config = GatewayConfig.from_namespace(ns, environ={"ACCESSPOINT_WORKERS": "7", "ACCESSPOINT_LISTEN": "127.0.0.1:1",
                                                       "ACCESSPOINT_UPSTREAM_POOL_SIZE": "4"})
    assert config.workers == 3 and config.head_timeout == 2.5
    assert config.listen == "127.0.0.1:1" and config.upstream_pool_size == 4
    assert config.upstream_dial_timeout == 5.0 and config.drain_grace == 30.0
    assert config.admin_address(2) == ("127.0.0.1", 9445)
    with pytest.raises(ConfigError) as info:
        GatewayConfig.from_namespace(parser.parse_args([]), environ={"ACCESSPOINT_WORKERS": "many"})
    assert "ACCESSPOINT_WORKERS" in str(info.value)


def test_config_validation_lists_every_problem():
    with pytest.raises(ConfigError) as info:
        GatewayConfig(listen="nope", workers=0, head_timeout=0).validate()
    text = str(info.value)
    for needle in ("--listen", "--tls-cert", "--snapshot is required", "--workers", "--head-timeout",
                   "--audit-spool", "--secrets-dir"):
        assert needle in text, needle


def test_cli_help_lists_gateway(capsys):
    from dataplane.cli import main

    with pytest.raises(SystemExit):
        main(["gateway", "--help"])
    out = capsys.readouterr().out
    assert "--client-ca" in out and "ACCESSPOINT_HEAD_TIMEOUT" in out


# -- upstream connection, sans sockets -----------------------------------------------------------------

class FakeTransport:
    def __init__(self):
        self.written = bytearray()
        self.closed = False
        self.paused = False

    def write(self, data):
        self.written += data

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True

    abort = close

    def pause_reading(self):
        self.paused = True

    def resume_reading(self):
        self.paused = False

    def get_extra_info(self, name, default=None):
        return default


def test_upstream_response_head_arriving_before_read_head_is_awaited():
    from dataplane.upstream import UpstreamConnection

    async def body():
        conn = UpstreamConnection(("alpha", 1), asyncio.get_running_loop())
        transport = FakeTransport()
        conn.connection_made(transport)
        conn.begin("GET", b"GET /version HTTP/1.1\r\nhost: h\r\n\r\n")
        conn.request_complete = True
        # interim 100, then the final response, all in one read, before anyone awaits the head
        conn.data_received(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhel")
        head = await conn.read_head()
        assert head.status == 200
        conn.data_received(b"lo")
        assert await conn.read_body() == b"hel" and await conn.read_body() == b"lo"
        assert await conn.read_body() == b""
        assert conn.reusable
        # a chunked response to HEAD has no body
        conn.begin("HEAD", b"HEAD / HTTP/1.1\r\nhost: h\r\n\r\n")
        conn.data_received(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        assert (await conn.read_head()).status == 200 and await conn.read_body() == b""

    run(body)


def test_upstream_body_backpressure_pauses_reading():
    from dataplane.flow import HIGH_WATER
    from dataplane.upstream import UpstreamConnection

    async def body():
        conn = UpstreamConnection(("alpha", 1), asyncio.get_running_loop())
        transport = FakeTransport()
        conn.connection_made(transport)
        conn.begin("GET", b"GET /big HTTP/1.1\r\nhost: h\r\n\r\n")
        conn.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (HIGH_WATER * 4))
        await conn.read_head()
        for _ in range(3):
            conn.data_received(b"x" * (HIGH_WATER // 2))
        assert transport.paused                    # nobody took the body: reading stops
        while conn._body.buffered:
            await conn.read_body()
        assert not transport.paused                # taken: reading resumes

    run(body)
