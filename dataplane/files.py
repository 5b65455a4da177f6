"""Files the gateway and the agent replace whole: the snapshot's disk copy, the agent's credentials."""
from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: Path, data: bytes, mode: int = 0o666) -> None:
    """Replace `path` with `data` so that a crash leaves the old file or the new one, never a
    torn one: write a temporary file beside it (created with `mode`, less the umask), fsync,
    rename, fsync the directory."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")   # per process: workers may share a path
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
