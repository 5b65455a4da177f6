"""A small Prometheus registry: counters, gauges and histograms in the text exposition format
(version 0.0.4), with no client library.

Label values must be known words, cluster names, verbs or status codes: never anything a caller
chose freely and never a secret. `.labels()` is on the hot path: one tuple build and a dict lookup.
"""
from __future__ import annotations

import bisect
import datetime
import math
from typing import Callable, Iterable, Iterator

# 100 µs … 60 s: gateway overhead is sub-millisecond, long lists and watches reach minutes.
DURATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def format_value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _label_text(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    pairs = [f'{name}="{escape_label_value(value)}"' for name, value in zip(names, values)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


class _Metric:
    kind = ""

    def __init__(self, name: str, documentation: str, labelnames: Iterable[str] = ()):
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], object] = {}
        # (name, value) pairs as the caller passed them → child: the hot path is one tuple and
        # one lookup; the canonical (declared-order, str) key is built only on a miss.
        self._by_call: dict[tuple, object] = {}
        self._only_child = None     # the child of a metric without labels

    def labels(self, **values):
        call_key = tuple(values.items())
        child = self._by_call.get(call_key)
        if child is None:
            child = self._by_call[call_key] = self._child_for(values)
        return child

    def _child_for(self, values: dict) -> object:
        if set(values) != set(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {tuple(values)}")
        key = tuple(str(values[name]) for name in self.labelnames)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._new_child()
        return child

    def _unlabelled(self):
        child = self._only_child
        if child is None:
            if self.labelnames:
                raise ValueError(f"{self.name} has labels {self.labelnames}: use .labels(...)")
            child = self._only_child = self.labels()
        return child

    def _new_child(self):
        raise NotImplementedError

    def render(self) -> Iterator[str]:
        yield f"# HELP {self.name} {escape_help(self.documentation)}"
        yield f"# TYPE {self.name} {self.kind}"
        for key, child in self._children.items():
            yield from self._render_child(key, child)

    def _render_child(self, key: tuple[str, ...], child) -> Iterator[str]:
        yield f"{self.name}{_label_text(self.labelnames, key)} {format_value(child.value)}"


class _CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self.value += amount


class Counter(_Metric):
    kind = "counter"
    _new_child = _CounterChild

    def inc(self, amount: float = 1.0) -> None:
        self._unlabelled().inc(amount)


class _GaugeChild:
    __slots__ = ("_value", "_function")

    def __init__(self) -> None:
        self._value = 0.0
        self._function: Callable[[], float] | None = None

    @property
    def value(self) -> float:
        return self._function() if self._function is not None else self._value

    def set(self, value: float) -> None:
        self._value = value

    def inc(self, amount: float = 1.0) -> None:
        self._value += amount

    def dec(self, amount: float = 1.0) -> None:
        self._value -= amount

    def set_function(self, function: Callable[[], float]) -> None:
        """Compute the value at scrape time (e.g. ages)."""
        self._function = function


class Gauge(_Metric):
    kind = "gauge"
    _new_child = _GaugeChild

    def set(self, value: float) -> None:
        self._unlabelled().set(value)

    def inc(self, amount: float = 1.0) -> None:
        self._unlabelled().inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self._unlabelled().dec(amount)

    def set_function(self, function: Callable[[], float]) -> None:
        self._unlabelled().set_function(function)


class _HistogramChild:
    __slots__ = ("_bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple[float, ...]):
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le = "less or equal").
        self.counts[bisect.bisect_left(self._bounds, value)] += 1
        self.sum += value
        self.count += 1


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, documentation: str, labelnames: Iterable[str] = (),
                 buckets: Iterable[float] = DURATION_BUCKETS):
        super().__init__(name, documentation, labelnames)
        self.buckets = tuple(sorted(float(b) for b in buckets if not math.isinf(b)))
        if "le" in self.labelnames:
            raise ValueError("'le' is reserved for histogram buckets")

    def _new_child(self) -> _HistogramChild:
        return _HistogramChild(self.buckets)

    def observe(self, value: float) -> None:
        self._unlabelled().observe(value)

    def _render_child(self, key: tuple[str, ...], child: _HistogramChild) -> Iterator[str]:
        cumulative = 0
        for bound, count in zip(self.buckets + (math.inf,), child.counts):
            cumulative += count
            labels = _label_text(self.labelnames, key, f'le="{format_value(bound)}"')
            yield f"{self.name}_bucket{labels} {cumulative}"
        labels = _label_text(self.labelnames, key)
        yield f"{self.name}_sum{labels} {format_value(child.sum)}"
        yield f"{self.name}_count{labels} {child.count}"


