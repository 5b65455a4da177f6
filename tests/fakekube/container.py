"""A deterministic in-process container: an in-memory filesystem and a handful of commands.

Enough of a Linux userland for kubectl exec / attach / cp: echo, cat, ls, env, hostname, sh -c
(sequences, &&, ||, pipes, exit N), true, false, sleep, wc -c, test, mkdir, tail -c, and tar as
kubectl cp drives it (`tar cf - PATH`, `tar [--no-same-permissions --no-same-owner] -xmf - [-C DIR]`).
Output and exit codes follow GNU coreutils / busybox closely enough for the client to not care.
"""
from __future__ import annotations

import asyncio
import io
import posixpath
import shlex
import tarfile
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

CHUNK = 32 * 1024
SEED_FILES = {
    "/etc/hostname": None,            # filled with the pod name
    "/etc/os-release": b'NAME="FakeOS"\nID=fakeos\nVERSION_ID=1.0\n',
    "/app/hello.txt": b"hello from the fake container\n",
}


class CommandNotFound(Exception):
    """The runtime could not start the process (exec of a missing binary)."""

    def __init__(self, command: str):
        super().__init__(f'exec: "{command}": executable file not found in $PATH')
        self.command = command


class Stdin:
    """The process's standard input: bytes pushed by the transport, read by the process."""

    def __init__(self, on_consumed: Callable[[int], None] | None = None):
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self._eof = False
        self._on_consumed = on_consumed

    def feed(self, data: bytes) -> None:
        if data and not self._eof:
            self._chunks.put_nowait(data)

    def feed_eof(self) -> None:
        if not self._eof:
            self._eof = True
            self._chunks.put_nowait(b"")

    async def read(self) -> bytes:
        """Next chunk, b"" at end of input (repeatable)."""
        chunk = await self._chunks.get()
        if not chunk:
            self._chunks.put_nowait(b"")   # keep EOF sticky for later readers
        elif self._on_consumed is not None:
            self._on_consumed(len(chunk))
        return chunk

    async def read_all(self) -> bytes:
        out = bytearray()
        while chunk := await self.read():
            out += chunk
        return bytes(out)


Write = Callable[[bytes], Awaitable[None]]


@dataclass
class ProcessIO:
    stdin: Stdin | None
    stdout: Write
    stderr: Write
    tty: bool = False
    resizes: list[tuple[int, int]] = field(default_factory=list)


class FakeFilesystem:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, int] = {}
        self.dirs: set[str] = {"/"}

    @staticmethod
    def norm(path: str, cwd: str = "/") -> str:
        return posixpath.normpath(posixpath.join(cwd, path)).replace("//", "/")

    def mkdir(self, path: str) -> None:
        path = self.norm(path)
        while path not in self.dirs:
            self.dirs.add(path)
            path = posixpath.dirname(path)

    def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        path = self.norm(path)
        self.mkdir(posixpath.dirname(path))
        self.files[path] = data
        self.modes[path] = mode

    def is_dir(self, path: str) -> bool:
        return self.norm(path) in self.dirs

    def exists(self, path: str) -> bool:
        path = self.norm(path)
        return path in self.dirs or path in self.files

    def children(self, path: str) -> list[str]:
        path = self.norm(path)
        prefix = path.rstrip("/") + "/"
        names = {p[len(prefix):].split("/")[0] for p in (*self.files, *self.dirs) if p.startswith(prefix) and p != path}
        return sorted(names)


class _Exit(Exception):
    def __init__(self, code: int):
        self.code = code


