import math
import re

import pytest

from dataplane.metrics import Counter, Gauge, GatewayMetrics, Histogram, Registry
from dataplane.snapshot import Snapshot, SnapshotHolder

from .helpers import snapshot_data

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


def parse(text: bytes) -> tuple[dict, dict, dict]:
    """A strict reader of the text format: (help, type, samples keyed by (name, labels))."""
    helps, types, samples = {}, {}, {}
    decoded = text.decode("utf-8")
    assert decoded.endswith("\n")
    for line in decoded.splitlines():
        if line.startswith("# HELP "):
            name, _, documentation = line[7:].partition(" ")
            helps[name] = documentation
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in ("counter", "gauge", "histogram")
            types[name] = kind
        else:
            match = _SAMPLE.match(line)
            assert match, line
            labels = {}
            if match.group(3):
                position = 0
                while position < len(match.group(3)):
                    label = _LABEL.match(match.group(3), position)
                    assert label, line
                    labels[label.group(1)] = _unescape(label.group(2))
                    position = label.end()
            samples[(match.group(1), tuple(sorted(labels.items())))] = float(match.group(4))
    return helps, types, samples


def test_counters_gauges_histograms_render_and_parse_back():
    registry = Registry()
    requests = registry.register(Counter("t_requests_total", "Requests.", ("cluster", "code")))
    flying = registry.register(Gauge("t_in_flight", "In flight."))
    latency = registry.register(Histogram("t_seconds", "Latency.", ("verb",), buckets=(0.1, 1.0)))

    requests.labels(cluster="sandbox", code="200").inc()
    requests.labels(code=200, cluster="sandbox").inc(2)   # other order, int code: same child
    flying.inc(3)
    flying.dec()
    for value in (0.05, 0.1, 0.5, 5.0):
        latency.labels(verb="get").observe(value)

    helps, types, samples = parse(registry.render())
    assert types == {"t_requests_total": "counter", "t_in_flight": "gauge", "t_seconds": "histogram"}
    assert helps["t_seconds"] == "Latency."
    assert samples[("t_requests_total", (("cluster", "sandbox"), ("code", "200")))] == 3
    assert samples[("t_in_flight", ())] == 2
    buckets = {dict(labels)["le"]: value for (name, labels), value in samples.items() if name == "t_seconds_bucket"}
    assert buckets == {"0.1": 2, "1": 3, "+Inf": 4}  # cumulative; 0.1 falls in le="0.1"
    assert samples[("t_seconds_count", (("verb", "get"),))] == 4
    assert samples[("t_seconds_sum", (("verb", "get"),))] == pytest.approx(5.65)


def test_label_values_and_help_are_escaped():
    registry = Registry()
    counter = registry.register(Counter("t_total", 'Help with \\ and\nnewline.', ("reason",)))
    counter.labels(reason='a"b\\c\nd').inc()
    text = registry.render()
    assert b'# HELP t_total Help with \\\\ and\\nnewline.' in text
    _, _, samples = parse(text)
    assert samples[("t_total", (("reason", 'a"b\\c\nd'),))] == 1


def test_wrong_labels_and_misuse_are_refused():
    counter = Counter("t_total", "x", ("cluster",))
    with pytest.raises(ValueError):
        counter.labels(cluster="a", verb="get")
    with pytest.raises(ValueError):
        counter.labels(verb="get")
    with pytest.raises(ValueError):
        counter.inc()
    with pytest.raises(ValueError):
        counter.labels(cluster="a").inc(-1)
    with pytest.raises(ValueError):
        Histogram("t_h", "x", ("le",))
    registry = Registry()
    registry.register(Counter("dup_total", "x"))
    with pytest.raises(ValueError):
        registry.register(Gauge("dup_total", "x"))


def test_labels_returns_the_same_child_cheaply():
    counter = Counter("t_total", "x", ("cluster", "verb"))
    assert counter.labels(cluster="a", verb="get") is counter.labels(cluster="a", verb="get")


def test_gateway_metrics_expose_the_documented_families():
    metrics = GatewayMetrics()
    metrics.requests_total.labels(cluster="sandbox", verb="get", code="200").inc()
    metrics.request_duration_seconds.labels(cluster="sandbox", verb="get", code="200").observe(0.0002)
    metrics.requests_in_flight.inc()
    metrics.active_streams.labels(kind="watch").inc()
    metrics.active_upgrades.labels(kind="exec").inc()
    metrics.authn_failures_total.labels(reason="unknown_token").inc()
    metrics.decisions_total.labels(result="deny").inc()
    metrics.upstream_errors_total.labels(cluster="sandbox", reason="connect").inc()
    _, types, samples = parse(metrics.render())
    assert set(types) == {
        "accesspoint_requests_total", "accesspoint_request_duration_seconds", "accesspoint_requests_in_flight",
        "accesspoint_active_streams", "accesspoint_active_upgrades", "accesspoint_authn_failures_total",
        "accesspoint_decisions_total", "accesspoint_upstream_errors_total", "accesspoint_snapshot_revision",
        "accesspoint_snapshot_age_seconds", "accesspoint_snapshot_refused_total",
        "accesspoint_snapshot_feed_connected", "accesspoint_snapshot_notices_missed_total",
        "accesspoint_revocation_deltas_total", "accesspoint_streams_revoked_total"}
    le = {dict(labels)["le"] for (name, labels) in samples if name == "accesspoint_request_duration_seconds_bucket"}
    assert "0.0001" in le and "60" in le


def test_snapshot_revision_and_age_are_read_at_scrape():
    metrics = GatewayMetrics()
    holder = SnapshotHolder()
    metrics.track_snapshots(holder)
    _, _, samples = parse(metrics.render())
    assert samples[("accesspoint_snapshot_revision", ())] == -1
    assert math.isnan(samples[("accesspoint_snapshot_age_seconds", ())])

    holder.apply(Snapshot(snapshot_data(revision=9, issued_at="2020-01-01T00:00:00Z")))
    _, _, samples = parse(metrics.render())
    assert samples[("accesspoint_snapshot_revision", ())] == 9
    assert samples[("accesspoint_snapshot_age_seconds", ())] > 86400 * 365
