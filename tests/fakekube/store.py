"""In-memory object store: one global resourceVersion, an event history for watches, pod logs.

Thread-safe: every public method may be called from any thread (the server's loop or a test's
thread) — state sits behind one lock, and watchers / log followers are woken on their own loops
with call_soon_threadsafe. Objects go in and come out as deep copies.
"""
from __future__ import annotations

import asyncio
import copy
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from . import defaults
from .logbuffer import LogBuffer
from .resources import RESOURCES, ResourceType, by_kind
from .status import ApiError, already_exists, bad_request, conflict, invalid, not_found

HISTORY = 10_000
_NAMESPACES = next(r for r in RESOURCES if r.plural == "namespaces")
Matcher = Callable[[dict[str, Any]], bool]


@dataclass(frozen=True)
class Event:
    type: str                          # ADDED, MODIFIED, DELETED
    rv: int
    rtype: ResourceType
    obj: dict[str, Any]
    old: dict[str, Any] | None         # before a MODIFIED: selector changes become ADDED / DELETED


class Watcher:
    """One watch: events are queued on the watch's own loop."""

    def __init__(self, rtype: ResourceType, namespace: str, matcher: Matcher):
        self.rtype = rtype
        self.namespace = namespace
        self.matcher = matcher
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    def translate(self, event: Event) -> tuple[str, dict[str, Any]] | None:
        """The event as this watch sees it, or None when it concerns other objects."""
        if event.rtype is not self.rtype:
            return None
        if self.namespace and event.obj["metadata"].get("namespace") != self.namespace:
            return None
        now = self.matcher(event.obj)
        before = event.old is not None and self.matcher(event.old)
        if event.type == "MODIFIED":
            if now and before:
                return ("MODIFIED", event.obj)
            if now:
                return ("ADDED", event.obj)
            return ("DELETED", event.obj) if before else None
        return (event.type, event.obj) if now else None

    def offer(self, event: Event) -> None:
        seen = self.translate(event)
        if seen is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.queue.put_nowait, copy.deepcopy(seen))


def resource_type(spec: ResourceType | str) -> ResourceType:
    """`pods`, `deployments.apps` or a ResourceType."""
    if isinstance(spec, ResourceType):
        return spec
    plural, _, group = spec.partition(".")
    for r in RESOURCES:
        if r.plural == plural and (r.group == group or not group):
            return r
    raise KeyError(spec)


