"""The control-plane process: the gRPC API (with health checking and reflection) over the store,
publishing snapshots to Redis after every commit and periodically, and ingesting the gateways'
audit events from Redis.

`serve(config)` starts everything and returns the running `ControlPlane`; `stop(grace)` lets
in-flight calls finish (health turns NOT_SERVING first so balancers move away). `run(config)`
is the foreground process: SIGTERM/SIGINT → graceful stop.
"""
from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from pathlib import Path
from typing import Callable

import grpc
import redis
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .api import agents, selfservice, servicers
from .api.interceptors import AuthInterceptor, ErrorInterceptor
from .auditingest import AuditIngester
from .config import ControlPlaneConfig
from .distribution import Distributor
from .fleet import Fleet
from .sessions import SessionSweeper
from .snapshots import Publisher
from .store import Store, open_store

log = logging.getLogger("accesspoint.controlplane")

MAX_WORKERS = 16


class ControlPlane:
    def __init__(self, config: ControlPlaneConfig, clock: Callable[[], str] | None = None):
        """`clock` (tests): the store's commit time, as model.utc_text."""
        self.config = config
        self.store: Store = open_store(config.store, clock) if clock else open_store(config.store)
        self._redis = redis.Redis.from_url(config.redis_url)
        self.distributor = Distributor(self.store, Publisher(self._redis, config.private_key()))
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="controlplane-api"),
            interceptors=[AuthInterceptor(config.tokens(), self.store.person_for_token), ErrorInterceptor()])
        self.authority = config.client_authority()
        deps = servicers.Dependencies(store=self.store, distributor=self.distributor, authority=self.authority,
                                      fleet=Fleet(self._redis), agents=config.agent_authority())
        names = servicers.add_all(self._server, deps) + selfservice.add_all(self._server, deps) + \
            agents.add_all(self._server, deps)
        self._health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        for name in ["", *names]:
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        reflection.enable_server_reflection(
            [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            self._server)
        self.port = self._bind()
        self._stopping = threading.Event()
        self.sessions = SessionSweeper(self.store, self.distributor)
        self._ingest_redis = redis.Redis.from_url(config.redis_url, single_connection_client=True)
        self.ingester = AuditIngester(self._ingest_redis, self.store, config.consumer_name(),
                                      claim_idle=config.audit_claim_idle)
        self._workers = [
            threading.Thread(target=self.distributor.run_periodically, args=(self._stopping, config.republish_interval),
                             name="controlplane-republish", daemon=True),
            threading.Thread(target=self.ingester.run, args=(self._stopping,), name="controlplane-audit-ingest",
                             daemon=True),
            threading.Thread(target=self.sessions.run_periodically, args=(self._stopping, config.session_sweep_interval),
                             name="controlplane-session-sweep", daemon=True),
        ]

    def _bind(self) -> int:
        if self.config.tls_cert:
            credentials = grpc.ssl_server_credentials(
                [(Path(self.config.tls_key).read_bytes(), Path(self.config.tls_cert).read_bytes())])
            return self._server.add_secure_port(self.config.listen, credentials)
        return self._server.add_insecure_port(self.config.listen)

    def start(self) -> None:
        self._server.start()
        self.distributor.publish_latest()   # a fresh Redis learns the current state at once
        for worker in self._workers:
            worker.start()
        log.info("control plane API on port %d, store revision %d", self.port, self.store.revision())

    def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, let in-flight ones finish within `grace` seconds, close everything."""
        self._health.enter_graceful_shutdown()
        self._stopping.set()
        self.ingester.wake(self._redis)
        self._server.stop(self.config.grace if grace is None else grace).wait()
        for worker in self._workers:
            if worker.is_alive():
                worker.join()
        self._redis.close()
        self._ingest_redis.close()
        self.store.close()

    def wait(self) -> None:
        self._server.wait_for_termination()


def serve(config: ControlPlaneConfig, clock: Callable[[], str] | None = None) -> ControlPlane:
    """Start the control plane described by a validated `config`."""
    plane = ControlPlane(config, clock)
    plane.start()
    return plane


def run(config: ControlPlaneConfig) -> int:
    plane = serve(config)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping within %.0f s", signum, config.grace)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stopping.wait()
    plane.stop()
    return 0
