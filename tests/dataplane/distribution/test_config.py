"""The "distribution" options: parsing, defaults, validation; a Redis password is never shown."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from dataplane.config import ConfigError, GatewayConfig


def _config(tmp_path: Path, **options) -> GatewayConfig:
    for name in ("gw.crt", "gw.key", "snap.pub"):
        (tmp_path / name).write_text("x")
    (tmp_path / "secrets").mkdir(exist_ok=True)
    base = dict(tls_cert=str(tmp_path / "gw.crt"), tls_key=str(tmp_path / "gw.key"),
                snapshot_public_key=str(tmp_path / "snap.pub"), secrets_dir=str(tmp_path / "secrets"),
                audit_spool=str(tmp_path / "audit.jsonl"))
    return GatewayConfig(**{**base, **options})


def test_redis_url_alone_is_enough_and_the_cache_defaults_beside_the_spool(tmp_path):
    config = _config(tmp_path, redis_url="redis://:s3cret@127.0.0.1:6390/0")
    config.validate()
    assert config.snapshot_cache_path == tmp_path / "snapshot.cache.json"
    assert "s3cret" not in repr(config)
    with pytest.raises(ConfigError, match="--snapshot is required unless --redis-url is set"):
        _config(tmp_path).validate()


@pytest.mark.parametrize("url, problem", [
    ("http://:s3cret@127.0.0.1:6390", "must start with redis://, rediss:// or unix://"),
    ("redis://:s3cret@:6390", "names no usable host:port"),
    ("redis://:s3cret@127.0.0.1:port", "names no usable host:port"),
])
def test_a_bad_redis_url_is_refused_without_showing_it(tmp_path, url, problem):
    with pytest.raises(ConfigError) as refused:
        _config(tmp_path, redis_url=url).validate()
    assert problem in str(refused.value) and "s3cret" not in str(refused.value)


def test_other_distribution_options_are_validated(tmp_path):
    config = _config(tmp_path, redis_url="redis://127.0.0.1:6390", snapshot_resync_interval=0, gateway_id="gw 1", snapshot_cache=str(tmp_path / "no/cache.json"))
    with pytest.raises(ConfigError) as refused:
        config.validate()
    for needle in ("--snapshot-resync-interval", "--gateway-id", "--snapshot-cache"):
        assert needle in str(refused.value)


def test_flags_and_environment_and_per_worker_ids(tmp_path):
    parser = argparse.ArgumentParser()
    GatewayConfig.add_arguments(parser)
    ns = parser.parse_args(["--snapshot-resync-interval", "2.5", "--gateway-id", "edge", "--workers", "3"])
    config = GatewayConfig.from_namespace(ns, {"ACCESSPOINT_REDIS_URL": "rediss://h:6380"})
    assert config.redis_url == "rediss://h:6380" and config.snapshot_resync_interval == 2.5
    assert [config.worker_gateway_id(i) for i in range(3)] == ["edge-0", "edge-1", "edge-2"]
    assert GatewayConfig(gateway_id="edge").worker_gateway_id(0) == "edge"
    assert GatewayConfig().worker_gateway_id(0) == ""    # the heartbeat's HOSTNAME-PID
