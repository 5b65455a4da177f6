"""exec / attach / port-forward for the fake API server, as the kubelet behind a real one does it.

Entry point: `serve_upgrade(request, initial, reader, writer, store)`, called by the HTTP server
after authentication and authorisation. It validates the pod and container (answering Kubernetes
Status errors like the API server), negotiates the streaming protocol, writes the 101 and runs the
session to the end:

- WebSocket (GET): exec/attach over v5/v4/v3/v2/v1 or base64 channel protocols;
  port-forward over SPDY/3.1 tunnelled in WebSocket binary messages (SPDY/3.1+portforward.k8s.io).
- SPDY/3.1 (POST): exec/attach with X-Stream-Protocol-Version v4..v1 (like the kubelet, v5 is
  WebSocket-only; kubectl treats them the same over SPDY), port-forward with portforward.k8s.io.

Processes run in `container.FakeContainer`; port-forward connects every port to an echo service.
Each session is appended to `runtime.sessions` (see container.ContainerRuntime).
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from email.utils import formatdate
from typing import Any, Awaitable, Callable

from . import spdy, wschannel
from .container import (DEFAULT_RUNTIME, CommandNotFound, ContainerRuntime, FakeContainer,
                        ProcessIO, SessionRecord, Stdin)
from .upgrade_request import UpgradeRequest

SPDY_EXEC_PROTOCOLS = (wschannel.V4, wschannel.V3, wschannel.V2, wschannel.V1)
PORTFORWARD_PROTOCOL = "portforward.k8s.io"
STREAM_CREATION_TIMEOUT = 30.0      # the kubelet's default
CLIENT_CLOSE_GRACE = 10.0           # after the status, how long the client gets to hang up


# -- HTTP answers ---------------------------------------------------------------------------------

def status_error(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason}
    if details:
        body["details"] = details
    body["code"] = code
    return body


_REASONS = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 500: "Internal Server Error"}


async def _respond(writer: asyncio.StreamWriter, code: int, body: bytes, content_type: str,
                   extra: list[tuple[str, str]] = ()) -> None:
    head = [f"HTTP/1.1 {code} {_REASONS.get(code, 'Error')}", f"Content-Type: {content_type}",
            *(f"{k}: {v}" for k, v in extra), f"Date: {formatdate(usegmt=True)}",
            f"Content-Length: {len(body)}", "Connection: close"]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    await writer.drain()


async def _respond_status(writer: asyncio.StreamWriter, status: dict) -> None:
    await _respond(writer, status["code"], json.dumps(status).encode(), "application/json")


# -- exit statuses (the kubelet's, as the v4/v5 error channel carries them) ---------------------------

SUCCESS = {"metadata": {}, "status": "Success"}


def exit_status(argv: list[str], code: int) -> dict:
    if code == 0:
        return SUCCESS
    return {"metadata": {}, "status": "Failure",
            "message": "command terminated with non-zero exit code: error executing command "
                       f"[{' '.join(argv)}], exit code {code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


def start_failure_status(request: UpgradeRequest, container: str, exc: CommandNotFound) -> dict:
    # containerd + runc wording for a missing binary; the exec id is any 64-hex string.
    exec_id = hashlib.sha256(f"{request.pod}/{container}/{exc.command}".encode()).hexdigest()
    cause = ("error executing command in container: failed to exec in container: failed to start "
             f'exec "{exec_id}": OCI runtime exec failed: exec failed: unable to start container '
             f"process: {exc}: unknown")
    return {"metadata": {}, "status": "Failure", "message": f"Internal error occurred: {cause}",
            "reason": "InternalError", "details": {"causes": [{"message": cause}]}, "code": 500}


def _flag(request: UpgradeRequest, name: str) -> bool:
    return (request.query.get(name) or ["false"])[0].lower() in ("1", "true")


# -- entry point ----------------------------------------------------------------------------------

async def serve_upgrade(request: UpgradeRequest, initial: bytes, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter, store: Any) -> None:
    runtime: ContainerRuntime = getattr(store, "fake_runtime", None) or DEFAULT_RUNTIME
    try:
        await _serve(request, initial, reader, writer, store, runtime)
    except (ConnectionError, asyncio.IncompleteReadError, spdy.SpdyProtocolError,
            wschannel.ChannelProtocolError):
        pass                    # the client broke or dropped the connection: nothing to answer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def _serve(request: UpgradeRequest, initial: bytes, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, store: Any, runtime: ContainerRuntime) -> None:
    pod = store.get_pod(request.namespace, request.pod)
    if pod is None:
        await _respond_status(writer, status_error(404, "NotFound", f'pods "{request.pod}" not found',
                                                   {"name": request.pod, "kind": "pods"}))
        return
    container_name = ""
    if request.kind in ("exec", "attach"):
        names = [c["name"] for c in pod.get("spec", {}).get("containers", [])]
        container_name = (request.query.get("container") or [""])[0]
        if not container_name:
            if len(names) != 1:
                await _respond_status(writer, status_error(400, "BadRequest",
                    f"a container name must be specified for pod {request.pod}, choose one of: "
                    f"[{' '.join(names)}]"))
                return
            container_name = names[0]
        if container_name not in names:
            await _respond_status(writer, status_error(400, "BadRequest",
                f"container {container_name} is not valid for pod {request.pod}"))
            return
        if request.kind == "exec" and not request.query.get("command"):
            await _respond_status(writer, status_error(400, "BadRequest", "you must specify at least 1 command"))
            return
        if not any(_flag(request, s) for s in ("stdin", "stdout", "stderr")):
            await _respond_status(writer, status_error(400, "BadRequest",
                "you must specify at least 1 of stdin, stdout, stderr"))
            return

    upgrade = (request.header(b"upgrade") or b"").decode("latin-1").strip().lower()
    record = SessionRecord(kind=request.kind, namespace=request.namespace, pod=request.pod,
                           user=request.user, transport="", protocol="", container=container_name,
                           command=list(request.query.get("command", [])),
                           tty=_flag(request, "tty"), stdin=_flag(request, "stdin"))
    if request.method == "GET" and upgrade == "websocket":
        await _serve_websocket(request, initial, reader, writer, runtime, record)
    elif request.method == "POST" and upgrade == "spdy/3.1":
        await _serve_spdy(request, initial, reader, writer, runtime, record)
    else:
        await _respond_status(writer, status_error(400, "BadRequest", "Upgrade request required"))


async def _refuse_protocol(writer: asyncio.StreamWriter, offered: list[str], accepted: tuple[str, ...],
                           header: str) -> None:
    # What httpstream.Handshake / wsstream answer: a plain-text 403/400, not a Status.
    message = (f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
               f"server accepts {list(accepted)}\n")
    await _respond(writer, 403, message.encode(), "text/plain; charset=utf-8",
                   [(header, p) for p in accepted])


async def _serve_websocket(request: UpgradeRequest, initial: bytes, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter, runtime: ContainerRuntime,
                           record: SessionRecord) -> None:
    offered = wschannel.offered_protocols(request)
    supported = (wschannel.SPDY_TUNNEL,) if request.kind == "portforward" else wschannel.EXEC_PROTOCOLS
    protocol = wschannel.negotiate(offered, supported)
    if protocol is None:
        await _refuse_protocol(writer, offered, supported, "Sec-WebSocket-Protocol")
        return
    try:
        ws = wschannel.WebSocketConnection(request, initial, reader, writer)
    except wschannel.ChannelProtocolError as exc:
        await _respond_status(writer, status_error(400, "BadRequest", str(exc)))
        return
    await ws.accept(protocol)
    record.protocol = protocol
    runtime.sessions.append(record)
    try:
        if request.kind == "portforward":
            record.transport = "websocket+spdy"
            await _PortForward(_WsBytes(ws), record).run()
            await ws.close()
        else:
            record.transport = "websocket"
            container = runtime.container(request.namespace, request.pod, record.container)
            await _WsExec(ws, wschannel.ChannelCodec(protocol), container, request, record).run()
    finally:
        record.done.set()


async def _serve_spdy(request: UpgradeRequest, initial: bytes, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter, runtime: ContainerRuntime,
                      record: SessionRecord) -> None:
    offered = [v.decode("latin-1").strip() for v in request.header_values(b"x-stream-protocol-version")]
    supported = (PORTFORWARD_PROTOCOL,) if request.kind == "portforward" else SPDY_EXEC_PROTOCOLS
    if not offered:
        await _respond(writer, 400, b"unable to upgrade: X-Stream-Protocol-Version is required\n",
                       "text/plain; charset=utf-8")
        return
    protocol = wschannel.negotiate(offered, supported)
    if protocol is None:
        await _refuse_protocol(writer, offered, supported, "X-Accepted-Stream-Protocol-Versions")
        return
    writer.write((f"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                  f"Date: {formatdate(usegmt=True)}\r\nUpgrade: SPDY/3.1\r\n"
                  f"X-Stream-Protocol-Version: {protocol}\r\n\r\n").encode())
    await writer.drain()
    record.protocol, record.transport = protocol, "spdy"
    runtime.sessions.append(record)
    transport = _RawBytes(reader, writer, initial)
    try:
        if request.kind == "portforward":
            await _PortForward(transport, record).run()
        else:
            container = runtime.container(request.namespace, request.pod, record.container)
            await _SpdyExec(transport, protocol, container, request, record).run()
    finally:
        record.done.set()


# -- running a process against a transport ----------------------------------------------------------

def _status_for_protocol(status: dict, structured: bool) -> bytes:
    """v4+ carry the Status JSON; v1-v3 carry only the error text, and nothing on success."""
    if structured:
        return json.dumps(status, separators=(",", ":")).encode()
    return b"" if status["status"] == "Success" else status["message"].encode()


async def _run_process(container: FakeContainer, request: UpgradeRequest, record: SessionRecord,
                       stdin: Stdin | None, out: Callable[[int, bytes], Awaitable[None]],
                       client_gone: asyncio.Event) -> dict | None:
    """Run the exec'd command (or the attached main process); None if the client left first."""
    async def stdout(data: bytes) -> None:
        if record.tty:
            data = data.replace(b"\n", b"\r\n")      # what the pty's onlcr does
        record.bytes_out += len(data)
        await out(wschannel.STDOUT, data)

    async def stderr(data: bytes) -> None:
        if record.tty:
            await stdout(data)                       # a tty has a single output stream
        else:
            record.bytes_out += len(data)
            await out(wschannel.STDERR, data)

    pio = ProcessIO(stdin, stdout, stderr, record.tty, record.resizes)

    async def run() -> dict:
        try:
            if request.kind == "attach":
                code = await container.attach(pio)
            else:
                code = await container.exec(record.command, pio)
        except CommandNotFound as exc:
            record.exit_code = 127
            return start_failure_status(request, record.container, exc)
        record.exit_code = code
        return exit_status(record.command, code)

    process = asyncio.create_task(run())
    gone = asyncio.create_task(client_gone.wait())
    try:
        await asyncio.wait({process, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not process.done():
            process.cancel()                          # the client hung up: kill the process
    with contextlib.suppress(asyncio.CancelledError):
        await process
    if process.cancelled():
        return None
    record.status = process.result()
    return record.status


class _ResizeDecoder:
    """Resize events: JSON objects {"Width":..,"Height":..}, one per message or back to back."""

    def __init__(self, record: SessionRecord):
        self._buf = ""
        self._record = record

    def feed(self, data: bytes) -> None:
        self._buf += data.decode("utf-8", "replace")
        decoder = json.JSONDecoder()
        while self._buf.strip():
            try:
                obj, end = decoder.raw_decode(self._buf.lstrip())
            except json.JSONDecodeError:
                return                                 # incomplete: wait for more
            self._buf = self._buf.lstrip()[end:]
            if isinstance(obj, dict):
                self._record.resizes.append((int(obj.get("Width", 0)), int(obj.get("Height", 0))))


def _tty_stdin_filter(stdin: Stdin) -> Callable[[bytes], None]:
    """In tty mode the pty's line discipline turns CR into NL (icrnl) and ^D into end of input."""
    def feed(data: bytes) -> None:
        eof = data.find(b"\x04")
        if eof >= 0:
            data = data[:eof]
        stdin.feed(data.replace(b"\r", b"\n"))
        if eof >= 0:
            stdin.feed_eof()
    return feed


class _WsExec:
    def __init__(self, ws: wschannel.WebSocketConnection, codec: wschannel.ChannelCodec,
                 container: FakeContainer, request: UpgradeRequest, record: SessionRecord):
        self.ws, self.codec, self.container, self.request, self.record = ws, codec, container, request, record
        self.stdin = Stdin() if record.stdin else None
        self.feed_stdin = (_tty_stdin_filter(self.stdin) if record.tty and self.stdin else
                           self.stdin.feed if self.stdin else None)
        self.resizes = _ResizeDecoder(record)
        self.client_gone = asyncio.Event()

    async def _out(self, channel: int, data: bytes) -> None:
        if data:
            await self.ws.send(self.codec.encode(channel, data))

    async def _read_loop(self) -> None:
        try:
            while (message := await self.ws.recv()) is not None:
                channel, payload = self.codec.decode(message)
                if channel == wschannel.STDIN and self.feed_stdin is not None:
                    self.record.bytes_in += len(payload)
                    self.feed_stdin(payload)
                elif channel == wschannel.RESIZE:
                    self.resizes.feed(payload)
                elif (channel == wschannel.CLOSE and self.codec.close_signal
                      and payload[:1] == bytes([wschannel.STDIN]) and self.stdin is not None):
                    self.stdin.feed_eof()
        finally:
            self.client_gone.set()
            if self.stdin is not None:
                self.stdin.feed_eof()

    async def run(self) -> None:
        reader = asyncio.create_task(self._read_loop())
        try:
            status = await _run_process(self.container, self.request, self.record, self.stdin,
                                        self._out, self.client_gone)
            if status is not None:
                body = _status_for_protocol(status, self.codec.structured_status)
                if body:
                    await self.ws.send(self.codec.encode(wschannel.ERROR, body))
                await self.ws.send_close()
                # the read loop ends when the client answers the close (or hangs up)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(CLIENT_CLOSE_GRACE):
                        await asyncio.shield(reader)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, wschannel.ChannelProtocolError):
                await reader


# -- SPDY: byte transports and the asyncio driver around spdy.ServerSession --------------------------

class _RawBytes:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, initial: bytes):
        self._reader, self._writer, self._initial = reader, writer, initial

    async def recv(self) -> bytes:
        if self._initial:
            data, self._initial = self._initial, b""
            return data
        return await self._reader.read(65536)

    async def send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()


