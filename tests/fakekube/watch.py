"""`?watch=true`: a chunked stream of newline-delimited watch events, one flushed write each."""
from __future__ import annotations

import asyncio
import json
from typing import Any

from .codec import JSON_TYPE, include_object
from .httpcore import Request, Response, standard_headers
from .resources import ResourceType
from .selectors import Matcher
from .status import bad_request
from .store import Store
from .table import TABLE_TYPE, table, wants_table


def _since(request: Request) -> int | None:
    """None: start with the current state (ADDED for every object); N: events after N."""
    value = request.arg("resourceVersion")
    if request.flag("sendInitialEvents") or value in ("", "0"):
        return None
    try:
        return int(value)
    except ValueError:
        raise bad_request(f'invalid resource version "{value}"') from None


def _timeout(request: Request) -> float | None:
    value = request.arg("timeoutSeconds")
    if not value:
        return None        # the fake never ends a watch on its own
    try:
        return max(0.0, float(value))
    except ValueError:
        raise bad_request(f"invalid timeoutSeconds {value!r}") from None


async def serve_watch(request: Request, response: Response, store: Store, rtype: ResourceType,
                      namespace: str, matcher: Matcher) -> None:
    as_table = wants_table(request.header("accept") or "")
    include = include_object(request) if as_table else "Object"
    since, timeout = _since(request), _timeout(request)
    watcher, initial = store.watch(rtype, namespace, matcher, since)
    first_row = True

    def render(kind: str, obj: dict[str, Any]) -> bytes:
        nonlocal first_row
        if as_table and kind != "BOOKMARK":
            meta = {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
            obj = table(rtype, [obj], meta, include, with_columns=first_row)
            first_row = False
        return json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"

    try:
        await response.start(200, standard_headers(TABLE_TYPE if as_table else JSON_TYPE))
        for kind, obj in initial:
            await response.write(render(kind, obj))
        if request.flag("sendInitialEvents") and request.flag("allowWatchBookmarks"):
            await response.write(render("BOOKMARK", {
                "kind": rtype.kind, "apiVersion": rtype.api_version,
                "metadata": {"resourceVersion": str(store.resource_version),
                             "annotations": {"k8s.io/initial-events-end": "true"}}}))
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                break
            try:
                kind, obj = await asyncio.wait_for(watcher.queue.get(), remaining)
            except asyncio.TimeoutError:
                break
            await response.write(render(kind, obj))
        await response.finish()
    finally:
        store.unwatch(watcher)