class Registry:
    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def register(self, metric: _Metric) -> _Metric:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} is already registered")
        self._metrics[metric.name] = metric
        return metric

    def render(self) -> bytes:
        lines: list[str] = []
        for metric in self._metrics.values():
            lines.extend(metric.render())
        return ("\n".join(lines) + "\n").encode("utf-8")


def _seconds_since(timestamp: str) -> float:
    issued = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return (datetime.datetime.now(datetime.timezone.utc) - issued).total_seconds()


class GatewayMetrics:
    """The gateway's metrics, one instance per worker process."""

    def __init__(self) -> None:
        self.registry = Registry()
        add = self.registry.register
        self.requests_total: Counter = add(Counter(
            "accesspoint_requests_total", "Requests answered, by cluster, verb and status code.",
            ("cluster", "verb", "code")))
        self.request_duration_seconds: Histogram = add(Histogram(
            "accesspoint_request_duration_seconds", "Time from request head to response end.",
            ("cluster", "verb", "code")))
        self._request_children: dict[tuple[str, str, str], tuple] = {}
        self.requests_in_flight: Gauge = add(Gauge(
            "accesspoint_requests_in_flight", "Requests being handled now."))
        self.active_streams: Gauge = add(Gauge(
            "accesspoint_active_streams", "Open long-lived responses (watch, logs -f, other streams).",
            ("kind",)))
        self.active_upgrades: Gauge = add(Gauge(
            "accesspoint_active_upgrades", "Open upgraded connections (exec, attach, port-forward).",
            ("kind",)))
        self.authn_failures_total: Counter = add(Counter(
            "accesspoint_authn_failures_total", "Refused authentications, by reason.", ("reason",)))
        self.decisions_total: Counter = add(Counter(
            "accesspoint_decisions_total", "Policy decisions, by result (allow or deny).", ("result",)))
        self.upstream_errors_total: Counter = add(Counter(
            "accesspoint_upstream_errors_total", "Failures talking to a cluster, by reason.",
            ("cluster", "reason")))
        self.snapshot_revision: Gauge = add(Gauge(
            "accesspoint_snapshot_revision", "Revision of the snapshot this worker applies."))
        self.snapshot_age_seconds: Gauge = add(Gauge(
            "accesspoint_snapshot_age_seconds", "Seconds since the current snapshot was issued."))
        self.snapshot_refused_total: Counter = add(Counter(
            "accesspoint_snapshot_refused_total",
            "Snapshots refused, by source (redis, cache) and reason (signature, format, older_revision).",
            ("source", "reason")))
        self.snapshot_feed_connected: Gauge = add(Gauge(
            "accesspoint_snapshot_feed_connected", "1 while the snapshot feed follows Redis, else 0."))
        self.snapshot_notices_missed_total: Counter = add(Counter(
            "accesspoint_snapshot_notices_missed_total",
            "Snapshot revisions learnt of without their notice: skipped in the notice sequence (gap) "
            "or found by the periodic re-read (resync).", ("how",)))
        self.revocation_deltas_total: Counter = add(Counter(
            "accesspoint_revocation_deltas_total",
            "Revocation deltas received, by result (applied, superseded, refused).", ("result",)))
        self.streams_revoked_total: Counter = add(Counter(
            "accesspoint_streams_revoked_total",
            "Live streams and upgrade sessions ended because their identity was revoked or is no "
            "longer allowed, by kind (watch, logs, stream, exec, attach, portforward, ...).", ("kind",)))

    def observe_request(self, cluster: str, verb: str, code: str, seconds: float) -> None:
        """One answered request: its count and duration (both children found with one lookup)."""
        key = (cluster, verb, code)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.requests_total.labels(cluster=cluster, verb=verb, code=code),
                self.request_duration_seconds.labels(cluster=cluster, verb=verb, code=code))
        children[0].inc()
        children[1].observe(seconds)

    def track_snapshots(self, holder) -> None:
        """Read revision and age from `holder` (a SnapshotHolder) at every scrape; with no
        snapshot the revision reads -1 and the age NaN."""
        def revision() -> float:
            current = holder.current
            return current.revision if current is not None else -1

        def age() -> float:
            current = holder.current
            return _seconds_since(current.issued_at) if current is not None else math.nan

        self.snapshot_revision.set_function(revision)
        self.snapshot_age_seconds.set_function(age)

    def render(self) -> bytes:
        return self.registry.render()