class Store:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._rv = 0
        self._objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}   # (group, plural, ns, name)
        self._history: deque[Event] = deque(maxlen=HISTORY)
        self._watchers: set[Watcher] = set()
        self._logs: dict[tuple[str, str, str], LogBuffer] = {}

    # --- reads --------------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._rv

    def get(self, rtype: ResourceType | str, namespace: str, name: str) -> dict[str, Any] | None:
        rtype = resource_type(rtype)
        with self._lock:
            obj = self._objects.get(self._key(rtype, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The contract with the exec/attach/port-forward handlers."""
        return self.get("pods", namespace, name)

    def list(self, rtype: ResourceType | str, namespace: str = "",
             matcher: Matcher | None = None) -> tuple[list[dict[str, Any]], int]:
        """Matching objects sorted by namespace and name, and the list's resourceVersion."""
        rtype = resource_type(rtype)
        with self._lock:
            items = [copy.deepcopy(obj) for (g, p, ns, _), obj in sorted(self._objects.items())
                     if (g, p) == rtype.group_resource and (not namespace or ns == namespace)
                     and (matcher is None or matcher(obj))]
            return items, self._rv

    # --- writes -------------------------------------------------------------------------------

    def create(self, obj: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """Creates an object; its type comes from apiVersion/kind, its namespace from metadata."""
        rtype = self._type_of(obj)
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        with self._lock:
            namespace = self._namespace_for(rtype, meta)
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            name = meta.get("name")
            if not name:
                raise invalid(rtype.kind, "", rtype.group, "metadata.name",
                              "Required value: name or generateName is required")
            key = self._key(rtype, namespace, name)
            if key in self._objects:
                raise already_exists(rtype.group_resource, name)
            for field in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
                meta.pop(field, None)
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=defaults.now())
            defaults.on_create(rtype.kind, obj)
            if dry_run:
                return obj
            self._commit("ADDED", rtype, key, obj, None)
            if rtype.plural == "pods":
                for container in (obj.get("spec") or {}).get("containers") or []:
                    self._logs[(namespace, name, container.get("name", ""))] = LogBuffer()
            return copy.deepcopy(obj)

    def update(self, obj: dict[str, Any], *, status_only: bool = False, dry_run: bool = False) -> dict[str, Any]:
        """Replaces an object (PUT semantics): a stale metadata.resourceVersion is a Conflict.

        Writes to the main resource keep .status; `status_only` writes only .status."""
        rtype = self._type_of(obj)
        new = copy.deepcopy(obj)
        meta = new.setdefault("metadata", {})
        with self._lock:
            namespace = self._namespace_for(rtype, meta, must_exist=False)
            name = meta.get("name", "")
            key = self._key(rtype, namespace, name)
            old = self._objects.get(key)
            if old is None:
                raise not_found(rtype.group_resource, name)
            wanted_rv = meta.get("resourceVersion")
            if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
                raise conflict(rtype.group_resource, name)
            if status_only:
                status = new.get("status")
                new = copy.deepcopy(old)
                new["status"] = status
            else:
                if rtype.has_status and "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                for field in ("uid", "creationTimestamp", "generation", "deletionTimestamp"):
                    if field in old["metadata"]:
                        meta[field] = old["metadata"][field]
                    else:
                        meta.pop(field, None)
                defaults.on_update(rtype.kind, old, new)
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            if new == old or dry_run:     # a no-op write does not bump the resourceVersion
                return copy.deepcopy(new)
            self._commit("MODIFIED", rtype, key, new, old)
            return copy.deepcopy(new)

    def delete(self, rtype: ResourceType | str, namespace: str, name: str, *, dry_run: bool = False,
               preconditions: dict[str, Any] | None = None) -> dict[str, Any]:
        """Deletes at once (no graceful termination); a namespace takes its objects with it."""
        rtype = resource_type(rtype)
        with self._lock:
            key = self._key(rtype, namespace, name)
            old = self._objects.get(key)
            if old is None:
                raise not_found(rtype.group_resource, name)
            pre = preconditions or {}
            if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
                raise conflict(rtype.group_resource, name)
            if pre.get("resourceVersion") and pre["resourceVersion"] != old["metadata"]["resourceVersion"]:
                raise conflict(rtype.group_resource, name)
            if dry_run:
                return copy.deepcopy(old)
            if rtype is _NAMESPACES:
                for (group, plural, ns, child), _ in list(self._objects.items()):
                    if ns == name and plural != "namespaces":
                        self._remove(resource_type(f"{plural}.{group}" if group else plural), ns, child)
            return self._remove(rtype, namespace, name)

    def append_log(self, namespace: str, pod: str, container: str, line: str) -> None:
        """Test hook: one more line in a running container's log (woken `logs -f` streams print it)."""
        buffer = self.log_buffer(namespace, pod, container)
        if buffer is None:
            raise KeyError(f"no container {container!r} in pod {namespace}/{pod}")
        buffer.append(line)

    def log_buffer(self, namespace: str, pod: str, container: str) -> LogBuffer | None:
        with self._lock:
            return self._logs.get((namespace, pod, container))

    # --- watches ------------------------------------------------------------------------------

    def watch(self, rtype: ResourceType, namespace: str, matcher: Matcher,
              since: int | None) -> tuple[Watcher, list[tuple[str, dict[str, Any]]]]:
        """Registers a watch (call on the watching loop). Returns the watcher and the events it
        must send first: history after `since`, or (since None) ADDED for every current object."""
        watcher = Watcher(rtype, namespace, matcher)
        with self._lock:
            if since is None:
                items, _ = self.list(rtype, namespace, matcher)
                initial = [("ADDED", item) for item in items]
            else:
                oldest = self._history[0].rv if self._history else self._rv + 1
                if since + 1 < oldest and since < self._rv:
                    raise ApiError(410, f"too old resource version: {since} ({oldest - 1})", "Expired")
                initial = [seen for e in self._history if e.rv > since
                           if (seen := watcher.translate(e)) is not None]
            self._watchers.add(watcher)
            return watcher, copy.deepcopy(initial)

    def unwatch(self, watcher: Watcher) -> None:
        with self._lock:
            self._watchers.discard(watcher)

    # --- internals ----------------------------------------------------------------------------

    @staticmethod
    def _key(rtype: ResourceType, namespace: str, name: str) -> tuple[str, str, str, str]:
        return (rtype.group, rtype.plural, namespace if rtype.namespaced else "", name)

    @staticmethod
    def _type_of(obj: dict[str, Any]) -> ResourceType:
        rtype = by_kind(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
        if rtype is None:
            raise bad_request(f'no kind "{obj.get("kind")}" is registered for version "{obj.get("apiVersion")}"')
        return rtype

    def _namespace_for(self, rtype: ResourceType, meta: dict[str, Any], must_exist: bool = True) -> str:
        if not rtype.namespaced:
            meta.pop("namespace", None)
            return ""
        namespace = meta.setdefault("namespace", "default")
        if must_exist and self._key(_NAMESPACES, "", namespace) not in self._objects:
            raise not_found(("", "namespaces"), namespace)
        return namespace

    def _commit(self, kind: str, rtype: ResourceType, key: tuple[str, str, str, str],
                obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        if kind == "DELETED":
            self._objects.pop(key, None)
        else:
            self._objects[key] = copy.deepcopy(obj)
        event = Event(kind, self._rv, rtype, copy.deepcopy(obj), copy.deepcopy(old))
        self._history.append(event)
        for watcher in list(self._watchers):
            watcher.offer(event)

    def _remove(self, rtype: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        key = self._key(rtype, namespace, name)
        obj = copy.deepcopy(self._objects[key])
        self._commit("DELETED", rtype, key, obj, None)
        if rtype.plural == "pods":
            for log_key in [k for k in self._logs if k[:2] == (namespace, name)]:
                self._logs.pop(log_key).close()
        return obj

    def seed(self, objects: Iterable[dict[str, Any]]) -> None:
        """Creates objects in order (namespaces before their contents)."""
        for obj in objects:
            self.create(obj)
