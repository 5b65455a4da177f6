"""Fixtures: a fresh PostgreSQL database and a private Redis server per test session, so the
machine's own state is never touched; a store on either backend; a signing key."""
from __future__ import annotations

import secrets

import grpc
import psycopg
import pytest
import redis

from controlplane.server import serve
from controlplane.store import open_store
from dataplane.signing import generate_signing_key

from .planes import plane_config
from ..conftest import RedisServer

POSTGRES_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def postgres_url():
    name = f"cp_test_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_fresh(postgres_url):
    """The session database, emptied: each test starts from migration 1."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return postgres_url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_fresh")


@pytest.fixture
def store(store_url):
    opened = open_store(store_url)
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def redis_client(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def signing_key():
    return generate_signing_key()


@pytest.fixture
def plane(tmp_path, redis_url, redis_client, signing_key):
    """A running control plane (SQLite store, the private Redis emptied), on a free port."""
    running = serve(plane_config(tmp_path, redis_url, signing_key))
    yield running
    running.stop(1)


@pytest.fixture
def channel(plane):
    with grpc.insecure_channel(f"127.0.0.1:{plane.port}") as opened:
        yield opened