class _WsBytes:
    """SPDY tunnelled through WebSocket: frames are split across binary messages arbitrarily."""

    def __init__(self, ws: wschannel.WebSocketConnection):
        self._ws = ws

    async def recv(self) -> bytes:
        while True:
            message = await self._ws.recv()
            if message is None:
                return b""
            if not isinstance(message, bytes):
                raise wschannel.ChannelProtocolError("text message in a SPDY tunnel")
            if message:
                return message

    async def send(self, data: bytes) -> None:
        await self._ws.send(data)


class _SpdyDriver:
    """Reads frames, dispatches session events to a handler, flushes the session's output."""

    def __init__(self, transport: _RawBytes | _WsBytes, on_event: Callable[[spdy.Event], None]):
        self.session = spdy.ServerSession()
        self._transport = transport
        self._on_event = on_event
        self._progress = asyncio.Condition()
        self.closed = asyncio.Event()        # client sent GOAWAY or the connection ended
        self._flushes: set[asyncio.Task] = set()

    async def flush(self) -> None:
        data = self.session.data_to_send()
        if data:
            await self._transport.send(data)

    async def read_loop(self) -> None:
        try:
            while data := await self._transport.recv():
                for event in self.session.receive_data(data):
                    if isinstance(event, spdy.ConnectionClosed):
                        self.closed.set()
                    self._on_event(event)
                await self.flush()
                async with self._progress:
                    self._progress.notify_all()
        except spdy.SpdyProtocolError:
            with contextlib.suppress(ConnectionError):
                await self.flush()                   # the GOAWAY(PROTOCOL_ERROR)
        finally:
            self.closed.set()
            async with self._progress:
                self._progress.notify_all()

    async def write(self, stream_id: int, data: bytes, fin: bool = False) -> None:
        """Send, then wait while the peer's window holds more than one window of it back."""
        self.session.send_data(stream_id, data, fin)
        await self.flush()
        async with self._progress:
            await self._progress.wait_for(
                lambda: self.closed.is_set() or self.session.pending_bytes(stream_id) < spdy.DEFAULT_WINDOW)

    def consumed(self, stream_id: int, n: int) -> None:
        """Reopen the window now: a peer that does flow control may be waiting for it."""
        self.session.consumed(stream_id, n)
        task = asyncio.ensure_future(self._flush_quietly())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush_quietly(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.flush()


class _SpdyExec:
    def __init__(self, transport: _RawBytes | _WsBytes, protocol: str, container: FakeContainer,
                 request: UpgradeRequest, record: SessionRecord):
        self.driver = _SpdyDriver(transport, self._on_event)
        self.protocol, self.container, self.request, self.record = protocol, container, request, record
        self.streams: dict[str, int] = {}
        self.by_id: dict[int, str] = {}
        self.expected = {"error"}
        if record.stdin:
            self.expected.add("stdin")
        if _flag(request, "stdout"):
            self.expected.add("stdout")
        if _flag(request, "stderr") and not record.tty:
            self.expected.add("stderr")
        if record.tty and protocol in (wschannel.V4, wschannel.V3):
            self.expected.add("resize")
        self.ready = asyncio.Event()
        self.stdin = Stdin(self._stdin_consumed) if record.stdin else None
        self.feed_stdin = (_tty_stdin_filter(self.stdin) if record.tty and self.stdin else
                           self.stdin.feed if self.stdin else None)
        self.resizes = _ResizeDecoder(record)

    def _stdin_consumed(self, n: int) -> None:
        if "stdin" in self.streams:
            self.driver.consumed(self.streams["stdin"], n)

    def _on_event(self, event: spdy.Event) -> None:
        match event:
            case spdy.StreamOpened(sid, headers, fin):
                kind = (headers.get("streamtype") or [""])[0]
                if kind not in self.expected or kind in self.streams:
                    self.driver.session.reset(sid, spdy.RstStatus.REFUSED_STREAM)
                    return
                self.driver.session.reply(sid)
                self.streams[kind], self.by_id[sid] = sid, kind
                if fin and kind == "stdin" and self.stdin is not None:
                    self.stdin.feed_eof()
                if self.expected <= self.streams.keys():
                    self.ready.set()
            case spdy.DataReceived(sid, data):
                kind = self.by_id.get(sid)
                if kind == "stdin" and self.feed_stdin is not None:
                    self.record.bytes_in += len(data)
                    self.feed_stdin(data)           # window reopened as the process reads it
                    return
                if kind == "resize":
                    self.resizes.feed(data)
                self.driver.consumed(sid, len(data))
            case spdy.StreamEnded(sid) | spdy.StreamReset(sid, _):
                if self.by_id.get(sid) == "stdin" and self.stdin is not None:
                    self.stdin.feed_eof()

    async def _out(self, channel: int, data: bytes) -> None:
        name = {wschannel.STDOUT: "stdout", wschannel.STDERR: "stderr"}[channel]
        if data and name in self.streams:
            await self.driver.write(self.streams[name], data)

    async def run(self) -> None:
        reader = asyncio.create_task(self.driver.read_loop())
        try:
            try:
                async with asyncio.timeout(STREAM_CREATION_TIMEOUT):
                    await _first(self.ready.wait(), self.driver.closed.wait())
            except TimeoutError:
                return
            if not self.ready.is_set():
                return
            status = await _run_process(self.container, self.request, self.record, self.stdin,
                                        self._out, self.driver.closed)
            if status is None:
                return
            for name in ("stdout", "stderr"):
                if name in self.streams:
                    self.driver.session.end_stream(self.streams[name])
            body = _status_for_protocol(status, self.protocol == wschannel.V4)
            await self.driver.write(self.streams["error"], body, fin=True)
            # The client closes the connection once it has read the error stream to its end.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLIENT_CLOSE_GRACE):
                    await self.driver.closed.wait()
            self.driver.session.close()
            with contextlib.suppress(ConnectionError):
                await self.driver.flush()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


async def _first(*aws: Awaitable[Any]) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


class _PortForward:
    """kubelet port-forward: streams come in (error, data) pairs sharing a requestid; each pair is
    one forwarded connection. Every port answers with an echo service."""

    def __init__(self, transport: _RawBytes | _WsBytes, record: SessionRecord):
        self.driver = _SpdyDriver(transport, self._on_event)
        self.record = record
        self.pairs: dict[str, dict[str, int]] = {}
        self.inputs: dict[int, Stdin] = {}
        self.tasks: set[asyncio.Task] = set()

    def _on_event(self, event: spdy.Event) -> None:
        session = self.driver.session
        match event:
            case spdy.StreamOpened(sid, headers, fin):
                kind = (headers.get("streamtype") or [""])[0]
                port = (headers.get("port") or [""])[0]
                request_id = (headers.get("requestid") or [str(sid)])[0]
                if kind not in ("error", "data"):
                    session.reset(sid, spdy.RstStatus.PROTOCOL_ERROR)
                    return
                session.reply(sid)
                if kind == "data":
                    self.inputs[sid] = Stdin(lambda n, sid=sid: self.driver.consumed(sid, n))
                    if fin:
                        self.inputs[sid].feed_eof()
                pair = self.pairs.setdefault(request_id, {})
                pair[kind] = sid
                if len(pair) == 2:
                    task = asyncio.create_task(self._forward(pair["error"], pair["data"], port))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
            case spdy.DataReceived(sid, data):
                if sid in self.inputs:
                    self.record.bytes_in += len(data)
                    self.inputs[sid].feed(data)
                else:
                    self.driver.consumed(sid, len(data))   # error stream: the client sends nothing
            case spdy.StreamEnded(sid) | spdy.StreamReset(sid, _):
                if sid in self.inputs:
                    self.inputs[sid].feed_eof()

    async def _forward(self, error_sid: int, data_sid: int, port_header: str) -> None:
        if not port_header.isdigit() or not 0 < int(port_header) < 65536:
            await self.driver.write(error_sid, f'invalid port header: "{port_header}"'.encode(), fin=True)
            self.driver.session.reset(data_sid)
            await self.driver.flush()
            return
        self.record.ports.append(int(port_header))
        source = self.inputs[data_sid]
        while chunk := await source.read():          # echo service
            self.record.bytes_out += len(chunk)
            await self.driver.write(data_sid, chunk)
        await self.driver.write(data_sid, b"", fin=True)
        await self.driver.write(error_sid, b"", fin=True)

    async def run(self) -> None:
        try:
            await self.driver.read_loop()             # port-forward lasts until the client leaves
        finally:
            for task in list(self.tasks):
                task.cancel()
            for task in list(self.tasks):
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await task