class FakeContainer:
    def __init__(self, pod: str, name: str, env: dict[str, str] | None = None):
        self.pod = pod
        self.name = name
        self.hostname = pod
        self.fs = FakeFilesystem()
        for path, data in SEED_FILES.items():
            self.fs.write(path, data if data is not None else f"{pod}\n".encode())
        self.fs.mkdir("/tmp")
        self.env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "HOSTNAME": pod, "HOME": "/root", **(env or {})}

    # -- entry points -------------------------------------------------------------------------
    async def exec(self, argv: list[str], pio: ProcessIO) -> int:
        """Run argv; returns the exit code, raises CommandNotFound like the runtime's exec."""
        if not argv:
            raise CommandNotFound("")
        if argv[0] not in _COMMANDS:
            raise CommandNotFound(argv[0])
        return await self._run(argv, pio)

    async def attach(self, pio: ProcessIO) -> int:
        """The main process: echoes stdin to stdout until stdin closes."""
        if pio.stdin is None:
            await asyncio.Event().wait()     # nothing to echo: runs until the client leaves
        while chunk := await pio.stdin.read():
            await pio.stdout(chunk)
        return 0

    async def _run(self, argv: list[str], pio: ProcessIO) -> int:
        try:
            return await _COMMANDS[argv[0]](self, argv, pio)
        except _Exit as exc:
            return exc.code

    # -- commands -----------------------------------------------------------------------------
    async def _echo(self, argv: list[str], pio: ProcessIO) -> int:
        args, newline = argv[1:], True
        if args[:1] == ["-n"]:
            args, newline = args[1:], False
        await pio.stdout((" ".join(args) + ("\n" if newline else "")).encode())
        return 0

    async def _cat(self, argv: list[str], pio: ProcessIO) -> int:
        paths, rc = argv[1:] or ["-"], 0
        for path in paths:
            if path == "-":
                if pio.stdin is not None:
                    while chunk := await pio.stdin.read():
                        await pio.stdout(chunk)
            elif self.fs.is_dir(path):
                await pio.stderr(f"cat: {path}: Is a directory\n".encode())
                rc = 1
            elif (data := self.fs.files.get(self.fs.norm(path))) is None:
                await pio.stderr(f"cat: {path}: No such file or directory\n".encode())
                rc = 1
            else:
                await pio.stdout(data)
        return rc

    async def _ls(self, argv: list[str], pio: ProcessIO) -> int:
        flags = "".join(a[1:] for a in argv[1:] if a.startswith("-"))
        paths = [a for a in argv[1:] if not a.startswith("-")] or ["/"]
        rc, out = 0, []
        for path in paths:
            if not self.fs.exists(path):
                await pio.stderr(f"ls: cannot access '{path}': No such file or directory\n".encode())
                rc = 2
                continue
            names = self.fs.children(path) if self.fs.is_dir(path) else [path]
            if "a" in flags and self.fs.is_dir(path):
                names = [".", ".."] + names
            for name in names:
                full = self.fs.norm(name, path) if self.fs.is_dir(path) else self.fs.norm(path)
                if "l" in flags:
                    size = len(self.fs.files.get(full, b""))
                    kind = "drwxr-xr-x" if self.fs.is_dir(full) else "-rw-r--r--"
                    out.append(f"{kind} 1 root root {size:>6} Jan  1 00:00 {name}")
                else:
                    out.append(name)
        if out:
            await pio.stdout(("\n".join(out) + "\n").encode())
        return rc

    async def _env(self, argv: list[str], pio: ProcessIO) -> int:
        env = dict(self.env)
        if pio.tty:
            env["TERM"] = "xterm"
        await pio.stdout("".join(f"{k}={v}\n" for k, v in env.items()).encode())
        return 0

    async def _hostname(self, argv: list[str], pio: ProcessIO) -> int:
        await pio.stdout(f"{self.hostname}\n".encode())
        return 0

    async def _true(self, argv: list[str], pio: ProcessIO) -> int:
        return 0

    async def _false(self, argv: list[str], pio: ProcessIO) -> int:
        return 1

    async def _sleep(self, argv: list[str], pio: ProcessIO) -> int:
        try:
            seconds = float(argv[1])
        except (IndexError, ValueError):
            await pio.stderr(b"sleep: invalid time interval\n")
            return 1
        await asyncio.sleep(seconds)   # cancellation (client gone) propagates out of here
        return 0

    async def _wc(self, argv: list[str], pio: ProcessIO) -> int:
        paths = [a for a in argv[1:] if not a.startswith("-")]
        if not paths:
            data = await pio.stdin.read_all() if pio.stdin is not None else b""
            await pio.stdout(f"{len(data)}\n".encode())
            return 0
        rc = 0
        for path in paths:
            data = self.fs.files.get(self.fs.norm(path))
            if data is None:
                await pio.stderr(f"wc: {path}: No such file or directory\n".encode())
                rc = 1
            else:
                await pio.stdout(f"{len(data)} {path}\n".encode())
        return rc

    async def _tail(self, argv: list[str], pio: ProcessIO) -> int:
        # only `tail -c+N` / `tail -c +N` (kubectl cp --retries resumes with it)
        spec = "".join(argv[1:3]) if argv[1:2] == ["-c"] else (argv[1] if len(argv) > 1 else "")
        if not spec.startswith("-c+"):
            await pio.stderr(b"tail: only -c+N is supported\n")
            return 1
        data = await pio.stdin.read_all() if pio.stdin is not None else b""
        await pio.stdout(data[max(int(spec[3:]) - 1, 0):])
        return 0

    async def _test(self, argv: list[str], pio: ProcessIO) -> int:
        args = argv[1:]
        if args and args[-1] == "]" and argv[0] == "[":
            args = args[:-1]
        if len(args) == 2 and args[0] in ("-d", "-f", "-e"):
            path = self.fs.norm(args[1])
            ok = {"-d": path in self.fs.dirs, "-f": path in self.fs.files, "-e": self.fs.exists(path)}[args[0]]
            return 0 if ok else 1
        if len(args) == 1:
            return 0 if args[0] else 1
        return 2

    async def _mkdir(self, argv: list[str], pio: ProcessIO) -> int:
        for path in (a for a in argv[1:] if not a.startswith("-")):
            self.fs.mkdir(path)
        return 0

    async def _sh(self, argv: list[str], pio: ProcessIO) -> int:
        if len(argv) < 3 or argv[1] != "-c":
            if pio.stdin is None:
                return 0
            script = (await pio.stdin.read_all()).decode()   # `sh` reading a script from stdin
        else:
            script = argv[2]
        return await self._script(script, pio)

    async def _tar(self, argv: list[str], pio: ProcessIO) -> int:
        opts, operands, directory = "", [], "/"
        args = iter(argv[1:])
        for arg in args:
            if arg == "-C":
                directory = next(args, "/")
            elif arg.startswith("--"):
                continue             # --no-same-permissions / --no-same-owner: nothing to preserve
            elif arg.startswith("-") and arg != "-":
                opts += arg[1:]
            elif not opts:
                opts = arg           # old-style bundled options: `tar cf - PATH`
            else:
                operands.append(arg)
        if "f" in opts and operands:
            archive, operands = operands[0], operands[1:]
            if archive != "-":
                await pio.stderr(b"tar: only stdin/stdout archives are supported\n")
                return 2
        if "c" in opts:
            return await self._tar_create(operands, directory, pio)
        if "x" in opts:
            return await self._tar_extract(directory, pio)
        await pio.stderr(b"tar: You must specify one of the '-Acdtrux', '--delete' or '--test-label' options\n")
        return 2

    async def _tar_create(self, paths: list[str], directory: str, pio: ProcessIO) -> int:
        buf, rc = io.BytesIO(), 0
        now = int(time.time())
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as archive:
            if any(p.startswith("/") for p in paths):
                await pio.stderr(b"tar: Removing leading `/' from member names\n")
            for path in paths:
                full = self.fs.norm(path, directory)
                if not self.fs.exists(full):
                    await pio.stderr(f"tar: {path}: Cannot stat: No such file or directory\n".encode())
                    rc = 2
                    continue
                self._tar_add(archive, full, path.lstrip("/").rstrip("/") or ".", now)
        if rc:
            await pio.stderr(b"tar: Exiting with failure status due to previous errors\n")
        data = buf.getvalue()
        for i in range(0, len(data), CHUNK):
            await pio.stdout(data[i:i + CHUNK])
        return rc

    def _tar_add(self, archive: tarfile.TarFile, full: str, name: str, mtime: int) -> None:
        info = tarfile.TarInfo(name)
        info.mtime, info.uname, info.gname = mtime, "root", "root"
        if full in self.fs.dirs:
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(info)
            for child in self.fs.children(full):
                self._tar_add(archive, posixpath.join(full, child), f"{name}/{child}", mtime)
        else:
            data = self.fs.files[full]
            info.size, info.mode = len(data), self.fs.modes.get(full, 0o644)
            archive.addfile(info, io.BytesIO(data))

    async def _tar_extract(self, directory: str, pio: ProcessIO) -> int:
        if not self.fs.is_dir(directory):
            await pio.stderr(f"tar: {directory}: Cannot open: No such file or directory\n".encode())
            await pio.stderr(b"tar: Error is not recoverable: exiting now\n")
            return 2
        data = await pio.stdin.read_all() if pio.stdin is not None else b""
        try:
            archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
        except tarfile.TarError:
            await pio.stderr(b"tar: This does not look like a tar archive\n")
            await pio.stderr(b"tar: Exiting with failure status due to previous errors\n")
            return 2
        with archive:
            for member in archive:
                target = self.fs.norm(member.name.lstrip("/"), directory)
                if member.isdir():
                    self.fs.mkdir(target)
                elif member.isfile():
                    extracted = archive.extractfile(member)
                    self.fs.write(target, extracted.read() if extracted else b"", member.mode & 0o777)
        return 0

    # -- a very small shell ---------------------------------------------------------------------
    async def _script(self, script: str, pio: ProcessIO) -> int:
        lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        tokens = list(lexer)
        rc, op, pipeline = 0, ";", []
        for token in tokens + [";"]:
            if token not in (";", "&&", "||", "|"):
                pipeline.append(token)
                continue
            if token == "|":
                pipeline.append("|")
                continue
            if pipeline and (op == ";" or (op == "&&" and rc == 0) or (op == "||" and rc != 0)):
                rc = await self._pipeline(pipeline, pio)
            pipeline, op = [], token
        return rc

    async def _pipeline(self, words: list[str], pio: ProcessIO) -> int:
        stages: list[list[str]] = [[]]
        for word in words:
            if word == "|":
                stages.append([])
            else:
                stages[-1].append(word)
        stdin, rc = pio.stdin, 0
        for i, argv in enumerate(stages):
            last = i == len(stages) - 1
            captured = bytearray()

            async def capture(data: bytes) -> None:
                captured.extend(data)

            stage_io = ProcessIO(stdin, pio.stdout if last else capture, pio.stderr, pio.tty, pio.resizes)
            rc = await self._simple(argv, stage_io)
            if not last:
                stdin = Stdin()
                stdin.feed(bytes(captured))
                stdin.feed_eof()
        return rc

    async def _simple(self, argv: list[str], pio: ProcessIO) -> int:
        if not argv:
            return 0
        if argv[0] == "exit":
            raise _Exit(int(argv[1]) & 0xFF if len(argv) > 1 else 0)
        if argv[0] not in _COMMANDS:
            await pio.stderr(f"sh: {argv[0]}: not found\n".encode())
            return 127
        return await _COMMANDS[argv[0]](self, argv, pio)


