"""serve_upgrade driven end to end by the real kubectl (WebSocket and SPDY)."""
from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path
from typing import Awaitable, Callable

import pytest

from tests.fakekube_stream_tests.kubeserver import DictStore, MiniApiServer, make_pod

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not on PATH")

EXEC_TRANSPORTS = {"websocket": {}, "spdy": {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}}
PF_TRANSPORTS = {"websocket": {}, "spdy": {"KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}}
EXPECTED = {"websocket": ("websocket", "v5.channel.k8s.io"), "spdy": ("spdy", "v4.channel.k8s.io")}


def with_server(tmp_path: Path, scenario: Callable[[MiniApiServer, DictStore], Awaitable[None]]) -> None:
    store = DictStore()
    store.add_pod(make_pod("web-0"))

    async def main() -> None:
        async with MiniApiServer(store, tmp_path) as server:
            await scenario(server, store)
    asyncio.run(main())


@pytest.mark.parametrize("transport", EXEC_TRANSPORTS)
def test_exec_echo(tmp_path: Path, transport: str) -> None:
    async def scenario(server: MiniApiServer, store: DictStore) -> None:
        code, out, err = await server.kubectl("exec", "web-0", "--", "echo", "hi", env=EXEC_TRANSPORTS[transport])
        assert (code, out, err) == (0, b"hi\n", b"")
        (session,) = store.fake_runtime.sessions
        await session.done.wait()
        assert (session.transport, session.protocol) == EXPECTED[transport]
        assert session.command == ["echo", "hi"] and session.container == "app" and not session.tty
        assert session.status == {"metadata": {}, "status": "Success"} and session.bytes_out == 3
        # a non-101 answer to the WebSocket attempt would have made kubectl fall back to SPDY
        assert [u.method for u in server.upgrades] == (["GET"] if transport == "websocket" else ["POST"])
    with_server(tmp_path, scenario)


@pytest.mark.parametrize("transport", EXEC_TRANSPORTS)
def test_exec_stdin_is_streamed_to_cat(tmp_path: Path, transport: str) -> None:
    payload = b"".join(b"line %d\n" % i for i in range(20_000))     # ~200 KB, several windows

    async def scenario(server: MiniApiServer, store: DictStore) -> None:
        code, out, err = await server.kubectl("exec", "-i", "web-0", "--", "cat", stdin=payload,
                                              env=EXEC_TRANSPORTS[transport])
        assert (code, err) == (0, b"") and out == payload
        (session,) = store.fake_runtime.sessions
        await session.done.wait()
        assert session.stdin and session.bytes_in == len(payload) == session.bytes_out
    with_server(tmp_path, scenario)


@pytest.mark.parametrize("transport", EXEC_TRANSPORTS)
def test_exec_non_zero_exit(tmp_path: Path, transport: str) -> None:
    async def scenario(server: MiniApiServer, store: DictStore) -> None:
        code, out, err = await server.kubectl("exec", "web-0", "--", "sh", "-c", "echo oops >&2; exit 3",
                                              env=EXEC_TRANSPORTS[transport])
        assert code == 3
        assert err.endswith(b"command terminated with exit code 3\n")
        (session,) = store.fake_runtime.sessions
        await session.done.wait()
        assert session.exit_code == 3 and session.status["reason"] == "NonZeroExitCode"
    with_server(tmp_path, scenario)


@pytest.mark.parametrize("transport", EXEC_TRANSPORTS)
def test_exec_unknown_command_is_an_internal_error(tmp_path: Path, transport: str) -> None:
    async def scenario(server: MiniApiServer, store: DictStore) -> None:
        code, _, err = await server.kubectl("exec", "web-0", "--", "nosuch", env=EXEC_TRANSPORTS[transport])
        assert code == 1
        assert err.startswith(b"error: Internal error occurred: error executing command in container: ")
        assert err.endswith(b'exec: "nosuch": executable file not found in $PATH: unknown\n')
    with_server(tmp_path, scenario)


def test_exec_unknown_container_is_a_bad_request(tmp_path: Path) -> None:
    async def scenario(server: MiniApiServer, store: DictStore) -> None:
        code, _, err = await server.kubectl("exec", "web-0", "-c", "nope", "--", "true")
        assert code == 1 and b"container nope is not valid for pod web-0" in err
        assert store.fake_runtime.sessions == []
    with_server(tmp_path, scenario)


@pytest.mark.parametrize("transport", EXEC_TRANSPORTS)
def test_cp_both_ways_is_byte_exact(tmp_path: Path, transport: str) -> None:
    blob = os.urandom(300_000)
    (tmp_path / "up.bin").write_bytes(blob)

    async def scenario(server: MiniApiServer, store: DictStore) -> None:
        env = EXEC_TRANSPORTS[transport]
        code, out, err = await server.kubectl("cp", str(tmp_path / "up.bin"), "web-0:/tmp/up.bin", env=env)
        assert (code, out, err) == (0, b"", b"")
        assert store.fake_runtime.container("default", "web-0", "app").fs.files["/tmp/up.bin"] == blob
        code, out, err = await server.kubectl("cp", "web-0:/tmp/up.bin", str(tmp_path / "down.bin"), env=env)
        assert code == 0 and err == b""
        assert (tmp_path / "down.bin").read_bytes() == blob
        commands = [s.command for s in store.fake_runtime.sessions]
        assert commands == [["test", "-d", "/tmp/up.bin"], ["tar", "-xmf", "-", "-C", "/tmp"],
                            ["tar", "cf", "-", "/tmp/up.bin"]]
    with_server(tmp_path, scenario)


@pytest.mark.parametrize("transport", PF_TRANSPORTS)
def test_port_forward_round_trip(tmp_path: Path, transport: str) -> None:
    async def scenario(server: MiniApiServer, store: DictStore) -> None:
        proc = await server.start_kubectl("port-forward", "pod/web-0", ":8080", env=PF_TRANSPORTS[transport])
        try:
            async with asyncio.timeout(30):
                line = await proc.stdout.readline()
                match = re.match(rb"Forwarding from 127\.0\.0\.1:(\d+) -> 8080", line)
                assert match, line
                for size in (1, 150_000):                   # two connections, two stream pairs
                    reader, writer = await asyncio.open_connection("127.0.0.1", int(match.group(1)))
                    data = os.urandom(size)
                    writer.write(data)
                    await writer.drain()
                    assert await reader.readexactly(size) == data
                    writer.close()
                    await writer.wait_closed()
        finally:
            proc.terminate()
            await proc.communicate()
        (session,) = store.fake_runtime.sessions
        await session.done.wait()
        assert session.transport == ("websocket+spdy" if transport == "websocket" else "spdy")
        assert session.ports == [8080, 8080] and session.bytes_in == session.bytes_out == 150_001
    with_server(tmp_path, scenario)
