"""`GET .../pods/<name>/log`: a container's log as text/plain, optionally followed."""
from __future__ import annotations

import datetime
from typing import Any

from .httpcore import Request, Response, standard_headers
from .status import bad_request, not_found
from .store import Store


def _int_arg(request: Request, name: str) -> int | None:
    value = request.arg(name)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"invalid {name} {value!r}") from None


def _container(pod: dict[str, Any], request: Request) -> str:
    names = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
    name = request.arg("container")
    pod_name = pod["metadata"]["name"]
    if not name:
        if len(names) == 1:
            return names[0]
        raise bad_request(f"a container name must be specified for pod {pod_name}, "
                          f"choose one of: [{' '.join(names)}]")
    if name not in names:
        raise bad_request(f"container {name} is not valid for pod {pod_name}")
    return name


def _format(stamp: datetime.datetime, line: str, timestamps: bool) -> bytes:
    prefix = stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ ") if timestamps else ""
    return (prefix + line).encode()


async def serve_logs(request: Request, response: Response, store: Store, namespace: str, name: str) -> None:
    pod = store.get_pod(namespace, name)
    if pod is None:
        raise not_found(("", "pods"), name)
    container = _container(pod, request)
    if request.flag("previous"):
        raise bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
    buffer = store.log_buffer(namespace, name, container)
    if buffer is None:
        raise not_found(("", "pods"), name)
    tail, since, limit = _int_arg(request, "tailLines"), _int_arg(request, "sinceSeconds"), _int_arg(request, "limitBytes")
    timestamps, follow = request.flag("timestamps"), request.flag("follow")

    changed = buffer.changed.subscribe()      # before the first read: no append can slip between
    try:
        lines, closed = buffer.read(0)
        position = len(lines)
        if since is not None:
            cutoff = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=since)
            lines = [(t, l) for t, l in lines if t >= cutoff]
        if tail is not None and tail >= 0:
            lines = lines[len(lines) - tail:] if tail else []
        await response.start(200, standard_headers("text/plain"))
        budget = limit if limit is not None and limit > 0 else None
        while True:
            for stamp, line in lines:
                data = _format(stamp, line, timestamps)
                if budget is not None:
                    data, budget = data[:budget], budget - len(data[:budget])
                await response.write(data)
                if budget == 0:
                    await response.finish()
                    return
            if not follow or closed:
                break
            await changed.wait()
            changed.clear()
            lines, closed = buffer.read(position)
            position += len(lines)
        await response.finish()
    finally:
        buffer.changed.unsubscribe(changed)
