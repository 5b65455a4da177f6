"""The WebSocket channel codec and the fake container's commands."""
from __future__ import annotations

import asyncio
import io
import tarfile

import pytest

from tests.fakekube import wschannel
from tests.fakekube.container import CommandNotFound, FakeContainer, ProcessIO, Stdin
from tests.fakekube.container import SessionRecord
from tests.fakekube.remotecommand import _ResizeDecoder, exit_status


# -- channel protocol ----------------------------------------------------------------------------

def test_binary_channel_codec_round_trip() -> None:
    codec = wschannel.ChannelCodec(wschannel.V5)
    assert codec.encode(wschannel.STDOUT, b"hi") == b"\x01hi"
    assert codec.decode(b"\x00input") == (wschannel.STDIN, b"input")
    assert codec.decode(b"\xff\x00") == (wschannel.CLOSE, b"\x00")
    assert codec.structured_status and codec.close_signal


def test_base64_channel_codec_round_trip() -> None:
    codec = wschannel.ChannelCodec(wschannel.BASE64)
    assert codec.encode(wschannel.STDERR, b"oops") == "2b29wcw=="
    assert codec.decode("0aGk=") == (wschannel.STDIN, b"hi")
    assert not codec.structured_status


@pytest.mark.parametrize("protocol,message", [
    (wschannel.V4, b""), (wschannel.V4, "1abc"), (wschannel.BASE64, b"\x01x"), (wschannel.BASE64, "x"),
    (wschannel.BASE64, "1!!notbase64"),
])
def test_malformed_channel_messages(protocol: str, message: bytes | str) -> None:
    with pytest.raises(wschannel.ChannelProtocolError):
        wschannel.ChannelCodec(protocol).decode(message)


def test_negotiation_follows_the_client_order() -> None:
    assert wschannel.negotiate(["v5.channel.k8s.io"], wschannel.EXEC_PROTOCOLS) == wschannel.V5
    assert wschannel.negotiate(["x", "v4.channel.k8s.io", "v5.channel.k8s.io"], wschannel.EXEC_PROTOCOLS) == wschannel.V4
    assert wschannel.negotiate(["v9.channel.k8s.io"], wschannel.EXEC_PROTOCOLS) is None


def test_resize_events_split_and_back_to_back() -> None:
    record = SessionRecord("exec", "default", "web-0", "alice", "spdy", "v4.channel.k8s.io")
    decoder = _ResizeDecoder(record)
    decoder.feed(b'{"Width":80,"Hei')              # SPDY: a json.Encoder stream, split anywhere
    decoder.feed(b'ght":24}\n{"Width":100,"Height":40}\n')
    assert record.resizes == [(80, 24), (100, 40)]


def test_exit_status_bodies() -> None:
    assert exit_status(["true"], 0) == {"metadata": {}, "status": "Success"}
    failure = exit_status(["sh", "-c", "exit 7"], 7)
    assert failure["reason"] == "NonZeroExitCode"
    assert failure["details"] == {"causes": [{"reason": "ExitCode", "message": "7"}]}


# -- container -----------------------------------------------------------------------------------

class Captured:
    def __init__(self, stdin: bytes | None = None):
        self.out, self.err = bytearray(), bytearray()
        self.stdin: Stdin | None = None
        if stdin is not None:
            self.stdin = Stdin()
            self.stdin.feed(stdin)
            self.stdin.feed_eof()

    async def _out(self, data: bytes) -> None:
        self.out += data

    async def _err(self, data: bytes) -> None:
        self.err += data

    def io(self) -> ProcessIO:
        return ProcessIO(self.stdin, self._out, self._err)