_COMMANDS: dict[str, Callable[[FakeContainer, list[str], ProcessIO], Awaitable[int]]] = {
    "echo": FakeContainer._echo, "cat": FakeContainer._cat, "ls": FakeContainer._ls,
    "env": FakeContainer._env, "hostname": FakeContainer._hostname, "true": FakeContainer._true,
    "false": FakeContainer._false, "sleep": FakeContainer._sleep, "wc": FakeContainer._wc,
    "tail": FakeContainer._tail, "test": FakeContainer._test, "[": FakeContainer._test,
    "mkdir": FakeContainer._mkdir, "sh": FakeContainer._sh, "tar": FakeContainer._tar,
}


@dataclass
class SessionRecord:
    """What the fake received in one exec / attach / port-forward session (for assertions)."""
    kind: str
    namespace: str
    pod: str
    user: str
    transport: str                       # "websocket" | "spdy" | "websocket+spdy"
    protocol: str                        # negotiated subprotocol
    container: str = ""
    command: list[str] = field(default_factory=list)
    tty: bool = False
    stdin: bool = False
    resizes: list[tuple[int, int]] = field(default_factory=list)
    bytes_in: int = 0                    # stdin / port-forward payload received
    bytes_out: int = 0                   # stdout + stderr / port-forward payload sent
    exit_code: int | None = None
    status: dict | None = None           # the Status sent on the error channel
    ports: list[int] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)


class ContainerRuntime:
    """Per-server state: the containers (their filesystems persist across sessions) and a log of
    sessions. serve_upgrade uses `store.fake_runtime` when the store has one, else DEFAULT_RUNTIME."""

    def __init__(self) -> None:
        self.containers: dict[tuple[str, str, str], FakeContainer] = {}
        self.sessions: list[SessionRecord] = []

    def container(self, namespace: str, pod: str, name: str) -> FakeContainer:
        key = (namespace, pod, name)
        if key not in self.containers:
            self.containers[key] = FakeContainer(pod, name)
        return self.containers[key]


DEFAULT_RUNTIME = ContainerRuntime()
