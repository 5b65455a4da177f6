"""Policy decision time, cached and uncached, at 1k, 10k and 100k bindings: Cython vs the twin.

    .venv/bin/python loadtests/bench_policy.py [--quick]

The synthetic fleet has 2,000 clusters (env, region, team labels). Bindings are a production-like
mix: 70 % time-bound grants of one user on one named cluster (access requests), 20 % group
bindings by label selector (some with match expressions), 5 % deny bindings, 5 % bindings with
source or schedule conditions. "uncached" asks questions whose cache key is new each time (the
per-(subject, cluster) memos are warm, as they are after the first request of a caller); "cached"
asks the same questions again. `--quick` runs 1k and 10k bindings with short timings.
"""
from __future__ import annotations

import random
import sys
import time

from native import _policy_c, _policy_py
from native._policyspec import DAYS
from native.requestinfo import parse_request_info

CLUSTERS = 2_000
NOW = 1_795_392_000.0          # 2026-11-23T00:00:00Z
ROLES = [{"name": f"role-{n}", "rules": [
    {"verbs": ["get", "list", "watch"], "api_groups": ["", "apps"], "resources": ["pods", "deployments", "pods/log"]},
    {"verbs": ["create"], "api_groups": [""], "resources": ["pods/exec"], "namespaces": [f"team-{n}"]},
    {"verbs": ["get"], "non_resource_urls": ["/version", "/healthz/*"]},
]} for n in range(20)]
PATHS = ["/api/v1/namespaces/team-{t}/pods", "/api/v1/namespaces/team-{t}/pods/web-{n}",
         "/apis/apps/v1/namespaces/team-{t}/deployments/api-{n}", "/api/v1/namespaces/team-{t}/pods/web-{n}/log"]


def snapshot(bindings: int, rng: random.Random) -> dict:
    clusters = [{"name": f"c{n}", "labels": {"env": ("dev", "test", "prod")[n % 3], "region": ("eu", "us")[n % 2],
                                              "team": f"t{n % 50}"}} for n in range(CLUSTERS)]
    out = []
    for n in range(bindings):
        kind = rng.random()
        b = {"name": f"b{n}", "role": f"role-{n % 20}", "subjects": [{"kind": "user", "name": f"u{n % 5000}"}],
             "clusters": {"names": [f"c{rng.randrange(CLUSTERS)}"]}}
        if kind < 0.70:
            b["valid_until"] = "2026-11-24T00:00:00Z"
            b["grant"] = {"kind": "access_request", "id": f"ar-{n}"}
        elif kind < 0.90:
            b["subjects"] = [{"kind": "group", "name": f"g{n % 500}"}]
            b["clusters"] = {"selector": {"env": ("dev", "test", "prod")[n % 3]},
                             "match_expressions": [{"key": "team", "operator": "In", "values": [f"t{n % 50}"]}]}
        elif kind < 0.95:
            b["effect"] = "deny"
            b["clusters"] = {"selector": {"env": "prod"}}
            b["subjects"] = [{"kind": "group", "name": f"g{n % 500}"}]
        else:
            b["conditions"] = {"source_cidrs": ["10.0.0.0/8"], "schedule": {"days": list(DAYS[:5]), "start": "06:00"}}
        out.append(b)
    return {"clusters": clusters, "roles": ROLES, "bindings": out, "settings": {}}


def questions(count: int, rng: random.Random, unique: bool) -> list[tuple]:
    asks = []
    for n in range(count):
        user = rng.randrange(5000)
        groups = tuple(f"g{rng.randrange(500)}" for _ in range(3)) + ("system:authenticated",)
        path = rng.choice(PATHS).format(t=rng.randrange(20), n=n if unique else n % 50)
        info = parse_request_info("GET", path, "")
        asks.append((f"u{user}", groups, "", "kubectl", f"c{rng.randrange(CLUSTERS)}", info, "10.1.2.3", NOW))
    return asks


def us_per_decision(index, asks) -> float:
    decide = index.decide
    started = time.perf_counter()
    for ask in asks:
        decide(*ask)
    return (time.perf_counter() - started) / len(asks) * 1e6


def measure(module, data: dict, asks_count: int) -> dict[str, float]:
    started = time.perf_counter()
    index = module.PolicyIndex(data)
    compile_s = time.perf_counter() - started
    warm = questions(asks_count, random.Random(2), unique=False)
    us_per_decision(index, warm)                     # memos of these (subject, cluster) pairs built
    uncached = us_per_decision(index, _renamed(warm))
    cached = min(us_per_decision(index, warm) for _ in range(3))
    return {"compile": compile_s, "uncached": uncached, "cached": cached}


def _renamed(asks: list[tuple]) -> list[tuple]:
    """The same callers and clusters asking about objects never asked about: cache misses."""
    out = []
    for n, (user, groups, component, channel, cluster, info, source, now) in enumerate(asks):
        renamed = parse_request_info("GET", info.path.replace("/namespaces/", f"/namespaces/x{n}-"), "")
        out.append((user, groups, component, channel, cluster, renamed, source, now))
    return out


def main() -> None:
    quick = "--quick" in sys.argv
    sizes = (1_000, 10_000) if quick else (1_000, 10_000, 100_000)
    asks = 2_000 if quick else 20_000
    print(f"{CLUSTERS} clusters; {asks} decisions per measurement; µs per decision (compile: seconds)")
    print("| bindings | compile twin | compile cython | uncached twin | uncached cython | ratio "
          "| cached twin | cached cython | ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in sizes:
        data = snapshot(size, random.Random(size))
        twin, cython = measure(_policy_py, data, asks), measure(_policy_c, data, asks)
        print(f"| {size:,} | {twin['compile']:.2f} | {cython['compile']:.2f} "
              f"| {twin['uncached']:.2f} | {cython['uncached']:.2f} | {twin['uncached'] / cython['uncached']:.1f}x "
              f"| {twin['cached']:.2f} | {cython['cached']:.2f} | {twin['cached'] / cython['cached']:.1f}x |")


if __name__ == "__main__":
    main()