def run(container: FakeContainer, argv: list[str], stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
    cap = Captured(stdin)
    code = asyncio.run(container.exec(argv, cap.io()))
    return code, bytes(cap.out), bytes(cap.err)


@pytest.fixture
def box() -> FakeContainer:
    return FakeContainer("web-0", "app")


def test_simple_commands(box: FakeContainer) -> None:
    assert run(box, ["echo", "hi", "there"]) == (0, b"hi there\n", b"")
    assert run(box, ["echo", "-n", "x"]) == (0, b"x", b"")
    assert run(box, ["cat", "/etc/hostname"]) == (0, b"web-0\n", b"")
    assert run(box, ["cat"], stdin=b"piped") == (0, b"piped", b"")
    assert run(box, ["cat", "/nope"]) == (1, b"", b"cat: /nope: No such file or directory\n")
    assert run(box, ["hostname"]) == (0, b"web-0\n", b"")
    assert run(box, ["true"])[0] == 0 and run(box, ["false"])[0] == 1
    assert run(box, ["wc", "-c"], stdin=b"12345") == (0, b"5\n", b"")
    assert run(box, ["ls", "/app"]) == (0, b"hello.txt\n", b"")
    assert b"hello.txt" in run(box, ["ls", "-la", "/app"])[1]
    assert run(box, ["ls", "/missing"])[0] == 2
    assert b"HOSTNAME=web-0\n" in run(box, ["env"])[1]
    assert run(box, ["test", "-d", "/app"])[0] == 0 and run(box, ["test", "-d", "/app/hello.txt"])[0] == 1


def test_shell(box: FakeContainer) -> None:
    assert run(box, ["sh", "-c", "echo a; echo b && exit 4; echo never"]) == (4, b"a\nb\n", b"")
    assert run(box, ["sh", "-c", "false || echo rescued"]) == (0, b"rescued\n", b"")
    assert run(box, ["sh", "-c", "cat /app/hello.txt | wc -c"]) == (0, b"30\n", b"")
    assert run(box, ["sh", "-c", "nosuch"]) == (127, b"", b"sh: nosuch: not found\n")
    assert run(box, ["sh", "-c", "exit 300"])[0] == 300 & 0xFF


def test_unknown_binary_fails_to_start(box: FakeContainer) -> None:
    with pytest.raises(CommandNotFound, match=r'exec: "nosuch": executable file not found in \$PATH'):
        run(box, ["nosuch"])


def test_sleep_honours_cancellation(box: FakeContainer) -> None:
    async def scenario() -> None:
        task = asyncio.create_task(box.exec(["sleep", "3600"], Captured().io()))
        await asyncio.sleep(0)                 # let it start; not a synchronisation wait
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    asyncio.run(scenario())


def test_tar_round_trip_between_containers(box: FakeContainer) -> None:
    box.fs.write("/data/dir/a.bin", bytes(range(256)) * 100)
    box.fs.write("/data/dir/sub/b.txt", b"bee\n")
    code, archive, err = run(box, ["tar", "cf", "-", "/data/dir"])
    assert code == 0 and err == b"tar: Removing leading `/' from member names\n"
    names = tarfile.open(fileobj=io.BytesIO(archive)).getnames()
    assert names == ["data/dir", "data/dir/a.bin", "data/dir/sub", "data/dir/sub/b.txt"]

    other = FakeContainer("web-1", "app")
    assert run(other, ["tar", "--no-same-permissions", "--no-same-owner", "-xmf", "-", "-C", "/tmp"],
               stdin=archive) == (0, b"", b"")
    assert other.fs.files["/tmp/data/dir/a.bin"] == bytes(range(256)) * 100
    assert other.fs.files["/tmp/data/dir/sub/b.txt"] == b"bee\n"


def test_tar_errors(box: FakeContainer) -> None:
    code, _, err = run(box, ["tar", "cf", "-", "/missing"])
    assert code == 2 and b"Cannot stat: No such file or directory" in err
    assert run(box, ["tar", "-xmf", "-", "-C", "/nodir"], stdin=b"")[0] == 2
    assert run(box, ["tar", "-xmf", "-", "-C", "/tmp"], stdin=b"not a tar" * 100)[0] == 2


def test_attach_echoes_stdin(box: FakeContainer) -> None:
    cap = Captured(stdin=b"typed\n")
    assert asyncio.run(box.attach(cap.io())) == 0
    assert bytes(cap.out) == b"typed\n"
