"""Medians over rounds, the ratios issue 5 sets targets on, and the one table."""
from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass

from .loadgen import LoadResult
from .scenarios import HTTP2_1x64, LIST_64, NEW_TLS_16, SMALL_GET_1, SMALL_GET_64, Scenario

DIRECT, NGINX, GATEWAY = "direct", "nginx", "gateway"
TARGETS = (DIRECT, NGINX, GATEWAY)


@dataclass(frozen=True)
class Sample:
    load: LoadResult
    cpu_seconds: float   # of the target's process tree during the run

    @property
    def core_busy(self) -> float:
        """The share of one core the target used: near 1.0 it is the bottleneck."""
        return self.cpu_seconds / self.load.seconds if self.load.seconds else math.nan

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_seconds * 1e6 / self.load.requests if self.load.requests else math.nan


class Results:
    """Samples by (scenario, target) and round; or why a target has none."""

    def __init__(self) -> None:
        self.samples: dict[tuple[str, str], dict[int, Sample]] = defaultdict(dict)
        self.missing: dict[tuple[str, str], str] = {}

    def add(self, scenario: Scenario, target: str, round_number: int, sample: Sample) -> None:
        self.samples[scenario.name, target][round_number] = sample

    def mark_missing(self, scenario: Scenario, target: str, reason: str) -> None:
        self.missing.setdefault((scenario.name, target), reason)

    def _paired(self, scenario: Scenario, *targets: str) -> list[tuple[Sample, ...]]:
        """Per round: the samples of `targets` in that order (rounds missing one are skipped)."""
        by_target = [self.samples.get((scenario.name, t), {}) for t in targets]
        rounds = set.intersection(*(set(samples) for samples in by_target))
        return [tuple(samples[r] for samples in by_target) for r in sorted(rounds)]

    def median(self, scenario: Scenario, target: str, metric) -> float:
        return _median([metric(s) for s in self.samples.get((scenario.name, target), {}).values()])

    def median_ratio(self, scenario: Scenario, target: str, reference: str, metric) -> float:
        """Median over rounds of metric(target) / metric(reference), each pair from one round."""
        return _median([metric(a) / metric(b) for a, b in self._paired(scenario, target, reference) if metric(b)])

    def median_added_p50(self, scenario: Scenario, target: str) -> float:
        """Median over rounds of the p50 latency `target` adds over direct access."""
        return _median([a.load.p50_us - d.load.p50_us for a, d in self._paired(scenario, target, DIRECT)])

    def median_added_p50_ratio(self, scenario: Scenario) -> float:
        """Median over rounds of (gateway's added p50) / (nginx's added p50)."""
        return _median([(g.load.p50_us - d.load.p50_us) / (n.load.p50_us - d.load.p50_us)
                        for d, n, g in self._paired(scenario, DIRECT, NGINX, GATEWAY)
                        if n.load.p50_us > d.load.p50_us])


def _median(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def _rate(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:,.0f}"


def _latency(us: float) -> str:
    if math.isnan(us):
        return "—"
    return f"{us:.0f} µs" if us < 1000 else f"{us / 1000:.2f} ms"


def _number(value: float, digits: int = 1) -> str:
    return "—" if math.isnan(value) else f"{value:.{digits}f}"


def _percent(share: float) -> str:
    return "—" if math.isnan(share) else f"{100 * share:.0f}%"


def _rps(s: Sample) -> float:
    return s.load.per_second


def table(results: Results, scenarios: tuple[Scenario, ...]) -> str:
    lines = ["| scenario | target | req/s | p50 | p99 | CPU µs/req | core busy | errors | ÷ nginx | ÷ direct |",
             "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for scenario in scenarios:
        for target in TARGETS:
            key = (scenario.name, target)
            if key not in results.samples:
                reason = results.missing.get(key, "not run")
                lines.append(f"| {scenario.name} | {target} | {reason} | | | | | | | |")
                continue
            errors = sum(s.load.errors for s in results.samples[key].values())
            vs_nginx = results.median_ratio(scenario, target, NGINX, _rps) if target == GATEWAY else math.nan
            vs_direct = results.median_ratio(scenario, target, DIRECT, _rps) if target != DIRECT else math.nan
            lines.append(
                f"| {scenario.name} | {target} | {_rate(results.median(scenario, target, _rps))} "
                f"| {_latency(results.median(scenario, target, lambda s: s.load.p50_us))} "
                f"| {_latency(results.median(scenario, target, lambda s: s.load.p99_us))} "
                f"| {_number(results.median(scenario, target, lambda s: s.cpu_us_per_request))} "
                f"| {_percent(results.median(scenario, target, lambda s: s.core_busy))} "
                f"| {errors} | {_number(vs_nginx, 2) if target == GATEWAY else ''} "
                f"| {_number(vs_direct, 2) if target != DIRECT else ''} |")
    return "\n".join(lines)


def targets_summary(results: Results) -> str:
    """Issue 5's targets, each with the measured gateway figure and whether it is met."""
    def verdict(value: float, ok: bool) -> str:
        return "n/a" if math.isnan(value) else ("met" if ok else "MISSED")

    def throughput(scenario: Scenario, goal: float) -> str:
        ratio = results.median_ratio(scenario, GATEWAY, NGINX, _rps)
        return f"- {scenario.name}: gateway = {_number(ratio, 2)} × nginx req/s (target ≥ {goal:.2f}): " \
               f"{verdict(ratio, ratio >= goal)}"

    cpu = results.median(SMALL_GET_64, GATEWAY, lambda s: s.cpu_us_per_request)
    latency_ratio = results.median_added_p50_ratio(SMALL_GET_1)
    added = {target: _latency(results.median_added_p50(SMALL_GET_1, target)) for target in (GATEWAY, NGINX)}
    return "\n".join([
        throughput(SMALL_GET_64, 0.70),
        f"- {SMALL_GET_64.name}: gateway CPU = {_number(cpu)} µs/req (target ≤ 30): {verdict(cpu, cpu <= 30)}",
        f"- {SMALL_GET_1.name}: added p50 over direct: gateway {added[GATEWAY]}, nginx {added[NGINX]} "
        f"= {_number(latency_ratio, 2)} × nginx "
        f"(target ≤ 1.50): {verdict(latency_ratio, latency_ratio <= 1.5)}",
        throughput(LIST_64, 0.85),
        throughput(NEW_TLS_16, 0.80),
        throughput(HTTP2_1x64, 0.50),
    ])
